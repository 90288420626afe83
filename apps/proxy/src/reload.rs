//! Configuration reload (SIGHUP) without dropping connections.
//!
//! The new configuration reaches the shards as a message. A [`Reloader`] (from
//! [`RunningProxy::reloader`](crate::RunningProxy::reloader), usable from any
//! thread: the binary's signal thread holds one) reads and validates the file,
//! gives it the next generation, and posts it to every shard through the
//! framework's `Remote` as [`ProxyMsg::Reload`]. Each shard switches in
//! `on_message` (from `Origin::Remote` only) and acknowledges; the reloader
//! waits for every acknowledgement (up to [`APPLY_WAIT`]) so that once
//! `reload` returns, every new connection and request uses the new
//! configuration. A refused file posts nothing. No shard polls anything.
//!
//! On a switch a shard takes:
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
//! Health messages between shards carry the generation of their indices. A
//! shard can hear from a shard that switched before it did (the reload and the
//! shards' messages travel in different queues): a message of a newer
//! generation is kept and handled right after this shard's own switch; one of
//! an older generation is dropped.
//!
//! Listener addresses cannot change: the sockets stay as they were bound, so a
//! file whose listener addresses differ is refused. The admin address cannot change
//! either (a warning; the rest is applied).

use std::{
    fmt,
    path::Path,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use shardline::{Ctx, PostError, Remote, ShardId};
use tracing::{error, info, warn};

use crate::{
    config::Config, health::ProxyMsg, pools::ShardPools, shard::ProxyShard, stats::BackendGauges,
    Shared,
};

/// How long [`Reloader::reload`] waits for every shard to switch (a shard
/// handles its mailbox every loop turn, so this is only reached by a shard
/// stuck in a callback); past it the reload still stands, the shards that had
/// not switched yet do when they get to it.
pub const APPLY_WAIT: Duration = Duration::from_secs(5);

/// How long posting to one shard may wait for room in its mailbox.
const POST_WAIT: Duration = Duration::from_secs(1);

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
    /// A TLS listener's certificates could not be loaded, or TLS would be
    /// turned on or off on a listener.
    #[error("TLS: {0}")]
    Tls(String),
    /// The configuration could not be handed to every shard (the proxy is
    /// shutting down, or a shard's mailbox stayed full).
    #[error("the new configuration could not reach shard {shard}: {why}")]
    NotDelivered {
        /// The first shard that did not get it.
        shard: usize,
        /// Why.
        why: String,
    },
}

/// A validated configuration on its way to the shards ([`ProxyMsg::Reload`]).
pub struct NewConfig {
    /// Its generation (one more than the previous accepted one).
    pub gen: u64,
    /// The configuration.
    pub config: Arc<Config>,
    /// Shards that switched to it, counted for the reloader waiting on it.
    applied: (Mutex<usize>, Condvar),
}

impl fmt::Debug for NewConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewConfig")
            .field("gen", &self.gen)
            .finish_non_exhaustive()
    }
}

impl NewConfig {
    fn new(gen: u64, config: Arc<Config>) -> NewConfig {
        NewConfig {
            gen,
            config,
            applied: (Mutex::new(0), Condvar::new()),
        }
    }

    /// One more shard serves it.
    fn applied(&self) {
        let mut n = self.applied.0.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        self.applied.1.notify_all();
    }

