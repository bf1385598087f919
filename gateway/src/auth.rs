//! Who is calling: Maskinporten-style bearer tokens, checked on every RPC
//! except health.
//!
//! A token is a JWT signed with one of the issuer's keys (RS256 or ES256;
//! a JWKS file, or fetched from the issuer's JWKS URL and kept fresh: see
//! [`crate::jwks`]), from the configured issuer, for the configured audience
//! (when set), within its expiry and not-before (with a small leeway). The
//! organisation comes from `consumer.ID` (`0192:<orgnr>`, mod-11 checked) and
//! must be in the client registry, which gives it a role; the vendor acting
//! for it comes from `supplier.ID`. `scope` (space-separated) says what the
//! token may do: see [`Scope`].
//!
//! With mutual TLS (`tls.client_ca_file`), the client's certificate must
//! name the token's organisation as well: see [`Authenticate`].
//!
//! Refusals are UNAUTHENTICATED (no token, or one that does not verify) or
//! PERMISSION_DENIED (a valid token that may not do this), with a stable
//! reason and a message saying what to fix; neither echoes the token nor
//! anything of the certificate.

/// The client registry's entries and roles are configuration (`[[auth.clients]]`).
pub use crate::config::{ClientEntry, Role};
use crate::{
    config::AuthConfig,
    domain::orgnr::Orgnr,
    error::Error,
    jwks::{KeySet, verifying_keys},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation, jwk::JwkSet};
use serde::{Deserialize, Serialize};
use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};
use tonic::{Request, Status, service::Interceptor};

/// What a token may do. The names are the `scope` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Read participants, their sync state and the change stream.
    ParticipantsRead,
    /// Create and change participants.
    ParticipantsWrite,
    /// Failed deliveries, replays and the inbound inbox.
    SyncAdmin,
    /// Reports.
    ReportsRead,
    /// The audit log (administrators only).
    AuditRead,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ParticipantsRead => "hurtigspor:participants.read",
            Self::ParticipantsWrite => "hurtigspor:participants.write",
            Self::SyncAdmin => "hurtigspor:sync.admin",
            Self::ReportsRead => "hurtigspor:reports.read",
            Self::AuditRead => "hurtigspor:audit.read",
        }
    }

    pub const ALL: [Scope; 5] =
        [Self::ParticipantsRead, Self::ParticipantsWrite, Self::SyncAdmin, Self::ReportsRead, Self::AuditRead];
}

/// The authenticated caller of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The organisation number (from `consumer.ID`).
    pub organisation: String,
    /// The vendor's organisation number (from `supplier.ID`), if one acts
    /// for the organisation.
    pub vendor: Option<String>,
    pub role: Role,
    /// The kommuner a kommune caller acts for.
    pub kommuner: Vec<String>,
    pub scopes: Vec<String>,
}

impl Caller {
    /// How the change log and audit name the caller: `0192:<org>` and the
    /// vendor, if any.
    pub fn actor(&self) -> String {
        match &self.vendor {
            Some(v) => format!("0192:{} via 0192:{v}", self.organisation),
            None => format!("0192:{}", self.organisation),
        }
    }

    /// Whether the caller may see participants of `kommunenummer`: a kommune
    /// its own only, NAV and administrators all.
    pub fn sees(&self, kommunenummer: &str) -> bool {
        self.role != Role::Kommune || self.kommuner.iter().any(|k| k == kommunenummer)
    }

    /// The caller, if the token grants `scope`.
    pub fn require(&self, scope: Scope) -> Result<&Self, Error> {
        if self.scopes.iter().any(|s| s == scope.as_str()) {
            Ok(self)
        } else {
            Err(Error::PermissionDenied {
                reason: "SCOPE_MISSING",
                message: format!("the token lacks the scope {}; ask for a token with it", scope.as_str()),
            })
        }
    }
}

