//! The operator console at `/`: server-rendered pages (maud, which escapes every interpolated
//! string) plus a little JavaScript, assets embedded in the binary. Signed in with `API_TOKEN`
//! ([`session`]); every form carries a CSRF token; every response has a strict
//! Content-Security-Policy (no inline scripts). The pages call the same functions as the JSON
//! API (`crate::api`) for everything they change.
//!
//! # Layout
//! - [`session`]: the signed session cookie and CSRF tokens.
//! - `login`: `/login`, `/logout`, and the gate every page passes ([`Signed`]).
//! - `layout`: the page shell, the nav, and how turns and tool calls render.
//! - `live`: `/` (calls in progress), the hang-up and transfer buttons.
//! - `feed`: `/console/events`, every call's events as Server-Sent Events.
//! - `history`: `/calls` (filtered, paged) and `/calls/{sid}`.
//! - `place`: `/calls/new`.
//! - `setup`: `/setup`.

mod feed;
mod history;
mod layout;
mod live;
mod login;
mod place;
pub mod session;
mod setup;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use login::Signed;

use crate::app::AppState;

/// The console's Content-Security-Policy: nothing from elsewhere, no inline script or style.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const CONSOLE_JS: &str = include_str!("../../assets/console.js");
const CONSOLE_CSS: &str = include_str!("../../assets/console.css");

/// The console's routes, each response with the security headers.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(live::page))
        .route("/login", get(login::form).post(login::sign_in))
        .route("/logout", post(login::sign_out))
        .route("/calls", get(history::list))
        .route("/calls/new", get(place::form).post(place::submit))
        .route("/calls/{call_sid}", get(history::call))
        .route("/calls/{call_sid}/hangup", post(live::hang_up))
        .route("/calls/{call_sid}/transfer", post(live::transfer))
        .route("/setup", get(setup::page))
        .route("/console/events", get(feed::events))
        .route("/assets/console.js", get(js))
        .route("/assets/console.css", get(css))
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", CONSOLE_JS)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CONSOLE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidated on every load: a new binary's assets are never hidden by a cache.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The value of `name` in a decoded form body (the first, if repeated).
fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
