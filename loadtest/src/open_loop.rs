//! The open-loop engine: beacon `i` is due at `start + i/rate` whatever the server is doing, and is timed from then.
//!
//! Each generator thread owns a share of the connections (kept-alive sockets speaking raw HTTP/1.1) and of the
//! beacons (`i ≡ thread (mod threads)`). It wakes on a fixed [`TICK`] (at low rates, when the next beacon is
//! [`QUIET_GAP`] or more away, on the next answer instead), reads every answer that has arrived, queues
//! every beacon due before the next tick, and sends queued beacons on free connections; a beacon that finds none
//! waits in the queue, and that wait is part of its latency (no coordinated omission). A beacon sent before its
//! intended time (at most one tick early) is timed from its actual send.
//!
//! Why not tokio and hyper, as the closed loop uses: at a moderate rate every answer woke a runtime worker and every
//! beacon crossed from a pacer thread to a worker, so the generator spent 17 µs of CPU per beacon (8 at the maximum
//! rate), more than the collector's whole request path, on the two CPUs it shares with the server under test; that
//! CPU showed up in the server's tail. Waking on a tick instead of on every answer does not blur the timing: the
//! kernel stamps each answer when it arrives (`SO_TIMESTAMPNS`), so a tick delays reading an answer, not its time.

