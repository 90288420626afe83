use super::*;

fn req(text: &str) -> Result<Option<RequestHead<'_>>, HeadError> {
    parse_request(text.as_bytes(), 16 << 10, 100)
}

#[test]
fn parses_a_plain_request() {
    let r = req("GET /a?b HTTP/1.1\r\nHost: Example.COM:8080\r\nX: y\r\n\r\nrest")
        .expect("valid")
        .expect("complete");
    assert_eq!(r.method, "GET");
    assert_eq!(r.target, "/a?b");
    assert_eq!(r.host.as_deref(), Some("example.com"));
    assert_eq!(r.framing, Framing::None);
    assert!(!r.close);
    assert_eq!(
        r.len,
        "GET /a?b HTTP/1.1\r\nHost: Example.COM:8080\r\nX: y\r\n\r\n".len()
    );
    assert!(req("GET / HTTP/1.1\r\nHost: a\r\n")
        .expect("valid")
        .is_none());
}

#[test]
fn framing_rules() {
    use HeadError::*;
    let cases: &[(&str, HeadError)] = &[
        ("GET / HTTP/1.1\nHost: a\n\n", BareLineEnd),
        ("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", BareLineEnd),
        ("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", BareLineEnd),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", ObsFold),
        ("GET / HTTP/1.1\r\nHost: a\r\n\tc\r\n\r\n", ObsFold),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", LengthAndChunked),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", BadContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", BadContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", BadContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", BadContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n", BadContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", BadContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", BadTransferEncoding),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", BadTransferEncoding),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", BadTransferEncoding),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", BadTransferEncoding),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BadTransferEncoding),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", BadTransferEncoding),
        ("GET / HTTP/1.1\r\n\r\n", BadHost),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", BadHost),
    ];
    for (text, want) in cases {
        assert_eq!(req(text).map(|_| ()), Err(want.clone()), "{text:?}");
        assert_eq!(want.status(), 400);
    }
    for text in [
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHo\x01st: a\r\n\r\n",
    ] {
        assert!(matches!(req(text), Err(Malformed(_))), "{text:?}");
    }
    let ok = req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\n\r\n")
        .expect("valid")
        .expect("complete");
    assert_eq!(ok.framing, Framing::Chunked);
}

#[test]
fn size_limits_are_431() {
    let long = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "y".repeat(200)
    );
    let e = parse_request(long.as_bytes(), 100, 100).expect_err("too large");
    assert_eq!(e.status(), 431);
    let e = parse_request(&long.as_bytes()[..150], 100, 100).expect_err("too large already");
    assert_eq!(e.status(), 431);
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: 1\r\n".repeat(10));
    let e = parse_request(many.as_bytes(), 4096, 5).expect_err("too many");
    assert_eq!(e.status(), 431);
}

#[test]
fn rewrites_hop_by_hop_and_forwarded_fields() {
    let r = req("POST /p HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nTrailer: y\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nTransfer-Encoding: chunked\r\nKept: yes\r\n\r\n")
        .expect("valid")
        .expect("complete");
    let out = String::from_utf8(upstream_request(
        &r,
        "192.0.2.7".parse().expect("ip"),
        Proto::Http,
        "b",
    ))
    .expect("ascii");
    assert!(out.starts_with("POST /p HTTP/1.1\r\nHost: a\r\n"), "{out}");
    for gone in [
        "Connection",
        "X-Secret",
        "Keep-Alive",
        "TE:",
        "Upgrade",
        "Proxy-Connection",
        "Trailer",
    ] {
        assert!(!out.contains(gone), "{gone} in {out}");
    }
    assert!(
        out.contains("X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n"),
        "{out}"
    );
    assert!(out.contains("X-Forwarded-Proto: http\r\n"), "{out}");
    assert!(out.contains("Transfer-Encoding: chunked\r\n"), "{out}");
    assert!(out.contains("Kept: yes\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\n"));
}

