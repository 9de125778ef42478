//! Call recordings (`RECORDING=on`): one stereo 8 kHz 16-bit WAV per call, the caller on the
//! left and the assistant on the right as the caller heard it.
//!
//! While the call runs each side writes its own mono μ-law temp track in `RECORDING_DIR`
//! (`{CallSid}.caller.part` from the inbound task, `{CallSid}.assistant.part` from the outbound
//! task) through an 8 KiB buffer ([`track`]); [`place`] decides where audio lands: caller frames
//! at their `media.timestamp`, assistant audio when it plays, cut back at a barge-in to what was
//! heard. At call end [`mix`] interleaves the tracks into `{CallSid}.wav` (temp file + rename)
//! and the temps are deleted; the call record then carries a [`RecordingRef`]. Temp files a
//! crash left behind are deleted at start-up (not finalized: the call they belong to was never
//! finished either). [`retention`] deletes old recordings; [`serve`] is the API's download.
//!
//! Writes are plain blocking writes into the buffer: a 20 ms frame is a 160-byte copy, and the
//! file sees one 8 KiB write(2) per second of audio into the page cache (microseconds; see
//! `bench/README.md`). Nothing is dropped: audio is either on the track or the recording has
//! failed. A failure (disk full, read-only directory) is logged once per call, counted as
//! `errors_total{kind="recording"}`, abandons that call's recording and never ends the call.

mod mix;
pub mod place;
pub mod retention;
pub mod serve;
pub mod track;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::bridge::playback::Cut;
use crate::config::{Config, RecordingMode};
use crate::stats::{ErrorKind, Stats};
use place::Playout;
use track::Track;

/// Longest the WAV may take to be assembled at call end before the call gives up waiting.
const MIX_TIMEOUT: Duration = Duration::from_secs(120);
/// Base64 characters decoded at a time (a multiple of 4: every piece decodes on its own).
const DECODE_CHARS: usize = 1024;

/// The `recording` of a call record (`/api/calls/{sid}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingRef {
    /// `/api/calls/{CallSid}/recording.wav`.
    pub url: String,
    /// Length of the recording, ms.
    pub duration_ms: u64,
    /// Size of the WAV file, bytes.
    pub bytes: u64,
}

/// `RECORDING_DIR/{CallSid}.wav`.
pub fn wav_path(dir: &Path, call_sid: &str) -> PathBuf {
    dir.join(format!("{call_sid}.wav"))
}

/// One call's recording while it runs; cheap to clone (both tasks of the call hold one).
#[derive(Clone)]
pub struct CallRecording(Arc<Shared>);

struct Shared {
    call_sid: String,
    dir: PathBuf,
    /// When Twilio's `start` arrived: position 0 of both tracks.
    started: Instant,
    /// Set on the first failure: logged and counted once, the recording abandoned.
    failed: AtomicBool,
    stats: Stats,
}

impl std::fmt::Debug for CallRecording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRecording")
            .field("call_sid", &self.0.call_sid)
            .finish_non_exhaustive()
    }
}

impl CallRecording {
    /// A recording for the call `call_sid` whose stream started now, if `RECORDING=on`.
    pub fn start(config: &Config, stats: &Stats, call_sid: &str) -> Option<Self> {
        if config.recording != RecordingMode::On {
            return None;
        }
        let rec = CallRecording(Arc::new(Shared {
            call_sid: call_sid.to_string(),
            dir: config.recording_dir.clone(),
            started: Instant::now(),
            failed: AtomicBool::new(false),
            stats: stats.clone(),
        }));
        if let Err(e) = std::fs::create_dir_all(&rec.0.dir) {
            rec.fail("creating RECORDING_DIR", &e);
            return None;
        }
        Some(rec)
    }

    /// ms since the stream started, by the relay's clock.
    fn elapsed_ms(&self) -> u64 {
        self.0.started.elapsed().as_millis() as u64
    }

    /// Position of the present moment on the tracks, samples.
    fn now(&self) -> u64 {
        (self.0.started.elapsed().as_micros() as u64) * 8 / 1000
    }

