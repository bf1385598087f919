//! Two `hurtigspor` processes on one PostgreSQL database, delivering to one
//! shared set of Arena, NIR and NOKUT mocks. Writes are spread over both,
//! one is killed with SIGKILL in the middle of them while it holds
//! deliveries, and the survivor must bring every acknowledged write to every
//! system it belongs in, exactly once and in order, take both change feeds
//! over, and leave an intact audit chain.
//!
//! Needs `HURTIGSPOR_TEST_DATABASE_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`); without it the test is
//! skipped.

use hurtigspor_gateway::{
    auth::BearerToken, domain::national_id::testing::synthetic_fnr, store::testing::TestDatabase,
};
use hurtigspor_mocks::{
    arena::{Arena, ArenaConfig},
    effects::Effect,
    faults::{Fault, FaultRule},
    nir::{Nir, NirConfig, ROLE_INTRO},
    nokut::{Nokut, NokutConfig},
    server::{MockSystem, RunningMock},
};
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{
        CompetenceMapping, CreateParticipantRequest, DecisionMaker, GetParticipantRequest, HurtigsporStatus,
        IndividualPlan, ListParticipantsRequest, OpenRecognitionCaseRequest, Participant, PlanGoal, Programme,
        RecognitionCase, RecognitionScheme, RecognitionStatus, RecordCompetenceMappingRequest, ResponsibleParty,
        TransitionHurtigsporRequest, UpdateIndividualPlanRequest, UpdateParticipantRequest,
        participant_service_client::ParticipantServiceClient,
    },
};
use serde_json::Value;
use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tonic::{Code, Status, service::interceptor::InterceptedService, transport::Channel};

/// Participants, and how many journeys run at a time.
const PARTICIPANTS: u32 = 40;
const CONCURRENT: usize = 8;
/// The pause between two writes of one journey: the writes go on while
/// the deliveries of earlier ones run.
const PACE: Duration = Duration::from_millis(100);
/// Instance A is killed once this many writes are acknowledged (of 140)...
const KILL_AFTER: usize = 50;
/// ... and the journeys from this one on start only after it died.
const AFTER_KILL: u32 = 32;
/// A short delivery lease, so the survivor takes A's deliveries over soon
/// (feeds: `max(4 x poll, 5 s)`).
const LEASE_SECS: u64 = 3;
/// The kommune participants of some journeys move to.
const MOVED_TO: &str = "3107";
const KOMMUNER: [&str; 3] = ["0301", "4601", "5001"];

type Client = ParticipantServiceClient<InterceptedService<Channel, BearerToken>>;

