//! The public entry point: configure a [`Server`], start its shards, stop it.

use std::{
    any::Any,
    fmt,
    net::SocketAddr,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use socket2::Socket;
use tracing::{debug, info, warn};

use crate::{
    accept::{
        handoff::{Acceptor, Deliver},
        reuseport::{self, ListenOptions},
        shard::Listening,
        AcceptMode,
    },
    error::Error,
    handler::{Handler, ShardId},
    metrics::{MailStats, Metrics},
    numa::{Placement, Plan, PlanOptions, Topology},
    shard::{
        self,
        doorbell::Doorbell,
        mailbox::{Full, Mailboxes},
        Envelope, ShardConfig,
    },
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

/// The backend a shard actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring.
    Uring,
    /// epoll (through mio).
    Epoll,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Uring => "io_uring",
            Backend::Epoll => "epoll",
        })
    }
}

/// Per-connection limits. Every buffer a peer can make the server hold is bounded by
/// one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Queued outbound bytes at which `on_backpressure` is called.
    pub send_high_water: usize,
    /// Queued outbound bytes under which `on_drained` follows a backpressure notice.
    pub send_low_water: usize,
    /// Queued outbound bytes past which the connection is closed with
    /// `CloseReason::SendQueueFull`.
    pub send_hard_limit: usize,
    /// Unconsumed input a handler may leave before the connection is closed with
    /// `CloseReason::InputBufferFull`.
    pub max_input: usize,
    /// How long a closing connection may take to flush and see the peer's EOF.
    pub close_linger: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            send_high_water: 1 << 20,
            send_low_water: 256 << 10,
            send_hard_limit: 16 << 20,
            max_input: 1 << 20,
            close_linger: Duration::from_secs(5),
        }
    }
}

/// Configures a [`Server`]. Start from [`Server::builder`].
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    pub(crate) shards: Option<usize>,
    pub(crate) io: Io,
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) tcp_nodelay: bool,
    pub(crate) limits: Limits,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) pin: bool,
    pub(crate) backlog: i32,
    pub(crate) uring_entries: u32,
    pub(crate) uring_buf_count: u16,
    pub(crate) read_buf_size: usize,
    pub(crate) read_budget: usize,
    pub(crate) accept: AcceptMode,
    pub(crate) max_conns_per_shard: Option<usize>,
    pub(crate) topology: Option<String>,
    pub(crate) placement: Placement,
    pub(crate) oversubscribe: bool,
    pub(crate) mailbox_capacity: usize,
}

impl Default for ServerBuilder {
    fn default() -> ServerBuilder {
        ServerBuilder {
            shards: None,
            io: Io::Auto,
            listen: Vec::new(),
            tcp_nodelay: true,
            limits: Limits::default(),
            shutdown_timeout: Duration::from_secs(10),
            pin: true,
            backlog: 1024,
            uring_entries: 1024,
            uring_buf_count: 512,
            read_buf_size: 16 << 10,
            read_budget: 64 << 10,
            accept: AcceptMode::ReusePort,
            max_conns_per_shard: None,
            topology: None,
            placement: Placement::Compact,
            oversubscribe: false,
            mailbox_capacity: 1024,
        }
    }
}

impl ServerBuilder {
    /// Number of shards (threads). Default: one per CPU this process may run on.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// I/O backend. Default [`Io::Auto`].
    pub fn io(mut self, io: Io) -> Self {
        self.io = io;
        self
    }

