//! Hearing the caller barge in without the API's help (GPT-Live sends no speech events).
//!
//! Both tasks of a call share one [`crate::barge_in::Detector`]: the outbound task feeds it the
//! assistant audio it sends to Twilio (the echo reference) and says whether any is unplayed; the
//! inbound task feeds it the caller's frames, but only while assistant audio is unplayed (the
//! only time a barge-in can happen, and the detector's CPU is spent only then). On a confirmed
//! onset the inbound task tells the outbound task, which clears Twilio ([`super::outbound`]).
//! The lock is held for one frame's work (a few µs) and never across an `await`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::barge_in::{Detector, DetectorSettings, Onset};

/// The shared detector of one call; clones share it.
#[derive(Clone)]
pub(crate) struct Listen(Arc<Shared>);

struct Shared {
    detector: Mutex<Detector>,
    /// Assistant audio sent to Twilio may still be unplayed.
    playing: AtomicBool,
}

impl Listen {
    pub fn new() -> Self {
        Listen(Arc::new(Shared {
            detector: Mutex::new(Detector::new(DetectorSettings::default())),
            playing: AtomicBool::new(false),
        }))
    }

    /// Outbound: this assistant audio (checked base64 μ-law) went to Twilio to be played.
    pub fn assistant_sent(&self, chunk: &str) {
        let mut buf = [0u8; 1024];
        let mut detector = self.lock();
        if !self.0.playing.swap(true, Ordering::AcqRel) {
            // A new stretch of assistant audio: nothing from before it matters.
            detector.reset();
        }
        with_decoded(chunk, &mut buf, |mulaw| detector.assistant_played(mulaw));
    }

    /// Outbound: whether assistant audio may still be unplayed at Twilio.
    pub fn set_playing(&self, playing: bool) {
        self.0.playing.store(playing, Ordering::Release);
    }

    /// Inbound: one caller frame (checked base64 μ-law). `Some` once when the caller's speech
    /// over the assistant is confirmed.
    pub fn caller_frame(&self, payload: &str) -> Option<Onset> {
        if !self.0.playing.load(Ordering::Acquire) {
            return None;
        }
        let mut buf = [0u8; 1024];
        let mut detector = self.lock();
        let mut onset = None;
        with_decoded(payload, &mut buf, |mulaw| onset = detector.caller_frame(mulaw));
        onset
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Detector> {
        // A panic while holding it cannot leave the detector unusable in a way that matters more
        // than losing barge-in for one call: take the state as it is.
        self.0
            .detector
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Decode `b64` into `buf` (a 20 ms frame fits many times over), or into a `Vec` when longer.
fn with_decoded(b64: &str, buf: &mut [u8], f: impl FnOnce(&[u8])) {
    match BASE64.decode_slice(b64, buf) {
        Ok(n) => f(&buf[..n]),
        Err(_) => {
            if let Ok(bytes) = BASE64.decode(b64) {
                f(&bytes);
            }
        }
    }
}
