//! `spawn_app()`: a real gateway on port 0 with a fresh database,
//! delivering to Arena, NIR and NOKUT mocks that the harness starts for it,
//! plus helpers that build requests and inspect errors.
//!
//! The database is a SQLite file in the gateway's data directory, or, with
//! `HURTIGSPOR_E2E_STORE=postgres`, a PostgreSQL database of its own on the
//! server `HURTIGSPOR_TEST_DATABASE_URL` names, made for the data directory
//! and dropped with the gateway that used it last.

use hurtigspor_gateway::{
    Gateway,
    auth::{BearerToken, Claims, OrgClaim, dev},
    clock::Clock,
    config::{ArenaTarget, Config, Mode, NirTarget, NokutTarget, Secret},
    domain::national_id::testing::synthetic_fnr,
    store::testing::{TEST_DATABASE_URL, TestDatabase},
};
use hurtigspor_mocks::{
    arena::{Arena, ArenaConfig},
    nir::{Nir, NirConfig, ROLE_INTRO},
    nokut::{Nokut, NokutConfig},
    server::{MockSystem, RunningMock},
};
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{CreateParticipantRequest, Participant, Programme, participant_service_client::ParticipantServiceClient},
};
use std::{
    collections::{BTreeSet, HashMap},
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Code, Status,
    transport::{Channel, ClientTlsConfig},
};
use tonic_types::StatusExt;

pub type Client = ParticipantServiceClient<Authed>;
/// A channel that sends a bearer token with every call.
pub type Authed = tonic::service::interceptor::InterceptedService<Channel, BearerToken>;

/// Everything every test logged, at TRACE level.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Every national id the tests used (names share the prefixes below).
static NATIONAL_IDS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
/// Tokens and secrets the tests used: never to be logged either.
static SECRETS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
/// Log lines that carried personal data, found as they were written.
static LEAKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Every name the tests use starts with one of these, so that a name in a log
/// line is found whenever it is written.
pub const GIVEN_NAME_PREFIX: &str = "Yxmirra";
pub const FAMILY_NAME_PREFIX: &str = "Qzvarnes";

/// Personal data in `line`: a name of the tests' or an 11-digit run that is
/// one of the national ids they used.
fn personal_data_in(line: &str) -> bool {
    if line.contains(GIVEN_NAME_PREFIX) || line.contains(FAMILY_NAME_PREFIX) {
        return true;
    }
    // A token's signature part is unique to it.
    if SECRETS.lock().unwrap().iter().any(|s| line.contains(s.as_str())) {
        return true;
    }
    let ids = NATIONAL_IDS.lock().unwrap();
    let bytes = line.as_bytes();
    let mut start = None;
    for (i, b) in bytes.iter().chain([&b' ']).enumerate() {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                // Any 11 consecutive digits inside a longer run count too.
                for w in s..=i.saturating_sub(11) {
                    if i - w >= 11 && ids.contains(&line[w..w + 11]) {
                        return true;
                    }
                }
                start = None;
            }
            _ => {}
        }
    }
    false
}

/// Whether the log scan would flag `line` (for testing the scan itself).
pub fn scan_finds(line: &str) -> bool {
    personal_data_in(line)
}

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        if personal_data_in(&text) {
            // Keep only the log target, never the offending value.
            let place = text.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
            LEAKS.lock().unwrap().push(place);
        }
        LOGS.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stdout().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs one TRACE-level subscriber for the whole test binary that keeps
/// every line (and prints them when `TEST_LOG` is set).
fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| CaptureWriter)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
    });
}

/// A copy of everything logged so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// Log lines that carried personal data so far (their first words only).
pub fn leaks() -> Vec<String> {
    LEAKS.lock().unwrap().clone()
}

/// Registers a token or key that a test uses: never to be logged.
pub fn remember_secret(secret: &str) {
    SECRETS.lock().unwrap().insert(secret.to_owned());
}

/// Registers a national id that a test sends, valid or not.
pub fn remember(national_id: &str) {
    NATIONAL_IDS.lock().unwrap().insert(national_id.to_owned());
}

/// A fresh synthetic (Tenor, month + 80) national id of someone aged 20-49
/// at the tests' programme start (2026).
pub fn fresh_national_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let year = 2006 - (n / (28 * 12) % 30) as i32;
    let id = synthetic_fnr(year, 1 + (n / 28) % 12, 1 + n % 28, n);
    remember(&id);
    id
}