    /// Adds a TCP listen address (every shard accepts on it through its own
    /// SO_REUSEPORT socket). Port 0 picks one free port shared by all shards.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// TCP_NODELAY on accepted and connected sockets. Default on.
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.tcp_nodelay = on;
        self
    }

    /// Per-connection limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long shutdown waits for outbound queues to flush before closing anyway.
    /// Default 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Pin each shard to its own CPU (default on). Off is for tests that run more
    /// shards than CPUs and for embedding beside other busy threads.
    pub fn pin(mut self, on: bool) -> Self {
        self.pin = on;
        self
    }

    /// Listen backlog per listener. Default 1024 (the kernel caps it at somaxconn).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Size of one read buffer: io_uring's provided buffers and epoll's scratch
    /// buffer. Default 16 KiB.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buf_size = bytes;
        self
    }

    /// Number of io_uring provided read buffers per shard (a power of two). Default 512.
    pub fn uring_buffers(mut self, count: u16) -> Self {
        self.uring_buf_count = count;
        self
    }

    /// Bytes one connection may read per loop turn before the others get a turn
    /// (epoll). Default 64 KiB.
    pub fn read_budget(mut self, bytes: usize) -> Self {
        self.read_budget = bytes;
        self
    }

    /// How connections reach shards. Default [`AcceptMode::ReusePort`].
    pub fn accept_mode(mut self, mode: AcceptMode) -> Self {
        self.accept = mode;
        self
    }

    /// Most live connections one shard holds. At the cap a shard stops accepting
    /// (connections wait in the kernel backlog, or go to another shard) and resumes
    /// as its connections close. Default: no cap.
    pub fn max_connections_per_shard(mut self, max: usize) -> Self {
        self.max_conns_per_shard = Some(max);
        self
    }

    /// The machine to plan for: a synthetic description (`"pack:2 numa:2 core:8
    /// pu:2"`) or an hwloc XML export path. Default: the `SHARDLINE_TOPOLOGY`
    /// environment variable, else this machine. A topology other than this machine is
    /// for planning only ([`Server::plan`]); starting on it is an error.
    pub fn topology(mut self, spec_or_path: impl Into<String>) -> Self {
        self.topology = Some(spec_or_path.into());
        self
    }

    /// Where shards run: compact (default), spread, or an explicit CPU list.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Allow more shards than allowed CPUs (they then share CPUs). Off by default;
    /// implied by `pin(false)`.
    pub fn oversubscribe(mut self, on: bool) -> Self {
        self.oversubscribe = on;
        self
    }

    /// Messages each shard-to-shard mailbox holds before `post` returns `Full`.
    /// Default 1024. Memory is allocated up front: shards² × capacity messages.
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = capacity;
        self
    }

    /// Checks the configuration and produces a server that makes one `H` per shard,
    /// on the shard's thread, with `factory`.
    pub fn build<H, F>(self, factory: F) -> Result<Server, Error>
    where
        H: Handler,
        F: Fn(ShardId) -> H + Send + Sync + 'static,
    {
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
        if self.max_conns_per_shard == Some(0) {
            return Err(Error::Config(
                "max_connections_per_shard must be at least 1".into(),
            ));
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
        Ok(Server {
            config: self,
            spawn: Arc::new(move |cfg| shard::run(cfg, &factory)),
            make_mail: Arc::new(make_mail::<H::Msg>),
        })
    }
}

/// Runs one shard to completion; erases the handler type so `Server` is not generic
/// while each shard's loop is still monomorphized for its handler.
type SpawnShard = Arc<dyn Fn(ShardConfig) -> Result<(), Error> + Send + Sync>;

/// Creates the mailboxes for the handler's message type (erased, like `SpawnShard`).
type MakeMail = Arc<dyn Fn(usize, usize, Vec<Doorbell>, Option<usize>) -> MailSet + Send + Sync>;

/// The mailboxes of one run, type-erased, with what the acceptor and the metrics
/// need from them.
struct MailSet {
    boxes: Arc<dyn Any + Send + Sync>,
    deliver: Option<Deliver>,
    stats: MailStats,
}

fn make_mail<M: Send + 'static>(
    participants: usize,
    capacity: usize,
    doorbells: Vec<Doorbell>,
    acceptor: Option<usize>,
) -> MailSet {
    let boxes = Mailboxes::<Envelope<M>>::new(participants, capacity, doorbells);
    let deliver = acceptor.map(|from| {
        let b = boxes.clone();
        Box::new(
            move |to: usize, fd| match b.post(from, to, Envelope::Conn(fd)) {
                Ok(()) => Ok(()),
                Err(Full(Envelope::Conn(fd))) => Err(fd),
                Err(Full(Envelope::User(_))) => {
                    unreachable!("a full mailbox returns the message it was given")
                }
            },
        ) as Deliver
    });
    let stats = {
        let b = boxes.clone();
        Arc::new(move |i: usize| b.metrics(i).snapshot()) as MailStats
    };
    MailSet {
        boxes,
        deliver,
        stats,
    }
}

