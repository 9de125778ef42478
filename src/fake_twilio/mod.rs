//! The `fake-twilio` subcommand: a stand-in for Twilio's REST API and voice side, so outbound
//! calls run offline (`PROTOCOLS.md` § "Twilio REST API (2010-04-01)", § TwiML, § "Twilio request
//! signatures").
//!
//! `POST /2010-04-01/Accounts/{AC}/Calls.json` (basic auth: the account SID and auth token, or an
//! `SK…` API key) answers 201 with Twilio's call JSON and then *places the call*: status callbacks
//! `initiated`, `ringing`, `answered` (`CallStatus=in-progress`), `completed` as
//! `StatusCallbackEvent` asks (default `completed` only), numbered by `SequenceNumber` from 0 and
//! signed; then the call's `Twiml`, or the TwiML fetched from `Url` with a signed request carrying
//! `CallSid`, `AccountSid`, `From`, `To`, `CallStatus`, `Direction=outbound-api`. `<Say>` and
//! `<Pause>` take their time, `<Connect><Stream url>` connects a simulated callee
//! ([`crate::sim`], with its clips) to that URL with the call's CallSid and the `<Parameter>`s as
//! `customParameters`, the upgrade signed; `<Dial>` talks to the target for a while; the call
//! completes when the callee hangs up or the document ends. `POST …/Calls/{CA}.json` with
//! `Status=completed|canceled` ends the call (the stream sends `stop` and closes) and with
//! `Twiml=…` replaces what it is doing (a `<Dial>` ends the stream, as on Twilio);
//! `GET …/Calls/{CA}.json` shows it; `GET …/IncomingPhoneNumbers.json` pages
//! (`PageSize`, `Page`, `PageToken`, `next_page_uri`). Errors are Twilio's JSON
//! `{"code","message","more_info","status"}`.
//!
//! # Layout
//! - `rest`: the HTTP API: auth, `Calls.json`, `Calls/{CA}.json`, `IncomingPhoneNumbers.json`.
//! - `call`: one call's voice side: ringing, answer, verbs, streams, status callbacks.
//! - `twiml`: TwiML documents into verbs.
//! - `callback`: signed requests to the application (callbacks, `Url` fetches).
//! - [`log`]: what happened to each call ([`CallLog`]) and the table of calls.
//! - `args`: the command line and [`main`].

mod args;
mod call;
mod callback;
pub mod log;
mod rest;
mod twiml;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

pub use args::{main, FakeTwilioArgs};
pub use log::{CallLog, CallbackLog, StreamLog};
pub use rest::{numbers_json, page_token};

/// The simulated callee: what it says on a stream and how it takes turns (see [`crate::sim`]).
#[derive(Debug, Clone)]
pub struct Callee {
    /// Clips said in order, 8 kHz μ-law each.
    pub clips: Vec<Vec<u8>>,
    /// Quiet before the first clip and after each reply, ms.
    pub quiet_ms: u64,
    /// Barge in this many ms after a reply starts playing.
    pub interrupt_after_ms: Option<u64>,
    /// Move on when no reply starts this long after a clip, ms.
    pub reply_timeout_ms: u64,
    /// Hang up after this long on one stream whatever happens, ms.
    pub max_call_ms: u64,
}

impl Default for Callee {
    /// The bundled clips ("hello", then a question), 1000 ms quiet, 15 s reply timeout, 120 s cap.
    fn default() -> Self {
        Callee {
            clips: crate::sim::bundled::clips()
                .expect("the bundled clips are valid WAV (decoded by the demo test)"),
            quiet_ms: 1000,
            interrupt_after_ms: None,
            reply_timeout_ms: 15_000,
            max_call_ms: 120_000,
        }
    }
}

/// A number on the stand-in's account (`IncomingPhoneNumbers.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    /// `PN` + 32 hex digits.
    pub sid: String,
    /// E.164.
    pub phone_number: String,
    pub friendly_name: String,
}

impl PhoneNumber {
    /// `phone_number` with a fresh `PN…` SID, named after itself.
    pub fn new(phone_number: &str) -> Self {
        PhoneNumber {
            sid: fresh_sid("PN"),
            phone_number: phone_number.into(),
            friendly_name: phone_number.into(),
        }
    }
}

