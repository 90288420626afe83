//! HTTP mode, errors and limits: 502 (unreachable), 504 (no response), 408
//! (slow head), 431 (large head), 413 (large body); connect failover, upstream
//! idle timeout, retry of an idempotent request (body included, up to 64 KiB)
//! on a dead pooled connection, max_connections.
//! Both I/O backends, 1 and 4 shards.

mod common;

use std::{thread, time::Duration};

use common::{
    get, http_config, refused_addr, wait_until, Answer, HttpBackend, HttpClient, TestProxy,
    SHARD_COUNTS,
};
use shardline::Io;

fn unreachable_backends_give_502(io: Io) {
    for shards in SHARD_COUNTS {
        let proxy = TestProxy::start(
            io,
            shards,
            &http_config(&[refused_addr(), refused_addr()], ""),
        );
        let mut c = HttpClient::new(proxy.connect());
        c.send(&get("/"));
        assert_eq!(c.response(false).status, 502, "{}", proxy.label);
        assert!(c.closed(), "{}", proxy.label);
    }
}

fn refused_backend_fails_over_to_the_next(io: Io) {
    for shards in SHARD_COUNTS {
        let good = HttpBackend::start("good", Answer::Info);
        let proxy = TestProxy::start(io, shards, &http_config(&[refused_addr(), good.addr()], ""));
        let mut c = HttpClient::new(proxy.connect());
        for i in 0..6 {
            c.send(&get(&format!("/{i}")));
            let r = c.response(false);
            assert_eq!(r.status, 200, "{}: request {i}", proxy.label);
            assert_eq!(r.header("X-Backend"), Some("good"));
        }
    }
}

fn silent_backend_gives_504(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::Silent);
        let proxy = TestProxy::start(
            io,
            shards,
            &http_config(&[b.addr()], "[timeouts]\nbackend_response_ms = 200\n"),
        );
        let mut c = HttpClient::new(proxy.connect());
        c.send(&get("/slow"));
        assert_eq!(c.response(false).status, 504, "{}", proxy.label);
        assert!(c.closed(), "{}", proxy.label);
    }
}

fn slow_request_head_gives_408(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::Info);
        let proxy = TestProxy::start(
            io,
            shards,
            &http_config(&[b.addr()], "[timeouts]\nclient_header_ms = 200\n"),
        );
        let mut c = HttpClient::new(proxy.connect());
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n");
        assert_eq!(c.response(false).status, 408, "{}", proxy.label);
        assert!(c.closed(), "{}", proxy.label);
        assert_eq!(b.accepted(), 0);
    }
}

fn large_head_gives_431_and_large_body_413(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::Info);
        let proxy = TestProxy::start(
            io,
            shards,
            &http_config(
                &[b.addr()],
                "[limits]\nmax_header_bytes = 1024\nmax_body_bytes = 100\n",
            ),
        );
        let mut c = HttpClient::new(proxy.connect());
        c.send(
            format!(
                "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
                "a".repeat(2000)
            )
            .as_bytes(),
        );
        assert_eq!(c.response(false).status, 431, "{}", proxy.label);
        assert!(c.closed());
        let mut c = HttpClient::new(proxy.connect());
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n");
        assert_eq!(c.response(false).status, 413, "{}", proxy.label);
        assert!(c.closed());
        let mut c = HttpClient::new(proxy.connect());
        let mut req = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(format!("65\r\n{}\r\n0\r\n\r\n", "x".repeat(101)).as_bytes());
        c.send(&req);
        assert_eq!(
            c.response(false).status,
            413,
            "{}: chunked over the limit",
            proxy.label
        );
        assert!(c.closed());
        assert!(b.requests().is_empty(), "{}", proxy.label);
    }
}

fn idle_upstream_connections_are_closed_after_the_idle_timeout(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::Info);
        let proxy = TestProxy::start(
            io,
            shards,
            &http_config(&[b.addr()], "[timeouts]\nupstream_idle_ms = 100\n"),
        );
        let mut c = HttpClient::new(proxy.connect());
        c.send(&get("/1"));
        assert_eq!(c.response(false).status, 200);
        c.send(&get("/2"));
        assert_eq!(c.response(false).status, 200);
        assert_eq!(b.accepted(), 1, "{}: reused while fresh", proxy.label);
        thread::sleep(Duration::from_millis(400));
        c.send(&get("/3"));
        assert_eq!(c.response(false).status, 200);
        assert_eq!(
            b.accepted(),
            2,
            "{}: a new connection after the idle timeout",
            proxy.label
        );
    }
}

