//! HTTP mode: requests and responses forwarded byte for byte (Content-Length and
//! chunked, both ways), header rewriting, keep-alive and pipelining, upstream
//! connection reuse, round-robin. Both I/O backends, 1 and 4 shards.

mod common;

use common::{get, http_config, Answer, HttpBackend, HttpClient, TestProxy, SHARD_COUNTS};
use rand::{rngs::StdRng, RngCore, SeedableRng};
use shardline::Io;

fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn get_and_post_with_content_length(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::EchoBody);
        let proxy = TestProxy::start(io, shards, &http_config(&[b.addr()], ""));
        let mut c = HttpClient::new(proxy.connect());
        c.send(&get("/hello?x=1"));
        let r = c.response(false);
        assert_eq!(r.status, 200, "{}", proxy.label);
        assert!(r.body.is_empty());
        let body = random(7, 300_000);
        let mut req = format!(
            "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        c.send(&req);
        let r = c.response(false);
        assert_eq!(r.status, 200, "{}", proxy.label);
        assert!(r.body == body, "{}: echoed body differs", proxy.label);
        let seen = b.requests();
        assert_eq!(seen.len(), 2, "{}", proxy.label);
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("GET", "/hello?x=1")
        );
        assert_eq!(seen[1].method, "POST");
        assert!(
            seen[1].body == body,
            "{}: backend got the body",
            proxy.label
        );
        assert_eq!(seen[1].header("Content-Length"), Some("300000"));
        // X-Forwarded-*: added; the client's own Host kept.
        assert_eq!(
            seen[0].header("X-Forwarded-For"),
            Some("127.0.0.1"),
            "{}",
            proxy.label
        );
        assert_eq!(seen[0].header("X-Forwarded-Proto"), Some("http"));
        assert_eq!(seen[0].header("Host"), Some("test"));
    }
}

fn chunked_request_and_chunked_response_stream_through(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::EchoChunked);
        let proxy = TestProxy::start(io, shards, &http_config(&[b.addr()], ""));
        let mut c = HttpClient::new(proxy.connect());
        let body = random(9, 200_000);
        let mut req =
            b"POST /c HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        // Uneven chunk sizes, an extension, trailers.
        let mut at = 0;
        for (i, size) in [1usize, 4095, 70_000, 17, 125_887].into_iter().enumerate() {
            let piece = &body[at..at + size];
            at += size;
            req.extend_from_slice(
                format!("{size:X}{}\r\n", if i == 1 { ";x=y" } else { "" }).as_bytes(),
            );
            req.extend_from_slice(piece);
            req.extend_from_slice(b"\r\n");
        }
        assert_eq!(at, body.len());
        req.extend_from_slice(b"0\r\nX-T: 1\r\n\r\n");
        // Sent in small pieces so the decoder sees every split.
        for piece in req.chunks(7_777) {
            c.send(piece);
        }
        let r = c.response(false);
        assert_eq!(r.status, 200, "{}", proxy.label);
        assert!(r.chunked, "{}: the response stays chunked", proxy.label);
        assert!(r.body == body, "{}: chunked echo differs", proxy.label);
        let seen = b.requests();
        assert!(seen[0].chunked, "{}: forwarded chunked", proxy.label);
        assert!(
            seen[0].body == body,
            "{}: backend got the body",
            proxy.label
        );
        // The same connection goes on.
        c.send(&get("/after"));
        assert_eq!(c.response(false).status, 200);
    }
}

