//! The HTTP/1.1 proxy handler of one shard.
//!
//! Each client connection has at most one **exchange** (request + response) in
//! flight. Bytes from the client go into the client's buffer; [`HttpShard::pump`]
//! moves the client forward as far as it can: parse the next request head
//! (strictly), route it, choose an upstream connection (pooled or new), stream
//! the request body out of the buffer, and — once the response is complete —
//! return the upstream connection to the pool and start on the next pipelined
//! request. Response bytes are handled as they arrive from the upstream
//! ([`HttpShard::on_response_data`]). Every step that waits (connect, backpressure,
//! response) just returns; the callback that ends the wait calls `pump` again.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use shardline::{CloseReason, ConnId, Ctx, Handler, ShardId, TimerId};
use slab::Slab;
use tracing::{debug, info};

use super::{
    chunked::{ChunkedDecoder, LAST_CHUNK},
    head::{self, Framing, RequestHead},
    pool::{UpState, Upstream, UpstreamPool},
};
use crate::{balance::Balancer, config::Config};

/// Client bytes not yet processed past which the client is not read (pipelined
/// requests wait here while the response before them is under way).
const PIPELINE_SLACK: usize = 64 << 10;

#[derive(Debug, Clone, Copy)]
enum Role {
    Client(usize),
    Upstream(usize),
}

#[derive(Debug, Clone, Copy)]
enum TimerKind {
    /// Waiting for a request head (`idle`: none started on a kept-alive connection).
    Head { client: usize, serial: u64 },
    /// Connect or response deadline of an exchange.
    Exchange {
        client: usize,
        serial: u64,
        exchange: u64,
    },
    /// Close idle pooled connections that outstayed the idle timeout.
    Sweep,
    /// Act on a connection's EOF, after input held during a pause was presented.
    Eof(ConnId),
}

#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
}

#[derive(Debug)]
enum Resp {
    /// Waiting for the (next) response head.
    Head,
    /// Forwarding the body; `to_client` is the framing the client sees.
    Body {
        from: Framing,
        to_client: Framing,
        remaining: u64,
        decoder: ChunkedDecoder,
    },
    Done,
}

#[derive(Debug)]
struct Exchange {
    serial: u64,
    method: String,
    target: String,
    client_minor: u8,
    head_request: bool,
    idempotent: bool,
    /// Close the client after this exchange.
    close: bool,
    expect_continue: bool,
    pool: usize,
    backend: usize,
    /// The head for the backend (kept so a dead pooled connection can be retried).
    upstream_head: Vec<u8>,
    /// What of the request body is still to come (`None`: no body, or all sent).
    body: Option<Body>,
    body_sent: u64,
    dispatched: bool,
    upstream: Option<usize>,
    /// The upstream is connected and has the head.
    ready: bool,
    reused: bool,
    /// Connects tried (a pooled connection is not a connect).
    attempts: u32,
    /// Already retried once after a dead pooled connection.
    retried: bool,
    req_done: bool,
    resp: Resp,
    resp_started: bool,
    status: u16,
    upstream_reusable: bool,
    timer: Option<(TimerId, u64)>,
    started: Instant,
}

#[derive(Debug)]
struct Client {
    conn: ConnId,
    peer: SocketAddr,
    serial: u64,
    buf: Vec<u8>,
    exchange: Option<Exchange>,
    head_timer: Option<(TimerId, u64, bool)>,
    reading: bool,
    upstream_full: bool,
    eof: bool,
    closing: bool,
    served: u64,
}

/// The per-shard HTTP proxy handler.
#[derive(Debug)]
pub struct HttpShard {
    config: Arc<Config>,
    listener: usize,
    balancers: Vec<Balancer>,
    clients: Slab<Client>,
    pool: UpstreamPool,
    roles: HashMap<ConnId, Role>,
    timers: HashMap<u64, TimerKind>,
    next_token: u64,
    next_serial: u64,
}

