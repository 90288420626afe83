//! The per-shard handler: the clients connected to this shard, the local fan-out
//! index of the channels they are in, and (in [`Owner`]) the names this shard owns.
//!
//! This file holds the connection lifecycle, input pumping, timers and the barrier
//! bookkeeping; commands live in `commands/`, incoming mail in `deliver.rs`. It must
//! never block and never trust a [`ClientRef`] to still exist.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use shardline::{CloseReason, ConnId, Ctx, Handler, Origin, ShardId, TimerId};
use tracing::{debug, info, warn};

use crate::{
    casemap::{casefold, owner_of, NameKey},
    client::Client,
    commands::{Flow, KNOWN},
    framing::Frame,
    info::ServerInfo,
    mail::{ChatMsg, ClientRef, NoticeKind, Outgoing, Request, UserNotice},
    message::MAX_LINE,
    reply::{line, write_numeric},
    stats::ShardStats,
    view::LocalChan,
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
    /// The end-of-turn ack flush ([`ChatShard::ack`]).
    AckFlush,
    /// Only wakes the loop during shutdown.
    ShutdownNudge,
    /// Client `id`'s registration or ping timer (`Client::timer`).
    Client(u64),
    /// Client `id`'s flood-control wait (`Client::flood_timer`).
    Flood(u64),
}

/// One shard of the chat server (the [`Handler`]).
#[derive(Debug)]
pub struct ChatShard {
    pub(crate) info: Arc<ServerInfo>,
    pub(crate) me: usize,
    pub(crate) shards: usize,
    /// This shard's clients by id. A connection's own events find its client
    /// through its `type Conn` (the id); this map is how everything else does:
    /// mail from other shards addresses clients by [`ClientRef`] id (never
    /// reused, so a stale one misses), and channels list members by id.
    pub(crate) clients: HashMap<u64, Client>,
    next_id: u64,
    /// Channel key -> this shard's clients in it: the fan-out index, with the
    /// channel's local view.
    pub(crate) local: HashMap<NameKey, LocalChan>,
    pub(crate) owner: crate::owner::Owner,
    pub(crate) outbox: Outbox,
    /// Acks to send at the end of this loop turn, per destination shard.
    acks: Vec<Vec<(u64, u32)>>,
    acks_armed: bool,
    shutting_down: bool,
    /// Commands run on this shard, by index in [`KNOWN`] (STATS m).
    pub(crate) command_counts: Vec<u64>,
    /// The most users a LUSERS gathered on this shard has seen server-wide.
    pub(crate) peak_users: u64,
    /// This shard's counters for `/metrics` (only this shard writes them).
    pub(crate) stats: Arc<ShardStats>,
}

impl ChatShard {
    /// The handler for shard `id`; sized for the shard count in `on_start`.
    pub fn new(info: Arc<ServerInfo>, id: ShardId) -> ChatShard {
        ChatShard {
            stats: info.stats.add_shard(id.0),
            info,
            me: id.0,
            shards: 1,
            clients: HashMap::new(),
            next_id: 1,
            local: HashMap::new(),
            owner: Default::default(),
            outbox: Outbox::new(),
            acks: vec![Vec::new()],
            acks_armed: false,
            shutting_down: false,
            command_counts: vec![0; KNOWN.len()],
            peak_users: 0,
        }
    }

    pub(crate) fn me_ref(&self, id: u64) -> ClientRef {
        ClientRef { shard: self.me, id }
    }

    /// Sends numeric `code` to client `id`.
    pub(crate) fn numeric(
        &self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        code: u16,
        params: &[&str],
    ) {
        let Some(c) = self.clients.get(&id) else {
            return;
        };
        let mut out = Vec::with_capacity(80);
        write_numeric(&mut out, self.info.name(), code, c.nick_or_star(), params);
        // An error means the connection is closing; its on_close follows.
        let _ = ctx.send(c.conn, &out);
    }

    /// Sends a raw line to client `id`.
    pub(crate) fn send_line(&self, ctx: &mut Ctx<'_, ChatShard>, id: u64, bytes: &[u8]) {
        if let Some(c) = self.clients.get(&id).filter(|c| c.alive) {
            let _ = ctx.send(c.conn, bytes);
        }
    }

