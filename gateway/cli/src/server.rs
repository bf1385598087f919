//! `serve` and `dev`: the gateway run until Ctrl-C or SIGTERM, and in dev
//! mode the Arena, NIR and NOKUT mocks it delivers to, in-process.

use crate::seed;
use anyhow::{Context, bail};
use clap::Args;
use hurtigspor_gateway::{
    Gateway,
    clock::Clock,
    config::{ArenaTarget, Config, Mode, NirTarget, NokutTarget, Overrides, Secret},
};
use hurtigspor_mocks::{
    arena::{self, Arena},
    nir::{self, Nir},
    nokut::{self, Nokut},
    server::{MockSystem, RunningMock},
};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on for gRPC [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where the data is: the SQLite file under `--data-dir`, or a PostgreSQL
/// database that several instances share.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// Where the SQLite file (without --database-url) and other local
    /// state (dev keys and tokens) live.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL database to use instead of the SQLite file, e.g.
    /// postgres://hurtigspor@db:5432/hurtigspor (config `database_url`,
    /// env HURTIGSPOR__DATABASE_URL).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

impl StoreArgs {
    pub fn overrides(self) -> Overrides {
        Overrides { data_dir: self.data_dir, database_url: self.database_url, ..Overrides::default() }
    }
}

/// Builds the gateway from `config` and serves until a shutdown signal; `dev`
/// prints where everything is, and `seed` participants are created once it
/// listens.
pub(crate) async fn serve(mut config: Config, dev: bool, seed: u32) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let tls = config.tls.is_some();
    if tls && seed > 0 {
        bail!("--seed talks to the dev gateway in plaintext; leave out [tls] to seed");
    }
    let mocks = InProcessMocks::start_for(&mut config).await?;
    let database = hurtigspor_gateway::store::Location::of(&config);
    if matches!(database, hurtigspor_gateway::store::Location::Postgres(_)) && mocks.urls().next().is_some() {
        // Another instance on the same database would deliver to mocks of
        // its own, and read the feeds' positions against other mocks.
        tracing::warn!(
            "the in-process mocks are this instance's own: for several instances on one database, run hurtigspor-mocks once and configure [targets.arena], [targets.nir] and [targets.nokut] for every instance"
        );
    }
    let gateway = Gateway::build(config, Clock::system()).await?;
    let addr = gateway.local_addr();
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
        println!("  data in     {database}");
        if matches!(database, hurtigspor_gateway::store::Location::Postgres(_)) {
            println!("  keys in     {} (copy it to start another instance on this database)", data_dir.display());
        }
        println!("  DEV MODE: synthetic test identities are accepted. Never put real personal data here.");
        for (name, url) in mocks.urls() {
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
    let served = gateway.run(shutdown_signal()).await;
    mocks.stop().await;
    served
}

/// The mocks that stand in, in dev mode, for every system `[targets]`
/// leaves out, by system name.
struct InProcessMocks(Vec<(&'static str, RunningMock)>);

impl InProcessMocks {
    /// In dev mode with `targets.in_process_mocks` (dev's default), starts a
    /// mock on a free port for each target not configured and configures it
    /// as that target, with the mock's default credentials. NOKUT gets its
    /// webhook secret and no webhook URL, so the gateway subscribes its own
    /// HTTP listener (`http_listen`) and the mock's webhooks reach it.
    async fn start_for(config: &mut Config) -> anyhow::Result<Self> {
        let mut running = Vec::new();
        if config.mode != Mode::Dev || !config.targets.in_process_mocks {
            return Ok(Self(running));
        }
        let targets = &mut config.targets;
        if targets.arena.is_none() {
            let defaults = arena::ArenaConfig::default();
            let (client_id, secret) = (defaults.client_id.clone(), defaults.client_secret.clone());
            let mock = Arena::new(defaults).spawn("127.0.0.1:0").await.context("cannot start the Arena mock")?;
            targets.arena = Some(ArenaTarget { base_url: mock.url(), client_id, client_secret: Secret::new(secret) });
            running.push(("arena", mock));
        }
        if targets.nir.is_none() {
            let defaults = nir::NirConfig::default();
            let user = defaults.users.iter().find(|u| u.role == nir::ROLE_INTRO).context("the NIR mock has no user")?;
            let (username, password) = (user.username.clone(), Secret::new(user.password.clone()));
            let mock = Nir::new(defaults).spawn("127.0.0.1:0").await.context("cannot start the NIR mock")?;
            targets.nir = Some(NirTarget { base_url: mock.url(), username, password });
            running.push(("nir", mock));
        }
        if targets.nokut.is_none() {
            let defaults = nokut::NokutConfig::default();
            let (api_key, webhook_secret) = (defaults.api_key.clone(), defaults.webhook_secret.clone());
            let mock = Nokut::new(defaults).spawn("127.0.0.1:0").await.context("cannot start the NOKUT mock")?;
            targets.nokut = Some(NokutTarget {
                base_url: mock.url(),
                api_key: Secret::new(api_key),
                webhook_secret: Some(Secret::new(webhook_secret)),
                webhook_url: None,
            });
            running.push(("nokut", mock));
        }
        Ok(Self(running))
    }

    /// Each mock's base URL, by system name.
    fn urls(&self) -> impl Iterator<Item = (&'static str, String)> + '_ {
        self.0.iter().map(|(name, mock)| (*name, mock.url()))
    }

    /// Stops every mock, closing its connections.
    async fn stop(self) {
        for (_, mock) in self.0 {
            mock.stop().await;
        }
    }
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
