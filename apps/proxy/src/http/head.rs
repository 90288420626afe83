//! Request and response heads: strict parsing (httparse, plus the checks httparse
//! leaves to us) and the rewritten heads the proxy sends on.
//!
//! A request is rejected (400) — before any backend is chosen for it — for: a bare
//! LF or bare CR line end, obs-fold (a line starting with SP or HT), whitespace
//! before a header's colon or any other malformed line, both Content-Length and
//! Transfer-Encoding, more than one Content-Length (equal or not) or one that is
//! not plain digits, a Transfer-Encoding that is anything but exactly one
//! `chunked` (case-insensitive; several TE fields, lists, `chunked` not last,
//! unknown codings are all refused), Transfer-Encoding in an HTTP/1.0 request
//! (RFC 9112 §6.1: the message may have been framed differently by an earlier
//! hop), a missing or repeated Host in HTTP/1.1, HTTP versions other than 1.0 and
//! 1.1, and a request target that is neither origin-form (`/path`) nor
//! absolute-form (`http://host/path`), or asterisk-form outside `OPTIONS`.
//! `CONNECT` is 405 (this is a reverse proxy, not a tunnel). A head longer than
//! the limit, or with more headers than the limit, is 431.
//!
//! An HTTP/1.1 request with `Connection: upgrade` and an `Upgrade` field
//! ([`RequestHead::upgrade`]) keeps both on its way to the backend (they are
//! hop-by-hop, so every other request loses them), except: `h2c` is removed
//! from the offered protocols (the proxy speaks HTTP/1.1 to its backends, and a
//! backend answering in HTTP/2 would not be understood; HAProxy drops it too),
//! an HTTP/1.0 request's Upgrade is ignored (RFC 9110 §7.8), and so is the
//! Upgrade of a request with content (Content-Length above 0, or chunked): the
//! backend would have to take the whole body before switching, nothing common
//! needs it (a WebSocket handshake is a GET without content) and h2c, its
//! usual user, is refused anyway. Such requests go on as ordinary ones.
//!
//! An absolute-form target is routed on its authority and sent on in
//! origin-form with `Host` set to that authority (RFC 9112 §3.2.2: the target's
//! authority replaces the Host field), so proxy and backend agree on the host.
//! `Host` is never dropped, whatever a `Connection` field lists.

use std::{borrow::Cow, fmt::Display, io::Write as _, net::IpAddr};

use httparse::Header;

use super::chunked;

/// Header storage on the stack for heads with at most this many fields (more:
/// one heap vector).
const STACK_HEADERS: usize = 128;

/// The interim response that lets an `Expect: 100-continue` client send its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

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
    /// Transfer-Encoding in an HTTP/1.0 request.
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingInHttp10,
    /// A request target this proxy does not take (the reason says which form).
    #[error("bad request target: {0}")]
    BadTarget(&'static str),
    /// A CONNECT request (answered 405).
    #[error("CONNECT is not supported by a reverse proxy")]
    Connect,
}

impl HeadError {
    /// The status code this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Connect => 405,
            _ => 400,
        }
    }
}

/// A parsed, validated request head, borrowing the bytes it was parsed from.
#[derive(Debug, Clone)]
pub struct RequestHead<'a> {
    /// Method, as sent.
    pub method: &'a str,
    /// Request target in origin-form (an absolute-form target's path and query;
    /// `/` when it had none), or `*` for `OPTIONS *`.
    pub target: Cow<'a, str>,
    /// An absolute-form target's authority (`host[:port]`): what the backend's
    /// Host becomes.
    pub authority: Option<&'a str>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Header fields in order (names as sent).
    pub headers: Vec<Header<'a>>,
    /// How the body is delimited.
    pub framing: Framing,
    /// Host without port, lower-case (borrowed unless it had to be lowered).
    pub host: Option<Cow<'a, str>>,
    /// The client wants the connection closed after this exchange.
    pub close: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The protocols an upgrade request offers, as the backend gets them
    /// (`Upgrade` values joined with `, `, `h2c` removed): `Some` only for an
    /// HTTP/1.1 request without content whose `Connection` has `upgrade` and
    /// whose `Upgrade` names something else than `h2c` (see the module doc).
    pub upgrade: Option<String>,
    /// Bytes of the head, including the blank line.
    pub len: usize,
}

