//! End-to-end sync delay: from a write's acknowledgement to the moment all
//! three systems (Arena, NIR, NOKUT) hold it.
//!
//! Run: `cargo bench -p hurtigspor-gateway --bench sync_delay`
//! (optional: `-- <writes per run>`, default 1000).
//!
//! Each run starts a real gateway in dev mode (fresh SQLite file in a temp
//! dir, the three mocks in-process, all in this process) and drives a mix of
//! writes that concerns every system, as participant journeys of five writes:
//! create (NIR registers the programme), competence mapping, CANDIDATE (Arena
//! person relation, NIR mark), a recognition case (NOKUT opens a case) and an
//! individual plan (Arena activities). For each acknowledged write it takes
//! the version from the returned etag (`W/"<n>"`) and finds when every
//! target's `delivered_version >= version` in `SyncService.GetSyncStatus`.
//!
//! Figures, measured in the same run:
//! * the floor: one direct `reconcile` of each adapter against its mock (no
//!   gateway, no SQLite, no queue), for records like the journeys' final ones;
//! * the baseline: one writer that waits until each write is delivered
//!   before the next (the pipeline unloaded);
//! * the load: one writer, then `WRITERS` concurrent writers, that do not
//!   wait; ratios are against the baseline's medians. Each run also prints
//!   how fast the sync kept pace, the process's CPU use, the delays by when
//!   the write came (a queue that grows shows as rising fifths) and, from the
//!   gateway's own metrics, reconciles per write and their mean time.
//!
//! **Measurement error.** A watcher task polls every participant with a
//! pending write, all of them concurrently, then sleeps 1 ms and polls again.
//! A delivery is stamped when the first status showing it comes back, so a
//! delay is overstated by between 0 and one poll period of that participant
//! (the sleep, tokio's 1 ms timer granularity and the round's RPCs; printed
//! per run as "polled every"), on average about half of it. It is understated
//! by the acknowledgement's trip back to the client (tens of microseconds on
//! loopback), as the clock starts when the response has arrived. The watcher
//! itself loads the gateway (each poll is two reads on the blocking pool) and
//! shares the two cores with it, the mocks and the writers: with 16 writers
//! it makes a few thousand polls a second, and the poll period grows to tens
//! of milliseconds. Its reads do not take SQLite's write lock, which is what
//! limits the dispatcher, but they do take CPU, so the loaded figures are a
//! little high.

#[path = "common/mocks.rs"]
mod mocks;

use hurtigspor_adapters::{
    Delivery, Target,
    arena::{ArenaConfig, ArenaTarget},
    nir::{NirConfig, NirTarget},
    nokut::{NokutConfig, NokutTarget},
};
use hurtigspor_gateway::{Gateway, clock::Clock, config::Config, domain::national_id::testing::synthetic_fnr};
use hurtigspor_mocks::server::RunningMock;
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{
        CompetenceMapping, CreateParticipantRequest, DecisionMaker, GetParticipantRequest, GetSyncStatusRequest,
        HurtigsporStatus, IndividualPlan, OpenRecognitionCaseRequest, Participant, PlanGoal, Programme,
        RecognitionCase, RecognitionScheme, RecordCompetenceMappingRequest, ResponsibleParty, SyncState,
        TransitionHurtigsporRequest, UpdateIndividualPlanRequest, participant_service_client::ParticipantServiceClient,
        sync_service_client::SyncServiceClient,
    },
};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tonic::transport::Channel;

/// Concurrent writers in the loaded run.
const WRITERS: usize = 16;
const TARGETS: [&str; 3] = ["arena", "nir", "nokut"];
/// How long the watcher waits for deliveries after the last write.
const DRAIN: Duration = Duration::from_secs(30);
/// The watcher's pause between two rounds of polls.
const POLL: Duration = Duration::from_millis(1);
/// Records reconciled directly for the floor (the first warms up).
const DIRECT: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Create,
    Competence,
    Candidate,
    Recognition,
    Plan,
}

const JOURNEY: [Kind; 5] = [Kind::Create, Kind::Competence, Kind::Candidate, Kind::Recognition, Kind::Plan];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Competence => "competence",
            Kind::Candidate => "candidate",
            Kind::Recognition => "recognition",
            Kind::Plan => "plan",
        }
    }
}

fn date(year: i32, month: i32, day: i32) -> Option<Date> {
    Some(Date { year, month, day })
}

