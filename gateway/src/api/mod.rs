//! The gRPC API: request handling on top of the domain rules and the store.

pub mod pagination;
pub mod participants;
pub mod sync;

use crate::error::Error;

/// The opaque part of `participants/{id}`: 32 lowercase hex characters.
pub fn new_participant_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Parses `participants/{id}`. The value is never echoed back: a caller that
/// puts a national id here by mistake must not see it in errors or logs.
pub fn parse_name(name: &str, field: &str) -> Result<String, Error> {
    let id = name.strip_prefix("participants/").unwrap_or("");
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(id.to_owned())
    } else if name.is_empty() {
        Err(Error::invalid(field, "REQUIRED", "is required: a resource name of the form participants/{participant}"))
    } else {
        Err(Error::invalid(
            field,
            "INVALID_RESOURCE_NAME",
            "must be a resource name of the form participants/{participant}, as returned by CreateParticipant; national ids never go in names (use LookupParticipant)",
        ))
    }
}

/// Checks a client request id: 1-128 characters of letters, digits and `-_.:`.
pub fn check_request_id(request_id: &str) -> Result<(), Error> {
    let ok = request_id.len() <= 128 && request_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "request_id",
            "INVALID_REQUEST_ID",
            "must be at most 128 characters of letters, digits, '-', '_', '.' and ':', e.g. a UUID",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let id = new_participant_id();
        assert_eq!(parse_name(&format!("participants/{id}"), "name").unwrap(), id);
        for bad in [
            "",
            "participants/",
            "participants/15038512363",
            "people/abc",
            &format!("participants/{}", id.to_uppercase()),
        ] {
            let err = parse_name(bad, "name").unwrap_err();
            assert!(!err.to_string().contains("15038512363"));
            let crate::error::Error::InvalidArgument(v) = err else { panic!("{bad}") };
            assert_eq!(v[0].field, "name");
            assert!(!v[0].description.contains("15038512363"));
        }
    }

    #[test]
    fn request_ids() {
        assert!(check_request_id("").is_ok());
        assert!(check_request_id("3f1c-aa:1.b_2").is_ok());
        assert!(check_request_id("has space").is_err());
        assert!(check_request_id(&"a".repeat(129)).is_err());
    }
}
