//! Splice relays on io_uring: a fill (socket -> pipe) or a drain (pipe -> socket)
//! is a POLL_ADD linked to the SPLICE it guards; cancelling them before a pipe or
//! socket closes is synchronous.

use std::{
    os::fd::RawFd,
    time::{Duration, Instant},
};

use io_uring::{opcode, squeue, types};
use tracing::warn;

use super::{
    ops::{os_error, user_data, DRAIN, DRAIN_POLL, FILL, FILL_POLL},
    Sink, UringDriver,
};
use crate::{shard::driver::Completion, ConnId};

/// Offset meaning "none" for the pipe and socket ends of a splice.
const NO_OFFSET: i64 = -1;

/// A synchronous splice cancel longer than this is logged (it blocks the shard).
const SLOW_SYNC_CANCEL: Duration = Duration::from_millis(10);

impl UringDriver {
    /// POLL_ADD(POLLIN) linked to SPLICE(socket -> pipe): the splice runs (in an
    /// io-wq worker: the kernel always punts splice) only once the socket has
    /// data, so no worker blocks on an idle socket.
    pub(super) fn issue_fill(&mut self, index: usize, pipe_w: RawFd, max: u32) {
        let slot = &mut self.conns[index];
        let Some(id) = slot.id(index) else { return };
        slot.fill = true;
        let (fd, fixed) = self.target(index);
        let poll = opcode::PollAdd::new(fd, libc::POLLIN as u32)
            .build()
            .flags(squeue::Flags::IO_LINK | fixed)
            .user_data(user_data(FILL_POLL, id.to_bits()));
        let flags = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;
        let splice = if fixed.is_empty() {
            opcode::Splice::new(fd, NO_OFFSET, types::Fd(pipe_w), NO_OFFSET, max)
        } else {
            // SPLICE_F_FD_IN_FIXED: the source is a slot of the file table.
            opcode::Splice::new(
                types::Fixed(fd.0 as u32),
                NO_OFFSET,
                types::Fd(pipe_w),
                NO_OFFSET,
                max,
            )
        };
        let splice = splice
            .flags(flags)
            .build()
            .user_data(user_data(FILL, id.to_bits()));
        self.push_pair(poll, splice);
    }

    /// Same shape as a fill, waiting for POLLOUT: pipe -> socket.
    pub(super) fn issue_drain(&mut self, index: usize, pipe_r: RawFd, len: u32) {
        let slot = &mut self.conns[index];
        let Some(id) = slot.id(index) else { return };
        slot.drain = true;
        let (fd, fixed) = self.target(index);
        let poll = opcode::PollAdd::new(fd, libc::POLLOUT as u32)
            .build()
            .flags(squeue::Flags::IO_LINK | fixed)
            .user_data(user_data(DRAIN_POLL, id.to_bits()));
        // The socket is the splice's target: its fd field, so FIXED_FILE applies.
        let splice = opcode::Splice::new(types::Fd(pipe_r), NO_OFFSET, fd, NO_OFFSET, len)
            .flags(libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE)
            .build()
            .flags(fixed)
            .user_data(user_data(DRAIN, id.to_bits()));
        self.push_pair(poll, splice);
    }

    /// Two linked SQEs must be in the same submission: make room for both first.
    fn push_pair(&mut self, first: squeue::Entry, second: squeue::Entry) {
        let room = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if room < 2 || !self.backlog.is_empty() {
            self.submit_pending();
        }
        self.push(first);
        self.push(second);
    }

    pub(super) fn on_fill(&mut self, bits: u64, res: i32, sink: Sink<'_>) {
        let Some(index) = self.slot_index(ConnId::from_bits(bits)) else {
            return;
        };
        let slot = &mut self.conns[index];
        if slot.stale_fills > 0 {
            slot.stale_fills -= 1;
            return;
        }
        slot.fill = false;
        let Some(conn) = slot.id(index) else { return };
        let result = match res {
            0.. => Ok(res as usize),
            // Readable, yet nothing moved: a full pipe (partial pages); the shard
            // retries after the next drain (or at once if the pipe is empty).
            e if e == -libc::EAGAIN => Err(os_error(e)),
            e => Err(os_error(e)),
        };
        sink(Completion::Spliced { conn, result });
    }

    pub(super) fn on_drain(&mut self, bits: u64, res: i32, sink: Sink<'_>) {
        let Some(index) = self.slot_index(ConnId::from_bits(bits)) else {
            return;
        };
        let slot = &mut self.conns[index];
        slot.drain = false;
        let Some(conn) = slot.id(index) else { return };
        let result = match res {
            0.. => Ok(res as usize),
            e if e == -libc::EAGAIN => Ok(0),
            e => Err(os_error(e)),
        };
        sink(Completion::Sent { conn, result });
    }

    /// Cancels the relay ops of slot `index` and waits until the kernel is done
    /// with them (a splice in an io-wq worker resolves its fds only when it runs:
    /// the pipe and the socket must outlive that). Bounded by one second.
    pub(super) fn sync_cancel_splices(&mut self, index: usize) {
        let slot = self.conns[index];
        let Some(id) = slot.id(index) else { return };
        let mut targets = Vec::with_capacity(4);
        if slot.fill {
            targets.extend([FILL_POLL, FILL]);
        }
        if slot.drain {
            targets.extend([DRAIN_POLL, DRAIN]);
        }
        if targets.is_empty() {
            return;
        }
        self.submit_pending();
        let started = Instant::now();
        for kind in targets {
            let ud = user_data(kind, id.to_bits());
            let timeout = types::Timespec::from(Duration::from_secs(1));
            let cancel = types::CancelBuilder::user_data(ud).all();
            match self
                .ring
                .submitter()
                .register_sync_cancel(Some(timeout), cancel)
            {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => warn!(conn = %id, error = %e, "io_uring splice cancel failed"),
            }
        }
        // The shard waited here; say so when it was long enough to notice.
        let waited = started.elapsed();
        if waited > SLOW_SYNC_CANCEL {
            warn!(conn = %id, ?waited, "cancelling a splice in flight held the shard");
        }
    }
}
