//! Kernel-side relaying: one direction of a connection pair moved through a pipe
//! with splice(2) (epoll) or `IORING_OP_SPLICE` (io_uring), so its bytes never
//! reach user space. Started with [`Ctx::splice_into`](crate::Ctx::splice_into).
//!
//! # Protocol
//!
//! A relay `from -> to` (two connections of one shard) owns one pipe from the
//! shard's [`PipePool`] and moves bytes in two steps, each at most one operation in
//! flight:
//!
//! - **fill** (an op of `from`): socket -> pipe, at most the room left in the pipe.
//!   Issued while `from` is open, not paused, not at EOF and the pipe has room.
//!   A fill that returns 0 is `from`'s EOF.
//! - **drain** (an op of `to`, sharing `to`'s one-send-in-flight slot): pipe ->
//!   socket. Issued by the flush only when `to`'s outbound queue is empty and no
//!   send is in flight, so everything queued to `to` before (or during) the relay
//!   goes out before the pipe's bytes that came after it. A drain that meets a full
//!   socket is "retry" like a send: `to`'s writable edge retries it.
//!
//! Backpressure falls out: a pipe that `to` does not drain fills up, and a full
//! pipe issues no fill, so `from` is not read and TCP slows its peer; the shard
//! holds at most one pipe's capacity per relay, in the kernel.
//!
//! Ordering at the start: `Ctx::splice_into` stops `from`'s ordinary reads at
//! once. Bytes a read already took in (the rest of the current `on_data` slice the
//! handler left unconsumed, input held while paused, and on io_uring what the
//! cancelled multishot recv still delivers) are queued to `to` as if sent, ahead of
//! the pipe. The io_uring driver issues the first fill only after the recv ended,
//! so no relayed byte can overtake one read the ordinary way.
//!
//! The end: `from`'s EOF is reported to the handler (`on_eof(from)`) only once the
//! pipe is empty, i.e. after every byte reached `to`, so a proxy forwards the FIN
//! with `Ctx::shutdown_write(to)` as before. A read error closes `from`, a write
//! error closes `to` (`on_close` as usual). When either connection is released the
//! relay ends: its in-flight ops are cancelled, bytes still in the pipe are dropped
//! (at most one pipe's worth: the peer was leaving anyway), and the pipe goes back to
//! the pool only if it is empty (else it is closed). A graceful close or half-close
//! of `to` waits for the pipe to drain like it waits for the queue, and a graceful
//! close of `from` waits for it too (what `from` sent before its close still
//! reaches `to`); only an abortive close (errors, deadlines, linger) drops it.
//!
//! # Must never
//!
//! Let the pipe hold more than its capacity (fills are capped by the room left),
//! hand a non-empty pipe to another relay, or close a pipe fd while an op that
//! names it may still be issued (the driver's `cancel_splice` guarantees that).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use crate::ConnId;

/// A pipe: read end and write end, both non-blocking.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes the pipe holds at most (the kernel's figure after F_SETPIPE_SZ).
    capacity: usize,
}

impl Pipe {
    fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the local array on success.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both descriptors are new and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut capacity = 64 << 10;
        if size > 0 {
            let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
            // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ returns the new size.
            let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
            if got > 0 {
                capacity = got as usize;
            }
        }
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    pub(crate) fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    pub(crate) fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

/// A shard's bounded set of pipes (each costs two fds): idle ones are kept for
/// reuse, at most `max` exist at once; when none can be had, the caller copies.
#[derive(Debug)]
pub(crate) struct PipePool {
    idle: Vec<Pipe>,
    /// Pipes in existence (idle or in use).
    live: usize,
    max: usize,
    /// F_SETPIPE_SZ for new pipes; 0 keeps the kernel default.
    size: usize,
}

impl PipePool {
    pub(crate) fn new(max: usize, size: usize) -> PipePool {
        PipePool {
            idle: Vec::new(),
            live: 0,
            max,
            size,
        }
    }

    /// An empty pipe, or `None` when the pool is at its limit or the OS refuses one.
    pub(crate) fn take(&mut self) -> Option<Pipe> {
        if let Some(p) = self.idle.pop() {
            return Some(p);
        }
        if self.live >= self.max {
            return None;
        }
        match Pipe::new(self.size) {
            Ok(p) => {
                self.live += 1;
                Some(p)
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot create a pipe for splice; copying");
                None
            }
        }
    }

    /// Gives a pipe back: kept for reuse if `empty`, else closed.
    pub(crate) fn give(&mut self, pipe: Pipe, empty: bool) {
        if empty {
            self.idle.push(pipe);
        } else {
            self.live = self.live.saturating_sub(1);
        }
    }
}

/// One relay `from -> to`; see the module doc.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) from: ConnId,
    pub(crate) to: ConnId,
    pub(crate) pipe: Pipe,
    /// Bytes in the pipe (filled and not yet drained).
    pub(crate) in_pipe: usize,
    /// A fill op is in flight.
    pub(crate) filling: bool,
    /// The last fill found the pipe full (pipe buffers hold partial pages, so it
    /// can be full below `capacity`): the next fill waits for a drain.
    pub(crate) pipe_full: bool,
    /// A fill returned 0: `from` sent its FIN; `on_eof` once the pipe is empty.
    pub(crate) eof: bool,
}

