//! The audit log: who read or changed which participant, when, why, and how
//! it went; every change Arena and NOKUT sent in; every delivery attempt out.
//!
//! The log is append-only and hash-chained. Entry `n` stores
//! `HMAC(key, hash(n-1) | n | time | every field)`, so an entry that is
//! edited, removed or moved breaks the chain at that entry, and
//! `hurtigspor audit verify` names it. The key is derived from the master key
//! (never stored in the database), so someone who can write to the database
//! but does not hold the gateway's keys cannot forge a chain that verifies.
//! Removing entries at the end leaves a shorter chain that still verifies:
//! `verify` prints the head, to be compared with a head recorded earlier.
//!
//! Entries name participants by their opaque id only; they never hold a
//! national id or a name. The purpose is a short code (see
//! [`parse_purpose`]), not free text, so it cannot carry personal data.

use crate::error::Error;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::{Code, metadata::MetadataMap};

/// The request header that says why a person is read.
pub const PURPOSE_HEADER: &str = "purpose";

/// Longest purpose code.
const MAX_PURPOSE_LEN: usize = 64;

/// The key that chains audit entries.
#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl AuditKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey([redacted])")
    }
}

/// One audited event, before the log gives it a place in the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEntry {
    /// `0192:<orgnr>` of the calling organisation, or the system acting:
    /// `arena` or `nokut` (their changes coming in), `gateway` (deliveries).
    pub organisation: String,
    /// `0192:<orgnr>` of the vendor acting for the organisation, if any.
    pub vendor: Option<String>,
    /// The RPC (`ParticipantService/GetParticipant`), the inbound change
    /// (`inbound/arena/SIAMO.TILTAKDELTAKER U`) or the delivery
    /// (`deliver/nir`).
    pub method: String,
    /// The participant's opaque id, when one is concerned.
    pub participant_id: Option<String>,
    /// Why: the `purpose` header's code.
    pub purpose: Option<String>,
    /// `OK` or the gRPC code's name for an RPC; `handled`, `ignored`,
    /// `superseded`, `retry` or `failed` for an inbound change; `delivered`,
    /// `retry` or `failed` for a delivery.
    pub outcome: String,
    /// What else helps to read the entry: a version, a refusal's reason, a
    /// feed position. Never personal data.
    pub detail: Option<String>,
}

/// An entry as stored: its place in the chain and its hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub sequence: i64,
    /// RFC 3339, UTC.
    pub time: String,
    pub entry: AuditEntry,
    pub previous_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Which entries to list, newest last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub participant_id: Option<String>,
    pub organisation: Option<String>,
    pub method: Option<String>,
    /// RFC 3339 bounds on `time`: from (inclusive), to (exclusive).
    pub from: Option<String>,
    pub to: Option<String>,
    /// Entries after this sequence.
    pub after: i64,
    pub limit: usize,
}

/// The hash before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// The hash of entry `sequence`, chained to `previous`.
pub fn chain_hash(key: &AuditKey, previous: &[u8], sequence: i64, time: &str, e: &AuditEntry) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes any key length");
    let mut field = |bytes: Option<&[u8]>| match bytes {
        // A length prefix per field (and a distinct marker for "absent")
        // keeps ("ab", "c") apart from ("a", "bc") and None apart from "".
        Some(b) => {
            m.update(&[1]);
            m.update(&(b.len() as u64).to_be_bytes());
            m.update(b);
        }
        None => m.update(&[0]),
    };
    field(Some(b"hurtigspor audit v1"));
    field(Some(previous));
    field(Some(&sequence.to_be_bytes()));
    field(Some(time.as_bytes()));
    field(Some(e.organisation.as_bytes()));
    field(e.vendor.as_deref().map(str::as_bytes));
    field(Some(e.method.as_bytes()));
    field(e.participant_id.as_deref().map(str::as_bytes));
    field(e.purpose.as_deref().map(str::as_bytes));
    field(Some(e.outcome.as_bytes()));
    field(e.detail.as_deref().map(str::as_bytes));
    m.finalize().into_bytes().into()
}

/// Where and how a chain is broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Break {
    /// Entry `sequence` is not in the log: the one before it and the one
    /// after it are (`found` is the next one present).
    Missing { sequence: i64, found: i64 },
    /// Entry `sequence`'s fields do not match its hash: it was changed, or
    /// moved here from another place.
    Altered { sequence: i64 },
    /// Entry `sequence` is intact but was chained to another predecessor
    /// than the one now before it: the entry before it was replaced.
    Unlinked { sequence: i64 },
    /// Entry `sequence`, an earlier head, is gone: the log ends at `last`
    /// (entries were removed from the end).
    Truncated { sequence: i64, last: i64 },
}

