//! Shardline: a thread-per-core, shared-nothing server framework for Linux.
//!
//! A [`Server`] runs one pinned OS thread per shard. Each shard owns its I/O driver
//! (an io_uring ring or an epoll instance), its connection slab, its timer wheel and
//! its listener; nothing a shard owns is touched by another thread. The application
//! implements [`Handler`] — one instance per shard, created on the shard's own thread,
//! so it may be `!Send` — and acts through [`Ctx`]. The application never touches a
//! socket: reads, writes, connects and closes are done by the framework, identically
//! on both backends.
//!
//! [`admin`] serves the shards' counters (and the application's) to Prometheus on
//! an admin HTTP port: [`ServerBuilder::admin`].
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use shardline::{ConnId, Ctx, Handler, Io, Listener, Server};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     type Msg = ();
//!     type Timer = ();
//!     type Conn = ();
//!     type Listener = ();
//!
//!     fn on_accept(&mut self, _: &mut Ctx<'_, Self>, _: ConnId, _: Listener<'_, ()>, _: SocketAddr) {}
//!
//!     fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _: &mut (), data: &[u8]) -> usize {
//!         let _ = ctx.send(conn, data);
//!         data.len()
//!     }
//! }
//!
//! let server = Server::builder()
//!     .listen("127.0.0.1:7000".parse().unwrap())
//!     .io(Io::Auto)
//!     .build(|_shard| Echo)
//!     .expect("valid config");
//! server.run().expect("server ran");
//! ```
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod accept;
pub mod admin;
#[cfg(feature = "cli")]
pub mod cli;
mod error;
mod handler;
mod metrics;
pub mod numa;
mod outbox;
pub mod proxy_protocol;
mod server;
mod shard;
pub mod time;
pub mod tls;
mod types;
pub mod upgrade;

pub use accept::{AcceptMode, Balance};
pub use admin::{AdminConfig, AdminServer};
pub use bytes::Bytes;
pub use error::{Error, SendError};
pub use handler::{
    CloseReason, ConnId, Ctx, Handler, Listener, ListenerId, ListenerInfo, Origin, Preamble,
    ShardId, TimerId,
};
pub use metrics::{
    Counter, Metrics, PerShard, PromValue, PromWriter, ShardMetrics, ShardMetricsSnapshot,
};
pub use outbox::Outbox;
pub use server::{
    Backend, Coalesce, Io, Limits, PostError, Remote, RunningServer, Server, ServerBuilder,
    ShutdownHandle,
};
pub use shard::{mailbox::Full, relay::SpliceError};
pub use tls::{TlsAcceptor, TlsConnector, TlsInfo};

/// Environment variable that makes the io_uring probe fail (any non-empty value other
/// than `0`), so that `Io::Auto` falls back to epoll on a machine that has io_uring.
/// Used by the fallback tests; operators can use it to rule io_uring out.
pub const ENV_FORCE_URING_PROBE_FAIL: &str = "SHARDLINE_URING_PROBE_FAIL";

/// Environment variable that turns io_uring direct descriptors off when `0`
/// ([`ServerBuilder::direct_descriptors`]): the test suite runs once more with it
/// so both ways of holding sockets stay tested.
pub const ENV_DIRECT_DESCRIPTORS: &str = "SHARDLINE_DIRECT_DESCRIPTORS";

/// Generates one `#[test]` per I/O backend from a function taking the backend,
/// for applications' tests as much as the framework's:
///
/// ```ignore
/// fn echoes(io: shardline::Io) { /* start a server with .io(io), check it */ }
/// shardline::per_backend! { echoes => echoes; }
/// ```
///
/// makes `echoes::uring` and `echoes::epoll`, each forcing its backend, so a
/// failure on one never hides the other's result.
#[macro_export]
macro_rules! per_backend {
    ($($name:ident => $body:ident;)+) => {
        $(
            mod $name {
                #[test]
                fn uring() {
                    super::$body($crate::Io::Uring)
                }
                #[test]
                fn epoll() {
                    super::$body($crate::Io::Epoll)
                }
            }
        )+
    };
}
