//! Test and benchmark signals for barge-in: deterministic telephone line noise and mixing of
//! clips into an 8 kHz track. Levels are dBov: 20·log10(RMS / 32768), so a full-scale square
//! wave is 0 dBov and a full-scale sine −3 dBov (ITU-T G.100.1).

use std::f32::consts::TAU;

/// Synthetic telephone line noise. The defaults are a quiet but real line: hiss at −60 dBov,
/// mains hum at −55 dBov and a click every ~1.6 s peaking at −20 dBov.
#[derive(Debug, Clone, PartialEq)]
pub struct LineNoise {
    /// Seed of the noise and the click times (same seed, same samples).
    pub seed: u64,
    /// Gaussian white hiss, dBov RMS.
    pub hiss_dbov: f32,
    /// Hum: 50 Hz and 60 Hz with their 3rd harmonics, dBov RMS of the sum.
    pub hum_dbov: f32,
    /// Peak of each click (a 3 ms decaying impulse), dBov.
    pub click_peak_dbov: f32,
    /// Mean time between clicks, ms (each interval drawn from 0.5–1.5 times it).
    pub click_every_ms: u32,
}

impl Default for LineNoise {
    fn default() -> Self {
        Self {
            seed: 1,
            hiss_dbov: -60.0,
            hum_dbov: -55.0,
            click_peak_dbov: -20.0,
            click_every_ms: 1600,
        }
    }
}

/// 16-bit PCM units of `dbov` RMS.
pub fn rms_of(dbov: f32) -> f32 {
    32768.0 * 10f32.powf(dbov / 20.0)
}

/// RMS level of 8 kHz μ-law audio, dBov (−120 for digital silence).
pub fn level_dbov(mulaw: &[u8]) -> f32 {
    let rms = crate::audio::rms(mulaw) as f32;
    if rms <= 0.0 {
        return -120.0;
    }
    20.0 * (rms / 32768.0).log10()
}

/// SplitMix64: tiny, seedable, the same on every platform.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 + 1.0) / (1u64 << 24) as f32
    }

    /// Standard normal (Box–Muller).
    fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (TAU * v).cos()
    }
}

impl LineNoise {
    /// `samples` of this noise at 8 kHz, in 16-bit PCM units (not yet clipped).
    pub fn render(&self, samples: usize) -> Vec<f32> {
        let mut rng = Rng(self.seed);
        let hiss = rms_of(self.hiss_dbov);
        // Four equal sines: each amplitude a gives RMS a/√2, the sum's RMS is a·√2.
        let hum_amp = rms_of(self.hum_dbov) / 2f32.sqrt();
        let click_peak = rms_of(self.click_peak_dbov);
        let mean_gap = u64::from(self.click_every_ms.max(1)) * 8;
        let mut next_click = mean_gap / 2 + (rng.next_u64() % mean_gap);
        (0..samples)
            .map(|n| {
                let t = n as f32 / 8000.0;
                let hum: f32 = [50.0, 60.0, 150.0, 180.0]
                    .iter()
                    .map(|f| (TAU * f * t).sin())
                    .sum();
                let mut x = hiss * rng.gaussian() + hum_amp * hum;
                let n = n as u64;
                if n >= next_click {
                    let age = (n - next_click) as f32;
                    // A 3 ms impulse decaying with a 0.5 ms time constant, alternating sign.
                    x += click_peak
                        * (-age / 4.0).exp()
                        * if n.is_multiple_of(2) { 1.0 } else { -1.0 };
                    if age >= 24.0 {
                        next_click = n + mean_gap / 2 + rng.next_u64() % mean_gap;
                    }
                }
                x
            })
            .collect()
    }
}

/// Adds `mulaw` (8 kHz μ-law), scaled by `gain_db` and starting `at` samples in, to `track`
/// (16-bit PCM units); the track grows to fit.
pub fn add(track: &mut Vec<f32>, mulaw: &[u8], at: usize, gain_db: f32) {
    let gain = 10f32.powf(gain_db / 20.0);
    if track.len() < at + mulaw.len() {
        track.resize(at + mulaw.len(), 0.0);
    }
    for (y, &code) in track[at..].iter_mut().zip(mulaw) {
        *y += gain * f32::from(crate::audio::ulaw_to_linear(code));
    }
}

/// `track` (16-bit PCM units) clipped and μ-law encoded, as Twilio would send it.
pub fn encode(track: &[f32]) -> Vec<u8> {
    track
        .iter()
        .map(|&x| {
            let s = x.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16;
            crate::audio::linear_to_ulaw(s)
        })
        .collect()
}
