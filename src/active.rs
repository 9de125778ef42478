//! Calls in progress on this instance, by CallSid (so the HTTP API can end one), and the shape
//! of outbound calls' per-call settings (kept in the store until their stream connects).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// Calls in progress by CallSid. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ActiveCalls(Arc<Mutex<HashMap<String, CallHandle>>>);

impl ActiveCalls {
    /// Register `call_sid` (on Twilio's `start`).
    pub fn register(&self, call_sid: &str, handle: CallHandle) {
        self.lock().insert(call_sid.to_string(), handle);
    }

    /// Forget `call_sid` (when its call ends).
    pub fn remove(&self, call_sid: &str) {
        self.lock().remove(call_sid);
    }

    /// The handle of `call_sid`, if it is in progress here.
    pub fn get(&self, call_sid: &str) -> Option<CallHandle> {
        self.lock().get(call_sid).cloned()
    }

    /// End `call_sid` if it is in progress here; returns whether it was.
    pub fn end(&self, call_sid: &str, reason: EndReason) -> bool {
        let handle = self.lock().get(call_sid).cloned();
        handle.map(|h| h.end(reason)).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CallHandle>> {
        self.0.lock().expect("active calls lock poisoned")
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
}