impl Break {
    /// The first entry that cannot be trusted.
    pub fn sequence(&self) -> i64 {
        match self {
            Self::Missing { sequence, .. }
            | Self::Altered { sequence }
            | Self::Unlinked { sequence }
            | Self::Truncated { sequence, .. } => *sequence,
        }
    }
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing { sequence, found } => {
                write!(f, "entry {sequence} is missing: the entry after {} is {found}", sequence - 1)
            }
            Self::Altered { sequence } => {
                write!(f, "entry {sequence} does not match its hash: it was changed, or moved there from another place")
            }
            Self::Unlinked { sequence } => {
                write!(f, "entry {sequence} does not follow entry {}: the entry before it was replaced", sequence - 1)
            }
            Self::Truncated { sequence, last } => write!(
                f,
                "entry {sequence}, the expected head, is missing: the log ends at entry {last}, so entries were removed from its end"
            ),
        }
    }
}

/// Checks a chain entry by entry, in sequence order, holding only the last
/// entry's hash: a log of any length is checked in constant memory.
pub struct Verifier {
    key: AuditKey,
    previous: (i64, Vec<u8>),
}

impl Verifier {
    pub fn new(key: AuditKey) -> Self {
        Self { key, previous: (0, GENESIS.to_vec()) }
    }

    /// Checks the next entry.
    pub fn check(&mut self, r: &AuditRecord) -> Result<(), Break> {
        let (last, last_hash) = &self.previous;
        if r.sequence != last + 1 {
            return Err(Break::Missing { sequence: last + 1, found: r.sequence });
        }
        let expected = chain_hash(&self.key, &r.previous_hash, r.sequence, &r.time, &r.entry);
        if expected.as_slice() != r.hash.as_slice() {
            return Err(Break::Altered { sequence: r.sequence });
        }
        if r.previous_hash != *last_hash {
            return Err(Break::Unlinked { sequence: r.sequence });
        }
        self.previous = (r.sequence, r.hash.clone());
        Ok(())
    }

    /// The last entry checked and its hash (0 and the genesis hash if none).
    pub fn head(&self) -> (i64, &[u8]) {
        (self.previous.0, &self.previous.1)
    }
}

/// A gRPC code as the audit log writes it (`OK`, `NOT_FOUND`, ...).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Sets an entry's outcome from how a request ended: `OK`, or the error's
/// code, with its stable reason as the detail.
pub fn settle<T>(entry: &mut AuditEntry, result: &Result<T, Error>) {
    match result {
        Ok(_) => entry.outcome = "OK".into(),
        Err(e) => {
            entry.outcome = code_name(e.code()).into();
            entry.detail = Some(match e {
                // Which fields were refused and why; never their values.
                Error::InvalidArgument(violations) => {
                    violations.iter().map(|v| format!("{} {}", v.field, v.reason)).collect::<Vec<_>>().join(", ")
                }
                other => other.reason().to_owned(),
            });
        }
    }
}

/// The request's purpose code, if it sent one. A purpose is a short code
/// (`a-z`, `0-9`, `.`, `_`, `-`, at most 64), e.g. `case-processing`,
/// `follow-up`, `reporting`: a code cannot carry a name or a number the way
/// free text could.
pub fn parse_purpose(metadata: &MetadataMap) -> Result<Option<String>, Error> {
    let Some(value) = metadata.get(PURPOSE_HEADER) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default();
    let valid = !text.is_empty()
        && text.len() <= MAX_PURPOSE_LEN
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b))
        && !has_digit_run(text, 6);
    if !valid {
        return Err(Error::invalid(
            PURPOSE_HEADER,
            "INVALID_PURPOSE",
            "the `purpose` header must be a short code of a-z, 0-9, '.', '-' and '_' (at most 64, with no run of 6 \
             digits), e.g. `case-processing`; say why, never whom",
        ));
    }
    Ok(Some(text.to_owned()))
}

/// Whether `text` has `n` or more digits in a row (a number that could be
/// a national id or part of one).
fn has_digit_run(text: &str, n: usize) -> bool {
    text.as_bytes().split(|b| !b.is_ascii_digit()).any(|run| run.len() >= n)
}

