//! The fault matrix: every failure the mocks can stage, against the real
//! gateway and the real Arena, NIR and NOKUT mocks over HTTP. Writes are
//! made while a fault is on; after it is off, every acknowledged write must
//! be in every system that needs it, nothing pending, nothing applied twice
//! and nothing applied out of order (read from the mocks' effect logs).

use crate::helpers::*;
use futures::future::join_all;
use hurtigspor_gateway::config::Config;
use hurtigspor_proto::v1::{
    CompetenceMapping, DecisionMaker, Education, EducationLevel, EndProgrammeRequest, GetSyncStatusRequest,
    HurtigsporStatus as S, IndividualPlan, ListFailedDeliveriesRequest, MainActivity, Participant, PlanGoal,
    ProgrammeEndReason, RecordCompetenceMappingRequest, ResponsibleParty, RetryDeliveriesRequest, SyncState,
    TargetSyncStatus, TransitionHurtigsporRequest, UpdateIndividualPlanRequest,
};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
    future::Future,
    path::Path,
    time::{Duration, Instant},
};

const SYSTEMS: [&str; 3] = ["arena", "nir", "nokut"];
/// How long the gateway gets to converge once the faults are off.
const CONVERGENCE: Duration = Duration::from_secs(60);
const NAV_OFFICE: &str = "0314";
const END_DATE: (i32, i32, i32) = (2026, 10, 30);
/// Participants per single-fault run.
const PARTICIPANTS: usize = 4;
/// How many write requests to each write route a counted rule hits.
const WRITE_HITS: u32 = 2;
/// The mixed run's fault seed (every mock is reseeded with it).
const MIXED_SEED: u64 = 20_261_123;

// ---- The gateway and the mocks' admin API -----------------------------------

/// Fast retries (20 ms doubling to 500 ms) and attempts no fault run can
/// exhaust; each request to a target is bounded by `timeout_secs`.
fn fast_config(dir: &Path, timeout_secs: u64) -> Config {
    let mut config = dev_config(dir);
    config.sync.retry_base_ms = 20;
    config.sync.retry_max_delay_ms = 500;
    config.sync.max_attempts = 1_000_000;
    // The breakers still open under faults, but try again soon.
    config.sync.breaker_cool_down_ms = 100;
    config.sync.breaker_max_cool_down_ms = 1_000;
    config.targets.timeout_secs = timeout_secs;
    config
}

async fn fast_app(timeout_secs: u64) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config(dir.path(), timeout_secs);
    spawn_with(dir, config).await
}

async fn admin_post(app: &TestApp, system: &str, path: &str, body: Value) -> reqwest::Response {
    let r = reqwest::Client::new().post(format!("{}{path}", app.mocks[system])).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{system} {path}: {}", r.status());
    r
}

async fn admin_get(app: &TestApp, system: &str, path: &str) -> Value {
    reqwest::get(format!("{}{path}", app.mocks[system])).await.unwrap().json().await.unwrap()
}

/// `fault` (a `{"kind": ...}` object) with the extra fields merged in.
fn rule(fault: &Value, extra: Value) -> Value {
    let mut rule = fault.clone();
    rule.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    rule
}

async fn add_fault(app: &TestApp, system: &str, rule: Value) {
    admin_post(app, system, "/admin/faults", rule).await;
}

/// The requests that change something in each system, as (route prefix,
/// method). NIR's registration shares its prefix with its search, so NIR's
/// writes are the PUTs of the mark, the measures and the end.
fn write_routes(system: &str) -> &'static [(&'static str, &'static str)] {
    match system {
        "arena" => &[
            ("/ords/arena/api/v1/personforhold", "POST"),
            ("/ords/arena/api/v1/personforhold", "PUT"),
            ("/ords/arena/api/v1/aktivitetsplan", "POST"),
        ],
        "nir" => &[("/nir/ws4/v1/deltakelser", "PUT")],
        "nokut" => &[("/api/v1/saker", "POST")],
        other => panic!("no system {other}"),
    }
}

/// On every mock: `fault` on the first [`WRITE_HITS`] requests to each
/// write route, so that writes are hit for certain (a lost answer to a read
/// proves little), and on a share of all requests. The counted rules come
/// first: the first rule that strikes decides a request's fault.
/// `fault` on the first request to each write route of every system.
async fn on_first_writes(app: &TestApp, fault: &Value) {
    for system in SYSTEMS {
        for (route, method) in write_routes(system) {
            add_fault(app, system, rule(fault, json!({ "route": route, "method": method, "times": 1 }))).await;
        }
    }
}

