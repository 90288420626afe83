//! Health checking, once per pool for the whole server: the protocol is in the
//! crate doc ("Health"). Every shard's handler owns one [`Health`]: on the
//! checker shard of a pool it probes the pool's backends and decides; on every
//! shard it applies the checker's decisions to the shard's [`ShardPools`] and
//! reports the shard's own failures to the checker.
//!
//! Probe connections are this module's: the handler hands it every event of a
//! connection whose state is a probe's and every timer of its kind
//! ([`crate::shard::ProxyTimer`]). It must never drop a state change (a full mailbox means
//! "later", through the outbox) or let a probe outlive its timeout.

use crate::shard::{ProxyConn, ProxyShard, ProxyTimer, Role};
use std::{collections::HashMap, io, sync::Arc, time::Duration};

use shardline::{ConnId, Ctx, Outbox, ShardId, TimerId};
use tracing::{debug, info, warn};

use crate::{
    balance::hash_bytes,
    config::{CheckKind, Config, ProxyVersion},
    pools::ShardPools,
    reload::NewConfig,
};

/// Longest status line a probe waits for before calling the answer bad.
const MAX_STATUS_LINE: usize = 1024;

/// The shard that checks the pool named `pool` among `shards`: a hash of the
/// name, so a pool keeps its checker when a reload adds or removes others.
pub fn checker_of(pool: &str, shards: usize) -> usize {
    (hash_bytes(pool.as_bytes()) % shards.max(1) as u64) as usize
}

/// What shards tell each other, and what a [`Reloader`](crate::reload::Reloader)
/// tells them (the handlers' `Handler::Msg`).
#[derive(Debug, Clone)]
pub enum ProxyMsg {
    /// Checker → every shard: `(pool, backend)` is now up or down.
    Health {
        /// The configuration generation the indices are for.
        gen: u64,
        /// Pool index.
        pool: u32,
        /// Backend index in the pool.
        backend: u32,
        /// The new state.
        up: bool,
    },
    /// A shard → the pool's checker: traffic to `(pool, backend)` failed
    /// (`ok: false`), or succeeded after a failure this shard reported.
    Passive {
        /// The configuration generation the indices are for.
        gen: u64,
        /// Pool index.
        pool: u32,
        /// Backend index in the pool.
        backend: u32,
        /// The outcome.
        ok: bool,
    },
    /// A reloader (outside the shards) → every shard: serve this configuration
    /// from now on ([`crate::reload`]).
    Reload(Arc<NewConfig>),
}

impl ProxyMsg {
    /// The configuration generation the message is for (a reload: the one it
    /// brings).
    pub fn gen(&self) -> u64 {
        match self {
            ProxyMsg::Health { gen, .. } | ProxyMsg::Passive { gen, .. } => *gen,
            ProxyMsg::Reload(new) => new.gen,
        }
    }
}

/// The checker's record of one backend.
#[derive(Debug, Clone, Default)]
struct Verdict {
    down: bool,
    successes: u32,
    failures: u32,
    probing: bool,
}

#[derive(Debug)]
struct Probe {
    pool: usize,
    backend: usize,
    connected: bool,
    /// Decided (and closed); waiting for `on_close`.
    done: bool,
    timer: TimerId,
}

/// The health checker's timers (the payload of a
/// [`crate::shard::ProxyTimer`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tick {
    /// Probe every backend of a pool.
    Round(usize),
    /// A probe's deadline.
    Timeout(ConnId),
}

/// One shard's part in health checking.
#[derive(Debug)]
pub struct Health {
    config: Arc<Config>,
    /// The configuration generation `config` is.
    gen: u64,
    me: usize,
    shards: usize,
    /// `[pool][backend]`, for the pools this shard checks (empty otherwise).
    verdicts: Vec<Vec<Verdict>>,
    probes: HashMap<ConnId, Probe>,
    /// Messages a full mailbox handed back, per destination shard, in order.
    outbox: Outbox<ProxyMsg>,
    /// `[pool][backend]`: this shard reported a failure not yet followed by a
    /// reported success.
    reported_failure: Vec<Vec<bool>>,
    /// The interval timers of the rounds (cancelled on reload).
    rounds: Vec<TimerId>,
}

impl Health {
    /// Shard `me` of `shards`, for `config` (generation `gen`).
    pub fn new(config: Arc<Config>, gen: u64, me: ShardId, shards: usize) -> Health {
        let shards = shards.max(1);
        let verdicts = config
            .pools
            .iter()
            .map(|pool| {
                if pool.health.is_some() && checker_of(&pool.name, shards) == me.0 {
                    vec![Verdict::default(); pool.backends.len()]
                } else {
                    Vec::new()
                }
            })
            .collect();
        let reported_failure = config
            .pools
            .iter()
            .map(|p| vec![false; p.backends.len()])
            .collect();
        Health {
            config,
            gen,
            me: me.0,
            shards,
            verdicts,
            probes: HashMap::new(),
            outbox: Outbox::new(),
            reported_failure,
            rounds: Vec::new(),
        }
    }

