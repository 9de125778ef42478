//! Process-wide counters behind `/health` and `/metrics`: atomics, one increment per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::{Exposition, ForkBackend, Kind, Metrics};

/// What went wrong, for `errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A malformed, unknown or binary message from Twilio.
    TwilioMessage,
    /// A malformed event, or an `error` event, from the Realtime API.
    UpstreamEvent,
    /// The Realtime API could not be reached or refused the session.
    UpstreamConnect,
    /// The Realtime API socket failed mid-call.
    UpstreamSocket,
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
}

impl ErrorKind {
    fn label(self) -> &'static str {
        match self {
            ErrorKind::TwilioMessage => "twilio_message",
            ErrorKind::UpstreamEvent => "upstream_event",
            ErrorKind::UpstreamConnect => "upstream_connect",
            ErrorKind::UpstreamSocket => "upstream_socket",
            ErrorKind::Signature => "signature",
            ErrorKind::ApiAuth => "api_auth",
            ErrorKind::StatusCallback => "status_callback",
            ErrorKind::TwilioRest => "twilio_rest",
            ErrorKind::Storage => "storage",
            ErrorKind::Transcription => "transcription",
        }
    }
}

/// Counters shared by every call. Cheap to clone (an `Arc`).
#[derive(Debug, Clone)]
pub struct Stats(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    started: Instant,
    /// Every kind summed, for `/health` (the metric family is split by kind).
    errors: AtomicU64,
    metrics: Metrics,
}

impl Default for Stats {
    fn default() -> Self {
        Stats(Arc::new(Inner {
            started: Instant::now(),
            errors: AtomicU64::new(0),
            metrics: Metrics::default(),
        }))
    }
}

impl Stats {
    /// Count a new call; the returned guard decrements `active` when dropped, however the call ends.
    pub fn call_started(&self) -> ActiveCall {
        self.0.metrics.calls_active.inc();
        self.0.metrics.calls.inc();
        ActiveCall(self.clone())
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

    /// A barge-in.
    pub fn barge_in(&self) {
        self.0.metrics.barge_ins.inc();
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

/// Held for the life of one call; see [`Stats::call_started`].
#[derive(Debug)]
pub struct ActiveCall(Stats);

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.0 .0.metrics.calls_active.dec();
    }
}