async fn add_everywhere_and_on_writes(app: &TestApp, fault: &Value, probability: f64) {
    for system in SYSTEMS {
        for (route, method) in write_routes(system) {
            add_fault(app, system, rule(fault, json!({ "route": route, "method": method, "times": WRITE_HITS }))).await;
        }
        add_fault(app, system, rule(fault, json!({ "probability": probability }))).await;
    }
}

async fn faults_of(app: &TestApp, system: &str) -> Vec<Value> {
    admin_get(app, system, "/admin/faults").await.as_array().unwrap().clone()
}

fn counted_rules_struck(rules: &[Value]) -> bool {
    rules.iter().all(|r| r["times"].as_u64().is_none_or(|n| r["injected"].as_u64() >= Some(n)))
}

/// Waits until every counted rule on every mock has struck as often as it
/// may (the fault has certainly hit the writes), or until everything is
/// delivered anyway, which a gateway that loses writes may claim: then the
/// assertions that follow say what was lost, and [`Struck::check`] that the
/// faults did not strike.
async fn wait_until_counted_faults_struck(app: &TestApp, journeys: &[Journey]) {
    let deadline = Instant::now() + CONVERGENCE;
    wait_for(
        "the counted faults",
        deadline,
        || async {
            let mut struck = true;
            for system in SYSTEMS {
                struck &= counted_rules_struck(&faults_of(app, system).await);
            }
            struck || all_delivered(app, journeys).await
        },
        |done| *done,
    )
    .await;
}

async fn clear_faults(app: &TestApp) {
    for system in SYSTEMS {
        let r = reqwest::Client::new().delete(format!("{}/admin/faults", app.mocks[system])).send().await.unwrap();
        assert!(r.status().is_success());
    }
}

async fn effects(app: &TestApp, system: &str) -> Vec<Value> {
    admin_get(app, system, "/admin/effects").await.as_array().unwrap().clone()
}

/// Fetches until `check` holds or `deadline` passes; fails with the last value.
async fn wait_for<T: Debug, F: Future<Output = T>>(
    what: &str,
    deadline: Instant,
    mut fetch: impl FnMut() -> F,
    check: impl Fn(&T) -> bool,
) -> T {
    loop {
        let value = fetch().await;
        if check(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} never reached the expected state: {value:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- The writes --------------------------------------------------------------

/// Where a participant's hurtigspor goes before the programme ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Route {
    /// CANDIDATE -> REJECTED; the programme ends (moved).
    Rejected,
    /// CANDIDATE -> CONFIRMED -> QUALIFYING -> JOB_MATCHING -> EMPLOYED; the
    /// programme ends for work.
    Employed,
}

/// What one participant went through, as acknowledged by the gateway.
#[derive(Debug)]
struct Journey {
    name: String,
    national_id: String,
    route: Route,
    /// The final plan's goals: (goal id, activity title).
    goals: Vec<(String, String)>,
    case_id: String,
    /// Acknowledged writes.
    writes: usize,
}

impl Journey {
    fn nir_status(&self) -> &'static str {
        match self.route {
            Route::Rejected => "AVSLATT",
            Route::Employed => "ANSATT",
        }
    }

    fn nir_end_reason(&self) -> &'static str {
        match self.route {
            Route::Rejected => "FLYTTET",
            Route::Employed => "ARBEID",
        }
    }
}

fn goal(id: &str, title: &str, version: u32) -> PlanGoal {
    PlanGoal {
        id: id.to_owned(),
        description: format!("{title} v{version}"),
        measure: "language practice".into(),
        responsible: ResponsibleParty::Kommune as i32,
        ..Default::default()
    }
}