    fn is_failed(&self) -> bool {
        self.0.failed.load(Ordering::Relaxed)
    }

    /// The recording failed: logged and counted on the first failure only.
    fn fail(&self, what: &str, error: &dyn std::fmt::Display) {
        if !self.0.failed.swap(true, Ordering::Relaxed) {
            self.0.stats.error(ErrorKind::Recording);
            warn!(error = %error, what, dir = %self.0.dir.display(), "the call's recording failed; the call goes on unrecorded");
        }
    }

    fn track(&self, name: &str) -> Option<Track> {
        let path = self.0.dir.join(format!("{}.{name}.part", self.0.call_sid));
        match Track::create(path) {
            Ok(track) => Some(track),
            Err(e) => {
                self.fail("creating a track", &e);
                None
            }
        }
    }

    /// The caller's track (for the inbound task).
    pub fn caller(&self) -> Side {
        Side {
            track: self.track("caller"),
            rec: self.clone(),
            playout: Playout::default(),
        }
    }

    /// The assistant's track (for the outbound task).
    pub fn assistant(&self) -> Side {
        Side {
            track: self.track("assistant"),
            rec: self.clone(),
            playout: Playout::default(),
        }
    }
}

/// One side's track of a call's recording.
#[derive(Debug)]
pub struct Side {
    rec: CallRecording,
    /// `None` once the recording failed.
    track: Option<Track>,
    /// Assistant side: where its audio plays.
    playout: Playout,
}

impl Side {
    /// A caller frame: base64 μ-law `payload` stamped `timestamp` (Twilio's `media.timestamp`,
    /// ms since the stream started, a decimal string).
    pub fn caller_frame(&mut self, timestamp: Option<&str>, payload: &str) {
        let Some(track) = &self.track else { return };
        let ts = timestamp.and_then(|t| t.trim().parse::<u64>().ok());
        let at = place::caller_position(ts, self.rec.elapsed_ms(), track.len());
        self.write(at, payload);
    }

    /// Assistant audio sent to Twilio now: base64 μ-law `payload` of item `item_id`.
    pub fn assistant_audio(&mut self, item_id: &str, payload: &str) {
        if self.track.is_none() {
            return;
        }
        let bytes = crate::twilio::media::base64_decoded_len(payload) as u64;
        let at = self.playout.place(item_id, bytes, self.rec.now());
        self.write(at, payload);
    }

    /// The caller barged in now and Twilio was told to clear: `cuts` as sent in
    /// `conversation.item.truncate`.
    pub fn barge_in(&mut self, cuts: &[Cut]) {
        let end = self.playout.barge_in(cuts, self.rec.now());
        let result = match self.track.as_mut() {
            Some(track) => track.cut(end),
            None => return,
        };
        if let Err(e) = result {
            self.failed("cutting the assistant track", &e);
        }
    }

    /// Decode `payload` (valid base64, checked by the caller) in pieces onto the track at `at`.
    fn write(&mut self, at: u64, payload: &str) {
        let Some(track) = self.track.as_mut() else {
            return;
        };
        let mut buf = [0u8; DECODE_CHARS];
        let mut at = at;
        let mut result = Ok(());
        for piece in payload.as_bytes().chunks(DECODE_CHARS) {
            let n = match base64::engine::general_purpose::STANDARD.decode_slice(piece, &mut buf) {
                Ok(n) => n,
                // Checked as base64 before it got here; skip what does not decode.
                Err(_) => continue,
            };
            result = track.write_at(at, &buf[..n]);
            if result.is_err() {
                break;
            }
            // Where this piece ended: the next one follows it.
            at = track.len();
        }
        if let Err(e) = result {
            self.failed("writing a track", &e);
        }
    }

    fn failed(&mut self, what: &str, error: &std::io::Error) {
        self.rec.fail(what, error);
        if let Some(track) = self.track.take() {
            let _ = std::fs::remove_file(track.path());
        }
    }

    /// Bytes this side holds beyond its own struct (the memory bound's test).
    pub fn heap_bytes(&self) -> usize {
        self.track.as_ref().map_or(0, |_| track::TRACK_BUFFER_BYTES) + self.playout.heap_bytes()
    }
}

