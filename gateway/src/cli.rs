//! The `hurtigspor` command line: server subcommands and a small client.

use crate::{
    Gateway,
    api::participants::Clock,
    auth::BearerToken,
    config::{Config, Mode, Overrides},
    crypto::Keyring,
    store::{self, Location, Rotation, StoreOptions},
    telemetry,
};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{
        CreateParticipantRequest, GetHurtigsporReportRequest, GetParticipantRequest, HurtigsporStatus,
        ListHurtigsporParticipantsRequest, ListParticipantsRequest, LookupParticipantRequest, Participant, Programme,
        participant_service_client::ParticipantServiceClient, reporting_service_client::ReportingServiceClient,
    },
};
use std::path::Path;
use std::{io::Read, net::SocketAddr, path::PathBuf, sync::Arc};
use tonic_types::StatusExt;

#[derive(Parser, Debug)]
#[command(name = "hurtigspor", version, about = "The hurtigspor gateway: one participant record, every system in step")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway in production mode from a config file.
    Serve {
        /// TOML config file; `HURTIGSPOR__*` environment variables override it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where the SQLite file lives.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Re-encrypt every stored national id that is not under the active key
    /// (security.active_encryption_key), in batches. Safe to interrupt and
    /// to run again, also while the gateway serves; it ends by saying which
    /// keys no longer encrypt anything and may be removed.
    RotateKey {
        /// TOML config file with the keys; `HURTIGSPOR__*` environment
        /// variables override it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where the SQLite file lives.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// National ids re-encrypted per transaction.
        #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
        batch_size: u32,
    },
    /// Run a local gateway for development: SQLite under --data-dir, dev/test
    /// mode (synthetic identities accepted), human-readable logs.
    Dev {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
        /// Create this many synthetic participants at start (every third a
        /// hurtigspor candidate, every sixth taken through hurtigspor in
        /// 2026) and show them reaching every system.
        #[arg(long, value_name = "N", default_value_t = 0)]
        seed: u32,
    },
    /// Call a running gateway's ParticipantService.
    Participants {
        /// The gateway's address.
        #[arg(long, global = true, default_value = "http://127.0.0.1:50051", env = "HURTIGSPOR_SERVER")]
        server: String,
        /// A bearer token. Without one, the `admin` token of a dev gateway
        /// in the default data directory (.hurtigspor-dev/dev-tokens.json).
        #[arg(long, global = true, env = "HURTIGSPOR_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Why you read or change a person, written to the audit log: a
        /// short code such as `case-processing`. Required.
        #[arg(long, global = true, env = "HURTIGSPOR_PURPOSE")]
        purpose: Option<String>,
        #[command(flatten)]
        tls: ClientTls,
        #[command(subcommand)]
        command: ParticipantsCommand,
    },
    /// Ask a running gateway for the hurtigspor report of a kommune (or the
    /// country) and a year: figures only, no person named.
    Report {
        /// The gateway's address.
        #[arg(long, default_value = "http://127.0.0.1:50051", env = "HURTIGSPOR_SERVER")]
        server: String,
        /// A bearer token with the `hurtigspor:reports.read` scope. Without
        /// one, the `admin` token of a dev gateway in the default data
        /// directory (.hurtigspor-dev/dev-tokens.json).
        #[arg(long, env = "HURTIGSPOR_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Why you ask, written to the audit log, e.g. `statistics`. Required.
        #[arg(long, env = "HURTIGSPOR_PURPOSE")]
        purpose: Option<String>,
        #[command(flatten)]
        tls: ClientTls,
        /// Four-digit kommunenummer, e.g. 0301; without it, the whole country
        /// (NAV and administrators only).
        #[arg(long)]
        kommune: Option<String>,
        /// The calendar year.
        #[arg(long)]
        year: i32,
        /// CSV on stdout: a header row and one row of figures (with
        /// `--participants`, one row per participant).
        #[arg(long)]
        csv: bool,
        /// The dates of the form per participant (opaque ids, no names or
        /// national ids) instead of the figures. The token needs the
        /// `hurtigspor:participants.read` scope too; every participant
        /// listed is audited.
        #[arg(long)]
        participants: bool,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the audit log's hash chain. Exits 0 when intact, 2 when broken
    /// (naming the first broken entry), 1 when it cannot be checked.
    Verify {
        /// TOML config file, for the key the chain is made with (in dev, the
        /// key under <data-dir>/secrets is used).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where the SQLite file lives.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// A head printed by an earlier run (`<entry>:<hash>`): the log must
        /// still hold that entry, unchanged, so entries removed from the end
        /// are found too.
        #[arg(long, value_name = "ENTRY:HASH")]
        expect_head: Option<String>,
    },
}

/// TLS to a gateway with `[tls]`: the server's CA, and the client's
/// certificate when the gateway asks for one (mutual TLS).
#[derive(Args, Debug, Default)]
pub struct ClientTls {
    /// CA certificate (PEM) that signed the gateway's certificate; implies
    /// TLS (use an https:// --server).
    #[arg(long, global = true, value_name = "FILE", env = "HURTIGSPOR_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// This client's certificate (PEM), for a gateway that requires one.
    #[arg(long, global = true, value_name = "FILE", env = "HURTIGSPOR_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, global = true, value_name = "FILE", env = "HURTIGSPOR_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// A channel to `server`, over TLS when a CA file is given.
    pub async fn connect(&self, server: &str) -> anyhow::Result<tonic::transport::Channel> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(server.to_owned())
            .with_context(|| format!("--server {server} is not a URL, e.g. https://gateway.example:50051"))?;
        let read = |flag: &str, path: &Path| {
            std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
        };
        match &self.ca_file {
            Some(_) if !server.starts_with("https://") => {
                bail!("--ca-file means TLS: give the server as https://{}", server.trim_start_matches("http://"))
            }
            Some(ca) => {
                let mut tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(read("--ca-file", ca)?));
                if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                    tls =
                        tls.identity(tonic::transport::Identity::from_pem(read("--cert", cert)?, read("--key", key)?));
                }
                endpoint = endpoint.tls_config(tls).context("--ca-file, --cert or --key is not usable PEM")?;
            }
            None if server.starts_with("https://") => {
                bail!("an https:// server needs --ca-file: the CA certificate that signed the gateway's certificate")
            }
            None if self.cert.is_some() => bail!("--cert needs TLS: give --ca-file and an https:// --server"),
            None => {}
        }
        endpoint.connect().await.with_context(|| {
            format!("cannot reach a gateway at {server}; start one with `cargo run -- dev` or pass --server (and --ca-file, --cert, --key for TLS)")
        })
    }
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on for gRPC [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Where the SQLite file and other local state live.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ParticipantsCommand {
    /// Register a participant.
    Create {
        /// Fodselsnummer or D-nummer; `-` reads it from stdin, which keeps it
        /// out of shell history.
        #[arg(long)]
        national_id: String,
        #[arg(long)]
        given_name: String,
        #[arg(long)]
        family_name: String,
        /// Four-digit kommunenummer, e.g. 0301.
        #[arg(long)]
        kommune: String,
        /// Programme start, YYYY-MM-DD.
        #[arg(long)]
        start_date: String,
        /// Planned programme end, YYYY-MM-DD.
        #[arg(long)]
        planned_end_date: Option<String>,
        /// NAV office number (enhetsnummer).
        #[arg(long)]
        nav_office: Option<String>,
        /// Client request id, for safe retries.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show one participant.
    Get {
        /// participants/{id}
        name: String,
    },
    /// Find a participant by national id, read from stdin.
    Lookup,
    /// List participants.
    List {
        #[arg(long)]
        kommune: Option<String>,
        /// Hurtigspor status, e.g. candidate or HURTIGSPOR_STATUS_CANDIDATE.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        /// Follow next_page_token to the end.
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, server } => {
            let config = Config::load(
                config.as_deref(),
                Config::default(),
                Overrides { listen: server.listen, data_dir: server.data_dir, mode: None },
            )?;
            telemetry::init(&config.log);
            serve(config, false, 0).await
        }
        Command::Dev { config, server, seed } => {
            let config = Config::load(
                config.as_deref(),
                Config::dev_defaults(),
                Overrides { listen: server.listen, data_dir: server.data_dir, mode: Some(Mode::Dev) },
            )?;
            telemetry::init(&config.log);
            serve(config, true, seed).await
        }
        Command::Migrate { config, data_dir } => {
            let config =
                Config::load(config.as_deref(), Config::default(), Overrides { data_dir, ..Default::default() })?;
            let location = Location::of(&config);
            // The keys serve would need are checked here too, and seal what
            // a migration sets aside in plain text; the audit log is not
            // touched, so its key is not needed.
            let keyring = Keyring::load(&config)?;
            let report =
                store::migrate(&location, Some(&keyring)).with_context(|| format!("cannot migrate {location}"))?;
            if report.applied.is_empty() {
                println!("{location}: schema is up to date (version {})", report.current);
            } else {
                println!("{location}: applied migrations {:?}; schema version {}", report.applied, report.current);
            }
            Ok(())
        }
        Command::RotateKey { config, data_dir, batch_size } => {
            let config =
                Config::load(config.as_deref(), Config::default(), Overrides { data_dir, ..Default::default() })?;
            rotate_key(&config, batch_size as usize).await
        }
        Command::Participants { server, token, purpose, tls, command } => {
            let token = match token {
                Some(t) => t,
                None => dev_token(Path::new(".hurtigspor-dev"), "admin")?,
            };
            participants(&server, tls, &token, purpose.as_deref(), command).await
        }
        Command::Report { server, token, purpose, tls, kommune, year, csv, participants } => {
            let token = match token {
                Some(t) => t,
                None => dev_token(Path::new(".hurtigspor-dev"), "admin")?,
            };
            let asked = Asked { kommunenummer: kommune.unwrap_or_default(), year, csv, participants };
            report(&server, tls, &token, purpose.as_deref(), asked).await
        }
        Command::Audit { command: AuditCommand::Verify { config, data_dir, expect_head } } => {
            // Without a config, a data directory of a dev gateway: its keys
            // were generated there.
            let defaults = if config.is_none() { Config::dev_defaults() } else { Config::default() };
            let config = Config::load(config.as_deref(), defaults, Overrides { data_dir, ..Default::default() })?;
            verify_audit(&config, expect_head.as_deref())
        }
    }
}

/// `hurtigspor rotate-key`: progress on stderr, the summary on stdout.
async fn rotate_key(config: &Config, batch: usize) -> anyhow::Result<()> {
    let path = config.database_path();
    if !path.exists() {
        bail!("there is no database at {}; pass the gateway's data directory with --data-dir", path.display());
    }
    let keyring = Arc::new(Keyring::load(config)?);
    let options = StoreOptions {
        keyring: Arc::clone(&keyring),
        // Re-encrypting appends nothing to the audit log: its key is not needed.
        ..StoreOptions::new(Location::of(config), crate::audit::AuditKey::new(rand::random()))
    };
    let (store, _) =
        store::open(options).await.with_context(|| format!("cannot open the database at {}", path.display()))?;
    let progress: store::RotationProgress = Box::new(|done, total| {
        eprintln!("re-encrypted {done}/{total}");
        std::ops::ControlFlow::Continue(())
    });
    let rotation = store.rotate_keys(batch, progress).await;
    store.close().await;
    let rotation = rotation
        .context("the rotation stopped; what it re-encrypted is kept: fix the cause and run `hurtigspor rotate-key` again to finish")?;
    for line in rotation_summary(&rotation, &keyring) {
        println!("{line}");
    }
    Ok(())
}

/// What a rotation did, and what the operator may do next.
fn rotation_summary(rotation: &Rotation, keyring: &Keyring) -> Vec<String> {
    let active = &rotation.active;
    let under_active = rotation.by_key.get(active).copied().unwrap_or(0);
    let mut lines = vec![if rotation.reencrypted == 0 {
        format!("nothing to re-encrypt: all {under_active} national id(s) are under key `{active}`")
    } else {
        format!(
            "re-encrypted {} national id(s) to key `{active}`; {under_active} in all are under it",
            rotation.reencrypted
        )
    }];
    for id in keyring.key_ids().filter(|id| id != active) {
        match rotation.by_key.get(id).copied().unwrap_or(0) {
            0 => lines.push(format!(
                "key `{id}` encrypts nothing any longer: once every gateway runs with `{active}` active, remove `{id}` from security.encryption_keys (and unset {}) and restart. Keep a copy of it as long as you keep backups taken before this rotation: they need it",
                crate::crypto::env_var(id)
            )),
            n => lines.push(format!(
                "{n} national id(s) are still under key `{id}`, written since the rotation began by a gateway that still has `{id}` active: make `{active}` active in every gateway and run `hurtigspor rotate-key` again; keep `{id}` until then"
            )),
        }
    }
    lines
}

async fn serve(config: Config, dev: bool, seed: u32) -> anyhow::Result<()> {
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
            if let Err(e) = seed_participants(&server, &token, seed).await {
                // On stdout, with the progress it ends.
                println!("seeding stopped: {e:#}");
            }
        });
    }
    gateway.run(shutdown_signal()).await
}

