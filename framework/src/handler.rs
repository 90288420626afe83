//! The application's side of a shard: the [`Handler`] callbacks and the [`Ctx`]
//! through which a handler acts.
//!
//! `Ctx` never touches the I/O driver. Every action is recorded in shard-owned state
//! (the connection's outbound queue, lists of pending closes, connects and read
//! pauses) and applied by the shard loop after the callback returns. That keeps the
//! read buffer handed to [`Handler::on_data`] borrowable while the handler acts, makes
//! the API identical on both backends, and lets one loop turn batch every send into
//! one submission.

use std::{fmt, io, net::SocketAddr, time::Duration};

use bytes::Bytes;
use slab::Slab;

pub use crate::types::{ConnId, ListenerId, ListenerInfo, ShardId};
use crate::{
    error::SendError,
    metrics::ShardMetrics,
    shard::{core::Core, mailbox::Full, relay::SpliceError, Mail},
};

/// A timer set with [`Ctx::set_timer`] or [`Ctx::set_interval`]; pass it to
/// [`Ctx::cancel_timer`]. Generation-checked: a kept id of a timer that fired or
/// was cancelled never cancels a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(pub(crate) crate::shard::timer::TimerKey);

/// Why a connection was closed, as reported to [`Handler::on_close`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed the connection (EOF) and everything queued was flushed.
    PeerClosed,
    /// The handler called [`Ctx::close`].
    Closed,
    /// The outbound queue passed its hard limit (the peer does not read fast enough).
    SendQueueFull,
    /// The handler left more unconsumed input than `Limits::max_input` allows.
    InputBufferFull,
    /// A read or write failed (reset by peer, timed out, …).
    Io(io::ErrorKind),
    /// A handler callback for this connection panicked; see the log for the message.
    HandlerPanic,
    /// The server shut down.
    Shutdown,
    /// The TLS session failed: bad input, a failed handshake or its timeout (the
    /// log at `debug` says which).
    Tls,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::Closed => f.write_str("closed by handler"),
            CloseReason::SendQueueFull => f.write_str("send queue full"),
            CloseReason::InputBufferFull => f.write_str("unconsumed input over limit"),
            CloseReason::Io(kind) => write!(f, "I/O error: {kind}"),
            CloseReason::HandlerPanic => f.write_str("handler panicked"),
            CloseReason::Shutdown => f.write_str("server shutdown"),
            CloseReason::Tls => f.write_str("TLS failure"),
        }
    }
}

/// What an accepted connection starts with, as [`Handler::on_preamble`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preamble {
    /// Nothing: the connection is announced at once (after its TLS handshake).
    None,
    /// A PROXY protocol header (v1 or v2), to be whole within `timeout` of the
    /// accept.
    ProxyProtocol {
        /// The deadline for the whole header.
        timeout: std::time::Duration,
    },
    /// Close the connection now, unannounced.
    Refuse,
}

/// Which listener took a connection: given to [`Handler::on_accept`].
///
/// `id` is the listener's position in the order the builder was given them
/// ([`ServerBuilder::listen`](crate::ServerBuilder::listen) /
/// [`listen_with`](crate::ServerBuilder::listen_with)), `addr` the address it is
/// bound to (the resolved port when 0 was asked for), and `value` what the
/// application attached to it.
#[derive(Debug)]
pub struct Listener<'a, L> {
    /// The listener's position in the builder's list.
    pub id: ListenerId,
    /// The address it is bound to.
    pub addr: SocketAddr,
    /// The value attached with `listen_with` (`()` for `listen`).
    pub value: &'a L,
}

impl<L> Clone for Listener<'_, L> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<L> Copy for Listener<'_, L> {}

/// Who posted a message handed to [`Handler::on_message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A shard, with [`Ctx::post`] or [`Ctx::broadcast`] (possibly this one).
    Shard(ShardId),
    /// A thread outside the shards, through a [`Remote`](crate::Remote).
    Remote,
}

