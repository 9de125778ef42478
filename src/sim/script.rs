//! The caller's side of the conversation: which 20 ms frame to send next, and when to hang up.
//!
//! Clip `0` starts after `quiet_ms` of quiet; each next clip starts once the reply to the previous
//! one has started playing and then been quiet for `quiet_ms`, or `interrupt_after_ms` after that
//! reply started playing (barge-in), or `reply_timeout_ms` after the clip ended with no reply.
//! After the last clip the same rule (without barge-in) decides when to hang up.

use crate::audio::{FRAME_BYTES, ULAW_SILENCE};

use super::playback::Playback;

/// One 20 ms μ-law frame.
pub(crate) type Frame = [u8; FRAME_BYTES];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for `quiet_ms` of quiet before clip 0.
    Opening,
    /// Sending clip `index`, `sent` bytes of it so far.
    Speaking {
        index: usize,
        sent: usize,
        replies_before: usize,
    },
    /// Clip `index` ended at `ended_ms`; waiting for a reply started after `replies_before`.
    Listening {
        index: usize,
        ended_ms: u64,
        replies_before: usize,
    },
    /// Time to send `stop`.
    Hangup,
}

/// Timing knobs, ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub quiet_ms: u64,
    pub interrupt_after_ms: Option<u64>,
    pub reply_timeout_ms: u64,
}

/// The clip schedule as a state machine driven once per 20 ms tick.
#[derive(Debug)]
pub(crate) struct Script {
    clips: Vec<Vec<u8>>,
    timing: Timing,
    phase: Phase,
    /// When the first clip's last frame was sent, ms since stream start.
    pub first_clip_end_ms: Option<u64>,
    /// Clips that got no reply within `reply_timeout_ms`.
    pub reply_timeouts: usize,
}

impl Script {
    /// A script that will say `clips` (μ-law) in order.
    pub(crate) fn new(clips: Vec<Vec<u8>>, timing: Timing) -> Self {
        Self {
            clips,
            timing,
            phase: Phase::Opening,
            first_clip_end_ms: None,
            reply_timeouts: 0,
        }
    }

    /// The frame to send at `now_ms` (silence between clips), or `None` when it is time to hang up.
    /// Call after `playback.tick(now_ms)`.
    pub(crate) fn next_frame(&mut self, now_ms: u64, playback: &mut Playback) -> Option<Frame> {
        self.advance(now_ms, playback);
        let Phase::Speaking {
            index,
            sent,
            replies_before,
        } = self.phase
        else {
            return (self.phase != Phase::Hangup).then_some([ULAW_SILENCE; FRAME_BYTES]);
        };
        let clip = &self.clips[index];
        let end = (sent + FRAME_BYTES).min(clip.len());
        let mut frame = [ULAW_SILENCE; FRAME_BYTES];
        frame[..end - sent].copy_from_slice(&clip[sent..end]);
        self.phase = if end == clip.len() {
            tracing::info!(clip = index, at_ms = now_ms, "clip sent");
            self.first_clip_end_ms.get_or_insert(now_ms);
            Phase::Listening {
                index,
                ended_ms: now_ms,
                replies_before,
            }
        } else {
            Phase::Speaking {
                index,
                sent: end,
                replies_before,
            }
        };
        Some(frame)
    }