impl HttpShard {
    /// The handler for listener `listener` of `config` on `shard`.
    pub fn new(config: Arc<Config>, listener: usize, shard: ShardId) -> HttpShard {
        let balancers = config
            .pools
            .iter()
            .map(|p| Balancer::new(p, shard.0))
            .collect();
        let sizes: Vec<usize> = config.pools.iter().map(|p| p.backends.len()).collect();
        let pool = UpstreamPool::new(&sizes, config.limits.max_idle_per_backend);
        HttpShard {
            config,
            listener,
            balancers,
            clients: Slab::new(),
            pool,
            roles: HashMap::new(),
            timers: HashMap::new(),
            next_token: 0,
            next_serial: 0,
        }
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    fn timer(&mut self, ctx: &mut Ctx<'_>, ms: u64, kind: TimerKind) -> (TimerId, u64) {
        let token = self.next_token;
        self.next_token += 1;
        self.timers.insert(token, kind);
        (ctx.set_timer(Duration::from_millis(ms), token), token)
    }

    fn cancel(&mut self, ctx: &mut Ctx<'_>, t: Option<(TimerId, u64)>) {
        if let Some((id, token)) = t {
            ctx.cancel_timer(id);
            self.timers.remove(&token);
        }
    }

    fn cancel_head_timer(&mut self, ctx: &mut Ctx<'_>, ck: usize) {
        let t = self.clients.get_mut(ck).and_then(|c| c.head_timer.take());
        self.cancel(ctx, t.map(|(id, token, _)| (id, token)));
    }

    /// (Re)arms the exchange deadline of client `ck`.
    fn arm_exchange(&mut self, ctx: &mut Ctx<'_>, ck: usize, ms: u64) {
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        let serial = c.serial;
        let Some(ex) = c.exchange.as_mut() else {
            return;
        };
        let old = ex.timer.take();
        let exchange = ex.serial;
        self.cancel(ctx, old);
        let t = self.timer(
            ctx,
            ms,
            TimerKind::Exchange {
                client: ck,
                serial,
                exchange,
            },
        );
        if let Some(ex) = self.clients.get_mut(ck).and_then(|c| c.exchange.as_mut()) {
            ex.timer = Some(t);
        }
    }

    fn drop_upstream(&mut self, ctx: &mut Ctx<'_>, key: usize) {
        if let Some(up) = self.pool.remove(key) {
            self.roles.remove(&up.conn);
            ctx.close(up.conn);
        }
    }

    /// Ends client `ck`'s connection: answers `status` first if no response has
    /// started (`None`: just close), drops the exchange's upstream.
    fn fail(&mut self, ctx: &mut Ctx<'_>, ck: usize, status: Option<u16>, why: &str) {
        self.cancel_head_timer(ctx, ck);
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        let ex = c.exchange.take();
        let conn = c.conn;
        let peer = c.peer;
        c.closing = true;
        let started = ex.as_ref().is_some_and(|e| e.resp_started);
        if let (Some(status), false) = (status, started) {
            let _ = ctx.send(conn, &head::error_response(status));
        }
        ctx.close(conn);
        if let Some(ex) = ex {
            self.cancel(ctx, ex.timer);
            info!(target: "shardline_proxy::access", client = %peer, method = %ex.method,
                target = %ex.target, status = status.filter(|_| !started).unwrap_or(ex.status),
                ms = ex.started.elapsed().as_millis() as u64, error = why, "request failed");
            if let Some(u) = ex.upstream {
                self.drop_upstream(ctx, u);
            }
        } else {
            debug!(client = %peer, ?status, why, "client refused");
        }
    }

    fn update_reading(&mut self, ctx: &mut Ctx<'_>, ck: usize) {
        let cap = self.config.limits.max_header_bytes + PIPELINE_SLACK;
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        let want = !c.closing && !c.upstream_full && c.buf.len() < cap;
        if want != c.reading {
            c.reading = want;
            if want {
                ctx.resume_reading(c.conn);
            } else {
                ctx.pause_reading(c.conn);
            }
        }
    }

    /// Moves client `ck` forward as far as it can go now.
    fn pump(&mut self, ctx: &mut Ctx<'_>, ck: usize) {
        for _ in 0..10_000 {
            let Some(c) = self.clients.get_mut(ck) else {
                return;
            };
            if c.closing {
                return;
            }
            let Some(ex) = c.exchange.as_mut() else {
                if !self.next_request(ctx, ck) {
                    break;
                }
                continue;
            };
            if !ex.dispatched {
                // A chunked body must start well-formed before a backend is chosen,
                // so a bad first chunk size never reaches one. (Not with
                // 100-continue: that client waits for the backend's 100.)
                if let Some(Body::Chunked(d)) = &ex.body {
                    if !ex.expect_continue && !d.past_first_size_line() {
                        let mut probe = d.clone();
                        match probe.decode(&c.buf, |_| {}) {
                            Err(e) => return self.fail(ctx, ck, Some(400), &e.to_string()),
                            Ok(_) if !probe.past_first_size_line() => {
                                if c.eof {
                                    return self.fail(ctx, ck, None, "eof in request");
                                }
                                break;
                            }
                            Ok(_) => {}
                        }
                    }
                }
                self.dispatch(ctx, ck);
                continue;
            }
            if !ex.ready {
                break;
            }
            if !ex.req_done {
                if c.upstream_full {
                    break;
                }
                match self.forward_body(ctx, ck) {
                    Ok(true) => {}
                    Ok(false) => {
                        if self.clients.get(ck).is_some_and(|c| c.eof) {
                            return self.fail(ctx, ck, None, "client closed mid-request");
                        }
                        break;
                    }
                    Err((status, why)) => return self.fail(ctx, ck, Some(status), &why),
                }
                continue;
            }
            if !matches!(ex.resp, Resp::Done) {
                break;
            }
            self.finish_exchange(ctx, ck);
        }
        self.update_reading(ctx, ck);
    }

    /// With no exchange: parses the next request from the buffer and starts it.
    /// `false`: nothing more can happen now.
    fn next_request(&mut self, ctx: &mut Ctx<'_>, ck: usize) -> bool {
        let limits = self.config.limits.clone();
        let timeouts = self.config.timeouts.clone();
        let Some(c) = self.clients.get_mut(ck) else {
            return false;
        };
        // Empty lines before a request line are ignored (RFC 9112 §2.2).
        let skip = c.buf.chunks(2).take_while(|p| *p == b"\r\n").count() * 2;
        c.buf.drain(..skip);
        match head::parse_request(&c.buf, limits.max_header_bytes, limits.max_headers) {
            Ok(Some(req)) => {
                c.buf.drain(..req.len);
                self.cancel_head_timer(ctx, ck);
                self.begin(ctx, ck, req);
                true
            }
            Ok(None) => {
                if c.eof && c.reading {
                    let clean = c.buf.is_empty();
                    self.fail(ctx, ck, None, if clean { "done" } else { "eof in head" });
                    return false;
                }
                // Idle keep-alive connection: the idle timeout; otherwise (a head
                // begun, or a new connection) the header timeout, answered 408.
                let idle = c.buf.is_empty() && c.served > 0;
                let rearm = match c.head_timer {
                    None => true,
                    Some((_, _, was_idle)) => was_idle && !idle,
                };
                if rearm {
                    let serial = c.serial;
                    self.cancel_head_timer(ctx, ck);
                    let ms = if idle {
                        timeouts.client_idle_ms
                    } else {
                        timeouts.client_header_ms
                    };
                    let (id, token) = self.timer(ctx, ms, TimerKind::Head { client: ck, serial });
                    if let Some(c) = self.clients.get_mut(ck) {
                        c.head_timer = Some((id, token, idle));
                    }
                }
                false
            }
            Err(e) => {
                self.fail(ctx, ck, Some(e.status()), &e.to_string());
                false
            }
        }
    }

    /// Routes a parsed request and makes it the client's exchange.
    fn begin(&mut self, ctx: &mut Ctx<'_>, ck: usize, req: RequestHead) {
        let path = req.target.split('?').next().unwrap_or("/");
        let Some(pool) = self.config.route(self.listener, req.host.as_deref(), path) else {
            return self.fail(ctx, ck, Some(404), "no route");
        };
        let body = match req.framing {
            Framing::Length(n) if n > self.config.limits.max_body_bytes => {
                return self.fail(ctx, ck, Some(413), "body over limit");
            }
            Framing::Length(0) | Framing::None | Framing::UntilClose => None,
            Framing::Length(n) => Some(Body::Length(n)),
            Framing::Chunked => Some(Body::Chunked(ChunkedDecoder::new())),
        };
        let serial = self.serial();
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        // The backend's own Host is only used when an HTTP/1.0 client sent none.
        let backend_host = self.config.pools[pool].backends[0].address.to_string();
        let upstream_head = head::upstream_request(&req, c.peer.ip(), &backend_host);
        let idempotent = matches!(
            req.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        );
        c.exchange = Some(Exchange {
            serial,
            head_request: req.method == "HEAD",
            method: req.method,
            target: req.target,
            client_minor: req.minor,
            idempotent,
            close: req.close,
            expect_continue: req.expect_continue,
            pool,
            backend: 0,
            upstream_head,
            body,
            body_sent: 0,
            dispatched: false,
            upstream: None,
            ready: false,
            reused: false,
            attempts: 0,
            retried: false,
            req_done: false,
            resp: Resp::Head,
            resp_started: false,
            status: 0,
            upstream_reusable: false,
            timer: None,
            started: Instant::now(),
        });
    }

    /// Gives the exchange an upstream: an idle pooled connection to the backend
    /// the balancer picks, or a new connect (bounded attempts, then 502).
    fn dispatch(&mut self, ctx: &mut Ctx<'_>, ck: usize) {
        let max = self.config.limits.connect_attempts;
        loop {
            let Some(c) = self.clients.get_mut(ck) else {
                return;
            };
            let serial = c.serial;
            let Some(ex) = c.exchange.as_mut() else {
                return;
            };
            let pool = ex.pool;
            let backends = self.config.pools[pool].backends.len() as u32;
            if ex.attempts >= max.min(backends.max(1)).max(1) {
                return self.fail(ctx, ck, Some(502), "no backend reachable");
            }
            ex.dispatched = true;
            let backend = self.balancers[pool].pick();
            ex.backend = backend;
            if let Some(u) = self.pool.take_idle(pool, backend, (ck, serial)) {
                ex.upstream = Some(u);
                ex.reused = true;
                self.upstream_ready(ctx, ck);
                return;
            }
            ex.attempts += 1;
            let addr = self.config.pools[pool].backends[backend].address;
            match ctx.connect(addr) {
                Ok(conn) => {
                    let key = self.pool.conns.insert(Upstream {
                        conn,
                        pool,
                        backend,
                        state: UpState::Connecting(ck, serial),
                        idle_since: Instant::now(),
                    });
                    self.roles.insert(conn, Role::Upstream(key));
                    if let Some(ex) = self.clients.get_mut(ck).and_then(|c| c.exchange.as_mut()) {
                        ex.upstream = Some(key);
                        ex.reused = false;
                        ex.ready = false;
                    }
                    let ms = self.config.timeouts.connect_ms;
                    self.arm_exchange(ctx, ck, ms);
                    return;
                }
                Err(e) => debug!(backend = %addr, error = %e, "cannot start connect"),
            }
        }
    }

    /// The exchange's upstream is connected: send the head, start the clock.
    fn upstream_ready(&mut self, ctx: &mut Ctx<'_>, ck: usize) {
        let Some(ex) = self.clients.get_mut(ck).and_then(|c| c.exchange.as_mut()) else {
            return;
        };
        let Some(u) = ex.upstream else { return };
        let Some(up) = self.pool.conns.get(u) else {
            return;
        };
        ex.ready = true;
        let _ = ctx.send(up.conn, &ex.upstream_head);
        if ex.body.is_none() {
            ex.req_done = true;
        }
        let ms = self.config.timeouts.backend_response_ms;
        self.arm_exchange(ctx, ck, ms);
    }

    /// Streams request body bytes from the client's buffer to the upstream.
    /// `Ok(true)`: the body is complete.
    fn forward_body(&mut self, ctx: &mut Ctx<'_>, ck: usize) -> Result<bool, (u16, String)> {
        let max_body = self.config.limits.max_body_bytes;
        let Some(c) = self.clients.get_mut(ck) else {
            return Ok(false);
        };
        let Some(ex) = c.exchange.as_mut() else {
            return Ok(false);
        };
        let Some(up) = ex.upstream.and_then(|u| self.pool.conns.get(u)) else {
            return Ok(false);
        };
        let upconn = up.conn;
        let done = match ex.body.as_mut() {
            None => true,
            Some(Body::Length(remaining)) => {
                let n = (*remaining).min(c.buf.len() as u64) as usize;
                if n > 0 {
                    let _ = ctx.send(upconn, &c.buf[..n]);
                    c.buf.drain(..n);
                    *remaining -= n as u64;
                    ex.body_sent += n as u64;
                }
                *remaining == 0
            }
            Some(Body::Chunked(decoder)) => {
                let mut out = Vec::with_capacity(c.buf.len() + 16);
                let used = decoder
                    .decode(&c.buf, |data| head::push_chunk(&mut out, data))
                    .map_err(|e| (400, e.to_string()))?;
                if decoder.total() > max_body {
                    return Err((413, "body over limit".into()));
                }
                if decoder.is_done() {
                    out.extend_from_slice(LAST_CHUNK);
                }
                if !out.is_empty() {
                    let _ = ctx.send(upconn, &out);
                }
                c.buf.drain(..used);
                ex.body_sent = decoder.total();
                decoder.is_done()
            }
        };
        if done {
            ex.body = None;
            ex.req_done = true;
            let ms = self.config.timeouts.backend_response_ms;
            self.arm_exchange(ctx, ck, ms);
        }
        Ok(done)
    }

    /// Both directions of the exchange are complete: pool or close the upstream,
    /// log, and close the client if it asked.
    fn finish_exchange(&mut self, ctx: &mut Ctx<'_>, ck: usize) {
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        let Some(ex) = c.exchange.take() else { return };
        c.served += 1;
        let peer = c.peer;
        let close = ex.close || c.eof;
        let conn = c.conn;
        self.cancel(ctx, ex.timer);
        info!(target: "shardline_proxy::access", client = %peer, method = %ex.method,
            target = %ex.target, status = ex.status, backend = ex.backend,
            ms = ex.started.elapsed().as_millis() as u64, "request");
        if let Some(u) = ex.upstream {
            let reusable = ex.upstream_reusable && ex.req_done;
            if reusable && self.pool.put_idle(u, Instant::now()) {
                if let Some(up) = self.pool.conns.get(u) {
                    ctx.resume_reading(up.conn);
                }
            } else {
                self.drop_upstream(ctx, u);
            }
        }
        if close {
            if let Some(c) = self.clients.get_mut(ck) {
                c.closing = true;
            }
            ctx.close(conn);
        }
    }

    /// Response bytes from upstream `u`. Returns how many were consumed (less
    /// only inside an incomplete response head).
    fn on_response_data(&mut self, ctx: &mut Ctx<'_>, u: usize, data: &[u8]) -> usize {
        let Some(up) = self.pool.conns.get(u) else {
            return data.len();
        };
        let (ck, serial) = match up.state {
            UpState::Active(ck, serial) => (ck, serial),
            // An idle connection has nothing to say; one that does is not reused.
            UpState::Idle | UpState::Connecting(..) => {
                self.drop_upstream(ctx, u);
                return data.len();
            }
        };
        let upconn = up.conn;
        let limits = self.config.limits.clone();
        let mut off = 0;
        loop {
            let Some(c) = self.clients.get_mut(ck).filter(|c| c.serial == serial) else {
                self.drop_upstream(ctx, u);
                return data.len();
            };
            let client = c.conn;
            let Some(ex) = c.exchange.as_mut().filter(|e| e.upstream == Some(u)) else {
                self.drop_upstream(ctx, u);
                return data.len();
            };
            let rest = &data[off..];
            match &mut ex.resp {
                Resp::Head => {
                    let parsed = head::parse_response(
                        rest,
                        ex.head_request,
                        limits.max_header_bytes,
                        limits.max_headers,
                    );
                    let h = match parsed {
                        Ok(Some(h)) => h,
                        Ok(None) => return off,
                        Err(e) => {
                            self.fail(ctx, ck, Some(502), &e.to_string());
                            return data.len();
                        }
                    };
                    off += h.len;
                    if (100..200).contains(&h.status) {
                        if h.status == 101 {
                            self.fail(ctx, ck, Some(502), "backend switched protocols");
                            return data.len();
                        }
                        if ex.client_minor == 1 {
                            let _ =
                                ctx.send(client, &head::client_response(&h, Framing::None, false));
                        }
                        continue;
                    }
                    let to_client = match h.framing {
                        Framing::Chunked if ex.client_minor == 0 => Framing::UntilClose,
                        f => f,
                    };
                    // A response that ends with the connection, or that came before
                    // the request was all sent, ends the client connection too.
                    if to_client == Framing::UntilClose || !ex.req_done {
                        ex.close = true;
                    }
                    ex.status = h.status;
                    ex.resp_started = true;
                    ex.upstream_reusable = h.reusable;
                    let _ = ctx.send(client, &head::client_response(&h, to_client, ex.close));
                    if let Some((id, token)) = ex.timer.take() {
                        ctx.cancel_timer(id);
                        self.timers.remove(&token);
                    }
                    ex.resp = match h.framing {
                        Framing::None | Framing::Length(0) => Resp::Done,
                        Framing::Length(n) => Resp::Body {
                            from: Framing::Length(n),
                            to_client,
                            remaining: n,
                            decoder: ChunkedDecoder::new(),
                        },
                        f => Resp::Body {
                            from: f,
                            to_client,
                            remaining: 0,
                            decoder: ChunkedDecoder::new(),
                        },
                    };
                }
                Resp::Body {
                    from,
                    to_client,
                    remaining,
                    decoder,
                } => match from {
                    Framing::Length(_) => {
                        let n = (*remaining).min(rest.len() as u64) as usize;
                        let _ = ctx.send(client, &rest[..n]);
                        *remaining -= n as u64;
                        off += n;
                        if *remaining == 0 {
                            ex.resp = Resp::Done;
                        }
                    }
                    Framing::Chunked => {
                        let mut out = Vec::with_capacity(rest.len() + 16);
                        let reencode = *to_client == Framing::Chunked;
                        let used = match decoder.decode(rest, |d| {
                            if reencode {
                                head::push_chunk(&mut out, d)
                            } else {
                                out.extend_from_slice(d)
                            }
                        }) {
                            Ok(n) => n,
                            Err(e) => {
                                let _ = ctx.send(client, &out);
                                self.fail(ctx, ck, Some(502), &format!("backend body: {e}"));
                                return data.len();
                            }
                        };
                        if decoder.is_done() && reencode {
                            out.extend_from_slice(LAST_CHUNK);
                        }
                        let _ = ctx.send(client, &out);
                        off += used;
                        if decoder.is_done() {
                            ex.resp = Resp::Done;
                        }
                    }
                    _ => {
                        let _ = ctx.send(client, rest);
                        off = data.len();
                    }
                },
                Resp::Done => {
                    // Bytes past the end of the response: this connection is not
                    // speaking HTTP we understand; never reuse it.
                    ex.upstream_reusable = false;
                    debug!(conn = %upconn, extra = rest.len(), "bytes after a response");
                    off = data.len();
                }
            }
            let done = matches!(ex.resp, Resp::Done);
            if off >= data.len() || done {
                if done {
                    if off < data.len() {
                        ex.upstream_reusable = false;
                    }
                    self.pump(ctx, ck);
                }
                return data.len();
            }
        }
    }

    /// Upstream `u` ended (EOF, error or close) while carrying an exchange.
    fn upstream_lost(&mut self, ctx: &mut Ctx<'_>, u: usize, eof: bool) {
        let Some(up) = self.pool.conns.get(u) else {
            return;
        };
        let (ck, serial) = match up.state {
            UpState::Active(ck, s) | UpState::Connecting(ck, s) => (ck, s),
            UpState::Idle => {
                self.drop_upstream(ctx, u);
                return;
            }
        };
        self.drop_upstream(ctx, u);
        let Some(c) = self.clients.get_mut(ck).filter(|c| c.serial == serial) else {
            return;
        };
        let Some(ex) = c.exchange.as_mut().filter(|e| e.upstream == Some(u)) else {
            return;
        };
        ex.upstream = None;
        ex.upstream_reusable = false;
        match &ex.resp {
            Resp::Body {
                from: Framing::UntilClose,
                ..
            } if eof => {
                ex.resp = Resp::Done;
                ex.close = true;
                self.pump(ctx, ck);
            }
            Resp::Head
                if !ex.resp_started
                    && ex.reused
                    && !ex.retried
                    && ex.idempotent
                    && ex.body_sent == 0 =>
            {
                ex.retried = true;
                // A pooled connection the backend had closed: try again, fresh.
                debug!(client = %c.peer, "pooled upstream connection was dead; retrying");
                let t = ex.timer.take();
                ex.dispatched = false;
                ex.ready = false;
                ex.req_done = false;
                self.cancel(ctx, t);
                self.pump(ctx, ck);
            }
            Resp::Head => self.fail(ctx, ck, Some(502), "backend closed before responding"),
            _ => self.fail(ctx, ck, None, "backend closed mid-response"),
        }
    }

    /// A connection's EOF, once held input was presented.
    fn eof_now(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
        match self.roles.get(&conn) {
            Some(&Role::Client(ck)) => {
                if let Some(c) = self.clients.get_mut(ck) {
                    c.eof = true;
                }
                self.pump(ctx, ck);
            }
            Some(&Role::Upstream(u)) => self.upstream_lost(ctx, u, true),
            None => ctx.close(conn),
        }
    }
}

impl Handler for HttpShard {
    type Msg = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        let every = (self.config.timeouts.upstream_idle_ms / 2).clamp(10, 1000);
        let token = self.next_token;
        self.next_token += 1;
        self.timers.insert(token, TimerKind::Sweep);
        ctx.set_interval(Duration::from_millis(every), token);
    }

