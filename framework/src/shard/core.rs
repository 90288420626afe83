//! The part of a shard that handlers act on through `Ctx`: connections, timers,
//! counters, and the lists of work the loop applies to the driver after each
//! callback. Nothing here touches the driver or calls the handler.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use slab::Slab;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{
    conn::{Conn, ConnSocket, Phase},
    relay::{PipePool, Relay},
    timer::TimerWheel,
};
use crate::{
    error::SendError,
    handler::{CloseReason, ConnId, ShardId, TimerId},
    metrics::{Metrics, ShardMetrics},
    server::Limits,
};

/// What a timer is for.
#[derive(Debug, Clone)]
pub(crate) enum TimerPayload {
    /// Set by the handler: the key of its payload in `AppState::timers`.
    User(usize),
    /// A closing connection's deadline.
    Linger(ConnId),
    /// A TLS handshake's deadline.
    TlsHandshake(ConnId),
    /// A PROXY protocol header's deadline (`Handler::on_preamble`).
    Preamble(ConnId),
}

/// A callback the loop owes the handler, queued because handlers are never
/// re-entered from inside `Ctx`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Notice {
    Backpressure(ConnId),
    Drained(ConnId),
    Eof(ConnId),
    /// Bytes that arrived while reading was paused are waiting.
    Redeliver(ConnId),
}

/// Shard state that handlers reach through `Ctx`.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) shard: ShardId,
    pub(crate) shards: usize,
    pub(crate) metrics: Metrics,
    pub(crate) limits: Limits,
    pub(crate) tcp_nodelay: bool,
    /// Write coalescing (`ServerBuilder::coalesce`): the hold and whether it
    /// counts from the last send (pacing); `None`: flush every turn.
    pub(crate) coalesce: Option<(Duration, bool)>,
    /// Pacing (`Coalesce::Pace`): the connections sent to in the current
    /// interval (their `paced` flag set), and when it ends. A connection with the
    /// flag holds new output until then; at the end every flag is cleared, so
    /// each connection gets at most one send per interval and one that was not
    /// sent to in it is written at once.
    pub(crate) paced: Vec<ConnId>,
    pub(crate) pace_ends: Option<Instant>,
    /// The earliest instant a connection held back by the flush delay is due.
    pub(crate) flush_due: Option<Instant>,
    /// Connection sockets are non-blocking (epoll) or blocking (io_uring).
    pub(crate) nonblocking_sockets: bool,
    /// Shutdown began: connections accepted from now on are closed gracefully.
    pub(crate) shutting_down: bool,
    /// The listeners were handed over to another process (an upgrade).
    pub(crate) handed_over: bool,
    pub(crate) conns: Slab<Conn>,
    /// Accepted connections in `conns` (what the connection cap counts).
    pub(crate) inbound: usize,
    generations: Vec<u32>,
    pub(crate) timers: TimerWheel<TimerPayload>,
    // Work for the loop to apply after the current callback.
    pub(crate) to_register: Vec<ConnId>,
    pub(crate) to_connect: Vec<(ConnId, SockAddr)>,
    pub(crate) read_changes: Vec<ConnId>,
    pub(crate) to_flush: Vec<ConnId>,
    pub(crate) to_release: Vec<ConnId>,
    pub(crate) notices: Vec<Notice>,
    /// Relays (`Ctx::splice_into`), linked from their connections.
    pub(crate) relays: Slab<Relay>,
    pub(crate) pipes: PipePool,
    /// Relay sources that may have a fill to issue.
    pub(crate) to_fill: Vec<ConnId>,
    /// Handshake slots and the waiting line of TLS connections.
    pub(crate) tls: super::tls::TlsShard,
    /// The server's listeners (for `Ctx::listeners`).
    pub(crate) listeners: Vec<crate::types::ListenerInfo>,
    /// Direct descriptors to half-close (`Driver::shutdown_fixed`), applied by
    /// the loop before any release (a slot is reused only after its close).
    pub(crate) fixed_shutdowns: Vec<u32>,
    /// Local addresses of direct descriptors accepted on wildcard listeners, by
    /// connection index (a direct descriptor cannot be asked; a listener bound
    /// to one address gives it instead, at no cost per connection).
    pub(crate) fixed_locals: std::collections::HashMap<u32, SocketAddr>,
    /// Closing direct descriptors to ask the driver about unread input.
    pub(crate) unread_checks: Vec<ConnId>,
}