fn pipelined_requests_are_answered_in_order(io: Io) {
    for shards in SHARD_COUNTS {
        let a = HttpBackend::start("a", Answer::Info);
        let b = HttpBackend::start("b", Answer::Info);
        let proxy = TestProxy::start(io, shards, &http_config(&[a.addr(), b.addr()], ""));
        let mut c = HttpClient::new(proxy.connect());
        let mut burst = Vec::new();
        for i in 0..20 {
            burst.extend_from_slice(&get(&format!("/p{i}")));
        }
        burst
            .extend_from_slice(b"POST /p20 HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc");
        burst.extend_from_slice(b"HEAD /p21 HTTP/1.1\r\nHost: test\r\n\r\n");
        c.send(&burst);
        for i in 0..22 {
            let r = c.response(i == 21);
            assert_eq!(r.status, 200, "{}", proxy.label);
            let want_path = format!("/p{i}");
            if i < 21 {
                let text = r.text();
                let path = text.split(' ').nth(2).unwrap_or("");
                assert_eq!(
                    path, want_path,
                    "{}: response {i} out of order: {text}",
                    proxy.label
                );
            } else {
                assert!(r.body.is_empty(), "HEAD has no body");
                assert!(
                    r.header("Content-Length").is_some(),
                    "HEAD keeps Content-Length"
                );
            }
        }
        assert_eq!(a.requests().len() + b.requests().len(), 22);
    }
}

fn upstream_connections_are_reused(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::Info);
        let proxy = TestProxy::start(io, shards, &http_config(&[b.addr()], ""));
        let mut c = HttpClient::new(proxy.connect());
        for i in 0..30 {
            c.send(&get(&format!("/{i}")));
            assert_eq!(c.response(false).status, 200, "{}", proxy.label);
        }
        // Sequential requests on one client connection (one shard) share one
        // upstream connection.
        assert_eq!(b.accepted(), 1, "{}: upstream accepts", proxy.label);
        // A new client connection on the same shard reuses it too; across four
        // shards each shard has its own pool.
        for i in 0..8 {
            let mut c = HttpClient::new(proxy.connect());
            c.send(&get(&format!("/n{i}")));
            assert_eq!(c.response(false).status, 200);
        }
        assert!(
            b.accepted() <= shards,
            "{}: {} upstream accepts for {shards} shards",
            proxy.label,
            b.accepted()
        );
    }
}

fn backend_closing_after_response_is_not_reused(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::InfoThenClose);
        let proxy = TestProxy::start(io, shards, &http_config(&[b.addr()], ""));
        let mut c = HttpClient::new(proxy.connect());
        for i in 0..5 {
            c.send(&get(&format!("/{i}")));
            let r = c.response(false);
            assert_eq!(r.status, 200, "{}: request {i}", proxy.label);
            assert!(
                r.header("Connection").is_none(),
                "client keep-alive is separate"
            );
        }
        assert_eq!(b.accepted(), 5, "{}", proxy.label);
    }
}

fn round_robin_alternates_between_two_backends(io: Io) {
    for shards in SHARD_COUNTS {
        let a = HttpBackend::start("a", Answer::Info);
        let b = HttpBackend::start("b", Answer::Info);
        let proxy = TestProxy::start(io, shards, &http_config(&[a.addr(), b.addr()], ""));
        let mut c = HttpClient::new(proxy.connect());
        let mut names = Vec::new();
        for i in 0..10 {
            c.send(&get(&format!("/{i}")));
            let r = c.response(false);
            names.push(r.header("X-Backend").expect("backend name").to_string());
        }
        for pair in names.windows(2) {
            assert_ne!(pair[0], pair[1], "{}: {names:?}", proxy.label);
        }
        assert_eq!(a.requests().len(), 5, "{}", proxy.label);
        assert_eq!(b.requests().len(), 5, "{}", proxy.label);
    }
}

fn hop_by_hop_headers_are_removed(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::Info);
        let proxy = TestProxy::start(io, shards, &http_config(&[b.addr()], ""));
        let mut c = HttpClient::new(proxy.connect());
        c.send(b"GET /h HTTP/1.1\r\nHost: test\r\nConnection: keep-alive, X-Private\r\nX-Private: s\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: websocket\r\nX-Forwarded-For: 203.0.113.9\r\nX-Kept: 1\r\n\r\n");
        assert_eq!(c.response(false).status, 200);
        let seen = &b.requests()[0];
        for gone in [
            "Connection",
            "X-Private",
            "Keep-Alive",
            "Proxy-Connection",
            "TE",
            "Trailer",
            "Upgrade",
        ] {
            assert!(
                seen.header(gone).is_none(),
                "{}: {gone} forwarded",
                proxy.label
            );
        }
        assert_eq!(seen.header("X-Kept"), Some("1"));
        assert_eq!(
            seen.header("X-Forwarded-For"),
            Some("203.0.113.9, 127.0.0.1")
        );
    }
}

