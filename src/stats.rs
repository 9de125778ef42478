//! Process-wide counters behind `/health` and `/metrics`: atomics, one increment per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::{Exposition, ForkBackend, Kind, Metrics, Trigger};

/// What went wrong, for `errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A malformed, unknown or binary message from Twilio.
    TwilioMessage,
    /// A Twilio stream sent no `start` in time, or went silent.
    TwilioTimeout,
    /// A malformed event, or an `error` event, from the Realtime API.
    UpstreamEvent,
    /// The Realtime API could not be reached or refused the session.
    UpstreamConnect,
    /// The Realtime API socket failed, closed or ended mid-call.
    UpstreamSocket,
    /// The Realtime API went quiet: no `session.updated` in time, or a response stalled.
    UpstreamTimeout,
    /// A request without a valid `X-Twilio-Signature`.
    Signature,
    /// An `/api` request without a valid bearer token.
    ApiAuth,
    /// A malformed Twilio status callback.
    StatusCallback,
    /// Twilio's REST API failed.
    TwilioRest,
    /// A transcript or call record could not be written.
    Storage,
    /// A transcription backend failed.
    Transcription,
    /// An HTTP client too slow with its request: no complete head within `HTTP_HEADER_TIMEOUT_MS`
    /// (connection closed) or no complete body within `HTTP_BODY_TIMEOUT_MS` (408).
    HttpTimeout,
    /// An HTTP connection closed to stay under `MAX_HTTP_CONNECTIONS`: an idle one closed to make
    /// room, or a newcomer closed because every connection was in a request.
    HttpOverload,
    /// A notification between instances failed: not sent, not understood, or its stored
    /// payload not found (`src/cluster`).
    Cluster,
    /// A call's recording could not be written (the call goes on unrecorded).
    Recording,
}

impl ErrorKind {
    /// Every kind: each is exported as 0 from start-up, so alerts can be written before the first error.
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::TwilioMessage,
        ErrorKind::TwilioTimeout,
        ErrorKind::UpstreamEvent,
        ErrorKind::UpstreamConnect,
        ErrorKind::UpstreamSocket,
        ErrorKind::UpstreamTimeout,
        ErrorKind::Signature,
        ErrorKind::ApiAuth,
        ErrorKind::StatusCallback,
        ErrorKind::TwilioRest,
        ErrorKind::Storage,
        ErrorKind::Transcription,
        ErrorKind::HttpTimeout,
        ErrorKind::HttpOverload,
        ErrorKind::Cluster,
        ErrorKind::Recording,
    ];

    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::TwilioMessage => "twilio_message",
            ErrorKind::TwilioTimeout => "twilio_timeout",
            ErrorKind::UpstreamEvent => "upstream_event",
            ErrorKind::UpstreamConnect => "upstream_connect",
            ErrorKind::UpstreamSocket => "upstream_socket",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::Signature => "signature",
            ErrorKind::ApiAuth => "api_auth",
            ErrorKind::StatusCallback => "status_callback",
            ErrorKind::TwilioRest => "twilio_rest",
            ErrorKind::Storage => "storage",
            ErrorKind::Transcription => "transcription",
            ErrorKind::HttpTimeout => "http_timeout",
            ErrorKind::HttpOverload => "http_overload",
            ErrorKind::Cluster => "cluster",
            ErrorKind::Recording => "recording",
        }
    }
}

/// Counters shared by every call. Cheap to clone (an `Arc`).
#[derive(Debug, Clone)]
pub struct Stats(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    started: Instant,
    /// Call slots taken (reserved before the upgrade, released when the call's guard drops).
    slots: AtomicU64,
    /// Every kind summed, for `/health` (the metric family is split by kind).
    errors: AtomicU64,
    metrics: Metrics,
}

impl Default for Stats {
    fn default() -> Self {
        let metrics = Metrics::default();
        for kind in ErrorKind::ALL {
            metrics
                .errors
                .get_or_create(&Kind { kind: kind.label() })
                .inc_by(0);
        }
        for trigger in ["expired", "proactive"] {
            metrics
                .session_renewals
                .get_or_create(&Trigger { trigger })
                .inc_by(0);
        }
        Stats(Arc::new(Inner {
            started: Instant::now(),
            slots: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            metrics,
        }))
    }
}

impl Stats {
    /// Take one of `cap` call slots, atomically (a check followed by a later count could let
    /// more than `cap` in). `None` when all are taken. The guard counts the call as active and
    /// gives the slot back when dropped, however the call ends.
    pub fn reserve_call(&self, cap: u64) -> Option<ActiveCall> {
        self.0
            .slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        self.0.metrics.calls_active.inc();
        self.0.metrics.calls.inc();
        Some(ActiveCall(self.clone()))
    }

    /// Count one error of `kind`.
    pub fn error(&self, kind: ErrorKind) {
        self.0.errors.fetch_add(1, Ordering::Relaxed);
        self.0
            .metrics
            .errors
            .get_or_create(&Kind { kind: kind.label() })
            .inc();
    }

    /// Count a call turned away (busy, shutting down or unsigned).
    pub fn rejected(&self) {
        self.0.metrics.calls_rejected.inc();
    }

    /// One caller audio frame of `bytes` (base64 length) forwarded upstream.
    pub fn frame_to_openai(&self, base64_len: usize) {
        let m = &self.0.metrics;
        m.frames_to_openai.inc();
        m.bytes_to_openai.inc_by((base64_len / 4 * 3) as u64);
    }

