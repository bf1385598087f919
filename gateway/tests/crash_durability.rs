//! The `hurtigspor` binary killed with SIGKILL keeps every write it
//! acknowledged: nothing is acknowledged before its commit.

use hurtigspor_gateway::domain::national_id::testing::synthetic_fnr;
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{
        CreateParticipantRequest, ListParticipantsRequest, Participant, Programme,
        participant_service_client::ParticipantServiceClient,
    },
};
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

/// Starts `hurtigspor dev` on a free port and returns it with its address.
fn start(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hurtigspor"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
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
    let client = ParticipantServiceClient::connect(addr.clone()).await.unwrap();

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
    let mut client = ParticipantServiceClient::connect(addr).await.unwrap();
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
