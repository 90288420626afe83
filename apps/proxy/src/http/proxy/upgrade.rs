//! An exchange the backend answered `101 Switching Protocols`: the client and
//! its upstream leave the HTTP side and become a relaying L4 session
//! ([`crate::tcp`]).

use shardline::Ctx;

use super::ProxyShard;
use crate::{
    shard::ProxyConn,
    tcp::{Side, Tunnel},
};

impl ProxyShard {
    /// Client `ck`'s exchange got a 101 from upstream `u` (the head, and what
    /// came behind it, are already queued to the client): hands both
    /// connections to the L4 side. Client bytes read past the request head go
    /// to the upstream first; the client's FIN, if it came, after them.
    pub(super) fn upgrade(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ck: usize, u: usize) {
        self.cancel_head_timer(ctx, ck);
        let Some(c) = self.http.clients.try_remove(ck) else {
            return;
        };
        let Some(up) = self.http.pool.detach(u) else {
            // Not an exchange's upstream (cannot be: the caller had it).
            ctx.close(c.conn);
            return;
        };
        let Some(ex) = c.exchange else {
            ctx.close(c.conn);
            ctx.close(up.conn);
            return;
        };
        for t in [ex.timer, ex.expect_timer, ex.body_timer] {
            self.cancel(ctx, t);
        }
        let took = ex.started.elapsed();
        self.stats.response(101, Some(took));
        self.health
            .passive(ctx, &mut self.pools, ex.gen, ex.pool, ex.backend, true);
        self.log_access(c.peer, &ex, 101, took, "upgraded", None);
        let key = self.tcp_tunnel(
            ctx,
            Tunnel {
                client: c.conn,
                peer: c.peer,
                upstream: up.conn,
                pool: ex.pool,
                backend: ex.backend,
                gen: ex.gen,
                early: c.buf,
                client_eof: c.eof,
                upstream_full: c.upstream_full,
            },
        );
        // The client is another connection than the one whose callback this
        // is (the upstream's): its state is changed now; the upstream's once
        // the callback returns.
        if let Some(state) = ctx.conn_state(c.conn) {
            *state = ProxyConn::tcp(key, Side::Client);
        }
        self.http.retag = Some((up.conn, ProxyConn::tcp(key, Side::Upstream)));
    }
}
