//! Several relay instances on one PostgreSQL database, through `LISTEN`/`NOTIFY`: the event
//! feed of a call on one instance is served by every other, and a hang-up through any instance
//! records `api_hangup` on the one that holds the call's stream.
//!
//! # Seam
//! [`Cluster::start`] takes the database URL and the instance's [`EventHub`], [`ActiveCalls`],
//! [`Stats`] and shutdown token, and returns `None` unless the URL is PostgreSQL. From then on
//! every event published on the hub is forwarded (a bounded queue, never blocking
//! [`EventHub::publish`]) and events from the others are re-published here with
//! [`EventHub::publish_remote`]. The HTTP hang-up calls [`Cluster::prepare_hangup`] and
//! [`Cluster::finish_hangup`] for calls it does not hold. Nothing else is shared.
//!
//! # Layout
//! - [`wire`]: the messages and the inline/stored rule for PostgreSQL's 8000-byte limit.
//! - `send`: the sender task (queue → `NOTIFY`, long payloads into `cluster_events`, pruning).
//! - `listen`: the listener task (reconnects, re-publishes, answers hang-up requests).

mod listen;
mod send;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::active::ActiveCalls;
use crate::events::{CallEvent, EventHub};
use crate::stats::Stats;
use wire::Message;

/// Events queued for the sender task before new ones are dropped (and counted).
pub const QUEUE: usize = 1024;
/// How long a hang-up waits for the holder's acknowledgement before asking Twilio anyway.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one database round trip (a `NOTIFY`, an insert, a fetch).
const DB_TIMEOUT: Duration = Duration::from_secs(5);

/// This instance's link to the others. Cheap to clone.
#[derive(Clone)]
pub struct Cluster(Arc<Inner>);

struct Inner {
    /// A fresh uuid per process: tells our own notifications (which PostgreSQL also delivers
    /// to us) from the others'.
    origin: String,
    url: String,
    pool: PgPool,
    stats: Stats,
    /// Hang-up requests of ours waiting for their acknowledgement, by request id.
    acks: Mutex<HashMap<String, oneshot::Sender<()>>>,
    /// Times the listener lost its connection and listened again.
    reconnects: AtomicU64,
}

/// True for the URLs [`Cluster::start`] acts on.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Cluster {
    /// Connect to `database_url`, make sure the `cluster_events` table exists (the embedded
    /// migrations of `migrations/postgres`), listen on [`wire::CHANNEL`] and start forwarding
    /// `events`. Tasks stop when `shutdown` is cancelled. `Ok(None)` for a URL that is not
    /// `postgres://` or `postgresql://` (one instance: nothing to share).
    ///
    /// # Errors
    /// PostgreSQL unreachable (bounded by a 10 s connect timeout), a migration failing, or
    /// `LISTEN` refused; each names `DATABASE_URL`.
    pub async fn start(
        database_url: &str,
        events: EventHub,
        active: ActiveCalls,
        stats: Stats,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Option<Cluster>> {
        if !is_postgres(database_url) {
            return Ok(None);
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect(database_url)
            .await
            .context("DATABASE_URL: cannot connect to PostgreSQL")?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .context("DATABASE_URL: cannot run the PostgreSQL migrations")?;
        let listener = listen::connect(database_url)
            .await
            .context("DATABASE_URL: cannot LISTEN for the other instances")?;
        let cluster = Cluster(Arc::new(Inner {
            origin: uuid::Uuid::new_v4().to_string(),
            url: database_url.to_string(),
            pool,
            stats: stats.clone(),
            acks: Mutex::default(),
            reconnects: AtomicU64::new(0),
        }));
        let (tx, rx) = mpsc::channel(QUEUE);
        events.set_forward(forwarder(tx, stats));
        tokio::spawn(send::run(cluster.clone(), rx, shutdown.clone()));
        tokio::spawn(listen::run(
            cluster.clone(),
            listener,
            events,
            active,
            shutdown,
        ));
        info!(origin = %cluster.origin(), "sharing call events and hang-ups with the other instances through PostgreSQL");
        Ok(Some(cluster))
    }

    /// This instance's id (a uuid), as it appears in its notifications.
    pub fn origin(&self) -> &str {
        &self.0.origin
    }

    /// How many times the listener lost its connection and is listening again.
    pub fn reconnects(&self) -> u64 {
        self.0.reconnects.load(Ordering::Relaxed)
    }

    /// Before asking Twilio to hang up `call_sid`, which this instance does not hold: tell the
    /// others, so the one holding its stream records `api_hangup`, and wait (at most
    /// [`ACK_TIMEOUT`]) for it to say so. Returns whether one did; `false` also when sending
    /// failed (logged and counted) — the caller goes on with Twilio either way.
    pub async fn prepare_hangup(&self, call_sid: &str) -> bool {
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, rx) = oneshot::channel();
        self.lock_acks().insert(request_id.clone(), tx);
        let request = Message::HangupRequest {
            origin: self.0.origin.clone(),
            request_id: request_id.clone(),
            call_sid: call_sid.to_string(),
        };
        let acked = match self.notify(&request).await {
            Ok(()) => tokio::time::timeout(ACK_TIMEOUT, rx).await.is_ok(),
            Err(e) => {
                self.failed(
                    &e,
                    "could not ask the other instances to record the hang-up",
                );
                false
            }
        };
        self.lock_acks().remove(&request_id);
        if !acked {
            info!(%call_sid, "no instance acknowledged holding the call within 2 s; hanging up through Twilio anyway");
        }
        acked
    }

    /// Twilio accepted the hang-up of `call_sid`: ask its holder to end the stream now (as the
    /// local path does) instead of waiting for Twilio's `stop`. Failures are logged and counted.
    pub async fn finish_hangup(&self, call_sid: &str) {
        let end = Message::HangupEnd {
            origin: self.0.origin.clone(),
            call_sid: call_sid.to_string(),
        };
        if let Err(e) = self.notify(&end).await {
            self.failed(&e, "could not ask the holder of the call to end its stream");
        }
    }

    /// `NOTIFY` one message that fits inline (every message but a long event).
    async fn notify(&self, message: &Message) -> anyhow::Result<()> {
        let wire::Outgoing::Inline(payload) = wire::plan(message) else {
            anyhow::bail!("a {message:?} too long to notify");
        };
        send::notify(&self.0.pool, &payload).await?;
        self.0.stats.cluster_notification("sent");
        Ok(())
    }

    /// Log and count one failure of the cluster link.
    fn failed(&self, error: &anyhow::Error, what: &str) {
        self.0.stats.error(crate::stats::ErrorKind::Cluster);
        warn!(error = format!("{error:#}"), "{what}");
    }

    fn lock_acks(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<()>>> {
        self.0.acks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The hub's hook: queue `(call_sid, event)` for the sender task without waiting. A full queue
/// drops the event, counts it, and logs once per run of drops.
fn forwarder(tx: mpsc::Sender<(String, CallEvent)>, stats: Stats) -> crate::events::Forward {
    let dropping = AtomicBool::new(false);
    Box::new(move |call_sid, event| {
        match tx.try_send((call_sid.to_string(), event.clone())) {
            Ok(()) => dropping.store(false, Ordering::Relaxed),
            Err(mpsc::error::TrySendError::Full(_)) => {
                stats.cluster_notification("dropped");
                if !dropping.swap(true, Ordering::Relaxed) {
                    warn!(queue = QUEUE, "the queue of events to the other instances is full: dropping events until PostgreSQL keeps up");
                }
            }
            // The sender task stopped (shutdown): nothing to forward to.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    })
}
