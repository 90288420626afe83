//! The HTTP/1.1 request head parser and response writer of the WebSocket
//! listeners (RFC 9112, the subset a browser's `GET` and WebSocket upgrade
//! use), strict and bounded.
//!
//! The head must end (`CRLF CRLF`) within [`MAX_HEAD`] bytes (else 431), every
//! line ends in CRLF (a bare CR or LF is 400), the request line is exactly
//! `METHOD SP origin-form-target SP HTTP/1.x`, header names are tokens with the
//! colon right after them (no whitespace: 400), values are visible ASCII or
//! spaces/tabs (obs-text and control bytes: 400), obsolete line folding is 400,
//! and at most [`MAX_HEADERS`] headers are taken (more: 431). Nothing is
//! allocated but the list of header positions; everything borrows the input.

/// The longest request head taken (request line, headers, the empty line).
pub const MAX_HEAD: usize = 8 * 1024;
/// The most header fields a request may have.
pub const MAX_HEADERS: usize = 64;

/// A parsed request head, borrowing the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method (a token, case-sensitive: `GET`).
    pub method: &'a str,
    /// The target's path (before any `?`).
    pub path: &'a str,
    /// The query (after `?`), if any.
    pub query: Option<&'a str>,
    /// `HTTP/1.1` (true) or `HTTP/1.0`.
    pub http11: bool,
    /// The header fields in order, values trimmed of surrounding whitespace.
    pub headers: Vec<(&'a str, &'a str)>,
}

impl<'a> Request<'a> {
    /// Every value of header `name` (case-insensitive).
    pub fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The value of header `name` if it appears exactly once.
    pub fn single(&self, name: &str) -> Result<Option<&'a str>, Status> {
        let mut it = self.values(name);
        let first = it.next();
        match it.next() {
            Some(_) => Err(Status::BAD_REQUEST),
            None => Ok(first),
        }
    }

    /// Whether the comma-separated list values of header `name` hold `token`
    /// (case-insensitive), as `Connection: keep-alive, Upgrade` does.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// An HTTP status this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16, pub &'static str);

impl Status {
    /// 101.
    pub const SWITCHING: Status = Status(101, "Switching Protocols");
    /// 200.
    pub const OK: Status = Status(200, "OK");
    /// 100: go on sending the body (`Expect: 100-continue`).
    pub const CONTINUE: Status = Status(100, "Continue");
    /// 201: an upload stored.
    pub const CREATED: Status = Status(201, "Created");
    /// 204: OPTIONS answered.
    pub const NO_CONTENT: Status = Status(204, "No Content");
    /// 401: no or wrong credentials.
    pub const UNAUTHORIZED: Status = Status(401, "Unauthorized");
    /// 411: an upload without `Content-Length`.
    pub const LENGTH_REQUIRED: Status = Status(411, "Length Required");
    /// 413: an upload over the size limit or the quota.
    pub const PAYLOAD_TOO_LARGE: Status = Status(413, "Content Too Large");
    /// 500: the server could not store an upload.
    pub const INTERNAL: Status = Status(500, "Internal Server Error");
    /// 503: the password check could not run now.
    pub const UNAVAILABLE: Status = Status(503, "Service Unavailable");
    /// 400: a malformed request or WebSocket handshake.
    pub const BAD_REQUEST: Status = Status(400, "Bad Request");
    /// 403: an Origin not allowed.
    pub const FORBIDDEN: Status = Status(403, "Forbidden");
    /// 404: no such path.
    pub const NOT_FOUND: Status = Status(404, "Not Found");
    /// 405: a method the path does not take.
    pub const METHOD_NOT_ALLOWED: Status = Status(405, "Method Not Allowed");
    /// 408: the head did not come in time.
    pub const TIMEOUT: Status = Status(408, "Request Timeout");
    /// 431: the head is too big.
    pub const TOO_LARGE: Status = Status(431, "Request Header Fields Too Large");
    /// 505: not HTTP/1.x.
    pub const VERSION: Status = Status(505, "HTTP Version Not Supported");
}