use crate::run::{Shared, Times, WorkerResult};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use std::collections::VecDeque;
use std::io::{IoSliceMut, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a generator thread sleeps between looks at its sockets, and so how far ahead of its intended time a
/// beacon may be sent. 100 µs: at 40,000 beacons/s four go out together, a burst the size of a Poisson
/// arrival's ordinary ones, and the thread wakes 10,000 times a second instead of on every answer.
pub(crate) const TICK: Duration = Duration::from_micros(100);
/// A gap to the next beacon this long or longer is spent waiting for answers rather than ticking.
const QUIET_GAP: Duration = Duration::from_millis(2);
/// The longest such wait while draining (no beacon left to release).
const QUIET_WAIT: Duration = Duration::from_millis(50);
/// How long answers still outstanding at the deadline are waited for; then they count as connection errors.
const DRAIN: Duration = Duration::from_secs(30);
/// How often a connection that could not be reopened is tried again (beacons sent meanwhile are errors, status 0).
const RECONNECT_EVERY: Duration = Duration::from_millis(10);

/// One generator thread's share of an open-loop run.
pub(crate) struct Plan {
    /// This thread's index.
    pub thread: u64,
    /// All generator threads.
    pub threads: u64,
    /// Beacons per second, all threads together.
    pub rate: f64,
    /// Beacons in the run (all threads).
    pub count: u64,
    /// The clock's start.
    pub start: Instant,
    /// No beacon due at or after this is sent.
    pub deadline: Instant,
    /// Where to reconnect.
    pub addr: SocketAddr,
}

impl Plan {
    fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// Opens a connection for the engine: Nagle off (a beacon is one write), the kernel's receive timestamps on, and
/// non-blocking.
pub(crate) fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    prepare(&s)?;
    Ok(s)
}

fn prepare(s: &TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    setsockopt(s, sockopt::ReceiveTimestampns, &true)?;
    s.set_nonblocking(true)
}

/// A beacon on the wire.
struct InFlight {
    /// Beacon index.
    i: u64,
    /// Its intended send time.
    intended: Instant,
    /// When it was written.
    sent: Instant,
    /// The same moment on the wall clock, the kernel's timestamps' clock.
    sent_wall: Duration,
}

struct Conn {
    stream: Option<TcpStream>,
    /// The answer read so far (`filled` bytes).
    buf: Vec<u8>,
    filled: usize,
    /// When the last bytes read arrived (wall clock, from the kernel).
    arrived_wall: Option<Duration>,
    in_flight: Option<InFlight>,
    /// The request being written, and how much of it is written.
    out: Vec<u8>,
    written: usize,
    /// No reconnect before this.
    retry_at: Option<Instant>,
}

fn wall_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Runs one generator thread to the end of its share of the run.
pub(crate) fn run_thread(shared: Arc<Shared>, plan: Plan, streams: Vec<TcpStream>) -> WorkerResult {
    let mut r = WorkerResult::new();
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll_create1");
    let mut conns: Vec<Conn> = streams
        .into_iter()
        .map(|s| Conn {
            stream: Some(s),
            buf: vec![0; 4096],
            filled: 0,
            arrived_wall: None,
            in_flight: None,
            out: Vec::with_capacity(2048),
            written: 0,
            retry_at: None,
        })
        .collect();
    for (k, c) in conns.iter().enumerate() {
        if let Some(s) = &c.stream {
            epoll
                .add(s, EpollEvent::new(EpollFlags::EPOLLIN, k as u64))
                .expect("epoll_ctl");
        }
    }
    let mut free: Vec<usize> = (0..conns.len()).rev().collect();
    let mut down: Vec<usize> = Vec::new();
    let mut queue: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut in_flight = 0usize;
    let mut next = plan.thread;
    let mut releasing = next < plan.count && plan.due(next) < plan.deadline;
    let mut events = vec![EpollEvent::empty(); conns.len().max(1)];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);

    loop {
        let now = Instant::now();
        // Answers first: they free connections for this tick's beacons.
        if in_flight > 0 {
            let n = epoll.wait(&mut events, EpollTimeout::ZERO).unwrap_or(0);
            for e in &events[..n] {
                let k = e.data() as usize;
                match read_answer(&mut conns[k], &mut cmsg) {
                    Ok(None) => {}
                    Ok(Some((status, close))) => {
                        let c = &mut conns[k];
                        let f = c
                            .in_flight
                            .take()
                            .expect("an answer to a request in flight");
                        let done = arrival(&f, c.arrived_wall);
                        record(&shared, &plan, &mut r, &f, status, done);
                        in_flight -= 1;
                        if close {
                            c.stream = None;
                        }
                        free.push(k);
                    }
                    Err(()) => {
                        let c = &mut conns[k];
                        c.stream = None;
                        if let Some(f) = c.in_flight.take() {
                            record(&shared, &plan, &mut r, &f, 0, Instant::now());
                            in_flight -= 1;
                            free.push(k);
                        }
                    }
                }
            }
        }
        // Release every beacon due before the next tick; at the deadline, stop (what is queued is backlog).
        if now >= plan.deadline {
            releasing = false;
            queue.clear();
        }
        while releasing {
            let due = plan.due(next);
            if due > now + TICK {
                break;
            }
            queue.push_back((next, due));
            next += plan.threads;
            releasing = next < plan.count && plan.due(next) < plan.deadline;
        }
        // Connections that could not be reopened are tried again after a pause.
        if !down.is_empty() {
            down.retain(|&k| {
                let ready = conns[k].retry_at.is_none_or(|t| t <= now);
                if ready {
                    free.push(k);
                }
                !ready
            });
        }
        // Send queued beacons on free connections, oldest first.
        while !queue.is_empty() {
            let Some(k) = free.pop() else { break };
            let (i, intended) = queue.pop_front().expect("not empty");
            let c = &mut conns[k];
            if send(&shared, &plan, &epoll, c, k, i, intended).is_ok() {
                in_flight += 1;
            } else {
                // As a browser's beacon would be lost: counted as status 0. The connection rests (no spinning on
                // a refused port).
                let f = InFlight {
                    i,
                    intended,
                    sent: Instant::now(),
                    sent_wall: wall_now(),
                };
                record(&shared, &plan, &mut r, &f, 0, Instant::now());
                c.stream = None;
                c.retry_at = Some(Instant::now() + RECONNECT_EVERY);
                down.push(k);
            }
        }
        // Finish a request written only in part (the socket's buffer was full).
        for (k, c) in conns.iter_mut().enumerate() {
            if c.in_flight.is_some() && c.written < c.out.len() && flush(c).is_err() {
                c.stream = None;
                let f = c.in_flight.take().expect("in flight");
                record(&shared, &plan, &mut r, &f, 0, Instant::now());
                in_flight -= 1;
                free.push(k);
            }
        }
        if !releasing && queue.is_empty() && in_flight == 0 {
            break;
        }
        if now >= plan.deadline + DRAIN {
            for c in &mut conns {
                if let Some(f) = c.in_flight.take() {
                    record(&shared, &plan, &mut r, &f, 0, Instant::now());
                }
            }
            break;
        }
        // Sleep to the next tick; with nothing queued, until the next beacon may go. When that is far off (a low
        // rate, or the drain after the deadline), wait for answers instead: ticking through a quiet gap cost 200 µs
        // of CPU per beacon at 300 beacons/s, and at such rates a wake-up per answer is the cheaper of the two.
        let release_at = releasing.then(|| plan.due(next).checked_sub(TICK).unwrap_or(now));
        let wake = if !queue.is_empty() {
            now + TICK
        } else {
            release_at.unwrap_or(now + QUIET_WAIT).max(now + TICK)
        };
        let left = wake.saturating_duration_since(Instant::now());
        if in_flight > 0 && queue.is_empty() && left >= QUIET_GAP {
            // Whole milliseconds, rounded down: the next release is never late for it. What it reports is read
            // at the top of the loop (level-triggered: still ready then).
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let _ = epoll.wait(&mut events, EpollTimeout::from(ms));
        } else if in_flight > 0 {
            std::thread::sleep(left.min(TICK));
        } else if !left.is_zero() {
            std::thread::sleep(left);
        }
    }
    r
}

