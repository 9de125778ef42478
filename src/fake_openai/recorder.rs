//! The stand-in's recorder: what every connection sent and was sent, shared with tests.
//!
//! One `Mutex<Vec<ConnectionLog>>` plus a `watch` version counter: every change bumps the counter,
//! so [`Recorder::wait_for`] wakes on each change instead of polling.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

/// What one WebSocket connection (or refused upgrade) did, as the stand-in saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionLog {
    /// Path and query of the upgrade request, e.g. `/v1/realtime?model=gpt-realtime`.
    pub path_and_query: String,
    /// The `Authorization` header as sent (e.g. `Bearer sk-…`), if any.
    pub authorization: Option<String>,
    /// Every client event as received, in order. In `echo-frames` mode `input_audio_buffer.append`
    /// events are left out so that memory stays flat under load.
    pub client_events: Vec<serde_json::Value>,
    /// Every decoded μ-law byte appended (8 kHz, 1 byte = 0.125 ms). Empty in `echo-frames` mode.
    pub appended_audio: Vec<u8>,
    /// When the first and the latest `input_audio_buffer.append` arrived (not in `echo-frames` mode).
    pub first_append_at: Option<std::time::Instant>,
    pub last_append_at: Option<std::time::Instant>,
    /// Every μ-law byte sent in `response.output_audio.delta` events. Empty in `echo-frames` mode.
    pub sent_audio: Vec<u8>,
    /// Every `conversation.item.truncate` as `(item_id, audio_end_ms)`, accepted or rejected.
    pub truncates: Vec<(String, u64)>,
    /// The `code` of every `error` event sent (and `invalid_api_key` for a refused upgrade).
    pub errors_sent: Vec<String>,
    /// The connection has ended (or the upgrade was refused).
    pub closed: bool,
    /// GPT-Live: replies the stand-in stopped because it heard the caller (server-side
    /// interruption, which the API reports to no one).
    pub interruptions: u32,
}

/// Shared, cloneable log of every connection; cheap to clone (two `Arc`s).
#[derive(Clone)]
pub(crate) struct Recorder {
    logs: Arc<Mutex<Vec<ConnectionLog>>>,
    /// Bumped after every change; `wait_for` subscribes to it.
    version: Arc<watch::Sender<u64>>,
}

impl Recorder {
    /// An empty recorder.
    pub(crate) fn new() -> Self {
        Recorder {
            logs: Arc::new(Mutex::new(Vec::new())),
            version: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Add a connection's log; the handle updates that entry.
    pub(crate) fn open(&self, log: ConnectionLog) -> ConnRecorder {
        let index = {
            let mut logs = self.lock();
            logs.push(log);
            logs.len() - 1
        };
        self.bump();
        ConnRecorder {
            recorder: self.clone(),
            index,
        }
    }

    /// A copy of every log so far, in connection order.
    pub(crate) fn snapshot(&self) -> Vec<ConnectionLog> {
        self.lock().clone()
    }

    /// Wait until `f` holds for the logs, re-checking after every recorded change.
    /// Returns `false` if `timeout` passes first.
    pub(crate) async fn wait_for<F: Fn(&[ConnectionLog]) -> bool>(
        &self,
        timeout: Duration,
        f: F,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.version.subscribe();
        loop {
            // Mark the current version seen *before* checking, so a change in between wakes us.
            changes.borrow_and_update();
            if f(&self.lock()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                // The sender lives as long as `self`, so only the timeout ends the wait.
                Ok(Err(_)) | Err(_) => return f(&self.lock()),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ConnectionLog>> {
        // A panic while holding the lock leaves a log that is still worth reading.
        self.logs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// One connection's entry in a [`Recorder`].
pub(crate) struct ConnRecorder {
    recorder: Recorder,
    index: usize,
}

impl ConnRecorder {
    /// Change this connection's log and wake every `wait_for`.
    pub(crate) fn update(&self, f: impl FnOnce(&mut ConnectionLog)) {
        {
            let mut logs = self.recorder.lock();
            if let Some(log) = logs.get_mut(self.index) {
                f(log);
            }
        }
        self.recorder.bump();
    }
}
