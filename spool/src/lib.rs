//! fieldvitals' durable spool: what sits between "accepted" (the 204) and "stored".
//!
//! Data path: the ingest handler calls [`Spool::append`] with an encoded beacon; the append frames it ([`record`])
//! into its thread's open batch, where the other appends that become ready on that thread in the same scheduler
//! turn join it; the batch's first append then numbers the records, checksums them and writes them all to the
//! active segment file with one `write`, under the spool's lock, and only then does each append return its
//! sequence number — so a beacon answered 204 is in the file and survives a crash or `kill -9` of the collector.
//! A syncer thread `fdatasync`s what was written every [`SpoolOptions::fsync_interval`]; with an interval of zero
//! each append waits for a sync instead, and the first waiter syncs for every append queued behind it (group
//! commit): then a power loss cannot cost an acknowledged beacon either. The store side reads the log in order
//! with a [`Reader`] from its own checkpoint (the embedded store keeps it in the same SQLite transaction as the
//! data, which makes replay exactly-once), and reports progress with [`Spool::checkpoint`], which deletes segments
//! whose every record is stored. On open, a torn tail left by a crash is cut off at the last whole, checksummed
//! record.
//!
//! Bounded: past [`SpoolOptions::max_bytes`] on disk, appends fail at once with [`SpoolError::Full`]; a full disk
//! fails the append with [`SpoolError::DiskFull`] after cutting the partial write back off, and appends succeed
//! again when space returns.

pub mod record;
mod segments;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

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
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_bytes: 1 << 30,
            segment_bytes: 32 << 20,
            fsync_interval: Duration::from_millis(5),
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
    /// `write` calls that appended them (a batch is one).
    pub writes: AtomicU64,
    /// The last sequence number written.
    pub last_seq: AtomicU64,
    /// The last sequence number known durable (`fdatasync`ed).
    pub synced_seq: AtomicU64,
    /// The checkpoint: everything up to it is stored.
    pub checkpoint: AtomicU64,
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

/// The active segment and everything an append changes, behind one lock. Appends write in the calling tasks: a
/// batch costs one `write` under this lock, instead of two thread hand-offs (to a writer thread and back), which
/// at 20,000 beacons/s on two cores were most of the spool's cost and a source of scheduling delay.
struct Active {
    /// Shared with syncs, which must not hold this lock while `fdatasync` runs.
    file: Arc<File>,
    /// First sequence number of the active segment.
    segment: u64,
    /// Bytes written to it.
    len: u64,
    /// The next sequence number to assign.
    next_seq: u64,
    /// Segments rolled off and not yet synced: the next sync covers them before the active one.
    retired: Vec<Arc<File>>,
    /// A segment file was created since the last sync: its directory entry needs syncing too.
    dir_dirty: bool,
    /// No more appends.
    closed: bool,
}

