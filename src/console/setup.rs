//! `/setup`: what to paste into Twilio, the effective configuration (secrets redacted by
//! `Config`'s `Debug`), the model and its shutdown date, signature checks, and health.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::layout;
use super::Signed;
use crate::app::AppState;
use crate::routes::public_base;

/// `GET /setup`.
pub async fn page(State(state): State<AppState>, signed: Signed, headers: HeaderMap) -> Response {
    let config = &state.config;
    let base = public_base(config.public_url.as_deref(), &headers);
    let (_, axum::Json(health)) = crate::routes::health(State(state.clone())).await;
    let health_json = serde_json::to_string_pretty(&health).unwrap_or_default();
    let body = html! {
        h1 { "Set-up" }
        section #webhooks {
            h2 { "Webhooks for Twilio" }
            dl {
                dt { "Voice webhook (A call comes in, HTTP POST)" } dd { code .webhook data-path="/incoming-call" { (base) "/incoming-call" } }
                dt { "Transcribed calls between people (HTTP POST)" } dd { code .webhook data-path="/transcribe-call" { (base) "/transcribe-call" } }
                dt { "Status callback URL" } dd { code .webhook data-path="/twilio/status" { (base) "/twilio/status" } }
            }
            @if config.public_url.is_none() {
                p .hint { "From this request's Host header: set PUBLIC_URL to the address Twilio reaches." }
            }
        }
        section #model {
            h2 { "Model" }
            p { code { (config.openai_model) } }
            @if let Some(s) = config.model_shutdown() {
                p .warning { "Announced for shutdown on " strong .shutdown-date { (s.date) } "; set OPENAI_MODEL=" (s.replacement) "." }
            } @else {
                p { "No shutdown date is known for this model." }
            }
        }
        section #signatures {
            h2 { "Twilio signatures" }
            p { @if config.validates_signatures() { "Checked: requests from Twilio must carry a valid X-Twilio-Signature." }
                @else { "NOT checked: set TWILIO_AUTH_TOKEN (and leave TWILIO_VALIDATE_SIGNATURE on)." } }
        }
        section #health {
            h2 { "Health" }
            p { "Store (" (state.store.engine()) "): " strong .store-health { (health.database) } "; OpenAI configured: "
                (health.openai_configured) "; Twilio configured: " (health.twilio_configured) }
            pre { (health_json) }
        }
        section #config {
            h2 { "Effective configuration" }
            pre { (format!("{:#?}", config)) }
        }
    };
    layout::page("Set-up", Some(&signed), body).into_response()
}
