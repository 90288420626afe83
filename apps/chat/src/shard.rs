//! The per-shard handler: the clients connected to this shard, the local fan-out
//! index of the channels they are in, and (in [`Owner`]) the names this shard owns.
//!
//! This file is the router: the handler's types and callbacks, each handing the
//! event to the code that owns it — the client lifecycle, input pumping, timers
//! and barrier bookkeeping in `session.rs`, commands in `commands/`, incoming mail
//! in `deliver.rs`. It must
//! never block and never trust a [`ClientRef`] to still exist.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use shardline::{CloseReason, ConnId, Ctx, Handler, Origin, Preamble, ShardId, TimerId};
use tracing::{info, warn};

use crate::{
    auth::oper::OperChecker,
    casemap::{owner_of, NameKey},
    client::{Client, ClientTls},
    commands::KNOWN,
    history::Storage,
    info::ServerInfo,
    mail::{ChatMsg, ClientRef, Request},
    stats::ShardStats,
    view::LocalChan,
    websocket::{self, frame::close_code, Transport},
};

/// Messages that met a full mailbox, kept per destination in order until
/// `on_mailbox_ready` (the framework's [`shardline::Outbox`]). The outbox itself
/// is unbounded; the chat bounds what clients *start* with [`has_room`].
pub(crate) type Outbox = shardline::Outbox<ChatMsg>;

/// Whether new work — a client's request, an owner's fan-out — may go to shard
/// `to`: fewer than `limits.outbox_capacity` messages wait for it. A refusal
/// disconnects the client whose work it is ("Server busy"), so nothing is
/// dropped silently. Consequences of work already accepted (replies, acks,
/// membership changes, quit notices) are always queued: each accepted request
/// produces a bounded number of them, so the outbox stays bounded by roughly
/// `outbox_capacity × shards` even then.
pub(crate) fn has_room(outbox: &Outbox, info: &ServerInfo, to: usize) -> bool {
    outbox.pending(ShardId(to)) < info.config.limits.outbox_capacity
}

/// What a shard's timers carry (the framework's `type Timer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTimer {
    /// The end-of-turn flush of the acknowledgements owed to other shards.
    AckFlush,
    /// Only wakes the loop during shutdown.
    ShutdownNudge,
    /// Client `id`'s registration or ping timer (`Client::timer`).
    Client(u64),
    /// Client `id`'s flood-control wait (`Client::flood_timer`).
    Flood(u64),
    /// The cluster's link and membership ([`crate::cluster`]).
    Cluster(crate::cluster::ClusterTimer),
    /// The end of a loop turn that appended to history: hand the records to
    /// the store's writer (set by the turn's first append).
    StoreTurn,
    /// Drop history past the age limit (an interval).
    HistoryExpire,
    /// Delete uploaded files past their expiry (an interval on shard 0).
    FileSweep,
    /// A nick protection grace period ended (on the nick's owner; the token
    /// finds the nick).
    NickGuard(u64),
    /// A WHOIS asked of another node had no answer in time (on the nick's
    /// owner; the token finds the ask).
    WhoisDue(u64),
    /// A nick owner's [`ChatMsg::HolderCheck`] waiting on the holder's shard
    /// for I/O to be reaped: `reaps` is how many reaps have happened since
    /// it came. Timers of zero run in the turn they are set in when set from
    /// mail (mail is drained before timers fire), and in the next turn —
    /// after its reap — when set from a timer; so the first firing re-arms
    /// with 0, each later one counts a reap, and the answer goes out at
    /// `HOLDER_CHECK_REAPS` (two, not one: io_uring's wait skips entering
    /// the kernel while completions are still queued, so one reap may not
    /// yet show a completion the kernel has).
    HolderCheck {
        /// The holder.
        holder: ClientRef,
        /// The owner to answer.
        owner: usize,
        /// The owner's token.
        token: u64,
        /// Reaps seen since the check came (`None`: none yet, not even the
        /// turn's end).
        reaps: Option<u8>,
        /// When the check came.
        since: std::time::Instant,
    },
}

/// Reaps of I/O completions a holder's shard waits for before answering a
/// [`ChatMsg::HolderCheck`].
pub(crate) const HOLDER_CHECK_REAPS: u8 = 2;

/// And the least time it waits before answering that the holder is still
/// there: a busy machine defers the kernel's processing of a peer's FIN or
/// RST (to ksoftirqd), past two loop turns of a shard with work to do (the
/// registration test saw 433 after a plain close, under load, about once in
/// seven runs). A gone holder is answered as soon as it is seen gone; only
/// a 433 waits this long.
pub(crate) const HOLDER_CHECK_FLOOR: Duration = Duration::from_millis(20);

