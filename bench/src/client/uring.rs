//! The io_uring engine. Each connection has one multishot receive armed on a
//! provided-buffer ring for its whole life (re-armed only when the kernel ends it),
//! and a send from the shared pattern per message. Echoed bytes are checked against
//! the pattern as they arrive and their buffer goes straight back to the ring. Where
//! a buffer ring cannot be registered, a plain receive per message into the
//! connection's own slice of one buffer is used instead.
//!
//! One `io_uring_enter` per loop turn submits what the last batch of completions
//! asked for and waits for the next batch (with DEFER_TASKRUN, the completion work
//! runs inside that call).

use std::{
    alloc::{self, Layout},
    ptr::NonNull,
    sync::atomic::{AtomicU16, Ordering},
};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::*;

const OP_SEND: u64 = 0;
const OP_RECV: u64 = 1;
const BUF_GROUP: u16 = 7;
const PAGE: usize = 4096;

#[derive(Clone, Copy, Default)]
struct Conn {
    sent: usize,
    received: usize,
    /// A message is on its way (sent, echo not complete).
    busy: bool,
    send_inflight: bool,
    /// A receive (multishot or single) is armed.
    recv_armed: bool,
    dead: bool,
}

fn ring(entries: u32) -> io::Result<IoUring> {
    let cq = entries.saturating_mul(2);
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(cq)
        .build(entries)
        .or_else(|_| {
            IoUring::builder()
                .setup_coop_taskrun()
                .setup_cqsize(cq)
                .build(entries)
        })
        .or_else(|_| IoUring::builder().setup_cqsize(cq).build(entries))
}

/// Provided buffers: `count` buffers of `size` bytes and the ring of entries that
/// offers them to the kernel.
struct BufRing {
    entries: NonNull<types::BufRingEntry>,
    entries_layout: Layout,
    mem: NonNull<u8>,
    mem_layout: Layout,
    count: u16,
    size: u32,
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring, count: u16, size: u32) -> io::Result<BufRing> {
        let entries_layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<types::BufRingEntry>(),
            PAGE,
        )
        .map_err(|_| io::ErrorKind::InvalidInput)?;
        let mem_layout = Layout::from_size_align(usize::from(count) * size as usize, PAGE)
            .map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: both layouts have a non-zero size (count and size are > 0).
        let entries = NonNull::new(unsafe { alloc::alloc_zeroed(entries_layout) })
            .ok_or(io::ErrorKind::OutOfMemory)?
            .cast::<types::BufRingEntry>();
        // SAFETY: as above.
        let Some(mem) = NonNull::new(unsafe { alloc::alloc_zeroed(mem_layout) }) else {
            // SAFETY: allocated just above with this layout.
            unsafe { alloc::dealloc(entries.as_ptr().cast(), entries_layout) };
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut br = BufRing {
            entries,
            entries_layout,
            mem,
            mem_layout,
            count,
            size,
            tail: 0,
        };
        for bid in 0..count {
            br.push(bid);
        }
        br.publish();
        // SAFETY: the entries are page-aligned, `count` long, and live (with the
        // buffers) until after the ring is unregistered in `Drop` — `Engine` drops
        // this only after the ring has no operation in flight.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                br.entries.as_ptr() as u64,
                count,
                BUF_GROUP,
                0,
            )?;
        }
        Ok(br)
    }

    fn buf(&self, bid: u16, len: usize) -> &[u8] {
        let off = usize::from(bid) * self.size as usize;
        // SAFETY: bid < count and len <= size (the kernel never fills past the
        // buffer's length), so the slice is inside the allocation; the kernel wrote
        // it before posting the completion and will not touch it until it is pushed
        // back.
        unsafe { std::slice::from_raw_parts(self.mem.as_ptr().add(off), len) }
    }

    /// Offers buffer `bid` again (visible to the kernel at the next `publish`).
    fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.count - 1));
        // SAFETY: idx < count: inside the entries allocation.
        let e = unsafe { &mut *self.entries.as_ptr().add(idx) };
        e.set_addr(self.mem.as_ptr() as u64 + u64::from(bid) * u64::from(self.size));
        e.set_len(self.size);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry, which is allocated; the
        // kernel reads it concurrently, hence the atomic store with Release so the
        // entries written before are visible first.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the ring that used them is
        // gone or unregistered, and no operation is in flight.
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            alloc::dealloc(self.mem.as_ptr(), self.mem_layout);
        }
    }
}

