//! Throw-away PostgreSQL databases for tests and benchmarks: `TEST_DATABASE_URL` names a
//! server (e.g. `postgres://postgres@127.0.0.1:5432/postgres`); each scratch database gets a
//! random name and is dropped with [`Scratch::drop_database`]. Not used by the relay itself.

use anyhow::Context;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// One scratch database on the `TEST_DATABASE_URL` server.
#[derive(Debug)]
pub struct Scratch {
    /// `postgres://…/relay_test_<32 hex>`, for `DATABASE_URL`.
    pub url: String,
    admin: String,
    name: String,
}

/// A new empty database, or `None` (after printing that the test is skipped) when
/// `TEST_DATABASE_URL` is unset.
///
/// # Errors
/// The server cannot be reached or refuses `CREATE DATABASE`.
pub async fn postgres(test: &str) -> anyhow::Result<Option<Scratch>> {
    let Ok(admin) = std::env::var("TEST_DATABASE_URL") else {
        eprintln!("{test}: skipped (set TEST_DATABASE_URL to run the PostgreSQL tests)");
        return Ok(None);
    };
    let name = format!("relay_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin)
        .await
        .with_context(|| format!("TEST_DATABASE_URL: connecting to {admin}"))?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .context("CREATE DATABASE")?;
    let mut url = reqwest::Url::parse(&admin).context("TEST_DATABASE_URL is not a URL")?;
    url.set_path(&format!("/{name}"));
    Ok(Some(Scratch {
        url: url.to_string(),
        admin,
        name,
    }))
}

impl Scratch {
    /// The database's name, `relay_test_<32 hex>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drop the database, closing whatever still holds a connection to it.
    ///
    /// # Errors
    /// The server cannot be reached or refuses `DROP DATABASE`.
    pub async fn drop_database(self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(&self.admin).await?;
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}
