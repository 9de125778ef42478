//! The page shell (head, nav, sign-out form), the "disabled" page, and how transcript turns and
//! tool calls render (shared by the live page and the call page; `console.js` builds the same
//! markup for live events).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::Signed;
use crate::transcript::{Role, Turn};

/// A whole page: `body` under the nav (the nav only when signed in).
pub fn page(title: &str, signed: Option<&Signed>, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · relay console" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                @if let Some(signed) = signed {
                    nav #nav {
                        a #nav-live href="/" { "Live calls" }
                        a #nav-history href="/calls" { "History" }
                        a #nav-new href="/calls/new" { "Place a call" }
                        a #nav-setup href="/setup" { "Set-up" }
                        form #sign-out method="post" action="/logout" {
                            (csrf(signed))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// The hidden CSRF input every form carries.
pub fn csrf(signed: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(signed.csrf); }
}

/// What every console page shows without `API_TOKEN`: how to enable it, nothing else.
pub fn disabled() -> Response {
    let body = html! {
        section #console-disabled {
            h1 { "The console is disabled" }
            p { "Set " code { "API_TOKEN" } " to a long random value (for example the output of "
                code { "openssl rand -hex 32" } ") and restart the relay; then sign in here with that token." }
        }
    };
    (StatusCode::OK, page("Console disabled", None, body)).into_response()
}

/// A 404 page saying what was not found.
pub fn not_found(signed: &Signed, what: &str) -> Response {
    let body = html! { h1 { "Not found" } p #not-found { (what) } };
    (StatusCode::NOT_FOUND, page("Not found", Some(signed), body)).into_response()
}

/// A page for a failure the operator should see (store down, Twilio refused), with `status`.
pub fn failure(signed: &Signed, status: StatusCode, message: &str) -> Response {
    let body = html! { h1 { "Something failed" } p #error .error { (message) } };
    (status, page("Error", Some(signed), body)).into_response()
}

/// `caller`, `assistant`, `agent` or `tool`: the `data-role` of a turn.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Caller => "caller",
        Role::Assistant => "assistant",
        Role::Agent => "agent",
        Role::Tool => "tool",
    }
}

/// One turn: `.turn[data-role]` with `.time` (`offset_ms` after the call started, when given),
/// `.text`, a `.barge-in` mark when the caller interrupted it, and a tool turn's `.tool-call`.
pub fn turn(t: &Turn, offset_ms: Option<i64>) -> Markup {
    html! {
        div .turn data-role=(role_name(t.role)) {
            @if let Some(ms) = offset_ms {
                span .time data-offset-ms=(ms) { (format_offset(ms)) }
            }
            span .speaker { (t.role.label()) }
            @if let Some(tool) = &t.tool {
                div .tool-call {
                    span .tool-name { (tool.name) }
                    code .tool-args { (tool.arguments.to_string()) }
                    @if let Some(output) = &tool.output {
                        code .tool-result { (output.to_string()) }
                    } @else if let Some(error) = &tool.error {
                        code .tool-result .tool-error { (error) }
                    }
                    span .tool-duration { (tool.duration_ms) " ms" }
                }
            } @else {
                span .text { (t.text) }
            }
            @if t.interrupted {
                span .barge-in {
                    "interrupted"
                    @if let Some(heard) = t.heard_ms { " after " (heard) " ms" }
                }
            }
        }
    }
}

/// `m:ss.s` after the start.
pub fn format_offset(ms: i64) -> String {
    let ms = ms.max(0);
    format!(
        "{}:{:02}.{}",
        ms / 60_000,
        (ms / 1000) % 60,
        (ms % 1000) / 100
    )
}

/// `h:mm:ss` or `m:ss` of `secs` seconds.
pub fn format_duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, (secs / 60) % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}
