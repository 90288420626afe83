//! Listening sockets for the peers that build their own (the floors and tokio's
//! current_thread peer use their runtime's socket types instead where they have one).

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Backlog used by every peer, the same as tokio's, mio's, monoio's and glommio's
/// `bind` (1024).
pub const BACKLOG: i32 = 1024;

/// A non-blocking listener on `addr` with SO_REUSEADDR and SO_REUSEPORT, so each
/// thread can have its own, and TCP_NODELAY, which Linux copies to accepted sockets.
pub fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
