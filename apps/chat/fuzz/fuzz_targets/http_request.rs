//! Arbitrary bytes through the WebSocket listeners' HTTP request head parser
//! (`websocket::http::parse_head`) and router (`websocket::respond`).
//! Invariants checked:
//!
//! - nothing panics;
//! - a parsed head ends with its CR LF CR LF within `MAX_HEAD` bytes, has at
//!   most `MAX_HEADERS` headers, a token method and an origin-form path, and
//!   header names and values free of CR, LF and surrounding whitespace;
//! - every shorter prefix of a parsed head is "not complete yet", so a head
//!   arriving in pieces is parsed the same;
//! - the router's answer is an HTTP/1.1 response head (an upgrade only for a
//!   GET), with the default configuration and with an Origin allow-list.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_chat::{
    websocket::{
        http::{parse_head, MAX_HEAD, MAX_HEADERS},
        respond, Answer,
    },
    WebSocketSection,
};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((req, used))) = parse_head(data) else {
        return;
    };
    assert!(used <= MAX_HEAD && used <= data.len());
    assert_eq!(&data[used - 4..used], b"\r\n\r\n");
    assert!(req.headers.len() <= MAX_HEADERS);
    assert!(!req.method.is_empty());
    assert!(req.path.starts_with('/'));
    for (n, v) in &req.headers {
        assert!(!n.is_empty() && !n.contains([' ', '\t', '\r', '\n', ':']));
        assert!(!v.contains(['\r', '\n']));
        assert_eq!(v.trim_matches([' ', '\t']), *v);
    }
    for cut in [0, 1, used / 2, used - 2, used - 1] {
        assert_eq!(parse_head(&data[..cut]), Ok(None), "cut {cut}");
    }
    let strict = WebSocketSection {
        allowed_origins: vec!["https://chat.example".into()],
        ..WebSocketSection::default()
    };
    for config in [WebSocketSection::default(), strict] {
        match respond(&req, &config) {
            Answer::Close(b) => assert!(b.starts_with(b"HTTP/1.1 ")),
            Answer::Upgrade(b, _) => {
                assert_eq!(req.method, "GET");
                assert!(b.starts_with(b"HTTP/1.1 101 "));
            }
        }
    }
});
