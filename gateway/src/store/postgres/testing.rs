//! A PostgreSQL database of its own for each test: made from the server
//! that `HURTIGSPOR_TEST_DATABASE_URL` names, dropped when the test ends, so
//! tests run in parallel and leave nothing behind. Without the variable,
//! PostgreSQL tests are skipped, and the first one to skip says so once.

use std::{io::Write, sync::Once};

/// The variable that names the test server, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub const TEST_DATABASE_URL: &str = "HURTIGSPOR_TEST_DATABASE_URL";

/// A database made for one test; dropped (with its connections) on drop.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// Where the test's database is.
    pub url: String,
}

impl TestDatabase {
    /// A new, empty database; `None` (after one notice for the whole run)
    /// when no test server is configured.
    pub async fn create() -> Option<Self> {
        let Ok(admin_url) = std::env::var(TEST_DATABASE_URL) else {
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| {
                // Past the test harness's capture, so that it is seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "{TEST_DATABASE_URL} is not set: the PostgreSQL tests are skipped (set it to e.g. postgres://postgres@127.0.0.1:5432/postgres to run them)"
                );
            });
            return None;
        };
        let name = format!("hurtigspor_test_{}", hex::encode(rand::random::<[u8; 8]>()));
        let admin = super::connection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{TEST_DATABASE_URL} is set, but {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        let url = with_database(&admin_url, &name);
        Some(Self { admin_url, name, url })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // the database is dropped from a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async {
                let admin = super::connection::connect(&admin_url).await?;
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
                Ok::<_, crate::store::StoreError>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            let _ = writeln!(std::io::stderr(), "could not drop the test database {}", self.name);
        }
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}
