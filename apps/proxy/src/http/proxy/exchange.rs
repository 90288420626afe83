//! Moving a client through its exchanges: parse, route, dispatch to an upstream,
//! stream the request body, finish (pool the upstream, next pipelined request).

use std::time::Instant;

use shardline::Ctx;
use tracing::{debug, info};

use super::{Body, Exchange, ProxyShard, Resp, Role, TimerKind};
use crate::{
    access::{self, AccessFormat},
    balance::{hash_bytes, hash_ip, NoBackend},
    http::{
        chunked::{ChunkedDecoder, LAST_CHUNK},
        head::{self, Framing, Proto, RequestHead},
    },
    limit::{retry_after_secs, Verdict},
    shard::ProxyConn,
};

/// Largest upstream head buffer a spare exchange keeps (a larger one was for
/// an unusual request: that exchange is freed).
const SPARE_HEAD_MAX: usize = 4096;

impl ProxyShard {
    /// The access log's line for exchange `ex` of client `peer`, answered
    /// `status` after `took` ([`crate::access`]): `event` is `request`,
    /// `failed` (with `error`) or `upgraded`.
    pub(super) fn log_access(
        &mut self,
        peer: std::net::SocketAddr,
        ex: &Exchange,
        status: u16,
        took: std::time::Duration,
        event: &'static str,
        error: Option<&str>,
    ) {
        let ms = took.as_millis() as u64;
        if self.access.format() == AccessFormat::Default {
            match (event, error) {
                (_, Some(why)) => info!(target: "shardline_proxy::access", client = %peer,
                    method = %ex.method(), target = %ex.target(), status, ms, error = why,
                    "request failed"),
                ("upgraded", None) => info!(target: "shardline_proxy::access", client = %peer,
                    method = %ex.method(), target = %ex.target(), status, backend = ex.backend,
                    ms, "upgraded"),
                _ => info!(target: "shardline_proxy::access", client = %peer,
                    method = %ex.method(), target = %ex.target(), status, backend = ex.backend,
                    ms, "request"),
            }
            return;
        }
        let pool = (ex.gen == self.gen)
            .then(|| self.config.pools.get(ex.pool))
            .flatten();
        let chosen = ex.dispatched || ex.upstream.is_some();
        let entry = access::Entry {
            client: peer,
            method: ex.method(),
            target: ex.target(),
            minor: ex.client_minor,
            status,
            bytes: ex.resp_bytes,
            referer: access::header(&ex.upstream_head, "referer"),
            user_agent: access::header(&ex.upstream_head, "user-agent"),
            pool: pool.map(|p| p.name.as_str()),
            backend: pool
                .filter(|_| chosen)
                .and_then(|p| p.backends.get(ex.backend))
                .map(|b| b.address),
            duration_ms: ms,
            event,
            error,
        };
        self.access.write(&entry);
    }
}

impl Exchange {
    /// The request method, as sent.
    pub(super) fn method(&self) -> &str {
        let m = self
            .upstream_head
            .get(..self.method_len)
            .unwrap_or_default();
        std::str::from_utf8(m).unwrap_or_default()
    }

    /// The request target, as sent.
    pub(super) fn target(&self) -> &str {
        let from = self.method_len + 1;
        let t = self
            .upstream_head
            .get(from..from + self.target_len)
            .unwrap_or_default();
        std::str::from_utf8(t).unwrap_or_default()
    }
}

impl ProxyShard {
    /// Ends client `ck`'s connection: answers `status` first if no response has
    /// started (`None`: just close), drops the exchange's upstream.
    pub(super) fn fail(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        ck: usize,
        status: Option<u16>,
        why: &str,
    ) {
        self.fail_with(ctx, ck, status, "", why);
    }