/// One shard of the chat server (the [`Handler`]).
#[derive(Debug)]
pub struct ChatShard {
    pub(crate) info: Arc<ServerInfo>,
    pub(crate) me: usize,
    pub(crate) shards: usize,
    /// The port the first TLS listener is bound to (for `sts=port=` when the
    /// configuration asked for port 0).
    pub(crate) tls_port: Option<u16>,
    /// This shard's clients by id. A connection's own events find its client
    /// through its `type Conn` (the id); this map is how everything else does:
    /// mail from other shards addresses clients by [`ClientRef`] id (never
    /// reused, so a stale one misses), and channels list members by id.
    pub(crate) clients: HashMap<u64, Client>,
    /// WebSocket clients' decoders, by client id (only they are here).
    pub(crate) ws: HashMap<u64, crate::websocket::WsConn>,
    /// The WebSocket listeners (see [`crate::websocket`]), set in `on_start`.
    pub(crate) ws_listeners: Vec<shardline::ListenerId>,
    /// The file host, when on and its base URL known (set in `on_start`).
    pub(crate) filehost: Option<Arc<crate::filehost::FileHost>>,
    /// Its public base URL (`soju.im/FILEHOST` is this and `/upload`).
    pub(crate) filehost_base: Option<String>,
    /// HTTP connections with a request body or a file in progress.
    pub(crate) http_jobs: HashMap<u64, crate::filehost::HttpJob>,
    pub(crate) next_id: u64,
    /// Channel key -> this shard's clients in it: the fan-out index, with the
    /// channel's local view.
    pub(crate) local: HashMap<NameKey, LocalChan>,
    /// Other nodes' users' NICK and QUIT lines delivered lately, with who
    /// got each (they come once per shared channel).
    pub(crate) once_seen: crate::deliver::OnceSeen,
    pub(crate) owner: crate::owner::Owner,
    pub(crate) outbox: Outbox,
    /// Acks to send at the end of this loop turn, per destination shard.
    pub(crate) acks: Vec<Vec<(u64, u32)>>,
    pub(crate) acks_armed: bool,
    pub(crate) shutting_down: bool,
    /// Commands run on this shard, by index in [`KNOWN`] (STATS m).
    pub(crate) command_counts: Vec<u64>,
    /// The most users a LUSERS gathered on this shard has seen server-wide.
    pub(crate) peak_users: u64,
    /// This shard's counters for `/metrics` (only this shard writes them).
    pub(crate) stats: Arc<ShardStats>,
    /// Where this shard opens its store (`None`: history is off).
    storage: Option<Arc<Storage>>,
    /// Batch references made so far (CHATHISTORY answers).
    batches: u64,
    /// Where OPER checks against hashes go (a helper thread).
    pub(crate) oper_checker: Arc<OperChecker>,
    /// Guest nicks made so far (forced renames).
    pub(crate) guests: u64,
    /// Untrusted PROXY-protocol sources refused since the last warning, and
    /// when it was (at most one warning a second per shard).
    refused: (u64, Option<std::time::Instant>),
    /// This shard's part of a cluster, when `[cluster]` is on.
    pub(crate) cluster: Option<Box<crate::cluster::Cluster>>,
}

impl ChatShard {
    /// The handler for shard `id`, without history; sized for the shard count
    /// in `on_start`. Without [`crate::build`]'s OPER checker, OPER with a hashed password
    /// is refused (263, try again).
    pub fn new(info: Arc<ServerInfo>, id: ShardId) -> ChatShard {
        ChatShard::with_storage(info, id, None, Arc::default())
    }

    /// The handler for shard `id`, which opens its store in `storage` in
    /// `on_start` and checks hashed OPER passwords with `oper_checker`.
    pub(crate) fn with_storage(
        info: Arc<ServerInfo>,
        id: ShardId,
        storage: Option<Arc<Storage>>,
        oper_checker: Arc<OperChecker>,
    ) -> ChatShard {
        let stats = info.stats.add_shard(id.0);
        ChatShard {
            owner: crate::owner::Owner::new(id.0, stats.clone()),
            stats,
            info,
            me: id.0,
            shards: 1,
            tls_port: None,
            clients: HashMap::new(),
            ws: HashMap::new(),
            ws_listeners: Vec::new(),
            filehost: None,
            filehost_base: None,
            http_jobs: HashMap::new(),
            next_id: 1,
            local: HashMap::new(),
            once_seen: crate::deliver::OnceSeen::default(),
            outbox: Outbox::new(),
            acks: vec![Vec::new()],
            acks_armed: false,
            shutting_down: false,
            command_counts: vec![0; KNOWN.len()],
            peak_users: 0,
            storage,
            batches: 0,
            oper_checker,
            guests: 0,
            refused: (0, None),
            cluster: None,
        }
    }

