//! The `fake-twilio` command line and [`main`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use super::{Callee, FakeTwilio, FakeTwilioOptions, PhoneNumber};

/// Flags of `fake-twilio`.
#[derive(clap::Args, Debug, Clone)]
pub struct FakeTwilioArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the bound address is printed).
    #[arg(long, default_value_t = 9091)]
    pub port: u16,
    /// The account SID (`AC…`) in every path [default: a fresh one, printed].
    #[arg(long, value_name = "AC…")]
    pub account_sid: Option<String>,
    /// The auth token: accepted for basic auth, and the key every request to your application
    /// is signed with [default: a fresh one, printed].
    #[arg(long, value_name = "TOKEN")]
    pub auth_token: Option<String>,
    /// An API key also accepted for basic auth.
    #[arg(long, value_name = "SID:SECRET", value_parser = parse_api_key)]
    pub api_key: Option<(String, String)>,
    /// The account's numbers, comma-separated E.164 (`IncomingPhoneNumbers.json`); when given,
    /// `From` must be one of them.
    #[arg(long, value_delimiter = ',', value_name = "+1…")]
    pub numbers: Vec<String>,
    /// Numbers per page when a request gives no `PageSize`.
    #[arg(long, default_value_t = 50)]
    pub page_size: usize,
    /// What the callee says on a stream (WAV: 8 kHz μ-law or 16-bit PCM); repeat for several
    /// turns [default: the bundled clips].
    #[arg(long = "audio", value_name = "FILE")]
    pub audio: Vec<PathBuf>,
    /// Barge in: the callee starts its next clip this many ms after a reply starts playing.
    #[arg(long, value_name = "MS")]
    pub interrupt_after_ms: Option<u64>,
    /// The callee moves on when no reply starts this many ms after a clip ended.
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    pub reply_timeout_ms: u64,
    /// The callee hangs up after this many seconds on a stream whatever happens.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub max_call_secs: u64,
    /// From `ringing` to the answer, ms.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub ring_ms: u64,
    /// How long one `<Say>` lasts, ms.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub say_ms: u64,
    /// How long a `<Dial>`ed party talks before hanging up, ms.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub dial_ms: u64,
}

fn parse_api_key(raw: &str) -> Result<(String, String), String> {
    match raw.split_once(':') {
        Some((sid, secret)) if !sid.is_empty() && !secret.is_empty() => {
            Ok((sid.into(), secret.into()))
        }
        _ => Err("expected SID:SECRET, e.g. SK0123…:secret".into()),
    }
}

impl FakeTwilioArgs {
    /// The stand-in's options; credentials left out are generated.
    ///
    /// # Errors
    /// A clip cannot be read, or a number is not E.164.
    pub fn options(&self) -> anyhow::Result<FakeTwilioOptions> {
        let defaults = FakeTwilioOptions::default();
        let numbers = self
            .numbers
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty());
        let numbers = numbers
            .map(|n| {
                anyhow::ensure!(
                    crate::config::is_e164(n),
                    "--numbers: {n} is not E.164 (+15551234567)"
                );
                Ok(PhoneNumber::new(n))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(FakeTwilioOptions {
            account_sid: self.account_sid.clone().unwrap_or(defaults.account_sid),
            auth_token: self.auth_token.clone().unwrap_or(defaults.auth_token),
            api_key: self.api_key.clone(),
            numbers,
            page_size: self.page_size,
            callee: Callee {
                clips: crate::sim::bundled::clips_or(&self.audio)?,
                quiet_ms: 1000,
                interrupt_after_ms: self.interrupt_after_ms,
                reply_timeout_ms: self.reply_timeout_ms,
                max_call_ms: self.max_call_secs.saturating_mul(1000),
            },
            ring: Duration::from_millis(self.ring_ms),
            say: Duration::from_millis(self.say_ms),
            dial: Duration::from_millis(self.dial_ms),
        })
    }
}

/// Run the stand-in until SIGINT (Ctrl-C) or SIGTERM, then end its calls (their last callbacks sent).
///
/// # Errors
/// An option is invalid or the address cannot be bound.
pub async fn main(args: FakeTwilioArgs) -> anyhow::Result<()> {
    let opts = args.options()?;
    let addr = format!("{}:{}", args.host, args.port);
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding the Twilio stand-in to {addr}"))?;
    let fake = FakeTwilio::start_on(listener, opts)?;
    println!(
        "Twilio stand-in listening on {}: set TWILIO_API_BASE={} TWILIO_ACCOUNT_SID={}",
        fake.addr,
        fake.base_url(),
        fake.account_sid
    );
    if args.auth_token.is_none() {
        println!(
            "generated auth token: TWILIO_AUTH_TOKEN={}",
            fake.auth_token
        );
    }
    crate::app::shutdown_signal().await;
    fake.shutdown().await;
    tracing::info!("Twilio stand-in stopped");
    Ok(())
}
