//! The voice side of one placed call: ringing, answer, the TwiML verbs (a `<Connect><Stream>`
//! joined by the simulated callee from [`crate::sim`]), REST changes while it runs, and the status
//! callbacks Twilio would send (`PROTOCOLS.md` § "Twilio REST API").

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::callback;
use super::log::{CallbackLog, Control, StreamLog};
use super::twiml::{self, Verb};
use super::Shared;
use crate::sim::{self, CallOptions};
use crate::twilio::signature;
use crate::verify::SIGNATURE_HEADER;

/// How long a stopped stream may take to send `stop` and close.
const STREAM_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the call's first TwiML document comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Twiml(String),
    /// Fetched when the call is answered, with `method` (Twilio's `Method`, default POST).
    Url {
        url: String,
        method: Method,
    },
}

/// `StatusCallback`, `StatusCallbackMethod`, `StatusCallbackEvent` of a `Calls.json` request.
#[derive(Debug, Clone)]
pub(crate) struct Callbacks {
    pub url: String,
    pub method: Method,
    /// Of `initiated ringing answered completed`; Twilio's default is `completed` only.
    pub events: Vec<String>,
}

/// A call `Calls.json` accepted, for [`run`].
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub source: Source,
    pub callbacks: Option<Callbacks>,
}

/// What ends a wait or a verb early.
enum Step {
    /// The verb ran to its end.
    Next,
    /// The call ends with this status (`completed`, `canceled`).
    End(&'static str),
    /// Run this document instead of the rest.
    Replace(String),
}

struct Call {
    shared: Arc<Shared>,
    placed: Placed,
    control: mpsc::Receiver<Control>,
    sequence: u64,
    answered: Option<Instant>,
}

/// Run call `placed` to its end; the log in `shared` says what happened.
pub(crate) async fn run(shared: Arc<Shared>, placed: Placed, control: mpsc::Receiver<Control>) {
    let mut call = Call {
        shared,
        placed,
        control,
        sequence: 0,
        answered: None,
    };
    let status = call.lifecycle().await;
    call.finish(status).await;
}

impl Call {
    async fn lifecycle(&mut self) -> &'static str {
        self.set_status("initiated");
        self.callback("initiated", "initiated", None).await;
        self.set_status("ringing");
        self.callback("ringing", "ringing", None).await;
        let ring = self.shared.timing.ring;
        let mut source = self.placed.source.clone();
        match self.pause(ring).await {
            Step::Next => {}
            Step::End(status) => return status,
            Step::Replace(doc) => source = Source::Twiml(doc),
        }
        self.answered = Some(Instant::now());
        self.shared.table.update(&self.placed.sid, |c| {
            c.status = "in-progress".into();
            c.answered_at = Some(Utc::now());
        });
        self.callback("answered", "in-progress", None).await;
        let document = match source {
            Source::Twiml(doc) => doc,
            Source::Url { url, method } => match self.fetch(&url, &method).await {
                Ok(doc) => doc,
                Err(e) => {
                    self.note(format!("11200: fetching {url} failed: {e:#}"));
                    return "completed";
                }
            },
        };
        self.run_document(document).await
    }