/// A configured server, not yet running.
pub struct Server {
    config: ServerBuilder,
    spawn: SpawnShard,
    make_mail: MakeMail,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A builder with defaults: one shard per CPU, `Io::Auto`, TCP_NODELAY on.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Starts the server, runs it until SIGINT or SIGTERM, shuts down gracefully and
    /// returns when every shard has stopped. A second signal exits at once.
    pub fn run(self) -> Result<(), Error> {
        use signal_hook::{consts::signal::*, iterator::Signals};
        let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(Error::Signal)?;
        let running = self.start()?;
        let shutdown = running.shutdown_handle();
        let signal_handle = signals.handle();
        let watcher = std::thread::Builder::new()
            .name("shardline-signals".into())
            .spawn(move || {
                let mut seen = 0;
                for sig in signals.forever() {
                    seen += 1;
                    if seen == 1 {
                        info!(signal = sig, "shutting down (signal again to exit at once)");
                        shutdown.shutdown();
                    } else {
                        warn!(
                            signal = sig,
                            "second signal: exiting without a clean shutdown"
                        );
                        std::process::exit(130);
                    }
                }
            })
            .map_err(Error::Signal)?;
        let result = running.join();
        signal_handle.close();
        let _ = watcher.join();
        result
    }

    /// Where each shard (and a handoff acceptor) would run, on the configured
    /// topology: what `--print-plan` shows.
    pub fn plan(&self) -> Result<Plan, Error> {
        self.topology_and_plan().map(|(_, plan)| plan)
    }

    fn topology_and_plan(&self) -> Result<(Topology, Plan), Error> {
        let c = &self.config;
        let topology = Topology::from_arg_or_env(c.topology.as_deref())?;
        let shards = match c.shards {
            Some(n) => n,
            None => topology.allowed_pus().len().max(1),
        };
        let options = PlanOptions {
            shards,
            placement: c.placement.clone(),
            allowed: None,
            oversubscribe: c.oversubscribe || !c.pin,
            acceptor: matches!(c.accept, AcceptMode::Handoff(_)),
        };
        let plan = Plan::new(&topology, &options)?;
        Ok((topology, plan))
    }

