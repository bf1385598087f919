//! The gateway on PostgreSQL, one instance and two on one database, against
//! a bare tonic server measured in the same run (the echo baseline: the
//! standard health service's `Check`, a unary call that does no work).
//!
//! Run: `cargo bench -p hurtigspor-gateway --bench instances -- <calls per run>`
//! (default 4000) with `HURTIGSPOR_BENCH_DATABASE_URL` (or
//! `HURTIGSPOR_TEST_DATABASE_URL`) naming a PostgreSQL server where the user
//! may create databases, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
//! Each configuration gets a database of its own, dropped afterwards.
//!
//! For each of one and two instances (both in this process, each with its
//! own pool, dispatcher and listener; callers spread round-robin over them):
//!
//! * the write path: calls per second with `CALLERS` concurrent callers for
//!   `GetParticipant` (a read and its audit entry, committed before the
//!   answer), `UpdateParticipant` and `CreateParticipant` (durable writes:
//!   the version, its change-log row, its audit entry and, where targets are
//!   configured, its sync marks commit before the answer), each as a ratio
//!   to echo, with no targets configured, as the SQLite write-path bench;
//! * delivery: with the Arena, NIR and NOKUT mocks (in this process) as
//!   targets, the delay from an update's acknowledgement until all three
//!   hold that version, read from the delivery rows every 2 ms (so up to
//!   2 ms high), for one caller at a time and for `CALLERS` callers.
//!
//! Everything shares the machine's cores: the gateways, PostgreSQL, the
//! mocks and the callers. The figures are for comparing configurations in
//! one run, not absolute capacities.

use hurtigspor_gateway::{
    Gateway,
    auth::BearerToken,
    clock::Clock,
    config::{Config, Secret},
    domain::national_id::testing::synthetic_fnr,
};
use hurtigspor_mocks::server::RunningMock;
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{
        CreateParticipantRequest, GetParticipantRequest, Participant, Programme, UpdateParticipantRequest,
        participant_service_client::ParticipantServiceClient,
    },
};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};
use tokio::sync::oneshot;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

mod common;
#[path = "common/mocks.rs"]
mod mocks;

use common::drive;
use mocks::start_mocks;

const CALLERS: usize = 64;
/// Participants made before the reads and updates, spread over.
const PEOPLE: usize = 500;

type Client = ParticipantServiceClient<InterceptedService<Channel, BearerToken>>;

/// A participant's version, and when its write was acknowledged.
type Acked = ((String, i64), Instant);

/// The baseline: a bare tonic server answering the health service's `Check`.
async fn echo(total: usize) -> f64 {
    let (_reporter, service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        async move {
            let _ = stopped.await;
        },
    ));
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let client = tonic_health::pb::health_client::HealthClient::new(channel);
    let rate = drive(total, CALLERS, move |_| {
        let mut c = client.clone();
        async move {
            c.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("echo answers");
        }
    })
    .await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    rate
}

fn record(n: usize) -> Participant {
    Participant {
        national_id: synthetic_fnr(
            1960 + (n / 336 % 40) as i32,
            1 + (n / 28 % 12) as u32,
            1 + (n % 28) as u32,
            (n / 13440) as u32 * 37,
        ),
        given_name: format!("Bench{n}"),
        family_name: "Benchmark".into(),
        kommunenummer: "0301".into(),
        programme: Some(Programme { start_date: Some(Date { year: 2026, month: 1, day: 5 }), ..Default::default() }),
        ..Default::default()
    }
}

/// A database of its own on the bench's server, dropped by `drop_database`.
async fn create_database(admin_url: &str) -> (String, String) {
    let name = format!("hurtigspor_bench_{}", hex::encode(rand::random::<[u8; 6]>()));
    let (client, connection) =
        tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await.expect("the server answers");
    tokio::spawn(connection);
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("may create a database");
    let base = admin_url.rsplit_once('/').map_or(admin_url, |(base, _)| base);
    (name.clone(), format!("{base}/{name}"))
}

async fn drop_database(admin_url: &str, name: &str) {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
}

/// Gateways on one database, delivering to one set of mocks.
struct Cluster {
    clients: Vec<Client>,
    stops: Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>)>,
    mocks: Vec<RunningMock>,
    url: String,
    _dirs: Vec<tempfile::TempDir>,
}

