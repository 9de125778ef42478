//! `twilio-realtime-relay`: parse the command line, set up tracing, dispatch the subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use twilio_realtime_relay::config::{Config, LogFormat};
use twilio_realtime_relay::{app, demo, fake_openai, load, sim, telemetry};

/// Puts an OpenAI Realtime voice assistant on a Twilio phone number.
#[derive(Parser)]
#[command(
    name = "twilio-realtime-relay",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: `serve` with these options.
    #[command(flatten)]
    serve: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay server (the default).
    Serve(Config),
    /// Simulate a Twilio call against a relay's /media-stream (or a fork into /transcription-stream with --fork).
    Call(sim::CallArgs),
    /// Run a local stand-in for the OpenAI Realtime API.
    FakeOpenai(fake_openai::FakeOpenAiArgs),
    /// Load test: many simulated calls with frame-tagged audio; round trip, loss, CPU and memory.
    Load(load::LoadArgs),
    /// Stand-in + relay + a simulated call in one process; prints the transcript.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    // A missing .env is normal; a broken one must not be half-applied in silence.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("error: .env: {e} (quote values that contain spaces)");
            return ExitCode::FAILURE;
        }
    }
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    let serve_config = match &cli.command {
        None => Some(&cli.serve),
        Some(Command::Serve(config)) => Some(config),
        Some(_) => None,
    };
    // Out-of-range values are left to `Config::validate`, which names the variable.
    if let Some(n) = serve_config.and_then(|c| c.worker_threads) {
        if (1..=256).contains(&n) {
            runtime.worker_threads(n);
        }
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            None => serve(cli.serve).await,
            Some(Command::Serve(config)) => serve(config).await,
            Some(Command::Call(args)) => {
                telemetry::init(LogFormat::Text);
                sim::main(args).await
            }
            Some(Command::FakeOpenai(args)) => {
                telemetry::init(LogFormat::Text);
                fake_openai::main(args).await
            }
            // The generator logs nothing per call: stderr stays for its report.
            Some(Command::Load(args)) => load::main(args).await,
            Some(Command::Demo(args)) => {
                telemetry::init(args.config.log_format);
                demo::run(args).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::init(config.log_format);
    app::run_server(config).await
}
