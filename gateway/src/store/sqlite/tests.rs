//! What only the SQLite dialect has to show: its group-commit batches, its
//! migrations and file format, what reaches the file and the WAL, and the
//! audit log's defences inside the file. Everything a dialect must do runs
//! as the conformance suite at the end.

use super::{
    SqliteStore,
    audit_log::{AUDIT_COLUMNS, audit_record, verify_audit_log},
    connection::open_connection,
    migrations::{self, MIGRATIONS},
    writer::{Context, Job, Reply, run_batch},
};
use crate::{
    audit::{AuditEntry, AuditKey, Break, Verifier},
    clock::Clock,
    crypto::Keyring,
    error::Error,
    store::{
        AuditHead, AuditLog, Committed, IdempotencyKey, Inbox, ListQuery, Location, Maintenance, MigrationReport,
        Mutation, NewParticipant, Participants, StoreError, StoreOptions, SyncConfig, codec,
        conformance::{api_entry, keyring, mutation, new_participant, person, synthetic_id, test_key},
        etag_for, resource_name,
    },
};
use chrono::Utc;
use hurtigspor_proto::v1::Participant;
use prost::Message;
use rusqlite::{Connection, params};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};
use tokio::sync::oneshot;

fn open_keyed(path: &Path, keyring: Arc<Keyring>) -> Result<(SqliteStore, MigrationReport), StoreError> {
    let options = StoreOptions { keyring, ..StoreOptions::new(Location::Sqlite(path.to_owned()), test_key()) };
    SqliteStore::open(path, options)
}

fn open(path: &Path) -> Result<(SqliteStore, MigrationReport), StoreError> {
    open_keyed(path, Keyring::process_local())
}

/// What the writer runs a batch with: no targets, the process-local key.
fn context() -> Context {
    Context {
        counters: Arc::default(),
        sync: SyncConfig::default(),
        keyring: Keyring::process_local(),
        audit_key: test_key(),
        clock: Clock::system(),
    }
}

/// Everything a dialect must do, on SQLite.
mod conformance {
    use crate::store::Location;

    /// One empty database in its own directory.
    fn fresh_location() -> (tempfile::TempDir, Location) {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::Sqlite(dir.path().join("conformance.db"));
        (dir, location)
    }

    crate::store_conformance!(fresh_location());
}

fn batch(conn: &mut Connection, jobs: Vec<Box<dyn FnOnce(Reply) -> Job>>) -> Vec<Result<Committed, Error>> {
    let mut receivers = Vec::new();
    let mut batch = Vec::new();
    for make in jobs {
        let (tx, rx) = oneshot::channel();
        batch.push(make(tx));
        receivers.push(rx);
    }
    run_batch(conn, &mut batch, &context());
    receivers.into_iter().map(|mut rx| rx.try_recv().expect("every job is answered")).collect()
}

fn fresh() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_connection(&dir.path().join("t.db"), false).unwrap();
    migrations::migrate(&mut conn, Utc::now()).unwrap();
    (dir, conn)
}

fn stored(conn: &Connection, id: &str) -> (i64, Participant) {
    conn.query_row("SELECT version, record FROM participants WHERE id = ?1", [id], |r| {
        Ok((r.get(0)?, codec::decode(&r.get::<_, Vec<u8>>(1)?).unwrap()))
    })
    .unwrap()
}

#[test]
fn a_refused_or_panicking_write_rolls_back_alone() {
    let (_dir, mut conn) = fresh();
    let answers = batch(
        &mut conn,
        vec![
            Box::new(|r| Job::Create(Box::new(new_participant("a", 1)), r)),
            Box::new(|r| Job::Mutate(Box::new(mutation("a", |_| Err(Error::precondition("NO", "x", "no")))), r)),
            Box::new(|r| Job::Mutate(Box::new(mutation("a", |_| panic!("a rule bug"))), r)),
            Box::new(|r| {
                Job::Mutate(
                    Box::new(mutation("a", |p| {
                        p.given_name = "B".into();
                        Ok(())
                    })),
                    r,
                )
            }),
        ],
    );
    assert!(answers[0].is_ok());
    assert!(matches!(answers[1], Err(Error::FailedPrecondition { .. })));
    assert!(matches!(answers[2], Err(Error::Internal(_))));
    assert_eq!(answers[3].as_ref().unwrap().version, 2);
    let (version, p) = stored(&conn, "a");
    assert_eq!((version, p.given_name.as_str()), (2, "B"));
    let changes: i64 = conn.query_row("SELECT count(*) FROM change_log", [], |r| r.get(0)).unwrap();
    assert_eq!(changes, 2, "one change per acknowledged write");
}

