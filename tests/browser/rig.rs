//! What the browser looks at: the real relay binary with the console on (`API_TOKEN`), its
//! SQLite store, Twilio pointed at the in-process stand-in (which places outbound calls and
//! connects a simulated callee), a Realtime stand-in, and simulated inbound callers on signed
//! streams, as Twilio would connect them.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;
use twilio_realtime_relay::fake_openai::{FakeOpenAi, FakeOptions};
use twilio_realtime_relay::fake_twilio::{Callee, FakeTwilio, FakeTwilioOptions, PhoneNumber};
use twilio_realtime_relay::sim::{self, CallReport};

use crate::relay_bin::{clip, free_port, Relay};

/// The console's sign-in token (`API_TOKEN`), also the API's bearer token.
pub const TOKEN: &str = "browser-console-token";
/// The relay's caller ID (`TWILIO_PHONE_NUMBER`), one of the stand-in account's numbers.
pub const FROM: &str = "+15005550006";
/// The one function tool in the relay's `TOOLS_FILE`: the place-call form offers it.
pub const TOOL: &str = "lookup_order";
/// The one `TRANSFER_DESTINATIONS` entry: live calls get a transfer form.
pub const TRANSFER: &str = "sales=+15551230001";

/// The relay and its stand-ins; everything stops when this is dropped.
pub struct Rig {
    pub relay: Relay,
    pub realtime: FakeOpenAi,
    pub twilio: FakeTwilio,
    pub http: reqwest::Client,
    /// `PUBLIC_URL`: `http://127.0.0.1:PORT`, so streams and callbacks stay plain `ws`/`http`.
    pub base: String,
    /// `RECORDING_DIR` (recordings are on): kept until the rig goes.
    _recordings: tempfile::TempDir,
}

impl Rig {
    /// Start the stand-ins, then `serve` on a free port with the console, tools and transfers on.
    /// Outbound callees say ten clips (calls last until hung up, well past a step); the Realtime
    /// stand-in parrots each utterance.
    pub async fn start() -> anyhow::Result<Rig> {
        let realtime = FakeOpenAi::spawn(FakeOptions::default()).await?;
        let twilio = FakeTwilio::start(FakeTwilioOptions {
            numbers: vec![PhoneNumber::new(FROM)],
            callee: Callee {
                clips: [clip("caller-hello.wav"), clip("caller-question.wav")]
                    .into_iter()
                    .cycle()
                    .take(10)
                    .collect(),
                quiet_ms: 400,
                reply_timeout_ms: 8_000,
                max_call_ms: 90_000,
                ..Callee::default()
            },
            ring: Duration::from_millis(200),
            ..FakeTwilioOptions::default()
        })
        .await?;
        // PUBLIC_URL must name the port before the relay binds it (the stream URL in TwiML and
        // the signatures use it); the port is free now and taken by the relay at once.
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let dir = tempfile::tempdir()?;
        let recordings = tempfile::tempdir()?;
        let recording_dir = recordings.path().display().to_string();
        let tools = dir.path().join("tools.json");
        std::fs::write(&tools, tools_file().to_string())?;
        let (port, api_base, tools) = (
            port.to_string(),
            twilio.base_url(),
            tools.display().to_string(),
        );
        let env = [
            ("PORT", port.as_str()),
            ("PUBLIC_URL", base.as_str()),
            ("API_TOKEN", TOKEN),
            ("TWILIO_API_BASE", api_base.as_str()),
            ("TWILIO_ACCOUNT_SID", twilio.account_sid.as_str()),
            ("TWILIO_AUTH_TOKEN", twilio.auth_token.as_str()),
            ("TWILIO_PHONE_NUMBER", FROM),
            ("TOOLS_FILE", tools.as_str()),
            (
                "TOOLS_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            ("TRANSFER_DESTINATIONS", TRANSFER),
            ("RECORDING", "on"),
            ("RECORDING_DIR", recording_dir.as_str()),
        ];
        let relay = Relay::start_with(&realtime, 2, &env).await;
        // The tools file is read at start-up only.
        drop(dir);
        Ok(Rig {
            relay,
            realtime,
            twilio,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            base,
            _recordings: recordings,
        })
    }

    /// `http://127.0.0.1:PORT/PATH` on the relay.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /api/…` with the bearer token and a JSON body: the status and the JSON answer.
    pub async fn api_post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// An inbound call from `from` to `to`, as Twilio connects one: a signed stream with a
    /// stream token and `From`/`To` parameters; the caller says `clips` (one reply each) and
    /// hangs up. Returns the call's SID at once and the running call.
    pub fn inbound_call(
        &self,
        from: &str,
        to: &str,
        clips: Vec<Vec<u8>>,
    ) -> (String, JoinHandle<anyhow::Result<CallReport>>) {
        let sid = format!("CA{}", uuid::Uuid::new_v4().simple());
        let mut opts = self.relay.call(clips);
        opts.url = format!("ws://127.0.0.1:{}/media-stream", self.relay.addr.port());
        opts.signed_url = Some(opts.url.clone());
        opts.auth_token = Some(self.twilio.auth_token.clone());
        opts.account_sid = Some(self.twilio.account_sid.clone());
        opts.call_sid = Some(sid.clone());
        opts.params = vec![("From".into(), from.into()), ("To".into(), to.into())];
        (sid, tokio::spawn(sim::run(opts)))
    }
}

/// One function tool; its webhook is never called (no scripted tool calls here).
fn tools_file() -> Value {
    json!({
        "functions": [{
            "name": TOOL,
            "description": "Find an order by its number",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
            "url": "http://127.0.0.1:9/tools/lookup_order",
        }],
    })
}
