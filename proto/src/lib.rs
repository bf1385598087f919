//! The `hurtigspor.v1` gRPC contract, generated at build time from `proto/`.
//!
//! Vendor systems code against these names; the `.proto` files are the source
//! of truth.

#![allow(clippy::all, missing_docs)]

pub mod google {
    pub mod r#type {
        include!(concat!(env!("OUT_DIR"), "/google.r#type.rs"));
    }
}

pub mod hurtigspor {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/hurtigspor.v1.rs"));
    }
}

pub use hurtigspor::v1;

/// The encoded `FileDescriptorSet` of the contract, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hurtigspor_descriptor.bin"));

/// `Debug` without personal data: national ids and names are never printed,
/// so a stray `{:?}` cannot leak them into a log.
mod masked_debug {
    use super::v1::{LookupParticipantRequest, Participant};
    use std::fmt;

    impl fmt::Debug for Participant {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Participant")
                .field("name", &self.name)
                .field("national_id", &"<redacted>")
                .field("given_name", &"<redacted>")
                .field("family_name", &"<redacted>")
                .field("kommunenummer", &self.kommunenummer)
                .field("nav_office", &self.nav_office)
                .field("programme", &self.programme)
                .field("hurtigspor", &self.hurtigspor)
                .field("measures", &self.measures.len())
                .field("recognition_cases", &self.recognition_cases.len())
                .field("etag", &self.etag)
                .finish_non_exhaustive()
        }
    }

    impl fmt::Debug for LookupParticipantRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("LookupParticipantRequest").field("national_id", &"<redacted>").finish()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn debug_hides_personal_data() {
            let p = Participant {
                national_id: "15838510075".into(),
                given_name: "Kari".into(),
                family_name: "Nordmann".into(),
                kommunenummer: "0301".into(),
                ..Default::default()
            };
            let text = format!("{p:?} {:?}", LookupParticipantRequest { national_id: "15838510075".into() });
            for secret in ["15838510075", "Kari", "Nordmann"] {
                assert!(!text.contains(secret), "{text}");
            }
            assert!(text.contains("0301"));
        }
    }
}
