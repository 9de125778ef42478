//! The store: call records, transcripts (one row per turn), tool calls, outbound calls'
//! settings and the instance registry, in SQLite (one instance, the default) or PostgreSQL
//! (several instances sharing one database), through sqlx.
//!
//! One [`Store`] serves both engines with the same SQL (`$1` placeholders, `ON CONFLICT`,
//! `RETURNING`); the few differences (row locks) are named where they occur. Migrations are
//! embedded (`migrations/sqlite`, `migrations/postgres`) and run on first use. Every operation
//! has a timeout; a failure is logged, counted as `errors_total{kind="storage"}` by the caller
//! that handles it, and never ends a call.

mod calls;
mod history;
mod instances;
mod settings;
mod turns;

pub mod import;
pub mod scratch;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tokio::sync::{mpsc, OnceCell};
use tracing::warn;

use crate::config::{Config, TranscriptExport};
use crate::events::EventHub;
use crate::stats::{ErrorKind, Stats};

use calls::{decode, Row};
pub use history::{Cursor, HistoryFilter};
pub use instances::InstanceRow;

/// Longest any one store operation may take before it is given up (and counted), ms.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `/health` reuses its last database ping.
const HEALTH_CACHE: Duration = Duration::from_millis(1500);
/// Transcript snapshots queued for the writer task, at most; see [`Store::save_transcript`].
pub const WRITE_QUEUE: usize = 4096;

/// The two engines.
#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run `$body` with `$p` bound to the engine's pool and `$pg` true on PostgreSQL. The body is
/// compiled once per engine, so the same query text serves both.
macro_rules! on_pool {
    ($pool:expr, $p:ident, $pg:ident => $body:expr) => {
        match $pool {
            $crate::store::Pool::Sqlite($p) => {
                #[allow(unused_variables)]
                let $pg = false;
                $body
            }
            $crate::store::Pool::Postgres($p) => {
                #[allow(unused_variables)]
                let $pg = true;
                $body
            }
        }
    };
}
pub(crate) use on_pool;

/// Check `DATABASE_URL`: `sqlite://…` or `postgres://…` (`postgresql://`) that sqlx can parse.
///
/// # Errors
/// The reason, for the configuration error naming `DATABASE_URL`.
pub fn check_url(url: &str) -> Result<(), String> {
    connect_options(url).map(|_| ())
}

enum Options {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

fn connect_options(url: &str) -> Result<Options, String> {
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| format!("{url:?} is not an SQLite URL: {e}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with synchronous=NORMAL: durable at every checkpoint, no fsync per write.
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(1));
        Ok(Options::Sqlite(options))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        PgConnectOptions::from_str(url)
            .map(Options::Postgres)
            .map_err(|e| format!("not a PostgreSQL URL: {e}"))
    } else {
        Err("must start with sqlite:// or postgres://".into())
    }
}

/// The one store. Cheap to clone; every clone shares the pool and the writer task.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// The SQLite file's directory, created before the first connection.
    sqlite_dir: Option<std::path::PathBuf>,
    /// Migrations run and the writer task started, once.
    ready: OnceCell<()>,
    stats: Stats,
    events: EventHub,
    instance_id: String,
    address: String,
    export: Option<std::path::PathBuf>,
    heartbeat: Duration,
    writes: mpsc::Sender<turns::Write>,
    /// Taken by the writer task when it starts.
    write_rx: Mutex<Option<mpsc::Receiver<turns::Write>>>,
    /// The last `/health` ping: when, and whether it answered.
    health: Mutex<Option<(Instant, bool)>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.engine())
            .field("instance_id", &self.inner.instance_id)
            .finish()
    }
}

