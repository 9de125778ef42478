//! Accepting and serving HTTP connections: HTTP/1.1 through hyper with WebSocket upgrades, a
//! time limit on every phase of a request, and a cap on open connections with a reserve.
//!
//! `axum::serve` has none of these: a client sending its headers a byte a minute, or never
//! finishing its body, held a socket forever, and enough of them used up the descriptors.
//!
//! # Timeouts
//! Each connection has a supervisor (its own task) that knows which phase it is in:
//! - **waiting for a request head** (request line and headers), from the accept or from the first
//!   byte of a later request on a kept-alive connection: closed, without an answer, after
//!   `HTTP_HEADER_TIMEOUT_MS`;
//! - **idle** between requests on a kept-alive connection: closed after `HTTP_IDLE_TIMEOUT_SECS`;
//! - **in a request**, from its head to the last byte of its response: the body must be complete
//!   within `HTTP_BODY_TIMEOUT_MS` of the head, else the request is answered `408 Request Timeout`
//!   and the connection closed. Handlers and responses are not timed here (`/api/calls/{sid}/events`
//!   streams for as long as its call lasts).
//!
//! hyper's own `header_read_timeout` is off. In hyper 1.12 (`proto/h1/conn.rs`: `State::idle`
//! sets `notify_read` when a header timeout is configured, and `poll_read_head` starts the timer
//! on that read) its timer starts the moment a kept-alive connection goes idle, so it would close
//! idle connections after the header timeout and there could be no longer idle timeout.
//! tower-http's `RequestBodyTimeoutLayer` restarts its timer at every body frame, so a byte every
//! few seconds never trips it, and its error reaches clients as a 400; here the deadline runs from
//! the head to the end of the body.
//!
//! A WebSocket upgrade leaves all of this behind: once hyper hands the socket to the upgrade, the
//! connection's supervisor and slot are gone. Calls are timed by the bridge and capped by
//! `MAX_CONCURRENT_CALLS`, never by these timeouts.
//!
//! # The connection cap and its reserve
//! At most `MAX_HTTP_CONNECTIONS` HTTP connections are open; upgraded calls are not counted (so
//! the process needs about `MAX_HTTP_CONNECTIONS + 2 × MAX_CONCURRENT_CALLS` descriptors: each
//! call also has its Realtime socket; start-up warns when the limit is lower). The top eighth is
//! a reserve: past `MAX_HTTP_CONNECTIONS - reserve` open connections, every response closes its
//! connection, so idle keep-alive connections stop piling up. At the cap, a newcomer takes the
//! place of the longest-open connection that has no request in progress (one still sending its
//! head, or idle), which is closed; only when every connection is in a request is the newcomer
//! closed instead.
//!
//! Why make room rather than refuse at the cap: slow clients sit in the "waiting for a head"
//! phase, and refusing newcomers would hand the server to whoever holds those connections, for a
//! header timeout at a time, over and over. Twilio's webhooks and `/health` send their whole
//! request at once, so they are in a request within a round trip of connecting and are never the
//! oldest idle connection: to shut them out an attacker must open `MAX_HTTP_CONNECTIONS`
//! connections per round trip rather than a few per header timeout. (Shorter timeouts past a
//! threshold, the other option, only raise the rate an attacker needs by the ratio of the two.)
//!
//! Connections closed for a timeout or for room are counted in `errors_total{kind="http_timeout"}`
//! and `{kind="http_overload"}`, and logged once per burst (see [`Burst`]); `http_connections` is
//! the gauge of open connections.

mod conns;
mod io;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::config::Config;
use crate::stats::{ErrorKind, Stats};
use conns::{Admission, ConnState, Connections, Phase, Slot};
use io::{DeadlineBody, GuardedBody, WatchedIo};

/// The HTTP server's limits (from `HTTP_*_TIMEOUT_*` and `MAX_HTTP_CONNECTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest wait for a request's head, from the accept or from the first byte of a later
    /// request on a kept-alive connection.
    pub header_timeout: Duration,
    /// Longest time from a request's head to the end of its body.
    pub body_timeout: Duration,
    /// Longest wait for the next request on a kept-alive connection.
    pub idle_timeout: Duration,
    /// Most HTTP connections open at once (upgraded WebSockets not counted).
    pub max_connections: usize,
}