    /// Switches to `config` (generation `gen`): probes in flight are abandoned
    /// and the rounds restarted for the pools this shard now checks (pools no
    /// longer configured stop being checked, new ones start). A backend kept
    /// by name and address keeps its verdict, and every verdict this shard
    /// holds is announced again (in the new generation's indices) so that every
    /// shard's view agrees whatever messages of the old one it dropped.
    /// `pools` is this shard's view for `config`.
    pub fn reload(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        pools: &mut ShardPools,
        config: Arc<Config>,
        gen: u64,
    ) {
        for t in self.rounds.drain(..) {
            ctx.cancel_timer(t);
        }
        for (conn, probe) in std::mem::take(&mut self.probes) {
            ctx.cancel_timer(probe.timer);
            ctx.close(conn);
            if probe.connected && !probe.done {
                // Its on_close still comes: keep it, decided (ignored).
                self.probes.insert(
                    conn,
                    Probe {
                        done: true,
                        ..probe
                    },
                );
            } else if probe.connected {
                self.probes.insert(conn, probe);
            }
        }
        let old = std::mem::replace(
            self,
            Health::new(config, gen, ShardId(self.me), self.shards),
        );
        self.probes = old.probes;
        for (p, pool) in self.config.pools.clone().iter().enumerate() {
            if self.verdicts[p].is_empty() {
                continue;
            }
            let Some(op) = old.config.pools.iter().position(|o| o.name == pool.name) else {
                continue;
            };
            for (b, backend) in pool.backends.iter().enumerate() {
                let kept = old.config.pools[op]
                    .backends
                    .iter()
                    .position(|o| o.address == backend.address)
                    .and_then(|ob| old.verdicts.get(op)?.get(ob));
                if let Some(v) = kept {
                    self.verdicts[p][b] = Verdict {
                        probing: false,
                        ..v.clone()
                    };
                }
                let up = !self.verdicts[p][b].down;
                pools.set_up(p, b, up);
                let msg = ProxyMsg::Health {
                    gen,
                    pool: p as u32,
                    backend: b as u32,
                    up,
                };
                let me = self.me;
                for to in (0..self.shards).filter(|&to| to != me) {
                    self.send(ctx, to, msg.clone());
                }
            }
        }
        self.start(ctx);
    }

    /// The shard that checks `pool`.
    pub fn checker(&self, pool: usize) -> usize {
        self.config
            .pools
            .get(pool)
            .map_or(0, |p| checker_of(&p.name, self.shards))
    }

    /// Starts probing the pools this shard checks (a first round now).
    pub fn start(&mut self, ctx: &mut Ctx<'_, ProxyShard>) {
        for p in 0..self.verdicts.len() {
            if self.verdicts[p].is_empty() {
                continue;
            }
            let Some(h) = self.config.pools[p].health.as_ref() else {
                continue;
            };
            let period = Duration::from_millis(h.interval_ms);
            self.rounds
                .push(ctx.set_interval(period, ProxyTimer::health(Tick::Round(p))));
            self.round(ctx, p);
        }
    }

    /// One probe per backend of pool `p` (not for a backend still being probed).
    fn round(&mut self, ctx: &mut Ctx<'_, ProxyShard>, p: usize) {
        let Some(h) = self.config.pools[p].health.clone() else {
            return;
        };
        for b in 0..self.verdicts[p].len() {
            if self.verdicts[p][b].probing {
                continue;
            }
            let addr = self.config.pools[p].backends[b].address;
            // A TLS pool's probe does the handshake too (a backend whose
            // certificate no longer verifies is down).
            let tls = self.config.pools[p].tls.as_ref();
            match crate::tls::connect_upstream(ctx, tls, addr, ProxyConn(Role::Probe)) {
                Ok(conn) => {
                    self.verdicts[p][b].probing = true;
                    let timer = ctx.set_timer(
                        Duration::from_millis(h.timeout_ms),
                        ProxyTimer::health(Tick::Timeout(conn)),
                    );
                    self.probes.insert(
                        conn,
                        Probe {
                            pool: p,
                            backend: b,
                            connected: false,
                            done: false,
                            timer,
                        },
                    );
                }
                Err(e) => {
                    debug!(backend = %addr, error = %e, "health probe: cannot start connect");
                    self.record(ctx, p, b, false, true);
                }
            }
        }
        // Anything a full mailbox held back gets another chance every round.
        for to in 0..self.shards {
            self.flush(ctx, to);
        }
    }