/// The caller a request was authenticated as, with `scope` required.
pub fn caller<T>(request: &Request<T>, scope: Scope) -> Result<Caller, Status> {
    let caller = request.extensions().get::<Caller>().ok_or_else(|| {
        Status::from(Error::Unauthenticated {
            reason: "TOKEN_MISSING",
            message: "send a bearer token in the authorization header".into(),
        })
    })?;
    Ok(caller.require(scope)?.clone())
}

/// The caller of a method that changes a participant: the write scope, and
/// for NAV only the methods NAV owns (`nav_allowed`): moving the hurtigspor
/// status and the measures, not the kommune's fields.
pub fn writer<T>(request: &Request<T>, nav_allowed: bool) -> Result<Caller, Status> {
    let who = caller(request, Scope::ParticipantsWrite)?;
    if who.role == Role::Nav && !nav_allowed {
        return Err(Error::PermissionDenied {
            reason: "ROLE_NOT_ALLOWED",
            message: "NAV may move the hurtigspor status and record or end measures; the kommune owns the rest".into(),
        }
        .into());
    }
    Ok(who)
}

/// The caller of an operator's method: the sync.admin scope and the
/// administrator role (whatever scopes another role was given).
pub fn administrator<T>(request: &Request<T>) -> Result<Caller, Status> {
    admin_with(request, Scope::SyncAdmin, "failed deliveries, replays and the inbox are for the gateway's operators")
}

/// The caller of an audit log query: an administrator with the audit scope.
pub fn auditor<T>(request: &Request<T>) -> Result<Caller, Status> {
    admin_with(request, Scope::AuditRead, "the audit log is for the gateway's administrators")
}

fn admin_with<T>(request: &Request<T>, scope: Scope, refusal: &str) -> Result<Caller, Status> {
    let who = caller(request, scope)?;
    if who.role != Role::Admin {
        return Err(Error::PermissionDenied { reason: "ROLE_NOT_ALLOWED", message: refusal.into() }.into());
    }
    Ok(who)
}

/// `consumer` and `supplier` as Maskinporten writes them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrgClaim {
    #[serde(default)]
    pub authority: String,
    #[serde(rename = "ID")]
    pub id: String,
}

/// The claims the gateway reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub iat: i64,
    #[serde(default)]
    pub scope: String,
    pub consumer: OrgClaim,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier: Option<OrgClaim>,
    #[serde(default)]
    pub jti: String,
}

/// Checks tokens; cheap to clone.
#[derive(Clone)]
pub struct Authenticator(Arc<Inner>);

struct Inner {
    keys: KeySet,
    issuer: String,
    audience: Option<String>,
    leeway_secs: u64,
    clients: HashMap<String, ClientEntry>,
}

fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Error {
    Error::Unauthenticated { reason, message: message.into() }
}

/// The organisation number in `0192:<orgnr>`.
fn organisation(claim: &OrgClaim, what: &str) -> Result<String, Error> {
    claim
        .id
        .strip_prefix("0192:")
        .and_then(|o| Orgnr::parse(o).ok())
        .map(|o| o.as_str().to_owned())
        .ok_or_else(|| unauthenticated("TOKEN_INVALID", format!("{what}.ID must be 0192:<organisation number>")))
}

impl Authenticator {
    /// Keys from a JWKS document (RS256 and ES256 keys are used; others are
    /// skipped).
    pub fn new(config: &AuthConfig, jwks: &JwkSet) -> anyhow::Result<Self> {
        Self::with_keys(config, KeySet::fixed(verifying_keys(jwks)?))
    }

    fn with_keys(config: &AuthConfig, keys: KeySet) -> anyhow::Result<Self> {
        let mut clients = HashMap::new();
        for c in &config.clients {
            let org = Orgnr::parse(&c.organisation).map_err(|_| {
                anyhow::anyhow!("auth.clients: {:?} is not a valid organisation number", c.organisation)
            })?;
            clients.insert(org.as_str().to_owned(), c.clone());
        }
        Ok(Self(Arc::new(Inner {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway_secs: config.leeway_secs,
            clients,
        })))
    }

