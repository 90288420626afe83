//! `Expect: 100-continue` through the proxy: the backend's 100 reaches the
//! client; a silent backend gets the proxy's own 100 (once, even if the
//! backend's comes later); a backend that answers before the body ends the
//! exchange without the body and closes the client; the proxy's own refusals
//! (413) come instead of a 100; an HTTP/1.0 expectation is ignored. Both I/O
//! backends, 1 and 4 shards.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use common::{get, http_config, HttpClient, TcpBackend, TestProxy, SHARD_COUNTS};
use shardline::Io;

/// What a [`backend`] saw of one request: its head, and the body bytes that
/// arrived.
#[derive(Debug, Clone, Default)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn has_header(&self, name: &str, value: &str) -> bool {
        self.head.lines().any(|l| {
            l.split_once(':').is_some_and(|(n, v)| {
                n.eq_ignore_ascii_case(name) && v.trim().eq_ignore_ascii_case(value)
            })
        })
    }
}

/// How the test backend treats an expectation.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Sends `100 Continue` (marked `X-From: backend`) after `delay`, then reads
    /// the body and answers 200 with it.
    Continue { delay: Duration },
    /// Never sends a 100: reads the body and answers 200 with it.
    Ignore,
    /// Answers 401 at once, then reads what body comes until the proxy closes.
    Reject,
}

/// Reads up to the end of a head; `None` at EOF.
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
            buf.drain(..end + 4);
            return Some(head);
        }
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads `len` body bytes (fewer at EOF or after `limit`).
fn read_body(s: &mut TcpStream, buf: &mut Vec<u8>, len: usize, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 4096];
    while buf.len() < len && Instant::now() < deadline {
        let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let n = len.min(buf.len());
    buf.drain(..n).collect()
}

/// A backend serving every request on a connection per `mode`, recording them.
fn backend(mode: Mode) -> (TcpBackend, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let b = TcpBackend::start(move |mut s| {
        let mut buf = Vec::new();
        while let Some(head) = read_head(&mut s, &mut buf) {
            let expects = head.to_ascii_lowercase().contains("expect: 100-continue");
            let len = content_length(&head);
            let body = match mode {
                Mode::Continue { delay } if expects => {
                    thread::sleep(delay);
                    let _ = s.write_all(b"HTTP/1.1 100 Continue\r\nX-From: backend\r\n\r\n");
                    read_body(&mut s, &mut buf, len, Duration::from_secs(20))
                }
                Mode::Reject if expects => {
                    let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
                    // Keeps the connection until the proxy drops it (EOF).
                    let body = read_body(&mut s, &mut buf, len, Duration::from_secs(30));
                    log.lock().expect("lock").push(Seen { head, body });
                    return;
                }
                _ => read_body(&mut s, &mut buf, len, Duration::from_secs(20)),
            };
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            log.lock().expect("lock").push(Seen {
                head,
                body: body.clone(),
            });
            if s.write_all(answer.as_bytes()).is_err() || s.write_all(&body).is_err() {
                return;
            }
        }
    });
    (b, seen)
}

