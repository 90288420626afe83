//! The public entry point: configure a [`Server`], start its shards, stop it.

use std::{
    any::Any,
    fmt,
    marker::PhantomData,
    net::SocketAddr,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{mpsc, Arc},
    thread::JoinHandle,
};

use socket2::Socket;
use tracing::{debug, error, info, warn};

pub(crate) mod config;
mod remote;
mod shutdown;

pub use self::{
    config::{Backend, Coalesce, Io, Limits, ServerBuilder},
    remote::{PostError, Remote},
    shutdown::{RunningServer, ShutdownHandle},
};

use crate::{
    accept::{
        handoff::{Acceptor, Deliver},
        reuseport::{self, ListenOptions},
        shard::{Bound, Listening},
        AcceptMode,
    },
    error::Error,
    handler::ShardId,
    metrics::{MailStats, Metrics},
    numa::{Plan, PlanOptions, Topology},
    shard::{
        self,
        doorbell::Doorbell,
        mailbox::{Full, Mailboxes},
        Envelope, ShardConfig,
    },
};

/// Runs one shard to completion; erases the handler type so `Server` is not generic
/// while each shard's loop is still monomorphized for its handler.
type SpawnShard = Arc<dyn Fn(ShardConfig) -> Result<(), Error> + Send + Sync>;

/// The mailboxes of one run, with what the acceptor and the metrics need from them.
struct MailSet<M> {
    boxes: Arc<Mailboxes<Envelope<M>>>,
    deliver: Option<Deliver>,
    stats: MailStats,
}

/// What runs on SIGHUP ([`Server::on_hangup`]).
type Hangup<M> = Box<dyn Fn(&Remote<M>) + Send + Sync>;

