//! Cutting a track's μ-law into utterance-sized chunks for batch transcription.
//!
//! A chunk starts with up to 300 ms of the quiet before speech and ends after [`PAUSE_MS`] of
//! quiet following speech, or at the maximum length (`WHISPER_CHUNK_SECS`). Audio without speech
//! never makes a chunk. "Speech" is 60 ms of consecutive frames whose RMS
//! ([`crate::audio::rms`]) exceeds 600 (16-bit PCM units, about −35 dBFS).

use crate::audio::{rms, BYTES_PER_MS};

/// Quiet after speech that ends a chunk, ms.
pub const PAUSE_MS: u64 = 700;
/// Quiet kept before the speech of a chunk, ms.
const PRE_ROLL_MS: u64 = 300;
/// Loud audio needed before a chunk counts as speech, ms.
const MIN_SPEECH_MS: u64 = 60;
/// Frame RMS (16-bit PCM units) above which audio is loud.
const SPEECH_RMS: f64 = 600.0;

/// A cut chunk: where it starts in the track's audio (ms) and its μ-law bytes.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Chunk {
    pub start_ms: u64,
    pub ulaw: Vec<u8>,
}

/// Cuts a track's μ-law into chunks at pauses or at a maximum length.
#[derive(Debug)]
pub(super) struct Chunker {
    max_bytes: usize,
    buf: Vec<u8>,
    /// Track position of `buf[0]`, bytes.
    buf_start: u64,
    /// Consecutive loud audio, ms.
    loud_ms: u64,
    /// Consecutive quiet audio since the last loud frame, ms.
    quiet_ms: u64,
    speech: bool,
}

impl Chunker {
    /// Chunks of at most `max_secs` seconds.
    pub fn new(max_secs: u32) -> Self {
        Chunker {
            max_bytes: max_secs.max(1) as usize * 1000 * BYTES_PER_MS,
            buf: Vec::new(),
            buf_start: 0,
            loud_ms: 0,
            quiet_ms: 0,
            speech: false,
        }
    }

    /// Add one frame (any length; Twilio's are 20 ms); returns a chunk when one is complete.
    pub fn push(&mut self, ulaw: &[u8]) -> Option<Chunk> {
        let ms = (ulaw.len() / BYTES_PER_MS) as u64;
        let loud = rms(ulaw) > SPEECH_RMS;
        self.buf.extend_from_slice(ulaw);
        if loud {
            self.loud_ms += ms;
            self.quiet_ms = 0;
            self.speech |= self.loud_ms >= MIN_SPEECH_MS;
        } else {
            self.loud_ms = 0;
            self.quiet_ms += ms;
        }
        if !self.speech {
            // Keep only the pre-roll (plus a loud run in progress) while nobody speaks.
            let keep = (PRE_ROLL_MS + self.loud_ms) as usize * BYTES_PER_MS;
            if self.buf.len() > keep {
                let excess = self.buf.len() - keep;
                self.buf.drain(..excess);
                self.buf_start += excess as u64;
            }
            return None;
        }
        (self.quiet_ms >= PAUSE_MS || self.buf.len() >= self.max_bytes).then(|| self.cut())
    }

    /// What is left at the end of the track, if it holds speech.
    pub fn flush(&mut self) -> Option<Chunk> {
        self.speech.then(|| self.cut())
    }

    fn cut(&mut self) -> Chunk {
        let ulaw = std::mem::take(&mut self.buf);
        let start_ms = self.buf_start / BYTES_PER_MS as u64;
        self.buf_start += ulaw.len() as u64;
        self.speech = false;
        self.loud_ms = 0;
        self.quiet_ms = 0;
        Chunk { start_ms, ulaw }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{encode, FRAME_BYTES, ULAW_SILENCE};

    fn tone(ms: usize) -> Vec<u8> {
        let pcm: Vec<i16> = (0..ms * BYTES_PER_MS)
            .map(|n| (8000.0 * (n as f64 * 0.3).sin()) as i16)
            .collect();
        encode(&pcm)
    }

    fn feed(chunker: &mut Chunker, audio: &[u8]) -> Vec<Chunk> {
        audio
            .chunks(FRAME_BYTES)
            .filter_map(|f| chunker.push(f))
            .collect()
    }

    #[test]
    fn chunks_are_cut_at_pauses_with_a_pre_roll_and_silence_is_never_sent() {
        let mut chunker = Chunker::new(5);
        let mut audio = vec![ULAW_SILENCE; 2000 * BYTES_PER_MS];
        audio.extend(tone(1000));
        audio.extend(vec![ULAW_SILENCE; 1000 * BYTES_PER_MS]);
        let chunks = feed(&mut chunker, &audio);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].start_ms, 2000 - PRE_ROLL_MS);
        let len_ms = (chunks[0].ulaw.len() / BYTES_PER_MS) as u64;
        assert_eq!(len_ms, PRE_ROLL_MS + 1000 + PAUSE_MS);
        assert_eq!(chunker.flush(), None, "trailing silence is not a chunk");
    }

    #[test]
    fn long_speech_is_cut_at_the_maximum_and_the_rest_flushed() {
        let mut chunker = Chunker::new(1);
        let chunks = feed(&mut chunker, &tone(2500));
        assert_eq!(chunks.len(), 2);
        assert_eq!((chunks[0].start_ms, chunks[1].start_ms), (0, 1000));
        assert!(chunks.iter().all(|c| c.ulaw.len() == 1000 * BYTES_PER_MS));
        let rest = chunker.flush().unwrap();
        assert_eq!((rest.start_ms, rest.ulaw.len()), (2000, 500 * BYTES_PER_MS));
    }
}
