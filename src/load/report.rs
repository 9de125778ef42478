//! What a load run measured ([`LoadReport`]) and its human-readable table.

use std::fmt::Write as _;

use serde::Serialize;

use super::stats::RttSummary;

/// Everything a load run measured. Serialized as one JSON object by `load --json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// The relay's Media Streams URL.
    pub url: String,
    pub calls_requested: u32,
    /// Calls whose upgrade and greeting succeeded.
    pub calls_connected: u32,
    /// Calls that could not connect (see `errors`).
    pub calls_failed: u32,
    /// Connected calls the relay closed before they sent `stop`.
    pub calls_dropped: u32,
    /// Measured seconds of frames per call (after the warm-up), s.
    pub seconds: f64,
    /// Seconds of frames per call excluded from the round-trip statistics, s.
    pub warmup_seconds: f64,
    /// Seconds over which call starts were spread, s.
    pub ramp_seconds: f64,
    /// Pacing workers (each one timer for its slice of calls).
    pub workers: usize,
    /// Threads of the generator's runtime.
    pub threads: usize,
    /// `media` frames sent (160 bytes = 20 ms each), warm-up included.
    pub frames_sent: u64,
    /// Distinct frames whose echo came back as Twilio `media`.
    pub frames_received: u64,
    /// Frames sent whose echo never came back (within the 2 s drain after the call's last frame).
    pub frames_lost: u64,
    /// Echoes received more than once.
    pub frames_duplicated: u64,
    /// `media` payloads that were not an intact tag of their own call.
    pub frames_corrupt: u64,
    /// Marks received from the relay before `stop`; every one is echoed.
    pub marks_received: u64,
    pub marks_echoed: u64,
    /// Marks that arrived after the call sent `stop` (not echoed).
    pub marks_after_stop: u64,
    /// `clear` commands received (ignored).
    pub clears: u64,
    /// Frames from the relay that are not Twilio commands.
    pub unexpected_messages: u64,
    /// Calls given up because a write failed or stalled for 2 s.
    pub send_failures: u64,
    /// Pacing ticks (one per 2 ms slot per worker).
    pub ticks: u64,
    /// Ticks that fired more than 5 ms behind schedule: the generator (or machine) was overloaded.
    pub late_ticks: u64,
    /// Worst tick lateness, ms.
    pub max_tick_lateness_ms: f64,
    /// Round trip of frames sent after each call's warm-up: generator → relay → stand-in → relay →
    /// generator.
    pub rtt: RttSummary,
    /// The steady-state window over which CPU and memory were sampled, if it was long enough.
    pub window: Option<Window>,
    /// The relay's CPU and memory over the window (`--pid`).
    pub relay: Option<RelayUsage>,
    /// The first distinct connection errors (at most 5).
    pub errors: Vec<String>,
    /// Why a figure is missing or should be read with care.
    pub notes: Vec<String>,
    /// Wall time of the whole run, s.
    pub elapsed_seconds: f64,
}

/// The measured window: every call past its warm-up and none finished.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Window {
    /// Length, s.
    pub seconds: f64,
    /// Calls sending frames at the window's start and end.
    pub calls_at_start: usize,
    pub calls_at_end: usize,
    /// `seconds` × the mean of the two call counts.
    pub call_seconds: f64,
    /// Frame echoes received in the window / 50: the call-seconds of audio that went through.
    /// CPU figures are per delivered call-second; it equals `call_seconds` unless overloaded.
    pub delivered_call_seconds: f64,
    /// The load generator's own CPU per call-second, ms.
    pub generator_cpu_ms_per_call_second: f64,
    /// The stand-in's CPU per call-second, ms (`--stand-in-pid`).
    pub stand_in_cpu_ms_per_call_second: Option<f64>,
    /// Share of all CPUs busy over the window (relay, stand-in, generator and the rest), %.
    pub machine_busy_percent: f64,
}

/// The relay process over the measured window (from `/proc/PID`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayUsage {
    pub pid: u32,
    /// User + system CPU time in the window, s.
    pub cpu_seconds: f64,
    /// CPU time per call-second, ms.
    pub cpu_ms_per_call_second: f64,
    /// Of which kernel (system) time per call-second, ms: the relay's two sends and two receives
    /// per echoed frame, and on loopback the receiving side's TCP processing.
    pub kernel_ms_per_call_second: f64,
    /// `VmRSS` before the first call, KiB.
    pub idle_rss_kib: u64,
    /// `VmRSS` at the end of the window, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (peak RSS) at the end of the window, KiB.
    pub peak_rss_kib: u64,
    /// (`rss_kib` − `idle_rss_kib`) / calls at the end of the window, KiB.
    pub memory_kib_per_call: f64,
}

impl LoadReport {
    /// A human-readable summary, one line per topic.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "load       {} calls × {} s (+{} s warm-up, {} s ramp; {} workers on {} threads) → {}",
            self.calls_requested,
            self.seconds,
            self.warmup_seconds,
            self.ramp_seconds,
            self.workers,
            self.threads,
            self.url
        );
        let _ = writeln!(
            t,
            "calls      connected {}  failed {}  dropped by relay {}  send failures {}",
            self.calls_connected, self.calls_failed, self.calls_dropped, self.send_failures
        );
        let _ = writeln!(
            t,
            "frames     sent {}  received {}  lost {}  duplicated {}  corrupt {}",
            self.frames_sent,
            self.frames_received,
            self.frames_lost,
            self.frames_duplicated,
            self.frames_corrupt
        );
        let _ = writeln!(
            t,
            "marks      received {}  echoed {}  after stop {}  clears {}  unexpected {}",
            self.marks_received,
            self.marks_echoed,
            self.marks_after_stop,
            self.clears,
            self.unexpected_messages
        );
        let _ = writeln!(
            t,
            "pacing     ticks {}  late (> 5 ms) {}  worst lateness {:.3} ms",
            self.ticks, self.late_ticks, self.max_tick_lateness_ms
        );
        let r = &self.rtt;
        let _ = writeln!(
            t,
            "round trip p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ({} frames)",
            r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms, r.samples
        );
        if let Some(w) = &self.window {
            let _ = writeln!(
                t,
                "window     {:.1} s, {}→{} calls, {:.0} call-s ({:.0} delivered); machine busy {:.1} %; generator CPU {:.3} ms per call-second",
                w.seconds,
                w.calls_at_start,
                w.calls_at_end,
                w.call_seconds,
                w.delivered_call_seconds,
                w.machine_busy_percent,
                w.generator_cpu_ms_per_call_second
            );
            if let Some(cpu) = w.stand_in_cpu_ms_per_call_second {
                let _ = writeln!(t, "stand-in   CPU {cpu:.3} ms per call-second");
            }
        }
        if let Some(u) = &self.relay {
            let _ = writeln!(
                t,
                "relay      pid {}: CPU {:.3} ms per call-second ({:.3} in the kernel; {:.2} s); RSS idle {} KiB, loaded {} KiB, peak {} KiB; {:.1} KiB per call above idle",
                u.pid,
                u.cpu_ms_per_call_second,
                u.kernel_ms_per_call_second,
                u.cpu_seconds,
                u.idle_rss_kib,
                u.rss_kib,
                u.peak_rss_kib,
                u.memory_kib_per_call
            );
        }
        for error in &self.errors {
            let _ = writeln!(t, "error      {error}");
        }
        for note in &self.notes {
            let _ = writeln!(t, "note       {note}");
        }
        t
    }
}
