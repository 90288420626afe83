//! Configuration: which backend, which limits, and the builder that checks them.

use std::{
    any::Any,
    fmt,
    net::SocketAddr,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

pub use crate::types::{Backend, Coalesce, Limits};

use super::Server;
use crate::{
    accept::AcceptMode,
    admin::AdminConfig,
    error::Error,
    handler::{Handler, ShardId},
    numa::Placement,
    shard,
    upgrade::InheritedListeners,
};

/// Which I/O backend to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Io {
    /// io_uring if the kernel offers everything we use, else epoll with a warning
    /// saying why.
    #[default]
    Auto,
    /// io_uring or a startup error; never a silent fallback.
    Uring,
    /// epoll, even where io_uring works.
    Epoll,
}

impl FromStr for Io {
    type Err = String;
    fn from_str(s: &str) -> Result<Io, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Io::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(Io::Uring),
            "epoll" => Ok(Io::Epoll),
            other => Err(format!(
                "unknown I/O backend {other:?} (expected auto, uring or epoll)"
            )),
        }
    }
}

impl fmt::Display for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Io::Auto => "auto",
            Io::Uring => "uring",
            Io::Epoll => "epoll",
        })
    }
}

/// The value an application attached to a listener, type-erased until the shard
/// (which knows the handler's `Listener` type) takes it back.
#[derive(Clone)]
pub(crate) struct ListenerValue {
    pub(crate) value: Arc<dyn Any + Send + Sync>,
    type_name: &'static str,
}

impl fmt::Debug for ListenerValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name)
    }
}

/// Configures a [`Server`]. Start from [`Server::builder`].
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    pub(crate) shards: Option<usize>,
    pub(crate) io: Io,
    pub(crate) listen: Vec<SocketAddr>,
    /// The application's value for each of `listen`, same order.
    pub(crate) listener_values: Vec<ListenerValue>,
    /// The TLS configuration of each of `listen` (`None`: plain TCP), same order.
    pub(crate) listener_tls: Vec<Option<crate::tls::TlsAcceptor>>,
    pub(crate) tls_handshake_timeout: Duration,
    pub(crate) tls_max_handshakes: usize,
    pub(crate) tcp_nodelay: bool,
    pub(crate) limits: Limits,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) pin: bool,
    pub(crate) backlog: i32,
    pub(crate) uring_entries: u32,
    pub(crate) uring_buf_count: u16,
    pub(crate) read_buf_size: usize,
    pub(crate) read_budget: usize,
    pub(crate) coalesce: Coalesce,
    pub(crate) accept: AcceptMode,
    pub(crate) join_reuseport_group: bool,
    /// Listening sockets to adopt instead of binding (an upgrade); taken by the
    /// first `start`.
    pub(crate) inherited: Option<Arc<Mutex<InheritedListeners>>>,
    pub(crate) max_conns_per_shard: Option<usize>,
    pub(crate) max_conns_total: Option<usize>,
    pub(crate) socket_cap: Option<SocketCap>,
    pub(crate) topology: Option<String>,
    pub(crate) placement: Placement,
    pub(crate) oversubscribe: bool,
    pub(crate) mailbox_capacity: usize,
    pub(crate) admin: Option<AdminConfig>,
    pub(crate) splice_pipes: usize,
    pub(crate) pipe_size: usize,
    pub(crate) direct_descriptors: bool,
}

impl Default for ServerBuilder {
    fn default() -> ServerBuilder {
        ServerBuilder {
            shards: None,
            io: Io::Auto,
            listen: Vec::new(),
            listener_values: Vec::new(),
            listener_tls: Vec::new(),
            tls_handshake_timeout: Duration::from_secs(10),
            tls_max_handshakes: 64,
            tcp_nodelay: true,
            limits: Limits::default(),
            shutdown_timeout: Duration::from_secs(10),
            pin: true,
            backlog: 1024,
            uring_entries: 1024,
            uring_buf_count: 512,
            read_buf_size: 16 << 10,
            read_budget: 64 << 10,
            coalesce: Coalesce::Off,
            accept: AcceptMode::ReusePort,
            join_reuseport_group: false,
            direct_descriptors: true,
            inherited: None,
            max_conns_per_shard: None,
            max_conns_total: None,
            socket_cap: None,
            topology: None,
            placement: Placement::Compact,
            oversubscribe: false,
            mailbox_capacity: 1024,
            admin: None,
            splice_pipes: 256,
            pipe_size: 0,
        }
    }
}