fn dead_pooled_connection_is_retried_for_idempotent_requests(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::OnceThenDrop);
        let proxy = TestProxy::start(io, shards, &http_config(&[b.addr()], ""));
        let mut c = HttpClient::new(proxy.connect());
        for i in 0..4 {
            c.send(&get(&format!("/{i}")));
            assert_eq!(c.response(false).status, 200, "{}: GET {i}", proxy.label);
        }
        // Each GET after the first found its pooled connection dead and was
        // retried on a new one.
        assert!(
            wait_until(Duration::from_secs(5), || b.accepted() == 4),
            "{}: {}",
            proxy.label,
            b.accepted()
        );
        // A PUT whose body went out on the dead connection is sent again, body
        // and all (kept for the retry up to 64 KiB) ...
        let body = vec![b'x'; 20_000];
        c.send(b"PUT /put HTTP/1.1\r\nHost: t\r\nContent-Length: 20000\r\n\r\n");
        c.send(&body);
        let r = c.response(false);
        assert_eq!(r.status, 200, "{}: PUT retried", proxy.label);
        assert_eq!(r.text(), "a PUT /put 20000", "{}", proxy.label);
        // ... chunked too (the re-encoded chunks are what is kept) ...
        c.send(b"PUT /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
        c.send(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        let r = c.response(false);
        assert_eq!(r.status, 200, "{}: chunked PUT retried", proxy.label);
        assert_eq!(r.text(), "a PUT /chunked 11", "{}", proxy.label);
        // ... but not one past what is kept: 502.
        let big = vec![b'y'; 100_000];
        c.send(b"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
        c.send(&big);
        assert_eq!(c.response(false).status, 502, "{}: big PUT", proxy.label);
        // A POST is never retried: 502.
        let mut c = HttpClient::new(proxy.connect());
        c.send(&get("/warm"));
        assert_eq!(c.response(false).status, 200, "{}", proxy.label);
        c.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
        assert_eq!(c.response(false).status, 502, "{}", proxy.label);
    }
}

fn clients_past_max_connections_wait_their_turn(io: Io) {
    let b = HttpBackend::start("a", Answer::Info);
    // One shard: with several, the kernel's reuseport hash picks which
    // shard's backlog a waiting client sits in.
    let config = http_config(&[b.addr()], "[limits]\nmax_connections = 3\n");
    let proxy = TestProxy::start(io, 1, &config);
    let mut held: Vec<HttpClient> = (0..3)
        .map(|i| {
            let mut c = HttpClient::new(proxy.connect());
            c.send(&get(&format!("/{i}")));
            assert_eq!(c.response(false).status, 200, "{}: client {i}", proxy.label);
            c
        })
        .collect();
    // The fourth is not accepted (its upstream would not be either) ...
    let mut waiting = HttpClient::new(proxy.connect());
    waiting.send(&get("/waiting"));
    thread::sleep(Duration::from_millis(300));
    assert_eq!(proxy.metrics().total().conns_accepted, 3, "{}", proxy.label);
    // ... until one of the three leaves; nothing it sent was lost.
    held.pop();
    assert_eq!(waiting.response(false).status, 200, "{}", proxy.label);
    for c in &mut held {
        c.send(&get("/again"));
        assert_eq!(c.response(false).status, 200, "{}", proxy.label);
    }
}

shardline::per_backend! {
    unreachable_backends_give_502 => unreachable_backends_give_502;
    refused_backend_fails_over_to_the_next => refused_backend_fails_over_to_the_next;
    silent_backend_gives_504 => silent_backend_gives_504;
    slow_request_head_gives_408 => slow_request_head_gives_408;
    large_head_gives_431_and_large_body_413 => large_head_gives_431_and_large_body_413;
    idle_upstream_connections_are_closed_after_the_idle_timeout => idle_upstream_connections_are_closed_after_the_idle_timeout;
    dead_pooled_connection_is_retried_for_idempotent_requests => dead_pooled_connection_is_retried_for_idempotent_requests;
    clients_past_max_connections_wait_their_turn => clients_past_max_connections_wait_their_turn;
}
