//! Accepting and shutting down: the connection cap, exclusive listeners, and the
//! shutdown phases (stop listening, `on_shutdown`, drain backlogs, close).

use std::time::Instant;

use tracing::info;

use super::{
    dispatch::{accepted, guarded},
    driver::Accepted,
    Shard, ACCEPT_BUDGET,
};
use crate::{
    accept::Handed,
    handler::{CloseReason, Handler},
};

impl<H: Handler> Shard<H> {
    pub(super) fn begin_shutdown(&mut self) {
        let shard = self.core.shard.0;
        info!(
            shard,
            conns = self.core.conns.len(),
            timers = self.core.timers.len(),
            "shard shutting down"
        );
        self.shutdown_deadline = Some(Instant::now() + self.shutdown_timeout);
        self.core.shutting_down = true;
        self.accept.stop(&mut *self.driver);
        self.shutdown.stopped_listening();
        {
            let Shard {
                core,
                handler,
                mail,
                app,
                ..
            } = self;
            guarded(core, mail, app, None, |ctx| handler.on_shutdown(ctx));
        }
        for id in self.core.ids() {
            if !self.core.get(id).is_some_and(|c| c.kept_at_shutdown()) {
                self.core.close_graceful(id, CloseReason::Shutdown);
            }
        }
        self.apply();
    }

    /// Shutdown phase 2, once every participant stopped listening: take what the
    /// kernel already queued, serve it (it is closed gracefully at once), close the
    /// listeners.
    pub(super) fn drain_listeners(&mut self) {
        let mut fds = std::mem::take(&mut self.accepted_fds);
        self.accept.drain_and_close(&mut fds);
        if !fds.is_empty() {
            info!(
                shard = self.core.shard.0,
                conns = fds.len(),
                "serving connections queued at shutdown"
            );
        }
        self.serve_accepted(fds);
        self.listeners_closed = true;
        self.apply();
    }

    /// The listeners were handed over to another process: stop accepting, serve
    /// what this shard's backlogs already held, close our descriptors (the
    /// sockets live on in the other process), and count in as released.
    pub(super) fn release_listeners(&mut self) {
        self.released = true;
        self.core.handed_over = true;
        let mut fds = std::mem::take(&mut self.accepted_fds);
        self.accept.release(&mut *self.driver, &mut fds);
        info!(
            shard = self.core.shard.0,
            queued = fds.len(),
            conns = self.core.conns.len(),
            "listeners handed over; no longer accepting"
        );
        self.serve_accepted(fds);
        self.shutdown.released_listeners();
        self.apply();
    }

    /// Accepts from exclusive listeners that reported connections, within budget
    /// and the connection cap.
    pub(super) fn accept_exclusive(&mut self) {
        if !self.accept.has_pending() {
            return;
        }
        let room = self
            .max_conns
            .map_or(ACCEPT_BUDGET, |max| max.saturating_sub(self.core.inbound))
            .min(ACCEPT_BUDGET);
        let mut fds = std::mem::take(&mut self.accepted_fds);
        self.accept.accept_pending(room, &mut fds);
        self.serve_accepted(fds);
        self.apply();
    }

    /// Hands accepted connections to the handler, then keeps the vector's
    /// memory for the next batch.
    fn serve_accepted(&mut self, mut fds: Vec<Handed>) {
        for (listener, fd) in fds.drain(..) {
            let Shard {
                core,
                handler,
                mail,
                app,
                listeners,
                ..
            } = self;
            let a = Accepted::Fd(fd);
            accepted(core, mail, app, handler, listeners, listener, a, false);
        }
        self.accepted_fds = fds;
    }

    /// Starts or stops accepting to match the connection cap.
    pub(super) fn update_accepting(&mut self) -> std::io::Result<()> {
        if let Some(max) = self.max_conns {
            let at_cap = self.core.inbound >= max;
            self.accept.set_at_cap(at_cap);
            if self.was_at_cap && !at_cap {
                // A handoff acceptor may be waiting for a shard with room.
                if let Some(bell) = &self.acceptor_bell {
                    bell.ring();
                }
            }
            self.was_at_cap = at_cap;
        }
        self.accept.update(&mut *self.driver, Instant::now())
    }
}
