//! One load run: start the pacing workers, open the calls over the ramp, sample CPU and memory over
//! the steady-state window, then gather every worker's and reader's counts into a [`LoadReport`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::{self, Conn};
use super::reader::{self, ReaderCtx, ReaderStats};
use super::report::{LoadReport, RelayUsage, Window};
use super::stats::RttSummary;
use super::tag::Codec;
use super::usage::{self, cpu_ms_per_call_second, round3, MachineSample, ProcSample};
use super::worker::{self, Plan, WorkerStats, LATE_AFTER};
use super::LoadOptions;

/// After the last call hung up, how long the relay gets to close the sockets before readers stop.
const READER_GRACE: Duration = Duration::from_secs(5);
/// The window starts this long after the last call's warm-up should have ended (connect time).
const WINDOW_MARGIN: Duration = Duration::from_millis(500);
/// Shorter windows give CPU figures too coarse (10 ms ticks) to report.
const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Distinct connection errors kept for the report.
const MAX_ERRORS: usize = 5;

/// Runs the load described by `opts` and reports what it measured. Prints nothing.
///
/// # Errors
/// Invalid options, an unreadable `/proc/PID` for `--pid` at the start, or a panicked worker.
/// Calls that fail to connect are counted in the report, not errors.
pub async fn run(opts: LoadOptions) -> anyhow::Result<LoadReport> {
    opts.validate()?;
    let hz = usage::clock_ticks_per_second();
    let pid = opts.pid.map(|p| p.to_string());
    let idle = match &pid {
        Some(pid) => Some(usage::sample_process(pid).context("reading the relay's /proc (--pid)")?),
        None => None,
    };
    let frames = frames_in(opts.warmup + opts.seconds);
    let warmup_frames = frames_in(opts.warmup);
    let origin = Instant::now();
    let codec = Arc::new(Codec::new());
    let active = Arc::new(AtomicUsize::new(0));
    let plan = Plan {
        origin,
        frames,
        drain: opts.drain,
        codec: codec.clone(),
        active: active.clone(),
    };
    let mut senders = Vec::with_capacity(opts.workers);
    let mut workers = Vec::with_capacity(opts.workers);
    for index in 0..opts.workers {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        workers.push(tokio::spawn(worker::run(
            plan.clone(),
            index,
            opts.workers,
            rx,
        )));
    }
    let sampler = tokio::spawn(sample_window(opts.clone(), origin, pid.clone(), active));

    let stop_readers = CancellationToken::new();
    let ramp = Duration::from_secs_f64(opts.ramp);
    let mut connects = Vec::with_capacity(opts.calls as usize);
    for call in 0..opts.calls {
        tokio::time::sleep_until(origin + ramp.mul_f64(f64::from(call) / f64::from(opts.calls)))
            .await;
        let ctx = ReaderCtx {
            call,
            frames,
            warmup_frames,
            origin,
            codec: codec.clone(),
        };
        let to_worker = senders[call as usize % opts.workers].clone();
        let url = opts.url.clone();
        connects.push(tokio::spawn(connect(
            url,
            ctx,
            to_worker,
            stop_readers.clone(),
        )));
    }
    drop(senders);

    let mut report = LoadReport {
        url: opts.url.clone(),
        calls_requested: opts.calls,
        seconds: opts.seconds,
        warmup_seconds: opts.warmup,
        ramp_seconds: opts.ramp,
        workers: opts.workers,
        ..LoadReport::default()
    };
    let mut errors: Vec<(String, u32)> = Vec::new();
    let mut readers = Vec::with_capacity(connects.len());
    for connect in connects {
        match connect.await.context("a connecting task panicked")? {
            Ok(reader) => readers.push(reader),
            Err(error) => {
                report.calls_failed += 1;
                note_error(&mut errors, format!("{error:#}"));
            }
        }
    }
    report.calls_connected = readers.len() as u32;
    for worker in workers {
        add_worker(
            &mut report,
            worker.await.context("a pacing worker panicked")?,
        );
    }
    let window = if sampler.is_finished() {
        sampler.await.context("the sampler panicked")?
    } else {
        sampler.abort();
        Err("the calls ended before the measured window did".to_string())
    };

    let cancel_at = Instant::now() + READER_GRACE;
    let stopper = stop_readers.clone();
    let grace = tokio::spawn(async move {
        tokio::time::sleep_until(cancel_at).await;
        stopper.cancel();
    });
    let mut rtt_us = Vec::new();
    for reader in readers {
        let mut stats = reader.await.context("a reader panicked")?;
        rtt_us.append(&mut stats.rtt_us);
        add_reader(&mut report, &stats);
    }
    grace.abort();
    report.frames_lost = report.frames_sent.saturating_sub(report.frames_received);
    report.rtt = RttSummary::from_micros(&mut rtt_us);
    report.errors = errors
        .into_iter()
        .map(|(e, n)| format!("{n}× {e}"))
        .collect();
    match window {
        Ok((start, end)) => summarize_window(&mut report, opts.pid.zip(idle), &start, &end, hz),
        Err(note) => report.notes.push(note),
    }
    if report.late_ticks > 0 {
        report.notes.push(format!(
            "{} pacing ticks fired more than {} ms late: the generator was short of CPU, so round trips include its own delay",
            report.late_ticks,
            LATE_AFTER.as_millis()
        ));
    }
    report.elapsed_seconds = round3(origin.elapsed().as_secs_f64());
    Ok(report)
}

