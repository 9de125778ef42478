//! `/calls/new`: the place-a-call form, submitted through [`crate::api::place`] (the code of
//! `POST /api/calls`), so its checks and messages are the API's.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;

use super::layout::{self, csrf};
use super::{field, Signed};
use crate::api::{ApiError, NewCall};
use crate::app::AppState;
use crate::config::VOICES;

/// `GET /calls/new`.
pub async fn form(State(state): State<AppState>, signed: Signed) -> Response {
    render(&state, &signed, &[], None, StatusCode::OK)
}

fn render(
    state: &AppState,
    signed: &Signed,
    values: &[(String, String)],
    error: Option<(&str, &str)>,
    status: StatusCode,
) -> Response {
    let value = |name: &str| field(values, name).unwrap_or("").to_string();
    let error_for = |name: &str| {
        error
            .filter(|(f, _)| *f == name)
            .map(|(_, m)| m.to_string())
    };
    let chosen = |tool: &str| values.iter().any(|(n, v)| n == "tools" && v == tool);
    let tools = state.tools.names();
    let known = ["to", "from", "voice", "tools", "instructions", "greeting"];
    let other_error = error.filter(|(f, _)| !known.contains(f));
    let body = html! {
        h1 { "Place a call" }
        @if let Some((_, message)) = other_error {
            p #place-error .error { (message) }
        }
        form #place-call method="post" action="/calls/new" {
            (csrf(signed))
            label for="to" { "Number (E.164)" }
            input #to name="to" type="tel" placeholder="+15551234567" value=(value("to")) required;
            @if let Some(m) = error_for("to") { p .field-error data-field="to" { (m) } }
            @if let Some(m) = error_for("from") { p .field-error data-field="from" { (m) } }
            label for="instructions" { "Instructions" }
            textarea #instructions name="instructions" rows="6" { (value("instructions")) }
            @if let Some(m) = error_for("instructions") { p .field-error data-field="instructions" { (m) } }
            label for="voice" { "Voice" }
            select #voice name="voice" {
                option value="" { "(default)" }
                @for v in VOICES { option value=(v) selected[value("voice") == *v] { (v) } }
            }
            @if let Some(m) = error_for("voice") { p .field-error data-field="voice" { (m) } }
            label for="greeting" { "Greeting" }
            input #greeting name="greeting" value=(value("greeting"));
            @if !tools.is_empty() {
                fieldset #tools {
                    legend { "Tools (none ticked: all)" }
                    @for t in &tools {
                        label { input type="checkbox" name="tools" value=(t) checked[chosen(t)]; " " (t) }
                    }
                }
            }
            @if let Some(m) = error_for("tools") { p .field-error data-field="tools" { (m) } }
            button #place type="submit" { "Place call" }
        }
    };
    (status, layout::page("Place a call", Some(signed), body)).into_response()
}

/// `POST /calls/new`: 303 to `/calls/{sid}`, or the form again with the API's message (422 per
/// field, the API's status otherwise).
pub async fn submit(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(refused) = signed.check(&state, &form) {
        return refused;
    }
    let text = |name: &str| {
        field(&form, name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let tools: Vec<String> = form
        .iter()
        .filter(|(n, _)| n == "tools")
        .map(|(_, v)| v.clone())
        .collect();
    let call = NewCall {
        to: text("to").unwrap_or_default(),
        instructions: text("instructions"),
        greeting: text("greeting"),
        voice: text("voice"),
        tools: (!tools.is_empty()).then_some(tools),
        ..NewCall::default()
    };
    match crate::api::place(&state, &headers, call).await {
        Ok(placed) => {
            let sid = placed["call_sid"].as_str().unwrap_or_default();
            Redirect::to(&format!("/calls/{sid}")).into_response()
        }
        Err(ApiError::Invalid { field, message }) => render(
            &state,
            &signed,
            &form,
            Some((field, &message)),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(e) => {
            let message = e.to_string();
            let status = e.into_response().status();
            render(&state, &signed, &form, Some(("", &message)), status)
        }
    }
}