impl ServerBuilder {
    /// Number of shards (threads). Default: one per CPU this process may run on.
    #[must_use]
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// I/O backend. Default [`Io::Auto`].
    #[must_use]
    pub fn io(mut self, io: Io) -> Self {
        self.io = io;
        self
    }

    /// Adds a TCP listen address (every shard accepts on it through its own
    /// SO_REUSEPORT socket). Port 0 picks one free port shared by all shards. Its
    /// value, given to `on_accept`, is `()`: for handlers whose
    /// [`Listener`](crate::Handler::Listener) type is `()`.
    #[must_use]
    pub fn listen(self, addr: SocketAddr) -> Self {
        self.listen_with(addr, ())
    }

    /// Adds a TCP listen address, like [`listen`](ServerBuilder::listen), with a
    /// value that [`Handler::on_accept`](crate::Handler::on_accept) gets for every
    /// connection it takes (what kind of listener it is, its routes, …). The
    /// value's type must be the handler's [`Listener`](crate::Handler::Listener)
    /// type; [`build`](ServerBuilder::build) checks it.
    #[must_use]
    pub fn listen_with<L: Send + Sync + 'static>(mut self, addr: SocketAddr, value: L) -> Self {
        self.listen.push(addr);
        self.listener_values.push(ListenerValue {
            value: Arc::new(value),
            type_name: std::any::type_name::<L>(),
        });
        self.listener_tls.push(None);
        self
    }

    /// Adds a TLS listener: like [`listen`](ServerBuilder::listen), but every
    /// connection it takes does a TLS handshake with `tls` first; the handler hears
    /// of it (`on_accept`) once that is done and sees only plaintext (see
    /// [`crate::tls`]). Keep a clone of `tls` to reload its certificates.
    #[must_use]
    pub fn listen_tls(self, addr: SocketAddr, tls: crate::tls::TlsAcceptor) -> Self {
        self.listen_tls_with(addr, tls, ())
    }

    /// A TLS listener with a value, like [`listen_with`](ServerBuilder::listen_with).
    #[must_use]
    pub fn listen_tls_with<L: Send + Sync + 'static>(
        mut self,
        addr: SocketAddr,
        tls: crate::tls::TlsAcceptor,
        value: L,
    ) -> Self {
        self = self.listen_with(addr, value);
        if let Some(last) = self.listener_tls.last_mut() {
            *last = Some(tls);
        }
        self
    }

    /// How long a TLS handshake may take, waiting for a slot included, before the
    /// connection is closed (inbound), or `on_connect` reports `TimedOut`
    /// (outbound). Default 10 s.
    #[must_use]
    pub fn tls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.tls_handshake_timeout = timeout;
        self
    }

    /// Most inbound TLS handshakes in progress at once on one shard (at least 1);
    /// connections past it wait, unread, for a slot. Default 64.
    #[must_use]
    pub fn tls_max_handshakes(mut self, max: usize) -> Self {
        self.tls_max_handshakes = max.max(1);
        self
    }

    /// io_uring direct descriptors (default on, where the kernel has them):
    /// each shard keeps its connections in its ring's registered file table
    /// rather than the process's fd table, so the process holds up to
    /// RLIMIT_NOFILE connections *per shard*, and each request skips the
    /// kernel's fd lookup. Off: ordinary fds, as on epoll. The environment
    /// variable [`ENV_DIRECT_DESCRIPTORS`](crate::ENV_DIRECT_DESCRIPTORS)`=0`
    /// turns it off too.
    ///
    /// What differs for a direct descriptor: [`Ctx::local_addr`](crate::Ctx::local_addr)
    /// of an outbound connection is `None` (its port was the kernel's choice and
    /// cannot be asked). Closing asks the ring whether input is unread (a socket
    /// command of Linux 6.7); on older kernels a closing connection reads until
    /// the peer's EOF or the linger deadline.
    #[must_use]
    pub fn direct_descriptors(mut self, on: bool) -> Self {
        self.direct_descriptors = on;
        self
    }

    /// TCP_NODELAY on accepted and connected sockets. Default on.
    #[must_use]
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.tcp_nodelay = on;
        self
    }

    /// Per-connection limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long shutdown waits for outbound queues to flush before closing anyway.
    /// Default 10 s.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Pin each shard to its own CPU (default on). Off is for tests that run more
    /// shards than CPUs and for embedding beside other busy threads.
    #[must_use]
    pub fn pin(mut self, on: bool) -> Self {
        self.pin = on;
        self
    }

    /// Listen backlog per listener. Default 1024 (the kernel caps it at somaxconn).
    #[must_use]
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Size of one read buffer: io_uring's provided buffers and epoll's scratch
    /// buffer. Default 16 KiB.
    #[must_use]
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buf_size = bytes;
        self
    }

    /// Number of io_uring provided read buffers per shard (a power of two). Default 512.
    #[must_use]
    pub fn uring_buffers(mut self, count: u16) -> Self {
        self.uring_buf_count = count;
        self
    }

    /// Bytes one connection may read per loop turn before the others get a turn
    /// (epoll), and per arm of its multishot receive (io_uring) — so also the most
    /// a paused connection takes in before reading stops. Default 64 KiB. Zero
    /// makes io_uring use one-shot receives (one buffer per arm).
    #[must_use]
    pub fn read_budget(mut self, bytes: usize) -> Self {
        self.read_budget = bytes;
        self
    }

    /// Write coalescing with a fixed delay: `coalesce(Coalesce::Delay(delay))`
    /// (zero: off). A connection's output waits until its oldest unwritten byte
    /// has waited `delay` (or 16 KiB are queued, or the connection is closing or
    /// half-closing), so many small messages to the same connections — a chat
    /// server's fan-out — go out in fewer, larger writes: less CPU per message for
    /// up to `delay` more latency. See [`Coalesce`] for the adaptive mode.
    #[must_use]
    pub fn flush_delay(self, delay: Duration) -> Self {
        self.coalesce(Coalesce::Delay(delay))
    }

    /// Write coalescing: when queued output is written ([`Coalesce`]). Default
    /// [`Coalesce::Off`]: at the end of the loop turn that queued it.
    #[must_use]
    pub fn coalesce(mut self, mode: Coalesce) -> Self {
        self.coalesce = mode;
        self
    }

    /// Most pipes a shard keeps for [`Ctx::splice_into`](crate::Ctx::splice_into)
    /// relays (each costs two fds; an idle one is kept for reuse). When they are
    /// all in use `splice_into` fails with `SpliceError::NoPipe` and the handler
    /// keeps copying. Zero turns relaying off. Default 256.
    #[must_use]
    pub fn splice_pipes(mut self, pipes: usize) -> Self {
        self.splice_pipes = pipes;
        self
    }

    /// Capacity asked for each relay pipe (F_SETPIPE_SZ, rounded up by the kernel
    /// to a power-of-two number of pages, capped by `/proc/sys/fs/pipe-max-size`);
    /// it bounds what one relay holds. Zero (the default) keeps the kernel's 64 KiB.
    #[must_use]
    pub fn splice_pipe_size(mut self, bytes: usize) -> Self {
        self.pipe_size = bytes;
        self
    }

    /// How connections reach shards. Default [`AcceptMode::ReusePort`].
    #[must_use]
    pub fn accept_mode(mut self, mode: AcceptMode) -> Self {
        self.accept = mode;
        self
    }

    /// For zero-downtime upgrades only: with [`AcceptMode::ReusePort`], join the
    /// SO_REUSEPORT group another process (of the same user) already listens with
    /// on the same addresses, so both take connections until the old one stops.
    /// Off (the default), an address another process listens on makes `start` fail
    /// with [`Error::AddrInUse`] in every accept mode, instead of silently
    /// taking a share of that process's connections. Other accept modes cannot
    /// join a group: setting this with them is a configuration error.
    #[must_use]
    pub fn join_reuseport_group(mut self, join: bool) -> Self {
        self.join_reuseport_group = join;
        self
    }

    /// Adopts already-listening sockets — from the process this one upgrades
    /// ([`Takeover`](crate::upgrade::Takeover)) or from systemd
    /// ([`InheritedListeners::from_systemd`]) — for the listen addresses they are
    /// bound to, instead of binding those addresses; the other addresses are
    /// bound as usual and inherited sockets no address asks for are closed. How
    /// several sockets per address are shared out over the shards is in
    /// [`crate::upgrade`]. Inherited sockets are never shut down by this server,
    /// only closed. The first [`Server::start`] of this builder (or its clones)
    /// takes them.
    #[must_use]
    pub fn inherit_listeners(mut self, listeners: InheritedListeners) -> Self {
        self.inherited = Some(Arc::new(Mutex::new(listeners)));
        self
    }

    /// Most accepted connections one shard holds (outbound ones, from
    /// `Ctx::connect`, are not counted or refused: a proxy's upstreams follow
    /// its clients). At the cap a shard stops accepting (connections wait in the
    /// kernel backlog, or go to another shard) and resumes as its accepted
    /// connections close. Default: no cap.
    #[must_use]
    pub fn max_connections_per_shard(mut self, max: usize) -> Self {
        self.max_conns_per_shard = Some(max);
        self
    }

    /// Most accepted connections the whole server holds: each of `n` shards gets
    /// `ceil(max / n)` (the lower of that and [`max_connections_per_shard`], when
    /// both are set), with the same meaning. Default: no cap.
    ///
    /// [`max_connections_per_shard`]: ServerBuilder::max_connections_per_shard
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_conns_total = Some(max);
        self
    }

    /// Without an explicit cap ([`max_connections`], [`max_connections_per_shard`]),
    /// caps each shard's accepted connections at what its sockets allow, so a
    /// shard stops accepting before an accept or a connect fails for want of a
    /// socket: a connection costs `sockets_per_connection` sockets (a proxy's
    /// client and its upstream: 2) and `reserve` are kept for everything else
    /// (armed accepts, health checks, idle pools, pipes, files).
    ///
    /// - A shard with io_uring direct descriptors has a file table of its own:
    ///   it holds `(table − reserve) ÷ sockets_per_connection`.
    /// - Shards on ordinary fds share the process's RLIMIT_NOFILE:
    ///   `(limit − reserve) ÷ sockets_per_connection` for the whole server, split
    ///   over the shards as [`max_connections`] is.
    ///
    /// Each shard logs the cap it took at start.
    ///
    /// [`max_connections`]: ServerBuilder::max_connections
    /// [`max_connections_per_shard`]: ServerBuilder::max_connections_per_shard
    #[must_use]
    pub fn max_connections_from_sockets(
        mut self,
        sockets_per_connection: usize,
        reserve: usize,
    ) -> Self {
        self.socket_cap = Some(SocketCap {
            per_conn: sockets_per_connection.max(1),
            reserve,
        });
        self
    }

    /// What each of `shards` shards runs with.
    pub(crate) fn shard_settings(&self, shards: usize) -> shard::ShardSettings {
        shard::ShardSettings {
            limits: self.limits,
            tcp_nodelay: self.tcp_nodelay,
            coalesce: self.coalesce,
            read_buf_size: self.read_buf_size,
            read_budget: self.read_budget,
            uring_entries: self.uring_entries,
            uring_buf_count: self.uring_buf_count,
            splice_pipes: self.splice_pipes,
            pipe_size: self.pipe_size,
            shutdown_timeout: self.shutdown_timeout,
            max_conns: self.shard_cap(shards),
            socket_cap: self.socket_cap,
            tls_handshake_timeout: self.tls_handshake_timeout,
            tls_max_handshakes: self.tls_max_handshakes,
            direct_files: (self.direct_descriptors && !direct_disabled_by_env())
                .then(open_files_limit),
        }
    }

    /// The per-shard cap for `shards` shards, from both settings.
    pub(crate) fn shard_cap(&self, shards: usize) -> Option<usize> {
        let split = self
            .max_conns_total
            .map(|total| total.div_ceil(shards.max(1)));
        match (self.max_conns_per_shard, split) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The machine to plan for: a synthetic description (`"pack:2 numa:2 core:8
    /// pu:2"`) or an hwloc XML export path. Default: the `SHARDLINE_TOPOLOGY`
    /// environment variable, else this machine. A topology other than this machine is
    /// for planning only ([`Server::plan`]); starting on it is an error.
    #[must_use]
    pub fn topology(mut self, spec_or_path: impl Into<String>) -> Self {
        self.topology = Some(spec_or_path.into());
        self
    }

    /// Where shards run: compact (default), spread, or an explicit CPU list.
    #[must_use]
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Allow more shards than allowed CPUs (they then share CPUs). Off by default;
    /// implied by `pin(false)`.
    #[must_use]
    pub fn oversubscribe(mut self, on: bool) -> Self {
        self.oversubscribe = on;
        self
    }

    /// Messages each shard-to-shard mailbox holds before `post` returns `Full`.
    /// Default 1024. Memory is allocated up front: shards² × capacity messages.
    #[must_use]
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = capacity;
        self
    }

    /// Serves Prometheus metrics (every shard's counters, then what `admin`
    /// renders) and a health check on an admin HTTP listener, on its own thread,
    /// from before the shards start until they have all stopped. A bind failure is
    /// a startup error. See [`crate::admin`]; the bound address is
    /// [`RunningServer::admin_addr`](crate::RunningServer::admin_addr).
    #[must_use]
    pub fn admin(mut self, admin: AdminConfig) -> Self {
        self.admin = Some(admin);
        self
    }

    /// Checks the configuration and produces a server that makes one `H` per shard,
    /// on the shard's thread, with `factory`.
    pub fn build<H, F>(self, factory: F) -> Result<Server<H::Msg>, Error>
    where
        H: Handler,
        F: Fn(ShardId) -> H + Send + Sync + 'static,
    {
        for (i, (addr, v)) in self.listen.iter().zip(&self.listener_values).enumerate() {
            if !(*v.value).is::<H::Listener>() {
                return Err(Error::Config(format!(
                    "listener {i} ({addr}) carries a value of type {}, but the handler's \
                     Listener type is {}",
                    v.type_name,
                    std::any::type_name::<H::Listener>()
                )));
            }
        }
        match self.shards {
            Some(0) => return Err(Error::Config("shard count must be at least 1".into())),
            Some(n) if n > 4096 => {
                return Err(Error::Config(format!(
                    "{n} shards is more than the 4096 supported"
                )))
            }
            _ => {}
        }
        let l = &self.limits;
        if l.send_low_water > l.send_high_water || l.send_high_water > l.send_hard_limit {
            return Err(Error::Config(
                "limits must satisfy send_low_water <= send_high_water <= send_hard_limit".into(),
            ));
        }
        if self.mailbox_capacity == 0 {
            return Err(Error::Config("mailbox_capacity must be at least 1".into()));
        }
        if self.join_reuseport_group && self.accept != AcceptMode::ReusePort {
            return Err(Error::Config(format!(
                "join_reuseport_group needs AcceptMode::ReusePort; accept mode {} binds \
                 without SO_REUSEPORT",
                self.accept
            )));
        }
        if self.max_conns_per_shard == Some(0) {
            return Err(Error::Config(
                "max_connections_per_shard must be at least 1".into(),
            ));
        }
        if self.max_conns_total == Some(0) {
            return Err(Error::Config("max_connections must be at least 1".into()));
        }
        if !self.uring_buf_count.is_power_of_two() {
            return Err(Error::Config(format!(
                "uring_buffers must be a power of two, not {}",
                self.uring_buf_count
            )));
        }
        if self.read_buf_size < 512 || self.read_buf_size > (1 << 24) {
            return Err(Error::Config(format!(
                "read_buffer_size must be between 512 B and 16 MiB, not {}",
                self.read_buf_size
            )));
        }
        Ok(Server::new(
            self,
            Arc::new(move |cfg| shard::run(cfg, &factory)),
        ))
    }
}