/// A distinct synthetic national id per `n` (born 1977-2006: aged 20-49).
fn national_id(n: usize) -> String {
    synthetic_fnr(2006 - (n / 336 % 30) as i32, 1 + (n / 28 % 12) as u32, 1 + (n % 28) as u32, n as u32)
}

fn new_participant(n: usize) -> Participant {
    Participant {
        national_id: national_id(n),
        given_name: format!("Bench{n}"),
        family_name: "Benchmark".into(),
        kommunenummer: "0301".into(),
        nav_office: "0314".into(),
        programme: Some(Programme { start_date: date(2026, 1, 5), ..Default::default() }),
        ..Default::default()
    }
}

fn plan() -> IndividualPlan {
    let goal = |description: &str, measure: &str| PlanGoal {
        description: description.into(),
        measure: measure.into(),
        start_date: date(2026, 2, 1),
        end_date: date(2026, 12, 18),
        responsible: ResponsibleParty::Kommune as i32,
        ..Default::default()
    };
    IndividualPlan {
        main_goal: "work as a nurse".into(),
        goals: vec![goal("Norwegian B2", "language course"), goal("authorisation", "recognition")],
    }
}

fn version_of(p: &Participant) -> i64 {
    p.etag.trim_start_matches("W/").trim_matches('"').parse().expect("an etag is W/\"<version>\"")
}

