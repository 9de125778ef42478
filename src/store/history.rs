//! The call history's query: records filtered by number, date range, direction and end reason,
//! newest first, a page at a time by keyset (`started_at`, `call_sid`) so a page costs its rows
//! whatever its depth. Filters on the record's JSON fields use each engine's JSON operator.

use super::{decode, on_pool, Row, Store};
use crate::records::CallRecord;

/// What the history shows. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Part of `from` or `to`.
    pub number: Option<String>,
    /// `started_at` at or after, ms since the epoch.
    pub from_ms: Option<i64>,
    /// `started_at` before, ms since the epoch.
    pub to_ms: Option<i64>,
    /// `inbound`, `outbound` (any `outbound-…`) or `fork`.
    pub direction: Option<String>,
    /// An `end_reason` string, e.g. `api_hangup`.
    pub end_reason: Option<String>,
}

/// Where a page starts: after (older than) or before (newer than) a row's `(started_at ms, call_sid)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Older(i64, String),
    Newer(i64, String),
}

enum Bind {
    Text(String),
    Int(i64),
}

impl Store {
    /// Up to `limit` records matching `filter`, newest first, from `cursor` (the first page
    /// without one).
    ///
    /// # Errors
    /// The database failed or timed out.
    pub async fn history(
        &self,
        filter: &HistoryFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> anyhow::Result<Vec<CallRecord>> {
        let postgres = self.engine() == "postgres";
        let json = |key: &str| {
            if postgres {
                format!("(record::jsonb ->> '{key}')")
            } else {
                format!("json_extract(record, '$.{key}')")
            }
        };
        let mut clauses: Vec<String> = Vec::new();
        let mut binds: Vec<Bind> = Vec::new();
        let next = |b: Bind, binds: &mut Vec<Bind>| {
            binds.push(b);
            format!("${}", binds.len())
        };
        if let Some(n) = &filter.number {
            let p = next(Bind::Text(format!("%{n}%")), &mut binds);
            clauses.push(format!(
                "(COALESCE({}, '') LIKE {p} OR COALESCE({}, '') LIKE {p})",
                json("from"),
                json("to")
            ));
        }
        if let Some(ms) = filter.from_ms {
            clauses.push(format!("started_at >= {}", next(Bind::Int(ms), &mut binds)));
        }
        if let Some(ms) = filter.to_ms {
            clauses.push(format!("started_at < {}", next(Bind::Int(ms), &mut binds)));
        }
        if let Some(d) = &filter.direction {
            let p = next(Bind::Text(format!("{d}%")), &mut binds);
            clauses.push(format!("{} LIKE {p}", json("direction")));
        }
        if let Some(r) = &filter.end_reason {
            let p = next(Bind::Text(r.clone()), &mut binds);
            clauses.push(format!("{} = {p}", json("end_reason")));
        }
        let order = match cursor {
            Some(Cursor::Older(at, sid)) => {
                let a = next(Bind::Int(*at), &mut binds);
                let s = next(Bind::Text(sid.clone()), &mut binds);
                clauses.push(format!(
                    "(started_at < {a} OR (started_at = {a} AND call_sid < {s}))"
                ));
                "DESC"
            }
            Some(Cursor::Newer(at, sid)) => {
                let a = next(Bind::Int(*at), &mut binds);
                let s = next(Bind::Text(sid.clone()), &mut binds);
                clauses.push(format!(
                    "(started_at > {a} OR (started_at = {a} AND call_sid > {s}))"
                ));
                "ASC"
            }
            None => "DESC",
        };
        let limit_p = next(
            Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
            &mut binds,
        );
        let filter_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT record, last_sequence FROM calls {filter_sql} \
             ORDER BY started_at {order}, call_sid {order} LIMIT {limit_p}"
        );
        let rows: Vec<Row> = self
            .run("listing the call history", async {
                on_pool!(&self.inner.pool, p, _pg => {
                    // Only fixed fragments and `$n` placeholders: every value is bound.
                    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
                    for b in &binds {
                        q = match b {
                            Bind::Text(t) => q.bind(t.clone()),
                            Bind::Int(i) => q.bind(*i),
                        };
                    }
                    q.fetch_all(p).await
                })
            })
            .await?;
        let mut records: Vec<CallRecord> =
            rows.into_iter().map(decode).collect::<Result<_, _>>()?;
        if matches!(cursor, Some(Cursor::Newer(..))) {
            records.reverse();
        }
        Ok(records)
    }
}
