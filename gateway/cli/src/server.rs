//! `serve` and `dev`: the gateway run until Ctrl-C or SIGTERM.

use crate::seed;
use anyhow::bail;
use clap::Args;
use hurtigspor_gateway::{Gateway, api::participants::Clock, config::Config};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on for gRPC [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Where the SQLite file and other local state live.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Builds the gateway from `config` and serves until a shutdown signal; `dev`
/// prints where everything is, and `seed` participants are created once it
/// listens.
pub(crate) async fn serve(config: Config, dev: bool, seed: u32) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let tls = config.tls.is_some();
    if tls && seed > 0 {
        bail!("--seed talks to the dev gateway in plaintext; leave out [tls] to seed");
    }
    let gateway = Gateway::build(config, Clock::system()).await?;
    let addr = gateway.local_addr();
    let mocks = gateway.mock_urls();
    let gateway_token = gateway.dev_tokens().and_then(|t| t.get("admin")).and_then(|t| t.as_str()).map(str::to_owned);
    if dev {
        println!("hurtigspor dev gateway");
        if tls {
            println!("  listening on https://{addr} (gRPC over TLS, from [tls]; health and reflection on)");
        } else {
            println!("  listening on http://{addr} (gRPC, plaintext; health and reflection on)");
        }
        if let Some(http) = gateway.http_addr() {
            println!("  webhooks at http://{http}/webhooks/nokut (NOKUT is subscribed to it)");
        }
        println!("  data in     {}", data_dir.display());
        println!("  DEV MODE: synthetic test identities are accepted. Never put real personal data here.");
        for (name, url) in &mocks {
            println!("  {name:<11} mock at {url} (in-process; state at {url}/admin/state)");
        }
        if let Some(tokens) = gateway.dev_tokens() {
            println!();
            println!("  !! INSECURE DEV TOKENS, signed by a local dev key: never use them outside this machine !!");
            println!(
                "  tokens in   {} (kommune_0301, kommune_4601, nav, admin)",
                data_dir.join("dev-tokens.json").display()
            );
            if let Some(admin) = tokens.get("admin").and_then(|t| t.as_str()) {
                println!("  admin:      {admin}");
            }
            println!();
        }
        let (scheme, flags, grpcurl) = if tls {
            ("https", " --ca-file <CA> [--cert <CERT> --key <KEY>]", "-cacert <CA> [-cert <CERT> -key <KEY>]")
        } else {
            ("http", "", "-plaintext")
        };
        if data_dir == Path::new(".hurtigspor-dev") {
            println!("  try:        cargo run -- participants --server {scheme}://{addr}{flags} list");
        } else {
            println!(
                "  try:        HURTIGSPOR_TOKEN=$(jq -r .admin {}/dev-tokens.json) cargo run -- participants --server {scheme}://{addr}{flags} list",
                data_dir.display()
            );
        }
        println!(
            "              grpcurl {grpcurl} -H \"authorization: Bearer $(jq -r .admin {}/dev-tokens.json)\" {addr} list",
            data_dir.display()
        );
        println!("  stop with Ctrl-C");
    }
    if seed > 0 {
        let server = format!("http://{addr}");
        tokio::spawn(async move {
            let token = gateway_token.unwrap_or_default();
            if let Err(e) = seed::participants(&server, &token, seed).await {
                // On stdout, with the progress it ends.
                println!("seeding stopped: {e:#}");
            }
        });
    }
    gateway.run(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
