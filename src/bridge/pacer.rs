//! Pacing assistant audio to Twilio, for voice APIs that handle interruption on their side and
//! send no event for it (GPT-Live).
//!
//! Such an API assumes the client plays its audio as it arrives, but it sends faster than real
//! time, and what Twilio holds unplayed cannot be taken back except by a `clear`. So at most
//! `PLAYBACK_AHEAD_MS` of audio is sent ahead of what Twilio has played ([`Playback::unplayed_ms`]);
//! the rest waits here, in pieces of [`PIECE_CHARS`], and a barge-in drops it here. With the
//! Realtime API (`speech_started`, truncate) audio goes to Twilio as it comes, as before.
//!
//! [`Playback::unplayed_ms`]: super::playback::Playback::unplayed_ms

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One piece sent at a time, base64 characters: 960 bytes of μ-law, 120 ms (a multiple of 4,
/// so each piece is valid base64 on its own).
pub(super) const PIECE_CHARS: usize = 1280;
/// The most audio waiting here, base64 characters: 120 s. Beyond that the oldest is dropped.
const MAX_QUEUED_CHARS: usize = 1_280_000;

/// Audio waiting to be sent to Twilio.
#[derive(Debug, Default)]
pub(super) struct Pacer {
    /// `PLAYBACK_AHEAD_MS`; `None`: not pacing.
    ahead_ms: Option<u64>,
    /// (item id, base64 piece), in playing order.
    queue: VecDeque<(String, String)>,
    chars: usize,
    /// The item's audio is complete: mark its tail once the queue has gone out.
    tail_due: bool,
}

impl Pacer {
    /// Pacing at `ahead_ms` (0: pieces still go one at a time, as soon as nothing is unplayed).
    pub fn new(ahead_ms: Option<u64>) -> Self {
        Pacer {
            ahead_ms,
            ..Pacer::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.ahead_ms.is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queue `delta` (checked base64) of `item_id`; returns the characters dropped from the
    /// front to stay within [`MAX_QUEUED_CHARS`].
    pub fn push(&mut self, item_id: &str, delta: &str) -> usize {
        let mut rest = delta;
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(rest.len().min(PIECE_CHARS));
            rest = tail;
            self.chars += piece.len();
            self.queue
                .push_back((item_id.to_string(), piece.to_string()));
        }
        let mut dropped = 0;
        while self.chars > MAX_QUEUED_CHARS {
            let Some((_, piece)) = self.queue.pop_front() else {
                break;
            };
            self.chars -= piece.len();
            dropped += piece.len();
        }
        dropped
    }

    /// The next piece to send when `unplayed_ms` of audio is queued at Twilio.
    pub fn next(&mut self, unplayed_ms: u64) -> Option<(String, String)> {
        let ahead_ms = self.ahead_ms?;
        if unplayed_ms > 0 && unplayed_ms >= ahead_ms {
            return None;
        }
        let piece = self.queue.pop_front()?;
        self.chars -= piece.1.len();
        Some(piece)
    }

    /// When the next piece may go: once Twilio's queue, ending at `play_end`, is under the limit.
    pub fn deadline(&self, play_end: Option<Instant>) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        // 1 ms past the instant the queue is at the limit, when `next` sends again.
        let ahead = Duration::from_millis(self.ahead_ms?);
        let end = play_end? + Duration::from_millis(1);
        Some(end.checked_sub(ahead).unwrap_or(end))
    }

    /// The item's audio is complete; `true` if its tail can be marked now (nothing waits).
    pub fn tail(&mut self) -> bool {
        self.tail_due = !self.queue.is_empty();
        !self.tail_due
    }

    /// The queue has gone out: whether a tail mark was waiting for that.
    pub fn take_tail(&mut self) -> bool {
        self.queue.is_empty() && std::mem::take(&mut self.tail_due)
    }

    /// A barge-in: drop what waits; returns how many pieces.
    pub fn clear(&mut self) -> usize {
        let n = self.queue.len();
        self.queue.clear();
        self.chars = 0;
        self.tail_due = false;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_only_while_less_than_the_limit_is_unplayed() {
        let mut p = Pacer::new(Some(400));
        // 1 s of audio: 8000 bytes, 10 668 characters; pieces of 1280.
        let delta = "A".repeat(10_668);
        assert_eq!(p.push("item_1", &delta), 0);
        let mut unplayed = 0;
        let mut sent = 0;
        while let Some((item, piece)) = p.next(unplayed) {
            assert_eq!(item, "item_1");
            unplayed += (piece.len() / 4 * 3 / 8) as u64;
            sent += 1;
        }
        // 120 ms pieces until 400 ms is queued: 4 of them (480 ms), the rest waits.
        assert_eq!((sent, unplayed), (4, 480));
        assert!(!p.is_empty());
        assert!(!p.tail(), "the tail waits for the queue");
        assert_eq!(p.clear(), 9 - 4);
        assert!(!p.take_tail(), "a clear drops the waiting tail mark");
    }

    #[test]
    fn the_next_piece_is_due_when_twilio_is_under_the_limit_and_the_queue_is_bounded() {
        let now = Instant::now();
        let mut p = Pacer::new(Some(400));
        assert_eq!(p.deadline(Some(now)), None, "nothing waits");
        p.push("item_1", &"A".repeat(PIECE_CHARS));
        let end = now + Duration::from_millis(1000);
        assert_eq!(
            p.deadline(Some(end)),
            Some(now + Duration::from_millis(601))
        );
        let huge = "A".repeat(MAX_QUEUED_CHARS);
        assert_eq!(
            p.push("item_2", &huge),
            PIECE_CHARS,
            "the oldest piece made room"
        );
        assert_eq!(p.next(0).unwrap().0, "item_2");
        assert!(!Pacer::new(None).enabled());
        assert_eq!(Pacer::new(None).next(0), None);
    }
}
