//! What every store dialect must do, as one suite.
//!
//! Each test takes a fresh, empty [`Location`] and reaches the store only
//! through [`open`](super::open) and the role traits, so it holds for any
//! dialect. A dialect runs the whole suite with one line:
//!
//! ```ignore
//! crate::store_conformance!(fresh_location());
//! ```
//!
//! where `fresh_location()` returns a guard (dropped after the test, it
//! removes the data) and the location.

#![allow(clippy::unwrap_used)]

use super::{
    ChangeCursor, ChangeKind, IdempotencyKey, InboxEntry, InboxFilter, ListQuery, Location, MigrationReport, Mutation,
    NewParticipant, Origin, RotationProgress, Settle, Settled, Store, StoreOptions, SyncConfig, SyncOutcome, etag_for,
    resource_name,
};
use crate::{
    audit::{AuditEntry, AuditKey, AuditQuery},
    clock::Clock,
    crypto::Keyring,
    error::Error,
};
use chrono::Utc;
use hurtigspor_proto::v1::Participant;
use std::{ops::ControlFlow, sync::Arc};

/// Opens the store at `loc` with these targets and keys, the audit key of
/// [`test_key`] and the wall clock.
pub async fn open_with(
    loc: &Location,
    sync: SyncConfig,
    keyring: Arc<Keyring>,
) -> Result<(Arc<dyn Store>, MigrationReport), Error> {
    super::open(StoreOptions { sync, keyring, ..StoreOptions::new(loc.clone(), test_key()) }).await
}

async fn open(loc: &Location) -> Arc<dyn Store> {
    open_with(loc, SyncConfig::default(), Keyring::process_local()).await.unwrap().0
}

/// The stored ciphertexts of every national id, oldest participant first:
/// read past the store, to show what a rotation changed on disk.
pub async fn sealed_national_ids(loc: &Location) -> Vec<Vec<u8>> {
    match loc {
        Location::Sqlite(path) => super::sqlite::sealed_national_ids(path),
        Location::Postgres(url) => super::postgres::sealed_national_ids(url).await,
    }
}

/// The changes after `after`, once there are `expected` of them (or after
/// 10 s, whatever there is). A dialect may keep a committed change back for
/// a moment, while a transaction that began before it is still open (on
/// PostgreSQL, anywhere on the server).
pub async fn settled_changes(store: &dyn Store, after: ChangeCursor, expected: usize) -> Vec<super::ChangeRecord> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let seen = store.changes(after, 1000).await.unwrap();
        if seen.len() >= expected || std::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub fn test_key() -> AuditKey {
    AuditKey::new([5; 32])
}

pub fn new_participant(id: &str, hash: u8) -> NewParticipant {
    NewParticipant {
        id: id.to_owned(),
        national_id: format!("{hash:011}"),
        national_id_hash: vec![hash; 32],
        record: Participant { given_name: "A".into(), kommunenummer: "0301".into(), ..Default::default() },
        idempotency: None,
        origin: Origin::Api,
        actor: "test".into(),
        audit: None,
    }
}

pub fn mutation(id: &str, apply: impl FnOnce(&mut Participant) -> Result<(), Error> + Send + 'static) -> Mutation {
    Mutation {
        id: id.to_owned(),
        expected_etag: None,
        idempotency: None,
        kind: ChangeKind("test.changed"),
        origin: Origin::Api,
        actor: "test".into(),
        kommuner: None,
        audit: None,
        apply: Box::new(apply),
    }
}

pub fn synthetic_id(n: u32) -> String {
    crate::domain::national_id::testing::synthetic_fnr(1985, 1 + n % 12, 1 + n % 28, n)
}

pub fn person(id: &str, n: u32) -> NewParticipant {
    NewParticipant {
        national_id: synthetic_id(n),
        record: Participant {
            given_name: format!("Filescan{n:04}"),
            kommunenummer: "0301".into(),
            ..Default::default()
        },
        ..new_participant(id, n as u8)
    }
}

pub fn keyring(keys: &[(&str, u8)], active: &str) -> Arc<Keyring> {
    Arc::new(Keyring::new(keys.iter().map(|(id, b)| (id.to_string(), [*b; 32])), active).unwrap())
}

