//! Durability: every acknowledged write survives a restart.

use crate::helpers::*;
use hurtigspor_proto::v1::{ListParticipantsRequest, Participant, UpdateParticipantRequest};
use prost_types::FieldMask;
use std::collections::HashMap;

#[tokio::test]
async fn every_acknowledged_write_is_there_after_a_restart() {
    let app = spawn_app().await;

    // Many concurrent creates (sharing commits), then concurrent updates.
    let created: Vec<Participant> = futures::future::join_all((0..60).map(|_| {
        let mut c = app.client.clone();
        async move { c.create_participant(create_request(minimal_participant())).await.unwrap().into_inner() }
    }))
    .await;
    let updated: Vec<Participant> = futures::future::join_all(created.iter().take(30).map(|p| {
        let mut c = app.client.clone();
        let change = Participant {
            name: p.name.clone(),
            etag: p.etag.clone(),
            given_name: fresh_given_name(),
            ..Default::default()
        };
        async move {
            c.update_participant(UpdateParticipantRequest {
                participant: Some(change),
                update_mask: Some(FieldMask { paths: vec!["given_name".into()] }),
            })
            .await
            .unwrap()
            .into_inner()
        }
    }))
    .await;
    let mut acknowledged: HashMap<String, Participant> = created.into_iter().map(|p| (p.name.clone(), p)).collect();
    for p in updated {
        acknowledged.insert(p.name.clone(), p);
    }

    let dir = app.stop().await;
    let config = dev_config(dir.path());
    let app = spawn_with(dir, config).await;

    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .client
            .clone()
            .list_participants(ListParticipantsRequest { page_size: 25, page_token: token, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.participants);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(all.len(), acknowledged.len());
    for p in all {
        let before = &acknowledged[&p.name];
        assert_eq!(&p, before, "the restarted gateway serves exactly what it acknowledged");
    }
    // Lookups by national id still work: the keyed hash survives too.
    let any = acknowledged.values().next().unwrap();
    let found = app
        .client
        .clone()
        .lookup_participant(hurtigspor_proto::v1::LookupParticipantRequest { national_id: any.national_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.name, any.name);
}