/// One `hurtigspor dev` process; killed when dropped, so that a failing
/// assertion leaves nothing running. Its log (stderr) is kept.
struct Instance {
    name: &'static str,
    child: Child,
    addr: String,
    /// Its name in the database (`inbound_cursor.reader`, and before the `:`
    /// of its claims' `lease_owner`).
    id: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    async fn start(name: &'static str, data_dir: &Path, config: &Path, database_url: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hurtigspor"))
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--database-url")
            .arg(database_url)
            .arg("--config")
            .arg(config)
            .env("HURTIGSPOR_LOG", "info")
            .env_remove("HURTIGSPOR_TOKEN")
            .env_remove("HURTIGSPOR_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let (listening, addr) = tokio::sync::oneshot::channel();
        let stdout = child.stdout.take().unwrap();
        // Reads where it listens, then keeps draining so it never blocks.
        std::thread::spawn(move || {
            let mut listening = Some(listening);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.trim().strip_prefix("listening on ")
                    && let Some(tx) = listening.take()
                {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
                }
            }
        });
        let mut instance = Self { name, child, addr: String::new(), id: String::new(), log };
        instance.addr = match tokio::time::timeout(Duration::from_secs(30), addr).await {
            Ok(Ok(addr)) => addr,
            _ => panic!("{name} did not say where it listens"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        instance.id = loop {
            let id = instance.lines().iter().find_map(|l| {
                l.contains("serving from PostgreSQL")
                    .then(|| l.split("instance=").nth(1)?.split_whitespace().next().map(str::to_owned))?
            });
            match id {
                Some(id) => break id,
                None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                None => panic!("{name} never logged its instance name"),
            }
        };
        instance
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL: no shutdown, no lease given back, no flush.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // A child already waited for is not signalled again.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let lines = self.lines();
            eprintln!("--- the last lines {} logged ---", self.name);
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// The mocks, in this process; the gateways reach them as configured
/// `[targets]`.
struct Mocks {
    arena: Arena,
    nir: Nir,
    nokut: Nokut,
    running: Vec<RunningMock>,
}

impl Mocks {
    async fn start() -> Self {
        let (arena, nir, nokut) =
            (Arena::new(ArenaConfig::default()), Nir::new(NirConfig::default()), Nokut::new(NokutConfig::default()));
        let running = vec![
            MockSystem::spawn(&arena, "127.0.0.1:0").await.unwrap(),
            MockSystem::spawn(&nir, "127.0.0.1:0").await.unwrap(),
            nokut.spawn("127.0.0.1:0").await.unwrap(),
        ];
        // Writes that take a while, so that deliveries are under way when A
        // dies. Arena and NOKUT apply a write at once and then answer slowly:
        // killed meanwhile, A has written but never learned it did, which is
        // where a redelivery would duplicate (Arena has no idempotency key;
        // NOKUT's Idempotency-Key must catch the repeat).
        let slow_answer = |interval_millis| Fault::SlowDrip { chunk_bytes: 32, interval_millis };
        let (relation, case) = ("/ords/arena/api/v1/personforhold", "/api/v1/saker");
        arena.common.faults.add(FaultRule::new(slow_answer(40)).on(relation).method("POST"));
        nokut.common.faults.add(FaultRule::new(slow_answer(60)).on(case).method("POST"));
        nir.common.faults.add(FaultRule::new(Fault::Latency { millis: 150 }).method("PUT"));
        Self { arena, nir, nokut, running }
    }

    /// The `[targets]` of a config file: these mocks, with their default
    /// credentials, as `hurtigspor dev` wires its own.
    fn targets(&self) -> String {
        let arena = ArenaConfig::default();
        let nir = NirConfig::default();
        let user = nir.users.iter().find(|u| u.role == ROLE_INTRO).unwrap();
        let nokut = NokutConfig::default();
        let url = |i: usize| self.running[i].url();
        format!(
            "[targets.arena]\nbase_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n\n\
             [targets.nir]\nbase_url = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\n\n\
             [targets.nokut]\nbase_url = \"{}\"\napi_key = \"{}\"\nwebhook_secret = \"{}\"\n",
            url(0),
            arena.client_id,
            arena.client_secret,
            url(1),
            user.username,
            user.password,
            url(2),
            nokut.api_key,
            nokut.webhook_secret,
        )
    }
}

/// One write of a participant's journey.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Create,
    MoveKommune,
    MapCompetence,
    Candidate,
    Confirm,
    OpenCase,
    Plan,
}

/// What participant `i` goes through: a create reaches NIR; a candidate
/// reaches Arena too (the INTRO relation, and an activity per plan goal); a
/// recognition case reaches NOKUT.
fn journey(i: u32) -> &'static [Step] {
    use Step::*;
    match i % 4 {
        0 => &[Create],
        1 => &[Create, MoveKommune, OpenCase],
        2 => &[Create, MapCompetence, Candidate, Plan],
        _ => &[Create, MapCompetence, Candidate, Confirm, OpenCase, MoveKommune],
    }
}

fn date(year: i32, month: i32, day: i32) -> Option<Date> {
    Some(Date { year, month, day })
}

/// The version an etag stands for.
fn version(p: &Participant) -> i64 {
    p.etag.trim_start_matches("W/").trim_matches('"').parse().expect("a versioned etag")
}

/// A participant's journey as it went.
#[derive(Debug)]
struct Record {
    i: u32,
    national_id: String,
    /// `participants/{id}`
    name: String,
    /// The version each step's write was acknowledged with (None: its
    /// outcome was lost with A, and the retry through B found it committed).
    versions: Vec<(Step, Option<i64>)>,
}

impl Record {
    fn id(&self) -> &str {
        self.name.trim_start_matches("participants/")
    }

    fn has(&self, step: Step) -> bool {
        journey(self.i).contains(&step)
    }

    /// The highest acknowledged version.
    fn acknowledged(&self) -> i64 {
        self.versions.iter().filter_map(|(_, v)| *v).max().expect("the create is acknowledged")
    }

    fn kommune(&self) -> &'static str {
        if self.has(Step::MoveKommune) { MOVED_TO } else { KOMMUNER[self.i as usize % KOMMUNER.len()] }
    }

    /// The hurtigspor status NIR should show.
    fn nir_status(&self) -> Option<&'static str> {
        if self.has(Step::Confirm) {
            Some("BEKREFTET")
        } else if self.has(Step::Candidate) {
            Some("KANDIDAT")
        } else {
            None
        }
    }
}