#[test]
fn a_write_failing_half_way_leaves_no_trace() {
    let (_dir, mut conn) = fresh();
    batch(&mut conn, vec![Box::new(|r| Job::Create(Box::new(new_participant("a", 1)), r))]);
    // Occupy version 2 in the change log: the next mutation updates the
    // participant row, then fails on the change-log insert.
    conn.execute(
        "INSERT INTO change_log (participant_id, version, kind, origin, actor, commit_time, snapshot)
         VALUES ('a', 2, 'x', 'x', 'x', 'x', x'')",
        [],
    )
    .unwrap();
    let answers = batch(
        &mut conn,
        vec![
            Box::new(|r| {
                Job::Mutate(
                    Box::new(mutation("a", |p| {
                        p.given_name = "half".into();
                        Ok(())
                    })),
                    r,
                )
            }),
            Box::new(|r| Job::Create(Box::new(new_participant("b", 2)), r)),
        ],
    );
    assert!(answers[0].is_err());
    assert!(answers[1].is_ok(), "the other write of the batch commits");
    let (version, p) = stored(&conn, "a");
    assert_eq!((version, p.given_name.as_str()), (1, "A"), "the half-done update was rolled back");
}

#[test]
fn replays_and_reused_request_ids_inside_one_batch() {
    let (_dir, mut conn) = fresh();
    let key =
        |fp: u8| Some(IdempotencyKey { method: "CreateParticipant", request_id: "r".into(), fingerprint: [fp; 32] });
    let answers = batch(
        &mut conn,
        vec![
            Box::new(move |r| {
                Job::Create(Box::new(NewParticipant { idempotency: key(1), ..new_participant("a", 1) }), r)
            }),
            Box::new(move |r| {
                Job::Create(Box::new(NewParticipant { idempotency: key(1), ..new_participant("b", 1) }), r)
            }),
            Box::new(move |r| {
                Job::Create(Box::new(NewParticipant { idempotency: key(2), ..new_participant("c", 3) }), r)
            }),
        ],
    );
    let first = answers[0].as_ref().unwrap();
    let replay = answers[1].as_ref().unwrap();
    assert!(!first.replayed && replay.replayed);
    assert_eq!(replay.participant.name, first.participant.name);
    assert_eq!(replay.participant.national_id, first.participant.national_id);
    assert!(matches!(answers[2], Err(Error::RequestIdReused)));
}

#[tokio::test]
async fn migrations_are_recorded_and_a_changed_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let (store, report) = open(&path).unwrap();
    assert_eq!(report.applied, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
    store.close().await;
    let (store, report) = open(&path).unwrap();
    assert!(report.applied.is_empty());
    store.close().await;
    let conn = Connection::open(&path).unwrap();
    conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1", []).unwrap();
    drop(conn);
    let err = open(&path).err().unwrap();
    assert!(err.to_string().contains("differs"), "{err}");
    let conn = Connection::open(&path).unwrap();
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 'x', 'x')", []).unwrap();
    conn.execute(
        "UPDATE schema_migrations SET checksum = ?1 WHERE version = 1",
        [crate::store::rules::migration_checksum(MIGRATIONS[0].2)],
    )
    .unwrap();
    drop(conn);
    let err = open(&path).err().unwrap();
    assert!(err.to_string().contains("newer gateway"), "{err}");
}

#[tokio::test]
async fn case_numbers_stored_before_the_inbound_migration_are_found_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let (store, _) = open(&path).unwrap();
    store.create(new_participant("a", 1)).await.unwrap();
    store
        .mutate(mutation("a", |p| {
            p.recognition_cases.push(hurtigspor_proto::v1::RecognitionCase {
                case_number: "2026-000042".into(),
                ..Default::default()
            });
            Ok(())
        }))
        .await
        .unwrap();
    store.close().await;
    // Back to the schema before migration 3.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE inbound_cursor; DROP TABLE inbox; DROP TABLE inbound_applied; DROP TABLE external_refs;
         DROP TABLE arena_measure_instances; DELETE FROM schema_migrations WHERE version = 3;",
    )
    .unwrap();
    drop(conn);
    let (store, report) = open(&path).unwrap();
    assert_eq!(report.applied, vec![3]);
    assert_eq!(store.participant_by_ref("nokut", "2026-000042").await.unwrap().as_deref(), Some("a"));
    store.close().await;
}