/// A synthetic id for someone born on the given date.
pub fn national_id_born(year: i32, month: u32, day: u32) -> String {
    let id = synthetic_fnr(year, month, day, 0);
    remember(&id);
    id
}

/// A distinctive family name that the log scan recognises.
pub fn fresh_family_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{FAMILY_NAME_PREFIX}{:04}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A distinctive given name that the log scan recognises.
pub fn fresh_given_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{GIVEN_NAME_PREFIX}{:04}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn date(year: i32, month: i32, day: i32) -> Option<Date> {
    Some(Date { year, month, day })
}

/// The smallest valid participant: the five required fields.
pub fn minimal_participant() -> Participant {
    Participant {
        national_id: fresh_national_id(),
        given_name: fresh_given_name(),
        family_name: fresh_family_name(),
        kommunenummer: "0301".to_owned(),
        programme: Some(Programme { start_date: date(2026, 1, 5), ..Default::default() }),
        ..Default::default()
    }
}

pub fn create_request(p: Participant) -> CreateParticipantRequest {
    CreateParticipantRequest { participant: Some(p), request_id: String::new() }
}

/// Opening a recognition case of a Syrian nursing degree for `name`.
pub fn nursing_case(name: &str) -> hurtigspor_proto::v1::OpenRecognitionCaseRequest {
    hurtigspor_proto::v1::OpenRecognitionCaseRequest {
        name: name.to_owned(),
        recognition_case: Some(hurtigspor_proto::v1::RecognitionCase {
            scheme: hurtigspor_proto::v1::RecognitionScheme::HigherEducation as i32,
            education_description: "bachelor in nursing".into(),
            country_code: "SY".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The base URLs of the mocks the harness started for this gateway, by
    /// system name.
    pub mocks: HashMap<&'static str, String>,
    /// The mocks themselves, stopped after the gateway.
    running_mocks: Vec<RunningMock>,
    /// The HTTP listener (NOKUT webhooks), if configured.
    pub http: Option<SocketAddr>,
    pub client: Client,
    /// The administrator's token the clients send.
    pub token: String,
    pub dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Set to `postgres` to run every gateway of the suite on PostgreSQL.
pub const E2E_STORE: &str = "HURTIGSPOR_E2E_STORE";

/// The PostgreSQL databases of the data directories in use, when the suite
/// runs on PostgreSQL: a restarted gateway finds its data again.
static DATABASES: Mutex<Vec<(PathBuf, Arc<TestDatabase>)>> = Mutex::new(Vec::new());

/// Whether this run of the suite is on PostgreSQL.
pub fn on_postgres() -> bool {
    match std::env::var(E2E_STORE).as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("{E2E_STORE}={other}: use postgres or sqlite"),
    }
}

/// The PostgreSQL database of `data_dir`, made on first use.
fn database_for(data_dir: &Path) -> String {
    let mut databases = DATABASES.lock().unwrap();
    if let Some((_, db)) = databases.iter().find(|(dir, _)| dir == data_dir) {
        return db.url.clone();
    }
    // Made on a runtime of its own: the caller may be a test's runtime,
    // which cannot be blocked on.
    let db = std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(TestDatabase::create())
    })
    .join()
    .unwrap()
    .unwrap_or_else(|| {
        panic!("{E2E_STORE}=postgres needs {TEST_DATABASE_URL}, e.g. postgres://postgres@127.0.0.1:5432/postgres")
    });
    let url = db.url.clone();
    databases.push((data_dir.to_owned(), Arc::new(db)));
    url
}

/// Drops the PostgreSQL database of `data_dir`, if it has one.
pub fn forget_database(data_dir: &Path) {
    let dropped: Vec<_> = {
        let mut databases = DATABASES.lock().unwrap();
        let (gone, kept) = std::mem::take(&mut *databases).into_iter().partition(|(dir, _)| dir == data_dir);
        *databases = kept;
        gone
    };
    drop(dropped);
}

pub fn dev_config(data_dir: &Path) -> Config {
    let mut config = Config::dev_defaults();
    if on_postgres() {
        config.database_url = Some(Secret::new(database_for(data_dir)));
    }
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = data_dir.to_owned();
    // Feeds are read often and passing failures retried soon, so tests
    // see inbound changes quickly.
    config.sync.poll_interval_ms = 100;
    config.sync.retry_base_ms = 50;
    config.sync.retry_max_delay_ms = 1_000;
    config
}

/// The issuer of the tests' production tokens.
pub const TEST_ISSUER: &str = "hurtigspor-test";

pub fn production_config(data_dir: &Path) -> Config {
    let mut config = dev_config(data_dir);
    config.mode = Mode::Production;
    config.security.national_id_key = Some(Secret::new("5e".repeat(32)));
    let key = hurtigspor_gateway::crypto::random_hex_key();
    SECRETS.lock().unwrap().insert(key.clone());
    config.security.encryption_keys.insert("k2026a".into(), Secret::new(key));
    // A test issuer whose key the test holds (dev tokens are refused).
    let key = dev::signing_key(data_dir).unwrap();
    let jwks = data_dir.join("jwks.json");
    std::fs::write(&jwks, serde_json::to_string(&dev::jwks(&key).unwrap()).unwrap()).unwrap();
    let mut auth = dev::config();
    auth.issuer = TEST_ISSUER.into();
    auth.jwks_file = Some(jwks);
    config.auth = Some(auth);
    config
}

/// A token for one of the dev organisations (`admin`, `nav`,
/// `kommune_0301`, `kommune_4601`), signed with the key in `data_dir`, from
/// `issuer`, with `scopes`.
pub fn token_for(data_dir: &Path, issuer: &str, who: &str, scopes: &[&str]) -> String {
    let key = dev::signing_key(data_dir).unwrap();
    let (_, org, vendor, ..) = dev::organisations().into_iter().find(|o| o.0 == who).expect("a dev organisation");
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: issuer.into(),
        aud: Some(dev::AUDIENCE.into()),
        exp: now + 3600,
        nbf: Some(now - 60),
        iat: now,
        scope: scopes.join(" "),
        consumer: OrgClaim { authority: String::new(), id: format!("0192:{org}") },
        supplier: vendor.map(|v| OrgClaim { authority: String::new(), id: format!("0192:{v}") }),
        jti: format!("test-{now}"),
    };
    dev::sign(&key, &claims).unwrap()
}

