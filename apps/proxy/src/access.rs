//! The HTTP access log (`[log]`): one line per request, in one of three
//! formats.
//!
//! - `access_format = "default"`: a `tracing` event at info, target
//!   `shardline_proxy::access` (fields `client`, `method`, `target`,
//!   `status`, `backend`, `ms`, `error`), written with the rest of the log
//!   (stderr; `RUST_LOG` filters it).
//! - `"combined"`: Apache/nginx combined format,
//!   `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent
//!   "$http_referer" "$http_user_agent"`, with times in UTC (`+0000`). In the
//!   quoted fields `"`, `\` and every byte outside printable ASCII are written
//!   `\xHH` (as nginx does), so a line is always one line.
//! - `"json"`: one JSON object per line with these fields, always all present
//!   (`null` when unknown): `time` (RFC 3339, UTC, milliseconds), `client`
//!   (IP), `client_port`, `method`, `target`, `protocol` (`HTTP/1.1`),
//!   `status`, `bytes` (response body bytes sent to the client), `referer`,
//!   `user_agent`, `pool`, `backend` (address), `duration_ms`, `event`
//!   (`request`, `failed`, `upgraded`), `error` (why a failed request
//!   failed). Strings are JSON-escaped (control characters as `\u00XX`),
//!   bytes that are not UTF-8 replaced with U+FFFD.
//!
//! `client` is the real client: with `proxy_protocol` on the listener, the
//! PROXY header's source. Combined and JSON lines go to stdout, or with
//! `access_log = "/path"` to that file (appended; each shard has its own
//! handle and writes each line with one `write`, so lines never interleave).
//! Every reload (SIGHUP) reopens the file, so logrotate's `postrotate` can
//! send SIGHUP; a file that cannot be opened keeps the old handle (logged).
//! A failed write is counted in the log once a minute per shard at most, and
//! the line dropped: the data path never waits for a disk beyond that write.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;
use tracing::{error, warn};

/// `[log] access_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessFormat {
    /// A `tracing` event (target `shardline_proxy::access`).
    #[default]
    Default,
    /// Apache/nginx combined.
    Combined,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The access log's format.
    pub access_format: AccessFormat,
    /// Where combined / JSON lines go (`None`: stdout).
    pub access_log: Option<PathBuf>,
}

/// One finished (or failed, or upgraded) request.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The client (the PROXY header's source if there was one).
    pub client: SocketAddr,
    /// Request method.
    pub method: &'a str,
    /// Request target.
    pub target: &'a str,
    /// The client's HTTP minor version.
    pub minor: u8,
    /// The status sent to the client (0: none).
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    /// `Referer`, if sent.
    pub referer: Option<&'a [u8]>,
    /// `User-Agent`, if sent.
    pub user_agent: Option<&'a [u8]>,
    /// The pool's name.
    pub pool: Option<&'a str>,
    /// The backend chosen.
    pub backend: Option<SocketAddr>,
    /// From the request head to now.
    pub duration_ms: u64,
    /// `request`, `failed` or `upgraded`.
    pub event: &'static str,
    /// Why it failed.
    pub error: Option<&'a str>,
}

/// Where one shard writes combined / JSON lines.
#[derive(Debug)]
pub struct AccessLog {
    format: AccessFormat,
    path: Option<PathBuf>,
    file: Option<File>,
    line: Vec<u8>,
    /// Write failures since the last warning, and when that was.
    failed: (u64, Option<Instant>),
}

/// Opens `path` for appending (created if missing).
pub fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl AccessLog {
    /// The log `config` asks for (a file that cannot be opened: logged, and
    /// lines go nowhere until a reload opens it).
    pub fn new(config: &LogConfig) -> AccessLog {
        let mut log = AccessLog {
            format: config.access_format,
            path: None,
            file: None,
            line: Vec::with_capacity(512),
            failed: (0, None),
        };
        log.reconfigure(config);
        log
    }

    /// A reload: the format may change, and the file is reopened (logrotate).
    pub fn reconfigure(&mut self, config: &LogConfig) {
        self.format = config.access_format;
        self.path = config.access_log.clone();
        match &self.path {
            None => self.file = None,
            Some(p) => match open(p) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    error!(path = %p.display(), error = %e, "cannot open the access log; keeping the previous file");
                }
            },
        }
    }

    /// The format in use.
    pub fn format(&self) -> AccessFormat {
        self.format
    }

    /// Writes `e` (combined and JSON formats; the default format is the
    /// caller's tracing event).
    pub fn write(&mut self, e: &Entry<'_>) {
        let now = SystemTime::now();
        self.line.clear();
        match self.format {
            AccessFormat::Default => return,
            AccessFormat::Combined => combined(e, now, &mut self.line),
            AccessFormat::Json => json(e, now, &mut self.line),
        }
        let result = match (&self.path, &mut self.file) {
            (None, _) => std::io::stdout().lock().write_all(&self.line),
            (Some(_), Some(f)) => f.write_all(&self.line),
            (Some(_), None) => Err(std::io::Error::other("not open")),
        };
        if let Err(err) = result {
            self.failed.0 += 1;
            let now = Instant::now();
            if self
                .failed
                .1
                .is_none_or(|t| now.duration_since(t).as_secs() >= 60)
            {
                warn!(error = %err, dropped = self.failed.0, "access log write failed; lines dropped");
                self.failed = (0, Some(now));
            }
        }
    }
}

