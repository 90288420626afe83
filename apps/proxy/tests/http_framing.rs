//! HTTP mode, strict framing: every ambiguous or malformed request is answered
//! 400 and the connection closed, and the backend sees nothing of it. Both I/O
//! backends, 1 and 4 shards.

mod common;

use std::{thread, time::Duration};

use common::{http_config, Answer, HttpBackend, HttpClient, TestProxy, SHARD_COUNTS};
use shardline::Io;

/// Requests that must never reach a backend.
const BAD: &[(&str, &str)] = &[
    ("both Content-Length and Transfer-Encoding",
     "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("duplicate Content-Length",
     "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
    ("conflicting Content-Length",
     "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("Content-Length list",
     "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello"),
    ("obfuscated TE: chunked not last",
     "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
    ("obfuscated TE: xchunked",
     "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ("obfuscated TE: two fields",
     "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("obfuscated TE: space before colon",
     "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    ("bare LF line ends",
     "GET / HTTP/1.1\nHost: t\n\n"),
    ("one bare LF",
     "GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n"),
    ("obs-fold",
     "GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n  b\r\n\r\n"),
    ("whitespace before a colon",
     "GET / HTTP/1.1\r\nHost : t\r\n\r\n"),
    ("bad chunk size",
     "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("chunk size with sign",
     "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
    ("chunk size overflow",
     "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n"),
    ("missing Host",
     "GET / HTTP/1.1\r\n\r\n"),
];

fn every_framing_violation_is_400_and_close_and_never_forwarded(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::Info);
        let proxy = TestProxy::start(io, shards, &http_config(&[b.addr()], ""));
        for (what, request) in BAD {
            let mut c = HttpClient::new(proxy.connect());
            c.send(request.as_bytes());
            let r = c.response(false);
            assert_eq!(r.status, 400, "{}: {what}", proxy.label);
            assert_eq!(
                r.header("Connection"),
                Some("close"),
                "{}: {what}",
                proxy.label
            );
            assert!(c.closed(), "{}: {what}: connection closed", proxy.label);
        }
        // A good request afterwards still works: nothing else was disturbed.
        let mut c = HttpClient::new(proxy.connect());
        c.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response(false).status, 200, "{}", proxy.label);
        thread::sleep(Duration::from_millis(50));
        assert_eq!(
            b.accepted(),
            1,
            "{}: only the good request reached the backend",
            proxy.label
        );
        assert_eq!(b.requests().len(), 1);
        assert_eq!(b.requests()[0].target, "/ok");
    }
}

/// A request smuggled behind a bad request on the same connection never runs.
fn bytes_after_a_bad_request_are_not_parsed(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::Info);
        let proxy = TestProxy::start(io, shards, &http_config(&[b.addr()], ""));
        let mut c = HttpClient::new(proxy.connect());
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response(false).status, 400);
        assert!(c.closed(), "{}", proxy.label);
        thread::sleep(Duration::from_millis(50));
        assert_eq!(b.accepted(), 0, "{}", proxy.label);
    }
}

/// A bad chunk size after good chunks: the backend has seen the head and the
/// good chunks, never the bad bytes nor a complete request; the client gets 400.
fn bad_chunk_mid_body_aborts_the_request(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::Info);
        let proxy = TestProxy::start(io, shards, &http_config(&[b.addr()], ""));
        let mut c = HttpClient::new(proxy.connect());
        c.send(b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
        thread::sleep(Duration::from_millis(50));
        c.send(b"5\nworld\r\n0\r\n\r\n");
        let r = c.response(false);
        assert_eq!(r.status, 400, "{}", proxy.label);
        assert!(c.closed(), "{}", proxy.label);
        thread::sleep(Duration::from_millis(50));
        assert!(
            b.requests().is_empty(),
            "{}: the backend never got a complete request",
            proxy.label
        );
    }
}

shardline::per_backend! {
    every_framing_violation_is_400_and_close_and_never_forwarded => every_framing_violation_is_400_and_close_and_never_forwarded;
    bytes_after_a_bad_request_are_not_parsed => bytes_after_a_bad_request_are_not_parsed;
    bad_chunk_mid_body_aborts_the_request => bad_chunk_mid_body_aborts_the_request;
}
