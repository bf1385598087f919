//! The PostgreSQL dialect, for several gateway instances on one database.
//!
//! Built in steps; so far its schema: the versioned migrations under
//! `gateway/migrations/postgres/` (the same version numbers as SQLite's),
//! applied with checksums under an advisory lock, so that instances starting
//! together migrate exactly once. The schema already carries what several
//! instances need: a transaction id on every change-log row and audit entry
//! (a reader stops at the visibility horizon instead of skipping a change
//! that commits late), an owner on every delivery lease, a reader per
//! inbound feed, and an audit log chained after append.
//!
//! | file | what it holds |
//! |---|---|
//! | `connection` | connecting; PostgreSQL's errors as [`StoreError`](super::StoreError)s (the one place) |
//! | `migrations` | the versioned schema and its runner |
//! | `testing` | a database of its own for each test, made and dropped |

mod connection;
mod migrations;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub(crate) use migrations::migrate;

/// The server and database of a URL, without its user's password.
pub(crate) fn describe(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else { return "(not a URL)".into() };
    let rest = &url[start..];
    let rest = rest.split_once('@').map_or(rest, |(_, host)| host);
    rest.split_once('?').map_or(rest, |(r, _)| r).to_owned()
}