/// [`ServerBuilder::max_connections_from_sockets`]: sockets per connection and
/// sockets kept aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketCap {
    pub(crate) per_conn: usize,
    pub(crate) reserve: usize,
}

impl SocketCap {
    /// One shard's cap: from its own file table (`direct_table`) when it has
    /// one, else its share of the process's `fd_limit` over `shards` shards.
    pub(crate) fn per_shard(
        self,
        direct_table: Option<u32>,
        fd_limit: u32,
        shards: usize,
    ) -> usize {
        let room = |n: u32| (n as usize).saturating_sub(self.reserve) / self.per_conn;
        match direct_table {
            Some(table) => room(table).max(1),
            None => room(fd_limit).div_ceil(shards.max(1)).max(1),
        }
    }
}

/// Whether [`ENV_DIRECT_DESCRIPTORS`](crate::ENV_DIRECT_DESCRIPTORS) turns direct
/// descriptors off.
fn direct_disabled_by_env() -> bool {
    std::env::var(crate::ENV_DIRECT_DESCRIPTORS).is_ok_and(|v| v.trim() == "0")
}

/// The RLIMIT_NOFILE soft limit (the most slots the kernel gives one ring's file
/// table), within what a table may hold.
pub(crate) fn open_files_limit() -> u32 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer to a local.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    if rc != 0 {
        return 1024;
    }
    // The kernel's cap per table (IORING_MAX_FIXED_FILES).
    rl.rlim_cur.min(1 << 20) as u32
}

