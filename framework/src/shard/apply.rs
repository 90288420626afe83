//! Applying what handler callbacks asked for: registrations, connects, read
//! changes, notices and their callbacks, releases with `on_close`, due timers.

use std::time::Instant;

use tracing::{debug, warn};

use super::{
    conn::{Conn, ConnSocket, Phase},
    core::{Core, Notice, TimerPayload},
    dispatch::{connect_failed, guarded, present, with_state},
    recycle, Shard,
};
use crate::handler::{CloseReason, ConnId, Handler, TimerId};

impl<H: Handler> Shard<H> {
    /// Applies what callbacks asked for, until nothing more is pending (callbacks
    /// made here, like `on_close`, may ask for more).
    pub(super) fn apply(&mut self) {
        for _round in 0..64 {
            let mut did = false;
            // Before any release: a released slot may be reused once closed.
            for slot in self.core.fixed_shutdowns.drain(..) {
                self.driver.shutdown_fixed(slot);
            }
            for id in self.core.unread_checks.drain(..) {
                self.driver.query_unread(id);
            }
            let mut list = std::mem::take(&mut self.core.notices);
            for notice in list.drain(..) {
                did = true;
                self.notify(notice);
            }
            recycle(&mut self.core.notices, list);
            let mut list = std::mem::take(&mut self.core.to_release);
            for id in list.drain(..) {
                did = true;
                self.release(id);
            }
            recycle(&mut self.core.to_release, list);
            let mut list = std::mem::take(&mut self.core.to_register);
            for id in list.drain(..) {
                did = true;
                match self.register(id) {
                    Ok(true) => self.core.read_changes.push(id),
                    Ok(false) => {}
                    Err(e) => {
                        warn!(conn = %id, error = %e, "cannot register connection");
                        self.core.close_now(id, CloseReason::Io(e.kind()));
                    }
                }
            }
            recycle(&mut self.core.to_register, list);
            let mut list = std::mem::take(&mut self.core.to_connect);
            for (id, addr) in list.drain(..) {
                did = true;
                match self.register(id) {
                    Ok(true) => {
                        let fd = self.core.get(id).map_or(-1, |c| c.socket.raw_fd());
                        self.driver.connect(id, fd, addr);
                    }
                    Ok(false) => {}
                    Err(e) => self.fail_connect(id, e),
                }
            }
            recycle(&mut self.core.to_connect, list);
            let mut list = std::mem::take(&mut self.core.read_changes);
            for id in list.drain(..) {
                let Some(conn) = self.core.get_mut(id) else {
                    continue;
                };
                let want = conn.registered()
                    && !conn.eof()
                    && match conn.phase {
                        Phase::Connecting => false,
                        // A relay source is read by fills only.
                        Phase::Open => conn.reading() && conn.relay_out().is_none(),
                        // Read (and discard) until the peer's EOF.
                        Phase::Closing(_) => true,
                    };
                if want != conn.driver_reading() {
                    conn.set_driver_reading(want);
                    let fd = conn.socket.raw_fd();
                    self.driver.set_reading(id, fd, want);
                }
            }
            recycle(&mut self.core.read_changes, list);
            if !did {
                return;
            }
        }
        debug!("apply did not settle in 64 rounds; continuing next turn");
    }

    /// Registers `id` with the driver (false: it is gone). A driver that keeps
    /// direct descriptors takes an ordinary socket into its file table here;
    /// the fd is closed and the connection named by its slot from then on.
    fn register(&mut self, id: ConnId) -> std::io::Result<bool> {
        let Core {
            conns, listeners, ..
        } = &mut self.core;
        let Some(conn) = conns
            .get_mut(id.index as usize)
            .filter(|c| c.generation == id.generation)
        else {
            return Ok(false);
        };
        let slot = self.driver.add_conn(id, conn.socket.sock())?;
        conn.set_registered(true);
        if let Some(slot) = slot {
            let old = std::mem::replace(&mut conn.socket, ConnSocket::Fixed(slot));
            // Inbound on a wildcard listener: which local address the client
            // reached can only be asked of the fd, now or never.
            let wildcard = listeners
                .get(usize::from(conn.listener))
                .is_some_and(|l| l.addr.ip().is_unspecified());
            if let (true, ConnSocket::Fd(s)) = (wildcard, &old) {
                if let Some(local) = s.local_addr().ok().and_then(|a| a.as_socket()) {
                    self.core.fixed_locals.insert(id.index, local);
                }
            }
            drop(old);
        }
        Ok(true)
    }

    /// Gives back what a released connection held in the driver.
    fn unregister(&mut self, id: ConnId, conn: &Conn) {
        if conn.registered() {
            self.driver.remove_conn(id, conn.socket.raw_fd());
        }
        if let Some(slot) = conn.socket.fixed() {
            self.driver.close_fixed(slot);
        }
    }

    pub(super) fn notify(&mut self, notice: Notice) {
        let Shard {
            core,
            handler,
            mail,
            app,
            ..
        } = self;
        match notice {
            Notice::Backpressure(id) => {
                if core.get(id).is_some_and(|c| !c.is_closing()) {
                    with_state(core, mail, app, handler, id, |h, ctx, st| {
                        h.on_backpressure(ctx, id, st)
                    });
                }
            }
            Notice::Drained(id) => {
                if core.get(id).is_some_and(|c| !c.is_closing()) {
                    with_state(core, mail, app, handler, id, |h, ctx, st| {
                        h.on_drained(ctx, id, st)
                    });
                }
            }
            Notice::Eof(id) => {
                let Some(conn) = core.get_mut(id).filter(|c| !c.is_closing()) else {
                    return;
                };
                if conn.unpresented() {
                    // Bytes that came in while reading was paused have not been
                    // offered yet: the end of the stream waits for them (resume).
                    conn.set_eof_deferred(true);
                    return;
                }
                with_state(core, mail, app, handler, id, |h, ctx, st| {
                    h.on_eof(ctx, id, st)
                });
            }
            Notice::Redeliver(id) => present(core, mail, app, handler, id, &[]),
        }
    }