/// 20 ms frames in `seconds`, rounded.
fn frames_in(seconds: f64) -> u32 {
    (seconds * 50.0).round() as u32
}

/// Opens one call, starts its reader and hands the sending half to its worker.
async fn connect(
    url: String,
    ctx: ReaderCtx,
    to_worker: mpsc::UnboundedSender<Conn>,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<ReaderStats>> {
    let (conn, stream) = conn::open(&url, ctx.call).await?;
    let reader = tokio::spawn(reader::read(stream, ctx, conn.shared.clone(), stop));
    // The workers outlive every connecting task (they hold the receivers until all senders drop).
    let _ = to_worker.send(conn);
    Ok(reader)
}

fn note_error(errors: &mut Vec<(String, u32)>, error: String) {
    if let Some((_, n)) = errors.iter_mut().find(|(e, _)| *e == error) {
        *n += 1;
    } else if errors.len() < MAX_ERRORS {
        errors.push((error, 1));
    }
}

fn add_worker(report: &mut LoadReport, w: WorkerStats) {
    report.ticks += w.ticks;
    report.late_ticks += w.late_ticks;
    report.max_tick_lateness_ms = report
        .max_tick_lateness_ms
        .max(w.max_late_us as f64 / 1000.0);
    report.frames_sent += w.frames_sent;
    report.marks_echoed += w.marks_echoed;
    report.send_failures += w.send_failures;
}

fn add_reader(report: &mut LoadReport, r: &ReaderStats) {
    report.frames_received += r.received;
    report.frames_duplicated += r.duplicates;
    report.frames_corrupt += r.corrupt;
    report.marks_received += r.marks;
    report.marks_after_stop += r.marks_after_stop;
    report.clears += r.clears;
    report.unexpected_messages += r.unexpected;
    report.calls_dropped += u32::from(r.dropped);
}

/// Readings at one edge of the measured window.
struct Edge {
    at: Instant,
    calls: usize,
    relay: Option<ProcSample>,
    me: ProcSample,
    machine: MachineSample,
}

impl Edge {
    fn take(pid: Option<&str>, active: &AtomicUsize) -> Result<Edge, String> {
        let relay = match pid {
            Some(pid) => {
                Some(usage::sample_process(pid).map_err(|e| format!("relay not sampled: {e:#}"))?)
            }
            None => None,
        };
        Ok(Edge {
            at: Instant::now(),
            calls: active.load(Ordering::Acquire),
            relay,
            me: usage::sample_process("self").map_err(|e| format!("{e:#}"))?,
            machine: usage::sample_machine().map_err(|e| format!("{e:#}"))?,
        })
    }
}

/// Samples at the window's two edges: from the end of the last call's warm-up (plus a margin for
/// connecting) to the end of the first call's measured seconds. `Err` says why there is no window.
async fn sample_window(
    opts: LoadOptions,
    origin: Instant,
    pid: Option<String>,
    active: Arc<AtomicUsize>,
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
    let first = Edge::take(pid.as_deref(), &active)?;
    tokio::time::sleep_until(end).await;
    let last = Edge::take(pid.as_deref(), &active)?;
    Ok((first, last))
}

fn summarize_window(
    report: &mut LoadReport,
    idle: Option<(u32, ProcSample)>,
    start: &Edge,
    end: &Edge,
    hz: u64,
) {
    let seconds = (end.at - start.at).as_secs_f64();
    let call_seconds = seconds * (start.calls + end.calls) as f64 / 2.0;
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
        generator_cpu_ms_per_call_second: cpu_ms_per_call_second(
            end.me.cpu_ticks.saturating_sub(start.me.cpu_ticks),
            hz,
            call_seconds,
        ),
        machine_busy_percent: round3(100.0 * machine_busy as f64 / machine_total.max(1) as f64),
    });
    if start.calls as u32 != report.calls_requested || end.calls != start.calls {
        report.notes.push(format!(
            "{} of {} calls were sending at the window's start and {} at its end",
            start.calls, report.calls_requested, end.calls
        ));
    }
    if let (Some((pid, idle)), Some(first), Some(last)) = (idle, start.relay, end.relay) {
        let ticks = last.cpu_ticks.saturating_sub(first.cpu_ticks);
        let above_idle = last.rss_kib as f64 - idle.rss_kib as f64;
        report.relay = Some(RelayUsage {
            pid,
            cpu_seconds: round3(ticks as f64 / hz as f64),
            cpu_ms_per_call_second: cpu_ms_per_call_second(ticks, hz, call_seconds),
            idle_rss_kib: idle.rss_kib,
            rss_kib: last.rss_kib,
            peak_rss_kib: last.hwm_kib,
            memory_kib_per_call: (above_idle / end.calls.max(1) as f64 * 10.0).round() / 10.0,
        });
    }
}
