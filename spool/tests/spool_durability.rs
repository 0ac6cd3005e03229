//! The spool's promises: acknowledged records survive reopen and `kill -9`, torn tails are cut, readers see every
//! record once in order, checkpoints free segments, and a full spool refuses at once.

use spool::{Spool, SpoolError, SpoolOptions};
use std::io::{BufRead, Write};
use std::time::Duration;

fn payload(i: u64) -> Vec<u8> {
    format!("beacon-{i}-{}", "x".repeat((i % 97) as usize)).into_bytes()
}

async fn append(s: &Spool, p: Vec<u8>) -> Result<u64, SpoolError> {
    s.append(&p).await
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appends_read_back_in_order_after_reopen() {
    let d = tempfile::tempdir().unwrap();
    let opts = SpoolOptions {
        segment_bytes: 16 * 1024,
        ..SpoolOptions::default()
    };
    let (s, rec) = Spool::open(d.path(), opts.clone(), 0).unwrap();
    assert_eq!((rec.records, rec.next_seq), (0, 1));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8u64 {
        let s = s.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            for i in 0..250u64 {
                let id = t * 1000 + i;
                got.push((append(&s, payload(id)).await.unwrap(), id));
            }
            got
        });
    }
    let mut acked = Vec::new();
    while let Some(r) = tasks.join_next().await {
        acked.extend(r.unwrap());
    }
    acked.sort();
    assert_eq!(acked.len(), 2000);
    assert_eq!(acked.first().unwrap().0, 1);
    assert_eq!(acked.last().unwrap().0, 2000, "dense sequence numbers");
    assert!(
        s.stats()
            .segments
            .load(std::sync::atomic::Ordering::Relaxed)
            > 1,
        "segments rolled"
    );
    s.close();
    let (s, rec) = Spool::open(d.path(), opts, 0).unwrap();
    assert_eq!(
        (rec.records, rec.truncated_bytes, rec.next_seq),
        (2000, 0, 2001)
    );
    let mut r = s.reader(0);
    for (seq, id) in &acked {
        let (got_seq, bytes) = r.next().await.unwrap().unwrap();
        assert_eq!((got_seq, bytes), (*seq, payload(*id)));
    }
    // Reading from a checkpoint skips what is stored.
    let mut r = s.reader(1500);
    assert_eq!(r.next().await.unwrap().unwrap().0, 1501);
    assert_eq!(append(&s, b"after".to_vec()).await.unwrap(), 2001);
    s.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_torn_tail_is_cut_and_sequence_numbers_continue() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path(), SpoolOptions::default(), 0).unwrap();
    for i in 0..10 {
        append(&s, payload(i)).await.unwrap();
    }
    s.close();
    let seg = std::fs::read_dir(d.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let full = std::fs::metadata(&seg).unwrap().len();
    // A crash mid-record: half of an 11th record's bytes, then random garbage.
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 11, 0, 0, 0, 0, 0, 0, 0, b'b', b'e'])
        .unwrap();
    drop(f);
    let (s, rec) = Spool::open(d.path(), SpoolOptions::default(), 0).unwrap();
    assert_eq!(
        (rec.records, rec.truncated_bytes, rec.next_seq),
        (10, 18, 11)
    );
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), full);
    assert_eq!(append(&s, b"next".to_vec()).await.unwrap(), 11);
    let mut r = s.reader(9);
    assert_eq!(r.next().await.unwrap().unwrap(), (10, payload(9)));
    assert_eq!(r.next().await.unwrap().unwrap(), (11, b"next".to_vec()));
    s.close();
    // The store's checkpoint wins over an emptied spool: ids are never reused.
    std::fs::remove_dir_all(d.path()).unwrap();
    let (s, rec) = Spool::open(d.path(), SpoolOptions::default(), 5001).unwrap();
    assert_eq!(rec.next_seq, 5001);
    assert_eq!(append(&s, b"x".to_vec()).await.unwrap(), 5001);
    s.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_reader_follows_checkpoints_free_segments_and_a_full_spool_refuses() {
    let d = tempfile::tempdir().unwrap();
    let opts = SpoolOptions {
        segment_bytes: 4096,
        max_bytes: 64 * 1024,
        ..SpoolOptions::default()
    };
    let (s, _) = Spool::open(d.path(), opts, 0).unwrap();
    let mut reader = s.reader(0);
    let consumer = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(r) = reader.next().await {
            let (seq, _) = r.unwrap();
            n += 1;
            assert_eq!(seq, n, "in order, once");
            if n == 300 {
                break;
            }
        }
        n
    });
    for i in 0..300 {
        append(&s, payload(i)).await.unwrap();
    }
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), consumer)
            .await
            .unwrap()
            .unwrap(),
        300
    );
    let segments = || {
        s.stats()
            .segments
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let files = || std::fs::read_dir(d.path()).unwrap().count();
    let before = segments();
    assert!(
        s.appended_after(0).is_some(),
        "300 records waited to be stored"
    );
    // Marking is the cheap half: the age gauge moves on, the files stay until the deleting half runs.
    assert!(s.mark_stored(300));
    assert!(!s.mark_stored(299), "a checkpoint never moves back");
    // The append times of what is stored are forgotten: even a reader asking from 0 finds none waiting.
    assert_eq!(s.appended_after(0), None);
    assert_eq!((segments(), files() as u64), (before, before));
    s.delete_stored();
    let after = segments();
    assert!(
        before > 3 && after == 1 && files() == 1,
        "stored segments deleted: {before} -> {after}"
    );
    // Nothing is checkpointed from here: past 64 KiB appends fail at once.
    let mut full = None;
    for i in 0..10_000 {
        match s.append(&payload(i)).await {
            Ok(_) => {}
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    assert!(matches!(full, Some(SpoolError::Full(_))), "{full:?}");
    s.checkpoint(u64::MAX / 2);
    append(&s, b"room again".to_vec()).await.unwrap();
    s.close();
}

/// The child half of the kill -9 test: appends until killed, printing each acknowledged sequence number.
#[tokio::test(flavor = "multi_thread")]
async fn crash_child() {
    let Ok(dir) = std::env::var("SPOOL_CRASH_CHILD_DIR") else {
        return;
    };
    let (s, _) = Spool::open(
        std::path::Path::new(&dir),
        SpoolOptions {
            segment_bytes: 64 * 1024,
            ..SpoolOptions::default()
        },
        0,
    )
    .unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let seq = append(&s, payload(i)).await.unwrap();
        writeln!(out, "ack {seq} {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn every_acknowledged_record_survives_kill_9() {
    let d = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("SPOOL_CRASH_CHILD_DIR", d.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        // libtest may print "test crash_child ... " on the same line before the first ack.
        if let Some(rest) = line.find("ack ").map(|at| &line[at + 4..]) {
            let mut it = rest.split(' ').map(|x| x.parse::<u64>().unwrap());
            acked.push((it.next().unwrap(), it.next().unwrap()));
            if acked.len() == 3000 {
                break;
            }
        }
    }
    // SIGKILL: no destructor, no flush, no sync.
    child.kill().unwrap();
    child.wait().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (s, rec) = Spool::open(d.path(), SpoolOptions::default(), 0).unwrap();
        assert!(
            rec.records >= acked.len() as u64,
            "{} on disk, {} acknowledged",
            rec.records,
            acked.len()
        );
        let mut r = s.reader(0);
        for (seq, i) in &acked {
            let (got, bytes) = r.next().await.unwrap().unwrap();
            assert_eq!(
                (got, bytes),
                (*seq, payload(*i)),
                "acknowledged record {seq} intact"
            );
        }
        s.close();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zero_fsync_interval_acknowledges_only_synced_records_and_syncs_in_groups() {
    let d = tempfile::tempdir().unwrap();
    let opts = SpoolOptions {
        segment_bytes: 8 * 1024,
        fsync_interval: Duration::ZERO,
        ..SpoolOptions::default()
    };
    let (s, _) = Spool::open(d.path(), opts.clone(), 0).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..32u64 {
        let s = s.clone();
        tasks.spawn(async move {
            for i in 0..50u64 {
                let seq = append(&s, payload(t * 100 + i)).await.unwrap();
                let synced = s
                    .stats()
                    .synced_seq
                    .load(std::sync::atomic::Ordering::Relaxed);
                assert!(synced >= seq, "{seq} acknowledged, synced through {synced}");
                // Readers may read only what is synced.
                let visible = s.mark().last_seq;
                let synced = s
                    .stats()
                    .synced_seq
                    .load(std::sync::atomic::Ordering::Relaxed);
                assert!(
                    visible <= synced,
                    "{visible} visible, synced through {synced}"
                );
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let st = s.stats();
    let (fsyncs, appended) = (
        st.fsyncs.load(std::sync::atomic::Ordering::Relaxed),
        st.appended.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert_eq!(appended, 1600);
    assert!(
        st.segments.load(std::sync::atomic::Ordering::Relaxed) > 1,
        "segments rolled, so retired segments were synced too"
    );
    assert!(
        fsyncs > 0 && fsyncs < appended,
        "one fdatasync serves a group: {fsyncs} for {appended}"
    );
    s.close();
    let (s, rec) = Spool::open(d.path(), opts, 0).unwrap();
    assert_eq!((rec.records, rec.next_seq), (1600, 1601));
    let mut r = s.reader(0);
    for want in 1..=1600 {
        assert_eq!(r.next().await.unwrap().unwrap().0, want);
    }
    s.close();
}

/// Appends that are ready on one thread in the same turn share one `write`, each keeps its own sequence number,
/// and all read back in order.
#[tokio::test(flavor = "current_thread")]
async fn appends_ready_together_share_one_write() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path(), SpoolOptions::default(), 0).unwrap();
    let tasks: Vec<_> = (0..50u64)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { (append(&s, payload(i)).await.unwrap(), i) })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    acked.sort();
    assert_eq!(
        acked.iter().map(|a| a.0).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
    let writes = s.stats().writes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(writes < 5, "50 appends ready at once took {writes} writes");
    // One at a time, each is its own batch.
    append(&s, payload(50)).await.unwrap();
    append(&s, payload(51)).await.unwrap();
    assert_eq!(
        s.stats().writes.load(std::sync::atomic::Ordering::Relaxed),
        writes + 2
    );
    let mut r = s.reader(0);
    for (seq, i) in acked.into_iter().chain([(51, 50), (52, 51)]) {
        assert_eq!(r.next().await.unwrap().unwrap(), (seq, payload(i)));
    }
    s.close();
}

/// The append that opened a batch is dropped (its client went away) before it wrote: the records that joined it
/// are written anyway, and answered.
#[tokio::test(flavor = "current_thread")]
async fn a_dropped_leader_still_writes_the_batch() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path(), SpoolOptions::default(), 0).unwrap();
    let leader = tokio::spawn({
        let s = s.clone();
        async move { append(&s, payload(1)).await }
    });
    let follower = tokio::spawn({
        let s = s.clone();
        async move { append(&s, payload(2)).await }
    });
    // The leader opens the batch and yields, the follower joins it; this task resumes before the leader does.
    tokio::task::yield_now().await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    let answered = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the joined append is answered");
    assert_eq!(answered.unwrap().unwrap(), 2);
    let mut r = s.reader(0);
    assert_eq!(r.next().await.unwrap().unwrap(), (1, payload(1)));
    assert_eq!(r.next().await.unwrap().unwrap(), (2, payload(2)));
    assert_eq!(
        s.stats().writes.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    s.close();
}

#[tokio::test]
async fn appended_after_tells_when_the_oldest_record_past_a_sequence_number_arrived() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path(), SpoolOptions::default(), 0).unwrap();
    assert_eq!(s.appended_after(0), None, "nothing appended");
    let before = chrono_ms();
    let first = append(&s, payload(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let middle = chrono_ms();
    let second = append(&s, payload(2)).await.unwrap();
    let after = chrono_ms();
    let t1 = s.appended_after(0).expect("record 1 is pending");
    assert!(
        (before..=middle).contains(&t1),
        "{before} <= {t1} <= {middle}"
    );
    // Past the first record, the answer is the second's time, 30 ms or more later.
    let t2 = s.appended_after(first).expect("record 2 is pending");
    assert!(t2 >= t1 + 30 && t2 <= after, "{t1} then {t2} (<= {after})");
    assert_eq!(
        s.appended_after(second),
        None,
        "nothing past the last record"
    );
    // A checkpoint changes nothing about the answer for later records.
    s.checkpoint(first);
    assert_eq!(s.appended_after(first), Some(t2));
    assert_eq!(s.appended_after(second), None);
}

fn chrono_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
