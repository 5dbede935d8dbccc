//! Shared state, the HTTP router, admission control and the serve/shutdown lifecycle.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shoal_proto::identity::Keypair;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::log::{Equivocate, Log, LogConfig, LogState, Witness};
use crate::session;
use shoal_tlog::note::{KeypairSigner, NoteSigner as _};

/// Errors starting the relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Filesystem trouble with the data directory or key.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done, e.g. `creating data dir` (the message's first words).
        what: &'static str,
        /// The file or directory involved.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The key file exists but is not a 32-byte seed.
    #[error("relay key {path} is invalid: {reason}")]
    BadKey {
        /// The key file, `data_dir/relay.key`.
        path: std::path::PathBuf,
        /// Why the seed was refused (wrong length) or could not be generated.
        reason: String,
    },
    /// Binding the listen address failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The configured listen address.
        addr: SocketAddr,
        /// The operating system's error (address in use, permission denied).
        source: std::io::Error,
    },
    /// Bad log / witness configuration (name, peers).
    #[error("config: {0}")]
    Config(String),
    /// Opening the log failed.
    #[error("log: {0}")]
    Log(#[from] crate::log::LogError),
    /// Opening the witness state failed.
    #[error("witness: {0}")]
    Witness(#[from] crate::log::WitnessError),
}

pub use crate::state::{AppState, Inner};

/// Load the relay key from `data_dir/relay.key` (a raw 32-byte seed), creating it (mode 0600)
/// on first start.
pub fn load_or_create_key(data_dir: &Path) -> Result<Keypair, ServerError> {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + use<> {
        let path = path.to_owned();
        move |source| ServerError::Io { what, path, source }
    }
    std::fs::create_dir_all(data_dir).map_err(io("creating data dir", data_dir))?;
    let path = data_dir.join("relay.key");
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_seed_slice(&bytes).map_err(|e| ServerError::BadKey {
            path: path.clone(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let kp = Keypair::generate().map_err(|e| ServerError::BadKey {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                opts.mode(0o600);
            }
            use std::io::Write as _;
            let mut f = opts.open(&path).map_err(io("creating relay key", &path))?;
            f.write_all(kp.seed())
                .map_err(io("writing relay key", &path))?;
            f.sync_all().map_err(io("syncing relay key", &path))?;
            tracing::info!(relay = %kp.peer_id(), "generated a new relay key");
            Ok(kp)
        }
        Err(e) => Err(ServerError::Io {
            what: "reading relay key",
            path,
            source: e,
        }),
    }
}

/// The log key name (= checkpoint origin): `config.log.name`, or `shoal-relay/<peer id>`.
pub fn log_name(config: &Config, key: &Keypair) -> String {
    config
        .log
        .name
        .clone()
        .unwrap_or_else(|| format!("shoal-relay/{}", key.peer_id()))
}

/// The relay identity as the signer of checkpoints and cosignatures (no second key).
pub fn note_signer(config: &Config, key: &Keypair) -> Result<Arc<KeypairSigner>, ServerError> {
    let name = log_name(config, key);
    KeypairSigner::new(&name, key.clone())
        .map(Arc::new)
        .map_err(|e| ServerError::Config(format!("log name {name:?}: {e}")))
}

/// Opens the log (`DATA_DIR/log.redb`) and the witness state (`DATA_DIR/witness.redb`,
/// witnessing the configured peers), signing with the relay key. Returns the state the
/// routes and sessions use, and the parsed peers.
pub fn open_log(
    config: &Config,
    key: &Keypair,
) -> Result<(LogState, Vec<crate::log::peers::Peer>), ServerError> {
    let signer = note_signer(config, key)?;
    let origin = signer.name().to_owned();
    let peers = config
        .log
        .peers
        .iter()
        .map(crate::log::peers::Peer::from_config)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ServerError::Config)?;
    if let Some(p) = peers.iter().find(|p| p.log_key.name == origin) {
        return Err(ServerError::Config(format!(
            "peer {} has this relay's own origin {origin:?}",
            p.url
        )));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::Io {
        what: "creating data dir",
        path: config.data_dir.clone(),
        source,
    })?;
    let wait = Duration::from_secs(5);
    let log = Log::open_retry(
        &config.data_dir.join("log.redb"),
        LogConfig::new(&origin),
        signer.clone(),
        wait,
    )?;
    let witness = Witness::open_retry(
        &config.data_dir.join("witness.redb"),
        signer.clone(),
        peers.iter().map(|p| p.log_key.clone()).collect(),
        wait,
    )?;
    let mut state = LogState::new(log, Some(witness));
    state.keys = Some(Arc::new(crate::log::http::LogKeys {
        log: signer.verifier_key(),
        witnesses: peers
            .iter()
            .filter_map(|p| {
                shoal_tlog::checkpoint::CosignatureVerifier::new(
                    &p.log_key.name,
                    p.log_key.public_key,
                )
                .ok()
            })
            .map(|c| c.key_text())
            .collect(),
    }));
    if config.log.test_equivocate {
        tracing::warn!("TEST HOOK: this relay will equivocate on purpose (--test-equivocate)");
        state.test_equivocate = Some(Equivocate {
            signer,
            after_cosignatures: peers.len(),
        });
    }
    Ok((state, peers))
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(l) = &state.log {
        let m = &state.metrics;
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        m.log_size.set(clamp(l.log.committed().0));
        if let Some((size, _, cosigs)) = l.log.latest() {
            m.log_checkpoint_size.set(clamp(size));
            m.log_checkpoint_cosignatures.set(clamp(cosigs as u64));
        }
        if let Some(w) = &l.witness
            && let Ok(n) = w.equivocation_count()
        {
            m.witness_equivocation_proofs.set(clamp(n));
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn signal(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let l = &state.config.limits;
    let upgrade = upgrade
        // Small eager buffers: ~10k idle sessions must fit in ~16 KiB each. Larger frames
        // grow the buffer on demand.
        .read_buffer_size(2048)
        .write_buffer_size(0)
        .max_write_buffer_size(l.max_frame_bytes * 4)
        // Frames above our limit but within the protocol cap get a clear `TooLarge` error
        // frame; only frames above the protocol cap are cut off by the WebSocket layer.
        .max_message_size(shoal_proto::MAX_FRAME_LEN + 1024)
        .max_frame_size(shoal_proto::MAX_FRAME_LEN + 1024);
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let ip = addr.ip();
    tracing::debug!(%ip, "upgrade");
    match state.admit(ip) {
        Ok(guard) => {
            let st = state.clone();
            upgrade
                .on_upgrade(move |ws| st.tracker.track_future(session::run(ws, st.clone(), guard)))
        }
        Err(code) => {
            let st = state.clone();
            upgrade.on_upgrade(move |ws| {
                st.tracker
                    .track_future(session::refuse(ws, st.clone(), code))
            })
        }
    }
}

/// The relay's HTTP surface: `/v1/signal`, `/healthz`, `/metrics`, the transparency log and
/// witness under `/log/...` (if the state has a log), and the app if `web_root` is set.
pub fn router(state: AppState) -> Router {
    let mut r: Router = Router::new()
        .route("/v1/signal", get(signal))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    if let Some(log) = &state.log {
        r = r.merge(crate::log::routes(log.clone()));
    }
    if let Some(root) = &state.config.web_root {
        r = r.fallback_service(crate::web::static_files(root));
    }
    r.layer(crate::web::security_headers())
}

/// A running relay (used by `main` and by tests).
pub struct Relay {
    /// The bound address.
    pub addr: SocketAddr,
    /// Shared state.
    pub state: AppState,
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl Relay {
    /// Bind `config.listen` and start serving.
    pub async fn start(config: Config) -> Result<Relay, ServerError> {
        let key = load_or_create_key(&config.data_dir)?;
        let listener = bind(config.listen)?;
        Self::start_on(listener, config, key)
    }

    /// Serve on an already-bound listener.
    pub fn start_on(
        listener: TcpListener,
        config: Config,
        key: Keypair,
    ) -> Result<Relay, ServerError> {
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let (log, peers) = open_log(&config, &key)?;
        let interval = Duration::from_millis(config.log.checkpoint_interval_ms);
        log.log.spawn_checkpointer(interval);
        let state = AppState::with_log(config, key, Some(log.clone()));
        if let Some(w) = &log.witness {
            crate::log::peers::spawn(
                peers,
                log.log.clone(),
                w.clone(),
                &state.config.log,
                state.metrics.witness_rounds.clone(),
                state.shutdown.clone(),
                &state.tracker,
            );
        }
        let stop = CancellationToken::new();
        let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let st = state.clone();
        let stop2 = stop.clone();
        let task = tokio::spawn(async move {
            let shutdown = st.shutdown.clone();
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                stop2.cancelled().await;
                // Stop accepting and tell every session at the same moment.
                shutdown.cancel();
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "server error");
            }
        });
        tracing::info!(
            %addr,
            relay = %state.relay_key.peer_id(),
            origin = %log.log.origin(),
            "relay listening"
        );
        Ok(Relay {
            addr,
            state,
            task,
            stop,
        })
    }

    /// Graceful shutdown: stop accepting, tell sessions (`ShuttingDown`), drain within the grace period.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.state.shutdown.cancel();
        let grace = Duration::from_millis(self.state.config.shutdown_grace_ms);
        let _ = tokio::time::timeout(grace, self.task).await;
        self.state.tracker.close();
        if tokio::time::timeout(grace, self.state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.state.session_count(),
                "sessions still open after the grace period"
            );
        }
        tracing::info!("relay stopped");
    }

    /// Run until `signal` resolves, then shut down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        tracing::info!("shutdown requested");
        self.shutdown().await;
    }
}

/// Bind with `SO_REUSEADDR` so a restarted relay gets its port back at once.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    sock.set_reuseaddr(true).map_err(err)?;
    sock.bind(addr).map_err(err)?;
    sock.listen(4096).map_err(err)
}
