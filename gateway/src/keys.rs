//! Keyed hashes: the national-id lookup key, request fingerprints and page
//! token signatures, each from its own key derived from one master key.

use crate::{
    config::{Config, Mode, Secret},
    domain::national_id::NationalId,
};
use anyhow::{Context, bail};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct Keys {
    national_id: [u8; 32],
    fingerprint: [u8; 32],
    page_token: [u8; 32],
    audit: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

impl Keys {
    pub fn from_master(master: &[u8]) -> Self {
        Self {
            national_id: mac(master, &[b"hurtigspor national-id v1"]),
            fingerprint: mac(master, &[b"hurtigspor request-fingerprint v1"]),
            page_token: mac(master, &[b"hurtigspor page-token v1"]),
            audit: mac(master, &[b"hurtigspor audit-chain v1"]),
        }
    }

    /// The configured key; in dev mode without one, a key generated once and
    /// kept in `data_dir/secrets/master.key`.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let hex_key = match (&config.security.national_id_key, config.mode) {
            (Some(k), _) => k.clone(),
            (None, Mode::Dev) => dev_key(&config.data_dir)?,
            (None, Mode::Production) => bail!("security.national_id_key is required in production"),
        };
        let master = hex::decode(hex_key.expose().trim())
            .context("security.national_id_key must be hex, e.g. from `openssl rand -hex 32`")?;
        if master.len() < 32 {
            bail!("security.national_id_key must be at least 32 bytes (64 hex characters)");
        }
        Ok(Self::from_master(&master))
    }

    pub fn national_id_hash(&self, id: &NationalId) -> Vec<u8> {
        mac(&self.national_id, &[id.expose().as_bytes()]).to_vec()
    }

    pub fn fingerprint(&self, method: &str, body: &[u8]) -> [u8; 32] {
        mac(&self.fingerprint, &[method.as_bytes(), body])
    }

    pub fn sign_page_token(&self, body: &[u8]) -> [u8; 32] {
        mac(&self.page_token, &[body])
    }

    /// The key that chains the audit log.
    pub fn audit_key(&self) -> crate::audit::AuditKey {
        crate::audit::AuditKey::new(self.audit)
    }
}

const DEV_MASTER_KEY: &str = "master.key";

fn dev_key(data_dir: &Path) -> anyhow::Result<Secret> {
    dev_secret(data_dir, DEV_MASTER_KEY)
}

/// Where dev mode keeps its generated master key.
pub fn dev_master_key_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("secrets").join(DEV_MASTER_KEY)
}

/// A random 32-byte key in hex, generated once and kept (readable by its
/// owner only) in `data_dir/secrets/<file>`: dev mode's stand-in for a
/// configured key.
pub fn dev_secret(data_dir: &Path, file: &str) -> anyhow::Result<Secret> {
    let dir = data_dir.join("secrets");
    let path = dir.join(file);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(Secret::new(existing.trim()));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key: [u8; 32] = rand::random();
    let text = hex::encode(key);
    write_private(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Secret::new(text))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    write_private_bytes(path, text.as_bytes())
}

/// Writes a new file only its owner can read.
#[cfg(unix)]
pub fn write_private_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
pub fn write_private_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_and_are_stable() {
        let a = Keys::from_master(&[7; 32]);
        let b = Keys::from_master(&[7; 32]);
        assert_eq!(a.fingerprint("m", b"x"), b.fingerprint("m", b"x"));
        assert_ne!(a.fingerprint("m", b"x"), a.fingerprint("n", b"x"));
        assert_ne!(a.fingerprint("m", b"x"), a.sign_page_token(b"x"));
        assert_ne!(Keys::from_master(&[8; 32]).fingerprint("m", b"x"), a.fingerprint("m", b"x"));
    }

    #[test]
    fn dev_key_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::dev_defaults();
        config.data_dir = dir.path().to_owned();
        let k1 = Keys::load(&config).unwrap();
        let k2 = Keys::load(&config).unwrap();
        assert_eq!(k1.sign_page_token(b"x"), k2.sign_page_token(b"x"));
    }

    #[test]
    fn production_key_must_be_long_hex() {
        let mut config = Config::default();
        config.security.national_id_key = Some(Secret::new("abcd"));
        assert!(Keys::load(&config).is_err());
        config.security.national_id_key = Some(Secret::new("zz".repeat(32)));
        assert!(Keys::load(&config).is_err());
        config.security.national_id_key = Some(Secret::new("ab".repeat(32)));
        assert!(Keys::load(&config).is_ok());
    }
}
