//! Configuration reload (SIGHUP) without dropping connections.
//!
//! The framework has no way for a thread outside the shards to post to them, so
//! the new configuration goes through a shared slot ([`Shared::replace`]): the
//! configuration and its generation under a mutex, and the generation again in
//! an atomic. Each shard compares that atomic with its own generation (one
//! acquire load) when it accepts a connection, when a request starts, when a
//! message of a newer generation arrives and on its control tick
//! ([`CONTROL_PERIOD`], so health checks follow a reload without traffic). On a
//! change it takes the slot and switches:
//!
//! - New balancers and a new health view; a backend kept by pool name and
//!   address keeps its health (the checker re-announces every verdict in the
//!   new indices, see [`crate::health::Health::reload`]). Pools removed stop
//!   being checked, new ones start.
//! - Established connections go on: an L4 session keeps relaying; an HTTP
//!   exchange in flight finishes on its upstream connection. Their pool and
//!   backend indices belong to the old configuration, so they are no longer
//!   counted (least-connections, `/metrics` active connections) or reported
//!   to health, their upstream connections are closed rather than pooled
//!   afterwards, and a retry they would need (a dead pooled connection, a
//!   failed connect) fails instead (502 / client closed). Idle pooled upstream
//!   connections are closed at once.
//! - The next request on a keep-alive connection is routed with the new routes.
//!
//! Listener addresses cannot change: the sockets stay as they were bound, so a
//! file whose listener addresses differ is refused. The admin address cannot
//! change either (a warning; the rest is applied).
//!
//! A cleaner framework API would let a non-shard thread post to every shard
//! (`RunningServer::broadcast(msg)` into each shard's `on_message`, or a
//! `Handler::on_signal`), so the configuration would arrive as a message
//! instead of being polled; shards would then need no control tick for it.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use shardline::Ctx;
use tracing::info;

use crate::{config::Config, pools::ShardPools, shard::ProxyShard, stats::BackendGauges, Shared};

/// How often each shard looks at the configuration slot (and the drain flag)
/// when nothing else makes it look.
pub const CONTROL_PERIOD: Duration = Duration::from_millis(50);

/// Why a new configuration was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or is not valid.
    #[error(transparent)]
    Invalid(#[from] crate::ConfigError),
    /// The listener addresses differ from the running ones.
    #[error(
        "listener addresses cannot change on reload (running: {running}; file: {file}); \
         restart the proxy to change them"
    )]
    Listeners {
        /// The running listeners.
        running: String,
        /// The file's.
        file: String,
    },
}

fn addresses(config: &Config) -> String {
    let list: Vec<String> = config
        .listeners
        .iter()
        .map(|l| l.address.to_string())
        .collect();
    list.join(", ")
}

impl Shared {
    /// The configuration the shards should serve now, and its generation.
    pub fn current(&self) -> (u64, Arc<Config>) {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        (slot.0, slot.1.clone())
    }

    /// Makes `config` the one new connections and requests use; returns its
    /// generation. Refused if its listener addresses differ from the running
    /// ones.
    pub fn replace(&self, mut config: Config) -> Result<u64, ReloadError> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let running = &slot.1;
        let same = running.listeners.len() == config.listeners.len()
            && running
                .listeners
                .iter()
                .zip(&config.listeners)
                .all(|(a, b)| a.address == b.address);
        if !same {
            return Err(ReloadError::Listeners {
                running: addresses(running),
                file: addresses(&config),
            });
        }
        // Settings fixed when the server was built: the file's value is ignored.
        keep_running(
            "admin address",
            &running.admin_listen,
            &mut config.admin_listen,
        );
        keep_running(
            "limits.max_connections",
            &running.limits.max_connections,
            &mut config.limits.max_connections,
        );
        keep_running(
            "limits.splice_pipes",
            &running.limits.splice_pipes,
            &mut config.limits.splice_pipes,
        );
        let gen = slot.0 + 1;
        *slot = (gen, Arc::new(config));
        self.generation.store(gen, Ordering::Release);
        Ok(gen)
    }
}

/// A setting that cannot change on reload: if the file's differs, warns and
/// keeps the running one.
fn keep_running<T: PartialEq + Clone + std::fmt::Debug>(name: &str, running: &T, file: &mut T) {
    if file != running {
        tracing::warn!(
            setting = name,
            running = ?running,
            file = ?file,
            "this setting cannot change on reload; keeping the running one"
        );
        *file = running.clone();
    }
}

impl ProxyShard {
    /// Switches to the newest configuration if there is one (one atomic load
    /// when there is not).
    pub(crate) fn check_config(&mut self, ctx: &mut Ctx<'_, ProxyShard>) {
        if self.shared.generation.load(Ordering::Acquire) == self.gen {
            return;
        }
        let (gen, config) = self.shared.current();
        if gen != self.gen {
            self.switch_config(ctx, gen, config);
        }
    }

    /// See the module doc.
    fn switch_config(&mut self, ctx: &mut Ctx<'_, ProxyShard>, gen: u64, config: Arc<Config>) {
        let gauges = Arc::new(BackendGauges::new(&config));
        let mut pools = ShardPools::new(&config, ctx.shard_id().0, gauges.clone());
        for (p, pool) in config.pools.iter().enumerate() {
            let Some(op) = self.config.pools.iter().position(|o| o.name == pool.name) else {
                continue;
            };
            for (b, backend) in pool.backends.iter().enumerate() {
                let old = self.config.pools[op]
                    .backends
                    .iter()
                    .position(|o| o.address == backend.address);
                if let Some(ob) = old {
                    pools.set_up(p, b, self.pools.is_up(op, ob));
                }
            }
        }
        self.stats.replace_backends(gauges.clone());
        self.gauges = gauges.clone();
        self.pools = pools;
        self.tcp.reconfigure(&config);
        let sizes: Vec<usize> = config.pools.iter().map(|p| p.backends.len()).collect();
        let max_idle = config.limits.max_idle_per_backend;
        for conn in self.http.reconfigure(&sizes, max_idle, gauges, gen) {
            ctx.close(conn);
        }
        self.health
            .reload(ctx, &mut self.pools, config.clone(), gen);
        self.config = config;
        self.gen = gen;
        info!(
            shard = ctx.shard_id().0,
            generation = gen,
            "configuration reloaded"
        );
    }
}