    /// The keys the configuration names: the JWKS file, or the issuer's
    /// JWKS URL, fetched now (keep them fresh with [`Self::refresh_keys`]).
    pub async fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let keys = match (&config.jwks_file, &config.jwks_url) {
            (Some(path), None) => KeySet::from_file(path)?,
            (None, Some(url)) => {
                let every = Duration::from_secs(config.jwks_refresh_secs);
                KeySet::fetch(url, every, Duration::from_secs(config.jwks_min_refresh_secs)).await?
            }
            _ => anyhow::bail!("set exactly one of auth.jwks_file and auth.jwks_url"),
        };
        Self::with_keys(config, keys)
    }

    /// Keeps keys fetched from the issuer's JWKS URL fresh until `stop`
    /// turns true; returns at once for keys from a file.
    pub async fn refresh_keys(self, stop: tokio::sync::watch::Receiver<bool>) {
        self.0.keys.refresh(stop).await;
    }

    /// The caller a bearer token stands for.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, Error> {
        let inner = &self.0;
        let header = authorization.ok_or_else(|| {
            unauthenticated("TOKEN_MISSING", "send a bearer token: authorization: Bearer <access token>")
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthenticated("TOKEN_MALFORMED", "the authorization header must be: Bearer <token>"))?;
        let head = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthenticated("TOKEN_MALFORMED", "the bearer token is not a JWT"))?;
        let keys = inner.keys.current();
        let mut last = unauthenticated("TOKEN_SIGNATURE_INVALID", "no configured key verifies the token's signature");
        if head.kid.as_deref().is_some_and(|kid| !inner.keys.knows(&keys, kid)) {
            last = unauthenticated(
                "TOKEN_SIGNATURE_INVALID",
                if inner.keys.is_fetched() {
                    "the token names a signing key (kid) the issuer's keys do not hold; if the issuer has just rotated its keys, retry in a minute"
                } else {
                    "the token names a signing key (kid) that is not in the configured JWKS"
                },
            );
        }
        let candidates = keys
            .iter()
            .filter(|k| k.algorithm == head.alg && (head.kid.is_none() || k.kid.is_none() || k.kid == head.kid));
        for candidate in candidates {
            let (key, alg) = (&candidate.key, &candidate.algorithm);
            let mut validation = Validation::new(*alg);
            validation.leeway = inner.leeway_secs;
            validation.validate_nbf = true;
            validation.set_issuer(&[&inner.issuer]);
            match &inner.audience {
                // A token without an audience is not for us either.
                Some(aud) => {
                    validation.set_audience(&[aud]);
                    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                }
                None => {
                    validation.validate_aud = false;
                    validation.set_required_spec_claims(&["exp", "iss"]);
                }
            }
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return self.caller(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature => last,
                        K::ExpiredSignature => unauthenticated("TOKEN_EXPIRED", "the token has expired; get a new one"),
                        K::ImmatureSignature => {
                            unauthenticated("TOKEN_NOT_YET_VALID", "the token is not valid yet (nbf); check the clocks")
                        }
                        K::InvalidIssuer => unauthenticated(
                            "TOKEN_WRONG_ISSUER",
                            "the token comes from an issuer this gateway does not trust",
                        ),
                        K::InvalidAudience => {
                            unauthenticated("TOKEN_WRONG_AUDIENCE", "the token is meant for another audience")
                        }
                        K::MissingRequiredClaim(c) if c == "aud" => unauthenticated(
                            "TOKEN_WRONG_AUDIENCE",
                            "the token names no audience; this gateway requires one",
                        ),
                        _ => unauthenticated("TOKEN_INVALID", "the token's claims are missing or malformed"),
                    };
                    if !matches!(e.kind(), K::InvalidSignature) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn caller(&self, claims: Claims) -> Result<Caller, Error> {
        let org = organisation(&claims.consumer, "consumer")?;
        let vendor = claims.supplier.as_ref().map(|s| organisation(s, "supplier")).transpose()?;
        let entry = self.0.clients.get(&org).ok_or_else(|| Error::PermissionDenied {
            reason: "ORGANISATION_UNKNOWN",
            message: "the token's organisation is not a client of this gateway; ask its operators to register it"
                .into(),
        })?;
        Ok(Caller {
            organisation: org,
            vendor,
            role: entry.role,
            kommuner: entry.kommuner.clone(),
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
        })
    }
}

