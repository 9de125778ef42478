//! The reading half of one call: what the relay sends back, parsed only as far as needed.
//!
//! `media` frames take a fast path (find the payload string, decode its 32-character tag block);
//! anything else is parsed as a typed [`TwilioCommand`]. Marks are handed to the worker, which
//! echoes them with the call's next frame (≤ 20 ms later, as Twilio echoes a mark once the 20 ms
//! chunk before it has played); `clear` is counted and otherwise ignored.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::conn::{Shared, Ws};
use super::tag::Codec;
use super::window::Progress;
use crate::twilio::media::TwilioCommand;

/// What one call's reader saw.
#[derive(Debug, Default)]
pub(super) struct ReaderStats {
    /// Round trips of measured frames (sequence ≥ warm-up frames), µs.
    pub rtt_us: Vec<u32>,
    /// Distinct frames that came back.
    pub received: u64,
    /// Frames that came back more than once.
    pub duplicates: u64,
    /// `media` payloads that are not an intact tag of this call.
    pub corrupt: u64,
    /// Marks received before `stop` (each is echoed).
    pub marks: u64,
    /// Marks received after `stop` (not echoed).
    pub marks_after_stop: u64,
    pub clears: u64,
    /// Frames that are not JSON Twilio commands, and binary frames.
    pub unexpected: u64,
    /// The relay closed the socket before the call sent `stop`.
    pub dropped: bool,
}

/// What a reader needs to know about its call.
pub(super) struct ReaderCtx {
    pub call: u32,
    /// Frames the call sends; tags at or past this are corrupt.
    pub frames: u32,
    /// Frames sent during the warm-up: not measured.
    pub warmup_frames: u32,
    /// The generator's clock origin (tags hold ns since this).
    pub origin: Instant,
    pub codec: Arc<Codec>,
    /// Counts every distinct echo, all calls, for the measured window.
    pub progress: Arc<Progress>,
}

/// Reads until the relay closes the socket or `stop` is cancelled, then returns what it saw.
pub(super) async fn read(
    mut stream: SplitStream<Ws>,
    ctx: ReaderCtx,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> ReaderStats {
    let mut reader = Reader {
        seen: vec![0u64; (ctx.frames as usize).div_ceil(64)],
        stats: ReaderStats {
            rtt_us: Vec::with_capacity((ctx.frames - ctx.warmup_frames.min(ctx.frames)) as usize),
            ..ReaderStats::default()
        },
        ctx,
        shared,
    };
    loop {
        let message = tokio::select! {
            biased;
            message = stream.next() => message,
            () = stop.cancelled() => break,
        };
        match message {
            Some(Ok(Message::Text(text))) => reader.on_text(text.as_str()),
            Some(Ok(Message::Binary(_))) => reader.stats.unexpected += 1,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => {}
        }
    }
    reader.finish()
}

struct Reader {
    ctx: ReaderCtx,
    shared: Arc<Shared>,
    /// One bit per frame sequence: its echo arrived.
    seen: Vec<u64>,
    stats: ReaderStats,
}

impl Reader {
    fn on_text(&mut self, text: &str) {
        if let Some(payload) = media_payload(text) {
            return self.on_media(payload);
        }
        match serde_json::from_str::<TwilioCommand>(text) {
            Ok(TwilioCommand::Media { media, .. }) => self.on_media(&media.payload),
            Ok(TwilioCommand::Mark { mark, .. }) => self.on_mark(mark.name.into_owned()),
            Ok(TwilioCommand::Clear { .. }) => self.stats.clears += 1,
            Err(_) => self.stats.unexpected += 1,
        }
    }

    fn on_media(&mut self, payload: &str) {
        let now_ns = self.ctx.origin.elapsed().as_nanos() as u64;
        let tag = match self.ctx.codec.decode(payload) {
            Some(tag) if tag.call == self.ctx.call && tag.seq < self.ctx.frames => tag,
            _ => {
                self.stats.corrupt += 1;
                return;
            }
        };
        let (word, bit) = (tag.seq as usize / 64, 1u64 << (tag.seq % 64));
        if self.seen[word] & bit != 0 {
            self.stats.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        self.stats.received += 1;
        self.shared.received.fetch_add(1, Ordering::AcqRel);
        self.ctx.progress.echoed.fetch_add(1, Ordering::Relaxed);
        if tag.seq >= self.ctx.warmup_frames {
            let rtt_us = now_ns.saturating_sub(tag.sent_ns) / 1000;
            self.stats
                .rtt_us
                .push(u32::try_from(rtt_us).unwrap_or(u32::MAX));
        }
    }

    fn on_mark(&mut self, name: String) {
        let mut marks = match self.shared.marks.lock() {
            Ok(marks) => marks,
            Err(poisoned) => poisoned.into_inner(),
        };
        if marks.stopped {
            self.stats.marks_after_stop += 1;
        } else {
            marks.pending.push(name);
            self.stats.marks += 1;
        }
    }

    fn finish(self) -> ReaderStats {
        let mut stats = self.stats;
        let marks = match self.shared.marks.lock() {
            Ok(marks) => marks,
            Err(poisoned) => poisoned.into_inner(),
        };
        stats.dropped = !marks.stopped;
        drop(marks);
        self.shared.closed.store(true, Ordering::Release);
        stats
    }
}

/// The payload of a `media` command as the relay serializes it (`{"event":"media",…"payload":"…"}`);
/// `None` for anything else, which then takes the typed path. Base64 holds no `"` or `\`, so the
/// payload ends at the next quote.
fn media_payload(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(r#"{"event":"media""#)?;
    let start = rest.find(r#""payload":""#)? + r#""payload":""#.len();
    let len = rest[start..].find('"')?;
    Some(&rest[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_finds_the_payload_of_the_relays_media() {
        let media = TwilioCommand::media("MZ1", "AAAA//8=").to_json();
        assert_eq!(media_payload(&media), Some("AAAA//8="));
        assert_eq!(
            media_payload(&TwilioCommand::mark("MZ1", "m").to_json()),
            None
        );
        assert_eq!(
            media_payload(r#"{"event":"media","streamSid":"MZ1"}"#),
            None
        );
    }
}