struct Engine<'r, 'a> {
    ring: IoUring,
    bufs: Option<BufRing>,
    fds: Vec<types::Fd>,
    conns: Vec<Conn>,
    /// Single-shot fallback: each connection's slice for its echo.
    recv_buf: Vec<u8>,
    run: &'r mut Run<'a>,
    inflight: usize,
}

impl Engine<'_, '_> {
    fn push(&mut self, e: squeue::Entry) -> io::Result<()> {
        // SAFETY: every buffer an entry points into (the pattern, the receive
        // buffer, the provided buffers) lives until the ring is torn down, and
        // `teardown` waits for every operation in flight before returning.
        while unsafe { self.ring.submission().push(&e) }.is_err() {
            self.ring.submit()?;
        }
        self.inflight += 1;
        Ok(())
    }

    fn push_send(&mut self, c: usize) -> io::Result<()> {
        let size = self.run.cfg.msg_size;
        let sent = self.conns[c].sent;
        let e = opcode::Send::new(
            self.fds[c],
            self.run.pattern[sent..].as_ptr(),
            (size - sent) as u32,
        )
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(((c as u64) << 1) | OP_SEND);
        self.conns[c].send_inflight = true;
        self.push(e)
    }

    fn arm_recv(&mut self, c: usize) -> io::Result<()> {
        let e = if self.bufs.is_some() {
            opcode::RecvMulti::new(self.fds[c], BUF_GROUP).build()
        } else {
            let size = self.run.cfg.msg_size;
            let got = self.conns[c].received;
            let ptr = self.recv_buf[c * size + got..].as_mut_ptr();
            opcode::Recv::new(self.fds[c], ptr, (size - got) as u32).build()
        };
        self.conns[c].recv_armed = true;
        self.push(e.user_data(((c as u64) << 1) | OP_RECV))
    }

    /// Starts the next message on connection `c`.
    fn start(&mut self, c: usize) -> io::Result<()> {
        let conn = &mut self.conns[c];
        conn.sent = 0;
        conn.received = 0;
        conn.busy = true;
        self.push_send(c)?;
        if !self.conns[c].recv_armed {
            self.arm_recv(c)?;
        }
        Ok(())
    }

    fn kill(&mut self, c: usize) {
        if !self.conns[c].dead {
            self.conns[c].dead = true;
            self.run.rec.error();
            // Makes the operations in flight complete.
            // SAFETY: shutdown on an fd this engine owns.
            unsafe { libc::shutdown(self.fds[c].0, libc::SHUT_RDWR) };
        }
    }