/// A token bucket per client organisation.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: std::sync::Mutex<HashMap<String, (f64, std::time::Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second: f64::from(per_second), burst: f64::from(burst.max(1)), buckets: Default::default() }
    }

    /// Takes one request from `client`'s bucket, or says how long to wait.
    pub fn check(&self, client: &str) -> Result<(), std::time::Duration> {
        let now = std::time::Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(client.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
}

/// Whether callers must present a client certificate (mutual TLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCertificates {
    /// Plaintext, or TLS without client certificates.
    NotAsked,
    /// Every call needs a certificate naming the token's organisation.
    Required,
}

/// The organisation a request's client certificate names; the handshake
/// has already verified it against `tls.client_ca_file`.
fn certified_organisation<T>(request: &Request<T>) -> Result<String, Error> {
    let certificates = request.peer_certs().filter(|c| !c.is_empty()).ok_or_else(|| {
        unauthenticated(
            "CLIENT_CERTIFICATE_MISSING",
            "this gateway requires a client certificate (mutual TLS): connect with your enterprise certificate (virksomhetssertifikat)",
        )
    })?;
    crate::tls::organisation(&certificates[0]).map(|o| o.as_str().to_owned()).map_err(|_| {
        unauthenticated(
            "CLIENT_CERTIFICATE_INVALID",
            "the client certificate names no valid organisation number (organizationIdentifier NTRNO-<orgnr> or serialNumber <orgnr> in its subject); connect with your enterprise certificate",
        )
    })
}

/// Authenticates every request of the service it wraps, holds each client
/// to its rate, and puts the [`Caller`] in the request's extensions. With
/// [`ClientCertificates::Required`], the client certificate's organisation
/// must be the token's (`consumer.ID`) or its vendor's (`supplier.ID`).
#[derive(Clone)]
pub struct Authenticate(pub Authenticator, pub Arc<RateLimiter>, pub ClientCertificates);

impl Authenticate {
    fn caller(&self, request: &Request<()>) -> Result<Caller, Error> {
        let certified = match self.2 {
            ClientCertificates::Required => Some(certified_organisation(request)?),
            ClientCertificates::NotAsked => None,
        };
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let caller = self.0.authenticate(header)?;
        // The connection is the organisation's own, or its vendor's: a
        // vendor connects with its own enterprise certificate and a token
        // that names it as `supplier.ID`.
        match certified {
            Some(org) if org != caller.organisation && caller.vendor.as_deref() != Some(org.as_str()) => {
                Err(unauthenticated(
                    "CLIENT_CERTIFICATE_MISMATCH",
                    "the client certificate is neither the token's organisation's (consumer.ID) nor its vendor's (supplier.ID); use a token issued to, or for, the organisation whose certificate you connect with",
                ))
            }
            _ => Ok(caller),
        }
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.caller(&request) {
            Ok(caller) => {
                if let Err(wait) = self.1.check(&caller.organisation) {
                    tracing::info!(organisation = %caller.organisation, "request refused: over the rate limit");
                    return Err(Error::ResourceExhausted {
                        reason: "RATE_LIMITED",
                        message: format!(
                            "this client is over its limit of requests per second; retry in {} ms",
                            wait.as_millis().max(1)
                        ),
                        retry_after: wait,
                    }
                    .into());
                }
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            Err(e) => {
                tracing::info!(reason = e.reason(), "request refused: not authenticated");
                Err(e.into())
            }
        }
    }
}

/// Dev mode: a local ES256 signing key, its JWKS, the dev organisations and
/// ready tokens for them.
pub mod dev {
    use super::*;
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use ring::{
        rand::SystemRandom,
        signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
    };

