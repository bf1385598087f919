//! Encryption of national ids at rest: a keyring of AES-256-GCM keys, each
//! known by a key id that is stored beside every value it encrypted.
//!
//! A sealed value is `0x01 || nonce (12 bytes, random) || ciphertext || tag
//! (16 bytes)`. The associated data binds it to its participant and its key
//! id, so a ciphertext copied to another row, or relabelled with another key
//! id, does not decrypt. Random 96-bit nonces are safe for far more values
//! per key than a register of participants will ever hold (the usual bound
//! is 2^32 per key).
//!
//! New values are sealed under the active key; any key of the keyring opens
//! what it sealed, so keys can be rotated (`hurtigspor rotate-key`) while the
//! gateway serves. The keys come from configuration or the environment, never
//! from the repository; dev mode generates one under the data directory.

use crate::config::{Config, Mode, Secret, SecurityConfig, check_key_id, missing_keys_message};
use anyhow::{Context, bail};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, OnceLock},
};

/// The format byte every sealed value starts with.
const FORMAT_V1: u8 = 1;
const TAG_LEN: usize = 16;
/// The key id of the key dev mode generates.
pub const DEV_KEY_ID: &str = SecurityConfig::DEV_KEY_ID;
/// The file, under `data_dir/secrets/`, that dev mode keeps it in.
const DEV_KEY_FILE: &str = "encryption-dev.key";
/// The key id of [`Keyring::process_local`]: not a valid configured id, so a
/// database written with it can never be mistaken for a configured key's.
pub const PROCESS_LOCAL_KEY_ID: &str = "process-local";

/// Why a national id cannot be sealed or opened. Messages name the
/// participant and the key id, never the value or the key.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "the national id of participants/{participant} is encrypted under key `{key_id}`, which is not configured: add that key to security.encryption_keys (or set {}) and restart",
        env_var(key_id)
    )]
    UnknownKey { participant: String, key_id: String },

    #[error(
        "the national id of participants/{participant} does not decrypt under key `{key_id}`: either that key's configured value differs from the one it was encrypted with, or the stored value was altered or copied from another participant"
    )]
    Undecryptable { participant: String, key_id: String },

    #[error("the system random number generator failed; cannot encrypt the national id of participants/{participant}")]
    Random { participant: String },
}

impl From<CryptoError> for crate::error::Error {
    /// A stored value that cannot be opened is a fault of the deployment,
    /// not of the request: the details go to the log.
    fn from(e: CryptoError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// A value sealed under `key_id`.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed {{ key_id: {:?}, {} bytes }}", self.key_id, self.bytes.len())
    }
}

/// The encryption keys by key id, and which one seals new values.
pub struct Keyring {
    keys: BTreeMap<String, LessSafeKey>,
    active: String,
    random: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// The environment variable that sets key `key_id`.
pub fn env_var(key_id: &str) -> String {
    crate::config::env_var(&["security", "encryption_keys", key_id])
}

fn parse_key(id: &str, value: &Secret) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(value.expose().trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
    bytes.with_context(|| {
        format!(
            "encryption key `{id}` (security.encryption_keys.{id} or {}) must be exactly 64 hex characters (32 bytes), e.g. from `openssl rand -hex 32`",
            env_var(id)
        )
    })
}

impl Keyring {
    /// A keyring of `keys` (id, 32-byte key), sealing under `active`.
    pub fn new(keys: impl IntoIterator<Item = (String, [u8; 32])>, active: &str) -> anyhow::Result<Self> {
        let keys: BTreeMap<String, LessSafeKey> = keys
            .into_iter()
            .map(|(id, key)| {
                let unbound = UnboundKey::new(&AES_256_GCM, &key).expect("AES-256-GCM takes a 32-byte key");
                (id, LessSafeKey::new(unbound))
            })
            .collect();
        if !keys.contains_key(active) {
            bail!(
                "key `security.active_encryption_key` names `{active}`, which is not in security.encryption_keys; add it there (or set {})",
                env_var(active)
            );
        }
        Ok(Self { keys, active: active.to_owned(), random: SystemRandom::new() })
    }

