//! Transcripts in the store: a header row and one row per turn, written by one writer task as
//! each turn completes, off the call's path.
//!
//! The bridge hands the writer a snapshot of the transcript after every completed turn
//! ([`Store::save_transcript`], never waiting); the writer compares it with what it wrote last
//! for that call and writes only the rows that changed, in one transaction. The queue holds
//! [`super::WRITE_QUEUE`] snapshots: when it is full the snapshot is dropped and counted as a
//! storage error (the next snapshot, or the call's end, carries the same turns). At call end
//! [`Store::finish_transcript`] waits (bounded) for the last write and the JSON export.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{ms, on_pool, Store, OP_TIMEOUT};
use crate::transcript::Transcript;

/// Work for the writer task.
pub(super) enum Write {
    /// A snapshot after a completed turn.
    Save(Box<Transcript>),
    /// The final transcript; answered once it is stored and exported.
    Finish(Box<Transcript>, oneshot::Sender<Option<PathBuf>>),
}

/// What the writer last wrote for a call in progress: its header and each turn, as JSON.
#[derive(Default)]
pub(super) struct Written {
    header: String,
    turns: Vec<String>,
}

/// Whether a full queue has been logged since the last successful hand-off (one line per burst).
static FULL_LOGGED: AtomicBool = AtomicBool::new(false);

