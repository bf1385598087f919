//! Opaque, signed page tokens that remember the filters they were issued for.

use crate::{
    config::Limits,
    error::{Error, Violations},
    keys::Keys,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// A token continuing after a numeric position (a sequence or row number).
const VERSION: u8 = 1;
/// A token continuing after a key (e.g. a participant id), of any length.
const KEY_VERSION: u8 = 2;
const FILTER_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// The page size asked for (0: the default), at most the maximum; a
/// negative one is a field violation.
pub fn page_size(limits: &Limits, asked: i32, v: &mut Violations) -> usize {
    match u32::try_from(asked) {
        Ok(0) => limits.default_page_size as usize,
        Ok(n) => n.min(limits.max_page_size) as usize,
        Err(_) => {
            v.add(
                "page_size",
                "OUT_OF_RANGE",
                format!("must not be negative; 0 means the default of {}", limits.default_page_size),
            );
            limits.default_page_size as usize
        }
    }
}

/// A digest of the filters, so that a token cannot continue another listing.
pub fn filter_digest(parts: &[&str]) -> [u8; FILTER_LEN] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize()[..FILTER_LEN].try_into().expect("length")
}

/// `version | position | filter | tag`, the tag over everything before it.
fn seal(keys: &Keys, version: u8, position: &[u8], filter: [u8; FILTER_LEN]) -> String {
    let mut body = Vec::with_capacity(1 + FILTER_LEN + position.len() + TAG_LEN);
    body.push(version);
    body.extend_from_slice(position);
    body.extend_from_slice(&filter);
    let tag = keys.sign_page_token(&body);
    body.extend_from_slice(&tag[..TAG_LEN]);
    URL_SAFE_NO_PAD.encode(body)
}

/// The position of a token this gateway sealed for `version` and `filter`.
fn open(keys: &Keys, token: &str, version: u8, filter: [u8; FILTER_LEN]) -> Result<Vec<u8>, Error> {
    let invalid = || {
        Error::invalid(
            "page_token",
            "INVALID_PAGE_TOKEN",
            "is not a page token this gateway issued; repeat the request without page_token to start from the first page",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    if bytes.len() < 1 + FILTER_LEN + TAG_LEN || bytes[0] != version {
        return Err(invalid());
    }
    let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    let expected = keys.sign_page_token(body);
    // Constant-time comparison of the tag.
    let diff = expected[..TAG_LEN].iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(invalid());
    }
    let (position, issued_for) = body[1..].split_at(body.len() - 1 - FILTER_LEN);
    if issued_for != filter {
        return Err(Error::invalid(
            "page_token",
            "PAGE_TOKEN_FILTER_MISMATCH",
            "was issued for different filters; send the same filters as in the first request, or start again without page_token",
        ));
    }
    Ok(position.to_vec())
}

/// A genuine token whose position is not of the kind this listing uses.
fn not_this_listing() -> Error {
    Error::invalid("page_token", "INVALID_PAGE_TOKEN", "is not a page token of this listing; start again without it")
}

pub fn encode(keys: &Keys, after: i64, filter: [u8; FILTER_LEN]) -> String {
    seal(keys, VERSION, &after.to_be_bytes(), filter)
}

/// The position a token continues after; refuses a token that was altered,
/// came from elsewhere, or was issued for other filters.
pub fn decode(keys: &Keys, token: &str, filter: [u8; FILTER_LEN]) -> Result<i64, Error> {
    let position = open(keys, token, VERSION, filter)?;
    let bytes: [u8; 8] = position.as_slice().try_into().map_err(|_| not_this_listing())?;
    Ok(i64::from_be_bytes(bytes))
}

/// A token continuing after `key` (an id: the token grows with it).
pub fn encode_key(keys: &Keys, key: &str, filter: [u8; FILTER_LEN]) -> String {
    seal(keys, KEY_VERSION, key.as_bytes(), filter)
}

/// The key a token from [`encode_key`] continues after.
pub fn decode_key(keys: &Keys, token: &str, filter: [u8; FILTER_LEN]) -> Result<String, Error> {
    let position = open(keys, token, KEY_VERSION, filter)?;
    String::from_utf8(position).map_err(|_| not_this_listing())
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

    #[test]
    fn key_tokens_round_trip_and_are_not_numeric_tokens() {
        let keys = Keys::from_master(&[1; 32]);
        let f = filter_digest(&["0301", "2026"]);
        let id = "0123456789abcdef0123456789abcdef";
        let t = encode_key(&keys, id, f);
        assert_eq!(decode_key(&keys, &t, f).unwrap(), id);
        assert_eq!(decode_key(&keys, &encode_key(&keys, "", f), f).unwrap(), "");
        // One kind of token does not continue the other kind of listing.
        assert_eq!(reason(decode(&keys, &t, f).unwrap_err()), "INVALID_PAGE_TOKEN");
        assert_eq!(reason(decode_key(&keys, &encode(&keys, 42, f), f).unwrap_err()), "INVALID_PAGE_TOKEN");
        assert_eq!(
            reason(decode_key(&keys, &t, filter_digest(&["0301", "2027"])).unwrap_err()),
            "PAGE_TOKEN_FILTER_MISMATCH"
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[3] ^= 1; // a different key
        assert_eq!(reason(decode_key(&keys, &URL_SAFE_NO_PAD.encode(&raw), f).unwrap_err()), "INVALID_PAGE_TOKEN");
    }
}