    fn complete(&mut self, user_data: u64, res: i32, flags: u32, now: Nanos) -> io::Result<()> {
        let c = (user_data >> 1) as usize;
        let size = self.run.cfg.msg_size;
        let retry = res == -libc::EINTR || res == -libc::EAGAIN || res == -libc::ENOBUFS;
        if user_data & 1 == OP_SEND {
            self.inflight -= 1;
            self.conns[c].send_inflight = false;
            if self.conns[c].dead {
                return Ok(());
            }
            if retry {
                return self.push_send(c);
            }
            if res <= 0 {
                self.kill(c);
                return Ok(());
            }
            self.conns[c].sent += res as usize;
            if self.conns[c].sent < size {
                return self.push_send(c);
            }
        } else {
            let ended = self.bufs.is_none() || !cqueue::more(flags);
            if ended {
                self.inflight -= 1;
                self.conns[c].recv_armed = false;
            }
            if res > 0 {
                let n = res as usize;
                let got = self.conns[c].received;
                let fits = self.conns[c].busy && got + n <= size;
                if let Some(bufs) = &mut self.bufs {
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        if fits && bufs.buf(bid, n) != &self.run.pattern[got..got + n] {
                            self.run.rec.error();
                        }
                        bufs.push(bid);
                        bufs.publish();
                    }
                } else if fits
                    && self.recv_buf[c * size + got..c * size + got + n]
                        != self.run.pattern[got..got + n]
                {
                    self.run.rec.error();
                }
                if !fits {
                    // More bytes than were sent: not an echo.
                    self.kill(c);
                    return Ok(());
                }
                self.conns[c].received += n;
            }
            if self.conns[c].dead {
                return Ok(());
            }
            if res == 0 || (res < 0 && !retry) {
                self.kill(c);
                return Ok(());
            }
            let conn = self.conns[c];
            if !conn.recv_armed && conn.received < size {
                self.arm_recv(c)?;
            }
        }
        // A message is complete when both its send and its echo are.
        let conn = self.conns[c];
        if !conn.busy || conn.send_inflight || conn.sent < size || conn.received < size {
            return Ok(());
        }
        self.conns[c].busy = false;
        self.run.rec.record(self.run.sched.due(c), now);
        if self.run.sched.ready(c, now) {
            self.start(c)?;
        }
        Ok(())
    }

    fn wait(&mut self, until: Nanos, now: Nanos) -> io::Result<()> {
        let left = until.saturating_sub(now).max(1_000);
        let ts = types::Timespec::new()
            .sec(left / 1_000_000_000)
            .nsec((left % 1_000_000_000) as u32);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn reap(&mut self, now: Nanos) -> io::Result<()> {
        let mut batch: [(u64, i32, u32); 64] = [(0, 0, 0); 64];
        loop {
            let mut n = 0;
            for cqe in self.ring.completion().take(batch.len()) {
                batch[n] = (cqe.user_data(), cqe.result(), cqe.flags());
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            for &(ud, res, flags) in &batch[..n] {
                self.complete(ud, res, flags, now)?;
            }
        }
    }

    /// Ends every operation in flight (shutting the sockets down makes pending
    /// receives return) so that no buffer is freed under the kernel.
    fn teardown(&mut self) {
        for fd in &self.fds {
            // SAFETY: shutdown on an fd this engine owns.
            unsafe { libc::shutdown(fd.0, libc::SHUT_RDWR) };
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.inflight > 0 && Instant::now() < deadline {
            let ts = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let multishot = self.bufs.is_some();
            for cqe in self.ring.completion() {
                let ends =
                    cqe.user_data() & 1 == OP_SEND || !multishot || !cqueue::more(cqe.flags());
                if ends {
                    self.inflight = self.inflight.saturating_sub(1);
                }
            }
        }
        if self.inflight > 0 {
            // Leak the buffers rather than free them under the kernel.
            std::mem::forget(std::mem::take(&mut self.recv_buf));
            std::mem::forget(self.bufs.take());
        } else if self.bufs.is_some() {
            let _ = self.ring.submitter().unregister_buf_ring(BUF_GROUP);
        }
    }
}

pub(super) fn run(
    cfg: &LoadConfig,
    streams: Vec<TcpStream>,
    on_window: &mut (dyn FnMut(Window) + Send),
    origin: Instant,
) -> anyhow::Result<Finished> {
    let entries = (2 * cfg.conns + 16).next_power_of_two().clamp(64, 32_768) as u32;
    let ring = ring(entries).context("creating the client's io_uring")?;
    // Two buffers per connection (an echo may arrive in pieces), each big enough
    // for a whole message up to 16 KiB.
    let count = (2 * cfg.conns).next_power_of_two().clamp(64, 32_768) as u16;
    let size = cfg.msg_size.next_power_of_two().clamp(256, 16 << 10) as u32;
    let bufs = BufRing::new(&ring, count, size).ok();
    let mut run = Run::new(cfg, on_window, origin);
    let fds = streams.iter().map(|s| types::Fd(s.as_raw_fd())).collect();
    let recv_buf = if bufs.is_some() {
        Vec::new()
    } else {
        vec![0; cfg.conns * cfg.msg_size]
    };
    let mut e = Engine {
        ring,
        bufs,
        fds,
        conns: vec![Conn::default(); cfg.conns],
        recv_buf,
        run: &mut run,
        inflight: 0,
    };
    let result = (|| -> anyhow::Result<()> {
        let now = e.run.now();
        for c in 0..cfg.conns {
            if e.run.sched.ready(c, now) {
                e.start(c)?;
            } else {
                e.arm_recv(c)?;
            }
        }
        loop {
            let now = e.run.now();
            if !e.run.tick(now) {
                return Ok(());
            }
            while let Some(c) = e.run.sched.pop_due(now) {
                if !e.conns[c].dead {
                    e.start(c)?;
                }
            }
            if e.conns.iter().all(|c| c.dead) {
                bail!("every connection failed");
            }
            let until = e.run.wait_until();
            e.wait(until, now).context("io_uring_enter")?;
            let now = e.run.now();
            e.reap(now).context("submitting to io_uring")?;
        }
    })();
    e.teardown();
    let alive = e.conns.iter().filter(|c| !c.dead).count();
    drop(e);
    drop(streams);
    result?;
    Ok(run.report(alive))
}
