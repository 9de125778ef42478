//! The simulated phone's playback buffer: plays received μ-law in real time and echoes marks.
//!
//! Mirrors what Twilio does on a bidirectional stream (`PROTOCOLS.md` § "Twilio Media Streams"):
//! audio is buffered and played in order, a `mark` is echoed once the audio queued before it has
//! played (at once if nothing is queued), and `clear` drops unplayed audio and echoes every pending
//! mark at once. Time advances only through [`Playback::tick`], one call per 20 ms frame.

use std::collections::VecDeque;

use crate::audio::{BYTES_PER_MS, FRAME_BYTES};

/// How long the buffer must stay empty before the next audio counts as a new reply, ms. Shorter
/// gaps are playback underruns inside one reply (audio streamed at about real-time pace), unless
/// the caller spoke in between ([`Playback::new_turn`]) or a `clear` came.
pub(crate) const REPLY_GAP_MS: u64 = 300;

/// The playback buffer and its counters. All times are ms since the stream started.
#[derive(Debug, Default)]
pub(crate) struct Playback {
    /// Unplayed μ-law bytes.
    audio: VecDeque<u8>,
    /// Pending marks with the stream position (bytes ever queued) they wait for.
    marks: VecDeque<(u64, String)>,
    /// Bytes ever queued, cleared ones included.
    queued: u64,
    /// Bytes played or dropped by `clear`; `queued - consumed == audio.len()`.
    consumed: u64,
    /// Every byte played, in order.
    pub heard: Vec<u8>,
    /// When the buffer last ran empty; `None` while there is audio to play.
    idle_since_ms: Option<u64>,
    /// Whether the audio now arriving continues the current reply.
    reply_active: bool,
    /// Replies whose first byte has played.
    pub replies_started: usize,
    /// When the latest reply's first byte played.
    pub reply_started_ms: Option<u64>,
    /// Bytes of the latest reply played so far.
    reply_played: u64,
    /// For each `clear`: ms of the latest reply played when it arrived.
    pub heard_ms_at_clear: Vec<u64>,
    /// The most μ-law bytes ever waiting unplayed at once.
    pub max_queued: usize,
}

impl Playback {
    /// An empty buffer, quiet since the stream started (0 ms).
    pub(crate) fn new() -> Self {
        Self {
            idle_since_ms: Some(0),
            ..Self::default()
        }
    }

    /// Queues μ-law bytes after everything already queued.
    pub(crate) fn push_audio(&mut self, ulaw: &[u8]) {
        if ulaw.is_empty() {
            return;
        }
        self.audio.extend(ulaw);
        self.max_queued = self.max_queued.max(self.audio.len());
        self.queued += ulaw.len() as u64;
        self.idle_since_ms = None;
    }

    /// Queues a mark after the queued audio; returns it back if it is due at once (nothing queued).
    pub(crate) fn push_mark(&mut self, name: String) -> Option<String> {
        if self.queued == self.consumed {
            // Nothing is queued, so no earlier mark can be pending either.
            return Some(name);
        }
        self.marks.push_back((self.queued, name));
        None
    }

    /// Drops all unplayed audio and returns every pending mark, in order, to echo at once.
    pub(crate) fn clear(&mut self, now_ms: u64) -> Vec<String> {
        self.heard_ms_at_clear
            .push(self.reply_played / BYTES_PER_MS as u64);
        if !self.audio.is_empty() {
            self.idle_since_ms = Some(now_ms);
        }
        self.audio.clear();
        self.consumed = self.queued;
        // Whatever arrives next answers something new.
        self.reply_active = false;
        self.marks.drain(..).map(|(_, name)| name).collect()
    }

    /// Plays the next 20 ms (up to 160 bytes) and returns the marks whose audio has now all played.
    pub(crate) fn tick(&mut self, now_ms: u64) -> Vec<String> {
        let n = self.audio.len().min(FRAME_BYTES);
        if n > 0 {
            if !self.reply_active {
                self.reply_active = true;
                self.replies_started += 1;
                self.reply_started_ms = Some(now_ms);
                self.reply_played = 0;
            }
            self.heard.extend(self.audio.drain(..n));
            self.consumed += n as u64;
            self.reply_played += n as u64;
            if self.audio.is_empty() {
                self.idle_since_ms = Some(now_ms);
            }
        } else if self.quiet_ms(now_ms) >= REPLY_GAP_MS {
            self.reply_active = false;
        }
        let mut due = Vec::new();
        while let Some((at, _)) = self.marks.front() {
            if *at > self.consumed {
                break;
            }
            let (_, name) = self.marks.pop_front().expect("front() was Some");
            due.push(name);
        }
        due
    }

