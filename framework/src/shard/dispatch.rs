//! Routing the driver's completions to the handler: new connections, data (with
//! the unconsumed-input rules), EOF, sends, connects; and `guarded`, the one way
//! the shard calls into handler code (a panic closes only the connection concerned).

use std::{
    any::Any,
    panic::{catch_unwind, AssertUnwindSafe},
    time::Instant,
};

use socket2::Socket;
use tracing::{debug, error, warn};

use super::{
    conn::{ConnSocket, PendingPreamble, Phase, NO_LISTENER},
    core::{Core, Notice, TimerPayload},
    driver::{Accepted, Completion},
    Mail,
};
use crate::{
    accept::shard::ShardAccept,
    handler::{AppState, CloseReason, ConnId, Ctx, Handler, Listener, ListenerId, Preamble},
    proxy_protocol::{self, Parsed},
};

/// One of the shard's listeners: bound address, the application's value, and the
/// TLS configuration of a TLS listener.
pub(crate) struct ListenerSlot<L> {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) value: std::sync::Arc<L>,
    pub(crate) tls: Option<crate::tls::TlsAcceptor>,
}

/// The shard's listeners in the builder's order.
pub(crate) type Listeners<L> = Vec<ListenerSlot<L>>;

/// Calls into the handler with a `Ctx`, catching a panic: the connection concerned
/// (if any) is closed with `HandlerPanic`, the shard goes on.
pub(super) fn guarded<H: Handler, R>(
    core: &mut Core,
    mail: &Mail<H::Msg>,
    app: &mut AppState<H>,
    conn: Option<ConnId>,
    f: impl FnOnce(&mut Ctx<'_, H>) -> R,
) -> Option<R> {
    let result = {
        let mut ctx = Ctx {
            core: &mut *core,
            mail,
            app,
        };
        catch_unwind(AssertUnwindSafe(|| f(&mut ctx)))
    };
    match result {
        Ok(r) => Some(r),
        Err(payload) => {
            core.metrics().handler_panics.add(1);
            let msg = panic_message(&*payload);
            match conn {
                Some(id) => {
                    error!(shard = core.shard.0, conn = %id, panic = %msg, "handler panicked; closing the connection");
                    core.close_now(id, CloseReason::HandlerPanic);
                }
                None => error!(shard = core.shard.0, panic = %msg, "handler panicked"),
            }
            None
        }
    }
}

/// Calls a callback about connection `id` with its state, taken out of the
/// handler-typed slab for the call and put back after (the connection cannot be
/// released during a callback: releases happen in the loop). `None` if the
/// connection has no state (its `on_accept` panicked) or the callback panicked.
pub(super) fn with_state<H: Handler, R>(
    core: &mut Core,
    mail: &Mail<H::Msg>,
    app: &mut AppState<H>,
    handler: &mut H,
    id: ConnId,
    f: impl FnOnce(&mut H, &mut Ctx<'_, H>, &mut H::Conn) -> R,
) -> Option<R> {
    let mut state = app.take(id)?;
    let r = guarded(core, mail, app, Some(id), |ctx| f(handler, ctx, &mut state));
    app.put(id, state);
    r
}

/// An outbound connect failed: the handler hears it in `on_connect` with the
/// connection's state, which is dropped after (no `on_close` follows).
pub(super) fn connect_failed<H: Handler>(
    core: &mut Core,
    mail: &Mail<H::Msg>,
    app: &mut AppState<H>,
    handler: &mut H,
    id: ConnId,
    err: std::io::Error,
) {
    if let Some(mut st) = app.take(id) {
        guarded(core, mail, app, None, |ctx| {
            handler.on_connect(ctx, id, &mut st, Err(err))
        });
    }
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Routes one completion from the driver.
pub(super) fn dispatch<H: Handler>(
    core: &mut Core,
    mail: &Mail<H::Msg>,
    app: &mut AppState<H>,
    handler: &mut H,
    listeners: &Listeners<H::Listener>,
    accept: &mut ShardAccept,
    c: Completion<'_>,
) {
    match c {
        Completion::Accepted { listener, result } => match result {
            Ok(a) => {
                accept.on_success();
                // The driver knows this shard's listening sockets by position.
                let listener = accept.listener_of(listener);
                accepted(core, mail, app, handler, listeners, listener, a, true);
            }
            Err(e) => {
                debug!(shard = core.shard.0, listener, error = %e, "accept failed");
                accept.on_error(&e, Instant::now());
            }
        },
        Completion::Readable { token } => accept.on_readable(token),
        Completion::Data { conn: id, data } => {
            core.metrics().bytes_in.add(data.len() as u64);
            let Some(conn) = core.get_mut(id) else { return };
            conn.received = conn.received.wrapping_add(data.len() as u64);
            let conn = match conn.phase {
                Phase::Open => conn,
                // Closing: discard; release once the receive queue is drained.
                Phase::Closing(_) => {
                    core.continue_close(id);
                    return;
                }
                Phase::Connecting => return,
            };
            if conn.preamble().is_some() {
                preamble_data(core, mail, app, handler, listeners, id, data);
                return;
            }
            if conn.relay_out().is_some() {
                // Read the ordinary way just before the relay took over.
                core.relay_late_data(id, data);
                return;
            }
            if conn.tls.is_some() {
                tls_data(core, mail, app, handler, listeners, id, data);
                return;
            }
            deliver(core, mail, app, handler, id, data);
        }
        Completion::ReadClosed { conn: id, error } => {
            let Some(conn) = core.get_mut(id) else { return };
            conn.set_driver_reading(false);
            if let Some(e) = error {
                core.close_now(id, CloseReason::Io(e.kind()));
                return;
            }
            if conn.preamble().is_some() {
                debug!(shard = core.shard.0, conn = %id, "EOF before the PROXY header was whole; closing");
                core.metrics().proxy_headers_failed.add(1);
                core.close_now(id, CloseReason::Io(std::io::ErrorKind::UnexpectedEof));
                return;
            }
            let already = conn.eof();
            conn.set_eof(true);
            if already && conn.phase == Phase::Open {
                // The TLS peer's close_notify was the end of the stream.
                return;
            }
            if conn.tls_handshaking() {
                // The peer gave up during the handshake (an outbound connection's
                // handler hears it in `on_connect`, at the release).
                core.metrics().tls_failed.add(1);
                core.close_now(id, CloseReason::Io(std::io::ErrorKind::UnexpectedEof));
                return;
            }
            if conn.relay_out().is_some() && conn.phase == Phase::Open {
                core.relay_eof(id);
                return;
            }
            match conn.phase {
                Phase::Open => core.notices.push(Notice::Eof(id)),
                Phase::Closing(_) => core.continue_close(id),
                Phase::Connecting => {}
            }
        }
        Completion::Sent { conn: id, result } => {
            let limits = core.limits;
            let Some(conn) = core.get_mut(id) else { return };
            conn.set_sending(false);
            if conn.draining() {
                conn.set_draining(false);
                let closing = conn.is_closing();
                core.relay_drained(id, result);
                if closing {
                    core.continue_close(id);
                }
                return;
            }
            match result {
                Ok(n) => {
                    conn.out.advance(n);
                    let drained =
                        conn.backpressured() && conn.pending_len() <= limits.send_low_water;
                    if drained {
                        conn.set_backpressured(false);
                    }
                    let closing = conn.is_closing();
                    core.metrics().bytes_out.add(n as u64);
                    if drained {
                        core.notices.push(Notice::Drained(id));
                    }
                    if closing {
                        core.continue_close(id);
                    } else {
                        core.list_flush(id);
                        core.continue_shutdown(id);
                    }
                }
                Err(e) => core.close_now(id, CloseReason::Io(e.kind())),
            }
        }
        Completion::Connected { conn: id, result } => {
            let Some(conn) = core.get_mut(id) else { return };
            if conn.phase != Phase::Connecting {
                return;
            }
            match result {
                Ok(()) if conn.tls.is_some() => {
                    // Open, but the handler hears `on_connect` after the handshake.
                    conn.phase = Phase::Open;
                    core.read_changes.push(id);
                    core.tls_connected(id);
                }
                Ok(()) => {
                    conn.phase = Phase::Open;
                    conn.set_live(true);
                    let m = core.metrics();
                    m.conns_connected.add(1);
                    m.conns_live.add(1);
                    core.read_changes.push(id);
                    core.list_flush(id);
                    core.continue_shutdown(id);
                    with_state(core, mail, app, handler, id, |h, ctx, st| {
                        h.on_connect(ctx, id, st, Ok(()))
                    });
                }
                Err(e) => {
                    // Never live, so released without `on_close`; the handler hears
                    // it here, before the id can be reused, and its state goes.
                    core.close_now(id, CloseReason::Io(e.kind()));
                    connect_failed(core, mail, app, handler, id, e);
                }
            }
        }
        Completion::Spliced { conn: id, result } => core.relay_filled(id, result),
        Completion::Unread { conn: id, result } => core.unread_known(id, result),
        // The shutdown flag (and later the mailboxes) are checked every turn.
        Completion::Doorbell => {}
    }
}

/// A new connection. `by_driver`: accepted by the driver, so already in the
/// blocking mode the driver wants; otherwise (accept4 by the shard or the acceptor,
/// non-blocking) switched to blocking for io_uring. An ordinary fd may still
/// become a direct descriptor when it is registered (`Driver::add_conn`).
#[allow(clippy::too_many_arguments)]
pub(super) fn accepted<H: Handler>(
    core: &mut Core,
    mail: &Mail<H::Msg>,
    app: &mut AppState<H>,
    handler: &mut H,
    listeners: &Listeners<H::Listener>,
    listener: usize,
    socket: Accepted,
    by_driver: bool,
) {
    let (socket, peer, local) = match socket {
        Accepted::Fd(fd) => {
            let socket = Socket::from(fd);
            if !by_driver && !core.nonblocking_sockets {
                if let Err(e) = socket.set_nonblocking(false) {
                    warn!(shard = core.shard.0, error = %e, "cannot set an accepted socket blocking; dropping it");
                    return;
                }
            }
            let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
            (ConnSocket::Fd(socket), peer, None)
        }
        Accepted::Fixed { slot, peer, local } => (ConnSocket::Fixed(slot), peer, local),
    };
    let id = core.insert(socket, peer, Phase::Open);
    if let Some(conn) = core.get_mut(id) {
        conn.listener = u16::try_from(listener).unwrap_or(NO_LISTENER);
    }
    if let Some(local) = local {
        core.fixed_locals.insert(id.index, local);
    }
    core.metrics().conns_accepted.add(1);
    core.to_register.push(id);
    debug!(shard = core.shard.0, conn = %id, ?peer, "connection accepted");
    let Some(slot) = listeners.get(listener) else {
        warn!(
            shard = core.shard.0,
            listener, "connection from an unknown listener; closing it"
        );
        core.close_now(id, CloseReason::Closed);
        return;
    };
    if core.shutting_down {
        // Accepted after shutdown began (queued in the backlog, or a late
        // completion): served, then closed like every other connection.
        if slot.tls.is_some() {
            // Not worth a handshake: the handler never hears of it.
            core.close_now(id, CloseReason::Shutdown);
            return;
        }
    }
    let info = Listener {
        id: ListenerId(listener),
        addr: slot.addr,
        value: &*slot.value,
    };
    let shown = peer.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let preamble = catch_unwind(AssertUnwindSafe(|| handler.on_preamble(info, shown)));
    let proxied = match preamble {
        Ok(Preamble::None) => false,
        Ok(Preamble::Refuse) => {
            core.metrics().preamble_refused.add(1);
            core.close_now(id, CloseReason::Closed);
            return;
        }
        Ok(Preamble::ProxyProtocol { .. }) if core.shutting_down => {
            core.close_now(id, CloseReason::Shutdown);
            return;
        }
        Ok(Preamble::ProxyProtocol { timeout }) => {
            let key =
                core.timers
                    .insert(Instant::now() + timeout, None, TimerPayload::Preamble(id));
            if let Some(conn) = core.get_mut(id) {
                conn.set_preamble(PendingPreamble {
                    buf: Vec::new(),
                    timer: Some(key),
                    listener,
                });
            }
            true
        }
        Err(payload) => {
            core.metrics().handler_panics.add(1);
            let msg = panic_message(&*payload);
            error!(shard = core.shard.0, conn = %id, panic = %msg, "on_preamble panicked; closing the connection");
            core.close_now(id, CloseReason::HandlerPanic);
            return;
        }
    };
    match &slot.tls {
        // The handler hears of it once the handshake is done (`tls_data`); with
        // a PROXY header, the handshake reads what follows the header (the
        // connection is read once it holds a handshake slot).
        Some(tls) => core.tls_accept(id, tls.config(), listener),
        // Announced once the header is whole (`preamble_data`).
        None if proxied => {}
        None => announce(core, mail, app, handler, listeners, listener, id),
    }
}

/// Bytes of a connection whose PROXY header is not whole yet
/// (`Handler::on_preamble`): once it is, the connection takes the header's
/// addresses and goes on as any other (its TLS handshake, or `on_accept`), the
/// bytes after the header first; a bad header closes it.
fn preamble_data<H: Handler>(
    core: &mut Core,
    mail: &Mail<H::Msg>,
    app: &mut AppState<H>,
    handler: &mut H,
    listeners: &Listeners<H::Listener>,
    id: ConnId,
    data: &[u8],
) {
    let shard = core.shard.0;
    let Some(conn) = core.get_mut(id) else { return };
    let Some(pending) = conn.preamble_mut() else {
        return;
    };
    // Bounded: `parse` says Incomplete only below `MAX_HEADER_LEN` bytes.
    pending.buf.extend_from_slice(data);
    let (header, len) = match proxy_protocol::parse(&pending.buf) {
        Ok(Parsed::Incomplete) => return,
        Ok(Parsed::Complete { header, len }) => (header, len),
        Err(e) => {
            debug!(shard, conn = %id, peer = ?conn.peer(), error = %e, "bad PROXY header; closing");
            core.metrics().proxy_headers_failed.add(1);
            core.close_now(id, CloseReason::Io(std::io::ErrorKind::InvalidData));
            return;
        }
    };
    let Some(pending) = conn.take_preamble() else {
        return;
    };
    conn.set_proxy(header);
    if let Some(a) = header.addresses {
        debug!(shard, conn = %id, socket_peer = ?conn.peer(), source = %a.source, "PROXY header read");
        conn.set_peer(a.source);
    }
    let tls = conn.tls.is_some();
    if let Some(key) = pending.timer {
        core.timers.cancel(key);
    }
    core.metrics().proxy_headers.add(1);
    let rest = pending.buf.get(len..).unwrap_or(&[]);
    if tls {
        if !rest.is_empty() {
            tls_data(core, mail, app, handler, listeners, id, rest);
        }
    } else {
        announce(core, mail, app, handler, listeners, pending.listener, id);
        if !rest.is_empty() {
            deliver(core, mail, app, handler, id, rest);
        }
    }
}

/// Makes an accepted connection live and tells the handler (`on_accept`): at
/// accept, or for TLS once the handshake is done.
fn announce<H: Handler>(
    core: &mut Core,
    mail: &Mail<H::Msg>,
    app: &mut AppState<H>,
    handler: &mut H,
    listeners: &Listeners<H::Listener>,
    listener: usize,
    id: ConnId,
) {
    let Some(conn) = core.get_mut(id) else { return };
    conn.set_live(true);
    let peer = conn
        .peer()
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    core.metrics().conns_live.add(1);
    let Some(slot) = listeners.get(listener) else {
        return;
    };
    let info = Listener {
        id: ListenerId(listener),
        addr: slot.addr,
        value: &*slot.value,
    };
    let state = guarded(core, mail, app, Some(id), |ctx| {
        handler.on_accept(ctx, id, info, peer)
    });
    if let Some(state) = state {
        app.put(id, state);
    }
    // Unless `on_accept` kept it (`Ctx::keep_open_on_shutdown`: a server that
    // handed its listeners over drains gently).
    if core.shutting_down && !core.get(id).is_some_and(|c| c.kept_at_shutdown()) {
        core.close_graceful(id, CloseReason::Shutdown);
    }
}

/// Bytes read from a connection, for the handler: presented now, or kept while
/// reading is paused.
fn deliver<H: Handler>(
    core: &mut Core,
    mail: &Mail<H::Msg>,
    app: &mut AppState<H>,
    handler: &mut H,
    id: ConnId,
    data: &[u8],
) {
    let max_input = core.limits.max_input;
    let Some(conn) = core.get_mut(id).filter(|c| c.phase == Phase::Open) else {
        return;
    };
    if !conn.reading() {
        // Arrived after a pause took effect in the handler but before the
        // driver stopped reading: keep it for resume.
        conn.keep_input(data);
        conn.set_unpresented(true);
        if conn.input_len() > max_input {
            core.close_now(id, CloseReason::InputBufferFull);
        }
        return;
    }
    present(core, mail, app, handler, id, data);
}

/// Bytes read from a TLS connection: through its session, then (decrypted) to the
/// handler. The end of the handshake announces the connection.
fn tls_data<H: Handler>(
    core: &mut Core,
    mail: &Mail<H::Msg>,
    app: &mut AppState<H>,
    handler: &mut H,
    listeners: &Listeners<H::Listener>,
    id: ConnId,
    data: &[u8],
) {
    let mut plain = std::mem::take(&mut core.tls.scratch);
    plain.clear();
    let shard = core.shard.0;
    let Some(conn) = core.get_mut(id) else { return };
    let inbound = conn.inbound();
    let Some(tls) = conn.tls.as_mut() else { return };
    let handshaking = tls.handshaking;
    let result = tls.read(data, &mut plain, &mut conn.out);
    if !conn.out.is_empty() {
        core.list_flush(id);
    }
    match result {
        Err(e) => {
            debug!(shard, conn = %id, error = %e, handshaking, inbound, "TLS session failed");
            if handshaking && !inbound {
                // No alert waits: the handler hears `on_connect(Err)` now (at the
                // release, this turn).
                core.metrics().tls_failed.add(1);
                core.close_now(id, CloseReason::Tls);
            } else {
                core.tls_failed(id);
            }
        }
        Ok(outcome) => {
            if outcome.handshake_done {
                tls_established(core, mail, app, handler, listeners, id);
            }
            if !plain.is_empty() {
                deliver(core, mail, app, handler, id, &plain);
            }
            if outcome.peer_closed {
                if let Some(conn) = core.get_mut(id).filter(|c| c.phase == Phase::Open) {
                    conn.set_eof(true);
                    core.read_changes.push(id);
                    core.notices.push(Notice::Eof(id));
                }
            }
        }
    }
    plain.clear();
    if plain.capacity() > 64 << 10 {
        plain = Vec::new();
    }
    core.tls.scratch = plain;
}

/// A handshake finished: the connection becomes live and the handler hears of it
/// (`on_accept`, or `on_connect` for an outbound one).
fn tls_established<H: Handler>(
    core: &mut Core,
    mail: &Mail<H::Msg>,
    app: &mut AppState<H>,
    handler: &mut H,
    listeners: &Listeners<H::Listener>,
    id: ConnId,
) {
    core.tls_handshake_over(id);
    let Some(conn) = core.get_mut(id) else { return };
    let Some(tls) = conn.tls.as_mut() else { return };
    let info = crate::tls::session_info(&tls.session, tls.server_name.clone());
    let resumed = info.resumed;
    let listener = tls.listener;
    debug!(conn = %id, version = info.version, cipher = info.cipher, sni = ?info.server_name, resumed, "TLS handshake done");
    tls.info = Some(info);
    let inbound = conn.inbound();
    let m = core.metrics();
    m.tls_handshakes.add(1);
    if resumed {
        m.tls_resumed.add(1);
    }
    // Plaintext queued during the handshake goes out now.
    core.list_flush(id);
    if inbound {
        announce(core, mail, app, handler, listeners, listener, id);
    } else {
        if let Some(conn) = core.get_mut(id) {
            conn.set_live(true);
        }
        let m = core.metrics();
        m.conns_connected.add(1);
        m.conns_live.add(1);
        with_state(core, mail, app, handler, id, |h, ctx, st| {
            h.on_connect(ctx, id, st, Ok(()))
        });
    }
    core.continue_shutdown(id);
}

/// Hands the connection's pending input plus `data` to `on_data`, keeping whatever
/// the handler does not consume.
pub(super) fn present<H: Handler>(
    core: &mut Core,
    mail: &Mail<H::Msg>,
    app: &mut AppState<H>,
    handler: &mut H,
    id: ConnId,
    data: &[u8],
) {
    let max_input = core.limits.max_input;
    let Some(conn) = core.get_mut(id) else { return };
    if conn.is_closing() {
        return;
    }
    conn.set_unpresented(false);
    if conn.input_len() == 0 {
        if data.is_empty() {
            return;
        }
        let consumed = with_state(core, mail, app, handler, id, |h, ctx, st| {
            h.on_data(ctx, id, st, data)
        });
        let Some(consumed) = consumed else { return };
        let rest = &data[consumed.min(data.len())..];
        if !rest.is_empty() {
            if let Some(conn) = core.get_mut(id).filter(|c| !c.is_closing()) {
                conn.keep_input(rest);
            }
        }
    } else {
        let mut input = conn.input.take().unwrap_or_default();
        input.extend_from_slice(data);
        let consumed = with_state(core, mail, app, handler, id, |h, ctx, st| {
            h.on_data(ctx, id, st, &input)
        });
        let Some(consumed) = consumed else { return };
        input.drain(..consumed.min(input.len()));
        // All consumed: the buffer is freed rather than kept (empty, with its
        // capacity) by a connection that may now idle for hours.
        if !input.is_empty() {
            if let Some(conn) = core.get_mut(id).filter(|c| !c.is_closing()) {
                conn.input = Some(input);
            }
        }
    }
    if core.relay_of(id).is_some() {
        // `splice_into` was called in this `on_data`: the rest goes to `to`.
        core.spill_input(id);
        return;
    }
    let Some(conn) = core.get_mut(id) else { return };
    if conn.input_len() > max_input {
        core.close_now(id, CloseReason::InputBufferFull);
    } else if conn.eof_deferred() && !conn.unpresented() {
        conn.set_eof_deferred(false);
        core.notices.push(Notice::Eof(id));
    }
}
