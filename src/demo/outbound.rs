//! `demo --outbound`: an outbound call placed through the relay's API, offline. The Twilio
//! stand-in ([`crate::fake_twilio`]) takes the relay's `Calls.json`, rings, runs the call's TwiML
//! and connects a simulated callee to the signed stream; the relay checks every signature. Prints
//! the API's answer, each status callback as the relay answers it, the transcript and the record.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::DemoArgs;
use crate::app::{self, AppState};
use crate::config::Config;
use crate::fake_twilio::{Callee, FakeTwilio, FakeTwilioOptions, PhoneNumber};
use crate::sim;
use crate::transcript::{EndReason, Transcript};

/// The caller ID: the stand-in account's one number.
const FROM: &str = "+15550100001";
/// The simulated callee's number.
const TO: &str = "+15550100002";
/// This call's own instructions and greeting, sent with `POST /api/calls`.
const INSTRUCTIONS: &str =
    "You are calling to confirm order 427 for delivery tomorrow. Be brief and friendly.";
const GREETING: &str = "Hi, this is the shop calling about your order 427.";
/// How long the record and transcript may take to settle after the call ended.
const SETTLE: Duration = Duration::from_secs(10);
/// Every request to the relay's API.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Run the outbound demo with `config` (every `serve` option applies to the relay) and the clips,
/// barge-in and `--out` of `args`. Errors if any part fails, the record does not end `completed`,
/// or the transcript has no assistant turn.
pub(super) async fn run(mut config: Config, args: &DemoArgs) -> anyhow::Result<()> {
    let callee = Callee {
        clips: sim::bundled::clips_or(&args.audio)?,
        interrupt_after_ms: args.interrupt_after_ms,
        ..Callee::default()
    };
    // The longest the call can last: the callee's cap on its stream, plus ringing and callbacks.
    let limit = Duration::from_millis(callee.max_call_ms) + Duration::from_secs(30);
    let twilio = FakeTwilio::start(FakeTwilioOptions {
        numbers: vec![PhoneNumber::new(FROM)],
        callee,
        ..FakeTwilioOptions::default()
    })
    .await?;
    println!(
        "Twilio stand-in at {} (account {}), the relay's TWILIO_API_BASE",
        twilio.base_url(),
        twilio.account_sid
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let api_token = config.api_token.as_ref().map_or_else(
        || uuid::Uuid::new_v4().simple().to_string(),
        |t| t.expose().to_string(),
    );
    config.api_token = Some(api_token.as_str().into());
    config.twilio_api_base = twilio.base_url();
    config.twilio_account_sid = Some(twilio.account_sid.clone());
    config.twilio_auth_token = Some(twilio.auth_token.as_str().into());
    config.twilio_api_key_sid = None;
    config.twilio_api_key_secret = None;
    config.twilio_validate_signature = true;
    config.twilio_phone_number = Some(FROM.into());
    // Streams and callbacks come back to this relay, signed over the URLs it gave out.
    config.public_url = Some(base.clone());
    let mut config = config.validate()?;
    let realtime = super::realtime(&mut config, &args.audio, Vec::new()).await?;

    let stop = CancellationToken::new();
    let state = AppState::new(config);
    let server = tokio::spawn(app::serve(listener, state, stop.clone().cancelled_owned()));
    let api = Api::new(&base, &api_token)?;

    let request =
        json!({"to": TO, "from": FROM, "instructions": INSTRUCTIONS, "greeting": GREETING});
    println!("\nPOST {base}/api/calls {request}");
    let (status, answer) = api
        .send(api.http.post(api.url("/api/calls")).json(&request))
        .await?;
    println!("→ {status} {answer}");
    if status != 201 {
        bail!("the relay did not place the call (HTTP {status}): {answer}");
    }
    let sid = answer["call_sid"]
        .as_str()
        .context("no call_sid in the answer")?
        .to_string();

    println!("\nStatus callbacks (stand-in → relay):");
    let log = print_callbacks(&twilio, &sid, limit).await?;
    if let Some(fake) = &realtime {
        let own = fake.connections().iter().any(|c| {
            c.client_events.iter().any(|e| {
                e["type"] == "session.update" && e["session"]["instructions"] == INSTRUCTIONS
            })
        });
        println!(
            "\nThe Realtime stand-in {} this call's own instructions.",
            if own { "received" } else { "did NOT receive" }
        );
    }

    let record = settled_record(&api, &sid).await?;
    let transcript: Transcript =
        serde_json::from_value(record["transcript"].clone()).context("the record's transcript")?;
    println!(
        "\nTranscript (ended: {}):",
        transcript.end_reason.map_or("-", EndReason::as_str)
    );
    for turn in &transcript.turns {
        println!("  {}: {}", turn.role.label(), turn.text);
    }
    let mut shown = record.clone();
    if let Some(fields) = shown.as_object_mut() {
        fields.remove("transcript");
    }
    println!(
        "\nCall record (GET /api/calls/{sid}):\n{}",
        serde_json::to_string_pretty(&shown)?
    );

    for stream in &log.streams {
        let ended_by = stream.ended_by.as_deref().unwrap_or("-");
        println!("\nStream {} ended: {ended_by}", stream.url);
    }
    if let Some(report) = log.streams.first().and_then(|s| s.report.as_ref()) {
        println!("{}", report.summary());
        crate::wav::write_pcm16(&args.out, &report.heard)?;
        println!("What the callee heard: {}", args.out.display());
    }
    stop.cancel();
    server.await.context("relay task")??;
    twilio.shutdown().await;
    if record["status"] != "completed" {
        bail!("the call record ended {}, not completed", record["status"]);
    }
    if !transcript
        .turns
        .iter()
        .any(|t| t.role == crate::transcript::Role::Assistant)
    {
        bail!("the transcript has no assistant turn");
    }
    Ok(())
}

/// Print each status callback once the relay has answered it; returns the finished call.
async fn print_callbacks(
    twilio: &FakeTwilio,
    sid: &str,
    limit: Duration,
) -> anyhow::Result<crate::fake_twilio::CallLog> {
    let deadline = Instant::now() + limit;
    let mut printed = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let log = twilio
            .wait_for(sid, left, |c| c.callbacks.len() > printed || c.finished)
            .await
            .with_context(|| format!("the call did not end within {} s", limit.as_secs()))?;
        for cb in &log.callbacks[printed..] {
            let answer = cb.http_status.map_or_else(
                || format!("failed: {}", cb.error.as_deref().unwrap_or("?")),
                |s| format!("HTTP {s}"),
            );
            println!(
                "  #{} {:<9} CallStatus={:<11} relay answered {answer}",
                cb.sequence, cb.event, cb.status
            );
        }
        printed = log.callbacks.len();
        if log.finished {
            for note in &log.notes {
                println!("  note: {note}");
            }
            return Ok(log);
        }
    }
}

/// `GET /api/calls/{sid}` once the record has ended and the transcript is final (the relay
/// writes it when the stream's tasks finish, a moment after the last callback).
async fn settled_record(api: &Api, sid: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (status, record) = api
            .send(api.http.get(api.url(&format!("/api/calls/{sid}"))))
            .await?;
        let settled = status == 200
            && record["ended_at"].is_string()
            && record["transcript"]["end_reason"].is_string();
        if settled {
            return Ok(record);
        }
        if Instant::now() >= deadline {
            bail!(
                "the call record did not settle within {} s: HTTP {status} {record}",
                SETTLE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The relay's HTTP API with its bearer token.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(base: &str, token: &str) -> anyhow::Result<Api> {
        crate::upstream::ensure_crypto_provider();
        let http = reqwest::Client::builder().timeout(API_TIMEOUT).build()?;
        Ok(Api {
            http,
            base: base.into(),
            token: token.into(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send with the token; the status and the JSON body (`null` if it is not JSON).
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .context("the relay's API")?;
        let status = response.status().as_u16();
        let text = response.text().await.context("the relay's answer")?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}
