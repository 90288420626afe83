//! Binding listeners: one SO_REUSEPORT socket per shard per address (reuseport), or
//! one socket per address shared by every shard or owned by the acceptor.
//!
//! An address another process already listens on is refused in every mode, with
//! [`Error::AddrInUse`]. Without SO_REUSEPORT the bind itself says so (EADDRINUSE:
//! on Linux SO_REUSEADDR never binds over a listening socket). With it, the bind
//! would instead join the other process's reuseport group and take a share of its
//! connections, so first a probe socket is bound without SO_REUSEPORT: EADDRINUSE
//! means someone listens there. Joining on purpose (a zero-downtime upgrade: the new
//! process joins, then the old one stops) skips the probe. Port 0 needs no probe:
//! the kernel never hands out an ephemeral port a reuseport group holds. A process
//! binding in the microseconds between another's probe and its bind can still slip
//! in; the check is for the operator's mistake, not for a race.

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::Error;

/// Options every listener gets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListenOptions {
    pub(crate) backlog: i32,
    pub(crate) tcp_nodelay: bool,
    pub(crate) reuse_port: bool,
    /// With `reuse_port`: join a reuseport group another process already has on
    /// the address instead of refusing to start.
    pub(crate) join_group: bool,
}

fn socket_for(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_cloexec(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Binds one non-blocking listening socket.
pub(crate) fn bind(addr: SocketAddr, opts: ListenOptions) -> io::Result<Socket> {
    let socket = socket_for(addr)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    // Inherited by every accepted socket on Linux: no setsockopt per connection.
    socket.set_tcp_nodelay(opts.tcp_nodelay)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(opts.backlog)?;
    Ok(socket)
}

/// Binds (and closes) a socket without SO_REUSEPORT: EADDRINUSE if anything listens
/// on `addr` — a reuseport group included — while TIME_WAIT leftovers do not count.
fn probe_free(addr: SocketAddr) -> io::Result<()> {
    socket_for(addr)?.bind(&SockAddr::from(addr))
}

fn bind_error(addr: SocketAddr, source: io::Error) -> Error {
    if source.raw_os_error() == Some(libc::EADDRINUSE) {
        Error::AddrInUse { addr }
    } else {
        Error::Bind { addr, source }
    }
}

/// Listeners indexed `[copy][address]`, and the resolved addresses.
pub(crate) type Bound = (Vec<Vec<Socket>>, Vec<SocketAddr>);

/// For each address, `copies` listeners on the same port (port 0 is resolved by the
/// first bind). An address another process listens on is [`Error::AddrInUse`]
/// unless `opts.join_group` (see the module doc).
pub(crate) fn bind_all(
    addrs: &[SocketAddr],
    copies: usize,
    opts: ListenOptions,
) -> Result<Bound, Error> {
    let mut out: Vec<Vec<Socket>> = (0..copies).map(|_| Vec::new()).collect();
    let mut resolved_all = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        if opts.reuse_port && !opts.join_group && addr.port() != 0 {
            probe_free(addr).map_err(|e| bind_error(addr, e))?;
        }
        let mut resolved = addr;
        for (i, list) in out.iter_mut().enumerate() {
            let socket = bind(resolved, opts).map_err(|e| bind_error(resolved, e))?;
            if i == 0 {
                if let Some(actual) = socket.local_addr().ok().and_then(|a| a.as_socket()) {
                    resolved = actual;
                }
            }
            list.push(socket);
        }
        resolved_all.push(resolved);
    }
    Ok((out, resolved_all))
}

/// Accepts one queued connection without blocking: `Ok(None)` when the backlog is
/// empty.
pub(crate) fn accept_now(listener: &Socket) -> io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    loop {
        // SAFETY: accept4 with null address pointers is valid on a listening socket
        // that `listener` keeps open for the duration of the call.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: accept4 returned a new descriptor that we now own.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(None),
            Some(e) if super::policy::retry_at_once(e) => continue,
            _ => return Err(err),
        }
    }
}
