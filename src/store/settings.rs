//! Outbound calls' settings (`POST /api/calls`) until their stream starts, keyed by the
//! `CallRef` TwiML parameter. They stay server-side because TwiML parameters are limited to
//! 500 characters; `take` is one `DELETE … RETURNING`, so with several instances a placed
//! call's settings are applied once, by whichever instance its stream lands on.

use super::{ms, on_pool, Store};
use crate::active::CallSettings;

/// How long settings wait for their call's stream (calls ring for at most a minute or two), ms.
const SETTINGS_TTL_MS: i64 = 3_600_000;

impl Store {
    /// Keep `settings` under a fresh reference (32 hex digits) and return it. Entries older
    /// than an hour are pruned here.
    ///
    /// # Errors
    /// The database failed or timed out: the call should not be placed.
    pub async fn put_settings(&self, settings: &CallSettings) -> anyhow::Result<String> {
        let reference = uuid::Uuid::new_v4().simple().to_string();
        let json = serde_json::to_string(settings)?;
        let now = ms(chrono::Utc::now());
        self.run("keeping an outbound call's settings", async {
            on_pool!(&self.inner.pool, p, _pg => {
                sqlx::query("DELETE FROM call_settings WHERE created_at < $1")
                    .bind(now - SETTINGS_TTL_MS)
                    .execute(p)
                    .await?;
                sqlx::query("INSERT INTO call_settings (reference, created_at, settings) VALUES ($1, $2, $3)")
                    .bind(&reference)
                    .bind(now)
                    .bind(&json)
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected())
            })
        })
        .await?;
        Ok(reference)
    }

    /// Take the settings of `reference`: the first taker anywhere gets them, later ones `None`.
    ///
    /// # Errors
    /// The database failed or timed out, or the stored settings do not parse.
    pub async fn take_settings(&self, reference: &str) -> anyhow::Result<Option<CallSettings>> {
        let row: Option<(String,)> = self
            .run("taking an outbound call's settings", async {
                on_pool!(&self.inner.pool, p, _pg => {
                    sqlx::query_as("DELETE FROM call_settings WHERE reference = $1 RETURNING settings")
                        .bind(reference)
                        .fetch_optional(p)
                        .await
                })
            })
            .await?;
        Ok(row.map(|(json,)| serde_json::from_str(&json)).transpose()?)
    }
}
