//! Request and response heads: strict parsing (httparse, plus the checks httparse
//! leaves to us) and the rewritten heads the proxy sends on.
//!
//! A request is rejected (400) — before any backend is chosen for it — for: a bare
//! LF or bare CR line end, obs-fold (a line starting with SP or HT), whitespace
//! before a header's colon or any other malformed line, both Content-Length and
//! Transfer-Encoding, more than one Content-Length (equal or not) or one that is
//! not plain digits, a Transfer-Encoding that is anything but exactly one
//! `chunked` (case-insensitive; several TE fields, lists, `chunked` not last,
//! unknown codings are all refused), a missing or repeated Host in HTTP/1.1, and
//! HTTP versions other than 1.0 and 1.1. A head longer than the limit, or with more
//! headers than the limit, is 431.

use std::net::IpAddr;

use super::chunked;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// Why a request head is refused; [`HeadError::status`] is the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// A line ended with LF alone (or CR alone).
    #[error("bare LF or CR line ending")]
    BareLineEnd,
    /// A header line started with whitespace (obsolete line folding).
    #[error("obsolete line folding")]
    ObsFold,
    /// httparse refused the head (bad token, whitespace before a colon, ...).
    #[error("malformed head: {0}")]
    Malformed(String),
    /// The head is larger than allowed.
    #[error("head too large")]
    TooLarge,
    /// More headers than allowed.
    #[error("too many headers")]
    TooManyHeaders,
    /// Both Content-Length and Transfer-Encoding.
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    /// Several Content-Length fields, or a value that is not one decimal number.
    #[error("bad or duplicate Content-Length")]
    BadContentLength,
    /// A Transfer-Encoding other than exactly `chunked`.
    #[error("unsupported or obfuscated Transfer-Encoding")]
    BadTransferEncoding,
    /// HTTP/1.1 without exactly one Host.
    #[error("missing or repeated Host")]
    BadHost,
}

impl HeadError {
    /// The status code this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            _ => 400,
        }
    }
}

/// A parsed, validated request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Method, as sent.
    pub method: String,
    /// Request target, as sent.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Header fields in order (names as sent).
    pub headers: Vec<(String, Vec<u8>)>,
    /// How the body is delimited.
    pub framing: Framing,
    /// Host without port, lower-case.
    pub host: Option<String>,
    /// The client wants the connection closed after this exchange.
    pub close: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Bytes of the head, including the blank line.
    pub len: usize,
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Header fields in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body framing, given the request method.
    pub framing: Framing,
    /// The backend keeps the connection open after this response.
    pub reusable: bool,
    /// Bytes of the head.
    pub len: usize,
}

/// Finds the end of a head in `buf` (the index just past the blank line),
/// checking every line end is CR LF and no line is folded. `Ok(None)`: incomplete.
pub fn scan_head(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    let mut line_start = 0;
    let mut i = 0;
    while i < buf.len() {
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
        i += 1;
    }
    Ok(None)
}

fn malformed(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        other => HeadError::Malformed(other.to_string()),
    }
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Comma-separated tokens of a field value, trimmed, lower-cased.
fn tokens(value: &[u8]) -> impl Iterator<Item = String> + '_ {
    value
        .split(|&b| b == b',')
        .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
}

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Body framing from Content-Length / Transfer-Encoding fields, strictly.
fn framing_of(headers: &[(String, Vec<u8>)]) -> Result<Framing, HeadError> {
    let mut length = None;
    let mut te = None;
    for (name, value) in headers {
        if eq_ignore_case(name, "content-length") {
            if length.is_some() {
                return Err(HeadError::BadContentLength);
            }
            length = Some(parse_length(value).ok_or(HeadError::BadContentLength)?);
        } else if eq_ignore_case(name, "transfer-encoding") {
            if te.is_some() {
                return Err(HeadError::BadTransferEncoding);
            }
            te = Some(value.as_slice());
        }
    }
    match (length, te) {
        (Some(_), Some(_)) => Err(HeadError::LengthAndChunked),
        (Some(n), None) => Ok(Framing::Length(n)),
        (None, Some(v)) => {
            let trimmed = v.trim_ascii();
            if trimmed.eq_ignore_ascii_case(b"chunked") {
                Ok(Framing::Chunked)
            } else {
                Err(HeadError::BadTransferEncoding)
            }
        }
        (None, None) => Ok(Framing::None),
    }
}

