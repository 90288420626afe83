//! IRC over WebSocket (the IRCv3 WebSocket specification) on listeners of
//! their own, and the web client served on them.
//!
//! # Listeners
//!
//! `[websocket] listen` (`--websocket-listen`) adds plaintext listeners and
//! `[websocket] tls_listen` (`--websocket-tls-listen`) TLS ones, with the
//! certificate of `[tls]` through the framework's TLS (the same
//! [`shardline::TlsAcceptor`], reloaded on SIGHUP). [`crate::build_with`]
//! adds them after every other listener, so a shard knows them as the last
//! ones of `Ctx::listeners` (`ChatShard::ws_listeners`, set in `on_start`); a
//! connection from one of them starts in the HTTP phase.
//!
//! # A connection's phases ([`Transport`])
//!
//! 1. **HTTP** ([`Transport::Http`]): the request head is parsed strictly
//!    ([`http::parse_head`]: at most [`http::MAX_HEAD`] bytes, else 431; junk is
//!    400). Until it is complete its bytes stay in the framework's input
//!    buffer (`on_data` consumes nothing), so the chat keeps no buffer of its
//!    own; a head that does not arrive within `request_timeout_secs` gets 408
//!    and the connection is closed (the client's ordinary timer, so a
//!    slowloris costs one timer and at most 8 KiB). [`respond`] routes it:
//!    `GET /` (also `/index.html`), `/app.js`, `/style.css`, `/favicon.svg` serve the web
//!    client (files of `apps/chat/web/` embedded with `include_str!`; with
//!    `Content-Type`, `Content-Length`, `X-Content-Type-Options: nosniff` and a
//!    Content-Security-Policy allowing only `'self'` and WebSocket connections
//!    back to the host asked for), another path 404, `HEAD` the same heads
//!    without bodies, another method 405, a
//!    request with a body 400 (nothing takes one yet). Each response closes the
//!    connection (`Connection: close`; no keep-alive: a page load is three
//!    requests, not worth the state), lingering: the response is followed by
//!    a FIN, and what the client still sends is read and dropped until it
//!    closes or `request_timeout_secs` pass, so an unread upload does not turn
//!    the close into a reset that destroys the response.
//! 2. **WebSocket** ([`Transport::Text`] / [`Transport::Binary`]): a valid
//!    upgrade on any path (RFC 6455 4.2: GET, HTTP/1.1, `Host`, `Upgrade: websocket`,
//!    `Connection: Upgrade`, `Sec-WebSocket-Version: 13` — else 400 naming
//!    version 13 —, a `Sec-WebSocket-Key` of 16 bytes in base64, and, when
//!    `[websocket] allowed_origins` is set, an allowed `Origin`, else 403) is
//!    answered with 101 and `Sec-WebSocket-Accept` (SHA-1 from `ring`, base64).
//!    The subprotocol is the first of the client's list that is
//!    `binary.ircv3.net` or `text.ircv3.net` (the spec: respect the client's
//!    preference); with neither, the handshake goes on without
//!    `Sec-WebSocket-Protocol` and the server sends text (what legacy web
//!    clients expect). Either way both message types are accepted from the
//!    client. From there the client is an ordinary IRC client: each message is
//!    one IRC line (a trailing CR LF / LF / CR is tolerated and dropped; a CR or
//!    LF inside it closes with 1007, since the spec says one line per message;
//!    an empty one is ignored), appended to the client's input with a line end
//!    so the usual pump, flood control and parking apply unchanged. Messages
//!    are at most the chat's line limit (`MAX_LINE`, tags included) plus that
//!    CR LF: more is 1009, whether in one frame or fragments ([`frame`]).
//!    Every line the server writes to the client becomes one unmasked frame,
//!    text or binary per the subprotocol (text frames get U+FFFD for bytes that
//!    are not UTF-8, as the spec allows); see `send` and `send_shared`,
//!    through which *all* output to clients must go (`apps/chat/clippy.toml`
//!    makes a raw `Ctx::send` / `send_shared` elsewhere a lint error).
//! 3. **Closed** ([`Transport::Closed`]): after a close frame went out (an
//!    answered close, a protocol error with its code, a QUIT or disconnection
//!    with 1000, a shutdown with 1001) nothing more is sent and the TCP
//!    connection is closed once its output is flushed (the server closes
//!    first, as RFC 6455 7.1.1 prefers). Also where an HTTP response ends.
//!
//! Pings are answered with pongs at once; pongs are ignored. The IRC-level
//! PING/timeout still runs as for every client.
//!
//! # Our own codec, not tungstenite
//!
//! `tungstenite` (well kept, and used by the tests as the browser-like client)
//! drives a `Read + Write` stream: its `WebSocket` pulls bytes by calling
//! `read` and pushes output by `write`/`flush`, and its handshake wants the
//! same. The framework gives us `on_data(&[u8]) -> consumed` callbacks and a
//! send queue instead, so using it would mean an adapter buffering both ways
//! per connection (a second input buffer, and output copied through its
//! `Vec` write buffer) and error paths mapped from `io::ErrorKind::WouldBlock`.
//! Its lower-level `FrameCodec`/`Frame` API is not public in a stable form.
//! The part we need is small and closed — a decoder of masked client frames
//! with RFC 6455's checks, an encoder of unmasked server frames, and the
//! handshake's accept value — so it is written here ([`frame`], ~300 lines
//! with its tests), fuzzed (`fuzz_targets/websocket_frames.rs`,
//! `http_request.rs`) and checked against tungstenite in the tests.
//!
//! # Cost for TCP clients
//!
//! A client holds one byte more ([`Transport`], in padding of `Client`); the
//! decoder state of WebSocket clients lives in `ChatShard::ws`, a map by
//! client id that only WebSocket clients are in. Output to a TCP client is
//! the same `ctx.send` as before behind one match.
//!
//! # FILEHOST on the same router
//!
//! With the file host on ([`crate::filehost`]), `http_data` hands `/upload`
//! and `/files/...` to it before [`respond`]: the same head parser, status
//! set and response writer; an upload's body and a download's file are jobs
//! of the connection (`ChatShard::http_jobs`) that `on_data` and
//! `on_drained` carry on. Without it these paths are 404/405 as any other.