/// Sends one step's write to `client`.
async fn send(
    step: Step,
    mut client: Client,
    i: u32,
    national_id: &str,
    last: &Participant,
) -> Result<Participant, Status> {
    let name = last.name.clone();
    let transition = |status: HurtigsporStatus, decided_by: DecisionMaker, effective_date, tag: &str| {
        TransitionHurtigsporRequest {
            name: name.clone(),
            status: status as i32,
            decided_by: decided_by as i32,
            effective_date,
            // A retry after a lost answer returns the first answer.
            request_id: format!("two-{i}-{tag}"),
            ..Default::default()
        }
    };
    let answer = match step {
        Step::Create => {
            let participant = Participant {
                national_id: national_id.to_owned(),
                given_name: "Toinstans".into(),
                family_name: format!("Drept{i}"),
                kommunenummer: KOMMUNER[i as usize % KOMMUNER.len()].into(),
                nav_office: "0314".into(),
                programme: Some(Programme { start_date: date(2026, 1, 5), ..Default::default() }),
                ..Default::default()
            };
            client
                .create_participant(CreateParticipantRequest {
                    participant: Some(participant),
                    request_id: format!("two-{i}-create"),
                })
                .await
        }
        // Idempotent by content: the same move again changes nothing.
        Step::MoveKommune => {
            client
                .update_participant(UpdateParticipantRequest {
                    participant: Some(Participant { name, kommunenummer: MOVED_TO.into(), ..Default::default() }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["kommunenummer".into()] }),
                })
                .await
        }
        Step::MapCompetence => {
            client
                .record_competence_mapping(RecordCompetenceMappingRequest {
                    name,
                    competence: Some(CompetenceMapping { mapped_date: date(2026, 2, 1), ..Default::default() }),
                    etag: String::new(),
                })
                .await
        }
        Step::Candidate => {
            client
                .transition_hurtigspor(transition(
                    HurtigsporStatus::Candidate,
                    DecisionMaker::Kommune,
                    date(2026, 2, 15),
                    "candidate",
                ))
                .await
        }
        Step::Confirm => {
            client
                .transition_hurtigspor(transition(
                    HurtigsporStatus::Confirmed,
                    DecisionMaker::Joint,
                    date(2026, 3, 2),
                    "confirm",
                ))
                .await
        }
        Step::OpenCase => {
            client
                .open_recognition_case(OpenRecognitionCaseRequest {
                    name,
                    recognition_case: Some(RecognitionCase {
                        scheme: RecognitionScheme::HigherEducation as i32,
                        education_description: "bachelor in nursing".into(),
                        country_code: "SY".into(),
                        ..Default::default()
                    }),
                    request_id: format!("two-{i}-case"),
                    ..Default::default()
                })
                .await
        }
        // A new goal gets a new id, so a blind repeat would replace the
        // goal; the etag makes a repeat of a committed plan ABORTED.
        Step::Plan => {
            let goal = PlanGoal {
                description: "Norsk B2".into(),
                measure: "språkpraksis".into(),
                start_date: date(2026, 2, 1),
                end_date: date(2026, 6, 30),
                responsible: ResponsibleParty::Kommune as i32,
                ..Default::default()
            };
            client
                .update_individual_plan(UpdateIndividualPlanRequest {
                    name,
                    plan: Some(IndividualPlan { main_goal: "sykepleier".into(), goals: vec![goal] }),
                    etag: last.etag.clone(),
                })
                .await
        }
    };
    answer.map(tonic::Response::into_inner)
}

/// What the writers share.
struct Writers {
    a: Client,
    b: Client,
    /// Set just before A is killed: from then on an error from A is its
    /// death, and the write goes again through B.
    a_dead: AtomicBool,
    acknowledged: AtomicUsize,
    /// Writes whose answer was lost with A and that went again through B.
    repeated: AtomicUsize,
    /// Writes answered UNAVAILABLE and tried again.
    busy: AtomicUsize,
    /// Participant ids and national ids, as they are created.
    created: Mutex<BTreeMap<String, String>>,
    /// Turns true once A is dead: the last journeys wait for it.
    killed: tokio::sync::watch::Receiver<bool>,
}