/// When an answer arrived on the monotonic clock: its send time plus the kernel's arrival stamp minus the send's
/// wall time (the wall clock may be stepped between runs, not within a millisecond). Without a stamp, now (late
/// by up to a tick): the kernel starts stamping a moment after the first socket asks, which the connections do
/// before the clock starts.
fn arrival(f: &InFlight, arrived_wall: Option<Duration>) -> Instant {
    match arrived_wall.and_then(|a| a.checked_sub(f.sent_wall)) {
        Some(d) => f.sent + d,
        None => Instant::now(),
    }
}

fn record(
    shared: &Shared,
    plan: &Plan,
    r: &mut WorkerResult,
    f: &InFlight,
    status: u16,
    done: Instant,
) {
    let t = Times {
        due: f.intended,
        from: f.intended.min(f.sent),
        sent: f.sent,
        done,
    };
    r.record(shared, plan.start, f.i, t, status);
}

/// Writes beacon `i` on connection `k`, reopening it first if it is closed.
fn send(
    shared: &Shared,
    plan: &Plan,
    epoll: &Epoll,
    c: &mut Conn,
    k: usize,
    i: u64,
    intended: Instant,
) -> Result<(), ()> {
    if c.stream.is_none() {
        let s = connect(plan.addr).map_err(|_| ())?;
        epoll
            .add(&s, EpollEvent::new(EpollFlags::EPOLLIN, k as u64))
            .map_err(|_| ())?;
        c.stream = Some(s);
        c.retry_at = None;
    }
    c.out.clear();
    shared.write_request(i, &mut c.out);
    c.written = 0;
    c.filled = 0;
    c.arrived_wall = None;
    let sent_wall = wall_now();
    let sent = Instant::now();
    c.in_flight = Some(InFlight {
        i,
        intended,
        sent,
        sent_wall,
    });
    if flush(c).is_err() {
        c.in_flight = None;
        return Err(());
    }
    Ok(())
}

/// Writes what is left of the request; a full socket buffer leaves the rest for the next tick.
fn flush(c: &mut Conn) -> Result<(), ()> {
    let s = c.stream.as_mut().ok_or(())?;
    while c.written < c.out.len() {
        match s.write(&c.out[c.written..]) {
            Ok(0) => return Err(()),
            Ok(n) => c.written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

/// Reads what has arrived; `Some((status, close))` once a whole answer is in, `Err` on a closed or broken
/// connection or an answer that is not HTTP/1.1 (the connection is dropped either way).
fn read_answer(c: &mut Conn, cmsg: &mut [u8]) -> Result<Option<(u16, bool)>, ()> {
    let s = c.stream.as_ref().ok_or(())?;
    // The server closed its side: an answer read before the close still counts (`connection: close`).
    let mut eof = false;
    loop {
        if c.filled == c.buf.len() {
            c.buf.resize(c.buf.len() * 2, 0);
        }
        let mut iov = [IoSliceMut::new(&mut c.buf[c.filled..])];
        let got = recvmsg::<()>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut *cmsg),
            MsgFlags::MSG_DONTWAIT,
        );
        match got {
            Ok(msg) => {
                if msg.bytes == 0 {
                    eof = true;
                    break;
                }
                let n = msg.bytes;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for m in cmsgs {
                        if let ControlMessageOwned::ScmTimestampns(ts) = m {
                            c.arrived_wall =
                                Some(Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32));
                        }
                    }
                }
                c.filled += n;
            }
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return Err(()),
        }
    }
    if c.in_flight.is_none() {
        // Bytes nobody asked for (or an idle connection's close): the connection is of no further use.
        return Err(());
    }
    match parse_answer(&c.buf[..c.filled]) {
        Ok(Some(a)) if a.len == c.filled => Ok(Some((a.status, a.close || eof))),
        Ok(None) if !eof => Ok(None),
        _ => Err(()),
    }
}

/// A whole HTTP/1.1 answer at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    /// Bytes it takes, head and body.
    pub len: usize,
    /// The server closes the connection after it.
    pub close: bool,
}

