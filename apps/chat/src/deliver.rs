//! Incoming mail: requests for the names this shard owns, replies to this shard's
//! clients, deliveries to fan out to them, and acks.
//!
//! Fan-out renders each event once per capability variant per shard (see
//! [`Renderer`]) and hands the same `Bytes` to every local recipient with
//! `send_shared`: no per-member copy. Every delivery made on a client's behalf is
//! acknowledged to that client's shard after it has been queued here.

use shardline::Ctx;
use tracing::warn;

use crate::{
    client::Lusers,
    mail::{
        Caps, ChanDelivery, ChatMsg, ClientRef, Membership, NoticeKind, Numeric, Outgoing,
        Renderer, ReplyBody, Request, UserNotice,
    },
    reply::write_numeric,
    shard::ChatShard,
};

impl ChatShard {
    pub(crate) fn on_mail(&mut self, ctx: &mut Ctx<'_, ChatMsg>, msg: ChatMsg) {
        match msg {
            ChatMsg::Request {
                from,
                req: Request::Stats,
            } => {
                let body = self.stats();
                let reply = ChatMsg::Reply {
                    to: from,
                    fanout: 0,
                    body,
                };
                self.outbox.send(ctx, from.shard, reply);
            }
            ChatMsg::Request { from, req } => {
                self.owner
                    .handle(ctx, &self.info, &mut self.outbox, from, req);
            }
            ChatMsg::Reply { to, fanout, body } => self.on_reply(ctx, to, fanout, body),
            ChatMsg::Chan(d) => {
                self.deliver_chan(ctx, &d);
                self.ack(ctx, d.source);
            }
            ChatMsg::Private { to, out, ack } => {
                if let Some(c) = self
                    .clients
                    .get(&to.id)
                    .filter(|c| to.shard == self.me && c.alive && c.registered)
                {
                    let mut r = Renderer::new(&out);
                    let _ = ctx.send_shared(c.conn, r.for_caps(c.caps));
                }
                self.ack(ctx, ack);
            }
            ChatMsg::Notice(n) => {
                self.owner.on_notice(&n);
                self.deliver_notice(ctx, &n);
                if matches!(n.kind, NoticeKind::Nick { .. }) {
                    self.ack(ctx, n.who);
                }
            }
            ChatMsg::Acks(list) => self.apply_acks(ctx, list),
        }
    }

    fn stats(&self) -> ReplyBody {
        let (mut users, mut invisible, mut unknown) = (0, 0, 0);
        for c in self.clients.values().filter(|c| c.quitting.is_none()) {
            if c.registered {
                users += 1;
                invisible += u64::from(c.invisible);
            } else {
                unknown += 1;
            }
        }
        ReplyBody::Stats {
            users,
            invisible,
            unknown,
            channels: self.owner.channel_count() as u64,
        }
    }

    fn deliver_chan(&mut self, ctx: &mut Ctx<'_, ChatMsg>, d: &ChanDelivery) {
        if let Membership::Add(who) = d.change.filter_shard(self.me) {
            match self.clients.get_mut(&who.id) {
                Some(c) => {
                    c.channels.push(d.chan.clone());
                    self.local.entry(d.chan.clone()).or_default().push(who.id);
                }
                // Cannot happen: a client stays until its JOIN is answered, and the
                // Add comes before that answer on the same queue.
                None => warn!(
                    shard = self.me,
                    client = who.id,
                    "join for a client that left"
                ),
            }
        }
        if let Some(members) = self.local.get(&d.chan) {
            let mut r = Renderer::new(&d.out);
            for &id in members {
                let Some(c) = self.clients.get(&id).filter(|c| c.alive) else {
                    continue;
                };
                if d.echo_gated
                    && d.source == (ClientRef { shard: self.me, id })
                    && !c.caps.has(Caps::ECHO_MESSAGE)
                {
                    continue;
                }
                let _ = ctx.send_shared(c.conn, r.for_caps(c.caps));
            }
        }
        if let Membership::Remove(who) = d.change.filter_shard(self.me) {
            if let Some(members) = self.local.get_mut(&d.chan) {
                members.retain(|&m| m != who.id);
                if members.is_empty() {
                    self.local.remove(&d.chan);
                }
            }
            if let Some(c) = self.clients.get_mut(&who.id) {
                c.channels.retain(|k| *k != d.chan);
            }
        }
    }

