//! A client's session on its shard: replies, requests to owner shards, input
//! pumping with flood control, the QUIT sequence, acknowledgements of the
//! barrier, rehash, and the per-client timer (registration timeout, PING).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use shardline::{Ctx, ShardId, TimerId};
use tracing::{debug, info, warn};

use crate::{
    casemap::{casefold, owner_of, NameKey},
    client::Client,
    commands::Flow,
    framing::Frame,
    info::ServerInfo,
    mail::{ChatMsg, ClientRef, NoticeKind, Outgoing, Request, UserNotice},
    message::MAX_LINE,
    reply::{line, write_numeric},
    shard::{has_room, ChatShard, ChatTimer},
    websocket::{self, frame::close_code, Transport},
};

impl ChatShard {
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
        let _ = websocket::send(ctx, c, &out);
    }

    /// Sends a raw line to client `id`.
    pub(crate) fn send_line(&self, ctx: &mut Ctx<'_, ChatShard>, id: u64, bytes: &[u8]) {
        if let Some(c) = self.clients.get(&id).filter(|c| c.alive) {
            let _ = websocket::send(ctx, c, bytes);
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
            if c.rename_due.is_some() {
                // Nick protection renames it like a NICK of its own would:
                // after every earlier command's effects, before the next.
                if !c.settled() {
                    c.parked = true;
                    break;
                }
                if self.guest_rename(ctx, id) {
                    if let Some(c) = self.clients.get_mut(&id) {
                        c.parked = !c.settled();
                    }
                }
                continue;
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
        if c.peer_eof && c.quitting.is_none() && !c.parked && c.flood_timer.is_none() {
            // The peer is done sending and every complete line it sent has run
            // (an unterminated last line is dropped, as at any close).
            ctx.close(c.conn);
            return;
        }
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
            let _ = websocket::send(ctx, c, error.as_bytes());
            websocket::send_close(ctx, c, close_code::NORMAL, &reason);
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
    pub(crate) fn finish_quit(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
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
        if let Some(nick) = c.nick.as_ref().filter(|_| !c.nick_released) {
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
            out.account = c.account.clone();
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
    pub(crate) fn remove_client(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
    ) -> Option<Client> {
        let mut c = self.clients.remove(&id)?;
        self.ws.remove(&id);
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

    pub(crate) fn flush_acks(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
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
    pub(crate) fn rehash(&mut self, ctx: &mut Ctx<'_, ChatShard>, info: Arc<ServerInfo>) {
        info!(shard = self.me, "configuration rehashed");
        self.owner
            .history
            .set_limits(ctx, info.config.history.limits());
        let offers = self.cap_offers();
        self.info = info;
        self.cap_notify_rehash(ctx, offers);
    }

    pub(crate) fn client_timer(&mut self, ctx: &mut Ctx<'_, ChatShard>, timer: TimerId, id: u64) {
        let limits = &self.info.config.limits;
        let (interval, timeout) = (limits.ping_interval(), limits.ping_timeout());
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.timer != Some(timer) || c.quitting.is_some() {
            return;
        }
        c.timer = None;
        if c.transport == Transport::Http {
            self.http_timeout(ctx, id);
            return;
        }
        if c.transport == Transport::Closed && !c.registered {
            // An answered HTTP request's lingering close is over.
            self.begin_quit(ctx, id, "HTTP request answered".into());
            return;
        }
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
            let _ = websocket::send(ctx, c, ping.as_bytes());
        } else {
            c.timer = Some(ctx.set_timer(interval - idle, ChatTimer::Client(id)));
        }
    }
}
