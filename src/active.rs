//! Calls in progress on this instance, by CallSid (so the HTTP API can end one), and the shape
//! of outbound calls' per-call settings (kept in the store until their stream connects).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::transcript::EndReason;

/// How one call is ended from outside its tasks. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CallHandle {
    cancel: CancellationToken,
    /// The first reason given; only [`CallHandle::retract_reason`] clears it.
    end_reason: Arc<Mutex<Option<EndReason>>>,
}

impl CallHandle {
    /// A handle cancelled with `parent` (the server's shutdown token) or by [`CallHandle::end`].
    pub fn new(parent: &CancellationToken) -> Self {
        CallHandle {
            cancel: parent.child_token(),
            end_reason: Arc::default(),
        }
    }

    /// End the call, recording why; the first reason given wins.
    pub fn end(&self, reason: EndReason) {
        self.set_reason(reason);
        self.cancel.cancel();
    }

    /// Record why the call is about to end without ending it yet (e.g. before asking Twilio to
    /// hang up, so the `stop` that follows is not mistaken for the caller hanging up).
    pub fn set_reason(&self, reason: EndReason) {
        self.lock_reason().get_or_insert(reason);
    }

    /// Take back `reason` given by [`CallHandle::set_reason`] when what it announced did not
    /// happen (a transfer Twilio refused) and the call goes on. Any other reason stays.
    pub fn retract_reason(&self, reason: EndReason) {
        let mut current = self.lock_reason();
        if *current == Some(reason) && !self.cancel.is_cancelled() {
            *current = None;
        }
    }

    /// Why the call ended, if it has.
    pub fn reason(&self) -> Option<EndReason> {
        *self.lock_reason()
    }

    fn lock_reason(&self) -> std::sync::MutexGuard<'_, Option<EndReason>> {
        // A poisoned lock still holds a valid reason.
        self.end_reason.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token the call's tasks watch.
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }
}

/// How long an end reason announced for a call not (yet) streaming here is kept for a stream
/// that starts after it ([`ActiveCalls::announce_end`]): the time Twilio takes to act on a
/// hang-up, with room to spare.
pub const ANNOUNCED_TTL: Duration = Duration::from_secs(30);

/// At most this many announced reasons are kept; the oldest goes first.
pub const ANNOUNCED_MAX: usize = 1024;

/// Calls in progress by CallSid, and end reasons announced for calls whose stream has not
/// started yet. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ActiveCalls(Arc<Mutex<Calls>>);

#[derive(Debug, Default)]
struct Calls {
    held: HashMap<String, CallHandle>,
    /// CallSid → (reason, when announced), for [`ActiveCalls::announce_end`].
    announced: HashMap<String, (EndReason, Instant)>,
}

impl ActiveCalls {
    /// Register `call_sid` (on Twilio's `start`). A reason announced for it within
    /// [`ANNOUNCED_TTL`] is set on `handle` first, so a hang-up asked for while the stream was
    /// connecting is not mistaken for the caller's when Twilio's `stop` arrives.
    pub fn register(&self, call_sid: &str, handle: CallHandle) {
        let mut calls = self.lock();
        if let Some((reason, at)) = calls.announced.remove(call_sid) {
            if at.elapsed() <= ANNOUNCED_TTL {
                handle.set_reason(reason);
            }
        }
        calls.held.insert(call_sid.to_string(), handle);
    }

    /// Forget `call_sid` (when its call ends).
    pub fn remove(&self, call_sid: &str) {
        self.lock().held.remove(call_sid);
    }

    /// The handle of `call_sid`, if it is in progress here.
    pub fn get(&self, call_sid: &str) -> Option<CallHandle> {
        self.lock().held.get(call_sid).cloned()
    }

    /// End `call_sid` if it is in progress here; returns whether it was.
    pub fn end(&self, call_sid: &str, reason: EndReason) -> bool {
        let handle = self.get(call_sid);
        handle.map(|h| h.end(reason)).is_some()
    }