fn file_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    bytes.extend(std::fs::read(wal).unwrap_or_default());
    bytes
}

fn holds(bytes: &[u8], text: &str) -> bool {
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

#[tokio::test]
async fn national_ids_never_reach_the_file_or_the_wal_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scan.db");
    let (store, _) = open_keyed(&path, keyring(&[("a", 1)], "a")).unwrap();
    let people: Vec<NewParticipant> = (0..20).map(|n| person(&format!("p{n}"), n)).collect();
    let ids: Vec<(String, String)> = people.iter().map(|p| (p.id.clone(), p.national_id.clone())).collect();
    for p in people {
        store.create(p).await.unwrap();
    }
    store
        .mutate(mutation("p3", |p| {
            p.family_name = "Changed".into();
            Ok(())
        }))
        .await
        .unwrap();
    for (id, national_id) in &ids {
        assert_eq!(&store.get(id).await.unwrap().unwrap().national_id, national_id, "it reads back");
    }
    // While open, the writes are in the WAL; after close, in the file.
    for stage in ["open", "closed"] {
        if stage == "closed" {
            store.close().await;
        }
        let bytes = file_bytes(&path);
        assert!(holds(&bytes, "Filescan0007"), "the scan sees what is stored ({stage})");
        for (id, national_id) in &ids {
            assert!(!holds(&bytes, national_id), "the national id of {id} is in the file in plain text ({stage})");
        }
    }
}

fn database_before_encryption(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)).unwrap();
    conn.execute_batch(
        "CREATE TABLE schema_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_time TEXT NOT NULL)",
    )
    .unwrap();
    for (version, name, sql) in &MIGRATIONS[..3] {
        conn.execute_batch(sql).unwrap();
        let checksum = crate::store::rules::migration_checksum(sql);
        conn.execute("INSERT INTO schema_migrations VALUES (?1, ?2, ?3, 'then')", params![version, name, checksum])
            .unwrap();
    }
    conn
}

fn insert_plaintext(conn: &Connection, id: &str, n: u32) {
    let record = Participant {
        name: resource_name(id),
        given_name: format!("Filescan{n:04}"),
        kommunenummer: "0301".into(),
        etag: etag_for(1),
        ..Default::default()
    }
    .encode_to_vec();
    conn.execute(
        "INSERT INTO participants (id, national_id_hash, national_id, kommunenummer, hurtigspor_status, version, record, create_time, update_time)
         VALUES (?1, ?2, ?3, '0301', 0, 1, ?4, 'then', 'then')",
        params![id, vec![n as u8; 32], synthetic_id(n), record],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO change_log (participant_id, version, kind, origin, actor, commit_time, snapshot)
         VALUES (?1, 1, 'participant.created', 'api', 'test', 'then', ?2)",
        params![id, record],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO idempotency (method, request_id, fingerprint, participant_id, version, create_time)
         VALUES ('CreateParticipant', ?1, ?2, ?1, 1, 'then')",
        params![id, vec![n as u8; 32]],
    )
    .unwrap();
}

