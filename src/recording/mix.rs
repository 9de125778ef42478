//! The call is over: the two mono μ-law tracks become one stereo 16-bit 8 kHz WAV (caller left,
//! assistant right), streamed through fixed buffers so a long call costs no more memory.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use anyhow::Context;

use crate::audio::{ulaw_to_linear, SAMPLE_RATE_HZ, ULAW_SILENCE};

/// Samples read from each track at a time.
const CHUNK: usize = 4096;

/// The recording's WAV format: 2 channels, 8000 Hz, 16-bit PCM.
pub fn spec() -> hound::WavSpec {
    hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE_HZ,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

/// Interleave the `left` and `right` μ-law tracks into a stereo WAV at `out` (the shorter
/// track padded with silence, a missing one silent); returns the frames written (samples per
/// channel).
///
/// # Errors
/// A track cannot be read or the WAV cannot be written.
pub fn interleave(left: Option<&Path>, right: Option<&Path>, out: &Path) -> anyhow::Result<u64> {
    let open = |p: Option<&Path>| -> anyhow::Result<Box<dyn Read>> {
        let Some(p) = p else {
            return Ok(Box::new(io::empty()));
        };
        let file = File::open(p).with_context(|| format!("opening {}", p.display()))?;
        Ok(Box::new(BufReader::with_capacity(CHUNK, file)))
    };
    let (mut left, mut right) = (open(left)?, open(right)?);
    let mut wav = hound::WavWriter::create(out, spec())
        .with_context(|| format!("creating {}", out.display()))?;
    let (mut l, mut r) = ([0u8; CHUNK], [0u8; CHUNK]);
    let mut frames = 0u64;
    loop {
        let nl = fill(&mut left, &mut l)?;
        let nr = fill(&mut right, &mut r)?;
        let n = nl.max(nr);
        if n == 0 {
            break;
        }
        let mut samples = wav.get_i16_writer((n * 2) as u32);
        for i in 0..n {
            let pick = |buf: &[u8; CHUNK], len: usize| if i < len { buf[i] } else { ULAW_SILENCE };
            samples.write_sample(ulaw_to_linear(pick(&l, nl)));
            samples.write_sample(ulaw_to_linear(pick(&r, nr)));
        }
        samples.flush().context("writing the WAV")?;
        frames += n as u64;
    }
    wav.finalize().context("finishing the WAV")?;
    Ok(frames)
}

/// Read until `buf` is full or the reader is at its end; returns the bytes read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::linear_to_ulaw;

    #[test]
    fn tracks_of_different_lengths_become_one_stereo_wav() {
        let dir = tempfile::tempdir().unwrap();
        let (l, r, out) = (
            dir.path().join("l"),
            dir.path().join("r"),
            dir.path().join("o.wav"),
        );
        let left: Vec<u8> = (0..CHUNK + 10).map(|_| linear_to_ulaw(1000)).collect();
        std::fs::write(&l, &left).unwrap();
        std::fs::write(&r, [linear_to_ulaw(-2000); 3]).unwrap();
        assert_eq!(
            interleave(Some(&l), Some(&r), &out).unwrap(),
            (CHUNK + 10) as u64
        );
        let mut reader = hound::WavReader::open(&out).unwrap();
        assert_eq!(reader.spec(), spec());
        let s: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(s.len(), (CHUNK + 10) * 2);
        let (a, b) = (
            ulaw_to_linear(linear_to_ulaw(1000)),
            ulaw_to_linear(linear_to_ulaw(-2000)),
        );
        assert!(a > 900 && b < -1900);
        assert_eq!(&s[..6], &[a, b, a, b, a, b]);
        assert_eq!(&s[6..8], &[a, 0]);
        assert_eq!(s[s.len() - 1], 0);
    }
}
