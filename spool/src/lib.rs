//! fieldvitals' durable spool: what sits between "accepted" (the 204) and "stored".
//!
//! Data path: the ingest handler hands an encoded beacon to [`Spool::append`]; one writer thread takes every append
//! waiting at that moment, frames them ([`record`]) with a sequence number and a CRC, writes them to the active
//! segment file with one `write`, and only then answers each append with its sequence number — so a beacon answered
//! 204 is in the file and survives a crash or `kill -9` of the collector. A syncer thread `fdatasync`s the active
//! segment every [`SpoolOptions::fsync_interval`] (group commit); with an interval of zero the writer syncs before it
//! answers, and then a power loss cannot cost an acknowledged beacon either. The store side reads the log in order
//! with a [`Reader`] from its own checkpoint (the embedded store keeps it in the same SQLite transaction as the data,
//! which makes replay exactly-once), and reports progress with [`Spool::checkpoint`], which deletes segments whose
//! every record is stored. On open, a torn tail left by a crash is cut off at the last whole, checksummed record.
//!
//! Bounded: past [`SpoolOptions::max_bytes`] on disk, appends fail at once with [`SpoolError::Full`]; a full disk
//! fails the appends of that write with [`SpoolError::DiskFull`] after cutting the partial write back off, and
//! appends succeed again when space returns.

pub mod record;
mod segments;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Why an append or open failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds `max_bytes` not yet stored: shed load.
    #[error("spool full: {0} bytes are waiting to be stored")]
    Full(u64),
    /// The file system is full.
    #[error("disk full: cannot write the spool in {0}")]
    DiskFull(String),
    /// Any other I/O error.
    #[error("spool I/O error: {0}")]
    Io(String),
    /// The spool is shutting down.
    #[error("spool closed")]
    Closed,
}

fn io_err(e: std::io::Error, dir: &Path) -> SpoolError {
    // ENOSPC (28) and EDQUOT (122): no room, which passes when space returns.
    if matches!(e.raw_os_error(), Some(28) | Some(122)) {
        SpoolError::DiskFull(dir.display().to_string())
    } else {
        SpoolError::Io(e.to_string())
    }
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Most bytes on disk before appends are refused.
    pub max_bytes: u64,
    /// A new segment starts past this size.
    pub segment_bytes: u64,
    /// How often written records are `fdatasync`ed; zero syncs before every acknowledgement.
    pub fsync_interval: Duration,
    /// Appends that may wait for the writer thread.
    pub queue: usize,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_bytes: 1 << 30,
            segment_bytes: 32 << 20,
            fsync_interval: Duration::from_millis(5),
            queue: 65_536,
        }
    }
}

/// Counters and gauges for metrics.
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// Bytes in segment files.
    pub bytes: AtomicU64,
    /// Segment files.
    pub segments: AtomicU64,
    /// Records appended since open.
    pub appended: AtomicU64,
    /// The last sequence number written.
    pub last_seq: AtomicU64,
    /// The checkpoint: everything up to it is stored.
    pub checkpoint: AtomicU64,
    /// Unix ms at which the oldest record after the checkpoint was appended (0: none waiting).
    pub oldest_unstored_ms: AtomicU64,
    /// `fdatasync` calls, and their total duration in µs.
    pub fsyncs: AtomicU64,
    /// Total µs spent in `fdatasync`.
    pub fsync_micros: AtomicU64,
    /// Bytes of torn or corrupt tail cut off when opening.
    pub truncated_on_open: AtomicU64,
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Whole records found on disk.
    pub records: u64,
    /// Bytes cut off the end of the last segment (a torn write).
    pub truncated_bytes: u64,
    /// The next sequence number to be assigned.
    pub next_seq: u64,
}

struct Append {
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<u64, SpoolError>>,
}

struct Shared {
    dir: PathBuf,
    options: SpoolOptions,
    stats: SpoolStats,
    /// (active segment's first seq, its written length, last seq written): readers follow it.
    written: watch::Sender<Mark>,
    /// The file the syncer syncs.
    active: Mutex<Option<File>>,
    closed: AtomicBool,
    /// Append times of records not yet checkpointed, coarse (one entry per write), for the oldest-age gauge.
    pending_times: Mutex<std::collections::VecDeque<(u64, u64)>>,
}

/// How far the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    /// First sequence number of the active segment.
    pub segment: u64,
    /// Bytes written to it.
    pub offset: u64,
    /// Last sequence number written (0: none).
    pub last_seq: u64,
}