/// One write of a journey; returns the participant as acknowledged.
async fn write(client: &mut ParticipantServiceClient<Authed>, kind: Kind, n: usize, name: &str) -> Participant {
    let name = name.to_owned();
    let result = match kind {
        Kind::Create => {
            client
                .create_participant(CreateParticipantRequest {
                    participant: Some(new_participant(n)),
                    request_id: String::new(),
                })
                .await
        }
        Kind::Competence => {
            client
                .record_competence_mapping(RecordCompetenceMappingRequest {
                    name,
                    competence: Some(CompetenceMapping { mapped_date: date(2026, 2, 1), ..Default::default() }),
                    etag: String::new(),
                })
                .await
        }
        Kind::Candidate => {
            client
                .transition_hurtigspor(TransitionHurtigsporRequest {
                    name,
                    status: HurtigsporStatus::Candidate as i32,
                    decided_by: DecisionMaker::Kommune as i32,
                    ..Default::default()
                })
                .await
        }
        Kind::Recognition => {
            client
                .open_recognition_case(OpenRecognitionCaseRequest {
                    name,
                    recognition_case: Some(RecognitionCase {
                        scheme: RecognitionScheme::HigherEducation as i32,
                        education_description: "bachelor in nursing".into(),
                        country_code: "SY".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
        }
        Kind::Plan => {
            client
                .update_individual_plan(UpdateIndividualPlanRequest { name, plan: Some(plan()), etag: String::new() })
                .await
        }
    };
    match result {
        Ok(response) => response.into_inner(),
        // The status only: a message could quote the request.
        Err(status) => panic!("{} failed: {:?}", kind.label(), status.code()),
    }
}

/// An acknowledged write, handed to the watcher.
struct Acked {
    name: String,
    version: i64,
    kind: Kind,
    at: Instant,
    /// Told when every target holds the write (the sequential writer waits).
    done: Option<oneshot::Sender<()>>,
}

struct Tracked {
    acked: Acked,
    /// Delay to each target in `TARGETS` order, once seen.
    reached: [Option<Duration>; 3],
}

/// One write's delays; `None` where the target never got it.
struct Sample {
    kind: Kind,
    /// When the write was acknowledged.
    acked: Instant,
    reached: [Option<Duration>; 3],
}

impl Sample {
    fn all(&self) -> Option<Duration> {
        self.reached.iter().try_fold(Duration::ZERO, |max, r| r.map(|r| r.max(max)))
    }
}

#[derive(Default)]
struct Watched {
    samples: Vec<Sample>,
    /// Between two consecutive statuses of the same participant.
    poll_periods: Vec<Duration>,
    /// Writes a target marked failed.
    failed: usize,
    polls: usize,
}

type Pending = HashMap<String, (Option<Instant>, Vec<Tracked>)>;

fn track(pending: &mut Pending, acked: Acked) {
    pending.entry(acked.name.clone()).or_default().1.push(Tracked { acked, reached: [None; 3] });
}

/// Polls every participant with a pending write until every write is held
/// by every target (or a target failed it, or `DRAIN` after the last ack).
async fn watch(sync: SyncServiceClient<Authed>, mut acks: mpsc::UnboundedReceiver<Acked>) -> Watched {
    let mut out = Watched::default();
    // Per participant: when its last status came back, and its writes.
    let mut pending = Pending::new();
    let mut deadline = None;
    loop {
        if pending.is_empty() {
            if deadline.is_some() {
                break;
            }
            match acks.recv().await {
                Some(a) => track(&mut pending, a),
                None => break,
            }
        }
        loop {
            match acks.try_recv() {
                Ok(a) => track(&mut pending, a),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    deadline.get_or_insert(Instant::now() + DRAIN);
                    break;
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            for (_, (_, tracked)) in pending.drain() {
                out.samples.extend(tracked.into_iter().map(|t| Sample {
                    kind: t.acked.kind,
                    acked: t.acked.at,
                    reached: t.reached,
                }));
            }
            break;
        }
        // One round: every pending participant's status, concurrently.
        let mut round = tokio::task::JoinSet::new();
        for name in pending.keys() {
            let (mut sync, name) = (sync.clone(), name.clone());
            round.spawn(async move {
                let status = sync.get_sync_status(GetSyncStatusRequest { name: name.clone() }).await;
                (name, Instant::now(), status)
            });
        }
        while let Some(polled) = round.join_next().await {
            let (name, seen, status) = polled.expect("poll task");
            let targets =
                status.unwrap_or_else(|s| panic!("GetSyncStatus failed: {:?}", s.code())).into_inner().targets;
            out.polls += 1;
            let Some((last, tracked)) = pending.get_mut(&name) else { continue };
            if let Some(last) = last.replace(seen) {
                out.poll_periods.push(seen - last);
            }
            let mut i = 0;
            while i < tracked.len() {
                let t = &mut tracked[i];
                let mut failed = false;
                for (slot, target) in t.reached.iter_mut().zip(TARGETS) {
                    let Some(s) = targets.iter().find(|s| s.target == target) else { continue };
                    if slot.is_none() && s.delivered_version >= t.acked.version {
                        *slot = Some(seen - t.acked.at);
                    } else if slot.is_none() && s.state == SyncState::Failed as i32 {
                        failed = true;
                    }
                }
                if failed || t.reached.iter().all(Option::is_some) {
                    let t = tracked.swap_remove(i);
                    out.failed += usize::from(failed);
                    if let Some(done) = t.acked.done {
                        let _ = done.send(());
                    }
                    out.samples.push(Sample { kind: t.acked.kind, acked: t.acked.at, reached: t.reached });
                } else {
                    i += 1;
                }
            }
            if tracked.is_empty() {
                pending.remove(&name);
            }
        }
        tokio::time::sleep(POLL).await;
    }
    out
}

/// A gateway on port 0 with a fresh database, delivering to the three mocks
/// in this process.
type Authed = tonic::service::interceptor::InterceptedService<Channel, hurtigspor_gateway::auth::BearerToken>;

struct App {
    addr: SocketAddr,
    /// The mocks' base URLs, by system name.
    mocks: HashMap<&'static str, String>,
    running: Vec<RunningMock>,
    metrics: Arc<hurtigspor_adapters::resilience::Metrics>,
    token: hurtigspor_gateway::auth::BearerToken,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

/// The mocks, configured as the gateway's targets, and their URLs by name.
async fn start_mocks(config: &mut Config) -> (HashMap<&'static str, String>, Vec<RunningMock>) {
    let running = mocks::start_mocks(config).await;
    let urls = TARGETS.into_iter().zip(running.iter().map(RunningMock::url)).collect();
    (urls, running)
}

async fn start() -> App {
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into())).unwrap();
    let mut config = Config::dev_defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = dir.path().to_owned();
    // Measure the gateway, not its per-client rate limit.
    config.limits.requests_per_second = 10_000_000;
    config.limits.burst = 10_000_000;
    let (mocks, running) = start_mocks(&mut config).await;
    let gateway = Gateway::build(config, Clock::system()).await.expect("the gateway builds");
    let (addr, metrics) = (gateway.local_addr(), gateway.metrics());
    let token = gateway.dev_tokens().expect("dev mode makes tokens")["admin"].as_str().unwrap().to_owned();
    let token = hurtigspor_gateway::auth::BearerToken::new(&token).unwrap().with_purpose("bench").unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(gateway.run(async move {
        let _ = stopped.await;
    }));
    App { addr, mocks, running, metrics, token, stop, server, _dir: dir }
}

impl App {
    /// A channel that sends the admin's dev token.
    async fn channel(&self) -> Authed {
        let channel = Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.expect("connects");
        tonic::service::interceptor::InterceptedService::new(channel, self.token.clone())
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.server.await.expect("server task").expect("the gateway ran cleanly");
        for mock in self.running {
            mock.stop().await;
        }
    }
}

/// What one run measured.
struct Run {
    title: String,
    writes: usize,
    write_time: Duration,
    watched: Watched,
    /// Per target: reconciles that reached it, and their mean time.
    reconciles: Vec<(f64, Duration)>,
    /// After the last ack, until the last delivery was seen.
    drain: Duration,
    /// CPU time of this process (gateway, mocks, writers, watcher) over the run.
    cpu: Option<Duration>,
}

/// This process's user + system CPU time, from /proc (Linux; USER_HZ = 100).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// `total` writes as journeys of five, by `writers` writers; a sequential
/// writer (`wait`) lets each write be delivered before the next.
async fn run(app: &App, title: String, total: usize, writers: usize, wait: bool, first_n: usize) -> Run {
    let channel = app.channel().await;
    let client = ParticipantServiceClient::new(channel);
    let sync = SyncServiceClient::new(app.channel().await);
    let (acks, rx) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch(sync, rx));
    let next = Arc::new(AtomicUsize::new(0));
    let journeys = total.div_ceil(JOURNEY.len());
    let start = Instant::now();
    let cpu_start = cpu_time();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (mut client, next, acks) = (client.clone(), next.clone(), acks.clone());
            tokio::spawn(async move {
                let mut written = 0;
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= journeys {
                        break;
                    }
                    let mut name = String::new();
                    for kind in JOURNEY {
                        if j * JOURNEY.len() + (kind as usize) >= total {
                            break;
                        }
                        let p = write(&mut client, kind, first_n + j, &name).await;
                        let at = Instant::now();
                        name = p.name.clone();
                        let (done, delivered) = oneshot::channel();
                        let version = version_of(&p);
                        let acked = Acked { name: p.name, version, kind, at, done: Some(done) };
                        acks.send(acked).expect("the watcher runs");
                        written += 1;
                        if wait {
                            // The watcher reports failures too; a lost delivery ends the wait.
                            let _ = tokio::time::timeout(DRAIN, delivered).await;
                        }
                    }
                }
                written
            })
        })
        .collect();
    drop(acks);
    let mut writes = 0;
    for t in tasks {
        writes += t.await.expect("writer task");
    }
    let write_time = start.elapsed();
    let last_ack = Instant::now();
    let watched = watcher.await.expect("watcher task");
    let drain = last_ack.elapsed();
    let cpu = cpu_time().zip(cpu_start).map(|(end, start)| end.saturating_sub(start));
    let reconciles = reconcile_stats(&app.metrics.render());
    Run { title, writes, write_time, watched, reconciles, drain, cpu }
}