    /// One of this module's timers fired (rounds and probe deadlines are
    /// cancelled when they stop applying, so a firing one is current).
    pub(crate) fn on_timer(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        pools: &mut ShardPools,
        tick: Tick,
    ) {
        match tick {
            Tick::Round(p) => self.round(ctx, p),
            Tick::Timeout(conn) => {
                if let Some(probe) = self.probes.get(&conn).filter(|p| !p.done) {
                    let connected = probe.connected;
                    debug!(conn = %conn, "health probe timed out");
                    self.verdict(ctx, pools, conn, false);
                    if !connected {
                        // A connect in flight that is closed is released without
                        // on_connect/on_close.
                        self.probes.remove(&conn);
                    }
                }
            }
        }
    }

    /// A probe's connect finished.
    pub fn on_connect(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        pools: &mut ShardPools,
        conn: ConnId,
        result: io::Result<()>,
    ) {
        let Some(probe) = self.probes.get_mut(&conn) else {
            return;
        };
        match result {
            Err(_) => {
                // Released already: no on_close will come.
                self.verdict(ctx, pools, conn, false);
                self.probes.remove(&conn);
            }
            Ok(()) => {
                probe.connected = true;
                let pool = &self.config.pools[probe.pool];
                match pool.health.as_ref().map(|h| (h.kind, h.path.clone())) {
                    Some((CheckKind::Http, path)) => {
                        let host = pool.backends[probe.backend].address;
                        // A backend that expects a PROXY header gets one that
                        // says "the proxy's own connection" (v1 UNKNOWN, v2
                        // LOCAL), as HAProxy's check-send-proxy does.
                        let mut header = Vec::new();
                        match pool.send_proxy_protocol {
                            Some(ProxyVersion::V1) => {
                                header.extend_from_slice(b"PROXY UNKNOWN\r\n")
                            }
                            Some(ProxyVersion::V2) => {
                                shardline::proxy_protocol::encode_v2_local(&mut header)
                            }
                            None => {}
                        }
                        if !header.is_empty() {
                            let _ = ctx.send(conn, &header);
                        }
                        let req = format!(
                            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: shardline-proxy-health\r\n\
                             Connection: close\r\n\r\n"
                        );
                        if ctx.send(conn, req.as_bytes()).is_err() {
                            self.verdict(ctx, pools, conn, false);
                        }
                    }
                    _ => self.verdict(ctx, pools, conn, true),
                }
            }
        }
    }