/// The dev gateway's ready token for `who` (`admin`, `nav`, `kommune_0301`,
/// `kommune_4601`), from its `dev-tokens.json`.
pub fn dev_token(app: &TestApp, who: &str) -> String {
    let text = std::fs::read_to_string(app.dir.path().join("dev-tokens.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()[who].as_str().unwrap().to_owned()
}

/// Every scope there is.
pub const ALL_SCOPES: [&str; 5] = [
    "hurtigspor:participants.read",
    "hurtigspor:participants.write",
    "hurtigspor:sync.admin",
    "hurtigspor:reports.read",
    "hurtigspor:audit.read",
];

/// A dev-mode gateway on port 0 with a fresh database.
pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = dev_config(dir.path());
    spawn_with(dir, config).await
}

/// With `targets.in_process_mocks` (on in `dev_config` and so in
/// `production_config`), starts a mock on a free port for every target that
/// `config` leaves out and configures it as that target, with the mock's
/// default credentials, as `hurtigspor dev` does; NOKUT's webhooks go to the
/// gateway's own HTTP listener. In any mode, so that a production gateway
/// delivers too.
async fn start_mocks(config: &mut Config) -> (HashMap<&'static str, String>, Vec<RunningMock>) {
    let (mut urls, mut running) = (HashMap::new(), Vec::new());
    if !config.targets.in_process_mocks {
        return (urls, running);
    }
    let at = "127.0.0.1:0";
    let targets = &mut config.targets;
    if targets.arena.is_none() {
        let arena = ArenaConfig::default();
        let (client_id, secret) = (arena.client_id.clone(), arena.client_secret.clone());
        let mock = Arena::new(arena).spawn(at).await.expect("the Arena mock starts");
        targets.arena = Some(ArenaTarget { base_url: mock.url(), client_id, client_secret: Secret::new(secret) });
        urls.insert("arena", mock.url());
        running.push(mock);
    }
    if targets.nir.is_none() {
        let nir = NirConfig::default();
        let user = nir.users.iter().find(|u| u.role == ROLE_INTRO).expect("the NIR mock has an intro user").clone();
        let mock = Nir::new(nir).spawn(at).await.expect("the NIR mock starts");
        targets.nir =
            Some(NirTarget { base_url: mock.url(), username: user.username, password: Secret::new(user.password) });
        urls.insert("nir", mock.url());
        running.push(mock);
    }
    if targets.nokut.is_none() {
        let nokut = NokutConfig::default();
        let (api_key, webhook_secret) = (nokut.api_key.clone(), nokut.webhook_secret.clone());
        let mock = Nokut::new(nokut).spawn(at).await.expect("the NOKUT mock starts");
        targets.nokut = Some(NokutTarget {
            base_url: mock.url(),
            api_key: Secret::new(api_key),
            webhook_secret: Some(Secret::new(webhook_secret)),
            webhook_url: None,
        });
        urls.insert("nokut", mock.url());
        running.push(mock);
    }
    (urls, running)
}

/// A gateway on `config`, owning `dir` (its data dir).
pub async fn spawn_with(dir: TempDir, config: Config) -> TestApp {
    spawn_over(dir, config, None).await
}

/// A gateway with `[tls]` whose test client connects with `tls`.
pub async fn spawn_over_tls(dir: TempDir, config: Config, tls: ClientTlsConfig) -> TestApp {
    spawn_over(dir, config, Some(tls)).await
}

async fn spawn_over(dir: TempDir, mut config: Config, tls: Option<ClientTlsConfig>) -> TestApp {
    capture_logs();
    let (mocks, running_mocks) = start_mocks(&mut config).await;
    let issuer = config.auth.as_ref().map(|a| a.issuer.clone());
    // Keys of the configuration never reach the logs.
    for key in config.security.national_id_key.iter().chain(config.security.encryption_keys.values()) {
        SECRETS.lock().unwrap().insert(key.expose().to_owned());
    }
    let gateway = Gateway::build(config, Clock::system()).await.expect("gateway builds");
    // Nor does any dev token, or the generated master key.
    for token in gateway.dev_tokens().into_iter().flat_map(|t| t.values()).filter_map(|t| t.as_str()) {
        if let Some(signature) = token.rsplit('.').next() {
            SECRETS.lock().unwrap().insert(signature.to_owned());
        }
    }
    if let Ok(key) = std::fs::read_to_string(hurtigspor_gateway::keys::dev_master_key_path(dir.path())) {
        SECRETS.lock().unwrap().insert(key.trim().to_owned());
    }
    let token = match gateway.dev_tokens() {
        Some(tokens) => tokens["admin"].as_str().unwrap().to_owned(),
        None => token_for(dir.path(), &issuer.expect("auth is configured"), "admin", &ALL_SCOPES),
    };
    let addr = gateway.local_addr();
    let http = gateway.http_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(gateway.run(async move {
        let _ = rx.await;
    }));
    if let Some(signature) = token.rsplit('.').next() {
        SECRETS.lock().unwrap().insert(signature.to_owned());
    }
    for secret in ["nokut-dev-webhook-secret", "arena-dev-secret", "nir-dev-secret", "nokut-dev-key"] {
        SECRETS.lock().unwrap().insert(secret.to_owned());
    }
    // Dev mode's generated encryption key must never be logged either.
    if let Ok(key) = std::fs::read_to_string(hurtigspor_gateway::crypto::dev_key_path(dir.path())) {
        SECRETS.lock().unwrap().insert(key.trim().to_owned());
    }
    let client = match tls {
        None => connect(addr, &token).await,
        Some(tls) => ParticipantServiceClient::new(tls_channel(addr, tls, &token).await.expect("connects over TLS")),
    };
    TestApp { addr, mocks, running_mocks, http, client, token, dir, shutdown: Some(tx), server: Some(server) }
}

/// The purpose the tests' clients send with every request.
pub const PURPOSE: &str = "case-processing";

/// A channel to `addr` that sends `token` and the purpose `PURPOSE`.
pub async fn channel(addr: SocketAddr, token: &str) -> Authed {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("connects");
    tonic::service::interceptor::InterceptedService::new(
        channel,
        BearerToken::new(token).unwrap().with_purpose(PURPOSE).unwrap(),
    )
}

/// A TLS channel to `addr` that sends `token`.
pub async fn tls_channel(
    addr: SocketAddr,
    tls: ClientTlsConfig,
    token: &str,
) -> Result<Authed, tonic::transport::Error> {
    let channel = Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls)?.connect().await?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        BearerToken::new(token).unwrap().with_purpose(PURPOSE).unwrap(),
    ))
}

