//! Direct descriptors: connections kept in the ring's registered file table
//! instead of the process's fd table, so a shard holds up to its table size in
//! sockets whatever RLIMIT_NOFILE allows the process (each ring has a table of
//! its own, so the process holds shards × table size).
//!
//! - The table is registered sparse at setup (`FileTable::register`, its size
//!   the RLIMIT_NOFILE soft limit by default: the kernel's cap per table). The
//!   driver allocates its slots itself (a free list), so every request names a
//!   slot it chose: accept into slot N, close slot N.
//! - Accepting: `ACCEPT_DEPTH` single-shot accepts per listener, each with its
//!   own slot and `sockaddr` (multishot accept cannot return the peer address,
//!   and a direct descriptor cannot be asked for it later). Each completion
//!   re-arms one. A listener bound to a wildcard address accepts an ordinary
//!   fd instead, asks it for its local address (which address of the host the
//!   client reached is unknown otherwise), then moves it into the table.
//! - Adopting: a socket the shard got elsewhere (an outbound connect, the
//!   acceptor thread's hand-off, an EPOLLEXCLUSIVE accept) is moved into the
//!   table with `IORING_REGISTER_FILES_UPDATE`, and the caller closes its fd.
//! - Closing: `IORING_OP_CLOSE` on the slot, after the connection's requests
//!   were cancelled; the slot goes back on the free list only when the close
//!   completes *and* no request that resolves the slot late is still in flight.
//!   A request the kernel always runs in an io-wq worker (SHUTDOWN; SPLICE, but
//!   splices are cancelled synchronously before a close) looks the slot up only
//!   when the worker runs it, possibly after the close: were the slot reused by
//!   then, it would act on the next connection (seen: a half-close landing on a
//!   new connection accepted into the same slot). Such requests are counted per
//!   slot (`FileTable::late`).
//!
//! Replacements for what a direct descriptor cannot do: `shutdown(2)` →
//! `IORING_OP_SHUTDOWN`; `getpeername` → the accept's sockaddr; `getsockname` →
//! the listener's address, or asked before the socket enters the table;
//! `FIONREAD` at close (to skip the linger read when nothing is unread) → the
//! `SOCKET_URING_OP_SIOCINQ` socket command (`Driver::query_unread`; where the
//! kernel lacks it, the linger read runs to the peer's EOF or the deadline).

use std::{
    io,
    mem::MaybeUninit,
    net::SocketAddr,
    os::fd::{FromRawFd, OwnedFd, RawFd},
};

use io_uring::{opcode, squeue, types, IoUring};
use socket2::SockRef;
use tracing::warn;

use super::{
    ops::{os_error, user_data, Op},
    Sink, UringDriver,
};
use crate::{
    accept::policy,
    shard::driver::{Accepted, Completion},
};

/// Single-shot accepts kept in flight per listener. A burst larger than this
/// waits for completions to re-arm (one ring round trip per this many).
pub(super) const ACCEPT_DEPTH: u8 = 16;

/// user_data kind of a close of a slot (payload: the slot).
pub(super) const CLOSE_FIXED: u8 = 12;
/// user_data kind of a direct accept (payload: a key into `ops`).
pub(super) const ACCEPT_ONE: u8 = 13;
/// user_data kind of a half-close of a slot (payload: the slot).
pub(super) const SHUTDOWN_FIXED: u8 = 14;
/// user_data kind of a SIOCINQ query (payload: `ConnId::to_bits`).
pub(super) const UNREAD: u8 = 15;

/// `SOCKET_URING_OP_SIOCINQ`: the socket command answering FIONREAD.
const SOCKET_OP_SIOCINQ: u32 = 0;

/// `FileTable::late` bit: the slot's close completed; free once the count is 0.
const CLOSED: u8 = 0x80;

/// The flag that makes an SQE's fd field a slot of the file table.
pub(super) const FIXED: squeue::Flags = squeue::Flags::FIXED_FILE;

/// The ring's registered file table and which of its slots are free.
pub(super) struct FileTable {
    size: u32,
    /// Free slots, lowest on top.
    free: Vec<u32>,
    /// Per slot: requests in flight that resolve the slot in an io-wq worker
    /// (low bits), and `CLOSED` once its close completed.
    late: Vec<u8>,
}

impl FileTable {
    /// Registers a sparse table of `size` slots on `ring`.
    pub(super) fn register(ring: &IoUring, size: u32) -> io::Result<FileTable> {
        ring.submitter().register_files_sparse(size)?;
        Ok(FileTable {
            size,
            free: (0..size).rev().collect(),
            late: vec![0; size as usize],
        })
    }

    pub(super) fn size(&self) -> u32 {
        self.size
    }

