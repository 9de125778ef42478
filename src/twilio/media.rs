//! Twilio Media Streams WebSocket messages, both directions.
//!
//! Follows `PROTOCOLS.md` § "Twilio Media Streams" (twilio.com/docs/voice/media-streams/websocket-messages).
//! Payloads stay base64 text: the relay passes them through without decoding. Strings borrow from the
//! frame when they can (`Cow`), so parsing a 20 ms `media` frame allocates nothing for the payload.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A message Twilio sends to us (`event` tag). Unknown events parse as [`TwilioEvent::Unknown`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum TwilioEvent<'a> {
    /// First message on every stream; carries no SIDs.
    Connected {
        #[serde(default, borrow)]
        protocol: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        version: Option<Cow<'a, str>>,
    },
    /// Stream metadata: SIDs, tracks, format and the TwiML `<Parameter>`s.
    Start {
        #[serde(
            rename = "sequenceNumber",
            default,
            borrow,
            deserialize_with = "string_or_number"
        )]
        sequence_number: Option<Cow<'a, str>>,
        /// Also inside `start`; either may be missing in third-party simulators.
        #[serde(rename = "streamSid", default, borrow)]
        stream_sid: Option<Cow<'a, str>>,
        start: StartInfo,
    },
    /// 20 ms (160 bytes) of base64 μ-law audio on one track.
    Media {
        #[serde(
            rename = "sequenceNumber",
            default,
            borrow,
            deserialize_with = "string_or_number"
        )]
        sequence_number: Option<Cow<'a, str>>,
        #[serde(rename = "streamSid", default, borrow)]
        stream_sid: Option<Cow<'a, str>>,
        #[serde(borrow)]
        media: MediaIn<'a>,
    },
    /// A mark we sent, echoed when the audio before it finished playing (or was cleared).
    Mark {
        #[serde(
            rename = "sequenceNumber",
            default,
            borrow,
            deserialize_with = "string_or_number"
        )]
        sequence_number: Option<Cow<'a, str>>,
        #[serde(rename = "streamSid", default, borrow)]
        stream_sid: Option<Cow<'a, str>>,
        #[serde(borrow)]
        mark: MarkBody<'a>,
    },
    /// A keypad digit pressed by the caller (bidirectional streams only).
    Dtmf {
        #[serde(
            rename = "sequenceNumber",
            default,
            borrow,
            deserialize_with = "string_or_number"
        )]
        sequence_number: Option<Cow<'a, str>>,
        #[serde(rename = "streamSid", default, borrow)]
        stream_sid: Option<Cow<'a, str>>,
        #[serde(borrow)]
        dtmf: DtmfBody<'a>,
    },
    /// The stream ended (the call hung up or the TwiML moved on).
    Stop {
        #[serde(
            rename = "sequenceNumber",
            default,
            borrow,
            deserialize_with = "string_or_number"
        )]
        sequence_number: Option<Cow<'a, str>>,
        #[serde(rename = "streamSid", default, borrow)]
        stream_sid: Option<Cow<'a, str>>,
        #[serde(default)]
        stop: Option<StopInfo>,
    },
    /// Any event this version does not know; ignored and counted.
    #[serde(other)]
    Unknown,
}

/// Hot-path view of any Twilio message: `event` and, for `media`, the payload. A flat struct
/// parses in one pass without serde's buffering of internally tagged enums, and skips every other
/// field; callers fall back to [`TwilioEvent`] for anything but `media`.
#[derive(Debug, Deserialize)]
pub struct FrameProbe<'a> {
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(
        rename = "streamSid",
        default,
        borrow,
        deserialize_with = "crate::borrowed::optional_str"
    )]
    pub stream_sid: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub media: Option<MediaIn<'a>>,
}

/// Whether `s` is standard padded base64 (what Twilio sends), checked without decoding.
pub fn is_base64(s: &str) -> bool {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return false;
    }
    let body = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="))
        .unwrap_or(bytes);
    body.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The `start` object: once per stream, so owned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartInfo {
    #[serde(default)]
    pub account_sid: String,
    #[serde(default)]
    pub stream_sid: String,
    pub call_sid: String,
    /// `inbound`, `outbound` or both.
    #[serde(default)]
    pub tracks: Vec<String>,
    /// Informational: parsed leniently, `None` if its shape is unexpected.
    #[serde(default, deserialize_with = "media_format_if_valid")]
    pub media_format: Option<MediaFormat>,
    /// The TwiML `<Parameter name value>` pairs.
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
}

/// `{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    /// Hz.
    pub sample_rate: u32,
    pub channels: u32,
}

/// The `media` object of an inbound frame. `chunk` and `timestamp` (ms since stream start) are strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaIn<'a> {
    #[serde(default, borrow)]
    pub track: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "string_or_number")]
    pub chunk: Option<Cow<'a, str>>,
    /// ms since the stream started.
    #[serde(default, borrow, deserialize_with = "string_or_number")]
    pub timestamp: Option<Cow<'a, str>>,
    /// Base64 μ-law, 8 kHz mono, no header.
    #[serde(borrow)]
    pub payload: Cow<'a, str>,
}