pub fn api_entry() -> AuditEntry {
    AuditEntry {
        organisation: "0192:900000014".into(),
        method: "ParticipantService/Test".into(),
        purpose: Some("case-processing".into()),
        ..Default::default()
    }
}

pub async fn every_write_queues_its_targets_and_deliveries_coalesce(loc: Location) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let sync = SyncConfig { targets: vec!["arena".into(), "nir".into()], wake: wake.clone(), ..Default::default() };
    let (store, _) = open_with(&loc, sync, Keyring::process_local()).await.unwrap();
    let lease = std::time::Duration::from_secs(30);
    store.create(new_participant("a", 1)).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified())
        .await
        .expect("the commit wakes the dispatcher");
    let mut tasks = store.claim_sync(10, lease).await.unwrap();
    tasks.sort_by(|a, b| a.target.cmp(&b.target));
    assert_eq!(
        tasks.iter().map(|t| (t.target.as_str(), t.desired_version)).collect::<Vec<_>>(),
        [("arena", 1), ("nir", 1)]
    );
    assert!(store.claim_sync(10, lease).await.unwrap().is_empty(), "leased");

    // Two more writes while arena delivers version 1: one reconcile of the
    // latest follows, not one per write.
    store.finish_sync(tasks[1].clone(), SyncOutcome::Delivered { version: 1 }).await.unwrap();
    store
        .mutate(mutation("a", |p| {
            p.given_name = "B".into();
            Ok(())
        }))
        .await
        .unwrap();
    store
        .mutate(mutation("a", |p| {
            p.given_name = "C".into();
            Ok(())
        }))
        .await
        .unwrap();
    store.finish_sync(tasks[0].clone(), SyncOutcome::Delivered { version: 1 }).await.unwrap();
    let mut next = store.claim_sync(10, lease).await.unwrap();
    next.sort_by(|a, b| a.target.cmp(&b.target));
    assert_eq!(
        next.iter().map(|t| (t.target.as_str(), t.desired_version)).collect::<Vec<_>>(),
        [("arena", 3), ("nir", 3)]
    );

    // A permanent failure shows, and a replay makes it due again.
    store.finish_sync(next[0].clone(), SyncOutcome::Failed { error: "ORA-20011".into() }).await.unwrap();
    store.finish_sync(next[1].clone(), SyncOutcome::Delivered { version: 3 }).await.unwrap();
    let status = store.sync_status("a").await.unwrap();
    assert_eq!((status[0].state.as_str(), status[0].last_error.as_deref()), ("failed", Some("ORA-20011")));
    assert_eq!((status[1].state.as_str(), status[1].delivered_version), ("delivered", 3));
    assert_eq!(store.failed_syncs(None, 10).await.unwrap().len(), 1);
    assert_eq!(store.retry_failed_syncs(Some("a".into())).await.unwrap(), 1);
    assert_eq!(store.claim_sync(10, lease).await.unwrap().len(), 1);
    store.close().await;
}

pub async fn participants_from_before_a_target_was_configured_are_queued_for_it(loc: Location) {
    let (store, _) = open_with(&loc, SyncConfig::default(), Keyring::process_local()).await.unwrap();
    store.create(new_participant("a", 1)).await.unwrap();
    store.close().await;
    let sync = SyncConfig { targets: vec!["nir".into()], ..Default::default() };
    let (store, _) = open_with(&loc, sync, Keyring::process_local()).await.unwrap();
    let tasks = store.claim_sync(10, std::time::Duration::from_secs(30)).await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!((tasks[0].target.as_str(), tasks[0].participant_id.as_str(), tasks[0].desired_version), ("nir", "a", 1));
    store.close().await;
}