/// The application's per-shard event handler. One instance is created per shard, on
/// that shard's thread, by the factory given to
/// [`ServerBuilder::build`](crate::ServerBuilder::build); it never moves between
/// threads.
///
/// Four types say what the application keeps where (`()` for what it does not use):
/// - [`Msg`](Handler::Msg): what shards (and [`Remote`](crate::Remote) handles) post
///   to each other's [`on_message`](Handler::on_message);
/// - [`Timer`](Handler::Timer): what a timer carries back to
///   [`on_timer`](Handler::on_timer);
/// - [`Conn`](Handler::Conn): the per-connection state, chosen by the handler when a
///   connection starts (returned from [`on_accept`](Handler::on_accept), given to
///   [`Ctx::connect`]), kept by the framework next to the connection, and handed back
///   with every callback for that connection — no map from [`ConnId`] is needed to
///   find it;
/// - [`Listener`](Handler::Listener): the value the application attached to each
///   listener ([`ServerBuilder::listen_with`](crate::ServerBuilder::listen_with)),
///   given to `on_accept`.
///
/// Panics: a panic inside a callback that concerns a connection (`on_accept`,
/// `on_data`, `on_eof`, `on_connect`, `on_backpressure`, `on_drained`) is caught;
/// that connection is closed with [`CloseReason::HandlerPanic`] and the panic is logged
/// at `error`. Other connections and the shard go on. A panic in `on_timer`,
/// `on_close` or `on_shutdown` is caught and logged the same way. The handler must
/// therefore keep its own state consistent across a panic (it is not poisoned).
#[allow(unused_variables)]
pub trait Handler: Sized + 'static {
    /// What shards send each other with [`Ctx::post`] / [`Ctx::broadcast`], and
    /// other threads with a [`Remote`](crate::Remote).
    type Msg: Send + 'static;
    /// What a timer set with [`Ctx::set_timer`] or [`Ctx::set_interval`] carries.
    type Timer: 'static;
    /// Per-connection state, stored by the framework with the connection.
    type Conn: 'static;
    /// The value attached to each listener (the same type for all of them).
    type Listener: Send + Sync + 'static;

    /// The shard is up (driver ready, listeners registered) and about to serve.
    /// Start timers or outbound connections here.
    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {}

    /// A connection was accepted from `peer` by `listener`, before anything was
    /// read from it (before a TLS listener's handshake): does it start with a
    /// PROXY protocol header ([`crate::proxy_protocol`])? The default,
    /// [`Preamble::None`], is a connection like any other.
    ///
    /// [`Preamble::ProxyProtocol`]: the framework reads the header first (within
    /// `timeout` and [`proxy_protocol::MAX_HEADER_LEN`](crate::proxy_protocol::MAX_HEADER_LEN)
    /// bytes), then does the TLS handshake if the listener has one, then calls
    /// [`on_accept`](Handler::on_accept) with the header's source address as
    /// `peer` ([`Ctx::peer_addr`] and [`Ctx::local_addr`] give the header's
    /// addresses too; [`Ctx::proxy_header`] the whole header). A header without
    /// addresses (`LOCAL`, `UNKNOWN`) leaves the socket's. A malformed, late,
    /// or oversize header, or an EOF before it is whole, closes the connection
    /// unannounced (counted in `shardline_proxy_headers_failed_total`, logged at
    /// debug); bytes after the header are the connection's first data.
    ///
    /// [`Preamble::Refuse`]: closed at once, unannounced (counted in
    /// `shardline_preamble_refused_total`) — for a source not trusted to send
    /// headers. If this panics the connection is closed too.
    fn on_preamble(
        &mut self,
        listener: Listener<'_, Self::Listener>,
        peer: SocketAddr,
    ) -> Preamble {
        Preamble::None
    }

    /// A connection was accepted from `peer` by `listener`. What this returns is the
    /// connection's state, handed back with every later callback for it. If this
    /// panics the connection is closed and, having no state, gets no `on_close`.
    fn on_accept(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        listener: Listener<'_, Self::Listener>,
        peer: SocketAddr,
    ) -> Self::Conn;

    /// Bytes arrived. Return how many were consumed; the rest is kept and presented
    /// again, prefixed, with the next data (bounded by `Limits::max_input`).
    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        state: &mut Self::Conn,
        data: &[u8],
    ) -> usize;

    /// The peer shut down its sending side. Comes after every byte received was
    /// offered to `on_data` (input that arrived while reading was paused is offered
    /// first, on resume). The default closes the connection after what is queued
    /// has been sent; a proxy forwards it with [`Ctx::shutdown_write`] instead.
    fn on_eof(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, state: &mut Self::Conn) {
        ctx.close(conn);
    }

    /// An outbound connection started with [`Ctx::connect`] completed. On `Err` the
    /// id is already released, `state` is dropped after this returns, and `on_close`
    /// will not be called for it.
    fn on_connect(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        state: &mut Self::Conn,
        result: io::Result<()>,
    ) {
    }

    /// The connection is gone; its state is handed over. Called exactly once for
    /// every connection whose `on_accept` returned and every connected outbound
    /// connection.
    fn on_close(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        state: Self::Conn,
        reason: &CloseReason,
    ) {
    }

    /// The outbound queue passed `Limits::send_high_water`: the peer is slow. A proxy
    /// pauses reading the other side here.
    fn on_backpressure(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, state: &mut Self::Conn) {}

    /// After a backpressure notice, the outbound queue fell below
    /// `Limits::send_low_water`.
    fn on_drained(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, state: &mut Self::Conn) {}

    /// A timer fired, with the payload it was set with (a clone, for an interval).
    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, timer: TimerId, payload: Self::Timer) {}

    /// A message posted by a shard ([`Ctx::post`], [`Ctx::broadcast`]) or from
    /// another thread ([`Remote`](crate::Remote)). Per sender, messages arrive in
    /// the order posted.
    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: Origin, msg: Self::Msg) {}

    /// A [`Ctx::post`] to `to` returned `Full` earlier; that queue has drained to half
    /// its capacity, so posting may be retried now (an [`Outbox`](crate::Outbox)
    /// does it with [`Outbox::flush`](crate::Outbox::flush)). Given once per `Full`
    /// episode.
    fn on_mailbox_ready(&mut self, ctx: &mut Ctx<'_, Self>, to: ShardId) {}

    /// The server is shutting down: no new connections are being accepted (those
    /// the kernel had already queued are still handed to `on_accept`, then closed).
    /// Right after this returns every open connection is closed once its queue is
    /// flushed, up to the shutdown deadline — except those passed to
    /// [`Ctx::keep_open_on_shutdown`], which the handler closes itself. Queue a
    /// goodbye here.
    fn on_shutdown(&mut self, ctx: &mut Ctx<'_, Self>) {}
}

/// A user timer's payload, kept beside the wheel (which holds only its key).
pub(crate) struct TimerSlot<T> {
    pub(crate) payload: T,
    /// Set for intervals: how to hand out a copy each time it fires.
    pub(crate) clone: Option<fn(&T) -> T>,
}

/// The handler-typed part of a shard's state: per-connection states (indexed like
/// the connection slab) and timer payloads.
pub(crate) struct AppState<H: Handler> {
    pub(crate) states: Vec<Option<H::Conn>>,
    pub(crate) timers: Slab<TimerSlot<H::Timer>>,
}

impl<H: Handler> AppState<H> {
    pub(crate) fn new() -> Self {
        AppState {
            states: Vec::new(),
            timers: Slab::new(),
        }
    }

    pub(crate) fn put(&mut self, id: ConnId, state: H::Conn) {
        let i = id.index as usize;
        if self.states.len() <= i {
            self.states.resize_with(i + 1, || None);
        }
        self.states[i] = Some(state);
    }

    /// The payload to hand to `on_timer` for the timer in `slot`: an interval's
    /// copy (it keeps its payload), or a one-shot timer's payload itself.
    pub(crate) fn fire_timer(&mut self, slot: usize) -> Option<H::Timer> {
        let timer = self.timers.get(slot)?;
        match timer.clone {
            Some(clone) => Some(clone(&timer.payload)),
            None => Some(self.timers.remove(slot).payload),
        }
    }

    pub(crate) fn take(&mut self, id: ConnId) -> Option<H::Conn> {
        self.states
            .get_mut(id.index as usize)
            .and_then(Option::take)
    }
}

/// What a handler can do, handed to every callback. Actions take effect after the
/// callback returns, in the order they were made. `H` is the handler.
pub struct Ctx<'a, H: Handler> {
    pub(crate) core: &'a mut Core,
    pub(crate) mail: &'a Mail<H::Msg>,
    pub(crate) app: &'a mut AppState<H>,
}