    /// [`fail`](Self::fail), the answer carrying `extra` header lines (each
    /// ending in CR LF).
    pub(super) fn fail_with(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        ck: usize,
        status: Option<u16>,
        extra: &str,
        why: &str,
    ) {
        self.cancel_head_timer(ctx, ck);
        let Some(c) = self.http.clients.get_mut(ck) else {
            return;
        };
        let ex = c.exchange.take();
        let conn = c.conn;
        let peer = c.peer;
        c.closing = true;
        let started = ex.as_ref().is_some_and(|e| e.resp_started);
        let head_at = ex.as_ref().map(|e| e.started).or(c.head_at.take());
        if let (Some(status), false) = (status, started) {
            let _ = ctx.send(conn, &head::error_response_with(status, extra));
            self.stats.response(status, head_at.map(|t| t.elapsed()));
        } else if let Some(ex) = ex.as_ref().filter(|e| e.resp_started) {
            // The response had begun: it counts as sent, cut short.
            self.stats.response(ex.status, Some(ex.started.elapsed()));
        }
        ctx.close(conn);
        if let Some(ex) = ex {
            self.cancel(ctx, ex.timer);
            self.cancel(ctx, ex.expect_timer);
            self.cancel(ctx, ex.body_timer);
            let status = status.filter(|_| !started).unwrap_or(ex.status);
            let took = ex.started.elapsed();
            self.log_access(peer, &ex, status, took, "failed", Some(why));
            if let Some(u) = ex.upstream {
                self.drop_upstream(ctx, u);
            }
        } else {
            debug!(client = %peer, ?status, why, "client refused");
        }
    }