#[tokio::test]
async fn plain_text_national_ids_are_encrypted_at_open_and_leave_no_trace_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let old = database_before_encryption(&path);
    insert_plaintext(&old, "a", 1);
    old.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)).unwrap();
    // The second stays in the WAL, as after a crash: the old connection
    // stays open so that closing it does not fold the WAL in.
    insert_plaintext(&old, "b", 2);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    assert!(holds(&std::fs::read(&path).unwrap(), &synthetic_id(1)), "the scan finds plaintext in the file");
    assert!(holds(&std::fs::read(&wal).unwrap(), &synthetic_id(2)), "the scan finds plaintext in the WAL");

    let (store, report) = open(&path).unwrap();
    assert_eq!(report.applied, vec![4, 5]);
    drop(old);
    for (id, n) in [("a", 1), ("b", 2)] {
        let p = store.get(id).await.unwrap().unwrap();
        assert_eq!(p.national_id, synthetic_id(n), "participants/{id} reads back");
        assert_eq!(p.given_name, format!("Filescan{n:04}"));
        let found = store.get_by_national_id_hash(&[n as u8; 32]).await.unwrap().unwrap();
        assert_eq!(found.national_id, synthetic_id(n));
    }
    // A retried request is answered from the change log, national id included.
    let key = IdempotencyKey { method: "CreateParticipant", request_id: "a".into(), fingerprint: [1; 32] };
    let replayed = store.create(NewParticipant { idempotency: Some(key), ..person("x", 9) }).await.unwrap();
    assert!(replayed.replayed);
    assert_eq!(replayed.participant.national_id, synthetic_id(1));
    let (columns, leftover): (String, i64) = store
        .read(|c| {
            Ok((
                c.query_row("SELECT group_concat(name) FROM pragma_table_info('participants')", [], |r| r.get(0))?,
                c.query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'national_id_plaintext'", [], |r| {
                    r.get(0)
                })?,
            ))
        })
        .await
        .unwrap();
    assert!(!columns.split(',').any(|c| c == "national_id"), "{columns}");
    assert_eq!(leftover, 0, "the set-aside plaintext is gone");
    // Before the store writes anything else: the file and the WAL.
    let bytes = file_bytes(&path);
    assert!(holds(&bytes, "Filescan0002"), "the scan sees what is stored");
    for n in [1, 2] {
        assert!(!holds(&bytes, &synthetic_id(n)), "national id {n} is left in plain text");
    }
    store.close().await;
    let bytes = file_bytes(&path);
    assert!(holds(&bytes, "Filescan0001"));
    for n in [1, 2] {
        assert!(!holds(&bytes, &synthetic_id(n)), "national id {n} is left in plain text after close");
    }
    // Opening again finds nothing more to do.
    let (store, report) = open(&path).unwrap();
    assert!(report.applied.is_empty());
    assert_eq!(store.get("b").await.unwrap().unwrap().national_id, synthetic_id(2));
    store.close().await;
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_does_not_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moved.db");
    let (store, _) = open(&path).unwrap();
    store.create(person("a", 1)).await.unwrap();
    store.create(person("b", 2)).await.unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE participants SET national_id_sealed = (SELECT national_id_sealed FROM participants WHERE id = 'a')
         WHERE id = 'b'",
        [],
    )
    .unwrap();
    drop(conn);
    assert_eq!(store.get("a").await.unwrap().unwrap().national_id, synthetic_id(1));
    for result in [
        store.get("b").await.map(|_| ()),
        store.get_by_national_id_hash(&[2; 32]).await.map(|_| ()),
        store.list(ListQuery { limit: 10, ..Default::default() }).await.map(|_| ()),
        store.mutate(mutation("b", |_| Ok(()))).await.map(|_| ()),
    ] {
        let Err(Error::Internal(message)) = result else { panic!("a moved ciphertext must not decrypt: {result:?}") };
        assert!(message.contains("participants/b") && message.contains("`process-local`"), "{message}");
        assert!(!message.contains(&synthetic_id(1)) && !message.contains(&synthetic_id(2)), "{message}");
    }
    store.close().await;
}

