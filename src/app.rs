//! Application state, the one router and the one serve function (used by `main`, `demo` and tests).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::info;

use std::sync::atomic::AtomicBool;

use crate::active::ActiveCalls;
use crate::api;
use crate::config::Config;
use crate::events::EventHub;
use crate::routes;
use crate::server::{self, HttpLimits};
use crate::stats::Stats;
use crate::store::Store;
use crate::twilio::rest::{TwilioAuth, TwilioRest};
use crate::{transcribe, transcript, verify};

/// Largest HTTP body accepted (Twilio webhooks are a few hundred bytes), bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Shared by every handler and call. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub stats: Stats,
    /// Cancelled when the server shuts down; each call holds a child token.
    pub shutdown: CancellationToken,
    /// Every call task, so shutdown can wait for upgraded sockets (axum does not).
    pub calls: TaskTracker,
    /// Call records, transcripts, outbound calls' settings, the instance registry.
    pub store: Store,
    /// Live per-call event feeds.
    pub events: EventHub,
    /// Calls in progress by CallSid.
    pub active: ActiveCalls,
    /// Twilio's REST API, when credentials are configured.
    pub twilio: Option<TwilioRest>,
    /// The tools calls may declare (`TOOLS_FILE`, built-ins).
    pub tools: Arc<crate::tools::Registry>,
    /// Set on SIGTERM/SIGINT: new calls are turned away while calls in progress finish.
    pub draining: Arc<AtomicBool>,
    /// Stream tokens already used (a token opens one stream).
    pub stream_tokens: crate::twilio::stream_token::TokenLedger,
    /// The link to the other instances when `DATABASE_URL` is PostgreSQL; set by
    /// [`AppState::start_cluster`].
    pub cluster: Option<crate::cluster::Cluster>,
}

impl AppState {
    /// State for `config` with fresh counters and the store of `DATABASE_URL` (connected on
    /// first use; [`serve`] registers the instance before serving).
    /// Temp files a crash left in `TRANSCRIPT_DIR` (and its `calls/`) are removed first.
    ///
    /// # Panics
    /// Outside a Tokio runtime (the pool's lazy connection needs one), or when `DATABASE_URL`
    /// is not an SQLite or PostgreSQL URL (`Config::validate` refuses those).
    pub fn new(config: Config) -> Self {
        let twilio = twilio_client(&config);
        for dir in [
            config.transcript_dir.clone(),
            config.transcript_dir.join("calls"),
        ] {
            let removed = transcript::remove_temp_files(&dir);
            if removed > 0 {
                info!(removed, dir = %dir.display(), "removed temp files an earlier run left");
            }
        }
        let stats = Stats::default();
        let events = EventHub::default();
        let store = Store::open(&config, stats.clone(), events.clone())
            .expect("DATABASE_URL is checked by Config::validate");
        AppState {
            active: ActiveCalls::default(),
            twilio,
            tools: Arc::new(crate::tools::Registry::new(&config)),
            draining: Arc::default(),
            stream_tokens: Default::default(),
            store,
            events,
            cluster: None,
            config: Arc::new(config),
            stats,
            shutdown: CancellationToken::new(),
            calls: TaskTracker::new(),
        }
    }
}

impl AppState {
    /// Join the other instances when `DATABASE_URL` is PostgreSQL (see [`crate::cluster`]);
    /// does nothing otherwise. Call once, before serving.
    ///
    /// # Errors
    /// PostgreSQL unreachable or refusing the migrations or `LISTEN`.
    pub async fn start_cluster(&mut self) -> anyhow::Result<()> {
        self.cluster = crate::cluster::Cluster::start(
            &self.config.database_url,
            self.events.clone(),
            self.active.clone(),
            self.stats.clone(),
            self.shutdown.clone(),
        )
        .await?;
        Ok(())
    }
}

/// The REST client for `config`, if Twilio credentials are set (API key preferred over the token).
fn twilio_client(config: &Config) -> Option<TwilioRest> {
    let account = config.twilio_account_sid.as_deref()?;
    let auth = match (
        &config.twilio_api_key_sid,
        &config.twilio_api_key_secret,
        &config.twilio_auth_token,
    ) {
        (Some(sid), Some(secret), _) => TwilioAuth::ApiKey {
            sid: sid.clone(),
            secret: secret.clone(),
        },
        (_, _, Some(token)) => TwilioAuth::AuthToken(token.clone()),
        _ => return None,
    };
    match TwilioRest::new(&config.twilio_api_base, account, auth) {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "TWILIO_ACCOUNT_SID/TWILIO_API_BASE: cannot build the Twilio client"
            );
            None
        }
    }
}

/// The HTTP surface. What Twilio calls (webhooks, status callback, stream upgrades) is behind
/// the `X-Twilio-Signature` check; `/api` is behind the bearer token; `/health` is open.
pub fn build_router(state: AppState) -> Router {
    let from_twilio = Router::new()
        .route(
            "/incoming-call",
            get(routes::incoming_call).post(routes::incoming_call),
        )
        .route("/media-stream", get(routes::media_stream))
        .route("/twilio/status", post(api::twilio_status))
        .route(
            "/transcribe-call",
            get(transcribe::transcribe_call).post(transcribe::transcribe_call),
        )
        .route(
            "/transcription-stream",
            get(transcribe::transcription_stream),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            verify::require_twilio_signature,
        ));
    Router::new()
        .merge(from_twilio)
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .merge(api::router(state.clone()))
        .merge(crate::console::router())
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        // Every 5xx is logged where it is decided, with its reason (`ApiError`, refused
        // upgrades); tower-http's own line ("response failed", at ERROR) would only repeat it.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(state)
}

