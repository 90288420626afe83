//! Multishot requests that report events rather than data: accept on the shard's
//! listeners, POLL_ADD on watched fds (`watch_readable`) and on the doorbell.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, types};
use tracing::warn;

use super::{
    ops::{os_error, user_data, DOORBELL},
    Sink, UringDriver,
};
use crate::{
    accept::policy,
    shard::driver::{Accepted, Completion},
};

impl UringDriver {
    pub(super) fn arm_accept(&mut self, index: usize) {
        if self.files.is_some() {
            return self.arm_direct_accepts(index);
        }
        let Some(Some(l)) = self.listeners.get_mut(index) else {
            return;
        };
        l.armed = true;
        // Blocking sockets: io_uring waits for readiness itself (internal poll).
        // With O_NONBLOCK a send that meets a full socket can complete with EAGAIN
        // instead of waiting (seen here about once in a dozen backpressure runs).
        let flags = libc::SOCK_CLOEXEC;
        let sqe = opcode::AcceptMulti::new(types::Fd(l.fd))
            .flags(flags)
            .build();
        let ud = Self::accept_data(index, l.generation);
        self.push(sqe.user_data(ud));
    }

    pub(super) fn arm_watch(&mut self, token: u32) {
        let Some(Some(w)) = self.watches.get(token as usize) else {
            return;
        };
        let sqe = opcode::PollAdd::new(types::Fd(w.fd), libc::POLLIN as u32).multi(true);
        let ud = Self::watch_data(token, w.generation);
        self.push(sqe.build().user_data(ud));
    }

    pub(super) fn on_watch(&mut self, payload: u64, res: i32, more: bool, sink: Sink<'_>) {
        let token = payload as u32;
        let generation = (payload >> 32) as u32;
        let current = matches!(
            self.watches.get(token as usize),
            Some(Some(w)) if w.generation == generation
        );
        if !current || res == -libc::ECANCELED {
            return;
        }
        if res < 0 {
            warn!(token, error = %os_error(res), "io_uring fd watch failed; re-arming");
        }
        sink(Completion::Readable { token });
        if !more {
            self.arm_watch(token);
        }
    }

    pub(super) fn arm_doorbell(&mut self, fd: RawFd) {
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).multi(true);
        self.push(sqe.build().user_data(user_data(DOORBELL, 0)));
    }

    pub(super) fn on_accept(&mut self, payload: u64, res: i32, more: bool, sink: Sink<'_>) {
        let listener = payload as u32 as usize;
        let generation = (payload >> 32) as u32;
        let current =
            matches!(self.listeners.get(listener), Some(Some(l)) if l.generation == generation);
        // The connection failed alone: no failure of the listener (re-armed below).
        let retry = res < 0 && policy::retry_at_once(-res);
        if res >= 0 {
            // SAFETY: a successful accept's result is a new descriptor nobody else owns.
            let result = Ok(Accepted::Fd(unsafe { OwnedFd::from_raw_fd(res) }));
            sink(Completion::Accepted { listener, result });
        } else if !retry && (current || res != -libc::ECANCELED) {
            sink(Completion::Accepted {
                listener,
                result: Err(os_error(res)),
            });
        }
        let Some(Some(l)) = self
            .listeners
            .get_mut(listener)
            .filter(|_| current && !more)
        else {
            return;
        };
        l.armed = false;
        // After a failure, reported above, the shard pauses accepting and re-adds
        // the listener when it decides to: no re-arm here.
        if res >= 0 || retry {
            self.arm_accept(listener);
        }
    }

    pub(super) fn on_doorbell(&mut self, res: i32, more: bool, sink: Sink<'_>) {
        let Some(fd) = self.doorbell else { return };
        if res < 0 {
            warn!(error = %os_error(res), "doorbell watch failed; cross-shard wakeups stall");
            return sink(Completion::Doorbell);
        }
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a valid u64 from the (non-blocking) eventfd the
        // shard keeps open while watched; EAGAIN (already drained) is fine.
        let _ = unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
        sink(Completion::Doorbell);
        if !more {
            self.arm_doorbell(fd);
        }
    }
}
