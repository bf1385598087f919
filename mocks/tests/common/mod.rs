//! Helpers shared by the mocks' test binaries.

use reqwest::{Client, StatusCode};
use serde_json::Value;

/// An access token from an Arena mock at `base_url`, with the default dev
/// client; checks the token answer's shape on the way.
pub async fn arena_token(http: &Client, base_url: &str) -> String {
    let r = http
        .post(format!("{base_url}/oauth/token"))
        .basic_auth("hurtigspor-gateway", Some("arena-dev-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 300);
    body["access_token"].as_str().unwrap().to_owned()
}
