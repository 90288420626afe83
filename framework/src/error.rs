//! Typed errors of the public API.

use std::io;

/// Errors from building, starting or running a [`Server`](crate::Server).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work; the message says which setting and why.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// `Io::Uring` was asked for but io_uring cannot be used here.
    #[error("io_uring is not available: {0} (use Io::Epoll or Io::Auto)")]
    UringUnavailable(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that failed.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Another process already listens on a listen address. In the default
    /// [`AcceptMode::ReusePort`](crate::AcceptMode::ReusePort) too: joining another
    /// process's SO_REUSEPORT group takes
    /// [`ServerBuilder::join_reuseport_group`](crate::ServerBuilder::join_reuseport_group).
    #[error("{addr} is already in use by another process")]
    AddrInUse {
        /// The address that is taken.
        addr: std::net::SocketAddr,
    },
    /// A shard failed while starting (creating its driver, pinning, registering).
    #[error("shard {shard} failed to start: {source}")]
    ShardStart {
        /// The shard that failed.
        shard: usize,
        /// The OS error.
        source: io::Error,
    },
    /// A shard's event loop failed with an unrecoverable OS error.
    #[error("shard {shard} stopped with an I/O error: {source}")]
    ShardIo {
        /// The shard that failed.
        shard: usize,
        /// The OS error.
        source: io::Error,
    },
    /// A shard thread panicked outside handler code (a framework bug).
    #[error("shard {0} panicked")]
    ShardPanicked(usize),
    /// Topology discovery or shard placement failed; the message says what to change.
    #[error(transparent)]
    Numa(#[from] crate::numa::NumaError),
    /// A zero-downtime upgrade step failed (inheriting listeners, the handover
    /// protocol with the old process, systemd's `LISTEN_FDS`); the message says
    /// which step and why. The old process, if any, keeps serving.
    #[error("upgrade: {0}")]
    Upgrade(String),
    /// Installing the SIGINT/SIGTERM handler failed.
    #[error("cannot install signal handler: {0}")]
    Signal(io::Error),
}

/// Why [`Ctx::send`](crate::Ctx::send) refused bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection id is stale or was never valid on this shard.
    #[error("no such connection on this shard")]
    UnknownConn,
    /// The connection is closing (the handler or the peer closed it); nothing more
    /// can be queued.
    #[error("connection is closing")]
    Closing,
    /// The bytes would have pushed the connection's outbound queue past its hard
    /// limit: the connection has been closed with `CloseReason::SendQueueFull`.
    #[error("outbound queue hard limit reached; connection closed")]
    QueueFull,
    /// The handler half-closed the connection with
    /// [`Ctx::shutdown_write`](crate::Ctx::shutdown_write); it still reads, but takes
    /// no more output.
    #[error("connection's sending side is shut down")]
    WriteShut,
}