/// Creates `n` synthetic participants through the API, makes every third a
/// candidate and takes every sixth through hurtigspor (`seed_journey`),
/// then follows them until every target holds them.
async fn seed_participants(server: &str, token: &str, n: u32) -> anyhow::Result<()> {
    use hurtigspor_proto::v1::{
        CompetenceMapping, DecisionMaker, GetSyncStatusRequest, RecordCompetenceMappingRequest, SyncState,
        TransitionHurtigsporRequest, sync_service_client::SyncServiceClient,
    };
    use indicatif::{ProgressBar, ProgressStyle};
    let channel = tonic::transport::Endpoint::from_shared(server.to_owned())?.connect().await?;
    let bearer = BearerToken::new(token)?.with_purpose("seeding")?;
    let mut client = ParticipantServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut sync = SyncServiceClient::with_interceptor(channel, bearer);
    let style = ProgressStyle::with_template("  {msg:<24} [{bar:30}] {pos}/{len} ({elapsed})")?.progress_chars("=> ");
    let created = ProgressBar::new(u64::from(n)).with_style(style.clone()).with_message("creating participants");
    let kommuner = ["0301", "4601", "5001", "3107", "5501", "1103"];
    let mut names = Vec::new();
    for i in 0..n {
        let born = (1970 + (i / 336 % 36) as i32, 1 + i / 28 % 12, 1 + i % 28);
        let national_id = crate::domain::national_id::testing::synthetic_fnr(born.0, born.1, born.2, i / 12096 * 37);
        let request = CreateParticipantRequest {
            participant: Some(Participant {
                national_id,
                given_name: format!("Seed{i}"),
                family_name: "Testperson".into(),
                // Shifted every sixth, so the journeys (every sixth) reach
                // every kommune.
                kommunenummer: kommuner[(i + i / 6) as usize % kommuner.len()].into(),
                nav_office: "0314".into(),
                programme: Some(Programme {
                    start_date: Some(Date { year: 2026, month: 1, day: 5 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            request_id: format!("seed-{i}"),
        };
        let p = match client.create_participant(request).await {
            Ok(r) => r.into_inner(),
            // Seeded before: it is there already.
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                created.inc(1);
                continue;
            }
            Err(s) => return Err(describe(&s)),
        };
        if i % 3 == 0 {
            client
                .record_competence_mapping(RecordCompetenceMappingRequest {
                    name: p.name.clone(),
                    competence: Some(CompetenceMapping {
                        mapped_date: Some(Date { year: 2026, month: 2, day: 1 }),
                        ..Default::default()
                    }),
                    etag: String::new(),
                })
                .await
                .map_err(|s| describe(&s))?;
            client
                .transition_hurtigspor(TransitionHurtigsporRequest {
                    name: p.name.clone(),
                    status: HurtigsporStatus::Candidate as i32,
                    decided_by: DecisionMaker::Kommune as i32,
                    effective_date: Some(Date { year: 2026, month: 2, day: 15 }),
                    ..Default::default()
                })
                .await
                .map_err(|s| describe(&s))?;
            if i % 6 == 0 {
                seed_journey(&client, &p.name, i / 6).await?;
            }
        }
        names.push(p.name);
        created.inc(1);
    }
    created.finish();
    let delivered = ProgressBar::new(names.len() as u64).with_style(style).with_message("in every system");
    while !names.is_empty() {
        let mut waiting = Vec::new();
        for name in names {
            let status =
                sync.get_sync_status(GetSyncStatusRequest { name: name.clone() }).await.map_err(|s| describe(&s))?;
            let done = status.into_inner().targets.iter().all(|t| t.state != SyncState::Pending as i32);
            if done { delivered.inc(1) } else { waiting.push(name) }
        }
        names = waiting;
        if !names.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    delivered.finish();
    println!("  seeded {n} participants; failed deliveries, if any: SyncService/ListFailedDeliveries");
    Ok(())
}

/// A confirmed candidate's way through hurtigspor in 2026, so that the
/// dev gateway's report has something to show: by `k`, work training and
/// then work of 100 %, a wage subsidy, back to the ordinary programme, or
/// still in job matching.
async fn seed_journey(client: &ParticipantServiceClient<Authed>, name: &str, k: u32) -> anyhow::Result<()> {
    use hurtigspor_proto::v1::{
        DecisionMaker, EndMeasureRequest, Measure, MeasureKind, MeasureStatus, Outcome, OutcomeKind,
        RecordMeasureRequest, TransitionHurtigsporRequest, UpdateParticipantRequest,
    };
    let day = |month, day| Some(Date { year: 2026, month, day });
    // Synthetic organisation numbers (mod 11 valid).
    let employer = ["910000012", "910000020", "910000039", "910000047"][(k / 4) as usize % 4];
    let steps: &[(HurtigsporStatus, Option<Date>)] = &[
        (HurtigsporStatus::Confirmed, day(3, 2)),
        (HurtigsporStatus::Qualifying, day(3, 16)),
        (HurtigsporStatus::JobMatching, day(6, 1)),
    ];
    let to = |status: HurtigsporStatus, effective_date: Option<Date>| {
        let mut client = client.clone();
        let name = name.to_owned();
        async move {
            client
                .transition_hurtigspor(TransitionHurtigsporRequest {
                    name,
                    status: status as i32,
                    decided_by: DecisionMaker::Joint as i32,
                    effective_date,
                    ..Default::default()
                })
                .await
                .map_err(|s| describe(&s))
        }
    };
    for (status, date) in steps {
        to(*status, *date).await?;
    }
    let mut writes = client.clone();
    let measure = |kind: MeasureKind, start: Option<Date>| RecordMeasureRequest {
        name: name.to_owned(),
        measure: Some(Measure {
            kind: kind as i32,
            employer_orgnr: employer.into(),
            position_percent: 100,
            start_date: start,
            ..Default::default()
        }),
        ..Default::default()
    };
    // Participant 6k is in kommune k % 6; shifting the journey by k / 6
    // gives every kommune each journey, and the first four take all four.
    match (k + k / 6) % 4 {
        0 => {
            let recorded = writes
                .record_measure(measure(MeasureKind::WorkTraining, day(4, 1)))
                .await
                .map_err(|s| describe(&s))?
                .into_inner();
            let id = recorded.measures.last().map(|m| m.id.clone()).unwrap_or_default();
            writes
                .end_measure(EndMeasureRequest {
                    name: name.to_owned(),
                    measure_id: id,
                    status: MeasureStatus::Completed as i32,
                    end_date: day(8, 31),
                    ..Default::default()
                })
                .await
                .map_err(|s| describe(&s))?;
            to(HurtigsporStatus::Employed, day(9, 1)).await?;
            let outcome = Outcome {
                kind: OutcomeKind::EmploymentFull as i32,
                date: day(9, 1),
                employer_orgnr: employer.into(),
                position_percent: 100,
            };
            writes
                .update_participant(UpdateParticipantRequest {
                    participant: Some(Participant {
                        name: name.to_owned(),
                        outcome: Some(outcome),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["outcome".into()] }),
                })
                .await
                .map_err(|s| describe(&s))?;
        }
        1 => {
            writes
                .record_measure(measure(MeasureKind::TemporaryWageSubsidy, day(7, 1)))
                .await
                .map_err(|s| describe(&s))?;
            to(HurtigsporStatus::EmployedWithSubsidy, day(7, 1)).await?;
        }
        2 => {
            to(HurtigsporStatus::BackToOrdinary, day(8, 15)).await?;
        }
        _ => {}
    }
    Ok(())
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

fn parse_date(s: &str, flag: &str) -> anyhow::Result<Date> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").with_context(|| format!("{flag} must be YYYY-MM-DD"))?;
    Ok(crate::domain::dates::to_proto(d))
}

fn parse_status(s: &str) -> anyhow::Result<HurtigsporStatus> {
    let upper = s.to_ascii_uppercase();
    let full = if upper.starts_with("HURTIGSPOR_STATUS_") { upper } else { format!("HURTIGSPOR_STATUS_{upper}") };
    HurtigsporStatus::from_str_name(&full).with_context(|| {
        format!(
            "unknown status {s:?}; one of {}",
            crate::domain::hurtigspor::ALL.map(crate::domain::hurtigspor::short_name).join(", ").to_lowercase()
        )
    })
}

fn read_stdin_line() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).context("cannot read stdin")?;
    Ok(s.trim().to_owned())
}

/// Prints a gRPC error with its field violations and exits non-zero.
fn describe(status: &tonic::Status) -> anyhow::Error {
    let mut out = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            out.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    if let Some(pf) = status.get_details_precondition_failure() {
        for v in pf.violations {
            out.push_str(&format!("\n  {} ({})", v.subject, v.r#type));
        }
    }
    anyhow::anyhow!(out)
}

fn date_text(d: Option<&Date>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
}

fn print_participant(p: &Participant) {
    let status = p.hurtigspor.as_ref().map_or(0, |h| h.status);
    let status = HurtigsporStatus::try_from(status).unwrap_or_default();
    let programme = p.programme.clone().unwrap_or_default();
    println!("{}", p.name);
    println!("  name:        {} {}", p.given_name, p.family_name);
    println!("  national id: {} (masked)", "*".repeat(p.national_id.len()));
    println!("  kommune:     {}", p.kommunenummer);
    println!(
        "  programme:   {} to {}",
        date_text(programme.start_date.as_ref()),
        date_text(programme.planned_end_date.as_ref())
    );
    println!("  hurtigspor:  {}", crate::domain::hurtigspor::short_name(status));
    println!("  etag:        {}", p.etag);
    for w in &p.warnings {
        println!("  warning:     {} ({}): {}", w.code, w.field, w.message);
    }
}

/// A token from a dev gateway's `dev-tokens.json`.
pub fn dev_token(data_dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = data_dir.join("dev-tokens.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("no token given and no dev tokens at {}; pass --token or set HURTIGSPOR_TOKEN", path.display())
    })?;
    let tokens: serde_json::Value = serde_json::from_str(&text)?;
    tokens[name].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("{} has no `{name}` token", path.display()))
}

/// `audit verify`: checks the chain, with progress on stderr for long logs.
fn verify_audit(config: &Config, expect_head: Option<&str>) -> anyhow::Result<()> {
    let expect = expect_head
        .map(|h| {
            let (entry, hash) = h.split_once(':').unwrap_or((h, ""));
            match (entry.parse::<i64>(), hex::decode(hash)) {
                (Ok(entry), Ok(hash)) if entry > 0 && hash.len() == 32 => Ok((entry, hash)),
                _ => Err(anyhow::anyhow!(
                    "--expect-head must be <entry>:<hash> as `audit verify` printed it, e.g. 1234:9f86d081...(64 hex)"
                )),
            }
        })
        .transpose()?;
    let path = config.database_path();
    if !path.exists() {
        bail!("no database at {}; pass the gateway's --data-dir (or --config)", path.display());
    }
    // Loading the keys would generate a new dev key where none is: the
    // chain would then read as broken from its first entry.
    if config.security.national_id_key.is_none() && !crate::keys::dev_master_key_path(&config.data_dir).exists() {
        bail!(
            "cannot find the key the audit log is chained with: pass --config with security.national_id_key \
             (or set HURTIGSPOR__SECURITY__NATIONAL_ID_KEY), as the gateway was started with"
        );
    }
    let keys = crate::keys::Keys::load(config)?;
    let result =
        store::verify_audit_log(&Location::of(config), &keys.audit_key(), expect, 100_000, |checked, total| {
            eprintln!("checked {checked}/{total} entries");
        })
        .with_context(|| format!("cannot read the audit log in {}", path.display()))?;
    match result {
        Ok(head) => {
            println!("audit log intact: {} entries; head {}:{}", head.entries, head.sequence, hex::encode(&head.hash));
            println!(
                "(keep the head: `audit verify --expect-head <head>` later finds entries removed from the end too)"
            );
            Ok(())
        }
        Err(broken) => {
            eprintln!("audit log BROKEN at entry {}: {broken}", broken.sequence());
            eprintln!(
                "entries before {} are intact; restore the database from a backup to see what changed",
                broken.sequence()
            );
            std::process::exit(2);
        }
    }
}

/// A channel whose every call carries the bearer token (and purpose).
type Authed = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerToken>;

/// What `report` asks for, and how it is printed.
struct Asked {
    kommunenummer: String,
    year: i32,
    csv: bool,
    /// The dates per participant instead of the figures.
    participants: bool,
}

async fn report(server: &str, tls: ClientTls, token: &str, purpose: Option<&str>, asked: Asked) -> anyhow::Result<()> {
    let Some(purpose) = purpose else {
        bail!(
            "a report is read for a reason written to the audit log: pass --purpose <code>, e.g. --purpose statistics"
        );
    };
    let channel = tls.connect(server).await?;
    let interceptor = BearerToken::new(token)?.with_purpose(purpose)?;
    let mut client = ReportingServiceClient::with_interceptor(channel, interceptor);
    let Asked { kommunenummer, year, csv, participants } = asked;
    if participants {
        return report_participants(&mut client, kommunenummer, year, csv).await;
    }
    let report = client
        .get_hurtigspor_report(GetHurtigsporReportRequest { kommunenummer, year })
        .await
        .map_err(|s| describe(&s))?
        .into_inner();
    if csv {
        print!("{}", crate::report::csv(&report));
    } else {
        print!("{}", crate::report::table(&report));
    }
    Ok(())
}

/// Every page of the per-participant dates, printed as it arrives (CSV, or
/// aligned columns), with the running count on stderr.
async fn report_participants(
    client: &mut ReportingServiceClient<Authed>,
    kommunenummer: String,
    year: i32,
    csv: bool,
) -> anyhow::Result<()> {
    use crate::report::{PARTICIPANT_COLUMNS, participant_row};
    // Ids are 32 characters, kommunenummer 4, dates 10.
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        if csv {
            cells.collect::<Vec<_>>().join(",")
        } else {
            let widths = std::iter::once(32).chain(std::iter::once(13)).chain(std::iter::repeat(10));
            cells
                .zip(widths.zip(PARTICIPANT_COLUMNS))
                .map(|(c, (w, h))| format!("{c:<width$}", width = w.max(h.len())))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        }
    };
    println!("{}", line(&mut PARTICIPANT_COLUMNS.into_iter()));
    let (mut token, mut listed) = (String::new(), 0usize);
    loop {
        let page = client
            .list_hurtigspor_participants(ListHurtigsporParticipantsRequest {
                kommunenummer: kommunenummer.clone(),
                year,
                page_size: 500,
                page_token: token,
            })
            .await
            .map_err(|s| describe(&s))?
            .into_inner();
        for p in &page.participants {
            println!("{}", line(&mut participant_row(p).split(',')));
        }
        listed += page.participants.len();
        eprintln!("{listed} participants so far");
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    eprintln!("{listed} participants in all");
    Ok(())
}

async fn participants(
    server: &str,
    tls: ClientTls,
    token: &str,
    purpose: Option<&str>,
    command: ParticipantsCommand,
) -> anyhow::Result<()> {
    if purpose.is_none() {
        bail!(
            "reading or changing a person needs a purpose for the audit log: pass --purpose <code>, e.g. --purpose case-processing"
        );
    }
    let channel = tls.connect(server).await?;
    let mut interceptor = BearerToken::new(token)?;
    if let Some(p) = purpose {
        interceptor = interceptor.with_purpose(p)?;
    }
    let mut client = ParticipantServiceClient::with_interceptor(channel, interceptor);
    match command {
        ParticipantsCommand::Create {
            national_id,
            given_name,
            family_name,
            kommune,
            start_date,
            planned_end_date,
            nav_office,
            request_id,
        } => {
            let national_id = if national_id == "-" { read_stdin_line()? } else { national_id };
            let programme = Programme {
                start_date: Some(parse_date(&start_date, "--start-date")?),
                planned_end_date: planned_end_date
                    .as_deref()
                    .map(|d| parse_date(d, "--planned-end-date"))
                    .transpose()?,
                ..Default::default()
            };
            let p = client
                .create_participant(CreateParticipantRequest {
                    participant: Some(Participant {
                        national_id,
                        given_name,
                        family_name,
                        kommunenummer: kommune,
                        nav_office: nav_office.unwrap_or_default(),
                        programme: Some(programme),
                        ..Default::default()
                    }),
                    request_id: request_id.unwrap_or_default(),
                })
                .await
                .map_err(|s| describe(&s))?
                .into_inner();
            print_participant(&p);
        }
        ParticipantsCommand::Get { name } => {
            let p =
                client.get_participant(GetParticipantRequest { name }).await.map_err(|s| describe(&s))?.into_inner();
            print_participant(&p);
        }
        ParticipantsCommand::Lookup => {
            let national_id = read_stdin_line()?;
            if national_id.is_empty() {
                bail!("write the national id on stdin, e.g. `echo <number> | hurtigspor participants lookup`");
            }
            let p = client
                .lookup_participant(LookupParticipantRequest { national_id })
                .await
                .map_err(|s| describe(&s))?
                .into_inner();
            print_participant(&p);
        }
        ParticipantsCommand::List { kommune, status, page_size, all } => {
            let status = status.as_deref().map(parse_status).transpose()?.map_or(0, |s| s as i32);
            let mut page_token = String::new();
            let mut total = 0;
            loop {
                let page = client
                    .list_participants(ListParticipantsRequest {
                        page_size,
                        page_token,
                        kommunenummer: kommune.clone().unwrap_or_default(),
                        hurtigspor_status: status,
                    })
                    .await
                    .map_err(|s| describe(&s))?
                    .into_inner();
                for p in &page.participants {
                    let s =
                        HurtigsporStatus::try_from(p.hurtigspor.as_ref().map_or(0, |h| h.status)).unwrap_or_default();
                    println!(
                        "{}  {}  {:<22}  {} {}",
                        p.name,
                        p.kommunenummer,
                        crate::domain::hurtigspor::short_name(s),
                        p.given_name,
                        p.family_name
                    );
                }
                total += page.participants.len();
                if page.next_page_token.is_empty() {
                    break;
                }
                if !all {
                    println!("(more: repeat with --all to list every page)");
                    break;
                }
                page_token = page.next_page_token;
            }
            println!("{total} participant(s)");
        }
    }
    Ok(())
}
