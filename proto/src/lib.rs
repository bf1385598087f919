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