fn collect(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

/// Parses a request head at the start of `buf`. `Ok(None)`: incomplete (and
/// within the limits).
pub fn parse_request(
    buf: &[u8],
    max_bytes: usize,
    max_headers: usize,
) -> Result<Option<RequestHead>, HeadError> {
    let Some(end) = scan_head(buf)? else {
        if buf.len() > max_bytes {
            return Err(HeadError::TooLarge);
        }
        return Ok(None);
    };
    if end > max_bytes {
        return Err(HeadError::TooLarge);
    }
    let mut storage = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut storage);
    let status = req.parse(&buf[..end]).map_err(malformed)?;
    if status.is_partial() {
        return Err(HeadError::Malformed("incomplete head".into()));
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line".into()));
    };
    let headers = collect(req.headers);
    let framing = framing_of(&headers)?;
    let mut host = None;
    let mut hosts = 0;
    let mut close = minor == 0;
    let mut expect_continue = false;
    for (name, value) in &headers {
        if eq_ignore_case(name, "host") {
            hosts += 1;
            let v = String::from_utf8_lossy(value).trim().to_ascii_lowercase();
            host = Some(strip_port(&v).to_string());
        } else if eq_ignore_case(name, "connection") {
            for t in tokens(value) {
                if t == "close" {
                    close = true;
                }
            }
        } else if eq_ignore_case(name, "expect")
            && value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
        {
            expect_continue = true;
        }
    }
    if hosts > 1 || (minor == 1 && hosts == 0) {
        return Err(HeadError::BadHost);
    }
    Ok(Some(RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        minor,
        headers,
        framing,
        host,
        close,
        expect_continue,
        len: end,
    }))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Why a backend's response head is unusable (the client gets 502).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad response from backend: {0}")]
pub struct BadResponse(pub String);

/// Parses a response head at the start of `buf`; `head_request`: the request was
/// HEAD (no body whatever the headers say).
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
    max_bytes: usize,
    max_headers: usize,
) -> Result<Option<ResponseHead>, BadResponse> {
    let bad = |e: &dyn std::fmt::Display| BadResponse(e.to_string());
    let Some(end) = scan_head(buf).map_err(|e| bad(&e))? else {
        if buf.len() > max_bytes {
            return Err(BadResponse("head too large".into()));
        }
        return Ok(None);
    };
    let mut storage = vec![httparse::EMPTY_HEADER; max_headers];
    let mut resp = httparse::Response::new(&mut storage);
    let status = resp.parse(&buf[..end]).map_err(|e| bad(&e))?;
    if status.is_partial() {
        return Err(BadResponse("incomplete head".into()));
    }
    let (Some(code), Some(minor)) = (resp.code, resp.version) else {
        return Err(BadResponse("incomplete status line".into()));
    };
    let reason = resp.reason.unwrap_or("").to_string();
    let headers = collect(resp.headers);
    let no_body = head_request || (100..200).contains(&code) || code == 204 || code == 304;
    let framing = if no_body {
        Framing::None
    } else {
        match framing_of(&headers).map_err(|e| bad(&e))? {
            Framing::None => Framing::UntilClose,
            f => f,
        }
    };
    let mut reusable = minor == 1 && framing != Framing::UntilClose;
    for (name, value) in &headers {
        if eq_ignore_case(name, "connection") && tokens(value).any(|t| t == "close") {
            reusable = false;
        }
    }
    Ok(Some(ResponseHead {
        status: code,
        reason,
        minor,
        headers,
        framing,
        reusable,
        len: end,
    }))
}

/// Header fields that describe one hop and are never forwarded, plus the framing
/// fields the proxy writes itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
    "content-length",
];

