//! The steady-state window of a load run: `/proc` readings of the relay, the stand-in, the
//! generator and the machine at its two edges, turned into CPU per call-second and memory per call.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::report::{LoadReport, RelayUsage, Window};
use super::usage::{self, cpu_ms_per_call_second, round3, MachineSample, ProcSample};
use super::LoadOptions;

/// The window starts this long after the last call's warm-up should have ended (connect time).
const WINDOW_MARGIN: Duration = Duration::from_millis(500);
/// Shorter windows give CPU figures too coarse (10 ms ticks) to report.
const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Below this share of the nominal 50 frames/s per call, the report says the load fell behind.
const BEHIND_RATIO: f64 = 0.95;
/// Frames per second of one call (one per 20 ms).
const FRAMES_PER_SECOND: f64 = 50.0;

/// Live counters the window samples, shared with the workers and readers.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Calls sending frames now.
    pub active: AtomicUsize,
    /// Distinct frame echoes received so far, all calls.
    pub echoed: AtomicU64,
}

/// Readings at one edge of the measured window.
pub(super) struct Edge {
    at: Instant,
    calls: usize,
    echoed: u64,
    relay: Option<ProcSample>,
    stand_in: Option<ProcSample>,
    me: ProcSample,
    machine: MachineSample,
}

impl Edge {
    fn take(opts: &LoadOptions, progress: &Progress) -> Result<Edge, String> {
        let sample = |pid: Option<u32>, what: &str| match pid {
            Some(pid) => usage::sample_process(&pid.to_string())
                .map(Some)
                .map_err(|e| format!("{what} not sampled: {e:#}")),
            None => Ok(None),
        };
        Ok(Edge {
            at: Instant::now(),
            calls: progress.active.load(Ordering::Acquire),
            echoed: progress.echoed.load(Ordering::Acquire),
            relay: sample(opts.pid, "relay")?,
            stand_in: sample(opts.stand_in_pid, "stand-in")?,
            me: usage::sample_process("self").map_err(|e| format!("{e:#}"))?,
            machine: usage::sample_machine().map_err(|e| format!("{e:#}"))?,
        })
    }
}

/// Samples at the window's two edges: from the end of the last call's warm-up (plus a margin for
/// connecting) to the end of the first call's measured seconds. `Err` says why there is no window.
pub(super) async fn sample_window(
    opts: LoadOptions,
    origin: Instant,
    progress: Arc<Progress>,
) -> Result<(Edge, Edge), String> {
    let secs = Duration::from_secs_f64;
    let start = origin + secs(opts.ramp + opts.warmup) + WINDOW_MARGIN;
    let end = origin + secs(opts.warmup + opts.seconds);
    if end < start + MIN_WINDOW {
        return Err(format!(
            "no CPU/memory window: --seconds must exceed --ramp + {:.1} s",
            (WINDOW_MARGIN + MIN_WINDOW).as_secs_f64()
        ));
    }
    tokio::time::sleep_until(start).await;
    let first = Edge::take(&opts, &progress)?;
    tokio::time::sleep_until(end).await;
    let last = Edge::take(&opts, &progress)?;
    Ok((first, last))
}

/// Fills `report.window` and `report.relay` from the two edges; `idle` is the relay's pid and its
/// reading before the first call.
pub(super) fn summarize_window(
    report: &mut LoadReport,
    idle: Option<(u32, ProcSample)>,
    start: &Edge,
    end: &Edge,
    hz: u64,
) {
    let seconds = (end.at - start.at).as_secs_f64();
    let call_seconds = seconds * (start.calls + end.calls) as f64 / 2.0;
    // CPU is normalized by the audio that actually went through: an overloaded machine pushes
    // fewer than 50 frames/s per call, and nominal call-seconds would flatter the relay.
    let delivered = end.echoed.saturating_sub(start.echoed) as f64 / FRAMES_PER_SECOND;
    let machine_total = end
        .machine
        .total_ticks
        .saturating_sub(start.machine.total_ticks);
    let machine_busy = end
        .machine
        .busy_ticks
        .saturating_sub(start.machine.busy_ticks);
    report.window = Some(Window {
        seconds: round3(seconds),
        calls_at_start: start.calls,
        calls_at_end: end.calls,
        call_seconds: round3(call_seconds),
        delivered_call_seconds: round3(delivered),
        generator_cpu_ms_per_call_second: cpu_ms_per_call_second(
            end.me.cpu_ticks.saturating_sub(start.me.cpu_ticks),
            hz,
            delivered,
        ),
        stand_in_cpu_ms_per_call_second: match (start.stand_in, end.stand_in) {
            (Some(a), Some(b)) => Some(cpu_ms_per_call_second(
                b.cpu_ticks.saturating_sub(a.cpu_ticks),
                hz,
                delivered,
            )),
            _ => None,
        },
        machine_busy_percent: round3(100.0 * machine_busy as f64 / machine_total.max(1) as f64),
    });
    if start.calls as u32 != report.calls_requested || end.calls != start.calls {
        report.notes.push(format!(
            "{} of {} calls were sending at the window's start and {} at its end",
            start.calls, report.calls_requested, end.calls
        ));
    }
    if delivered < BEHIND_RATIO * call_seconds {
        report.notes.push(format!(
            "the load fell behind: {:.0} % of the nominal 50 frames/s per call came back in the window; CPU figures are per call-second delivered",
            100.0 * delivered / call_seconds.max(f64::MIN_POSITIVE)
        ));
    }
    if let (Some((pid, idle)), Some(first), Some(last)) = (idle, start.relay, end.relay) {
        let ticks = last.cpu_ticks.saturating_sub(first.cpu_ticks);
        let above_idle = last.rss_kib as f64 - idle.rss_kib as f64;
        report.relay = Some(RelayUsage {
            pid,
            cpu_seconds: round3(ticks as f64 / hz as f64),
            cpu_ms_per_call_second: cpu_ms_per_call_second(ticks, hz, delivered),
            kernel_ms_per_call_second: cpu_ms_per_call_second(
                last.system_ticks.saturating_sub(first.system_ticks),
                hz,
                delivered,
            ),
            idle_rss_kib: idle.rss_kib,
            rss_kib: last.rss_kib,
            peak_rss_kib: last.hwm_kib,
            memory_kib_per_call: (above_idle / end.calls.max(1) as f64 * 10.0).round() / 10.0,
        });
    }
}
