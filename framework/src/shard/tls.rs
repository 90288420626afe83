//! A connection's TLS session inside the shard (see `crate::tls` for the model).
//!
//! Bytes flow like this: the driver's read -> `TlsConn::read` (rustls `read_tls`
//! from memory, `process_new_packets`, plaintext out) -> the handler's `on_data`;
//! `Ctx::send` -> `TlsConn::plain` (plaintext, not yet encrypted) -> at the flush,
//! `TlsConn::encrypt` (rustls `writer`, then `write_tls` into `Conn::out`) -> the
//! driver's send. Handshake records rustls produces while reading go to `Conn::out`
//! straight away.
//!
//! Handshake slots: `TlsShard::handshakes` counts handshakes in progress on the
//! shard; an accepted connection takes a slot or waits (not read) in
//! `TlsShard::waiting`, and a finished, failed or released handshake hands its slot
//! to the oldest waiter.

use std::{collections::VecDeque, io, time::Duration};

use tracing::debug;

use super::{
    conn::{OutQueue, Phase},
    core::{Core, TimerPayload},
    timer::TimerKey,
};
use crate::{handler::CloseReason, tls::TlsInfo, types::ConnId};

/// The shard's TLS bookkeeping.
#[derive(Debug)]
pub(crate) struct TlsShard {
    /// Inbound handshakes holding a slot.
    pub(crate) handshakes: usize,
    pub(crate) max_handshakes: usize,
    pub(crate) timeout: Duration,
    /// Accepted connections waiting for a slot, oldest first (may hold stale ids).
    pub(crate) waiting: VecDeque<ConnId>,
    /// Reused buffer for decrypted input.
    pub(crate) scratch: Vec<u8>,
}

impl TlsShard {
    pub(crate) fn new(max_handshakes: usize, timeout: Duration) -> TlsShard {
        TlsShard {
            handshakes: 0,
            max_handshakes: max_handshakes.max(1),
            timeout,
            waiting: VecDeque::new(),
            scratch: Vec::new(),
        }
    }
}

/// One connection's TLS session.
pub(crate) struct TlsConn {
    pub(crate) session: rustls::Connection,
    /// Plaintext queued by the handler, encrypted at the flush (held while the
    /// handshake runs).
    pub(crate) plain: OutQueue,
    pub(crate) handshaking: bool,
    /// Holds one of the shard's handshake slots.
    pub(crate) slot: bool,
    /// Waits for a slot (accepted, not read yet).
    pub(crate) waiting: bool,
    pub(crate) timer: Option<TimerKey>,
    /// The listener that accepted it (inbound).
    pub(crate) listener: usize,
    /// The name an outbound session verified the server against.
    pub(crate) server_name: Option<String>,
    pub(crate) info: Option<TlsInfo>,
    /// `close_notify` was queued, or must not be (the session failed or never
    /// finished its handshake).
    pub(crate) notify_done: bool,
    /// The peer's `close_notify` was reported as end of stream.
    pub(crate) peer_closed: bool,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("handshaking", &self.handshaking)
            .field("plain", &self.plain.len())
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Appends what rustls writes to an outbound queue.
struct QueueWriter<'a>(&'a mut OutQueue);

impl io::Write for QueueWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push_copy(buf);
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            self.0.push_copy(b);
            n += b.len();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What reading some bytes did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReadOutcome {
    pub(crate) handshake_done: bool,
    /// The peer sent `close_notify` (first time).
    pub(crate) peer_closed: bool,
}

impl TlsConn {
    pub(crate) fn new(
        mut session: rustls::Connection,
        listener: usize,
        server_name: Option<String>,
    ) -> TlsConn {
        // The shard bounds what is queued itself (send limits); rustls keeps
        // nothing between calls.
        session.set_buffer_limit(None);
        TlsConn {
            session,
            plain: OutQueue::default(),
            handshaking: true,
            slot: false,
            waiting: false,
            timer: None,
            listener,
            server_name,
            info: None,
            notify_done: false,
            peer_closed: false,
        }
    }

    /// Plaintext that the next flush can encrypt.
    pub(crate) fn encryptable(&self) -> usize {
        if self.handshaking {
            0
        } else {
            self.plain.len()
        }
    }

