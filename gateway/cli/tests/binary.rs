//! The `hurtigspor` binary as a user runs it: killed with SIGKILL it keeps
//! every write it acknowledged; its subcommands and their errors.

use hurtigspor_gateway::{auth::BearerToken, domain::national_id::testing::synthetic_fnr};
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{
        CreateParticipantRequest, ListParticipantsRequest, Participant, Programme,
        participant_service_client::ParticipantServiceClient,
    },
};
use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Output, Stdio},
};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

fn hurtigspor(args: &[&str], stdin: &str) -> Output {
    hurtigspor_as(None, args, stdin)
}

/// Runs the binary with `HURTIGSPOR_TOKEN` set to `token`.
fn hurtigspor_as(token: Option<&str>, args: &[&str], stdin: &str) -> Output {
    hurtigspor_with(&[], token, args, stdin)
}

/// Runs the binary with `envs` set (and `HURTIGSPOR_TOKEN` set to `token`).
fn hurtigspor_with(envs: &[(&str, &str)], token: Option<&str>, args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hurtigspor"));
    command.env_remove("HURTIGSPOR_TOKEN");
    if let Some(token) = token {
        command.env("HURTIGSPOR_TOKEN", token);
    }
    let mut child = command
        .envs(envs.iter().copied())
        .args(args)
        .env("HURTIGSPOR_LOG", "warn")
        .env_remove("HURTIGSPOR_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A dev gateway's ready token for `who`.
fn dev_token(data_dir: &std::path::Path, who: &str) -> String {
    let tokens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir.join("dev-tokens.json")).unwrap()).unwrap();
    tokens[who].as_str().unwrap().to_owned()
}

type Client = ParticipantServiceClient<InterceptedService<Channel, BearerToken>>;

/// A client of the dev gateway at `addr` with its admin token.
async fn connect(addr: &str, data_dir: &std::path::Path) -> Client {
    let channel = Channel::from_shared(addr.to_owned()).unwrap().connect().await.unwrap();
    ParticipantServiceClient::with_interceptor(
        channel,
        BearerToken::new(&dev_token(data_dir, "admin")).unwrap().with_purpose("case-processing").unwrap(),
    )
}

/// Starts `hurtigspor dev` on a free port and returns it with its address.
fn start(data_dir: &std::path::Path) -> (Child, String) {
    start_with(data_dir, &[])
}

