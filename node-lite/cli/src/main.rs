//! `shoal-node`: the native Shoal node. Embed text, index and search your files locally.

mod chat_cmd;
mod circle_chat;
mod circle_cmd;
mod circle_net;
mod cli;
mod paths;
mod receipts;
mod serve_cmd;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(args) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("shoal-node: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
