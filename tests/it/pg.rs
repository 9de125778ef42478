//! A PostgreSQL database of its own for each test, from `TEST_DATABASE_URL` (dropped afterwards,
//! even when the test fails): [`scratch`]'s database, dropped by `Drop`. Without
//! `TEST_DATABASE_URL` the test says it was skipped.

use sqlx::{Connection, PgConnection};
use twilio_realtime_relay::store::scratch::{self, Scratch};

/// A fresh database, `relay_test_<random>`, on the server of `TEST_DATABASE_URL`.
pub struct TestDb {
    /// `postgres://…/relay_test_<random>`.
    pub url: String,
    pub name: String,
    scratch: Option<Scratch>,
}

impl TestDb {
    /// Create one; `None` (after printing that `test` was skipped) without `TEST_DATABASE_URL`.
    pub async fn create(test: &str) -> Option<TestDb> {
        let scratch = scratch::postgres(test)
            .await
            .expect("TEST_DATABASE_URL reachable")?;
        Some(TestDb {
            url: scratch.url.clone(),
            name: scratch.name().to_string(),
            scratch: Some(scratch),
        })
    }

    /// A connection to this database, for the test's own queries.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(scratch) = self.scratch.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot block on its own future.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(scratch.drop_database())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
