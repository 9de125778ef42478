//! One load run: start the pacing workers, open the calls over the ramp, sample CPU and memory over
//! the steady-state window, then gather every worker's and reader's counts into a [`LoadReport`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::{self, Conn};
use super::reader::{self, ReaderCtx, ReaderStats};
use super::report::LoadReport;
use super::stats::RttSummary;
use super::tag::Codec;
use super::usage::{self, round3};
use super::window::{sample_window, summarize_window, Progress};
use super::worker::{self, Plan, WorkerStats, LATE_AFTER};
use super::LoadOptions;

/// After the last call hung up, how long the relay gets to close the sockets before readers stop.
const READER_GRACE: Duration = Duration::from_secs(5);
/// Distinct connection errors kept for the report.
const MAX_ERRORS: usize = 5;

/// Runs the load described by `opts` and reports what it measured. Prints nothing.
///
/// The generator runs on its own runtime in its own thread, with `opts.threads` threads (1: a
/// current-thread runtime): the caller's runtime does not set its cost, and one thread avoids the
/// cross-thread wake-ups a multi-thread runtime pays for every frame.
///
/// # Errors
/// Invalid options, an unreadable `/proc/PID` for `--pid` at the start, a runtime that cannot be
/// started, or a panicked worker. Calls that fail to connect are counted in the report, not errors.
pub async fn run(opts: LoadOptions) -> anyhow::Result<LoadReport> {
    opts.validate()?;
    let (done, result) = tokio::sync::oneshot::channel();
    let threads = opts.threads;
    std::thread::Builder::new()
        .name("load-generator".into())
        .spawn(move || {
            let mut builder = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                tokio::runtime::Builder::new_multi_thread()
            };
            if threads > 1 {
                builder.worker_threads(threads);
            }
            let report = match builder.enable_all().build() {
                Ok(runtime) => runtime.block_on(generate(opts)),
                Err(e) => Err(e).context("starting the generator's runtime"),
            };
            let _ = done.send(report);
        })
        .context("starting the generator thread")?;
    result.await.context("the generator thread panicked")?
}

/// [`run`], on the current runtime.
async fn generate(opts: LoadOptions) -> anyhow::Result<LoadReport> {
    let hz = usage::clock_ticks_per_second();
    let idle = match opts.pid {
        Some(pid) => Some(
            usage::sample_process(&pid.to_string()).context("reading the relay's /proc (--pid)")?,
        ),
        None => None,
    };
    let frames = frames_in(opts.warmup + opts.seconds);
    let warmup_frames = frames_in(opts.warmup);
    let origin = Instant::now();
    let codec = Arc::new(Codec::new());
    let progress = Arc::new(Progress::default());
    let plan = Plan {
        origin,
        frames,
        drain: opts.drain,
        codec: codec.clone(),
        progress: progress.clone(),
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
    let sampler = tokio::spawn(sample_window(opts.clone(), origin, progress.clone()));

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
            progress: progress.clone(),
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
        threads: opts.threads,
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
            "{} pacing ticks fired more than {} ms late: the generator was starved of CPU (it, or the machine, was overloaded), so round trips include its own delay",
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