impl<H: Handler> fmt::Debug for Ctx<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("shard", &self.core.shard)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Ctx<'_, H> {
    /// Sends `msg` to shard `to` (this shard included) through the bounded mailbox
    /// for that pair; it arrives in that shard's [`Handler::on_message`]. A full
    /// mailbox hands the message back as [`Full`]: backpressure, never a drop.
    /// [`Handler::on_mailbox_ready`] then says when to retry; an
    /// [`Outbox`](crate::Outbox) keeps such messages in order.
    ///
    /// # Panics
    /// If `to` is not a shard of this server (`to.0 >= ctx.shards()`).
    pub fn post(&mut self, to: ShardId, msg: H::Msg) -> Result<(), Full<H::Msg>> {
        assert!(
            to.0 < self.mail.shards,
            "post to shard {to} of {}",
            self.mail.shards
        );
        self.mail.post(to.0, msg)
    }

    /// Posts a clone of `msg` to every other shard. Returns the shards whose mailbox
    /// was full, with their copies: nothing is dropped.
    pub fn broadcast(&mut self, msg: H::Msg) -> Result<(), Vec<(ShardId, H::Msg)>>
    where
        H::Msg: Clone,
    {
        let mut full = Vec::new();
        for to in (0..self.mail.shards).filter(|&s| s != self.mail.me) {
            if let Err(Full(m)) = self.mail.post(to, msg.clone()) {
                full.push((ShardId(to), m));
            }
        }
        if full.is_empty() {
            Ok(())
        } else {
            Err(full)
        }
    }

    /// Opens an outbound TCP connection whose state is `state`. The result arrives
    /// in [`Handler::on_connect`]; bytes sent before that are queued and flushed
    /// once connected. Fails now only if a socket cannot be created (e.g. out of
    /// fds); `state` is then dropped.
    pub fn connect(&mut self, addr: SocketAddr, state: H::Conn) -> io::Result<ConnId> {
        let id = self.core.start_connect(addr)?;
        self.app.put(id, state);
        Ok(id)
    }

    /// Opens an outbound TLS connection to `addr`, verifying the server's
    /// certificate against `connector`'s CAs for `server_name` (also sent as SNI).
    /// [`Handler::on_connect`] comes once the handshake is done (`Ok`; see
    /// [`Ctx::tls`]) or failed (`Err`, kind `InvalidData` for a TLS failure,
    /// `TimedOut` past the handshake timeout). Bytes sent before are held and
    /// encrypted after the handshake. Fails now for a `server_name` that is not a
    /// DNS name or IP address (`InvalidInput`) or if no socket can be created;
    /// `state` is then dropped.
    pub fn connect_tls(
        &mut self,
        addr: SocketAddr,
        connector: &crate::tls::TlsConnector,
        server_name: &str,
        state: H::Conn,
    ) -> io::Result<ConnId> {
        let name =
            rustls::pki_types::ServerName::try_from(server_name.to_string()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{server_name:?} is not a valid TLS server name"),
                )
            })?;
        let id = self.core.start_connect(addr)?;
        if let Err(e) =
            self.core
                .tls_connect(id, connector.config.clone(), name, server_name.to_string())
        {
            self.core.remove(id);
            // Queued for connect: it is skipped once the id is stale.
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()));
        }
        self.app.put(id, state);
        Ok(id)
    }

    /// What `conn`'s TLS session negotiated (SNI, ALPN, version, cipher suite,
    /// the peer certificate's fingerprint), or `None` for a connection without
    /// TLS or an unknown id.
    pub fn tls(&self, conn: ConnId) -> Option<&crate::tls::TlsInfo> {
        self.core.tls_info(conn)
    }

    /// The state of another connection of this shard (not the one the current
    /// callback is about: that one was handed to the callback), or `None` for an
    /// unknown id.
    pub fn conn_state(&mut self, conn: ConnId) -> Option<&mut H::Conn> {
        self.core.get(conn)?;
        self.app
            .states
            .get_mut(conn.index as usize)
            .and_then(Option::as_mut)
    }

    /// Fires [`Handler::on_timer`] once, `after` from now (1 ms resolution), with
    /// `payload`.
    pub fn set_timer(&mut self, after: Duration, payload: H::Timer) -> TimerId {
        let key = self.app.timers.insert(TimerSlot {
            payload,
            clone: None,
        });
        self.core.set_timer(after, None, key)
    }

    /// Fires [`Handler::on_timer`] every `period` until cancelled, each time with a
    /// clone of `payload`. If the shard falls behind by several periods it fires
    /// once, not in a burst.
    pub fn set_interval(&mut self, period: Duration, payload: H::Timer) -> TimerId
    where
        H::Timer: Clone,
    {
        let key = self.app.timers.insert(TimerSlot {
            payload,
            clone: Some(<H::Timer as Clone>::clone),
        });
        self.core.set_timer(period, Some(period), key)
    }

    /// Cancels a timer and returns its payload if it was still pending. A
    /// cancelled timer never fires.
    pub fn cancel_timer(&mut self, timer: TimerId) -> Option<H::Timer> {
        let key = self.core.cancel_timer(timer)?;
        self.app.timers.try_remove(key).map(|slot| slot.payload)
    }

    /// The server's listeners, in the builder's order, with their bound
    /// addresses (e.g. to advertise the port a TLS listener got).
    pub fn listeners(&self) -> &[ListenerInfo] {
        &self.core.listeners
    }

    /// This shard's id.
    pub fn shard_id(&self) -> ShardId {
        self.core.shard
    }

    /// How many shards the server runs.
    pub fn shards(&self) -> usize {
        self.core.shards
    }

    /// Queues a copy of `data` to `conn`. Small sends made in one loop turn are
    /// coalesced into one write.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<(), SendError> {
        self.core.queue_copy(conn, data)
    }

    /// Queues a shared, reference-counted buffer to `conn` without copying it: the
    /// way to send one message to many connections.
    pub fn send_shared(&mut self, conn: ConnId, buf: &Bytes) -> Result<(), SendError> {
        self.core.queue_shared(conn, buf)
    }

    /// Closes `conn` after everything already queued to it has been sent (bounded by
    /// `Limits::close_linger`). Reading stops now. Closing twice is harmless.
    pub fn close(&mut self, conn: ConnId) {
        self.core.close_graceful(conn, CloseReason::Closed);
    }

    /// Half-closes `conn`: once everything queued to it has been sent, its sending
    /// side is shut down (the peer reads EOF), while reading goes on — `on_data`
    /// and `on_eof` still come. Later sends fail with [`SendError::WriteShut`].
    /// Close it with [`Ctx::close`] when done (e.g. in `on_eof`). Harmless twice.
    pub fn shutdown_write(&mut self, conn: ConnId) -> Result<(), SendError> {
        self.core.shutdown_write(conn)
    }

    /// Offers `conn`'s unconsumed input (what `on_data` returned as not consumed)
    /// to `on_data` again after this callback, without waiting for new bytes — e.g.
    /// the next pipelined request once the current one is answered. Nothing happens
    /// while reading is paused (resuming offers it) or if no input is held.
    pub fn redeliver(&mut self, conn: ConnId) {
        self.core.redeliver(conn);
    }

    /// Exempts `conn` from the close every open connection gets right after
    /// [`Handler::on_shutdown`]: the handler closes it itself when its work is done
    /// (a proxy finishing a request in flight), and the shutdown deadline closes it
    /// regardless. Call it in `on_shutdown` (or any time before; for a connection
    /// accepted while shutting down, in its `on_accept`). The shard stops once
    /// every connection is gone.
    pub fn keep_open_on_shutdown(&mut self, conn: ConnId) {
        self.core.keep_open_on_shutdown(conn);
    }

    /// Whether this server handed its listening sockets over to another process
    /// (a zero-downtime upgrade, see [`crate::upgrade`]): it accepts no more, and
    /// a client it closes can reconnect at once — the new process takes it. A
    /// handler may then drain more gently than at a plain shutdown (an HTTP
    /// server answering each idle keep-alive client's next request with
    /// `Connection: close` rather than closing it under a request in flight).
    pub fn listeners_handed_over(&self) -> bool {
        self.core.handed_over
    }

    /// The local address `conn` is bound to (for accepted connections: which
    /// listener took it; with a PROXY header, its destination address), or
    /// `None` for an unknown id — and for an outbound connection held as an
    /// io_uring direct descriptor, whose local port the kernel chose and which
    /// cannot be asked ([`ServerBuilder::direct_descriptors`](crate::ServerBuilder::direct_descriptors)).
    pub fn local_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.core.local_addr(conn)
    }

    /// Stops reading from `conn` (its data stays in the kernel, so the peer is slowed
    /// by TCP flow control) until [`Ctx::resume_reading`].
    pub fn pause_reading(&mut self, conn: ConnId) {
        self.core.set_reading(conn, false);
    }

    /// Resumes reading after [`Ctx::pause_reading`].
    pub fn resume_reading(&mut self, conn: ConnId) {
        self.core.set_reading(conn, true);
    }

    /// Relays `from`'s input into `to` inside the kernel from now on: bytes read
    /// from `from` go to `to` through a pipe (splice), never through `on_data`.
    /// What the handler queued to `to` before goes first, and so does input of
    /// `from` already read but not consumed (it is queued to `to`). `on_eof(from)`
    /// comes once every byte reached `to`; errors close the side that failed, as
    /// usual. `pause_reading(from)` still pauses it, and a `to` that does not
    /// drain stops the reading of `from` (one pipe's capacity is held, in the
    /// kernel). Bytes sent to `to` meanwhile are interleaved with relayed ones at
    /// a point not specified. Closing either side ends the relay, dropping what
    /// the pipe still holds. Worth it for bulk transfers only: each chunk costs two
    /// splice calls where copying costs a read and a write.
    ///
    /// An error leaves both connections as they were (keep copying); `NoPipe`
    /// means the shard's pipes ([`ServerBuilder::splice_pipes`](crate::ServerBuilder::splice_pipes))
    /// are in use.
    pub fn splice_into(&mut self, from: ConnId, to: ConnId) -> Result<(), SpliceError> {
        self.core.splice_into(from, to)
    }

    /// Bytes queued to `conn` and not yet sent, or `None` for an unknown id.
    pub fn send_queue_len(&self, conn: ConnId) -> Option<usize> {
        self.core.queued_bytes(conn)
    }

    /// Bytes read from `conn`'s socket since it opened, those relayed in the
    /// kernel by [`Ctx::splice_into`] included (for TLS, the records as
    /// received), or `None` for an unknown id. A cheap way to tell whether a
    /// connection saw traffic between two looks, e.g. for an idle timeout
    /// that must also see spliced traffic, which never reaches `on_data`.
    pub fn bytes_received(&self, conn: ConnId) -> Option<u64> {
        self.core.get(conn).map(|c| c.received)
    }

    /// The remote address of `conn` (a PROXY header's source address if it
    /// came with one, see [`Handler::on_preamble`]), or `None` for an unknown id.
    pub fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.core.peer_addr(conn)
    }

    /// The PROXY protocol header `conn` started with, if its listener expected
    /// one ([`Handler::on_preamble`]).
    pub fn proxy_header(&self, conn: ConnId) -> Option<&crate::proxy_protocol::Header> {
        self.core.get(conn)?.proxy()
    }

    /// This shard's counters.
    pub fn metrics(&self) -> &ShardMetrics {
        self.core.metrics()
    }
}