/// Per target, from the gateway's metrics: reconciles that reached the
/// target and their mean duration.
fn reconcile_stats(text: &str) -> Vec<(f64, Duration)> {
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    TARGETS
        .iter()
        .map(|t| {
            let count = value(&format!(r#"hurtigspor_target_reconcile_duration_seconds_count{{target="{t}"}}"#));
            let sum = value(&format!(r#"hurtigspor_target_reconcile_duration_seconds_sum{{target="{t}"}}"#));
            (count, Duration::from_secs_f64(if count > 0.0 { sum / count } else { 0.0 }))
        })
        .collect()
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn sorted(values: impl Iterator<Item = Duration>) -> Vec<Duration> {
    let mut v: Vec<_> = values.collect();
    v.sort();
    v
}

/// Prints a run; returns its medians (all three, then per target) to serve
/// as the baseline of the next ones.
fn report(run: &Run, baseline: Option<&[Duration; 4]>) -> [Duration; 4] {
    let w = &run.watched;
    let delivered = w.samples.iter().filter(|s| s.all().is_some()).count();
    println!(
        "\n{}: {} writes acknowledged in {:.2} s ({:.0}/s); {delivered} held by all three, {} failed by a target, {} not delivered in time; last delivery {} ms after the last ack",
        run.title,
        run.writes,
        run.write_time.as_secs_f64(),
        run.writes as f64 / run.write_time.as_secs_f64(),
        w.failed,
        w.samples.len() - delivered - w.failed,
        ms(run.drain),
    );
    let wall = run.write_time + run.drain;
    println!(
        "  sync kept pace at {:.0} writes/s (writes / time to the last delivery); process CPU {} over {:.2} s = {:.2} cores busy",
        run.writes as f64 / wall.as_secs_f64(),
        run.cpu.map(|c| format!("{:.2} s", c.as_secs_f64())).unwrap_or_else(|| "unknown".into()),
        wall.as_secs_f64(),
        run.cpu.map(|c| c.as_secs_f64() / wall.as_secs_f64()).unwrap_or(f64::NAN),
    );
    let periods = sorted(w.poll_periods.iter().copied());
    println!(
        "  watcher: {} polls; each pending participant polled every {} ms (p50), {} ms (p99): the delays below are high by up to that",
        w.polls,
        ms(pct(&periods, 50.0)),
        ms(pct(&periods, 99.0)),
    );
    println!(
        "  {:<16} {:>6} {:>9} {:>9} {:>9} {:>9}   {}",
        "ms after ack",
        "n",
        "p50",
        "p90",
        "p99",
        "max",
        if baseline.is_some() { "p50 vs baseline" } else { "" }
    );
    let mut medians = [Duration::ZERO; 4];
    for row in 0..4 {
        let (label, values) = match row {
            0 => ("all three", sorted(w.samples.iter().filter_map(Sample::all))),
            i => (TARGETS[i - 1], sorted(w.samples.iter().filter_map(|s| s.reached[i - 1]))),
        };
        medians[row] = pct(&values, 50.0);
        let ratio = baseline
            .map(|b| format!("{:>6.1}x", medians[row].as_secs_f64() / b[row].as_secs_f64().max(1e-9)))
            .unwrap_or_default();
        println!(
            "  {label:<16} {:>6} {:>9} {:>9} {:>9} {:>9}   {ratio}",
            values.len(),
            ms(medians[row]),
            ms(pct(&values, 90.0)),
            ms(pct(&values, 99.0)),
            ms(values.last().copied().unwrap_or_default()),
        );
    }
    for kind in JOURNEY {
        let values = sorted(w.samples.iter().filter(|s| s.kind == kind).filter_map(Sample::all));
        println!(
            "    {:<14} {:>6} {:>9} {:>9} {:>9} {:>9}",
            kind.label(),
            values.len(),
            ms(pct(&values, 50.0)),
            ms(pct(&values, 90.0)),
            ms(pct(&values, 99.0)),
            ms(values.last().copied().unwrap_or_default()),
        );
    }
    // Whether delays build up over the run (a queue growing) or not.
    let mut by_time: Vec<&Sample> = w.samples.iter().collect();
    by_time.sort_by_key(|s| s.acked);
    let fifths: Vec<String> = by_time
        .chunks(by_time.len().div_ceil(5).max(1))
        .map(|chunk| ms(pct(&sorted(chunk.iter().filter_map(|s| s.all())), 50.0)))
        .collect();
    println!("  all three p50 by when the write was acked, in fifths of the run: {} ms", fifths.join(" / "));
    let per_target: Vec<String> = TARGETS
        .iter()
        .zip(&run.reconciles)
        .map(|(t, (count, mean))| format!("{t} {:.2} x {} ms", count / run.writes.max(1) as f64, ms(*mean)))
        .collect();
    println!("  gateway reconciles per write x mean time: {}", per_target.join(", "));
    medians
}

/// Times one direct reconcile per target and record: adapters built like the
/// gateway's, against the same in-process mocks, on copies of journeys' final
/// records given a fresh person (national id, participant id, no case
/// number), so every reconcile has the whole registration to do; then once
/// more with nothing left to do.
async fn direct_reconciles(app: &App, names: &[String], first_n: usize) -> Vec<(Vec<Duration>, Vec<Duration>)> {
    let timeout = Duration::from_secs(10);
    let arena_defaults = hurtigspor_mocks::arena::ArenaConfig::default();
    let targets: [Arc<dyn Target>; 3] = [
        Arc::new(ArenaTarget::new(ArenaConfig {
            base_url: app.mocks["arena"].clone(),
            client_id: arena_defaults.client_id,
            client_secret: arena_defaults.client_secret,
            timeout,
        })),
        Arc::new(NirTarget::new(NirConfig {
            base_url: app.mocks["nir"].clone(),
            username: "intro".into(),
            password: "nir-dev-secret".into(),
            timeout,
        })),
        Arc::new(NokutTarget::new(NokutConfig {
            base_url: app.mocks["nokut"].clone(),
            api_key: hurtigspor_mocks::nokut::NokutConfig::default().api_key,
            timeout,
        })),
    ];
    let mut client = ParticipantServiceClient::new(app.channel().await);
    let mut times = vec![(Vec::new(), Vec::new()); 3];
    for (i, name) in names.iter().enumerate() {
        let mut p = client
            .get_participant(GetParticipantRequest { name: name.clone() })
            .await
            .expect("the participant reads")
            .into_inner();
        p.national_id = national_id(first_n + i);
        for case in &mut p.recognition_cases {
            case.case_number.clear();
        }
        let delivery = Delivery {
            participant_id: format!("{:032x}", rand::random::<u128>()),
            version: 1,
            correlation_id: "bench".into(),
        };
        for (target, (changed, noop)) in targets.iter().zip(&mut times) {
            let start = Instant::now();
            let applied = target.reconcile(&p, &delivery).await.expect("a direct reconcile succeeds");
            let took = start.elapsed();
            // The first of each target fetches a token or opens a connection.
            if i > 0 {
                changed.push(took);
            }
            let mut again = p.clone();
            for r in &applied.references {
                if let Some(case) = again.recognition_cases.iter_mut().find(|c| c.id == r.local_id) {
                    case.case_number = r.remote_id.clone();
                }
            }
            let start = Instant::now();
            let applied = target.reconcile(&again, &delivery).await.expect("a direct reconcile succeeds");
            assert!(applied.operations.is_empty(), "{} converged in one reconcile", target.name());
            if i > 0 {
                noop.push(start.elapsed());
            }
        }
    }
    times
}

fn main() {
    let total: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1000);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!(
        "sync_delay: `cargo bench -p hurtigspor-gateway --bench sync_delay -- {total}` on {cores} cores; gateway, in-process mocks, writers and watcher share one tokio runtime ({cores} workers)"
    );
    println!(
        "delay = from a write's acknowledgement to GetSyncStatus showing delivered_version >= the write's version (per target; \"all three\" = the last of them)"
    );
    runtime.block_on(async {
        // The baseline: one writer, each write delivered before the next.
        let app = start().await;
        let sequential = run(&app, "1 writer, waiting for each delivery (baseline)".to_owned(), total, 1, true, 0).await;
        let names: Vec<String> = {
            // Journeys' final records, for the direct reconciles.
            let mut client = ParticipantServiceClient::new(app.channel().await);
            let mut names = Vec::new();
            for n in 0..DIRECT {
                let p = client
                    .lookup_participant(hurtigspor_proto::v1::LookupParticipantRequest { national_id: national_id(n) })
                    .await;
                if let Ok(p) = p {
                    names.push(p.into_inner().name);
                }
            }
            names
        };
        let direct = direct_reconciles(&app, &names, 20_000).await;
        app.shutdown().await;

        println!(
            "\nfloor: one direct reconcile, adapter -> in-process mock over HTTP (no gateway, no SQLite, no queue), {} candidates with a plan and a recognition case",
            direct[0].0.len()
        );
        println!("  {:<16} {:>9} {:>9} {:>9}   {:>9} {:>9}", "ms", "new p50", "p90", "max", "noop p50", "p90");
        for (target, (changed, noop)) in TARGETS.iter().zip(&direct) {
            let (changed, noop) = (sorted(changed.iter().copied()), sorted(noop.iter().copied()));
            println!(
                "  {target:<16} {:>9} {:>9} {:>9}   {:>9} {:>9}",
                ms(pct(&changed, 50.0)),
                ms(pct(&changed, 90.0)),
                ms(changed.last().copied().unwrap_or_default()),
                ms(pct(&noop, 50.0)),
                ms(pct(&noop, 90.0)),
            );
        }

        let baseline = report(&sequential, None);
        let over_floor: Vec<String> = TARGETS
            .iter()
            .zip(&direct)
            .zip(&baseline[1..])
            .map(|((t, (changed, _)), b)| {
                let floor = pct(&sorted(changed.iter().copied()), 50.0);
                format!("{t} {:.1}x", b.as_secs_f64() / floor.as_secs_f64().max(1e-9))
            })
            .collect();
        println!("  baseline p50 vs the floor's new p50: {}", over_floor.join(", "));

        // The load: many writers, none waiting.
        for writers in [1, WRITERS] {
            let app = start().await;
            let title = format!("{writers} writer{}, not waiting", if writers == 1 { "" } else { "s" });
            let loaded = run(&app, title, total, writers, false, 0).await;
            app.shutdown().await;
            report(&loaded, Some(&baseline));
        }
    });
}
