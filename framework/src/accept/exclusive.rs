//! One shared listener, watched by every shard through a private epoll fd with
//! EPOLLEXCLUSIVE, so the kernel wakes one shard per incoming connection instead of
//! all of them (mio cannot set the flag, hence raw `epoll_ctl`). The shard's own
//! driver watches the private epoll fd for readability (io_uring: a poll on it from
//! the ring), and the shard then accepts with plain `accept4` until EAGAIN.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

/// A shard's private epoll fd holding the shared listener with EPOLLEXCLUSIVE.
#[derive(Debug)]
pub(crate) struct ExclusiveWatch {
    epfd: OwnedFd,
    listener: RawFd,
    registered: bool,
}

impl ExclusiveWatch {
    pub(crate) fn new(listener: RawFd) -> io::Result<ExclusiveWatch> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(ExclusiveWatch {
            epfd,
            listener,
            registered: false,
        })
    }

    pub(crate) fn epoll_fd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }

    /// Joins the listener's exclusive waiters (EPOLL_CTL_ADD). EPOLLEXCLUSIVE
    /// cannot be modified, only added and deleted, so pausing is delete + add.
    pub(crate) fn register(&mut self) -> io::Result<()> {
        if self.registered {
            return Ok(());
        }
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
            u64: 0,
        };
        // SAFETY: valid epoll fd, valid listener fd, pointer to a local event.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                self.listener,
                &mut ev,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.registered = true;
        Ok(())
    }

    /// Leaves the exclusive waiters, so the kernel wakes another shard instead.
    pub(crate) fn deregister(&mut self) {
        if !self.registered {
            return;
        }
        // SAFETY: valid fds; a null event pointer is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.listener,
                std::ptr::null_mut(),
            );
        }
        self.registered = false;
    }

    /// Consumes the private epoll's readiness after the backlog was drained, so the
    /// next connection produces a fresh wakeup.
    pub(crate) fn reset(&self) {
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: valid epoll fd, a local array of 4 events, zero timeout.
        unsafe { libc::epoll_wait(self.epfd.as_raw_fd(), ev.as_mut_ptr(), 4, 0) };
    }
}
