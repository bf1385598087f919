//! The PostgreSQL schema and its migrations, against a real server (see
//! `testing`): skipped where none is configured.

use super::{
    migrate,
    migrations::MIGRATIONS,
    testing::{TestDatabase, with_database},
};

/// A fresh database, or `return` from the test when there is no server.
macro_rules! database {
    () => {
        match TestDatabase::create().await {
            Some(db) => db,
            None => return,
        }
    };
}

#[test]
fn a_test_database_url_keeps_the_server_and_its_options() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(with_database("postgres://u:p@db:5432", "t2"), "postgres://u:p@db:5432/t2");
    assert_eq!(with_database("postgresql://u@h/db?sslmode=disable", "t3"), "postgresql://u@h/t3?sslmode=disable");
}

#[tokio::test]
async fn migrations_are_recorded_once_and_a_changed_or_newer_schema_is_refused() {
    let db = database!();
    let first = migrate(&db.url).await.unwrap();
    assert_eq!(first.applied, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
    assert!(migrate(&db.url).await.unwrap().applied.is_empty(), "nothing left to do");
    let client = super::connection::connect(&db.url).await.unwrap();
    client.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1", &[]).await.unwrap();
    let err = migrate(&db.url).await.unwrap_err();
    assert!(err.to_string().contains("differs"), "{err}");
    client.execute("DELETE FROM schema_migrations WHERE version = 1", &[]).await.unwrap();
    client.execute("INSERT INTO schema_migrations VALUES (99, 'future', 'x', 'x')", &[]).await.unwrap();
    let err = migrate(&db.url).await.unwrap_err();
    assert!(err.to_string().contains("newer gateway"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_migrate_exactly_once() {
    let db = database!();
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = db.url.clone();
        runs.spawn(async move { migrate(&url).await });
    }
    let applied: Vec<Vec<i64>> =
        runs.join_all().await.into_iter().map(|r| r.expect("every instance starts").applied).collect();
    let all: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
    assert_eq!(applied.iter().filter(|a| **a == all).count(), 1, "one applies them: {applied:?}");
    assert_eq!(applied.iter().filter(|a| a.is_empty()).count(), 7, "the others find nothing to do: {applied:?}");
}

#[tokio::test]
async fn an_audit_entry_is_chained_once_and_never_edited_or_deleted() {
    let db = database!();
    migrate(&db.url).await.unwrap();
    let client = super::connection::connect(&db.url).await.unwrap();
    let id: i64 = client
        .query_one(
            "INSERT INTO audit_log (time, organisation, method, outcome) VALUES ('t', 'gateway', 'm', 'OK') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let refused = |sql: &'static str| {
        let client = &client;
        async move {
            let err = client.execute(sql, &[&id]).await.expect_err(sql);
            assert!(err.as_db_error().unwrap().message().contains("append-only"), "{sql}: {err}");
        }
    };
    refused("UPDATE audit_log SET outcome = 'DENIED' WHERE id = $1").await;
    client
        .execute("UPDATE audit_log SET sequence = 1, previous_hash = '\\x00', hash = '\\x01' WHERE id = $1", &[&id])
        .await
        .expect("an entry is chained once");
    refused("UPDATE audit_log SET hash = '\\x02' WHERE id = $1").await;
    refused("DELETE FROM audit_log WHERE id = $1").await;
    let err = client.batch_execute("TRUNCATE audit_log").await.expect_err("the log cannot be emptied");
    assert!(err.as_db_error().unwrap().message().contains("append-only"), "{err}");
    let half = client
        .execute(
            "INSERT INTO audit_log (time, organisation, method, outcome, sequence) VALUES ('t', 'g', 'm', 'OK', 2)",
            &[],
        )
        .await;
    assert!(half.is_err(), "a sequence without its hashes is refused");
}

#[test]
fn a_database_is_named_without_the_password() {
    assert_eq!(super::describe("postgres://u:secret@db:5432/h?sslmode=require"), "db:5432/h");
    assert_eq!(super::describe("postgres://db/h"), "db/h");
    assert_eq!(super::describe("postgres://u:p@ss@db:5432/h"), "db:5432/h", "a password may hold an @");
    assert_eq!(super::describe("postgres://u:p@ss@db"), "db");
}

/// Everything a dialect must do, on PostgreSQL: each test in a database
/// of its own.
mod conformance {
    use super::TestDatabase;
    use crate::store::Location;

    crate::store_conformance!(match TestDatabase::create().await {
        Some(db) => {
            let location = Location::Postgres(db.url.clone());
            (db, location)
        }
        None => return,
    });
}

/// Two instances of the gateway on one database: two stores, each with its
/// own pool, wake-ups and instance id.
mod instances {
    use super::{super::connection::connect, TestDatabase};
    use crate::{
        audit::{AuditEntry, AuditQuery, Break},
        crypto::Keyring,
        error::Error,
        store::{
            ChangeCursor, IdempotencyKey, InboxEntry, Location, NewParticipant, Settle, Settled, Store, StoreOptions,
            SyncConfig, SyncOutcome, codec,
            conformance::{
                api_entry, keyring as conformance_keyring, mutation, new_participant, settled_changes, test_key,
            },
            etag_for,
        },
    };
    use std::{sync::Arc, time::Duration};
    use tokio_postgres::types::ToSql;

    /// A fresh database, or `return` from the test when there is no server.
    macro_rules! database {
        () => {
            match TestDatabase::create().await {
                Some(db) => db,
                None => return,
            }
        };
    }

    /// One instance: its own store on the shared database.
    async fn instance(db: &TestDatabase, keyring: &Arc<Keyring>, sync: SyncConfig) -> Arc<dyn Store> {
        let options = StoreOptions {
            sync,
            keyring: Arc::clone(keyring),
            ..StoreOptions::new(Location::Postgres(db.url.clone()), test_key())
        };
        crate::store::open(options).await.unwrap().0
    }

    async fn two(db: &TestDatabase) -> (Arc<dyn Store>, Arc<dyn Store>) {
        let keyring = Keyring::process_local();
        (instance(db, &keyring, SyncConfig::default()).await, instance(db, &keyring, SyncConfig::default()).await)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn changes_of_one_person_from_two_instances_are_all_kept_or_refused_never_overwritten() {
        let db = database!();
        let (a, b) = two(&db).await;
        a.create(new_participant("p", 1)).await.unwrap();
        // Without an etag every change lands, each on the one before.
        let mut writes = tokio::task::JoinSet::new();
        for n in 0..20 {
            let store = Arc::clone(if n % 2 == 0 { &a } else { &b });
            writes.spawn(async move {
                store
                    .mutate(mutation("p", move |p| {
                        p.family_name.push_str(&format!("<{n}>"));
                        Ok(())
                    }))
                    .await
            });
        }
        for done in writes.join_all().await {
            done.expect("every change is stored");
        }
        let stored = b.get("p").await.unwrap().unwrap();
        assert_eq!(stored.etag, etag_for(21));
        for n in 0..20 {
            assert!(
                stored.family_name.contains(&format!("<{n}>")),
                "change {n} was overwritten: {}",
                stored.family_name
            );
        }
        // With the same etag, one wins and the other is told its view is stale.
        let guarded = |store: &Arc<dyn Store>, name: &'static str| {
            let store = Arc::clone(store);
            async move {
                let mut m = mutation("p", move |p| {
                    p.given_name = name.into();
                    Ok(())
                });
                m.expected_etag = Some(etag_for(21));
                store.mutate(m).await
            }
        };
        let (left, right) = tokio::join!(guarded(&a, "Left"), guarded(&b, "Right"));
        let outcomes = [left, right];
        assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "{outcomes:?}");
        assert_eq!(outcomes.iter().filter(|r| matches!(r, Err(Error::StaleEtag { .. }))).count(), 1, "{outcomes:?}");
        assert_eq!(settled_changes(&*a, ChangeCursor::default(), 22).await.len(), 22, "one change per stored version");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_registrations_replay_or_answer_already_exists_never_internal() {
        let db = database!();
        let (a, b) = two(&db).await;
        let key = |id: &str, body: u8| IdempotencyKey {
            method: "CreateParticipant",
            request_id: id.into(),
            fingerprint: [body; 32],
        };
        for round in 0..10u8 {
            // The same request sent to both instances: one registration,
            // the other answer its replay.
            let same = |store: &Arc<dyn Store>, id: &str| {
                let store = Arc::clone(store);
                let new = NewParticipant {
                    idempotency: Some(key(&format!("same-{round}"), 1)),
                    ..new_participant(id, 100 + round)
                };
                async move { store.create(new).await }
            };
            let (x, y) = tokio::join!(same(&a, &format!("s{round}a")), same(&b, &format!("s{round}b")));
            let (x, y) = (x.unwrap(), y.unwrap());
            assert_eq!(x.participant.name, y.participant.name, "one participant");
            assert_eq!([x.replayed, y.replayed].iter().filter(|r| **r).count(), 1);
            // One person registered twice under different request ids.
            let twice = |store: &Arc<dyn Store>, id: String, request: String| {
                let store = Arc::clone(store);
                let new = NewParticipant { idempotency: Some(key(&request, 2)), ..new_participant(&id, 50 + round) };
                async move { store.create(new).await }
            };
            let (x, y) = tokio::join!(
                twice(&a, format!("t{round}a"), format!("ta-{round}")),
                twice(&b, format!("t{round}b"), format!("tb-{round}"))
            );
            let outcomes = [x, y];
            assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "{outcomes:?}");
            assert!(outcomes.iter().any(|r| matches!(r, Err(Error::AlreadyExists { .. }))), "{outcomes:?}");
            // One request id with two bodies (two people): one is refused.
            let reused = |store: &Arc<dyn Store>, id: String, body: u8, hash: u8| {
                let store = Arc::clone(store);
                let new = NewParticipant {
                    idempotency: Some(key(&format!("r-{round}"), body)),
                    ..new_participant(&id, hash)
                };
                async move { store.create(new).await }
            };
            let (x, y) = tokio::join!(
                reused(&a, format!("r{round}a"), 3, 150 + round),
                reused(&b, format!("r{round}b"), 4, 200 + round)
            );
            let outcomes = [x, y];
            assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "{outcomes:?}");
            assert!(outcomes.iter().any(|r| matches!(r, Err(Error::RequestIdReused))), "{outcomes:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_request_id_raced_for_two_people_is_refused_once_never_internal() {
        let db = database!();
        let (a, b) = two(&db).await;
        a.create(new_participant("p", 1)).await.unwrap();
        a.create(new_participant("q", 2)).await.unwrap();
        for round in 0..10u8 {
            let change = |store: &Arc<dyn Store>, id: &'static str, body: u8| {
                let store = Arc::clone(store);
                let mut m = mutation(id, move |p| {
                    p.family_name.push('x');
                    Ok(())
                });
                m.idempotency = Some(IdempotencyKey {
                    method: "UpdateParticipant",
                    request_id: format!("same-{round}"),
                    fingerprint: [body; 32],
                });
                async move { store.mutate(m).await }
            };
            let (x, y) = tokio::join!(change(&a, "p", 1), change(&b, "q", 2));
            let outcomes = [x, y];
            assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "{outcomes:?}");
            assert!(outcomes.iter().any(|r| matches!(r, Err(Error::RequestIdReused))), "{outcomes:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_inbound_change_racing_an_api_change_of_one_person_is_read_in_version_order() {
        let db = database!();
        let (a, b) = two(&db).await;
        a.create(new_participant("p", 1)).await.unwrap();
        const ROUNDS: i64 = 15;
        for round in 0..ROUNDS {
            let position = format!("{round:020}");
            let entry = InboxEntry { position: position.clone(), kind: "case.updated".into(), body: "{}".into() };
            a.receive_inbound("nokut", vec![entry], None).await.unwrap();
            let inbound = Settle::Apply {
                entity: format!("case-{round}"),
                mutation: Box::new(mutation("p", move |p| {
                    p.family_name.push('i');
                    Ok(())
                })),
                refs: Vec::new(),
            };
            let (settled, changed) = tokio::join!(
                a.settle_inbound("nokut", &position, inbound),
                b.mutate(mutation("p", |p| {
                    p.given_name.push('a');
                    Ok(())
                }))
            );
            assert!(matches!(settled.unwrap(), Settled::Handled(Some(_))));
            changed.unwrap();
        }
        let versions: Vec<i64> = settled_changes(&*b, ChangeCursor::default(), 1 + 2 * ROUNDS as usize)
            .await
            .iter()
            .map(|c| c.version)
            .collect();
        assert_eq!(versions, (1..=1 + 2 * ROUNDS).collect::<Vec<_>>(), "a reader sees one person's versions in order");
    }

    /// Writes a change of a new participant `id` in a transaction the test
    /// holds open, as a slow instance would: it takes its sequence now and
    /// commits when the test says.
    async fn late_change(url: &str, id: &str) -> tokio_postgres::Client {
        let client = connect(url).await.unwrap();
        let record = codec::encode_record(&hurtigspor_proto::v1::Participant {
            name: crate::store::resource_name(id),
            kommunenummer: "0301".into(),
            ..Default::default()
        });
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute(
                "INSERT INTO participants (id, national_id_hash, kommunenummer, hurtigspor_status, version, record,
                     create_time, update_time) VALUES ($1, $2, '0301', 0, 1, $3, 't', 't')",
                &[&id as &(dyn ToSql + Sync), &id.as_bytes(), &record],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO change_log (participant_id, version, kind, origin, actor, commit_time, snapshot)
                 VALUES ($1, 1, 'participant.created', 'api', 'slow', 't', $2)",
                &[&id as &(dyn ToSql + Sync), &record],
            )
            .await
            .unwrap();
        client
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_that_commits_late_is_read_once_and_never_skipped() {
        let db = database!();
        let (a, reader) = two(&db).await;
        a.create(new_participant("first", 1)).await.unwrap();
        let seen = settled_changes(&*reader, ChangeCursor::default(), 1).await;
        assert_eq!(seen.iter().map(|c| c.participant_id.as_str()).collect::<Vec<_>>(), ["first"]);
        let mut cursor = seen[0].cursor;
        // A takes its sequence, then B commits after it.
        let slow = late_change(&db.url, "late").await;
        a.create(new_participant("after", 2)).await.unwrap();
        // A reader may not pass B while A could still commit before it.
        let during = reader.changes(cursor, 100).await.unwrap();
        assert!(during.is_empty(), "nothing is handed out past an open transaction: {during:?}");
        slow.batch_execute("COMMIT").await.unwrap();
        let after = settled_changes(&*reader, cursor, 2).await;
        assert_eq!(
            after.iter().map(|c| c.participant_id.as_str()).collect::<Vec<_>>(),
            ["late", "after"],
            "the late change arrives, in commit-safe order"
        );
        cursor = after.last().unwrap().cursor;
        assert!(reader.changes(cursor, 100).await.unwrap().is_empty(), "and nothing arrives twice");
        // One that rolls back leaves no gap to wait on.
        let aborted = late_change(&db.url, "aborted").await;
        a.create(new_participant("last", 3)).await.unwrap();
        aborted.batch_execute("ROLLBACK").await.unwrap();
        let last = settled_changes(&*reader, cursor, 1).await;
        assert_eq!(last.iter().map(|c| c.participant_id.as_str()).collect::<Vec<_>>(), ["last"]);
        // Cursors read back as they were written.
        assert_eq!(last[0].cursor.to_string().parse::<ChangeCursor>().unwrap(), last[0].cursor);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn audit_entries_from_two_instances_form_one_chain_that_catches_tampering() {
        let db = database!();
        let (a, b) = two(&db).await;
        a.create(NewParticipant { audit: Some(api_entry()), ..new_participant("p", 1) }).await.unwrap();
        let mut appends = tokio::task::JoinSet::new();
        for n in 0..40 {
            let store = Arc::clone(if n % 2 == 0 { &a } else { &b });
            appends.spawn(async move {
                let entry =
                    AuditEntry { participant_id: Some("p".into()), detail: Some(format!("read {n}")), ..api_entry() };
                store.audit(vec![entry.clone(), entry]).await
            });
        }
        for done in appends.join_all().await {
            done.unwrap();
        }
        let listed = b.audit_log(AuditQuery { limit: 1000, ..Default::default() }).await.unwrap();
        assert_eq!(listed.len(), 81, "every entry of both instances is chained and listed");
        assert_eq!(listed.iter().map(|r| r.sequence).collect::<Vec<_>>(), (1..=81).collect::<Vec<_>>());
        a.close().await;
        b.close().await;
        let location = Location::Postgres(db.url.clone());
        let head = crate::store::verify_audit_log(&location, &test_key(), None, 0, |_, _| {}).await.unwrap().unwrap();
        assert_eq!((head.entries, head.sequence), (81, 81));
        // What only someone past the gateway (the table's owner) can do is
        // still found: each change is made, checked, and undone.
        let admin = connect(&db.url).await.unwrap();
        admin.batch_execute("CREATE TABLE audit_kept AS SELECT * FROM audit_log").await.unwrap();
        let kept = head.hash.clone();
        let tampered = |sql: &'static str| {
            let (admin, location, kept) = (&admin, &location, &kept);
            async move {
                admin
                    .batch_execute(&format!("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only; {sql}"))
                    .await
                    .unwrap();
                let found =
                    crate::store::verify_audit_log(location, &test_key(), Some((81, kept.clone())), 0, |_, _| {})
                        .await
                        .unwrap();
                admin
                    .batch_execute(
                        "DELETE FROM audit_log; INSERT INTO audit_log SELECT * FROM audit_kept;
                         ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only",
                    )
                    .await
                    .unwrap();
                found
            }
        };
        assert_eq!(
            tampered("UPDATE audit_log SET purpose = 'other' WHERE sequence = 7").await,
            Err(Break::Altered { sequence: 7 })
        );
        assert_eq!(
            tampered("DELETE FROM audit_log WHERE sequence = 9").await,
            Err(Break::Missing { sequence: 9, found: 10 })
        );
        assert!(
            tampered(
                "UPDATE audit_log SET sequence = -4 WHERE sequence = 4;
                 UPDATE audit_log SET sequence = 4 WHERE sequence = 5;
                 UPDATE audit_log SET sequence = 5 WHERE sequence = -4"
            )
            .await
            .is_err(),
            "two entries swapped are found"
        );
        assert_eq!(
            tampered("DELETE FROM audit_log WHERE sequence > 79").await,
            Err(Break::Truncated { sequence: 81, last: 79 })
        );
        // Untouched, it still verifies.
        crate::store::verify_audit_log(&location, &test_key(), Some((81, head.hash.clone())), 0, |_, _| {})
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_is_renewed_by_its_owner_and_a_taken_over_row_is_not_overwritten() {
        let db = database!();
        let keyring = Keyring::process_local();
        let targets = SyncConfig { targets: vec!["nir".into()], ..Default::default() };
        let a = instance(&db, &keyring, targets.clone()).await;
        let b = instance(&db, &keyring, targets).await;
        a.create(new_participant("p", 1)).await.unwrap();
        let short = Duration::from_millis(300);
        let claimed = a.claim_sync(10, short).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(b.claim_sync(10, short).await.unwrap().is_empty(), "a leased row is skipped");
        // A slow delivery keeps its row by renewing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(a.renew_sync(&claimed[0], short).await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(b.claim_sync(10, short).await.unwrap().is_empty(), "a renewed lease is still held");
        // A dead (silent) owner's row is taken over once its lease ran out.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let taken = b.claim_sync(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(taken.len(), 1, "taken over within the lease time");
        assert!(!a.renew_sync(&claimed[0], short).await.unwrap(), "the old owner learns it lost the row");
        // The old owner's late outcome is audited, and changes nothing.
        let late = SyncOutcome::Failed { error: "old owner gave up".into() };
        a.finish_sync(claimed[0].clone(), late).await.unwrap();
        let status = b.sync_status("p").await.unwrap();
        assert_eq!((status[0].state.as_str(), status[0].last_error.as_deref()), ("pending", None));
        b.finish_sync(taken[0].clone(), SyncOutcome::Delivered { version: 1 }).await.unwrap();
        let status = a.sync_status("p").await.unwrap();
        assert_eq!((status[0].state.as_str(), status[0].delivered_version), ("delivered", 1));
        let attempts = a
            .audit_log(AuditQuery { method: Some("deliver/nir".into()), limit: 10, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(attempts.len(), 2, "both attempts are audited: {attempts:?}");
        // An instance that claims its own row again, after that lease ran
        // out, holds a new claim: the earlier attempt settles nothing either.
        a.create(new_participant("q", 2)).await.unwrap();
        let first = a.claim_sync(10, short).await.unwrap();
        assert_eq!(first.len(), 1);
        tokio::time::sleep(Duration::from_millis(350)).await;
        let second = a.claim_sync(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(second.len(), 1, "the expired row is claimed again");
        assert_ne!(first[0].lease, second[0].lease);
        assert!(!a.renew_sync(&first[0], short).await.unwrap());
        a.finish_sync(first[0].clone(), SyncOutcome::Failed { error: "stale".into() }).await.unwrap();
        assert_eq!(a.sync_status("q").await.unwrap()[0].state, "pending", "the stale attempt changed nothing");
        a.finish_sync(second[0].clone(), SyncOutcome::Delivered { version: 1 }).await.unwrap();
        assert_eq!(a.sync_status("q").await.unwrap()[0].state, "delivered");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_on_one_instance_wakes_the_other_at_once() {
        let db = database!();
        let keyring = Keyring::process_local();
        let a = instance(&db, &keyring, SyncConfig { targets: vec!["nir".into()], ..Default::default() }).await;
        let b_sync = SyncConfig { targets: vec!["nir".into()], ..Default::default() };
        let (b_wake, mut b_changes) = (Arc::clone(&b_sync.wake), b_sync.changes.subscribe());
        let mut b_inbox = b_sync.inbox.subscribe();
        let _b = instance(&db, &keyring, b_sync).await;
        // The listener connects in the background; give it a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        b_changes.mark_unchanged();
        let woken = b_wake.notified();
        a.create(new_participant("p", 1)).await.unwrap();
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), b_changes.changed())
            .await
            .expect("the other instance's change readers are woken")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), woken).await.expect("and its dispatcher");
        // Nothing on B polls: only the notification can have woken it.
        println!("woken after {:?}", started.elapsed());
        // A change kept in the inbox by A (a webhook that landed there)
        // wakes B's feeds, in case B reads them.
        b_inbox.mark_unchanged();
        let entry = InboxEntry { position: format!("{:020}", 1), kind: "case.updated".into(), body: "{}".into() };
        a.receive_inbound("nokut", vec![entry], None).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), b_inbox.changed())
            .await
            .expect("the other instance's feeds are woken")
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_instance_reads_a_feed_until_its_lease_runs_out_and_a_webhook_is_kept_once() {
        let db = database!();
        let (a, b) = two(&db).await;
        let lease = Duration::from_millis(300);
        assert!(a.claim_feed("arena", lease).await.unwrap());
        assert!(!b.claim_feed("arena", lease).await.unwrap(), "one reader per feed");
        assert!(b.claim_feed("nokut", lease).await.unwrap(), "feeds are claimed one by one");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(a.claim_feed("arena", lease).await.unwrap(), "the reader renews");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!b.claim_feed("arena", lease).await.unwrap(), "a renewed claim holds");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(b.claim_feed("arena", lease).await.unwrap(), "a silent reader's feed is taken over");
        assert!(!a.claim_feed("arena", lease).await.unwrap());
        assert_eq!(a.inbound_cursor("arena").await.unwrap(), None, "claiming moves no position");
        // The same change delivered to both instances at once is kept once.
        let entry = InboxEntry { position: format!("{:020}", 7), kind: "case.updated".into(), body: "{}".into() };
        let (x, y) = tokio::join!(
            a.receive_inbound("nokut", vec![entry.clone()], Some(entry.position.clone())),
            b.receive_inbound("nokut", vec![entry.clone()], Some(entry.position.clone()))
        );
        assert_eq!(x.unwrap() + y.unwrap(), 1);
        assert_eq!(b.inbound_cursor("nokut").await.unwrap(), Some(entry.position));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn instances_starting_together_do_the_start_up_work_once() {
        let db = database!();
        let keyring = Keyring::process_local();
        let first = instance(&db, &keyring, SyncConfig::default()).await;
        for n in 0..20u8 {
            first.create(new_participant(&format!("p{n}"), n)).await.unwrap();
        }
        first.close().await;
        // A target new to all of them: every instance starting at once
        // queues the participants for it; each is queued once.
        let mut starts = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (url, keyring) = (db.url.clone(), Arc::clone(&keyring));
            starts.spawn(async move {
                let options = StoreOptions {
                    sync: SyncConfig { targets: vec!["arena".into()], ..Default::default() },
                    keyring,
                    ..StoreOptions::new(Location::Postgres(url), test_key())
                };
                crate::store::open(options).await.map(|(store, _)| store)
            });
        }
        let stores: Vec<_> = starts.join_all().await.into_iter().map(|s| s.expect("every instance starts")).collect();
        let queued = stores[0].claim_sync(100, Duration::from_secs(30)).await.unwrap();
        assert_eq!(queued.len(), 20);
        // A key the database needs and an instance lacks stops that
        // instance's start, naming the key.
        let other = conformance_keyring(&[("other", 9)], "other");
        let options =
            StoreOptions { keyring: other, ..StoreOptions::new(Location::Postgres(db.url.clone()), test_key()) };
        let refused = crate::store::open(options).await.err().expect("a missing key refuses the start");
        assert!(
            matches!(&refused, Error::FailedPrecondition { reason: "ENCRYPTION_KEY_NOT_CONFIGURED", .. }),
            "{refused}"
        );
    }
}
