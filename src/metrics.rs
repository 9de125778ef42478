//! Prometheus metrics for `GET /metrics`, through `prometheus-client`.
//!
//! Counters are atomics: incrementing one on the per-frame path takes no lock. Names follow
//! Prometheus conventions (counters gain `_total` when encoded, durations are in seconds).
//! `prometheus-client` writes OpenMetrics 1.0 text (a counter family is declared without its
//! `_total` suffix, the body ends with `# EOF`); scrapers that do not ask for OpenMetrics get the
//! classic text format 0.0.4 instead, whose parser would otherwise lose every counter's type.

use std::fmt::Write;

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

/// `track` label of the fork metrics: `inbound` (the caller) or `outbound` (the agent).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForkTrack {
    pub track: &'static str,
}

/// `backend` label of `fork_backend_failures_total`: `openai`, `deepgram` or `whisper`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForkBackend {
    pub backend: &'static str,
}

/// Labels of `tool_calls_total`: the tool's `name` (`unknown` for names no call declared) and
/// the `outcome` ([`crate::tools::Outcome::label`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolCall {
    pub name: String,
    pub outcome: &'static str,
}

/// `event` label of `cluster_notifications_total`: `sent`, `received` or `dropped`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Notification {
    pub event: &'static str,
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
    /// Caller frames sent again to a new session after an expiry cut the caller's turn.
    pub frames_replayed: Counter,
    pub barge_ins: Counter,
    pub upstream_notices: Counter,
    pub errors: Family<Kind, Counter>,
    /// Realtime sessions replaced mid-call because of their maximum duration (not failures).
    pub session_renewals: Family<Trigger, Counter>,
    /// Seconds from dialing the Realtime API to the open socket.
    pub upstream_connect: Histogram,
    /// Seconds from the caller's `speech_stopped` to the first assistant audio sent to Twilio.
    pub response_latency: Histogram,
    /// Audio frames received on forked calls (`/transcription-stream`), by track.
    pub fork_frames: Family<ForkTrack, Counter>,
    /// The `track="inbound"` series of `fork_frames`, resolved once (per-frame path, as
    /// `frames_to_openai`).
    pub fork_frames_inbound: Counter,
    /// The `track="outbound"` series of `fork_frames`, resolved once.
    pub fork_frames_outbound: Counter,
    /// Final transcript segments stored from forked calls.
    pub fork_finals: Counter,
    /// Fork tracks whose transcription backend failed for good (after its retry), by backend.
    pub fork_backend_failures: Family<ForkBackend, Counter>,
    /// Tool calls of the assistant answered, by tool and outcome.
    pub tool_calls: Family<ToolCall, Counter>,
    /// Seconds from a tool call to its answer (webhooks; built-ins answer at once).
    pub tool_call_duration: Histogram,
    /// PostgreSQL notifications between instances (`src/cluster`), by `event`.
    pub cluster_notifications: Family<Notification, Counter>,
}

/// `direction` values.
pub const TO_OPENAI: Direction = Direction {
    direction: "twilio_to_openai",
};
pub const TO_TWILIO: Direction = Direction {
    direction: "openai_to_twilio",
};

/// `track` values.
pub const FORK_INBOUND: ForkTrack = ForkTrack { track: "inbound" };
pub const FORK_OUTBOUND: ForkTrack = ForkTrack { track: "outbound" };

/// Which text format a `/metrics` response uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0.0, what `prometheus-client` writes; for scrapers that ask for it.
    OpenMetrics,
    /// Prometheus text format 0.0.4: for `Accept: */*`, `text/plain` or no `Accept` at all.
    Classic,
}

