//! A PostgreSQL database of its own for each test, from `TEST_DATABASE_URL` (dropped afterwards,
//! even when the test fails). Without `TEST_DATABASE_URL` the test says it was skipped.

use sqlx::{Connection, Executor, PgConnection};

/// A fresh database, `relay_test_<random>`, on the server of `TEST_DATABASE_URL`.
pub struct TestDb {
    /// `postgres://…/relay_test_<random>`.
    pub url: String,
    pub name: String,
    admin: String,
}

impl TestDb {
    /// Create one; `None` (after printing that `test` was skipped) without `TEST_DATABASE_URL`.
    pub async fn create(test: &str) -> Option<TestDb> {
        let Ok(admin) = std::env::var("TEST_DATABASE_URL") else {
            println!("skipped {test}: TEST_DATABASE_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/postgres)");
            return None;
        };
        let name = format!("relay_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("TEST_DATABASE_URL reachable");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("CREATE DATABASE");
        let base = admin.split('?').next().expect("split yields one part");
        let (server, _) = base
            .rsplit_once('/')
            .expect("TEST_DATABASE_URL names a database");
        Some(TestDb {
            url: format!("{server}/{name}"),
            name,
            admin,
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
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot block on its own future.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut conn = PgConnection::connect(&admin).await?;
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await
                .map(|_| ())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