/// A candidate's whole path through the API, every write needing Arena, NIR
/// or NOKUT: created (NIR), mapped and CANDIDATE (Arena relation, NIR mark),
/// a plan (Arena activities), a recognition case (NOKUT), a revised plan (an
/// activity updated, one added), the hurtigspor outcome (NIR status) and the
/// end of the programme (Arena relation ended, NIR end).
async fn journey(app: &TestApp, route: Route) -> Journey {
    let mut c = app.client.clone();
    let mut input = minimal_participant();
    input.nav_office = NAV_OFFICE.into();
    let national_id = input.national_id.clone();
    let name = app.create(input).await.name;
    let mut writes = 1;
    c.record_competence_mapping(RecordCompetenceMappingRequest {
        name: name.clone(),
        competence: Some(CompetenceMapping { mapped_date: date(2026, 2, 1), ..Default::default() }),
        etag: String::new(),
    })
    .await
    .unwrap();
    writes += 1;
    let transition = |status: S| TransitionHurtigsporRequest {
        name: name.clone(),
        status: status as i32,
        decided_by: if matches!(status, S::Confirmed | S::Rejected) {
            DecisionMaker::Joint
        } else {
            DecisionMaker::Kommune
        } as i32,
        ..Default::default()
    };
    c.transition_hurtigspor(transition(S::Candidate)).await.unwrap();
    writes += 1;
    let plan = |goals: Vec<PlanGoal>| UpdateIndividualPlanRequest {
        name: name.clone(),
        plan: Some(IndividualPlan { main_goal: "work as a nurse".into(), goals }),
        etag: String::new(),
    };
    let first = c
        .update_individual_plan(plan(vec![goal("", "Norsk B2", 1), goal("", "Arbeidspraksis", 1)]))
        .await
        .unwrap()
        .into_inner();
    writes += 1;
    let ids: Vec<String> = first.plan.unwrap().goals.into_iter().map(|g| g.id).collect();
    let opened = c.open_recognition_case(nursing_case(&name)).await.unwrap().into_inner();
    writes += 1;
    let case_id = opened.recognition_cases[0].id.clone();
    let revised = c
        .update_individual_plan(plan(vec![
            goal(&ids[0], "Norsk B2", 2),
            goal(&ids[1], "Arbeidspraksis", 1),
            goal("", "Autorisasjon", 1),
        ]))
        .await
        .unwrap()
        .into_inner();
    writes += 1;
    let goals = revised.plan.unwrap().goals.into_iter().map(|g| (g.id, g.description)).collect();
    let steps: &[S] = match route {
        Route::Rejected => &[S::Rejected],
        Route::Employed => &[S::Confirmed, S::Qualifying, S::JobMatching, S::Employed],
    };
    for status in steps {
        c.transition_hurtigspor(transition(*status)).await.unwrap();
        writes += 1;
    }
    let (reason, activity) = match route {
        Route::Rejected => (ProgrammeEndReason::Moved, MainActivity::Other),
        Route::Employed => (ProgrammeEndReason::Employment, MainActivity::Work),
    };
    c.end_programme(EndProgrammeRequest {
        name: name.clone(),
        end_date: date(END_DATE.0, END_DATE.1, END_DATE.2),
        end_reason: reason as i32,
        main_activity: activity as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    writes += 1;
    Journey { name, national_id, route, goals, case_id, writes }
}

/// `n` participants' journeys at once, alternating the two routes.
async fn journeys(app: &TestApp, n: usize) -> Vec<Journey> {
    let route = |i| if i % 2 == 0 { Route::Rejected } else { Route::Employed };
    join_all((0..n).map(|i| journey(app, route(i)))).await
}

// ---- What must hold afterwards -----------------------------------------------

fn version_of(p: &Participant) -> i64 {
    p.etag.trim_start_matches("W/").trim_matches('"').parse().expect("an etag carries the version")
}

/// Every target delivered the participant's latest version.
fn delivered_at(targets: &[TargetSyncStatus], version: i64) -> bool {
    targets.len() == SYSTEMS.len()
        && targets.iter().all(|t| {
            t.state == SyncState::Delivered as i32 && t.delivered_version == version && t.desired_version == version
        })
}

/// Whether every target holds every participant's latest version now.
async fn all_delivered(app: &TestApp, journeys: &[Journey]) -> bool {
    let mut sync = app.sync_client().await;
    for j in journeys {
        let version = version_of(&app.get(&j.name).await);
        let request = GetSyncStatusRequest { name: j.name.clone() };
        if !delivered_at(&sync.get_sync_status(request).await.unwrap().into_inner().targets, version) {
            return false;
        }
    }
    true
}

/// Waits until every target holds every participant's latest version; the
/// version itself may still move while NOKUT's case numbers come back.
async fn wait_until_delivered(app: &TestApp, journeys: &[Journey]) {
    let deadline = Instant::now() + CONVERGENCE;
    let sync = app.sync_client().await;
    for j in journeys {
        wait_for(
            &format!("delivery of {}", j.name),
            deadline,
            || {
                let mut sync = sync.clone();
                async move {
                    let version = version_of(&app.get(&j.name).await);
                    let request = GetSyncStatusRequest { name: j.name.clone() };
                    (version, sync.get_sync_status(request).await.unwrap().into_inner().targets)
                }
            },
            |(version, targets)| delivered_at(targets, *version),
        )
        .await;
    }
}

/// The proof, after the faults are off: every acknowledged write reached
/// every system that needs it, nothing is pending or failed, and the effect
/// logs show each write applied once and each participant's changes in order.
async fn assert_delivered_once_and_in_order(app: &TestApp, journeys: &[Journey]) {
    wait_until_delivered(app, journeys).await;
    let failed = app
        .sync_client()
        .await
        .list_failed_deliveries(ListFailedDeliveriesRequest { page_size: 500, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert!(failed.is_empty(), "failed deliveries: {failed:?}");
    assert_arena(&app.mock_state("arena").await, &effects(app, "arena").await, journeys);
    assert_nir(&app.mock_state("nir").await, &effects(app, "nir").await, journeys);
    let mut records = Vec::new();
    for j in journeys {
        records.push(app.get(&j.name).await);
    }
    assert_nokut(&app.mock_state("nokut").await, &effects(app, "nokut").await, journeys, &records);
}

fn rows_where<'a>(table: &'a Value, field: &str, value: &Value) -> Vec<&'a Value> {
    table.as_array().unwrap().iter().filter(|r| &r[field] == value).collect()
}

/// The version in an activity title `"<title> v<n>"`.
fn title_version(title: &str) -> u32 {
    title.rsplit_once(" v").and_then(|(_, v)| v.parse().ok()).unwrap_or_else(|| panic!("no version in {title:?}"))
}

/// Arena: one person, one INTRO relation (ended after it was created, never
/// created again), one activity per goal, each activity's versions only
/// moving forward.
fn assert_arena(state: &Value, effects: &[Value], journeys: &[Journey]) {
    for j in journeys {
        let who = &j.name;
        let persons = rows_where(&state["persons"], "FODSELSNR", &json!(j.national_id));
        assert_eq!(persons.len(), 1, "{who}: one Arena person");
        let person = &persons[0]["PERSON_ID"];
        let relations = rows_where(&state["personforhold"], "PERSON_ID", person);
        assert_eq!(relations.len(), 1, "{who}: one INTRO relation in Arena");
        assert_eq!(relations[0]["PERSONFORHOLDKODE"], "INTRO");
        assert_eq!(relations[0]["ER_AKTIV"], "N", "{who}: the relation is ended");
        assert_eq!(relations[0]["DATO_TIL"], "2026-10-30 00:00:00", "{who}");
        let activities = rows_where(&state["aktiviteter"], "PERSON_ID", person);
        assert_eq!(activities.len(), j.goals.len(), "{who}: one activity per plan goal");
        for (id, title) in &j.goals {
            let marked: Vec<_> = activities.iter().filter(|a| is_for_goal(a, id)).collect();
            assert_eq!(marked.len(), 1, "{who}: one activity for goal {id}");
            assert_eq!(marked[0]["TITTEL"], title.as_str(), "{who}: goal {id} at its latest version");
        }

        let mine: Vec<&Value> = effects.iter().filter(|e| &e["detail"]["PERSON_ID"] == person).collect();
        let seqs = |kind: &str| -> Vec<u64> {
            mine.iter().filter(|e| e["kind"] == kind).map(|e| e["seq"].as_u64().unwrap()).collect()
        };
        let (created, ended) = (seqs("personforhold.created"), seqs("personforhold.ended"));
        assert_eq!(created.len(), 1, "{who}: personforhold created {} times (seq {created:?})", created.len());
        assert_eq!(ended.len(), 1, "{who}: personforhold ended {} times (seq {ended:?})", ended.len());
        assert!(created[0] < ended[0], "{who}: ended (seq {}) before it was created (seq {})", ended[0], created[0]);
        for (id, _) in &j.goals {
            let history: Vec<(&str, u64, u32)> = mine
                .iter()
                .filter(|e| e["kind"].as_str().unwrap().starts_with("aktivitet.") && is_for_goal(&e["detail"], id))
                .map(|e| {
                    let kind = e["kind"].as_str().unwrap();
                    (kind, e["seq"].as_u64().unwrap(), title_version(e["detail"]["TITTEL"].as_str().unwrap()))
                })
                .collect();
            let creations = history.iter().filter(|(kind, ..)| *kind == "aktivitet.created").count();
            assert_eq!(creations, 1, "{who}: activity for goal {id} created {creations} times: {history:?}");
            assert_eq!(history[0].0, "aktivitet.created", "{who}: goal {id} updated before created: {history:?}");
            assert!(
                history.windows(2).all(|w| w[0].2 <= w[1].2),
                "{who}: goal {id}'s activity went back to an older version: {history:?}"
            );
        }
    }
}

fn is_for_goal(activity: &Value, goal_id: &str) -> bool {
    activity["BESKRIVELSE"].as_str().is_some_and(|b| b.contains(&format!("[hurtigspor-mål {goal_id}]")))
}

/// The order in which NIR may see hurtigspor statuses.
fn nir_rank(status: &str) -> u32 {
    match status {
        "KANDIDAT" => 0,
        "BEKREFTET" | "AVSLATT" => 1,
        "KVALIFISERING" => 2,
        "JOBBMATCHING" => 3,
        "ANSATT_MED_TILSKUDD" => 4,
        "ANSATT" | "TILBAKE_TIL_ORDINAERT" | "AVSLUTTET_UTEN_RESULTAT" => 5,
        other => panic!("unknown NIR hurtigspor status {other}"),
    }
}

/// NIR: one registration per person and period, the status never moving
/// back, the end only after the mark and never taken back.
fn assert_nir(state: &Value, effects: &[Value], journeys: &[Journey]) {
    for j in journeys {
        let who = &j.name;
        let fnr = json!(j.national_id);
        let held: Vec<_> =
            state["deltakelser"].as_array().unwrap().iter().filter(|d| d["Person"]["Fodselsnummer"] == fnr).collect();
        assert_eq!(held.len(), 1, "{who}: one NIR registration");
        assert_eq!(held[0]["Hurtigspor"]["Status"], j.nir_status(), "{who}");
        assert_eq!(held[0]["Avslutning"]["Sluttdato"], "2026-10-30", "{who}");
        assert_eq!(held[0]["Avslutning"]["Avslutningsarsak"], j.nir_end_reason(), "{who}");

        let mine: Vec<&Value> = effects.iter().filter(|e| e["detail"]["Person"]["Fodselsnummer"] == fnr).collect();
        let registered: BTreeMap<&str, usize> =
            mine.iter().filter(|e| e["kind"] == "deltakelse.registered").fold(BTreeMap::new(), |mut m, e| {
                *m.entry(e["detail"]["Periode"]["Startdato"].as_str().unwrap()).or_default() += 1;
                m
            });
        assert_eq!(registered.len(), 1, "{who}: one period registered: {registered:?}");
        assert!(registered.values().all(|n| *n == 1), "{who}: a period registered twice: {registered:?}");
        assert_eq!(mine[0]["kind"], "deltakelse.registered", "{who}: changed before registered");
        // Every effect records the registration after it: follow it.
        let mut rank = 0;
        let mut ended = false;
        for e in &mine {
            let (seq, kind, d) = (&e["seq"], &e["kind"], &e["detail"]);
            if let Some(status) = d["Hurtigspor"]["Status"].as_str() {
                let now = nir_rank(status);
                assert!(now >= rank, "{who}: NIR's hurtigspor status moved back to {status} (seq {seq}, {kind})");
                rank = now;
            }
            let has_end = d["Avslutning"].is_object();
            assert!(!ended || has_end, "{who}: NIR's end was taken back (seq {seq}, {kind})");
            assert!(!has_end || d["Hurtigspor"].is_object(), "{who}: NIR got the end before the mark (seq {seq})");
            ended |= has_end;
        }
    }
}

/// NOKUT: one case per recognition case, its number back on the record.
fn assert_nokut(state: &Value, effects: &[Value], journeys: &[Journey], records: &[Participant]) {
    let opened: Vec<&str> = effects
        .iter()
        .filter(|e| e["kind"] == "sak.opened")
        .map(|e| e["detail"]["saksnummer"].as_str().unwrap())
        .collect();
    let distinct: BTreeSet<&str> = opened.iter().copied().collect();
    assert_eq!(distinct.len(), opened.len(), "a NOKUT case opened twice: {opened:?}");
    assert_eq!(opened.len(), journeys.len(), "one NOKUT case per recognition case");
    for (j, record) in journeys.iter().zip(records) {
        let who = &j.name;
        let cases: Vec<_> = state["saker"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["soker"]["fodselsnummer"] == json!(j.national_id))
            .collect();
        assert_eq!(cases.len(), 1, "{who}: one NOKUT case");
        let number = cases[0]["saksnummer"].as_str().unwrap();
        let case = record.recognition_cases.iter().find(|c| c.id == j.case_id).expect("the case is on the record");
        assert_eq!(case.case_number, number, "{who}: NOKUT's case number is kept on the record");
    }
}

// ---- One fault at a time -----------------------------------------------------

/// Runs the journeys with `fault` on every mock (on a share of all requests
/// and on the first writes), waits until it has struck every write route,
/// switches it off and checks the outcome.
async fn survives(fault: Value, probability: f64) {
    let app = fast_app(2).await;
    add_everywhere_and_on_writes(&app, &fault, probability).await;
    let journeys = journeys(&app, PARTICIPANTS).await;
    let struck = fault_then_recovery(&app, &journeys).await;
    assert_delivered_once_and_in_order(&app, &journeys).await;
    struck.check();
}

/// What the mocks' fault rules did before they were switched off.
struct Struck(Vec<(&'static str, Vec<Value>)>);

impl Struck {
    fn check(&self) {
        for (system, rules) in &self.0 {
            assert!(counted_rules_struck(rules), "{system}: the counted faults did not strike: {rules:?}");
            assert!(rules.iter().any(|r| r["injected"].as_u64() > Some(0)), "{system} saw no fault: {rules:?}");
        }
    }

    fn injected(&self) -> Vec<(&'static str, u64)> {
        self.0.iter().map(|(s, rules)| (*s, rules.iter().map(|r| r["injected"].as_u64().unwrap()).sum())).collect()
    }
}

/// Lets the faults strike the writes, then switches them off; returns what
/// they did, to check after the outcome.
async fn fault_then_recovery(app: &TestApp, journeys: &[Journey]) -> Struck {
    wait_until_counted_faults_struck(app, journeys).await;
    let mut struck = Vec::new();
    for system in SYSTEMS {
        struck.push((system, faults_of(app, system).await));
    }
    clear_faults(app).await;
    Struck(struck)
}

#[tokio::test]
async fn latency_loses_and_repeats_nothing() {
    // Well within the 2 s request timeout.
    survives(json!({ "kind": "latency", "millis": 300 }), 0.5).await;
}

#[tokio::test]
async fn server_errors_500_502_503_are_retried_until_delivered_once() {
    let app = fast_app(2).await;
    for status in [500, 502, 503] {
        add_everywhere_and_on_writes(&app, &json!({ "kind": "error", "status": status }), 0.1).await;
    }
    let journeys = journeys(&app, PARTICIPANTS).await;
    let struck = fault_then_recovery(&app, &journeys).await;
    assert_delivered_once_and_in_order(&app, &journeys).await;
    struck.check();
}

#[tokio::test]
async fn too_many_requests_is_waited_out_and_delivered_once() {
    // Retry-After: 1 s, which the gateway caps at its 500 ms maximum delay.
    survives(json!({ "kind": "too_many_requests", "retry_after_secs": 1 }), 0.25).await;
}

#[tokio::test]
async fn reset_connections_are_retried_until_delivered_once() {
    survives(json!({ "kind": "reset_connection" }), 0.25).await;
}

#[tokio::test]
async fn writes_applied_with_their_answer_lost_are_not_applied_twice() {
    survives(json!({ "kind": "apply_then_drop" }), 0.25).await;
}

#[tokio::test]
async fn malformed_answers_to_applied_writes_are_not_applied_twice() {
    survives(json!({ "kind": "malformed_body" }), 0.25).await;
}

#[tokio::test]
async fn slow_drip_answers_within_the_timeout_are_delivered_once() {
    // 16 bytes every 10 ms: a 1 kB answer takes about 0.6 s of the 2 s.
    survives(json!({ "kind": "slow_drip", "chunk_bytes": 16, "interval_millis": 10 }), 0.5).await;
}

#[tokio::test]
async fn a_slow_drip_past_the_request_timeout_is_a_transient_failure() {
    // 4 bytes every 100 ms: any answer over 40 bytes outlasts the 1 s
    // timeout, after the write was applied.
    let app = fast_app(1).await;
    let fault = json!({ "kind": "slow_drip", "chunk_bytes": 4, "interval_millis": 100 });
    on_first_writes(&app, &fault).await;
    let journeys = journeys(&app, 2).await;
    let struck = fault_then_recovery(&app, &journeys).await;
    assert_delivered_once_and_in_order(&app, &journeys).await;
    struck.check();
}

/// A request may outlast the timeout *before* it is applied: the gateway
/// gives up on it and tries again. (The mocks drop a request whose caller
/// has gone, so it is never applied late; a real system that still commits
/// it afterwards is beyond what they can stage.)
#[tokio::test]
async fn latency_past_the_request_timeout_is_a_transient_failure() {
    // 1.5 s before each target even starts on the first writes; the gateway
    // waits 1 s.
    let app = fast_app(1).await;
    let fault = json!({ "kind": "latency", "millis": 1500 });
    on_first_writes(&app, &fault).await;
    let journeys = journeys(&app, 2).await;
    let struck = fault_then_recovery(&app, &journeys).await;
    assert_delivered_once_and_in_order(&app, &journeys).await;
    struck.check();
}

#[tokio::test]
async fn an_invalid_token_storm_is_ridden_out_and_delivered_once() {
    survives(json!({ "kind": "invalid_token_storm" }), 0.25).await;
}

/// A participant waiting out the outage: every target pending, its last
/// error the outage's 503.
fn pending_on_outage(targets: &[TargetSyncStatus]) -> bool {
    targets.len() == SYSTEMS.len()
        && targets.iter().all(|t| t.state == SyncState::Pending as i32 && t.last_error.contains("503"))
}

async fn sync_status(app: &TestApp, name: &str) -> Vec<TargetSyncStatus> {
    let request = GetSyncStatusRequest { name: name.to_owned() };
    app.sync_client().await.get_sync_status(request).await.unwrap().into_inner().targets
}

/// Ends every mock's outage window by moving its virtual clock past it.
async fn end_outages(app: &TestApp, seconds: i64) {
    for system in SYSTEMS {
        admin_post(app, system, "/admin/clock/advance", json!({ "seconds": seconds + 1 })).await;
    }
}

#[tokio::test]
async fn writes_acknowledged_during_an_outage_wait_and_arrive_once_it_ends() {
    let app = fast_app(2).await;
    for system in SYSTEMS {
        add_fault(&app, system, json!({ "kind": "outage", "seconds": 3600 })).await;
    }
    let journeys = journeys(&app, PARTICIPANTS).await;
    let deadline = Instant::now() + CONVERGENCE;
    for j in &journeys {
        wait_for(
            &format!("{} waiting out the outage", j.name),
            deadline,
            || sync_status(&app, &j.name),
            |t| pending_on_outage(t),
        )
        .await;
    }
    for system in SYSTEMS {
        assert!(effects(&app, system).await.is_empty(), "{system} applied something during its outage");
    }
    // The window ends (the mocks' clocks pass it; Arena's tokens expire on
    // the way, so the gateway must also fetch a new one).
    end_outages(&app, 3600).await;
    assert_delivered_once_and_in_order(&app, &journeys).await;
}

/// An outage longer than the retry policy cannot converge on its own: the
/// deliveries end failed with the reason, and heal when replayed after it.
#[tokio::test]
async fn an_outage_outlasting_the_retries_fails_with_the_reason_and_heals_on_retry() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fast_config(dir.path(), 2);
    config.sync.max_attempts = 3;
    let app = spawn_with(dir, config).await;
    for system in SYSTEMS {
        add_fault(&app, system, json!({ "kind": "outage", "seconds": 3600 })).await;
    }
    let journeys = journeys(&app, 2).await;
    let deadline = Instant::now() + CONVERGENCE;
    let mut sync = app.sync_client().await;
    let failed = wait_for(
        "every delivery failed",
        deadline,
        || {
            let mut sync = sync.clone();
            async move {
                let request = ListFailedDeliveriesRequest { page_size: 500, ..Default::default() };
                sync.list_failed_deliveries(request).await.unwrap().into_inner().deliveries
            }
        },
        |failed| failed.len() == journeys.len() * SYSTEMS.len(),
    )
    .await;
    for f in &failed {
        assert!(journeys.iter().any(|j| j.name == f.name), "{f:?}");
        assert!(f.reason.contains("gave up after 3 attempts") && f.reason.contains("503"), "{f:?}");
    }
    end_outages(&app, 3600).await;
    let retried = sync.retry_deliveries(RetryDeliveriesRequest { name: String::new() }).await.unwrap().into_inner();
    assert_eq!(retried.retried as usize, journeys.len() * SYSTEMS.len());
    assert_delivered_once_and_in_order(&app, &journeys).await;
}

// ---- Every fault at once -----------------------------------------------------

/// Every fault mode on every mock, each on a share of the requests (the
/// write-path ones more often on writes), under a fixed seed. A few counted
/// rules come first so that writes are certainly hit, whatever the seed draws.
fn mixed_rules(system: &str) -> Vec<Value> {
    let mut rules = Vec::new();
    for (route, method) in write_routes(system) {
        for kind in ["apply_then_drop", "malformed_body"] {
            rules.push(json!({ "kind": kind, "route": route, "method": method, "times": 3 }));
        }
    }
    rules.extend([
        json!({ "kind": "outage", "seconds": 1 }),
        json!({ "kind": "latency", "millis": 40, "probability": 0.2 }),
        json!({ "kind": "error", "status": 500, "probability": 0.02 }),
        json!({ "kind": "error", "status": 502, "probability": 0.02 }),
        json!({ "kind": "error", "status": 503, "probability": 0.02 }),
        json!({ "kind": "too_many_requests", "retry_after_secs": 1, "probability": 0.02 }),
        json!({ "kind": "reset_connection", "probability": 0.02 }),
        json!({ "kind": "apply_then_drop", "probability": 0.02 }),
        json!({ "kind": "malformed_body", "probability": 0.02 }),
        json!({ "kind": "slow_drip", "chunk_bytes": 32, "interval_millis": 5, "probability": 0.02 }),
        json!({ "kind": "invalid_token_storm", "probability": 0.02 }),
    ]);
    for (route, method) in write_routes(system) {
        for kind in ["apply_then_drop", "malformed_body"] {
            rules.push(json!({ "kind": kind, "route": route, "method": method, "probability": 0.1 }));
        }
    }
    rules
}

#[tokio::test]
async fn a_seeded_mix_of_every_fault_over_fifty_participants_loses_and_repeats_nothing() {
    let app = fast_app(2).await;
    for system in SYSTEMS {
        admin_post(&app, system, "/admin/faults/seed", json!({ "seed": MIXED_SEED })).await;
        for r in mixed_rules(system) {
            add_fault(&app, system, r).await;
        }
    }
    let journeys = journeys(&app, 50).await;
    let writes: usize = journeys.iter().map(|j| j.writes).sum();
    assert!(writes >= 200, "only {writes} acknowledged writes");
    // About one request in five fails: most Arena reconciles (several
    // requests each) fail, so its breaker treats Arena as down and lets one
    // trial through per cool-down. Once the faults stop, everything arrives.
    let struck = fault_then_recovery(&app, &journeys).await;
    assert_delivered_once_and_in_order(&app, &journeys).await;
    struck.check();
    let struck = struck.injected();
    eprintln!("mixed run (seed {MIXED_SEED}): {writes} writes to {} participants; faults {struck:?}", journeys.len());
}

// ---- A lost answer followed by a change --------------------------------------

/// NOKUT opens the case but the answer is lost; before the gateway's retry
/// gets through, the kommune records that the education is documented
/// (which NOKUT's case body carries). The retry must still find the one
/// case and bring its number back.
#[tokio::test]
async fn a_lost_case_answer_then_a_changed_record_still_gives_one_case_and_its_number() {
    let app = fast_app(2).await;
    let saker = "/api/v1/saker";
    add_fault(&app, "nokut", json!({ "kind": "apply_then_drop", "route": saker, "method": "POST", "times": 1 })).await;
    // Then NOKUT is unavailable until the record has changed.
    add_fault(&app, "nokut", json!({ "kind": "error", "status": 503, "route": saker, "method": "POST" })).await;
    let mut input = minimal_participant();
    input.nav_office = NAV_OFFICE.into();
    let national_id = input.national_id.clone();
    let name = app.create(input).await.name;
    let mut c = app.client.clone();
    let mapping = |documented: bool| RecordCompetenceMappingRequest {
        name: name.clone(),
        competence: Some(CompetenceMapping {
            mapped_date: date(2026, 2, 1),
            educations: vec![Education {
                level: EducationLevel::Bachelor as i32,
                field: "nursing".into(),
                country_code: "SY".into(),
                documented,
                completed_year: 2015,
            }],
            ..Default::default()
        }),
        etag: String::new(),
    };
    c.record_competence_mapping(mapping(false)).await.unwrap();
    let opened = c.open_recognition_case(nursing_case(&name)).await.unwrap().into_inner();
    let case_id = opened.recognition_cases[0].id.clone();
    wait_for(
        "the lost answer and a refused retry",
        Instant::now() + CONVERGENCE,
        || faults_of(&app, "nokut"),
        |rules| rules.len() == 2 && rules.iter().all(|r| r["injected"].as_u64() >= Some(1)),
    )
    .await;
    assert_eq!(effects(&app, "nokut").await.len(), 1, "the first request opened the case");
    c.record_competence_mapping(mapping(true)).await.unwrap();
    clear_faults(&app).await;

    let deadline = Instant::now() + CONVERGENCE;
    let settled = wait_for(
        "the NOKUT delivery to settle",
        deadline,
        || async {
            let version = version_of(&app.get(&name).await);
            (version, sync_status(&app, &name).await)
        },
        |(version, targets)| {
            delivered_at(targets, *version) || targets.iter().any(|t| t.state == SyncState::Failed as i32)
        },
    )
    .await;
    let nokut = settled.1.iter().find(|t| t.target == "nokut").unwrap();
    assert_eq!(nokut.state, SyncState::Delivered as i32, "the NOKUT delivery is stuck failed: {:?}", nokut.last_error);
    let state = app.mock_state("nokut").await;
    let cases: Vec<_> = state["saker"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["soker"]["fodselsnummer"] == json!(national_id))
        .collect();
    assert_eq!(cases.len(), 1, "one NOKUT case");
    let record = app.get(&name).await;
    let case = record.recognition_cases.iter().find(|c| c.id == case_id).unwrap();
    assert_eq!(case.case_number, cases[0]["saksnummer"].as_str().unwrap(), "the case number is on the record");
}
