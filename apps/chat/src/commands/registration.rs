//! Connection registration and upkeep: NICK, USER, the welcome burst (001–005,
//! LUSERS, MOTD), PING and QUIT (CAP is in `cap.rs`).

use shardline::{Ctx, ShardId};

use super::Flow;
use crate::{
    casemap::{casefold, owner_of, valid_nick, NameKey},
    client::Lusers,
    info::VERSION,
    mail::{ChatMsg, Outgoing, Request},
    reply::{code::*, line, truncate},
    shard::{ChatShard, ChatTimer},
};

impl ChatShard {
    pub(super) fn cmd_nick(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let Some(nick) = p.first().filter(|n| !n.is_empty()) else {
            self.numeric(ctx, id, ERR_NONICKNAMEGIVEN, &["No nickname given"]);
            return Flow::Next;
        };
        if !valid_nick(nick, self.info.config.limits.nicklen) {
            let shown = truncate(nick, 64).to_string();
            self.numeric(
                ctx,
                id,
                ERR_ERRONEUSNICKNAME,
                &[&shown, "Erroneous nickname"],
            );
            return Flow::Next;
        }
        let Some(c) = self.clients.get(&id) else {
            return Flow::Next;
        };
        if c.nick.as_deref() == Some(*nick) {
            return Flow::Next;
        }
        // A barrier: lines sent under the old nick are delivered everywhere before
        // anyone sees the change.
        if !c.settled() {
            return Flow::Retry;
        }
        let to = owner_of(nick, self.shards);
        let req = Request::ClaimNick {
            nick: nick.to_string(),
            registered: c.registered,
            account: c.account.clone(),
            ident: c.ident().filter(|_| c.registered),
        };
        if self.request(ctx, id, to, req) {
            Flow::Park
        } else {
            Flow::Next
        }
    }

