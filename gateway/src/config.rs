//! Typed configuration: built-in defaults, then a TOML file, then
//! `HURTIGSPOR__*` environment variables (`__` separates levels, e.g.
//! `HURTIGSPOR__PROGRAMME__NORMAL_MAX_MONTHS=24`), then command-line flags.
//!
//! This module is a leaf: it declares the configuration's data, defaults and
//! the checks of its own shape, and uses nothing else of the crate. What is
//! built from it lives with what is built, and takes the configuration in:
//!
//! - `auth` (the `Authenticator`, from `AuthConfig`) uses config, jwks, tls,
//!   keys and audit;
//! - `crypto` (the `Keyring`, from `Config`) uses config and keys;
//! - `keys` (the keyed hashes, from `Config`) uses config and audit;
//! - `tls` (the server's TLS settings, from `TlsConfig`) uses config;
//! - `jwks` and `audit` use none of these.
//!
//! Names the checks here share with those modules (the dev issuer, the dev
//! key id, the key-id rule, environment variable names) are declared here.

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Real identities only; secrets must be configured.
    #[default]
    Production,
    /// Dev/test: synthetic identities accepted; a local key is generated.
    Dev,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

/// The whole configuration. `Serialize` serves [`Config::load`] only, and
/// leaves every [`Secret`] out.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// HTTP listen address for NOKUT's webhooks (and health); none to rely
    /// on polling alone.
    pub http_listen: Option<SocketAddr>,
    /// Where the SQLite file and other local state live.
    pub data_dir: PathBuf,
    /// A PostgreSQL database to serve from instead of the SQLite file under
    /// `data_dir`, e.g. `postgres://hurtigspor@db.example:5432/hurtigspor`:
    /// several instances may share it. It may hold a password, so it is
    /// kept like a secret and named in messages without it.
    #[serde(skip_serializing)]
    pub database_url: Option<Secret>,
    /// Connections each instance keeps open to `database_url`.
    pub database_pool_size: usize,
    pub security: SecurityConfig,
    pub programme: ProgrammeRules,
    pub limits: Limits,
    pub log: LogConfig,
    pub targets: TargetsConfig,
    pub sync: SyncSettings,
    /// Who may call. Required in production; dev mode makes its own.
    pub auth: Option<AuthConfig>,
    /// TLS on the gRPC port, and client certificates when `client_ca_file`
    /// is set; without it the port is plaintext.
    pub tls: Option<TlsConfig>,
}

/// TLS on the gRPC port (files in PEM).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate, followed by its intermediates.
    pub cert_file: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The CA certificates that client certificates must chain to. When set,
    /// every call except health needs a client certificate whose
    /// organisation number is the token's organisation (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// Bearer-token authentication and the client registry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The token issuer to trust (`iss`), e.g. `https://maskinporten.no/`.
    pub issuer: String,
    /// The audience tokens must be for (`aud`), when set.
    #[serde(default)]
    pub audience: Option<String>,
    /// The issuer's signing keys, from a JWKS document on disk...
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// ...or fetched from the issuer's JWKS URL (exactly one of the two), at
    /// start, every `jwks_refresh_secs`, and early when a token names a key
    /// id not yet known, at most once per `jwks_min_refresh_secs`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_secs: u64,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// The organisations that may call, with their role.
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
}

impl AuthConfig {
    /// The issuer dev mode signs its tokens as; production refuses it.
    pub const DEV_ISSUER: &str = "hurtigspor-dev";
}

/// What an organisation is to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A kommune (through its vendor): its own participants only.
    Kommune,
    /// NAV: moves the hurtigspor status and records measures.
    Nav,
    /// Operates the gateway: everything.
    Admin,
}

/// An organisation the gateway knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// Organisation number (9 digits).
    pub organisation: String,
    pub role: Role,
    /// For kommuner: the kommunenummer they act for.
    #[serde(default)]
    pub kommuner: Vec<String>,
    /// A name for logs and audit (no personal data).
    #[serde(default)]
    pub name: String,
}

fn default_leeway() -> u64 {
    30
}

fn default_jwks_refresh() -> u64 {
    300
}

fn default_jwks_min_refresh() -> u64 {
    30
}

