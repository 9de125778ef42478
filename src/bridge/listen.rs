//! Hearing the caller barge in without the API's help (GPT-Live sends no speech events).
//!
//! Both tasks of a call share one [`crate::barge_in::Detector`]: the outbound task feeds it the
//! assistant audio it sends to Twilio (the echo reference) and says whether any is unplayed; the
//! inbound task feeds it the caller's frames, but only while assistant audio is unplayed (the
//! only time a barge-in can happen, and the detector's CPU is spent only then). On a confirmed
//! onset the inbound task tells the outbound task, which clears Twilio ([`super::outbound`]).
//! The lock is held for one frame's work (a few µs) and never across an `await`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    born: Instant,
    /// When `playing` was last seen set, ms since `born` (`u64::MAX`: never).
    last_playing_ms: AtomicU64,
}

/// The caller is still listened to this long after the assistant's audio ran out, ms: audio
/// arriving in real time leaves short gaps between pieces, and a run of speech that began while
/// the assistant was talking must not be cut by one (the detector's clock is the caller's audio,
/// so it must see every frame of the run).
const HANGOVER_MS: u64 = 1000;

impl Listen {
    pub fn new() -> Self {
        Listen(Arc::new(Shared {
            detector: Mutex::new(Detector::new(DetectorSettings::default())),
            playing: AtomicBool::new(false),
            born: Instant::now(),
            last_playing_ms: AtomicU64::new(u64::MAX),
        }))
    }

    /// Outbound: this assistant audio (checked base64 μ-law) went to Twilio to be played.
    pub fn assistant_sent(&self, chunk: &str) {
        let mut buf = [0u8; 1024];
        self.0.playing.store(true, Ordering::Release);
        let mut detector = self.lock();
        with_decoded(chunk, &mut buf, |mulaw| detector.assistant_played(mulaw));
    }

    /// Outbound: whether assistant audio may still be unplayed at Twilio.
    pub fn set_playing(&self, playing: bool) {
        self.0.playing.store(playing, Ordering::Release);
    }

    /// Inbound: one caller frame (checked base64 μ-law). `Some` once when the caller's speech
    /// over the assistant is confirmed. Frames are scored only while assistant audio is unplayed
    /// and for [`HANGOVER_MS`] after.
    pub fn caller_frame(&self, payload: &str) -> Option<Onset> {
        let now_ms = self.0.born.elapsed().as_millis() as u64;
        if self.0.playing.load(Ordering::Acquire) {
            self.0.last_playing_ms.store(now_ms, Ordering::Relaxed);
        } else {
            let last = self.0.last_playing_ms.load(Ordering::Relaxed);
            if last == u64::MAX || now_ms.saturating_sub(last) > HANGOVER_MS {
                return None;
            }
        }
        let mut buf = [0u8; 1024];
        let mut detector = self.lock();
        let mut onset = None;
        with_decoded(payload, &mut buf, |mulaw| {
            onset = detector.caller_frame(mulaw)
        });
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