    /// The issuer of dev tokens; `serve` refuses it.
    pub const ISSUER: &str = AuthConfig::DEV_ISSUER;
    pub const AUDIENCE: &str = "hurtigspor";
    const KID: &str = "hurtigspor-dev-1";

    /// One dev organisation: (token key, organisation, vendor, role,
    /// kommuner, scopes).
    pub type DevOrganisation = (&'static str, &'static str, Option<&'static str>, Role, Vec<String>, Vec<Scope>);

    /// The dev organisations, with synthetic organisation numbers (mod 11
    /// valid).
    pub fn organisations() -> Vec<DevOrganisation> {
        use Scope::*;
        vec![
            (
                "kommune_0301",
                "900000014",
                Some("900000103"),
                Role::Kommune,
                vec!["0301".into()],
                vec![ParticipantsRead, ParticipantsWrite, ReportsRead],
            ),
            (
                "kommune_4601",
                "900000022",
                Some("900000103"),
                Role::Kommune,
                vec!["4601".into()],
                vec![ParticipantsRead, ParticipantsWrite, ReportsRead],
            ),
            ("nav", "900000030", None, Role::Nav, vec![], vec![ParticipantsRead, ParticipantsWrite, ReportsRead]),
            ("admin", "900000049", None, Role::Admin, vec![], Scope::ALL.to_vec()),
        ]
    }

    /// The dev signing key under `data_dir/secrets`, made on first use.
    pub fn signing_key(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
        let path = data_dir.join("secrets").join("dev-signing-key.p8");
        if let Ok(existing) = std::fs::read(&path) {
            return Ok(existing);
        }
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("cannot generate a dev signing key"))?;
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        crate::keys::write_private_bytes(&path, pkcs8.as_ref())?;
        Ok(pkcs8.as_ref().to_vec())
    }

    /// The JWKS that verifies the dev key.
    pub fn jwks(pkcs8: &[u8]) -> anyhow::Result<JwkSet> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("the dev signing key is unreadable; delete it to make a new one"))?;
        let point = pair.public_key().as_ref();
        let (x, y) = (URL_SAFE_NO_PAD.encode(&point[1..33]), URL_SAFE_NO_PAD.encode(&point[33..65]));
        Ok(serde_json::from_value(serde_json::json!({
            "keys": [{ "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": KID, "alg": "ES256", "use": "sig" }]
        }))?)
    }

    /// The dev auth configuration: issuer, audience and client registry.
    pub fn config() -> AuthConfig {
        AuthConfig {
            issuer: ISSUER.into(),
            audience: Some(AUDIENCE.into()),
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            jwks_min_refresh_secs: 30,
            leeway_secs: 30,
            clients: organisations()
                .into_iter()
                .map(|(key, org, _, role, kommuner, _)| ClientEntry {
                    organisation: org.into(),
                    role,
                    kommuner,
                    name: format!("dev {key}"),
                })
                .collect(),
        }
    }

    /// Signs `claims` with the dev key.
    pub fn sign(pkcs8: &[u8], claims: &Claims) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.into());
        Ok(jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(pkcs8))?)
    }

    /// A token from a dev gateway's `dev-tokens.json` in `data_dir`, by
    /// name (`kommune_0301`, `kommune_4601`, `nav`, `admin`).
    pub fn dev_token(data_dir: &Path, name: &str) -> anyhow::Result<String> {
        use anyhow::Context;
        let path = data_dir.join("dev-tokens.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("no token given and no dev tokens at {}; pass --token or set HURTIGSPOR_TOKEN", path.display())
        })?;
        let tokens: serde_json::Value = serde_json::from_str(&text)?;
        tokens[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("{} has no `{name}` token", path.display()))
    }

    /// Ready tokens for every dev organisation, valid for `hours`.
    pub fn tokens(pkcs8: &[u8], hours: i64) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        let now = chrono::Utc::now().timestamp();
        let mut out = serde_json::Map::new();
        for (key, org, vendor, _, _, scopes) in organisations() {
            let claims = Claims {
                iss: ISSUER.into(),
                aud: Some(AUDIENCE.into()),
                exp: now + hours * 3600,
                nbf: Some(now - 60),
                iat: now,
                scope: scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "),
                consumer: OrgClaim { authority: "iso6523-actorid-upis".into(), id: format!("0192:{org}") },
                supplier: vendor
                    .map(|v| OrgClaim { authority: "iso6523-actorid-upis".into(), id: format!("0192:{v}") }),
                jti: format!("dev-{key}-{now}"),
            };
            out.insert(key.into(), serde_json::Value::String(sign(pkcs8, &claims)?));
        }
        Ok(out)
    }
}

