//! Mocks of the systems the gateway keeps in step: an Arena-style (NAV) API,
//! and later NIR (IMDi) and NOKUT (HK-dir). Each plays *another
//! organisation's* system, in that system's own vocabulary, formats,
//! authentication and quirks, and can fail the way real systems fail.
//!
//! Every mock runs on its own port, from the `hurtigspor-mocks` binary or
//! in-process from tests (port 0), and shares the admin API of
//! [`server::admin_routes`]: faults, effect log and virtual clock.

pub mod arena;
pub mod clock;
pub mod effects;
pub mod faults;
pub mod nir;
pub mod nokut;
pub mod server;