impl HttpLimits {
    /// The limits `config` sets.
    pub fn from_config(config: &Config) -> Self {
        HttpLimits {
            header_timeout: Duration::from_millis(config.http_header_timeout_ms),
            body_timeout: Duration::from_millis(config.http_body_timeout_ms),
            idle_timeout: Duration::from_secs(config.http_idle_timeout_secs),
            max_connections: config.max_http_connections,
        }
    }

    /// Connections of the reserve: an eighth of the cap, at least one. Past
    /// `max_connections - reserve()` open connections, none is kept alive after its response.
    pub fn reserve(&self) -> usize {
        (self.max_connections / 8).max(1)
    }
}

/// What every connection task shares.
struct Server {
    router: Router,
    limits: HttpLimits,
    conns: Connections,
    stats: Stats,
    http1: http1::Builder,
    timeouts: Burst,
    overload: Burst,
}

/// Serve `router` on `listener` until `stop` is cancelled; then stop accepting, close every
/// connection without a request in progress, let the others finish theirs, and return when all
/// are closed. Upgraded WebSockets are not waited for: they belong to whoever took the upgrade.
pub async fn serve_http(
    mut listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    stats: Stats,
    stop: CancellationToken,
) {
    let mut http1 = http1::Builder::new();
    // Off: it would also time the keep-alive wait (see the module docs); the supervisor times
    // heads instead.
    http1.header_read_timeout(None::<Duration>);
    let server = Arc::new(Server {
        router,
        limits,
        conns: Connections::new(limits.max_connections, limits.reserve(), stats.clone()),
        stats,
        http1,
        timeouts: Burst::new(ErrorKind::HttpTimeout),
        overload: Burst::new(ErrorKind::HttpOverload),
    });
    let tasks = TaskTracker::new();
    loop {
        // axum's `accept` retries on its own, pausing 1 s when out of descriptors.
        let (tcp, _peer) = tokio::select! {
            accepted = Listener::accept(&mut listener) => accepted,
            () = stop.cancelled() => break,
        };
        // Audio frames are small and latency-bound: never wait to coalesce them.
        let _ = tcp.set_nodelay(true);
        let slot = match server.conns.admit() {
            Admission::Open(slot) => slot,
            Admission::MadeRoom(slot) => {
                server.overload.record(
                    &server.stats,
                    "MAX_HTTP_CONNECTIONS reached: closed the longest-open connection without a request in progress to make room",
                );
                slot
            }
            Admission::Refused => {
                server.overload.record(
                    &server.stats,
                    "MAX_HTTP_CONNECTIONS reached with every connection in a request: closed a new connection",
                );
                continue;
            }
        };
        tasks.spawn(serve_connection(server.clone(), tcp, slot, stop.clone()));
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// One connection, under its supervisor: hyper serves it while the supervisor closes it when
/// its phase's time is up, when it is closed for a newcomer, or at `stop`.
async fn serve_connection(
    server: Arc<Server>,
    tcp: TcpStream,
    slot: Slot,
    stop: CancellationToken,
) {
    let conn = slot.state().clone();
    let io = TokioIo::new(WatchedIo::new(tcp, conn.clone()));
    let service = ConnService {
        server: server.clone(),
        conn: conn.clone(),
    };
    let http = server.http1.serve_connection(io, service).with_upgrades();
    tokio::pin!(http);
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut armed_for = None;
    let mut stopping = false;
    loop {
        let (phase, since) = conn.phase();
        let deadline = match phase {
            Phase::Head => Some(since + server.limits.header_timeout),
            Phase::Idle => Some(since + server.limits.idle_timeout),
            Phase::Request => None,
            Phase::Closed => break,
        };
        if deadline != armed_for {
            if let Some(deadline) = deadline {
                timer.as_mut().reset(deadline);
            }
            armed_for = deadline;
        }
        tokio::select! {
            result = http.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            () = &mut timer, if deadline.is_some() => {
                // Only acted on if the phase is still the one the timer was set for.
                if conn.phase() == (phase, since) && conn.try_close() {
                    if phase == Phase::Head {
                        server.timeouts.record(
                            &server.stats,
                            "closed a connection that sent no complete request head within HTTP_HEADER_TIMEOUT_MS",
                        );
                    } else {
                        debug!("closed an idle keep-alive connection (HTTP_IDLE_TIMEOUT_SECS)");
                    }
                    break;
                }
            }
            () = conn.changed() => {}
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                // Shutting down: a half-sent head is abandoned; a request in progress finishes.
                if conn.try_close() {
                    break;
                }
                http.as_mut().graceful_shutdown();
            }
        }
    }
    drop(slot);
}

/// The per-connection service: the router, with each request's body under its deadline and
/// each response body marking the end of the request.
#[derive(Clone)]
struct ConnService {
    server: Arc<Server>,
    conn: Arc<ConnState>,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<GuardedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<GuardedBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let server = self.server.clone();
        let conn = self.conn.clone();
        let guard = conn.request_started();
        Box::pin(async move {
            let Some(guard) = guard else {
                // Closed for a newcomer a moment ago; the socket is going away.
                let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
                close_after(&mut response);
                return Ok(response.map(|body| GuardedBody::new(body, None)));
            };
            let limit = server.limits.body_timeout;
            let req = req.map(|body| DeadlineBody::wrap(body, limit, conn.clone()));
            let Ok(mut response) = server.router.clone().oneshot(req).await;
            if conn.take_body_timeout() {
                server.timeouts.record(
                    &server.stats,
                    "answered 408: request body not complete within HTTP_BODY_TIMEOUT_MS",
                );
                response = (
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "request body not received within {} ms\n",
                        limit.as_millis()
                    ),
                )
                    .into_response();
                close_after(&mut response);
            } else if server.conns.in_reserve()
                && response.status() != StatusCode::SWITCHING_PROTOCOLS
            {
                // Past the reserve's threshold nothing is kept alive (an upgrade keeps its
                // `Connection: upgrade`: that socket leaves the cap anyway).
                close_after(&mut response);
            }
            Ok(response.map(|body| GuardedBody::new(body, Some(guard))))
        })
    }
}

