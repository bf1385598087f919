//! `hurtigspor-mocks`: run the mock systems on their own ports.

use anyhow::Context;
use clap::Parser;
use hurtigspor_mocks::arena::{Arena, ArenaConfig, BASE};

#[derive(Parser, Debug)]
#[command(
    name = "hurtigspor-mocks",
    version,
    about = "Arena-style mock (NAV) with fault injection, for testing against"
)]
struct Args {
    /// Address of the Arena mock.
    #[arg(long, default_value = "127.0.0.1:8081")]
    arena_listen: String,
    /// Seed for fault-injection randomness: the same seed gives the same faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HURTIGSPOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = ArenaConfig { seed: args.seed, ..ArenaConfig::default() };
    let (client_id, secret) = (config.client_id.clone(), config.client_secret.clone());
    let arena = Arena::new(config);
    let running = arena
        .spawn(&args.arena_listen)
        .await
        .with_context(|| format!("cannot listen on {}; choose another with --arena-listen", args.arena_listen))?;
    let url = running.url();
    println!("hurtigspor mocks (fault-injection seed {})", args.seed);
    println!("  Arena  {url}");
    println!("    token:   curl -s -u {client_id}:{secret} -d grant_type=client_credentials {url}/oauth/token");
    println!("    feed:    curl -s -H 'Authorization: Bearer <token>' '{url}{BASE}/endringer?fra_pos=0'");
    println!("    state:   curl -s {url}/admin/state");
    println!("    NAV starts work training:");
    println!(
        "      curl -s -H 'content-type: application/json' -d '{{\"fodselsnr\":\"15838510075\",\"tiltakskode\":\"ARBTREN\",\"arbgiv_orgnr\":\"889640782\",\"dato_fra\":\"2026-12-01 00:00:00\"}}' {url}/admin/caseworker/tiltak"
    );
    println!("  API reference: mocks/docs/arena.openapi.yaml");
    println!("  stop with Ctrl-C");
    tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
    running.stop().await;
    Ok(())
}
