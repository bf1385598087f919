//! The hurtigspor gateway: one canonical participant record per person in
//! the introduction programme, served over gRPC and stored durably.

pub mod api;
pub mod audit;
pub mod auth;
pub mod clock {
    //! The one injected time source: see [`hurtigspor_adapters::clock`].
    pub use hurtigspor_adapters::clock::{Clock, oslo_date};
}
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod http;
pub mod inbound;
pub mod jwks;
pub mod keys;
pub mod report;
pub mod startup;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod tls;

pub use startup::Gateway;
