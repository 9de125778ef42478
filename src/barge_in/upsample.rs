//! The caller's 8 kHz μ-law, in 16 ms chunks, as the 16 kHz 256-sample frames `earshot` reads.

use rubato::{FftFixedIn, Resampler};

use crate::audio;

/// Caller samples (8 kHz) per VAD frame: 16 ms.
pub(super) const CHUNK_8K: usize = 128;
/// Samples (16 kHz) per VAD frame, as `earshot::Detector::predict_i16` requires.
pub(super) const FRAME_16K: usize = 2 * CHUNK_8K;
/// rubato splits each chunk into this many FFTs: 64 in, 128 out, so the delay stays at 4 ms.
const SUB_CHUNKS: usize = 2;

/// Band-limited 2× upsampler (rubato's FFT resampler) with its buffers allocated once.
///
/// Why rubato rather than repeating samples: images above 4 kHz would put energy in bands where
/// telephone speech has none and skew the mel features `earshot` was trained on.
pub(super) struct Upsampler {
    resampler: FftFixedIn<f32>,
    input: [f32; CHUNK_8K],
    output: [f32; FRAME_16K],
}

impl Upsampler {
    pub(super) fn new() -> Self {
        let resampler = FftFixedIn::new(8000, 16000, CHUNK_8K, SUB_CHUNKS, 1)
            .expect("8000 → 16000 Hz is a valid ratio");
        Self {
            resampler,
            input: [0.0; CHUNK_8K],
            output: [0.0; FRAME_16K],
        }
    }

    /// Output delay of the resampler in 8 kHz samples (32 = 4 ms).
    pub(super) fn delay_8k(&self) -> usize {
        self.resampler.output_delay() / 2
    }

    /// Upsamples one 16 ms chunk of 8 kHz μ-law into `frame` (16 kHz 16-bit PCM, 256 samples).
    pub(super) fn process(&mut self, chunk: &[u8; CHUNK_8K], frame: &mut [i16; FRAME_16K]) {
        for (x, &code) in self.input.iter_mut().zip(chunk) {
            *x = f32::from(audio::ulaw_to_linear(code));
        }
        let (_, written) = self
            .resampler
            .process_into_buffer(&[&self.input[..]], &mut [&mut self.output[..]], None)
            .expect("one channel, a full chunk in and room for a full frame out");
        debug_assert_eq!(
            written, FRAME_16K,
            "a 2x FFT resampler returns a full frame per chunk"
        );
        for (y, &x) in frame.iter_mut().zip(&self.output) {
            // The band-limiting filter can ring slightly past full scale on clipped input.
            *y = x.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16;
        }
    }

    /// Forgets the audio in the filter (a new stretch of caller audio follows).
    pub(super) fn reset(&mut self) {
        self.resampler.reset();
    }
}
