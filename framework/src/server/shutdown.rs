//! Stopping a server: the shutdown handle (flag, doorbells, the listener barrier)
//! and the running server's join.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use socket2::Socket;

use super::{config::Backend, join_all, Remote};
use crate::{admin::AdminServer, error::Error, metrics::Metrics, shard::doorbell::Doorbell};

#[derive(Debug)]
pub(super) struct ShutdownInner {
    requested: AtomicBool,
    /// Every shard's doorbell, and the handoff acceptor's.
    doorbells: Vec<Doorbell>,
    /// A handoff acceptor runs and has not finished handing out connections.
    acceptor_running: AtomicBool,
    /// Shards (and the handoff acceptor) that must stop listening before any
    /// listener is drained and closed.
    participants: usize,
    stopped_listening: AtomicUsize,
    /// Every listening socket, for a handover ([`crate::upgrade`]): the builder
    /// address index, the bound address, the socket. Emptied when shutdown or a
    /// release starts, so nothing here keeps a socket open past its last user.
    handover: Mutex<Vec<(usize, SocketAddr, Arc<Socket>)>>,
    /// The listeners were handed over: participants stop accepting and close
    /// their descriptors without shutting the sockets down.
    release: AtomicBool,
    released: AtomicUsize,
}

/// Asks a running server to shut down gracefully; cheap to clone, usable from any
/// thread (or a signal-watching thread).
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    inner: Arc<ShutdownInner>,
}

impl ShutdownHandle {
    /// A handle for `participants` listening parties (shards, plus the acceptor if
    /// `acceptor`), waking them through `doorbells`.
    pub(super) fn new(doorbells: Vec<Doorbell>, participants: usize, acceptor: bool) -> Self {
        ShutdownHandle {
            inner: Arc::new(ShutdownInner {
                requested: AtomicBool::new(false),
                doorbells,
                acceptor_running: AtomicBool::new(acceptor),
                participants,
                stopped_listening: AtomicUsize::new(0),
                handover: Mutex::new(Vec::new()),
                release: AtomicBool::new(false),
                released: AtomicUsize::new(0),
            }),
        }
    }

    /// Records the listening sockets a handover would send.
    pub(super) fn set_handover(&self, sockets: Vec<(usize, SocketAddr, Arc<Socket>)>) {
        if let Ok(mut h) = self.inner.handover.lock() {
            *h = sockets;
        }
    }

    /// The listening sockets to hand over (empty once shutdown or a release began).
    pub(crate) fn handover_sockets(&self) -> Vec<(usize, SocketAddr, Arc<Socket>)> {
        match self.inner.handover.lock() {
            Ok(h) if !self.is_requested() && !self.release_requested() => h.clone(),
            _ => Vec::new(),
        }
    }

    fn forget_handover(&self) {
        if let Ok(mut h) = self.inner.handover.lock() {
            h.clear();
        }
    }

    /// The listeners now belong to another process too (a handover, see
    /// [`crate::upgrade`]): every shard (and the handoff acceptor) stops
    /// accepting, serves what its backlog already holds and closes its
    /// descriptors, without shutting the sockets down — the other process goes
    /// on accepting on them. Established connections are untouched and the server
    /// keeps running; handlers see it in [`Ctx::listeners_handed_over`]. Call
    /// [`shutdown`](ShutdownHandle::shutdown) later to finish. Idempotent;
    /// [`wait_released`](ShutdownHandle::wait_released) says when it is done.
    ///
    /// [`Ctx::listeners_handed_over`]: crate::Ctx::listeners_handed_over
    pub fn release_listeners(&self) {
        self.inner.release.store(true, Ordering::SeqCst);
        self.forget_handover();
        for d in &self.inner.doorbells {
            d.ring();
        }
    }

    /// Whether [`release_listeners`](ShutdownHandle::release_listeners) was called.
    pub fn release_requested(&self) -> bool {
        self.inner.release.load(Ordering::SeqCst)
    }

    /// One participant released its listeners.
    pub(crate) fn released_listeners(&self) {
        self.inner.released.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits (at most `timeout`) until every shard and the handoff acceptor
    /// stopped accepting after [`release_listeners`](ShutdownHandle::release_listeners).
    /// Returns whether they all did.
    pub fn wait_released(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.inner.released.load(Ordering::SeqCst) >= self.inner.participants {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Starts a graceful shutdown: listeners close, handlers get `on_shutdown`,
    /// queues flush up to the shutdown timeout, every shard stops. Idempotent.
    pub fn shutdown(&self) {
        // SeqCst pairs with the shard reading the flag after its doorbell wakes it.
        self.inner.requested.store(true, Ordering::SeqCst);
        self.forget_handover();
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

/// A started server: its addresses, metrics, a [`Remote`] into its shards and a
/// way to stop it. `M` is the handler's [`Msg`](crate::Handler::Msg) type.
#[derive(Debug)]
pub struct RunningServer<M = ()> {
    pub(super) local_addrs: Vec<SocketAddr>,
    pub(super) backend: Backend,
    pub(super) shutdown: ShutdownHandle,
    pub(super) metrics: Metrics,
    pub(super) threads: Vec<JoinHandle<Result<(), Error>>>,
    pub(super) admin: Option<AdminServer>,
    pub(super) remote: Remote<M>,
}

impl<M: Send> RunningServer<M> {
    /// A handle that posts messages into any shard from any thread.
    pub fn remote(&self) -> Remote<M> {
        self.remote.clone()
    }

    /// The bound listen addresses (port 0 resolved), in the order given.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The backend the shards were asked to run (each shard logs what it got).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where the admin endpoint listens (port 0 resolved), if one was configured
    /// with [`ServerBuilder::admin`](crate::ServerBuilder::admin).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
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
        let result = join_all(self.threads);
        // The admin endpoint serves until every shard has stopped.
        drop(self.admin);
        result
    }
}
