//! The `hurtigspor-mocks` binary as a person runs it: one command starts the
//! three mocks, and a simulated caseworker action shows in Arena's feed.

mod common;

use reqwest::Client;
use serde_json::{Value, json};
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

struct Mocks {
    child: Child,
    urls: std::collections::HashMap<String, String>,
}

impl Drop for Mocks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Mocks {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hurtigspor-mocks"))
        .args(["--arena-listen", "127.0.0.1:0", "--nir-listen", "127.0.0.1:0", "--nokut-listen", "127.0.0.1:0"])
        .args(extra)
        .env("HURTIGSPOR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut urls = std::collections::HashMap::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        if let (Some(name @ ("Arena" | "NIR" | "NOKUT")), Some(url)) = (words.next(), words.next()) {
            urls.insert(name.to_owned(), url.to_owned());
        }
        if line.contains("stop with Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Mocks { child, urls }
}

#[tokio::test]
async fn one_command_starts_all_three_and_the_feed_shows_a_caseworker_action() {
    let mocks = start(&[]);
    assert_eq!(mocks.urls.len(), 3, "{:?}", mocks.urls);
    let arena = &mocks.urls["Arena"];
    let http = Client::new();
    let action = json!({ "fodselsnr": "15838510075", "tiltakskode": "MIDLONTIL", "arbgiv_orgnr": "889640782", "dato_fra": "2026-12-01 00:00:00" });
    let r = http.post(format!("{arena}/admin/caseworker/tiltak")).json(&action).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let token = common::arena_token(&http, arena).await;
    let feed: Value = http
        .get(format!("{arena}/ords/arena/api/v1/endringer?fra_pos=0"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last = feed["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["table"], "SIAMO.TILTAKDELTAKER");
    assert_eq!(last["after"]["DELTAKERSTATUSKODE"], "GJENN");

    // The other two answer too (and want their own credentials).
    let nir = http.post(format!("{}/deltakelser/sok", mocks.urls["NIR"])).body("<Sok/>").send().await.unwrap();
    assert_eq!(nir.status(), 401);
    let nokut = http
        .get(format!("{}/endringer", mocks.urls["NOKUT"]))
        .header("x-api-key", "nokut-dev-key")
        .send()
        .await
        .unwrap();
    assert_eq!(nokut.status(), 200);
}

#[test]
fn only_some_mocks_and_a_clear_error_for_unknown_names() {
    let mocks = start(&["--only", "nokut"]);
    assert_eq!(mocks.urls.keys().collect::<Vec<_>>(), ["NOKUT"]);
    let out = Command::new(env!("CARGO_BIN_EXE_hurtigspor-mocks")).args(["--only", "arena,ldap"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mock \"ldap\""));
}
