//! The open HTTP connections: each one's phase (waiting for a head, idle, in a request), the cap
//! on how many are open, its reserve, and which connection makes room for a newcomer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::stats::Stats;

/// `in_flight` of a connection closed by the server (for a newcomer or at shutdown): no request
/// may start on it any more.
const CLOSED: u32 = u32::MAX;

/// Where one connection is. Shared by its supervisor, its socket wrapper, its service and its
/// response bodies, which all run on the connection's own task: the atomics are never contended.
#[derive(Debug)]
pub(crate) struct ConnState {
    opened: Instant,
    /// Requests between their head and the end of their response, or [`CLOSED`].
    in_flight: AtomicU32,
    /// Set between requests on a kept-alive connection; the next byte read clears it.
    idle: AtomicBool,
    /// When the current wait began (accept, end of a response, first byte of the next request),
    /// ms after `opened`.
    since_ms: AtomicU64,
    /// The request in progress ran out of `HTTP_BODY_TIMEOUT_MS` while its body was read.
    body_timed_out: AtomicBool,
    /// Woken at every change above, so the supervisor recomputes its deadline.
    changed: Notify,
}

/// What a connection is doing, for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for a request's head (from the accept, or from the first byte after idling).
    Head,
    /// Kept alive between requests.
    Idle,
    /// Between a request's head and the end of its response: not timed here.
    Request,
    /// Closed by the server.
    Closed,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle: AtomicBool::new(false),
            since_ms: AtomicU64::new(0),
            body_timed_out: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// The current phase and when it began.
    pub(crate) fn phase(&self) -> (Phase, Instant) {
        let since = self.opened + Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        let phase = match self.in_flight.load(Ordering::Acquire) {
            CLOSED => Phase::Closed,
            0 if self.idle.load(Ordering::Acquire) => Phase::Idle,
            0 => Phase::Head,
            _ => Phase::Request,
        };
        (phase, since)
    }

    fn mark(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since_ms.store(ms, Ordering::Release);
    }

    /// Resolves at the next change of phase (or right away if one happened since the last call).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Bytes were read from the socket: an idle connection starts receiving its next head.
    pub(crate) fn bytes_arrived(&self) {
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::AcqRel) {
            self.mark();
            self.changed.notify_one();
        }
    }

    /// A request's head has arrived. `None` if the server has closed this connection meanwhile.
    pub(crate) fn request_started(self: &Arc<Self>) -> Option<RequestGuard> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match n {
                CLOSED => None,
                n => Some(n + 1),
            })
            .ok()?;
        self.idle.store(false, Ordering::Release);
        self.changed.notify_one();
        Some(RequestGuard(self.clone()))
    }

    /// Close the connection if it has no request in progress; `false` if it has one.
    pub(crate) fn try_close(&self) -> bool {
        let closed = self
            .in_flight
            .compare_exchange(0, CLOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if closed {
            self.changed.notify_one();
        }
        closed
    }

    /// The body of the request in progress ran out of time.
    pub(crate) fn body_timed_out(&self) {
        self.body_timed_out.store(true, Ordering::Release);
    }

    /// Whether the request that just got its response ran out of body time (and clear it).
    pub(crate) fn take_body_timeout(&self) -> bool {
        self.body_timed_out.swap(false, Ordering::AcqRel)
    }
}

/// Held from a request's head to the end of its response body: the connection is in a request.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let conn = &self.0;
        if conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            conn.mark();
            conn.idle.store(true, Ordering::Release);
            conn.changed.notify_one();
        }
    }
}

/// Every open HTTP connection, oldest first, and the cap. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Connections(Arc<Registry>);

#[derive(Debug)]
struct Registry {
    cap: usize,
    /// Above this many open connections, responses close their connection.
    keep_alive_limit: usize,
    open: Mutex<Open>,
    /// `open.by_age.len()`, readable without the lock.
    count: AtomicUsize,
    stats: Stats,
}

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    /// Keyed by accept order: the first entry is the longest open.
    by_age: BTreeMap<u64, Arc<ConnState>>,
}

/// The answer to a new connection.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Under the cap.
    Open(Slot),
    /// At the cap: the longest-open connection without a request in progress was closed for it.
    MadeRoom(Slot),
    /// At the cap with every connection in a request: close the newcomer.
    Refused,
}

impl Connections {
    /// `cap` connections at most; above `cap - reserve`, connections are not kept alive.
    pub(crate) fn new(cap: usize, reserve: usize, stats: Stats) -> Self {
        Connections(Arc::new(Registry {
            cap,
            keep_alive_limit: cap.saturating_sub(reserve),
            open: Mutex::default(),
            count: AtomicUsize::new(0),
            stats,
        }))
    }

