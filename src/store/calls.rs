//! Call records in the store: read, list, and change one record in a transaction (a row lock on
//! PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so two instances changing one call never lose an update.

use super::{ms, on_pool, Store};
use crate::records::CallRecord;

/// The upsert of a record (`keep_existing`: leave a row already there), as a query to run on
/// either engine's connection. A macro, so one text serves both without sqlx's trait bounds.
macro_rules! upsert {
    ($record:expr, $keep_existing:expr) => {{
        let record: &CallRecord = $record;
        let sql = if $keep_existing {
            "INSERT INTO calls (call_sid, instance_id, status, ended, started_at, ended_at, last_sequence, record) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (call_sid) DO NOTHING"
        } else {
            "INSERT INTO calls (call_sid, instance_id, status, ended, started_at, ended_at, last_sequence, record) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (call_sid) DO UPDATE SET \
             instance_id = excluded.instance_id, status = excluded.status, ended = excluded.ended, \
             started_at = excluded.started_at, ended_at = excluded.ended_at, \
             last_sequence = excluded.last_sequence, record = excluded.record"
        };
        sqlx::query(sql)
            .bind(record.call_sid.clone())
            .bind(record.instance_id.clone())
            .bind(record.status.clone())
            .bind(i64::from(record.is_ended()))
            .bind(ms(record.started_at))
            .bind(record.ended_at.map(ms))
            .bind(record.last_sequence.map(|s| s.min(i64::MAX as u64) as i64))
            .bind(serde_json::to_string(record)?)
    }};
}

/// `record`, `last_sequence` of one row.
pub(super) type Row = (String, Option<i64>);

pub(super) fn decode((json, last_sequence): Row) -> anyhow::Result<CallRecord> {
    let mut record: CallRecord = serde_json::from_str(&json)?;
    record.last_sequence = last_sequence.map(|s| s.max(0) as u64);
    Ok(record)
}

impl Store {
    /// The record of `call_sid`, if any.
    ///
    /// # Errors
    /// The database failed or timed out, or the stored row is not a record.
    pub async fn get(&self, call_sid: &str) -> anyhow::Result<Option<CallRecord>> {
        let row: Option<Row> = self
            .run("reading a call record", async {
                on_pool!(&self.inner.pool, p, _pg => {
                    sqlx::query_as("SELECT record, last_sequence FROM calls WHERE call_sid = $1")
                        .bind(call_sid)
                        .fetch_optional(p)
                        .await
                })
            })
            .await?;
        row.map(decode).transpose()
    }

    /// Up to `limit` records: calls in progress first, then newest first (`calls_list` index).
    ///
    /// # Errors
    /// The database failed or timed out.
    pub async fn list(&self, limit: usize) -> anyhow::Result<Vec<CallRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<Row> = self
            .run("listing calls", async {
                on_pool!(&self.inner.pool, p, _pg => {
                    sqlx::query_as(
                        "SELECT record, last_sequence FROM calls \
                         ORDER BY ended, started_at DESC LIMIT $1",
                    )
                    .bind(limit)
                    .fetch_all(p)
                    .await
                })
            })
            .await?;
        rows.into_iter().map(decode).collect()
    }

    /// Change (or create with `create`) the record of `call_sid` in one transaction; returns it.
    ///
    /// # Errors
    /// The database failed or timed out: nothing was written.
    pub async fn try_update(
        &self,
        call_sid: &str,
        create: impl FnOnce() -> CallRecord,
        change: impl FnOnce(&mut CallRecord),
    ) -> anyhow::Result<Option<CallRecord>> {
        self.change(call_sid, Some(create), change).await
    }

    /// [`Store::try_update`], with a failure counted and logged: returns the record as changed
    /// (so the caller goes on with it) whether or not it was stored.
    pub async fn update(
        &self,
        call_sid: &str,
        create: impl FnOnce() -> CallRecord,
        change: impl FnOnce(&mut CallRecord),
    ) -> CallRecord {
        // Kept for the failure path: the closures are consumed by the attempt.
        let fallback = std::sync::Mutex::new(None::<CallRecord>);
        let result = self
            .change(
                call_sid,
                Some(|| {
                    let r = create();
                    *fallback.lock().expect("fallback lock") = Some(r.clone());
                    r
                }),
                change,
            )
            .await;
        match result {
            Ok(Some(record)) => record,
            Ok(None) => unreachable!("a record is created when missing"),
            Err(e) => {
                self.failed("writing a call record", &e);
                let mut record = fallback
                    .lock()
                    .expect("fallback lock")
                    .take()
                    .unwrap_or_else(|| CallRecord::new(call_sid, "inbound", "in-progress"));
                record.call_sid = call_sid.to_string();
                record
            }
        }
    }

    /// Change the record of `call_sid` if it exists; a failure is counted and logged.
    pub async fn update_existing(
        &self,
        call_sid: &str,
        change: impl FnOnce(&mut CallRecord),
    ) -> Option<CallRecord> {
        match self
            .change(call_sid, None::<fn() -> CallRecord>, change)
            .await
        {
            Ok(record) => record,
            Err(e) => {
                self.failed("writing a call record", &e);
                None
            }
        }
    }

    async fn change(
        &self,
        call_sid: &str,
        create: Option<impl FnOnce() -> CallRecord>,
        change: impl FnOnce(&mut CallRecord),
    ) -> anyhow::Result<Option<CallRecord>> {
        self.ready().await?;
        let work = async {
            on_pool!(&self.inner.pool, p, pg => {
                let mut tx = if pg { p.begin().await? } else { p.begin_with("BEGIN IMMEDIATE").await? };
                let sql = if pg {
                    "SELECT record, last_sequence FROM calls WHERE call_sid = $1 FOR UPDATE"
                } else {
                    "SELECT record, last_sequence FROM calls WHERE call_sid = $1"
                };
                let row: Option<Row> = sqlx::query_as(sql).bind(call_sid).fetch_optional(&mut *tx).await?;
                let mut record = match (row, create) {
                    (Some(row), _) => decode(row)?,
                    (None, Some(create)) => create(),
                    (None, None) => return anyhow::Ok(None),
                };
                change(&mut record);
                upsert!(&record, false).execute(&mut *tx).await?;
                tx.commit().await?;
                anyhow::Ok(Some(record))
            })
        };
        tokio::time::timeout(super::OP_TIMEOUT, work)
            .await
            .map_err(|_| {
                anyhow::anyhow!("the database did not answer within {:?}", super::OP_TIMEOUT)
            })?
    }

    /// Store `record` unless a record of its call is there already; returns whether it was added.
    ///
    /// # Errors
    /// The database failed or timed out.
    pub async fn insert_record_if_absent(&self, record: &CallRecord) -> anyhow::Result<bool> {
        self.ready().await?;
        let added = on_pool!(&self.inner.pool, p, _pg => {
            let mut tx = p.begin().await?;
            let added = upsert!(record, true).execute(&mut *tx).await?.rows_affected() > 0;
            tx.commit().await?;
            anyhow::Ok(added)
        })?;
        Ok(added)
    }
}
