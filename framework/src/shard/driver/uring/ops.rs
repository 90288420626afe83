//! Op bookkeeping of the io_uring driver: how user_data names a request (its kind
//! in the top byte, a payload below), the requests whose memory the kernel reads
//! (`ops`), the submission queue with its backlog, and routing each completion to
//! its handler by kind.

use std::io;

use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue};
use socket2::SockAddr;
use tracing::warn;

use super::{
    direct::{ACCEPT_ONE, CLOSE_FIXED, SHUTDOWN_FIXED, UNREAD},
    Sink, UringDriver,
};
use crate::{shard::driver::Completion, ConnId};

/// user_data is `kind << KIND_SHIFT | payload`.
const KIND_SHIFT: u32 = 56;
const PAYLOAD_MASK: u64 = (1 << KIND_SHIFT) - 1;
/// Payload: listener index, generation above bit 32 ([`UringDriver::accept_data`]).
const ACCEPT: u8 = 1;
/// Payload: `ConnId::to_bits`.
pub(super) const RECV: u8 = 2;
/// Payload (SEND and CONNECT): a key into `ops`, which owns what the kernel reads.
pub(super) const SEND: u8 = 3;
pub(super) const CONNECT: u8 = 4;
/// Completions ignored.
pub(super) const CANCEL: u8 = 5;
pub(super) const DOORBELL: u8 = 6;
/// Payload: token, generation above bit 32 ([`UringDriver::watch_data`]).
const WATCH: u8 = 7;
/// Relay ops (payload: `ConnId::to_bits`): a POLL_ADD linked to the SPLICE it
/// guards, for a fill (socket -> pipe) and a drain (pipe -> socket).
pub(super) const FILL_POLL: u8 = 8;
pub(super) const FILL: u8 = 9;
pub(super) const DRAIN_POLL: u8 = 10;
pub(super) const DRAIN: u8 = 11;

/// Send buffers kept for reuse, so steady-state sends allocate nothing.
const SPARE_SENDS: usize = 256;

pub(super) fn user_data(kind: u8, payload: u64) -> u64 {
    (u64::from(kind) << KIND_SHIFT) | (payload & PAYLOAD_MASK)
}

pub(super) fn os_error(res: i32) -> io::Error {
    io::Error::from_raw_os_error(-res)
}

/// What the kernel reads for one `sendmsg`; boxed so its address is stable.
pub(super) struct SendBufs {
    pub(super) hdr: libc::msghdr,
    pub(super) iov: Vec<libc::iovec>,
    pub(super) chunks: Vec<Bytes>,
}

/// An in-flight send, connect or direct accept: whose, and what the kernel reads
/// or writes for it.
pub(super) enum Op {
    Send {
        conn: ConnId,
        bufs: Box<SendBufs>,
    },
    Connect {
        conn: ConnId,
        _addr: Box<SockAddr>,
    },
    /// A single-shot accept into `slot` (`None`: an ordinary fd, moved into the
    /// table after its local address was read).
    Accept {
        listener: usize,
        generation: u32,
        slot: Option<u32>,
        addr: Box<super::direct::AcceptAddr>,
    },
}

impl UringDriver {
    /// Queues an SQE; a full SQ is submitted to make room.
    pub(super) fn push(&mut self, sqe: squeue::Entry) {
        if self.backlog.is_empty() {
            // SAFETY (both pushes): every SQE built here points only at memory that
            // outlives its CQE (see the module doc).
            if unsafe { self.ring.submission().push(&sqe) }.is_ok()
                || (self.submit_now() && unsafe { self.ring.submission().push(&sqe) }.is_ok())
            {
                return;
            }
        }
        self.backlog.push_back(sqe);
    }

