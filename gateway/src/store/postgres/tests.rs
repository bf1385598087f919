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
}

#[tokio::test]
async fn the_store_migrates_a_postgres_location_and_refuses_to_serve_from_it_yet() {
    use crate::{
        audit::AuditKey,
        store::{Location, StoreOptions},
    };
    let db = database!();
    let location = Location::Postgres(db.url.clone());
    let report = crate::store::migrate(&location, None).await.unwrap();
    assert_eq!(report.current, MIGRATIONS.len() as i64);
    assert_eq!(report.applied.len(), MIGRATIONS.len());
    let err = crate::store::open(StoreOptions::new(location.clone(), AuditKey::new([1; 32]))).await.err().unwrap();
    assert!(err.to_string().contains("not yet served from"), "{err}");
    assert!(!location.to_string().contains("postgres@"), "the user stays out of messages: {location}");
}