/// Runs participant `i`'s journey, step `s` through A when `i + s` is
/// even (while A lives), else through B.
async fn run_journey(w: Arc<Writers>, i: u32) -> Record {
    let national_id = synthetic_fnr(1985, 1 + i % 12, 1 + i % 28, i);
    let mut last = Participant::default();
    let mut versions = Vec::new();
    for (s, &step) in journey(i).iter().enumerate() {
        let mut through_a = (i as usize + s).is_multiple_of(2);
        let (mut repeat, mut busy) = (false, 0);
        let outcome = loop {
            let to_a = through_a && !w.a_dead.load(Ordering::SeqCst);
            let client = if to_a { w.a.clone() } else { w.b.clone() };
            match send(step, client, i, &national_id, &last).await {
                Ok(p) => break (p, true),
                Err(_) if to_a && w.a_dead.load(Ordering::SeqCst) => {
                    // Lost with A: committed or not, the same request again.
                    (through_a, repeat) = (false, true);
                    w.repeated.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) if e.code() == Code::Unavailable && busy < 20 => {
                    // The database said "not now" (a shared server out of
                    // connections, say): the API asks for a retry with
                    // backoff, and every write here may be repeated.
                    (repeat, busy) = (true, busy + 1);
                    w.busy.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100 * busy)).await;
                }
                Err(e) if repeat && step == Step::Plan && e.code() == Code::Aborted => {
                    // An attempt whose answer was lost committed the plan
                    // (the etag moved on): read it back.
                    let mut b = w.b.clone();
                    let p = b
                        .get_participant(GetParticipantRequest { name: last.name.clone() })
                        .await
                        .unwrap()
                        .into_inner();
                    let goals = p.plan.as_ref().map_or(0, |plan| plan.goals.len());
                    assert_eq!(goals, 1, "participant {i}: the plan A committed is there");
                    break (p, false);
                }
                Err(e) => panic!("participant {i}: {step:?} through {}: {e:?}", if to_a { "A" } else { "B" }),
            }
        };
        let (p, acknowledged) = outcome;
        if step == Step::Create {
            let id = p.name.trim_start_matches("participants/").to_owned();
            w.created.lock().unwrap().insert(id, national_id.clone());
        }
        if acknowledged {
            w.acknowledged.fetch_add(1, Ordering::SeqCst);
        }
        assert!(last.etag.is_empty() || version(&p) > version(&last), "participant {i}: {step:?} made a new version");
        versions.push((step, acknowledged.then(|| version(&p))));
        last = p;
        tokio::time::sleep(PACE).await;
    }
    Record { i, national_id, name: last.name, versions }
}