#[test]
fn response_framing() {
    fn r(t: &str, head: bool) -> ResponseHead<'_> {
        parse_response(t.as_bytes(), head, 16 << 10, 100)
            .expect("valid")
            .expect("complete")
    }
    assert_eq!(
        r("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).framing,
        Framing::Length(5)
    );
    assert_eq!(
        r("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).framing,
        Framing::None
    );
    assert_eq!(
        r("HTTP/1.1 204 No Content\r\n\r\n", false).framing,
        Framing::None
    );
    assert_eq!(
        r(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false
        )
        .framing,
        Framing::None
    );
    assert_eq!(
        r("HTTP/1.1 100 Continue\r\n\r\n", false).framing,
        Framing::None
    );
    assert_eq!(
        r(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        )
        .framing,
        Framing::Chunked
    );
    let c = r("HTTP/1.1 200 OK\r\n\r\n", false);
    assert_eq!(c.framing, Framing::UntilClose);
    assert!(!c.reusable);
    assert!(
        !r(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false
        )
        .reusable
    );
    assert!(!r("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).reusable);
    assert!(r("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false).reusable);
    assert!(parse_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        false,
        1024,
        10
    )
    .is_err());
}

#[test]
fn persistence_follows_the_version_and_connection_tokens() {
    let close = |text: &str| req(text).expect("valid").expect("complete").close;
    assert!(!close("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(close(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n"
    ));
    assert!(close("GET / HTTP/1.0\r\n\r\n"));
    assert!(!close("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    assert!(close(
        "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"
    ));
}

/// The byte-at-a-time statement of `scan_head`'s rules, to check the fast one.
fn reference_scan(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    let mut line_start = 0;
    for i in 0..buf.len() {
        match buf[i] {
            b'\n' => {
                if i == 0 || buf[i - 1] != b'\r' {
                    return Err(HeadError::BareLineEnd);
                }
                if i + 1 - line_start == 2 {
                    return Ok(Some(i + 1));
                }
                line_start = i + 1;
            }
            b'\r' if i + 1 < buf.len() && buf[i + 1] != b'\n' => {
                return Err(HeadError::BareLineEnd)
            }
            b' ' | b'\t' if i == line_start && line_start > 0 => return Err(HeadError::ObsFold),
            _ => {}
        }
    }
    Ok(None)
}

#[test]
fn scan_head_agrees_with_the_byte_loop() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let alphabet = b"ab: \t\r\n";
    let mut rng = StdRng::seed_from_u64(11);
    let mut buf = Vec::new();
    for _ in 0..200_000 {
        buf.clear();
        let len = rng.random_range(0..24);
        // Mostly well-formed line ends, so that long heads get far.
        for _ in 0..len {
            if rng.random_bool(0.2) {
                buf.extend_from_slice(b"\r\n");
            } else {
                buf.push(alphabet[rng.random_range(0..alphabet.len())]);
            }
        }
        let (fast, slow) = (scan_head(&buf), reference_scan(&buf));
        assert_eq!(
            format!("{fast:?}"),
            format!("{slow:?}"),
            "{:?}",
            String::from_utf8_lossy(&buf)
        );
    }
}

#[test]
fn forwarded_proto_says_https_for_tls_clients() {
    let r = req("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: http\r\n\r\n")
        .expect("valid")
        .expect("complete");
    let out = String::from_utf8(upstream_request(
        &r,
        "192.0.2.7".parse().expect("ip"),
        Proto::Https,
        "b",
    ))
    .expect("ascii");
    assert!(out.contains("X-Forwarded-Proto: https\r\n"), "{out}");
    assert!(
        !out.contains("X-Forwarded-Proto: http\r\n"),
        "the client's own is dropped: {out}"
    );
}

#[test]
fn absolute_form_is_routed_on_its_authority_and_sent_in_origin_form() {
    let r = req("GET http://API.example.com:8080/v1/x?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")
        .expect("valid")
        .expect("complete");
    assert_eq!(r.target, "/v1/x?q=1");
    assert_eq!(r.authority, Some("API.example.com:8080"));
    assert_eq!(
        r.host.as_deref(),
        Some("api.example.com"),
        "routed on the authority"
    );
    let out = String::from_utf8(upstream_request(
        &r,
        "192.0.2.7".parse().expect("ip"),
        Proto::Http,
        "b",
    ))
    .expect("ascii");
    assert!(out.starts_with("GET /v1/x?q=1 HTTP/1.1\r\n"), "{out}");
    assert!(out.contains("Host: API.example.com:8080\r\n"), "{out}");
    assert!(!out.contains("Host: other"), "{out}");
    for (target, origin) in [
        ("http://h", "/"),
        ("https://h?x", "/?x"),
        ("HTTP://h/", "/"),
    ] {
        let text = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = req(&text).expect("valid").expect("complete");
        assert_eq!(r.target, origin, "{target}");
    }
    // HTTP/1.0 without Host: the authority becomes the Host.
    let r = req("GET http://a.test/ HTTP/1.0\r\n\r\n")
        .expect("valid")
        .expect("complete");
    let out = String::from_utf8(upstream_request(
        &r,
        "192.0.2.7".parse().expect("ip"),
        Proto::Http,
        "b",
    ))
    .expect("ascii");
    assert!(out.contains("Host: a.test\r\n"), "{out}");
}

#[test]
fn targets_that_are_neither_origin_nor_absolute_form_are_refused() {
    for (line, status) in [
        ("CONNECT a.test:443 HTTP/1.1", 405),
        ("GET * HTTP/1.1", 400),
        ("GET a.test:80 HTTP/1.1", 400),
        ("GET foo HTTP/1.1", 400),
        ("GET ftp://a.test/ HTTP/1.1", 400),
        ("GET http:///x HTTP/1.1", 400),
        ("GET http://user@a.test/ HTTP/1.1", 400),
        ("GET http://a.test/x#frag HTTP/1.1", 400),
    ] {
        let text = format!("{line}\r\nHost: a.test\r\n\r\n");
        let e = req(&text).expect_err(line);
        assert_eq!(e.status(), status, "{line}: {e}");
    }
    let r = req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("valid")
        .expect("complete");
    assert_eq!(r.target, "*");
}

#[test]
fn http10_with_transfer_encoding_is_refused() {
    let e = req("POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").expect_err("refused");
    assert_eq!(e, HeadError::TransferEncodingInHttp10);
    assert_eq!(e.status(), 400);
}

#[test]
fn host_survives_a_connection_field_naming_it() {
    let r = req("GET / HTTP/1.1\r\nHost: a.test\r\nConnection: Host, X-Drop\r\nX-Drop: 1\r\n\r\n")
        .expect("valid")
        .expect("complete");
    let out = String::from_utf8(upstream_request(
        &r,
        "192.0.2.7".parse().expect("ip"),
        Proto::Http,
        "b",
    ))
    .expect("ascii");
    assert!(out.contains("Host: a.test\r\n"), "{out}");
    assert!(!out.contains("X-Drop"), "{out}");
    assert_eq!(out.matches("Host:").count(), 1, "{out}");
}

fn upstream_text(r: &RequestHead<'_>) -> String {
    String::from_utf8(upstream_request(
        r,
        "192.0.2.7".parse().expect("ip"),
        Proto::Http,
        "b",
    ))
    .expect("ascii")
}

#[test]
fn an_upgrade_request_keeps_connection_upgrade_and_its_protocols() {
    let r = req("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n")
        .expect("valid")
        .expect("complete");
    assert_eq!(r.upgrade.as_deref(), Some("websocket"));
    let out = upstream_text(&r);
    assert!(
        out.contains("Connection: upgrade\r\nUpgrade: websocket\r\n"),
        "{out}"
    );
    assert!(out.contains("Sec-WebSocket-Key: k\r\n"), "{out}");
    assert_eq!(out.matches("Connection").count(), 1, "{out}");
    assert_eq!(out.matches("Upgrade:").count(), 1, "{out}");
    assert!(!out.contains("keep-alive"), "{out}");
    // Several fields and lists are joined; h2c and junk are dropped.
    let r = req("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c, foo/2\r\nUpgrade: H2C,, bar\r\nUpgrade: b@d\r\n\r\n")
        .expect("valid")
        .expect("complete");
    assert_eq!(r.upgrade.as_deref(), Some("foo/2, bar"));
}

#[test]
fn upgrades_that_are_not_passed_on() {
    for text in [
        // h2c alone: an ordinary request.
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAA\r\n\r\n",
        // Upgrade without the connection option.
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        // The option without a protocol.
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
        // HTTP/1.0.
        "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        // With content.
        "POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let r = req(text).expect("valid").expect("complete");
        assert_eq!(r.upgrade, None, "{text}");
        let out = upstream_text(&r);
        for gone in ["Upgrade", "Connection", "HTTP2-Settings"] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
    }
    // An empty body is no content.
    let r = req("POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: x\r\nContent-Length: 0\r\n\r\n")
        .expect("valid")
        .expect("complete");
    assert_eq!(r.upgrade.as_deref(), Some("x"));
}

#[test]
fn a_101_goes_to_the_client_with_its_upgrade() {
    fn head(t: &str) -> ResponseHead<'_> {
        parse_response(t.as_bytes(), false, 16 << 10, 100)
            .expect("valid")
            .expect("complete")
    }
    let h = head("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Hop\r\nX-Hop: 1\r\nSec-WebSocket-Accept: abc\r\n\r\n");
    let mut out = Vec::new();
    assert!(switching_response_into(&mut out, &h));
    let out = String::from_utf8(out).expect("ascii");
    assert_eq!(
        out,
        "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
    let h = head("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n");
    assert!(!switching_response_into(&mut Vec::new(), &h));
}