pub async fn the_inbox_keeps_each_change_once_and_never_rolls_a_record_back(loc: Location) {
    let (store, _) = open_with(&loc, SyncConfig::default(), Keyring::process_local()).await.unwrap();
    store.create(new_participant("a", 1)).await.unwrap();
    let entry = |pos: u64| InboxEntry { position: format!("{pos:020}"), kind: "K".into(), body: "{}".into() };
    assert_eq!(store.receive_inbound("arena", vec![entry(1), entry(2)], Some(format!("{:020}", 2))).await.unwrap(), 2);
    // A repeat (a webhook after polling) is kept once; the cursor never goes back.
    assert_eq!(store.receive_inbound("arena", vec![entry(2)], Some(format!("{:020}", 1))).await.unwrap(), 0);
    assert_eq!(store.inbound_cursor("arena").await.unwrap(), Some(format!("{:020}", 2)));
    let due = store.due_inbound("arena", 10).await.unwrap();
    assert_eq!(due.iter().map(|i| i.position.as_str()).collect::<Vec<_>>(), [entry(1).position, entry(2).position]);

    let set_name = |n: &'static str| Settle::Apply {
        entity: "e".into(),
        mutation: Box::new(mutation("a", move |p| {
            p.given_name = n.into();
            Ok(())
        })),
        refs: vec![("arena_person".into(), "7".into())],
    };
    // The newer change first (the older one was waiting for a retry).
    assert_eq!(
        store.settle_inbound("arena", &entry(2).position, set_name("New")).await.unwrap(),
        Settled::Handled(Some(2))
    );
    assert_eq!(store.settle_inbound("arena", &entry(1).position, set_name("Old")).await.unwrap(), Settled::Superseded);
    assert_eq!(store.get("a").await.unwrap().unwrap().given_name, "New", "not rolled back");
    assert_eq!(store.participant_by_ref("arena_person", "7").await.unwrap().as_deref(), Some("a"));
    assert_eq!(store.settle_inbound("arena", &entry(1).position, set_name("Old")).await.unwrap(), Settled::Gone);

    // An ignored change of the entity (say, registered in error before
    // it was ever applied) still outranks an older one waiting to retry.
    store.receive_inbound("arena", vec![entry(5), entry(6)], None).await.unwrap();
    let ignore = Settle::Ignore { reason: "registered in error".into(), entity: Some("f".into()) };
    assert_eq!(store.settle_inbound("arena", &entry(6).position, ignore).await.unwrap(), Settled::Ignored);
    let late = Settle::Apply { entity: "f".into(), mutation: Box::new(mutation("a", |_| Ok(()))), refs: vec![] };
    assert_eq!(store.settle_inbound("arena", &entry(5).position, late).await.unwrap(), Settled::Superseded);

    // Re-ingested, an echo of what the record holds stores no version.
    assert_eq!(store.reingest_inbound(Some("arena".into()), Some(entry(2).position)).await.unwrap(), 1);
    store.receive_inbound("arena", vec![entry(3)], None).await.unwrap();
    let same = Settle::Apply { entity: "e".into(), mutation: Box::new(mutation("a", |_| Ok(()))), refs: vec![] };
    assert_eq!(store.settle_inbound("arena", &entry(3).position, same).await.unwrap(), Settled::Handled(None));
    assert_eq!(store.get("a").await.unwrap().unwrap().etag, etag_for(2));

    // A refused entry fails; re-ingesting the failed ones makes it due again.
    store.settle_inbound("arena", &entry(2).position, Settle::Fail { error: "bad".into() }).await.unwrap();
    let failed = InboxFilter { status: Some("failed".into()), limit: 10, ..Default::default() };
    assert_eq!(store.list_inbound(failed.clone()).await.unwrap()[0].note.as_deref(), Some("bad"));
    assert_eq!(store.reingest_inbound(None, None).await.unwrap(), 1);
    assert!(store.list_inbound(failed).await.unwrap().is_empty());
    assert_eq!(store.due_inbound("arena", 10).await.unwrap().len(), 1);
    store.close().await;
}