    /// Moves the records rustls has ready into `out`.
    pub(crate) fn write_records(&mut self, out: &mut OutQueue) {
        while self.session.wants_write() {
            match self.session.write_tls(&mut QueueWriter(out)) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Encrypts the queued plaintext into `out` (after the handshake).
    pub(crate) fn encrypt(&mut self, out: &mut OutQueue) {
        if self.handshaking {
            return;
        }
        while !self.plain.is_empty() {
            let batch = self.plain.next_batch();
            let mut n = 0;
            for chunk in batch {
                // Without a buffer limit rustls takes everything.
                let taken = self.session.writer().write_all(chunk);
                debug_assert!(taken.is_ok());
                n += chunk.len();
            }
            self.plain.advance(n);
        }
        self.write_records(out);
    }

    /// Feeds bytes read from the socket; decrypted application data is appended to
    /// `plain`, records to send (handshake, alerts) to `out`.
    pub(crate) fn read(
        &mut self,
        data: &[u8],
        plain: &mut Vec<u8>,
        out: &mut OutQueue,
    ) -> Result<ReadOutcome, rustls::Error> {
        let mut outcome = ReadOutcome::default();
        let mut rest = data;
        while !rest.is_empty() {
            match self.session.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    return Err(rustls::Error::General(format!("reading TLS input: {e}")));
                }
            }
            let state = match self.session.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    // rustls queued an alert saying why.
                    self.write_records(out);
                    return Err(e);
                }
            };
            let n = state.plaintext_bytes_to_read();
            let closed = state.peer_has_closed();
            if n > 0 {
                let start = plain.len();
                plain.resize(start + n, 0);
                if io::Read::read_exact(&mut self.session.reader(), &mut plain[start..]).is_err() {
                    plain.truncate(start);
                }
            }
            if closed && !self.peer_closed {
                self.peer_closed = true;
                outcome.peer_closed = true;
            }
            if self.handshaking && !self.session.is_handshaking() {
                self.handshaking = false;
                outcome.handshake_done = true;
            }
        }
        self.write_records(out);
        Ok(outcome)
    }
}

use io::Write as _;

impl Core {
    /// Starts a server session on an accepted connection: a handshake slot (or a
    /// place in the waiting line) and the handshake timer.
    pub(crate) fn tls_accept(
        &mut self,
        id: ConnId,
        config: std::sync::Arc<rustls::ServerConfig>,
        listener: usize,
    ) {
        let session = match rustls::ServerConnection::new(config) {
            Ok(s) => s,
            Err(e) => {
                debug!(shard = self.shard.0, conn = %id, error = %e, "cannot start a TLS session");
                self.close_now(id, CloseReason::Tls);
                return;
            }
        };
        let mut tls = TlsConn::new(rustls::Connection::Server(session), listener, None);
        let deadline = std::time::Instant::now() + self.tls.timeout;
        tls.timer = Some(
            self.timers
                .insert(deadline, None, TimerPayload::TlsHandshake(id)),
        );
        let free = self.tls.handshakes < self.tls.max_handshakes;
        if free {
            self.tls.handshakes += 1;
            tls.slot = true;
            self.metrics().tls_handshaking.add(1);
        } else {
            tls.waiting = true;
            self.tls.waiting.push_back(id);
            self.metrics().tls_waiting.add(1);
        }
        let Some(conn) = self.get_mut(id) else { return };
        conn.tls = Some(Box::new(tls));
        if !free {
            // Not read until a slot is free.
            conn.set_reading(false);
        }
    }

    /// Starts a client session on an outbound connection (before its connect).
    pub(crate) fn tls_connect(
        &mut self,
        id: ConnId,
        config: std::sync::Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
        name_text: String,
    ) -> Result<(), rustls::Error> {
        let session = rustls::ClientConnection::new(config, name)?;
        let tls = TlsConn::new(rustls::Connection::Client(session), 0, Some(name_text));
        if let Some(conn) = self.get_mut(id) {
            conn.tls = Some(Box::new(tls));
        }
        Ok(())
    }

    /// An outbound TLS connection's TCP connect completed: send the ClientHello,
    /// start reading and the handshake timer.
    pub(crate) fn tls_connected(&mut self, id: ConnId) {
        let deadline = std::time::Instant::now() + self.tls.timeout;
        let key = self
            .timers
            .insert(deadline, None, TimerPayload::TlsHandshake(id));
        let Some(conn) = self.get_mut(id) else { return };
        let Some(tls) = conn.tls.as_mut() else { return };
        tls.timer = Some(key);
        tls.write_records(&mut conn.out);
        self.list_flush(id);
    }

