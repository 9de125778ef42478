//! `/login` and `/logout`, and [`Signed`]: the gate every console page passes (no `API_TOKEN`:
//! the "disabled" page; no valid session: 303 to `/login`).

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use tracing::{info, warn};

use super::layout;
use super::session::{self, Keys, Session};
use crate::app::AppState;

/// A request with a valid session: its CSRF token is at hand for the page's forms.
pub struct Signed {
    pub session: Session,
    /// The CSRF token of this session's forms.
    pub csrf: String,
}

impl Signed {
    /// `Ok` when `form` carries this session's CSRF token; else the 403 page.
    pub fn check(&self, state: &AppState, form: &[(String, String)]) -> Result<(), Response> {
        let given = super::field(form, "csrf").unwrap_or("");
        let keys = keys(state).ok_or_else(|| layout::disabled().into_response())?;
        if keys.csrf_ok(&self.session, given) {
            Ok(())
        } else {
            warn!("console: refused a form without a valid CSRF token");
            Err(forbidden())
        }
    }
}

/// Why a console request did not get a [`Signed`].
pub enum Gate {
    /// `API_TOKEN` is not set.
    Disabled,
    /// No valid session cookie.
    SignIn,
}

impl IntoResponse for Gate {
    fn into_response(self) -> Response {
        match self {
            Gate::Disabled => layout::disabled().into_response(),
            Gate::SignIn => Redirect::to("/login").into_response(),
        }
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Gate;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Gate> {
        let keys = keys(state).ok_or(Gate::Disabled)?;
        let value = session::cookie(&parts.headers, session::COOKIE).ok_or(Gate::SignIn)?;
        let session = keys
            .verify(value, chrono::Utc::now().timestamp())
            .ok_or(Gate::SignIn)?;
        Ok(Signed {
            csrf: keys.csrf(&session),
            session,
        })
    }
}

fn keys(state: &AppState) -> Option<Keys> {
    state.config.api_token.as_ref().map(Keys::new)
}

/// The 403 page of a form without a valid CSRF token.
pub fn forbidden() -> Response {
    let body = html! {
        h1 { "Forbidden" }
        p #csrf-error { "This form has expired or did not come from this console. Go back, reload the page and try again." }
    };
    (StatusCode::FORBIDDEN, layout::page("Forbidden", None, body)).into_response()
}

/// `GET /login`: the sign-in form, with a fresh double-submit token.
pub async fn form(State(state): State<AppState>) -> Response {
    if state.config.api_token.is_none() {
        return layout::disabled().into_response();
    }
    login_page(StatusCode::OK, None)
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let token = session::random_nonce();
    let body = html! {
        h1 { "Sign in" }
        @if let Some(error) = error {
            p #login-error .error { (error) }
        }
        form #login method="post" action="/login" {
            input type="hidden" name="csrf" value=(token);
            label for="token" { "API token" }
            input #token type="password" name="token" autocomplete="current-password" required autofocus;
            button #sign-in type="submit" { "Sign in" }
        }
        p .hint { "The token is the relay's API_TOKEN." }
    };
    let cookie = format!(
        "{}={token}; HttpOnly; Secure; SameSite=Strict; Path=/login; Max-Age=3600",
        session::LOGIN_COOKIE
    );
    (
        status,
        [(header::SET_COOKIE, cookie)],
        layout::page("Sign in", None, body),
    )
        .into_response()
}

/// `POST /login` (`token`, `csrf`): right token → 303 to `/` with the session cookie; wrong →
/// 401 with `#login-error` (logged at WARN, never the token); a missing or mismatched
/// double-submit token → 403.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let Some(expected) = state.config.api_token.as_ref() else {
        return layout::disabled().into_response();
    };
    let given_csrf = super::field(&form, "csrf").unwrap_or("");
    let cookie_csrf = session::cookie(&headers, session::LOGIN_COOKIE).unwrap_or("");
    if given_csrf.is_empty() || !session::same(given_csrf, cookie_csrf) {
        warn!("console: refused a sign-in without the form's token");
        return forbidden();
    }
    let token = super::field(&form, "token").unwrap_or("");
    if !session::same(token, expected.expose()) {
        state.stats.error(crate::stats::ErrorKind::ApiAuth);
        warn!("console: failed sign-in (wrong API token)");
        return login_page(StatusCode::UNAUTHORIZED, Some("That is not the API token."));
    }
    let value = Keys::new(expected).issue(chrono::Utc::now().timestamp());
    info!("console: signed in");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (header::SET_COOKIE, session::set_cookie(Some(&value))),
        ],
    )
        .into_response()
}

/// `POST /logout` (`csrf`): clears the cookie, 303 to `/login`.
pub async fn sign_out(
    State(state): State<AppState>,
    signed: Result<Signed, Gate>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let signed = match signed {
        Ok(s) => s,
        Err(Gate::Disabled) => return layout::disabled().into_response(),
        Err(Gate::SignIn) => return Redirect::to("/login").into_response(),
    };
    if let Err(refused) = signed.check(&state, &form) {
        return refused;
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_string()),
            (header::SET_COOKIE, session::set_cookie(None)),
        ],
    )
        .into_response()
}