/// Like `start`, with `envs` set.
fn start_with(data_dir: &std::path::Path, envs: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hurtigspor"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .envs(envs.iter().copied())
        .env("HURTIGSPOR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("the gateway prints where it listens").unwrap();
        if let Some(rest) = line.trim().strip_prefix("listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path());
    let client = connect(&addr, dir.path()).await;

    let acknowledged: Vec<Participant> = futures_join((0..40u32).map(|i| {
        let mut c = client.clone();
        async move {
            let p = Participant {
                national_id: synthetic_fnr(1985, 1 + i % 12, 1 + i % 28, i),
                given_name: "Crash".into(),
                family_name: format!("Test{i}"),
                kommunenummer: "5001".into(),
                programme: Some(Programme {
                    start_date: Some(Date { year: 2026, month: 2, day: 2 }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            c.create_participant(CreateParticipantRequest { participant: Some(p), request_id: format!("crash-{i}") })
                .await
                .unwrap()
                .into_inner()
        }
    }))
    .await;

    child.kill().unwrap(); // SIGKILL: no graceful shutdown, no flush
    child.wait().unwrap();

    let (mut child, addr) = start(dir.path());
    let mut client = connect(&addr, dir.path()).await;
    let page = client
        .list_participants(ListParticipantsRequest { page_size: 500, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(page.participants.len(), acknowledged.len());
    for p in &acknowledged {
        let found = page.participants.iter().find(|q| q.name == p.name).expect("acknowledged participant is there");
        assert_eq!(found.etag, p.etag);
        assert_eq!(found.family_name, p.family_name);
    }
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[test]
fn serve_refuses_to_start_without_auth_or_a_key_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = hurtigspor(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("[auth]"), "{}", text(&out.stderr));
    let config = dir.path().join("h.toml");
    std::fs::write(&config, "[auth]\nissuer = \"https://maskinporten.no/\"\njwks_file = \"/etc/jwks.json\"\n").unwrap();
    let out =
        hurtigspor(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--config", config.to_str().unwrap()], "");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("security.national_id_key") && err.contains("HURTIGSPOR__SECURITY__NATIONAL_ID_KEY"), "{err}");
    let hash_key = ("HURTIGSPOR__SECURITY__NATIONAL_ID_KEY", "ab".repeat(32));
    let out = hurtigspor_with(
        &[(hash_key.0, &hash_key.1)],
        None,
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--config", config.to_str().unwrap()],
        "",
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("security.encryption_keys")
            && err.contains("HURTIGSPOR__SECURITY__ENCRYPTION_KEYS__")
            && err.contains("openssl rand -hex 32"),
        "{err}"
    );
    std::fs::write(&config, "[auth]\nissuer = \"hurtigspor-dev\"\njwks_file = \"/etc/jwks.json\"\n").unwrap();
    let out = hurtigspor_as(
        None,
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--config", config.to_str().unwrap()],
        "",
    );
    assert!(text(&out.stderr).contains("dev issuer"), "serve refuses dev tokens: {}", text(&out.stderr));
}

#[test]
fn serve_reports_a_bad_config_value_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("h.toml");
    std::fs::write(&config, "[limits]\nmax_page_size = \"many\"\n").unwrap();
    let out = hurtigspor(&["serve", "--config", config.to_str().unwrap()], "");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("limits.max_page_size") && err.contains("h.toml"), "{err}");
}

#[test]
fn migrate_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let refused = hurtigspor(&["migrate", "--data-dir", data], "");
    assert!(!refused.status.success(), "production needs an encryption key to migrate");
    assert!(text(&refused.stderr).contains("security.encryption_keys"), "{}", text(&refused.stderr));
    let key = hurtigspor_gateway::crypto::random_hex_key();
    let env = [(KEY_A, key.as_str())];
    let first = hurtigspor_with(&env, None, &["migrate", "--data-dir", data], "");
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("applied migrations [1, 2, 3, 4, 5]"), "{}", text(&first.stdout));
    let again = hurtigspor_with(&env, None, &["migrate", "--data-dir", data], "");
    assert!(text(&again.stdout).contains("up to date"), "{}", text(&again.stdout));
}

#[tokio::test]
async fn the_database_url_selects_postgresql_for_migrate_rotate_key_and_audit_verify() {
    let Some(db) = hurtigspor_gateway::store::testing::TestDatabase::create().await else { return };
    // The server trusts the user; the password is there to be kept out of messages.
    let url = db.url.replacen("postgres@", "postgres:hemmelig-passord@", 1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let key = hurtigspor_gateway::crypto::random_hex_key();
    let chain_key = hurtigspor_gateway::crypto::random_hex_key();
    let env = [(KEY_A, key.as_str()), ("HURTIGSPOR__SECURITY__NATIONAL_ID_KEY", chain_key.as_str())];
    let first = hurtigspor_with(&env, None, &["migrate", "--data-dir", data, "--database-url", &url], "");
    assert!(first.status.success(), "{}", text(&first.stderr));
    let said = text(&first.stdout);
    assert!(said.contains("PostgreSQL database") && said.contains("applied migrations [1, 2, 3, 4, 5]"), "{said}");
    assert!(!said.contains("hemmelig"), "the password stays out: {said}");
    assert!(!dir.path().join("hurtigspor.db").exists(), "no SQLite file is made beside it");
    // The environment selects it as well as the flag does.
    let with_env = [env[0], env[1], ("HURTIGSPOR__DATABASE_URL", url.as_str())];
    let again = hurtigspor_with(&with_env, None, &["migrate", "--data-dir", data], "");
    assert!(text(&again.stdout).contains("up to date"), "{}", text(&again.stdout));
    let rotated = hurtigspor_with(&with_env, None, &["rotate-key", "--data-dir", data], "");
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    let verified = hurtigspor_with(&env, None, &["audit", "verify", "--data-dir", data, "--database-url", &url], "");
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    assert!(text(&verified.stdout).contains("audit log intact"), "{}", text(&verified.stdout));
    // Anything but a PostgreSQL URL is refused, saying what to give.
    let wrong = hurtigspor_with(&env, None, &["migrate", "--data-dir", data, "--database-url", "mysql://db/h"], "");
    assert!(!wrong.status.success());
    assert!(text(&wrong.stderr).contains("postgres://"), "{}", text(&wrong.stderr));
    // A server that does not answer is named, without the password, with what to check.
    let away = "postgres://postgres:hemmelig-passord@127.0.0.1:1/h";
    let out = hurtigspor_with(&env, None, &["migrate", "--data-dir", data, "--database-url", away], "");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("127.0.0.1:1/h") && err.contains("database URL"), "{err}");
    assert!(!err.contains("hemmelig"), "{err}");
}

const KEY_A: &str = "HURTIGSPOR__SECURITY__ENCRYPTION_KEYS__KA";
const KEY_B: &str = "HURTIGSPOR__SECURITY__ENCRYPTION_KEYS__KB";
const ACTIVE: &str = "HURTIGSPOR__SECURITY__ACTIVE_ENCRYPTION_KEY";

/// The database file and its WAL, as bytes.
fn database_bytes(data_dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(data_dir.join("hurtigspor.db")).unwrap();
    bytes.extend(std::fs::read(data_dir.join("hurtigspor.db-wal")).unwrap_or_default());
    bytes
}

fn holds(bytes: &[u8], text: &str) -> bool {
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_key_moves_every_national_id_to_the_active_key_and_says_when_the_old_one_can_go() {
    use hurtigspor_proto::v1::{GetParticipantRequest, LookupParticipantRequest};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let (a, b) = (hurtigspor_gateway::crypto::random_hex_key(), hurtigspor_gateway::crypto::random_hex_key());

    // Registered while `ka` is the active key.
    let (mut child, addr) = start_with(dir.path(), &[(KEY_A, &a), (ACTIVE, "ka")]);
    let mut client = connect(&addr, dir.path()).await;
    let mut registered = Vec::new();
    for i in 0..3u32 {
        let national_id = synthetic_fnr(1990, 2 + i, 3 + i, 40 + i);
        let p = Participant {
            national_id: national_id.clone(),
            given_name: "Rotert".into(),
            family_name: format!("Nokkel{i}"),
            kommunenummer: "0301".into(),
            programme: Some(Programme {
                start_date: Some(Date { year: 2026, month: 2, day: 2 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = client
            .create_participant(CreateParticipantRequest { participant: Some(p), request_id: String::new() })
            .await
            .unwrap()
            .into_inner();
        registered.push((created.name, national_id));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let rotate = |envs: &[(&str, &str)]| {
        hurtigspor_with(envs, None, &["rotate-key", "--data-dir", &data, "--batch-size", "2"], "")
    };
    // Without the key the values are under, rotation refuses and names it.
    let refused = rotate(&[(KEY_B, &b), (ACTIVE, "kb")]);
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(err.contains("`ka`") && err.contains(KEY_A), "{err}");
    assert!(!err.contains(&a) && !err.contains(&b), "no key in the message");

    // `kb` active, `ka` kept: everything moves to `kb`, two per batch.
    let both = [(KEY_A, a.as_str()), (KEY_B, b.as_str()), (ACTIVE, "kb")];
    let first = rotate(&both);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let (progress, summary) = (text(&first.stderr), text(&first.stdout));
    assert!(progress.contains("re-encrypted 2/3") && progress.contains("re-encrypted 3/3"), "{progress}");
    assert!(summary.contains("re-encrypted 3 national id(s) to key `kb`"), "{summary}");
    assert!(summary.contains("key `ka` encrypts nothing any longer") && summary.contains(KEY_A), "{summary}");
    for (_, national_id) in &registered {
        assert!(!progress.contains(national_id.as_str()) && !summary.contains(national_id.as_str()));
    }

    // Again: nothing to do.
    let again = rotate(&both);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(!text(&again.stderr).contains("re-encrypted"), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("nothing to re-encrypt: all 3 national id(s) are under key `kb`"),
        "{}",
        text(&again.stdout)
    );

    // `ka` removed: the gateway starts, and Get and Lookup give the right numbers.
    let (mut child, addr) = start_with(dir.path(), &[(KEY_B, &b), (ACTIVE, "kb")]);
    let mut client = connect(&addr, dir.path()).await;
    for (name, national_id) in &registered {
        let got = client.get_participant(GetParticipantRequest { name: name.clone() }).await.unwrap().into_inner();
        assert_eq!(&got.national_id, national_id);
        let found = client
            .lookup_participant(LookupParticipantRequest { national_id: national_id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&found.name, name);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let bytes = database_bytes(dir.path());
    assert!(holds(&bytes, "Nokkel1"), "the scan sees what is stored");
    for (name, national_id) in &registered {
        assert!(!holds(&bytes, national_id), "the national id of {name} is in the file in plain text");
    }

    let empty = tempfile::tempdir().unwrap();
    let out = hurtigspor_with(&both, None, &["rotate-key", "--data-dir", empty.path().to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no database"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_subcommands_work_against_a_dev_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path());
    let national_id = synthetic_fnr(1984, 7, 9, 11);
    let token = dev_token(dir.path(), "kommune_4601");
    let out = tokio::task::spawn_blocking({
        let (addr, national_id, token) = (addr.clone(), national_id.clone(), token.clone());
        move || {
            let hurtigspor = |args: &[&str], stdin: &str| hurtigspor_as(Some(&token), args, stdin);
            let create = hurtigspor(
                &[
                    "participants",
                    "--server",
                    &addr,
                    "--purpose",
                    "case-processing",
                    "create",
                    "--national-id",
                    "-",
                    "--given-name",
                    "Yxmirra",
                    "--family-name",
                    "Qzvarnes",
                    "--kommune",
                    "4601",
                    "--start-date",
                    "2026-02-02",
                ],
                &format!("{national_id}\n"),
            );
            let list = hurtigspor(
                &["participants", "--server", &addr, "--purpose", "case-processing", "list", "--kommune", "4601"],
                "",
            );
            let lookup = hurtigspor(
                &["participants", "--server", &addr, "--purpose", "case-processing", "lookup"],
                &national_id,
            );
            let no_purpose = hurtigspor(&["participants", "--server", &addr, "list"], "");
            let bad = hurtigspor(
                &[
                    "participants",
                    "--server",
                    &addr,
                    "--purpose",
                    "case-processing",
                    "create",
                    "--national-id",
                    "-",
                    "--given-name",
                    "A",
                    "--family-name",
                    "B",
                    "--kommune",
                    "3004",
                    "--start-date",
                    "2026-02-02",
                ],
                &national_id,
            );
            (create, list, lookup, bad, no_purpose)
        }
    })
    .await
    .unwrap();
    let refused = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || hurtigspor_as(Some("not-a-token"), &["participants", "--server", &addr, "--purpose", "x", "list"], "")
    })
    .await
    .unwrap();
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("Unauthenticated"), "{}", text(&refused.stderr));
    // The report: CSV with a header row, a readable table, the kommune's own only.
    let (csv, table, other, no_purpose_report) = tokio::task::spawn_blocking({
        let (addr, token) = (addr.clone(), token.clone());
        move || {
            let report = |extra: &[&str]| {
                let mut args = vec!["report", "--server", &addr, "--year", "2026"];
                args.extend_from_slice(extra);
                hurtigspor_as(Some(&token), &args, "")
            };
            (
                report(&["--purpose", "statistics", "--kommune", "4601", "--csv"]),
                report(&["--purpose", "statistics", "--kommune", "4601"]),
                report(&["--purpose", "statistics", "--kommune", "0301", "--csv"]),
                report(&["--kommune", "4601", "--csv"]),
            )
        }
    })
    .await
    .unwrap();
    assert!(csv.status.success(), "{}", text(&csv.stderr));
    let rows: Vec<String> = text(&csv.stdout).lines().map(str::to_owned).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].starts_with("kommunenummer,year,participants_in_hurtigspor,programme_participants,"));
    assert!(rows[1].starts_with("4601,2026,0,1,"), "{}", rows[1]);
    assert!(!text(&csv.stdout).contains(&national_id));
    assert!(
        table.status.success() && text(&table.stdout).contains("programme_participants"),
        "{}",
        text(&table.stdout)
    );
    assert!(!other.status.success());
    assert!(text(&other.stderr).contains("PermissionDenied"), "{}", text(&other.stderr));
    assert!(!no_purpose_report.status.success());
    assert!(text(&no_purpose_report.stderr).contains("--purpose"), "{}", text(&no_purpose_report.stderr));
    child.kill().unwrap();
    child.wait().unwrap();

    let (create, list, lookup, bad, no_purpose) = out;
    assert!(!no_purpose.status.success());
    assert!(text(&no_purpose.stderr).contains("--purpose"), "{}", text(&no_purpose.stderr));
    let created = text(&create.stdout);
    assert!(create.status.success(), "{}", text(&create.stderr));
    assert!(created.starts_with("participants/"), "{created}");
    assert!(!created.contains(&national_id), "the client masks the national id");
    let name = created.lines().next().unwrap().to_owned();
    assert!(
        text(&list.stdout).contains(&name) && text(&list.stdout).contains("1 participant(s)"),
        "{}",
        text(&list.stdout)
    );
    assert!(text(&lookup.stdout).starts_with(&name), "{}", text(&lookup.stdout));
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("participant.kommunenummer"), "{}", text(&bad.stderr));

    // The audit log holds what the client did, and `audit verify` checks it.
    let verify = || {
        Command::new(env!("CARGO_BIN_EXE_hurtigspor"))
            .args(["audit", "verify", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let intact = verify();
    assert!(intact.status.success(), "{}", text(&intact.stderr));
    assert!(text(&intact.stdout).contains("audit log intact"), "{}", text(&intact.stdout));
    // The head it prints finds entries removed from the end later.
    let head = text(&intact.stdout).split("head ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir(copy.path().join("secrets")).unwrap();
    for file in ["hurtigspor.db", "hurtigspor.db-wal", "secrets/master.key"] {
        if dir.path().join(file).exists() {
            std::fs::copy(dir.path().join(file), copy.path().join(file)).unwrap();
        }
    }
    let cut = rusqlite::Connection::open(copy.path().join("hurtigspor.db")).unwrap();
    cut.execute_batch(
        "DROP TRIGGER audit_log_no_delete;
         DELETE FROM audit_log WHERE sequence = (SELECT max(sequence) FROM audit_log);",
    )
    .unwrap();
    drop(cut);
    let verify_copy = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hurtigspor"))
            .args(["audit", "verify", "--data-dir"])
            .arg(copy.path())
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(verify_copy(&[]).status.success(), "a shorter chain verifies by itself");
    let truncated = verify_copy(&["--expect-head", &head]);
    assert_eq!(truncated.status.code(), Some(2), "{}", text(&truncated.stderr));
    assert!(text(&truncated.stderr).contains("removed from its end"), "{}", text(&truncated.stderr));
    let db = rusqlite::Connection::open(dir.path().join("hurtigspor.db")).unwrap();
    let methods: Vec<String> = db
        .prepare(
            "SELECT method || ' ' || outcome FROM audit_log WHERE organisation = '0192:900000022' ORDER BY sequence",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        methods,
        [
            "ParticipantService/CreateParticipant OK",
            "ParticipantService/ListParticipants OK",
            "ParticipantService/LookupParticipant OK",
            "ParticipantService/CreateParticipant INVALID_ARGUMENT",
            "ReportingService/GetHurtigsporReport OK",
            "ReportingService/GetHurtigsporReport OK",
            "ReportingService/GetHurtigsporReport PERMISSION_DENIED",
        ]
    );
    // Someone with access to the database changes who read the person.
    db.execute_batch(
        "DROP TRIGGER audit_log_no_update;
         UPDATE audit_log SET organisation = '0192:900000014'
         WHERE method = 'ParticipantService/LookupParticipant';",
    )
    .unwrap();
    let edited: i64 = db
        .query_row("SELECT sequence FROM audit_log WHERE method = 'ParticipantService/LookupParticipant'", [], |r| {
            r.get(0)
        })
        .unwrap();
    drop(db);
    let broken = verify();
    assert_eq!(broken.status.code(), Some(2), "{}", text(&broken.stderr));
    assert!(text(&broken.stderr).contains(&format!("BROKEN at entry {edited}:")), "{}", text(&broken.stderr));
}

#[test]
fn the_client_says_what_to_do_when_no_gateway_answers() {
    let out =
        hurtigspor_as(Some("t"), &["participants", "--server", "http://127.0.0.1:1", "--purpose", "x", "list"], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cargo run -- dev"), "{}", text(&out.stderr));
    let out = hurtigspor(&["participants", "--server", "http://127.0.0.1:1", "list"], "");
    assert!(text(&out.stderr).contains("pass --token or set HURTIGSPOR_TOKEN"), "{}", text(&out.stderr));
}

#[test]
fn dev_seed_creates_participants_and_follows_them_into_every_system() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hurtigspor"))
        .args(["dev", "--listen", "127.0.0.1:0", "--seed", "24", "--data-dir"])
        .arg(dir.path())
        .env("HURTIGSPOR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut seeded, mut addr) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("listening on ") {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.contains("seeded") || line.contains("seeding stopped") {
            seeded = Some(line);
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let seeded = seeded.expect("the seed reports when it is done");
    assert!(seeded.contains("seeded 24 participants"), "{seeded}");

    // Every sixth was taken through hurtigspor, one journey each: work after
    // work training, a wage subsidy, back to the ordinary programme, and
    // still in job matching. The report's dates per participant show them.
    let addr = addr.expect("the gateway prints where it listens");
    let token = dev_token(dir.path(), "admin");
    let report = ["report", "--server", &addr, "--year", "2026", "--purpose", "statistics", "--csv"];
    let listed = hurtigspor_as(Some(&token), &[&report[..], &["--participants"]].concat(), "");
    let figures = hurtigspor_as(Some(&token), &report, "");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(text(&listed.stderr).contains("4 participants in all"), "{}", text(&listed.stderr));
    let rows: Vec<Vec<String>> =
        text(&listed.stdout).lines().map(|l| l.split(',').map(str::to_owned).collect()).collect();
    assert_eq!(rows.len(), 5, "a header and four participants: {rows:?}");
    let column = |name: &str| rows[0].iter().position(|c| c == name).unwrap();
    let with = |name: &str| rows[1..].iter().filter(|r| !r[column(name)].is_empty()).count();
    assert_eq!(with("hurtigspor_start"), 4);
    assert_eq!((with("first_work_training_start"), with("work_full_start")), (1, 1));
    assert_eq!((with("first_wage_subsidy_start"), with("back_to_ordinary")), (1, 1));
    assert_eq!(with("hurtigspor_end"), 2, "work and back to ordinary end it; the other two are still in it");
    let figures = text(&figures.stdout);
    let figures: Vec<&str> = figures.lines().collect();
    assert!(figures[1].starts_with("all,2026,4,24,"), "{figures:?}");
}