    #[cfg(test)]
    pub(super) fn in_use(&self) -> u32 {
        self.size - self.free.len() as u32
    }
}

/// What the kernel writes for one accept: the peer's address.
pub(super) struct AcceptAddr {
    pub(super) storage: MaybeUninit<libc::sockaddr_storage>,
    pub(super) len: libc::socklen_t,
}

impl UringDriver {
    /// Moves an ordinary socket into the file table; the caller closes `fd`.
    pub(super) fn install(&mut self, fd: RawFd) -> io::Result<u32> {
        let table = self
            .files
            .as_mut()
            .ok_or_else(|| io::Error::other("no file table"))?;
        let slot = table
            .free
            .pop()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENFILE))?;
        match self.ring.submitter().register_files_update(slot, &[fd]) {
            Ok(_) => Ok(slot),
            Err(e) => {
                if let Some(t) = self.files.as_mut() {
                    t.free.push(slot);
                }
                Err(e)
            }
        }
    }

    /// Queues the close of a slot; it is free again once the close completes.
    pub(super) fn close_slot(&mut self, slot: u32) {
        let sqe = opcode::Close::new(types::Fixed(slot)).build();
        self.push(sqe.user_data(user_data(CLOSE_FIXED, u64::from(slot))));
    }

    /// Queues a SIOCINQ on `conn`'s slot (a socket command, Linux 6.7).
    pub(super) fn query_unread_slot(&mut self, conn: crate::ConnId) {
        let Some(index) = self.slot_index(conn) else {
            return;
        };
        let slot = &self.conns[index];
        if !slot.fixed {
            return;
        }
        let sqe = opcode::UringCmd16::new(types::Fixed(slot.fd as u32), SOCKET_OP_SIOCINQ).build();
        self.push(sqe.user_data(user_data(UNREAD, conn.to_bits())));
    }

    pub(super) fn on_unread(&mut self, bits: u64, res: i32, sink: Sink<'_>) {
        let conn = crate::ConnId::from_bits(bits);
        if self.slot_index(conn).is_none() {
            return;
        }
        let result = if res < 0 {
            Err(os_error(res))
        } else {
            Ok(res as usize)
        };
        sink(Completion::Unread { conn, result });
    }

    /// Queues a half-close (SHUT_WR) of a slot.
    pub(super) fn shutdown_slot(&mut self, slot: u32) {
        let Some(late) = self
            .files
            .as_mut()
            .and_then(|t| t.late.get_mut(slot as usize))
        else {
            return;
        };
        if *late & !CLOSED == !CLOSED {
            // Saturated (127 in flight): a half-close is already coming.
            return;
        }
        *late += 1;
        let sqe = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_WR).build();
        self.push(sqe.user_data(user_data(SHUTDOWN_FIXED, u64::from(slot))));
    }

    pub(super) fn on_shutdown_fixed(&mut self, slot: u64, res: i32) {
        // EBADF/ENOTCONN: the slot was closed first, or the peer already left.
        if res < 0 && !matches!(-res, libc::EBADF | libc::ENOTCONN) {
            warn!(slot, error = %os_error(res), "io_uring half-close of a direct descriptor failed");
        }
        if let Some(late) = self
            .files
            .as_mut()
            .and_then(|t| t.late.get_mut(slot as usize))
        {
            *late = late.saturating_sub(1);
        }
        self.maybe_free(slot as u32);
    }

    pub(super) fn on_close_fixed(&mut self, slot: u64, res: i32) {
        if res < 0 && res != -libc::EBADF {
            warn!(slot, error = %os_error(res), "io_uring close of a direct descriptor failed");
        }
        if let Some(late) = self
            .files
            .as_mut()
            .and_then(|t| t.late.get_mut(slot as usize))
        {
            *late |= CLOSED;
        }
        self.maybe_free(slot as u32);
    }

    /// Frees a closed slot once nothing in flight can still resolve it.
    fn maybe_free(&mut self, slot: u32) {
        let Some(table) = self.files.as_mut() else {
            return;
        };
        let Some(late) = table.late.get_mut(slot as usize) else {
            return;
        };
        if *late != CLOSED {
            return;
        }
        *late = 0;
        table.free.push(slot);
        // Accepts that found the table full wait for a free slot.
        if std::mem::take(&mut self.accept_starved) {
            for index in 0..self.listeners.len() {
                self.arm_accept(index);
            }
        }
    }

    /// Tops up a direct listener's single-shot accepts to `ACCEPT_DEPTH`.
    pub(super) fn arm_direct_accepts(&mut self, index: usize) {
        loop {
            let Some(Some(l)) = self.listeners.get(index) else {
                return;
            };
            if l.inflight >= ACCEPT_DEPTH || l.failed {
                return;
            }
            let (fd, generation, wildcard) = (l.fd, l.generation, l.wildcard);
            let slot = if wildcard {
                None
            } else {
                let Some(slot) = self.files.as_mut().and_then(|t| t.free.pop()) else {
                    self.accept_starved = true;
                    return;
                };
                Some(slot)
            };
            let mut addr = Box::new(AcceptAddr {
                storage: MaybeUninit::zeroed(),
                len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
            });
            let mut accept = opcode::Accept::new(
                types::Fd(fd),
                addr.storage.as_mut_ptr().cast(),
                &mut addr.len,
            );
            accept = match slot {
                // A slot below `size`, far below the kernel's maximum index. No
                // SOCK_CLOEXEC: a direct descriptor has no fd to inherit, and
                // the kernel refuses the flag with a slot (EINVAL).
                Some(slot) => {
                    accept.file_index(types::DestinationSlot::try_from_slot_target(slot).ok())
                }
                None => accept.flags(libc::SOCK_CLOEXEC),
            };
            let key = self.ops.insert(Op::Accept {
                listener: index,
                generation,
                slot,
                addr,
            });
            if let Some(Some(l)) = self.listeners.get_mut(index) {
                l.inflight += 1;
            }
            self.push(accept.build().user_data(user_data(ACCEPT_ONE, key as u64)));
        }
    }

    /// Cancels every accept in flight on a listener's fd.
    pub(super) fn cancel_direct_accepts(&mut self, fd: RawFd) {
        let cancel = types::CancelBuilder::fd(types::Fd(fd)).all();
        let sqe = opcode::AsyncCancel2::new(cancel).build();
        self.push(sqe.user_data(user_data(super::ops::CANCEL, 0)));
    }

    pub(super) fn on_direct_accept(&mut self, key: usize, res: i32, sink: Sink<'_>) {
        let Some(Op::Accept {
            listener,
            generation,
            slot,
            addr,
        }) = self.ops.try_remove(key)
        else {
            return;
        };
        let current = matches!(
            self.listeners.get(listener),
            Some(Some(l)) if l.generation == generation
        );
        if current {
            if let Some(Some(l)) = self.listeners.get_mut(listener) {
                l.inflight = l.inflight.saturating_sub(1);
            }
        }
        let retry = res < 0 && policy::retry_at_once(-res);
        if res < 0 {
            if let (Some(slot), Some(table)) = (slot, self.files.as_mut()) {
                // Nothing was installed in it.
                table.free.push(slot);
            }
            if !retry && current && res != -libc::ECANCELED {
                if let Some(Some(l)) = self.listeners.get_mut(listener) {
                    // The shard decides when to accept again (re-adding it).
                    l.failed = true;
                }
                sink(Completion::Accepted {
                    listener,
                    result: Err(os_error(res)),
                });
            }
        } else {
            let peer = peer_of(&addr);
            let accepted = match slot {
                Some(slot) => Ok(Accepted::Fixed {
                    slot,
                    peer,
                    local: None,
                }),
                // SAFETY: a successful accept's result is a new descriptor nobody
                // else owns.
                None => self.adopt_accepted(unsafe { OwnedFd::from_raw_fd(res) }, peer),
            };
            match accepted {
                Ok(accepted) => sink(Completion::Accepted {
                    listener,
                    result: Ok(accepted),
                }),
                Err(e) => {
                    // This connection only (the table is full, or the update
                    // failed): it is closed, the listener goes on.
                    warn!(listener, error = %e, "cannot keep an accepted connection as a direct descriptor; closing it");
                }
            }
        }
        if current && (res >= 0 || retry) {
            self.arm_direct_accepts(listener);
        }
    }

    /// An ordinary accepted fd from a wildcard listener: its local address, then
    /// into the table.
    fn adopt_accepted(&mut self, fd: OwnedFd, peer: Option<SocketAddr>) -> io::Result<Accepted> {
        let local = SockRef::from(&fd)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket());
        let slot = self.install(std::os::fd::AsRawFd::as_raw_fd(&fd))?;
        drop(fd);
        Ok(Accepted::Fixed { slot, peer, local })
    }
}

/// The peer address an accept wrote (IPv4 or IPv6; `None` for anything else).
fn peer_of(addr: &AcceptAddr) -> Option<SocketAddr> {
    let len = addr.len as usize;
    let storage = addr.storage.as_ptr();
    // SAFETY: the storage was zeroed before the accept, so every byte is
    // initialized; the kernel wrote `len` bytes of a sockaddr of its family.
    let family = unsafe { (*storage).ss_family } as libc::c_int;
    match family {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: an AF_INET address of full length: a sockaddr_in, and the
            // storage is aligned for any sockaddr.
            let sin = unsafe { &*storage.cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, a sockaddr_in6.
            let sin6 = unsafe { &*storage.cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