    /// The file host of the data directory, if `[filehost]` is on.
    pub(crate) fn storage_filehost(&self) -> Option<Arc<crate::filehost::FileHost>> {
        self.storage.as_ref().and_then(|s| s.filehost.clone())
    }

    /// A number for a new batch reference, unique on this shard.
    pub(crate) fn next_batch(&mut self) -> u64 {
        self.batches += 1;
        self.batches
    }

    /// Whether this shard keeps history (its store is open).
    pub(crate) fn history_on(&self) -> bool {
        self.owner.history.on()
    }

    /// Whether accounts exist here: they live in the store (every shard's
    /// store is open, or the server stopped at start).
    pub(crate) fn accounts_on(&self) -> bool {
        self.owner.history.on()
    }

    /// The password hashing pool (with the store).
    pub(crate) fn hasher(&self) -> Option<&crate::auth::pool::HashPool> {
        self.storage.as_ref().map(|s| &s.hasher)
    }
}

impl Drop for ChatShard {
    /// The shard has stopped: its store writes and syncs what it holds, so a
    /// graceful stop loses nothing.
    fn drop(&mut self) {
        self.owner.history.close(self.me);
    }
}

fn close_reason_text(reason: &CloseReason) -> String {
    match reason {
        CloseReason::PeerClosed => "Remote host closed the connection".into(),
        CloseReason::SendQueueFull => "SendQ exceeded".into(),
        CloseReason::InputBufferFull => "RecvQ exceeded".into(),
        CloseReason::Io(kind) => format!("Read error: {kind}"),
        CloseReason::Shutdown => "Server shutting down".into(),
        CloseReason::HandlerPanic => "Internal error".into(),
        _ => "Connection closed".into(),
    }
}

