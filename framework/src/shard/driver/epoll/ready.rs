//! Serving readiness in `reap`: accepting on readable listeners, and reading the
//! ready connections into the one scratch buffer, each within its budget.

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd},
};

use super::EpollDriver;
use crate::{
    accept::policy,
    numa::{BufId, BufferPool},
    shard::driver::{Accepted, Completion},
};

/// Accepts per listener per turn before yielding to other work.
const ACCEPT_BUDGET: usize = 64;

/// The one buffer every read lands in.
pub(super) enum Scratch {
    Pool(BufferPool, BufId),
    Owned(Box<[u8]>),
}

impl Scratch {
    pub(super) fn get(&mut self) -> &mut [u8] {
        match self {
            Scratch::Pool(pool, id) => pool.buf_mut(*id),
            Scratch::Owned(b) => b,
        }
    }
}

enum ReadOutcome {
    Drained,
    BudgetSpent,
    Closed(Option<io::Error>),
}

impl EpollDriver {
    pub(super) fn accept_ready(&mut self, sink: &mut dyn FnMut(Completion<'_>)) {
        for (index, slot) in self.listeners.iter_mut().enumerate() {
            let Some(l) = slot else { continue };
            if !l.readable {
                continue;
            }
            for _ in 0..ACCEPT_BUDGET {
                // SAFETY: accept4 with null address pointers is valid; the fd is a
                // listening socket owned by the shard for as long as it is registered.
                let fd = unsafe {
                    libc::accept4(
                        l.fd,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    )
                };
                if fd >= 0 {
                    // SAFETY: accept4 returned a new descriptor that we now own.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    sink(Completion::Accepted {
                        listener: index,
                        result: Ok(Accepted::Fd(fd)),
                    });
                    continue;
                }
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) => l.readable = false,
                    Some(e) if policy::retry_at_once(e) => continue,
                    _ => {
                        // Reported only; the shard decides when to accept again.
                        l.readable = false;
                        sink(Completion::Accepted {
                            listener: index,
                            result: Err(err),
                        });
                    }
                }
                break;
            }
        }
    }

    pub(super) fn read_ready(&mut self, sink: &mut dyn FnMut(Completion<'_>)) {
        // Serve only those queued at the start of this pass: a connection re-queued
        // for exhausting its budget waits for the next turn.
        for _ in 0..self.ready.len() {
            let Some(index) = self.ready.pop_front() else {
                break;
            };
            let Some(Some(c)) = self.conns.get_mut(index as usize) else {
                continue;
            };
            c.queued = false;
            if !c.want_read || !c.readable {
                continue;
            }
            let (id, fd) = (c.id, c.fd);
            let mut budget = self.read_budget;
            let outcome = loop {
                let scratch = self.scratch.get();
                let cap = scratch.len();
                // SAFETY: reads into our own scratch buffer; `fd` stays open while
                // registered (the shard calls remove_conn before closing it).
                // recv, not read: read(2) on a socket goes through the VFS (file
                // permission and fsnotify hooks) before reaching the socket; recv
                // goes straight to it (~2 % of the server's CPU per echo here).
                let n = unsafe { libc::recv(fd, scratch.as_mut_ptr().cast(), cap, 0) };
                if n > 0 {
                    let n = n as usize;
                    sink(Completion::Data {
                        conn: id,
                        data: &scratch[..n],
                    });
                    if n < cap && !self.conns[index as usize].as_ref().is_some_and(|c| c.hup) {
                        break ReadOutcome::Drained;
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        break ReadOutcome::BudgetSpent;
                    }
                    // The sink may have turned reading off (applied later) — still
                    // within budget, keep going; the shard stashes the bytes.
                    continue;
                }
                if n == 0 {
                    break ReadOutcome::Closed(None);
                }
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => break ReadOutcome::Drained,
                    io::ErrorKind::Interrupted => continue,
                    _ => break ReadOutcome::Closed(Some(err)),
                }
            };
            match outcome {
                ReadOutcome::Drained => {
                    if let Some(c) = self.conn_mut(id) {
                        c.readable = false;
                    }
                }
                ReadOutcome::BudgetSpent => {
                    if let Some(c) = self.conn_mut(id) {
                        if c.want_read && !c.queued {
                            c.queued = true;
                            self.ready.push_back(index);
                        }
                    }
                }
                ReadOutcome::Closed(error) => {
                    if let Some(c) = self.conn_mut(id) {
                        c.readable = false;
                        c.want_read = false;
                    }
                    sink(Completion::ReadClosed { conn: id, error });
                }
            }
        }
    }
}
