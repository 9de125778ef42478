//! Reading caller clips (WAV) as 8 kHz μ-law and writing what the caller heard as 16-bit PCM WAV.
//!
//! `hound` reads and writes PCM but not μ-law (format tag 7), so μ-law files are parsed here by
//! walking the RIFF chunks. Anything that is not 8 kHz mono is downmixed and resampled with
//! `rubato` before it is μ-law encoded with [`crate::audio::encode`].

use std::io::Cursor;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use rubato::{FftFixedIn, Resampler};

use crate::audio::{self, SAMPLE_RATE_HZ};

const WAVE_FORMAT_PCM: u16 = 1;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 3;
const WAVE_FORMAT_MULAW: u16 = 7;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;
const SUPPORTED: &str = "use 8 kHz μ-law or 16-bit PCM";

/// Reads the WAV file at `path` and returns its audio as 8 kHz mono μ-law bytes (1 byte = 125 µs).
///
/// Accepts μ-law (format tag 7, 8-bit) and 16-bit integer PCM at any sample rate (Hz) and channel
/// count; other rates are resampled to 8000 Hz and channels are averaged to mono. 8 kHz mono μ-law
/// is returned byte for byte.
///
/// # Errors
/// When the file cannot be read, is not a RIFF/WAVE file, lacks a `fmt ` or `data` chunk, or uses
/// another encoding (24-bit PCM, float, A-law, …). The message starts with the path.
pub fn read_ulaw(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    decode_wav(&bytes).map_err(|reason| anyhow!("{}: {reason:#}", path.display()))
}

/// Writes `ulaw` (8 kHz mono μ-law bytes) to `path` as an 8000 Hz mono 16-bit PCM WAV file.
///
/// # Errors
/// When the file cannot be created or written; the message starts with the path.
pub fn write_pcm16(path: &Path, ulaw: &[u8]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE_HZ,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let write = || -> Result<(), hound::Error> {
        let mut writer = hound::WavWriter::create(path, spec)?;
        for &code in ulaw {
            writer.write_sample(audio::ulaw_to_linear(code))?;
        }
        writer.finalize()
    };
    write().with_context(|| format!("{}: cannot write WAV", path.display()))
}

/// The fields of a `fmt ` chunk this module needs.
#[derive(Debug, Clone, Copy)]
struct Format {
    /// WAVE format tag; for `WAVE_FORMAT_EXTENSIBLE` the sub-format's tag.
    tag: u16,
    channels: u16,
    /// Hz.
    sample_rate: u32,
    bits_per_sample: u16,
}

/// Like [`read_ulaw`] for a WAV file already in memory (e.g. `include_bytes!`): returns 8 kHz mono
/// μ-law bytes.
///
/// # Errors
/// As [`read_ulaw`], without the path: callers add their own context.
pub fn decode_wav(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (format, data) = parse_riff(bytes)?;
    if format.channels == 0 || format.sample_rate == 0 {
        bail!("the fmt chunk declares 0 channels or 0 Hz");
    }
    match (format.tag, format.bits_per_sample) {
        (WAVE_FORMAT_MULAW, 8) => {
            if format.sample_rate == SAMPLE_RATE_HZ && format.channels == 1 {
                return Ok(data.to_vec());
            }
            let pcm = audio::decode(data);
            to_ulaw_8k(&pcm, format.channels.into(), format.sample_rate)
        }
        (WAVE_FORMAT_MULAW, bits) => bail!("{bits}-bit μ-law is not supported; {SUPPORTED}"),
        (WAVE_FORMAT_PCM, 16) => {
            // hound handles both plain and extensible PCM headers.
            let mut reader = hound::WavReader::new(Cursor::new(bytes)).context("invalid WAV")?;
            let pcm = reader
                .samples::<i16>()
                .collect::<Result<Vec<i16>, _>>()
                .context("invalid 16-bit PCM samples")?;
            to_ulaw_8k(&pcm, format.channels.into(), format.sample_rate)
        }
        (WAVE_FORMAT_PCM, bits) => bail!("{bits}-bit PCM is not supported; {SUPPORTED}"),
        (WAVE_FORMAT_IEEE_FLOAT, bits) => bail!("{bits}-bit float is not supported; {SUPPORTED}"),
        (tag, _) => bail!("WAV format tag {tag} is not supported; {SUPPORTED}"),
    }
}

