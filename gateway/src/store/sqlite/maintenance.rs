//! Work on the national ids as a whole: sealing what a migration left in
//! plain text, checking at open that every key in use is configured, and
//! rotating every value to the active key.

use super::connection::open_connection;
use crate::{
    crypto::Keyring,
    store::{Rotation, StoreError, error::Result, rules},
};
use rusqlite::{Connection, TransactionBehavior, params};
use std::{ops::ControlFlow, path::Path};

/// See [`crate::store::Maintenance::rotate_keys`]. Runs on its own
/// connection; blocks.
pub(crate) fn rotate_keys(
    path: &Path,
    keyring: &Keyring,
    batch: usize,
    mut progress: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<Rotation> {
    let active = keyring.active();
    let mut conn = open_connection(path, false)?;
    let total: usize =
        conn.query_row("SELECT count(*) FROM participants WHERE national_id_key IS NOT ?1", [active], |r| r.get(0))?;
    let mut done = 0;
    let mut after = 0i64;
    let mut finished = true;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<(i64, String, rules::SealedId)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT position, id, national_id_key, national_id_sealed FROM participants
                 WHERE position > ?1 AND national_id_key IS NOT ?2 ORDER BY position LIMIT ?3",
            )?;
            stmt.query_map(params![after, active, batch.max(1) as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, rules::SealedId { key_id: r.get(2)?, bytes: r.get(3)? }))
            })?
            .collect::<Result<_, _>>()?
        };
        let Some(last) = rows.last().map(|r| r.0) else { break };
        for (_, id, sealed) in rows {
            let national_id = rules::open_national_id(keyring, &id, sealed.clone())?;
            let value = keyring.seal(&id, &national_id)?;
            tx.execute(
                "UPDATE participants SET national_id_key = ?2, national_id_sealed = ?3
                 WHERE id = ?1 AND national_id_key IS ?4 AND national_id_sealed IS ?5",
                params![id, value.key_id, value.bytes, sealed.key_id, sealed.bytes],
            )?;
            done += 1;
        }
        tx.commit()?;
        after = last;
        if progress(done, total.max(done)).is_break() {
            finished = false;
            break;
        }
    }
    // The old ciphertext is zeroed in the file (secure_delete); clear it
    // from the WAL too, as far as readers allow.
    if done > 0 {
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
    }
    let mut stmt =
        conn.prepare("SELECT coalesce(national_id_key, ''), count(*) FROM participants GROUP BY national_id_key")?;
    let by_key = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    Ok(Rotation { active: active.to_owned(), reencrypted: done, finished, by_key })
}

/// Encrypts the national ids that migration 4 set aside in plain text, in
/// one transaction, then rewrites the file (VACUUM) and truncates the WAL:
/// with `secure_delete` the rows deleted are zeroed, and VACUUM plus the
/// TRUNCATE checkpoint leave no page of the file and no WAL frame that held
/// them. The set-aside table is dropped only after that, so an interrupted
/// run (or a WAL another process kept open) is finished at the next open.
pub(super) fn seal_plaintext_national_ids(conn: &mut Connection, keyring: &Keyring) -> Result<()> {
    let pending: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'national_id_plaintext'",
        [],
        |r| r.get(0),
    )?;
    if !pending {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut sealed = 0;
    {
        let mut select = tx.prepare("SELECT participant_id, national_id FROM national_id_plaintext")?;
        let mut update =
            tx.prepare("UPDATE participants SET national_id_key = ?2, national_id_sealed = ?3 WHERE id = ?1")?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let national_id: String = row.get(1)?;
            let value = keyring.seal(&id, &national_id)?;
            update.execute(params![id, value.key_id, value.bytes])?;
            sealed += 1;
        }
    }
    tx.execute("DELETE FROM national_id_plaintext", [])?;
    let stored: i64 = tx.query_row("SELECT count(*) FROM participants", [], |r| r.get(0))?;
    tx.commit()?;
    // A database that never held a participant has no plaintext to clear.
    if stored > 0 {
        conn.execute_batch("VACUUM")?;
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(StoreError::Unavailable(
                "national ids were encrypted, but another process holds the database open, so its WAL could not be cleared of the old plain text; stop that process and start again".into(),
            ));
        }
    }
    conn.execute_batch("DROP TABLE national_id_plaintext")?;
    if sealed > 0 {
        tracing::info!(participants = sealed, "national ids stored in plain text were encrypted");
    }
    Ok(())
}

/// Every key id the database holds national ids under must be in the
/// keyring and must decrypt one of them, so that a missing or wrong key
/// stops the start instead of failing reads later.
pub(super) fn check_keys(conn: &Connection, keyring: &Keyring) -> Result<()> {
    let mut stmt = conn.prepare(
        "SELECT national_id_key, count(*), min(id) FROM participants GROUP BY national_id_key ORDER BY national_id_key",
    )?;
    let in_use: Vec<(Option<String>, i64, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
    for (key_id, count, sample) in in_use {
        let sealed: Option<Vec<u8>> =
            conn.query_row("SELECT national_id_sealed FROM participants WHERE id = ?1", [&sample], |r| r.get(0))?;
        rules::check_key(keyring, key_id.as_deref(), count, &sample, sealed.as_deref())?;
    }
    Ok(())
}
