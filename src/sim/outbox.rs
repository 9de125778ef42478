//! What the simulated Twilio sends: typed `TwilioEvent`s with Twilio's sequence and chunk numbering.

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, trace};

use super::report::CallReport;
use crate::audio::SAMPLE_RATE_HZ;
use crate::twilio::media::{MarkBody, MediaFormat, MediaIn, StartInfo, StopInfo, TwilioEvent};

/// The client WebSocket to the relay.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The sending half of the socket plus the counters every outgoing message needs.
pub(crate) struct Outbox {
    sink: SplitSink<Ws, Message>,
    /// Last `sequenceNumber` used; `start` gets "1", `connected` none.
    seq: u64,
    /// Last media `chunk` used per track (0 inbound, 1 outbound); each track's first frame gets "1".
    chunks: [u64; 2],
    call_sid: String,
    stream_sid: String,
    account_sid: String,
}

impl Outbox {
    /// Wraps `sink` for the call whose SIDs are in `report`.
    pub(crate) fn new(sink: SplitSink<Ws, Message>, report: &CallReport) -> Self {
        Self {
            sink,
            seq: 0,
            chunks: [0, 0],
            call_sid: report.call_sid.clone(),
            stream_sid: report.stream_sid.clone(),
            account_sid: report.account_sid.clone(),
        }
    }

    fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    async fn send(&mut self, event: &TwilioEvent<'_>) -> anyhow::Result<()> {
        let json = serde_json::to_string(event).context("serializing a Twilio event")?;
        self.send_raw(Message::text(json)).await
    }

    /// Sends any frame as is (no sequence number).
    pub(crate) async fn send_raw(&mut self, message: Message) -> anyhow::Result<()> {
        self.sink
            .send(message)
            .await
            .context("sending to the relay")
    }

    /// `connected`, then `start` with the SIDs, an inbound μ-law 8 kHz track and `params`.
    pub(crate) async fn send_greeting(
        &mut self,
        params: &[(String, String)],
    ) -> anyhow::Result<()> {
        self.send_start(params, vec!["inbound".into()]).await
    }

    /// `connected`, then `start` with the SIDs, `tracks` (μ-law 8 kHz) and `params`.
    pub(crate) async fn send_start(
        &mut self,
        params: &[(String, String)],
        tracks: Vec<String>,
    ) -> anyhow::Result<()> {
        self.send(&TwilioEvent::Connected {
            protocol: Some("Call".into()),
            version: Some("1.0.0".into()),
        })
        .await?;
        let start = StartInfo {
            account_sid: self.account_sid.clone(),
            stream_sid: self.stream_sid.clone(),
            call_sid: self.call_sid.clone(),
            tracks,
            media_format: Some(MediaFormat {
                encoding: "audio/x-mulaw".into(),
                sample_rate: SAMPLE_RATE_HZ,
                channels: 1,
            }),
            custom_parameters: params.iter().cloned().collect(),
        };
        let event = TwilioEvent::Start {
            sequence_number: Some(self.next_seq().into()),
            stream_sid: Some(self.stream_sid.clone().into()),
            start,
        };
        self.send(&event).await
    }

    /// One inbound `media` frame of μ-law `frame`, stamped `now_ms` since the stream started.
    pub(crate) async fn send_media(&mut self, frame: &[u8], now_ms: u64) -> anyhow::Result<()> {
        self.send_track_media(0, frame, now_ms).await
    }

    /// One `media` frame on track `index` (0 `inbound`, 1 `outbound`), with that track's chunk
    /// counter, stamped `now_ms` since the stream started.
    pub(crate) async fn send_track_media(
        &mut self,
        index: usize,
        frame: &[u8],
        now_ms: u64,
    ) -> anyhow::Result<()> {
        let index = index.min(1);
        self.chunks[index] += 1;
        let chunk = self.chunks[index];
        trace!(chunk, index, "media sent");
        let track = if index == 0 { "inbound" } else { "outbound" };
        let event = TwilioEvent::Media {
            sequence_number: Some(self.next_seq().into()),
            stream_sid: Some(self.stream_sid.clone().into()),
            media: MediaIn {
                track: Some(track.into()),
                chunk: Some(chunk.to_string().into()),
                timestamp: Some(now_ms.to_string().into()),
                payload: BASE64.encode(frame).into(),
            },
        };
        self.send(&event).await
    }

    /// Echoes the mark `name`: its audio has played (or was cleared).
    pub(crate) async fn send_mark(&mut self, name: &str) -> anyhow::Result<()> {
        debug!(mark = name, "echoing mark");
        let event = TwilioEvent::Mark {
            sequence_number: Some(self.next_seq().into()),
            stream_sid: Some(self.stream_sid.clone().into()),
            mark: MarkBody { name: name.into() },
        };
        self.send(&event).await
    }

    /// Sends `stop` and our close frame; failures only mean the relay left first.
    pub(crate) async fn hang_up(&mut self) {
        let stop = TwilioEvent::Stop {
            sequence_number: Some(self.next_seq().into()),
            stream_sid: Some(self.stream_sid.clone().into()),
            stop: Some(StopInfo {
                account_sid: Some(self.account_sid.clone()),
                call_sid: Some(self.call_sid.clone()),
                reason: None,
            }),
        };
        if let Err(error) = self.send(&stop).await {
            debug!(error = %format!("{error:#}"), "stop not sent");
        }
        self.close().await;
    }

    /// Sends our close frame (or the reply to the relay's) and flushes.
    pub(crate) async fn close(&mut self) {
        if let Err(error) = self.sink.close().await {
            debug!(%error, "close not sent");
        }
    }
}