/// A 12 MiB upload and its 12 MiB echo through a proxy whose queues pause the
/// other side at 64 KiB (hard limit 1 MiB): the client starts reading late, so
/// the response backs up into the proxy, which must stop reading the backend
/// rather than hit the hard limit.
fn large_bodies_stream_with_backpressure(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::EchoBody);
        let proxy = TestProxy::start(
            io,
            shards,
            &http_config(&[b.addr()], "[limits]\nsend_high_water = 65536\n"),
        );
        let body = random(11, 12 << 20);
        let mut c = HttpClient::new(proxy.connect());
        let mut writer = c.stream.try_clone().expect("clone");
        let mut req = format!(
            "POST /big HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let w = std::thread::spawn(move || {
            std::io::Write::write_all(&mut writer, &req).expect("upload");
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let r = c.response(false);
        w.join().expect("writer");
        assert_eq!(r.status, 200, "{}", proxy.label);
        assert!(
            r.body == body,
            "{}: echo differs ({} bytes)",
            proxy.label,
            r.body.len()
        );
        assert_eq!(
            proxy.metrics().total().closed_send_queue_full,
            0,
            "{}: no queue hit its hard limit",
            proxy.label
        );
    }
}

fn http10_keep_alive_when_asked_and_possible(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::EchoBody);
        let chunky = HttpBackend::start("c", Answer::EchoChunked);
        let config = format!(
            "{}[[listener.route]]\npath_prefix = \"/chunky\"\npool = \"c\"\n\
             [pool.c]\nbackends = [{{ address = \"{}\" }}]\n",
            http_config(&[b.addr()], ""),
            chunky.addr()
        );
        let proxy = TestProxy::start(io, shards, &config);
        let mut c = HttpClient::new(proxy.connect());
        // Asked for, with a Content-Length response: kept open, and said so.
        for i in 0..3 {
            c.send(
                format!(
                    "POST /{i} HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nk{i}"
                )
                .as_bytes(),
            );
            let r = c.response(false);
            assert_eq!(
                (r.status, r.body.clone()),
                (200, format!("k{i}").into_bytes())
            );
            assert_eq!(
                r.header("Connection"),
                Some("keep-alive"),
                "{}",
                proxy.label
            );
        }
        // A chunked response cannot be framed for HTTP/1.0: close-delimited.
        c.send(b"POST /chunky HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc");
        let r = c.response(false);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"abc"[..]),
            "{}",
            proxy.label
        );
        assert!(!r.chunked, "{}", proxy.label);
        assert_eq!(r.header("Connection"), Some("close"), "{}", proxy.label);
        // Not asked for: closed after the response.
        let mut c = HttpClient::new(proxy.connect());
        c.send(b"GET /plain HTTP/1.0\r\n\r\n");
        let r = c.response(false);
        assert_eq!(r.status, 200, "{}", proxy.label);
        assert_eq!(r.header("Connection"), Some("close"), "{}", proxy.label);
        assert!(c.closed(), "{}", proxy.label);
    }
}

shardline::per_backend! {
    get_and_post_with_content_length => get_and_post_with_content_length;
    chunked_request_and_chunked_response_stream_through => chunked_request_and_chunked_response_stream_through;
    pipelined_requests_are_answered_in_order => pipelined_requests_are_answered_in_order;
    upstream_connections_are_reused => upstream_connections_are_reused;
    backend_closing_after_response_is_not_reused => backend_closing_after_response_is_not_reused;
    round_robin_alternates_between_two_backends => round_robin_alternates_between_two_backends;
    hop_by_hop_headers_are_removed => hop_by_hop_headers_are_removed;
    large_bodies_stream_with_backpressure => large_bodies_stream_with_backpressure;
    http10_keep_alive_when_asked_and_possible => http10_keep_alive_when_asked_and_possible;
}