    /// One assistant audio chunk of `bytes` μ-law sent to Twilio.
    pub fn frame_to_twilio(&self, bytes: usize) {
        let m = &self.0.metrics;
        m.frames_to_twilio.inc();
        m.bytes_to_twilio.inc_by(bytes as u64);
    }

    /// A caller frame dropped because upstream did not keep up.
    pub fn frame_dropped(&self) {
        self.0.metrics.frames_dropped.inc();
    }

    /// Caller frames sent again to a new session after an expiry mid-turn.
    pub fn frames_replayed(&self, frames: usize) {
        self.0.metrics.frames_replayed.inc_by(frames as u64);
    }

    /// `n` HTTP connections are open now (upgraded WebSocket calls not counted).
    pub fn http_connections(&self, n: usize) {
        self.0
            .metrics
            .http_connections
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A notification to or from the other instances: `sent`, `received` (from another
    /// instance, and understood) or `dropped` (the queue to the sender was full).
    pub fn cluster_notification(&self, event: &'static str) {
        self.0
            .metrics
            .cluster_notifications
            .get_or_create(&crate::metrics::Notification { event })
            .inc();
    }

    /// An event from the voice API that is only logged (an `info`, an unused event type).
    pub fn upstream_notice(&self) {
        self.0.metrics.upstream_notices.inc();
    }

    /// A barge-in.
    pub fn barge_in(&self) {
        self.0.metrics.barge_ins.inc();
    }

    /// A Realtime session renewed mid-call: `expired` by the API, or `proactive` at a quiet moment.
    pub fn session_renewed(&self, trigger: &'static str) {
        self.0
            .metrics
            .session_renewals
            .get_or_create(&Trigger { trigger })
            .inc();
    }

    /// How long opening the upstream socket took.
    pub fn upstream_connected(&self, took: Duration) {
        self.0.metrics.upstream_connect.observe(took.as_secs_f64());
    }

    /// From the caller's end of speech to the first assistant audio sent.
    pub fn response_latency(&self, took: Duration) {
        self.0.metrics.response_latency.observe(took.as_secs_f64());
    }

    /// One audio frame received on a forked call's `track` (`inbound` or `outbound`).
    pub fn fork_frame(&self, track: &str) {
        let m = &self.0.metrics;
        match track {
            "outbound" => m.fork_frames_outbound.inc(),
            _ => m.fork_frames_inbound.inc(),
        };
    }

    /// One final transcript segment of a forked call stored.
    pub fn fork_final(&self) {
        self.0.metrics.fork_finals.inc();
    }

    /// A fork track's transcription `backend` (`openai`, `deepgram`, `whisper`) given up.
    pub fn fork_backend_failed(&self, backend: &'static str) {
        let family = &self.0.metrics.fork_backend_failures;
        family.get_or_create(&ForkBackend { backend }).inc();
    }

    /// A tool call answered: `name` (already `unknown` for undeclared names), `outcome`
    /// ([`crate::tools::Outcome::label`]) and, when it ran, how long it took.
    pub fn tool_call(&self, name: &str, outcome: &'static str, took: Option<Duration>) {
        let m = &self.0.metrics;
        let labels = crate::metrics::ToolCall {
            name: name.to_string(),
            outcome,
        };
        m.tool_calls.get_or_create(&labels).inc();
        if let Some(took) = took {
            m.tool_call_duration.observe(took.as_secs_f64());
        }
    }

    /// The Prometheus exposition in `format` (see [`Exposition::negotiate`]).
    pub fn prometheus(&self, format: Exposition) -> String {
        self.0.metrics.encode_as(format)
    }

    /// Calls turned away since start.
    pub fn rejected_total(&self) -> u64 {
        self.0.metrics.calls_rejected.get()
    }

    /// Calls in progress.
    pub fn active(&self) -> u64 {
        self.0.metrics.calls_active.get().max(0) as u64
    }

    /// Calls since start.
    pub fn total(&self) -> u64 {
        self.0.metrics.calls.get()
    }

    /// Errors since start.
    pub fn errors(&self) -> u64 {
        self.0.errors.load(Ordering::Relaxed)
    }

    /// Seconds since the process started.
    pub fn uptime_s(&self) -> u64 {
        self.0.started.elapsed().as_secs()
    }
}

/// One call slot, held for the life of one call; see [`Stats::reserve_call`].
#[derive(Debug)]
pub struct ActiveCall(Stats);

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.0 .0.metrics.calls_active.dec();
        self.0 .0.slots.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_slots_never_exceed_the_cap_even_when_taken_at_once() {
        let stats = Stats::default();
        let taken: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..64)
                .map(|_| scope.spawn(|| stats.reserve_call(10)))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(taken.len(), 10);
        assert_eq!(stats.active(), 10);
        drop(taken);
        assert_eq!(stats.active(), 0);
        assert!(stats.reserve_call(10).is_some(), "slots come back");
    }

    #[test]
    fn every_error_kind_is_exported_from_start_up() {
        let text = Stats::default().prometheus(Exposition::Classic);
        for kind in ErrorKind::ALL {
            let sample = format!(r#"errors_total{{kind="{}"}} 0"#, kind.label());
            assert!(text.contains(&sample), "{sample} missing from\n{text}");
        }
        assert!(text.contains(r#"session_renewals_total{trigger="expired"} 0"#));
    }
}
