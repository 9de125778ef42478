//! `twilio-realtime-relay`: parse the command line, set up tracing, dispatch the subcommand.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use twilio_realtime_relay::config::{Config, LogFormat};
use twilio_realtime_relay::envfile::{self, EnvFile};
use twilio_realtime_relay::{app, demo, fake_openai, fake_twilio, load, sim, store, telemetry};

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
    /// Run a local stand-in for Twilio's REST API that places calls with a simulated callee.
    FakeTwilio(fake_twilio::FakeTwilioArgs),
    /// Load test: many simulated calls with frame-tagged audio; round trip, loss, CPU and memory.
    Load(load::LoadArgs),
    /// Stand-in + relay + a simulated call in one process; prints the transcript.
    Demo(demo::DemoArgs),
    /// Load an earlier version's JSON transcripts and call records (a TRANSCRIPT_DIR) into the store, once.
    Import(store::import::ImportArgs),
}

fn main() -> ExitCode {
    // Before any thread exists (it sets environment variables). A missing .env is normal; a
    // broken one is not half-applied; empty values are unset.
    let env_file = match envfile::load(&envfile::known_names(&Cli::command())) {
        Ok(env_file) => env_file,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
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
            None => serve(cli.serve, &env_file).await,
            Some(Command::Serve(config)) => serve(config, &env_file).await,
            Some(Command::Call(args)) => {
                init_logs(LogFormat::Text, &env_file);
                sim::main(args).await
            }
            Some(Command::FakeOpenai(args)) => {
                init_logs(LogFormat::Text, &env_file);
                fake_openai::main(args).await
            }
            Some(Command::FakeTwilio(args)) => {
                init_logs(LogFormat::Text, &env_file);
                fake_twilio::main(args).await
            }
            // The generator logs nothing per call: stderr stays for its report.
            Some(Command::Load(args)) => load::main(args).await,
            Some(Command::Import(args)) => {
                init_logs(LogFormat::Text, &env_file);
                store::import::main(args).await
            }
            Some(Command::Demo(args)) => {
                init_logs(args.config.log_format, &env_file);
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

/// Set up tracing, then say which `.env` names looked like typos of ours.
fn init_logs(format: LogFormat, env_file: &EnvFile) {
    telemetry::init(format);
    env_file.log_warnings();
}

async fn serve(config: Config, env_file: &EnvFile) -> anyhow::Result<()> {
    init_logs(config.log_format, env_file);
    app::run_server(config).await
}
