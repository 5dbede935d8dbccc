//! `shoal-relay`: WebSocket signaling, receipt transparency log and witness for Shoal nodes.
//! `shoal-relay key --data-dir DIR` prints the relay's C2SP verifier key.

use anyhow::Context as _;
use clap::Parser as _;
use shoal_relay::{Args, Relay};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).context("bad --log filter")?)
        .with_writer(std::io::stderr)
        .init();
    let config = args.resolve()?;
    if let Some(shoal_relay::config::Command::Key) = args.command {
        let key = shoal_relay::server::load_or_create_key(&config.data_dir)?;
        let signer = shoal_relay::server::note_signer(&config, &key)?;
        println!("{}", signer.verifier_key());
        return Ok(());
    }
    // Each session is a socket: lift the soft file limit to the hard one.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(nofile = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    let relay = Relay::start(config).await?;
    relay.run_until(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