/// Serve on an already-bound `listener` until `shutdown` resolves, then stop accepting, end the
/// calls in progress and wait for their tasks (transcripts written) before returning. HTTP
/// requests are under `HTTP_*` timeouts and `MAX_HTTP_CONNECTIONS` (see [`server`]); upgraded
/// calls are not.
///
/// Before serving, the instance registers in the store and closes its leftover calls
/// ([`Store::start`]; a store that cannot be reached is counted and retried by the heartbeat);
/// the heartbeat runs while this future does (dropping it, as a crash would, stops it).
///
/// # Errors
/// Only if the HTTP server's task panicked.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Err(e) = state.store.start().await {
        state.store.failed("registering this instance", &e);
    }
    let beat = CancellationToken::new();
    let _beat_guard = beat.clone().drop_guard();
    tokio::spawn(state.store.clone().run_heartbeat(beat.clone()));
    let app = build_router(state.clone());
    let stop_http = CancellationToken::new();
    let http = tokio::spawn(server::serve_http(
        listener,
        app,
        HttpLimits::from_config(&state.config),
        state.stats.clone(),
        stop_http.clone(),
    ));
    shutdown.await;
    // Drain: keep answering HTTP (webhooks hear the fallback, upgrades get 503) while the calls
    // in progress finish, up to the grace period; then end the rest cleanly.
    state.draining.store(true, Ordering::Relaxed);
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    info!(
        active = state.stats.active(),
        grace_s = grace.as_secs(),
        "shutting down: no new calls; waiting for calls in progress"
    );
    state.calls.close();
    if tokio::time::timeout(grace, state.calls.wait())
        .await
        .is_err()
    {
        info!(
            active = state.stats.active(),
            "grace period over: ending the remaining calls"
        );
        state.shutdown.cancel();
        state.calls.wait().await;
    }
    stop_http.cancel();
    http.await.map_err(std::io::Error::other)?;
    beat.cancel();
    state.store.stop().await;
    // Every call has ended: background tasks (the cluster's listener and sender) stop too.
    state.shutdown.cancel();
    Ok(())
}

/// `serve`: validate `config`, bind `HOST:PORT`, serve until SIGTERM/SIGINT.
pub async fn run_server(config: Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let config = config.validate()?;
    if let Some(shutdown) = config.model_shutdown() {
        tracing::warn!(
            model = shutdown.model,
            shutdown_date = shutdown.date,
            replacement = shutdown.replacement,
            "OPENAI_MODEL={} is announced for shutdown on {}: calls will stop being answered that day; set OPENAI_MODEL={}",
            shutdown.model,
            shutdown.date,
            shutdown.replacement
        );
    }
    if config.openai_configured() {
        info!(url = %config.realtime_url(), model = %config.openai_model, "calls will be bridged to the Realtime API");
    } else {
        tracing::warn!(
            "OPENAI_API_KEY is not set: calls will hear the fallback message and be hung up"
        );
    }
    match (config.twilio_auth_token.is_some(), config.twilio_validate_signature) {
        (true, true) if config.public_url.is_none() => tracing::warn!(
            "PUBLIC_URL is not set: Twilio signatures are checked against the request's Host header; set PUBLIC_URL to the URL Twilio calls"
        ),
        (true, true) => info!("requests from Twilio must carry a valid X-Twilio-Signature"),
        (true, false) => tracing::warn!(
            "TWILIO_VALIDATE_SIGNATURE=false: anyone who finds this server can open streams and spend your OpenAI credit; never run like this in production"
        ),
        (false, _) => tracing::warn!(
            "TWILIO_AUTH_TOKEN is not set: requests claiming to come from Twilio are NOT authenticated"
        ),
    }
    if let Some(variable) = config
        .transcribe
        .missing_key(config.openai_api_key.as_ref())
    {
        tracing::warn!(
            variable,
            backend = config.transcribe.transcribe_backend.name(),
            "the transcription backend's key is not set: forked calls will record a transcription gap"
        );
    }
    if config.api_token.is_none() {
        info!("API_TOKEN is not set: /api is disabled");
    }
    server::check_descriptor_limit(&config);
    tokio::fs::create_dir_all(&config.transcript_dir)
        .await
        .with_context(|| {
            format!(
                "TRANSCRIPT_DIR: cannot create {}",
                config.transcript_dir.display()
            )
        })?;
    let mut state = AppState::new(config);
    state
        .store
        .ready()
        .await
        .context("the store (DATABASE_URL) cannot be opened")?;
    state
        .start_cluster()
        .await
        .context("joining the other instances (DATABASE_URL)")?;
    let config = &state.config;
    let addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("HOST/PORT: cannot listen on {addr}"))?;
    let signal = shutdown_signal();
    info!(addr = %listener.local_addr()?, "listening; point your Twilio number's voice webhook at https://<public host>/incoming-call");
    serve(listener, state, signal).await?;
    info!("stopped");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what Fly, Render and Docker send).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // Installed now, not when first polled: `serve` registers the instance (database round
    // trips) before it waits on this, and a SIGTERM in that gap must drain, not kill.
    #[cfg(unix)]
    let streams = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (term, int) = streams;
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! { _ = wait(term) => {}, _ = wait(int) => {} }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