// The one place that writes raw bytes to connections (`clippy.toml` forbids
// `Ctx::send` / `send_shared` elsewhere in the crate): everything else sends
// through `send` / `send_shared` here.
#![allow(clippy::disallowed_methods)]

pub mod frame;
pub mod http;

use bytes::Bytes;
use shardline::{Ctx, SendError};

use crate::{
    client::Client, config::WebSocketSection, message::MAX_LINE, shard::ChatShard, shard::ChatTimer,
};
use frame::{close_code, opcode, Decoder, Event, WsError};
use http::{error_response, response, without_body, Request, Status};

/// The subprotocol for binary messages.
pub const BINARY_PROTOCOL: &str = "binary.ircv3.net";
/// The subprotocol for text messages.
pub const TEXT_PROTOCOL: &str = "text.ircv3.net";
/// The longest message a client may send: an IRC line and its CR LF.
pub const MAX_MESSAGE: usize = MAX_LINE + 2;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// How a client's bytes travel (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Plain IRC lines over TCP (or TLS).
    #[default]
    Tcp,
    /// A WebSocket listener's connection before its request is answered.
    Http,
    /// WebSocket, text messages out.
    Text,
    /// WebSocket, binary messages out.
    Binary,
    /// A close frame or a final HTTP response went out: nothing more is sent.
    Closed,
}

impl Transport {
    /// A WebSocket connection still open.
    pub fn is_websocket(self) -> bool {
        matches!(self, Transport::Text | Transport::Binary)
    }
}

/// A WebSocket client's input state (kept in `ChatShard::ws`).
#[derive(Debug)]
pub struct WsConn {
    /// The frame decoder with the message being reassembled.
    pub decoder: Decoder,
}

/// Sends `bytes` (whole IRC lines) to client `c`, framed as its transport
/// needs: as they are over TCP, one frame per line over WebSocket, nothing
/// before the upgrade or after the close.
#[inline]
pub(crate) fn send(
    ctx: &mut Ctx<'_, ChatShard>,
    c: &Client,
    bytes: &[u8],
) -> Result<(), SendError> {
    match c.transport {
        Transport::Tcp => ctx.send(c.conn, bytes),
        t => send_framed(ctx, c, t, bytes),
    }
}

