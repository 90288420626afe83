//! Response bytes from an upstream, and an upstream that goes away mid-exchange.

use shardline::{ConnId, Ctx};
use tracing::debug;

use super::{ProxyShard, Resp, Role};
use crate::http::{
    chunked::{ChunkedDecoder, LAST_CHUNK},
    head::{self, Framing, Persistence},
    pool::UpState,
};

impl ProxyShard {
    /// Response bytes from upstream `u`. Returns how many were consumed (less
    /// only inside an incomplete response head).
    pub(super) fn on_response_data(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        u: usize,
        data: &[u8],
    ) -> usize {
        let Some(up) = self.http.pool.get(u) else {
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
            let Some(c) = self.http.clients.get_mut(ck).filter(|c| c.serial == serial) else {
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
                            if !ex.upgrade {
                                self.fail(ctx, ck, Some(502), "backend switched protocols");
                                return data.len();
                            }
                            let out = &mut self.http.scratch;
                            if !head::switching_response_into(out, &h) {
                                let why = "101 without an Upgrade protocol";
                                self.fail(ctx, ck, Some(502), why);
                                return data.len();
                            }
                            let _ = ctx.send(client, out);
                            // What came behind the 101's head is the new
                            // protocol's: the client's, right behind the head.
                            if off < data.len() {
                                let _ = ctx.send(client, &data[off..]);
                            }
                            self.upgrade(ctx, ck, u);
                            return data.len();
                        }
                        if h.status == 100 {
                            // The backend's own 100 replaces the proxy's fallback;
                            // one the proxy already sent is not repeated.
                            if let Some(id) = ex.expect_timer.take() {
                                ctx.cancel_timer(id);
                            }
                            if std::mem::replace(&mut ex.continue_sent, true) {
                                continue;
                            }
                            // The client is told to send its body: its clock starts.
                            ex.body_progress = std::time::Instant::now();
                        }
                        if ex.client_minor == 1 {
                            let out = &mut self.http.scratch;
                            head::client_response_into(
                                out,
                                &h,
                                Framing::None,
                                Persistence::Default,
                            );
                            let _ = ctx.send(client, out);
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
                    let ok = h.status < 500;
                    self.health
                        .passive(ctx, &mut self.pools, ex.gen, ex.pool, ex.backend, ok);
                    ex.upstream_reusable = h.reusable;
                    let out = &mut self.http.scratch;
                    let persistence = if ex.close {
                        Persistence::Close
                    } else if ex.client_minor == 0 {
                        Persistence::KeepAlive
                    } else {
                        Persistence::Default
                    };
                    head::client_response_into(out, &h, to_client, persistence);
                    let _ = ctx.send(client, out);
                    for id in [ex.timer.take(), ex.expect_timer.take()]
                        .into_iter()
                        .flatten()
                    {
                        ctx.cancel_timer(id);
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
                        ex.resp_bytes += n as u64;
                        *remaining -= n as u64;
                        off += n;
                        if *remaining == 0 {
                            ex.resp = Resp::Done;
                        }
                    }
                    Framing::Chunked => {
                        // Into the shard's scratch buffer: no allocation per read.
                        let out = &mut self.http.scratch;
                        out.clear();
                        let reencode = *to_client == Framing::Chunked;
                        let used = match decoder.decode(rest, |d| {
                            if reencode {
                                head::push_chunk(out, d)
                            } else {
                                out.extend_from_slice(d)
                            }
                        }) {
                            Ok(n) => n,
                            Err(e) => {
                                let _ = ctx.send(client, out);
                                self.fail(ctx, ck, Some(502), &format!("backend body: {e}"));
                                return data.len();
                            }
                        };
                        if decoder.is_done() && reencode {
                            out.extend_from_slice(LAST_CHUNK);
                        }
                        let _ = ctx.send(client, out);
                        ex.resp_bytes += out.len() as u64;
                        off += used;
                        if decoder.is_done() {
                            ex.resp = Resp::Done;
                        }
                    }
                    _ => {
                        let _ = ctx.send(client, rest);
                        ex.resp_bytes += rest.len() as u64;
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
    pub(super) fn upstream_lost(&mut self, ctx: &mut Ctx<'_, ProxyShard>, u: usize, eof: bool) {
        let Some(up) = self.http.pool.get(u) else {
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
        let Some(c) = self.http.clients.get_mut(ck).filter(|c| c.serial == serial) else {
            return;
        };
        let Some(ex) = c.exchange.as_mut().filter(|e| e.upstream == Some(u)) else {
            return;
        };
        let backends = self
            .config
            .pools
            .get(ex.pool)
            .map_or(0, |p| p.backends.len()) as u32;
        let max_attempts = self.config.limits.connect_attempts.min(backends).max(1);
        let Some(ex) = Some(ex) else {
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
                    && ex.idempotent
                    && (ex.body_sent == 0 || ex.replay.is_some())
                    && ((ex.reused && !ex.retried) || ex.attempts < max_attempts) =>
            {
                if ex.reused {
                    // A pooled connection the backend had closed: try again, fresh.
                    ex.retried = true;
                    debug!(client = %c.peer, "pooled upstream connection was dead; retrying");
                } else {
                    // A fresh connection died before answering: the backend is
                    // failing; an idempotent request goes to another one.
                    ex.tried.push(ex.backend);
                    debug!(client = %c.peer, "upstream died before answering; retrying elsewhere");
                    self.health
                        .passive(ctx, &mut self.pools, ex.gen, ex.pool, ex.backend, false);
                }
                let t = ex.timer.take();
                ex.dispatched = false;
                ex.ready = false;
                ex.req_done = false;
                self.cancel(ctx, t);
                // The backpressure, if any, was the dead upstream's.
                if let Some(c) = self.http.clients.get_mut(ck) {
                    c.upstream_full = false;
                }
                self.pump(ctx, ck);
            }
            Resp::Head => {
                let (pool, backend, gen) = (ex.pool, ex.backend, ex.gen);
                self.health
                    .passive(ctx, &mut self.pools, gen, pool, backend, false);
                self.fail(ctx, ck, Some(502), "backend closed before responding")
            }
            _ => self.fail(ctx, ck, None, "backend closed mid-response"),
        }
    }

    /// A connection's EOF, once held input was presented.
    pub(super) fn eof_now(&mut self, ctx: &mut Ctx<'_, ProxyShard>, conn: ConnId, role: Role) {
        match self.http.live(conn, role) {
            Some(Role::Client(ck)) => {
                if let Some(c) = self.http.clients.get_mut(ck) {
                    c.eof = true;
                }
                self.pump(ctx, ck);
            }
            Some(Role::Upstream(u)) => self.upstream_lost(ctx, u, true),
            None => ctx.close(conn),
        }
    }
}