async fn connect(addr: &str, token: &str) -> Client {
    let channel = Channel::from_shared(addr.to_owned()).unwrap().connect().await.unwrap();
    ParticipantServiceClient::with_interceptor(
        channel,
        BearerToken::new(token).unwrap().with_purpose("case-processing").unwrap(),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

/// Whether an instance's log says it took the `source` feed.
fn reads_feed(lines: &[String], source: &str) -> bool {
    lines.iter().any(|l| l.contains("this instance reads the feed now") && l.contains(&format!("source=\"{source}\"")))
}

/// Who reads each feed, by source.
async fn feed_readers(db: &tokio_postgres::Client) -> BTreeMap<String, Option<String>> {
    let rows = db.query("SELECT source, reader FROM inbound_cursor", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Waits until `check` answers `None` (all done), at most `within`;
/// otherwise fails with what it answered last.
async fn settle<F: std::future::Future<Output = Option<String>>>(within: Duration, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + within;
    loop {
        let Some(waiting) = check().await else { return };
        assert!(Instant::now() < deadline, "not settled after {within:?}: {waiting}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The effect's record without the time it was applied.
fn untimed(e: &Effect) -> Value {
    let mut detail = e.detail.clone();
    if let Some(d) = detail.as_object_mut() {
        d.remove("SistEndret");
    }
    detail
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_loses_and_duplicates_nothing_the_survivor_delivers() {
    let Some(database) = TestDatabase::create().await else { return };
    let started = Instant::now();
    let (db, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let mocks = Mocks::start().await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("hurtigspor.toml");
    // Few connections each: other tests may share the server.
    std::fs::write(
        &config,
        format!(
            "database_pool_size = 4\n\n[sync]\nlease_secs = {LEASE_SECS}\npoll_interval_ms = 200\nretry_base_ms = 50\n\
             retry_max_delay_ms = 1000\n\n{}",
            mocks.targets()
        ),
    )
    .unwrap();

    // A first; B joins it with a copy of A's keys and tokens.
    let (a_dir, b_dir) = (work.path().join("a"), work.path().join("b"));
    let mut a = Instance::start("A", &a_dir, &config, &database.url).await;
    let a_reads_both = || ["arena", "nokut"].iter().all(|source| reads_feed(&a.lines(), source));
    settle(Duration::from_secs(10), || std::future::ready((!a_reads_both()).then(|| "A took the feeds".to_owned())))
        .await;
    copy_dir(&a_dir, &b_dir);
    let b = Instance::start("B", &b_dir, &config, &database.url).await;
    let tokens: Value = serde_json::from_str(&std::fs::read_to_string(a_dir.join("dev-tokens.json")).unwrap()).unwrap();
    let token = tokens["admin"].as_str().unwrap();
    let (kill, killed) = tokio::sync::watch::channel(false);
    let writers = Arc::new(Writers {
        a: connect(&a.addr, token).await,
        b: connect(&b.addr, token).await,
        a_dead: AtomicBool::new(false),
        acknowledged: AtomicUsize::new(0),
        repeated: AtomicUsize::new(0),
        busy: AtomicUsize::new(0),
        created: Mutex::default(),
        killed,
    });

    // Writes over both: 40 journeys, 8 at a time, alternating instances;
    // the last ones start after the kill and go through B alone.
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
    let journeys: Vec<_> = (0..PARTICIPANTS)
        .map(|i| {
            let (w, permits) = (Arc::clone(&writers), Arc::clone(&permits));
            tokio::spawn(async move {
                if i >= AFTER_KILL {
                    w.killed.clone().wait_for(|dead| *dead).await.unwrap();
                }
                let _permit = permits.acquire_owned().await.unwrap();
                run_journey(w, i).await
            })
        })
        .collect();

    // A dies mid-run, caught in the act: once enough writes are in, and
    // NOKUT has opened a case in a delivery A holds (its lease) whose case
    // number A has not kept yet. A wrote, and never learned it did; B must
    // find the case instead of opening a second one.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (held_by_a, caught) = loop {
        assert!(
            Instant::now() < deadline,
            "A was never caught with a NOKUT case opened and not yet kept (or a journey failed: see above)"
        );
        if writers.acknowledged.load(Ordering::SeqCst) >= KILL_AFTER {
            let held: Vec<(String, String, i64)> = db
                .query(
                    "SELECT target, participant_id, desired_version FROM sync_state
                     WHERE split_part(lease_owner, ':', 1) = $1 AND leased_until IS NOT NULL",
                    &[&a.id],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let kept: HashSet<String> = db
                .query("SELECT participant_id FROM external_refs WHERE system = 'nokut'", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let opened: HashSet<String> = mocks.nokut.state()["saker"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["soker"]["fodselsnummer"].as_str().map(str::to_owned))
                .collect();
            let caught: Vec<String> = {
                let created = writers.created.lock().unwrap();
                held.iter()
                    .filter(|(target, id, _)| {
                        target == "nokut"
                            && !kept.contains(id)
                            && created.get(id).is_some_and(|national_id| opened.contains(national_id))
                    })
                    .map(|(_, id, _)| id.clone())
                    .collect()
            };
            if !caught.is_empty() {
                writers.a_dead.store(true, Ordering::SeqCst);
                a.kill();
                kill.send(true).unwrap();
                break (held, caught);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let killed_at = started.elapsed();
    let b_lines_at_kill = b.lines().len();
    let acknowledged_before_kill = writers.acknowledged.load(Ordering::SeqCst);

    let mut records = Vec::new();
    for j in journeys {
        records.push(j.await.expect("a journey"));
    }
    let acknowledged = writers.acknowledged.load(Ordering::SeqCst);
    assert!(acknowledged > acknowledged_before_kill, "writes went on through B after the kill");
    let writes_done = started.elapsed();

    // Nothing pending, nothing failed; the feeds and the audit chainer are
    // B's.
    let (pg, b_id) = (&db, b.id.as_str());
    settle(Duration::from_secs(30), move || async move {
        let open = count(pg, "SELECT count(*) FROM sync_state WHERE state <> 'delivered'").await;
        let unchained = count(pg, "SELECT count(*) FROM audit_log WHERE sequence IS NULL").await;
        let readers = feed_readers(pg).await;
        let b_reads = ["arena", "nokut"].iter().all(|s| readers.get(*s).and_then(Option::as_deref) == Some(b_id));
        (open > 0 || unchained > 0 || !b_reads).then(|| {
            format!("{open} deliveries not delivered, {unchained} audit entries unchained, readers {readers:?}")
        })
    })
    .await;
    let delivered_at = started.elapsed();

    // NOKUT moves every case on (three days later): the changes come back
    // through B alone, by webhook or by its feed, and its ingester applies
    // them; the new versions go to Arena and NIR, which hold them already.
    let cases = records.iter().filter(|r| r.has(Step::OpenCase)).count() as i64;
    mocks.nokut.common.clock.advance(chrono::Duration::days(3));
    settle(Duration::from_secs(20), move || async move {
        let handled = count(pg, "SELECT count(*) FROM inbox WHERE source = 'nokut' AND status = 'handled'").await;
        let open = count(pg, "SELECT count(*) FROM sync_state WHERE state <> 'delivered'").await;
        let unchained = count(pg, "SELECT count(*) FROM audit_log WHERE sequence IS NULL").await;
        (handled < cases || open > 0 || unchained > 0).then(|| {
            format!(
                "{handled}/{cases} NOKUT changes handled, {open} deliveries open, {unchained} audit entries unchained"
            )
        })
    })
    .await;

    // Nothing lost: every participant is there, at or past the version
    // its last acknowledged write returned, and every target has reached
    // that version.
    let mut client = writers.b.clone();
    let listed = client
        .list_participants(ListParticipantsRequest { page_size: 500, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .participants;
    let listed: HashSet<&str> = listed.iter().map(|p| p.name.as_str()).collect();
    let names: HashSet<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(listed, names, "exactly the participants created");
    let rows = db
        .query("SELECT participant_id, target, desired_version, delivered_version, state FROM sync_state", &[])
        .await
        .unwrap();
    let sync: BTreeMap<(String, String), (i64, i64, String)> =
        rows.iter().map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3), r.get(4)))).collect();
    assert_eq!(sync.len(), 3 * records.len(), "one delivery row per participant and target");
    let mut current = BTreeMap::new();
    for r in &records {
        for target in ["arena", "nir", "nokut"] {
            let (desired, delivered, state) = &sync[&(r.id().to_owned(), target.to_owned())];
            assert_eq!(state, "delivered");
            assert_eq!(delivered, desired, "participant {}: {target} reached the version asked of it", r.i);
            assert!(
                *delivered >= r.acknowledged(),
                "participant {}: {target} got version {delivered}, but version {} was acknowledged",
                r.i,
                r.acknowledged()
            );
        }
        let p = client.get_participant(GetParticipantRequest { name: r.name.clone() }).await.unwrap().into_inner();
        assert!(version(&p) >= r.acknowledged(), "participant {}: no acknowledged version lost", r.i);
        assert_eq!(p.kommunenummer, r.kommune());
        current.insert(r.i, p);
    }
    // What A held when it died was taken over and finished (by B: A is gone).
    for (target, participant, desired) in &held_by_a {
        let (_, delivered, state) = &sync[&(participant.clone(), target.clone())];
        assert!(state == "delivered" && delivered >= desired, "{target}/{participant}: A's delivery taken over");
    }

    // Exactly once and in order, as each system's effect log shows it. A
    // log entry is one write a mock applied (its detail the record as it
    // stood after it); what the log does not show is the delivery's
    // version or correlation id, so order is read from the data each write
    // carried, which only ever moves forward along our versions.
    check_nir(&mocks.nir, &records);
    check_arena(&mocks.arena, &records, &current);
    check_nokut(&mocks.nokut, &records, &current);
    let created = writers.created.lock().unwrap().clone();
    for id in &caught {
        let opened = mocks.nokut.state()["saker"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["soker"]["fodselsnummer"] == created[id].as_str())
            .count();
        assert_eq!(opened, 1, "{id}: the case A opened and never kept was found again, not opened twice");
    }
    let inbox: Vec<(String, String, i64)> = db
        .query("SELECT source, status, count(*) FROM inbox GROUP BY source, status", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(inbox, [("nokut".to_owned(), "handled".to_owned(), cases)], "each NOKUT change kept once, handled");

    // The feeds: A read both from the start; B stood by until A died,
    // then took them over.
    let b_lines = b.lines();
    for source in ["arena", "nokut"] {
        assert!(!reads_feed(&b_lines[..b_lines_at_kill], source), "B stood by for the {source} feed while A lived");
        assert!(reads_feed(&b_lines[b_lines_at_kill..], source), "B took the {source} feed over when A died");
    }
    let readers = feed_readers(&db).await;
    for source in ["arena", "nokut"] {
        assert_eq!(readers[source].as_deref(), Some(b.id.as_str()), "B reads {source}");
    }

    // The audit chain, with the rows both instances wrote, is intact.
    let verify = {
        let (url, dir) = (database.url.clone(), b_dir.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_hurtigspor"))
                .args(["audit", "verify", "--database-url", &url, "--data-dir"])
                .arg(dir)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let (out, err) = (String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    assert!(verify.status.success() && out.contains("audit log intact"), "{out}{err}");

    eprintln!(
        "{acknowledged} writes acknowledged ({acknowledged_before_kill} before A was killed at {killed_at:?} holding \
         deliveries {:?}, {} of them NOKUT cases opened and not kept; {} writes went again through B, {} were \
         answered UNAVAILABLE and tried again); done writing at {writes_done:?}, all delivered at {delivered_at:?}, \
         all checked at {:?}",
        held_by_a.iter().map(|(target, _, version)| format!("{target} v{version}")).collect::<Vec<_>>(),
        caught.len(),
        writers.repeated.load(Ordering::SeqCst),
        writers.busy.load(Ordering::SeqCst),
        started.elapsed()
    );
    drop(b);
    for mock in mocks.running {
        mock.stop().await;
    }
}

/// NIR is idempotent by natural key (person and programme start) and each
/// of its writes replaces the part it names, so a repeated delivery would
/// not add a row; it would apply the same write again. Exactly once here
/// means: one registration per person, and no write that repeats the
/// record as the one before it left it. In order: the kommune, the
/// hurtigspor status and the measures only ever move forward.
fn check_nir(nir: &Nir, records: &[Record]) {
    let state = nir.state();
    let rows = state["deltakelser"].as_array().unwrap();
    assert_eq!(rows.len(), records.len(), "NIR holds each participant once, and no one else");
    let effects = nir.common.effects.all();
    for r in records {
        let i = r.i;
        let mine: Vec<&Effect> =
            effects.iter().filter(|e| e.detail["Person"]["Fodselsnummer"] == r.national_id.as_str()).collect();
        let kinds: Vec<&str> = mine.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds.first(), Some(&"deltakelse.registered"), "participant {i}: {kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == "deltakelse.registered").count(), 1, "participant {i}: {kinds:?}");
        let kommune_rank = |e: &Effect| usize::from(e.detail["Kommunenummer"] == MOVED_TO);
        let status_rank = |e: &Effect| match e.detail["Hurtigspor"]["Status"].as_str() {
            None => 0,
            Some("KANDIDAT") => 1,
            Some("BEKREFTET") => 2,
            Some(other) => panic!("participant {i}: NIR got hurtigspor status {other}"),
        };
        let cases = |e: &Effect| {
            e.detail["Tiltaksliste"]["Tiltak"]
                .as_array()
                .map_or(0, |t| t.iter().filter(|t| t["Type"] == "GODKJENNING").count())
        };
        for pair in mine.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            assert!(kommune_rank(before) <= kommune_rank(after), "participant {i}: the kommune went back in NIR");
            assert!(status_rank(before) <= status_rank(after), "participant {i}: the status went back in NIR");
            assert!(cases(before) <= cases(after), "participant {i}: a recognition case left NIR");
            assert_ne!(untimed(before), untimed(after), "participant {i}: NIR got the same write twice ({kinds:?})");
        }
        let row = rows.iter().find(|d| d["Person"]["Fodselsnummer"] == r.national_id.as_str()).unwrap();
        assert_eq!(&mine.last().unwrap().detail, row, "participant {i}: NIR holds what its last write left");
        assert_eq!(row["Kommunenummer"], r.kommune(), "participant {i}");
        assert_eq!(row["Hurtigspor"]["Status"].as_str(), r.nir_status(), "participant {i}");
        assert_eq!(row["Periode"]["Startdato"], "2026-01-05", "participant {i}");
        let case = mine.last().map(|e| cases(e)).unwrap();
        assert_eq!(case, usize::from(r.has(Step::OpenCase)), "participant {i}: the recognition case as a measure");
    }
}

/// Arena's writes carry no idempotency key: a repeated write is a second
/// row. Exactly once: one person, one INTRO relation and one activity per
/// plan goal for each candidate, and nothing at all for the others. In
/// order: the relation (the candidacy) before the activity (the plan, a
/// later version); the whole log of each person is exactly that.
fn check_arena(arena: &Arena, records: &[Record], current: &BTreeMap<u32, Participant>) {
    let state = arena.state();
    let effects = arena.common.effects.all();
    let candidates: Vec<&Record> = records.iter().filter(|r| r.has(Step::Candidate)).collect();
    assert_eq!(state["persons"].as_array().unwrap().len(), candidates.len(), "Arena knows the candidates alone");
    for r in &candidates {
        let i = r.i;
        let persons: Vec<&Value> =
            state["persons"].as_array().unwrap().iter().filter(|p| p["FODSELSNR"] == r.national_id.as_str()).collect();
        assert_eq!(persons.len(), 1, "participant {i}: one person in Arena");
        let person = &persons[0]["PERSON_ID"];
        let kinds: Vec<&str> =
            effects.iter().filter(|e| &e.detail["PERSON_ID"] == person).map(|e| e.kind.as_str()).collect();
        let expected: &[&str] = if r.has(Step::Plan) {
            &["personforhold.created", "aktivitet.created"]
        } else {
            &["personforhold.created"]
        };
        assert_eq!(kinds, expected, "participant {i}: Arena's writes for them");
        let relations: Vec<&Value> =
            state["personforhold"].as_array().unwrap().iter().filter(|p| &p["PERSON_ID"] == person).collect();
        assert_eq!(relations.len(), 1, "participant {i}");
        let relation = relations[0];
        assert_eq!(
            (&relation["PERSONFORHOLDKODE"], &relation["AETATENHET"], &relation["DATO_FRA"], &relation["ER_AKTIV"]),
            (&Value::from("INTRO"), &Value::from("0314"), &Value::from("2026-01-05 00:00:00"), &Value::from("J")),
            "participant {i}"
        );
        let activities: Vec<&Value> =
            state["aktiviteter"].as_array().unwrap().iter().filter(|a| &a["PERSON_ID"] == person).collect();
        let goals = current[&i].plan.as_ref().map(|p| p.goals.clone()).unwrap_or_default();
        assert_eq!(activities.len(), goals.len(), "participant {i}: an activity per plan goal");
        for (activity, goal) in activities.iter().zip(&goals) {
            assert_eq!(activity["TITTEL"], "Norsk B2", "participant {i}");
            let marker = format!("[hurtigspor-mål {}]", goal.id);
            assert!(activity["BESKRIVELSE"].as_str().unwrap().contains(&marker), "participant {i}: {activity}");
        }
    }
    let expected_writes: usize = candidates.iter().map(|r| 1 + usize::from(r.has(Step::Plan))).sum();
    assert_eq!(effects.len(), expected_writes, "Arena got no other write");
}

/// NOKUT remembers a case's `Idempotency-Key` and answers a repeat with the
/// first case, without a second effect. Exactly once: one case per
/// participant who opened one, opened once, its number kept on the
/// canonical case; then its one status change.
fn check_nokut(nokut: &Nokut, records: &[Record], current: &BTreeMap<u32, Participant>) {
    let state = nokut.state();
    let effects = nokut.common.effects.all();
    let saker = state["saker"].as_array().unwrap();
    let with_case: Vec<&Record> = records.iter().filter(|r| r.has(Step::OpenCase)).collect();
    assert_eq!(saker.len(), with_case.len(), "NOKUT has a case for each that opened one, and no other");
    for r in &with_case {
        let i = r.i;
        let theirs: Vec<&Value> =
            saker.iter().filter(|s| s["soker"]["fodselsnummer"] == r.national_id.as_str()).collect();
        assert_eq!(theirs.len(), 1, "participant {i}: one case at NOKUT");
        let number = theirs[0]["saksnummer"].as_str().unwrap();
        let kinds: Vec<&str> =
            effects.iter().filter(|e| e.detail["saksnummer"] == number).map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["sak.opened", "sak.status_changed"], "participant {i}");
        assert_eq!(theirs[0]["status"], "UNDER_BEHANDLING");
        let cases = &current[&i].recognition_cases;
        assert_eq!(cases.len(), 1, "participant {i}");
        assert_eq!(cases[0].case_number, number, "participant {i}: the canonical case keeps NOKUT's number");
        assert_eq!(cases[0].status, RecognitionStatus::InProcess as i32, "participant {i}: NOKUT's change came back");
    }
    assert_eq!(effects.len(), 2 * with_case.len(), "NOKUT got no other write");
}
