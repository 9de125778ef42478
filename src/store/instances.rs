//! The instance registry and crash recovery.
//!
//! Each instance has a row (`id`, `address`, `heartbeat_at`, `state` live|stopped|lost) and
//! beats every `INSTANCE_HEARTBEAT_SECS`. An instance whose heartbeat is three intervals old is
//! dead: the first instance to claim it (a conditional `UPDATE … WHERE state = 'live' AND
//! heartbeat_at = <what it read>`, which only one can win) closes its calls as `server_lost`
//! with `ended_at` = its last heartbeat, and publishes `call.ended` for each on its own
//! [`crate::events::EventHub`]. An instance starting with the id of a live row (it crashed) and
//! any instance on SQLite (the only one) closes the leftovers the same way before serving.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{from_ms, ms, on_pool, Store};
use crate::events::CallEvent;
use crate::records::is_terminal;
use crate::transcript::EndReason;

/// One row of the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    pub id: String,
    /// `PUBLIC_URL`, or `http://HOST:PORT`.
    pub address: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// `live`, `stopped` (clean shutdown) or `lost` (its calls were closed as `server_lost`).
    pub state: String,
}

/// Missed heartbeats after which an instance is dead.
pub const MISSED_HEARTBEATS: u32 = 3;

impl Store {
    /// Register this instance as live, after closing its own leftover calls (a row of this id
    /// still live: it crashed) and, on SQLite, every call left in progress. Returns how many
    /// calls were closed as `server_lost`.
    ///
    /// # Errors
    /// The database cannot be reached or migrated.
    pub async fn start(&self) -> anyhow::Result<usize> {
        let id = self.instance_id().to_string();
        let prev: Option<(i64, String)> = self
            .run("reading the instance registry", async {
                on_pool!(&self.inner.pool, p, _pg => {
                    sqlx::query_as("SELECT heartbeat_at, state FROM instances WHERE id = $1")
                        .bind(&id)
                        .fetch_optional(p)
                        .await
                })
            })
            .await?;
        let mut closed = 0;
        if let Some((heartbeat, state)) = prev {
            if state == "live" {
                closed += self.close_calls(Some(&id), from_ms(heartbeat)).await?;
            }
        }
        if self.engine() == "sqlite" {
            closed += self.close_sqlite_leftovers().await?;
        }
        let now = ms(Utc::now());
        self.run("registering this instance", async {
            on_pool!(&self.inner.pool, p, _pg => {
                sqlx::query("INSERT INTO instances (id, address, started_at, heartbeat_at, state) \
                             VALUES ($1, $2, $3, $4, 'live') ON CONFLICT (id) DO UPDATE SET \
                             address = excluded.address, started_at = excluded.started_at, \
                             heartbeat_at = excluded.heartbeat_at, state = 'live'")
                    .bind(&id)
                    .bind(&self.inner.address)
                    .bind(now)
                    .bind(now)
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected())
            })
        })
        .await?;
        info!(instance_id = %id, engine = self.engine(), closed_leftovers = closed, "registered in the store");
        Ok(closed)
    }

    /// Beat now (and be live again, if others had given this instance up).
    ///
    /// # Errors
    /// The database failed or timed out.
    pub async fn heartbeat(&self) -> anyhow::Result<()> {
        let now = ms(Utc::now());
        let id = self.instance_id();
        self.run("heartbeat", async {
            on_pool!(&self.inner.pool, p, _pg => {
                sqlx::query("INSERT INTO instances (id, address, started_at, heartbeat_at, state) \
                             VALUES ($1, $2, $3, $4, 'live') ON CONFLICT (id) DO UPDATE SET \
                             heartbeat_at = excluded.heartbeat_at, state = 'live'")
                    .bind(id)
                    .bind(&self.inner.address)
                    .bind(now)
                    .bind(now)
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected())
            })
        })
        .await
        .map(|_| ())
    }

    /// Claim every other instance silent for [`MISSED_HEARTBEATS`] intervals and close its
    /// calls; returns how many calls this instance closed.
    ///
    /// # Errors
    /// The database failed or timed out.
    pub async fn sweep(&self) -> anyhow::Result<usize> {
        let horizon = self.inner.heartbeat * MISSED_HEARTBEATS;
        let deadline = ms(Utc::now()) - horizon.as_millis() as i64;
        let id = self.instance_id();
        let dead: Vec<(String, i64)> = self
            .run("looking for dead instances", async {
                on_pool!(&self.inner.pool, p, _pg => {
                    sqlx::query_as("SELECT id, heartbeat_at FROM instances \
                                    WHERE state = 'live' AND id <> $1 AND heartbeat_at < $2")
                        .bind(id)
                        .bind(deadline)
                        .fetch_all(p)
                        .await
                })
            })
            .await?;
        let mut closed = 0;
        for (dead_id, heartbeat) in dead {
            let claimed = self
                .run("claiming a dead instance", async {
                    on_pool!(&self.inner.pool, p, _pg => {
                        sqlx::query("UPDATE instances SET state = 'lost' \
                                     WHERE id = $1 AND state = 'live' AND heartbeat_at = $2")
                            .bind(&dead_id)
                            .bind(heartbeat)
                            .execute(p)
                            .await
                    .map(|r| r.rows_affected())
                    })
                })
                .await?
                == 1;
            if claimed {
                let n = self.close_calls(Some(&dead_id), from_ms(heartbeat)).await?;
                warn!(instance_id = %dead_id, last_heartbeat = %from_ms(heartbeat), closed_calls = n, "an instance stopped beating: its calls were closed as server_lost");
                closed += n;
            }
        }
        Ok(closed)
    }

    /// Mark this instance stopped (a clean shutdown: its calls have ended).
    pub async fn stop(&self) {
        let id = self.instance_id();
        let result = self
            .run("marking this instance stopped", async {
                on_pool!(&self.inner.pool, p, _pg => {
                    sqlx::query("UPDATE instances SET state = 'stopped' WHERE id = $1")
                        .bind(id)
                        .execute(p)
                        .await
                    .map(|r| r.rows_affected())
                })
            })
            .await;
        if let Err(e) = result {
            self.failed("marking this instance stopped", &e);
        }
    }

    /// Every instance in the registry, by id.
    ///
    /// # Errors
    /// The database failed or timed out.
    pub async fn instances(&self) -> anyhow::Result<Vec<InstanceRow>> {
        let rows: Vec<(String, String, i64, i64, String)> = self
            .run("reading the instance registry", async {
                on_pool!(&self.inner.pool, p, _pg => {
                    sqlx::query_as("SELECT id, address, started_at, heartbeat_at, state FROM instances ORDER BY id")
                        .fetch_all(p)
                        .await
                })
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, address, started, beat, state)| InstanceRow {
                id,
                address,
                started_at: from_ms(started),
                heartbeat_at: from_ms(beat),
                state,
            })
            .collect())
    }

    /// Beat every `INSTANCE_HEARTBEAT_SECS` and sweep for dead instances until `stop`; a failure
    /// is counted each time and logged once until the database answers again.
    pub async fn run_heartbeat(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut down = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let beat = async {
                self.heartbeat().await?;
                self.sweep().await
            };
            match beat.await {
                Ok(_) if down => {
                    down = false;
                    info!("store: the heartbeat reaches the database again");
                }
                Ok(_) => {}
                Err(e) => {
                    self.inner.stats.error(crate::stats::ErrorKind::Storage);
                    if !down {
                        down = true;
                        warn!(
                            error = format!("{e:#}"),
                            "store: heartbeat failed; retrying every interval"
                        );
                    }
                }
            }
        }
    }

    /// On SQLite at start-up: every call still open that was streaming (or in progress).
    async fn close_sqlite_leftovers(&self) -> anyhow::Result<usize> {
        let rows: Vec<(String, Option<String>)> = self
            .run("looking for leftover calls", async {
                on_pool!(&self.inner.pool, p, _pg => {
                    sqlx::query_as("SELECT call_sid, instance_id FROM calls WHERE ended = 0 \
                                    AND (instance_id IS NOT NULL OR status = 'in-progress')")
                        .fetch_all(p)
                        .await
                })
            })
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let beats: HashMap<String, DateTime<Utc>> = self
            .instances()
            .await?
            .into_iter()
            .map(|i| (i.id, i.heartbeat_at))
            .collect();
        let latest = beats.values().max().copied().unwrap_or_else(Utc::now);
        let mut closed = 0;
        for (sid, instance) in rows {
            let at = instance
                .and_then(|i| beats.get(&i).copied())
                .unwrap_or(latest);
            closed += usize::from(self.close_call(&sid, at).await?);
        }
        Ok(closed)
    }

    /// Close the open calls held by `instance` as `server_lost` at `at`.
    async fn close_calls(
        &self,
        instance: Option<&str>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<usize> {
        let rows: Vec<(String,)> = self
            .run("looking for a lost instance's calls", async {
                on_pool!(&self.inner.pool, p, _pg => {
                    // Also calls ended since just before its last beat: Twilio's `completed`
                    // callback for a stream that died with the instance lands on a survivor
                    // first, and must not hide that the relay never finished the call.
                    sqlx::query_as("SELECT call_sid FROM calls WHERE instance_id = $1 \
                                    AND (ended = 0 OR ended_at >= $2)")
                        .bind(instance)
                        .bind(ms(at) - (self.inner.heartbeat * MISSED_HEARTBEATS).as_millis() as i64)
                        .fetch_all(p)
                        .await
                })
            })
            .await?;
        let mut closed = 0;
        for (sid,) in rows {
            closed += usize::from(self.close_call(&sid, at).await?);
        }
        Ok(closed)
    }

    /// Close one call as `server_lost` at `at` (record, transcript, export, `call.ended`);
    /// false if it had ended meanwhile. A record Twilio's callback already ended counts as open
    /// while it has no end reason: the relay gives one whenever it finishes a call, so the
    /// stream died with the instance. (Not judged by the transcript: its first turn may still
    /// have been in the instance's write queue.)
    async fn close_call(&self, sid: &str, at: DateTime<Utc>) -> anyhow::Result<bool> {
        let transcript = self.transcript(sid).await?;
        let mut closed = false;
        self.try_update(
            sid,
            || crate::records::CallRecord::new(sid, "inbound", "in-progress"),
            |r| {
                if r.is_ended() && r.end_reason.is_some() {
                    return;
                }
                closed = true;
                r.ended_at = Some(r.ended_at.map_or(at, |ended| ended.min(at)));
                r.end_reason = Some(EndReason::ServerLost);
                if !is_terminal(&r.status) {
                    r.status = "completed".into();
                }
                if r.duration_s.is_none() {
                    r.duration_s = Some((at - r.started_at).num_seconds().max(0) as u64);
                }
            },
        )
        .await?;
        if !closed {
            return Ok(false);
        }
        if let Some(mut t) = transcript {
            if t.ended_at.is_none() {
                t.ended_at = Some(at);
                t.end_reason = Some(EndReason::ServerLost);
                self.write_snapshot(&mut Default::default(), &t).await?;
                self.export(&t, true).await;
            }
        }
        self.inner.events.publish(
            sid,
            CallEvent::Ended {
                end_reason: EndReason::ServerLost,
                at,
            },
        );
        info!(call_sid = %sid, ended_at = %at, "closed a lost instance's call as server_lost");
        Ok(true)
    }
}