pub async fn connect(addr: SocketAddr, token: &str) -> Client {
    ParticipantServiceClient::new(channel(addr, token).await)
}

impl Drop for TestApp {
    /// Every test fails if anything logged during it carried personal data.
    /// A PostgreSQL database is dropped with the app (one stopped to be
    /// restarted handed its data directory on, and keeps it).
    fn drop(&mut self) {
        forget_database(self.dir.path());
        if !std::thread::panicking() {
            let leaks = leaks();
            assert!(leaks.is_empty(), "personal data reached the logs in: {leaks:?}");
        }
    }
}

impl TestApp {
    pub async fn sync_client(&self) -> hurtigspor_proto::v1::sync_service_client::SyncServiceClient<Authed> {
        hurtigspor_proto::v1::sync_service_client::SyncServiceClient::new(channel(self.addr, &self.token).await)
    }

    /// Waits (up to 10 s) until every target's state for `name` satisfies `check`.
    pub async fn sync_until(
        &self,
        name: &str,
        check: impl Fn(&[hurtigspor_proto::v1::TargetSyncStatus]) -> bool,
    ) -> Vec<hurtigspor_proto::v1::TargetSyncStatus> {
        let client = self.sync_client().await;
        let request = hurtigspor_proto::v1::GetSyncStatusRequest { name: name.to_owned() };
        until(
            "sync status",
            || {
                let (mut client, request) = (client.clone(), request.clone());
                async move { client.get_sync_status(request).await.unwrap().into_inner().targets }
            },
            |targets| check(targets),
        )
        .await
    }