struct Shared {
    dir: PathBuf,
    options: SpoolOptions,
    stats: SpoolStats,
    /// How far readers may read: what is written (periodic sync), or what is synced (a zero fsync interval).
    written: watch::Sender<Mark>,
    active: Mutex<Active>,
    /// Set by close once everything appended is synced and published: readers end after reading it.
    finished: AtomicBool,
    /// With a zero fsync interval, held by the append that syncs: it syncs for all who wait behind it, and they
    /// find their record synced (`stats.synced_seq`) when their turn comes (group commit).
    sync_leader: tokio::sync::Mutex<()>,
    /// Append times of records not yet checkpointed, coarse (one entry per millisecond of appends), for the
    /// oldest-age gauge.
    pending_times: Mutex<std::collections::VecDeque<(u64, u64)>>,
    /// `active.segment`, readable without the append lock.
    active_segment: AtomicU64,
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
    shared: Arc<Shared>,
    syncer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
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
        // What recovery found on disk counts as synced: nothing new is owed a sync.
        stats.synced_seq.store(next_seq - 1, Ordering::Relaxed);
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
            active: Mutex::new(Active {
                file: Arc::new(file),
                segment: active_first,
                len: active_len,
                next_seq,
                retired: Vec::new(),
                dir_dirty: false,
                closed: false,
            }),
            finished: AtomicBool::new(false),
            sync_leader: tokio::sync::Mutex::new(()),
            pending_times: Mutex::default(),
            active_segment: AtomicU64::new(active_first),
        });
        segments::refresh_stats(&shared.dir, &shared.stats);
        let syncer = if options.fsync_interval.is_zero() {
            None
        } else {
            let shared = shared.clone();
            Some(
                std::thread::Builder::new()
                    .name("spool-syncer".into())
                    .spawn(move || syncer_loop(shared))
                    .map_err(|e| SpoolError::Io(e.to_string()))?,
            )
        };
        let recovery = Recovery {
            records: scan.records,
            truncated_bytes: scan.truncated,
            next_seq,
        };
        Ok((
            Spool {
                shared,
                syncer: Arc::new(Mutex::new(syncer)),
            },
            recovery,
        ))
    }

    /// Appends a record and returns its sequence number once it is written (and synced, with a zero fsync
    /// interval). Fails at once when the spool is full or closed. Appends made on one thread in one scheduler turn
    /// are gathered and written together (a `Batch`); only a zero fsync interval makes the caller wait beyond that
    /// (for the group's `fdatasync`).
    pub async fn append(&self, payload: &[u8]) -> Result<u64, SpoolError> {
        let seq = self.gathered_write(payload).await?;
        if self.shared.options.fsync_interval.is_zero() {
            self.sync_through(seq).await?;
        }
        Ok(seq)
    }

    /// Joins this thread's open batch, or opens one and writes it after letting the thread's other ready tasks
    /// join. Returns once the record is in the file.
    async fn gathered_write(&self, payload: &[u8]) -> Result<u64, SpoolError> {
        let bytes = self.shared.stats.bytes.load(Ordering::Relaxed);
        if bytes >= self.shared.options.max_bytes {
            return Err(SpoolError::Full(bytes));
        }
        let key = Arc::as_ptr(&self.shared) as usize;
        if let Some((batch, index)) = Batch::join(key, payload) {
            return batch.wait().await.map(|first| first + index);
        }
        let batch = Arc::new(Batch::new(payload));
        Batch::open(key, batch.clone());
        let mut leader = Leader {
            spool: self,
            batch: Some(batch),
        };
        // Back to the end of the run queue: the connections this thread found ready in the same turn append to
        // the batch meanwhile. (A multi-threaded runtime may resume the leader elsewhere; the batch still holds
        // what joined it.)
        tokio::task::yield_now().await;
        leader.write()
    }

    /// Frames and writes a sealed batch to the active segment with one `write`; returns its first sequence number.
    fn write_batch(&self, framed: &mut [u8], count: u64) -> Result<u64, SpoolError> {
        let shared = &*self.shared;
        let bytes = shared.stats.bytes.load(Ordering::Relaxed);
        if bytes >= shared.options.max_bytes {
            return Err(SpoolError::Full(bytes));
        }
        let mut guard = shared.active.lock().expect("spool lock");
        let a = &mut *guard;
        if a.closed {
            return Err(SpoolError::Closed);
        }
        if a.len >= shared.options.segment_bytes {
            roll(shared, a)?;
        }
        // Sequence numbers are given out here, under the lock, so they follow file order and a failed write
        // consumes none.
        let first = a.next_seq;
        record::seal_all(framed, first);
        if let Err(e) = (&*a.file).write_all(framed) {
            // Cut a partial write back off so the log stays a sequence of whole records; the sequence numbers
            // are reused, since nothing of this batch was acknowledged.
            let _ = a.file.set_len(a.len);
            let err = io_err(e, &shared.dir);
            tracing::error!(error = %err, "spool write failed");
            return Err(err);
        }
        let last = first + count - 1;
        a.len += framed.len() as u64;
        a.next_seq = last + 1;
        let stats = &shared.stats;
        stats
            .bytes
            .fetch_add(framed.len() as u64, Ordering::Relaxed);
        stats.appended.fetch_add(count, Ordering::Relaxed);
        stats.writes.fetch_add(1, Ordering::Relaxed);
        stats.last_seq.store(last, Ordering::Relaxed);
        {
            let mut times = shared.pending_times.lock().expect("spool lock");
            let t = now_ms();
            match times.back_mut() {
                // Same millisecond: the entry now ends at this batch.
                Some(entry) if entry.1 == t => entry.0 = last,
                _ => {
                    times.push_back((last, t));
                    if times.len() > 100_000 {
                        times.pop_front();
                    }
                }
            }
        }
        if !shared.options.fsync_interval.is_zero() {
            // Published under the lock, so the mark only moves forward.
            shared.written.send_replace(Mark {
                segment: a.segment,
                offset: a.len,
                last_seq: last,
            });
        }
        Ok(first)
    }

    /// Waits until `seq` is durable: the first waiter syncs everything written so far, for itself and for every
    /// append queued behind it, and only then publishes it to readers (so with a zero interval, nothing a reader
    /// stores was unsynced). A failed `fdatasync` fails the waiting appends (503), but their records stay in the
    /// file: the next successful sync makes them durable and readable. Cutting them off would race appends that
    /// other tasks make meanwhile; the cost is that a beacon answered 503 after a disk error may still be stored
    /// (`sendBeacon` never retries, so it is counted once; a client that retries could be counted twice).
    async fn sync_through(&self, seq: u64) -> Result<(), SpoolError> {
        let _leader = self.shared.sync_leader.lock().await;
        if self.shared.stats.synced_seq.load(Ordering::Relaxed) >= seq {
            return Ok(());
        }
        let shared = self.shared.clone();
        let mark = tokio::task::spawn_blocking(move || sync_now(&shared))
            .await
            .map_err(|_| SpoolError::Closed)??;
        publish(&self.shared, mark);
        Ok(())
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
            mark: Mark::default(),
            read_since_wake: 0,
            woke: Instant::now(),
        }
    }

    /// Everything up to `seq` is durably stored downstream: segments holding nothing newer are deleted.
    /// [`Spool::mark_stored`] then [`Spool::delete_stored`].
    pub fn checkpoint(&self, seq: u64) {
        self.mark_stored(seq);
        self.delete_stored();
    }

    /// Records that everything up to `seq` is stored (forgetting those records' append times); returns whether that
    /// is news.
    /// Cheap: it takes no lock the appends hold for more than a moment, and deletes nothing.
    pub fn mark_stored(&self, seq: u64) -> bool {
        let prev = self
            .shared
            .stats
            .checkpoint
            .fetch_max(seq, Ordering::Relaxed);
        if seq <= prev {
            return false;
        }
        let mut times = self.shared.pending_times.lock().expect("spool lock");
        while times.front().is_some_and(|&(s, _)| s <= seq) {
            times.pop_front();
        }
        true
    }

    /// Deletes the segments that hold nothing after the recorded checkpoint, and recounts what is on disk.
    ///
    /// Slow next to an append (unlinking a 32 MiB segment frees its page cache: ~3 ms of kernel CPU), and it takes
    /// no lock the appends take, so it may run on a thread of low CPU priority without ever holding them up.
    pub fn delete_stored(&self) {
        let seq = self.shared.stats.checkpoint.load(Ordering::Relaxed);
        let active = self.shared.active_segment.load(Ordering::Relaxed);
        if let Err(e) = segments::delete_through(&self.shared.dir, seq, active) {
            tracing::warn!(error = %e, "spool: could not delete stored segments; will retry");
        }
        segments::refresh_stats(&self.shared.dir, &self.shared.stats);
    }

    /// When the oldest record after `seq` was appended (Unix ms), or `None` when every record is at or below `seq`:
    /// how far the stage that stores the records lags behind the appends, without waiting for a checkpoint.
    pub fn appended_after(&self, seq: u64) -> Option<u64> {
        let times = self.shared.pending_times.lock().expect("spool lock");
        let i = times.partition_point(|&(last, _)| last <= seq);
        times.get(i).map(|&(_, t)| t)
    }

    /// Counters and gauges.
    pub fn stats(&self) -> &SpoolStats {
        &self.shared.stats
    }

    /// How far the log is written.
    pub fn mark(&self) -> Mark {
        *self.shared.written.borrow()
    }

    /// Stops taking appends, syncs what is written, publishes it to readers, and stops the syncer.
    pub fn close(&self) {
        self.shared.active.lock().expect("spool lock").closed = true;
        if let Some(t) = self.syncer.lock().expect("spool lock").take() {
            let _ = t.join();
        }
        match sync_now(&self.shared) {
            Ok(mark) => publish(&self.shared, mark),
            Err(e) => tracing::error!(error = %e, "spool: the final fdatasync failed"),
        }
        self.shared.finished.store(true, Ordering::Release);
        // Wake readers waiting for a write, so they notice the end.
        self.shared.written.send_modify(|_| {});
    }
}