/// The fields of `headers` to forward: no hop-by-hop field, none named in a
/// Connection field.
fn end_to_end(headers: &[(String, Vec<u8>)]) -> impl Iterator<Item = &(String, Vec<u8>)> {
    let named: Vec<String> = headers
        .iter()
        .filter(|(n, _)| eq_ignore_case(n, "connection"))
        .flat_map(|(_, v)| tokens(v).collect::<Vec<_>>())
        .collect();
    headers.iter().filter(move |(n, _)| {
        let lower = n.to_ascii_lowercase();
        !HOP_BY_HOP.contains(&lower.as_str()) && !named.contains(&lower)
    })
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_framing(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => push_field(out, "Content-Length", n.to_string().as_bytes()),
        Framing::Chunked => push_field(out, "Transfer-Encoding", b"chunked"),
        Framing::None | Framing::UntilClose => {}
    }
}

/// The head sent to the backend: HTTP/1.1, persistent, hop-by-hop fields
/// removed, `X-Forwarded-For` extended with `client`, `X-Forwarded-Proto: http`,
/// framing rewritten (a chunked body is re-encoded by the proxy).
pub fn upstream_request(req: &RequestHead, client: IpAddr, backend_host: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(req.len + 64);
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded_for: Vec<u8> = Vec::new();
    let mut has_host = false;
    for (name, value) in end_to_end(&req.headers) {
        if eq_ignore_case(name, "x-forwarded-for") {
            if !forwarded_for.is_empty() {
                forwarded_for.extend_from_slice(b", ");
            }
            forwarded_for.extend_from_slice(value.trim_ascii());
            continue;
        }
        if eq_ignore_case(name, "x-forwarded-proto") {
            continue;
        }
        if eq_ignore_case(name, "host") {
            has_host = true;
        }
        if eq_ignore_case(name, "expect") && !req.expect_continue {
            continue;
        }
        push_field(&mut out, name, value);
    }
    if !has_host {
        push_field(&mut out, "Host", backend_host.as_bytes());
    }
    if !forwarded_for.is_empty() {
        forwarded_for.extend_from_slice(b", ");
    }
    forwarded_for.extend_from_slice(client.to_string().as_bytes());
    push_field(&mut out, "X-Forwarded-For", &forwarded_for);
    push_field(&mut out, "X-Forwarded-Proto", b"http");
    push_framing(&mut out, req.framing);
    out.extend_from_slice(b"\r\n");
    out
}

/// The head sent to the client. `framing` is what the proxy will send (a chunked
/// body to an HTTP/1.0 client goes out close-delimited); `close` adds
/// `Connection: close`.
pub fn client_response(resp: &ResponseHead, framing: Framing, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(resp.len + 32);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(resp.status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in end_to_end(&resp.headers) {
        push_field(&mut out, name, value);
    }
    if resp.framing == Framing::None {
        // HEAD, 204, 304: keep the Content-Length the backend gave (it describes
        // the representation, not this message).
        if let Some((_, v)) = resp
            .headers
            .iter()
            .find(|(n, _)| eq_ignore_case(n, "content-length"))
        {
            if (200..300).contains(&resp.status) || resp.status == 304 {
                push_field(&mut out, "Content-Length", v);
            }
        }
    } else {
        push_framing(&mut out, framing);
    }
    if close {
        push_field(&mut out, "Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A complete short response the proxy makes itself (errors), with
/// `Connection: close`.
pub fn error_response(status: u16) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("{status} {reason}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Appends one chunk (header, data, CR LF) to `out`.
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    chunked::encode_chunk_header(data.len(), out);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<Option<RequestHead>, HeadError> {
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
        let out = String::from_utf8(upstream_request(&r, "192.0.2.7".parse().expect("ip"), "b"))
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
        let r = |t: &str, head: bool| {
            parse_response(t.as_bytes(), head, 16 << 10, 100)
                .expect("valid")
                .expect("complete")
        };
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
}
