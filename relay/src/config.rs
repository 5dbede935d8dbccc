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
        self.max_frame_bytes = self.max_frame_bytes.clamp(256, shoal_proto::MAX_FRAME_LEN);
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

/// A peer relay: this relay witnesses its log, and asks it to cosign this relay's checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Base URL of the peer, e.g. `http://relay-b.example:7070` (paths under `/log`).
    pub url: String,
    /// The peer's C2SP verifier key (`name+keyid+base64`, from `shoal-relay key`); the name is
    /// its checkpoint origin.
    pub key: String,
}

impl PeerConfig {
    /// Parses `"URL KEY"` (the `--peer` flag form).
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let mut it = s.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(url), Some(key), None) => Ok(PeerConfig {
                url: url.to_owned(),
                key: key.to_owned(),
            }),
            _ => Err(ConfigError::Peer(format!(
                "expected \"URL KEY\", got {:?}",
                s.chars().take(200).collect::<String>()
            ))),
        }
    }
}

/// The transparency log and the witness.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Key name in signed notes = checkpoint origin. Default `shoal-relay/<relay peer id>`.
    pub name: Option<String>,
    /// Sign a checkpoint this often (ms) if the tree grew.
    pub checkpoint_interval_ms: u64,
    /// Poll each peer this often (ms): witness its checkpoint, get ours cosigned.
    pub witness_poll_ms: u64,
    /// Timeout of one HTTP request to a peer (ms).
    pub witness_timeout_ms: u64,
    /// Upper bound of the exponential backoff after failures talking to a peer (ms).
    pub witness_backoff_max_ms: u64,
    /// Peer relays (at most [`MAX_PEERS`]).
    pub peers: Vec<PeerConfig>,
    /// TEST HOOK: serve a forked checkpoint (same size, other root, signed by the relay key)
    /// on `/log/checkpoint` once every peer cosigned the honest one. Makes this relay
    /// equivocate on purpose so tests can check that witnesses and clients catch it.
    #[serde(skip)]
    pub test_equivocate: bool,
}

/// Most peer relays (one background task each).
pub const MAX_PEERS: usize = 64;

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            name: None,
            checkpoint_interval_ms: 1_000,
            witness_poll_ms: 2_000,
            witness_timeout_ms: 5_000,
            witness_backoff_max_ms: 60_000,
            peers: Vec::new(),
            test_equivocate: false,
        }
    }
}