fn put_head(len: usize) -> Vec<u8> {
    format!(
        "PUT /upload HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes()
}

fn backends_100_reaches_the_client_before_the_body(io: Io) {
    for shards in SHARD_COUNTS {
        let (b, seen) = backend(Mode::Continue {
            delay: Duration::ZERO,
        });
        // The proxy's fallback is far away: the 100 can only be the backend's.
        let config = http_config(&[b.addr], "[timeouts]\nexpect_continue_ms = 60000\n");
        let proxy = TestProxy::start(io, shards, &config);
        let mut c = HttpClient::new(proxy.connect());
        c.send(&put_head(11));
        let interim = c.response(false);
        assert_eq!(interim.status, 100, "{}", proxy.label);
        assert_eq!(interim.header("X-From"), Some("backend"), "{}", proxy.label);
        c.send(b"hello world");
        let r = c.response(false);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world"[..]));
        // Still keep-alive: the next request is answered normally.
        c.send(&get("/after"));
        assert_eq!(c.response(false).status, 200, "{}", proxy.label);
        let seen = seen.lock().expect("lock").clone();
        assert!(seen[0].has_header("Expect", "100-continue"), "{seen:?}");
        assert_eq!(seen[0].body, b"hello world");
    }
}

fn silent_backend_gets_the_proxys_100_once(io: Io) {
    for shards in SHARD_COUNTS {
        // The backend's own 100 comes well after the proxy's: it must not
        // reach the client as a second interim response.
        let (b, seen) = backend(Mode::Continue {
            delay: Duration::from_millis(300),
        });
        let (quiet, quiet_seen) = backend(Mode::Ignore);
        for (backend, log) in [(&b, &seen), (&quiet, &quiet_seen)] {
            let config = http_config(&[backend.addr], "[timeouts]\nexpect_continue_ms = 30\n");
            let proxy = TestProxy::start(io, shards, &config);
            let mut c = HttpClient::new(proxy.connect());
            c.send(&put_head(5));
            let interim = c.response(false);
            assert_eq!(interim.status, 100, "{}", proxy.label);
            assert_eq!(
                interim.header("X-From"),
                None,
                "{}: the proxy's",
                proxy.label
            );
            c.send(b"12345");
            let r = c.response(false);
            assert_eq!((r.status, r.body.as_slice()), (200, &b"12345"[..]));
            c.send(&get("/after"));
            assert_eq!(
                c.response(false).status,
                200,
                "{}: no stray 100",
                proxy.label
            );
            assert_eq!(log.lock().expect("lock")[0].body, b"12345");
        }
    }
}

fn final_answer_before_the_body_ends_the_exchange(io: Io) {
    for shards in SHARD_COUNTS {
        let (b, seen) = backend(Mode::Reject);
        let config = http_config(&[b.addr], "[timeouts]\nexpect_continue_ms = 60000\n");
        let proxy = TestProxy::start(io, shards, &config);
        let mut c = HttpClient::new(proxy.connect());
        c.send(&put_head(1000));
        let r = c.response(false);
        assert_eq!(r.status, 401, "{}", proxy.label);
        assert_eq!(r.header("Connection"), Some("close"), "{}", proxy.label);
        // The client never sends the body; the proxy closes, not waits for it.
        assert!(c.closed(), "{}", proxy.label);
        assert!(common::wait_until(common::WAIT, || !seen
            .lock()
            .expect("lock")
            .is_empty()));
        assert!(seen.lock().expect("lock")[0].body.is_empty());
    }
}

fn over_limit_body_is_refused_instead_of_continued(io: Io) {
    for shards in SHARD_COUNTS {
        let (b, seen) = backend(Mode::Ignore);
        let config = http_config(&[b.addr], "[limits]\nmax_body_bytes = 1000\n");
        let proxy = TestProxy::start(io, shards, &config);
        let mut c = HttpClient::new(proxy.connect());
        c.send(&put_head(1001));
        assert_eq!(c.response(false).status, 413, "{}", proxy.label);
        assert!(c.closed(), "{}", proxy.label);
        assert_eq!(b.accepted(), 0, "{}", proxy.label);
        assert!(seen.lock().expect("lock").is_empty());
    }
}

fn http10_expectation_is_ignored(io: Io) {
    for shards in SHARD_COUNTS {
        let (b, seen) = backend(Mode::Continue {
            delay: Duration::ZERO,
        });
        let config = http_config(&[b.addr], "[timeouts]\nexpect_continue_ms = 30\n");
        let proxy = TestProxy::start(io, shards, &config);
        let mut c = HttpClient::new(proxy.connect());
        c.send(b"PUT /old HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc");
        // No 100 (from anyone): the final response comes first.
        let r = c.response(false);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
        let seen = seen.lock().expect("lock").clone();
        assert!(
            !seen[0].head.to_ascii_lowercase().contains("expect"),
            "{seen:?}"
        );
    }
}

shardline::per_backend! {
    backends_100_reaches_the_client_before_the_body => backends_100_reaches_the_client_before_the_body;
    silent_backend_gets_the_proxys_100_once => silent_backend_gets_the_proxys_100_once;
    final_answer_before_the_body_ends_the_exchange => final_answer_before_the_body_ends_the_exchange;
    over_limit_body_is_refused_instead_of_continued => over_limit_body_is_refused_instead_of_continued;
    http10_expectation_is_ignored => http10_expectation_is_ignored;
}
