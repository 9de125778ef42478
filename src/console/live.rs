//! `/`: the calls in progress (rendered from the event hub's table and the store's records of
//! unfinished calls, then kept current by `console.js` from `/console/events`), with the
//! hang-up and transfer buttons.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};

use super::layout::{self, csrf};
use super::Signed;
use crate::api::ApiError;
use crate::app::AppState;
use crate::events::{CallState, LiveCall};
use crate::transcript::Transcript;

/// Unfinished records looked at for calls streaming elsewhere or still ringing.
const STORE_LIVE_LIMIT: usize = 200;

/// `GET /`.
pub async fn page(State(state): State<AppState>, signed: Signed) -> Response {
    let calls = live_calls(&state).await;
    let mut rows = Vec::with_capacity(calls.len());
    for call in &calls {
        let transcript = state.store.transcript(&call.call_sid).await.ok().flatten();
        rows.push(row(&state, &signed, call, transcript.as_ref()));
    }
    let body = html! {
        h1 { "Live calls" }
        p #no-live-calls hidden[!calls.is_empty()] { "No calls in progress." }
        table #live-calls {
            thead { tr { th { "From" } th { "To" } th { "Direction" } th { "Duration" } th { "State" } th { "" } } }
            @for r in &rows { (r) }
        }
        // What console.js needs to build rows for calls that start later.
        template #call-actions { (actions(&state, &signed, "CA")) }
    };
    layout::page("Live calls", Some(&signed), body).into_response()
}

/// The hub's calls, then unfinished records it does not know (other instances', ringing ones).
async fn live_calls(state: &AppState) -> Vec<LiveCall> {
    let mut calls = state.events.live_calls();
    let records = state
        .store
        .list(STORE_LIVE_LIMIT)
        .await
        .unwrap_or_else(|e| {
            state.store.failed("listing calls for the console", &e);
            Vec::new()
        });
    for r in records.into_iter().take_while(|r| !r.is_ended()) {
        if calls.iter().any(|c| c.call_sid == r.call_sid) {
            continue;
        }
        let ringing = matches!(r.status.as_str(), "queued" | "initiated" | "ringing");
        calls.push(LiveCall {
            state: if ringing {
                CallState::Ringing
            } else {
                CallState::Talking
            },
            call_sid: r.call_sid,
            from: r.from,
            to: r.to,
            direction: r.direction,
            started_at: r.started_at,
        });
    }
    calls
}

fn row(state: &AppState, signed: &Signed, call: &LiveCall, t: Option<&Transcript>) -> Markup {
    let secs = (chrono::Utc::now() - call.started_at).num_seconds();
    html! {
        tbody .call data-call-sid=(call.call_sid) {
            tr data-call-sid=(call.call_sid) {
                td .from { (call.from.as_deref().unwrap_or("")) }
                td .to { (call.to.as_deref().unwrap_or("")) }
                td .direction { (call.direction) }
                td .duration data-started-at=(call.started_at.timestamp_millis()) { (layout::format_duration(secs)) }
                td .state { (call.state.as_str()) }
                td .actions { (actions(state, signed, &call.call_sid)) }
            }
            tr .transcript-row {
                td colspan="6" {
                    div .transcript data-call-sid=(call.call_sid) {
                        @if let Some(t) = t {
                            @for turn in &t.turns { (layout::turn(turn, None)) }
                        }
                    }
                }
            }
        }
    }
}

/// The hang-up form and, with `TRANSFER_DESTINATIONS`, the transfer form of `call_sid`.
fn actions(state: &AppState, signed: &Signed, call_sid: &str) -> Markup {
    let destinations = &state.config.transfer_destinations;
    html! {
        form .hangup method="post" action={ "/calls/" (call_sid) "/hangup" } {
            (csrf(signed))
            button type="submit" { "Hang up" }
        }
        @if !destinations.is_empty() {
            form .transfer method="post" action={ "/calls/" (call_sid) "/transfer" } {
                (csrf(signed))
                select name="destination" {
                    @for d in destinations { option value=(d.name) { (d.name) } }
                }
                button type="submit" { "Transfer" }
            }
        }
    }
}

/// `POST /calls/{sid}/hangup` (`csrf`): [`crate::api::end_call`], then 303 to `/`.
pub async fn hang_up(
    State(state): State<AppState>,
    signed: Signed,
    Path(call_sid): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(refused) = signed.check(&state, &form) {
        return refused;
    }
    match crate::api::end_call(&state, &call_sid).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => api_failure(&signed, e),
    }
}

/// `POST /calls/{sid}/transfer` (`csrf`, `destination`): [`crate::api::transfer_call`], then
/// 303 to `/`.
pub async fn transfer(
    State(state): State<AppState>,
    signed: Signed,
    Path(call_sid): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(refused) = signed.check(&state, &form) {
        return refused;
    }
    let destination = super::field(&form, "destination").unwrap_or("");
    match crate::api::transfer_call(&state, &call_sid, destination).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => api_failure(&signed, e),
    }
}

/// An API error as a console page with the API's status and message.
pub fn api_failure(signed: &Signed, e: ApiError) -> Response {
    // The API's own message (5xx details stay in the log, as the API keeps them).
    let message = e.to_string();
    let status = e.into_response().status();
    layout::failure(signed, status, &message)
}