/// A parsed response head, borrowing the bytes it was parsed from.
#[derive(Debug, Clone)]
pub struct ResponseHead<'a> {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Header fields in order.
    pub headers: Vec<Header<'a>>,
    /// Body framing, given the request method.
    pub framing: Framing,
    /// The backend keeps the connection open after this response.
    pub reusable: bool,
    /// Bytes of the head.
    pub len: usize,
}

/// Finds the end of a head in `buf` (the index just past the blank line),
/// checking every line end is CR LF and no line is folded. `Ok(None)`: incomplete.
///
/// Jumps from line end to line end with `memchr2` (a head is mostly field
/// bytes, which need no look).
pub fn scan_head(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    let mut line_start = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', buf) {
        if i < line_start {
            // The LF of a CR LF already taken.
            continue;
        }
        if buf[i] == b'\n' {
            // An LF not after a CR (a CR's own LF was skipped above).
            return Err(HeadError::BareLineEnd);
        }
        match buf.get(i + 1) {
            None => return Ok(None),
            Some(b'\n') => {}
            Some(_) => return Err(HeadError::BareLineEnd),
        }
        if i == line_start {
            // The empty line: the head is complete.
            return Ok(Some(i + 2));
        }
        line_start = i + 2;
        if matches!(buf.get(line_start), Some(b' ' | b'\t')) {
            return Err(HeadError::ObsFold);
        }
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

/// Whether one of the comma-separated tokens of a field value, trimmed, is
/// `word` (ASCII case-insensitively; `word` is not empty).
fn has_token(value: &[u8], word: &str) -> bool {
    value.split(|&b| b == b',').any(|t| {
        if t.is_ascii() {
            // A field value has no ASCII whitespace but SP and HT, which both
            // trims remove alike.
            t.trim_ascii().eq_ignore_ascii_case(word.as_bytes())
        } else {
            String::from_utf8_lossy(t).trim().eq_ignore_ascii_case(word)
        }
    })
}

/// Comma-separated tokens of the Connection fields among `headers` (the
/// fields they name are hop-by-hop): whether `name` is one of them.
fn named_by_connection(headers: &[Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| eq_ignore_case(h.name, "connection"))
        .any(|h| has_token(h.value, name))
}

/// Parses a head with `parse` into header storage for `max_headers` fields (on
/// the stack when small) and returns the fields it found, in order.
fn with_storage<'b, T>(
    max_headers: usize,
    parse: impl for<'h> FnOnce(&'h mut [Header<'b>]) -> Result<(T, usize), httparse::Error>,
) -> Result<(T, Vec<Header<'b>>), httparse::Error> {
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap = Vec::new();
    let storage: &mut [Header<'b>] = if max_headers <= STACK_HEADERS {
        &mut stack[..max_headers]
    } else {
        heap.resize(max_headers, httparse::EMPTY_HEADER);
        &mut heap
    };
    let (t, n) = parse(&mut *storage)?;
    Ok((t, storage[..n].to_vec()))
}

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Body framing from Content-Length / Transfer-Encoding fields, strictly.
fn framing_of(headers: &[Header<'_>]) -> Result<Framing, HeadError> {
    let mut length = None;
    let mut te = None;
    for &Header { name, value } in headers {
        if eq_ignore_case(name, "content-length") {
            if length.is_some() {
                return Err(HeadError::BadContentLength);
            }
            length = Some(parse_length(value).ok_or(HeadError::BadContentLength)?);
        } else if eq_ignore_case(name, "transfer-encoding") {
            if te.is_some() {
                return Err(HeadError::BadTransferEncoding);
            }
            te = Some(value);
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

/// Parses a request head at the start of `buf`. `Ok(None)`: incomplete (and
/// within the limits).
pub fn parse_request(
    buf: &[u8],
    max_bytes: usize,
    max_headers: usize,
) -> Result<Option<RequestHead<'_>>, HeadError> {
    let Some(end) = scan_head(buf)? else {
        if buf.len() > max_bytes {
            return Err(HeadError::TooLarge);
        }
        return Ok(None);
    };
    if end > max_bytes {
        return Err(HeadError::TooLarge);
    }
    let head = &buf[..end];
    let (line, headers) = with_storage(max_headers, |storage| {
        let mut req = httparse::Request::new(storage);
        let status = req.parse(head)?;
        let line = (status.is_partial(), req.method, req.path, req.version);
        Ok((line, req.headers.len()))
    })
    .map_err(malformed)?;
    let (partial, method, target, minor) = line;
    if partial {
        return Err(HeadError::Malformed("incomplete head".into()));
    }
    let (Some(method), Some(target), Some(minor)) = (method, target, minor) else {
        return Err(HeadError::Malformed("incomplete request line".into()));
    };
    let framing = framing_of(&headers)?;
    if minor == 0
        && headers
            .iter()
            .any(|h| eq_ignore_case(h.name, "transfer-encoding"))
    {
        return Err(HeadError::TransferEncodingInHttp10);
    }
    let (target, authority) = request_target(method, target)?;
    let mut host = None;
    let mut hosts = 0;
    let (mut close_token, mut keep_alive_token, mut upgrade_token) = (false, false, false);
    let mut expect_continue = false;
    for &Header { name, value } in &headers {
        if eq_ignore_case(name, "host") {
            hosts += 1;
            host = Some(host_of(value));
        } else if eq_ignore_case(name, "connection") {
            close_token |= has_token(value, "close");
            keep_alive_token |= has_token(value, "keep-alive");
            upgrade_token |= has_token(value, "upgrade");
        } else if eq_ignore_case(name, "expect")
            && value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
            // An HTTP/1.0 request's expectation is ignored (RFC 9110 §10.1.1).
            && minor == 1
        {
            expect_continue = true;
        }
    }
    // HTTP/1.0 closes after each response unless the client asked otherwise.
    let close = close_token || (minor == 0 && !keep_alive_token);
    if hosts > 1 || (minor == 1 && hosts == 0) {
        return Err(HeadError::BadHost);
    }
    if let Some(a) = authority {
        // The target's authority wins over the Host field (RFC 9112 §3.2.2).
        host = Some(host_of(a.as_bytes()));
    }
    let no_content = matches!(framing, Framing::None | Framing::Length(0));
    let upgrade = (upgrade_token && minor == 1 && no_content)
        .then(|| offered_protocols(&headers))
        .flatten();
    Ok(Some(RequestHead {
        method,
        target,
        authority,
        minor,
        headers,
        framing,
        host,
        close,
        expect_continue,
        upgrade,
        len: end,
    }))
}

/// Whether `b` may be in a protocol name of an `Upgrade` field (a token, with
/// `/` before a version: RFC 9110 §7.8).
fn protocol_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b)
}

/// The protocols of every `Upgrade` field among `headers`, in order, joined
/// with `, `, without `h2c` and without malformed entries; `None` if none is
/// left.
fn offered_protocols(headers: &[Header<'_>]) -> Option<String> {
    let mut out = String::new();
    for h in headers.iter().filter(|h| eq_ignore_case(h.name, "upgrade")) {
        for p in h.value.split(|&b| b == b',') {
            let p = p.trim_ascii();
            if p.is_empty()
                || !p.iter().copied().all(protocol_byte)
                || p.eq_ignore_ascii_case(b"h2c")
            {
                continue;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            // Checked ASCII above.
            out.push_str(std::str::from_utf8(p).unwrap_or_default());
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The request target in origin-form, and an absolute-form target's authority
/// (RFC 9112 §3.2).
fn request_target<'a>(
    method: &str,
    target: &'a str,
) -> Result<(Cow<'a, str>, Option<&'a str>), HeadError> {
    if method == "CONNECT" {
        return Err(HeadError::Connect);
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok((Cow::Borrowed(target), None))
        } else {
            Err(HeadError::BadTarget("asterisk-form is for OPTIONS only"))
        };
    }
    if target.starts_with('/') {
        return Ok((Cow::Borrowed(target), None));
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return Err(HeadError::BadTarget(
            "neither origin-form (/path) nor absolute-form (http://host/path)",
        ));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(HeadError::BadTarget(
            "absolute-form scheme must be http or https",
        ));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let authority_ok = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b));
    if !authority_ok {
        // Empty, userinfo (`user@host`, deprecated and a spoofing vector), or junk.
        return Err(HeadError::BadTarget(
            "absolute-form authority is not a host[:port]",
        ));
    }
    if path.contains('#') {
        return Err(HeadError::BadTarget("a request target has no fragment"));
    }
    let origin = if path.is_empty() {
        Cow::Borrowed("/")
    } else if path.starts_with('?') {
        Cow::Owned(format!("/{path}"))
    } else {
        Cow::Borrowed(path)
    };
    Ok((origin, Some(authority)))
}

/// A Host value trimmed, without its port, lower-case (borrowed when it already
/// is).
fn host_of(value: &[u8]) -> Cow<'_, str> {
    match String::from_utf8_lossy(value) {
        Cow::Borrowed(v) => {
            let h = strip_port(v.trim());
            if h.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(h.to_ascii_lowercase())
            } else {
                Cow::Borrowed(h)
            }
        }
        Cow::Owned(v) => Cow::Owned(strip_port(&v.trim().to_ascii_lowercase()).to_string()),
    }
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
) -> Result<Option<ResponseHead<'_>>, BadResponse> {
    let bad = |e: &dyn std::fmt::Display| BadResponse(e.to_string());
    let Some(end) = scan_head(buf).map_err(|e| bad(&e))? else {
        if buf.len() > max_bytes {
            return Err(BadResponse("head too large".into()));
        }
        return Ok(None);
    };
    let head = &buf[..end];
    let (line, headers) = with_storage(max_headers, |storage| {
        let mut resp = httparse::Response::new(storage);
        let status = resp.parse(head)?;
        let line = (status.is_partial(), resp.code, resp.version, resp.reason);
        Ok((line, resp.headers.len()))
    })
    .map_err(|e| bad(&e))?;
    let (partial, code, minor, reason) = line;
    if partial {
        return Err(BadResponse("incomplete head".into()));
    }
    let (Some(code), Some(minor)) = (code, minor) else {
        return Err(BadResponse("incomplete status line".into()));
    };
    let reason = reason.unwrap_or("");
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
    for &Header { name, value } in &headers {
        if eq_ignore_case(name, "connection") && has_token(value, "close") {
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
/// Connection field — except Host, which is never dropped (the request was
/// routed on it; `Connection: Host` must not make the backend see another).
fn end_to_end<'h, 'a>(headers: &'h [Header<'a>]) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'h {
    headers
        .iter()
        .filter(|h| {
            eq_ignore_case(h.name, "host")
                || (!HOP_BY_HOP.iter().any(|hop| eq_ignore_case(h.name, hop))
                    && !named_by_connection(headers, h.name))
        })
        .map(|h| (h.name, h.value))
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_framing(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => push_field(
            out,
            "Content-Length",
            itoa::Buffer::new().format(n).as_bytes(),
        ),
        Framing::Chunked => push_field(out, "Transfer-Encoding", b"chunked"),
        Framing::None | Framing::UntilClose => {}
    }
}

/// The scheme the client used, for `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS the proxy terminated.
    Https,
}

/// The head sent to the backend: HTTP/1.1, persistent, hop-by-hop fields
/// removed, `X-Forwarded-For` extended with `client`, `X-Forwarded-Proto` set
/// to what the client used (any the client sent is dropped),
/// framing rewritten (a chunked body is re-encoded by the proxy).
pub fn upstream_request(
    req: &RequestHead<'_>,
    client: IpAddr,
    proto: Proto,
    backend_host: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    upstream_request_into(&mut out, req, &client.to_string(), proto, backend_host);
    out
}

/// [`upstream_request`] into `out` (cleared first), with the client address
/// already formatted; `backend_host` is only formatted when the request has no
/// Host.
pub fn upstream_request_into(
    out: &mut Vec<u8>,
    req: &RequestHead<'_>,
    client: &str,
    proto: Proto,
    backend_host: impl Display,
) {
    out.clear();
    out.reserve(req.len + 96 + client.len());
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    for (name, value) in end_to_end(&req.headers) {
        if eq_ignore_case(name, "x-forwarded-for") || eq_ignore_case(name, "x-forwarded-proto") {
            continue;
        }
        if eq_ignore_case(name, "host") {
            if let Some(authority) = req.authority {
                // An absolute-form target's authority replaces the Host field.
                if !has_host {
                    push_field(out, "Host", authority.as_bytes());
                }
                has_host = true;
                continue;
            }
            has_host = true;
        }
        if eq_ignore_case(name, "expect") && !req.expect_continue {
            continue;
        }
        push_field(out, name, value);
    }
    if !has_host {
        out.extend_from_slice(b"Host: ");
        match req.authority {
            Some(authority) => out.extend_from_slice(authority.as_bytes()),
            // Writing to a Vec cannot fail.
            None => {
                let _ = write!(out, "{backend_host}");
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    // The values of the client's X-Forwarded-For fields, trimmed, joined with
    // ", ", then the client's address.
    out.extend_from_slice(b"X-Forwarded-For: ");
    let start = out.len();
    for (name, value) in end_to_end(&req.headers) {
        if eq_ignore_case(name, "x-forwarded-for") {
            if out.len() > start {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(value.trim_ascii());
        }
    }
    if out.len() > start {
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.as_bytes());
    out.extend_from_slice(b"\r\n");
    let proto: &[u8] = match proto {
        Proto::Http => b"http",
        Proto::Https => b"https",
    };
    push_field(out, "X-Forwarded-Proto", proto);
    push_framing(out, req.framing);
    if let Some(protocols) = &req.upgrade {
        push_field(out, "Connection", b"upgrade");
        push_field(out, "Upgrade", protocols.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// What a response head to the client says about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing (HTTP/1.1 keeps it open by default; also for 1xx heads).
    Default,
    /// `Connection: close`: the proxy closes after this response.
    Close,
    /// `Connection: keep-alive`: an HTTP/1.0 client asked to keep it open.
    KeepAlive,
}

/// The head sent to the client, into `out` (cleared first). `framing` is what
/// the proxy will send (a chunked body to an HTTP/1.0 client goes out
/// close-delimited).
pub fn client_response_into(
    out: &mut Vec<u8>,
    resp: &ResponseHead<'_>,
    framing: Framing,
    persistence: Persistence,
) {
    out.clear();
    out.reserve(resp.len + 32);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(resp.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in end_to_end(&resp.headers) {
        push_field(out, name, value);
    }
    if resp.framing == Framing::None {
        // HEAD, 204, 304: keep the Content-Length the backend gave (it describes
        // the representation, not this message).
        if let Some(h) = resp
            .headers
            .iter()
            .find(|h| eq_ignore_case(h.name, "content-length"))
        {
            if (200..300).contains(&resp.status) || resp.status == 304 {
                push_field(out, "Content-Length", h.value);
            }
        }
    } else {
        push_framing(out, framing);
    }
    match persistence {
        Persistence::Default => {}
        Persistence::Close => push_field(out, "Connection", b"close"),
        Persistence::KeepAlive => push_field(out, "Connection", b"keep-alive"),
    }
    out.extend_from_slice(b"\r\n");
}

/// The head of a backend's `101 Switching Protocols` for the client, into
/// `out` (cleared first): its end-to-end fields, then `Connection: upgrade` and
/// the `Upgrade` the backend switched to. `false` (and `out` unspecified) when
/// the backend named no protocol, which a 101 must (RFC 9110 §15.2.2).
pub fn switching_response_into(out: &mut Vec<u8>, resp: &ResponseHead<'_>) -> bool {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 101 ");
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in end_to_end(&resp.headers) {
        push_field(out, name, value);
    }
    push_field(out, "Connection", b"upgrade");
    let start = out.len();
    out.extend_from_slice(b"Upgrade: ");
    let values = out.len();
    for h in resp
        .headers
        .iter()
        .filter(|h| eq_ignore_case(h.name, "upgrade"))
    {
        let v = h.value.trim_ascii();
        if v.is_empty() {
            continue;
        }
        if out.len() > values {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v);
    }
    if out.len() == values {
        out.truncate(start);
        return false;
    }
    out.extend_from_slice(b"\r\n\r\n");
    true
}

/// A complete short response the proxy makes itself (errors), with
/// `Connection: close`.
pub fn error_response(status: u16) -> Vec<u8> {
    error_response_with(status, "")
}

/// [`error_response`] with `extra` header lines (each ending in CR LF, e.g.
/// `Retry-After: 1\r\n`) before `Connection: close`.
pub fn error_response_with(status: u16, extra: &str) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("{status} {reason}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
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
mod tests;
