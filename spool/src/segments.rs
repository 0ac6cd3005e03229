//! Segment files: `seg-<first seq, 20 digits>.log` in the spool directory.

use crate::record::{self, Decoded};
use crate::SpoolStats;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// The file of the segment starting at `first`.
pub fn path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("seg-{first:020}.log"))
}

/// First sequence numbers of the segments present, ascending.
pub fn list(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".log"))
        {
            if let Ok(first) = n.parse::<u64>() {
                out.push(first);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Makes a created or deleted file's directory entry durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// One segment found on open.
pub struct Found {
    /// First sequence number (from the name).
    pub first_seq: u64,
    /// Valid length after recovery.
    pub len: u64,
}

/// What a recovery scan found.
pub struct Scan {
    /// Segments, ascending.
    pub segments: Vec<Found>,
    /// Whole records.
    pub records: u64,
    /// Bytes cut off.
    pub truncated: u64,
    /// The sequence number after the last record (1 when empty).
    pub next_seq: u64,
}

/// Validates every segment; cuts the last one back to its last whole record (a crash mid-write leaves a torn
/// tail there). A bad record inside an older segment ends that segment's readable part; what follows it is cut too,
/// logged, and counted — the checksum says those bytes are not what was written.
pub fn recover(dir: &Path) -> std::io::Result<Scan> {
    let firsts = list(dir)?;
    let mut scan = Scan {
        segments: Vec::new(),
        records: 0,
        truncated: 0,
        next_seq: 1,
    };
    for first in firsts {
        let p = path(dir, first);
        let mut bytes = Vec::new();
        std::fs::File::open(&p)?.read_to_end(&mut bytes)?;
        let mut at = 0usize;
        let mut next = first;
        while let Decoded::Record { seq, len, .. } = record::decode(&bytes[at..]) {
            at += len;
            next = seq + 1;
            scan.records += 1;
        }
        if at < bytes.len() {
            tracing::warn!(segment = %p.display(), valid = at, total = bytes.len(), "spool: cutting a torn or corrupt tail");
            scan.truncated += (bytes.len() - at) as u64;
            let f = std::fs::OpenOptions::new().write(true).open(&p)?;
            f.set_len(at as u64)?;
            f.sync_all()?;
        }
        scan.next_seq = scan.next_seq.max(next).max(first);
        scan.segments.push(Found {
            first_seq: first,
            len: at as u64,
        });
    }
    Ok(scan)
}

/// Deletes every segment all of whose records are at most `seq` (never the active one).
pub fn delete_through(dir: &Path, seq: u64, active: u64) -> std::io::Result<()> {
    delete_listed(dir, &list(dir)?, seq, active)
}

/// [`delete_through`] over a listing of `dir` that may be out of date by the time a file is removed.
fn delete_listed(dir: &Path, firsts: &[u64], seq: u64, active: u64) -> std::io::Result<()> {
    let mut deleted = false;
    for w in firsts.windows(2) {
        // Segment w[0] holds seqs below w[1].
        if w[1] <= seq + 1 && w[0] != active {
            match std::fs::remove_file(path(dir, w[0])) {
                Ok(()) => deleted = true,
                // Another deleter got there first (the shutdown's last checkpoint beside the periodic one).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    if deleted {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Recounts bytes and segments on disk.
pub fn refresh_stats(dir: &Path, stats: &SpoolStats) {
    let Ok(firsts) = list(dir) else { return };
    let bytes: u64 = firsts
        .iter()
        .filter_map(|&f| std::fs::metadata(path(dir, f)).ok())
        .map(|m| m.len())
        .sum();
    stats.bytes.store(bytes, Ordering::Relaxed);
    stats.segments.store(firsts.len() as u64, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleting_what_another_deleter_already_deleted_is_not_an_error() {
        let d = tempfile::tempdir().unwrap();
        for first in [1u64, 11, 21] {
            std::fs::write(path(d.path(), first), b"x").unwrap();
        }
        let listed = list(d.path()).unwrap();
        // Between the listing and the removal, another deleter removed segment 1.
        std::fs::remove_file(path(d.path(), 1)).unwrap();
        // Records up to 20 stored: segments 1 and 11 go, 21 (the active one) stays.
        delete_listed(d.path(), &listed, 20, 21).unwrap();
        assert_eq!(list(d.path()).unwrap(), vec![21]);
    }
}