impl LogSettings {
    fn normalized(mut self) -> Self {
        self.checkpoint_interval_ms = self.checkpoint_interval_ms.max(10);
        self.witness_poll_ms = self.witness_poll_ms.max(10);
        self.witness_timeout_ms = self.witness_timeout_ms.max(100);
        self.witness_backoff_max_ms = self.witness_backoff_max_ms.max(self.witness_poll_ms);
        self
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
    /// Transparency log, witness and peers (`[log]` in TOML).
    pub log: LogSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("relay-data"),
            web_root: None,
            shutdown_grace_ms: 5_000,
            limits: Limits::default(),
            log: LogSettings::default(),
        }
    }
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// The `--config` path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("parsing config file {path}: {source}")]
    Parse {
        /// The `--config` path.
        path: PathBuf,
        /// The TOML error (with its line and column).
        source: toml::de::Error,
    },
    /// A `--peer` / `[[log.peers]]` entry is malformed or there are too many.
    #[error("peer: {0}")]
    Peer(String),
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
    about = "Shoal relay: WebSocket signaling, receipt transparency log and witness"
)]
pub struct Args {
    /// `key`: print the relay's verifier key and exit. No subcommand: run the relay.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML config file (flags and env override it).
    #[arg(long, env = "SHOAL_RELAY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 0.0.0.0:7070.
    #[arg(long, env = "SHOAL_RELAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory (relay key, log, witness state).
    #[arg(long, env = "SHOAL_RELAY_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Log key name = checkpoint origin (default `shoal-relay/<peer id>`).
    #[arg(long, env = "SHOAL_RELAY_LOG_NAME", global = true)]
    pub log_name: Option<String>,
    /// Checkpoint interval, ms.
    #[arg(long, env = "SHOAL_RELAY_CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<u64>,
    /// Poll interval per peer relay (witnessing, cosignatures), ms.
    #[arg(long, env = "SHOAL_RELAY_WITNESS_POLL_MS")]
    pub witness_poll_ms: Option<u64>,
    /// Timeout of one request to a peer relay, ms.
    #[arg(long, env = "SHOAL_RELAY_WITNESS_TIMEOUT_MS")]
    pub witness_timeout_ms: Option<u64>,
    /// Maximum backoff after failures talking to a peer, ms.
    #[arg(long, env = "SHOAL_RELAY_WITNESS_BACKOFF_MAX_MS")]
    pub witness_backoff_max_ms: Option<u64>,
    /// A peer relay as "URL KEY" (repeatable; env: comma-separated). Adds to the TOML list.
    #[arg(long = "peer", env = "SHOAL_RELAY_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Test hook (never in production): equivocate on purpose, see `LogSettings::test_equivocate`.
    #[arg(long, env = "SHOAL_RELAY_TEST_EQUIVOCATE", hide = true)]
    pub test_equivocate: bool,
    /// Serve the built app from this directory.
    #[arg(long, env = "SHOAL_RELAY_WEB_ROOT")]
    pub web_root: Option<PathBuf>,
    /// Drain time on shutdown, ms.
    #[arg(long, env = "SHOAL_RELAY_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `shoal_relay=debug`.
    #[arg(long, env = "SHOAL_RELAY_LOG", default_value = "info")]
    pub log: String,
    // The flags below override the `[limits]` keys of the same name (see `Limits`).
    /// Largest frame accepted from a session, bytes (≤ 65536).
    #[arg(long, env = "SHOAL_RELAY_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Sustained frames per second per session.
    #[arg(long, env = "SHOAL_RELAY_MSGS_PER_SEC")]
    pub msgs_per_sec: Option<u32>,
    /// Frame burst per session (token bucket capacity).
    #[arg(long, env = "SHOAL_RELAY_MSGS_BURST")]
    pub msgs_burst: Option<u32>,
    /// Sustained bytes per second per session.
    #[arg(long, env = "SHOAL_RELAY_BYTES_PER_SEC")]
    pub bytes_per_sec: Option<u32>,
    /// Byte burst per session (token bucket capacity).
    #[arg(long, env = "SHOAL_RELAY_BYTES_BURST")]
    pub bytes_burst: Option<u32>,
    /// Most rooms one session may be in.
    #[arg(long, env = "SHOAL_RELAY_MAX_ROOMS_PER_SESSION")]
    pub max_rooms_per_session: Option<usize>,
    /// Most members one room may hold.
    #[arg(long, env = "SHOAL_RELAY_MAX_MEMBERS_PER_ROOM")]
    pub max_members_per_room: Option<usize>,
    /// Most concurrent sessions from one IP address.
    #[arg(long, env = "SHOAL_RELAY_MAX_SESSIONS_PER_IP")]
    pub max_sessions_per_ip: Option<usize>,
    /// Most concurrent sessions in total.
    #[arg(long, env = "SHOAL_RELAY_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// Close a session silent this long, ms.
    #[arg(long, env = "SHOAL_RELAY_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Time allowed for Hello/Auth after the upgrade, ms.
    #[arg(long, env = "SHOAL_RELAY_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// Frames queued towards one session before it counts as a slow reader.
    #[arg(long, env = "SHOAL_RELAY_SEND_QUEUE")]
    pub send_queue: Option<usize>,
    /// Longest socket write before a session counts as a slow reader, ms.
    #[arg(long, env = "SHOAL_RELAY_WRITE_TIMEOUT_MS")]
    pub write_timeout_ms: Option<u64>,
    /// Protocol errors tolerated per 10 s before a close.
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
        if self.log_name.is_some() {
            c.log.name = self.log_name.clone();
        }
        let g = &mut c.log;
        set!(g.checkpoint_interval_ms, self.checkpoint_interval_ms);
        set!(g.witness_poll_ms, self.witness_poll_ms);
        set!(g.witness_timeout_ms, self.witness_timeout_ms);
        set!(g.witness_backoff_max_ms, self.witness_backoff_max_ms);
        for p in self.peers.iter().filter(|p| !p.trim().is_empty()) {
            g.peers.push(PeerConfig::parse(p)?);
        }
        if g.peers.len() > MAX_PEERS {
            return Err(ConfigError::Peer(format!("at most {MAX_PEERS} peers")));
        }
        g.test_equivocate |= self.test_equivocate;
        c.log = c.log.clone().normalized();
        Ok(c)
    }
}

/// Subcommands of `shoal-relay`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the relay's C2SP signed-note verifier key (`name+keyid+base64key`) and exit,
    /// creating the key on first use. The name is the log's checkpoint origin.
    Key,
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
        assert_eq!(c.listen, "127.0.0.1:9000".parse::<SocketAddr>().unwrap());
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

    #[test]
    fn log_settings_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("relay.toml");
        std::fs::write(
            &p,
            "[log]\nname = \"a.example/log\"\nwitness_poll_ms = 500\n\
             [[log.peers]]\nurl = \"http://b:7070\"\nkey = \"b+0+x\"\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "shoal-relay",
            "--config",
            p.to_str().unwrap(),
            "--peer",
            "http://c:7070 c+1+y",
            "--checkpoint-interval-ms",
            "250",
        ]);
        let c = args.resolve().unwrap();
        assert_eq!(c.log.name.as_deref(), Some("a.example/log"));
        assert_eq!(c.log.witness_poll_ms, 500);
        assert_eq!(c.log.checkpoint_interval_ms, 250);
        assert_eq!(c.log.peers.len(), 2);
        assert_eq!(c.log.peers[1].url, "http://c:7070");
        assert!(!c.log.test_equivocate);
        assert!(
            Args::parse_from(["x", "--peer", "only-one-part"])
                .resolve()
                .is_err()
        );
        let k = Args::parse_from(["x", "key", "--data-dir", "/tmp/x"]);
        assert!(matches!(k.command, Some(Command::Key)));
        assert_eq!(k.data_dir.as_deref(), Some(Path::new("/tmp/x")));
    }
}