pub async fn rotation_moves_every_value_to_the_active_key_in_resumable_batches(loc: Location) {
    let (store, _) = open_with(&loc, SyncConfig::default(), keyring(&[("a", 1)], "a")).await.unwrap();
    for n in 0..5 {
        store.create(person(&format!("p{n}"), n)).await.unwrap();
    }
    store.close().await;

    // B is active, A is kept: both read; new values go under B.
    let (store, _) = open_with(&loc, SyncConfig::default(), keyring(&[("a", 1), ("b", 2)], "b")).await.unwrap();
    store.create(person("p5", 5)).await.unwrap();
    assert_eq!(store.get("p0").await.unwrap().unwrap().national_id, synthetic_id(0));
    // Interrupted after the first batch: that batch is kept.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let report = |stop: bool| -> RotationProgress {
        let seen = Arc::clone(&seen);
        Box::new(move |done, total| {
            seen.lock().unwrap().push((done, total));
            if stop { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })
    };
    let first = store.rotate_keys(2, report(true)).await.unwrap();
    assert_eq!((first.reencrypted, first.finished), (2, false));
    assert_eq!(first.by_key, [("a".to_owned(), 3), ("b".to_owned(), 3)].into());
    // Run again: it carries on from where it stopped.
    let second = store.rotate_keys(2, report(false)).await.unwrap();
    assert_eq!((second.reencrypted, second.finished), (3, true));
    assert_eq!(second.by_key, [("b".to_owned(), 6)].into());
    assert_eq!(*seen.lock().unwrap(), [(2, 5), (2, 3), (3, 3)]);
    // And once more: nothing to do, nothing changed.
    let before: Vec<Vec<u8>> = sealed_national_ids(&loc).await;
    let third = store.rotate_keys(2, Box::new(|_, _| panic!("no batch to report"))).await.unwrap();
    assert_eq!((third.reencrypted, third.by_key.clone()), (0, [("b".to_owned(), 6)].into()));
    let after: Vec<Vec<u8>> = sealed_national_ids(&loc).await;
    assert_eq!(before, after);
    store.close().await;

    // A removed: everything still reads, by id and by hash.
    let (store, _) = open_with(&loc, SyncConfig::default(), keyring(&[("b", 2)], "b")).await.unwrap();
    for n in 0..6u32 {
        let id = format!("p{n}");
        assert_eq!(store.get(&id).await.unwrap().unwrap().national_id, synthetic_id(n));
        let found = store.get_by_national_id_hash(&[n as u8; 32]).await.unwrap().unwrap();
        assert_eq!((found.name, found.national_id), (resource_name(&id), synthetic_id(n)));
    }
    let page = store.list(ListQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(
        page.participants.iter().map(|p| p.national_id.clone()).collect::<Vec<_>>(),
        (0..6).map(synthetic_id).collect::<Vec<_>>()
    );
    store.close().await;

    // Without B, the start is refused, naming the key id.
    let err = open_with(&loc, SyncConfig::default(), keyring(&[("a", 1)], "a")).await.err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, Error::FailedPrecondition { reason: "ENCRYPTION_KEY_NOT_CONFIGURED", .. }), "{text}");
    assert!(text.contains("`b`") && text.contains("HURTIGSPOR__SECURITY__ENCRYPTION_KEYS__B"), "{text}");
    // With another value under the id B, too.
    let err = open_with(&loc, SyncConfig::default(), keyring(&[("b", 3)], "b")).await.err().unwrap();
    assert!(matches!(err, Error::FailedPrecondition { reason: "ENCRYPTION_KEY_WRONG", .. }), "{err}");
    assert!(err.to_string().contains("`b`"), "{err}");
}

pub async fn rotation_runs_beside_writes(loc: Location) {
    let (store, _) = open_with(&loc, SyncConfig::default(), keyring(&[("a", 1)], "a")).await.unwrap();
    for n in 0..300u32 {
        store
            .create(NewParticipant { national_id_hash: n.to_be_bytes().to_vec(), ..person(&format!("p{n}"), n) })
            .await
            .unwrap();
    }
    store.close().await;
    let (store, _) = open_with(&loc, SyncConfig::default(), keyring(&[("a", 1), ("b", 2)], "b")).await.unwrap();
    let rotation = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.rotate_keys(25, Box::new(|_, _| ControlFlow::Continue(()))).await }
    });
    for n in 300..400u32 {
        store
            .create(NewParticipant { national_id_hash: n.to_be_bytes().to_vec(), ..person(&format!("p{n}"), n) })
            .await
            .unwrap();
    }
    let rotation = rotation.await.unwrap().unwrap();
    assert_eq!(rotation.reencrypted, 300);
    assert_eq!(rotation.by_key.get("a"), None, "{:?}", rotation.by_key);
    for n in 0..400u32 {
        assert_eq!(store.get(&format!("p{n}")).await.unwrap().unwrap().national_id, synthetic_id(n));
    }
    store.close().await;
}

