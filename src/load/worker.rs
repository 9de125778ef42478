//! A pacing worker: owns the sending half of a slice of the calls and sends each of them one frame
//! every 20 ms from a single timer.
//!
//! The 20 ms frame period is cut into `SLOTS` slots of 2 ms and each call belongs to one slot,
//! so a worker with 250 calls sends 25 frames every 2 ms instead of 250 at once: real callers are
//! not in phase, and bursts would measure the generator's queueing, not the relay's. Workers are
//! offset from each other by a fraction of a slot. The timer uses [`MissedTickBehavior::Burst`]:
//! Twilio's clock does not slow down when the relay (or this generator) is slow, so missed slots are
//! caught up at once and every call still offers 50 frames/s; each tick that fires more than
//! `LATE_AFTER` behind schedule is counted, so an overloaded generator shows in the report.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::conn::Conn;
use super::tag::{Codec, Tag};
use super::window::Progress;

/// Slots per 20 ms frame period.
pub(super) const SLOTS: usize = 10;
/// One slot: 20 ms / `SLOTS`.
const SLOT: Duration = Duration::from_millis(2);
/// A tick this far behind its schedule is late.
pub(super) const LATE_AFTER: Duration = Duration::from_millis(5);
/// One call's writes may block this long before the call is given up (the relay stopped reading).
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// What every worker is told.
#[derive(Clone)]
pub(super) struct Plan {
    /// The generator's clock origin (frame tags count ns from here).
    pub origin: Instant,
    /// Frames each call sends (warm-up included).
    pub frames: u32,
    /// After its last frame a call waits at most this long for the echoes, then hangs up.
    pub drain: Duration,
    pub codec: Arc<Codec>,
    /// Calls sending frames (all workers), sampled for the measured window.
    pub progress: Arc<Progress>,
}

/// What one worker did.
#[derive(Debug, Default)]
pub(super) struct WorkerStats {
    pub ticks: u64,
    /// Ticks that fired more than `LATE_AFTER` behind schedule.
    pub late_ticks: u64,
    /// Worst tick lateness, µs.
    pub max_late_us: u64,
    pub frames_sent: u64,
    pub marks_echoed: u64,
    /// Calls whose socket failed or stalled while sending.
    pub send_failures: u64,
}

/// The slot of call `call` when calls are dealt to `workers` workers round-robin.
pub(super) fn slot_of(call: u32, workers: usize) -> usize {
    (call as usize / workers.max(1)) % SLOTS
}

/// Runs worker `index` of `workers`: takes new calls from `joins` and paces them until `joins` is
/// closed and every call has hung up.
pub(super) async fn run(
    plan: Plan,
    index: usize,
    workers: usize,
    mut joins: mpsc::UnboundedReceiver<Conn>,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut slots: Vec<Vec<Conn>> = (0..SLOTS).map(|_| Vec::new()).collect();
    let offset = SLOT.mul_f64(index as f64 / workers.max(1) as f64);
    let mut ticker = tokio::time::interval_at(plan.origin + offset, SLOT);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let (mut open, mut live, mut next_slot) = (true, 0usize, 0usize);
    while open || live > 0 {
        tokio::select! {
            biased;
            joined = joins.recv(), if open => match joined {
                Some(conn) => {
                    plan.progress.active.fetch_add(1, Ordering::AcqRel);
                    live += 1;
                    slots[slot_of(conn.call, workers)].push(conn);
                }
                None => open = false,
            },
            scheduled = ticker.tick() => {
                stats.ticks += 1;
                let late = scheduled.elapsed();
                if late > LATE_AFTER {
                    stats.late_ticks += 1;
                }
                stats.max_late_us = stats.max_late_us.max(late.as_micros() as u64);
                let slot = std::mem::take(&mut slots[next_slot]);
                for conn in slot {
                    match service(&plan, conn, &mut stats).await {
                        Some(conn) => slots[next_slot].push(conn),
                        None => live -= 1,
                    }
                }
                next_slot = (next_slot + 1) % SLOTS;
            }
        }
    }
    stats
}

/// One slot's turn for one call: echo its marks and send its next frame, or hang up once every
/// frame is sent and echoed (or the drain time is over). `None` when the call is finished.
async fn service(plan: &Plan, mut conn: Conn, stats: &mut WorkerStats) -> Option<Conn> {
    let sending = conn.drain_deadline.is_none();
    if conn.is_closed() {
        // The reader counts it as dropped.
        if sending {
            plan.progress.active.fetch_sub(1, Ordering::AcqRel);
        }
        return None;
    }
    let result = if sending {
        let marks = conn.shared.take_marks(false);
        stats.marks_echoed += marks.len() as u64;
        let tag = Tag {
            call: conn.call,
            seq: conn.frames_sent,
            sent_ns: plan.origin.elapsed().as_nanos() as u64,
        };
        let before = conn.frames_sent;
        let sent = tokio::time::timeout(
            SEND_TIMEOUT,
            conn.send_frame(marks, Some((&plan.codec, tag))),
        )
        .await;
        stats.frames_sent += u64::from(conn.frames_sent - before);
        if conn.frames_sent >= plan.frames {
            conn.drain_deadline = Some(Instant::now() + plan.drain);
            plan.progress.active.fetch_sub(1, Ordering::AcqRel);
        }
        sent
    } else if conn.all_echoed() || conn.drain_deadline.is_some_and(|d| Instant::now() >= d) {
        let marks = conn.shared.take_marks(true);
        stats.marks_echoed += marks.len() as u64;
        // The relay may close first once it has seen `stop`: failures here are not the relay's.
        let _ = tokio::time::timeout(SEND_TIMEOUT, conn.hang_up(marks)).await;
        return None;
    } else {
        let marks = conn.shared.take_marks(false);
        if marks.is_empty() {
            return Some(conn);
        }
        stats.marks_echoed += marks.len() as u64;
        tokio::time::timeout(SEND_TIMEOUT, conn.send_frame(marks, None)).await
    };
    match result {
        Ok(Ok(())) => Some(conn),
        Ok(Err(_)) | Err(_) => {
            stats.send_failures += 1;
            if conn.drain_deadline.is_none() {
                plan.progress.active.fetch_sub(1, Ordering::AcqRel);
            }
            None
        }
    }
}