    /// The nick's owner answered a claim.
    pub(crate) fn nick_claimed(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        nick: String,
        ok: bool,
    ) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let guest = c.guest_claim.as_ref().is_some_and(|(g, _)| *g == nick);
        if !ok {
            // A forced rename's guest nick was taken: `pump` tries another.
            if c.quitting.is_none() && !guest {
                self.numeric(
                    ctx,
                    id,
                    ERR_NICKNAMEINUSE,
                    &[&nick, "Nickname is already in use"],
                );
            }
            return;
        }
        if guest {
            c.guest_claim = None;
            c.rename_due = None;
        }
        let old = c.nick.replace(nick.clone());
        if let Some(old) = &old {
            let old_key: NameKey = casefold(old).into();
            if *old_key != casefold(&nick) {
                let to = owner_of(old, self.shards);
                if c.quitting.is_some() {
                    // Not counted: the client is going; nobody waits on it.
                    let from = self.me_ref(id);
                    let req = Request::ReleaseNick { key: old_key };
                    self.outbox
                        .post(ctx, ShardId(to), ChatMsg::Request { from, req });
                } else {
                    self.request(ctx, id, to, Request::ReleaseNick { key: old_key });
                }
            }
        }
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.quitting.is_some() {
            return;
        }
        if !c.registered {
            // A login (SASL) may have come while the claim was on its way,
            // which then carried no account: the nick's owner learns it
            // before it learns that registration completed.
            if let Some(account) = c.account.clone() {
                let key = casefold(&nick).into();
                let req = Request::SetAccount {
                    key,
                    account: Some(account),
                };
                if !self.request(ctx, id, owner_of(&nick, self.shards), req) {
                    return;
                }
            }
            self.try_register(ctx, id);
            return;
        }
        let mut out = Outgoing::new(line(&c.mask, "NICK", &[&nick], true));
        out.account = c.account.clone();
        out.stamp();
        c.update_mask();
        let _ = crate::labels::respond(ctx, c, self.info.name(), &out.body);
        self.broadcast_nick(ctx, id, out, nick);
    }

    pub(super) fn cmd_user(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        if c.registered || c.user.is_some() {
            self.numeric(ctx, id, ERR_ALREADYREGISTERED, &["You may not reregister"]);
            return Flow::Next;
        }
        if p.len() < 4 || p[0].is_empty() {
            return self.need_more_params(ctx, id, "USER");
        }
        let clean: String = p[0]
            .chars()
            .filter(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
            .take(10)
            .collect();
        let user = if clean.is_empty() {
            "user".into()
        } else {
            clean
        };
        c.user = Some(format!("~{user}"));
        c.realname = truncate(p[3], crate::info::NAMELEN).to_string();
        if self.try_register(ctx, id) {
            Flow::Park
        } else {
            Flow::Next
        }
    }

    /// Completes registration if NICK, USER and CAP END are all in: the welcome
    /// burst, then LUSERS gathered from every shard, then the MOTD.
    pub(crate) fn try_register(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) -> bool {
        let interval = self.info.config.limits.ping_interval();
        let Some(c) = self.clients.get_mut(&id) else {
            return false;
        };
        if c.registered || c.quitting.is_some() || c.cap_negotiating {
            return false;
        }
        let (Some(nick), Some(_)) = (c.nick.clone(), &c.user) else {
            return false;
        };
        if let Some(expected) = &self.info.config.server.password {
            let given = c.pass.take().unwrap_or_default();
            if !crate::auth::password::constant_time_eq(expected.as_bytes(), given.as_bytes()) {
                self.numeric(ctx, id, ERR_PASSWDMISMATCH, &["Password incorrect"]);
                // The nick is free before the ERROR goes out (like QUIT).
                self.quit_after_release(ctx, id, "Bad password".into());
                return true;
            }
        }
        c.registered = true;
        c.update_mask();
        if let Some(t) = c.timer.take() {
            ctx.cancel_timer(t);
        }
        c.timer = Some(ctx.set_timer(interval, ChatTimer::Client(id)));
        let mask = c.mask.clone();
        let ident = c.ident();
        let info = self.info.clone();
        let filehost = self.filehost_url();
        let server = info.name();
        let network = &info.config.server.network;
        let mut out = Vec::with_capacity(1024);
        let mut num = |code: u16, params: &[&str]| {
            crate::reply::write_numeric(&mut out, server, code, &nick, params)
        };
        num(
            RPL_WELCOME,
            &[&format!("Welcome to the {network} IRC Network {mask}")],
        );
        num(
            RPL_YOURHOST,
            &[&format!("Your host is {server}, running version {VERSION}")],
        );
        num(
            RPL_CREATED,
            &[&format!("This server was created {}", info.created)],
        );
        num(
            RPL_MYINFO,
            &[server, VERSION, "Biow", "biklmnostv", "bklov"],
        );
        info.write_isupport(&mut out, &nick, filehost.as_deref());
        self.send_line(ctx, id, &out);
        // From now on its nick is visible (messages, WHOIS, INVITE). Its input
        // waits for this, like for LUSERS.
        let key: NameKey = casefold(&nick).into();
        let Some(ident) = ident else {
            return true;
        };
        if !self.request(
            ctx,
            id,
            owner_of(&nick, self.shards),
            Request::Registered { key, ident },
        ) {
            return true;
        }
        self.start_lusers(ctx, id, true);
        true
    }

    /// Asks every shard for its counts; the answer goes out when the last arrives.
    pub(crate) fn start_lusers(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, then_motd: bool) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        c.lusers = Some(Lusers {
            remaining: self.shards,
            then_motd,
            ..Lusers::default()
        });
        for s in 0..self.shards {
            if !self.request(ctx, id, s, Request::Stats) {
                return;
            }
        }
    }

    pub(super) fn cmd_lusers(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) -> Flow {
        self.start_lusers(ctx, id, false);
        Flow::Park
    }

    /// 375/372/376, or 422 when there is no MOTD.
    pub(crate) fn send_motd(&self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
        let Some(c) = self.clients.get(&id) else {
            return;
        };
        let server = self.info.name();
        let nick = c.nick_or_star();
        let mut out = Vec::new();
        match &self.info.motd {
            Some(lines) => {
                let start = format!("- {server} Message of the day - ");
                crate::reply::write_numeric(&mut out, server, RPL_MOTDSTART, nick, &[&start]);
                for l in lines {
                    let l = format!("- {l}");
                    crate::reply::write_numeric(&mut out, server, RPL_MOTD, nick, &[&l]);
                }
                let end = "End of /MOTD command.";
                crate::reply::write_numeric(&mut out, server, RPL_ENDOFMOTD, nick, &[end]);
            }
            None => {
                let text = "MOTD File is missing";
                crate::reply::write_numeric(&mut out, server, ERR_NOMOTD, nick, &[text]);
            }
        }
        self.send_line(ctx, id, &out);
    }

    pub(super) fn cmd_ping(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let Some(token) = p.first() else {
            return self.need_more_params(ctx, id, "PING");
        };
        let Some(c) = self.clients.get(&id) else {
            return Flow::Next;
        };
        // The barrier: PONG only once every earlier command's effects are done.
        if !c.settled() {
            return Flow::Retry;
        }
        let server = self.info.name();
        let pong = line(server, "PONG", &[server, token], true);
        self.send_line(ctx, id, &pong);
        Flow::Next
    }

    /// `TESTACCOUNT <name>` or `TESTACCOUNT *` (only with
    /// `Config::test_account_command`): logs the client in to account `name`,
    /// or out, until SASL does it.
    pub(super) fn cmd_testaccount(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        p: &[&str],
    ) -> Flow {
        let Some(name) = p.first().filter(|n| !n.is_empty()) else {
            return self.need_more_params(ctx, id, "TESTACCOUNT");
        };
        // Like a login: what it said before is delivered first.
        if !self.clients.get(&id).is_some_and(|c| c.settled()) {
            return Flow::Retry;
        }
        let account = (*name != "*").then(|| truncate(name, 64).to_string());
        if self.set_account(ctx, id, account) {
            Flow::Park
        } else {
            Flow::Next
        }
    }

    pub(super) fn cmd_quit(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let reason = match p.first().filter(|r| !r.is_empty()) {
            Some(r) => format!("Quit: {}", truncate(r, 300)),
            None => "Client Quit".to_string(),
        };
        // The nick is free at its owner before the client reads the ERROR: a
        // client that saw it and reconnects through another shard finds the
        // nick free. The line runs again once the owner has answered.
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        if let Some(nick) = c.nick.clone().filter(|_| !c.nick_released) {
            if !c.settled() {
                return Flow::Retry;
            }
            c.nick_released = true;
            let key: NameKey = casefold(&nick).into();
            let to = owner_of(&nick, self.shards);
            if self.request(ctx, id, to, Request::ReleaseNick { key }) {
                return Flow::Retry;
            }
            // Not sent: the client is already leaving ("Server busy").
            return Flow::Next;
        }
        self.begin_quit(ctx, id, reason);
        Flow::Next
    }
}
