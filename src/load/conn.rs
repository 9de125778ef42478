//! One simulated Twilio call of the load: connecting, the greeting, and the typed frames the worker
//! sends on it (`media` with a tagged payload, mark echoes, `stop`), per `PROTOCOLS.md` § "Twilio
//! Media Streams".

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::tag::{Codec, Tag};
use crate::audio::SAMPLE_RATE_HZ;
use crate::twilio::media::{MarkBody, MediaFormat, MediaIn, StartInfo, StopInfo, TwilioEvent};

/// How long the TCP connect plus WebSocket upgrade plus greeting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// tungstenite's read buffer. Its default (128 KiB) is zero-filled up to that size before every
/// read: a `memset` per frame that cost the generator a tenth of its CPU. Frames here are ~300 bytes.
const READ_BUFFER_BYTES: usize = 4096;

/// The client WebSocket to the relay.
pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the reader of a call shares with the worker that sends on it.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Marks to echo, and whether `stop` has gone out (later marks are not echoed).
    pub marks: Mutex<MarkBox>,
    /// Distinct frames whose echo came back.
    pub received: AtomicU32,
    /// The relay's side of the socket ended (close, error or EOF).
    pub closed: AtomicBool,
}

/// Mark names waiting to be echoed with the call's next frame.
#[derive(Debug, Default)]
pub(super) struct MarkBox {
    pub pending: Vec<String>,
    /// Set (under the lock) when the worker sends `stop`.
    pub stopped: bool,
}

impl Shared {
    /// Takes the marks to echo; with `stop`, also closes the box so none are added later.
    pub fn take_marks(&self, stop: bool) -> Vec<String> {
        // A poisoned lock means a reader panicked; its marks are not worth a second panic.
        let mut marks = match self.marks.lock() {
            Ok(marks) => marks,
            Err(poisoned) => poisoned.into_inner(),
        };
        marks.stopped |= stop;
        std::mem::take(&mut marks.pending)
    }
}

/// The sending half of one call, owned by its worker.
pub(super) struct Conn {
    /// Index of the call, `0..calls`; also in every frame's tag.
    pub call: u32,
    sink: SplitSink<Ws, Message>,
    call_sid: String,
    stream_sid: String,
    account_sid: String,
    /// Last `sequenceNumber` used (`start` was 1).
    seq: u64,
    /// Media frames sent; the next frame's tag sequence.
    pub frames_sent: u32,
    /// When `start` went out: `media.timestamp` counts from here.
    started: Instant,
    /// Set once every frame is sent: stop at this instant at the latest.
    pub drain_deadline: Option<Instant>,
    pub shared: Arc<Shared>,
}

/// Opens call `call` to `url` (`TCP_NODELAY`, as the relay's own sockets) and sends `connected`
/// and `start` with fresh CA/MZ/AC SIDs. Returns the sending half and the reading half.
///
/// # Errors
/// Invalid URL, refused or failed upgrade, or more than 10 s to get there.
pub(super) async fn open(url: &str, call: u32) -> anyhow::Result<(Conn, SplitStream<Ws>)> {
    let connecting = async {
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let (sink, stream) = ws.split();
        let mut conn = Conn {
            call,
            sink,
            call_sid: format!("CA{}", uuid::Uuid::new_v4().simple()),
            stream_sid: format!("MZ{}", uuid::Uuid::new_v4().simple()),
            account_sid: format!("AC{}", uuid::Uuid::new_v4().simple()),
            seq: 0,
            frames_sent: 0,
            started: Instant::now(),
            drain_deadline: None,
            shared: Arc::default(),
        };
        conn.greet().await?;
        anyhow::Ok((conn, stream))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| anyhow!("{url}: not connected within 10 s"))?
}

impl Conn {
    fn next_seq(&mut self) -> Cow<'static, str> {
        self.seq += 1;
        Cow::Owned(self.seq.to_string())
    }

    fn message(event: &TwilioEvent<'_>) -> anyhow::Result<Message> {
        let json = serde_json::to_string(event).context("serializing a Twilio event")?;
        Ok(Message::text(json))
    }

    async fn greet(&mut self) -> anyhow::Result<()> {
        let connected = TwilioEvent::Connected {
            protocol: Some("Call".into()),
            version: Some("1.0.0".into()),
        };
        let start = TwilioEvent::Start {
            sequence_number: Some(self.next_seq()),
            stream_sid: Some(Cow::Borrowed(&self.stream_sid)),
            start: StartInfo {
                account_sid: self.account_sid.clone(),
                stream_sid: self.stream_sid.clone(),
                call_sid: self.call_sid.clone(),
                tracks: vec!["inbound".into()],
                media_format: Some(MediaFormat {
                    encoding: "audio/x-mulaw".into(),
                    sample_rate: SAMPLE_RATE_HZ,
                    channels: 1,
                }),
                custom_parameters: [("From".to_string(), "+15550100000".to_string())].into(),
            },
        };
        let messages = [Self::message(&connected)?, Self::message(&start)?];
        for message in messages {
            self.sink
                .feed(message)
                .await
                .context("sending the greeting")?;
        }
        self.sink.flush().await.context("sending the greeting")?;
        self.started = Instant::now();
        Ok(())
    }

    /// Queues the echo of each mark in `names`, then (when `tag` is given) one `media` frame whose
    /// payload carries `tag`, then flushes: one write for the lot.
    ///
    /// # Errors
    /// The socket failed.
    pub async fn send_frame(
        &mut self,
        names: Vec<String>,
        frame: Option<(&Codec, Tag)>,
    ) -> anyhow::Result<()> {
        for name in names {
            let mark = TwilioEvent::Mark {
                sequence_number: Some(self.next_seq()),
                stream_sid: Some(Cow::Borrowed(&self.stream_sid)),
                mark: MarkBody { name: name.into() },
            };
            let message = Self::message(&mark)?;
            self.sink.feed(message).await.context("echoing a mark")?;
        }
        if let Some((codec, tag)) = frame {
            self.frames_sent += 1;
            let media = TwilioEvent::Media {
                sequence_number: Some(self.next_seq()),
                stream_sid: Some(Cow::Borrowed(&self.stream_sid)),
                media: MediaIn {
                    track: Some("inbound".into()),
                    chunk: Some(self.frames_sent.to_string().into()),
                    timestamp: Some(self.started.elapsed().as_millis().to_string().into()),
                    payload: codec.encode(tag).into(),
                },
            };
            let message = Self::message(&media)?;
            self.sink.feed(message).await.context("sending media")?;
        }
        self.sink.flush().await.context("flushing")
    }

    /// Echoes `names`, sends `stop` and our close frame: the call hangs up.
    ///
    /// # Errors
    /// The socket failed (the relay may have left first).
    pub async fn hang_up(&mut self, names: Vec<String>) -> anyhow::Result<()> {
        self.send_frame(names, None).await?;
        let stop = TwilioEvent::Stop {
            sequence_number: Some(self.next_seq()),
            stream_sid: Some(Cow::Borrowed(&self.stream_sid)),
            stop: Some(StopInfo {
                account_sid: Some(self.account_sid.clone()),
                call_sid: Some(self.call_sid.clone()),
                reason: None,
            }),
        };
        let message = Self::message(&stop)?;
        self.sink.send(message).await.context("sending stop")?;
        self.sink.close().await.context("closing")
    }

    /// Whether the relay has closed its side.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Whether every frame sent has come back.
    pub fn all_echoed(&self) -> bool {
        self.shared.received.load(Ordering::Acquire) >= self.frames_sent
    }
}