/// Who the stand-in is and how its calls go.
#[derive(Debug, Clone)]
pub struct FakeTwilioOptions {
    /// `AC…`; default a fresh one.
    pub account_sid: String,
    /// Accepted with the account SID for basic auth, and the key every request to the
    /// application is signed with; default 32 fresh hex digits.
    pub auth_token: String,
    /// Also accepted for basic auth: `(SK…, secret)`.
    pub api_key: Option<(String, String)>,
    /// The account's numbers; when not empty, `From` must be one of them (21210).
    pub numbers: Vec<PhoneNumber>,
    /// Numbers per page when a request has no `PageSize`.
    pub page_size: usize,
    pub callee: Callee,
    /// From `ringing` to the answer.
    pub ring: Duration,
    /// How long one `<Say>` lasts.
    pub say: Duration,
    /// How long a `<Dial>`ed party talks before hanging up.
    pub dial: Duration,
}

impl Default for FakeTwilioOptions {
    fn default() -> Self {
        FakeTwilioOptions {
            account_sid: fresh_sid("AC"),
            auth_token: uuid::Uuid::new_v4().simple().to_string(),
            api_key: None,
            numbers: Vec::new(),
            page_size: 50,
            callee: Callee::default(),
            ring: Duration::from_millis(300),
            say: Duration::from_millis(500),
            dial: Duration::from_secs(1),
        }
    }
}

/// `prefix` + 32 hex digits.
fn fresh_sid(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Verb durations, from [`FakeTwilioOptions`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub ring: Duration,
    pub say: Duration,
    pub dial: Duration,
}

/// What the REST handlers and call tasks share.
pub(crate) struct Shared {
    pub account_sid: String,
    pub auth_token: String,
    pub api_key: Option<(String, String)>,
    pub numbers: Vec<PhoneNumber>,
    pub page_size: usize,
    pub callee: Callee,
    pub timing: Timing,
    pub http: reqwest::Client,
    pub table: log::CallTable,
    /// Ends every call (`completed`) when cancelled.
    pub shutdown: CancellationToken,
    /// The call tasks, so shutdown waits for their last callbacks.
    pub tasks: TaskTracker,
}

/// A stand-in serving in the background. Dropping it stops the server and ends its calls.
pub struct FakeTwilio {
    /// The bound address.
    pub addr: SocketAddr,
    pub account_sid: String,
    pub auth_token: String,
    pub api_key: Option<(String, String)>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    _stop_on_drop: DropGuard,
}

impl FakeTwilio {
    /// Bind `127.0.0.1:0` and serve.
    ///
    /// # Errors
    /// Binding fails, or the HTTP client cannot be built.
    pub async fn start(opts: FakeTwilioOptions) -> anyhow::Result<FakeTwilio> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the Twilio stand-in to 127.0.0.1:0")?;
        Self::start_on(listener, opts)
    }

    /// Serve on an already-bound listener.
    ///
    /// # Errors
    /// The listener has no local address, or the HTTP client cannot be built.
    pub fn start_on(listener: TcpListener, opts: FakeTwilioOptions) -> anyhow::Result<FakeTwilio> {
        let addr = listener.local_addr().context("stand-in local address")?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            account_sid: opts.account_sid.clone(),
            auth_token: opts.auth_token.clone(),
            api_key: opts.api_key.clone(),
            numbers: opts.numbers,
            page_size: opts.page_size.max(1),
            callee: opts.callee,
            timing: Timing {
                ring: opts.ring,
                say: opts.say,
                dial: opts.dial,
            },
            http: callback::client()?,
            table: log::CallTable::new(),
            shutdown: shutdown.clone(),
            tasks: TaskTracker::new(),
        });
        let app = rest::router(shared.clone());
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serving.await {
                tracing::warn!(error = %e, "Twilio stand-in stopped");
            }
        });
        Ok(FakeTwilio {
            addr,
            account_sid: opts.account_sid,
            auth_token: opts.auth_token,
            api_key: opts.api_key,
            shared,
            server,
            _stop_on_drop: shutdown.drop_guard(),
        })
    }

    /// `http://127.0.0.1:PORT`: the relay's `TWILIO_API_BASE`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<CallLog> {
        self.shared.table.all()
    }

    /// Call `sid` as it is now.
    pub fn call(&self, sid: &str) -> Option<CallLog> {
        self.shared.table.get(sid)
    }

    /// Wait until `f` holds for call `sid`, re-checked on every change; `None` after `timeout`.
    pub async fn wait_for(
        &self,
        sid: &str,
        timeout: Duration,
        f: impl Fn(&CallLog) -> bool,
    ) -> Option<CallLog> {
        self.shared.table.wait_for(sid, timeout, f).await
    }

    /// Wait until call `sid` is over and its last status callback answered; `None` after `timeout`.
    pub async fn wait_for_completion(&self, sid: &str, timeout: Duration) -> Option<CallLog> {
        self.wait_for(sid, timeout, |c| c.finished).await
    }

    /// End every call (`completed`, callbacks sent), stop serving, and wait for both.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        let _ = self.server.await;
    }
}
