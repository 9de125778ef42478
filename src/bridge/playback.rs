//! What the caller has actually heard: marks sent after each chunk of assistant audio, their
//! echoes, and the barge-in arithmetic built on them.
//!
//! Twilio plays media in order and echoes a `mark` once the audio sent before it has played
//! (`PROTOCOLS.md` § "Twilio Media Streams"). So the last echo tells which position of which item
//! was playing at that instant; wall time since the echo advances it, and the next unechoed mark
//! caps it (playback cannot have passed a mark Twilio has not echoed). Pure state, no I/O: the
//! caller passes `Instant`s in, which keeps it exactly testable.

use std::collections::VecDeque;
use std::time::Instant;

use crate::audio::BYTES_PER_MS;

/// A mark sent to Twilio and not yet echoed.
#[derive(Debug, Clone, PartialEq)]
struct PendingMark {
    name: String,
    item_id: String,
    /// ms of the item's audio sent up to this mark.
    end_ms: u64,
}

/// A truncate to send for one assistant item on barge-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub item_id: String,
    /// ms of the item the caller heard: the `audio_end_ms` to send; never past the audio sent.
    pub heard_ms: u64,
}

/// A mark is sent once at least this much audio of an item is unmarked, ms. Realtime deltas are
/// usually longer, so each gets its own mark; short deltas (20 ms echoes) share one, which saves
/// Twilio a mark and an echo per chunk. Wall time between echoes keeps the estimate exact.
pub const MARK_EVERY_MS: u64 = 100;

/// The item being sent: bytes sent and bytes covered by a mark.
#[derive(Debug)]
struct Sending {
    item_id: String,
    sent: u64,
    marked: u64,
}

/// Marks to send around one chunk of audio.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// Closes the previous item's unmarked tail; send it before the audio.
    pub before: Option<String>,
    /// Send after the audio.
    pub after: Option<String>,
}

/// Playback tracking for one call.
#[derive(Debug, Default)]
pub struct Playback {
    sending: Option<Sending>,
    marks: VecDeque<PendingMark>,
    /// Item, position (ms) and the instant that position was playing.
    anchor: Option<(String, u64, Instant)>,
    /// When everything sent so far will have played, if Twilio plays it at 1× from its arrival.
    play_end: Option<Instant>,
}

impl Playback {
    /// Record `bytes` of μ-law audio of `item_id` sent at `now`; returns the marks to send with it.
    pub fn sent(&mut self, item_id: &str, bytes: usize, now: Instant) -> Marks {
        let mut marks = Marks::default();
        if self.sending.as_ref().is_none_or(|s| s.item_id != item_id) {
            marks.before = self.mark_tail();
            if self.marks.is_empty() {
                // Nothing queued at Twilio: this audio starts playing as it arrives.
                self.anchor = Some((item_id.to_string(), 0, now));
            }
            self.sending = Some(Sending {
                item_id: item_id.to_string(),
                sent: 0,
                marked: 0,
            });
        }
        let start = self.play_end.filter(|end| *end > now).unwrap_or(now);
        self.play_end =
            Some(start + std::time::Duration::from_millis((bytes / BYTES_PER_MS) as u64));
        let sending = self.sending.as_mut().expect("set above");
        sending.sent += bytes as u64;
        if sending.sent - sending.marked >= MARK_EVERY_MS * BYTES_PER_MS as u64 {
            marks.after = self.mark_tail();
        }
        marks
    }

    /// Cover the audio sent but not yet marked (the item's audio is done, or a new item starts):
    /// returns the mark to send, if there was such audio.
    pub fn mark_tail(&mut self) -> Option<String> {
        let sending = self.sending.as_mut()?;
        if sending.sent == sending.marked {
            return None;
        }
        sending.marked = sending.sent;
        let end_ms = sending.sent / BYTES_PER_MS as u64;
        let name = format!("{}@{end_ms}", sending.item_id);
        self.marks.push_back(PendingMark {
            name: name.clone(),
            item_id: sending.item_id.clone(),
            end_ms,
        });
        Some(name)
    }

    /// Twilio echoed mark `name` at `at`. Unknown names (echoes flushed by a `clear`) are ignored;
    /// returns whether the mark was one we were waiting for.
    pub fn echoed(&mut self, name: &str, at: Instant) -> bool {
        let Some(index) = self.marks.iter().position(|m| m.name == name) else {
            return false;
        };
        let mark = self
            .marks
            .drain(..=index)
            .next_back()
            .expect("index is in range");
        // Whatever was sent after this mark starts playing the moment it echoes.
        let next_item = match self.marks.front() {
            Some(next) => Some(next.item_id.as_str()),
            None => self
                .sending
                .as_ref()
                .filter(|s| s.sent > s.marked)
                .map(|s| s.item_id.as_str()),
        };
        self.anchor = match next_item {
            Some(next) if next != mark.item_id => Some((next.to_string(), 0, at)),
            _ => Some((mark.item_id, mark.end_ms, at)),
        };
        true
    }