impl Core {
    pub(crate) fn new(shard: ShardId, shards: usize, metrics: Metrics, limits: Limits) -> Core {
        Core {
            shard,
            shards,
            metrics,
            limits,
            tcp_nodelay: true,
            coalesce: None,
            paced: Vec::new(),
            pace_ends: None,
            flush_due: None,
            nonblocking_sockets: true,
            shutting_down: false,
            handed_over: false,
            conns: Slab::new(),
            inbound: 0,
            generations: Vec::new(),
            timers: TimerWheel::new(Duration::from_millis(1), 1024, Instant::now()),
            to_register: Vec::new(),
            to_connect: Vec::new(),
            read_changes: Vec::new(),
            to_flush: Vec::new(),
            to_release: Vec::new(),
            notices: Vec::new(),
            relays: Slab::new(),
            pipes: PipePool::new(0, 0),
            to_fill: Vec::new(),
            tls: super::tls::TlsShard::new(64, Duration::from_secs(10)),
            fixed_shutdowns: Vec::new(),
            fixed_locals: std::collections::HashMap::new(),
            unread_checks: Vec::new(),
            listeners: Vec::new(),
        }
    }

    pub(crate) fn metrics(&self) -> &ShardMetrics {
        &self.metrics.shards[self.shard.0]
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns
            .get(id.index as usize)
            .filter(|c| c.generation == id.generation)
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.index as usize)
            .filter(|c| c.generation == id.generation)
    }

    /// Adds a connection and returns its id.
    pub(crate) fn insert(
        &mut self,
        socket: ConnSocket,
        peer: Option<SocketAddr>,
        phase: Phase,
    ) -> ConnId {
        let index = self.conns.vacant_key();
        if self.generations.len() <= index {
            self.generations.resize(index + 1, 0);
        }
        let generation = self.generations[index];
        let conn = Conn::new(generation, socket, peer, phase);
        self.inbound += usize::from(conn.inbound());
        let key = self.conns.insert(conn);
        debug_assert_eq!(key, index);
        ConnId {
            index: index as u32,
            generation,
        }
    }

    /// Removes a connection from the slab; its id turns stale.
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        self.get(id)?;
        let conn = self.conns.remove(id.index as usize);
        if !self.fixed_locals.is_empty() {
            self.fixed_locals.remove(&id.index);
        }
        self.inbound -= usize::from(conn.inbound());
        let g = &mut self.generations[id.index as usize];
        *g = g.wrapping_add(1) & ConnId::GENERATION_MASK;
        Some(conn)
    }

    pub(crate) fn ids(&self) -> Vec<ConnId> {
        self.conns
            .iter()
            .map(|(i, c)| ConnId {
                index: i as u32,
                generation: c.generation,
            })
            .collect()
    }

    fn writable(&mut self, id: ConnId) -> Result<&mut Conn, SendError> {
        let conn = self.get_mut(id).ok_or(SendError::UnknownConn)?;
        if conn.is_closing() {
            return Err(SendError::Closing);
        }
        if conn.shut_pending() || conn.write_shut() {
            return Err(SendError::WriteShut);
        }
        Ok(conn)
    }

    /// Half-closes `id` once what is queued has been sent; reading goes on.
    pub(crate) fn shutdown_write(&mut self, id: ConnId) -> Result<(), SendError> {
        let conn = self.get_mut(id).ok_or(SendError::UnknownConn)?;
        if conn.is_closing() {
            return Err(SendError::Closing);
        }
        conn.set_shut_pending(true);
        self.continue_shutdown(id);
        Ok(())
    }

    /// Performs a requested half-close once the queue is empty and no send is in
    /// flight (a connection still connecting waits for its connect).
    pub(crate) fn continue_shutdown(&mut self, id: ConnId) {
        let piped = self.piped_into(id);
        let Some(conn) = self.get_mut(id) else { return };
        // A TLS handshake in progress finishes first (its end calls this again).
        if !conn.shut_pending()
            || conn.sending()
            || conn.phase != Phase::Open
            || conn.tls_handshaking()
        {
            return;
        }
        if conn.pending_len() > 0 || piped > 0 {
            self.list_flush(id);
            return;
        }
        if self.tls_close_notify(id) {
            self.list_flush(id);
            return;
        }
        let Some(conn) = self.get_mut(id) else { return };
        conn.set_shut_pending(false);
        if !conn.write_shut() {
            conn.set_write_shut(true);
            if let Some(slot) = shut_write(&conn.socket) {
                self.fixed_shutdowns.push(slot);
            }
        }
    }

    /// Presents `id`'s unconsumed input again after the current callback, without
    /// waiting for new bytes (no-op while paused: resuming presents it). Inside
    /// `on_data` the leftover is only stored once the callback returns, so this
    /// queues the notice and `present` finds out then whether anything is held.
    pub(crate) fn redeliver(&mut self, id: ConnId) {
        if let Some(conn) = self.get_mut(id) {
            if conn.phase == Phase::Open && conn.reading() {
                self.notices.push(Notice::Redeliver(id));
            }
        }
    }

    pub(crate) fn keep_open_on_shutdown(&mut self, id: ConnId) {
        if let Some(conn) = self.get_mut(id) {
            conn.set_kept_at_shutdown(true);
        }
    }

    pub(crate) fn local_addr(&self, id: ConnId) -> Option<SocketAddr> {
        let conn = self.get(id)?;
        if let Some(a) = conn.proxy().and_then(|h| h.addresses) {
            return Some(a.destination);
        }
        match &conn.socket {
            ConnSocket::Fd(s) => s.local_addr().ok().and_then(|a| a.as_socket()),
            // Known from the accept, else the listener's own address (None for
            // an outbound direct descriptor: its port is the kernel's choice).
            ConnSocket::Fixed(_) => self.fixed_locals.get(&id.index).copied().or_else(|| {
                self.listeners
                    .get(usize::from(conn.listener))
                    .map(|l| l.addr)
                    .filter(|a| !a.ip().is_unspecified())
            }),
        }
    }

    pub(crate) fn queue_copy(&mut self, id: ConnId, data: &[u8]) -> Result<(), SendError> {
        self.writable(id)?.send_queue().push_copy(data);
        self.after_queue(id)
    }

    pub(crate) fn queue_shared(&mut self, id: ConnId, buf: &Bytes) -> Result<(), SendError> {
        self.writable(id)?.send_queue().push_shared(buf);
        self.after_queue(id)
    }

    fn after_queue(&mut self, id: ConnId) -> Result<(), SendError> {
        let limits = self.limits;
        // A fixed delay counts from the oldest queued byte (pacing needs no
        // time per connection: see `Core::paced`).
        let delaying = matches!(self.coalesce, Some((_, false)));
        let Some(conn) = self.get_mut(id) else {
            return Err(SendError::UnknownConn);
        };
        let queued = conn.pending_len();
        if queued > limits.send_hard_limit {
            self.metrics().closed_send_queue_full.add(1);
            self.close_now(id, CloseReason::SendQueueFull);
            return Err(SendError::QueueFull);
        }
        if delaying {
            conn.send_queue().mark_queued(Instant::now);
        }
        if queued >= limits.send_high_water && !conn.backpressured() {
            conn.set_backpressured(true);
            self.notices.push(Notice::Backpressure(id));
        }
        self.list_flush(id);
        Ok(())
    }

    /// Pacing: once the current interval is over, clears the `paced` flag of
    /// every connection sent to in it and starts the next at `now`.
    pub(crate) fn roll_pace_interval(&mut self, now: Instant, interval: Duration) {
        if self.pace_ends.is_some_and(|end| now < end) {
            return;
        }
        let mut paced = std::mem::take(&mut self.paced);
        for id in paced.drain(..) {
            // A closed connection's id finds nothing (or a newer connection,
            // whose flag starts clear).
            if let Some(conn) = self.get_mut(id) {
                conn.set_paced(false);
            }
        }
        self.paced = paced;
        self.pace_ends = Some(now + interval);
    }

    pub(crate) fn list_flush(&mut self, id: ConnId) {
        if let Some(conn) = self.get_mut(id) {
            if !conn.flush_listed() && !conn.sending() {
                conn.set_flush_listed(true);
                self.to_flush.push(id);
            }
        }
    }

    /// Closes after flushing; see `Phase::Closing`.
    pub(crate) fn close_graceful(&mut self, id: ConnId, reason: CloseReason) {
        let linger = self.limits.close_linger;
        let Some(conn) = self.get_mut(id) else { return };
        match conn.phase {
            Phase::Closing(_) => return,
            Phase::Connecting => {
                self.close_now(id, reason);
                return;
            }
            Phase::Open => {}
        }
        let reason = if conn.eof() && reason == CloseReason::Closed {
            CloseReason::PeerClosed
        } else {
            reason
        };
        conn.phase = Phase::Closing(reason);
        conn.set_backpressured(false);
        self.tls_closing(id);
        let key = self
            .timers
            .insert(Instant::now() + linger, None, TimerPayload::Linger(id));
        if let Some(conn) = self.get_mut(id) {
            conn.set_linger(Some(key));
        }
        self.read_changes.push(id);
        self.continue_close(id);
    }

    /// Moves a closing connection on once its queue is empty: half-close, then wait
    /// for the peer's EOF (or the linger deadline).
    pub(crate) fn continue_close(&mut self, id: ConnId) {
        self.close_step(id, None);
    }

    /// `continue_close`, knowing (`Some`) how much input a direct descriptor
    /// has unread — the driver's answer to the query the unknown case sends.
    fn close_step(&mut self, id: ConnId, fixed_unread: Option<usize>) {
        let piped = self.piped_into(id);
        let Some(conn) = self.get_mut(id) else { return };
        if !conn.is_closing() || conn.sending() {
            return;
        }
        if conn.pending_len() > 0 || piped > 0 {
            self.list_flush(id);
            return;
        }
        if self.tls_close_notify(id) {
            self.list_flush(id);
            return;
        }
        let Some(conn) = self.get_mut(id) else { return };
        let eof = conn.eof();
        if !conn.write_shut() {
            conn.set_write_shut(true);
            if let Some(slot) = shut_write(&conn.socket) {
                self.fixed_shutdowns.push(slot);
            }
        }
        // Bytes it already gave a relay reach their destination first (releasing
        // it would end the relay and drop them).
        if self.feeding_relay(id) {
            return;
        }
        let Some(conn) = self.get_mut(id) else { return };
        // Closing a socket with unread input sends RST instead of FIN, and the
        // peer's TCP may then drop what we sent that it has not read yet. With no
        // unread input the close is a plain FIN after the data: release now.
        // Otherwise keep reading (discarding) until drained, EOF or linger.
        if eof {
            self.release_later(id);
            return;
        }
        match &conn.socket {
            ConnSocket::Fd(s) => {
                if unread_input(s) == 0 {
                    self.release_later(id);
                }
            }
            // Asked of the driver; `unread_known` comes back here with the
            // answer (with input unread, the next read asks again).
            ConnSocket::Fixed(_) => match fixed_unread {
                Some(0) => self.release_later(id),
                Some(_) => {}
                None => {
                    if !conn.unread_asked() {
                        conn.set_unread_asked(true);
                        self.unread_checks.push(id);
                    }
                }
            },
        }
    }

    /// The driver's answer to an unread-input query of a closing direct
    /// descriptor: nothing unread, so it is released now (a FIN, not a reset);
    /// otherwise it goes on reading until the peer's EOF or the linger deadline.
    pub(crate) fn unread_known(&mut self, id: ConnId, unread: std::io::Result<usize>) {
        let Some(conn) = self.get_mut(id) else { return };
        conn.set_unread_asked(false);
        // Cannot be asked (an old kernel): the linger read decides.
        if let Ok(n) = unread {
            self.close_step(id, Some(n));
        }
    }

    fn release_later(&mut self, id: ConnId) {
        if let Some(conn) = self.get_mut(id) {
            if !conn.released() {
                conn.set_released(true);
                self.to_release.push(id);
            }
        }
    }

    /// Closes without flushing (errors, limits, panics, deadlines).
    pub(crate) fn close_now(&mut self, id: ConnId, reason: CloseReason) {
        let Some(conn) = self.get_mut(id) else { return };
        if !conn.is_closing() {
            conn.phase = Phase::Closing(reason);
        }
        conn.out.clear();
        if let Some(tls) = conn.tls.as_mut() {
            tls.plain.clear();
            tls.notify_done = true;
        }
        conn.set_eof(true);
        conn.set_write_shut(true);
        self.release_later(id);
    }

    pub(crate) fn start_connect(&mut self, addr: SocketAddr) -> io::Result<ConnId> {
        let ty = if self.nonblocking_sockets {
            Type::STREAM.nonblocking()
        } else {
            Type::STREAM
        };
        let socket = Socket::new(Domain::for_address(addr), ty.cloexec(), Some(Protocol::TCP))?;
        if self.tcp_nodelay {
            socket.set_tcp_nodelay(true)?;
        }
        let id = self.insert(ConnSocket::Fd(socket), Some(addr), Phase::Connecting);
        self.to_connect.push((id, SockAddr::from(addr)));
        Ok(id)
    }

    pub(crate) fn set_reading(&mut self, id: ConnId, on: bool) {
        let Some(conn) = self.get_mut(id) else { return };
        if conn.reading() == on {
            return;
        }
        conn.set_reading(on);
        let redeliver = on && conn.unpresented() && !conn.is_closing();
        if on && conn.relay_out().is_some() {
            self.to_fill.push(id);
        }
        self.read_changes.push(id);
        if redeliver {
            self.notices.push(Notice::Redeliver(id));
        }
    }

    pub(crate) fn queued_bytes(&self, id: ConnId) -> Option<usize> {
        self.get(id).map(|c| c.pending_len())
    }

    pub(crate) fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.get(id).and_then(|c| c.peer())
    }

    pub(crate) fn set_timer(
        &mut self,
        after: Duration,
        period: Option<Duration>,
        key: usize,
    ) -> TimerId {
        TimerId(
            self.timers
                .insert(Instant::now() + after, period, TimerPayload::User(key)),
        )
    }

    /// Cancels a handler's timer; the key of its payload if it was pending.
    pub(crate) fn cancel_timer(&mut self, timer: TimerId) -> Option<usize> {
        // A `TimerId` is only ever made for a handler's timer, and the wheel's keys
        // are generation-checked, so this never names a linger timer.
        match self.timers.cancel(timer.0)? {
            TimerPayload::User(key) => Some(key),
            TimerPayload::Linger(_) | TimerPayload::TlsHandshake(_) | TimerPayload::Preamble(_) => {
                None
            }
        }
    }
}

/// Half-closes a socket: at once for an fd; a direct descriptor's slot is
/// returned, for the driver to shut down (`Core::fixed_shutdowns`).
fn shut_write(socket: &ConnSocket) -> Option<u32> {
    match socket {
        ConnSocket::Fd(s) => {
            let _ = s.shutdown(std::net::Shutdown::Write);
            None
        }
        ConnSocket::Fixed(slot) => Some(*slot),
    }
}

/// Bytes waiting in the socket's receive queue (0 if it cannot be asked).
fn unread_input(socket: &Socket) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through a valid pointer to a local.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 {
        n.max(0) as usize
    } else {
        0
    }
}