    fn advance(&mut self, now_ms: u64, playback: &mut Playback) {
        let quiet = playback.quiet_ms(now_ms) >= self.timing.quiet_ms;
        let next = match self.phase {
            Phase::Opening if quiet => Some(0),
            Phase::Listening {
                index,
                ended_ms,
                replies_before,
            } => {
                let has_next = index + 1 < self.clips.len();
                let reply_start = (playback.replies_started > replies_before)
                    .then_some(playback.reply_started_ms)
                    .flatten();
                let barge_in = match (reply_start, self.timing.interrupt_after_ms) {
                    (Some(started), Some(after)) => has_next && now_ms >= started + after,
                    _ => false,
                };
                let timed_out =
                    reply_start.is_none() && now_ms >= ended_ms + self.timing.reply_timeout_ms;
                if timed_out {
                    tracing::warn!(clip = index, "no reply within the reply timeout");
                    self.reply_timeouts += 1;
                }
                (barge_in || timed_out || (reply_start.is_some() && quiet)).then_some(index + 1)
            }
            _ => None,
        };
        if let Some(index) = next {
            self.phase = if index < self.clips.len() {
                tracing::info!(clip = index, at_ms = now_ms, "clip starts");
                playback.new_turn();
                Phase::Speaking {
                    index,
                    sent: 0,
                    replies_before: playback.replies_started,
                }
            } else {
                Phase::Hangup
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        quiet_ms: 100,
        interrupt_after_ms: None,
        reply_timeout_ms: 1000,
    };

    /// Drives `script` with one tick per 20 ms from `from_ms`, feeding `reply` (μ-law) into playback
    /// `reply_after_ms` after each clip ends; returns the frames and the time of hangup.
    fn drive(script: &mut Script, reply: &[u8], reply_after_ms: u64) -> (Vec<Frame>, u64) {
        let mut pb = Playback::new();
        let mut frames = Vec::new();
        let mut pending: Option<u64> = None;
        for now in (0..60_000).step_by(20) {
            if pending.is_some_and(|at| now >= at) {
                pb.push_audio(reply);
                pending = None;
            }
            pb.tick(now);
            let before = script.phase;
            match script.next_frame(now, &mut pb) {
                Some(frame) => frames.push(frame),
                None => return (frames, now),
            }
            if script.phase != before && matches!(script.phase, Phase::Listening { .. }) {
                pending = Some(now + reply_after_ms);
            }
        }
        panic!("never hung up");
    }

    fn speech(frames: &[Frame]) -> Vec<usize> {
        let mut starts = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            let silent = frame.iter().all(|&b| b == ULAW_SILENCE);
            let was_silent = i == 0 || frames[i - 1].iter().all(|&b| b == ULAW_SILENCE);
            if !silent && was_silent {
                starts.push(i * 20);
            }
        }
        starts
    }

    #[test]
    fn clips_wait_for_quiet_after_each_reply_then_hang_up() {
        let clips = vec![vec![1; 300], vec![2; 160]];
        let mut script = Script::new(clips, TIMING);
        // Replies of 200 ms arrive 60 ms after each clip.
        let (frames, hangup) = drive(&mut script, &[5; 1600], 60);
        // Clip 0: 100 ms quiet, 2 frames (last padded). Ends at 120, reply plays 180..380,
        // quiet from 360 (last tick playing) → clip 1 at 460, ends 460; reply 520..700; hang up 800.
        assert_eq!(speech(&frames), vec![100, 460]);
        assert_eq!(
            &frames[6][140..],
            &[ULAW_SILENCE; 20][..],
            "last frame padded"
        );
        assert_eq!(hangup, 800);
        assert_eq!(script.first_clip_end_ms, Some(120));
        assert_eq!(script.reply_timeouts, 0);
    }

    #[test]
    fn barge_in_starts_the_next_clip_while_the_reply_plays() {
        let timing = Timing {
            interrupt_after_ms: Some(200),
            ..TIMING
        };
        let mut script = Script::new(vec![vec![1; 160], vec![2; 160]], timing);
        // A 2 s reply starts playing at 160; clip 1 must start 200 ms later, while it still plays.
        let (frames, _) = drive(&mut script, &[5; 16_000], 60);
        assert_eq!(speech(&frames), vec![100, 360]);
    }

    #[test]
    fn a_missing_reply_times_out_and_is_counted() {
        let mut script = Script::new(vec![vec![1; 160], vec![2; 160]], TIMING);
        let (frames, hangup) = drive(&mut script, &[], 0);
        assert_eq!(speech(&frames), vec![100, 1100]);
        assert_eq!(hangup, 2100);
        assert_eq!(script.reply_timeouts, 2);
    }
}