    /// Whether audio sent to Twilio may still be unplayed (marks not yet echoed, or a tail not
    /// yet covered by a mark).
    pub fn is_playing(&self) -> bool {
        !self.marks.is_empty() || self.sending.as_ref().is_some_and(|s| s.sent > s.marked)
    }

    /// ms of audio sent and not yet played at `now`, estimated at 1× from each chunk's sending
    /// (what [`super::pacer`] keeps under `PLAYBACK_AHEAD_MS`); 0 after a barge-in.
    pub fn unplayed_ms(&self, now: Instant) -> u64 {
        self.play_end.map_or(0, |end| {
            end.saturating_duration_since(now).as_millis() as u64
        })
    }

    /// When everything sent so far will have played (see [`Playback::unplayed_ms`]).
    pub fn play_end(&self) -> Option<Instant> {
        self.play_end
    }

    /// Items with audio not yet played (marks pending, or an unmarked tail).
    pub fn unplayed_items(&self) -> Vec<String> {
        let mut items: Vec<String> = Vec::new();
        let tail = self
            .sending
            .as_ref()
            .filter(|s| s.sent > s.marked)
            .map(|s| &s.item_id);
        for id in self.marks.iter().map(|m| &m.item_id).chain(tail) {
            if !items.contains(id) {
                items.push(id.clone());
            }
        }
        items
    }

    /// The item sent last and how much of it was sent, ms.
    pub fn last_sent(&self) -> Option<(&str, u64)> {
        self.sending
            .as_ref()
            .map(|s| (s.item_id.as_str(), s.sent / BYTES_PER_MS as u64))
    }

    /// ms of audio sent for the item currently being sent, if any.
    pub fn sent_ms(&self, item_id: &str) -> Option<u64> {
        match &self.sending {
            Some(s) if s.item_id == item_id => Some(s.sent / BYTES_PER_MS as u64),
            _ => None,
        }
    }

