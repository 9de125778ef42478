//! The `call` subcommand: a Twilio Media Streams simulator that calls the relay like a phone would.
//!
//! It plays Twilio's side of a bidirectional `<Connect><Stream>` (`PROTOCOLS.md` § "Twilio Media
//! Streams"): 20 ms μ-law frames in real time, caller clips separated by silence, the relay's audio
//! buffered and played on a 20 ms clock, marks echoed as their audio finishes and `clear` honoured.
//! With `--fork` it plays a one-way `<Start><Stream>` fork of a call between two people instead.
//!
//! - [`bundled`]: the caller clips compiled into the binary.
//! - [`call`]: the session ([`run`], [`CallOptions`]).
//! - [`fork`]: fork mode: per-track frames, caller and agent clips alternating, no replies.
//! - `outbox`: typed outgoing events with Twilio's numbering.
//! - `playback`: the playback buffer and mark bookkeeping.
//! - `script`: when each clip starts and when to hang up.
//! - [`report`]: what the call observed ([`CallReport`]).

pub mod bundled;
pub mod call;
pub mod fork;
mod outbox;
mod playback;
pub mod report;
mod script;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use call::{run, CallOptions};
pub use fork::ForkTracks;
pub use report::CallReport;

/// Flags of the `call` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct CallArgs {
    /// Relay WebSocket URL [default: ws://127.0.0.1:8080/media-stream, or
    /// ws://127.0.0.1:8080/transcription-stream with --fork].
    pub url: Option<String>,
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
    /// Act as a one-way `<Start><Stream>` fork of a call between two people (no replies expected;
    /// any message from the relay is reported as unexpected).
    #[arg(long)]
    pub fork: bool,
    /// Fork mode: which tracks to send. The caller (--audio) speaks on inbound, the agent
    /// (--agent-audio) on outbound; with `outbound` and no --agent-audio, --audio plays there.
    #[arg(long, value_enum, requires = "fork", default_value_t = ForkTracks::Both)]
    pub track: ForkTracks,
    /// Fork mode: a clip of the other party, played on the outbound track after each caller
    /// clip; repeat for several turns.
    #[arg(long = "agent-audio", value_name = "FILE", requires = "fork")]
    pub agent_audio: Vec<PathBuf>,
    /// Twilio auth token of a relay that checks signatures: the upgrade is signed and the
    /// `start` carries a stream token for the call, as real Twilio's would.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// With --auth-token: the URL to sign, when the relay's PUBLIC_URL differs from the URL
    /// connected to (e.g. wss://relay.example.com/media-stream).
    #[arg(long, value_name = "URL", requires = "auth_token")]
    pub signed_url: Option<String>,
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
    let read = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|path| crate::wav::read_ulaw(path))
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let mut clips = read(&args.audio)?;
    let mut agent_clips = read(&args.agent_audio)?;
    if args.fork && args.track == ForkTracks::Outbound && agent_clips.is_empty() {
        agent_clips = std::mem::take(&mut clips);
    }
    let path = if args.fork {
        "/transcription-stream"
    } else {
        "/media-stream"
    };
    let url = args
        .url
        .unwrap_or_else(|| format!("ws://127.0.0.1:8080{path}"));
    let mut opts = CallOptions::new(url, clips);
    opts.fork = args.fork.then_some(args.track);
    opts.agent_clips = agent_clips;
    opts.params = args.params;
    opts.interrupt_after_ms = args.interrupt_after_ms;
    opts.reply_timeout_ms = args.reply_timeout_ms;
    opts.max_call_ms = args.max_call_secs.saturating_mul(1000);
    opts.auth_token = args.auth_token.filter(|t| !t.trim().is_empty());
    opts.signed_url = args.signed_url;
    let report = run(opts).await?;
    print!("{}", report.summary());
    if let Some(path) = &args.out {
        crate::wav::write_pcm16(path, &report.heard)?;
        println!("heard audio written to {}", path.display());
    }
    Ok(())
}
