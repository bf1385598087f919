//! The issuer's keys: RS256 as well as ES256, and keys fetched from a JWKS
//! URL (a small HTTP server here), refreshed on rotation, kept when a
//! refresh fails, and not fetched for every made-up key id.

use crate::helpers::*;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hurtigspor_gateway::{
    Gateway,
    auth::{Claims, OrgClaim, dev},
    clock::Clock,
    config::Config,
};
use hurtigspor_proto::v1::ListParticipantsRequest;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PublicKeyData};
use serde_json::{Value, json};
use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tonic::Code;

const ADMIN: &str = "900000049";

/// A signing key of the issuer's, with its JWK.
struct TestKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn rsa(kid: &str) -> Self {
        let pair = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("an RSA key");
        let spki = pair.subject_public_key_info();
        use x509_parser::prelude::FromDer;
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
        let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = info.parsed() else { panic!("an RSA public key") };
        let unsigned = |b: &[u8]| URL_SAFE_NO_PAD.encode(&b[b.iter().take_while(|x| **x == 0).count()..]);
        let jwk = json!({
            "kty": "RSA", "n": unsigned(rsa.modulus), "e": unsigned(rsa.exponent),
            "kid": kid, "alg": "RS256", "use": "sig",
        });
        let encoding = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).unwrap();
        Self { kid: kid.into(), algorithm: Algorithm::RS256, encoding, jwk }
    }

    fn ec(kid: &str) -> Self {
        let pair = KeyPair::generate().unwrap();
        let point = pair.der_bytes();
        let jwk = json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            "kid": kid, "alg": "ES256", "use": "sig",
        });
        Self {
            kid: kid.into(),
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk,
        }
    }

    /// A token of the administrator's organisation with every scope.
    fn token(&self) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: TEST_ISSUER.into(),
            aud: Some(dev::AUDIENCE.into()),
            exp: now + 600,
            nbf: Some(now - 60),
            iat: now,
            scope: ALL_SCOPES.join(" "),
            consumer: OrgClaim { authority: String::new(), id: format!("0192:{ADMIN}") },
            supplier: None,
            jti: format!("jwks-{}", self.kid),
        };
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap();
        remember_secret(token.rsplit('.').next().unwrap());
        token
    }
}

/// The JWK of the dev key in `data_dir`, which signs the test app's own
/// administrator token.
fn dev_jwk(data_dir: &Path) -> Value {
    let jwks = dev::jwks(&dev::signing_key(data_dir).unwrap()).unwrap();
    serde_json::to_value(&jwks.keys[0]).unwrap()
}