impl Handler for ChatShard {
    type Msg = ChatMsg;
    type Timer = ChatTimer;
    /// The client's id: its key in `clients`.
    type Conn = u64;
    type Listener = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        self.shards = ctx.shards();
        // `build_with` adds the WebSocket listeners after all others.
        let mut ids: Vec<_> = ctx.listeners().iter().map(|l| l.id).collect();
        ids.sort();
        let n_ws = self.info.config.websocket.listeners().min(ids.len());
        self.ws_listeners = ids.split_off(ids.len() - n_ws);
        self.tls_port = ctx
            .listeners()
            .iter()
            .find(|l| l.tls && !self.ws_listeners.contains(&l.id))
            .map(|l| l.addr.port());
        self.acks = vec![Vec::new(); self.shards];
        self.filehost_start(ctx);
        let incarnation = self.info.incarnation.clone();
        self.cluster_start(ctx, &incarnation);
        if let Some(storage) = &self.storage {
            // On this shard's thread: recovery reads this shard's partitions
            // while the other shards read theirs.
            let limits = self.info.config.history.limits();
            self.owner.history.open(ctx, storage, limits);
            self.owner.index_certs();
        }
        info!(
            shard = self.me,
            shards = self.shards,
            history = self.history_on(),
            "chat shard ready"
        );
    }

    /// With `server.proxy_protocol`, a trusted source's connection starts
    /// with a PROXY header (read by the framework, before TLS; its source is
    /// the `peer` of `on_accept`), and any other source is refused (counted
    /// in `shardline_preamble_refused_total`, warned about at most once a
    /// second per shard).
    fn on_preamble(
        &mut self,
        _listener: shardline::Listener<'_, ()>,
        peer: SocketAddr,
    ) -> Preamble {
        let s = &self.info.config.server;
        if !s.proxy_protocol {
            return Preamble::None;
        }
        if s.proxy_protocol_trusted
            .iter()
            .any(|c| c.contains(peer.ip()))
        {
            return Preamble::ProxyProtocol {
                timeout: Duration::from_millis(s.proxy_protocol_timeout_ms),
            };
        }
        self.refused.0 += 1;
        let now = std::time::Instant::now();
        if self
            .refused
            .1
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            warn!(client = %peer, refused = self.refused.0,
                "source not in server.proxy_protocol_trusted; refused");
            self.refused = (0, Some(now));
        }
        Preamble::Refuse
    }

    fn on_accept(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        conn: ConnId,
        listener: shardline::Listener<'_, Self::Listener>,
        peer: SocketAddr,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut host = peer.ip().to_string();
        if host.starts_with(':') {
            host.insert(0, '0');
        }
        // On a TLS listener the handshake is done by now: note what it proved.
        let tls = ctx.tls(conn).map(|info| ClientTls {
            certfp: info.peer_cert_sha256_hex(),
        });
        let mut c = Client::new(conn, peer.ip(), host, tls);
        let mut timeout = self.info.config.limits.registration_timeout();
        if self.ws_listeners.contains(&listener.id) {
            // An HTTP request first (see `websocket`), in a shorter time.
            c.transport = Transport::Http;
            timeout = self.info.config.websocket.request_timeout();
        }
        c.timer = Some(ctx.set_timer(timeout, ChatTimer::Client(id)));
        self.clients.insert(id, c);
        self.stats.clients.set(self.clients.len() as u64);
        if self.info.config.limits.max_connections_per_ip > 0 {
            // Counted at the address's owner shard, since accepting spreads one
            // address over every shard; its commands wait for the verdict.
            let to = owner_of(&peer.ip().to_string(), self.shards);
            if self.request(ctx, id, to, Request::IpConnect { ip: peer.ip() }) {
                if let Some(c) = self.clients.get_mut(&id) {
                    c.parked = true;
                }
            }
        }
        id
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        _conn: ConnId,
        id: &mut u64,
        data: &[u8],
    ) -> usize {
        let id = *id;
        if self.is_cluster_link(id) {
            return self.cluster_data(ctx, id, data);
        }
        let Some(c) = self.clients.get_mut(&id) else {
            return data.len();
        };
        if c.quitting.is_some() {
            return data.len();
        }
        match c.transport {
            Transport::Tcp => {}
            Transport::Http => return self.http_data(ctx, id, data),
            Transport::Text | Transport::Binary => return self.ws_data(ctx, id, data),
            Transport::Closed => return data.len(),
        }
        c.inbuf.extend_from_slice(data);
        // Runs what it can; a parked client's input stays buffered, and past the
        // RecvQ its socket is no longer read (TCP flow control slows it down).
        self.pump(ctx, id);
        data.len()
    }

    /// The client sent all it will: what it sent before (a QUIT with its
    /// reason, a last message) is still run, at the pace flood control allows,
    /// and the connection is closed when nothing complete is left
    /// (`ChatShard::pump`).
    fn on_eof(&mut self, ctx: &mut Ctx<'_, ChatShard>, conn: ConnId, id: &mut u64) {
        if self.is_cluster_link(*id) {
            ctx.close(conn);
            return;
        }
        if self.http_job_eof(ctx, *id) {
            return;
        }
        let Some(c) = self.clients.get_mut(id) else {
            ctx.close(conn);
            return;
        };
        c.peer_eof = true;
        self.pump(ctx, *id);
    }

    fn on_close(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        _conn: ConnId,
        id: u64,
        reason: &CloseReason,
    ) {
        if self.is_cluster_link(id) {
            self.cluster_closed(ctx, id, &close_reason_text(reason));
            return;
        }
        self.http_job_end(id);
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        c.alive = false;
        if self.shutting_down {
            self.remove_client(ctx, id);
            return;
        }
        self.begin_quit(ctx, id, close_reason_text(reason));
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, ChatShard>, timer: TimerId, payload: ChatTimer) {
        match payload {
            ChatTimer::AckFlush => {
                self.acks_armed = false;
                self.flush_acks(ctx);
            }
            ChatTimer::ShutdownNudge => {}
            ChatTimer::Cluster(t) => self.cluster_timer(ctx, t),
            ChatTimer::Flood(id) => {
                if let Some(c) = self
                    .clients
                    .get_mut(&id)
                    .filter(|c| c.flood_timer == Some(timer))
                {
                    c.flood_timer = None;
                    self.pump(ctx, id);
                }
            }
            ChatTimer::Client(id) => self.client_timer(ctx, timer, id),
            ChatTimer::StoreTurn => {
                let done = self.owner.history.end_turn(ctx);
                self.owner.tickets_done(ctx, &mut self.outbox, done);
            }
            ChatTimer::HistoryExpire => self.owner.history.expire(),
            ChatTimer::FileSweep => {
                if let Some(host) = self
                    .filehost
                    .as_ref()
                    .filter(|_| self.owner.history.owns_files())
                {
                    host.sweep(std::time::SystemTime::now());
                }
            }
            ChatTimer::NickGuard(token) => {
                self.owner
                    .guard_due(ctx, &self.info, &mut self.outbox, token)
            }
            ChatTimer::WhoisDue(token) => {
                self.owner.whois_due(ctx, &mut self.outbox, token);
                self.cluster_flush_owner(ctx);
            }
            ChatTimer::HolderCheck {
                holder,
                owner,
                token,
                reaps,
                since,
            } => {
                let reaps = reaps.map_or(0, |n| n + 1);
                let alive = holder.shard == self.me
                    && self
                        .clients
                        .get(&holder.id)
                        .is_some_and(|c| c.alive && c.quitting.is_none());
                let early = reaps < HOLDER_CHECK_REAPS;
                if early || (alive && since.elapsed() < HOLDER_CHECK_FLOOR) {
                    let next = ChatTimer::HolderCheck {
                        holder,
                        owner,
                        token,
                        reaps: Some(reaps.min(HOLDER_CHECK_REAPS)),
                        since,
                    };
                    let wait = if early {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(1)
                    };
                    ctx.set_timer(wait, next);
                    return;
                }
                let msg = ChatMsg::HolderAnswer { token, alive };
                self.outbox.post(ctx, ShardId(owner), msg);
            }
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, ChatShard>, from: Origin, msg: ChatMsg) {
        let msg = match (from, msg) {
            (Origin::Remote, ChatMsg::Rehash(info)) => {
                self.rehash(ctx, info);
                return;
            }
            (Origin::Remote, ChatMsg::StoreReport(r)) => {
                let done = self.owner.history.on_report(r);
                self.owner.tickets_done(ctx, &mut self.outbox, done);
                return;
            }
            (Origin::Remote, ChatMsg::HashDone(done)) => {
                if !self.shutting_down {
                    self.hash_done(ctx, done);
                }
                return;
            }
            (Origin::Remote, ChatMsg::OperChecked { id, granted }) => {
                self.oper_checked(ctx, id, granted);
                return;
            }
            (Origin::Remote, ChatMsg::Store(control)) => {
                match control {
                    crate::mail::StoreControl::Detach(reply) => {
                        let _ = reply.send(self.owner.history.detach(ctx));
                    }
                    crate::mail::StoreControl::Attach(store) => {
                        self.owner.history.attach(ctx, *store);
                        // The accounts are those on disk now.
                        self.owner.index_certs();
                    }
                }
                return;
            }
            (Origin::Remote, _) => {
                warn!(
                    shard = self.me,
                    "ignoring chat mail from outside the shards"
                );
                return;
            }
            (
                Origin::Shard(s),
                ChatMsg::Rehash(_)
                | ChatMsg::StoreReport(_)
                | ChatMsg::HashDone(_)
                | ChatMsg::Store(_)
                | ChatMsg::OperChecked { .. },
            ) => {
                warn!(
                    shard = self.me,
                    from = s.0,
                    "ignoring a rehash or store report posted by a shard"
                );
                return;
            }
            (Origin::Shard(s), msg) => {
                self.count_mail(s.0, &msg);
                msg
            }
        };
        // Once shutting down every connection is closing and takes no more output,
        // and nobody waits for replies or acks: answering would only keep other
        // shards' loops busy while they try to stop.
        if !self.shutting_down {
            self.on_mail(ctx, msg);
            self.cluster_flush_owner(ctx);
            // Only mail changes the channels an owner holds.
            self.stats.channels.set(self.owner.channel_count() as u64);
        } else {
            // Workaround: the shard loop only stops on a turn that took no mail,
            // and after a turn that did it sleeps until the next timer — without
            // this nudge, until the shutdown deadline.
            ctx.set_timer(Duration::from_millis(1), ChatTimer::ShutdownNudge);
        }
    }

    fn on_connect(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        _conn: ConnId,
        id: &mut u64,
        result: std::io::Result<()>,
    ) {
        if self.is_cluster_link(*id) {
            self.cluster_connected(ctx, *id, result);
        }
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_, ChatShard>, _conn: ConnId, id: &mut u64) {
        self.file_pump(ctx, *id);
    }

    fn on_mailbox_ready(&mut self, ctx: &mut Ctx<'_, ChatShard>, to: ShardId) {
        self.outbox.flush(ctx, to);
    }

    fn on_shutdown(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        self.cluster_stop(ctx);
        self.shutting_down = true;
        info!(
            shard = self.me,
            clients = self.clients.len(),
            "telling clients we shut down"
        );
        for c in self.clients.values_mut().filter(|c| c.alive) {
            let _ = websocket::send(ctx, c, b"ERROR :Server shutting down\r\n");
            websocket::send_close(ctx, c, close_code::GOING_AWAY, "Server shutting down");
        }
    }
}