    /// Moves backlogged SQEs into the SQ, submitting when it fills.
    pub(super) fn flush_backlog(&mut self) {
        while let Some(sqe) = self.backlog.front() {
            // SAFETY: as in `push`.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                self.backlog.pop_front();
            } else if !self.submit_now() || self.ring.submission().is_full() {
                return;
            }
        }
    }

    /// One io_uring_enter without waiting; false if it failed.
    pub(super) fn submit_now(&mut self) -> bool {
        self.enters += 1;
        let result = self.ring.submit();
        if let Err(e) = &result {
            warn!(error = %e, "io_uring submit failed; keeping requests for the next turn");
        }
        result.is_ok()
    }

    /// Whether an SQE (which may name an fd about to be closed) waits to be submitted.
    pub(super) fn has_pending(&mut self) -> bool {
        !self.backlog.is_empty() || !self.ring.submission().is_empty()
    }

    pub(super) fn submit_pending(&mut self) {
        self.flush_backlog();
        if !self.ring.submission().is_empty() {
            self.submit_now();
        }
        self.flush_backlog();
    }

    /// Queues a send or connect, remembering it on the connection for `remove_conn`.
    pub(super) fn push_op(&mut self, conn: ConnId, sqe: squeue::Entry) {
        if let Some(index) = self.slot_index(conn) {
            self.conns[index].op = std::num::NonZeroU64::new(sqe.get_user_data());
        }
        self.push(sqe);
    }

    pub(super) fn cancel(&mut self, target: u64) {
        let sqe = opcode::AsyncCancel::new(target).build();
        self.push(sqe.user_data(user_data(CANCEL, 0)));
    }

    pub(super) fn accept_data(index: usize, generation: u32) -> u64 {
        user_data(ACCEPT, index as u64 | (u64::from(generation) << 32))
    }

    pub(super) fn watch_data(token: u32, generation: u32) -> u64 {
        user_data(WATCH, u64::from(token) | (u64::from(generation) << 32))
    }

    pub(super) fn complete(&mut self, cqe: &cqueue::Entry, sink: Sink<'_>) {
        let (res, flags) = (cqe.result(), cqe.flags());
        let payload = cqe.user_data() & PAYLOAD_MASK;
        match (cqe.user_data() >> KIND_SHIFT) as u8 {
            RECV => self.on_recv(payload, res, flags, sink),
            SEND | CONNECT => self.on_op(payload as usize, res, sink),
            ACCEPT => self.on_accept(payload, res, cqueue::more(flags), sink),
            DOORBELL => self.on_doorbell(res, cqueue::more(flags), sink),
            WATCH => self.on_watch(payload, res, cqueue::more(flags), sink),
            FILL => self.on_fill(payload, res, sink),
            DRAIN => self.on_drain(payload, res, sink),
            FILL_POLL | DRAIN_POLL => {}
            ACCEPT_ONE => self.on_direct_accept(payload as usize, res, sink),
            CLOSE_FIXED => self.on_close_fixed(payload, res),
            SHUTDOWN_FIXED => self.on_shutdown_fixed(payload, res),
            UNREAD => self.on_unread(payload, res, sink),
            CANCEL => {}
            kind => warn!(kind, "io_uring completion of unknown kind"),
        }
    }

    pub(super) fn on_op(&mut self, key: usize, res: i32, sink: Sink<'_>) {
        let conn = match self.ops.get(key) {
            Some(Op::Send { conn, .. } | Op::Connect { conn, .. }) => *conn,
            Some(Op::Accept { .. }) | None => return,
        };
        let Some(op) = self.ops.try_remove(key) else {
            return;
        };
        if let Some(index) = self.slot_index(conn) {
            self.conns[index].op = None;
        }
        let error = (res < 0).then(|| os_error(res));
        match op {
            Op::Send { mut bufs, .. } => {
                bufs.chunks.clear();
                bufs.iov.clear();
                if self.spare_sends.len() < SPARE_SENDS {
                    self.spare_sends.push(bufs);
                }
                let result = error.map_or(Ok(res as usize), Err);
                sink(Completion::Sent { conn, result });
            }
            Op::Connect { .. } => sink(Completion::Connected {
                conn,
                result: error.map_or(Ok(()), Err),
            }),
            Op::Accept { .. } => {}
        }
    }
}
