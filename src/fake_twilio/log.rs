//! What the stand-in did with each call ([`CallLog`]), and the shared table of calls that the REST
//! handlers and the call tasks update.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};

use crate::sim::CallReport;

/// Calls kept at most (live and ended); beyond it `Calls.json` answers Twilio's 429 (20429).
pub const MAX_CALLS: usize = 10_000;

/// Everything the stand-in did for one call, in order. Snapshots are cheap to take and compare.
#[derive(Debug, Clone)]
pub struct CallLog {
    /// `CA` + 32 hex digits.
    pub sid: String,
    pub to: String,
    pub from: String,
    /// Always `outbound-api`: the stand-in only places calls.
    pub direction: String,
    /// Twilio's status: `queued initiated ringing in-progress completed canceled failed`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// When the callee answered (`in-progress`).
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Whole seconds from answer to end (Twilio's `CallDuration`), once ended.
    pub duration_s: Option<u64>,
    /// The TwiML documents run, in order (inline `Twiml`, fetched from `Url`, or updates).
    pub documents: Vec<String>,
    /// Status callbacks sent, in order.
    pub callbacks: Vec<CallbackLog>,
    /// `<Connect><Stream>`s the simulated callee joined, in order.
    pub streams: Vec<StreamLog>,
    /// `<Say>` texts spoken, in order.
    pub said: Vec<String>,
    /// `<Dial>` targets the call went on to, in order.
    pub dialed: Vec<String>,
    /// Skipped verbs, failed fetches, parse errors, with Twilio's error code where it has one.
    pub notes: Vec<String>,
    /// The call is over and its last status callback has been answered (or failed).
    pub finished: bool,
}

/// One status callback as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackLog {
    /// The `StatusCallbackEvent` it reports: `initiated ringing answered completed`.
    pub event: String,
    /// `CallStatus` sent (`in-progress` for `answered`).
    pub status: String,
    /// `SequenceNumber` sent: 0, 1, 2, … per call.
    pub sequence: u64,
    /// The receiver's HTTP status, or `None` when the request failed (see `error`).
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

/// One media stream of the call.
#[derive(Debug, Clone)]
pub struct StreamLog {
    /// The `<Stream url>` connected to.
    pub url: String,
    /// The `<Parameter>`s, sent as `start.customParameters`.
    pub parameters: Vec<(String, String)>,
    /// Why it ended: `callee_hung_up`, `closed_by_server`, `call_ended` (REST `Status`),
    /// `twiml_updated` (REST `Twiml`), `connect_failed`, or `None` while it is up.
    pub ended_by: Option<String>,
    /// What the simulated callee observed, once the stream has ended.
    pub report: Option<CallReport>,
    /// Why the stream could not be opened (Twilio: 31920), if so.
    pub error: Option<String>,
}

/// A change the REST API asks of a live call.
#[derive(Debug)]
pub(crate) enum Control {
    /// `Status=completed|canceled`: end the call with that status.
    End(&'static str),
    /// `Twiml=…`: stop the current verb and run this document instead.
    Twiml(String),
}

struct Entry {
    log: CallLog,
    control: mpsc::Sender<Control>,
}

/// The calls, in creation order, with a change counter waiters subscribe to.
pub(crate) struct CallTable {
    calls: Mutex<(HashMap<String, Entry>, Vec<String>)>,
    changed: watch::Sender<u64>,
}

impl CallTable {
    pub(crate) fn new() -> Self {
        CallTable {
            calls: Mutex::new((HashMap::new(), Vec::new())),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, (HashMap<String, Entry>, Vec<String>)> {
        self.calls
            .lock()
            .expect("the call table is never poisoned: no panics under it")
    }

    /// Add a call; `false` when [`MAX_CALLS`] are kept already.
    pub(crate) fn insert(&self, log: CallLog, control: mpsc::Sender<Control>) -> bool {
        let mut calls = self.lock();
        if calls.1.len() >= MAX_CALLS {
            return false;
        }
        calls.1.push(log.sid.clone());
        calls.0.insert(log.sid.clone(), Entry { log, control });
        drop(calls);
        self.changed.send_modify(|n| *n += 1);
        true
    }

    /// Change call `sid` with `f`; returns what `f` returned, `None` for an unknown call.
    pub(crate) fn update<T>(&self, sid: &str, f: impl FnOnce(&mut CallLog) -> T) -> Option<T> {
        let out = self.lock().0.get_mut(sid).map(|e| f(&mut e.log));
        self.changed.send_modify(|n| *n += 1);
        out
    }

    pub(crate) fn get(&self, sid: &str) -> Option<CallLog> {
        self.lock().0.get(sid).map(|e| e.log.clone())
    }

    pub(crate) fn all(&self) -> Vec<CallLog> {
        let calls = self.lock();
        calls
            .1
            .iter()
            .filter_map(|s| calls.0.get(s))
            .map(|e| e.log.clone())
            .collect()
    }

    pub(crate) fn control(&self, sid: &str) -> Option<mpsc::Sender<Control>> {
        self.lock().0.get(sid).map(|e| e.control.clone())
    }

    /// Wait until `f` holds for call `sid` (re-checked on every change, no polling); the
    /// matching snapshot, or `None` when `timeout` passes first or the call is unknown then.
    pub(crate) async fn wait_for(
        &self,
        sid: &str,
        timeout: Duration,
        f: impl Fn(&CallLog) -> bool,
    ) -> Option<CallLog> {
        let mut changes = self.changed.subscribe();
        let wait = async {
            loop {
                let matched = self
                    .lock()
                    .0
                    .get(sid)
                    .filter(|e| f(&e.log))
                    .map(|e| e.log.clone());
                if matched.is_some() {
                    return matched;
                }
                if changes.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }
}
