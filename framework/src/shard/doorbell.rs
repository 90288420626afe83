//! A shard's doorbell: an eventfd that other threads write to wake the shard, and
//! that the shard's own driver watches like any other fd.
//!
//! The driver watching it resets it (reads the counter) on every wakeup; the shutdown handle rings every
//! shard after setting the shutdown flag, so a sleeping shard sees the flag on the
//! turn the doorbell wakes it. (The cross-shard mailboxes reuse the same doorbell.)

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::Arc,
};

/// Shared ownership of one eventfd; clones ring the same shard.
#[derive(Debug, Clone)]
pub(crate) struct Doorbell {
    fd: Arc<OwnedFd>,
}

impl Doorbell {
    pub(crate) fn new() -> io::Result<Doorbell> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Doorbell { fd: Arc::new(fd) })
    }

    /// Wakes the shard. Never blocks: a full counter (2^64-2 rings pending) already
    /// guarantees a wakeup, so EAGAIN is fine.
    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own a share of.
        let _ = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Resets the counter (for a waiter that is not a driver: the handoff acceptor).
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; EAGAIN (nothing rung) is fine.
        let _ = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