/// How deliveries are retried and how often inbound feeds are read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSettings {
    /// First backoff after a transient failure, in milliseconds; it doubles
    /// per attempt (with 50-150 % jitter) up to `retry_max_delay_ms`.
    pub retry_base_ms: u64,
    pub retry_max_delay_ms: u64,
    /// Transient failures in a row before a delivery is marked failed.
    pub max_attempts: i64,
    /// Deliveries claimed (and run concurrently) at a time.
    pub batch: usize,
    /// How long a claimed delivery is leased before another dispatcher may
    /// take it over, in seconds.
    pub lease_secs: u64,
    /// How often the Arena change feed and NOKUT's changes are polled, in
    /// milliseconds. NOKUT webhooks arrive in between.
    pub poll_interval_ms: u64,
    /// Transient failures in a row that open a target's circuit breaker;
    /// while open, its deliveries fail fast without a request.
    pub breaker_failures: u32,
    /// How long a breaker stays open before one trial call, in milliseconds;
    /// each failed trial doubles it up to `breaker_max_cool_down_ms`.
    pub breaker_cool_down_ms: u64,
    pub breaker_max_cool_down_ms: u64,
}

impl Default for SyncSettings {
    fn default() -> Self {
        // At the 60 s cap, 40 attempts ride out outages of about half an hour.
        Self {
            retry_base_ms: 200,
            retry_max_delay_ms: 60_000,
            max_attempts: 40,
            batch: 32,
            lease_secs: 60,
            poll_interval_ms: 2_000,
            breaker_failures: 5,
            breaker_cool_down_ms: 5_000,
            breaker_max_cool_down_ms: 60_000,
        }
    }
}

/// The systems every accepted write is carried to.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetsConfig {
    pub arena: Option<ArenaTarget>,
    pub nir: Option<NirTarget>,
    pub nokut: Option<NokutTarget>,
    /// Dev mode only: start the Arena, NIR and NOKUT mocks in-process and
    /// use them for every target not configured above.
    pub in_process_mocks: bool,
    /// Per request to a target, in seconds.
    pub timeout_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArenaTarget {
    pub base_url: String,
    pub client_id: String,
    #[serde(skip_serializing)]
    pub client_secret: Secret,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NirTarget {
    pub base_url: String,
    pub username: String,
    #[serde(skip_serializing)]
    pub password: Secret,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NokutTarget {
    pub base_url: String,
    #[serde(skip_serializing)]
    pub api_key: Secret,
    /// The secret NOKUT signs webhooks with; webhooks are refused without it.
    #[serde(default, skip_serializing)]
    pub webhook_secret: Option<Secret>,
    /// The public URL of this gateway's `/webhooks/nokut`, to subscribe at
    /// start; none to rely on polling alone.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Production,
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: None,
            data_dir: PathBuf::from("data"),
            database_url: None,
            database_pool_size: crate::store::DEFAULT_POOL_SIZE,
            security: SecurityConfig::default(),
            programme: ProgrammeRules::default(),
            limits: Limits::default(),
            log: LogConfig::default(),
            targets: TargetsConfig { timeout_secs: 10, ..TargetsConfig::default() },
            sync: SyncSettings::default(),
            auth: None,
            tls: None,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Hex-encoded key (at least 32 bytes) for the keyed hash that national
    /// ids are looked up by, and for signing page tokens. Required in
    /// production; generated under `data_dir` in dev mode.
    #[serde(skip_serializing)]
    pub national_id_key: Option<Secret>,
    /// The keys national ids are encrypted with at rest (AES-256-GCM), by
    /// key id (lowercase letters, digits and `_`): 64 hex characters each,
    /// e.g. from `openssl rand -hex 32`. Each can also be set as
    /// `HURTIGSPOR__SECURITY__ENCRYPTION_KEYS__<ID>`. Every key id the
    /// database still holds values under must be here. Required in
    /// production; dev mode adds key `dev`, generated under `data_dir`.
    #[serde(skip_serializing)]
    pub encryption_keys: BTreeMap<String, Secret>,
    /// The key id new values are encrypted under (`hurtigspor rotate-key`
    /// moves old values to it). Required when there is more than one key.
    pub active_encryption_key: Option<String>,
}

impl SecurityConfig {
    /// The id of the encryption key dev mode generates; in dev mode it may be
    /// named active without being configured.
    pub const DEV_KEY_ID: &str = "dev";
}

/// Checks a key id from configuration: lowercase letters, digits and `_`,
/// starting with a letter, at most 32 characters (environment variable names
/// are case-insensitive here, so upper case could not round-trip).
pub fn check_key_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key id `{id}` in security.encryption_keys is not valid: use lowercase letters, digits and `_`, starting with a letter, at most 32 characters (e.g. k2026a)"
        ))
    }
}