    /// Posts a request for client `id` to shard `to`. Returns false (and
    /// disconnects the client, "Server busy") if that shard's outbox is full.
    pub(crate) fn request(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        to: usize,
        req: Request,
    ) -> bool {
        if matches!(req, Request::Registered { .. }) {
            // Sent exactly once per client, right after registration completes.
            self.stats.registrations.add(1);
            self.stats.users.add(1);
        }
        if !has_room(&self.outbox, &self.info, to) {
            let waiting = self.outbox.pending(ShardId(to));
            warn!(
                shard = self.me,
                client = id,
                to,
                waiting,
                "outbox full: disconnecting a client (Server busy)"
            );
            self.begin_quit(ctx, id, "Server busy".into());
            return false;
        }
        let Some(c) = self.clients.get_mut(&id) else {
            return false;
        };
        c.unreplied += 1;
        let from = self.me_ref(id);
        self.outbox
            .post(ctx, ShardId(to), ChatMsg::Request { from, req });
        true
    }

    /// Runs client `id`'s buffered lines until it parks, quits or runs dry.
    pub(crate) fn pump(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let mut buf = std::mem::take(&mut c.inbuf);
        let mut pos = 0;
        let window = self.info.config.limits.in_flight_per_client as i64;
        let flood = &self.info.config.flood;
        let (flood_on, cost, max_lag) = (flood.enabled, flood.command_cost(), flood.max_lag());
        loop {
            let Some(c) = self.clients.get_mut(&id) else {
                return;
            };
            if c.parked || c.quitting.is_some() || c.flood_timer.is_some() {
                break;
            }
            if flood_on && !c.oper {
                if let Some(wait) = c.penalty.wait(Instant::now(), max_lag) {
                    // Fake lag: the rest of its input waits until it is due.
                    c.flood_timer = Some(ctx.set_timer(wait, ChatTimer::Flood(id)));
                    break;
                }
            }
            if c.in_flight() >= window {
                // Flow control: this client's earlier work must drain first (its
                // input then waits in the socket: TCP slows the client down).
                c.parked = true;
                c.window_parked = true;
                break;
            }
            let (frame, used) = c.reader.next_frame(&buf[pos..], MAX_LINE);
            let line_start = pos;
            pos += used;
            match frame {
                None => break,
                Some(Frame::TooLong) => {
                    self.numeric(ctx, id, 417, &["Input line was too long"]);
                    self.stats.commands.add(1);
                }
                Some(Frame::Line(r)) => {
                    let raw = &buf[line_start + r.start..line_start + r.end];
                    let free = !flood_on
                        || raw
                            .get(..4)
                            .is_some_and(|w| w.eq_ignore_ascii_case(b"PONG"));
                    let flow = self.handle_line(ctx, id, raw);
                    if flow != Flow::Retry {
                        // Counted after it ran and before its replies are written
                        // (at the end of the loop turn), so a client that saw them
                        // sees it counted.
                        self.stats.commands.add(1);
                    }
                    if !free && flow != Flow::Retry {
                        // A retried line is charged when it finally runs.
                        if let Some(c) = self.clients.get_mut(&id) {
                            c.penalty.charge(Instant::now(), cost);
                        }
                    }
                    match flow {
                        Flow::Next => {}
                        Flow::Park => {
                            if let Some(c) = self.clients.get_mut(&id) {
                                c.parked = !c.settled();
                            }
                        }
                        Flow::Retry => {
                            pos = line_start;
                            if let Some(c) = self.clients.get_mut(&id) {
                                debug_assert!(!c.settled(), "retry only while unsettled");
                                c.parked = true;
                            }
                        }
                    }
                }
            }
        }
        let recvq = self.info.config.limits.recvq_bytes;
        let backlog = self.info.config.flood.max_backlog_bytes;
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let mut rest = buf.split_off(pos);
        rest.append(&mut c.inbuf);
        c.inbuf = rest;
        if c.flood_timer.is_some() && c.inbuf.len() > backlog && c.quitting.is_none() {
            self.begin_quit(ctx, id, "Excess Flood".into());
            return;
        }
        if c.parked && c.inbuf.len() > recvq && !c.reading_paused && c.alive {
            c.reading_paused = true;
            ctx.pause_reading(c.conn);
        } else if !c.parked && c.reading_paused && c.alive {
            c.reading_paused = false;
            ctx.resume_reading(c.conn);
        }
    }