/// Parses an answer: `Ok(None)` while it is incomplete. Bodies framed by `Content-Length` or chunked; none for
/// 1xx, 204 and 304.
pub(crate) fn parse_answer(b: &[u8]) -> Result<Option<Answer>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Response::new(&mut headers);
    let body_start = match head.parse(b).map_err(|_| "not an HTTP/1.x answer")? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if b.len() > 64 * 1024 => return Err("answer head too long"),
        httparse::Status::Partial => return Ok(None),
    };
    let status = head.code.ok_or("no status code")?;
    let mut length = None;
    let mut chunked = false;
    let mut close = head.version == Some(0);
    for h in head.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| "header value is not UTF-8")?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("close"));
        }
    }
    let body_len = if matches!(status, 100..=199 | 204 | 304) {
        Some(0)
    } else if chunked {
        chunked_len(&b[body_start..])?
    } else if let Some(n) = length {
        (b.len() - body_start >= n).then_some(n)
    } else {
        return Err("an answer without Content-Length or chunked framing");
    };
    Ok(body_len.map(|n| Answer {
        status,
        len: body_start + n,
        close,
    }))
}

/// The length of a complete chunked body (through the last chunk and the trailers' end), `None` if incomplete.
fn chunked_len(b: &[u8]) -> Result<Option<usize>, &'static str> {
    let mut at = 0;
    loop {
        let (used, size) =
            match httparse::parse_chunk_size(&b[at..]).map_err(|_| "bad chunk size")? {
                httparse::Status::Complete(c) => c,
                httparse::Status::Partial => return Ok(None),
            };
        at += used;
        if size == 0 {
            // Trailers, each ending in CRLF, then an empty line.
            loop {
                let Some(eol) = b[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        let size = usize::try_from(size).map_err(|_| "chunk too large")?;
        if b.len() < at + size + 2 {
            return Ok(None);
        }
        if &b[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF");
        }
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_204_content_length_and_chunked_answers() {
        let a = b"HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n";
        assert_eq!(
            parse_answer(a),
            Ok(Some(Answer {
                status: 204,
                len: a.len(),
                close: false
            }))
        );
        let a =
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\nconnection: close\r\n\r\n{\"a\"}";
        assert_eq!(
            parse_answer(a),
            Ok(Some(Answer {
                status: 400,
                len: a.len(),
                close: true
            }))
        );
        let a = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(
            parse_answer(a),
            Ok(Some(Answer {
                status: 200,
                len: a.len(),
                close: false
            }))
        );
    }

    #[test]
    fn an_answer_cut_anywhere_is_incomplete_not_wrong() {
        for a in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n{\"e\":\"bad\"}\n"[..],
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\n"[..],
        ] {
            for cut in 0..a.len() {
                assert_eq!(parse_answer(&a[..cut]), Ok(None), "cut at {cut}");
            }
            assert_eq!(parse_answer(a).map(|x| x.map(|x| x.len)), Ok(Some(a.len())));
        }
    }

    #[test]
    fn an_answer_read_late_is_timed_when_it_arrived() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            wait.recv().unwrap();
            let written = wall_now();
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(200));
            written
        });
        let mut c = Conn {
            stream: Some(connect(addr).unwrap()),
            buf: vec![0; 16],
            filled: 0,
            arrived_wall: None,
            in_flight: Some(InFlight {
                i: 0,
                intended: Instant::now(),
                sent: Instant::now(),
                sent_wall: wall_now(),
            }),
            out: Vec::new(),
            written: 0,
            retry_at: None,
        };
        // The kernel turns stamping on a moment after the first socket asks (a deferred work item), as it does
        // for a run's connections before its clock starts.
        std::thread::sleep(Duration::from_millis(200));
        go.send(()).unwrap();
        // Read well after the answer is in (as a generator thread would on a late tick).
        std::thread::sleep(Duration::from_millis(100));
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let read_at = wall_now();
        assert_eq!(read_answer(&mut c, &mut cmsg), Ok(Some((204, false))));
        let written = server.join().unwrap();
        let arrived = c.arrived_wall.expect("the kernel stamps the answer");
        // Stamped when the server wrote it (within a scheduling hiccup), not when it was read.
        assert!(arrived >= written, "{arrived:?} before {written:?}");
        assert!(
            arrived - written < Duration::from_millis(20),
            "{:?}",
            arrived - written
        );
        assert!(
            read_at - arrived > Duration::from_millis(50),
            "{:?}",
            read_at - arrived
        );
    }

    #[test]
    fn rejects_what_is_not_an_http_answer() {
        assert!(parse_answer(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(
            parse_answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }
}