impl Store {
    /// A store for `config.database_url`. Nothing connects yet: the pool connects, the SQLite
    /// file (and its directory) is created and migrations run on first use, or on
    /// [`Store::start`]. Failed operations are counted in `stats`; records closed by crash
    /// recovery publish `call.ended` on `events`.
    ///
    /// # Errors
    /// `DATABASE_URL` is not a URL of either engine (checked by `Config::validate` too).
    pub fn open(config: &Config, stats: Stats, events: EventHub) -> anyhow::Result<Store> {
        let options = connect_options(&config.database_url)
            .map_err(|reason| anyhow::anyhow!("DATABASE_URL: {reason}"))?;
        let (pool, sqlite_dir) = match options {
            Options::Sqlite(o) => {
                let dir = o.get_filename().parent().map(|d| d.to_path_buf());
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(3))
                    .connect_lazy_with(o);
                (Pool::Sqlite(pool), dir)
            }
            Options::Postgres(o) => {
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(3))
                    .connect_lazy_with(o);
                (Pool::Postgres(pool), None)
            }
        };
        let instance_id = config.instance_id.clone().unwrap_or_else(|| {
            format!("relay-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
        });
        let address = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}:{}", config.host, config.port));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        Ok(Store {
            inner: Arc::new(Inner {
                pool,
                sqlite_dir,
                ready: OnceCell::new(),
                stats,
                events,
                instance_id,
                address,
                export: (config.transcript_export == TranscriptExport::Json)
                    .then(|| config.transcript_dir.clone()),
                heartbeat: Duration::from_secs(config.instance_heartbeat_secs.max(1)),
                writes: tx,
                write_rx: Mutex::new(Some(rx)),
                health: Mutex::new(None),
            }),
        })
    }

    /// `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        match self.inner.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// This instance's id in the registry (`INSTANCE_ID` or generated).
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// Connect, create the SQLite file, run the embedded migrations and start the writer task,
    /// once; later calls return at once. A failure is returned (and retried by the next call).
    ///
    /// # Errors
    /// The database cannot be reached or created, or a migration failed.
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.inner
            .ready
            .get_or_try_init(|| async {
                if let Some(dir) = &self.inner.sqlite_dir {
                    if !dir.as_os_str().is_empty() {
                        tokio::fs::create_dir_all(dir)
                            .await
                            .with_context(|| format!("DATABASE_URL: creating {}", dir.display()))?;
                    }
                }
                let migrate = async {
                    on_pool!(&self.inner.pool, p, pg => {
                        if pg {
                            sqlx::migrate!("migrations/postgres").run(p).await
                        } else {
                            sqlx::migrate!("migrations/sqlite").run(p).await
                        }
                    })
                };
                tokio::time::timeout(OP_TIMEOUT * 2, migrate)
                    .await
                    .context("DATABASE_URL: migrations timed out")?
                    .context("DATABASE_URL: running migrations")?;
                let rx = self.inner.write_rx.lock().expect("writer lock").take();
                if let Some(rx) = rx {
                    tokio::spawn(turns::writer(self.clone(), rx));
                }
                anyhow::Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Run `op` against the pool after [`Store::ready`], within [`OP_TIMEOUT`].
    async fn run<T, F>(&self, what: &str, op: F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        self.ready().await?;
        self.run_ready(what, op).await
    }

    /// [`Store::run`] for callers already past [`Store::ready`] (the writer task, which
    /// `ready` starts: calling it again from there would make the future's type recursive).
    async fn run_ready<T, F>(&self, what: &str, op: F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        tokio::time::timeout(OP_TIMEOUT, op)
            .await
            .with_context(|| format!("{what}: the database did not answer within {OP_TIMEOUT:?}"))?
            .with_context(|| what.to_string())
    }

    /// Count and log a failed operation once, where it is handled.
    pub fn failed(&self, what: &str, error: &anyhow::Error) {
        self.inner.stats.error(ErrorKind::Storage);
        warn!(
            engine = self.engine(),
            error = format!("{error:#}"),
            "store: {what} failed"
        );
    }

    /// Whether the database answers a trivial query within a second; the answer is reused for
    /// 1.5 s so `/health` stays cheap under polling.
    pub async fn healthy(&self) -> bool {
        if let Some((at, ok)) = *self.inner.health.lock().expect("health lock") {
            if at.elapsed() < HEALTH_CACHE {
                return ok;
            }
        }
        let ping = async {
            self.ready().await?;
            on_pool!(&self.inner.pool, p, _pg => {
                sqlx::query("SELECT 1").execute(p).await.map(|_| ())
            })?;
            anyhow::Ok(())
        };
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(1), ping).await,
            Ok(Ok(()))
        );
        *self.inner.health.lock().expect("health lock") = Some((Instant::now(), ok));
        ok
    }
}

/// Milliseconds since the Unix epoch.
fn ms(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

/// The instant `ms` milliseconds after the Unix epoch.
fn from_ms(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests;