/// [`send`] for a shared buffer: TCP clients get it without a copy.
#[inline]
pub(crate) fn send_shared(
    ctx: &mut Ctx<'_, ChatShard>,
    c: &Client,
    buf: &Bytes,
) -> Result<(), SendError> {
    match c.transport {
        Transport::Tcp => ctx.send_shared(c.conn, buf),
        t => send_framed(ctx, c, t, buf),
    }
}

/// Raw bytes to a connection in the HTTP phase (the file host's responses
/// and file bodies, see [`crate::filehost`]): never to an IRC client.
pub(crate) fn http_send(
    ctx: &mut Ctx<'_, ChatShard>,
    conn: shardline::ConnId,
    bytes: &[u8],
) -> Result<(), SendError> {
    ctx.send(conn, bytes)
}

#[cold]
fn send_framed(
    ctx: &mut Ctx<'_, ChatShard>,
    c: &Client,
    t: Transport,
    bytes: &[u8],
) -> Result<(), SendError> {
    let text = match t {
        Transport::Text => true,
        Transport::Binary => false,
        _ => return Ok(()),
    };
    let mut out = Vec::with_capacity(bytes.len() + 8);
    frame::encode_lines(&mut out, text, bytes);
    ctx.send(c.conn, &out)
}

/// Sends a close frame to a WebSocket client and marks it closed (nothing is
/// sent after it). No-op for other transports.
pub(crate) fn send_close(ctx: &mut Ctx<'_, ChatShard>, c: &mut Client, code: u16, reason: &str) {
    if c.transport.is_websocket() {
        let mut out = Vec::with_capacity(4 + reason.len().min(123));
        frame::encode_close(&mut out, code, reason);
        let _ = ctx.send(c.conn, &out);
        c.transport = Transport::Closed;
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send this response and close.
    Close(Vec<u8>),
    /// Send this 101 response; the connection speaks WebSocket with this
    /// transport from now on.
    Upgrade(Vec<u8>, Transport),
}

/// One embedded file of the web client.
#[derive(Debug)]
pub struct Asset {
    /// Where it is served.
    pub path: &'static str,
    /// Its Content-Type.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static str,
}

/// The web client's files (from `apps/chat/web/`, built in).
pub const ASSETS: [Asset; 5] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../web/index.html"),
    },
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../web/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../web/style.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../web/favicon.svg"),
    },
];

/// The `Sec-WebSocket-Accept` value for a client's key.
pub fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// The subprotocol to answer with for the client's `Sec-WebSocket-Protocol`
/// values (the first it lists that we support), and the transport.
pub fn negotiate(req: &Request<'_>) -> (Option<&'static str>, Transport) {
    for p in req
        .values("Sec-WebSocket-Protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        if p == BINARY_PROTOCOL {
            return (Some(BINARY_PROTOCOL), Transport::Binary);
        }
        if p == TEXT_PROTOCOL {
            return (Some(TEXT_PROTOCOL), Transport::Text);
        }
    }
    (None, Transport::Text)
}

/// A `Host` value safe to repeat in a header: host name or address and port.
fn safe_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

