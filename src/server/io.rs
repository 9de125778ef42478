//! What a connection's phase is learned from: its socket (the first byte of a head), the request
//! body (its deadline) and the response body (the end of a request).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::conns::{ConnState, RequestGuard};

/// A connection's socket, telling its [`ConnState`] when bytes arrive. After an upgrade it is the
/// WebSocket's socket: one relaxed load per read, nothing else.
pub(crate) struct WatchedIo {
    io: TcpStream,
    conn: Arc<ConnState>,
}

impl WatchedIo {
    pub(crate) fn new(io: TcpStream, conn: Arc<ConnState>) -> Self {
        WatchedIo { io, conn }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.bytes_arrived();
        }
        poll
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The request body did not arrive within `HTTP_BODY_TIMEOUT_MS` of the request's head.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?} (HTTP_BODY_TIMEOUT_MS)")]
pub(crate) struct BodyTimeout(Duration);

/// A request body that must end by a deadline set when its head arrived (a total, not a gap
/// between frames: a client trickling a byte at a time still runs out).
pub(crate) struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    limit: Duration,
    /// Armed at the first wait: a body that is already buffered never touches the timer.
    sleep: Option<Pin<Box<Sleep>>>,
    conn: Arc<ConnState>,
}

/// What a request body fails with.
type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl DeadlineBody {
    /// `inner`, which must end within `limit` from now.
    pub(crate) fn wrap(inner: Incoming, limit: Duration, conn: Arc<ConnState>) -> Body {
        Body::new(DeadlineBody {
            inner,
            deadline: Instant::now() + limit,
            limit,
            sleep: None,
            conn,
        })
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        // Once the body has had to wait, the deadline is checked before every frame.
        if self.sleep.is_some() && self.expired(cx) {
            return self.time_out();
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending if self.expired(cx) => self.time_out(),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl DeadlineBody {
    fn time_out(&mut self) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.conn.body_timed_out();
        Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit)))))
    }
}

/// A response body holding its request's [`RequestGuard`] (none when the request was refused):
/// hyper drops it once it has written the last byte, which is when the request ends.
pub(crate) struct GuardedBody {
    body: Body,
    _guard: Option<RequestGuard>,
}

impl GuardedBody {
    pub(crate) fn new(body: Body, guard: Option<RequestGuard>) -> Self {
        GuardedBody {
            body,
            _guard: guard,
        }
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
