//! Process-wide counters behind `/health`: lock-free atomics, one increment per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Counters shared by every call. Cheap to clone (an `Arc`).
#[derive(Debug, Clone)]
pub struct Stats(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    started: Instant,
    active: AtomicU64,
    total: AtomicU64,
    errors: AtomicU64,
    rejected: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats(Arc::new(Inner {
            started: Instant::now(),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }))
    }
}

impl Stats {
    /// Count a new call; the returned guard decrements `active` when dropped, however the call ends.
    pub fn call_started(&self) -> ActiveCall {
        self.0.active.fetch_add(1, Ordering::Relaxed);
        self.0.total.fetch_add(1, Ordering::Relaxed);
        ActiveCall(self.clone())
    }

    /// Count one error: malformed input, an upstream failure, a failed write.
    pub fn error(&self) {
        self.0.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a call turned away (busy or shutting down).
    pub fn rejected(&self) {
        self.0.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls turned away since start.
    pub fn rejected_total(&self) -> u64 {
        self.0.rejected.load(Ordering::Relaxed)
    }

    /// Calls in progress.
    pub fn active(&self) -> u64 {
        self.0.active.load(Ordering::Relaxed)
    }

    /// Calls since start.
    pub fn total(&self) -> u64 {
        self.0.total.load(Ordering::Relaxed)
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
        self.0 .0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