/// The Content-Security-Policy of the web client's pages: its own scripts,
/// styles and images, and WebSocket connections back to where it came from.
pub fn content_security_policy(host: Option<&str>) -> String {
    let mut connect = String::from("'self'");
    if let Some(h) = host.filter(|h| safe_host(h)) {
        connect.push_str(&format!(" ws://{h} wss://{h}"));
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// Routes a request: a file of the web client, the WebSocket upgrade, or an
/// error (see the module documentation).
pub fn respond(req: &Request<'_>, config: &WebSocketSection) -> Answer {
    if req.method == "HEAD" {
        // GET's answer without its body (never an upgrade).
        return match route(req, config, false) {
            Answer::Close(bytes) => Answer::Close(without_body(bytes)),
            upgrade @ Answer::Upgrade(..) => upgrade,
        };
    }
    if req.method != "GET" {
        return Answer::Close(error_response(
            Status::METHOD_NOT_ALLOWED,
            &[("Allow", "GET, HEAD")],
        ));
    }
    route(req, config, true)
}

/// `respond` for a GET (and a HEAD, with `upgrades` false).
fn route(req: &Request<'_>, config: &WebSocketSection, upgrades: bool) -> Answer {
    let has_body = req.values("Transfer-Encoding").next().is_some()
        || req.values("Content-Length").any(|v| v != "0");
    if has_body {
        return Answer::Close(error_response(Status::BAD_REQUEST, &[]));
    }
    let wants_upgrade =
        req.values("Upgrade").next().is_some() || req.values("Sec-WebSocket-Key").next().is_some();
    if wants_upgrade && upgrades {
        return upgrade(req, config);
    }
    let Some(asset) = ASSETS.iter().find(|a| a.path == req.path) else {
        return Answer::Close(error_response(Status::NOT_FOUND, &[]));
    };
    let host = req.single("Host").ok().flatten();
    let csp = content_security_policy(host);
    Answer::Close(response(
        Status::OK,
        &[
            ("Content-Type", asset.content_type),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy", &csp),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            ("Cache-Control", "no-cache"),
        ],
        Some(asset.body.as_bytes()),
        true,
    ))
}

fn upgrade(req: &Request<'_>, config: &WebSocketSection) -> Answer {
    let bad = || Answer::Close(error_response(Status::BAD_REQUEST, &[]));
    let Ok(Some(_host)) = req.single("Host") else {
        return bad();
    };
    if !req.http11
        || !req.has_token("Upgrade", "websocket")
        || !req.has_token("Connection", "upgrade")
    {
        return bad();
    }
    if req.single("Sec-WebSocket-Version") != Ok(Some("13")) {
        return Answer::Close(error_response(
            Status::BAD_REQUEST,
            &[("Sec-WebSocket-Version", "13")],
        ));
    }
    let Ok(Some(key)) = req.single("Sec-WebSocket-Key") else {
        return bad();
    };
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(k) if k.len() == 16 => {}
        _ => return bad(),
    }
    if !config.allowed_origins.is_empty() {
        let Ok(origin) = req.single("Origin") else {
            return bad();
        };
        // No Origin: not a browser (browsers always send it), so not the
        // cross-site use the list guards against.
        if let Some(origin) = origin {
            if !config
                .allowed_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
            {
                return Answer::Close(error_response(Status::FORBIDDEN, &[]));
            }
        }
    }
    let (protocol, transport) = negotiate(req);
    let accept = accept_key(key);
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept.as_str()),
    ];
    if let Some(p) = protocol {
        headers.push(("Sec-WebSocket-Protocol", p));
    }
    Answer::Upgrade(
        response(Status::SWITCHING, &headers, None, false),
        transport,
    )
}

/// A message's IRC line: without a trailing CR LF (or LF, or CR); `None` if
/// empty; an error if it holds a line end inside.
pub fn message_line(payload: &[u8]) -> Result<Option<&[u8]>, WsError> {
    let line = payload
        .strip_suffix(b"\r\n")
        .or_else(|| payload.strip_suffix(b"\n"))
        .or_else(|| payload.strip_suffix(b"\r"))
        .unwrap_or(payload);
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(WsError {
            code: close_code::INVALID_DATA,
            reason: "one IRC line per message",
        });
    }
    Ok((!line.is_empty()).then_some(line))
}

impl ChatShard {
    /// `on_data` of a connection in the HTTP phase: returns what it consumed
    /// (nothing until the head is complete).
    pub(crate) fn http_data(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        data: &[u8],
    ) -> usize {
        if self.http_jobs.contains_key(&id) {
            return self.http_job_data(ctx, id, data);
        }
        let answer = match http::parse_head(data) {
            Ok(None) => return 0,
            Err(status) => Answer::Close(error_response(status, &[])),
            Ok(Some((req, used)))
                if self.filehost.is_some()
                    && (req.path == "/upload" || req.path.starts_with("/files/")) =>
            {
                return self.filehost_request(ctx, id, &req, used, data.len());
            }
            Ok(Some((req, used))) => match respond(&req, &self.info.config.websocket) {
                Answer::Upgrade(head, transport) => {
                    let registration = self.info.config.limits.registration_timeout();
                    let Some(c) = self.clients.get_mut(&id) else {
                        return data.len();
                    };
                    let _ = ctx.send(c.conn, &head);
                    c.transport = transport;
                    if let Some(t) = c.timer.take() {
                        ctx.cancel_timer(t);
                    }
                    c.timer = Some(ctx.set_timer(registration, ChatTimer::Client(id)));
                    self.ws.insert(
                        id,
                        WsConn {
                            decoder: Decoder::new(MAX_MESSAGE),
                        },
                    );
                    return used + self.ws_data(ctx, id, &data[used..]);
                }
                close => close,
            },
        };
        if let Answer::Close(bytes) = answer {
            self.http_close(ctx, id, &bytes);
        }
        data.len()
    }