impl Relay {
    /// Room left in the pipe.
    pub(crate) fn room(&self) -> usize {
        self.pipe.capacity().saturating_sub(self.in_pipe)
    }
}

/// Why [`Ctx::splice_into`](crate::Ctx::splice_into) did not start a relay. Every
/// case leaves both connections as they were: keep copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpliceError {
    /// An id is stale, or both name the same connection.
    #[error("no such pair of connections on this shard")]
    UnknownConn,
    /// A connection is connecting, closing, half-closed (`to`) or at EOF (`from`).
    #[error("connection not open for relaying")]
    NotOpen,
    /// `from` is already relayed, or `to` already receives a relay.
    #[error("connection already relayed")]
    Busy,
    /// The shard's pipe pool is used up (or relaying is off: pool size 0).
    #[error("no pipe available")]
    NoPipe,
    /// A connection is a TLS connection: its socket carries records, not the
    /// plaintext the handler sees, so it cannot be spliced (copy instead).
    #[error("TLS connections cannot be spliced")]
    Tls,
}

/// Relay bookkeeping on the shard's side (no driver calls here: the loop issues
/// fills from `to_fill` and drains from the flush, and ends relays at release).
impl super::core::Core {
    /// `Ctx::splice_into`: checks, takes a pipe, links the pair.
    pub(crate) fn splice_into(&mut self, from: ConnId, to: ConnId) -> Result<(), SpliceError> {
        use super::conn::Phase;
        let (Some(f), Some(t)) = (self.get(from), self.get(to)) else {
            return Err(SpliceError::UnknownConn);
        };
        if from == to {
            return Err(SpliceError::UnknownConn);
        }
        if f.phase != Phase::Open
            || t.phase != Phase::Open
            || f.eof()
            || t.shut_pending()
            || t.write_shut()
        {
            return Err(SpliceError::NotOpen);
        }
        if f.tls.is_some() || t.tls.is_some() {
            return Err(SpliceError::Tls);
        }
        if f.relay_out().is_some() || t.relay_in().is_some() {
            return Err(SpliceError::Busy);
        }
        let pipe = self.pipes.take().ok_or(SpliceError::NoPipe)?;
        let key = self.relays.insert(Relay {
            from,
            to,
            pipe,
            in_pipe: 0,
            filling: false,
            pipe_full: false,
            eof: false,
        });
        if let Some(f) = self.get_mut(from) {
            f.set_relay_out(Some(key as u32));
        }
        if let Some(t) = self.get_mut(to) {
            t.set_relay_in(Some(key as u32));
        }
        self.metrics().relays_started.add(1);
        // Ordinary reads stop now (applied after the callback); what they already
        // took in goes to `to` ahead of the pipe.
        self.read_changes.push(from);
        self.spill_input(from);
        self.to_fill.push(from);
        Ok(())
    }

    /// The relay `from` feeds, if any: its key and destination.
    pub(crate) fn relay_of(&self, from: ConnId) -> Option<(usize, ConnId)> {
        let key = self.get(from)?.relay_out()? as usize;
        Some((key, self.relays.get(key)?.to))
    }

    /// Moves input `from` holds (unconsumed, or read before the relay took over) to
    /// the relay's destination, as if the handler had sent it there.
    pub(crate) fn spill_input(&mut self, from: ConnId) {
        let Some((_, to)) = self.relay_of(from) else {
            return;
        };
        let Some(f) = self.get_mut(from) else { return };
        let input = f.input.take().unwrap_or_default();
        f.set_unpresented(false);
        let eof_deferred = f.eof_deferred();
        f.set_eof_deferred(false);
        if !input.is_empty() {
            // An error means `to` is going away: its release ends the relay.
            let _ = self.queue_copy(to, &input);
        }
        if eof_deferred {
            self.relay_eof(from);
        }
    }

    /// Bytes read the ordinary way after the relay started (io_uring: the
    /// cancelled recv's last completions; epoll: the rest of the read loop).
    pub(crate) fn relay_late_data(&mut self, from: ConnId, data: &[u8]) -> bool {
        let Some((_, to)) = self.relay_of(from) else {
            return false;
        };
        let _ = self.queue_copy(to, data);
        true
    }

    /// `from` reached EOF (a fill returned 0, or a late ordinary read did):
    /// `on_eof` once the pipe is empty.
    pub(crate) fn relay_eof(&mut self, from: ConnId) {
        let Some((key, _)) = self.relay_of(from) else {
            return;
        };
        if let Some(f) = self.get_mut(from) {
            f.set_eof(true);
        }
        if let Some(r) = self.relays.get_mut(key) {
            r.eof = true;
        }
        self.relay_settle(key);
    }

