//! Test helper: serves one log over HTTP on loopback so a test can SIGKILL it mid-append.
//!
//! Usage: `log-crash-helper <data-dir> [checkpoint-interval-ms]`. Prints `LISTENING <addr>`
//! on stdout once it accepts connections. The log key is a fixed test seed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shoal_relay::log::{Log, LogConfig, LogState, routes};
use shoal_tlog::note::Ed25519Signer;

/// Seed of the test log key (tests derive the same verifier key).
pub const TEST_LOG_SEED: [u8; 32] = [42; 32];
pub const TEST_LOG_NAME: &str = "crash-test.shoal.invalid/log";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .context("usage: log-crash-helper <data-dir> [interval-ms]")?;
    let interval: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100);
    std::fs::create_dir_all(&dir)?;
    let signer = Arc::new(Ed25519Signer::from_seed(TEST_LOG_NAME, &TEST_LOG_SEED)?);
    let log = Log::open(
        &std::path::Path::new(&dir).join("log.redb"),
        LogConfig::new(TEST_LOG_NAME),
        signer,
    )?;
    log.spawn_checkpointer(Duration::from_millis(interval));
    let app = routes(LogState {
        log,
        witness: None,
        verify_receipts: true,
        test_equivocate: None,
        keys: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
