//! The issuer's signing keys: from a JWKS file, or fetched from the issuer's
//! JWKS URL at start and kept fresh.
//!
//! A fetched key set is refreshed every `auth.jwks_refresh_secs`, and early
//! when a token names a key id (`kid`) the gateway does not know, as when the
//! issuer rotates its keys; such early refreshes come at most once per
//! `auth.jwks_min_refresh_secs`, so a flood of tokens with made-up key ids
//! cannot turn the gateway against the issuer. A refresh that fails keeps the
//! last good keys and logs a warning.

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, jwk::JwkSet};
use std::{
    path::Path,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{sync::Notify, time::Instant};

/// One verification key: its key id (if the JWKS gives one), the key and
/// the algorithm it verifies.
pub struct Key {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

/// The largest JWKS document accepted; real ones are a few kilobytes.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The RS256 and ES256 (P-256) keys of a JWKS document; others are skipped.
pub fn verifying_keys(jwks: &JwkSet) -> anyhow::Result<Vec<Key>> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    let mut keys = Vec::new();
    for jwk in &jwks.keys {
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
            _ => continue,
        };
        keys.push(Key { kid: jwk.common.key_id.clone(), key: DecodingKey::from_jwk(jwk)?, algorithm });
    }
    anyhow::ensure!(!keys.is_empty(), "the JWKS holds no RS256 or ES256 key");
    Ok(keys)
}

/// The keys tokens are checked against, swapped whole on each refresh.
pub struct KeySet {
    current: RwLock<Arc<Vec<Key>>>,
    remote: Option<Remote>,
}

/// Where fetched keys come from and when they are fetched again.
struct Remote {
    url: reqwest::Url,
    client: reqwest::Client,
    every: Duration,
    at_most_once_per: Duration,
    /// A token named an unknown key id since the last fetch began.
    wanted: AtomicBool,
    wake: Notify,
}

impl KeySet {
    /// Keys that never change.
    pub fn fixed(keys: Vec<Key>) -> Self {
        Self { current: RwLock::new(Arc::new(keys)), remote: None }
    }

    /// The keys of a JWKS file (`auth.jwks_file`).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("cannot read auth.jwks_file {}; check the path and that the gateway may read it", path.display())
        })?;
        let jwks: JwkSet = serde_json::from_str(&text)
            .with_context(|| format!("auth.jwks_file {} is not a JWKS document", path.display()))?;
        let keys = verifying_keys(&jwks).with_context(|| format!("auth.jwks_file {}", path.display()))?;
        Ok(Self::fixed(keys))
    }

    /// Fetches the keys from the issuer's JWKS URL (`auth.jwks_url`), to be
    /// refreshed by [`KeySet::refresh`]. Fails when the first fetch does.
    pub async fn fetch(url: &str, every: Duration, at_most_once_per: Duration) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url).context("auth.jwks_url is not a URL")?;
        // Keys that came over https must not be swapped on a redirect to http.
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if attempt.url().scheme() != "https" && attempt.previous().iter().any(|u| u.scheme() == "https") {
                attempt.error("a redirect from https to plain http")
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(redirects)
            .build()
            .context("cannot set up the HTTP client for auth.jwks_url")?;
        let remote =
            Remote { url, client, every, at_most_once_per, wanted: AtomicBool::new(false), wake: Notify::new() };
        let keys = remote.fetch().await.with_context(|| {
            format!(
                "cannot fetch the issuer's signing keys from auth.jwks_url {}; check that the URL is right, that this host can reach it (proxy, firewall) and that it serves a JWKS document",
                shown(&remote.url)
            )
        })?;
        tracing::info!(keys = keys.len(), "fetched the issuer's signing keys");
        Ok(Self { current: RwLock::new(Arc::new(keys)), remote: Some(remote) })
    }

    /// The keys as they are now.
    pub fn current(&self) -> Arc<Vec<Key>> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether one of `keys` has the key id `kid`; if none has, fetched
    /// keys are refreshed early.
    pub fn knows(&self, keys: &[Key], kid: &str) -> bool {
        let known = keys.iter().any(|k| k.kid.as_deref() == Some(kid));
        if let (false, Some(remote)) = (known, &self.remote) {
            remote.wanted.store(true, Ordering::Release);
            remote.wake.notify_one();
        }
        known
    }

    /// Whether the keys are fetched (and so may be refreshed).
    pub fn is_fetched(&self) -> bool {
        self.remote.is_some()
    }

    /// Keeps fetched keys fresh until `stop` turns true; returns at once
    /// for keys from a file.
    pub async fn refresh(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(remote) = &self.remote else { return };
        let mut last = Instant::now();
        loop {
            let mut due = last + remote.every;
            if remote.wanted.load(Ordering::Acquire) {
                due = due.min(last + remote.at_most_once_per);
            }
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = remote.wake.notified() => continue,
                _ = stop.wait_for(|s| *s) => return,
            }
            // Tokens that name an unknown key from now on want another fetch.
            remote.wanted.store(false, Ordering::Release);
            last = Instant::now();
            match remote.fetch().await {
                Ok(keys) => {
                    tracing::debug!(keys = keys.len(), "refreshed the issuer's signing keys");
                    *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
                }
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot refresh the issuer's signing keys from auth.jwks_url; keeping the last good ones"
                ),
            }
        }
    }
}

impl Remote {
    async fn fetch(&self) -> anyhow::Result<Vec<Key>> {
        // The error of a failed request would name the URL, query included.
        let response = self.client.get(self.url.clone()).send().await.map_err(|e| e.without_url())?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "the issuer answered HTTP {status}");
        if response.content_length().is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
            anyhow::bail!("the JWKS document is over {MAX_DOCUMENT_BYTES} bytes");
        }
        let body = response.bytes().await.map_err(|e| e.without_url())?;
        anyhow::ensure!(body.len() <= MAX_DOCUMENT_BYTES, "the JWKS document is over {MAX_DOCUMENT_BYTES} bytes");
        let jwks: JwkSet = serde_json::from_slice(&body).context("the answer is not a JWKS document")?;
        verifying_keys(&jwks)
    }
}

/// The URL without user name, password or query, which may carry secrets.
fn shown(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_url_keeps_no_credentials() {
        let url = reqwest::Url::parse("https://user:pw@issuer.example/jwk?key=abc").unwrap();
        assert_eq!(shown(&url), "https://issuer.example/jwk");
    }

    #[tokio::test]
    async fn an_unreachable_url_stops_the_start_and_says_what_to_check() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/jwk");
        let err = KeySet::fetch(&url, Duration::from_secs(300), Duration::from_secs(30)).await.err().expect("fails");
        let text = format!("{err:#}");
        assert!(text.contains(&url) && text.contains("check that the URL is right"), "{text}");
    }
}
