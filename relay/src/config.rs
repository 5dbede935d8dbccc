//! Configuration: defaults ← optional TOML file ← environment (`SHOAL_RELAY_*`) ← flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

/// Every enforced limit. Defaults are sized for a 2-core relay holding ~10k signaling sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame accepted from a session, bytes (≤ 65536, the protocol cap). Larger: `TooLarge`.
    pub max_frame_bytes: usize,
    /// Sustained frames per second per session (token bucket refill). Over: `RateLimited`, frame dropped.
    pub msgs_per_sec: u32,
    /// Frame bucket capacity (burst).
    pub msgs_burst: u32,
    /// Sustained bytes per second per session. Over: `RateLimited`, frame dropped.
    pub bytes_per_sec: u32,
    /// Byte bucket capacity (burst); at least `max_frame_bytes`.
    pub bytes_burst: u32,
    /// Rooms one session may be in. Over: `TooManyRooms`.
    pub max_rooms_per_session: usize,
    /// Members one room may hold. Over: `RoomFull`.
    pub max_members_per_room: usize,
    /// Concurrent sessions from one IP address. Over: `TooManySessionsFromAddress`, closed.
    pub max_sessions_per_ip: usize,
    /// Concurrent sessions in total. Over: `RelayFull`, closed.
    pub max_sessions: usize,
    /// Close a session silent for this long (ms); the relay pings at half of it. `IdleTimeout`.
    pub idle_timeout_ms: u64,
    /// Complete Hello/Auth within this long (ms) after the upgrade. `HandshakeTimeout`.
    pub handshake_timeout_ms: u64,
    /// Frames queued towards one session; a full queue means a slow reader: `SlowReader`, dropped.
    pub send_queue: usize,
    /// A single write to a session's socket taking longer than this (ms) is also `SlowReader`.
    pub write_timeout_ms: u64,
    /// Protocol errors tolerated per 10 s before `TooManyErrors` and a close.
    pub max_violations: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            msgs_per_sec: 50,
            msgs_burst: 200,
            bytes_per_sec: 256 * 1024,
            bytes_burst: 512 * 1024,
            max_rooms_per_session: 16,
            max_members_per_room: 128,
            max_sessions_per_ip: 256,
            max_sessions: 20_000,
            idle_timeout_ms: 60_000,
            handshake_timeout_ms: 10_000,
            send_queue: 64,
            write_timeout_ms: 10_000,
            max_violations: 16,
        }
    }
}

impl Limits {
    /// Clamp nonsense values (zero capacities, frames above the protocol cap).
    pub fn normalized(mut self) -> Self {
        self.max_frame_bytes = self
            .max_frame_bytes
            .clamp(256, node_lite::proto::MAX_FRAME_LEN);
        self.msgs_per_sec = self.msgs_per_sec.max(1);
        self.msgs_burst = self.msgs_burst.max(1);
        self.bytes_per_sec = self.bytes_per_sec.max(1);
        self.bytes_burst = self.bytes_burst.max(1);
        self.max_sessions_per_ip = self.max_sessions_per_ip.max(1);
        self.max_sessions = self.max_sessions.max(1);
        self.send_queue = self.send_queue.max(1);
        self.idle_timeout_ms = self.idle_timeout_ms.max(100);
        self.handshake_timeout_ms = self.handshake_timeout_ms.max(100);
        self.write_timeout_ms = self.write_timeout_ms.max(10);
        self
    }