/// Walks the RIFF chunks and returns the format and the `data` chunk's bytes.
fn parse_riff(bytes: &[u8]) -> anyhow::Result<(Format, &[u8])> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        bail!("not a WAV file (no RIFF/WAVE header)");
    }
    let (mut format, mut data) = (None, None);
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32_at(bytes, pos + 4) as usize;
        let start = pos + 8;
        // Streaming writers leave the size at 0 or 0xFFFFFFFF: clamp to the end of the file.
        let end = start.saturating_add(size).min(bytes.len());
        let body = &bytes[start..end];
        match id {
            b"fmt " => format = Some(parse_fmt(body)?),
            b"data" => data = Some(body),
            _ => {}
        }
        // Chunks are padded to an even size.
        pos = start.saturating_add(size).saturating_add(size & 1);
    }
    let format = format.ok_or_else(|| anyhow!("no fmt chunk"))?;
    let data = data.ok_or_else(|| anyhow!("no data chunk"))?;
    Ok((format, data))
}

fn parse_fmt(body: &[u8]) -> anyhow::Result<Format> {
    if body.len() < 16 {
        bail!("fmt chunk is {} bytes, expected at least 16", body.len());
    }
    let mut tag = u16_at(body, 0);
    if tag == WAVE_FORMAT_EXTENSIBLE {
        // cbSize(2) validBits(2) channelMask(4), then the sub-format GUID whose first two bytes are the tag.
        if body.len() < 26 {
            bail!("extensible fmt chunk is {} bytes, expected 40", body.len());
        }
        tag = u16_at(body, 24);
    }
    Ok(Format {
        tag,
        channels: u16_at(body, 2),
        sample_rate: u32_at(body, 4),
        bits_per_sample: u16_at(body, 14),
    })
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Interleaved PCM (`channels` per frame, `rate` Hz) → 8 kHz mono μ-law.
fn to_ulaw_8k(interleaved: &[i16], channels: usize, rate: u32) -> anyhow::Result<Vec<u8>> {
    let mono: Vec<f32> = interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().map(|&s| f32::from(s)).sum::<f32>() / channels as f32)
        .collect();
    let mono = if rate == SAMPLE_RATE_HZ {
        mono
    } else {
        resample_to_8k(&mono, rate)?
    };
    let pcm: Vec<i16> = mono
        .iter()
        .map(|&s| s.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16)
        .collect();
    Ok(audio::encode(&pcm))
}

