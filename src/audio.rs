//! G.711 μ-law audio: the codec and framing constants (8 kHz, 1 byte per sample).
//!
//! The relay itself never decodes audio; the stand-in (energy VAD), the simulator and the demo do.
//! Codec per ITU-T G.711 (bias 0x84, clip 32635), the same tables as Twilio and OpenAI use.

/// Sample rate of Twilio Media Streams audio, Hz.
pub const SAMPLE_RATE_HZ: u32 = 8000;
/// μ-law bytes per millisecond at 8 kHz.
pub const BYTES_PER_MS: usize = 8;
/// One Twilio frame: 20 ms.
pub const FRAME_MS: usize = 20;
/// Bytes in one 20 ms frame.
pub const FRAME_BYTES: usize = FRAME_MS * BYTES_PER_MS;
/// μ-law code for digital silence (decodes to 0).
pub const ULAW_SILENCE: u8 = 0xFF;

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Encode one 16-bit linear PCM sample to μ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample);
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    let pcm = pcm.min(CLIP) + BIAS;
    // Exponent: position of the highest set bit above bit 7.
    let exponent = (31 - (pcm as u32).leading_zeros()).saturating_sub(7).min(7) as i32;
    let mantissa = (pcm >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decode one μ-law byte to 16-bit linear PCM.
pub fn ulaw_to_linear(code: u8) -> i16 {
    let code = !code;
    let sign = code & 0x80;
    let exponent = i32::from((code >> 4) & 0x07);
    let mantissa = i32::from(code & 0x0F);
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// Decode a μ-law buffer to PCM.
pub fn decode(ulaw: &[u8]) -> Vec<i16> {
    ulaw.iter().map(|&b| ulaw_to_linear(b)).collect()
}

/// Encode PCM to μ-law.
pub fn encode(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().map(|&s| linear_to_ulaw(s)).collect()
}

/// Root-mean-square level of μ-law audio, in 16-bit PCM units (0 for silence).
pub fn rms(ulaw: &[u8]) -> f64 {
    if ulaw.is_empty() {
        return 0.0;
    }
    let sum: f64 = ulaw
        .iter()
        .map(|&b| f64::from(ulaw_to_linear(b)).powi(2))
        .sum();
    (sum / ulaw.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_decode_to_g711_values() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(32767), 0x80);
        assert_eq!(linear_to_ulaw(-32768), 0x00);
    }

    #[test]
    fn every_code_survives_a_round_trip() {
        for code in 0..=255u8 {
            let back = linear_to_ulaw(ulaw_to_linear(code));
            // 0x7F (negative zero) encodes back as 0xFF (positive zero).
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(back, expected, "code {code:#x}");
        }
    }

    #[test]
    fn silence_has_no_energy_and_speech_does() {
        assert_eq!(rms(&[ULAW_SILENCE; FRAME_BYTES]), 0.0);
        assert!(rms(&encode(&[8000, -8000, 8000, -8000])) > 7000.0);
    }
}