    /// Sends a final HTTP response and closes — lingering: the sending side
    /// is shut down once the response is out, and what the client still
    /// sends (the rest of a body it is uploading) is read and dropped until
    /// it closes too or `request_timeout_secs` pass. Closing at once would
    /// make the kernel answer that unread data with a reset, which can
    /// destroy the response before the client reads it.
    pub(crate) fn http_close(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, bytes: &[u8]) {
        self.http_job_end(id);
        let linger = self.info.config.websocket.request_timeout();
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        // A file host upload may have paused reading; the linger reads.
        ctx.resume_reading(c.conn);
        let _ = ctx.send(c.conn, bytes);
        c.transport = Transport::Closed;
        if ctx.shutdown_write(c.conn).is_err() {
            self.begin_quit(ctx, id, "HTTP request answered".into());
            return;
        }
        // The client timer ends it (an unregistered client's timeout); its
        // EOF earlier ([`ChatShard::pump`] closes at the peer's EOF).
        if let Some(t) = c.timer.take() {
            ctx.cancel_timer(t);
        }
        c.timer = Some(ctx.set_timer(linger, ChatTimer::Client(id)));
    }

    /// The request head did not come in time: 408 and close.
    pub(crate) fn http_timeout(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
        if self.download_stalled(ctx, id) {
            return;
        }
        let bytes = error_response(Status::TIMEOUT, &[]);
        self.http_close(ctx, id, &bytes);
    }