    /// Starts every shard and returns once all of them are serving (or the first
    /// startup error, after stopping the others).
    pub fn start(self) -> Result<RunningServer, Error> {
        let (topology, plan) = self.topology_and_plan()?;
        if !topology.is_real() {
            return Err(Error::Config(format!(
                "topology {} is for planning (--print-plan); a server runs on this machine's",
                topology.description()
            )));
        }
        let topology = Arc::new(topology);
        let shards = plan.shards.len();
        let backend = resolve_backend(self.config.io)?;
        let (listening, local_addrs, acceptor_listeners) = bind_for_mode(&self.config, shards)?;
        let handoff = match self.config.accept {
            AcceptMode::Handoff(balance) => Some(balance),
            _ => None,
        };
        // The handoff acceptor is one more mailbox participant (it only sends).
        let participants = shards + usize::from(handoff.is_some());
        let doorbells = (0..participants)
            .map(|i| Doorbell::new().map_err(|source| Error::ShardStart { shard: i, source }))
            .collect::<Result<Vec<_>, _>>()?;
        let acceptor_bell = handoff.map(|_| doorbells[shards].clone());
        let mail = (self.make_mail)(
            participants,
            self.config.mailbox_capacity,
            doorbells.clone(),
            handoff.map(|_| shards),
        );
        let shutdown = ShutdownHandle {
            inner: Arc::new(ShutdownInner {
                requested: AtomicBool::new(false),
                doorbells: doorbells.clone(),
                acceptor_running: AtomicBool::new(handoff.is_some()),
                participants,
                stopped_listening: AtomicUsize::new(0),
            }),
        };
        let metrics = Metrics::new(shards, Some(mail.stats));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(shards);
        debug!(plan = %plan.table(), "placement");
        for (i, listening) in listening.into_iter().enumerate() {
            let cfg = ShardConfig {
                id: ShardId(i),
                shards,
                backend,
                fallback_allowed: self.config.io == Io::Auto,
                cpu: self.config.pin.then(|| core_affinity::CoreId {
                    id: plan.shards[i].pu,
                }),
                node: plan.shards[i].node,
                topology: topology.clone(),
                builder: self.config.clone(),
                listening,
                doorbell: doorbells[i].clone(),
                shutdown: shutdown.clone(),
                metrics: metrics.clone(),
                ready: ready_tx.clone(),
                mailboxes: mail.boxes.clone(),
                acceptor_bell: acceptor_bell.clone(),
            };
            let spawn = self.spawn.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("shardline-{i}"))
                .spawn(move || spawn(cfg));
            match spawned {
                Ok(t) => threads.push(t),
                Err(source) => {
                    shutdown.shutdown();
                    let _ = join_all(threads);
                    return Err(Error::ShardStart { shard: i, source });
                }
            }
        }
        drop(ready_tx);
        let mut first_error = None;
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => break, // a shard died before reporting; join tells why
            }
        }
        if first_error.is_some() || threads.iter().any(|t| t.is_finished()) {
            shutdown.shutdown();
            let joined = join_all(threads);
            return Err(first_error.unwrap_or_else(|| {
                joined
                    .err()
                    .unwrap_or_else(|| Error::Config("a shard stopped during startup".into()))
            }));
        }
        if let (Some(balance), Some(deliver), Some(bell)) = (handoff, mail.deliver, acceptor_bell) {
            let acceptor = Acceptor {
                listeners: acceptor_listeners,
                balance,
                shards,
                max_conns: self.config.max_conns_per_shard,
                metrics: metrics.clone(),
                doorbell: bell,
                shutdown: shutdown.clone(),
                deliver,
                cpu: plan
                    .acceptor
                    .as_ref()
                    .filter(|_| self.config.pin)
                    .map(|a| core_affinity::CoreId { id: a.pu }),
            };
            let spawned = std::thread::Builder::new()
                .name("shardline-acceptor".into())
                .spawn(move || {
                    acceptor.run();
                    Ok(())
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(source) => {
                    shutdown.shutdown();
                    shutdown.stopped_listening();
                    shutdown.acceptor_done();
                    let _ = join_all(threads);
                    return Err(Error::ShardStart {
                        shard: shards,
                        source,
                    });
                }
            }
        }
        info!(
            shards,
            backend = %backend,
            accept = %self.config.accept,
            addrs = ?local_addrs,
            "server started"
        );
        Ok(RunningServer {
            local_addrs,
            backend,
            shutdown,
            metrics,
            threads,
        })
    }
}

fn join_all(threads: Vec<JoinHandle<Result<(), Error>>>) -> Result<(), Error> {
    let mut result = Ok(());
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().unwrap_or(Err(Error::ShardPanicked(i)));
        if result.is_ok() {
            result = r;
        }
    }
    result
}

fn resolve_backend(io: Io) -> Result<Backend, Error> {
    match io {
        Io::Epoll => Ok(Backend::Epoll),
        Io::Uring => shard::driver::probe_uring()
            .map(|()| Backend::Uring)
            .map_err(Error::UringUnavailable),
        Io::Auto => match shard::driver::probe_uring() {
            Ok(()) => Ok(Backend::Uring),
            Err(reason) => {
                warn!(%reason, "io_uring unavailable; falling back to epoll");
                Ok(Backend::Epoll)
            }
        },
    }
}

/// What each shard listens on, the resolved addresses, and the handoff acceptor's
/// listeners.
type Bindings = (Vec<Listening>, Vec<SocketAddr>, Vec<Socket>);