    /// The configured keyring. Production needs `security.encryption_keys`
    /// (and `security.active_encryption_key` when it holds more than one);
    /// dev mode adds key `dev`, generated once and kept in
    /// `data_dir/secrets/encryption-dev.key`, which is active unless another
    /// is named.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let security = &config.security;
        let mut keys = Vec::new();
        for (id, value) in &security.encryption_keys {
            check_key_id(id).map_err(anyhow::Error::msg)?;
            keys.push((id.clone(), parse_key(id, value)?));
        }
        if config.mode == Mode::Dev && !security.encryption_keys.contains_key(DEV_KEY_ID) {
            let value = crate::keys::dev_secret(&config.data_dir, DEV_KEY_FILE)?;
            keys.push((DEV_KEY_ID.to_owned(), parse_key(DEV_KEY_ID, &value)?));
        }
        let active = match (&security.active_encryption_key, config.mode) {
            (Some(active), _) => active.clone(),
            (None, Mode::Dev) => DEV_KEY_ID.to_owned(),
            (None, Mode::Production) if security.encryption_keys.len() == 1 => {
                security.encryption_keys.keys().next().expect("one key").clone()
            }
            (None, Mode::Production) if security.encryption_keys.is_empty() => bail!(missing_keys_message()),
            (None, Mode::Production) => bail!(
                "key `security.active_encryption_key` is required when security.encryption_keys holds more than one key: name the key new values are encrypted with (or set HURTIGSPOR__SECURITY__ACTIVE_ENCRYPTION_KEY)"
            ),
        };
        Self::new(keys, &active)
    }

    /// A keyring with one random key that lives as long as this process:
    /// for tests and benchmarks that open a store without configuration.
    /// Nothing it sealed can be read by another process.
    pub fn process_local() -> Arc<Self> {
        static KEYRING: OnceLock<Arc<Keyring>> = OnceLock::new();
        KEYRING
            .get_or_init(|| {
                let mut key = [0u8; 32];
                SystemRandom::new().fill(&mut key).expect("the system random number generator works");
                Arc::new(Self::new([(PROCESS_LOCAL_KEY_ID.to_owned(), key)], PROCESS_LOCAL_KEY_ID).expect("active key"))
            })
            .clone()
    }

    /// The key id new values are sealed under.
    pub fn active(&self) -> &str {
        &self.active
    }

    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    /// Every key id of the keyring.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Seals `national_id` of participant `participant` under the active key.
    pub fn seal(&self, participant: &str, national_id: &str) -> Result<Sealed, CryptoError> {
        let key = &self.keys[&self.active];
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| CryptoError::Random { participant: participant.to_owned() })?;
        let mut bytes = Vec::with_capacity(1 + NONCE_LEN + national_id.len() + TAG_LEN);
        bytes.push(FORMAT_V1);
        bytes.extend_from_slice(&nonce);
        let mut in_out = national_id.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(associated_data(participant, &self.active)),
            &mut in_out,
        )
        .expect("AES-GCM seals any value shorter than 64 GiB");
        bytes.extend_from_slice(&in_out);
        Ok(Sealed { key_id: self.active.clone(), bytes })
    }

    /// Opens the national id of participant `participant`, sealed under `key_id`.
    pub fn open(&self, participant: &str, key_id: &str, sealed: &[u8]) -> Result<String, CryptoError> {
        let Some(key) = self.keys.get(key_id) else {
            return Err(CryptoError::UnknownKey { participant: participant.to_owned(), key_id: key_id.to_owned() });
        };
        let undecryptable =
            || CryptoError::Undecryptable { participant: participant.to_owned(), key_id: key_id.to_owned() };
        let Some((&FORMAT_V1, rest)) = sealed.split_first() else { return Err(undecryptable()) };
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(undecryptable());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| undecryptable())?;
        let mut in_out = ciphertext.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(associated_data(participant, key_id)), &mut in_out)
            .map_err(|_| undecryptable())?;
        String::from_utf8(plain.to_vec()).map_err(|_| undecryptable())
    }
}

