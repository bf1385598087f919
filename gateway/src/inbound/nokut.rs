//! NOKUT's changes: the status and decision of each recognition case come
//! back into the canonical record. NOKUT owns a case's status, decision and
//! decision date; nothing else is touched.
//!
//! Changes arrive as signed webhooks (see `crate::http`) and, to cover any
//! that were missed, by polling NOKUT's changes feed from a persisted
//! position. Both land in the inbox under NOKUT's sequence number, so a
//! change that comes both ways is kept once.

use super::{Source, padded, store_error};
use crate::{
    domain::dates,
    store::{ChangeKind, InboxEntry, InboxItem, Mutation, Origin, Settle},
};
use hmac::{Hmac, Mac};
use hurtigspor_adapters::{
    TargetError,
    nokut::{CaseChange, NokutTarget, case_update},
};
use sha2::Sha256;
use std::sync::Arc;

const PAGE: usize = 200;

pub struct NokutFeed {
    pub nokut: Arc<NokutTarget>,
    pub store: Arc<dyn crate::store::Inbox>,
}

/// The inbox entry for a change, without the applicant's personal data.
pub fn entry(change: CaseChange) -> InboxEntry {
    let change = change.redacted();
    InboxEntry {
        position: padded(change.sekvens),
        kind: change.status.clone(),
        body: serde_json::to_string(&change).expect("a change serialises"),
    }
}

impl Source for NokutFeed {
    fn name(&self) -> &'static str {
        "nokut"
    }

    async fn fetch(&self) -> Result<usize, TargetError> {
        let mut added = 0;
        let cursor = self.store.inbound_cursor("nokut").await.map_err(store_error)?;
        let mut after = cursor.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
        loop {
            let page = self.nokut.changes(after, PAGE).await?;
            let full = page.endringer.len() == PAGE;
            let entries: Vec<_> = page.endringer.into_iter().map(entry).collect();
            let cursor = (page.siste_sekvens > after).then(|| padded(page.siste_sekvens));
            added += self.store.receive_inbound("nokut", entries, cursor).await.map_err(store_error)?;
            if !full || page.siste_sekvens <= after {
                return Ok(added);
            }
            after = page.siste_sekvens;
        }
    }

    async fn handle(&self, item: &InboxItem) -> Result<Settle, TargetError> {
        let change: CaseChange = match serde_json::from_str(&item.body) {
            Ok(c) => c,
            Err(e) => return Ok(Settle::Fail { error: format!("unreadable change: {e}") }),
        };
        let update = match case_update(&change) {
            Ok(u) => u,
            Err(e) => return Ok(Settle::Fail { error: e }),
        };
        // The case number reaches the record right after NOKUT gives it; a
        // change that comes first waits for it.
        let Some(id) = self.store.participant_by_ref("nokut", &change.saksnummer).await.map_err(store_error)? else {
            return Err(TargetError::Transient("no participant holds this case number (yet)".into()));
        };
        let number = change.saksnummer.clone();
        Ok(Settle::Apply {
            entity: format!("sak {number}"),
            refs: Vec::new(),
            mutation: Box::new(Mutation {
                id,
                expected_etag: None,
                idempotency: None,
                kind: ChangeKind("recognition.updated"),
                origin: Origin::Nokut,
                actor: "nokut".into(),
                kommuner: None,
                audit: None,
                apply: Box::new(move |p| {
                    let case = p.recognition_cases.iter_mut().find(|c| c.case_number == number).ok_or_else(|| {
                        crate::error::Error::precondition(
                            "CASE_NOT_FOUND",
                            "recognition_cases",
                            "the participant no longer holds this case",
                        )
                    })?;
                    case.status = update.status as i32;
                    case.decision = update.decision as i32;
                    case.decision_date = update.decision_date.map(dates::to_proto);
                    Ok(())
                }),
            }),
        })
    }
}

/// Why a webhook was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing or malformed X-Nokut-Timestamp or X-Nokut-Signature")]
    Missing,
    #[error("the timestamp is outside the accepted window; check the clocks")]
    Stale,
    #[error("the signature does not match the body")]
    BadSignature,
}

/// Checks `X-Nokut-Signature: sha256=hex(HMAC-SHA256(secret, "<timestamp>.<body>"))`
/// and that the timestamp is within `window_secs` of `now` (seconds).
pub fn verify_webhook(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    window_secs: i64,
) -> Result<(), WebhookError> {
    let ts: i64 = timestamp.and_then(|t| t.trim().parse().ok()).ok_or(WebhookError::Missing)?;
    let given = signature
        .and_then(|s| s.trim().strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or(WebhookError::Missing)?;
    // The signature first: an unsigned request learns nothing about the window.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| WebhookError::BadSignature)?;
    if (now - ts).abs() > window_secs {
        return Err(WebhookError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], ts: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn webhooks_are_verified_by_signature_and_time() {
        let (secret, body, now) = (b"s3cret".as_slice(), br#"{"hendelse_id":1}"#.as_slice(), 1_800_000_000);
        let good = sign(secret, now - 10, body);
        let ts = (now - 10).to_string();
        assert_eq!(verify_webhook(secret, Some(&ts), Some(&good), body, now, 300), Ok(()));
        assert_eq!(
            verify_webhook(secret, Some(&ts), Some(&good), br#"{"hendelse_id":2}"#, now, 300),
            Err(WebhookError::BadSignature),
            "a changed body"
        );
        assert_eq!(
            verify_webhook(b"other", Some(&ts), Some(&good), body, now, 300),
            Err(WebhookError::BadSignature),
            "another secret"
        );
        let other_ts = (now - 11).to_string();
        assert_eq!(
            verify_webhook(secret, Some(&other_ts), Some(&good), body, now, 300),
            Err(WebhookError::BadSignature),
            "the timestamp is signed too"
        );
        let old = sign(secret, now - 301, body);
        let old_ts = (now - 301).to_string();
        assert_eq!(verify_webhook(secret, Some(&old_ts), Some(&old), body, now, 300), Err(WebhookError::Stale));
        let future = sign(secret, now + 301, body);
        let future_ts = (now + 301).to_string();
        assert_eq!(verify_webhook(secret, Some(&future_ts), Some(&future), body, now, 300), Err(WebhookError::Stale));
        assert_eq!(verify_webhook(secret, None, Some(&good), body, now, 300), Err(WebhookError::Missing));
        assert_eq!(verify_webhook(secret, Some(&ts), Some("sha256=zz"), body, now, 300), Err(WebhookError::Missing));
        assert_eq!(verify_webhook(secret, Some(&ts), Some("md5=00"), body, now, 300), Err(WebhookError::Missing));
    }
}