/// Client side: adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct BearerToken {
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    purpose: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl BearerToken {
    pub fn new(token: &str) -> anyhow::Result<Self> {
        let value =
            format!("Bearer {}", token.trim()).parse().map_err(|_| anyhow::anyhow!("the token is not ASCII"))?;
        Ok(Self { token: Some(value), purpose: None })
    }

    /// Sends no credentials (for health checks, or to see a refusal).
    pub fn none() -> Self {
        Self { token: None, purpose: None }
    }

    /// Sends this `purpose` header with every request (see
    /// [`crate::audit::parse_purpose`]).
    pub fn with_purpose(mut self, purpose: &str) -> anyhow::Result<Self> {
        self.purpose = Some(purpose.parse().map_err(|_| anyhow::anyhow!("the purpose is not ASCII"))?);
        Ok(self)
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.token {
            request.metadata_mut().insert("authorization", value.clone());
        }
        if let Some(value) = &self.purpose {
            request.metadata_mut().insert(crate::audit::PURPOSE_HEADER, value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_has_its_own_bucket_that_refills() {
        let limiter = RateLimiter::new(10, 3);
        for _ in 0..3 {
            limiter.check("a").unwrap();
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(wait <= std::time::Duration::from_millis(100), "{wait:?}");
        limiter.check("b").expect("another client is not held up");
        std::thread::sleep(std::time::Duration::from_millis(120));
        limiter.check("a").expect("refilled");
    }

    struct Fixture {
        key: Vec<u8>,
        auth: Authenticator,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = dev::signing_key(dir.path()).unwrap();
        let auth = Authenticator::new(&dev::config(), &dev::jwks(&key).unwrap()).unwrap();
        Fixture { key, auth }
    }

    fn claims(org: &str, scope: &str) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: dev::ISSUER.into(),
            aud: Some(dev::AUDIENCE.into()),
            exp: now + 600,
            nbf: Some(now - 10),
            iat: now,
            scope: scope.into(),
            consumer: OrgClaim { authority: String::new(), id: format!("0192:{org}") },
            supplier: Some(OrgClaim { authority: String::new(), id: "0192:900000103".into() }),
            jti: "t".into(),
        }
    }

    fn check(f: &Fixture, c: &Claims) -> Result<Caller, Error> {
        f.auth.authenticate(Some(&format!("Bearer {}", dev::sign(&f.key, c).unwrap())))
    }

    fn reason(r: Result<Caller, Error>) -> &'static str {
        r.unwrap_err().reason()
    }

    #[test]
    fn a_valid_token_names_the_organisation_its_vendor_role_and_scopes() {
        let f = fixture();
        let caller = check(&f, &claims("900000014", "hurtigspor:participants.read")).unwrap();
        assert_eq!(caller.organisation, "900000014");
        assert_eq!(caller.vendor.as_deref(), Some("900000103"));
        assert_eq!((caller.role, caller.kommuner.as_slice()), (Role::Kommune, ["0301".to_owned()].as_slice()));
        assert!(caller.require(Scope::ParticipantsRead).is_ok());
        assert_eq!(caller.require(Scope::ParticipantsWrite).unwrap_err().reason(), "SCOPE_MISSING");
        assert_eq!(caller.actor(), "0192:900000014 via 0192:900000103");
    }

    #[test]
    fn every_kind_of_bad_token_is_refused_with_its_reason() {
        let f = fixture();
        let good = claims("900000049", "hurtigspor:sync.admin");
        assert_eq!(reason(f.auth.authenticate(None)), "TOKEN_MISSING");
        assert_eq!(reason(f.auth.authenticate(Some("Basic dXNlcjpwdw=="))), "TOKEN_MALFORMED");
        assert_eq!(reason(f.auth.authenticate(Some("Bearer not-a-jwt"))), "TOKEN_MALFORMED");
        let other = fixture();
        let foreign = format!("Bearer {}", dev::sign(&other.key, &good).unwrap());
        assert_eq!(reason(f.auth.authenticate(Some(&foreign))), "TOKEN_SIGNATURE_INVALID");
        let now = chrono::Utc::now().timestamp();
        let expired = Claims { exp: now - 120, ..good.clone() };
        assert_eq!(reason(check(&f, &expired)), "TOKEN_EXPIRED");
        let early = Claims { nbf: Some(now + 600), ..good.clone() };
        assert_eq!(reason(check(&f, &early)), "TOKEN_NOT_YET_VALID");
        let within_leeway = Claims { exp: now - 5, ..good.clone() };
        assert!(check(&f, &within_leeway).is_ok(), "a little clock skew is allowed");
        let issuer = Claims { iss: "https://evil.example/".into(), ..good.clone() };
        assert_eq!(reason(check(&f, &issuer)), "TOKEN_WRONG_ISSUER");
        let audience = Claims { aud: Some("someone-else".into()), ..good.clone() };
        assert_eq!(reason(check(&f, &audience)), "TOKEN_WRONG_AUDIENCE");
        let no_audience = Claims { aud: None, ..good.clone() };
        assert_eq!(reason(check(&f, &no_audience)), "TOKEN_WRONG_AUDIENCE", "a configured audience is required");
        assert_eq!(reason(check(&f, &claims("974760673", "hurtigspor:sync.admin"))), "ORGANISATION_UNKNOWN");
        assert_eq!(reason(check(&f, &claims("900000015", "hurtigspor:sync.admin"))), "TOKEN_INVALID", "mod 11");
        let mut tampered = dev::sign(&f.key, &good).unwrap();
        tampered.insert(tampered.len() / 2, 'A');
        assert!(f.auth.authenticate(Some(&format!("Bearer {tampered}"))).is_err());
    }

    #[test]
    fn refusals_never_echo_the_token() {
        let f = fixture();
        let token = dev::sign(&f.key, &Claims { iss: "x".into(), ..claims("900000049", "") }).unwrap();
        let status: Status = f.auth.authenticate(Some(&format!("Bearer {token}"))).unwrap_err().into();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(!status.message().contains(&token[..20]), "{status:?}");
    }

    #[test]
    fn dev_tokens_cover_the_four_dev_organisations() {
        let f = fixture();
        let tokens = dev::tokens(&f.key, 1).unwrap();
        let names: Vec<_> = tokens.keys().cloned().collect();
        assert_eq!(names, ["admin", "kommune_0301", "kommune_4601", "nav"]);
        let bergen =
            f.auth.authenticate(Some(&format!("Bearer {}", tokens["kommune_4601"].as_str().unwrap()))).unwrap();
        assert_eq!(bergen.kommuner, ["4601"]);
        let admin = f.auth.authenticate(Some(&format!("Bearer {}", tokens["admin"].as_str().unwrap()))).unwrap();
        assert!(Scope::ALL.iter().all(|s| admin.require(*s).is_ok()));
    }
}
