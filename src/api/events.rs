//! `GET /api/calls/{call_sid}/events`: the call's live feed as Server-Sent Events
//! (`transcript.interim`, `transcript.final`, `call.ended`). Ends after `call.ended`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use crate::app::AppState;
use crate::events::CallEvent;

/// Subscribe to a call's events. A call that already ended yields its `call.ended` at once.
/// A call unknown here is subscribed to all the same: with several instances
/// ([`crate::cluster`]) its events arrive from the instance that holds it.
pub async fn feed(
    State(state): State<AppState>,
    Path(call_sid): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // A store that cannot be read leaves the feed open: live events still flow.
    let record = state.store.get(&call_sid).await.unwrap_or_else(|e| {
        state.store.failed("reading a call record", &e);
        None
    });
    let ended = record.filter(|r| r.is_ended()).map(|r| CallEvent::Ended {
        end_reason: r
            .end_reason
            .unwrap_or(crate::transcript::EndReason::CallerHungUp),
        at: r.ended_at.unwrap_or(r.started_at),
    });
    let live = match ended {
        Some(_) => None,
        None => Some(BroadcastStream::new(state.events.subscribe(&call_sid))),
    };
    let first = stream::iter(ended.map(to_sse));
    let rest = stream::iter(live).flatten().scan(false, |done, item| {
        // Stop after `call.ended`; skip over events a slow reader missed.
        if *done {
            return std::future::ready(None);
        }
        let event = match item {
            Ok(event) => {
                *done = matches!(event, CallEvent::Ended { .. });
                Some(to_sse(event))
            }
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(Event::default()
                .event("lagged")
                .data(format!("{{\"missed\":{n}}}")))),
        };
        std::future::ready(event)
    });
    Sse::new(first.chain(rest)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn to_sse(event: CallEvent) -> Result<Event, Infallible> {
    let data = serde_json::to_string(&event).expect("call events serialize");
    Ok(Event::default().event(event.name()).data(data))
}