/// UTC fields of `t`: (year, month, day, hour, minute, second, millisecond).
fn utc(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, m, day) = shardline::time::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400) as u32;
    (y, m, day, s / 3600, s / 60 % 60, s % 60, d.subsec_millis())
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A quoted field of the combined format: `"`, `\` and non-printable bytes
/// as `\xHH`; `-` when absent.
fn quoted(out: &mut Vec<u8>, v: Option<&[u8]>) {
    out.push(b'"');
    match v {
        None => out.push(b'-'),
        Some(v) => {
            for &b in v {
                if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
                    out.push(b);
                } else {
                    let _ = write!(out, "\\x{b:02X}");
                }
            }
        }
    }
    out.push(b'"');
}

/// The combined-format line for `e` (with its newline).
pub fn combined(e: &Entry<'_>, now: SystemTime, out: &mut Vec<u8>) {
    let (y, mo, d, h, mi, s, _) = utc(now);
    let month = MONTHS[(mo as usize).saturating_sub(1).min(11)];
    let _ = write!(
        out,
        "{} - - [{d:02}/{month}/{y}:{h:02}:{mi:02}:{s:02} +0000] ",
        e.client.ip()
    );
    let request = format!("{} {} HTTP/1.{}", e.method, e.target, e.minor);
    quoted(out, Some(request.as_bytes()));
    let _ = write!(out, " {} {} ", e.status, e.bytes);
    quoted(out, e.referer);
    out.push(b' ');
    quoted(out, e.user_agent);
    out.push(b'\n');
}

/// A JSON string (or `null`).
fn json_str(out: &mut Vec<u8>, v: Option<&[u8]>) {
    let Some(v) = v else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'"');
    for c in String::from_utf8_lossy(v).chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// The JSON line for `e` (with its newline).
pub fn json(e: &Entry<'_>, now: SystemTime, out: &mut Vec<u8>) {
    let (y, mo, d, h, mi, s, ms) = utc(now);
    let _ = write!(
        out,
        "{{\"time\":\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z\",\"client\":\"{}\",\
         \"client_port\":{},\"method\":",
        e.client.ip(),
        e.client.port()
    );
    json_str(out, Some(e.method.as_bytes()));
    out.extend_from_slice(b",\"target\":");
    json_str(out, Some(e.target.as_bytes()));
    let _ = write!(
        out,
        ",\"protocol\":\"HTTP/1.{}\",\"status\":{},\"bytes\":{},\"referer\":",
        e.minor, e.status, e.bytes
    );
    json_str(out, e.referer);
    out.extend_from_slice(b",\"user_agent\":");
    json_str(out, e.user_agent);
    out.extend_from_slice(b",\"pool\":");
    json_str(out, e.pool.map(str::as_bytes));
    out.extend_from_slice(b",\"backend\":");
    let backend = e.backend.map(|b| b.to_string());
    json_str(out, backend.as_deref().map(str::as_bytes));
    let _ = write!(
        out,
        ",\"duration_ms\":{},\"event\":\"{}\",\"error\":",
        e.duration_ms, e.event
    );
    json_str(out, e.error.map(str::as_bytes));
    out.extend_from_slice(b"}\n");
}

/// The value of header `name` (lower-case) in a request head (`name: value`
/// lines after the request line), trimmed; the first if repeated.
pub fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        if !line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
            return None;
        }
        let v = &line[colon + 1..];
        let start = v
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(v.len());
        let end = v
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(start, |e| e + 1);
        Some(&v[start..end.max(start)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>() -> Entry<'a> {
        Entry {
            client: "203.0.113.9:4000".parse().unwrap(),
            method: "GET",
            target: "/a?b=\"c\"",
            minor: 1,
            status: 200,
            bytes: 1234,
            referer: Some(b"http://x/\"y\"\\"),
            user_agent: Some(b"curl/8\x01\xff"),
            pool: Some("web"),
            backend: Some("127.0.0.1:9000".parse().unwrap()),
            duration_ms: 7,
            event: "request",
            error: None,
        }
    }

    #[test]
    fn combined_line_escapes() {
        let mut out = Vec::new();
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_709_210_096);
        combined(&entry(), t, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "203.0.113.9 - - [29/Feb/2024:12:34:56 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" \
             200 1234 \"http://x/\\x22y\\x22\\x5C\" \"curl/8\\x01\\xFF\"\n"
        );
    }

    #[test]
    fn json_line_escapes() {
        let mut out = Vec::new();
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_709_210_096_042);
        let mut e = entry();
        e.error = Some("line\nbreak");
        json(&e, t, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with("{\"time\":\"2024-02-29T12:34:56.042Z\""),
            "{s}"
        );
        assert!(
            s.contains("\"user_agent\":\"curl/8\\u0001\u{fffd}\""),
            "{s}"
        );
        assert!(s.contains("\"error\":\"line\\nbreak\""), "{s}");
        assert!(s.ends_with("}\n") && s.matches('\n').count() == 1);
    }

    #[test]
    fn headers_by_name() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nreferer:  http://r/ \r\nUser-Agent: ua\r\n\r\n";
        assert_eq!(header(head, "referer"), Some(&b"http://r/"[..]));
        assert_eq!(header(head, "user-agent"), Some(&b"ua"[..]));
        assert_eq!(header(head, "cookie"), None);
        assert_eq!(header(b"GET /referer: x HTTP/1.1\r\n", "referer"), None);
    }
}
