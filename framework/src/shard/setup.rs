//! Starting a shard on its own thread: pin it, allocate its NUMA-bound read
//! buffers, create its driver (falling back to epoll where allowed), register its
//! doorbell and listeners, build its handler.

use std::panic::{catch_unwind, AssertUnwindSafe};

use tracing::{info, warn};

use super::{
    core::Core,
    dispatch::panic_message,
    driver::{
        epoll::{EpollConfig, EpollDriver},
        uring::{UringConfig, UringDriver},
        Driver,
    },
    mailbox::Mailboxes,
    Envelope, Mail, Shard, ShardConfig,
};
use crate::{
    accept::shard::ShardAccept,
    error::Error,
    handler::{Handler, ShardId},
    numa::{Binding, BufferPool},
    server::Backend,
};

/// The shard's read buffers, bound to its NUMA node (or first-touch after pinning,
/// with the reason logged once), and where their pages really are.
fn make_pool(cfg: &ShardConfig, count: usize) -> Result<BufferPool, Error> {
    let b = &cfg.settings;
    let pool = BufferPool::new(&cfg.topology, Some(cfg.node), b.read_buf_size, count)?;
    let locality = pool.check_locality(&cfg.topology);
    let m = &cfg.metrics.shards[cfg.id.0];
    m.pool_bytes.add(pool.region_len() as u64);
    m.pool_off_node_pages.add(locality.off_node_pages as u64);
    if locality.off_node_pages > 0 {
        warn!(
            shard = cfg.id.0,
            node = cfg.node,
            off_node_pages = locality.off_node_pages,
            pages = locality.pages,
            "buffer pool pages found off the shard's NUMA node"
        );
    }
    match pool.binding() {
        Binding::Bound { node } => info!(
            shard = cfg.id.0,
            node,
            buffers = count,
            buf_size = b.read_buf_size,
            "buffer pool bound to NUMA node {node}"
        ),
        other => info!(shard = cfg.id.0, binding = ?other, "buffer pool not NUMA-bound"),
    }
    Ok(pool)
}

fn make_driver(cfg: &ShardConfig) -> Result<Box<dyn Driver>, Error> {
    let b = &cfg.settings;
    let epoll = || -> Result<Box<dyn Driver>, Error> {
        let d = EpollDriver::new(EpollConfig {
            scratch_size: b.read_buf_size,
            read_budget: b.read_budget,
            pool: Some(make_pool(cfg, 1)?),
        })
        .map_err(|source| Error::ShardStart {
            shard: cfg.id.0,
            source,
        })?;
        Ok(Box::new(d))
    };
    match cfg.backend {
        Backend::Epoll => epoll(),
        Backend::Uring => match UringDriver::new(UringConfig {
            entries: b.uring_entries,
            buf_count: b.uring_buf_count,
            buf_size: b.read_buf_size as u32,
            pool: Some(make_pool(cfg, usize::from(b.uring_buf_count))?),
            recv_cap: Some(u32::try_from(b.read_budget).unwrap_or(u32::MAX)),
            direct_files: b.direct_files,
        }) {
            Ok(d) => Ok(Box::new(d)),
            Err(e) if cfg.fallback_allowed => {
                warn!(shard = cfg.id.0, error = %e, "io_uring setup failed on this shard; falling back to epoll");
                epoll()
            }
            Err(e) => Err(Error::UringUnavailable(format!(
                "shard {}: ring setup failed: {e}",
                cfg.id.0
            ))),
        },
    }
}

impl<H: Handler> Shard<H> {
    pub(super) fn start(
        cfg: ShardConfig,
        make: impl FnOnce(ShardId) -> H,
    ) -> Result<Shard<H>, Error> {
        let shard = cfg.id.0;
        let start_err = |source| Error::ShardStart { shard, source };
        if let Some(cpu) = cfg.cpu {
            if !core_affinity::set_for_current(cpu) {
                warn!(
                    shard,
                    cpu = cpu.id,
                    "could not pin shard to its CPU; running unpinned"
                );
            }
        }
        let mut driver = make_driver(&cfg)?;
        driver
            .watch_doorbell(cfg.doorbell.raw_fd())
            .map_err(start_err)?;
        let mut accept = ShardAccept::new(cfg.listening, shard);
        accept.start(&mut *driver).map_err(start_err)?;
        let mut core = Core::new(cfg.id, cfg.shards, cfg.metrics.clone(), cfg.settings.limits);
        core.tcp_nodelay = cfg.settings.tcp_nodelay;
        core.coalesce = cfg.settings.coalesce.hold();
        core.listeners = cfg
            .listeners
            .iter()
            .enumerate()
            .map(|(i, (addr, _, tls))| crate::types::ListenerInfo {
                id: crate::types::ListenerId(i),
                addr: *addr,
                tls: tls.is_some(),
            })
            .collect();
        core.tls = super::tls::TlsShard::new(
            cfg.settings.tls_max_handshakes,
            cfg.settings.tls_handshake_timeout,
        );
        core.nonblocking_sockets = driver.nonblocking_sockets();
        let pipes = if driver.splice_supported() {
            cfg.settings.splice_pipes
        } else {
            0
        };
        core.pipes = super::relay::PipePool::new(pipes, cfg.settings.pipe_size);
        let handler = catch_unwind(AssertUnwindSafe(|| make(cfg.id))).map_err(|p| {
            start_err(std::io::Error::other(format!(
                "handler factory panicked: {}",
                panic_message(&*p)
            )))
        })?;
        let boxes = cfg
            .mailboxes
            .downcast::<Mailboxes<Envelope<H::Msg>>>()
            .map_err(|_| start_err(std::io::Error::other("mailboxes of the wrong type")))?;
        let mail = Mail {
            boxes,
            me: shard,
            shards: cfg.shards,
        };
        let listeners = cfg
            .listeners
            .iter()
            .map(|(addr, value, tls)| {
                let value = value.clone().downcast::<H::Listener>().map_err(|_| {
                    start_err(std::io::Error::other("a listener value of the wrong type"))
                })?;
                Ok(super::dispatch::ListenerSlot {
                    addr: *addr,
                    value,
                    tls: tls.clone(),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // What caps this shard's connections: say it at start, not at the
        // first EMFILE.
        let fd_limit = crate::server::config::open_files_limit();
        let table = cfg
            .settings
            .direct_files
            .filter(|_| driver.direct_descriptors());
        let sockets = match table {
            Some(n) => format!("direct descriptors, up to {n} on this shard"),
            None => format!(
                "ordinary fds, at most {fd_limit} per process (RLIMIT_NOFILE) with listeners and files"
            ),
        };
        let max_conns = cfg.settings.max_conns.or_else(|| {
            let cap = cfg.settings.socket_cap?;
            Some(cap.per_shard(table, fd_limit, cfg.shards))
        });
        info!(
            shard,
            backend = %driver.backend(),
            cpu = cfg.cpu.map(|c| c.id),
            node = cfg.node,
            sockets,
            max_connections = max_conns,
            "shard started"
        );
        Ok(Shard {
            core,
            mail,
            acceptor_bell: cfg.acceptor_bell,
            was_at_cap: false,
            ready: Vec::new(),
            driver,
            handler,
            app: crate::handler::AppState::new(),
            listeners,
            accept,
            max_conns,
            listeners_closed: false,
            released: false,
            accepted_fds: Vec::new(),
            _doorbell: cfg.doorbell,
            shutdown: cfg.shutdown,
            shutdown_timeout: cfg.settings.shutdown_timeout,
            shutdown_deadline: None,
            fired: Vec::new(),
        })
    }
}