    /// Waits until `shards` shards serve it, or `timeout`; returns how many do.
    fn wait(&self, shards: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut n = self.applied.0.lock().unwrap_or_else(|e| e.into_inner());
        while *n < shards {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            n = self
                .applied
                .1
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *n
    }
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
    /// The newest accepted configuration and its generation.
    pub fn current(&self) -> (u64, Arc<Config>) {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        (slot.0, slot.1.clone())
    }
}

/// Reloads the running proxy's configuration from any thread: validates it and
/// posts it to every shard (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    pub(crate) shared: Arc<Shared>,
    pub(crate) remote: Remote<ProxyMsg>,
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloader")
            .field("shards", &self.remote.shards())
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// Makes `config` the one new connections and requests use; returns its
    /// generation once every shard switched (or [`APPLY_WAIT`] passed).
    /// Refused, and nothing posted, if its listener addresses differ from the
    /// running ones.
    pub fn reload(&self, mut config: Config) -> Result<u64, ReloadError> {
        // Held while posting: concurrent reloads reach every shard in the
        // order of their generations.
        let mut slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
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
        // Certificates: every TLS listener's files are read and checked before
        // anything changes; one bad file refuses the whole reload.
        let mut prepared = Vec::new();
        for (l, acceptor) in config.listeners.iter().zip(&self.shared.tls) {
            match (&l.tls, acceptor) {
                (Some(t), Some(a)) => prepared.push(
                    a.prepare(t.options.clone())
                        .map_err(|e| ReloadError::Tls(format!("listener {}: {e}", l.address)))?,
                ),
                (None, None) => {}
                (Some(_), None) | (None, Some(_)) => {
                    return Err(ReloadError::Tls(format!(
                        "listener {}: TLS cannot be turned on or off by a reload; restart \
                         the proxy",
                        l.address
                    )))
                }
            }
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
        for p in prepared {
            p.commit();
        }
        let gen = slot.0 + 1;
        let config = Arc::new(config);
        // The slot moves first: whatever happens below, the next reload gets a
        // newer generation, which supersedes this one on every shard.
        *slot = (gen, config.clone());
        let new = Arc::new(NewConfig::new(gen, config));
        let shards = self.remote.shards();
        for s in 0..shards {
            let msg = ProxyMsg::Reload(new.clone());
            if let Err(e) = self.remote.post_timeout(ShardId(s), msg, POST_WAIT) {
                let why = match e {
                    PostError::Full(_) => "its mailbox stayed full".to_string(),
                    other => other.to_string(),
                };
                return Err(ReloadError::NotDelivered { shard: s, why });
            }
        }
        drop(slot);
        let applied = new.wait(shards, APPLY_WAIT);
        if applied < shards {
            warn!(
                generation = gen,
                applied, shards, "not every shard switched in time; the others will"
            );
        }
        Ok(gen)
    }

    /// Reads `path` and [`reload`](Reloader::reload)s it, logging the outcome:
    /// an invalid file is an error and the running configuration stays. What
    /// the SIGHUP handler calls.
    pub fn reload_from(&self, path: &Path) -> Result<u64, ReloadError> {
        let result = Config::load(path)
            .map_err(ReloadError::from)
            .and_then(|c| self.reload(c));
        match &result {
            Ok(gen) => {
                info!(file = %path.display(), generation = gen, "new configuration accepted")
            }
            Err(e) => {
                error!(file = %path.display(), error = %e, "reload refused; the running configuration stays")
            }
        }
        result
    }
}

/// A setting that cannot change on reload: if the file's differs, warns and
/// keeps the running one.
fn keep_running<T: PartialEq + Clone + std::fmt::Debug>(name: &str, running: &T, file: &mut T) {
    if file != running {
        warn!(
            setting = name,
            running = ?running,
            file = ?file,
            "this setting cannot change on reload; keeping the running one"
        );
        *file = running.clone();
    }
}

impl ProxyShard {
    /// A configuration posted by a [`Reloader`]: switch to it unless this
    /// shard already serves it or a newer one, then acknowledge, then handle
    /// the shards' messages of its generation that came first.
    pub(crate) fn on_reload(&mut self, ctx: &mut Ctx<'_, ProxyShard>, new: &NewConfig) {
        if new.gen > self.gen {
            self.switch_config(ctx, new.gen, new.config.clone());
        }
        new.applied();
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ahead)
            .into_iter()
            .partition(|m| m.gen() <= self.gen);
        self.ahead = later;
        for msg in now {
            self.health.on_message(ctx, &mut self.pools, msg);
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
        self.limits.reconfigure(&config);
        // The access log file is reopened (logrotate's SIGHUP).
        self.access.reconfigure(&config.log);
        for conn in self.http.reconfigure(&config, gauges, gen) {
            ctx.close(conn);
        }
        self.health
            .reload(ctx, &mut self.pools, config.clone(), gen);
        self.config = config;
        self.gen = gen;
        self.http_requeue_on_reload(ctx);
        info!(
            shard = ctx.shard_id().0,
            generation = gen,
            "configuration reloaded"
        );
    }
}
