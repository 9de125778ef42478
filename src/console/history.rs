//! `/calls` (every call in the store, newest first, filtered and paged by keyset) and
//! `/calls/{sid}` (one call: record, transcript with timings, tool calls, latency, recording).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, TimeZone, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout;
use super::Signed;
use crate::app::AppState;
use crate::records::CallRecord;
use crate::store::{Cursor, HistoryFilter};
use crate::transcript::{EndReason, Role, Transcript};

/// Rows per history page.
const PAGE: usize = 50;

/// Every `end_reason` the filter offers.
const END_REASONS: [EndReason; 13] = [
    EndReason::CallerHungUp,
    EndReason::TwilioDisconnected,
    EndReason::UpstreamError,
    EndReason::UpstreamClosed,
    EndReason::ServerShutdown,
    EndReason::AssistantHungUp,
    EndReason::ApiHangup,
    EndReason::MaxDuration,
    EndReason::CallerIdle,
    EndReason::TwilioTimeout,
    EndReason::StreamRefused,
    EndReason::ServerLost,
    EndReason::Transferred,
];

/// `/calls` query: the filters and a cursor (`before`/`after` = `{started_at ms}.{call_sid}`).
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    number: Option<String>,
    from: Option<String>,
    to: Option<String>,
    direction: Option<String>,
    end_reason: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn day_ms(v: &Option<String>, plus_days: i64) -> Option<i64> {
    let day = NaiveDate::parse_from_str(non_empty(v)?.as_str(), "%Y-%m-%d").ok()?;
    let start = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0)?);
    Some((start + chrono::Duration::days(plus_days)).timestamp_millis())
}

fn cursor(v: &Option<String>, newer: bool) -> Option<Cursor> {
    let v = non_empty(v)?;
    let (at, sid) = v.split_once('.')?;
    let at: i64 = at.parse().ok()?;
    Some(if newer {
        Cursor::Newer(at, sid.to_string())
    } else {
        Cursor::Older(at, sid.to_string())
    })
}

impl HistoryQuery {
    fn filter(&self) -> HistoryFilter {
        HistoryFilter {
            number: non_empty(&self.number),
            from_ms: day_ms(&self.from, 0),
            to_ms: day_ms(&self.to, 1),
            direction: non_empty(&self.direction),
            end_reason: non_empty(&self.end_reason),
        }
    }

    /// The filters as a query string prefix (`number=…&…&`), kept by the paging links.
    fn keep(&self) -> String {
        let pairs = [
            ("number", &self.number),
            ("from", &self.from),
            ("to", &self.to),
            ("direction", &self.direction),
            ("end_reason", &self.end_reason),
        ];
        let kept: Vec<(&str, String)> = pairs
            .iter()
            .filter_map(|(k, v)| non_empty(v).map(|v| (*k, v)))
            .collect();
        let mut s = serde_urlencoded::to_string(kept).unwrap_or_default();
        if !s.is_empty() {
            s.push('&');
        }
        s
    }
}

/// `GET /calls`.
pub async fn list(
    State(state): State<AppState>,
    signed: Signed,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let at = cursor(&q.after, true).or_else(|| cursor(&q.before, false));
    // One more than a page says whether there is another page that way.
    let mut calls = match state
        .store
        .history(&q.filter(), at.as_ref(), PAGE + 1)
        .await
    {
        Ok(calls) => calls,
        Err(e) => {
            state.store.failed("listing the call history", &e);
            return layout::failure(
                &signed,
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is unavailable",
            );
        }
    };
    let more = calls.len() > PAGE;
    let newer_page = matches!(at, Some(Cursor::Newer(..)));
    if more {
        if newer_page {
            calls.remove(0);
        } else {
            calls.pop();
        }
    }
    let (has_older, has_newer) = match at {
        None => (more, false),
        Some(Cursor::Older(..)) => (more, true),
        Some(Cursor::Newer(..)) => (true, more),
    };
    let key = |r: &CallRecord| format!("{}.{}", r.started_at.timestamp_millis(), r.call_sid);
    let keep = q.keep();
    let sel = |v: &Option<String>, want: &str| non_empty(v).as_deref() == Some(want);
    let body = html! {
        h1 { "Call history" }
        form #filters method="get" action="/calls" {
            label { "Number " input name="number" type="search" value=(q.number.clone().unwrap_or_default()); }
            label { "From " input name="from" type="date" value=(q.from.clone().unwrap_or_default()); }
            label { "To " input name="to" type="date" value=(q.to.clone().unwrap_or_default()); }
            label { "Direction "
                select name="direction" {
                    option value="" { "any" }
                    option value="inbound" selected[sel(&q.direction, "inbound")] { "inbound" }
                    option value="outbound" selected[sel(&q.direction, "outbound")] { "outbound" }
                    option value="fork" selected[sel(&q.direction, "fork")] { "fork" }
                }
            }
            label { "End reason "
                select name="end_reason" {
                    option value="" { "any" }
                    @for r in END_REASONS { option value=(r.as_str()) selected[sel(&q.end_reason, r.as_str())] { (r.as_str()) } }
                }
            }
            button type="submit" { "Filter" }
        }
        @if calls.is_empty() { p #no-calls { "No calls match." } }
        table #history {
            thead { tr { th { "Started (UTC)" } th { "From" } th { "To" } th { "Direction" } th { "Status" } th { "Duration" } th { "End reason" } } }
            tbody {
                @for r in &calls {
                    tr data-call-sid=(r.call_sid) {
                        td .started { a .call-link href={ "/calls/" (r.call_sid) } { (r.started_at.format("%Y-%m-%d %H:%M:%S")) } }
                        td .from { (r.from.as_deref().unwrap_or("")) }
                        td .to { (r.to.as_deref().unwrap_or("")) }
                        td .direction { (r.direction) }
                        td .status { (r.status) }
                        td .duration { (r.duration_s.map(|s| layout::format_duration(s as i64)).unwrap_or_default()) }
                        td .end-reason { (r.end_reason.map(|e| e.as_str()).unwrap_or("")) }
                    }
                }
            }
        }
        p .paging {
            @if let (true, Some(first)) = (has_newer, calls.first()) {
                a #prev-page href={ "/calls?" (keep) "after=" (key(first)) } { "← Newer" }
            }
            @if let (true, Some(last)) = (has_older, calls.last()) {
                a #next-page href={ "/calls?" (keep) "before=" (key(last)) } { "Older →" }
            }
        }
    };
    layout::page("Call history", Some(&signed), body).into_response()
}