    /// The caller starts talking: if nothing is playing, the next audio answers this new turn
    /// even if it comes sooner than [`REPLY_GAP_MS`] after the last reply.
    pub(crate) fn new_turn(&mut self) {
        if self.audio.is_empty() {
            self.reply_active = false;
        }
    }

    /// How long nothing has been left to play, ms (0 while audio is queued).
    pub(crate) fn quiet_ms(&self, now_ms: u64) -> u64 {
        self.idle_since_ms
            .map_or(0, |since| now_ms.saturating_sub(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks at 20 ms steps from `from_ms` (inclusive) to `to_ms` (exclusive), collecting echoes.
    fn run(pb: &mut Playback, from_ms: u64, to_ms: u64) -> Vec<(u64, String)> {
        let mut echoed = Vec::new();
        for now in (from_ms..to_ms).step_by(20) {
            echoed.extend(pb.tick(now).into_iter().map(|name| (now, name)));
        }
        echoed
    }

    #[test]
    fn marks_are_echoed_in_order_only_after_their_audio_played() {
        let mut pb = Playback::new();
        pb.push_audio(&[1; 400]); // 50 ms: plays at ticks 0, 20, 40
        assert_eq!(pb.push_mark("a".into()), None);
        pb.push_audio(&[2; 160]);
        assert_eq!(pb.push_mark("b".into()), None);
        assert_eq!(pb.push_mark("c".into()), None);
        let echoed = run(&mut pb, 0, 200);
        assert_eq!(
            echoed,
            vec![(40, "a".into()), (60, "b".into()), (60, "c".into())]
        );
        assert_eq!(pb.heard.len(), 560);
        assert_eq!(&pb.heard[..400], &[1; 400][..]);
        assert_eq!(pb.replies_started, 1);
        assert_eq!(pb.quiet_ms(200), 140);
    }

    #[test]
    fn a_mark_with_nothing_queued_is_echoed_at_once() {
        let mut pb = Playback::new();
        assert_eq!(pb.push_mark("now".into()), Some("now".into()));
        pb.push_audio(&[1; 160]);
        pb.tick(0);
        assert_eq!(pb.push_mark("later".into()), Some("later".into()));
    }

    #[test]
    fn clear_drops_unplayed_audio_and_echoes_pending_marks_at_once() {
        let mut pb = Playback::new();
        pb.push_audio(&[1; 8000]); // 1 s
        pb.push_mark("m1".into());
        pb.push_audio(&[2; 800]);
        pb.push_mark("m2".into());
        assert!(run(&mut pb, 0, 100).is_empty());
        assert_eq!(pb.clear(110), vec!["m1".to_string(), "m2".to_string()]);
        assert_eq!(pb.heard.len(), 5 * 160);
        assert_eq!(pb.heard_ms_at_clear, vec![100]);
        assert!(run(&mut pb, 120, 200).is_empty());
        assert_eq!(pb.heard.len(), 5 * 160, "nothing plays after clear");
        assert_eq!(pb.quiet_ms(200), 90);
    }

    #[test]
    fn heard_ms_at_clear_counts_the_reply_then_playing_from_its_first_byte() {
        let mut pb = Playback::new();
        pb.push_audio(&[1; 800]); // first reply, 100 ms
        run(&mut pb, 0, 1000);
        pb.push_audio(&[2; 8000]); // second reply starts at 1000 ms
        run(&mut pb, 1000, 1340);
        pb.clear(1345);
        assert_eq!(pb.replies_started, 2);
        assert_eq!(pb.reply_started_ms, Some(1000));
        assert_eq!(pb.heard_ms_at_clear, vec![340]);
        // Audio after a clear is a new reply even without a gap.
        pb.push_audio(&[3; 160]);
        run(&mut pb, 1360, 1380);
        assert_eq!(pb.replies_started, 3);
        pb.clear(1390);
        assert_eq!(pb.heard_ms_at_clear, vec![340, 20]);
    }

    #[test]
    fn a_short_underrun_does_not_start_a_new_reply_but_a_caller_turn_does() {
        let mut pb = Playback::new();
        pb.push_audio(&[1; 160]);
        run(&mut pb, 0, 100);
        pb.push_audio(&[1; 160]);
        run(&mut pb, 100, 120);
        assert_eq!(pb.replies_started, 1);
        run(&mut pb, 120, 120 + REPLY_GAP_MS);
        pb.push_audio(&[1; 160]);
        run(&mut pb, 420, 460);
        assert_eq!(pb.replies_started, 2);
        // After the caller spoke, audio is a new reply even without the gap.
        pb.new_turn();
        pb.push_audio(&[1; 160]);
        run(&mut pb, 460, 480);
        assert_eq!(pb.replies_started, 3);
    }
}