    /// Moves client `ck` forward as far as it can go now.
    pub(super) fn pump(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ck: usize) {
        for _ in 0..10_000 {
            let Some(c) = self.http.clients.get_mut(ck) else {
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
            if ex.queued {
                // Waiting for a backend below its cap (see `queue`).
                break;
            }
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
            if !ex.req_done && matches!(ex.resp, Resp::Done) {
                // Answered before the whole body was sent (a rejection, or an
                // Expect: 100-continue refused): the response said
                // `Connection: close`; the rest of the body is not forwarded.
                self.finish_exchange(ctx, ck);
                continue;
            }
            if !ex.req_done {
                if c.upstream_full {
                    break;
                }
                match self.forward_body(ctx, ck) {
                    Ok(true) => {}
                    Ok(false) => {
                        if self.http.clients.get(ck).is_some_and(|c| c.eof) {
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
    pub(super) fn next_request(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ck: usize) -> bool {
        if self.http.draining && !self.http.clients.get(ck).is_some_and(|c| c.last_call) {
            // Shutting down: no request starts (the framework closes the client).
            return false;
        }
        let limits = self.config.limits.clone();
        let timeouts = self.config.timeouts.clone();
        let Some(c) = self.http.clients.get_mut(ck) else {
            return false;
        };
        // Empty lines before a request line are ignored (RFC 9112 §2.2).
        let skip = c.buf.chunks(2).take_while(|p| *p == b"\r\n").count() * 2;
        c.buf.drain(..skip);
        // The head borrows the buffer: it is taken out while the request starts.
        let buf = std::mem::take(&mut c.buf);
        let parsed = head::parse_request(&buf, limits.max_header_bytes, limits.max_headers);
        let started = match &parsed {
            Ok(Some(req)) => {
                c.head_at = Some(Instant::now());
                self.cancel_head_timer(ctx, ck);
                self.begin(ctx, ck, req);
                Some(req.len)
            }
            _ => None,
        };
        let parsed = parsed.map(|r| r.is_some());
        let Some(c) = self.http.clients.get_mut(ck) else {
            return false;
        };
        c.buf = buf;
        if let Some(len) = started {
            c.buf.drain(..len);
            return true;
        }
        match parsed {
            Ok(true) => true,
            Ok(false) => {
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
                    Some((_, was_idle)) => was_idle && !idle,
                };
                if rearm {
                    let serial = c.serial;
                    self.cancel_head_timer(ctx, ck);
                    let ms = if idle {
                        timeouts.client_idle_ms
                    } else {
                        timeouts.client_header_ms
                    };
                    let id = self.timer(ctx, ms, TimerKind::Head { client: ck, serial });
                    if let Some(c) = self.http.clients.get_mut(ck) {
                        c.head_timer = Some((id, idle));
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
    pub(super) fn begin(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        ck: usize,
        req: &RequestHead<'_>,
    ) {
        let path = req.target.split('?').next().unwrap_or("/");
        let listener = self.http.clients.get(ck).map_or(usize::MAX, |c| c.listener);
        // Every request counts against the client's rate limit (even one
        // answered 404 or 413 below); one over it is answered 429 once it is
        // an exchange, so that the access log has it.
        let verdict = match self.http.clients.get(ck).map(|c| c.peer.ip()) {
            Some(ip) => self.rate_check(listener, ip),
            None => Verdict::Allow,
        };
        let Some(pool) = self.config.route(listener, req.host.as_deref(), path) else {
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
        let has_body = body.is_some();
        let Some(c) = self.http.clients.get_mut(ck) else {
            return;
        };
        // The backend's own Host is only used when an HTTP/1.0 client sent none.
        let backend_host = self.config.pools[pool].backends[0].address;
        // A finished exchange's box and head buffer, if one is spare.
        let mut spare = self.http.spare_exchanges.pop();
        let mut upstream_head = spare
            .as_mut()
            .map(|e| std::mem::take(&mut e.upstream_head))
            .unwrap_or_default();
        let proto = if c.https { Proto::Https } else { Proto::Http };
        head::upstream_request_into(&mut upstream_head, req, &c.peer_ip, proto, backend_host);
        let header_key = self.config.pools[pool]
            .hash_header
            .as_deref()
            .and_then(|name| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| hash_bytes(h.value))
            });
        let key = header_key.unwrap_or_else(|| hash_ip(c.peer.ip()));
        let idempotent = matches!(
            req.method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        );
        let ex = Exchange {
            serial,
            gen: self.gen,
            head_request: req.method == "HEAD",
            method_len: req.method.len(),
            target_len: req.target.len(),
            client_minor: req.minor,
            idempotent,
            // A last call (see `Client::last_call`) is the client's last request.
            close: req.close || std::mem::take(&mut c.last_call),
            expect_continue: req.expect_continue,
            upgrade: req.upgrade.is_some(),
            continue_sent: false,
            expect_timer: None,
            body_timer: None,
            body_progress: Instant::now(),
            pool,
            backend: 0,
            key,
            tried: Vec::new(),
            upstream_head,
            replay: (idempotent && body.is_some()).then(Vec::new),
            body,
            body_sent: 0,
            dispatched: false,
            queued: false,
            upstream: None,
            ready: false,
            reused: false,
            attempts: 0,
            retried: false,
            req_done: false,
            resp: Resp::Head,
            resp_started: false,
            resp_bytes: 0,
            status: 0,
            upstream_reusable: false,
            timer: None,
            started: c.head_at.unwrap_or_else(Instant::now),
        };
        c.exchange = Some(match spare {
            Some(mut b) => {
                *b = ex;
                b
            }
            None => Box::new(ex),
        });
        if let Verdict::Refuse(wait) = verdict {
            // Answered and closed: a client over its limit is hammering, and
            // a reconnect costs it more than it costs the proxy. Its
            // pipelined requests are dropped unanswered.
            let extra = format!("Retry-After: {}\r\n", retry_after_secs(wait));
            return self.fail_with(ctx, ck, Some(429), &extra, "rate limited");
        }
        if has_body {
            // The body's progress deadline runs from now until it is all sent.
            let ms = self.config.timeouts.client_body_ms;
            self.arm_body(ctx, ck, ms);
        }
    }

    /// Gives the exchange an upstream: an idle pooled connection to the backend
    /// the balancer picks, or a new connect (bounded attempts, then 502).
    pub(super) fn dispatch(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ck: usize) {
        let max = self.config.limits.connect_attempts;
        loop {
            let Some(c) = self.http.clients.get_mut(ck) else {
                return;
            };
            let serial = c.serial;
            let Some(ex) = c.exchange.as_mut() else {
                return;
            };
            if ex.gen != self.gen {
                // A retry after a reload: its pool and the backends it tried
                // are indices of the old configuration.
                return self.fail(ctx, ck, Some(502), "configuration reloaded during a retry");
            }
            let pool = ex.pool;
            let backends = self.config.pools[pool].backends.len() as u32;
            if ex.attempts >= max.min(backends.max(1)).max(1) {
                return self.fail(ctx, ck, Some(502), "no backend reachable");
            }
            ex.dispatched = true;
            let active = self.http.pool.active(pool);
            // Backends at their connection cap are skipped as if tried; if
            // that leaves none, the request waits in the pool's queue.
            let full = crate::pools::full_backends(
                &self.config.pools[pool],
                self.http.shards,
                active,
                &ex.tried,
            );
            let picked = if full.is_empty() {
                self.pools.pick(pool, active, ex.key, &ex.tried)
            } else {
                let skip: Vec<usize> = ex.tried.iter().chain(&full).copied().collect();
                self.pools.pick(pool, active, ex.key, &skip)
            };
            let backend = match picked {
                Ok(b) => b,
                Err(NoBackend::AllDown) => {
                    return self.fail(ctx, ck, Some(503), "every backend is down")
                }
                Err(NoBackend::AllTried) if !full.is_empty() => {
                    ex.dispatched = false;
                    return self.enqueue(ctx, ck, pool);
                }
                Err(NoBackend::AllTried) => {
                    return self.fail(ctx, ck, Some(502), "no backend reachable")
                }
            };
            ex.backend = backend;
            // An upgrade may turn its connection into a tunnel: a fresh one.
            let pooled = match ex.upgrade {
                true => None,
                false => self.http.pool.take_idle(pool, backend, (ck, serial)),
            };
            if let Some(u) = pooled {
                ex.upstream = Some(u);
                ex.reused = true;
                self.upstream_ready(ctx, ck);
                return;
            }
            ex.attempts += 1;
            let addr = self.config.pools[pool].backends[backend].address;
            // The connection's state names its record, inserted right below.
            let role = ProxyConn::http(Role::Upstream(self.http.pool.next_key()));
            let tls = self.config.pools[pool].tls.as_ref();
            match crate::tls::connect_upstream(ctx, tls, addr, role) {
                Ok(conn) => {
                    let key = self.http.pool.insert_connecting(
                        conn,
                        pool,
                        backend,
                        (ck, serial),
                        Instant::now(),
                    );
                    if let Some(ex) = self
                        .http
                        .clients
                        .get_mut(ck)
                        .and_then(|c| c.exchange.as_mut())
                    {
                        ex.upstream = Some(key);
                        ex.reused = false;
                        ex.ready = false;
                    }
                    let ms = self.config.timeouts.connect_ms;
                    self.arm_exchange(ctx, ck, ms);
                    return;
                }
                Err(e) => {
                    debug!(backend = %addr, error = %e, "cannot start connect");
                    if let Some(ex) = self
                        .http
                        .clients
                        .get_mut(ck)
                        .and_then(|c| c.exchange.as_mut())
                    {
                        ex.tried.push(backend);
                    }
                }
            }
        }
    }

    /// The exchange's upstream is connected: send the head, start the clock.
    pub(super) fn upstream_ready(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ck: usize) {
        let Some(c) = self.http.clients.get_mut(ck) else {
            return;
        };
        let (peer, client) = (c.peer, c.conn);
        let Some(ex) = c.exchange.as_mut() else {
            return;
        };
        let Some(u) = ex.upstream else { return };
        let Some(up) = self.http.pool.get(u) else {
            return;
        };
        ex.ready = true;
        // A new connection of a pool with send_proxy_protocol starts with the
        // client's header (such connections are never pooled, so a reused
        // one cannot be another client's).
        let version = (!ex.reused && ex.gen == self.gen)
            .then(|| self.config.pools.get(ex.pool))
            .flatten()
            .and_then(|p| p.send_proxy_protocol);
        if let Some(v) = version {
            let header = crate::pools::proxy_header(v, peer, ctx.local_addr(client));
            let _ = ctx.send(up.conn, &header);
        }
        let _ = ctx.send(up.conn, &ex.upstream_head);
        // A retry: the body sent to the upstream that died goes again first.
        if let Some(body) = ex.replay.as_ref().filter(|b| !b.is_empty()) {
            let _ = ctx.send(up.conn, body);
        }
        if ex.body.is_none() {
            ex.req_done = true;
        }
        let expect = ex.expect_continue && !ex.req_done && !ex.continue_sent;
        if ex.req_done {
            let ms = self.config.timeouts.backend_response_ms;
            self.arm_exchange(ctx, ck, ms);
        } else {
            // The response deadline starts once the body is all sent (in
            // `forward_body`); until then the body timer judges any stall, so a
            // client slow with its body never counts against the backend. The
            // body's clock restarts: the client may have been paused meanwhile.
            ex.body_progress = Instant::now();
            let connect = ex.timer.take();
            self.cancel(ctx, connect);
        }
        if expect {
            self.arm_expect(ctx, ck);
        }
    }

    /// Arms the exchange's `Expect: 100-continue` fallback: the proxy sends the
    /// 100 itself if the backend says nothing within `expect_continue_ms`.
    fn arm_expect(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ck: usize) {
        let Some(c) = self.http.clients.get_mut(ck) else {
            return;
        };
        let serial = c.serial;
        let Some(ex) = c.exchange.as_mut() else {
            return;
        };
        let (old, exchange) = (ex.expect_timer.take(), ex.serial);
        self.cancel(ctx, old);
        let ms = self.config.timeouts.expect_continue_ms;
        let kind = TimerKind::Expect {
            client: ck,
            serial,
            exchange,
        };
        let t = self.timer(ctx, ms, kind);
        if let Some(ex) = self
            .http
            .clients
            .get_mut(ck)
            .and_then(|c| c.exchange.as_mut())
        {
            ex.expect_timer = Some(t);
        }
    }

    /// Streams request body bytes from the client's buffer to the upstream.
    /// `Ok(true)`: the body is complete.
    pub(super) fn forward_body(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        ck: usize,
    ) -> Result<bool, (u16, String)> {
        let max_body = self.config.limits.max_body_bytes;
        let Some(c) = self.http.clients.get_mut(ck) else {
            return Ok(false);
        };
        let Some(ex) = c.exchange.as_mut() else {
            return Ok(false);
        };
        let Some(up) = ex.upstream.and_then(|u| self.http.pool.get(u)) else {
            return Ok(false);
        };
        let upconn = up.conn;
        let done = match ex.body.as_mut() {
            None => true,
            Some(Body::Length(remaining)) => {
                let n = (*remaining).min(c.buf.len() as u64) as usize;
                if n > 0 {
                    let _ = ctx.send(upconn, &c.buf[..n]);
                    keep_for_replay(&mut ex.replay, &c.buf[..n]);
                    c.buf.drain(..n);
                    *remaining -= n as u64;
                    ex.body_sent += n as u64;
                }
                *remaining == 0
            }
            Some(Body::Chunked(decoder)) => {
                // Re-encoded into the shard's scratch buffer (no allocation per read).
                let out = &mut self.http.scratch;
                out.clear();
                let used = decoder
                    .decode(&c.buf, |data| head::push_chunk(out, data))
                    .map_err(|e| (400, e.to_string()))?;
                if decoder.total() > max_body {
                    return Err((413, "body over limit".into()));
                }
                if decoder.is_done() {
                    out.extend_from_slice(LAST_CHUNK);
                }
                if !out.is_empty() {
                    let _ = ctx.send(upconn, out);
                    keep_for_replay(&mut ex.replay, out);
                }
                c.buf.drain(..used);
                ex.body_sent = decoder.total();
                decoder.is_done()
            }
        };
        if done {
            ex.body = None;
            ex.req_done = true;
            let body_timer = ex.body_timer.take();
            self.cancel(ctx, body_timer);
            let ms = self.config.timeouts.backend_response_ms;
            self.arm_exchange(ctx, ck, ms);
        }
        Ok(done)
    }

    /// Both directions of the exchange are complete: pool or close the upstream,
    /// log, and close the client if it asked.
    pub(super) fn finish_exchange(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ck: usize) {
        let Some(c) = self.http.clients.get_mut(ck) else {
            return;
        };
        let Some(mut ex) = c.exchange.take() else {
            return;
        };
        c.served += 1;
        c.head_at = None;
        // One clock read for the histogram, the log and the idle pool.
        let now = Instant::now();
        let took = now.saturating_duration_since(ex.started);
        self.stats.response(ex.status, Some(took));
        let peer = c.peer;
        let close = ex.close || c.eof;
        let conn = c.conn;
        self.cancel(ctx, ex.timer);
        self.cancel(ctx, ex.expect_timer.take());
        self.cancel(ctx, ex.body_timer.take());
        self.log_access(peer, &ex, ex.status, took, "request", None);
        if let Some(u) = ex.upstream {
            // An upgrade request's connection is not pooled, whatever the
            // answer (the backend may still expect the protocol it offered).
            let reusable =
                ex.upstream_reusable && ex.req_done && !self.http.draining && !ex.upgrade;
            if reusable && self.http.pool.put_idle(u, now) {
                if let Some(up) = self.http.pool.get(u) {
                    ctx.resume_reading(up.conn);
                }
            } else {
                self.drop_upstream(ctx, u);
            }
        }
        if self.http.spare_exchanges.len() < super::SPARE_EXCHANGES
            && ex.upstream_head.capacity() <= SPARE_HEAD_MAX
        {
            // A later request reuses the box and its upstream head buffer;
            // a replay copy of the body (up to 64 KiB) is not kept.
            ex.upstream_head.clear();
            ex.replay = None;
            ex.body = None;
            self.http.spare_exchanges.push(ex);
        }
        if close {
            if let Some(c) = self.http.clients.get_mut(ck) {
                c.closing = true;
            }
            ctx.close(conn);
        } else if let Some(c) = self.http.clients.get_mut(ck) {
            if c.buf.is_empty() {
                // Idle until its next request: hold no input buffer meanwhile.
                c.buf = Vec::new();
            }
        }
    }

    /// Graceful shutdown: idle pooled upstreams are closed now, and so (by the
    /// framework) are clients with no exchange in flight. A client with one is
    /// kept open with its upstream (`Ctx::keep_open_on_shutdown`): the exchange
    /// finishes, its response carries `Connection: close` (if its head was not
    /// sent yet), then the client is closed and its upstream too; pipelined
    /// requests behind it are never started. The shutdown deadline still
    /// closes whatever has not finished.
    pub(crate) fn http_shutdown(&mut self, ctx: &mut Ctx<'_, ProxyShard>) {
        self.http.draining = true;
        for conn in self.http.pool.drain_idle() {
            ctx.close(conn);
        }
        // After a handover (an upgrade) the clients can reconnect at once to the
        // new process: rather than closed under a request that may be on its
        // way, an idle client is kept for one more request, answered with
        // `Connection: close` (its idle timeout or the shutdown deadline closes
        // it if none comes).
        let gentle = ctx.listeners_handed_over();
        for (_, c) in self.http.clients.iter_mut() {
            if c.closing {
                continue;
            }
            let Some(ex) = c.exchange.as_mut() else {
                if gentle {
                    c.last_call = true;
                    ctx.keep_open_on_shutdown(c.conn);
                }
                continue;
            };
            ex.close = true;
            ctx.keep_open_on_shutdown(c.conn);
            if let Some(up) = ex.upstream.and_then(|u| self.http.pool.get(u)) {
                ctx.keep_open_on_shutdown(up.conn);
            }
        }
    }
}

/// Appends body bytes just sent to the replay copy, or gives the copy up once
/// it would pass [`REPLAY_MAX`](super::REPLAY_MAX).
fn keep_for_replay(replay: &mut Option<Vec<u8>>, sent: &[u8]) {
    if let Some(r) = replay {
        if r.len() + sent.len() > super::REPLAY_MAX {
            *replay = None;
        } else {
            r.extend_from_slice(sent);
        }
    }
}