    /// A NICK or QUIT line goes once to each local client sharing a channel with
    /// `who` (never to `who` itself: its own shard told it directly).
    fn deliver_notice(&mut self, ctx: &mut Ctx<'_, ChatMsg>, n: &UserNotice) {
        let mut ids: Vec<u64> = n
            .chans
            .iter()
            .filter_map(|k| self.local.get(k))
            .flatten()
            .copied()
            .filter(|&id| n.who != ClientRef { shard: self.me, id })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut r = Renderer::new(&n.out);
        for id in ids {
            if let Some(c) = self.clients.get(&id).filter(|c| c.alive) {
                let _ = ctx.send_shared(c.conn, r.for_caps(c.caps));
            }
        }
    }

    fn send_numerics(&self, ctx: &mut Ctx<'_, ChatMsg>, id: u64, nums: &[Numeric]) {
        let Some(c) = self.clients.get(&id).filter(|c| c.alive) else {
            return;
        };
        let mut out = Vec::with_capacity(nums.len() * 80);
        for n in nums {
            let params: Vec<&str> = n.params.iter().map(String::as_str).collect();
            write_numeric(
                &mut out,
                self.info.name(),
                n.code,
                c.nick_or_star(),
                &params,
            );
        }
        let _ = ctx.send(c.conn, &out);
    }

    fn on_reply(
        &mut self,
        ctx: &mut Ctx<'_, ChatMsg>,
        to: ClientRef,
        fanout: u32,
        body: ReplyBody,
    ) {
        let id = to.id;
        let Some(c) = self.clients.get_mut(&id).filter(|_| to.shard == self.me) else {
            return;
        };
        c.unreplied = c.unreplied.saturating_sub(1);
        c.acks_due += i64::from(fanout);
        match body {
            ReplyBody::Done => {}
            ReplyBody::Numerics(nums) => self.send_numerics(ctx, id, &nums),
            ReplyBody::Joined(nums) => {
                c.pending_joins = c.pending_joins.saturating_sub(1);
                self.send_numerics(ctx, id, &nums);
            }
            ReplyBody::NickClaimed { nick, ok } => self.nick_claimed(ctx, id, nick, ok),
            ReplyBody::Echo(out) => {
                if c.alive && c.caps.has(Caps::ECHO_MESSAGE) {
                    let mut r = Renderer::new(&out);
                    let _ = ctx.send_shared(c.conn, r.for_caps(c.caps));
                }
            }
            ReplyBody::Stats {
                users,
                invisible,
                unknown,
                channels,
            } => {
                if let Some(l) = c.lusers.as_mut() {
                    l.users += users;
                    l.invisible += invisible;
                    l.unknown += unknown;
                    l.channels += channels;
                    l.remaining = l.remaining.saturating_sub(1);
                    if l.remaining == 0 {
                        let l = c.lusers.take().unwrap_or_default();
                        self.send_lusers(ctx, id, &l);
                    }
                }
            }
            ReplyBody::Busy => {
                c.refused = true;
                self.begin_quit(ctx, id, "Server busy".into());
            }
        }
        self.settle(ctx, id);
    }

    /// LUSERS numerics, then the MOTD if this is the welcome burst.
    pub(crate) fn send_lusers(&self, ctx: &mut Ctx<'_, ChatMsg>, id: u64, l: &Lusers) {
        let visible = l.users - l.invisible.min(l.users);
        let nums = [
            Numeric::new(
                251,
                [format!(
                    "There are {visible} users and {} invisible on 1 servers",
                    l.invisible
                )],
            ),
            Numeric::new(252, ["0", "operator(s) online"]),
            Numeric::new(253, [l.unknown.to_string(), "unknown connection(s)".into()]),
            Numeric::new(254, [l.channels.to_string(), "channels formed".into()]),
            Numeric::new(255, [format!("I have {} clients and 0 servers", l.users)]),
        ];
        self.send_numerics(ctx, id, &nums);
        if l.then_motd {
            self.send_motd(ctx, id);
        }
    }

    /// Broadcasts a registered client's nick change to every shard (each acks).
    pub(crate) fn broadcast_nick(
        &mut self,
        ctx: &mut Ctx<'_, ChatMsg>,
        id: u64,
        out: Outgoing,
        nick: String,
    ) {
        let who = self.me_ref(id);
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.channels.is_empty() {
            return;
        }
        c.acks_due += self.shards as i64;
        let chans = c.channels.clone();
        for s in 0..self.shards {
            let notice = UserNotice {
                who,
                out: out.clone(),
                chans: chans.clone(),
                kind: NoticeKind::Nick { nick: nick.clone() },
            };
            self.outbox.send(ctx, s, ChatMsg::Notice(Box::new(notice)));
        }
    }
}