    fn on_accept(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, peer: SocketAddr) {
        let serial = self.serial();
        let ck = self.clients.insert(Client {
            conn,
            peer,
            serial,
            buf: Vec::new(),
            exchange: None,
            head_timer: None,
            reading: true,
            upstream_full: false,
            eof: false,
            closing: false,
            served: 0,
        });
        self.roles.insert(conn, Role::Client(ck));
        self.pump(ctx, ck);
    }

    fn on_connect(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, result: io::Result<()>) {
        let Some(&Role::Upstream(u)) = self.roles.get(&conn) else {
            return;
        };
        let Some(up) = self.pool.conns.get_mut(u) else {
            return;
        };
        let UpState::Connecting(ck, serial) = up.state else {
            return;
        };
        let owner = self
            .clients
            .get(ck)
            .filter(|c| c.serial == serial)
            .and_then(|c| c.exchange.as_ref())
            .is_some_and(|e| e.upstream == Some(u));
        match result {
            Ok(()) if owner => {
                up.state = UpState::Active(ck, serial);
                self.upstream_ready(ctx, ck);
                self.pump(ctx, ck);
            }
            Ok(()) => {
                // Its client left meanwhile: keep the connection for the next one.
                if !self.pool.put_idle(u, Instant::now()) {
                    self.drop_upstream(ctx, u);
                }
            }
            Err(e) => {
                debug!(error = %e, "upstream connect failed");
                // Released by the framework already: forget it, no close.
                self.pool.remove(u);
                self.roles.remove(&conn);
                if owner {
                    if let Some(ex) = self.clients.get_mut(ck).and_then(|c| c.exchange.as_mut()) {
                        ex.upstream = None;
                        ex.dispatched = false;
                    }
                    self.pump(ctx, ck);
                }
            }
        }
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, data: &[u8]) -> usize {
        match self.roles.get(&conn) {
            Some(&Role::Client(ck)) => {
                let Some(c) = self.clients.get_mut(ck) else {
                    return data.len();
                };
                if c.closing {
                    return data.len();
                }
                c.buf.extend_from_slice(data);
                self.pump(ctx, ck);
                data.len()
            }
            Some(&Role::Upstream(u)) => self.on_response_data(ctx, u, data),
            None => data.len(),
        }
    }

