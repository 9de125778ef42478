//! Prometheus metrics for `GET /metrics` (text format, through `prometheus-client`).
//!
//! Counters are atomics: incrementing one on the per-frame path takes no lock. Names follow
//! Prometheus conventions (counters gain `_total` when encoded, durations are in seconds).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `direction` label: `twilio_to_openai` (caller audio) or `openai_to_twilio` (assistant audio).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Direction {
    pub direction: &'static str,
}

/// `kind` label of `errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: &'static str,
}

/// `trigger` label of `session_renewals_total`: `expired` (the API ended the session at its
/// limit) or `proactive` (renewed at a quiet moment before the limit).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Trigger {
    pub trigger: &'static str,
}

/// Every metric the relay exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub calls_active: Gauge,
    pub calls: Counter,
    pub calls_rejected: Counter,
    /// HTTP connections open (upgraded WebSocket calls are in `calls_active` instead).
    pub http_connections: Gauge,
    pub frames: Family<Direction, Counter>,
    pub bytes: Family<Direction, Counter>,
    /// The per-frame series, resolved once: a `Family` lookup takes a lock shared by every call,
    /// these handles are bare atomics.
    pub frames_to_openai: Counter,
    pub frames_to_twilio: Counter,
    pub bytes_to_openai: Counter,
    pub bytes_to_twilio: Counter,
    pub frames_dropped: Counter,
    pub barge_ins: Counter,
    pub errors: Family<Kind, Counter>,
    /// Realtime sessions replaced mid-call because of their maximum duration (not failures).
    pub session_renewals: Family<Trigger, Counter>,
    /// Seconds from dialing the Realtime API to the open socket.
    pub upstream_connect: Histogram,
    /// Seconds from the caller's `speech_stopped` to the first assistant audio sent to Twilio.
    pub response_latency: Histogram,
}

/// `direction` values.
pub const TO_OPENAI: Direction = Direction {
    direction: "twilio_to_openai",
};
pub const TO_TWILIO: Direction = Direction {
    direction: "openai_to_twilio",
};

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            calls_active: Gauge::default(),
            calls: Counter::default(),
            calls_rejected: Counter::default(),
            http_connections: Gauge::default(),
            frames: Family::default(),
            bytes: Family::default(),
            frames_to_openai: Counter::default(),
            frames_to_twilio: Counter::default(),
            bytes_to_openai: Counter::default(),
            bytes_to_twilio: Counter::default(),
            frames_dropped: Counter::default(),
            barge_ins: Counter::default(),
            errors: Family::default(),
            session_renewals: Family::default(),
            // 5 ms … ~10 s.
            upstream_connect: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            // 50 ms … ~25 s.
            response_latency: Histogram::new(exponential_buckets(0.05, 1.5, 16)),
            registry: Registry::default(),
        };
        registry.register("calls_active", "Calls in progress", m.calls_active.clone());
        registry.register("calls", "Calls accepted since start", m.calls.clone());
        registry.register(
            "calls_rejected",
            "Calls turned away: busy, shutting down or unsigned",
            m.calls_rejected.clone(),
        );
        registry.register(
            "http_connections",
            "HTTP connections open (upgraded calls not counted), at most MAX_HTTP_CONNECTIONS",
            m.http_connections.clone(),
        );
        registry.register("frames", "Audio messages relayed", m.frames.clone());
        registry.register("bytes", "μ-law audio bytes relayed", m.bytes.clone());
        registry.register(
            "frames_dropped",
            "Caller frames dropped because the Realtime API did not keep up",
            m.frames_dropped.clone(),
        );
        registry.register(
            "barge_ins",
            "Times a caller interrupted the assistant",
            m.barge_ins.clone(),
        );
        registry.register("errors", "Errors by kind", m.errors.clone());
        registry.register(
            "session_renewals",
            "Realtime sessions renewed mid-call at their maximum duration, by trigger",
            m.session_renewals.clone(),
        );
        registry.register(
            "upstream_connect_seconds",
            "Time to open the Realtime API WebSocket",
            m.upstream_connect.clone(),
        );
        registry.register(
            "response_latency_seconds",
            "From the caller's end of speech to the first assistant audio sent to Twilio",
            m.response_latency.clone(),
        );
        let frames_to_openai = m.frames.get_or_create(&TO_OPENAI).clone();
        let frames_to_twilio = m.frames.get_or_create(&TO_TWILIO).clone();
        let bytes_to_openai = m.bytes.get_or_create(&TO_OPENAI).clone();
        let bytes_to_twilio = m.bytes.get_or_create(&TO_TWILIO).clone();
        Metrics {
            frames_to_openai,
            frames_to_twilio,
            bytes_to_openai,
            bytes_to_twilio,
            registry,
            ..m
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_gauges_and_labels() {
        let m = Metrics::default();
        m.calls.inc();
        m.calls_active.inc();
        m.frames_to_openai.inc_by(3);
        let text = m.encode();
        assert!(text.contains("calls_total 1"), "{text}");
        assert!(text.contains("calls_active 1"), "{text}");
        assert!(
            text.contains(r#"frames_total{direction="twilio_to_openai"} 3"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