    /// A slot for a connection just accepted (see [`Admission`]).
    pub(crate) fn admit(&self) -> Admission {
        let mut open = self
            .0
            .open
            .lock()
            .expect("the lock is never held across a panic");
        let made_room = open.by_age.len() >= self.0.cap;
        if made_room {
            let victim = open
                .by_age
                .iter()
                .find(|(_, conn)| conn.try_close())
                .map(|(id, _)| *id);
            match victim {
                Some(id) => open.by_age.remove(&id),
                None => return Admission::Refused,
            };
        }
        let id = open.next_id;
        open.next_id += 1;
        let state = Arc::new(ConnState::new());
        open.by_age.insert(id, state.clone());
        self.counted(open.by_age.len());
        let slot = Slot {
            conns: self.clone(),
            id,
            state,
        };
        if made_room {
            Admission::MadeRoom(slot)
        } else {
            Admission::Open(slot)
        }
    }

    /// Whether connections are past the reserve's threshold: responses close their connection.
    pub(crate) fn in_reserve(&self) -> bool {
        self.0.count.load(Ordering::Relaxed) > self.0.keep_alive_limit
    }

    fn counted(&self, n: usize) {
        self.0.count.store(n, Ordering::Relaxed);
        self.0.stats.http_connections(n);
    }
}

/// One open connection's place under the cap; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    conns: Connections,
    id: u64,
    state: Arc<ConnState>,
}

impl Slot {
    /// The connection's phase, shared with its socket and service.
    pub(crate) fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .conns
            .0
            .open
            .lock()
            .expect("the lock is never held across a panic");
        // Absent when it was closed to make room: its place went to the newcomer then.
        if open.by_age.remove(&self.id).is_some() {
            self.conns.counted(open.by_age.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(admission: Admission) -> Slot {
        match admission {
            Admission::Open(slot) | Admission::MadeRoom(slot) => slot,
            Admission::Refused => panic!("refused"),
        }
    }

    #[test]
    fn at_the_cap_the_oldest_connection_without_a_request_makes_room() {
        let conns = Connections::new(3, 1, Stats::default());
        let oldest = slot(conns.admit());
        let second = slot(conns.admit());
        let _busy = oldest.state().request_started().expect("open");
        assert!(!conns.in_reserve());
        let third = slot(conns.admit());
        assert!(conns.in_reserve(), "3 of 3 is past the reserve's threshold");

        // The oldest is in a request: the second-oldest is closed instead.
        let Admission::MadeRoom(fourth) = conns.admit() else {
            panic!("expected room to be made");
        };
        assert_eq!(second.state().phase().0, Phase::Closed);
        assert!(
            second.state().request_started().is_none(),
            "no request on a closed one"
        );
        assert_eq!(oldest.state().phase().0, Phase::Request);
        drop(second);
        assert_eq!(
            conns.0.count.load(Ordering::Relaxed),
            3,
            "its slot went to the newcomer"
        );
        drop((third, fourth));
        assert_eq!(conns.0.count.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn with_every_connection_in_a_request_a_newcomer_is_refused() {
        let conns = Connections::new(2, 1, Stats::default());
        let a = slot(conns.admit());
        let b = slot(conns.admit());
        let _ra = a.state().request_started();
        let rb = b.state().request_started();
        assert!(matches!(conns.admit(), Admission::Refused));
        drop(rb);
        assert_eq!(b.state().phase().0, Phase::Idle, "the response ended: idle");
        assert!(matches!(conns.admit(), Admission::MadeRoom(_)));
    }

    #[test]
    fn a_connection_goes_head_request_idle_head() {
        let conns = Connections::new(8, 1, Stats::default());
        let s = slot(conns.admit());
        let conn = s.state();
        assert_eq!(
            conn.phase().0,
            Phase::Head,
            "waiting for the first head from the accept"
        );
        conn.bytes_arrived();
        assert_eq!(
            conn.phase().0,
            Phase::Head,
            "bytes of the first head change nothing"
        );
        let guard = conn.request_started().expect("open");
        conn.bytes_arrived();
        assert_eq!(conn.phase().0, Phase::Request, "body bytes change nothing");
        drop(guard);
        let (phase, idle_since) = conn.phase();
        assert_eq!(phase, Phase::Idle);
        conn.bytes_arrived();
        let (phase, head_since) = conn.phase();
        assert_eq!(phase, Phase::Head, "the next head's first byte");
        assert!(head_since >= idle_since);
    }
}