#[cfg(test)]
mod tests {
    use super::ServerBuilder;

    #[test]
    fn socket_cap_is_per_table_with_direct_descriptors_else_a_share_of_the_fd_limit() {
        let cap = super::SocketCap {
            per_conn: 2,
            reserve: 256,
        };
        // Direct descriptors: each shard's own table, whatever the shard count.
        assert_eq!(cap.per_shard(Some(20_000), 20_000, 1), 9_872);
        assert_eq!(cap.per_shard(Some(20_000), 20_000, 3), 9_872);
        // Ordinary fds: the process's limit, split rounding up.
        assert_eq!(cap.per_shard(None, 20_000, 1), 9_872);
        assert_eq!(cap.per_shard(None, 20_000, 3), 3_291);
        // A reserve above the limit still leaves one connection.
        assert_eq!(cap.per_shard(None, 100, 2), 1);
        assert_eq!(cap.per_shard(Some(100), 100, 2), 1);
        let b = ServerBuilder::default().max_connections_from_sockets(0, 5);
        assert_eq!(
            b.socket_cap.map(|c| c.per_conn),
            Some(1),
            "never divides by 0"
        );
    }

    #[test]
    fn total_cap_is_split_over_shards_rounding_up() {
        let b = ServerBuilder::default().max_connections(10);
        assert_eq!(b.shard_cap(1), Some(10));
        assert_eq!(b.shard_cap(3), Some(4));
        assert_eq!(b.shard_cap(20), Some(1));
        assert_eq!(ServerBuilder::default().shard_cap(4), None);
    }

    #[test]
    fn the_lower_of_both_caps_wins() {
        let b = ServerBuilder::default()
            .max_connections(100)
            .max_connections_per_shard(30);
        assert_eq!(b.shard_cap(2), Some(30));
        assert_eq!(b.shard_cap(5), Some(20));
        let only_per_shard = ServerBuilder::default().max_connections_per_shard(7);
        assert_eq!(only_per_shard.shard_cap(3), Some(7));
    }
}