/// `GET /calls/{sid}`: 404 page for a call neither the records nor the transcripts know.
pub async fn call(
    State(state): State<AppState>,
    signed: Signed,
    Path(call_sid): Path<String>,
) -> Response {
    let (record, transcript) = match tokio::try_join!(
        state.store.get(&call_sid),
        state.store.transcript(&call_sid)
    ) {
        Ok(found) => found,
        Err(e) => {
            state.store.failed("reading a call for the console", &e);
            return layout::failure(
                &signed,
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is unavailable",
            );
        }
    };
    if record.is_none() && transcript.is_none() {
        return layout::not_found(&signed, &format!("No call {call_sid}."));
    }
    let json = record
        .as_ref()
        .and_then(|r| serde_json::to_value(r).ok())
        .unwrap_or_default();
    let started = record
        .as_ref()
        .map(|r| r.started_at)
        .or(transcript.as_ref().map(|t| t.started_at));
    let turns = transcript
        .as_ref()
        .map(|t| t.turns.as_slice())
        .unwrap_or(&[]);
    let body = html! {
        h1 { "Call " (call_sid) }
        (record_list(&json))
        @if json.get("recording").is_some() {
            h2 { "Recording" }
            audio #recording controls src={ "/api/calls/" (call_sid) "/recording.wav" } {}
        }
        h2 { "Transcript" }
        section #transcript {
            @if turns.is_empty() { p { "No turns." } }
            @for t in turns {
                (layout::turn(t, started.map(|s| (t.started_at - s).num_milliseconds())))
            }
        }
        h2 { "Tool calls" }
        section #tool-calls {
            @let tools: Vec<_> = turns.iter().filter(|t| t.tool.is_some()).collect();
            @if tools.is_empty() { p { "None." } }
            @for t in tools { (layout::turn(t, None)) }
        }
        h2 { "Latency" }
        (latency(transcript.as_ref()))
    };
    layout::page(&format!("Call {call_sid}"), Some(&signed), body).into_response()
}

/// The record's fields as a definition list (objects as JSON).
fn record_list(json: &serde_json::Value) -> Markup {
    html! {
        dl #record {
            @if let Some(fields) = json.as_object() {
                @for (k, v) in fields {
                    dt { (k) }
                    dd data-field=(k) { (match v { serde_json::Value::String(s) => s.clone(), other => other.to_string() }) }
                }
            }
        }
    }
}

/// First audio (call start to the assistant's first turn) and response latency (a caller turn's
/// start to the assistant turn after it: it includes the caller's speech), from the turns' times.
fn latency(t: Option<&Transcript>) -> Markup {
    let Some(t) = t else {
        return html! { dl #latency { dt { "First audio" } dd .first-audio { "—" } } };
    };
    let first = t
        .turns
        .iter()
        .find(|x| x.role == Role::Assistant)
        .map(|x| (x.started_at - t.started_at).num_milliseconds());
    let mut gaps: Vec<i64> = t
        .turns
        .windows(2)
        .filter(|w| w[0].role == Role::Caller && w[1].role == Role::Assistant)
        .map(|w| {
            (w[1].started_at - w[0].started_at)
                .num_milliseconds()
                .max(0)
        })
        .collect();
    gaps.sort_unstable();
    let show = |v: Option<i64>| v.map(|ms| format!("{ms} ms")).unwrap_or_else(|| "—".into());
    html! {
        dl #latency {
            dt { "First audio" } dd .first-audio { (show(first)) }
            dt { "Response latency p50" } dd .latency-p50 { (show(gaps.get(gaps.len() / 2).copied())) }
            dt { "Response latency max" } dd .latency-max { (show(gaps.last().copied())) }
        }
        p .hint { "Response latency here runs from the start of the caller's turn to the start of the answer (the call's log line has the figure from the end of speech)." }
    }
}