    /// The caller barged in at `now`: forget pending marks (Twilio's `clear` flushes them) and
    /// return, for each item with unplayed audio, how much of it was heard. The item playing gets
    /// its anchor position plus elapsed time, capped at its next unechoed mark (or, for an
    /// unmarked tail, at the audio sent); items queued behind it were not heard at all.
    pub fn barge_in(&mut self, now: Instant) -> Vec<Cut> {
        let mut unplayed: Vec<(String, u64)> = Vec::new();
        for mark in &self.marks {
            if !unplayed.iter().any(|(id, _)| *id == mark.item_id) {
                unplayed.push((mark.item_id.clone(), mark.end_ms));
            }
        }
        if let Some(s) = self.sending.as_mut() {
            if s.sent > s.marked && !unplayed.iter().any(|(id, _)| *id == s.item_id) {
                unplayed.push((s.item_id.clone(), s.sent / BYTES_PER_MS as u64));
            }
            // The clear drops the tail too.
            s.marked = s.sent;
        }
        let cuts = unplayed
            .into_iter()
            .enumerate()
            .map(|(i, (item_id, cap_ms))| {
                let heard_ms = match &self.anchor {
                    Some((item, pos, at)) if i == 0 && *item == item_id => {
                        let elapsed = now.saturating_duration_since(*at).as_millis() as u64;
                        (pos + elapsed).min(cap_ms)
                    }
                    _ => 0,
                };
                Cut { item_id, heard_ms }
            })
            .collect();
        self.marks.clear();
        self.anchor = None;
        self.play_end = None;
        cuts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn heard_is_last_echo_plus_elapsed_capped_at_the_next_mark() {
        let t0 = Instant::now();
        let mut p = Playback::default();
        let m1 = p.sent("item_1", 800, t0); // 100 ms
        p.sent("item_1", 800, t0); // 200 ms
        p.sent("item_1", 800, t0); // 300 ms
        assert_eq!(m1.after.as_deref(), Some("item_1@100"));
        assert_eq!(m1.before, None);
        assert!(p.echoed("item_1@100", t0 + 100 * MS));
        // 30 ms after the 100 ms echo: 130 ms heard.
        let cuts = p.barge_in(t0 + 130 * MS);
        assert_eq!(
            cuts,
            [Cut {
                item_id: "item_1".into(),
                heard_ms: 130
            }]
        );
        assert!(!p.is_playing());
    }

    #[test]
    fn unplayed_audio_runs_down_at_real_time_and_a_barge_in_empties_it() {
        let t0 = Instant::now();
        let mut p = Playback::default();
        p.sent("item_1", 1600, t0); // 200 ms
        p.sent("item_1", 1600, t0); // 400 ms queued
        assert_eq!(p.unplayed_ms(t0), 400);
        assert_eq!(p.unplayed_ms(t0 + 150 * MS), 250);
        // Sent after the queue ran dry: it starts playing as it arrives.
        p.sent("item_1", 800, t0 + 500 * MS);
        assert_eq!(p.unplayed_ms(t0 + 500 * MS), 100);
        p.barge_in(t0 + 550 * MS);
        assert_eq!(p.unplayed_ms(t0 + 550 * MS), 0);
    }

    #[test]
    fn heard_never_passes_an_unechoed_mark() {
        let t0 = Instant::now();
        let mut p = Playback::default();
        p.sent("a", 800, t0);
        p.sent("a", 800, t0);
        p.echoed("a@100", t0 + 100 * MS);
        // Twilio is late echoing a@200 (jitter): we must not claim more than 200 ms.
        let cuts = p.barge_in(t0 + 900 * MS);
        assert_eq!(cuts[0].heard_ms, 200);
    }

    #[test]
    fn before_any_echo_playback_counts_from_the_first_send() {
        let t0 = Instant::now();
        let mut p = Playback::default();
        p.sent("a", 1600, t0);
        assert_eq!(p.barge_in(t0 + 60 * MS)[0].heard_ms, 60);
    }

    #[test]
    fn a_queued_item_starts_when_the_previous_items_last_mark_echoes() {
        let t0 = Instant::now();
        let mut p = Playback::default();
        p.sent("a", 800, t0);
        p.sent("b", 800, t0 + 10 * MS);
        p.echoed("a@100", t0 + 100 * MS);
        let cuts = p.barge_in(t0 + 140 * MS);
        assert_eq!(
            cuts,
            [Cut {
                item_id: "b".into(),
                heard_ms: 40
            }]
        );
    }

    #[test]
    fn items_queued_behind_the_playing_one_were_not_heard() {
        let t0 = Instant::now();
        let mut p = Playback::default();
        p.sent("a", 800, t0);
        p.sent("b", 800, t0);
        let cuts = p.barge_in(t0 + 50 * MS);
        assert_eq!(
            cuts,
            [
                Cut {
                    item_id: "a".into(),
                    heard_ms: 50
                },
                Cut {
                    item_id: "b".into(),
                    heard_ms: 0
                }
            ]
        );
    }

    #[test]
    fn echoes_flushed_by_clear_are_ignored() {
        let t0 = Instant::now();
        let mut p = Playback::default();
        p.sent("a", 800, t0);
        p.barge_in(t0);
        assert!(!p.echoed("a@100", t0 + MS));
        assert!(!p.is_playing());
        assert!(p.barge_in(t0 + 5 * MS).is_empty());
    }

    #[test]
    fn short_chunks_share_a_mark_and_the_tail_is_marked_when_the_item_is_done() {
        let t0 = Instant::now();
        let mut p = Playback::default();
        let names: Vec<Option<String>> = (0..7).map(|_| p.sent("a", 160, t0).after).collect();
        // Seven 20 ms chunks: one mark after the fifth (100 ms), the last 40 ms still unmarked.
        assert_eq!(names.iter().flatten().collect::<Vec<_>>(), ["a@100"]);
        assert!(p.is_playing());
        p.echoed("a@100", t0 + 100 * MS);
        assert!(p.is_playing(), "40 ms are unmarked, so maybe unplayed");
        assert_eq!(p.mark_tail().as_deref(), Some("a@140"));
        assert_eq!(p.mark_tail(), None);
        p.echoed("a@140", t0 + 140 * MS);
        assert!(!p.is_playing());
    }

    #[test]
    fn an_unmarked_tail_is_cut_at_most_at_the_audio_sent() {
        let t0 = Instant::now();
        let mut p = Playback::default();
        for _ in 0..7 {
            p.sent("a", 160, t0);
        }
        p.echoed("a@100", t0 + 100 * MS);
        assert_eq!(
            p.barge_in(t0 + 125 * MS),
            [Cut {
                item_id: "a".into(),
                heard_ms: 125
            }]
        );
        assert!(!p.is_playing(), "the clear dropped the tail");
        // Late: playback cannot have passed the 140 ms that were sent.
        let mut p = Playback::default();
        for _ in 0..7 {
            p.sent("a", 160, t0);
        }
        p.echoed("a@100", t0 + 100 * MS);
        assert_eq!(p.barge_in(t0 + 900 * MS)[0].heard_ms, 140);
    }

    #[test]
    fn a_new_item_closes_the_previous_items_tail_first() {
        let t0 = Instant::now();
        let mut p = Playback::default();
        p.sent("a", 400, t0); // 50 ms, unmarked
        let marks = p.sent("b", 800, t0 + 10 * MS);
        assert_eq!(marks.before.as_deref(), Some("a@50"));
        assert_eq!(marks.after.as_deref(), Some("b@100"));
        p.echoed("a@50", t0 + 50 * MS);
        assert_eq!(
            p.barge_in(t0 + 80 * MS),
            [Cut {
                item_id: "b".into(),
                heard_ms: 30
            }]
        );
    }

    #[test]
    fn fully_played_audio_needs_no_cut() {
        let t0 = Instant::now();
        let mut p = Playback::default();
        p.sent("a", 800, t0);
        p.echoed("a@100", t0 + 100 * MS);
        assert!(!p.is_playing());
        assert!(p.barge_in(t0 + 200 * MS).is_empty());
        assert_eq!(p.sent_ms("a"), Some(100));
    }
}
