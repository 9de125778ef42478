//! `GET /console/events`: every call's events as Server-Sent Events (the hub-wide feed:
//! `call.started`, `call.state`, `transcript.*`, `tool.*`, `call.barge_in`, `call.ended`), with
//! keep-alive comments. A reader that falls [`crate::events::ALL_CAPACITY`] events behind gets
//! `resync` (the page reloads) instead of the events it missed. 401 without a session.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::login::{Gate, Signed};
use crate::app::AppState;

/// `GET /console/events`.
pub async fn events(State(state): State<AppState>, signed: Result<Signed, Gate>) -> Response {
    match signed {
        Ok(_) => {}
        Err(Gate::Disabled) => return Gate::Disabled.into_response(),
        Err(Gate::SignIn) => return (StatusCode::UNAUTHORIZED, "sign in first").into_response(),
    }
    let stream = BroadcastStream::new(state.events.subscribe_all()).map(|item| {
        let event = match item {
            Ok(e) => Event::default().event(e.name).data(e.data.to_string()),
            Err(BroadcastStreamRecvError::Lagged(n)) => Event::default()
                .event("resync")
                .data(format!("{{\"missed\":{n}}}")),
        };
        Ok::<_, Infallible>(event)
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
