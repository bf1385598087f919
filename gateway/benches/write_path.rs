//! The durable write path: how many acknowledged writes a second, one at a
//! time (the baseline) and with many concurrent callers sharing commits; and
//! what auditing costs a read (a read is answered after its audit entry is
//! committed), against the same read unaudited.
//!
//! Run: `cargo bench -p hurtigspor-gateway --bench write_path`
//! (optional: `-- <writes per run>`, default 4000). Figures are ratios against
//! the sequential baseline measured in the same run.

use hurtigspor_gateway::{
    Gateway,
    audit::{AuditEntry, AuditKey},
    clock::Clock,
    config::Config,
    domain::national_id::testing::synthetic_fnr,
    store::{Location, NewParticipant, Origin, StoreOptions, WriteStats},
};
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{CreateParticipantRequest, Participant, Programme, participant_service_client::ParticipantServiceClient},
};
mod common;

use common::drive;

const CONCURRENCY: [usize; 4] = [1, 8, 64, 256];

fn record(n: usize) -> Participant {
    Participant {
        given_name: format!("Bench{n}"),
        family_name: "Benchmark".into(),
        kommunenummer: "0301".into(),
        programme: Some(Programme { start_date: Some(Date { year: 2026, month: 1, day: 5 }), ..Default::default() }),
        ..Default::default()
    }
}

async fn store_level(total: usize) {
    println!("store: create on the embedded store (SQLite, WAL + synchronous=FULL), {total} writes per run");
    let mut baseline = None;
    for concurrency in CONCURRENCY {
        let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into())).unwrap();
        let location = Location::Sqlite(dir.path().join("bench.db"));
        let (store, _) =
            hurtigspor_gateway::store::open(StoreOptions::new(location, AuditKey::new(rand::random()))).await.unwrap();
        let s = store.clone();
        let rate = drive(total, concurrency, move |n| {
            let s = s.clone();
            async move {
                let hash: [u8; 32] = rand::random();
                s.create(NewParticipant {
                    id: format!("{:032x}", rand::random::<u128>()),
                    national_id: format!("{n:011}"),
                    national_id_hash: hash.to_vec(),
                    record: record(n),
                    idempotency: None,
                    origin: Origin::Api,
                    actor: "bench".into(),
                    // As every API write: audited in the same transaction.
                    audit: Some(AuditEntry {
                        organisation: "0192:900000014".into(),
                        method: "ParticipantService/CreateParticipant".into(),
                        ..Default::default()
                    }),
                })
                .await
                .expect("create");
            }
        })
        .await;
        let WriteStats { writes, commits } = store.write_stats();
        store.close().await;
        let base = *baseline.get_or_insert(rate);
        println!(
            "  concurrency {concurrency:>3}: {rate:>8.0} writes/s  {:>5.1}x baseline  {:>6.1} writes per commit",
            rate / base,
            writes as f64 / commits.max(1) as f64
        );
    }
}

async fn grpc_level(total: usize) {
    println!("gRPC: CreateParticipant over HTTP/2 on loopback (validation, keyed hash, commit), {total} calls per run");
    let mut baseline = None;
    for concurrency in CONCURRENCY {
        let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into())).unwrap();
        let mut config = Config::dev_defaults();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.data_dir = dir.path().to_owned();
        // Measure the gateway, not its per-client rate limit.
        config.limits.requests_per_second = 10_000_000;
        config.limits.burst = 10_000_000;
        let gateway = Gateway::build(config, Clock::system()).await.unwrap();
        let addr = gateway.local_addr();
        let token = gateway.dev_tokens().unwrap()["admin"].as_str().unwrap().to_owned();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(gateway.run(async move {
            let _ = stopped.await;
        }));
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let client = ParticipantServiceClient::with_interceptor(
            channel,
            hurtigspor_gateway::auth::BearerToken::new(&token).unwrap().with_purpose("bench").unwrap(),
        );
        let rate = drive(total, concurrency, move |n| {
            let mut c = client.clone();
            async move {
                let mut p = record(n);
                // Distinct synthetic people: vary the birth date and individual number.
                p.national_id = synthetic_fnr(
                    1960 + (n / 336 % 40) as i32,
                    1 + (n / 28 % 12) as u32,
                    1 + (n % 28) as u32,
                    (n / 13440) as u32 * 37,
                );
                match c
                    .create_participant(CreateParticipantRequest { participant: Some(p), request_id: String::new() })
                    .await
                {
                    Ok(_) => {}
                    // A rare repeat of a generated number; still a full round trip.
                    Err(s) if s.code() == tonic::Code::AlreadyExists => {}
                    Err(s) => panic!("create failed: {s:?}"),
                }
            }
        })
        .await;
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        let base = *baseline.get_or_insert(rate);
        println!("  concurrency {concurrency:>3}: {rate:>8.0} calls/s  {:>5.1}x baseline", rate / base);
    }
}

/// Reads: `get` alone, and `get` plus its audit entry (what every API read
/// does), one at a time and with many callers sharing the audit commits.
async fn audited_reads(total: usize) {
    println!("store: reads, unaudited and audited (entry committed before the answer), {total} reads per run");
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into())).unwrap();
    let location = Location::Sqlite(dir.path().join("reads.db"));
    let (store, _) =
        hurtigspor_gateway::store::open(StoreOptions::new(location, AuditKey::new(rand::random()))).await.unwrap();
    const PEOPLE: usize = 1000;
    for n in 0..PEOPLE {
        let hash: [u8; 32] = rand::random();
        store
            .create(NewParticipant {
                id: format!("{n:032x}"),
                national_id: format!("{n:011}"),
                national_id_hash: hash.to_vec(),
                record: record(n),
                idempotency: None,
                origin: Origin::Api,
                actor: "bench".into(),
                audit: None,
            })
            .await
            .unwrap();
    }
    let mut baseline = None;
    for (audited, concurrency) in [(false, 1), (true, 1), (false, 64), (true, 64)] {
        let s = store.clone();
        let rate = drive(total, concurrency, move |n| {
            let s = s.clone();
            async move {
                let id = format!("{:032x}", n % PEOPLE);
                s.get(&id).await.unwrap().expect("present");
                if audited {
                    let entry = AuditEntry {
                        organisation: "0192:900000014".into(),
                        method: "ParticipantService/GetParticipant".into(),
                        participant_id: Some(id),
                        purpose: Some("bench".into()),
                        outcome: "OK".into(),
                        ..Default::default()
                    };
                    s.audit(vec![entry]).await.unwrap();
                }
            }
        })
        .await;
        let base = *baseline.get_or_insert(rate);
        let what = if audited { "audited  " } else { "unaudited" };
        println!("  {what} concurrency {concurrency:>3}: {rate:>8.0} reads/s  {:>5.2}x baseline", rate / base);
    }
    store.close().await;
}

fn main() {
    let total: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(4000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        store_level(total).await;
        audited_reads(total).await;
        grpc_level(total).await;
    });
}