    /// A mock system's `/admin/state`.
    pub async fn mock_state(&self, system: &str) -> serde_json::Value {
        reqwest::get(format!("{}/admin/state", self.mocks[system])).await.unwrap().json().await.unwrap()
    }

    /// Waits (up to 10 s) until `check` holds for the mock's state; returns it.
    pub async fn eventually(&self, system: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        until(system, || self.mock_state(system), check).await
    }

    /// Stops the gateway gracefully, then its mocks, and hands back its
    /// data directory.
    pub async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran cleanly");
        }
        for mock in std::mem::take(&mut self.running_mocks) {
            mock.stop().await;
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    pub async fn create(&self, p: Participant) -> Participant {
        self.client.clone().create_participant(create_request(p)).await.expect("create succeeds").into_inner()
    }

    pub async fn get(&self, name: &str) -> Participant {
        self.client
            .clone()
            .get_participant(hurtigspor_proto::v1::GetParticipantRequest { name: name.to_owned() })
            .await
            .expect("get succeeds")
            .into_inner()
    }
}

/// Fetches until `check` holds (up to 10 s) and returns what satisfied it;
/// fails the test with the last value otherwise.
pub async fn until<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    what: &str,
    mut fetch: impl FnMut() -> F,
    check: impl Fn(&T) -> bool,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let value = fetch().await;
        if check(&value) {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "{what} never reached the expected state: {value:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Asserts the code and ErrorInfo reason, and returns the status.
pub fn expect_error<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, reason: &str) -> Status {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    let info = status.get_details_error_info().expect("every error carries ErrorInfo");
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "hurtigspor.gateway");
    status
}

/// The (field, reason) pairs of a status's BadRequest details.
pub fn violations(status: &Status) -> Vec<(String, String)> {
    status
        .get_details_bad_request()
        .expect("INVALID_ARGUMENT carries BadRequest")
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.reason))
        .collect()
}

/// Asserts that `status` has a violation of `field` with `reason`.
pub fn assert_violation(status: &Status, field: &str, reason: &str) {
    let v = violations(status);
    assert!(v.iter().any(|(f, r)| f == field && r == reason), "expected {field}: {reason} in {v:?}");
}