/// The issuer's JWKS endpoint: serves `keys`, counts fetches, and answers
/// 500 while `failing`.
#[derive(Clone, Default)]
struct Issuer {
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl Issuer {
    /// Serves on a free port; returns the JWKS URL.
    async fn serve(&self) -> String {
        use axum::{http::StatusCode, response::IntoResponse, routing::get};
        let state = self.clone();
        let app = axum::Router::new().route(
            "/jwk",
            get(move || {
                let state = state.clone();
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    if state.failing.load(Ordering::SeqCst) {
                        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                    }
                    axum::Json(json!({ "keys": *state.keys.lock().unwrap() })).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwk", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn add(&self, key: &TestKey) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A gateway whose keys come from `url`, refreshed every `every` and at
/// most once per `at_most` for unknown key ids.
fn fetching(data_dir: &Path, url: &str, every: u64, at_most: u64) -> Config {
    let mut config = production_config(data_dir);
    let auth = config.auth.as_mut().unwrap();
    auth.jwks_file = None;
    auth.jwks_url = Some(url.to_owned());
    auth.jwks_refresh_secs = every;
    auth.jwks_min_refresh_secs = at_most;
    config
}

/// A gateway whose keys come from an issuer serving `keys` (and the dev
/// key that signs the app's own token), refreshed as [`fetching`] says.
async fn issuer_app(keys: &[&TestKey], every: u64, at_most: u64) -> (TestApp, Issuer) {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::default();
    issuer.keys.lock().unwrap().push(dev_jwk(dir.path()));
    for key in keys {
        issuer.add(key);
    }
    let url = issuer.serve().await;
    let config = fetching(dir.path(), &url, every, at_most);
    (spawn_with(dir, config).await, issuer)
}

/// Lists participants as `token`: the call's outcome for who is calling.
async fn list(app: &TestApp, token: &str) -> Result<(), tonic::Status> {
    connect(app.addr, token).await.list_participants(ListParticipantsRequest::default()).await.map(|_| ())
}

#[tokio::test]
async fn an_rs256_token_from_the_jwks_is_accepted_and_one_from_another_rsa_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = production_config(dir.path());
    let ours = TestKey::rsa("rsa-1");
    let jwks = json!({ "keys": [dev_jwk(dir.path()), ours.jwk] });
    std::fs::write(config.auth.as_ref().unwrap().jwks_file.as_ref().unwrap(), jwks.to_string()).unwrap();
    let app = spawn_with(dir, config).await;
    list(&app, &ours.token()).await.expect("an RS256 token signed by a key in the JWKS");
    // Another RSA key under the same key id: the signature decides.
    let impostor = TestKey::rsa("rsa-1");
    expect_error(list(&app, &impostor.token()).await, Code::Unauthenticated, "TOKEN_SIGNATURE_INVALID");
    let unknown = TestKey::rsa("rsa-2");
    let status = expect_error(list(&app, &unknown.token()).await, Code::Unauthenticated, "TOKEN_SIGNATURE_INVALID");
    assert!(status.message().contains("not in the configured JWKS"), "{status:?}");
}

#[tokio::test]
async fn keys_come_from_the_jwks_url_and_a_rotated_key_is_fetched_when_a_token_names_it() {
    let first = TestKey::ec("ec-1");
    let (app, issuer) = issuer_app(&[&first], 3600, 1).await;
    list(&app, &first.token()).await.expect("a key fetched at start");
    assert_eq!(issuer.fetches(), 1);

    // The issuer rotates to an RS256 key; a token signed with it comes
    // before the next periodic refresh (an hour away).
    let next = TestKey::rsa("rsa-2026");
    issuer.add(&next);
    let token = next.token();
    let status = expect_error(list(&app, &token).await, Code::Unauthenticated, "TOKEN_SIGNATURE_INVALID");
    assert!(status.message().contains("retry"), "the caller is told that a retry may work: {status:?}");
    until("the rotated key", || list(&app, &token), Result::is_ok).await.unwrap();
    assert_eq!(issuer.fetches(), 2, "one fetch at start, one for the new key id");
    list(&app, &first.token()).await.expect("the earlier key is still there");
}

#[tokio::test]
async fn a_periodic_refresh_picks_up_new_keys_and_a_failed_one_keeps_the_last_good_keys() {
    let first = TestKey::ec("ec-1");
    // Every second; unknown key ids cannot hurry it (an hour apart).
    let (app, issuer) = issuer_app(&[&first], 1, 3600).await;

    issuer.failing.store(true, Ordering::SeqCst);
    let failed_from = issuer.fetches();
    until("two failed refreshes", || async { issuer.fetches() }, |n| *n >= failed_from + 2).await;
    list(&app, &first.token()).await.expect("the last good keys are kept");
    assert!(
        captured_logs().contains("cannot refresh the issuer's signing keys"),
        "a failed refresh is logged as a warning"
    );

    issuer.failing.store(false, Ordering::SeqCst);
    let next = TestKey::ec("ec-2");
    issuer.add(&next);
    let token = next.token();
    until("the new key", || list(&app, &token), Result::is_ok).await.unwrap();
}

#[tokio::test]
async fn a_flood_of_unknown_key_ids_fetches_the_keys_at_most_once_per_interval() {
    let (app, issuer) = issuer_app(&[], 3600, 2).await;
    assert_eq!(issuer.fetches(), 1);

    // Forty tokens with made-up key ids, each one new, as fast as they
    // come (counted, not timed: a slow machine sends the same flood, only
    // over a longer time, and is allowed refreshes for that time).
    let start = Instant::now();
    let sent = 40;
    for n in 0..sent {
        let forged = TestKey::ec(&format!("made-up-{n}")).token();
        expect_error(list(&app, &forged).await, Code::Unauthenticated, "TOKEN_SIGNATURE_INVALID");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refreshes = issuer.fetches() - 1;
    let allowed = 1 + start.elapsed().as_secs() / 2;
    assert!(
        (1..=allowed as usize).contains(&refreshes),
        "{sent} unknown key ids in {:?} made {refreshes} refreshes; at most {allowed} are allowed",
        start.elapsed()
    );
}

#[tokio::test]
async fn the_start_fails_with_the_url_and_what_to_check_when_the_keys_cannot_be_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::default();
    issuer.failing.store(true, Ordering::SeqCst);
    let url = issuer.serve().await;
    let err = Gateway::build(fetching(dir.path(), &url, 300, 30), Clock::system()).await.err().expect("no start");
    let text = format!("{err:#}");
    assert!(text.contains(&url) && text.contains("HTTP 500") && text.contains("check"), "{text}");

    // A document without a usable key stops it too.
    issuer.failing.store(false, Ordering::SeqCst);
    let err = Gateway::build(fetching(dir.path(), &url, 300, 30), Clock::system()).await.err().expect("no start");
    assert!(format!("{err:#}").contains("no RS256 or ES256 key"), "{err:#}");
}