/// Binds what the accept mode needs: a listener per shard per address (reuseport),
/// or one per address shared by every shard (exclusive) or owned by the acceptor
/// (handoff).
fn bind_for_mode(config: &ServerBuilder, shards: usize) -> Result<Bindings, Error> {
    let opts = ListenOptions {
        backlog: config.backlog,
        tcp_nodelay: config.tcp_nodelay,
        reuse_port: config.accept == AcceptMode::ReusePort,
    };
    let copies = match config.accept {
        AcceptMode::ReusePort => shards,
        _ => 1,
    };
    let (mut sockets, addrs) = reuseport::bind_all(&config.listen, copies, opts)
        .map_err(|(addr, source)| Error::Bind { addr, source })?;
    let listening = match config.accept {
        AcceptMode::ReusePort => sockets.into_iter().map(Listening::ReusePort).collect(),
        AcceptMode::Exclusive => {
            let shared: Vec<Arc<Socket>> = sockets
                .pop()
                .unwrap_or_default()
                .into_iter()
                .map(Arc::new)
                .collect();
            (0..shards)
                .map(|_| Listening::Exclusive(shared.iter().map(|l| (l.clone(), None)).collect()))
                .collect()
        }
        AcceptMode::Handoff(_) => {
            let own = sockets.pop().unwrap_or_default();
            let listening = (0..shards).map(|_| Listening::Handoff).collect();
            return Ok((listening, addrs, own));
        }
    };
    Ok((listening, addrs, Vec::new()))
}

#[derive(Debug)]
struct ShutdownInner {
    requested: AtomicBool,
    /// Every shard's doorbell, and the handoff acceptor's.
    doorbells: Vec<Doorbell>,
    /// A handoff acceptor runs and has not finished handing out connections.
    acceptor_running: AtomicBool,
    /// Shards (and the handoff acceptor) that must stop listening before any
    /// listener is drained and closed.
    participants: usize,
    stopped_listening: AtomicUsize,
}

/// Asks a running server to shut down gracefully; cheap to clone, usable from any
/// thread (or a signal-watching thread).
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    inner: Arc<ShutdownInner>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown: listeners close, handlers get `on_shutdown`,
    /// queues flush up to the shutdown timeout, every shard stops. Idempotent.
    pub fn shutdown(&self) {
        // SeqCst pairs with the shard reading the flag after its doorbell wakes it.
        self.inner.requested.store(true, Ordering::SeqCst);
        for d in &self.inner.doorbells {
            d.ring();
        }
    }

    /// Whether shutdown was requested.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// One participant stopped watching its listeners. The last one wakes everyone:
    /// from then on backlogs can be drained and listeners closed without dropping a
    /// connection another participant would still have accepted.
    pub(crate) fn stopped_listening(&self) {
        let n = self.inner.stopped_listening.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.inner.participants {
            for d in &self.inner.doorbells {
                d.ring();
            }
        }
    }

    /// The handoff acceptor handed out its last connection and exited.
    pub(crate) fn acceptor_done(&self) {
        self.inner.acceptor_running.store(false, Ordering::SeqCst);
        for d in &self.inner.doorbells {
            d.ring();
        }
    }

    /// No handoff acceptor is still running (true when there is none).
    pub(crate) fn acceptor_finished(&self) -> bool {
        !self.inner.acceptor_running.load(Ordering::SeqCst)
    }

    /// Whether every participant stopped listening.
    pub(crate) fn all_stopped_listening(&self) -> bool {
        self.inner.stopped_listening.load(Ordering::SeqCst) >= self.inner.participants
    }
}

/// A started server: its addresses, metrics and a way to stop it.
#[derive(Debug)]
pub struct RunningServer {
    local_addrs: Vec<SocketAddr>,
    backend: Backend,
    shutdown: ShutdownHandle,
    metrics: Metrics,
    threads: Vec<JoinHandle<Result<(), Error>>>,
}

impl RunningServer {
    /// The bound listen addresses (port 0 resolved), in the order given.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The backend the shards were asked to run (each shard logs what it got).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Every shard's counters.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Requests shutdown and waits for every shard.
    pub fn shutdown(self) -> Result<(), Error> {
        self.shutdown.shutdown();
        self.join()
    }

    /// Waits for every shard to stop (after a shutdown request, or an error in a
    /// shard, which stops the others too).
    pub fn join(self) -> Result<(), Error> {
        join_all(self.threads)
    }
}