/// The spool.
#[derive(Clone)]
pub struct Spool {
    tx: mpsc::SyncSender<Append>,
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Spool {
    /// Opens (creating) the spool in `dir`, cutting off a torn tail. Sequence numbers continue from what is on disk,
    /// and never go below `min_next_seq` (the store's checkpoint + 1, so a deleted spool cannot reuse stored ids).
    pub fn open(
        dir: &Path,
        options: SpoolOptions,
        min_next_seq: u64,
    ) -> Result<(Spool, Recovery), SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(e, dir))?;
        let scan = segments::recover(dir).map_err(|e| io_err(e, dir))?;
        let next_seq = scan.next_seq.max(min_next_seq).max(1);
        // The active segment: the last one if any, else a new one starting at next_seq. A segment whose name is
        // below min_next_seq but holds nothing is fine: names only order segments and give their first seq.
        let (active_first, active_len) = match scan.segments.last() {
            Some(s) if scan.next_seq >= min_next_seq => (s.first_seq, s.len),
            _ => (next_seq, 0),
        };
        let path = segments::path(dir, active_first);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(e, dir))?;
        segments::sync_dir(dir).map_err(|e| io_err(e, dir))?;
        let stats = SpoolStats::default();
        stats
            .truncated_on_open
            .store(scan.truncated, Ordering::Relaxed);
        stats.last_seq.store(next_seq - 1, Ordering::Relaxed);
        let (written, _) = watch::channel(Mark {
            segment: active_first,
            offset: active_len,
            last_seq: next_seq - 1,
        });
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            options: options.clone(),
            stats,
            written,
            active: Mutex::new(Some(file.try_clone().map_err(|e| io_err(e, dir))?)),
            closed: AtomicBool::new(false),
            pending_times: Mutex::default(),
        });
        segments::refresh_stats(&shared.dir, &shared.stats);
        let (tx, rx) = mpsc::sync_channel::<Append>(options.queue.max(1));
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("spool-writer".into())
                .spawn(move || writer_loop(shared, rx, file, active_first, active_len, next_seq))
                .map_err(|e| SpoolError::Io(e.to_string()))?
        };
        let mut threads = vec![writer];
        if !options.fsync_interval.is_zero() {
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("spool-syncer".into())
                    .spawn(move || syncer_loop(shared))
                    .map_err(|e| SpoolError::Io(e.to_string()))?,
            );
        }
        let recovery = Recovery {
            records: scan.records,
            truncated_bytes: scan.truncated,
            next_seq,
        };
        Ok((
            Spool {
                tx,
                shared,
                threads: Arc::new(Mutex::new(threads)),
            },
            recovery,
        ))
    }

    /// Appends a record. Resolves with its sequence number once it is written (and synced, with a zero fsync
    /// interval). Fails at once when the spool is full or closed.
    pub fn append(
        &self,
        payload: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<u64, SpoolError>>, SpoolError> {
        let bytes = self.shared.stats.bytes.load(Ordering::Relaxed);
        if bytes >= self.shared.options.max_bytes {
            return Err(SpoolError::Full(bytes));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Append { payload, reply })
            .map_err(|e| match e {
                mpsc::TrySendError::Full(_) => SpoolError::Full(bytes),
                mpsc::TrySendError::Disconnected(_) => SpoolError::Closed,
            })?;
        Ok(rx)
    }

    /// A reader of every record with a sequence number above `after`, in order.
    pub fn reader(&self, after: u64) -> Reader {
        Reader {
            shared: self.shared.clone(),
            after,
            file: None,
            buf: Vec::new(),
            start: 0,
            watch: self.shared.written.subscribe(),
        }
    }

    /// Everything up to `seq` is durably stored downstream: segments holding nothing newer are deleted.
    pub fn checkpoint(&self, seq: u64) {
        let prev = self
            .shared
            .stats
            .checkpoint
            .fetch_max(seq, Ordering::Relaxed);
        if seq <= prev {
            return;
        }
        let active = self.shared.written.borrow().segment;
        if let Err(e) = segments::delete_through(&self.shared.dir, seq, active) {
            tracing::warn!(error = %e, "spool: could not delete stored segments; will retry");
        }
        segments::refresh_stats(&self.shared.dir, &self.shared.stats);
        let mut times = self.shared.pending_times.lock().expect("spool lock");
        while times.front().is_some_and(|&(s, _)| s <= seq) {
            times.pop_front();
        }
        let oldest = times.front().map_or(0, |&(_, t)| t);
        self.shared
            .stats
            .oldest_unstored_ms
            .store(oldest, Ordering::Relaxed);
    }

    /// Counters and gauges.
    pub fn stats(&self) -> &SpoolStats {
        &self.shared.stats
    }

    /// How far the log is written.
    pub fn mark(&self) -> Mark {
        *self.shared.written.borrow()
    }

    /// Stops taking appends, writes and syncs what is queued, and stops the threads.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        // Waking the writer: a zero-length sentinel is never written (closed is checked first).
        let (reply, _) = oneshot::channel();
        let _ = self.tx.try_send(Append {
            payload: Vec::new(),
            reply,
        });
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock().expect("spool lock"));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn writer_loop(
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Append>,
    mut file: File,
    mut segment: u64,
    mut len: u64,
    mut seq: u64,
) {
    let mut buf = Vec::with_capacity(1 << 20);
    let mut batch: Vec<Append> = Vec::new();
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(a) => Some(a),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let closing = shared.closed.load(Ordering::Relaxed);
        batch.extend(first);
        // Everything waiting now goes into this one write: that is the group commit.
        while batch.len() < 8192 {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        batch.retain(|a| !(closing && a.payload.is_empty()));
        if !batch.is_empty() {
            if len >= shared.options.segment_bytes {
                match roll(&shared, &mut file, seq) {
                    Ok(()) => {
                        segment = seq;
                        len = 0;
                    }
                    Err(e) => {
                        for a in batch.drain(..) {
                            let _ = a.reply.send(Err(e.clone()));
                        }
                        continue;
                    }
                }
            }
            buf.clear();
            let first_seq = seq;
            for a in &batch {
                record::encode(&mut buf, seq, &a.payload);
                seq += 1;
            }
            let result = file.write_all(&buf).and_then(|()| {
                if shared.options.fsync_interval.is_zero() {
                    timed_sync(&shared.stats, &file)
                } else {
                    Ok(())
                }
            });
            match result {
                Ok(()) => {
                    len += buf.len() as u64;
                    shared
                        .stats
                        .bytes
                        .fetch_add(buf.len() as u64, Ordering::Relaxed);
                    shared
                        .stats
                        .appended
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    shared.stats.last_seq.store(seq - 1, Ordering::Relaxed);
                    {
                        let mut times = shared.pending_times.lock().expect("spool lock");
                        let t = now_ms();
                        if times.is_empty() {
                            shared.stats.oldest_unstored_ms.store(t, Ordering::Relaxed);
                        }
                        times.push_back((seq - 1, t));
                        if times.len() > 100_000 {
                            times.pop_front();
                        }
                    }
                    shared.written.send_replace(Mark {
                        segment,
                        offset: len,
                        last_seq: seq - 1,
                    });
                    for (i, a) in batch.drain(..).enumerate() {
                        let _ = a.reply.send(Ok(first_seq + i as u64));
                    }
                }
                Err(e) => {
                    // Cut a partial write back off so the log stays a sequence of whole records, and reuse the
                    // sequence numbers: nothing of this batch was acknowledged.
                    let _ = file.set_len(len);
                    let _ = file.seek(SeekFrom::Start(len));
                    seq = first_seq;
                    let err = io_err(e, &shared.dir);
                    tracing::error!(error = %err, "spool write failed");
                    for a in batch.drain(..) {
                        let _ = a.reply.send(Err(err.clone()));
                    }
                }
            }
        }
        if closing {
            break;
        }
    }
    let _ = timed_sync(&shared.stats, &file);
    *shared.active.lock().expect("spool lock") = None;
}

