//! Where audio goes on a recording's tracks: pure arithmetic, no I/O, so it is exactly testable.
//!
//! Positions are samples (8 kHz, so 8 per ms) since the stream's `start`. The caller's frames
//! carry Twilio's `media.timestamp` (ms since the stream started). The assistant's audio is sent
//! to Twilio faster than it plays and Twilio plays it in order, so a chunk starts playing when it
//! is sent or when the audio before it has played, whichever is later; a barge-in ends it where
//! [`crate::bridge::playback`] says the caller stopped hearing it (the position the bridge also
//! sends in `conversation.item.truncate`).

use std::collections::VecDeque;

use crate::audio::{BYTES_PER_MS, FRAME_MS};
use crate::bridge::playback::Cut;

/// A caller timestamp may run ahead of the relay's own clock by this much, ms (the relay's
/// clock starts when `start` arrives, a little after Twilio's); beyond that it is not believed,
/// so a bogus timestamp cannot make the relay write hours of silence.
pub const CALLER_LEAD_MS: u64 = 2_000;

/// Assistant items whose start positions are kept for barge-in cuts (only the last ones can
/// still be playing).
const ITEMS_KEPT: usize = 8;

/// Samples in `ms` milliseconds.
pub fn samples(ms: u64) -> u64 {
    ms * BYTES_PER_MS as u64
}

/// Where a caller frame stamped `timestamp_ms` goes when `elapsed_ms` have passed since `start`
/// (by the relay's clock), on a track of `track_len` samples. A gap of up to one frame is jitter
/// in the stamps, not lost audio, so the frame follows the previous one (no click of silence
/// mid-word); a longer gap is filled with silence. No or an unreadable timestamp: at the end.
pub fn caller_position(timestamp_ms: Option<u64>, elapsed_ms: u64, track_len: u64) -> u64 {
    let Some(ts) = timestamp_ms else {
        return track_len;
    };
    let at = samples(ts.min(elapsed_ms + CALLER_LEAD_MS));
    if at <= track_len + samples(FRAME_MS as u64) {
        track_len
    } else {
        at
    }
}

/// The assistant track's playout: where the next chunk starts and where recent items started.
#[derive(Debug, Default)]
pub struct Playout {
    /// Where the audio sent so far ends playing, samples.
    cursor: u64,
    /// Recent items and the position each started at, oldest first.
    items: VecDeque<(String, u64)>,
}

impl Playout {
    /// `bytes` of item `item_id` sent at position `now`: returns where they start playing.
    pub fn place(&mut self, item_id: &str, bytes: u64, now: u64) -> u64 {
        let start = self.cursor.max(now);
        if self.items.back().is_none_or(|(id, _)| id != item_id) {
            if self.items.len() == ITEMS_KEPT {
                self.items.pop_front();
            }
            self.items.push_back((item_id.to_string(), start));
        }
        self.cursor = start + bytes;
        start
    }

    /// The caller barged in at position `now` and Twilio was told to clear: returns where the
    /// assistant track ends. Each cut item ends at its start plus what was heard of it (the
    /// earliest wins: items queued behind the playing one were not heard); without a known
    /// item (an earlier session's), at `now`. Never past the audio sent.
    pub fn barge_in(&mut self, cuts: &[Cut], now: u64) -> u64 {
        let heard = cuts
            .iter()
            .filter_map(|cut| {
                let (_, start) = self.items.iter().find(|(id, _)| *id == cut.item_id)?;
                Some(start + samples(cut.heard_ms))
            })
            .min()
            .unwrap_or(now);
        self.cursor = heard.min(self.cursor);
        self.cursor
    }

    /// Bytes kept for item positions (for the memory bound's test).
    pub fn heap_bytes(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<(String, u64)>()
            + self
                .items
                .iter()
                .map(|(id, _)| id.capacity())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(item: &str, heard_ms: u64) -> Cut {
        Cut {
            item_id: item.into(),
            heard_ms,
        }
    }

    #[test]
    fn caller_frames_go_at_their_timestamp_but_never_far_ahead_of_the_clock() {
        assert_eq!(caller_position(Some(100), 100, 0), 800);
        assert_eq!(caller_position(None, 40, 123), 123);
        // Stamped 5 ms late (jitter): right after the previous frame.
        assert_eq!(caller_position(Some(45), 45, samples(40)), samples(40));
        // Stamped early (a burst): after the previous frame too, nothing overwritten.
        assert_eq!(caller_position(Some(30), 45, samples(40)), samples(40));
        // A bogus timestamp an hour ahead is held to the clock plus the lead.
        assert_eq!(
            caller_position(Some(3_600_000), 1_000, 0),
            samples(1_000 + CALLER_LEAD_MS)
        );
    }

    #[test]
    fn audio_sent_faster_than_real_time_plays_back_to_back() {
        let mut p = Playout::default();
        // Three 100 ms chunks sent at once at 1 s: they play from 1.0 s, 1.1 s, 1.2 s.
        let now = samples(1_000);
        assert_eq!(p.place("a", 800, now), samples(1_000));
        assert_eq!(p.place("a", 800, now), samples(1_100));
        assert_eq!(p.place("a", 800, now), samples(1_200));
        // After a pause the next item starts when it is sent.
        assert_eq!(p.place("b", 800, samples(5_000)), samples(5_000));
    }

    #[test]
    fn a_barge_in_ends_the_track_at_what_was_heard_of_the_playing_item() {
        let mut p = Playout::default();
        p.place("a", samples(2_000), samples(1_000));
        p.place("b", samples(1_000), samples(1_000));
        // 700 ms of `a` heard, `b` (queued behind it) not at all.
        let end = p.barge_in(&[cut("a", 700), cut("b", 0)], samples(1_750));
        assert_eq!(end, samples(1_700));
        // The next reply starts when it is sent.
        assert_eq!(p.place("c", 800, samples(2_500)), samples(2_500));
    }

    #[test]
    fn a_barge_in_without_a_known_item_ends_the_track_at_the_barge_in() {
        let mut p = Playout::default();
        p.place("a", samples(2_000), samples(0));
        assert_eq!(p.barge_in(&[cut("old", 300)], samples(500)), samples(500));
        // Never past the audio sent.
        let mut p = Playout::default();
        p.place("a", samples(100), samples(0));
        assert_eq!(p.barge_in(&[cut("a", 900)], samples(900)), samples(100));
    }

    #[test]
    fn only_the_last_items_are_kept() {
        let mut p = Playout::default();
        for i in 0..100 {
            p.place(&format!("item_{i}"), 8, samples(i));
        }
        assert_eq!(p.items.len(), ITEMS_KEPT);
        assert!(p.heap_bytes() < 1024);
    }
}
