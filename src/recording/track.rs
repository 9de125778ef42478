//! One mono μ-law temp track of a recording: audio written at a sample position (gaps filled
//! with silence) and cut back on barge-in, through a small bounded buffer.
//!
//! The tracks hold μ-law, not PCM: it is what both sides already carry (half the bytes of
//! 16-bit PCM, no decoding per frame); the stereo WAV decodes it once, at call end ([`super::mix`]).

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::audio::ULAW_SILENCE;

/// Write buffer of one track, bytes: ~1 s of 8 kHz μ-law, so a 20 ms frame costs a `memcpy`
/// and the file sees one write(2) a second.
pub const TRACK_BUFFER_BYTES: usize = 8 * 1024;

/// Silence written in pieces of this size, bytes.
const SILENCE: [u8; 1024] = [ULAW_SILENCE; 1024];

/// A μ-law track being written; positions are samples (= bytes) from the stream's start.
#[derive(Debug)]
pub struct Track {
    path: PathBuf,
    out: BufWriter<File>,
    /// Samples on the track (written or buffered).
    len: u64,
}

impl Track {
    /// Create (or truncate) the track file at `path`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: PathBuf) -> io::Result<Self> {
        let file = File::create(&path)?;
        Ok(Track {
            path,
            out: BufWriter::with_capacity(TRACK_BUFFER_BYTES, file),
            len: 0,
        })
    }

    /// Samples on the track.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The track's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `ulaw` starting at sample `at`, after silence up to it; audio that would start
    /// before the end of the track (a late or overlapping frame) is appended instead, so nothing
    /// is overwritten or lost.
    ///
    /// # Errors
    /// The write failed (disk full, I/O error).
    pub fn write_at(&mut self, at: u64, ulaw: &[u8]) -> io::Result<()> {
        while self.len < at {
            let n = (at - self.len).min(SILENCE.len() as u64) as usize;
            self.out.write_all(&SILENCE[..n])?;
            self.len += n as u64;
        }
        self.out.write_all(ulaw)?;
        self.len += ulaw.len() as u64;
        Ok(())
    }

    /// Cut the track back to `at` samples (nothing happens if it is not longer): audio that was
    /// sent but never played (Twilio's `clear` dropped it) leaves the recording.
    ///
    /// # Errors
    /// Flushing or truncating the file failed.
    pub fn cut(&mut self, at: u64) -> io::Result<()> {
        if at >= self.len {
            return Ok(());
        }
        self.out.flush()?;
        let file = self.out.get_mut();
        file.set_len(at)?;
        file.seek(SeekFrom::Start(at))?;
        self.len = at;
        Ok(())
    }

    /// Flush what is buffered; returns the file's path (to read or delete) and whether the
    /// final write succeeded.
    pub fn close(mut self) -> (PathBuf, io::Result<()>) {
        let flushed = self.out.flush();
        (self.path, flushed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn audio_lands_at_its_position_with_silence_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Track::create(dir.path().join("t")).unwrap();
        t.write_at(3, &[1, 2]).unwrap();
        t.write_at(5, &[3]).unwrap();
        // Late (position already written): appended, not overwritten.
        t.write_at(2, &[4]).unwrap();
        t.write_at(2000, &[5]).unwrap();
        assert_eq!(t.len(), 2001);
        let bytes = read(&t.close().0);
        assert_eq!(&bytes[..7], &[0xFF, 0xFF, 0xFF, 1, 2, 3, 4]);
        assert!(bytes[7..2000].iter().all(|&b| b == ULAW_SILENCE));
        assert_eq!(bytes[2000], 5);
    }

    #[test]
    fn a_cut_removes_buffered_and_flushed_audio_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Track::create(dir.path().join("t")).unwrap();
        // More than the buffer, so part of it is on disk already.
        t.write_at(0, &vec![7; TRACK_BUFFER_BYTES * 2]).unwrap();
        t.cut(100).unwrap();
        t.cut(500).unwrap(); // longer than the track: nothing happens
        assert_eq!(t.len(), 100);
        t.write_at(200, &[9]).unwrap();
        let bytes = read(&t.close().0);
        assert_eq!(bytes.len(), 201);
        assert!(bytes[..100].iter().all(|&b| b == 7));
        assert!(bytes[100..200].iter().all(|&b| b == ULAW_SILENCE));
        assert_eq!(bytes[200], 9);
    }
}