/// `{"name": "…"}` of a `mark`, in either direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkBody<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

/// `{"track":"inbound_track","digit":"1"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtmfBody<'a> {
    #[serde(default, borrow)]
    pub track: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub digit: Cow<'a, str>,
}

/// The `stop` object; `reason` is optional and undocumented in detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopInfo {
    #[serde(default)]
    pub account_sid: Option<String>,
    #[serde(default)]
    pub call_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A message we send to Twilio on a bidirectional (`<Connect><Stream>`) stream. Never sent on forks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum TwilioCommand<'a> {
    /// Audio to play: base64 μ-law 8 kHz, any length; Twilio buffers and plays in order.
    Media {
        #[serde(rename = "streamSid", borrow)]
        stream_sid: Cow<'a, str>,
        #[serde(borrow)]
        media: MediaOut<'a>,
    },
    /// Echoed back by Twilio once the audio sent before it has played.
    Mark {
        #[serde(rename = "streamSid", borrow)]
        stream_sid: Cow<'a, str>,
        #[serde(borrow)]
        mark: MarkBody<'a>,
    },
    /// Drop all buffered audio; Twilio echoes every pending mark at once.
    Clear {
        #[serde(rename = "streamSid", borrow)]
        stream_sid: Cow<'a, str>,
    },
}

/// `{"payload": "<base64 μ-law>"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaOut<'a> {
    #[serde(borrow)]
    pub payload: Cow<'a, str>,
}

impl<'a> TwilioCommand<'a> {
    /// `media` carrying `payload` (base64 μ-law) for `stream_sid`.
    pub fn media(stream_sid: &'a str, payload: &'a str) -> Self {
        TwilioCommand::Media {
            stream_sid: stream_sid.into(),
            media: MediaOut {
                payload: payload.into(),
            },
        }
    }

    /// `mark` named `name` for `stream_sid`.
    pub fn mark(stream_sid: &'a str, name: &'a str) -> Self {
        TwilioCommand::Mark {
            stream_sid: stream_sid.into(),
            mark: MarkBody { name: name.into() },
        }
    }

    /// `clear` for `stream_sid`.
    pub fn clear(stream_sid: &'a str) -> Self {
        TwilioCommand::Clear {
            stream_sid: stream_sid.into(),
        }
    }

    /// Serialize to a JSON text frame. Cannot fail: every field is a string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("Twilio commands hold only strings")
    }
}

/// The closing of a `media` command after its payload.
const MEDIA_TAIL: &str = "\"}}";

/// `media` commands for one stream, built by copying instead of serializing (the per-frame path):
/// the JSON up to the payload is serialized once per call (so `streamSid` is escaped as anywhere
/// else) and base64 needs no escaping, so the serializer's per-byte escape scan is skipped. Same
/// text as [`TwilioCommand::media`]`(…).to_json()` (`PROTOCOLS.md` § "Twilio Media Streams").
#[derive(Debug, Clone, PartialEq)]
pub struct MediaJson {
    head: String,
}

impl MediaJson {
    /// The builder for `stream_sid`.
    pub fn new(stream_sid: &str) -> Self {
        let empty = TwilioCommand::media(stream_sid, "").to_json();
        let head = empty
            .strip_suffix(MEDIA_TAIL)
            .expect("a media command ends with its payload")
            .to_string();
        MediaJson { head }
    }

    /// The `media` command carrying `payload`, which must be base64 (check it with
    /// [`is_base64`] first; debug builds assert it).
    pub fn frame(&self, payload: &str) -> String {
        debug_assert!(is_base64(payload), "media payload must be checked base64");
        let mut json = String::with_capacity(self.head.len() + payload.len() + MEDIA_TAIL.len());
        json.push_str(&self.head);
        json.push_str(payload);
        json.push_str(MEDIA_TAIL);
        json
    }
}

/// Twilio documents these counters as strings; accept numbers too (borrowing strings, no copy).
fn string_or_number<'de, D>(d: D) -> Result<Option<Cow<'de, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or a number")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Visitor)
}

fn media_format_if_valid<'de, D>(d: D) -> Result<Option<MediaFormat>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

