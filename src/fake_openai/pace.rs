//! The caller's input buffer as a real server runs it: appended audio judged at once, or with
//! `--realtime-pace` queued and fed to the VAD at 1× real time; commits and clears in order with it.
//!
//! At realtime pace each 20 ms slice of an append is due 20 ms after the previous slice was (or
//! after its own arrival, whichever is later), so a burst of appended audio takes as long to be
//! heard as it lasts, and VAD events and transcripts come as late as on the real API. An
//! `input_audio_buffer.commit` or `.clear` waits behind the audio queued before it: it applies to
//! what the server has processed when it gets there, as on a real server.

use std::collections::VecDeque;

use tokio::time::{Duration, Instant};

use super::session::Conn;
use crate::audio::{BYTES_PER_MS, FRAME_BYTES};

/// One client operation on the input buffer, in arrival order.
#[derive(Debug)]
pub(crate) enum Input {
    /// μ-law bytes to feed to the VAD.
    Audio(Vec<u8>),
    /// `input_audio_buffer.commit` with the client's `event_id`.
    Commit(Option<String>),
    /// `input_audio_buffer.clear`.
    Clear,
}

/// Input operations waiting for their turn (realtime pace only), each with its due time.
#[derive(Debug, Default)]
pub(crate) struct InputQueue {
    entries: VecDeque<(Instant, Input)>,
    /// When the audio queued last will have been heard.
    busy_until: Option<Instant>,
}

impl InputQueue {
    /// Queue `audio` in 20 ms slices, each due one slice length after the previous one.
    fn push_audio(&mut self, audio: &[u8], now: Instant) {
        for slice in audio.chunks(FRAME_BYTES) {
            let start = self.busy_until.map_or(now, |t| t.max(now));
            let due =
                start + Duration::from_micros(slice.len() as u64 * 1000 / BYTES_PER_MS as u64);
            self.entries.push_back((due, Input::Audio(slice.to_vec())));
            self.busy_until = Some(due);
        }
    }

    /// Queue a commit or clear behind the audio queued so far; `Some` back when nothing is queued
    /// (it applies at once).
    fn push_after_audio(&mut self, input: Input) -> Option<Input> {
        match self.busy_until {
            Some(due) if !self.entries.is_empty() => {
                self.entries.push_back((due, input));
                None
            }
            _ => Some(input),
        }
    }

    /// The next operation due at `now`, if any.
    fn pop_due(&mut self, now: Instant) -> Option<Input> {
        if self.entries.front().is_some_and(|(due, _)| *due <= now) {
            self.entries.pop_front().map(|(_, input)| input)
        } else {
            None
        }
    }

    /// When the next queued operation is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.entries.front().map(|(due, _)| *due)
    }
}

impl Conn {
    /// Decoded audio of an `input_audio_buffer.append` (recorded as it arrives).
    pub(super) fn on_append(&mut self, audio: Vec<u8>, now: Instant) {
        self.record(|log| {
            log.appended_audio.extend_from_slice(&audio);
            let at = std::time::Instant::now();
            log.first_append_at.get_or_insert(at);
            log.last_append_at = Some(at);
        });
        if self.realtime_pace {
            self.input.push_audio(&audio, now);
        } else {
            self.append(audio, now);
        }
    }

    /// `input_audio_buffer.commit` or `.clear`: now, or behind the audio still queued.
    pub(super) fn on_buffer_op(&mut self, op: Input, now: Instant) {
        if let Some(op) = self.input.push_after_audio(op) {
            self.apply_input(op, now);
        }
    }

    /// Apply every queued operation that is due at `now`.
    pub(super) fn process_input(&mut self, now: Instant) {
        while let Some(op) = self.input.pop_due(now) {
            self.apply_input(op, now);
        }
    }

    fn apply_input(&mut self, op: Input, now: Instant) {
        match op {
            Input::Audio(audio) => self.append(audio, now),
            Input::Commit(event_id) => self.commit_buffer(event_id),
            Input::Clear => self.clear_buffer(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_audio_is_due_at_real_time_and_buffer_ops_wait_behind_it() {
        let mut queue = InputQueue::default();
        let t0 = Instant::now();
        assert!(
            queue.push_after_audio(Input::Clear).is_some(),
            "nothing queued: at once"
        );
        // 50 ms in one append: slices of 20, 20 and 10 ms.
        queue.push_audio(&[0xFF; 50 * BYTES_PER_MS], t0);
        assert!(queue.push_after_audio(Input::Commit(None)).is_none());
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(queue.next_due(), Some(ms(20)));
        assert!(queue.pop_due(ms(19)).is_none());
        assert!(matches!(queue.pop_due(ms(20)), Some(Input::Audio(a)) if a.len() == FRAME_BYTES));
        // Audio arriving later than the queue drains starts from its own arrival.
        assert!(matches!(queue.pop_due(ms(100)), Some(Input::Audio(_))));
        assert!(matches!(queue.pop_due(ms(100)), Some(Input::Audio(a)) if a.len() == 80));
        assert!(matches!(queue.pop_due(ms(100)), Some(Input::Commit(None))));
        assert!(queue.next_due().is_none());
        queue.push_audio(&[0xFF; FRAME_BYTES], ms(200));
        assert_eq!(queue.next_due(), Some(ms(220)));
    }
}
