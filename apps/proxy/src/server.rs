//! Building and running the proxy: one Shardline server for every listener,
//! and what its shards share ([`Shared`]).

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use shardline::{
    AdminConfig, Limits, Metrics, RunningServer, Server, ServerBuilder, ShutdownHandle,
};

use crate::{
    config::{Config, SpliceMode, FD_RESERVE},
    health::ProxyMsg,
    reload::{ReloadError, Reloader},
    shard::ProxyShard,
    stats::ProxyStats,
};

/// The framework limits that follow from `config`: outbound queues sized for
/// relaying (the high-water mark is where the other side stops being read).
pub fn framework_limits(config: &Config) -> Limits {
    let l = &config.limits;
    Limits {
        send_high_water: l.send_high_water,
        send_low_water: l.send_high_water / 4,
        send_hard_limit: l.send_high_water * 16,
        ..Limits::default()
    }
}

/// What every shard of one proxy shares (read-only on the data path).
#[derive(Debug)]
pub struct Shared {
    /// The configuration the shards started with.
    pub config: Arc<Config>,
    /// The newest accepted configuration and its generation, for validating
    /// and numbering the next reload (see [`crate::reload`]; shards never read
    /// it: theirs comes in a message).
    pub(crate) slot: Mutex<(u64, Arc<Config>)>,
    /// Every shard's counters, for `/metrics`.
    pub stats: ProxyStats,
    /// Each listener's TLS acceptor (`None`: plain TCP), in configuration order:
    /// what a reload swaps certificates in.
    pub tls: Vec<Option<shardline::TlsAcceptor>>,
}

/// A configured proxy, not yet running.
#[derive(Debug)]
pub struct Proxy {
    server: Server<ProxyMsg>,
    shared: Arc<Shared>,
}

/// Builds the proxy for `config` on `builder` (shards, I/O backend, accept mode
/// are the builder's; every listener's address and the limits are set here).
pub fn build(builder: ServerBuilder, config: Config) -> Result<Proxy, shardline::Error> {
    if let Some(path) = &config.log.access_log {
        crate::access::open(path).map_err(|e| {
            shardline::Error::Config(format!("cannot open access log {}: {e}", path.display()))
        })?;
    }
    let config = Arc::new(config);
    let mut tls = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        tls.push(match &l.tls {
            Some(t) => Some(shardline::TlsAcceptor::new(t.options.clone()).map_err(|e| {
                shardline::Error::Config(format!("listener {} TLS: {e}", l.address))
            })?),
            None => None,
        });
    }
    let shared = Arc::new(Shared {
        config: config.clone(),
        slot: Mutex::new((0, config.clone())),
        stats: ProxyStats::default(),
        tls: tls.clone(),
    });
    let mut builder = builder.limits(framework_limits(&config));
    builder = match config.limits.max_connections {
        Some(cap) => builder.max_connections(cap),
        // Two sockets per client (itself and its upstream): stop accepting
        // before an upstream connect could fail for want of one.
        None => builder.max_connections_from_sockets(2, FD_RESERVE as usize),
    };
    let pipes = match config.limits.splice {
        SpliceMode::Never => 0,
        SpliceMode::Auto | SpliceMode::Always => config.limits.splice_pipes,
    };
    builder = builder.splice_pipes(pipes);
    if let Some(addr) = config.admin_listen {
        let s = shared.clone();
        builder = builder.admin(AdminConfig::new(addr).render(move |w| s.stats.render(w)));
    }
    // Each listener carries its index in the configuration: on_accept knows
    // which one took a connection without asking the socket. Listeners are
    // fixed at start (a reload with other addresses is refused), so the index
    // stays valid in every configuration the shards switch to.
    for (i, (l, tls)) in config.listeners.iter().zip(tls).enumerate() {
        builder = match tls {
            Some(acceptor) => builder.listen_tls_with(l.address, acceptor, i),
            None => builder.listen_with(l.address, i),
        };
    }
    let s = shared.clone();
    let server = builder.build(move |shard| ProxyShard::new(s.clone(), shard))?;
    Ok(Proxy { server, shared })
}

impl Proxy {
    /// The Shardline server (e.g. for `--print-plan`).
    pub fn server(&self) -> &Server<ProxyMsg> {
        &self.server
    }

    /// Starts every shard; returns once all serve.
    pub fn start(self) -> Result<RunningProxy, shardline::Error> {
        let server = self.server.start()?;
        Ok(RunningProxy {
            server,
            shared: self.shared,
        })
    }
}

/// A running proxy.
#[derive(Debug)]
pub struct RunningProxy {
    server: RunningServer<ProxyMsg>,
    shared: Arc<Shared>,
}

impl RunningProxy {
    /// The listeners' bound addresses, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.server.local_addrs()
    }

    /// Where the admin endpoint (`/metrics`) listens, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.server.admin_addr()
    }

    /// The framework's per-shard counters.
    pub fn metrics(&self) -> Metrics {
        self.server.metrics()
    }

    /// What the shards share.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A handle that reloads the configuration from any thread (what the
    /// SIGHUP handler uses; see [`crate::reload`]).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            shared: self.shared.clone(),
            remote: self.server.remote(),
        }
    }

    /// Validates `config` and makes it the one new connections and requests
    /// use, returning once every shard switched ([`Reloader::reload`]); on an
    /// error the running one stays.
    pub fn reload(&self, config: Config) -> Result<u64, ReloadError> {
        self.reloader().reload(config)
    }

    /// Reads `path` and [`reload`](RunningProxy::reload)s it, logging the
    /// outcome (an invalid file: an error, the running configuration stays).
    pub fn reload_from(&self, path: &Path) -> Result<u64, ReloadError> {
        self.reloader().reload_from(path)
    }

    /// A handle that stops the shards (the framework's shutdown).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.server.shutdown_handle()
    }

    /// Stops the shards and waits for them.
    pub fn shutdown(self) -> Result<(), shardline::Error> {
        self.server.shutdown()
    }

    /// Waits for the shards to stop.
    pub fn join(self) -> Result<(), shardline::Error> {
        self.server.join()
    }
}