pub async fn deliveries_and_inbound_changes_are_audited(loc: Location) {
    let sync = SyncConfig { targets: vec!["nir".into()], ..Default::default() };
    let (store, _) = open_with(&loc, sync, Keyring::process_local()).await.unwrap();
    store.create(new_participant("a", 1)).await.unwrap();
    let task = store.claim_sync(10, std::time::Duration::from_secs(30)).await.unwrap().remove(0);
    let at = Utc::now();
    store.finish_sync(task.clone(), SyncOutcome::Deferred { error: "breaker open".into(), at }).await.unwrap();
    store.finish_sync(task.clone(), SyncOutcome::Retry { error: "HTTP 503".into(), at }).await.unwrap();
    store.finish_sync(task, SyncOutcome::Delivered { version: 1 }).await.unwrap();
    let entry = InboxEntry { position: format!("{:020}", 7), kind: "SIAMO.TILTAKDELTAKER U".into(), body: "{}".into() };
    store.receive_inbound("arena", vec![entry], None).await.unwrap();
    let settle = Settle::Apply {
        entity: "TD-1".into(),
        mutation: Box::new(mutation("a", |p| {
            p.given_name = "Z".into();
            Ok(())
        })),
        refs: vec![],
    };
    store.settle_inbound("arena", &format!("{:020}", 7), settle).await.unwrap();
    let records = store.audit_log(AuditQuery { limit: 10, ..Default::default() }).await.unwrap();
    let seen: Vec<(&str, &str, Option<&str>, &str)> = records
        .iter()
        .map(|r| {
            (
                r.entry.organisation.as_str(),
                r.entry.method.as_str(),
                r.entry.participant_id.as_deref(),
                r.entry.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("gateway", "deliver/nir", Some("a"), "retry"),
            ("gateway", "deliver/nir", Some("a"), "delivered"),
            ("arena", "inbound/arena/SIAMO.TILTAKDELTAKER U", Some("a"), "handled"),
        ],
        "a deferred delivery was not attempted and is not audited"
    );
    assert_eq!(records[0].entry.detail.as_deref(), Some("version 1: HTTP 503"));
    assert_eq!(records[2].entry.detail.as_deref(), Some(format!("position {:020}; version 2", 7).as_str()));
    // Filters and paging.
    let only_arena = store
        .audit_log(AuditQuery { organisation: Some("arena".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(only_arena.len(), 1);
    let after_first = store.audit_log(AuditQuery { after: 1, limit: 1, ..Default::default() }).await.unwrap();
    assert_eq!(after_first.iter().map(|r| r.sequence).collect::<Vec<_>>(), [2]);
    store.close().await;
    crate::store::verify_audit_log(&loc, &test_key(), None, 0, |_, _| {}).await.unwrap().unwrap();
}

pub async fn histories_come_per_participant_in_version_order_across_pages(loc: Location) {
    let (store, _) = open_with(&loc, SyncConfig::default(), Keyring::process_local()).await.unwrap();
    // Interleaved writes: the change log holds b1 a1 b2 a2 b3.
    store.create(new_participant("b", 1)).await.unwrap();
    store.create(new_participant("a", 2)).await.unwrap();
    for id in ["b", "a", "b"] {
        store
            .mutate(mutation(id, |p| {
                p.given_name.push('x');
                Ok(())
            }))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.histories(after.clone(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some((last.participant_id.clone(), last.version));
        for r in &page {
            assert!(r.snapshot.national_id.is_empty(), "snapshots hold no national id");
            seen.push((r.participant_id.clone(), r.version));
        }
    }
    let expected = [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3)];
    assert_eq!(seen, expected.map(|(p, v)| (p.to_owned(), v)));
    store.close().await;
}

pub async fn a_refused_or_panicking_write_rolls_back_alone_and_is_audited(loc: Location) {
    let store = open(&loc).await;
    let audited = |n: NewParticipant| NewParticipant { audit: Some(api_entry()), ..n };
    store.create(audited(new_participant("a", 1))).await.unwrap();
    let with_audit = |m: Mutation| Mutation { audit: Some(api_entry()), ..m };
    // Sent together, so that a group-committing dialect puts them in one batch.
    let (same_person, refused, panicked, missing, good) = tokio::join!(
        store.create(audited(new_participant("b", 1))),
        store.mutate(with_audit(mutation("a", |_| Err(Error::precondition("ILLEGAL_TRANSITION", "x", "no"))))),
        store.mutate(mutation("a", |_| panic!("a rule bug"))),
        store.mutate(with_audit(mutation("zz", |_| Ok(())))),
        store.mutate(with_audit(mutation("a", |p| {
            p.given_name = "B".into();
            Ok(())
        }))),
    );
    assert!(matches!(&same_person, Err(Error::AlreadyExists { existing }) if existing == "participants/a"));
    assert!(matches!(refused, Err(Error::FailedPrecondition { .. })), "{refused:?}");
    assert!(matches!(panicked, Err(Error::Internal(_))), "{panicked:?}");
    assert!(matches!(missing, Err(Error::NotFound { .. })), "{missing:?}");
    assert_eq!(good.unwrap().version, 2);
    let stored = store.get("a").await.unwrap().unwrap();
    assert_eq!((stored.etag.as_str(), stored.given_name.as_str()), ("W/\"2\"", "B"));
    assert!(store.get("b").await.unwrap().is_none());
    let changes = settled_changes(&*store, ChangeCursor::default(), 2).await;
    assert_eq!(changes.len(), 2, "one change per acknowledged write");
    // Every audited write is in the log, a refused one alone and about whom
    // it concerned; the order within a batch is the dialect's.
    let mut seen: Vec<(Option<String>, String, Option<String>)> = store
        .audit_log(AuditQuery { limit: 10, ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.entry.participant_id, r.entry.outcome, r.entry.detail))
        .collect();
    seen.sort();
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        seen,
        [
            (some("a"), "ALREADY_EXISTS".to_owned(), some("PARTICIPANT_ALREADY_EXISTS")),
            (some("a"), "FAILED_PRECONDITION".to_owned(), some("ILLEGAL_TRANSITION")),
            (some("a"), "OK".to_owned(), some("version 1")),
            (some("a"), "OK".to_owned(), some("version 2")),
            (some("zz"), "NOT_FOUND".to_owned(), some("NOT_FOUND")),
        ]
    );
    store.close().await;
    crate::store::verify_audit_log(&loc, &test_key(), None, 0, |_, _| {}).await.unwrap().unwrap();
}

pub async fn a_retried_request_is_replayed_and_a_reused_id_refused(loc: Location) {
    let store = open(&loc).await;
    let key = |method, fp: u8| Some(IdempotencyKey { method, request_id: "r".into(), fingerprint: [fp; 32] });
    let first = store
        .create(NewParticipant { idempotency: key("CreateParticipant", 1), ..new_participant("a", 1) })
        .await
        .unwrap();
    let again = store
        .create(NewParticipant { idempotency: key("CreateParticipant", 1), ..new_participant("b", 9) })
        .await
        .unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!((again.participant.name.as_str(), again.version), ("participants/a", 1));
    assert_eq!(again.participant.national_id, first.participant.national_id, "the national id is answered too");
    let other_body =
        store.create(NewParticipant { idempotency: key("CreateParticipant", 2), ..new_participant("c", 3) });
    assert!(matches!(other_body.await, Err(Error::RequestIdReused)));
    store.create(new_participant("d", 4)).await.unwrap();
    let rename = |id: &str| Mutation {
        idempotency: key("UpdateParticipant", 5),
        ..mutation(id, |p| {
            p.given_name.push('x');
            Ok(())
        })
    };
    assert_eq!(store.mutate(rename("a")).await.unwrap().version, 2);
    let replayed = store.mutate(rename("a")).await.unwrap();
    assert!(replayed.replayed && replayed.version == 2);
    assert_eq!(store.get("a").await.unwrap().unwrap().etag, etag_for(2), "a replay stores nothing");
    assert!(matches!(store.mutate(rename("d")).await, Err(Error::RequestIdReused)), "another participant");
    store.close().await;
}

pub async fn a_writer_sees_and_moves_only_its_own_kommuners_participants(loc: Location) {
    let store = open(&loc).await;
    store.create(new_participant("a", 1)).await.unwrap();
    let within = |ks: &[&str], etag: Option<&str>, m: Mutation| Mutation {
        kommuner: Some(ks.iter().map(|k| (*k).to_owned()).collect()),
        expected_etag: etag.map(str::to_owned),
        ..m
    };
    let untouched = || mutation("a", |_| panic!("the mutator of a refused write must not run"));
    let other = store.mutate(within(&["4601"], Some("W/\"9\""), untouched())).await;
    assert!(matches!(other, Err(Error::NotFound { .. })), "not found before the etag is looked at: {other:?}");
    let stale = store.mutate(within(&["0301"], Some("W/\"9\""), untouched())).await;
    assert!(matches!(stale, Err(Error::StaleEtag { .. })), "{stale:?}");
    let moved = store
        .mutate(within(
            &["0301"],
            Some("W/\"1\""),
            mutation("a", |p| {
                p.kommunenummer = "4601".into();
                Ok(())
            }),
        ))
        .await;
    assert_eq!(moved.unwrap_err().reason(), "KOMMUNE_NOT_YOURS");
    let listed = store.list(ListQuery { kommuner: Some(vec!["4601".into()]), limit: 10, ..Default::default() });
    assert!(listed.await.unwrap().participants.is_empty());
    assert_eq!(store.get("a").await.unwrap().unwrap().etag, etag_for(1), "nothing was stored");
    store.close().await;
}

pub async fn times_and_due_work_follow_the_injected_clock(loc: Location) {
    let start: chrono::DateTime<Utc> = "2026-12-31T23:30:00Z".parse().unwrap();
    let clock = Clock::fixed(start);
    let sync = SyncConfig { targets: vec!["nir".into()], ..Default::default() };
    let options = StoreOptions { sync, clock: clock.clone(), ..StoreOptions::new(loc, test_key()) };
    let (store, _) = super::open(options).await.unwrap();
    let created = store.create(NewParticipant { audit: Some(api_entry()), ..new_participant("a", 1) }).await.unwrap();
    assert_eq!(created.participant.create_time, Some(super::codec::timestamp(start)));
    let lease = std::time::Duration::from_secs(30);
    let task = store.claim_sync(10, lease).await.unwrap().remove(0);
    let retry_at = start + chrono::Duration::minutes(5);
    store.finish_sync(task, SyncOutcome::Retry { error: "HTTP 503".into(), at: retry_at }).await.unwrap();
    assert!(store.claim_sync(10, lease).await.unwrap().is_empty(), "not due before its time");
    clock.advance(chrono::Duration::minutes(5));
    assert_eq!(store.claim_sync(10, lease).await.unwrap().len(), 1, "due when the clock gets there");
    let audited = store.audit_log(AuditQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(audited[0].time, super::codec::time_text(start), "the audit log keeps the clock's time");
    store.close().await;
}

/// Runs the whole suite against a dialect: `$fresh` is an expression that
/// yields `(guard, Location)` for one empty store.
#[macro_export]
macro_rules! store_conformance {
    ($fresh:expr) => {
        $crate::store_conformance!(@tests $fresh;
            every_write_queues_its_targets_and_deliveries_coalesce,
            participants_from_before_a_target_was_configured_are_queued_for_it,
            the_inbox_keeps_each_change_once_and_never_rolls_a_record_back,
            rotation_moves_every_value_to_the_active_key_in_resumable_batches,
            deliveries_and_inbound_changes_are_audited,
            histories_come_per_participant_in_version_order_across_pages,
            a_refused_or_panicking_write_rolls_back_alone_and_is_audited,
            a_retried_request_is_replayed_and_a_reused_id_refused,
            a_writer_sees_and_moves_only_its_own_kommuners_participants,
            times_and_due_work_follow_the_injected_clock,
        );
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rotation_runs_beside_writes() {
            let (_guard, location) = $fresh;
            $crate::store::conformance::rotation_runs_beside_writes(location).await;
        }
    };
    (@tests $fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, location) = $fresh;
                $crate::store::conformance::$name(location).await;
            }
        )*
    };
}