    /// A connect that never completed: no `on_close`, the handler hears `on_connect`.
    pub(super) fn fail_connect(&mut self, id: ConnId, err: std::io::Error) {
        let Some(conn) = self.core.remove(id) else {
            return;
        };
        self.unregister(id, &conn);
        drop(conn);
        let Shard {
            core,
            handler,
            mail,
            app,
            ..
        } = self;
        connect_failed(core, mail, app, handler, id, err);
    }

    /// Ends the relays `id` takes part in (it is being released): their ops are
    /// cancelled before the pipe may be closed.
    pub(super) fn end_relays(&mut self, id: ConnId) {
        let Some(conn) = self.core.get(id) else {
            return;
        };
        for key in [conn.relay_out(), conn.relay_in()]
            .into_iter()
            .flatten()
            .map(|k| k as usize)
        {
            let Some(r) = self.core.relays.get(key) else {
                continue;
            };
            let (from, to, filling) = (r.from, r.to, r.filling);
            if filling {
                self.driver.cancel_splice(from);
            }
            if self.core.get(to).is_some_and(|t| t.draining()) {
                self.driver.cancel_splice(to);
            }
            self.core.relay_detach(key);
        }
    }

    pub(super) fn release(&mut self, id: ConnId) {
        self.end_relays(id);
        self.core.tls_handshake_over(id);
        let Some(conn) = self.core.remove(id) else {
            return;
        };
        if let Some(key) = conn.linger() {
            self.core.timers.cancel(key);
        }
        self.unregister(id, &conn);
        let reason = match &conn.phase {
            Phase::Closing(r) => r.clone(),
            _ => CloseReason::Closed,
        };
        let was_live = conn.live();
        let inbound = conn.inbound();
        // An outbound TLS connection that failed in its handshake: the handler
        // hears it in `on_connect` (it closed it itself: nothing, as for a plain
        // connect).
        let failed_handshake = !was_live
            && !inbound
            && conn.tls.is_some()
            && matches!(reason, CloseReason::Io(_) | CloseReason::Tls);
        drop(conn); // closes the socket
        let m = self.core.metrics();
        m.conns_closed.add(1);
        if inbound {
            m.conns_inbound_closed.add(1);
        }
        if was_live {
            m.conns_live.sub(1);
        }
        debug!(conn = %id, %reason, "connection closed");
        if failed_handshake {
            let kind = match reason {
                CloseReason::Io(kind) => kind,
                _ => std::io::ErrorKind::InvalidData,
            };
            let err = std::io::Error::new(kind, format!("TLS handshake failed: {reason}"));
            let Shard {
                core,
                handler,
                mail,
                app,
                ..
            } = self;
            connect_failed(core, mail, app, handler, id, err);
            return;
        }
        let state = self.app.take(id);
        if let (true, Some(state)) = (was_live, state) {
            let Shard {
                core,
                handler,
                mail,
                app,
                ..
            } = self;
            guarded(core, mail, app, None, |ctx| {
                handler.on_close(ctx, id, state, &reason)
            });
        }
    }

    pub(super) fn fire_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        self.core.timers.expire(Instant::now(), &mut fired);
        for (key, payload) in fired.drain(..) {
            match payload {
                TimerPayload::User(slot) => {
                    let Shard {
                        core,
                        handler,
                        mail,
                        app,
                        ..
                    } = self;
                    let Some(payload) = app.fire_timer(slot) else {
                        continue;
                    };
                    guarded(core, mail, app, None, |ctx| {
                        handler.on_timer(ctx, TimerId(key), payload)
                    });
                }
                TimerPayload::TlsHandshake(id) => {
                    let Some(tls) = self.core.get_mut(id).and_then(|c| c.tls.as_mut()) else {
                        continue;
                    };
                    tls.timer = None;
                    if tls.handshaking {
                        debug!(conn = %id, "TLS handshake timed out; closing");
                        self.core.metrics().tls_timeouts.add(1);
                        self.core
                            .close_now(id, CloseReason::Io(std::io::ErrorKind::TimedOut));
                    }
                }
                TimerPayload::Preamble(id) => {
                    let Some(pending) = self.core.get_mut(id).and_then(|c| c.preamble_mut()) else {
                        continue;
                    };
                    pending.timer = None;
                    debug!(conn = %id, "no whole PROXY header in time; closing");
                    self.core.metrics().proxy_headers_failed.add(1);
                    self.core
                        .close_now(id, CloseReason::Io(std::io::ErrorKind::TimedOut));
                }
                TimerPayload::Linger(id) => {
                    if let Some(conn) = self.core.get_mut(id) {
                        conn.set_linger(None);
                        debug!(conn = %id, "close linger expired; closing without flush");
                        self.core.close_now(id, CloseReason::Closed);
                    }
                }
            }
            self.apply();
        }
        self.fired = fired;
    }
}