    /// Idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    /// Handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// Write timeout as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

/// The relay's whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory for the relay key (and, later, the log).
    pub data_dir: PathBuf,
    /// Serve this directory (the built app) at `/`.
    pub web_root: Option<PathBuf>,
    /// How long to wait for sessions to drain on shutdown (ms).
    pub shutdown_grace_ms: u64,
    /// Limits.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("relay-data"),
            web_root: None,
            shutdown_grace_ms: 5_000,
            limits: Limits::default(),
        }
    }
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("parsing config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

impl Config {
    /// Load a TOML file (every key optional; unknown keys are errors).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

/// Command line of `shoal-relay`. Every flag also reads `SHOAL_RELAY_<NAME>`.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-relay",
    version,
    about = "Shoal relay: WebSocket signaling for Shoal nodes"
)]
pub struct Args {
    /// TOML config file (flags and env override it).
    #[arg(long, env = "SHOAL_RELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 0.0.0.0:7070.
    #[arg(long, env = "SHOAL_RELAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory (relay key).
    #[arg(long, env = "SHOAL_RELAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Serve the built app from this directory.
    #[arg(long, env = "SHOAL_RELAY_WEB_ROOT")]
    pub web_root: Option<PathBuf>,
    /// Drain time on shutdown, ms.
    #[arg(long, env = "SHOAL_RELAY_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `shoal_relay=debug`.
    #[arg(long, env = "SHOAL_RELAY_LOG", default_value = "info")]
    pub log: String,
    #[arg(long, env = "SHOAL_RELAY_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    #[arg(long, env = "SHOAL_RELAY_MSGS_PER_SEC")]
    pub msgs_per_sec: Option<u32>,
    #[arg(long, env = "SHOAL_RELAY_MSGS_BURST")]
    pub msgs_burst: Option<u32>,
    #[arg(long, env = "SHOAL_RELAY_BYTES_PER_SEC")]
    pub bytes_per_sec: Option<u32>,
    #[arg(long, env = "SHOAL_RELAY_BYTES_BURST")]
    pub bytes_burst: Option<u32>,
    #[arg(long, env = "SHOAL_RELAY_MAX_ROOMS_PER_SESSION")]
    pub max_rooms_per_session: Option<usize>,
    #[arg(long, env = "SHOAL_RELAY_MAX_MEMBERS_PER_ROOM")]
    pub max_members_per_room: Option<usize>,
    #[arg(long, env = "SHOAL_RELAY_MAX_SESSIONS_PER_IP")]
    pub max_sessions_per_ip: Option<usize>,
    #[arg(long, env = "SHOAL_RELAY_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    #[arg(long, env = "SHOAL_RELAY_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    #[arg(long, env = "SHOAL_RELAY_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    #[arg(long, env = "SHOAL_RELAY_SEND_QUEUE")]
    pub send_queue: Option<usize>,
    #[arg(long, env = "SHOAL_RELAY_WRITE_TIMEOUT_MS")]
    pub write_timeout_ms: Option<u64>,
    #[arg(long, env = "SHOAL_RELAY_MAX_VIOLATIONS")]
    pub max_violations: Option<u32>,
}

impl Args {
    /// Resolve defaults ← file ← env/flags.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($dst:expr, $src:expr) => {
                if let Some(v) = $src.clone() {
                    $dst = v;
                }
            };
        }
        set!(c.listen, self.listen);
        set!(c.data_dir, self.data_dir);
        if self.web_root.is_some() {
            c.web_root = self.web_root.clone();
        }
        set!(c.shutdown_grace_ms, self.shutdown_grace_ms);
        let l = &mut c.limits;
        set!(l.max_frame_bytes, self.max_frame_bytes);
        set!(l.msgs_per_sec, self.msgs_per_sec);
        set!(l.msgs_burst, self.msgs_burst);
        set!(l.bytes_per_sec, self.bytes_per_sec);
        set!(l.bytes_burst, self.bytes_burst);
        set!(l.max_rooms_per_session, self.max_rooms_per_session);
        set!(l.max_members_per_room, self.max_members_per_room);
        set!(l.max_sessions_per_ip, self.max_sessions_per_ip);
        set!(l.max_sessions, self.max_sessions);
        set!(l.idle_timeout_ms, self.idle_timeout_ms);
        set!(l.handshake_timeout_ms, self.handshake_timeout_ms);
        set!(l.send_queue, self.send_queue);
        set!(l.write_timeout_ms, self.write_timeout_ms);
        set!(l.max_violations, self.max_violations);
        c.limits = c.limits.clone().normalized();
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("relay.toml");
        std::fs::write(
            &p,
            "listen = \"127.0.0.1:9000\"\n[limits]\nmsgs_per_sec = 7\nmax_sessions = 3\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "shoal-relay",
            "--config",
            p.to_str().unwrap(),
            "--max-sessions",
            "5",
        ]);
        let c = args.resolve().unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.limits.msgs_per_sec, 7);
        assert_eq!(c.limits.max_sessions, 5);
        assert_eq!(c.limits.send_queue, Limits::default().send_queue);
        std::fs::write(&p, "bogus = 1\n").unwrap();
        assert!(
            Args::parse_from(["x", "--config", p.to_str().unwrap()])
                .resolve()
                .is_err()
        );
    }
}