/// What to do when production has no encryption key.
pub fn missing_keys_message() -> String {
    "key `security.encryption_keys` is required in production: national ids are stored encrypted with it. \
     Generate a key with `openssl rand -hex 32` and set it under an id of your choice, e.g. \
     HURTIGSPOR__SECURITY__ENCRYPTION_KEYS__K2026A=<64 hex characters> and \
     HURTIGSPOR__SECURITY__ACTIVE_ENCRYPTION_KEY=k2026a (or `encryption_keys = { k2026a = \"...\" }` and \
     `active_encryption_key = \"k2026a\"` under [security] in the config file)"
        .to_owned()
}

/// The prefix of the environment variables that set configuration keys.
const ENV_PREFIX: &str = "HURTIGSPOR__";

/// The environment variable that sets the configuration key at `path`:
/// `["security", "national_id_key"]` is `HURTIGSPOR__SECURITY__NATIONAL_ID_KEY`.
pub fn env_var(path: &[impl AsRef<str>]) -> String {
    let path: Vec<&str> = path.iter().map(AsRef::as_ref).collect();
    format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase())
}

/// Programme rules that law and policy change; kept out of code.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgrammeRules {
    /// Normal maximum programme length, before approved leave.
    pub normal_max_months: u32,
    /// Maximum length when the kommune has found special reasons.
    pub extended_max_months: u32,
    /// The main target group's age range at programme start; outside it is a
    /// warning, not a rejection.
    pub target_age_min: u32,
    pub target_age_max: u32,
}

impl Default for ProgrammeRules {
    fn default() -> Self {
        Self { normal_max_months: 24, extended_max_months: 36, target_age_min: 18, target_age_max: 55 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub default_page_size: u32,
    pub max_page_size: u32,
    /// Largest accepted request message, in bytes.
    pub max_message_bytes: usize,
    /// Upper bound on any request's run time, in seconds; a shorter client
    /// deadline (`grpc-timeout`) wins.
    pub request_timeout_secs: u64,
    /// Requests per second each client organisation may make, sustained;
    /// more answer RESOURCE_EXHAUSTED with when to retry.
    pub requests_per_second: u32,
    /// Requests a client may make at once above the sustained rate.
    pub burst: u32,
    /// `WatchChanges` streams each client may hold open at once.
    pub max_streams_per_client: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_page_size: 50,
            max_page_size: 500,
            max_message_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            requests_per_second: 1_000,
            burst: 2_000,
            max_streams_per_client: 8,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing` env-filter directives; `HURTIGSPOR_LOG` overrides.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Json, filter: "info".to_owned() }
    }
}

/// A secret string: a password, client secret, API key, webhook secret or
/// key. It is read from the config file or the environment, and its value
/// is had only through [`Secret::expose`].
///
/// - `Debug` prints `Secret([redacted])`; there is no `Display`.
/// - There is no `Serialize`. [`Config`] is `Serialize` only because
///   [`Config::load`] lays its base (the defaults) under the file and the
///   environment through figment's `Serialized` provider; every field that
///   holds a `Secret` is `#[serde(skip_serializing)]` (the derive refuses one
///   that is not), so a serialised configuration leaves secrets out
///   altogether. Left out rather than written as `"***"`: a placeholder
///   would be read back by `load` as if it were the value, where a secret
///   left out reads back as missing, which loading or validation names. The
///   bases `load` is given (the defaults, the dev defaults) hold no secrets.
/// - Deserialising takes a string; a value of another type is refused
///   without repeating it in the error.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_string(SecretVisitor)
    }
}

/// Takes what a `String` takes; what it refuses is named by its kind only
/// (serde's own errors would repeat a number or a boolean).
struct SecretVisitor;

impl SecretVisitor {
    fn refuse<E: serde::de::Error>(&self, kind: &str) -> E {
        E::invalid_type(serde::de::Unexpected::Other(kind), self)
    }
}

impl serde::de::Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret(v))
    }

    fn visit_char<E: serde::de::Error>(self, v: char) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Secret, E> {
        std::str::from_utf8(v).map(Secret::new).map_err(|_| self.refuse("bytes that are not UTF-8"))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
        Err(self.refuse("a boolean"))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
        Err(self.refuse("a number"))
    }

    fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Secret, E> {
        Err(self.refuse("a number"))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
        Err(self.refuse("a number"))
    }

    fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Secret, E> {
        Err(self.refuse("a number"))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(self.refuse("a number"))
    }
}

