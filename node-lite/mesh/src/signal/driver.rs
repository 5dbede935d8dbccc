//! The platform-neutral reconnect loop.

use std::time::Duration;

use futures_channel::mpsc;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};

use super::core::{ClientCore, Command, Event, Output, SignalError};
use super::platform;
use shoal_proto::identity::{Keypair, PeerId};

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Relay WebSocket URLs (`ws://host:port/v1/signal`), tried in order, round-robin on failure.
    pub urls: Vec<String>,
    /// Our identity.
    pub keypair: Keypair,
    /// Expected relay keys, by index in `urls` (`None`: trust on first use per connection).
    pub relay_keys: Vec<Option<PeerId>>,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// Give up on a connection attempt (TCP + WebSocket + handshake) after this long.
    pub connect_timeout: Duration,
    /// Send a ping after this long without traffic; give up after 3 unanswered.
    pub ping_interval: Duration,
    /// Capacity of the command and event queues.
    pub queue: usize,
}

impl ClientConfig {
    /// Sensible defaults for `urls` and `keypair`.
    pub fn new(urls: Vec<String>, keypair: Keypair) -> Self {
        ClientConfig {
            urls,
            keypair,
            relay_keys: Vec::new(),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            queue: 64,
        }
    }
}

/// The application's handle: send commands. Dropping every handle stops the client.
#[derive(Clone, Debug)]
pub struct SignalHandle {
    tx: mpsc::Sender<Command>,
}

/// The client task has stopped.
#[derive(Debug, thiserror::Error)]
#[error("signaling client stopped")]
pub struct Stopped;

impl SignalHandle {
    /// Queue a command (waits while the bounded queue is full).
    pub async fn command(&mut self, cmd: Command) -> Result<(), Stopped> {
        self.tx.send(cmd).await.map_err(|_| Stopped)
    }

    /// Queue a command without waiting; fails if the queue is full or the client stopped.
    pub fn try_command(&mut self, cmd: Command) -> Result<(), Stopped> {
        self.tx.try_send(cmd).map_err(|_| Stopped)
    }
}

/// Start the client on the current runtime (tokio natively, the browser's event loop in wasm).
/// Returns the command handle and the bounded event stream.
pub fn spawn(config: ClientConfig) -> Result<(SignalHandle, mpsc::Receiver<Event>), SignalError> {
    if config.urls.is_empty() {
        return Err(SignalError::NoRelays);
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(config.queue.max(1));
    let (ev_tx, ev_rx) = mpsc::channel(config.queue.max(1));
    platform::spawn(run(config, cmd_rx, ev_tx));
    Ok((SignalHandle { tx: cmd_tx }, ev_rx))
}

/// Backoff before attempt `attempt` (0-based): `initial · 2^attempt`, capped, with jitter in [d/2, d].
pub fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let d = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    let mut r = [0u8; 4];
    let frac = if shoal_proto::identity::random_bytes(&mut r).is_ok() {
        f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX)
    } else {
        1.0
    };
    d.mul_f64(0.5 + 0.5 * frac)
}

enum End {
    /// The application dropped its handle: stop for good.
    Stop,
    /// The connection ended; `ready` tells whether the handshake had completed.
    Retry { ready: bool, reason: String },
}

async fn run(
    config: ClientConfig,
    mut cmd_rx: mpsc::Receiver<Command>,
    mut ev_tx: mpsc::Sender<Event>,
) {
    let mut core = ClientCore::new(config.keypair.clone());
    let mut attempt: u32 = 0;
    let mut idx: usize = 0;
    loop {
        let i = idx % config.urls.len();
        let url = config.urls[i].clone();
        core.pin_relay(config.relay_keys.get(i).copied().flatten());
        match session(&config, &mut core, &url, &mut cmd_rx, &mut ev_tx).await {
            End::Stop => return,
            End::Retry { ready, reason } => {
                tracing::debug!(url = %url, reason = %reason, "signaling connection ended");
                let ev = core.on_close(&reason);
                if ev_tx.send(ev).await.is_err() {
                    return;
                }
                attempt = if ready { 0 } else { attempt.saturating_add(1) };
            }
        }
        idx = idx.wrapping_add(1);
        // Wait, but keep taking commands (joins/leaves are remembered for the next session).
        let delay =
            platform::sleep(backoff(config.backoff_initial, config.backoff_max, attempt)).fuse();
        futures_util::pin_mut!(delay);
        loop {
            futures_util::select! {
                _ = delay => break,
                cmd = cmd_rx.next() => match cmd {
                    None => return,
                    Some(c) => { let _ = core.on_command(c); }
                },
            }
        }
    }
}

async fn session(
    config: &ClientConfig,
    core: &mut ClientCore,
    url: &str,
    cmd_rx: &mut mpsc::Receiver<Command>,
    ev_tx: &mut mpsc::Sender<Event>,
) -> End {
    let retry = |ready: bool, reason: String| End::Retry { ready, reason };
    let connect = platform::connect(url).fuse();
    let timeout = platform::sleep(config.connect_timeout).fuse();
    futures_util::pin_mut!(connect, timeout);
    let (mut sink, mut stream) = futures_util::select! {
        r = connect => match r {
            Ok(c) => c,
            Err(e) => return retry(false, e.to_string()),
        },
        _ = timeout => return retry(false, "connect timeout".into()),
    };
    let hello = match core.on_open(url) {
        Ok(h) => h,
        Err(e) => return retry(false, e.to_string()),
    };
    if let Err(e) = sink.send(hello).await {
        return retry(false, e.to_string());
    }
    let mut out = Vec::new();
    let mut silent_ticks = 0u32;
    let mut ping_nonce = 0u64;
    loop {
        let tick = platform::sleep(config.ping_interval).fuse();
        futures_util::pin_mut!(tick);
        futures_util::select! {
            msg = stream.next().fuse() => {
                let bytes = match msg {
                    None => return retry(core.is_ready(), "closed by relay".into()),
                    Some(Err(e)) => return retry(core.is_ready(), e.to_string()),
                    Some(Ok(b)) => b,
                };
                silent_ticks = 0;
                if let Err(e) = core.on_bytes(&bytes, &mut out) {
                    return retry(core.is_ready(), e.to_string());
                }
                for o in out.drain(..) {
                    match o {
                        Output::Send(b) => {
                            if let Err(e) = sink.send(b).await {
                                return retry(core.is_ready(), e.to_string());
                            }
                        }
                        Output::Event(ev) => {
                            if ev_tx.send(ev).await.is_err() {
                                return End::Stop;
                            }
                        }
                    }
                }
            }
            cmd = cmd_rx.next() => {
                let Some(cmd) = cmd else {
                    let _ = sink.close().await;
                    return End::Stop;
                };
                match core.on_command(cmd) {
                    Ok(Some(b)) => {
                        if let Err(e) = sink.send(b).await {
                            return retry(core.is_ready(), e.to_string());
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, "command not sent"),
                }
            }
            _ = tick => {
                silent_ticks += 1;
                if silent_ticks > 3 || (!core.is_ready() && silent_ticks > 1) {
                    return retry(core.is_ready(), SignalError::Timeout.to_string());
                }
                ping_nonce = ping_nonce.wrapping_add(1);
                if let Ok(p) = core.ping(ping_nonce)
                    && let Err(e) = sink.send(p).await
                {
                    return retry(core.is_ready(), e.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(5);
        for a in 0..40 {
            let d = backoff(i, m, a);
            let cap = i.saturating_mul(1u32 << a.min(20)).min(m);
            assert!(d <= cap && d >= cap / 2, "attempt {a}: {d:?} vs {cap:?}");
        }
    }
}