    fn on_eof(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
        // If reading `conn` was paused, bytes that arrived meanwhile are held
        // unpresented by the framework; acting on the EOF now would lose them.
        // Resuming presents them within this loop turn; the timer fires after.
        if let Some(&Role::Client(ck)) = self.roles.get(&conn) {
            if let Some(c) = self.clients.get_mut(ck) {
                c.reading = true;
            }
        }
        ctx.resume_reading(conn);
        let token = self.next_token;
        self.next_token += 1;
        self.timers.insert(token, TimerKind::Eof(conn));
        ctx.set_timer(Duration::ZERO, token);
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _reason: &CloseReason) {
        match self.roles.remove(&conn) {
            Some(Role::Client(ck)) => {
                self.cancel_head_timer(ctx, ck);
                if let Some(c) = self.clients.try_remove(ck) {
                    if let Some(ex) = c.exchange {
                        self.cancel(ctx, ex.timer);
                        if let Some(u) = ex.upstream {
                            // Mid-exchange: the upstream connection cannot be reused.
                            self.drop_upstream(ctx, u);
                        }
                    }
                }
            }
            Some(Role::Upstream(u)) => {
                self.roles.insert(conn, Role::Upstream(u));
                self.upstream_lost(ctx, u, false);
                self.roles.remove(&conn);
            }
            None => {}
        }
    }