fn roll(shared: &Shared, file: &mut File, next_seq: u64) -> Result<(), SpoolError> {
    timed_sync(&shared.stats, file).map_err(|e| io_err(e, &shared.dir))?;
    let path = segments::path(&shared.dir, next_seq);
    let fresh = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io_err(e, &shared.dir))?;
    segments::sync_dir(&shared.dir).map_err(|e| io_err(e, &shared.dir))?;
    *shared.active.lock().expect("spool lock") =
        Some(fresh.try_clone().map_err(|e| io_err(e, &shared.dir))?);
    *file = fresh;
    segments::refresh_stats(&shared.dir, &shared.stats);
    Ok(())
}

fn timed_sync(stats: &SpoolStats, file: &File) -> std::io::Result<()> {
    let t = Instant::now();
    file.sync_data()?;
    stats.fsyncs.fetch_add(1, Ordering::Relaxed);
    stats
        .fsync_micros
        .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
    Ok(())
}

fn syncer_loop(shared: Arc<Shared>) {
    let mut synced_seq = 0;
    while !shared.closed.load(Ordering::Relaxed) {
        std::thread::sleep(shared.options.fsync_interval);
        let last = shared.written.borrow().last_seq;
        if last == synced_seq {
            continue;
        }
        let file = shared
            .active
            .lock()
            .expect("spool lock")
            .as_ref()
            .and_then(|f| f.try_clone().ok());
        if let Some(f) = file {
            match timed_sync(&shared.stats, &f) {
                Ok(()) => synced_seq = last,
                Err(e) => tracing::error!(error = %e, "spool fdatasync failed"),
            }
        }
    }
}