impl Store {
    /// Queue a snapshot of `t` for the writer; never waits. A full queue drops it (counted).
    pub fn save_transcript(&self, t: &Transcript) {
        match self.inner.writes.try_send(Write::Save(Box::new(t.clone()))) {
            Ok(()) => FULL_LOGGED.store(false, Ordering::Relaxed),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.inner.stats.error(crate::stats::ErrorKind::Storage);
                if !FULL_LOGGED.swap(true, Ordering::Relaxed) {
                    warn!(queue = super::WRITE_QUEUE, "store: the transcript write queue is full (the database is slow or down); turns are written with the next snapshot");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Store the final `t` and export it (`TRANSCRIPT_EXPORT=json`); waits at most twice
    /// [`OP_TIMEOUT`]. Returns the exported file's path. Failures are counted and logged.
    pub async fn finish_transcript(&self, t: &Transcript) -> Option<PathBuf> {
        if let Err(e) = self.ready().await {
            self.failed("storing a transcript", &e);
            return self.export(t, false).await;
        }
        let (done, answer) = oneshot::channel();
        let send = self
            .inner
            .writes
            .send_timeout(Write::Finish(Box::new(t.clone()), done), OP_TIMEOUT);
        if send.await.is_err() {
            self.failed(
                "storing a transcript",
                &anyhow::anyhow!("the write queue stayed full for {OP_TIMEOUT:?}"),
            );
            return self.export(t, false).await;
        }
        match tokio::time::timeout(OP_TIMEOUT * 2, answer).await {
            Ok(Ok(path)) => path,
            _ => {
                self.failed(
                    "storing a transcript",
                    &anyhow::anyhow!("the writer did not finish within {:?}", OP_TIMEOUT * 2),
                );
                self.export(t, false).await
            }
        }
    }

    /// The transcript of `call_sid` as stored, turns in order.
    ///
    /// # Errors
    /// The database failed or timed out, or a stored row does not parse.
    pub async fn transcript(&self, call_sid: &str) -> anyhow::Result<Option<Transcript>> {
        self.ready().await?;
        self.read_transcript(call_sid).await
    }

    async fn read_transcript(&self, call_sid: &str) -> anyhow::Result<Option<Transcript>> {
        let (header, turns): (Option<(String,)>, Vec<(String,)>) = self
            .run_ready("reading a transcript", async {
                on_pool!(&self.inner.pool, p, _pg => {
                    let header = sqlx::query_as("SELECT header FROM transcripts WHERE call_sid = $1")
                        .bind(call_sid)
                        .fetch_optional(p)
                        .await?;
                    let turns = sqlx::query_as("SELECT turn FROM turns WHERE call_sid = $1 ORDER BY idx")
                        .bind(call_sid)
                        .fetch_all(p)
                        .await?;
                    Ok((header, turns))
                })
            })
            .await?;
        let Some((header,)) = header else {
            return Ok(None);
        };
        let mut value: serde_json::Value = serde_json::from_str(&header)?;
        value["turns"] = serde_json::Value::Array(
            turns
                .iter()
                .map(|(t,)| serde_json::from_str(t))
                .collect::<Result<_, _>>()?,
        );
        Ok(Some(serde_json::from_value(value)?))
    }

    /// Store `t` unless a transcript of its call is there; returns whether it was added.
    ///
    /// # Errors
    /// The database failed or timed out.
    pub async fn insert_transcript_if_absent(&self, t: &Transcript) -> anyhow::Result<bool> {
        if self.transcript(&t.call_sid).await?.is_some() {
            return Ok(false);
        }
        self.write_snapshot(&mut Written::default(), t).await?;
        Ok(true)
    }

    /// Write the rows of `t` that differ from `prev`; `prev` becomes what was written.
    pub(super) async fn write_snapshot(
        &self,
        prev: &mut Written,
        t: &Transcript,
    ) -> anyhow::Result<()> {
        let mut value = serde_json::to_value(t)?;
        if let Some(map) = value.as_object_mut() {
            map.remove("turns");
        }
        let header = value.to_string();
        let turns: Vec<String> = t
            .turns
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        let sid = t.call_sid.as_str();
        let work = async {
            on_pool!(&self.inner.pool, p, _pg => {
                let mut tx = p.begin().await?;
                if prev.header != header {
                    sqlx::query("INSERT INTO transcripts (call_sid, header) VALUES ($1, $2) \
                                 ON CONFLICT (call_sid) DO UPDATE SET header = excluded.header")
                        .bind(sid)
                        .bind(&header)
                        .execute(&mut *tx)
                        .await?;
                }
                for (i, json) in turns.iter().enumerate() {
                    if prev.turns.get(i) == Some(json) {
                        continue;
                    }
                    let turn = &t.turns[i];
                    sqlx::query("INSERT INTO turns (call_sid, idx, role, started_at, tool_name, turn) \
                                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (call_sid, idx) DO UPDATE SET \
                                 role = excluded.role, started_at = excluded.started_at, \
                                 tool_name = excluded.tool_name, turn = excluded.turn")
                        .bind(sid)
                        .bind(i as i64)
                        .bind(turn.role.label().to_ascii_lowercase())
                        .bind(ms(turn.started_at))
                        .bind(turn.tool.as_ref().map(|c| c.name.clone()))
                        .bind(json)
                        .execute(&mut *tx)
                        .await?;
                }
                if prev.turns.len() > turns.len() {
                    sqlx::query("DELETE FROM turns WHERE call_sid = $1 AND idx >= $2")
                        .bind(sid)
                        .bind(turns.len() as i64)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            })
        };
        tokio::time::timeout(OP_TIMEOUT, work)
            .await
            .map_err(|_| anyhow::anyhow!("the database did not answer within {OP_TIMEOUT:?}"))??;
        *prev = Written { header, turns };
        Ok(())
    }

    /// Write `TRANSCRIPT_DIR/{CallSid}.json` when export is on: read back from the store when
    /// `t` was stored, else (the store failed) the snapshot `t`, so the file is not lost too.
    pub(super) async fn export(&self, t: &Transcript, stored: bool) -> Option<PathBuf> {
        let dir = self.inner.export.as_ref()?;
        if !stored {
            return self.write_file(t, dir).await;
        }
        let stored = match self.read_transcript(&t.call_sid).await {
            Ok(Some(stored)) => stored,
            Ok(None) => t.clone(),
            Err(e) => {
                self.failed("reading a transcript to export", &e);
                t.clone()
            }
        };
        self.write_file(&stored, dir).await
    }

    async fn write_file(&self, t: &Transcript, dir: &std::path::Path) -> Option<PathBuf> {
        match t.save(dir).await {
            Ok(path) => Some(path),
            Err(e) => {
                self.inner.stats.error(crate::stats::ErrorKind::Storage);
                warn!(
                    error = format!("{e:#}"),
                    "could not write the transcript file"
                );
                None
            }
        }
    }
}

/// The writer task: applies snapshots in order until every sender is gone.
pub(super) async fn writer(store: Store, mut rx: mpsc::Receiver<Write>) {
    let mut written: HashMap<String, Written> = HashMap::new();
    while let Some(work) = rx.recv().await {
        match work {
            Write::Save(t) => {
                let prev = written.entry(t.call_sid.clone()).or_default();
                if let Err(e) = store.write_snapshot(prev, &t).await {
                    store.failed("writing transcript turns", &e);
                    // Unknown what landed: write everything next time.
                    written.remove(&t.call_sid);
                }
            }
            Write::Finish(t, done) => {
                let mut prev = written.remove(&t.call_sid).unwrap_or_default();
                let stored = store.write_snapshot(&mut prev, &t).await;
                if let Err(e) = &stored {
                    store.failed("storing a transcript", e);
                }
                let path = store.export(&t, stored.is_ok()).await;
                if let Some(path) = &path {
                    info!(path = %path.display(), turns = t.turns.len(), "transcript exported");
                }
                let _ = done.send(path);
            }
        }
    }
}
