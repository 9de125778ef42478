//! The listener task: notifications from the other instances, re-published on this instance's
//! hub or answered (hang-ups); reconnects when PostgreSQL drops its connection.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::wire::{self, Message};
use super::{send, Cluster, DB_TIMEOUT};
use crate::active::ActiveCalls;
use crate::events::EventHub;
use crate::stats::ErrorKind;
use crate::transcript::EndReason;

/// Pause between attempts to listen again while PostgreSQL is unreachable.
const RETRY: Duration = Duration::from_secs(1);

/// A listener with a connection of its own (its own one-connection pool, so busy senders can
/// never starve its reconnection), listening on [`wire::CHANNEL`].
pub(super) async fn connect(url: &str) -> anyhow::Result<PgListener> {
    let attempt = async {
        let mut listener = PgListener::connect(url).await?;
        listener.listen(wire::CHANNEL).await?;
        anyhow::Ok(listener)
    };
    tokio::time::timeout(DB_TIMEOUT, attempt)
        .await
        .context("connecting timed out")?
}

/// Receive until `shutdown`. sqlx's `PgListener` reconnects by itself when the socket ends
/// cleanly (`try_recv` answers `Ok(None)`); any other failure (an admin's
/// `pg_terminate_backend` reaches us as an error first) replaces the listener, retrying every
/// [`RETRY`]. Notifications sent while disconnected are lost: PostgreSQL does not keep them.
pub(super) async fn run(
    cluster: Cluster,
    mut listener: PgListener,
    events: EventHub,
    active: ActiveCalls,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = listener.try_recv() => next,
        };
        match next {
            Ok(Some(notification)) => {
                handle(&cluster, notification.payload(), &events, &active).await;
            }
            Ok(None) => {
                cluster.0.reconnects.fetch_add(1, Ordering::Relaxed);
                warn!("lost the PostgreSQL connection that listens for the other instances; reconnected (events sent meanwhile were missed)");
            }
            Err(e) => {
                cluster.0.stats.error(ErrorKind::Cluster);
                warn!(error = %e, "listening for the other instances failed; reconnecting");
                let Some(fresh) = relisten(&cluster, &shutdown).await else {
                    return;
                };
                listener = fresh;
                cluster.0.reconnects.fetch_add(1, Ordering::Relaxed);
                info!(
                    "listening for the other instances again (events sent meanwhile were missed)"
                );
            }
        }
    }
}

/// A new listener, retrying until one connects; `None` on shutdown.
async fn relisten(cluster: &Cluster, shutdown: &CancellationToken) -> Option<PgListener> {
    let mut logged = false;
    loop {
        match connect(&cluster.0.url).await {
            Ok(listener) => return Some(listener),
            Err(e) if !logged => {
                logged = true;
                warn!(
                    error = format!("{e:#}"),
                    "PostgreSQL is unreachable; retrying every second"
                );
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Act on one notification. Our own are ignored (PostgreSQL delivers them to us too); a
/// malformed one is counted and logged, never fatal.
async fn handle(cluster: &Cluster, payload: &str, events: &EventHub, active: &ActiveCalls) {
    let message: Message = match serde_json::from_str(payload) {
        Ok(message) => message,
        Err(e) => {
            return bad(
                cluster,
                &anyhow::Error::from(e).context("not a cluster message"),
            )
        }
    };
    if message.origin() == cluster.origin() {
        return;
    }
    cluster.0.stats.cluster_notification("received");
    match message {
        Message::Event {
            call_sid, event, ..
        } => match event.into_event() {
            Ok(event) => events.publish_remote(&call_sid, event),
            Err(e) => bad(cluster, &e),
        },
        Message::StoredEvent { id, .. } => match fetch(cluster, id).await {
            Ok((call_sid, event)) => events.publish_remote(&call_sid, event),
            Err(e) => bad(cluster, &e.context(format!("stored event {id}"))),
        },
        Message::HangupRequest {
            origin,
            request_id,
            call_sid,
        } => {
            // Not held here (yet): kept, so a stream that lands here meanwhile starts with it.
            if active
                .announce_end(&call_sid, EndReason::ApiHangup)
                .is_none()
            {
                return;
            }
            info!(%call_sid, from = %origin, "hang-up requested through another instance");
            let ack = Message::HangupAck {
                origin: cluster.origin().to_string(),
                to: origin,
                request_id,
            };
            if let Err(e) = cluster.notify(&ack).await {
                cluster.failed(&e, "could not acknowledge a hang-up request");
            }
        }
        Message::HangupAck { to, request_id, .. } => {
            if to == cluster.origin() {
                if let Some(tx) = cluster.lock_acks().remove(&request_id) {
                    let _ = tx.send(());
                }
            }
        }
        Message::HangupEnd { call_sid, .. } => {
            if active.end(&call_sid, EndReason::ApiHangup) {
                debug!(%call_sid, "ending the stream: Twilio accepted the hang-up");
            }
        }
    }
}

/// A stored event, whole.
async fn fetch(cluster: &Cluster, id: i64) -> anyhow::Result<(String, crate::events::CallEvent)> {
    let payload = send::fetch(&cluster.0.pool, id)
        .await?
        .context("not found (pruned?)")?;
    match serde_json::from_str(&payload).context("not a cluster message")? {
        Message::Event {
            call_sid, event, ..
        } => Ok((call_sid, event.into_event()?)),
        other => anyhow::bail!("holds a {other:?}, not an event"),
    }
}

fn bad(cluster: &Cluster, error: &anyhow::Error) {
    cluster.failed(error, "ignored a notification from another instance");
}
