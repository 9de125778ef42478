//! The `demo` subcommand: the whole call path in one process, offline by default.
//!
//! Starts the Realtime stand-in (or uses the real API when `OPENAI_API_KEY` is set), the relay on
//! a free loopback port and a simulated Twilio call with the bundled caller clips; prints the
//! call's transcript and writes what the caller heard to `demo-reply.wav`. With `--tools`, an
//! example tools file and its webhook ([`webhook`]) join in and the stand-in calls the tool, so a
//! whole signed tool call shows offline. With `--outbound` ([`outbound`]) the call is placed
//! through the API instead and the Twilio stand-in ([`crate::fake_twilio`]) connects a simulated
//! callee.

mod outbound;
mod webhook;

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{self, AppState};
use crate::config::Config;
use crate::fake_openai::{FakeOpenAi, FakeOptions, ScriptedCall};
use crate::sim::{self, CallOptions};
use crate::transcript::{EndReason, Transcript};
use crate::wav;

/// Options of `demo`; every `serve` option applies to the relay it starts.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub config: Config,
    /// Caller clips to say (WAV: 8 kHz μ-law or 16-bit PCM); default: the bundled samples.
    #[arg(long = "audio", value_name = "FILE")]
    pub audio: Vec<PathBuf>,
    /// Barge in: start the next clip this many ms after a reply starts playing.
    #[arg(long, value_name = "MS")]
    pub interrupt_after_ms: Option<u64>,
    /// Where to write what the caller heard (8 kHz 16-bit PCM WAV).
    #[arg(long, default_value = "demo-reply.wav")]
    pub out: PathBuf,
    /// Show a tool call: an example tools file and webhook (printed as it is called), and the
    /// stand-in calling `lookup_order` after the first clip.
    #[arg(long)]
    pub tools: bool,
    /// Place an outbound call instead: the Twilio stand-in (`fake-twilio`) takes the relay's
    /// `POST /api/calls`, rings, and connects a simulated callee saying the clips; prints the API
    /// answer, the status callbacks, the transcript and the call record.
    #[arg(long, conflicts_with = "tools")]
    pub outbound: bool,
}

/// The Realtime side: the real API when `OPENAI_API_KEY` is set, otherwise a stand-in that says
/// goodbye the way a model does (`end_call` after the last clip's reply) and makes `tool_calls`;
/// `config` is pointed at it. Keep the stand-in alive for the call.
async fn realtime(
    config: &mut Config,
    audio: &[PathBuf],
    tool_calls: Vec<ScriptedCall>,
) -> anyhow::Result<Option<FakeOpenAi>> {
    let live = config.openai_api == crate::config::VoiceApi::Live;
    if config.openai_configured() {
        println!("Using OpenAI at {}", config.voice_url());
        return Ok(None);
    }
    let clips = if audio.is_empty() {
        sim::bundled::COUNT
    } else {
        audio.len()
    };
    let fake = FakeOpenAi::spawn(FakeOptions {
        end_call_after: u32::try_from(clips).ok(),
        tool_calls,
        ..FakeOptions::default()
    })
    .await?;
    if live {
        println!(
            "No OPENAI_API_KEY: using the local GPT-Live stand-in at {}",
            fake.live_url()
        );
    } else {
        println!(
            "No OPENAI_API_KEY: using the local Realtime stand-in at {}",
            fake.url()
        );
    }
    config.openai_realtime_url = fake.url();
    config.openai_live_url = fake.live_url();
    config.openai_api_key = Some("sk-offline-demo".into());
    Ok(Some(fake))
}

/// Run the demo call; errors if the relay, the stand-in or the call fails, or no reply is heard.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut config = args.config.clone();
    if args.tools {
        let secret = config
            .tools_webhook_secret
            .as_ref()
            .map_or_else(webhook::fresh_secret, |s| s.expose().to_string());
        let url = webhook::serve(&secret).await?;
        let path = webhook::write_tools_file(&config.transcript_dir, &url)?;
        println!(
            "Tools: {} declares {} at {url}",
            path.display(),
            webhook::TOOL
        );
        config.tools_file = Some(path);
        config.tools_webhook_secret = Some(secret.as_str().into());
    }
    if args.outbound {
        return outbound::run(config, &args).await;
    }
    let mut config = config.validate()?;
    let tool_calls = if args.tools {
        vec![ScriptedCall {
            name: webhook::TOOL.into(),
            arguments: webhook::ARGUMENTS.into(),
        }]
    } else {
        Vec::new()
    };
    let _fake = realtime(&mut config, &args.audio, tool_calls).await?;
    let transcript_dir = config.transcript_dir.clone();
    // With TWILIO_AUTH_TOKEN set the relay checks signatures and stream tokens: the simulated
    // call signs like Twilio does, against the URL the relay believes Twilio called.
    let signing = config
        .signing_key()
        .map(|token| (token.expose().to_string(), config.public_url.clone()));

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(config);
    let stop = CancellationToken::new();
    let server = tokio::spawn(app::serve(listener, state, stop.clone().cancelled_owned()));

    let clips = sim::bundled::clips_or(&args.audio)?;
    let mut call = CallOptions::new(format!("ws://{addr}/media-stream"), clips);
    call.interrupt_after_ms = args.interrupt_after_ms;
    if let Some((token, public_url)) = signing {
        call.auth_token = Some(token);
        call.signed_url =
            public_url.map(|base| crate::routes::websocket_url(&format!("{base}/media-stream")));
    }
    call.params = vec![
        ("From".into(), "+15550100001".into()),
        ("To".into(), "+15550100002".into()),
    ];
    println!("Calling the relay at ws://{addr}/media-stream …");
    let report = sim::run(call).await.context("the simulated call failed")?;

    // Shutting the server down waits for the call's tasks, so the transcript is final.
    stop.cancel();
    server.await.context("relay task")??;

    let path = transcript_dir.join(format!("{}.json", report.call_sid));
    let transcript: Transcript = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    println!(
        "\nTranscript ({}, ended: {}):",
        path.display(),
        transcript.end_reason.map_or("-", EndReason::as_str)
    );
    for turn in &transcript.turns {
        let who = turn.role.label();
        let cut = match turn.heard_ms {
            Some(ms) if turn.interrupted => format!("  [interrupted after {ms} ms]"),
            _ => String::new(),
        };
        println!("  {who}: {}{cut}", turn.text);
    }
    println!("\n{}", report.summary());
    if report.heard.is_empty() {
        bail!("the assistant never answered: no audio reached the simulated caller");
    }
    wav::write_pcm16(&args.out, &report.heard)?;
    println!("What the caller heard: {}", args.out.display());
    Ok(())
}