fn close_after<B>(response: &mut Response<B>) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// How often a burst of the same trouble is logged at most.
const BURST_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Logs a burst of one [`ErrorKind`] once: a WARN line at its first event, then at most one a
/// minute while it lasts, each with the count since the line before. Every event is counted in
/// `errors_total{kind}`, logged or not.
struct Burst {
    kind: ErrorKind,
    /// When the last line was logged, and the events since.
    last: Mutex<Option<(Instant, u64)>>,
}

impl Burst {
    fn new(kind: ErrorKind) -> Self {
        Burst {
            kind,
            last: Mutex::new(None),
        }
    }

    fn record(&self, stats: &Stats, what: &'static str) {
        stats.error(self.kind);
        let now = Instant::now();
        let mut last = self
            .last
            .lock()
            .expect("the lock is never held across a panic");
        match &mut *last {
            Some((at, since)) if now.duration_since(*at) < BURST_LOG_INTERVAL => *since += 1,
            previous => {
                let unlogged = previous.map_or(0, |(_, since)| since);
                *previous = Some((now, 0));
                warn!(
                    kind = self.kind.label(),
                    unlogged_since_last_line = unlogged,
                    "{what}; more like it are counted in errors_total and logged at most once a minute"
                );
            }
        }
    }
}

/// Warn when the process's open-file limit cannot hold `MAX_HTTP_CONNECTIONS`, two sockets per
/// call (Twilio's and the Realtime API's) and some headroom: the descriptors would run out before
/// the connection cap is reached, and then accepting fails for everyone. Linux only (reads
/// `/proc/self/limits`); silent elsewhere.
pub fn check_descriptor_limit(config: &Config) {
    let Some(limit) = open_files_limit() else {
        return;
    };
    let needed = u64::try_from(config.max_http_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(config.max_concurrent_calls.saturating_mul(2))
        .saturating_add(64);
    if limit < needed {
        warn!(
            open_files_limit = limit,
            needed,
            "the open-file limit is below MAX_HTTP_CONNECTIONS + 2 × MAX_CONCURRENT_CALLS + 64: raise it (ulimit -n, LimitNOFILE=) or lower those"
        );
    }
}

/// The soft `Max open files` of this process.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