    /// Say why `call_sid` is about to end, before asking Twilio to end it: set on its handle
    /// when it is in progress here (returned), else kept for a stream of that call that starts
    /// within [`ANNOUNCED_TTL`] ([`ActiveCalls::register`] applies it). One lock for both, so
    /// a stream that starts meanwhile cannot miss it.
    pub fn announce_end(&self, call_sid: &str, reason: EndReason) -> Option<CallHandle> {
        let mut calls = self.lock();
        if let Some(handle) = calls.held.get(call_sid) {
            handle.set_reason(reason);
            return Some(handle.clone());
        }
        calls
            .announced
            .retain(|_, (_, at)| at.elapsed() <= ANNOUNCED_TTL);
        if calls.announced.len() >= ANNOUNCED_MAX {
            let oldest = calls.announced.iter().min_by_key(|(_, (_, at))| *at);
            if let Some(sid) = oldest.map(|(sid, _)| sid.clone()) {
                calls.announced.remove(&sid);
            }
        }
        calls
            .announced
            .insert(call_sid.to_string(), (reason, Instant::now()));
        None
    }

    /// Take back what [`ActiveCalls::announce_end`] said when the end did not happen (Twilio
    /// refused): the announcement is forgotten and the handle's reason retracted.
    pub fn withdraw(&self, call_sid: &str, reason: EndReason) {
        let mut calls = self.lock();
        if calls
            .announced
            .get(call_sid)
            .is_some_and(|(r, _)| *r == reason)
        {
            calls.announced.remove(call_sid);
        }
        if let Some(handle) = calls.held.get(call_sid) {
            handle.retract_reason(reason);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Per-call overrides given to `POST /api/calls`; `None` keeps the configured default.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CallSettings {
    pub instructions: Option<String>,
    pub greeting: Option<String>,
    pub voice: Option<String>,
    /// The configured tools (function names, MCP server labels) this call may use; `None`: all.
    pub tools: Option<Vec<String>>,
    /// `Some(false)` withholds `transfer_call` from this call.
    pub transfer: Option<bool>,
    /// The API call's `metadata`, passed to tool webhooks.
    pub metadata: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ending_a_registered_call_cancels_it_with_the_first_reason() {
        let root = CancellationToken::new();
        let calls = ActiveCalls::default();
        let handle = CallHandle::new(&root);
        calls.register("CA1", handle.clone());
        assert!(calls.end("CA1", EndReason::ApiHangup));
        handle.end(EndReason::CallerHungUp);
        assert!(handle.token().is_cancelled());
        assert_eq!(handle.reason(), Some(EndReason::ApiHangup));
        calls.remove("CA1");
        assert!(!calls.end("CA1", EndReason::ApiHangup));
    }

    #[test]
    fn a_reason_announced_before_the_stream_starts_is_the_calls_reason() {
        let root = CancellationToken::new();
        let calls = ActiveCalls::default();
        assert!(calls.announce_end("CA2", EndReason::ApiHangup).is_none());
        let handle = CallHandle::new(&root);
        calls.register("CA2", handle.clone());
        // Twilio's `stop` that the hang-up causes.
        handle.end(EndReason::CallerHungUp);
        assert_eq!(handle.reason(), Some(EndReason::ApiHangup));
        // Used once: a later stream of the same CallSid starts clean.
        calls.remove("CA2");
        let again = CallHandle::new(&root);
        calls.register("CA2", again.clone());
        again.end(EndReason::CallerHungUp);
        assert_eq!(again.reason(), Some(EndReason::CallerHungUp));
    }

    #[test]
    fn a_withdrawn_announcement_leaves_the_call_as_it_was() {
        let root = CancellationToken::new();
        let calls = ActiveCalls::default();
        calls.announce_end("CA3", EndReason::ApiHangup);
        calls.withdraw("CA3", EndReason::ApiHangup);
        let handle = CallHandle::new(&root);
        calls.register("CA3", handle.clone());
        assert_eq!(handle.reason(), None);
        assert!(calls.announce_end("CA3", EndReason::ApiHangup).is_some());
        calls.withdraw("CA3", EndReason::ApiHangup);
        assert_eq!(handle.reason(), None, "the call goes on with no reason");
    }

    #[test]
    fn announcements_are_bounded() {
        let calls = ActiveCalls::default();
        for i in 0..ANNOUNCED_MAX + 10 {
            calls.announce_end(&format!("CA{i}"), EndReason::ApiHangup);
        }
        assert_eq!(calls.lock().announced.len(), ANNOUNCED_MAX);
    }
}
