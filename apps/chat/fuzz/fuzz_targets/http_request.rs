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
//!   GET), with the default configuration and with an Origin allow-list;
//! - the file host's header readers (`POST /upload`): a `Content-Disposition`
//!   name always sanitizes to a safe single path segment; `Authorization`
//!   values never yield an empty account or a NUL (Basic), and a Bearer
//!   token never passes the check unless this process made it (no forging),
//!   while one made for a claim taken from the value checks back to it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_chat::{
    websocket::{
        http::{parse_head, MAX_HEAD, MAX_HEADERS},
        respond, Answer,
    },
    filehost::{disposition_name, parse_basic, sanitize_name, valid_name},
    upload_token::{parse_bearer, Claim, TokenKey, MAX_ACCOUNT},
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
    for v in req.values("Content-Disposition") {
        let name = sanitize_name(disposition_name(v).unwrap_or("file"));
        assert!(valid_name(&name) && !name.contains(['/', '\\']) && !name.starts_with('.'));
    }
    let key = TokenKey::from_bytes(b"fuzz");
    for v in req.values("Authorization") {
        if let Some((user, pass)) = parse_basic(v) {
            assert!(!user.is_empty() && !pass.is_empty() && !user.contains('\0'));
        }
        if let Some(token) = parse_bearer(v) {
            assert_eq!(key.check(token, 0), None, "a token forged: {token}");
        }
        let account: String = v.chars().take(MAX_ACCOUNT / 4).collect();
        let claim = Claim {
            shard: v.len() % 64,
            client: v.len() as u64,
            account,
        };
        if let Some(t) = key.issue(&claim, 7) {
            assert_eq!(parse_bearer(&format!("Bearer {t}")), Some(t.as_str()));
            assert_eq!(key.check(&t, 7), Some(claim));
        }
    }
});