    /// The handshake of `id` ended (done, failed, or the connection is going):
    /// its timer, its slot (given to the oldest waiter), the waiting line.
    pub(crate) fn tls_handshake_over(&mut self, id: ConnId) {
        let Some(tls) = self.get_mut(id).and_then(|c| c.tls.as_mut()) else {
            return;
        };
        let timer = tls.timer.take();
        let slot = std::mem::take(&mut tls.slot);
        let waiting = std::mem::take(&mut tls.waiting);
        if let Some(key) = timer {
            self.timers.cancel(key);
        }
        if waiting {
            self.metrics().tls_waiting.sub(1);
        }
        if slot {
            self.tls_slot_freed();
        }
    }

    /// A handshake slot came free: the oldest waiting connection takes it.
    pub(crate) fn tls_slot_freed(&mut self) {
        self.tls.handshakes = self.tls.handshakes.saturating_sub(1);
        self.metrics().tls_handshaking.sub(1);
        while self.tls.handshakes < self.tls.max_handshakes {
            let Some(next) = self.tls.waiting.pop_front() else {
                break;
            };
            let Some(tls) = self.get_mut(next).and_then(|c| c.tls.as_mut()) else {
                continue;
            };
            if !tls.waiting {
                continue;
            }
            tls.waiting = false;
            tls.slot = true;
            self.tls.handshakes += 1;
            let m = self.metrics();
            m.tls_waiting.sub(1);
            m.tls_handshaking.add(1);
            self.set_reading(next, true);
        }
    }

    /// The session of `id` failed (bad input, a failed handshake or its timeout):
    /// the alert rustls queued (if any) is sent, no `close_notify`, then the close.
    pub(crate) fn tls_failed(&mut self, id: ConnId) {
        self.metrics().tls_failed.add(1);
        self.tls_handshake_over(id);
        let Some(conn) = self.get_mut(id) else { return };
        if let Some(tls) = conn.tls.as_mut() {
            tls.notify_done = true;
            tls.plain.clear();
        }
        self.close_graceful(id, CloseReason::Tls);
    }

    /// Before the FIN of `id`: queues `close_notify` once. True if it did (the
    /// caller then waits for it to be sent).
    pub(crate) fn tls_close_notify(&mut self, id: ConnId) -> bool {
        let Some(conn) = self.get_mut(id) else {
            return false;
        };
        let Some(tls) = conn.tls.as_mut() else {
            return false;
        };
        if tls.notify_done {
            return false;
        }
        tls.notify_done = true;
        if tls.handshaking {
            return false;
        }
        tls.session.send_close_notify();
        tls.write_records(&mut conn.out);
        !conn.out.is_empty()
    }

    /// Entering `Closing` gracefully: plaintext that can never be encrypted (the
    /// handshake did not finish) is dropped, and no `close_notify` is owed.
    pub(crate) fn tls_closing(&mut self, id: ConnId) {
        let Some(conn) = self.get_mut(id) else { return };
        let Some(tls) = conn.tls.as_mut() else { return };
        if tls.handshaking {
            tls.plain.clear();
            tls.notify_done = true;
        }
    }

    /// The TLS facts of an established session.
    pub(crate) fn tls_info(&self, id: ConnId) -> Option<&TlsInfo> {
        self.get(id)?.tls.as_ref()?.info.as_ref()
    }
}

impl super::conn::Conn {
    /// Where `Ctx::send` queues bytes: the plaintext queue of a TLS connection
    /// (encrypted at the flush), else the outbound queue itself.
    pub(crate) fn send_queue(&mut self) -> &mut OutQueue {
        match self.tls.as_mut() {
            Some(tls) => &mut tls.plain,
            None => &mut self.out,
        }
    }

    /// With a flush delay: when the oldest byte in `send_queue` not yet
    /// handed to the driver was queued.
    pub(crate) fn queued_at(&self) -> Option<std::time::Instant> {
        match self.tls.as_ref() {
            Some(tls) => tls.plain.queued_at(),
            None => self.out.queued_at(),
        }
    }

    /// Bytes waiting to be sent: the outbound queue plus plaintext not yet
    /// encrypted.
    pub(crate) fn pending_len(&self) -> usize {
        self.out.len() + self.tls.as_ref().map_or(0, |t| t.plain.len())
    }

    /// Whether the connection is an open TLS connection still in its handshake.
    pub(crate) fn tls_handshaking(&self) -> bool {
        self.phase == Phase::Open && self.tls.as_ref().is_some_and(|t| t.handshaking)
    }
}