async fn cluster(url: &str, instances: usize, deliver: bool) -> Cluster {
    let first = tempfile::tempdir().unwrap();
    let mut config = Config::dev_defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = first.path().to_owned();
    config.database_url = Some(Secret::new(url));
    config.limits.requests_per_second = 10_000_000;
    config.limits.burst = 10_000_000;
    // Without targets a write queues no delivery: the write path alone.
    let mocks = if deliver { start_mocks(&mut config).await } else { Vec::new() };
    let mut dirs = vec![first];
    let mut clients = Vec::new();
    let mut stops = Vec::new();
    for n in 0..instances {
        if n > 0 {
            // Another instance: the first one's keys and dev tokens.
            let dir = tempfile::tempdir().unwrap();
            copy_dir(dirs[0].path(), dir.path());
            config.data_dir = dir.path().to_owned();
            dirs.push(dir);
        }
        let gateway = Gateway::build(config.clone(), Clock::system()).await.expect("the gateway builds");
        let addr: SocketAddr = gateway.local_addr();
        let token = gateway.dev_tokens().unwrap()["admin"].as_str().unwrap().to_owned();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(gateway.run(async move {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        clients.push(ParticipantServiceClient::with_interceptor(
            channel,
            BearerToken::new(&token).unwrap().with_purpose("bench").unwrap(),
        ));
        stops.push((stop, server));
    }
    Cluster { clients, stops, mocks, url: url.to_owned(), _dirs: dirs }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl Cluster {
    fn client(&self, n: usize) -> Client {
        self.clients[n % self.clients.len()].clone()
    }

    async fn stop(self) {
        for (stop, server) in self.stops {
            let _ = stop.send(());
            server.await.unwrap().unwrap();
        }
        for mock in self.mocks {
            mock.stop().await;
        }
    }
}

/// When each (participant id, version) of `ids` reached all three targets,
/// from the delivery rows, polled every 2 ms until `stop`.
async fn watch_deliveries(
    url: String,
    ids: Arc<Vec<String>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> HashMap<(String, i64), Instant> {
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let query = client
        .prepare(
            "SELECT participant_id, min(delivered_version) FROM sync_state WHERE participant_id = ANY($1)
             GROUP BY participant_id HAVING count(*) = 3",
        )
        .await
        .unwrap();
    let mut reached: HashMap<(String, i64), Instant> = HashMap::new();
    let mut seen: HashMap<String, i64> = HashMap::new();
    loop {
        let rows = client.query(&query, &[&*ids]).await.unwrap();
        let now = Instant::now();
        for row in rows {
            let (id, version): (String, i64) = (row.get(0), row.get(1));
            let before = seen.insert(id.clone(), version).unwrap_or(0);
            for v in before + 1..=version {
                reached.entry((id.clone(), v)).or_insert(now);
            }
        }
        if stop.load(Ordering::Relaxed) {
            return reached;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits (at most 120 s) until no delivery is pending.
async fn drained(url: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let pending: i64 = client
            .query_one("SELECT count(*) FROM sync_state WHERE delivered_version < desired_version", &[])
            .await
            .unwrap()
            .get(0);
        if pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("    (deliveries still pending after 120 s)");
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Updates with `callers` callers; prints the delays from ack to all three.
async fn updates_with_delays(c: &Cluster, ids: &Arc<Vec<String>>, total: usize, callers: usize, round: i64) -> f64 {
    let acks: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = tokio::spawn(watch_deliveries(c.url.clone(), Arc::clone(ids), Arc::clone(&stop)));
    let clients: Vec<Client> = (0..c.clients.len()).map(|n| c.client(n)).collect();
    let (ids2, acks2) = (Arc::clone(ids), Arc::clone(&acks));
    let rate = drive(total, callers, move |n| {
        let mut client = clients[n % clients.len()].clone();
        let id = ids2[n % ids2.len()].clone();
        let acks = Arc::clone(&acks2);
        async move {
            let changed = Participant {
                name: format!("participants/{id}"),
                family_name: format!("Benchmark{round}x{n}"),
                ..Default::default()
            };
            let updated = client
                .update_participant(UpdateParticipantRequest {
                    participant: Some(changed),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["family_name".into()] }),
                })
                .await
                .expect("update succeeds")
                .into_inner();
            let version: i64 = updated.etag.trim_start_matches("W/").trim_matches('"').parse().unwrap();
            acks.lock().unwrap().push(((id, version), Instant::now()));
        }
    })
    .await;
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    drained(&c.url).await;
    // One more look after the last delivery.
    tokio::time::sleep(Duration::from_millis(10)).await;
    stop.store(true, Ordering::Relaxed);
    let reached = watcher.await.unwrap();
    let mut delays: Vec<Duration> =
        acks.iter().filter_map(|(key, at)| reached.get(key).map(|r| r.saturating_duration_since(*at))).collect();
    delays.sort();
    println!(
        "    ack -> Arena, NIR and NOKUT all hold it ({callers} caller(s), {} of {} seen): median {}, p95 {}, max {}",
        delays.len(),
        acks.len(),
        ms(pct(&delays, 0.5)),
        ms(pct(&delays, 0.95)),
        ms(delays.last().copied().unwrap_or_default())
    );
    rate
}

/// The participants the reads and updates are about, made through `c`.
async fn people(c: &Cluster) -> Arc<Vec<String>> {
    let made = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<Client> = (0..c.clients.len()).map(|n| c.client(n)).collect();
    let made2 = Arc::clone(&made);
    drive(PEOPLE, 16, move |n| {
        let mut client = clients[n % clients.len()].clone();
        let made = Arc::clone(&made2);
        async move {
            let p = client
                .create_participant(CreateParticipantRequest {
                    participant: Some(record(1_000_000 + n)),
                    request_id: String::new(),
                })
                .await
                .expect("create succeeds")
                .into_inner();
            made.lock().unwrap().push(p.name.trim_start_matches("participants/").to_owned());
        }
    })
    .await;
    Arc::new(std::mem::take(&mut *made.lock().unwrap()))
}

/// Calls per second of Get, Update and Create, with no targets configured.
async fn write_path(admin_url: &str, instances: usize, total: usize, echo: f64) -> [f64; 3] {
    let (name, url) = create_database(admin_url).await;
    let c = cluster(&url, instances, false).await;
    let ids = people(&c).await;
    let clients: Vec<Client> = (0..c.clients.len()).map(|n| c.client(n)).collect();
    let ids2 = Arc::clone(&ids);
    let get = drive(total, CALLERS, move |n| {
        let mut client = clients[n % clients.len()].clone();
        let name = format!("participants/{}", ids2[n % ids2.len()]);
        async move {
            client.get_participant(GetParticipantRequest { name }).await.expect("get succeeds");
        }
    })
    .await;
    let clients: Vec<Client> = (0..c.clients.len()).map(|n| c.client(n)).collect();
    let ids2 = Arc::clone(&ids);
    let update = drive(total, CALLERS, move |n| {
        let mut client = clients[n % clients.len()].clone();
        let name = format!("participants/{}", ids2[n % ids2.len()]);
        async move {
            let changed = Participant { name, family_name: format!("Benchmark{n}"), ..Default::default() };
            client
                .update_participant(UpdateParticipantRequest {
                    participant: Some(changed),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["family_name".into()] }),
                })
                .await
                .expect("update succeeds");
        }
    })
    .await;
    let clients: Vec<Client> = (0..c.clients.len()).map(|n| c.client(n)).collect();
    let create = drive(total, CALLERS, move |n| {
        let mut client = clients[n % clients.len()].clone();
        async move {
            match client
                .create_participant(CreateParticipantRequest {
                    participant: Some(record(n)),
                    request_id: String::new(),
                })
                .await
            {
                Ok(_) => {}
                // A rare repeat of a generated number: still a full round trip.
                Err(s) if s.code() == tonic::Code::AlreadyExists => {}
                Err(s) => panic!("create failed: {s:?}"),
            }
        }
    })
    .await;
    println!(
        "  {instances} instance(s): Get {get:>6.0}/s {:>5.2}x echo | Update {update:>6.0}/s {:>5.2}x echo | Create {create:>6.0}/s {:>5.2}x echo",
        get / echo,
        update / echo,
        create / echo
    );
    c.stop().await;
    drop_database(admin_url, &name).await;
    [get, update, create]
}

/// The delay from an update's acknowledgement to all three targets, with
/// the mocks as targets: one caller (unloaded), then `CALLERS` callers.
async fn delays(admin_url: &str, instances: usize, total: usize) {
    let (name, url) = create_database(admin_url).await;
    let c = cluster(&url, instances, true).await;
    let ids = people(&c).await;
    drained(&c.url).await;
    println!("  {instances} instance(s):");
    updates_with_delays(&c, &ids, 200, 1, 1).await;
    let rate = updates_with_delays(&c, &ids, total, CALLERS, 2).await;
    println!("    ({rate:.0} updates/s acknowledged while delivering)");
    c.stop().await;
    drop_database(admin_url, &name).await;
}

fn main() {
    let total: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(4000);
    let Some(admin_url) =
        std::env::var("HURTIGSPOR_BENCH_DATABASE_URL").or_else(|_| std::env::var("HURTIGSPOR_TEST_DATABASE_URL")).ok()
    else {
        eprintln!(
            "set HURTIGSPOR_BENCH_DATABASE_URL (or HURTIGSPOR_TEST_DATABASE_URL) to a PostgreSQL server where this user may create databases, e.g. postgres://postgres@127.0.0.1:5432/postgres"
        );
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let echo = echo(total).await;
        println!("echo (a bare tonic server, grpc.health.v1.Health/Check), {CALLERS} callers: {echo:.0} calls/s");
        println!("the write path on PostgreSQL ({CALLERS} callers spread over the instances, no targets):");
        for instances in [1, 2] {
            write_path(&admin_url, instances, total, echo).await;
        }
        println!("delivery to Arena, NIR and NOKUT (mocks in this process), from an update's acknowledgement:");
        for instances in [1, 2] {
            delays(&admin_url, instances, total / 2).await;
        }
    });
}