#[tokio::test]
async fn the_database_is_in_wal_mode_with_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir.path().join("w.db")).unwrap();
    let (mode, sync): (String, i64) = store
        .read(|c| {
            Ok((
                c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                c.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "FULL");
    let secure_delete: i64 = store.read(|c| Ok(c.query_row("PRAGMA secure_delete", [], |r| r.get(0))?)).await.unwrap();
    assert_eq!(secure_delete, 1, "deleted content is overwritten");
    store.close().await;
}

fn audit_rows(conn: &Connection) -> Vec<(Option<String>, String, Option<String>)> {
    conn.prepare("SELECT participant_id, outcome, detail FROM audit_log ORDER BY sequence")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_write_is_audited_with_it_and_a_refused_write_alone() {
    let (_dir, mut conn) = fresh();
    let answers = batch(
        &mut conn,
        vec![
            Box::new(|r| {
                Job::Create(Box::new(NewParticipant { audit: Some(api_entry()), ..new_participant("a", 1) }), r)
            }),
            // The same person again.
            Box::new(|r| {
                Job::Create(Box::new(NewParticipant { audit: Some(api_entry()), ..new_participant("b", 1) }), r)
            }),
            Box::new(|r| {
                let m = mutation("a", |_| Err(Error::precondition("ILLEGAL_TRANSITION", "x", "no")));
                Job::Mutate(Box::new(Mutation { audit: Some(api_entry()), ..m }), r)
            }),
            Box::new(|r| Job::Mutate(Box::new(Mutation { audit: Some(api_entry()), ..mutation("zz", |_| Ok(())) }), r)),
            Box::new(|r| {
                let m = mutation("a", |p| {
                    p.given_name = "B".into();
                    Ok(())
                });
                Job::Mutate(Box::new(Mutation { audit: Some(api_entry()), ..m }), r)
            }),
            // Not audited by the store: inbound changes are audited where they settle.
            Box::new(|r| Job::Mutate(Box::new(mutation("a", |_| Ok(()))), r)),
        ],
    );
    assert!(answers[0].is_ok() && answers[4].is_ok());
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        audit_rows(&conn),
        [
            (some("a"), "OK".to_owned(), some("version 1")),
            (some("a"), "ALREADY_EXISTS".to_owned(), some("PARTICIPANT_ALREADY_EXISTS")),
            (some("a"), "FAILED_PRECONDITION".to_owned(), some("ILLEGAL_TRANSITION")),
            (some("zz"), "NOT_FOUND".to_owned(), some("NOT_FOUND")),
            (some("a"), "OK".to_owned(), some("version 2")),
        ]
    );
    let mut v = Verifier::new(test_key());
    let mut stmt = conn.prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY sequence")).unwrap();
    for r in stmt.query_map([], audit_record).unwrap() {
        v.check(&r.unwrap()).unwrap();
    }
}

#[test]
fn a_batch_that_does_not_commit_leaves_no_audit_entry_of_its_writes() {
    let (_dir, mut conn) = fresh();
    // A trigger that fails the write's transaction from inside, as a
    // full disk would.
    conn.execute_batch(
        "CREATE TRIGGER boom AFTER INSERT ON change_log WHEN NEW.participant_id = 'b'
         BEGIN SELECT RAISE(ROLLBACK, 'disk full'); END;",
    )
    .unwrap();
    let answers = batch(
        &mut conn,
        vec![
            Box::new(|r| {
                Job::Create(Box::new(NewParticipant { audit: Some(api_entry()), ..new_participant("a", 1) }), r)
            }),
            Box::new(|r| {
                Job::Create(Box::new(NewParticipant { audit: Some(api_entry()), ..new_participant("b", 2) }), r)
            }),
        ],
    );
    assert!(answers.iter().all(Result::is_err), "{answers:?}");
    assert!(audit_rows(&conn).is_empty());
}

async fn audited_store(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("audit.db");
    let (store, _) = open(&path).unwrap();
    for i in 0..n {
        let entry = AuditEntry { participant_id: Some(format!("p{i}")), outcome: "OK".into(), ..api_entry() };
        store.audit(vec![entry]).await.unwrap();
    }
    store.close().await;
    path
}

fn tampered(path: &Path, sql: &str) -> Result<AuditHead, Break> {
    let copy = path.with_extension(format!("t{}", rand::random::<u32>()));
    std::fs::copy(path, &copy).unwrap();
    let conn = Connection::open(&copy).unwrap();
    conn.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;").unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    verify_audit_log(&copy, &test_key(), None, 0, |_, _| {}).unwrap()
}

#[tokio::test]
async fn verify_names_the_first_entry_edited_deleted_or_moved_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = audited_store(dir.path(), 6).await;
    let head = verify_audit_log(&path, &test_key(), None, 0, |_, _| {}).unwrap().unwrap();
    assert_eq!((head.entries, head.sequence), (6, 6));

    let edited = tampered(&path, "UPDATE audit_log SET purpose = 'reporting' WHERE sequence = 3");
    assert_eq!(edited, Err(Break::Altered { sequence: 3 }));
    let rehashed = tampered(&path, "UPDATE audit_log SET hash = zeroblob(32) WHERE sequence = 5");
    assert_eq!(rehashed, Err(Break::Altered { sequence: 5 }));
    let deleted = tampered(&path, "DELETE FROM audit_log WHERE sequence = 4");
    assert_eq!(deleted, Err(Break::Missing { sequence: 4, found: 5 }));
    // Two entries swap places (their sequence numbers are swapped).
    let reordered = tampered(
        &path,
        "UPDATE audit_log SET sequence = -2 WHERE sequence = 2;
         UPDATE audit_log SET sequence = 2 WHERE sequence = 3;
         UPDATE audit_log SET sequence = 3 WHERE sequence = -2;",
    );
    assert_eq!(reordered, Err(Break::Altered { sequence: 2 }));
    // Deleting one and renumbering the rest to close the gap.
    let closed = tampered(
        &path,
        "DELETE FROM audit_log WHERE sequence = 2; UPDATE audit_log SET sequence = sequence - 1 WHERE sequence > 2;",
    );
    assert_eq!(closed, Err(Break::Altered { sequence: 2 }));
    // A value of another type (bytes that are not text) is an altered
    // entry too, not a log that cannot be read.
    let retyped = tampered(&path, "UPDATE audit_log SET detail = X'FF00' WHERE sequence = 4");
    assert_eq!(retyped, Err(Break::Altered { sequence: 4 }));
    // Entries removed from the end leave a chain that verifies; the
    // head recorded earlier finds them.
    let copy = path.with_extension("cut");
    std::fs::copy(&path, &copy).unwrap();
    let conn = Connection::open(&copy).unwrap();
    conn.execute_batch("DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE sequence >= 5;").unwrap();
    drop(conn);
    let cut = verify_audit_log(&copy, &test_key(), None, 0, |_, _| {}).unwrap().expect("a shorter chain verifies");
    assert_eq!(cut.sequence, 4);
    let expected = Some((head.sequence, head.hash.clone()));
    assert_eq!(
        verify_audit_log(&copy, &test_key(), expected.clone(), 0, |_, _| {}).unwrap(),
        Err(Break::Truncated { sequence: 6, last: 4 })
    );
    verify_audit_log(&path, &test_key(), expected, 0, |_, _| {}).unwrap().expect("the full log has its head");
    let wrong_head = Some((3, vec![0; 32]));
    assert_eq!(
        verify_audit_log(&path, &test_key(), wrong_head, 0, |_, _| {}).unwrap(),
        Err(Break::Altered { sequence: 3 })
    );
    // With another key, nothing verifies.
    assert_eq!(
        verify_audit_log(&path, &AuditKey::new([6; 32]), None, 0, |_, _| {}).unwrap(),
        Err(Break::Altered { sequence: 1 })
    );
}

#[tokio::test]
async fn the_log_refuses_updates_and_deletes_and_verify_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = audited_store(dir.path(), 5).await;
    let conn = Connection::open(&path).unwrap();
    for sql in ["UPDATE audit_log SET outcome = 'OK'", "DELETE FROM audit_log"] {
        let err = conn.execute(sql, []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    let mut seen = Vec::new();
    verify_audit_log(&path, &test_key(), None, 2, |checked, total| seen.push((checked, total))).unwrap().unwrap();
    assert_eq!(seen, [(2, 5), (4, 5)]);
}

#[tokio::test]
async fn migrating_alone_seals_what_it_set_aside_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let old = database_before_encryption(&path);
    insert_plaintext(&old, "a", 1);
    drop(old);
    let report = crate::store::migrate(&Location::Sqlite(path.clone()), Some(Keyring::process_local())).await.unwrap();
    assert_eq!(report.applied, vec![4, 5]);
    let conn = Connection::open(&path).unwrap();
    let leftover: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'national_id_plaintext'", [], |r| r.get(0))
        .unwrap();
    let audited: i64 = conn.query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0)).unwrap();
    drop(conn);
    assert_eq!((leftover, audited), (0, 0), "sealed, and nothing written to the audit log");
    assert!(!holds(&file_bytes(&path), &synthetic_id(1)), "no plain text is left in the file");
    let (store, report) = open(&path).unwrap();
    assert!(report.applied.is_empty());
    assert_eq!(store.get("a").await.unwrap().unwrap().national_id, synthetic_id(1));
    store.close().await;
}
