//! Online backup and restore of the embedded store.
//!
//! A backup is SQLite's online backup of the database file — a consistent snapshot even while a collector is
//! writing (WAL readers see one transaction boundary) — plus a small manifest. What the running collector still holds
//! in memory (at most one flush interval, a second by default) is not in it.

use super::{schema, DB_FILE};
use crate::StoreError;
use rusqlite::Connection;
use std::path::Path;

/// The manifest written beside the copy.
pub const MANIFEST: &str = "fieldvitals-backup.json";

/// Copies the store in `data_dir` to `to_dir` (created; must not already hold a backup).
pub fn backup(data_dir: &Path, to_dir: &Path) -> Result<u64, StoreError> {
    let src = data_dir.join(DB_FILE);
    if !src.exists() {
        return Err(StoreError::Other(format!(
            "no store to back up: {} does not exist",
            src.display()
        )));
    }
    std::fs::create_dir_all(to_dir)
        .map_err(|e| StoreError::Other(format!("cannot create {}: {e}", to_dir.display())))?;
    let dest = to_dir.join(DB_FILE);
    if dest.exists() {
        return Err(StoreError::Other(format!(
            "{} already holds a backup; choose an empty directory",
            to_dir.display()
        )));
    }
    let conn = schema::open_reader(&src)?;
    conn.backup(rusqlite::DatabaseName::Main, &dest, None)?;
    let copy = Connection::open(&dest)?;
    check_integrity(&copy)?;
    let rows = histogram_rows(&copy)?;
    let manifest = format!(
        "{{\"format\":\"fieldvitals-embedded\",\"schema_version\":{},\"rows\":{rows},\"created_at\":\"{}\"}}\n",
        copy.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?,
        chrono::Utc::now().to_rfc3339()
    );
    std::fs::write(to_dir.join(MANIFEST), manifest)
        .map_err(|e| StoreError::Other(format!("cannot write the manifest: {e}")))?;
    Ok(rows)
}

/// Restores a backup into `data_dir`, which must not hold a store unless `force` (then it is replaced).
/// The collector must not be running on `data_dir`.
pub fn restore(from_dir: &Path, data_dir: &Path, force: bool) -> Result<u64, StoreError> {
    let src = from_dir.join(DB_FILE);
    if !src.exists() || !from_dir.join(MANIFEST).exists() {
        return Err(StoreError::Other(format!(
            "{} is not a fieldvitals backup",
            from_dir.display()
        )));
    }
    let backup = Connection::open_with_flags(&src, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    check_integrity(&backup)?;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StoreError::Other(format!("cannot create {}: {e}", data_dir.display())))?;
    let dest = data_dir.join(DB_FILE);
    if dest.exists() && !force {
        return Err(StoreError::Other(format!(
            "{} already holds a store; restore into an empty data dir or pass --force to replace it",
            data_dir.display()
        )));
    }
    // Write next to the target and rename, so a failed restore never leaves half a database in place.
    let tmp = data_dir.join(format!("{DB_FILE}.restoring"));
    let _ = std::fs::remove_file(&tmp);
    backup.backup(rusqlite::DatabaseName::Main, &tmp, None)?;
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(data_dir.join(format!("{DB_FILE}{suffix}")));
    }
    std::fs::rename(&tmp, &dest).map_err(|e| {
        StoreError::Other(format!("cannot move the restored store into place: {e}"))
    })?;
    histogram_rows(&Connection::open(&dest)?)
}

/// Minute, hour and day rows: `hist`, plus `hist_minute` where the file has it (schema version 5 on; a backup
/// made by an older collector restores as it is and is migrated when a collector opens it).
fn histogram_rows(conn: &Connection) -> Result<u64, StoreError> {
    let mut rows: u64 = conn.query_row("SELECT count(*) FROM hist", [], |r| r.get(0))?;
    let has_minutes: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'hist_minute'",
        [],
        |r| r.get(0),
    )?;
    if has_minutes {
        rows += conn.query_row("SELECT count(*) FROM hist_minute", [], |r| {
            r.get::<_, u64>(0)
        })?;
    }
    Ok(rows)
}

fn check_integrity(conn: &Connection) -> Result<(), StoreError> {
    let result: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if result != "ok" {
        return Err(StoreError::Other(format!(
            "integrity check failed: {result}"
        )));
    }
    Ok(())
}