fn make_mail<M: Send + 'static>(
    participants: usize,
    capacity: usize,
    doorbells: Vec<Doorbell>,
    acceptor: Option<usize>,
) -> MailSet<M> {
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

/// A configured server, not yet running. `M` is the handler's
/// [`Msg`](crate::Handler::Msg) type.
pub struct Server<M = ()> {
    config: ServerBuilder,
    spawn: SpawnShard,
    hangup: Option<Hangup<M>>,
    _msg: PhantomData<fn() -> M>,
}

impl<M> fmt::Debug for Server<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("hangup", &self.hangup.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A builder with defaults: one shard per CPU, `Io::Auto`, TCP_NODELAY on.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

impl<M: Send + 'static> Server<M> {
    pub(crate) fn new(config: ServerBuilder, spawn: SpawnShard) -> Self {
        Server {
            config,
            spawn,
            hangup: None,
            _msg: PhantomData,
        }
    }

    /// What [`run`](Server::run) does on SIGHUP: `hook` runs on the signal thread
    /// (never on a shard), with a [`Remote`] to post into the shards — the way to
    /// reload configuration. Without a hook SIGHUP is logged and ignored; it never
    /// stops the process. A panic in the hook is logged and the server goes on.
    #[must_use]
    pub fn on_hangup(mut self, hook: impl Fn(&Remote<M>) + Send + Sync + 'static) -> Self {
        self.hangup = Some(Box::new(hook));
        self
    }

    /// Starts the server, runs it until SIGINT or SIGTERM, shuts down gracefully and
    /// returns when every shard has stopped. A second signal exits at once. SIGHUP
    /// runs the [`on_hangup`](Server::on_hangup) hook.
    pub fn run(self) -> Result<(), Error> {
        self.run_with(|_| {})
    }

    /// Like [`run`](Server::run), calling `setup` with the running server once every
    /// shard is serving and before waiting for signals: the place to hand a
    /// [`RunningServer::remote`](crate::RunningServer::remote) to the
    /// application's own threads. Signals are handled from before the shards
    /// start, so none can kill the process unhandled in between.
    pub fn run_with(mut self, setup: impl FnOnce(&RunningServer<M>)) -> Result<(), Error> {
        use signal_hook::{consts::signal::*, iterator::Signals};
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(Error::Signal)?;
        let hangup = self.hangup.take();
        let running = self.start()?;
        setup(&running);
        let shutdown = running.shutdown_handle();
        let remote = running.remote();
        let signal_handle = signals.handle();
        let watcher = std::thread::Builder::new()
            .name("shardline-signals".into())
            .spawn(move || {
                let mut seen = 0;
                for sig in signals.forever() {
                    if sig == SIGHUP {
                        match &hangup {
                            Some(hook) => {
                                info!("SIGHUP: running the reload hook");
                                if let Err(p) = catch_unwind(AssertUnwindSafe(|| hook(&remote))) {
                                    let msg = crate::shard::panic_text(&*p);
                                    error!(panic = %msg, "the SIGHUP hook panicked; still serving");
                                }
                            }
                            None => info!("SIGHUP: nothing to reload; ignored"),
                        }
                        continue;
                    }
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
    pub fn start(self) -> Result<RunningServer<M>, Error> {
        let (topology, plan) = self.topology_and_plan()?;
        if !topology.is_real() {
            return Err(Error::Config(format!(
                "topology {} is for planning only (Server::plan); a server runs on this machine's",
                topology.description()
            )));
        }
        let topology = Arc::new(topology);
        let shards = plan.shards.len();
        let backend = resolve_backend(self.config.io)?;
        let Bindings {
            listening,
            addrs: local_addrs,
            acceptor: acceptor_listeners,
            all: every_socket,
        } = bind_for_mode(&self.config, shards)?;
        let handoff = match self.config.accept {
            AcceptMode::Handoff(balance) => Some(balance),
            _ => None,
        };
        // The handoff acceptor is one more mailbox participant (it only sends), and
        // so are threads outside the shards (`Remote`, last).
        let listening_parties = shards + usize::from(handoff.is_some());
        let participants = listening_parties + 1;
        let doorbells = (0..participants)
            .map(|i| Doorbell::new().map_err(|source| Error::ShardStart { shard: i, source }))
            .collect::<Result<Vec<_>, _>>()?;
        let acceptor_bell = handoff.map(|_| doorbells[shards].clone());
        let mail = make_mail::<M>(
            participants,
            self.config.mailbox_capacity,
            doorbells.clone(),
            handoff.map(|_| shards),
        );
        let shutdown = ShutdownHandle::new(
            doorbells[..listening_parties].to_vec(),
            listening_parties,
            handoff.is_some(),
        );
        shutdown.set_handover(every_socket);
        let remote = Remote::new(
            mail.boxes.clone(),
            participants - 1,
            shards,
            shutdown.clone(),
        );
        let listeners: Arc<[_]> = local_addrs
            .iter()
            .zip(&self.config.listener_values)
            .zip(&self.config.listener_tls)
            .map(|((addr, v), tls)| (*addr, v.value.clone(), tls.clone()))
            .collect();
        let metrics = Metrics::new(shards, Some(mail.stats));
        // Started before the shards (a bind failure stops nothing), and stopped by
        // being dropped: on an early return below, or after `join`.
        let admin = match self.config.admin.clone() {
            Some(a) => {
                let addr = a.addr();
                Some(
                    a.start(Some(metrics.clone()))
                        .map_err(|source| Error::Bind { addr, source })?,
                )
            }
            None => None,
        };
        let settings = self.config.shard_settings(shards);
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
                settings: settings.clone(),
                listening,
                listeners: listeners.clone(),
                doorbell: doorbells[i].clone(),
                shutdown: shutdown.clone(),
                metrics: metrics.clone(),
                ready: ready_tx.clone(),
                mailboxes: mail.boxes.clone() as Arc<dyn Any + Send + Sync>,
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
        // Each shard's connection cap, as it took it (a cap from the sockets
        // depends on whether its ring has a file table): the acceptor's too.
        let mut caps = vec![None; shards];
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok(Ok((id, cap))) => caps[id.0] = cap,
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
                max_conns: caps,
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
            admin,
            remote,
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

/// What binding produced: what each shard listens on, the resolved addresses,
/// the handoff acceptor's listeners, and every socket (what a handover sends).
struct Bindings {
    listening: Vec<Listening>,
    addrs: Vec<SocketAddr>,
    acceptor: Vec<(usize, Arc<Socket>)>,
    all: Vec<(usize, SocketAddr, Arc<Socket>)>,
}

/// Binds what the accept mode needs: a listener per shard per address (reuseport),
/// or one per address shared by every shard (exclusive) or owned by the acceptor
/// (handoff). An address with inherited sockets adopts them instead, shared out
/// as [`crate::upgrade`] describes.
fn bind_for_mode(config: &ServerBuilder, shards: usize) -> Result<Bindings, Error> {
    let opts = ListenOptions {
        backlog: config.backlog,
        tcp_nodelay: config.tcp_nodelay,
        reuse_port: config.accept == AcceptMode::ReusePort,
        join_group: config.join_reuseport_group,
    };
    let copies = match config.accept {
        AcceptMode::ReusePort => shards,
        _ => 1,
    };
    let mut inherited = config
        .inherited
        .as_ref()
        .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    // Per address: its sockets, and whether this process bound them.
    let mut groups: Vec<(Vec<Arc<Socket>>, bool)> = Vec::with_capacity(config.listen.len());
    let mut addrs = Vec::with_capacity(config.listen.len());
    for &addr in &config.listen {
        let taken = inherited.as_mut().map(|i| i.take(addr)).unwrap_or_default();
        if taken.is_empty() {
            let (bound, resolved) = reuseport::bind_all(&[addr], copies, opts)?;
            addrs.push(resolved.first().copied().unwrap_or(addr));
            let sockets = bound.into_iter().flatten().map(Arc::new).collect();
            groups.push((sockets, true));
        } else {
            info!(
                %addr,
                sockets = taken.len(),
                from = inherited.as_ref().map_or("", |i| i.source()),
                "adopting inherited listening sockets"
            );
            for s in &taken {
                // Accepted sockets inherit it (the old process set the same).
                if let Err(e) = s.set_tcp_nodelay(config.tcp_nodelay) {
                    warn!(%addr, error = %e, "cannot set TCP_NODELAY on an inherited listener");
                }
            }
            addrs.push(addr);
            groups.push((taken.into_iter().map(Arc::new).collect(), false));
        }
    }
    if let Some(i) = inherited.as_mut() {
        let left = i.leftover();
        if !left.is_empty() {
            warn!(
                addrs = ?left,
                "inherited listening sockets for addresses no longer configured: closed here \
                 (the old process stops accepting on them at the end of the upgrade)"
            );
        }
    }
    drop(inherited);
    let all = groups
        .iter()
        .enumerate()
        .flat_map(|(i, (sockets, _))| sockets.iter().map(move |s| (i, s.clone())))
        .map(|(i, s)| (i, addrs[i], s))
        .collect();
    let bound = |listener: usize, socket: &Arc<Socket>, own: bool| Bound {
        listener,
        socket: socket.clone(),
        own,
    };
    let mut acceptor = Vec::new();
    let listening = match config.accept {
        AcceptMode::ReusePort => {
            let mut per: Vec<Vec<Bound>> = (0..shards).map(|_| Vec::new()).collect();
            for (i, (sockets, fresh)) in groups.iter().enumerate() {
                let k = sockets.len();
                if k >= shards {
                    for (j, s) in sockets.iter().enumerate() {
                        per[j % shards].push(bound(i, s, *fresh && k == shards));
                    }
                } else {
                    for (shard, list) in per.iter_mut().enumerate() {
                        list.push(bound(i, &sockets[shard % k], false));
                    }
                }
            }
            per.into_iter().map(Listening::ReusePort).collect()
        }
        AcceptMode::Exclusive => (0..shards)
            .map(|_| {
                Listening::Exclusive(
                    groups
                        .iter()
                        .enumerate()
                        .flat_map(|(i, (sockets, _))| sockets.iter().map(move |s| (i, s)))
                        .map(|(i, s)| (bound(i, s, false), None))
                        .collect(),
                )
            })
            .collect(),
        AcceptMode::Handoff(_) => {
            acceptor = groups
                .iter()
                .enumerate()
                .flat_map(|(i, (sockets, _))| sockets.iter().map(move |s| (i, s.clone())))
                .collect();
            (0..shards).map(|_| Listening::Handoff).collect()
        }
    };
    Ok(Bindings {
        listening,
        addrs,
        acceptor,
        all,
    })
}