/// Resamples mono samples from `rate` Hz to 8000 Hz, trimming the resampler's delay so the output
/// lines up with the input and has `len * 8000 / rate` samples.
fn resample_to_8k(input: &[f32], rate: u32) -> anyhow::Result<Vec<f32>> {
    let mut resampler = FftFixedIn::<f32>::new(rate as usize, SAMPLE_RATE_HZ as usize, 1024, 2, 1)
        .with_context(|| format!("cannot resample {rate} Hz to {SAMPLE_RATE_HZ} Hz"))?;
    let expected = (input.len() as u64 * u64::from(SAMPLE_RATE_HZ) / u64::from(rate)) as usize;
    let delay = resampler.output_delay();
    let mut out = Vec::with_capacity(expected + delay + resampler.output_frames_max());
    let mut pos = 0;
    while input.len() - pos >= resampler.input_frames_next() {
        let next = resampler.input_frames_next();
        let chunk = resampler.process(&[&input[pos..pos + next]], None)?;
        out.extend_from_slice(&chunk[0]);
        pos += next;
    }
    // The last partial chunk is zero-padded; then empty calls flush the delayed tail.
    let chunk = resampler.process_partial(Some(&[&input[pos..]][..]), None)?;
    out.extend_from_slice(&chunk[0]);
    while out.len() < expected + delay {
        let chunk = resampler.process_partial(None::<&[&[f32]]>, None)?;
        if chunk[0].is_empty() {
            break;
        }
        out.extend_from_slice(&chunk[0]);
    }
    out.drain(..delay.min(out.len()));
    out.truncate(expected);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built 8 kHz mono μ-law WAV with an odd-sized extra chunk before `data`.
    fn ulaw_wav(data: &[u8]) -> Vec<u8> {
        let mut fmt = Vec::new();
        for v in [WAVE_FORMAT_MULAW, 1] {
            fmt.extend_from_slice(&v.to_le_bytes());
        }
        for v in [8000u32, 8000] {
            fmt.extend_from_slice(&v.to_le_bytes());
        }
        for v in [1u16, 8, 0] {
            fmt.extend_from_slice(&v.to_le_bytes());
        }
        let mut body = b"WAVE".to_vec();
        for (id, chunk) in [(b"fmt ", &fmt[..]), (b"LIST", b"odd"), (b"data", data)] {
            body.extend_from_slice(id);
            body.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            body.extend_from_slice(chunk);
            if chunk.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut wav = b"RIFF".to_vec();
        wav.extend_from_slice(&(body.len() as u32).to_le_bytes());
        wav.extend_from_slice(&body);
        wav
    }

    fn sine(rate: u32, hz: f32, secs: f32, amplitude: f32) -> Vec<i16> {
        (0..(rate as f32 * secs) as usize)
            .map(|n| {
                (amplitude * (std::f32::consts::TAU * hz * n as f32 / rate as f32).sin()) as i16
            })
            .collect()
    }

    fn rms(pcm: &[i16]) -> f64 {
        (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt()
    }

    #[test]
    fn ulaw_wav_round_trips_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.wav");
        let data: Vec<u8> = (0..=254u8).collect(); // odd length: the data chunk is padded
        std::fs::write(&path, ulaw_wav(&data)).unwrap();
        assert_eq!(read_ulaw(&path).unwrap(), data);
    }

    #[test]
    fn stereo_16k_pcm_is_downmixed_resampled_and_keeps_its_energy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stereo.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let tone = sine(16_000, 440.0, 1.0, 8000.0);
        let mut writer = hound::WavWriter::create(&path, spec).unwrap();
        for &s in &tone {
            writer.write_sample(s).unwrap();
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();

        let ulaw = read_ulaw(&path).unwrap();
        assert_eq!(ulaw.len(), tone.len() / 2);
        let pcm = audio::decode(&ulaw);
        let (expected, got) = (rms(&tone), rms(&pcm[400..pcm.len() - 400]));
        assert!(
            (got / expected - 1.0).abs() < 0.05,
            "rms {got} vs {expected}"
        );
        // The resampler's delay is trimmed: the output is in phase with the same tone made at 8 kHz.
        let reference = sine(8000, 440.0, 1.0, 8000.0);
        let diff: Vec<i16> = (400..pcm.len() - 400)
            .map(|i| pcm[i] - reference[i])
            .collect();
        assert!(
            rms(&diff) < expected * 0.05,
            "misaligned by rms {}",
            rms(&diff)
        );
    }

    #[test]
    fn write_pcm16_writes_8k_mono_16_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heard.wav");
        let ulaw = audio::encode(&sine(8000, 300.0, 0.1, 5000.0));
        write_pcm16(&path, &ulaw).unwrap();
        let mut reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.spec().sample_rate, 8000);
        assert_eq!(reader.spec().channels, 1);
        let pcm: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(pcm, audio::decode(&ulaw));
        // 8 kHz 16-bit PCM is accepted back and re-encodes to the same μ-law.
        assert_eq!(read_ulaw(&path).unwrap(), ulaw);
    }

    #[test]
    fn unsupported_files_get_an_error_naming_file_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 24,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(&path, spec).unwrap();
        writer.write_sample(1i32).unwrap();
        writer.finalize().unwrap();
        let message = format!("{:#}", read_ulaw(&path).unwrap_err());
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        assert!(message.contains("24-bit PCM is not supported"), "{message}");

        let text = dir.path().join("notes.wav");
        std::fs::write(&text, "hello").unwrap();
        let message = format!("{:#}", read_ulaw(&text).unwrap_err());
        assert!(message.contains("not a WAV file"), "{message}");
    }

    #[test]
    fn shipped_assets_are_short_8k_ulaw_speech() {
        for name in ["caller-hello.wav", "caller-question.wav"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("assets")
                .join(name);
            let ulaw = read_ulaw(&path).unwrap();
            let ms = ulaw.len() / audio::BYTES_PER_MS;
            assert!((1500..=3000).contains(&ms), "{name}: {ms} ms");
            assert!(audio::rms(&ulaw) > 500.0, "{name} is too quiet");
        }
    }
}