    /// Called whenever a client's outstanding counts drop: resumes a parked client
    /// or finishes a quit once everything it started is done.
    pub(crate) fn settle(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
        let window = self.info.config.limits.in_flight_per_client as i64;
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.quitting.is_some() {
            if c.settled() {
                self.finish_quit(ctx, id);
            }
        } else if c.parked && (c.settled() || (c.window_parked && c.in_flight() <= window / 2)) {
            c.parked = false;
            c.window_parked = false;
            self.pump(ctx, id);
        }
    }

    /// Starts disconnecting client `id`: tells it why (if still connected), closes
    /// the connection, and finishes once its requests are all answered (so its quit
    /// is seen after everything it said).
    pub(crate) fn begin_quit(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, reason: String) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.quitting.is_some() {
            return;
        }
        if c.alive {
            let error = format!("ERROR :Closing Link: {} ({reason})\r\n", c.host);
            let _ = ctx.send(c.conn, error.as_bytes());
            ctx.close(c.conn);
        }
        for t in [c.timer.take(), c.flood_timer.take()].into_iter().flatten() {
            ctx.cancel_timer(t);
        }
        debug!(shard = self.me, client = id, %reason, "client leaving");
        c.quitting = Some(reason);
        self.settle(ctx, id);
    }

    /// The client is gone and settled: release its nick, tell every shard.
    fn finish_quit(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
        let Some(c) = self.remove_client(ctx, id) else {
            return;
        };
        let who = self.me_ref(id);
        if c.ip_counted {
            let to = owner_of(&c.ip.to_string(), self.shards);
            let req = Request::IpDisconnect { ip: c.ip };
            self.outbox
                .post(ctx, ShardId(to), ChatMsg::Request { from: who, req });
        }
        if let Some(nick) = &c.nick {
            let key: NameKey = casefold(nick).into();
            let to = owner_of(nick, self.shards);
            let req = Request::ReleaseNick { key };
            self.outbox
                .post(ctx, ShardId(to), ChatMsg::Request { from: who, req });
        }
        // Owners that refused it wait for this notice to forget it.
        if c.registered && (!c.channels.is_empty() || c.refused) {
            let reason = c.quitting.as_deref().unwrap_or("Client Quit");
            let mut out = Outgoing::new(line(&c.mask, "QUIT", &[reason], true));
            out.stamp();
            for s in 0..self.shards {
                let notice = UserNotice {
                    who,
                    out: out.clone(),
                    chans: c.channels.clone(),
                    kind: NoticeKind::Quit,
                };
                self.outbox
                    .post(ctx, ShardId(s), ChatMsg::Notice(Box::new(notice)));
            }
        }
    }

    /// Forgets client `id` locally (clients map, fan-out index, timer).
    fn remove_client(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) -> Option<Client> {
        let mut c = self.clients.remove(&id)?;
        if c.registered {
            self.stats.users.sub(1);
        }
        self.stats.clients.set(self.clients.len() as u64);
        for t in [c.timer.take(), c.flood_timer.take()].into_iter().flatten() {
            ctx.cancel_timer(t);
        }
        for key in &c.channels {
            if let Some(lc) = self.local.get_mut(key) {
                lc.members.retain(|m| m.id != id);
                if lc.members.is_empty() {
                    self.local.remove(key);
                }
            }
        }
        Some(c)
    }

    /// Queues one ack for `to` (sent at the end of this loop turn, coalesced).
    pub(crate) fn ack(&mut self, ctx: &mut Ctx<'_, ChatShard>, to: ClientRef) {
        let list = &mut self.acks[to.shard];
        match list.last_mut() {
            Some((id, n)) if *id == to.id => *n += 1,
            _ => list.push((to.id, 1)),
        }
        if !self.acks_armed {
            self.acks_armed = true;
            // A zero timer fires after this turn's mail is drained: one Acks message
            // per shard per turn instead of one per delivery.
            ctx.set_timer(Duration::ZERO, ChatTimer::AckFlush);
        }
    }

    fn flush_acks(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        for s in 0..self.shards {
            let list = std::mem::take(&mut self.acks[s]);
            if list.is_empty() {
                continue;
            }
            if s == self.me {
                self.apply_acks(ctx, list);
            } else {
                self.outbox.post(ctx, ShardId(s), ChatMsg::Acks(list));
            }
        }
    }

    pub(crate) fn apply_acks(&mut self, ctx: &mut Ctx<'_, ChatShard>, list: Vec<(u64, u32)>) {
        for (id, n) in list {
            if let Some(c) = self.clients.get_mut(&id) {
                c.acks_due -= i64::from(n);
                self.settle(ctx, id);
            }
        }
    }

    /// Swaps in a rehashed configuration (from the SIGHUP hook): what this shard
    /// does next uses it.
    fn rehash(&mut self, info: Arc<ServerInfo>) {
        info!(shard = self.me, "configuration rehashed");
        self.info = info;
    }

    fn client_timer(&mut self, ctx: &mut Ctx<'_, ChatShard>, timer: TimerId, id: u64) {
        let limits = &self.info.config.limits;
        let (interval, timeout) = (limits.ping_interval(), limits.ping_timeout());
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.timer != Some(timer) || c.quitting.is_some() {
            return;
        }
        c.timer = None;
        if !c.registered {
            self.begin_quit(ctx, id, "Registration timed out".into());
            return;
        }
        let idle = c.last_active.elapsed();
        if c.ping_sent {
            let reason = format!("Ping timeout: {} seconds", idle.as_secs());
            self.begin_quit(ctx, id, reason);
        } else if idle >= interval {
            c.ping_sent = true;
            c.timer = Some(ctx.set_timer(timeout, ChatTimer::Client(id)));
            let ping = format!("PING :{}\r\n", self.info.name());
            let _ = ctx.send(c.conn, ping.as_bytes());
        } else {
            c.timer = Some(ctx.set_timer(interval - idle, ChatTimer::Client(id)));
        }
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
        self.acks = vec![Vec::new(); self.shards];
        info!(shard = self.me, shards = self.shards, "chat shard ready");
    }

    fn on_accept(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        conn: ConnId,
        _listener: shardline::Listener<'_, Self::Listener>,
        peer: SocketAddr,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut host = peer.ip().to_string();
        if host.starts_with(':') {
            host.insert(0, '0');
        }
        let mut c = Client::new(conn, peer.ip(), host);
        let timeout = self.info.config.limits.registration_timeout();
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
        let Some(c) = self.clients.get_mut(&id) else {
            return data.len();
        };
        if c.quitting.is_some() {
            return data.len();
        }
        c.inbuf.extend_from_slice(data);
        // Runs what it can; a parked client's input stays buffered, and past the
        // RecvQ its socket is no longer read (TCP flow control slows it down).
        self.pump(ctx, id);
        data.len()
    }

    fn on_close(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        _conn: ConnId,
        id: u64,
        reason: &CloseReason,
    ) {
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
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, ChatShard>, from: Origin, msg: ChatMsg) {
        let msg = match (from, msg) {
            (Origin::Remote, ChatMsg::Rehash(info)) => {
                self.rehash(info);
                return;
            }
            (Origin::Remote, _) => {
                warn!(
                    shard = self.me,
                    "ignoring chat mail from outside the shards"
                );
                return;
            }
            (Origin::Shard(s), ChatMsg::Rehash(_)) => {
                warn!(
                    shard = self.me,
                    from = s.0,
                    "ignoring a rehash posted by a shard"
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
            // Only mail changes the channels an owner holds.
            self.stats.channels.set(self.owner.channel_count() as u64);
        } else {
            // Workaround: the shard loop only stops on a turn that took no mail,
            // and after a turn that did it sleeps until the next timer — without
            // this nudge, until the shutdown deadline.
            ctx.set_timer(Duration::from_millis(1), ChatTimer::ShutdownNudge);
        }
    }

    fn on_mailbox_ready(&mut self, ctx: &mut Ctx<'_, ChatShard>, to: ShardId) {
        self.outbox.flush(ctx, to);
    }

    fn on_shutdown(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        self.shutting_down = true;
        info!(
            shard = self.me,
            clients = self.clients.len(),
            "telling clients we shut down"
        );
        for c in self.clients.values().filter(|c| c.alive) {
            let _ = ctx.send(c.conn, b"ERROR :Server shutting down\r\n");
        }
    }
}
