//! The `hurtigspor` command line: the gateway's server subcommands, its
//! database's upkeep and a small client. Each concern has its module:
//! `server` (serve, dev), `admin` (migrate, rotate-key, audit verify),
//! `seed` (dev --seed), `client` (participants, report) and `error` (how a
//! gRPC error is told to the user).

mod admin;
mod client;
mod error;
mod seed;
mod server;

use admin::AuditCommand;
use clap::{Parser, Subcommand};
use client::{ClientTls, ParticipantsCommand};
use hurtigspor_gateway::config::{Config, Mode, Overrides};
use server::ServerArgs;
pub use server::StoreArgs;
use std::{path::PathBuf, process::ExitCode};

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
    /// Apply database migrations and exit. Instances that start together
    /// on one PostgreSQL database migrate it once.
    Migrate {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
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
        #[command(flatten)]
        store: StoreArgs,
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

/// Runs one command to its end and says how the process should exit: 0, or
/// a code of the command's own (`audit verify`: 2 for a broken log). An
/// error is printed by the caller and exits 1.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, server } => {
            let config = Config::load(
                config.as_deref(),
                Config::default(),
                Overrides { listen: server.listen, mode: None, ..server.store.overrides() },
            )?;
            hurtigspor_gateway::telemetry::init(&config.log);
            server::serve(config, false, 0).await?;
        }
        Command::Dev { config, server, seed } => {
            let config = Config::load(
                config.as_deref(),
                Config::dev_defaults(),
                Overrides { listen: server.listen, mode: Some(Mode::Dev), ..server.store.overrides() },
            )?;
            hurtigspor_gateway::telemetry::init(&config.log);
            server::serve(config, true, seed).await?;
        }
        Command::Migrate { config, store } => {
            let config = Config::load(config.as_deref(), Config::default(), store.overrides())?;
            admin::migrate(&config).await?;
        }
        Command::RotateKey { config, store, batch_size } => {
            let config = Config::load(config.as_deref(), Config::default(), store.overrides())?;
            admin::rotate_key(&config, batch_size as usize).await?;
        }
        Command::Participants { server, token, purpose, tls, command } => {
            let token = client::token_or_dev(token)?;
            client::participants(&server, tls, &token, purpose.as_deref(), command).await?;
        }
        Command::Report { server, token, purpose, tls, kommune, year, csv, participants } => {
            let token = client::token_or_dev(token)?;
            let asked = client::Asked { kommunenummer: kommune.unwrap_or_default(), year, csv, participants };
            client::report(&server, tls, &token, purpose.as_deref(), asked).await?;
        }
        Command::Audit { command: AuditCommand::Verify { config, store, expect_head } } => {
            // Without a config, a data directory of a dev gateway: its keys
            // were generated there.
            let defaults = if config.is_none() { Config::dev_defaults() } else { Config::default() };
            let config = Config::load(config.as_deref(), defaults, store.overrides())?;
            return admin::verify_audit(&config, expect_head.as_deref()).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