/// Values given on the command line; they win over file and environment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

impl Config {
    /// Loads defaults < `file` (if given) < `HURTIGSPOR__*` < `overrides`.
    /// Errors name the offending key and where its value came from. Secrets
    /// come from the file or the environment: `base` is serialised, which
    /// leaves its secrets out (see [`Secret`]).
    pub fn load(file: Option<&Path>, base: Config, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(base));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist; pass an existing file with --config",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__")).merge(Serialized::defaults(overrides));
        figment
            .extract()
            .map_err(|e| ConfigError(e.into_iter().map(|err| describe(&err)).collect::<Vec<_>>().join("; ")))
    }

    /// The base for `hurtigspor dev`: dev mode, text logs, a local data dir.
    pub fn dev_defaults() -> Self {
        Self {
            mode: Mode::Dev,
            data_dir: PathBuf::from(".hurtigspor-dev"),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            log: LogConfig { format: LogFormat::Text, filter: "info".to_owned() },
            targets: TargetsConfig { in_process_mocks: true, timeout_secs: 10, ..TargetsConfig::default() },
            sync: SyncSettings { poll_interval_ms: 500, ..SyncSettings::default() },
            ..Self::default()
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("hurtigspor.db")
    }

    /// The PostgreSQL URL to serve from, if one is configured.
    pub fn postgres_url(&self) -> Option<&str> {
        self.database_url.as_ref().map(Secret::expose).filter(|u| !u.trim().is_empty())
    }

    /// Checks where the data is to be kept: what the maintenance commands
    /// check before they touch a database.
    pub fn validate_database(&self) -> Result<(), ConfigError> {
        if let Some(url) = self.postgres_url()
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError(
                "key `database_url` (or --database-url) must be a postgres:// URL, e.g. postgres://user@host:5432/hurtigspor; leave it out to use the SQLite file under data_dir".into(),
            ));
        }
        if self.database_pool_size == 0 {
            return Err(ConfigError("key `database_pool_size` must be at least 1".into()));
        }
        Ok(())
    }

    /// Checks rules that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_database()?;
        let p = &self.programme;
        if p.normal_max_months == 0 || p.extended_max_months < p.normal_max_months {
            return Err(ConfigError(
                "key `programme.extended_max_months` must be at least `programme.normal_max_months`, which must be above 0".into(),
            ));
        }
        if p.target_age_min > p.target_age_max {
            return Err(ConfigError(
                "key `programme.target_age_min` must not exceed `programme.target_age_max`".into(),
            ));
        }
        let l = &self.limits;
        if l.requests_per_second == 0 || l.burst == 0 || l.max_streams_per_client == 0 {
            return Err(ConfigError(
                "keys `limits.requests_per_second`, `limits.burst` and `limits.max_streams_per_client` must be above 0"
                    .into(),
            ));
        }
        if l.default_page_size == 0 || l.max_page_size < l.default_page_size {
            return Err(ConfigError(
                "key `limits.max_page_size` must be at least `limits.default_page_size`, which must be above 0".into(),
            ));
        }
        let s = &self.sync;
        if s.retry_base_ms == 0 || s.retry_max_delay_ms < s.retry_base_ms || s.max_attempts < 1 {
            return Err(ConfigError(
                "key `sync.retry_max_delay_ms` must be at least `sync.retry_base_ms`, which must be above 0, and `sync.max_attempts` at least 1".into(),
            ));
        }
        if s.breaker_failures == 0 || s.breaker_cool_down_ms == 0 || s.breaker_max_cool_down_ms < s.breaker_cool_down_ms
        {
            return Err(ConfigError(
                "key `sync.breaker_max_cool_down_ms` must be at least `sync.breaker_cool_down_ms`, which must be above 0, and `sync.breaker_failures` at least 1".into(),
            ));
        }
        if s.batch == 0 || s.lease_secs == 0 || s.poll_interval_ms == 0 {
            return Err(ConfigError(
                "keys `sync.batch`, `sync.lease_secs` and `sync.poll_interval_ms` must be above 0".into(),
            ));
        }
        if self.mode == Mode::Production {
            match &self.auth {
                None => {
                    return Err(ConfigError(
                        "section `[auth]` is required in production: issuer, jwks_file or jwks_url, and the clients that may call (see the README)".into(),
                    ));
                }
                Some(a) if a.issuer == AuthConfig::DEV_ISSUER => {
                    return Err(ConfigError(
                        "key `auth.issuer` names the dev issuer; production does not accept dev tokens".into(),
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(a) = &self.auth {
            a.validate_keys()?;
        }
        if self.mode == Mode::Production && self.security.national_id_key.is_none() {
            return Err(ConfigError(
                "key `security.national_id_key` is required in production: set it in the config file or as HURTIGSPOR__SECURITY__NATIONAL_ID_KEY (64 hex characters, e.g. from `openssl rand -hex 32`)".into(),
            ));
        }
        for id in self.security.encryption_keys.keys() {
            check_key_id(id).map_err(ConfigError)?;
        }
        if let Some(active) = &self.security.active_encryption_key
            && !self.security.encryption_keys.contains_key(active)
            && !(self.mode == Mode::Dev && active == SecurityConfig::DEV_KEY_ID)
        {
            return Err(ConfigError(format!(
                "key `security.active_encryption_key` names `{active}`, which is not in security.encryption_keys; add it there (or set {})",
                env_var(&["security", "encryption_keys", active])
            )));
        }
        if self.mode == Mode::Production && self.security.encryption_keys.is_empty() {
            return Err(ConfigError(missing_keys_message()));
        }
        Ok(())
    }
}

impl AuthConfig {
    /// Exactly one source of signing keys; a URL only over https (or http
    /// to this host).
    fn validate_keys(&self) -> Result<(), ConfigError> {
        let url = match (&self.jwks_file, &self.jwks_url) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "keys `auth.jwks_file` and `auth.jwks_url` are both set; keep one: a JWKS file, or the issuer's JWKS URL".into(),
                ));
            }
            (None, None) => {
                return Err(ConfigError(
                    "key `auth.jwks_file` or `auth.jwks_url` is required: the issuer's signing keys, as a JWKS file or the issuer's JWKS URL (e.g. https://maskinporten.no/jwk)".into(),
                ));
            }
            (Some(_), None) => return Ok(()),
            (None, Some(url)) => url,
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            ConfigError(format!(
                "key `auth.jwks_url` is not a URL ({e}); give the issuer's JWKS URL, e.g. https://maskinporten.no/jwk"
            ))
        })?;
        let loopback = match parsed.host_str() {
            Some("localhost") => true,
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        };
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(ConfigError(
                    "key `auth.jwks_url` must be an https URL: keys fetched over plain http could be swapped on the way (http is accepted for this host only)".into(),
                ));
            }
        }
        if self.jwks_refresh_secs == 0 || self.jwks_min_refresh_secs == 0 {
            return Err(ConfigError(
                "keys `auth.jwks_refresh_secs` and `auth.jwks_min_refresh_secs` must be above 0".into(),
            ));
        }
        Ok(())
    }
}