/// Number of μ-law bytes (= samples at 8 kHz) in a base64 payload, computed without decoding.
pub fn base64_decoded_len(b64: &str) -> usize {
    let bytes = b64.as_bytes();
    let pad = bytes.iter().rev().take(2).filter(|&&b| b == b'=').count();
    (bytes.len() / 4 * 3).saturating_sub(pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_twilio_event() {
        let samples = [
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
            r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"From":"+15550001111"}}}"#,
            r#"{"event":"media","sequenceNumber":"4","streamSid":"MZ1","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"//8="}}"#,
            r#"{"event":"mark","sequenceNumber":"9","streamSid":"MZ1","mark":{"name":"item_1@100"}}"#,
            r#"{"event":"dtmf","sequenceNumber":"10","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"1"}}"#,
            r#"{"event":"stop","sequenceNumber":"11","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#,
        ];
        for sample in samples {
            let event: TwilioEvent = serde_json::from_str(sample).expect(sample);
            assert_ne!(event, TwilioEvent::Unknown, "{sample}");
            let json = serde_json::to_string(&event).unwrap();
            let again: TwilioEvent = serde_json::from_str(&json).unwrap();
            assert_eq!(event, again);
        }
        let start: TwilioEvent = serde_json::from_str(samples[1]).unwrap();
        let TwilioEvent::Start { start, .. } = start else {
            panic!("not a start")
        };
        assert_eq!(start.call_sid, "CA1");
        assert_eq!(start.custom_parameters["From"], "+15550001111");
    }

    #[test]
    fn media_payload_is_borrowed_not_copied() {
        let frame = r#"{"event":"media","streamSid":"MZ1","media":{"payload":"AAAA"}}"#;
        let TwilioEvent::Media { media, .. } = serde_json::from_str(frame).unwrap() else {
            panic!("not media")
        };
        assert!(matches!(media.payload, Cow::Borrowed("AAAA")));
    }

    #[test]
    fn numeric_counters_and_a_missing_outer_stream_sid_are_accepted() {
        let media = r#"{"event":"media","sequenceNumber":4,"media":{"chunk":2,"timestamp":40,"payload":"AAAA"}}"#;
        let TwilioEvent::Media {
            sequence_number,
            media,
            ..
        } = serde_json::from_str(media).unwrap()
        else {
            panic!("not media")
        };
        assert_eq!(sequence_number.as_deref(), Some("4"));
        assert_eq!(media.timestamp.as_deref(), Some("40"));
        let start = r#"{"event":"start","start":{"streamSid":"MZ9","callSid":"CA9","mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":"8000"}}}"#;
        let TwilioEvent::Start {
            stream_sid, start, ..
        } = serde_json::from_str(start).unwrap()
        else {
            panic!("not start")
        };
        assert!(stream_sid.is_none());
        assert_eq!(start.stream_sid, "MZ9");
        assert!(start.media_format.is_none());
    }

    #[test]
    fn the_probe_reads_media_and_names_everything_else() {
        let frame = r#"{"event":"media","sequenceNumber":"4","streamSid":"MZ1","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"AAAA"}}"#;
        let probe: FrameProbe = serde_json::from_str(frame).unwrap();
        assert_eq!(probe.event, "media");
        assert!(matches!(
            probe.media.unwrap().payload,
            Cow::Borrowed("AAAA")
        ));
        let stop: FrameProbe =
            serde_json::from_str(r#"{"event":"stop","stop":{"callSid":"CA1"}}"#).unwrap();
        assert_eq!(stop.event, "stop");
        assert!(stop.media.is_none());
    }

    #[test]
    fn unknown_events_are_unknown_not_errors() {
        let event: TwilioEvent = serde_json::from_str(r#"{"event":"party","x":1}"#).unwrap();
        assert_eq!(event, TwilioEvent::Unknown);
        assert!(serde_json::from_str::<TwilioEvent>(r#"{"event":"media"}"#).is_err());
    }

    #[test]
    fn commands_serialize_to_the_documented_shapes() {
        assert_eq!(
            TwilioCommand::media("MZ1", "//8=").to_json(),
            r#"{"event":"media","streamSid":"MZ1","media":{"payload":"//8="}}"#
        );
        assert_eq!(
            TwilioCommand::mark("MZ1", "m").to_json(),
            r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m"}}"#
        );
        assert_eq!(
            TwilioCommand::clear("MZ1").to_json(),
            r#"{"event":"clear","streamSid":"MZ1"}"#
        );
    }

    #[test]
    fn copied_media_commands_equal_serialized_ones() {
        for sid in ["MZ1", "MZ\"quoted\\sid", "MZé\n"] {
            let media = MediaJson::new(sid);
            for payload in ["", "//8=", "AAAA", "f39/fw==", &"/w8A".repeat(40)] {
                let copied = media.frame(payload);
                assert_eq!(copied, TwilioCommand::media(sid, payload).to_json());
                let parsed: TwilioCommand = serde_json::from_str(&copied).unwrap();
                assert_eq!(parsed, TwilioCommand::media(sid, payload));
            }
        }
    }

    #[test]
    fn base64_is_checked_without_decoding() {
        assert!(is_base64("//8="));
        assert!(is_base64("AAAA"));
        assert!(is_base64(""));
        assert!(!is_base64("AAA"));
        assert!(!is_base64("AA=A"));
        assert!(!is_base64("AA\"\"A"));
        assert!(!is_base64("A==="));
    }

    #[test]
    fn decoded_length_matches_base64() {
        use base64::Engine;
        for n in [0usize, 1, 2, 3, 4, 159, 160, 161, 800] {
            let b64 = base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
            assert_eq!(base64_decoded_len(&b64), n);
        }
    }
}
