//! The sender task: events queued by the hub's forwarder go out as `NOTIFY`s, one at a time so
//! each call's events keep their order; long ones through the `cluster_events` table.

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::wire::{self, Message, Outgoing, WireEvent};
use super::{Cluster, DB_TIMEOUT};
use crate::events::CallEvent;
use crate::stats::ErrorKind;

/// Deletes stored events older than five minutes: receivers fetch theirs within milliseconds
/// of the notification, which PostgreSQL delivers at once or never (a listener that was
/// disconnected misses it).
const PRUNE: &str = "DELETE FROM cluster_events WHERE created_at < now() - interval '5 minutes'";
/// How often, at most, the sender prunes (only when it stores an event).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Forward queued events until `shutdown` (events already queued go out first) or until every
/// sender is gone. A failure is counted each time and logged once per outage.
pub(super) async fn run(
    cluster: Cluster,
    mut rx: mpsc::Receiver<(String, CallEvent)>,
    shutdown: CancellationToken,
) {
    let mut last_prune: Option<Instant> = None;
    let mut failing = false;
    loop {
        let (call_sid, event) = tokio::select! {
            biased;
            next = rx.recv() => match next {
                Some(next) => next,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let message = Message::Event {
            origin: cluster.0.origin.clone(),
            call_sid,
            event: WireEvent::from(&event),
        };
        match forward(&cluster.0.pool, &message, &mut last_prune).await {
            Ok(()) => {
                cluster.0.stats.cluster_notification("sent");
                if std::mem::take(&mut failing) {
                    info!("call events reach the other instances again");
                }
            }
            Err(e) => {
                cluster.0.stats.error(ErrorKind::Cluster);
                if !std::mem::replace(&mut failing, true) {
                    warn!(error = format!("{e:#}"), "cannot send call events to the other instances; their feeds miss this call's events until PostgreSQL answers");
                }
            }
        }
    }
}

/// Send one event: inline, or stored and notified by id (pruning old rows now and then).
async fn forward(
    pool: &PgPool,
    message: &Message,
    last_prune: &mut Option<Instant>,
) -> anyhow::Result<()> {
    let payload = match wire::plan(message) {
        Outgoing::Inline(payload) => payload,
        Outgoing::Stored(payload) => {
            let id = store(pool, &payload).await?;
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                *last_prune = Some(Instant::now());
                prune(pool).await?;
            }
            let pointer = Message::StoredEvent {
                origin: message.origin().to_string(),
                id,
            };
            match wire::plan(&pointer) {
                Outgoing::Inline(p) => p,
                Outgoing::Stored(_) => unreachable!("a stored event's id is a few dozen bytes"),
            }
        }
    };
    notify(pool, &payload).await
}

/// `NOTIFY` `payload` (shorter than [`wire::NOTIFY_LIMIT`] bytes) on [`wire::CHANNEL`].
pub(super) async fn notify(pool: &PgPool, payload: &str) -> anyhow::Result<()> {
    let query = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(wire::CHANNEL)
        .bind(payload)
        .execute(pool);
    tokio::time::timeout(DB_TIMEOUT, query)
        .await
        .context("NOTIFY timed out")?
        .context("NOTIFY failed")?;
    Ok(())
}

/// Insert a long event's payload; returns its row id.
async fn store(pool: &PgPool, payload: &str) -> anyhow::Result<i64> {
    let query = sqlx::query_scalar("INSERT INTO cluster_events (payload) VALUES ($1) RETURNING id")
        .bind(payload)
        .fetch_one(pool);
    tokio::time::timeout(DB_TIMEOUT, query)
        .await
        .context("storing a long event timed out")?
        .context("storing a long event failed")
}

/// Read stored event `id` (`None` once pruned).
pub(super) async fn fetch(pool: &PgPool, id: i64) -> anyhow::Result<Option<String>> {
    let query = sqlx::query_scalar("SELECT payload FROM cluster_events WHERE id = $1")
        .bind(id)
        .fetch_optional(pool);
    tokio::time::timeout(DB_TIMEOUT, query)
        .await
        .context("fetching a long event timed out")?
        .context("fetching a long event failed")
}

async fn prune(pool: &PgPool) -> anyhow::Result<()> {
    let query = sqlx::query(PRUNE).execute(pool);
    tokio::time::timeout(DB_TIMEOUT, query)
        .await
        .context("pruning stored events timed out")?
        .context("pruning stored events failed")?;
    Ok(())
}
