//! Frame tags: each 160-byte μ-law frame the load generator sends says which call sent it, its
//! sequence number and when it was sent, so its echo yields the round trip.
//!
//! Layout of a frame: `RLT1` magic (4 bytes), call index (u32 LE), sequence (u32 LE), send time in
//! ns since the generator started (u64 LE), then `0xFF` fill (μ-law silence-ish) up to 160 bytes.
//! The tag block is 24 bytes, a multiple of 3, so its base64 (32 characters) concatenates with the
//! precomputed base64 of the fill: sending encodes 24 bytes and receiving decodes 32 characters.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

/// Bytes in one 20 ms μ-law frame at 8 kHz.
pub const FRAME_BYTES: usize = 160;
/// Marks a frame as ours (and this layout's version).
const MAGIC: [u8; 4] = *b"RLT1";
/// The tagged prefix, padded with fill to a multiple of 3 bytes.
const TAG_BYTES: usize = 24;
/// Base64 characters encoding [`TAG_BYTES`].
const TAG_CHARS: usize = TAG_BYTES / 3 * 4;
/// Every byte that is not part of the tag.
const FILL: u8 = 0xFF;

/// What a frame carries: who sent it and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// Index of the simulated call, `0..calls`.
    pub call: u32,
    /// Frame number within the call, from 0 (one per 20 ms).
    pub seq: u32,
    /// Send time, ns since the generator started.
    pub sent_ns: u64,
}

/// Encodes and checks tagged payloads; holds the base64 of the constant fill.
#[derive(Debug, Clone)]
pub struct Codec {
    /// Base64 of the `FRAME_BYTES - TAG_BYTES` fill bytes (with its `=` padding).
    tail: String,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    /// Precomputes the base64 of the fill.
    pub fn new() -> Self {
        Codec {
            tail: BASE64.encode([FILL; FRAME_BYTES - TAG_BYTES]),
        }
    }

    /// Length in characters of every tagged payload (216 for 160 bytes).
    pub fn payload_len(&self) -> usize {
        TAG_CHARS + self.tail.len()
    }

    /// The base64 payload of the 160-byte frame carrying `tag`.
    pub fn encode(&self, tag: Tag) -> String {
        let mut bytes = [FILL; TAG_BYTES];
        bytes[..4].copy_from_slice(&MAGIC);
        bytes[4..8].copy_from_slice(&tag.call.to_le_bytes());
        bytes[8..12].copy_from_slice(&tag.seq.to_le_bytes());
        bytes[12..20].copy_from_slice(&tag.sent_ns.to_le_bytes());
        let mut payload = String::with_capacity(self.payload_len());
        BASE64.encode_string(bytes, &mut payload);
        payload.push_str(&self.tail);
        payload
    }

    /// The tag of a payload made by [`Codec::encode`]; `None` if any byte differs from that
    /// layout (not ours, truncated, or corrupted on the way).
    pub fn decode(&self, payload: &str) -> Option<Tag> {
        if payload.len() != self.payload_len() || !payload.is_char_boundary(TAG_CHARS) {
            return None;
        }
        let (head, tail) = payload.split_at(TAG_CHARS);
        if tail != self.tail {
            return None;
        }
        let mut bytes = [0u8; TAG_BYTES];
        let n = BASE64.decode_slice(head, &mut bytes).ok()?;
        if n != TAG_BYTES || bytes[..4] != MAGIC || bytes[20..].iter().any(|&b| b != FILL) {
            return None;
        }
        let u32_at = |i: usize| bytes[i..i + 4].try_into().map(u32::from_le_bytes).ok();
        let sent_ns = bytes[12..20].try_into().map(u64::from_le_bytes).ok()?;
        Some(Tag {
            call: u32_at(4)?,
            seq: u32_at(8)?,
            sent_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_survives_encoding_and_decoding() {
        let codec = Codec::new();
        for tag in [
            Tag {
                call: 0,
                seq: 0,
                sent_ns: 0,
            },
            Tag {
                call: 999,
                seq: 1_150,
                sent_ns: 23_000_000_123,
            },
            Tag {
                call: u32::MAX,
                seq: u32::MAX,
                sent_ns: u64::MAX,
            },
        ] {
            let payload = codec.encode(tag);
            assert_eq!(payload.len(), 216);
            let bytes = BASE64.decode(&payload).unwrap();
            assert_eq!(bytes.len(), FRAME_BYTES);
            assert!(bytes[TAG_BYTES..].iter().all(|&b| b == FILL));
            assert_eq!(codec.decode(&payload), Some(tag));
        }
    }

    #[test]
    fn anything_else_is_not_a_tag() {
        let codec = Codec::new();
        let good = codec.encode(Tag {
            call: 1,
            seq: 2,
            sent_ns: 3,
        });
        assert_eq!(codec.decode(&BASE64.encode([FILL; FRAME_BYTES])), None);
        assert_eq!(codec.decode(&good[..good.len() - 4]), None);
        let mut flipped = good.clone().into_bytes();
        flipped[100] = if flipped[100] == b'A' { b'B' } else { b'A' };
        assert_eq!(codec.decode(&String::from_utf8(flipped).unwrap()), None);
        let mut bad_magic = good.into_bytes();
        bad_magic[0] = b'A';
        assert_eq!(codec.decode(&String::from_utf8(bad_magic).unwrap()), None);
    }
}