/// Parses the request head at the start of `buf`. `Ok(None)`: not complete
/// yet (and still under [`MAX_HEAD`]). `Ok(Some((request, n)))`: the head is
/// the first `n` bytes (the body or the next protocol follows). `Err`: the
/// status to answer with before closing.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Request<'_>, usize)>, Status> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= MAX_HEAD {
            return Err(Status::TOO_LARGE);
        }
        // Fail early on what can never become a valid head.
        if let Some(first) = window.iter().position(|&b| b == b'\n') {
            if first == 0 || window[first - 1] != b'\r' {
                return Err(Status::BAD_REQUEST);
            }
            let line =
                std::str::from_utf8(&window[..first - 1]).map_err(|_| Status::BAD_REQUEST)?;
            parse_request_line(line)?;
        }
        return Ok(None);
    };
    let head = &window[..end];
    let used = end + 4;
    let text = std::str::from_utf8(head).map_err(|_| Status::BAD_REQUEST)?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let (method, target, http11) = parse_request_line(request_line)?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() == MAX_HEADERS {
            return Err(Status::TOO_LARGE);
        }
        headers.push(parse_header(line)?);
    }
    Ok(Some((
        Request {
            method,
            path,
            query,
            http11,
            headers,
        },
        used,
    )))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_request_line(line: &str) -> Result<(&str, &str, bool), Status> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BAD_REQUEST);
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(Status::BAD_REQUEST);
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Status::BAD_REQUEST);
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v if v.len() == 8 && v.starts_with("HTTP/") => return Err(Status::VERSION),
        _ => return Err(Status::BAD_REQUEST),
    };
    Ok((method, target, http11))
}

fn parse_header(line: &str) -> Result<(&str, &str), Status> {
    let (name, value) = line.split_once(':').ok_or(Status::BAD_REQUEST)?;
    if name.is_empty() || !name.bytes().all(is_tchar) {
        // Also obsolete folding (a line starting with whitespace) and
        // whitespace before the colon.
        return Err(Status::BAD_REQUEST);
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\t')
    {
        return Err(Status::BAD_REQUEST);
    }
    Ok((name, value.trim_matches([' ', '\t'])))
}

/// Writes a response head with `headers` and, unless `body` is `None`, the
/// body with its `Content-Length` (a response that ends the connection says
/// `Connection: close`).
pub fn response(
    status: Status,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    close: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.map_or(0, <[u8]>::len));
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", status.0, status.1).as_bytes());
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(body) = body {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    out
}

/// A response's head alone (the answer to a HEAD: the GET's headers,
/// `Content-Length` included, and no body).
pub fn without_body(mut response: Vec<u8>) -> Vec<u8> {
    if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
        response.truncate(end + 4);
    }
    response
}

/// A plain-text error response that closes the connection.
pub fn error_response(status: Status, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{} {}\n", status.0, status.1);
    let mut headers = vec![
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Content-Type-Options", "nosniff"),
        ("Cache-Control", "no-store"),
    ];
    headers.extend_from_slice(extra);
    response(status, &headers, Some(body.as_bytes()), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<(Request<'_>, usize)>, Status> {
        parse_head(s.as_bytes())
    }

    #[test]
    fn a_browser_request() {
        let raw = "GET /app.js?v=1 HTTP/1.1\r\nHost: example.net:8080\r\n\
                   Connection: keep-alive, Upgrade\r\nX-Empty:\r\n\r\nrest";
        let (r, used) = parse(raw).unwrap().unwrap();
        assert_eq!(used, raw.len() - 4);
        assert_eq!(
            (r.method, r.path, r.query, r.http11),
            ("GET", "/app.js", Some("v=1"), true)
        );
        assert_eq!(r.single("host"), Ok(Some("example.net:8080")));
        assert!(r.has_token("connection", "upgrade"));
        assert_eq!(r.single("x-empty"), Ok(Some("")));
        assert_eq!(r.single("missing"), Ok(None));
    }

    #[test]
    fn incomplete_heads_wait() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(parse(&raw[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn malformed_heads() {
        for bad in [
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1 x\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            "GET / HTTP/1.1\r\nX: caf\u{e9}\r\n\r\n",
            "GET / FTP/1.0\r\n\r\n",
            "\r\n\r\n",
            "SSH-2.0-OpenSSH_9.6\r\n",
        ] {
            assert_eq!(parse(bad), Err(Status::BAD_REQUEST), "{bad:?}");
        }
        assert_eq!(parse("GET / HTTP/2.0\r\n\r\n"), Err(Status::VERSION));
        let dup = "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n";
        assert_eq!(
            parse(dup).unwrap().unwrap().0.single("Host"),
            Err(Status::BAD_REQUEST)
        );
    }

    #[test]
    fn size_limits() {
        let mut big = "GET / HTTP/1.1\r\n".to_string();
        while big.len() < MAX_HEAD {
            big.push_str("X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(
            parse(&big),
            Err(Status::TOO_LARGE),
            "no end within the limit"
        );
        big.push_str("\r\n");
        assert_eq!(
            parse(&big),
            Err(Status::TOO_LARGE),
            "the end past the limit"
        );
        let mut many = "GET / HTTP/1.1\r\n".to_string();
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: 1\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(parse(&many), Err(Status::TOO_LARGE));
    }

    #[test]
    fn responses() {
        let r = response(
            Status::OK,
            &[("Content-Type", "text/css")],
            Some(b"a{}"),
            true,
        );
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/css\r\nContent-Length: 3\r\nConnection: close\r\n\r\na{}"
        );
    }
}