/// Reads records in order from a checkpoint, following the writer.
pub struct Reader {
    shared: Arc<Shared>,
    after: u64,
    file: Option<(u64, File, u64)>,
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` begin: records are consumed by moving this, and the buffer is compacted only
    /// before a refill (draining the front per record moved the whole buffer for every record).
    start: usize,
    watch: watch::Receiver<Mark>,
}

impl Reader {
    /// The next record after the last one returned, waiting for one to be written. `None` once the spool is
    /// closed and everything written has been read.
    pub async fn next(&mut self) -> Option<Result<(u64, Vec<u8>), SpoolError>> {
        loop {
            match self.try_next() {
                Ok(Some(r)) => return Some(Ok(r)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            let last = self.watch.borrow_and_update().last_seq;
            if last > self.after {
                continue;
            }
            if self.shared.closed.load(Ordering::Relaxed)
                && self.shared.active.lock().expect("spool lock").is_none()
            {
                return None;
            }
            // Wake on a write, or every 100 ms to notice a close.
            let _ = tokio::time::timeout(Duration::from_millis(100), self.watch.changed()).await;
        }
    }

    /// A record if one is readable now.
    fn try_next(&mut self) -> Result<Option<(u64, Vec<u8>)>, SpoolError> {
        let mark = *self.watch.borrow();
        if mark.last_seq <= self.after {
            return Ok(None);
        }
        loop {
            if self.file.is_none() {
                // The segment holding after+1: the last one whose first seq is at most that.
                let firsts =
                    segments::list(&self.shared.dir).map_err(|e| io_err(e, &self.shared.dir))?;
                let Some(&first) = firsts
                    .iter()
                    .filter(|&&f| f <= self.after + 1)
                    .max()
                    .or(firsts.first())
                else {
                    return Ok(None);
                };
                let f = File::open(segments::path(&self.shared.dir, first))
                    .map_err(|e| io_err(e, &self.shared.dir))?;
                self.file = Some((first, f, 0));
                self.buf.clear();
                self.start = 0;
            }
            let (first, file, pos) = self.file.as_mut().expect("set above");
            // Readable end: the writer's mark for the active segment; the whole file for older ones.
            let end = if *first == mark.segment {
                mark.offset
            } else {
                file.metadata()
                    .map_err(|e| io_err(e, &self.shared.dir))?
                    .len()
            };
            // `pos` is the file offset of `buf[start]`.
            while (*pos as usize) < end as usize {
                let unread = self.buf.len() - self.start;
                if unread < record::HEADER + 64 * 1024 && (*pos + unread as u64) < end {
                    self.buf.drain(..self.start);
                    self.start = 0;
                    let want = ((end - *pos) as usize - unread).min(256 * 1024);
                    self.buf.resize(unread + want, 0);
                    let n = file
                        .read(&mut self.buf[unread..])
                        .map_err(|e| io_err(e, &self.shared.dir))?;
                    self.buf.truncate(unread + n);
                }
                match record::decode(&self.buf[self.start..]) {
                    record::Decoded::Record { seq, payload, len } => {
                        let out = payload.to_vec();
                        self.start += len;
                        *pos += len as u64;
                        if seq > self.after {
                            self.after = seq;
                            return Ok(Some((seq, out)));
                        }
                    }
                    record::Decoded::Incomplete
                        if (*pos + (self.buf.len() - self.start) as u64) < end =>
                    {
                        continue
                    }
                    record::Decoded::Incomplete => break,
                    record::Decoded::Corrupt => {
                        return Err(SpoolError::Io(format!(
                            "corrupt record in segment {first} at byte {pos}"
                        )));
                    }
                }
            }
            if *first == mark.segment {
                return Ok(None);
            }
            // An older segment is read to its end: move on to the next one (sequence numbers may jump between
            // segments after a spool was cleared; the segment order is what counts).
            let done = *first;
            let firsts =
                segments::list(&self.shared.dir).map_err(|e| io_err(e, &self.shared.dir))?;
            let Some(&next) = firsts.iter().find(|&&f| f > done) else {
                self.file = None;
                return Ok(None);
            };
            let f = File::open(segments::path(&self.shared.dir, next))
                .map_err(|e| io_err(e, &self.shared.dir))?;
            self.file = Some((next, f, 0));
            self.buf.clear();
            self.start = 0;
        }
    }
}