/// Largest batch: past it, the next append opens another (bounds the memory one turn can gather).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Appends gathered on one thread during one scheduler turn. The first append (the leader) opens it and yields;
/// appends that run on the same thread before the leader resumes join it; the leader then writes all of them with
/// one `write` and wakes the others. At the ingest ceiling a `write` per record into ext4 was the largest single
/// cost of the request path (the inode lock, the page-cache copy and the size update, per beacon); a batch pays
/// them once. Batches are per thread so that waking the joined appends never crosses threads.
struct Batch {
    inner: Mutex<BatchInner>,
    /// The first sequence number, or why the batch failed. Set once, before `written` notifies.
    done: std::sync::OnceLock<Result<u64, SpoolError>>,
    written: tokio::sync::Notify,
}

struct BatchInner {
    /// Records framed with their lengths; sequence numbers and checksums are filled in when written.
    framed: Vec<u8>,
    count: u64,
    /// Taken by the leader: nothing joins any more.
    sealed: bool,
}

thread_local! {
    /// This thread's open batch per spool (keyed by the spool's address; there is rarely more than one spool).
    static OPEN_BATCHES: std::cell::RefCell<Vec<(usize, Arc<Batch>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Batch {
    fn new(payload: &[u8]) -> Batch {
        let mut framed = Vec::with_capacity(16 * 1024);
        record::frame(&mut framed, payload);
        Batch {
            inner: Mutex::new(BatchInner {
                framed,
                count: 1,
                sealed: false,
            }),
            done: std::sync::OnceLock::new(),
            written: tokio::sync::Notify::new(),
        }
    }

    /// Adds `payload` to this thread's open batch for the spool `key`, if there is one with room: the batch and
    /// the record's index in it.
    fn join(key: usize, payload: &[u8]) -> Option<(Arc<Batch>, u64)> {
        OPEN_BATCHES.with(|open| {
            let open = open.borrow();
            let (_, batch) = open.iter().find(|(k, _)| *k == key)?;
            let mut inner = batch.inner.lock().expect("batch lock");
            if inner.sealed || inner.framed.len() >= MAX_BATCH_BYTES {
                return None;
            }
            record::frame(&mut inner.framed, payload);
            let index = inner.count;
            inner.count += 1;
            Some((batch.clone(), index))
        })
    }

    /// Makes `batch` this thread's open batch for the spool `key`.
    fn open(key: usize, batch: Arc<Batch>) {
        OPEN_BATCHES.with(|open| {
            let mut open = open.borrow_mut();
            match open.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = batch,
                None => open.push((key, batch)),
            }
        });
    }

    /// Forgets `batch` as this thread's open batch, if it still is.
    fn close(key: usize, batch: &Arc<Batch>) {
        OPEN_BATCHES.with(|open| {
            open.borrow_mut()
                .retain(|(k, b)| !(*k == key && Arc::ptr_eq(b, batch)));
        });
    }

    /// The first sequence number once the leader has written the batch.
    async fn wait(&self) -> Result<u64, SpoolError> {
        let written = self.written.notified();
        tokio::pin!(written);
        // Registered before looking, so a notification between the look and the wait is not missed.
        written.as_mut().enable();
        if let Some(r) = self.done.get() {
            return r.clone();
        }
        written.await;
        self.done.get().cloned().unwrap_or(Err(SpoolError::Closed))
    }
}

/// The append that opened a batch. Writing is its job even if its request is dropped while it yields (a client
/// gone, a timeout): the records that joined are waiting for it, so dropping it writes the batch there and then.
struct Leader<'a> {
    spool: &'a Spool,
    batch: Option<Arc<Batch>>,
}

