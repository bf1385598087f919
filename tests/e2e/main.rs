//! End-to-end tests: each starts the real gateway on port 0 with a fresh
//! SQLite file and talks gRPC to it over HTTP/2. One binary, many modules.
//! Logs are captured at TRACE level (printed when `TEST_LOG` is set).

mod at_rest;
mod audit;
mod auth;
mod errors;
mod faults;
mod helpers;
mod inbound;
mod journey;
mod jwks;
mod listing;
mod personal_data;
mod platform;
mod reflection;
mod reporting;
mod restart;
mod sync;
mod tls;
mod updates;
