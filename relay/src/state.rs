//! The state every request and session shares: configuration, the relay key, rooms, metrics,
//! the log, and admission control (per-IP and total session counts, released by
//! [`AdmissionGuard`] when a session ends). `server` builds it, `session` uses it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use shoal_proto::identity::Keypair;
use shoal_proto::{ErrorCode, SessionLimits};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::log::LogState;
use crate::metrics::Metrics;
use crate::rooms::Rooms;

/// State shared by every request and session. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The contents of [`AppState`].
pub struct Inner {
    /// Resolved configuration.
    pub config: Config,
    /// The relay's Ed25519 identity.
    pub relay_key: Keypair,
    /// Rooms and members.
    pub rooms: Rooms,
    /// Metrics.
    pub metrics: Metrics,
    /// Cancelled on shutdown: sessions say `ShuttingDown` and close.
    pub shutdown: CancellationToken,
    /// Every session task, for draining.
    pub tracker: TaskTracker,
    /// The transparency log and witness (`None` only in tests that build a bare state).
    pub log: Option<LogState>,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    total: AtomicUsize,
    next_id: AtomicU64,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Build the state for `config` with the given relay key.
    pub fn new(config: Config, relay_key: Keypair) -> Self {
        Self::with_log(config, relay_key, None)
    }

    /// Build the state with the log mounted (see [`open_log`]).
    pub fn with_log(config: Config, relay_key: Keypair, log: Option<LogState>) -> Self {
        AppState(Arc::new(Inner {
            log,
            config,
            relay_key,
            rooms: Rooms::default(),
            metrics: Metrics::new(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            per_ip: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        }))
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Open sessions (handshaking included).
    pub fn session_count(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// The limits as told to nodes in `Welcome`.
    pub fn session_limits(&self) -> SessionLimits {
        let l = &self.config.limits;
        SessionLimits {
            max_frame: l.max_frame_bytes as u32,
            max_payload: (l.max_frame_bytes.saturating_sub(80)).min(shoal_proto::MAX_PAYLOAD_LEN)
                as u32,
            max_rooms: l.max_rooms_per_session.min(u16::MAX as usize) as u16,
            max_members: l.max_members_per_room.min(u32::MAX as usize) as u32,
            msgs_per_sec: l.msgs_per_sec,
            bytes_per_sec: l.bytes_per_sec,
            idle_timeout_ms: l.idle_timeout_ms.min(u64::from(u32::MAX)) as u32,
        }
    }

    /// Take a session slot for `ip`, or say which limit refuses it.
    pub fn admit(&self, ip: IpAddr) -> Result<AdmissionGuard, ErrorCode> {
        let l = &self.config.limits;
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if self.total.load(Ordering::Acquire) >= l.max_sessions {
            return Err(ErrorCode::RelayFull);
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n as usize >= l.max_sessions_per_ip {
            return Err(ErrorCode::TooManySessionsFromAddress);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        self.metrics.sessions.inc();
        Ok(AdmissionGuard {
            state: self.clone(),
            ip,
        })
    }

    pub(crate) fn release(&self, ip: IpAddr) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
        self.total.fetch_sub(1, Ordering::AcqRel);
        self.metrics.sessions.dec();
    }
}

/// Releases the admission slot (per-IP and total counters) when the session ends.
pub struct AdmissionGuard {
    pub(crate) state: AppState,
    pub(crate) ip: IpAddr,
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        self.state.release(self.ip);
    }
}