    /// Bytes from a probe: the status line decides.
    pub fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        pools: &mut ShardPools,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        if self.probes.get(&conn).is_none_or(|p| p.done) {
            return data.len();
        }
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            if data.len() > MAX_STATUS_LINE {
                self.verdict(ctx, pools, conn, false);
                return data.len();
            }
            return 0;
        };
        let line = &data[..end];
        let ok = line.len() >= 12
            && (line.starts_with(b"HTTP/1.1 ") || line.starts_with(b"HTTP/1.0 "))
            && line[9] == b'2'
            && line[10].is_ascii_digit()
            && line[11].is_ascii_digit();
        self.verdict(ctx, pools, conn, ok);
        data.len()
    }

    /// A probe connection ended (after a verdict, or before one: a failure).
    pub fn on_close(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        pools: &mut ShardPools,
        conn: ConnId,
    ) {
        if self.probes.get(&conn).is_some_and(|p| !p.done) {
            self.verdict(ctx, pools, conn, false);
        }
        self.probes.remove(&conn);
    }

    /// Decides probe `conn` and closes it.
    fn verdict(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        pools: &mut ShardPools,
        conn: ConnId,
        ok: bool,
    ) {
        let Some(probe) = self.probes.get_mut(&conn) else {
            return;
        };
        if probe.done {
            return;
        }
        probe.done = true;
        let (p, b) = (probe.pool, probe.backend);
        ctx.cancel_timer(probe.timer);
        ctx.close(conn);
        if let Some(v) = self.verdicts.get_mut(p).and_then(|v| v.get_mut(b)) {
            v.probing = false;
        }
        self.decide(ctx, pools, p, b, ok, true);
    }

    fn record(&mut self, ctx: &mut Ctx<'_, ProxyShard>, p: usize, b: usize, ok: bool, probe: bool) {
        // Without the shard's pools (a connect that could not even start): the
        // transition is still broadcast; this shard's own view is updated by the
        // message it posts to itself.
        if let Some(change) = self.count(p, b, ok, probe) {
            self.announce(ctx, p, b, change, true);
        }
    }

    fn decide(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        pools: &mut ShardPools,
        p: usize,
        b: usize,
        ok: bool,
        probe: bool,
    ) {
        if let Some(up) = self.count(p, b, ok, probe) {
            pools.set_up(p, b, up);
            self.announce(ctx, p, b, up, false);
        }
    }

    /// Counts an outcome on the checker; `Some(up)` on a transition.
    fn count(&mut self, p: usize, b: usize, ok: bool, probe: bool) -> Option<bool> {
        let h = self.config.pools.get(p)?.health.clone()?;
        let v = self.verdicts.get_mut(p)?.get_mut(b)?;
        if ok {
            v.failures = 0;
            if probe {
                v.successes = v.successes.saturating_add(1);
            }
            if v.down && v.successes >= h.rise {
                v.down = false;
                return Some(true);
            }
        } else {
            v.successes = 0;
            v.failures = v.failures.saturating_add(1);
            if !v.down && v.failures >= h.fall {
                v.down = true;
                return Some(false);
            }
        }
        None
    }

    /// Tells every other shard (and with `to_self`, this one) of a transition.
    fn announce(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        p: usize,
        b: usize,
        up: bool,
        to_self: bool,
    ) {
        let addr = self.config.pools[p].backends[b].address;
        info!(pool = %self.config.pools[p].name, backend = %addr, up, "backend health changed");
        let msg = ProxyMsg::Health {
            gen: self.gen,
            pool: p as u32,
            backend: b as u32,
            up,
        };
        for to in 0..self.shards {
            if to != self.me || to_self {
                self.send(ctx, to, msg.clone());
            }
        }
    }

    /// Posts `msg` to shard `to`, behind anything already waiting for it.
    fn send(&mut self, ctx: &mut Ctx<'_, ProxyShard>, to: usize, msg: ProxyMsg) {
        if to >= self.shards {
            return;
        }
        // Kept behind what waits for `to` (a full mailbox): on_mailbox_ready
        // (or the next round) retries.
        self.outbox.post(ctx, ShardId(to), msg);
    }

    /// Posts what waits for `to`, in order, until its mailbox is full.
    fn flush(&mut self, ctx: &mut Ctx<'_, ProxyShard>, to: usize) {
        self.outbox.flush(ctx, ShardId(to));
    }

    /// A mailbox that was full has room again.
    pub fn on_mailbox_ready(&mut self, ctx: &mut Ctx<'_, ProxyShard>, to: ShardId) {
        self.flush(ctx, to.0);
    }

    /// Messages waiting for a full mailbox (for tests and metrics).
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// A message from another shard (or this one).
    pub fn on_message(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        pools: &mut ShardPools,
        msg: ProxyMsg,
    ) {
        match msg {
            // Indices of another configuration: meaningless here (after a
            // reload the checkers announce every verdict again).
            ProxyMsg::Health { gen, .. } | ProxyMsg::Passive { gen, .. } if gen != self.gen => {}
            ProxyMsg::Health {
                pool, backend, up, ..
            } => {
                if !pools.set_up(pool as usize, backend as usize, up) {
                    warn!(pool, backend, "health message for an unknown backend");
                }
            }
            ProxyMsg::Passive {
                pool, backend, ok, ..
            } => {
                self.decide(ctx, pools, pool as usize, backend as usize, ok, false);
            }
            // The handler's business (crate::reload), never routed here.
            ProxyMsg::Reload(_) => {}
        }
    }

    /// This shard's traffic to `(pool, backend)` of configuration generation
    /// `gen` succeeded (`ok`) or failed: reported to the pool's checker (see the
    /// crate doc for when). Traffic of an older configuration is not counted.
    pub fn passive(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        pools: &mut ShardPools,
        gen: u64,
        pool: usize,
        backend: usize,
        ok: bool,
    ) {
        if gen == self.gen
            && pools.watches_outliers(pool)
            && pools.outcome(pool, backend, ok, std::time::Instant::now())
        {
            let (name, address) = self
                .config
                .pools
                .get(pool)
                .and_then(|p| Some((p.name.as_str(), p.backends.get(backend)?.address)))
                .unwrap_or(("?", std::net::SocketAddr::from(([0, 0, 0, 0], 0))));
            tracing::warn!(pool = name, backend = %address, shard = self.me,
                "outlier ejection: consecutive failures");
        }
        if gen != self.gen
            || self
                .config
                .pools
                .get(pool)
                .is_none_or(|p| p.health.is_none())
        {
            return;
        }
        let Some(reported) = self
            .reported_failure
            .get_mut(pool)
            .and_then(|r| r.get_mut(backend))
        else {
            return;
        };
        if ok && !*reported {
            return;
        }
        *reported = !ok;
        let checker = self.checker(pool);
        if checker == self.me {
            self.decide(ctx, pools, pool, backend, ok, false);
        } else {
            let msg = ProxyMsg::Passive {
                gen: self.gen,
                pool: pool as u32,
                backend: backend as u32,
                ok,
            };
            self.send(ctx, checker, msg);
        }
    }
}
