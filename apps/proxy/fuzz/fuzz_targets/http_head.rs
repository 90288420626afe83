//! Arbitrary bytes through the HTTP request-head parser and the upstream head
//! the proxy builds from it (`shardline_proxy::http::head`). Invariants checked:
//!
//! - nothing panics;
//! - a refused head is answered 400, 405 or 431;
//! - a head the parser accepts is rewritten into one the parser accepts again,
//!   with the same method, an origin-form (or `*`) target, exactly one Host, and
//!   the same host (an absolute-form target's authority becomes the Host);
//! - no hop-by-hop field reaches the backend.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_proxy::http::head::{parse_request, upstream_request_into, Proto};

fuzz_target!(|data: &[u8]| {
    let req = match parse_request(data, 16 << 10, 100) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            assert!(matches!(e.status(), 400 | 405 | 431), "{e}");
            return;
        }
    };
    assert!(req.target.starts_with('/') || req.target == "*", "{}", req.target);
    let mut out = Vec::new();
    upstream_request_into(&mut out, &req, "192.0.2.1", Proto::Http, "backend:80");
    let again = match parse_request(&out, 64 << 10, 256) {
        Ok(Some(r)) => r,
        other => panic!(
            "the upstream head does not parse: {other:?}\n{}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(again.method, req.method);
    assert_eq!(again.target, req.target);
    assert_eq!(again.authority, None);
    let hosts = again
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    assert_eq!(hosts, 1, "{}", String::from_utf8_lossy(&out));
    if req.host.is_some() {
        assert_eq!(again.host, req.host, "{}", String::from_utf8_lossy(&out));
    }
    for hop in ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"] {
        assert!(
            !again.headers.iter().any(|h| h.name.eq_ignore_ascii_case(hop)),
            "{hop} forwarded: {}",
            String::from_utf8_lossy(&out)
        );
    }
});
