//! Opaque, signed page tokens that remember the filters they were issued for.

use crate::{error::Error, keys::Keys};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const FILTER_LEN: usize = 16;
const TAG_LEN: usize = 16;
const BODY_LEN: usize = 1 + 8 + FILTER_LEN;

/// A digest of the filters, so that a token cannot continue another listing.
pub fn filter_digest(parts: &[&str]) -> [u8; FILTER_LEN] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize()[..FILTER_LEN].try_into().expect("length")
}

pub fn encode(keys: &Keys, after: i64, filter: [u8; FILTER_LEN]) -> String {
    let mut body = Vec::with_capacity(BODY_LEN + TAG_LEN);
    body.push(VERSION);
    body.extend_from_slice(&after.to_be_bytes());
    body.extend_from_slice(&filter);
    let tag = keys.sign_page_token(&body);
    body.extend_from_slice(&tag[..TAG_LEN]);
    URL_SAFE_NO_PAD.encode(body)
}

/// The position a token continues after; refuses a token that was altered,
/// came from elsewhere, or was issued for other filters.
pub fn decode(keys: &Keys, token: &str, filter: [u8; FILTER_LEN]) -> Result<i64, Error> {
    let invalid = || {
        Error::invalid(
            "page_token",
            "INVALID_PAGE_TOKEN",
            "is not a page token this gateway issued; repeat the request without page_token to start from the first page",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    if bytes.len() != BODY_LEN + TAG_LEN || bytes[0] != VERSION {
        return Err(invalid());
    }
    let (body, tag) = bytes.split_at(BODY_LEN);
    let expected = keys.sign_page_token(body);
    // Constant-time comparison of the tag.
    let diff = expected[..TAG_LEN].iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(invalid());
    }
    if body[9..] != filter {
        return Err(Error::invalid(
            "page_token",
            "PAGE_TOKEN_FILTER_MISMATCH",
            "was issued for different filters; send the same kommunenummer and hurtigspor_status as in the first request, or start again without page_token",
        ));
    }
    Ok(i64::from_be_bytes(body[1..9].try_into().expect("length")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(e: Error) -> &'static str {
        match e {
            Error::InvalidArgument(v) => v[0].reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        let keys = Keys::from_master(&[1; 32]);
        let f = filter_digest(&["0301", "2"]);
        let t = encode(&keys, 42, f);
        assert_eq!(decode(&keys, &t, f).unwrap(), 42);
    }

    #[test]
    fn changed_filter_is_refused() {
        let keys = Keys::from_master(&[1; 32]);
        let t = encode(&keys, 42, filter_digest(&["0301", "2"]));
        assert_eq!(reason(decode(&keys, &t, filter_digest(&["4601", "2"])).unwrap_err()), "PAGE_TOKEN_FILTER_MISMATCH");
        // The digest separates parts: ("03", "012") differs from ("030", "12").
        assert_ne!(filter_digest(&["03", "012"]), filter_digest(&["030", "12"]));
    }

    #[test]
    fn tampering_and_foreign_tokens_are_refused() {
        let keys = Keys::from_master(&[1; 32]);
        let f = filter_digest(&[]);
        let t = encode(&keys, 42, f);
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[8] ^= 1; // a different position
        assert_eq!(reason(decode(&keys, &URL_SAFE_NO_PAD.encode(&raw), f).unwrap_err()), "INVALID_PAGE_TOKEN");
        assert_eq!(reason(decode(&Keys::from_master(&[2; 32]), &t, f).unwrap_err()), "INVALID_PAGE_TOKEN");
        assert_eq!(reason(decode(&keys, "not a token!", f).unwrap_err()), "INVALID_PAGE_TOKEN");
        assert_eq!(reason(decode(&keys, "", f).unwrap_err()), "INVALID_PAGE_TOKEN");
    }
}
