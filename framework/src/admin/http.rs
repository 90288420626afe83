//! The admin endpoint's HTTP: where a request head ends, what it asks (parsed by
//! `httparse`), and the whole response to it. No I/O here.

use std::panic::{catch_unwind, AssertUnwindSafe};

use tracing::warn;

use super::AdminConfig;
use crate::metrics::{Metrics, PromWriter, CONTENT_TYPE};

/// Most header lines a request head may have (431 past it).
const MAX_HEADERS: usize = 64;

/// Where the head in `buf` ends (after its blank line), looking only at what
/// arrived from `from` on (and the few bytes before it a terminator may span), so
/// a head that arrives a byte at a time costs linear time in all.
pub(super) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    (start..buf.len()).find_map(|i| {
        let rest = &buf[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BadHead {
    /// Not an HTTP/1.x request head (400).
    Malformed,
    /// More than [`MAX_HEADERS`] header lines (431).
    TooManyHeaders,
}

/// The request's method and path (query and fragment dropped), if `head` — one
/// complete head, ending in its blank line — is an HTTP/1.x request whose target
/// is an absolute path.
pub(super) fn parse_head(head: &[u8]) -> Result<(&str, &str), BadHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        // `head` holds exactly one head, so a partial parse means httparse saw a
        // different end (e.g. leading blank lines it skips): not a request.
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(BadHead::Malformed),
        Err(httparse::Error::TooManyHeaders) => return Err(BadHead::TooManyHeaders),
        Err(_) => return Err(BadHead::Malformed),
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(BadHead::Malformed);
    };
    if !target.starts_with('/') {
        return Err(BadHead::Malformed);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok((method, path))
}

/// The whole response to one request head: `head` is what was read, complete (it
/// ends in a blank line) or [`MAX_HEAD`](super::MAX_HEAD) bytes without one.
pub(super) fn answer(head: &[u8], config: &AdminConfig, metrics: Option<&Metrics>) -> Vec<u8> {
    let Some(end) = head_end(head, 0) else {
        return too_large();
    };
    let (method, path) = match parse_head(&head[..end]) {
        Ok(request) => request,
        Err(BadHead::TooManyHeaders) => return too_large(),
        Err(BadHead::Malformed) => {
            return response(400, "Bad Request", "text/plain", b"bad request\n")
        }
    };
    if !matches!(path, "/metrics" | "/healthz") {
        return response(404, "Not Found", "text/plain", b"not found\n");
    }
    if !matches!(method, "GET" | "HEAD") {
        return response_with(
            405,
            "Method Not Allowed",
            "text/plain",
            "Allow: GET, HEAD\r\n",
            b"method not allowed\n",
        );
    }
    let mut r = if path == "/healthz" {
        response(200, "OK", "text/plain", b"ok\n")
    } else {
        match catch_unwind(AssertUnwindSafe(|| render(config, metrics))) {
            Ok(body) => response(200, "OK", CONTENT_TYPE, body.as_bytes()),
            Err(_) => {
                warn!("admin endpoint: the metrics render callback panicked");
                response(
                    500,
                    "Internal Server Error",
                    "text/plain",
                    b"render failed\n",
                )
            }
        }
    };
    if method == "HEAD" {
        let at = head_end(&r, 0).unwrap_or(r.len());
        r.truncate(at);
    }
    r
}

fn too_large() -> Vec<u8> {
    response(
        431,
        "Request Header Fields Too Large",
        "text/plain",
        b"request head too large\n",
    )
}

/// The `/metrics` body: the framework's counters, then the application's.
fn render(config: &AdminConfig, metrics: Option<&Metrics>) -> String {
    let mut w = PromWriter::new();
    if let Some(m) = metrics {
        m.write_prometheus(&mut w);
    }
    if let Some(r) = &config.render {
        r(&mut w);
    }
    w.finish()
}

/// A complete response with `Connection: close`.
pub(super) fn response(status: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    response_with(status, reason, content_type, "", body)
}

/// A response with `extra` header lines (each ending in CR LF).
fn response_with(
    status: u16,
    reason: &str,
    content_type: &str,
    extra: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_strictly() {
        fn ok(h: &str) -> Result<(&str, &str), BadHead> {
            parse_head(h.as_bytes())
        }
        assert_eq!(
            ok("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(("GET", "/metrics"))
        );
        assert_eq!(ok("HEAD /healthz HTTP/1.0\n\n"), Ok(("HEAD", "/healthz")));
        assert_eq!(ok("GET /a#frag HTTP/1.1\r\n\r\n"), Ok(("GET", "/a")));
        for bad in [
            "\r\n\r\n",
            "GET\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET /metrics HTTP/2.0\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET * HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1 x\r\n\r\n",
            "G(T /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nbad name: x\r\n\r\n",
        ] {
            assert_eq!(ok(bad), Err(BadHead::Malformed), "{bad:?}");
        }
        assert_eq!(
            parse_head(b"GET /\xff HTTP/1.1\r\n\r\n"),
            Err(BadHead::Malformed)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        assert_eq!(
            ok(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Err(BadHead::TooManyHeaders)
        );
    }

    #[test]
    fn head_end_spans_chunks() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n", 16), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n", 17), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n", 0), None);
        assert_eq!(head_end(b"a\n\nb", 0), Some(3));
    }

    /// Every prefix and every one-byte corruption of a valid head gets an
    /// answer, never a panic.
    #[test]
    fn any_input_gets_a_status() {
        let config = AdminConfig::new("127.0.0.1:0".parse().expect("literal"));
        let good = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let status = |r: Vec<u8>| -> u16 {
            let text = String::from_utf8(r).expect("ASCII response");
            text[9..12].parse().expect("status code")
        };
        assert_eq!(status(answer(good, &config, None)), 200);
        for len in 0..good.len() {
            let mut head = good[..len].to_vec();
            head.extend_from_slice(b"\r\n\r\n");
            let s = status(answer(&head, &config, None));
            assert!(matches!(s, 200 | 400), "{head:?}: {s}");
        }
        for at in 0..good.len() {
            for b in [0u8, b' ', b'\n', b':', 0x80, 0xff] {
                let mut head = good.to_vec();
                head[at] = b;
                let s = status(answer(&head, &config, None));
                assert!(matches!(s, 200 | 400 | 404 | 405 | 431), "{head:?}: {s}");
            }
        }
    }
}
