//! How a record and a time are kept, the same in every dialect, so that a
//! database can move between dialects row by row.

use crate::error::Error;
use chrono::{DateTime, SecondsFormat, Utc};
use hurtigspor_proto::v1::Participant;
use prost::Message;

/// A stored record: the participant without its national id (kept sealed
/// in its own column) and without warnings (derived on read).
pub(crate) fn encode_record(p: &Participant) -> Vec<u8> {
    let mut stored = p.clone();
    stored.national_id.clear();
    stored.warnings.clear();
    stored.encode_to_vec()
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Participant, Error> {
    Participant::decode(bytes).map_err(|e| Error::Internal(format!("stored record does not decode: {e}")))
}

/// A time as stored: RFC 3339 in UTC with microseconds, so text order is
/// time order.
pub(crate) fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}