    fn on_backpressure(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
        match self.roles.get(&conn) {
            // The client reads slowly: stop reading its upstream.
            Some(&Role::Client(ck)) => {
                if let Some(u) = self
                    .clients
                    .get(ck)
                    .and_then(|c| c.exchange.as_ref())
                    .and_then(|e| e.upstream)
                {
                    if let Some(up) = self.pool.conns.get(u) {
                        ctx.pause_reading(up.conn);
                    }
                }
            }
            // The backend reads slowly: stop reading the client.
            Some(&Role::Upstream(u)) => {
                if let Some(UpState::Active(ck, _)) = self.pool.conns.get(u).map(|up| up.state) {
                    if let Some(c) = self.clients.get_mut(ck) {
                        c.upstream_full = true;
                    }
                    self.update_reading(ctx, ck);
                }
            }
            None => {}
        }
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
        match self.roles.get(&conn) {
            Some(&Role::Client(ck)) => {
                if let Some(u) = self
                    .clients
                    .get(ck)
                    .and_then(|c| c.exchange.as_ref())
                    .and_then(|e| e.upstream)
                {
                    if let Some(up) = self.pool.conns.get(u) {
                        ctx.resume_reading(up.conn);
                    }
                }
            }
            Some(&Role::Upstream(u)) => {
                if let Some(UpState::Active(ck, _)) = self.pool.conns.get(u).map(|up| up.state) {
                    if let Some(c) = self.clients.get_mut(ck) {
                        c.upstream_full = false;
                    }
                    self.pump(ctx, ck);
                }
            }
            None => {}
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _timer: TimerId, token: u64) {
        let Some(&kind) = self.timers.get(&token) else {
            return;
        };
        match kind {
            TimerKind::Eof(conn) => {
                self.timers.remove(&token);
                self.eof_now(ctx, conn);
            }
            TimerKind::Sweep => {
                let timeout = Duration::from_millis(self.config.timeouts.upstream_idle_ms);
                for conn in self.pool.expire(Instant::now(), timeout) {
                    self.roles.remove(&conn);
                    ctx.close(conn);
                }
            }
            TimerKind::Head { client, serial } => {
                self.timers.remove(&token);
                let Some(c) = self.clients.get_mut(client).filter(|c| c.serial == serial) else {
                    return;
                };
                c.head_timer = None;
                if c.exchange.is_some() {
                    return;
                }
                if c.buf.is_empty() && c.served > 0 {
                    self.fail(ctx, client, None, "idle timeout");
                } else {
                    self.fail(ctx, client, Some(408), "request head timeout");
                }
            }
            TimerKind::Exchange {
                client,
                serial,
                exchange,
            } => {
                self.timers.remove(&token);
                let Some(ex) = self
                    .clients
                    .get_mut(client)
                    .filter(|c| c.serial == serial)
                    .and_then(|c| c.exchange.as_mut())
                    .filter(|e| e.serial == exchange)
                else {
                    return;
                };
                ex.timer = None;
                if !ex.ready {
                    // Connect timeout: abandon it, try the next backend.
                    let attempts = ex.attempts;
                    let backends = self.config.pools[ex.pool].backends.len() as u32;
                    let gone = ex.upstream.take();
                    ex.dispatched = false;
                    if let Some(u) = gone {
                        self.drop_upstream(ctx, u);
                    }
                    let max = self.config.limits.connect_attempts.min(backends).max(1);
                    if attempts >= max {
                        return self.fail(ctx, client, Some(504), "connect timeout");
                    }
                    self.pump(ctx, client);
                } else if !ex.resp_started {
                    self.fail(ctx, client, Some(504), "backend response timeout");
                }
            }
        }
    }

    fn on_shutdown(&mut self, ctx: &mut Ctx<'_>) {
        for conn in self.pool.drain_idle() {
            self.roles.remove(&conn);
            ctx.close(conn);
        }
    }
}
