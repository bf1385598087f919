//! National ids at rest: what the gateway writes to disk holds them only
//! encrypted.

use crate::helpers::*;
use hurtigspor_proto::v1::{
    GetParticipantRequest, LookupParticipantRequest, Participant, SyncState, UpdateParticipantRequest,
};
use prost_types::FieldMask;
use std::path::Path;

/// The database file and its WAL (if there is one), as bytes.
fn database_bytes(data_dir: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(data_dir.join("hurtigspor.db")).expect("the database file");
    bytes.extend(std::fs::read(data_dir.join("hurtigspor.db-wal")).unwrap_or_default());
    bytes
}

fn holds(bytes: &[u8], text: &str) -> bool {
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

/// Every path that stores or reads a national id (create, update, lookup,
/// delivery to the three systems), then the bytes on disk, while the gateway
/// runs (the WAL) and after it stopped (the file).
#[tokio::test]
async fn no_national_id_is_in_the_database_file_or_its_wal_in_plain_text() {
    if on_postgres() {
        // The SQLite file's bytes are what this reads; on PostgreSQL the
        // same columns hold the same ciphertext (the conformance suite).
        return;
    }
    let app = spawn_app().await;
    let mut c = app.client.clone();
    let mut created: Vec<Participant> = Vec::new();
    for _ in 0..8 {
        created.push(app.create(minimal_participant()).await);
    }
    let first = &created[0];
    let renamed = Participant { name: first.name.clone(), family_name: fresh_family_name(), ..Default::default() };
    let renamed = c
        .update_participant(UpdateParticipantRequest {
            participant: Some(renamed),
            update_mask: Some(FieldMask { paths: vec!["family_name".into()] }),
        })
        .await
        .unwrap()
        .into_inner();
    for p in &created {
        let found = c
            .lookup_participant(LookupParticipantRequest { national_id: p.national_id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.name, p.name);
        let got = c.get_participant(GetParticipantRequest { name: p.name.clone() }).await.unwrap().into_inner();
        assert_eq!(got.national_id, p.national_id, "the national id reads back");
        app.sync_until(&p.name, |targets| {
            targets.len() == 3 && targets.iter().all(|t| t.state == SyncState::Delivered as i32)
        })
        .await;
    }

    let running = database_bytes(app.dir.path());
    let dir = app.stop().await;
    let stopped = database_bytes(dir.path());
    for (stage, bytes) in [("running", &running), ("stopped", &stopped)] {
        // The scan reads what is stored: names are kept in the record as
        // they are (they are not encrypted).
        assert!(holds(bytes, &renamed.family_name), "the scan must see the stored record ({stage})");
        for p in &created {
            assert!(!holds(bytes, &p.national_id), "the national id of {} is on disk in plain text ({stage})", p.name);
        }
    }
}
