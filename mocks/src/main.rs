//! `hurtigspor-mocks`: run the Arena-, NIR- and NOKUT-style mocks on their
//! own ports, all together or only some.

use anyhow::Context;
use clap::Parser;
use hurtigspor_mocks::{
    arena::{self, Arena, ArenaConfig},
    nir::{self, Nir, NirConfig},
    nokut::{self, Nokut, NokutConfig},
    server::{MockSystem, RunningMock},
};

#[derive(Parser, Debug)]
#[command(
    name = "hurtigspor-mocks",
    version,
    about = "Arena- (NAV), NIR- (IMDi) and NOKUT-style (HK-dir) mock systems with fault injection"
)]
struct Args {
    /// Address of the Arena mock.
    #[arg(long, default_value = "127.0.0.1:8081")]
    arena_listen: String,
    /// Address of the NIR mock.
    #[arg(long, default_value = "127.0.0.1:8082")]
    nir_listen: String,
    /// Address of the NOKUT mock.
    #[arg(long, default_value = "127.0.0.1:8083")]
    nokut_listen: String,
    /// Run only these mocks (comma-separated: arena,nir,nokut).
    #[arg(long, value_delimiter = ',', default_value = "arena,nir,nokut")]
    only: Vec<String>,
    /// Seed for fault-injection randomness: the same seed gives the same faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

async fn start(
    name: &str,
    addr: &str,
    spawn: impl std::future::Future<Output = std::io::Result<RunningMock>>,
) -> anyhow::Result<RunningMock> {
    spawn.await.with_context(|| format!("cannot start the {name} mock on {addr}; choose another with --{name}-listen"))
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
    for name in &args.only {
        if !["arena", "nir", "nokut"].contains(&name.as_str()) {
            anyhow::bail!("unknown mock {name:?} in --only; choose from arena, nir, nokut");
        }
    }
    let wanted = |name: &str| args.only.iter().any(|o| o == name);
    let mut running = Vec::new();
    println!("hurtigspor mocks (fault-injection seed {}); API references in mocks/docs/", args.seed);
    if wanted("arena") {
        let config = ArenaConfig { seed: args.seed, ..ArenaConfig::default() };
        let (id, secret) = (config.client_id.clone(), config.client_secret.clone());
        let mock = Arena::new(config);
        let r = start("arena", &args.arena_listen, mock.spawn(&args.arena_listen)).await?;
        let url = r.url();
        println!("  Arena  {url}   OAuth client {id} / {secret}   (docs: mocks/docs/arena.openapi.yaml)");
        println!("    token:  curl -s -u {id}:{secret} -d grant_type=client_credentials {url}/oauth/token");
        println!("    feed:   curl -s -H 'Authorization: Bearer <token>' '{url}{}/endringer?fra_pos=0'", arena::BASE);
        println!(
            "    NAV starts work training:  curl -s -H 'content-type: application/json' -d '{{\"fodselsnr\":\"15838510075\",\"tiltakskode\":\"ARBTREN\",\"arbgiv_orgnr\":\"889640782\",\"dato_fra\":\"2026-12-01 00:00:00\"}}' {url}/admin/caseworker/tiltak"
        );
        running.push(r);
    }
    if wanted("nir") {
        let config = NirConfig { seed: args.seed, ..NirConfig::default() };
        let users: Vec<_> =
            config.users.iter().map(|u| format!("{}:{} ({})", u.username, u.password, u.role)).collect();
        let mock = Nir::new(config);
        let r = start("nir", &args.nir_listen, mock.spawn(&args.nir_listen)).await?;
        println!("  NIR    {}{}   Basic users {}   (docs: mocks/docs/nir.md)", r.url(), nir::BASE, users.join(", "));
        running.push(r);
    }
    if wanted("nokut") {
        let config = NokutConfig { seed: args.seed, ..NokutConfig::default() };
        let key = config.api_key.clone();
        let mock = Nokut::new(config);
        let r = start("nokut", &args.nokut_listen, mock.spawn(&args.nokut_listen)).await?;
        println!("  NOKUT  {}{}   X-Api-Key {key}   (docs: mocks/docs/nokut.openapi.yaml)", r.url(), nokut::BASE);
        running.push(r);
    }
    println!("  every mock: /admin/state /admin/effects /admin/reset /admin/faults /admin/clock/advance");
    println!("  stop with Ctrl-C");
    tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
    for r in running {
        r.stop().await;
    }
    Ok(())
}