    /// Run TwiML documents until one ends the call or runs out of verbs.
    async fn run_document(&mut self, mut document: String) -> &'static str {
        'documents: loop {
            self.shared
                .table
                .update(&self.placed.sid, |c| c.documents.push(document.clone()));
            let mut verbs: VecDeque<Verb> = match twiml::parse(&document) {
                Ok(verbs) => verbs.into(),
                Err(e) => {
                    self.note(format!("12100: document parse failure: {e}"));
                    return "completed";
                }
            };
            while let Some(verb) = verbs.pop_front() {
                let step = match verb {
                    Verb::Say(text) => {
                        self.shared
                            .table
                            .update(&self.placed.sid, |c| c.said.push(text));
                        self.pause(self.shared.timing.say).await
                    }
                    Verb::Pause(length) => self.pause(length).await,
                    Verb::Stream { url, parameters } => self.stream(url, parameters).await,
                    Verb::Dial(target) => {
                        info!(call_sid = %self.placed.sid, %target, "dialling");
                        self.shared
                            .table
                            .update(&self.placed.sid, |c| c.dialed.push(target));
                        self.pause(self.shared.timing.dial).await
                    }
                    Verb::Hangup => return "completed",
                    Verb::Unsupported(name) => {
                        self.note(format!("<{name}> is not simulated: skipped"));
                        Step::Next
                    }
                };
                match step {
                    Step::Next => {}
                    Step::End(status) => return status,
                    Step::Replace(next) => {
                        document = next;
                        continue 'documents;
                    }
                }
            }
            return "completed";
        }
    }

    /// Wait `length`, unless the REST API or the stand-in's shutdown ends it first.
    async fn pause(&mut self, length: Duration) -> Step {
        tokio::select! {
            () = tokio::time::sleep(length) => Step::Next,
            step = next_control(&mut self.control) => step,
            () = self.shared.shutdown.cancelled() => Step::End("completed"),
        }
    }

    /// `<Connect><Stream>`: the simulated callee joins `url`, signed with the auth token, and the
    /// verb lasts until the callee hangs up (the call ends), the server closes the socket (the
    /// next verb runs), or the REST API changes the call (`stop`, then the change).
    async fn stream(&mut self, url: String, parameters: Vec<(String, String)>) -> Step {
        let shared = self.shared.clone();
        let callee = &shared.callee;
        let mut opts = CallOptions::new(url.clone(), callee.clips.clone());
        opts.call_sid = Some(self.placed.sid.clone());
        opts.account_sid = Some(shared.account_sid.clone());
        opts.params = parameters.clone();
        opts.quiet_ms = callee.quiet_ms;
        opts.interrupt_after_ms = callee.interrupt_after_ms;
        opts.reply_timeout_ms = callee.reply_timeout_ms;
        opts.max_call_ms = callee.max_call_ms;
        // Twilio signs the upgrade over the `<Stream url>` exactly as written; it adds nothing
        // else (no stream token: that is the relay's own `<Parameter>`).
        let signed = signature::sign(&shared.auth_token, &url, &[]);
        opts.extra_headers = vec![(SIGNATURE_HEADER.into(), signed)];
        let stop = CancellationToken::new();
        opts.stop = Some(stop.clone());
        let index = shared
            .table
            .update(&self.placed.sid, |c| {
                c.streams.push(StreamLog {
                    url: url.clone(),
                    parameters,
                    ended_by: None,
                    report: None,
                    error: None,
                });
                c.streams.len() - 1
            })
            .unwrap_or_default();
        info!(call_sid = %self.placed.sid, %url, "the callee joins the stream");
        let mut task = tokio::spawn(sim::run(opts));
        let interrupted = tokio::select! {
            joined = &mut task => {
                let (ended_by, step) = match &joined {
                    Ok(Ok(report)) if report.closed_by_server => ("closed_by_server", Step::Next),
                    Ok(Ok(_)) => ("callee_hung_up", Step::End("completed")),
                    // Twilio goes on with the next verb when the stream cannot connect.
                    _ => ("connect_failed", Step::Next),
                };
                self.end_stream(index, ended_by, joined);
                return step;
            }
            step = next_control(&mut self.control) => step,
            () = shared.shutdown.cancelled() => Step::End("completed"),
        };
        stop.cancel();
        let joined = match tokio::time::timeout(STREAM_STOP_TIMEOUT, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                task.abort();
                warn!(call_sid = %self.placed.sid, "the stream did not stop within 10 s");
                Ok(Err(anyhow::anyhow!("the stream did not stop within 10 s")))
            }
        };
        let ended_by = match interrupted {
            Step::Replace(_) => "twiml_updated",
            _ => "call_ended",
        };
        self.end_stream(index, ended_by, joined);
        interrupted
    }

    fn end_stream(
        &self,
        index: usize,
        ended_by: &str,
        joined: Result<anyhow::Result<sim::CallReport>, tokio::task::JoinError>,
    ) {
        info!(call_sid = %self.placed.sid, ended_by, "stream ended");
        self.shared.table.update(&self.placed.sid, |c| {
            let Some(stream) = c.streams.get_mut(index) else {
                return;
            };
            stream.ended_by = Some(ended_by.into());
            match joined {
                Ok(Ok(report)) => stream.report = Some(report),
                Ok(Err(e)) => stream.error = Some(format!("31920: {e:#}")),
                Err(e) => stream.error = Some(format!("the callee task failed: {e}")),
            }
        });
    }

    /// The TwiML at `url`, fetched as Twilio does when the call is answered.
    async fn fetch(&self, url: &str, method: &Method) -> anyhow::Result<String> {
        let params = self.params("in-progress");
        let (status, body) = callback::send(
            &self.shared.http,
            &self.shared.auth_token,
            method,
            url,
            &params,
        )
        .await?;
        anyhow::ensure!((200..300).contains(&status), "HTTP {status}");
        Ok(body)
    }

    /// The parameters of every request Twilio makes about this call.
    fn params(&self, status: &str) -> Vec<(String, String)> {
        let p = &self.placed;
        [
            ("AccountSid", self.shared.account_sid.as_str()),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", &p.sid),
            ("CallStatus", status),
            ("Called", &p.to),
            ("Caller", &p.from),
            ("Direction", "outbound-api"),
            ("From", &p.from),
            ("To", &p.to),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec()
    }

    /// Send the `event` callback with `status` if it was asked for, and log it.
    async fn callback(&mut self, event: &str, status: &str, duration_s: Option<u64>) {
        let Some(cb) = self.placed.callbacks.clone() else {
            return;
        };
        if !cb.events.iter().any(|e| e == event) {
            return;
        }
        let sequence = self.sequence;
        self.sequence += 1;
        let mut params = self.params(status);
        params.push(("CallbackSource".into(), "call-progress-events".into()));
        params.push(("SequenceNumber".into(), sequence.to_string()));
        params.push(("Timestamp".into(), Utc::now().to_rfc2822()));
        if let Some(d) = duration_s {
            params.push(("CallDuration".into(), d.to_string()));
        }
        let shared = &self.shared;
        let sent = callback::send(
            &shared.http,
            &shared.auth_token,
            &cb.method,
            &cb.url,
            &params,
        );
        let (http_status, error) = match sent.await {
            Ok((code, _)) => (Some(code), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        info!(call_sid = %self.placed.sid, event, status, sequence, http_status, "status callback");
        let log = CallbackLog {
            event: event.into(),
            status: status.into(),
            sequence,
            http_status,
            error,
        };
        shared
            .table
            .update(&self.placed.sid, |c| c.callbacks.push(log));
    }

    fn set_status(&self, status: &str) {
        self.shared
            .table
            .update(&self.placed.sid, |c| c.status = status.into());
    }

    fn note(&self, note: String) {
        warn!(call_sid = %self.placed.sid, %note, "call");
        self.shared
            .table
            .update(&self.placed.sid, |c| c.notes.push(note));
    }

    /// The call is over: final status, duration, the `completed` callback, `finished`.
    async fn finish(&mut self, status: &'static str) {
        let duration = self
            .answered
            .map_or(0, |t| t.elapsed().as_secs_f64().round() as u64);
        self.shared.table.update(&self.placed.sid, |c| {
            c.status = status.into();
            c.ended_at = Some(Utc::now());
            c.duration_s = Some(duration);
        });
        info!(call_sid = %self.placed.sid, status, duration_s = duration, "call ended");
        self.callback("completed", status, Some(duration)).await;
        self.shared
            .table
            .update(&self.placed.sid, |c| c.finished = true);
    }
}

/// The next REST change as a [`Step`]; a closed channel never resolves (nothing can change the
/// call any more).
async fn next_control(control: &mut mpsc::Receiver<Control>) -> Step {
    match control.recv().await {
        Some(Control::End(status)) => Step::End(status),
        Some(Control::Twiml(doc)) => Step::Replace(doc),
        None => std::future::pending().await,
    }
}