/// `text` with every run of 6 or more digits replaced by `#`s, so that a
/// number another system put in its error text (a national id, say) is not
/// kept in the audit log.
pub fn mask_digit_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            run.push(c);
            continue;
        }
        if run.len() >= 6 {
            out.extend(std::iter::repeat_n('#', run.len()));
        } else {
            out.push_str(&run);
        }
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// The purpose every call about a person must give.
pub fn require_purpose(metadata: &MetadataMap) -> Result<String, Error> {
    parse_purpose(metadata)?.ok_or_else(|| {
        Error::invalid(
            PURPOSE_HEADER,
            "PURPOSE_REQUIRED",
            "reading a person needs a `purpose` request header saying why, e.g. `purpose: case-processing`; \
             it is written to the audit log",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::new([9; 32])
    }

    fn entry(n: i64) -> AuditEntry {
        AuditEntry {
            organisation: "0192:900000014".into(),
            vendor: None,
            method: "ParticipantService/GetParticipant".into(),
            participant_id: Some(format!("p{n}")),
            purpose: Some("case-processing".into()),
            outcome: "OK".into(),
            detail: None,
        }
    }

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut previous = GENESIS.to_vec();
        (1..=n)
            .map(|s| {
                let time = format!("2026-11-23T10:00:{s:02}Z");
                let e = entry(s);
                let hash = chain_hash(&key(), &previous, s, &time, &e).to_vec();
                let r =
                    AuditRecord { sequence: s, time, entry: e, previous_hash: previous.clone(), hash: hash.clone() };
                previous = hash;
                r
            })
            .collect()
    }

    fn verify(records: &[AuditRecord]) -> Result<(), Break> {
        let mut v = Verifier::new(key());
        records.iter().try_for_each(|r| v.check(r))
    }

    #[test]
    fn an_intact_chain_verifies_and_every_kind_of_tampering_is_found_where_it_is() {
        let good = chain(5);
        verify(&good).unwrap();

        let mut edited = good.clone();
        edited[2].entry.outcome = "NOT_FOUND".into();
        assert_eq!(verify(&edited), Err(Break::Altered { sequence: 3 }));

        let mut absent_to_empty = good.clone();
        absent_to_empty[1].entry.vendor = Some(String::new());
        assert_eq!(verify(&absent_to_empty), Err(Break::Altered { sequence: 2 }));

        let mut deleted = good.clone();
        deleted.remove(3);
        assert_eq!(verify(&deleted), Err(Break::Missing { sequence: 4, found: 5 }));

        let mut first_deleted = good.clone();
        first_deleted.remove(0);
        assert_eq!(verify(&first_deleted), Err(Break::Missing { sequence: 1, found: 2 }));

        // Swapping two entries' places (their sequence numbers with them).
        let mut reordered = good.clone();
        reordered.swap(1, 2);
        reordered[1].sequence = 2;
        reordered[2].sequence = 3;
        assert_eq!(verify(&reordered), Err(Break::Altered { sequence: 2 }));

        // An entry rehashed with the right key, but chained to a fake
        // predecessor, breaks at the next entry.
        let mut replaced = good.clone();
        replaced[1].entry.participant_id = Some("someone-else".into());
        replaced[1].previous_hash = good[0].hash.clone();
        replaced[1].hash = chain_hash(&key(), &good[0].hash, 2, &good[1].time, &replaced[1].entry).to_vec();
        assert_eq!(verify(&replaced), Err(Break::Unlinked { sequence: 3 }));

        // Without the key, a rewritten chain does not verify.
        let mut v = Verifier::new(AuditKey::new([1; 32]));
        assert_eq!(v.check(&good[0]), Err(Break::Altered { sequence: 1 }));
    }

    #[test]
    fn the_head_is_the_last_entry_checked() {
        let good = chain(3);
        let mut v = Verifier::new(key());
        assert_eq!(v.head(), (0, GENESIS.as_slice()));
        good.iter().for_each(|r| v.check(r).unwrap());
        assert_eq!(v.head(), (3, good[2].hash.as_slice()));
    }

    #[test]
    fn a_purpose_is_a_short_code() {
        let mut m = MetadataMap::new();
        assert_eq!(parse_purpose(&m).unwrap(), None);
        let reason = |e: Error| match e {
            Error::InvalidArgument(v) => (v[0].field.clone(), v[0].reason),
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(require_purpose(&m).unwrap_err()), ("purpose".into(), "PURPOSE_REQUIRED"));
        m.insert(PURPOSE_HEADER, "case-processing".parse().unwrap());
        assert_eq!(require_purpose(&m).unwrap(), "case-processing");
        for bad in ["Ola Nordmann", "", "12345678901", "fnr-150385", "x".repeat(65).as_str(), "fnr=123"] {
            m.insert(PURPOSE_HEADER, bad.parse().unwrap());
            assert_eq!(reason(parse_purpose(&m).unwrap_err()), ("purpose".into(), "INVALID_PURPOSE"), "{bad:?}");
            assert!(!require_purpose(&m).unwrap_err().to_string().contains(bad) || bad.is_empty());
        }
    }

    #[test]
    fn numbers_in_other_systems_errors_are_masked() {
        assert_eq!(mask_digit_runs("HTTP 422: person 15038512363 unknown"), "HTTP 422: person ########### unknown");
        assert_eq!(mask_digit_runs("ORA-20011 at 12345"), "ORA-20011 at 12345");
        assert_eq!(mask_digit_runs("123456"), "######");
        assert_eq!(mask_digit_runs(""), "");
    }

    #[test]
    fn an_error_settles_as_its_code_and_reason() {
        let mut e = entry(1);
        settle::<()>(&mut e, &Err(Error::not_found("participants/x")));
        assert_eq!((e.outcome.as_str(), e.detail.as_deref()), ("NOT_FOUND", Some("NOT_FOUND")));
        settle(&mut e, &Ok(()));
        assert_eq!(e.outcome, "OK");
    }
}