    /// A fill finished.
    pub(crate) fn relay_filled(&mut self, from: ConnId, result: io::Result<usize>) {
        let Some((key, to)) = self.relay_of(from) else {
            return;
        };
        let Some(r) = self.relays.get_mut(key) else {
            return;
        };
        r.filling = false;
        match result {
            Ok(0) => self.relay_eof(from),
            Ok(n) => {
                r.in_pipe += n;
                if let Some(f) = self.get_mut(from) {
                    f.received = f.received.wrapping_add(n as u64);
                }
                self.metrics().bytes_in.add(n as u64);
                self.metrics().bytes_spliced.add(n as u64);
                self.list_flush(to);
                self.to_fill.push(from);
                self.continue_close(from);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if r.in_pipe > 0 {
                    r.pipe_full = true;
                } else {
                    // An empty pipe is never full: the socket was empty, wait again.
                    self.to_fill.push(from);
                }
                self.continue_close(from);
            }
            Err(e) => self.close_now(from, crate::CloseReason::Io(e.kind())),
        }
    }

    /// A drain of the relay into `to` finished (`result` as a send's).
    pub(crate) fn relay_drained(&mut self, to: ConnId, result: io::Result<usize>) {
        let Some(key) = self.get(to).and_then(|t| t.relay_in()).map(|k| k as usize) else {
            // The relay ended while the drain was in flight: nothing to account.
            self.list_flush(to);
            self.continue_shutdown(to);
            return;
        };
        let Some(r) = self.relays.get_mut(key) else {
            return;
        };
        match result {
            Ok(n) => {
                r.in_pipe = r.in_pipe.saturating_sub(n);
                if n > 0 {
                    r.pipe_full = false;
                }
                let from = r.from;
                self.metrics().bytes_out.add(n as u64);
                self.to_fill.push(from);
                self.list_flush(to);
                self.relay_settle(key);
                // A closing source waits for its piped bytes to leave.
                self.continue_close(from);
            }
            Err(e) => self.close_now(to, crate::CloseReason::Io(e.kind())),
        }
    }

    /// Whether the relay `from` feeds still holds bytes (or a fill is in
    /// flight): a graceful close of `from` waits for them to reach `to`.
    pub(crate) fn feeding_relay(&self, from: ConnId) -> bool {
        self.relay_of(from)
            .and_then(|(key, _)| self.relays.get(key))
            .is_some_and(|r| r.in_pipe > 0 || r.filling)
    }

    /// Bytes in the pipe of the relay writing into `to` (a close or half-close of
    /// `to` waits for them like for its queue).
    pub(crate) fn piped_into(&self, to: ConnId) -> usize {
        self.get(to)
            .and_then(|t| t.relay_in())
            .map(|k| k as usize)
            .and_then(|k| self.relays.get(k))
            .map_or(0, |r| r.in_pipe)
    }

    /// A relay whose source ended and whose pipe is empty is over: the pipe goes
    /// back to the pool, the pair is unlinked, the handler hears `on_eof(from)`.
    fn relay_settle(&mut self, key: usize) {
        let Some(r) = self.relays.get(key) else {
            return;
        };
        let to_busy = self.get(r.to).is_some_and(|t| t.draining());
        if !r.eof || r.in_pipe > 0 || r.filling || to_busy {
            return;
        }
        let r = self.relays.remove(key);
        self.pipes.give(r.pipe, true);
        if let Some(f) = self.get_mut(r.from) {
            f.set_relay_out(None);
        }
        if let Some(t) = self.get_mut(r.to) {
            t.set_relay_in(None);
        }
        self.continue_shutdown(r.to);
        self.continue_close(r.to);
        if self.get(r.from).is_some_and(|f| !f.is_closing()) {
            self.notices.push(super::core::Notice::Eof(r.from));
        }
    }

    /// Unlinks relay `key` because one of its connections is being released. The
    /// caller has cancelled its in-flight ops (so the pipe may be closed now).
    pub(crate) fn relay_detach(&mut self, key: usize) {
        let Some(r) = self.relays.try_remove(key) else {
            return;
        };
        let empty = r.in_pipe == 0 && !r.filling && !self.get(r.to).is_some_and(|t| t.draining());
        if let Some(f) = self.get_mut(r.from) {
            f.set_relay_out(None);
            // Back to ordinary reads; an EOF a fill saw is told now.
            self.read_changes.push(r.from);
            if r.eof {
                self.notices.push(super::core::Notice::Eof(r.from));
            }
            // A closing source that waited for the pipe need not any more.
            self.continue_close(r.from);
        }
        if self.get_mut(r.to).is_some() {
            if let Some(t) = self.get_mut(r.to) {
                t.set_relay_in(None);
            }
            self.list_flush(r.to);
            self.continue_shutdown(r.to);
            self.continue_close(r.to);
        }
        let Relay { pipe, .. } = r;
        self.pipes.give(pipe, empty);
    }
}
