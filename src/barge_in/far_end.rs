//! The far-end reference: peak levels of the assistant's audio on the caller's audio clock, and
//! the Geigel double-talk rule that rejects its echo.
//!
//! Audio handed to [`FarEnd::played`] is placed as Twilio plays it: after the audio still queued,
//! or now if nothing is queued. The clock is the caller's inbound audio (samples received), the one
//! clock Twilio runs both tracks on. Levels are kept per 10 ms block in a ring of 2.56 s.

/// 8 kHz samples per block: 10 ms.
const BLOCK: u64 = 80;
/// Blocks in the ring: 2.56 s, enough for the echo window plus audio queued ahead of play.
const SLOTS: usize = 256;

/// Peak |sample| per 10 ms block of the assistant's audio, by the block it plays in.
pub(super) struct FarEnd {
    /// Block `b`'s peak (16-bit PCM magnitude) is at `b % SLOTS`, valid for blocks in
    /// `(highest - SLOTS, highest]`.
    peaks: [u16; SLOTS],
    /// The latest block written (blocks after it hold nothing yet).
    highest: u64,
    /// Caller-clock sample at which the queued audio ends (where the next audio will play).
    queued_to: u64,
    /// Blocks the echo window covers, ending at the current block.
    window_blocks: u64,
}

impl FarEnd {
    /// `window_ms`: how far back played audio can still come back as echo (ms, at most 1.5 s).
    pub(super) fn new(window_ms: u32) -> Self {
        let window_blocks = (u64::from(window_ms) * 8).div_ceil(BLOCK).clamp(1, 150);
        Self {
            peaks: [0; SLOTS],
            highest: 0,
            queued_to: 0,
            window_blocks,
        }
    }

    /// Queues `pcm` (8 kHz 16-bit PCM, in play order) to play after what is queued, or at `now`
    /// (caller-clock sample) if the queue has run dry.
    ///
    /// Audio more than ~1 s ahead of `now` is folded into the last block the ring can hold: it
    /// only ever makes the rule stricter for that block.
    pub(super) fn played(&mut self, now: u64, pcm: impl Iterator<Item = i16>) {
        let limit = now / BLOCK + (SLOTS as u64 - self.window_blocks - 2);
        let mut pos = self.queued_to.max(now);
        for sample in pcm {
            let block = (pos / BLOCK).min(limit);
            self.advance_to(block);
            let slot = &mut self.peaks[block as usize % SLOTS];
            *slot = (*slot).max(sample.unsigned_abs());
            pos += 1;
        }
        self.queued_to = pos.min((limit + 1) * BLOCK);
    }

    /// Zeroes the slots of blocks after `highest` up to `block`, which becomes the highest.
    fn advance_to(&mut self, block: u64) {
        if block <= self.highest {
            return;
        }
        let first = (self.highest + 1).max(block.saturating_sub(SLOTS as u64 - 1));
        for b in first..=block {
            self.peaks[b as usize % SLOTS] = 0;
        }
        self.highest = block;
    }

    /// The loudest block of assistant audio that played within the echo window ending at `now`
    /// (caller-clock sample): a 16-bit PCM magnitude, 0 if none did.
    pub(super) fn recent_peak(&self, now: u64) -> u16 {
        let last = (now / BLOCK).min(self.highest);
        let first = (now / BLOCK)
            .saturating_sub(self.window_blocks - 1)
            .max((self.highest + 1).saturating_sub(SLOTS as u64));
        (first..=last)
            .map(|b| self.peaks[b as usize % SLOTS])
            .max()
            .unwrap_or(0)
    }

    /// Drops audio queued to play after `now` (Twilio `clear` drops it too). What has played stays:
    /// its echo can still come back.
    pub(super) fn drop_queued(&mut self, now: u64) {
        let current = now / BLOCK;
        while self.highest > current {
            self.peaks[self.highest as usize % SLOTS] = 0;
            self.highest -= 1;
        }
        self.queued_to = self.queued_to.min(now);
    }
}

/// Level of a 16-bit PCM magnitude in dBov (0 dBov = full scale, 32768); −120 for 0.
pub(super) fn dbov(magnitude: u16) -> f32 {
    if magnitude == 0 {
        return -120.0;
    }
    20.0 * (f32::from(magnitude) / 32768.0).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_sent_ahead_counts_only_once_it_plays_and_until_the_window_ends() {
        let mut far = FarEnd::new(100);
        // 200 ms sent at once at t = 0: 100 ms of silence, then 100 ms at 1000.
        let pcm = std::iter::repeat_n(0, 800).chain(std::iter::repeat_n(1000, 800));
        far.played(0, pcm);
        assert_eq!(far.recent_peak(400), 0, "50 ms: still the silent part");
        assert_eq!(far.recent_peak(1000), 1000, "125 ms: the loud part plays");
        assert_eq!(
            far.recent_peak(1600 + 400),
            1000,
            "within 100 ms after it ended"
        );
        assert_eq!(far.recent_peak(1600 + 1000), 0, "the window has passed");
    }

    #[test]
    fn audio_sent_after_the_queue_ran_dry_plays_now() {
        let mut far = FarEnd::new(100);
        far.played(0, std::iter::repeat_n(500, 80));
        far.played(8000, std::iter::repeat_n(700, 80));
        assert_eq!(far.recent_peak(8000), 700);
        assert_eq!(far.recent_peak(8000 - 80), 0, "nothing played just before");
    }

    #[test]
    fn dropped_queue_no_longer_counts_but_what_played_does() {
        let mut far = FarEnd::new(300);
        far.played(0, std::iter::repeat_n(900, 8000));
        far.drop_queued(800);
        assert_eq!(far.recent_peak(800), 900, "the first 100 ms played");
        assert_eq!(far.recent_peak(4000), 0, "the rest was cleared");
    }

    #[test]
    fn audio_far_ahead_is_kept_not_lost() {
        let mut far = FarEnd::new(800);
        far.played(0, std::iter::repeat_n(1200, 8000 * 10));
        assert_eq!(far.recent_peak(8000 * 2), 1200);
    }
}