/// What a sealed value is bound to: its purpose, its participant and its key
/// id, each length-prefixed.
fn associated_data(participant: &str, key_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    for part in [b"hurtigspor national-id v1".as_slice(), participant.as_bytes(), key_id.as_bytes()] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

/// A fresh random key as 64 hex characters, as `openssl rand -hex 32` makes.
pub fn random_hex_key() -> String {
    let mut key = [0u8; 32];
    SystemRandom::new().fill(&mut key).expect("the system random number generator works");
    hex::encode(key)
}

/// Where dev mode keeps its generated encryption key.
pub fn dev_key_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("secrets").join(DEV_KEY_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[(&str, u8)], active: &str) -> Keyring {
        Keyring::new(ids.iter().map(|(id, b)| (id.to_string(), [*b; 32])), active).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_for_its_participant_only() {
        let k = ring(&[("a", 1)], "a");
        let sealed = k.seal("p1", "15838510075").unwrap();
        assert_eq!(sealed.key_id, "a");
        assert!(!sealed.bytes.windows(11).any(|w| w == b"15838510075"), "no plaintext in the ciphertext");
        assert_eq!(k.open("p1", "a", &sealed.bytes).unwrap(), "15838510075");
        let moved = k.open("p2", "a", &sealed.bytes).unwrap_err().to_string();
        assert!(moved.contains("participants/p2") && moved.contains("`a`") && moved.contains("copied"), "{moved}");
        assert!(!moved.contains("15838510075"));
    }

    #[test]
    fn every_value_gets_its_own_nonce() {
        let k = ring(&[("a", 1)], "a");
        assert_ne!(k.seal("p", "15838510075").unwrap().bytes, k.seal("p", "15838510075").unwrap().bytes);
    }

    #[test]
    fn an_altered_value_a_relabelled_key_or_a_wrong_key_does_not_open() {
        let k = ring(&[("a", 1), ("b", 2)], "a");
        let sealed = k.seal("p", "15838510075").unwrap();
        let mut altered = sealed.bytes.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(matches!(k.open("p", "a", &altered), Err(CryptoError::Undecryptable { .. })));
        assert!(matches!(k.open("p", "b", &sealed.bytes), Err(CryptoError::Undecryptable { .. })));
        assert!(matches!(k.open("p", "a", &sealed.bytes[..10]), Err(CryptoError::Undecryptable { .. })));
        assert!(matches!(k.open("p", "a", &[]), Err(CryptoError::Undecryptable { .. })));
        let other_value = ring(&[("a", 9)], "a");
        assert!(matches!(other_value.open("p", "a", &sealed.bytes), Err(CryptoError::Undecryptable { .. })));
    }

    #[test]
    fn an_unknown_key_id_is_named_with_what_to_do() {
        let k = ring(&[("a", 1)], "a");
        let err = k.open("p", "k2025", &[1; 40]).unwrap_err().to_string();
        assert!(err.contains("`k2025`") && err.contains("HURTIGSPOR__SECURITY__ENCRYPTION_KEYS__K2025"), "{err}");
    }

    #[test]
    fn the_active_key_must_be_in_the_keyring() {
        let err = Keyring::new([("a".to_owned(), [1; 32])], "b").unwrap_err().to_string();
        assert!(err.contains("`b`"), "{err}");
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let k = ring(&[("a", 0xab)], "a");
        let text = format!("{k:?}");
        assert!(text.contains("\"a\"") && !text.contains("abab") && !text.contains("171"), "{text}");
        let sealed = k.seal("p", "15838510075").unwrap();
        assert!(!format!("{sealed:?}").contains(&format!("{:?}", &sealed.bytes[..4])));
    }

    #[test]
    fn production_needs_keys_and_an_active_one_among_several() {
        let mut config = Config::default();
        let err = Keyring::load(&config).unwrap_err().to_string();
        assert!(err.contains("security.encryption_keys") && err.contains("openssl rand -hex 32"), "{err}");
        config.security.encryption_keys.insert("k1".into(), Secret::new("ab".repeat(32)));
        assert_eq!(Keyring::load(&config).unwrap().active(), "k1", "a single key is the active one");
        config.security.encryption_keys.insert("k2".into(), Secret::new("cd".repeat(32)));
        let err = Keyring::load(&config).unwrap_err().to_string();
        assert!(err.contains("active_encryption_key"), "{err}");
        config.security.active_encryption_key = Some("k2".into());
        let k = Keyring::load(&config).unwrap();
        assert_eq!((k.active(), k.key_ids().collect::<Vec<_>>()), ("k2", vec!["k1", "k2"]));
        config.security.encryption_keys.insert("k3".into(), Secret::new("abcd"));
        let err = Keyring::load(&config).unwrap_err().to_string();
        assert!(err.contains("`k3`") && err.contains("64 hex") && !err.contains("abcd"), "{err}");
        config.security.encryption_keys.remove("k3");
        config.security.encryption_keys.insert("K4".into(), Secret::new("ab".repeat(32)));
        assert!(Keyring::load(&config).unwrap_err().to_string().contains("`K4`"));
    }

    #[test]
    fn dev_mode_generates_its_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::dev_defaults();
        config.data_dir = dir.path().to_owned();
        assert!(!dev_key_path(dir.path()).exists());
        let a = Keyring::load(&config).unwrap();
        assert!(dev_key_path(dir.path()).exists());
        let b = Keyring::load(&config).unwrap();
        assert_eq!(a.active(), DEV_KEY_ID);
        let sealed = a.seal("p", "15838510075").unwrap();
        assert_eq!(b.open("p", DEV_KEY_ID, &sealed.bytes).unwrap(), "15838510075");
        // A configured key can be made active in dev mode; `dev` still opens
        // what it sealed.
        config.security.encryption_keys.insert("k1".into(), Secret::new(random_hex_key()));
        config.security.active_encryption_key = Some("k1".into());
        let c = Keyring::load(&config).unwrap();
        assert_eq!(c.active(), "k1");
        assert_eq!(c.open("p", DEV_KEY_ID, &sealed.bytes).unwrap(), "15838510075");
    }
}