/// The call ended: assemble `RECORDING_DIR/{CallSid}.wav` from the two sides and delete the
/// temp tracks. `None` if the call was not recorded or the recording failed (already counted).
pub async fn finish(caller: Option<Side>, assistant: Option<Side>) -> Option<RecordingRef> {
    let rec = caller.as_ref().or(assistant.as_ref())?.rec.clone();
    let call_sid = rec.0.call_sid.clone();
    let out = wav_path(&rec.0.dir, &call_sid);
    let work = {
        let rec = rec.clone();
        let out = out.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Option<u64>> {
            let close = |side: Option<Side>| side.and_then(|s| s.track).map(Track::close);
            let (left, right) = (close(caller), close(assistant));
            let flushed = [&left, &right]
                .into_iter()
                .flatten()
                .find_map(|(_, r)| r.as_ref().err())
                .map_or(Ok(()), |e| Err(anyhow::anyhow!("flushing a track: {e}")));
            let path =
                |t: &Option<(PathBuf, std::io::Result<()>)>| t.as_ref().map(|(p, _)| p.clone());
            let (l, r) = (path(&left), path(&right));
            let result = if rec.is_failed() {
                Ok(None)
            } else {
                flushed.and_then(|()| {
                    let tmp = out.with_extension("wav.tmp");
                    mix::interleave(l.as_deref(), r.as_deref(), &tmp)
                        .and_then(|frames| {
                            std::fs::rename(&tmp, &out).context("renaming the WAV")?;
                            Ok(Some(frames))
                        })
                        .inspect_err(|_| {
                            let _ = std::fs::remove_file(&tmp);
                        })
                })
            };
            for path in [l, r].into_iter().flatten() {
                let _ = std::fs::remove_file(path);
            }
            result
        })
    };
    let frames = match tokio::time::timeout(MIX_TIMEOUT, work).await {
        Ok(Ok(Ok(Some(frames)))) => frames,
        Ok(Ok(Ok(None))) => return None,
        Ok(Ok(Err(e))) => {
            rec.fail("assembling the WAV", &format!("{e:#}"));
            return None;
        }
        Ok(Err(e)) => {
            rec.fail("assembling the WAV", &e);
            return None;
        }
        Err(_) => {
            rec.fail("assembling the WAV", &"timed out");
            return None;
        }
    };
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let duration_ms = frames / 8;
    info!(duration_ms, bytes, path = %out.display(), "recording written");
    Some(RecordingRef {
        url: format!("/api/calls/{call_sid}/recording.wav"),
        duration_ms,
        bytes,
    })
}

/// Delete temp files a crash left in `dir` (`*.part` tracks, `*.wav.tmp`); returns how many.
pub fn remove_leftovers(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".part") || name.ends_with(".wav.tmp")
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_calls_buffers_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            recording: RecordingMode::On,
            recording_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let rec = CallRecording::start(&config, &Stats::default(), "CA1").unwrap();
        let (mut caller, mut assistant) = (rec.caller(), rec.assistant());
        let frame = base64::engine::general_purpose::STANDARD.encode([0x55u8; 160]);
        for i in 0..500 {
            caller.caller_frame(Some(&(i * 20).to_string()), &frame);
            assistant.assistant_audio(&format!("item_{}", i / 50), &frame);
        }
        let per_call = std::mem::size_of::<Shared>()
            + 2 * std::mem::size_of::<Side>()
            + caller.heap_bytes()
            + assistant.heap_bytes();
        assert!(per_call <= 20 * 1024, "{per_call} bytes per recorded call");
    }

    #[tokio::test]
    async fn an_unrecorded_call_and_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let off = Config {
            recording_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        assert!(CallRecording::start(&off, &Stats::default(), "CA1").is_none());
        assert!(finish(None, None).await.is_none());
        for name in ["CA1.caller.part", "CA1.wav.tmp", "CA2.wav"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(remove_leftovers(dir.path()), 2);
        assert!(dir.path().join("CA2.wav").exists());
    }
}
