//! The `load` subcommand: many simulated Twilio calls at once with frame-tagged audio, measuring the
//! relay's round trip, frame loss, CPU and memory (the method of Twilio's Node.js sample benchmark).
//!
//! Each call plays Twilio's side of a bidirectional `<Connect><Stream>` (`PROTOCOLS.md` § "Twilio
//! Media Streams"): `connected`, `start` with fresh SIDs, a 160-byte μ-law `media` frame every 20 ms,
//! mark echoes, `stop`. Every frame carries a tag (call, sequence, send time; see [`tag`]); with the
//! stand-in in `echo-frames` mode the same bytes come back as Twilio `media`, and the tag gives the
//! round trip. The generator shares the machine with the relay, so it is built to be cheap: a few
//! pacing workers with one timer each (`worker`), one light reader task per call that decodes
//! only the 32 base64 characters of the tag, samples kept as `u32` µs.
//!
//! - `run`: one load run ([`run`]).
//! - `window`: the steady-state window: CPU per call-second, memory per call.
//! - `worker`: pacing: 2 ms slots, late-tick counting, drain and hang-up.
//! - `conn`: connecting and the typed frames a call sends.
//! - `reader`: what comes back: tags, marks, `clear`.
//! - [`tag`]: the frame tag layout.
//! - [`stats`]: round-trip percentiles.
//! - [`usage`]: `/proc` CPU and memory readings.
//! - [`report`]: [`LoadReport`] and its table.

mod conn;
mod reader;
pub mod report;
mod run;
pub mod stats;
pub mod tag;
pub mod usage;
mod window;
mod worker;

#[cfg(test)]
mod tests;

use std::time::Duration;

use anyhow::ensure;

pub use report::{LoadReport, RelayUsage, Window};
pub use run::run;
pub use stats::RttSummary;

/// Flags of the `load` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Relay Media Streams WebSocket URL.
    #[arg(default_value = "ws://127.0.0.1:8080/media-stream")]
    pub url: String,
    /// Concurrent simulated calls.
    #[arg(long, default_value_t = 100)]
    pub calls: u32,
    /// Measured seconds of audio per call (after the warm-up), s.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Spread the call starts over this many seconds, s.
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// Seconds at the start of each call left out of the statistics, s.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// The relay's process id: report its CPU per call-second and memory per call (Linux `/proc`).
    #[arg(long)]
    pub pid: Option<u32>,
    /// The stand-in's process id: report its CPU per call-second too (it shares the machine).
    #[arg(long)]
    pub stand_in_pid: Option<u32>,
    /// Pacing workers (one 2 ms timer each, calls dealt round-robin).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Threads of the generator's runtime (1: a current-thread runtime, the cheapest).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What to run; see [`LoadArgs`] for each field's meaning.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `ws://` or `wss://` Media Streams URL of the relay.
    pub url: String,
    /// Concurrent calls, ≥ 1.
    pub calls: u32,
    /// Measured seconds per call, s, > 0.
    pub seconds: f64,
    /// Seconds over which call starts are spread, s.
    pub ramp: f64,
    /// Seconds per call excluded from the round-trip statistics, s.
    pub warmup: f64,
    /// Relay process to sample from `/proc`.
    pub pid: Option<u32>,
    /// Stand-in process to sample from `/proc` (CPU only).
    pub stand_in_pid: Option<u32>,
    /// Pacing workers, ≥ 1.
    pub workers: usize,
    /// Generator runtime threads, ≥ 1.
    pub threads: usize,
    /// After a call's last frame, how long its echoes may take before the rest count as lost.
    pub drain: Duration,
}

impl LoadOptions {
    /// `calls` calls of `seconds` s to `url`: no ramp, no warm-up, no `--pid`, 2 workers on 1
    /// thread, 2 s drain.
    pub fn new(url: impl Into<String>, calls: u32, seconds: f64) -> Self {
        LoadOptions {
            url: url.into(),
            calls,
            seconds,
            ramp: 0.0,
            warmup: 0.0,
            pid: None,
            stand_in_pid: None,
            workers: 2,
            threads: 1,
            drain: Duration::from_secs(2),
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.calls >= 1, "--calls must be at least 1");
        ensure!(self.workers >= 1, "--workers must be at least 1");
        ensure!(self.threads >= 1, "--threads must be at least 1");
        ensure!(
            self.seconds.is_finite() && self.seconds > 0.0,
            "--seconds must be a positive number"
        );
        for (name, value) in [("--ramp", self.ramp), ("--warmup", self.warmup)] {
            ensure!(
                value.is_finite() && value >= 0.0,
                "{name} must be a number ≥ 0"
            );
        }
        ensure!(
            self.seconds + self.warmup <= 86_400.0,
            "--seconds + --warmup must stay under a day"
        );
        Ok(())
    }
}

impl From<LoadArgs> for LoadOptions {
    fn from(args: LoadArgs) -> Self {
        LoadOptions {
            ramp: args.ramp,
            warmup: args.warmup,
            pid: args.pid,
            stand_in_pid: args.stand_in_pid,
            workers: args.workers,
            threads: args.threads,
            ..LoadOptions::new(args.url, args.calls, args.seconds)
        }
    }
}

/// Runs the `load` subcommand and prints the report to stdout: a table, or with `--json` one JSON
/// object ([`LoadReport`]).
///
/// # Errors
/// As [`run`].
pub async fn main(args: LoadArgs) -> anyhow::Result<()> {
    let json = args.json;
    let report = run(args.into()).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
