//! The database's upkeep: `migrate`, `rotate-key` and `audit verify`.

use anyhow::{Context, bail};
use clap::Subcommand;
use hurtigspor_gateway::{
    config::Config,
    crypto::Keyring,
    store::{self, Location, Rotation, RotationProgress},
};
use std::{path::PathBuf, process::ExitCode, sync::Arc};

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the audit log's hash chain. Exits 0 when intact, 2 when broken
    /// (naming the first broken entry), 1 when it cannot be checked.
    Verify {
        /// TOML config file, for the key the chain is made with (in dev, the
        /// key under `<data-dir>/secrets` is used).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        store: crate::StoreArgs,
        /// A head printed by an earlier run (`<entry>:<hash>`): the log must
        /// still hold that entry, unchanged, so entries removed from the end
        /// are found too.
        #[arg(long, value_name = "ENTRY:HASH")]
        expect_head: Option<String>,
    },
}

/// `hurtigspor migrate`: applies what migrations the database lacks, and
/// nothing else of the running gateway. The configured keys seal what a
/// migration sets aside in plain text and are checked against the values
/// stored, as `serve` would; the audit log is not touched.
pub(crate) async fn migrate(config: &Config) -> anyhow::Result<()> {
    config.validate_database()?;
    let location = Location::of(config);
    let keyring = Arc::new(Keyring::load(config)?);
    let report =
        store::migrate(&location, Some(keyring)).await.with_context(|| format!("cannot migrate {location}"))?;
    if report.applied.is_empty() {
        println!("{location}: schema is up to date (version {})", report.current);
    } else {
        println!("{location}: applied migrations {:?}; schema version {}", report.applied, report.current);
    }
    Ok(())
}

/// `hurtigspor rotate-key`: progress on stderr, the summary on stdout.
pub(crate) async fn rotate_key(config: &Config, batch: usize) -> anyhow::Result<()> {
    config.validate_database()?;
    let location = Location::of(config);
    if !location.exists() {
        bail!("there is no database at {location}; pass the gateway's data directory with --data-dir");
    }
    let keyring = Arc::new(Keyring::load(config)?);
    // Brings the schema up to date and checks the keys, as a start would;
    // the rotation then runs beside serving gateways, touching no more.
    store::migrate(&location, Some(Arc::clone(&keyring)))
        .await
        .with_context(|| format!("cannot open the database at {location}"))?;
    let progress: RotationProgress = Box::new(|done, total| {
        eprintln!("re-encrypted {done}/{total}");
        std::ops::ControlFlow::Continue(())
    });
    let rotation = store::rotate_keys(&location, Arc::clone(&keyring), batch, progress)
        .await
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
                hurtigspor_gateway::crypto::env_var(id)
            )),
            n => lines.push(format!(
                "{n} national id(s) are still under key `{id}`, written since the rotation began by a gateway that still has `{id}` active: make `{active}` active in every gateway and run `hurtigspor rotate-key` again; keep `{id}` until then"
            )),
        }
    }
    lines
}

/// `audit verify` ends with this when the chain is broken; 1 means it could
/// not be checked.
const AUDIT_LOG_BROKEN: u8 = 2;

/// `audit verify`: checks the chain, with progress on stderr for long logs.
/// Exits 0 when intact and [`AUDIT_LOG_BROKEN`] when not.
pub(crate) async fn verify_audit(config: &Config, expect_head: Option<&str>) -> anyhow::Result<ExitCode> {
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
    config.validate_database()?;
    let location = Location::of(config);
    if !location.exists() {
        bail!("no database at {location}; pass the gateway's --data-dir (or --config)");
    }
    // Loading the keys would generate a new dev key where none is: the
    // chain would then read as broken from its first entry.
    if config.security.national_id_key.is_none()
        && !hurtigspor_gateway::keys::dev_master_key_path(&config.data_dir).exists()
    {
        bail!(
            "cannot find the key the audit log is chained with: pass --config with security.national_id_key \
             (or set HURTIGSPOR__SECURITY__NATIONAL_ID_KEY), as the gateway was started with"
        );
    }
    let keys = hurtigspor_gateway::keys::Keys::load(config)?;
    let result = store::verify_audit_log(&location, &keys.audit_key(), expect, 100_000, |checked, total| {
        eprintln!("checked {checked}/{total} entries");
    })
    .await
    .with_context(|| format!("cannot read the audit log in {location}"))?;
    match result {
        Ok(head) => {
            println!("audit log intact: {} entries; head {}:{}", head.entries, head.sequence, hex::encode(&head.hash));
            println!(
                "(keep the head: `audit verify --expect-head <head>` later finds entries removed from the end too)"
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            eprintln!("audit log BROKEN at entry {}: {broken}", broken.sequence());
            eprintln!(
                "entries before {} are intact; restore the database from a backup to see what changed",
                broken.sequence()
            );
            Ok(ExitCode::from(AUDIT_LOG_BROKEN))
        }
    }
}