impl Exposition {
    /// The format for a request's `Accept` header: OpenMetrics when it lists
    /// `application/openmetrics-text` with a quality above 0 and at least that of `text/plain`
    /// (Prometheus sends `application/openmetrics-text;version=1.0.0,…,text/plain;version=0.0.4;q=0.5,…`),
    /// otherwise classic.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let (mut open, mut classic) = (0.0_f32, 0.0_f32);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => open = open.max(q),
                "text/plain" => classic = classic.max(q),
                _ => {}
            }
        }
        if open > 0.0 && open >= classic {
            Exposition::OpenMetrics
        } else {
            Exposition::Classic
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

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
            frames_replayed: Counter::default(),
            barge_ins: Counter::default(),
            upstream_notices: Counter::default(),
            errors: Family::default(),
            session_renewals: Family::default(),
            // 5 ms … ~10 s.
            upstream_connect: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            // 50 ms … ~25 s.
            response_latency: Histogram::new(exponential_buckets(0.05, 1.5, 16)),
            fork_frames: Family::default(),
            fork_frames_inbound: Counter::default(),
            fork_frames_outbound: Counter::default(),
            fork_finals: Counter::default(),
            fork_backend_failures: Family::default(),
            tool_calls: Family::default(),
            // 10 ms … ~40 s (webhook timeouts reach 30 s).
            tool_call_duration: Histogram::new(exponential_buckets(0.01, 2.0, 13)),
            cluster_notifications: Family::default(),
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
            "frames_replayed",
            "Caller frames sent again to a new Realtime session after an expiry cut the caller's turn",
            m.frames_replayed.clone(),
        );
        registry.register(
            "barge_ins",
            "Times a caller interrupted the assistant",
            m.barge_ins.clone(),
        );
        registry.register(
            "upstream_notices",
            "Events from the voice API that the relay only logs: GPT-Live `info` and event types it does not use",
            m.upstream_notices.clone(),
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
        registry.register(
            "fork_frames",
            "Audio frames received on forked calls, by track (inbound: the caller, outbound: the agent)",
            m.fork_frames.clone(),
        );
        registry.register(
            "fork_finals",
            "Final transcript segments stored from forked calls",
            m.fork_finals.clone(),
        );
        registry.register(
            "fork_backend_failures",
            "Fork tracks whose transcription backend failed after its retry (the transcript records a gap); every failed attempt is also in errors_total with kind transcription",
            m.fork_backend_failures.clone(),
        );
        registry.register(
            "tool_calls",
            "Tool calls of the assistant answered, by tool name and outcome",
            m.tool_calls.clone(),
        );
        registry.register(
            "tool_call_duration_seconds",
            "From a tool call of the assistant to its answer",
            m.tool_call_duration.clone(),
        );
        registry.register(
            "cluster_notifications",
            "Notifications between instances over PostgreSQL: sent, received from others, dropped because the sender's queue was full",
            m.cluster_notifications.clone(),
        );
        // Every series exists from start-up, so alerts can be written before the first event.
        for event in ["sent", "received", "dropped"] {
            let _ = m
                .cluster_notifications
                .get_or_create(&Notification { event });
        }
        for backend in ["openai", "deepgram", "whisper"] {
            let _ = m
                .fork_backend_failures
                .get_or_create(&ForkBackend { backend });
        }
        let fork_frames_inbound = m.fork_frames.get_or_create(&FORK_INBOUND).clone();
        let fork_frames_outbound = m.fork_frames.get_or_create(&FORK_OUTBOUND).clone();
        let frames_to_openai = m.frames.get_or_create(&TO_OPENAI).clone();
        let frames_to_twilio = m.frames.get_or_create(&TO_TWILIO).clone();
        let bytes_to_openai = m.bytes.get_or_create(&TO_OPENAI).clone();
        let bytes_to_twilio = m.bytes.get_or_create(&TO_TWILIO).clone();
        Metrics {
            frames_to_openai,
            frames_to_twilio,
            bytes_to_openai,
            bytes_to_twilio,
            fork_frames_inbound,
            fork_frames_outbound,
            registry,
            ..m
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition of every metric (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Every metric in `format`.
    pub fn encode_as(&self, format: Exposition) -> String {
        match format {
            Exposition::OpenMetrics => self.encode(),
            Exposition::Classic => to_classic(&self.encode()),
        }
    }
}

/// The classic text format (0.0.4) of an OpenMetrics exposition: a counter family is declared
/// under the name of its `_total` samples (the classic parser matches `# TYPE` to sample names),
/// and `# UNIT` and `# EOF`, which it does not know, are dropped. Samples are the same lines.
fn to_classic(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    // `# HELP` comes before `# TYPE`, and only `# TYPE` says whether the name needs `_total`.
    let mut help: Option<&str> = None;
    for line in open_metrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "unknown"));
            let suffix = if kind == "counter" { "_total" } else { "" };
            if let Some(help) = help.take() {
                let text = help.split_once(' ').map_or("", |(_, text)| text);
                let _ = writeln!(out, "# HELP {name}{suffix} {text}");
            }
            let _ = writeln!(out, "# TYPE {name}{suffix} {kind}");
        } else if !(line.starts_with("# UNIT ") || line == "# EOF") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
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

    #[test]
    fn the_classic_format_declares_counters_under_their_sample_names() {
        let m = Metrics::default();
        m.calls.inc();
        let text = m.encode_as(Exposition::Classic);
        assert!(
            text.contains("# HELP calls_total Calls accepted since start.\n# TYPE calls_total counter\ncalls_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE calls_active gauge\ncalls_active 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE upstream_connect_seconds histogram\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_only_for_scrapers_that_ask_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            Exposition::negotiate(Some(prometheus)),
            Exposition::OpenMetrics
        );
        for accept in [
            None,
            Some("*/*"),
            Some("text/plain"),
            Some("text/plain, application/openmetrics-text;q=0.5"),
            Some("application/openmetrics-text;q=0"),
        ] {
            assert_eq!(
                Exposition::negotiate(accept),
                Exposition::Classic,
                "{accept:?}"
            );
        }
    }
}
