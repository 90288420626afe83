//! Reading on io_uring: a multishot recv with a byte cap per arm, or one-shot
//! recvs, both selecting buffers from the provided-buffer ring.

use io_uring::{cqueue, opcode, squeue};
use tracing::debug;

use super::{
    bufring::BUF_GROUP,
    ops::{os_error, user_data, RECV},
    Sink, UringDriver,
};
use crate::{shard::driver::Completion, ConnId};

/// `IORING_RECVSEND_POLL_FIRST` (sqe->ioprio of a recv or send).
const RECVSEND_POLL_FIRST: u16 = 1;

/// Byte offset of `optlen` in an SQE (the union at 44 with `file_index`,
/// `splice_fd_in`, `addr_len`). For a multishot recv it is the total the request may
/// receive before it ends itself (`IORING_RECV_MSHOT_LIM`, Linux 6.16+); older
/// kernels reject a non-zero value there with EINVAL.
const SQE_OPTLEN_OFFSET: usize = 44;

const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);

/// `sqe` with `optlen` set to `cap`. The io-uring crate has no setter for it yet.
fn with_optlen(sqe: squeue::Entry, cap: u32) -> squeue::Entry {
    // SAFETY: `squeue::Entry` is a `repr(C)` wrapper of the 64-byte `io_uring_sqe`,
    // made of integers and unions of integers only, so every bit pattern is valid;
    // the assertion above pins the size.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(sqe) };
    raw[SQE_OPTLEN_OFFSET..SQE_OPTLEN_OFFSET + 4].copy_from_slice(&cap.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

impl UringDriver {
    pub(super) fn arm_recv(&mut self, index: usize) {
        let slot = &mut self.conns[index];
        let Some(id) = slot.id(index) else { return };
        slot.recv_armed = true;
        self.recv_arms += 1;
        let (fd, fixed) = self.target(index);
        let sqe = match self.recv_cap {
            // Multishot: one arm serves many reads (no SQE, poll arm and hash per
            // read). Without a cap it would keep draining a fast peer into the ring
            // until a pause's cancel lands — megabytes; the cap bounds what a paused
            // connection takes in to `cap` bytes, and the request then ends itself.
            Some(cap) => with_optlen(opcode::RecvMulti::new(fd, BUF_GROUP).build(), cap),
            // One-shot with buffer selection, re-armed after each completion: at
            // most one buffer arrives after the shard stops reading. POLL_FIRST: the
            // socket was just drained (or is new), so skip the non-blocking attempt
            // that would fail with EAGAIN and wait for data.
            None => opcode::Recv::new(fd, std::ptr::null_mut(), self.buf_size)
                .buf_group(BUF_GROUP)
                .ioprio(RECVSEND_POLL_FIRST)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT),
        };
        self.push(sqe.flags(fixed).user_data(user_data(RECV, id.to_bits())));
    }

    pub(super) fn on_recv(&mut self, bits: u64, res: i32, flags: u32, sink: Sink<'_>) {
        let index = self.slot_index(ConnId::from_bits(bits));
        // The id as the shard knows it, or None for a removed connection.
        let conn = index.and_then(|i| self.conns[i].id(i));
        if let Some(bid) = cqueue::buffer_select(flags) {
            if let (Some(conn), true) = (conn, res > 0) {
                let ptr = self.bufs.buf_ptr(bid);
                // SAFETY: the kernel wrote `res` bytes (at most buf_size) into buffer
                // `bid` and will not touch it until we push it back, after the sink.
                let data = unsafe { std::slice::from_raw_parts(ptr, res as usize) };
                sink(Completion::Data { conn, data });
            }
            self.bufs.push(bid);
            self.bufs.publish();
        }
        let (Some(index), Some(conn)) = (index, conn) else {
            return;
        };
        let slot = &mut self.conns[index];
        slot.recv_armed &= cqueue::more(flags);
        if !slot.recv_armed && !self.pending_fills.is_empty() {
            if let Some((pipe_w, max)) = self.pending_fills.remove(&conn.index) {
                self.issue_fill(index, pipe_w, max);
            }
        }
        let slot = &mut self.conns[index];
        match res {
            1.. => {}
            0 => {
                slot.read_closed = true;
                sink(Completion::ReadClosed { conn, error: None });
            }
            e if e == -libc::ENOBUFS => {
                // Serve it after every buffer of this reap went back (end of `reap`).
                self.enobufs += 1;
                if !std::mem::replace(&mut slot.rearm_queued, true) {
                    self.rearm.push(conn);
                }
                return;
            }
            e if e == -libc::ECANCELED => {}
            e if e == -libc::EINVAL && self.recv_cap.is_some() && !cqueue::more(flags) => {
                // This kernel has no byte cap for multishot recv (before 6.16):
                // one-shot recvs from now on, for every connection of this ring.
                debug!("io_uring multishot recv cap unsupported; using one-shot recvs");
                self.recv_cap = None;
            }
            e => {
                slot.read_closed = true;
                sink(Completion::ReadClosed {
                    conn,
                    error: Some(os_error(e)),
                });
            }
        }
        let slot = &self.conns[index];
        if slot.want_read && !slot.recv_armed && !slot.read_closed {
            self.arm_recv(index);
        }
    }
}
