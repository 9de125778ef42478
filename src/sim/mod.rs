//! The `call` subcommand: a Twilio Media Streams simulator that calls the relay like a phone would.
//!
//! It plays Twilio's side of a bidirectional `<Connect><Stream>` (`PROTOCOLS.md` § "Twilio Media
//! Streams"): 20 ms μ-law frames in real time, caller clips separated by silence, the relay's audio
//! buffered and played on a 20 ms clock, marks echoed as their audio finishes and `clear` honoured.
//!
//! - [`call`]: the session ([`run`], [`CallOptions`]).
//! - `outbox`: typed outgoing events with Twilio's numbering.
//! - `playback`: the playback buffer and mark bookkeeping.
//! - `script`: when each clip starts and when to hang up.
//! - [`report`]: what the call observed ([`CallReport`]).

pub mod call;
mod outbox;
mod playback;
pub mod report;
mod script;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use call::{run, CallOptions};
pub use report::CallReport;

/// Flags of the `call` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct CallArgs {
    /// Relay Media Streams WebSocket URL.
    #[arg(default_value = "ws://127.0.0.1:8080/media-stream")]
    pub url: String,
    /// Caller clip (8 kHz μ-law WAV, or 16-bit PCM WAV at any rate); repeat for several turns.
    #[arg(long = "audio", value_name = "FILE", required = true)]
    pub audio: Vec<PathBuf>,
    /// Write what the caller heard to this WAV file (8 kHz mono 16-bit PCM).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// A `start.customParameters` entry, as a TwiML `<Parameter>`; repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Barge in: start the next clip this many ms after the reply started playing.
    #[arg(long, value_name = "MS")]
    pub interrupt_after_ms: Option<u64>,
    /// Move on when no reply starts this many ms after a clip ended.
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    pub reply_timeout_ms: u64,
    /// Hang up after this many seconds whatever happens.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub max_call_secs: u64,
}

fn parse_param(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {raw:?}")),
    }
}

/// Runs the `call` subcommand: reads the clips, places the call, prints [`CallReport::summary`]
/// to stdout and writes `--out`.
///
/// # Errors
/// When a clip cannot be read, the relay cannot be reached, or `--out` cannot be written.
pub async fn main(args: CallArgs) -> anyhow::Result<()> {
    let clips = args
        .audio
        .iter()
        .map(|path| crate::wav::read_ulaw(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut opts = CallOptions::new(args.url, clips);
    opts.params = args.params;
    opts.interrupt_after_ms = args.interrupt_after_ms;
    opts.reply_timeout_ms = args.reply_timeout_ms;
    opts.max_call_ms = args.max_call_secs.saturating_mul(1000);
    let report = run(opts).await?;
    print!("{}", report.summary());
    if let Some(path) = &args.out {
        crate::wav::write_pcm16(path, &report.heard)?;
        println!("heard audio written to {}", path.display());
    }
    Ok(())
}