/// "key `a.b`: what is wrong (from where)", naming the environment variable
/// when the value came from one.
fn describe(err: &figment::Error) -> String {
    let path: Vec<String> = err.path.iter().map(|p| p.to_ascii_lowercase()).collect();
    let key = path.join(".");
    let source = match &err.metadata {
        Some(md) if md.name.contains("environment") => {
            format!(" (from environment variable {})", env_var(&path))
        }
        Some(md) => match &md.source {
            Some(src) => format!(" (from {src})"),
            None => format!(" (from {})", md.name),
        },
        None => String::new(),
    };
    if key.is_empty() { format!("{}{source}", err.kind) } else { format!("key `{key}`: {}{source}", err.kind) }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn the_database_url_comes_from_file_env_or_flag_and_must_be_postgres() {
        Jail::expect_with(|jail| {
            jail.create_file("h.toml", "database_url = \"postgres://file@db/h\"\ndatabase_pool_size = 4\n")?;
            let c = Config::load(Some(Path::new("h.toml")), Config::default(), Overrides::default()).unwrap();
            assert_eq!((c.postgres_url(), c.database_pool_size), (Some("postgres://file@db/h"), 4));
            jail.set_env("HURTIGSPOR__DATABASE_URL", "postgres://env@db/h");
            let c = Config::load(Some(Path::new("h.toml")), Config::default(), Overrides::default()).unwrap();
            assert_eq!(c.postgres_url(), Some("postgres://env@db/h"));
            let flag = Overrides { database_url: Some("postgresql://flag@db/h".into()), ..Default::default() };
            let c = Config::load(Some(Path::new("h.toml")), Config::default(), flag).unwrap();
            assert_eq!(c.postgres_url(), Some("postgresql://flag@db/h"));
            c.validate_database().unwrap();
            assert!(!format!("{c:?}").contains("flag@db"), "the URL is kept like a secret");
            let wrong = Overrides { database_url: Some("mysql://db/h".into()), ..Default::default() };
            let c = Config::load(None, Config::default(), wrong).unwrap();
            assert!(c.validate_database().unwrap_err().0.contains("postgres://"));
            Ok(())
        });
        assert_eq!(Config::default().postgres_url(), None, "SQLite unless a URL is given");
    }

    #[test]
    fn file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "h.toml",
                "listen = \"127.0.0.1:6000\"\n[programme]\nnormal_max_months = 30\nextended_max_months = 40\n",
            )?;
            jail.set_env("HURTIGSPOR__PROGRAMME__EXTENDED_MAX_MONTHS", "48");
            let c = Config::load(Some(Path::new("h.toml")), Config::default(), Overrides::default()).unwrap();
            assert_eq!(c.listen.port(), 6000);
            assert_eq!(c.programme.normal_max_months, 30);
            assert_eq!(c.programme.extended_max_months, 48);
            let c = Config::load(
                Some(Path::new("h.toml")),
                Config::default(),
                Overrides { listen: Some("127.0.0.1:7000".parse().unwrap()), ..Default::default() },
            )
            .unwrap();
            assert_eq!(c.listen.port(), 7000);
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key_and_its_source() {
        Jail::expect_with(|jail| {
            jail.set_env("HURTIGSPOR__PROGRAMME__NORMAL_MAX_MONTHS", "two years");
            let err = Config::load(None, Config::default(), Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("programme.normal_max_months"), "{err}");
            assert!(err.contains("HURTIGSPOR__PROGRAMME__NORMAL_MAX_MONTHS"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused() {
        Jail::expect_with(|jail| {
            jail.create_file("h.toml", "[programme]\nnormal_max_month = 30\n")?;
            let err = Config::load(Some(Path::new("h.toml")), Config::default(), Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("normal_max_month"), "{err}");
            Ok(())
        });
    }

    /// An `[auth]` section as production would have it.
    fn production_auth() -> AuthConfig {
        AuthConfig {
            issuer: "https://maskinporten.no/".into(),
            audience: None,
            jwks_file: Some("/etc/hurtigspor/jwks.json".into()),
            jwks_url: None,
            jwks_refresh_secs: 300,
            jwks_min_refresh_secs: 30,
            leeway_secs: 30,
            clients: vec![],
        }
    }

    #[test]
    fn production_requires_auth_and_a_key() {
        let err = Config::default().validate().unwrap_err().to_string();
        assert!(err.contains("[auth]"), "{err}");
        let mut config = Config { auth: Some(production_auth()), ..Config::default() };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("security.national_id_key"), "{err}");
        config.auth.as_mut().unwrap().issuer = AuthConfig::DEV_ISSUER.into();
        config.security.national_id_key = Some(Secret::new("ab".repeat(32)));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("dev issuer"), "production refuses dev tokens: {err}");
        config.auth.as_mut().unwrap().jwks_file = None;
        config.auth.as_mut().unwrap().issuer = "https://maskinporten.no/".into();
        assert!(config.validate().unwrap_err().to_string().contains("auth.jwks_file"));
        assert!(Config::dev_defaults().validate().is_ok());
    }

    #[test]
    fn encryption_keys_come_from_the_file_or_the_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "h.toml",
                &format!(
                    "[security]\nactive_encryption_key = \"k2\"\n[security.encryption_keys]\nk1 = \"{}\"\n",
                    "ab".repeat(32)
                ),
            )?;
            jail.set_env("HURTIGSPOR__SECURITY__ENCRYPTION_KEYS__K2", "cd".repeat(32));
            let c = Config::load(Some(Path::new("h.toml")), Config::default(), Overrides::default()).unwrap();
            let keys = &c.security.encryption_keys;
            assert_eq!(keys.keys().collect::<Vec<_>>(), ["k1", "k2"]);
            assert_eq!(keys["k2"].expose(), "cd".repeat(32));
            assert_eq!(c.security.active_encryption_key.as_deref(), Some("k2"));
            let shown = format!("{c:?}");
            assert!(!shown.contains("abab") && !shown.contains("cdcd"), "keys are redacted: {shown}");
            Ok(())
        });
    }

    #[test]
    fn signing_keys_come_from_exactly_one_file_or_trustworthy_url() {
        Jail::expect_with(|jail| {
            let load = |auth: &str| {
                let text = format!("mode = \"dev\"\n[auth]\nissuer = \"https://maskinporten.no/\"\n{auth}");
                std::fs::write("h.toml", text).unwrap();
                Config::load(Some(Path::new("h.toml")), Config::default(), Overrides::default())
                    .and_then(|c| c.validate().map(|()| c))
            };
            let err = |auth: &str| load(auth).unwrap_err().to_string();
            let c = load("jwks_url = \"https://maskinporten.no/jwk\"\n").unwrap();
            let a = c.auth.unwrap();
            assert_eq!((a.jwks_refresh_secs, a.jwks_min_refresh_secs), (300, 30), "the defaults");
            assert!(load("jwks_file = \"/etc/jwks.json\"\n").is_ok());
            assert!(load("jwks_url = \"http://127.0.0.1:8080/jwk\"\n").is_ok(), "http to this host");
            let both = err("jwks_file = \"/etc/jwks.json\"\njwks_url = \"https://maskinporten.no/jwk\"\n");
            assert!(both.contains("both set"), "{both}");
            let neither = err("");
            assert!(neither.contains("auth.jwks_file") && neither.contains("auth.jwks_url"), "{neither}");
            let plain = err("jwks_url = \"http://maskinporten.no/jwk\"\n");
            assert!(plain.contains("https"), "{plain}");
            assert!(err("jwks_url = \"maskinporten.no/jwk\"\n").contains("not a URL"));
            let zero = err("jwks_url = \"https://maskinporten.no/jwk\"\njwks_min_refresh_secs = 0\n");
            assert!(zero.contains("jwks_min_refresh_secs"), "{zero}");
            jail.set_env("HURTIGSPOR__TLS__CERT_FILE", "/etc/hurtigspor/tls.crt");
            jail.set_env("HURTIGSPOR__TLS__KEY_FILE", "/etc/hurtigspor/tls.key");
            let tls = load("jwks_file = \"/etc/jwks.json\"\n").unwrap().tls.expect("[tls] from the environment");
            assert_eq!(tls.cert_file, Path::new("/etc/hurtigspor/tls.crt"));
            assert_eq!(tls.client_ca_file, None, "client certificates are asked for only with a CA");
            Ok(())
        });
    }

    #[test]
    fn production_requires_an_encryption_key_and_a_known_active_one() {
        let mut config = Config { auth: Some(production_auth()), ..Config::default() };
        config.security.national_id_key = Some(Secret::new("ab".repeat(32)));
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("security.encryption_keys")
                && err.contains("HURTIGSPOR__SECURITY__ENCRYPTION_KEYS__")
                && err.contains("openssl rand -hex 32"),
            "{err}"
        );
        config.security.encryption_keys.insert("k2026a".into(), Secret::new("cd".repeat(32)));
        assert!(config.validate().is_ok());
        config.security.active_encryption_key = Some("k2027".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`k2027`") && err.contains("HURTIGSPOR__SECURITY__ENCRYPTION_KEYS__K2027"), "{err}");
        config.security.active_encryption_key = None;
        config.security.encryption_keys.insert("Upper".into(), Secret::new("cd".repeat(32)));
        assert!(config.validate().unwrap_err().to_string().contains("`Upper`"));
    }

    #[test]
    fn key_ids_must_round_trip_through_the_environment() {
        assert!(check_key_id("k2026a").is_ok());
        assert!(check_key_id("old_2025").is_ok());
        for bad in ["", "K2026A", "2026", "k-1", "k.1", &"k".repeat(33)] {
            assert!(check_key_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_file_is_an_error() {
        let err =
            Config::load(Some(Path::new("/nonexistent/h.toml")), Config::default(), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }

    /// Every secret the configuration holds, set from the file or the
    /// environment, with values that show if anything repeats them.
    fn config_with_every_secret(jail: &mut Jail) -> figment::error::Result<Config> {
        jail.create_file(
            "h.toml",
            "[security]\nnational_id_key = \"nationalidkey0000000000000000000000000000000000000000000000000000\"\n\
             [security.encryption_keys]\nk1 = \"encryptionkeyk1\"\n\
             [targets.arena]\nbase_url = \"https://arena.example\"\nclient_id = \"gateway\"\nclient_secret = \"arenaclientsecret\"\n\
             [targets.nokut]\nbase_url = \"https://nokut.example\"\napi_key = \"nokutapikey\"\n",
        )?;
        jail.set_env("HURTIGSPOR__SECURITY__ENCRYPTION_KEYS__K2", "encryptionkeyk2");
        jail.set_env("HURTIGSPOR__TARGETS__NIR__BASE_URL", "https://nir.example");
        jail.set_env("HURTIGSPOR__TARGETS__NIR__USERNAME", "intro");
        jail.set_env("HURTIGSPOR__TARGETS__NIR__PASSWORD", "nirpassword");
        jail.set_env("HURTIGSPOR__TARGETS__NOKUT__WEBHOOK_SECRET", "nokutwebhooksecret");
        Ok(Config::load(Some(Path::new("h.toml")), Config::default(), Overrides::default()).unwrap())
    }

    const SECRET_VALUES: [&str; 7] = [
        "nationalidkey",
        "encryptionkeyk1",
        "encryptionkeyk2",
        "arenaclientsecret",
        "nirpassword",
        "nokutapikey",
        "nokutwebhooksecret",
    ];

    #[test]
    fn secrets_load_from_the_file_and_the_environment() {
        Jail::expect_with(|jail| {
            let c = config_with_every_secret(jail)?;
            assert!(c.security.national_id_key.as_ref().unwrap().expose().starts_with("nationalidkey"));
            assert_eq!(c.security.encryption_keys["k1"].expose(), "encryptionkeyk1");
            assert_eq!(c.security.encryption_keys["k2"].expose(), "encryptionkeyk2");
            let targets = &c.targets;
            assert_eq!(targets.arena.as_ref().unwrap().client_secret.expose(), "arenaclientsecret");
            assert_eq!(targets.nir.as_ref().unwrap().password.expose(), "nirpassword");
            let nokut = targets.nokut.as_ref().unwrap();
            assert_eq!(nokut.api_key.expose(), "nokutapikey");
            assert_eq!(nokut.webhook_secret.as_ref().unwrap().expose(), "nokutwebhooksecret");
            Ok(())
        });
    }

    #[test]
    fn debug_of_a_config_shows_no_secret() {
        Jail::expect_with(|jail| {
            let c = config_with_every_secret(jail)?;
            for shown in [format!("{c:?}"), format!("{c:#?}")] {
                for secret in SECRET_VALUES {
                    assert!(!shown.contains(secret), "{secret} in {shown}");
                }
                assert!(shown.contains("Secret([redacted])"), "{shown}");
            }
            Ok(())
        });
    }

    #[test]
    fn a_serialised_config_holds_no_secret() {
        Jail::expect_with(|jail| {
            let c = config_with_every_secret(jail)?;
            let json = serde_json::to_string(&c).unwrap();
            // As `load` lays a base under the file and the environment.
            let layered = format!("{:?}", figment::Provider::data(&Serialized::defaults(&c)).unwrap());
            for shown in [&json, &layered] {
                for secret in SECRET_VALUES {
                    assert!(!shown.contains(secret), "{secret} in {shown}");
                }
            }
            assert!(json.contains("https://arena.example") && json.contains("\"username\":\"intro\""), "{json}");
            let secret_keys =
                ["national_id_key", "encryption_keys", "client_secret", "password", "api_key", "webhook_secret"];
            for key in secret_keys {
                assert!(!json.contains(key), "{key} in {json}");
            }
            Ok(())
        });
    }

    #[test]
    fn a_secret_of_another_type_is_refused_without_repeating_it() {
        Jail::expect_with(|jail| {
            jail.set_env("HURTIGSPOR__SECURITY__NATIONAL_ID_KEY", "9876543210");
            let err = Config::load(None, Config::default(), Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("security.national_id_key") && err.contains("expected a string"), "{err}");
            assert!(err.contains("HURTIGSPOR__SECURITY__NATIONAL_ID_KEY") && !err.contains("9876543210"), "{err}");
            jail.clear_env();
            jail.create_file("h.toml", "[targets.nir]\nbase_url = \"x\"\nusername = \"u\"\npassword = true\n")?;
            let err = Config::load(Some(Path::new("h.toml")), Config::default(), Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("targets.nir.password") && !err.contains("true"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("abc123");
        assert!(!format!("{s:?}").contains("abc123"));
    }
}
