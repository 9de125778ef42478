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

/// Playback tracking for one call.
#[derive(Debug, Default)]
pub struct Playback {
    /// The item whose audio was sent last and how many bytes of it.
    sending: Option<(String, u64)>,
    marks: VecDeque<PendingMark>,
    /// Item, position (ms) and the instant that position was playing.
    anchor: Option<(String, u64, Instant)>,
}

impl Playback {
    /// Record `bytes` of μ-law audio of `item_id` sent at `now`; returns the mark name to send after it.
    pub fn sent(&mut self, item_id: &str, bytes: usize, now: Instant) -> String {
        let new_item = self.sending.as_ref().is_none_or(|(id, _)| id != item_id);
        if new_item {
            if self.marks.is_empty() {
                // Nothing queued at Twilio: this audio starts playing as it arrives.
                self.anchor = Some((item_id.to_string(), 0, now));
            }
            self.sending = Some((item_id.to_string(), 0));
        }
        let (_, sent) = self.sending.as_mut().expect("set above");
        *sent += bytes as u64;
        let end_ms = *sent / BYTES_PER_MS as u64;
        let name = format!("{item_id}@{end_ms}");
        self.marks.push_back(PendingMark {
            name: name.clone(),
            item_id: item_id.to_string(),
            end_ms,
        });
        name
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
        self.anchor = match self.marks.front() {
            // The next item starts playing the moment the previous one's last mark echoes.
            Some(next) if next.item_id != mark.item_id => Some((next.item_id.clone(), 0, at)),
            _ => Some((mark.item_id, mark.end_ms, at)),
        };
        true
    }

    /// Whether audio sent to Twilio is still unplayed (marks not yet echoed).
    pub fn is_playing(&self) -> bool {
        !self.marks.is_empty()
    }

    /// ms of audio sent for the item currently being sent, if any.
    pub fn sent_ms(&self, item_id: &str) -> Option<u64> {
        match &self.sending {
            Some((id, bytes)) if id == item_id => Some(bytes / BYTES_PER_MS as u64),
            _ => None,
        }
    }

    /// The caller barged in at `now`: forget pending marks (Twilio's `clear` flushes them) and
    /// return, for each item with unplayed audio, how much of it was heard. The item playing gets
    /// its anchor position plus elapsed time, capped at its next unechoed mark; items queued
    /// behind it were not heard at all.
    pub fn barge_in(&mut self, now: Instant) -> Vec<Cut> {
        let mut cuts: Vec<Cut> = Vec::new();
        for (i, mark) in self.marks.iter().enumerate() {
            if cuts.iter().any(|c| c.item_id == mark.item_id) {
                continue;
            }
            let heard_ms = match &self.anchor {
                Some((item, pos, at)) if i == 0 && *item == mark.item_id => {
                    let elapsed = now.saturating_duration_since(*at).as_millis() as u64;
                    (pos + elapsed).min(mark.end_ms)
                }
                _ => 0,
            };
            cuts.push(Cut {
                item_id: mark.item_id.clone(),
                heard_ms,
            });
        }
        self.marks.clear();
        self.anchor = None;
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
        assert_eq!(m1, "item_1@100");
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