impl Leader<'_> {
    /// Seals the batch, writes it, and wakes whoever joined; the leader's own record is the first.
    fn write(&mut self) -> Result<u64, SpoolError> {
        let Some(batch) = self.batch.take() else {
            return Err(SpoolError::Closed);
        };
        Batch::close(Arc::as_ptr(&self.spool.shared) as usize, &batch);
        let (mut framed, count) = {
            let mut inner = batch.inner.lock().expect("batch lock");
            inner.sealed = true;
            (std::mem::take(&mut inner.framed), inner.count)
        };
        let result = self.spool.write_batch(&mut framed, count);
        let _ = batch.done.set(result.clone());
        batch.written.notify_waiters();
        result
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if self.batch.is_some() {
            let _ = self.write();
        }
    }
}

/// Moves the readers' mark forward (never back: a close and a sync leader may race).
fn publish(shared: &Shared, mark: Mark) {
    shared.written.send_if_modified(|m| {
        let newer =
            mark.last_seq > m.last_seq || (mark.segment, mark.offset) > (m.segment, m.offset);
        if newer {
            *m = mark;
        }
        newer
    });
}

/// Starts a new segment at the next sequence number. The old file is synced by the next sync (before the active
/// one), not here: an `fdatasync` under the append lock would stall every request for its duration.
fn roll(shared: &Shared, a: &mut Active) -> Result<(), SpoolError> {
    let path = segments::path(&shared.dir, a.next_seq);
    let fresh = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io_err(e, &shared.dir))?;
    let old = std::mem::replace(&mut a.file, Arc::new(fresh));
    a.retired.push(old);
    a.dir_dirty = true;
    a.segment = a.next_seq;
    shared.active_segment.store(a.segment, Ordering::Relaxed);
    a.len = 0;
    segments::refresh_stats(&shared.dir, &shared.stats);
    Ok(())
}