    /// `on_data` of a WebSocket client: decodes frames, feeds the lines to the
    /// client's input and runs them; returns what it consumed (a frame not
    /// complete yet stays with the framework).
    pub(crate) fn ws_data(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, data: &[u8]) -> usize {
        let mut pos = 0;
        let mut lines = false;
        let failure = loop {
            let (Some(ws), Some(c)) = (self.ws.get_mut(&id), self.clients.get_mut(&id)) else {
                return data.len();
            };
            match ws.decoder.next(&data[pos..]) {
                Ok((None, _)) => break None,
                Err(e) => break Some((e.code, e.reason, true)),
                Ok((Some(event), used)) => {
                    pos += used;
                    match event {
                        Event::Message { payload, .. } => match message_line(&payload) {
                            Ok(Some(line)) => {
                                c.inbuf.extend_from_slice(line);
                                c.inbuf.push(b'\n');
                                lines = true;
                            }
                            Ok(None) => {}
                            Err(e) => break Some((e.code, e.reason, true)),
                        },
                        Event::Fragment | Event::Pong => {}
                        Event::Ping(payload) => {
                            let mut out = Vec::with_capacity(2 + payload.len());
                            frame::encode(&mut out, opcode::PONG, &payload);
                            let _ = ctx.send(c.conn, &out);
                        }
                        Event::Close(code) => {
                            break Some((code.unwrap_or(close_code::NORMAL), "", false));
                        }
                    }
                }
            }
        };
        if let Some((code, reason, error)) = failure {
            if let Some(c) = self.clients.get_mut(&id) {
                send_close(ctx, c, code, reason);
            }
            self.ws.remove(&id);
            let why = match error {
                true => format!("WebSocket error: {reason}"),
                false => "Remote host closed the connection".into(),
            };
            // Lines that came before the close still run (as at a TCP EOF)
            // unless the stream was broken.
            if !error && lines {
                if let Some(c) = self.clients.get_mut(&id) {
                    c.peer_eof = true;
                }
                self.pump(ctx, id);
                return data.len();
            }
            self.begin_quit(ctx, id, why);
            return data.len();
        }
        if lines {
            self.pump(ctx, id);
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_rfc_6455() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    fn head(extra: &str) -> String {
        format!(
            "GET / HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn answer(raw: &str, config: &WebSocketSection) -> Answer {
        let (req, _) = http::parse_head(raw.as_bytes()).unwrap().unwrap();
        respond(&req, config)
    }

    fn status(a: &Answer) -> &str {
        let (Answer::Close(b) | Answer::Upgrade(b, _)) = a;
        std::str::from_utf8(&b[9..12]).unwrap()
    }

    #[test]
    fn subprotocol_follows_the_clients_order() {
        let c = WebSocketSection::default();
        for (offer, want, t) in [
            ("Sec-WebSocket-Protocol: text.ircv3.net, binary.ircv3.net\r\n", Some("text.ircv3.net"), Transport::Text),
            ("Sec-WebSocket-Protocol: binary.ircv3.net\r\nSec-WebSocket-Protocol: text.ircv3.net\r\n", Some("binary.ircv3.net"), Transport::Binary),
            ("Sec-WebSocket-Protocol: chat, binary.ircv3.net\r\n", Some("binary.ircv3.net"), Transport::Binary),
            ("Sec-WebSocket-Protocol: chat\r\n", None, Transport::Text),
            ("", None, Transport::Text),
        ] {
            let a = answer(&head(offer), &c);
            let Answer::Upgrade(bytes, transport) = a else {
                panic!("no upgrade for {offer:?}");
            };
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
            assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
            assert_eq!(transport, t, "{offer:?}");
            match want {
                Some(p) => assert!(text.contains(&format!("Sec-WebSocket-Protocol: {p}\r\n")), "{text}"),
                None => assert!(!text.contains("Sec-WebSocket-Protocol"), "{text}"),
            }
        }
    }

    #[test]
    fn bad_handshakes_and_routes() {
        let c = WebSocketSection::default();
        let no_key = head("").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        assert_eq!(status(&answer(&no_key, &c)), "400");
        let v8 = head("").replace("Version: 13", "Version: 8");
        let a = answer(&v8, &c);
        assert_eq!(status(&a), "400");
        let Answer::Close(b) = a else { panic!() };
        assert!(String::from_utf8(b)
            .unwrap()
            .contains("Sec-WebSocket-Version: 13\r\n"));
        let short_key = head("").replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=");
        assert_eq!(status(&answer(&short_key, &c)), "400");
        let no_conn = head("").replace("Connection: Upgrade", "Connection: keep-alive");
        assert_eq!(status(&answer(&no_conn, &c)), "400");
        let post = head("").replace("GET", "POST");
        assert_eq!(status(&answer(&post, &c)), "405");
        let plain = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status(&answer(&plain("/nope"), &c)), "404");
        assert_eq!(status(&answer(&plain("/app.js?x=1"), &c)), "200");
        let body = "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(status(&answer(body, &c)), "400");
    }

    #[test]
    fn origin_allow_list() {
        let c = WebSocketSection {
            allowed_origins: vec!["https://chat.example".into()],
            ..WebSocketSection::default()
        };
        let ok = head("Origin: https://chat.example\r\n");
        assert_eq!(status(&answer(&ok, &c)), "101");
        let other = head("Origin: https://evil.example\r\n");
        assert_eq!(status(&answer(&other, &c)), "403");
        assert_eq!(
            status(&answer(&head(""), &c)),
            "101",
            "no Origin: not a browser"
        );
        let open = WebSocketSection::default();
        assert_eq!(status(&answer(&other, &open)), "101", "default: any origin");
    }

    #[test]
    fn static_files_carry_their_headers() {
        let c = WebSocketSection::default();
        let raw = "GET / HTTP/1.1\r\nHost: chat.example:8080\r\n\r\n";
        let Answer::Close(b) = answer(raw, &c) else {
            panic!()
        };
        let text = String::from_utf8(b).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Content-Type: text/html; charset=utf-8"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(head.contains("X-Content-Type-Options: nosniff"));
        assert!(head.contains("connect-src 'self' ws://chat.example:8080 wss://chat.example:8080;"));
        assert_eq!(body, ASSETS[0].body);
        // A Host that could inject into the header is left out.
        assert!(!content_security_policy(Some("a; script-src *")).contains("script-src *"));
    }

    #[test]
    fn message_lines() {
        assert_eq!(message_line(b"NICK a"), Ok(Some(&b"NICK a"[..])));
        assert_eq!(message_line(b"NICK a\r\n"), Ok(Some(&b"NICK a"[..])));
        assert_eq!(message_line(b"\r\n"), Ok(None));
        assert!(message_line(b"NICK a\r\nUSER b").is_err());
        assert!(message_line(b"NICK\ra").is_err());
    }
}