/// Syncs every written record: rolled-off segments first, then the directory (new segment files), then the
/// active segment. Returns the mark it made durable. On failure, what it took to sync is put back for the next try.
fn sync_now(shared: &Shared) -> Result<Mark, SpoolError> {
    let (mark, retired, dir_dirty, file) = {
        let mut a = shared.active.lock().expect("spool lock");
        (
            Mark {
                segment: a.segment,
                offset: a.len,
                last_seq: a.next_seq - 1,
            },
            std::mem::take(&mut a.retired),
            std::mem::take(&mut a.dir_dirty),
            a.file.clone(),
        )
    };
    let result = retired
        .iter()
        .try_for_each(|f| timed_sync(&shared.stats, f))
        .and_then(|()| {
            if dir_dirty {
                segments::sync_dir(&shared.dir)
            } else {
                Ok(())
            }
        })
        .and_then(|()| timed_sync(&shared.stats, &file));
    match result {
        Ok(()) => {
            shared
                .stats
                .synced_seq
                .fetch_max(mark.last_seq, Ordering::Relaxed);
            Ok(mark)
        }
        Err(e) => {
            let mut a = shared.active.lock().expect("spool lock");
            a.retired.splice(0..0, retired);
            a.dir_dirty |= dir_dirty;
            Err(io_err(e, &shared.dir))
        }
    }
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

/// With a non-zero interval: syncs what was written, once per interval, until the spool closes.
fn syncer_loop(shared: Arc<Shared>) {
    while !shared.active.lock().expect("spool lock").closed {
        std::thread::sleep(shared.options.fsync_interval);
        let stats = &shared.stats;
        if stats.last_seq.load(Ordering::Relaxed) == stats.synced_seq.load(Ordering::Relaxed) {
            continue;
        }
        if let Err(e) = sync_now(&shared) {
            tracing::error!(error = %e, "spool fdatasync failed");
        }
    }
}

/// How long a caught-up reader lets appends accumulate after being woken by one, at most. At 10,000 beacons/s, 20 ms
/// instead of 1 ms cut the replay's CPU from 7.4–8.0 to 3.4–3.7 µs per beacon (three interleaved pairs), for at
/// most 19 ms more between a 204 and the store's next flush.
const READ_BATCH_WAIT: Duration = Duration::from_millis(20);

/// The shortest such wait.
const READ_BATCH_WAIT_MIN: Duration = Duration::from_millis(1);

/// Records a wait aims to let accumulate, at the rate the last read saw. At 45,000 beacons/s a 20 ms wait
/// gathered 900 records, whose replay then held a CPU for 1–4 ms at a time while a connection thread waited for it
/// (`perf sched`); 64 records are ~0.15 ms of replay, and a wait of ~1.4 ms at that rate.
const READ_BATCH_RECORDS: u32 = 64;

/// The wait after a read of `records` records that followed the previous wake-up by `since`: as long as
/// [`READ_BATCH_RECORDS`] take to arrive at that rate, within [`READ_BATCH_WAIT_MIN`] and [`READ_BATCH_WAIT`].
fn read_batch_wait(records: u32, since: Duration) -> Duration {
    if records == 0 {
        return READ_BATCH_WAIT;
    }
    (since * READ_BATCH_RECORDS / records).clamp(READ_BATCH_WAIT_MIN, READ_BATCH_WAIT)
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
    /// The mark last read from `watch`, read again only once its records are all returned: the watch's lock, which
    /// every append's publish takes too, is then taken once per run of records instead of once per record (a
    /// reader on a low-priority thread preempted while holding it would stall an appending connection thread).
    mark: Mark,
    /// Records returned since the last wake-up, and when that was: the rate that sizes the next wait.
    read_since_wake: u32,
    woke: Instant,
}

impl Reader {
    /// The next record after the last one returned, waiting for one to be written. `None` once the spool is
    /// closed and everything written has been read.
    pub async fn next(&mut self) -> Option<Result<(u64, Vec<u8>), SpoolError>> {
        loop {
            match self.try_next() {
                Ok(Some(r)) => {
                    self.read_since_wake = self.read_since_wake.saturating_add(1);
                    return Some(Ok(r));
                }
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            let last = self.watch.borrow_and_update().last_seq;
            if last > self.after {
                continue;
            }
            if self.shared.finished.load(Ordering::Acquire) {
                // Set after the final publish: one more look at the mark decides whether anything is left.
                if self.watch.borrow_and_update().last_seq > self.after {
                    continue;
                }
                return None;
            }
            // Wake on a write, or every 100 ms to notice a close. After a write, wait a moment before reading: a
            // caught-up reader woken by every append would read one record per wake-up (a thread wake and a `read`
            // per beacon), and the wait costs little against the store's one-second flush.
            let wait = read_batch_wait(self.read_since_wake, self.woke.elapsed());
            if let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_millis(100), self.watch.changed()).await
            {
                tokio::time::sleep(wait).await;
            }
            self.read_since_wake = 0;
            self.woke = Instant::now();
        }
    }

    /// A record if one is readable now.
    fn try_next(&mut self) -> Result<Option<(u64, Vec<u8>)>, SpoolError> {
        if self.mark.last_seq <= self.after {
            self.mark = *self.watch.borrow();
            if self.mark.last_seq <= self.after {
                return Ok(None);
            }
        }
        let mark = self.mark;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_wait_lets_about_a_batch_of_records_arrive_at_the_last_rate() {
        // 45,000/s: 900 records in 20 ms, so ~1.4 ms for 64.
        let w = read_batch_wait(900, Duration::from_millis(20));
        assert!(
            w > Duration::from_micros(1_300) && w < Duration::from_micros(1_500),
            "{w:?}"
        );
        // Slow rates wait the longest, bursts the shortest, and a wake-up that read nothing the longest.
        assert_eq!(
            read_batch_wait(10, Duration::from_millis(20)),
            READ_BATCH_WAIT
        );
        assert_eq!(
            read_batch_wait(1_000_000, Duration::from_millis(20)),
            READ_BATCH_WAIT_MIN
        );
        assert_eq!(
            read_batch_wait(0, Duration::from_millis(5)),
            READ_BATCH_WAIT
        );
    }
}
