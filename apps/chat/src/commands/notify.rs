//! Changes to a user that IRCv3 notifications relay to those sharing a
//! channel with it: AWAY (`away-notify`), `SETNAME` (`setname`) and the
//! operator command `CHGHOST <nick> <user> <host>` (`chghost`).
//!
//! Each goes to every shard as a [`UserNotice`](crate::mail::UserNotice), like
//! NICK and ACCOUNT: each shard sends the line once to each local client that
//! shares a channel with the user and has the cap, and acknowledges it, so a
//! PING after the command is answered only once everyone has it.
//!
//! CHGHOST crosses shards twice. The operator's shard checks the privilege
//! and the values, then asks the nick's owner (`Request::Chghost`), which
//! answers 401 or forwards the request to the holder's shard
//! (`Request::ChghostLocal`). That shard changes the client's user and host,
//! sends it `:old!mask CHGHOST <user> <host>` if it has the cap, sends every
//! shard the notice (owners of its channels update the member's `user@host`
//! for NAMES and bans; the notice is acknowledged to the operator), and
//! replies to the operator with that fan-out (or 401 if the client left).
//! Clients without `chghost` see nothing: no QUIT/JOIN emulation.

use shardline::{Ctx, ShardId};

use super::Flow;
use crate::{
    casemap::owner_of,
    info::NAMELEN,
    mail::{
        Caps, ChatMsg, ClientRef, NoticeKind, Numeric, Outgoing, ReplyBody, Request, UserNotice,
    },
    reply::{code::*, line, truncate},
    shard::ChatShard,
};

/// 481: the command needs operator privileges.
const ERR_NOPRIVILEGES: u16 = 481;

/// The longest user name CHGHOST sets.
pub(crate) const USERLEN: usize = 16;

/// The longest host CHGHOST sets.
pub(crate) const HOSTLEN: usize = 63;

/// A user name CHGHOST may set: 1 to [`USERLEN`] letters, digits and `-_.~`.
pub(crate) fn valid_user(user: &str) -> bool {
    (1..=USERLEN).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// A host CHGHOST may set: 1 to [`HOSTLEN`] letters, digits and `-.:/`, not
/// starting with `:` or `-` (it must stay one middle parameter).
pub(crate) fn valid_host(host: &str) -> bool {
    (1..=HOSTLEN).contains(&host.len())
        && !host.starts_with([':', '-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'/'))
}

impl ChatShard {
    /// `:server FAIL <command> <code> [context…] :<text>` (standard replies).
    pub(crate) fn send_fail_line(
        &self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        command: &str,
        code: &str,
        context: &[&str],
        text: &str,
    ) {
        let fail = crate::reply::Standard::Fail;
        self.standard_reply(ctx, id, fail, command, code, context, text);
    }

    /// AWAY changed: `:mask AWAY [:text]` to those sharing a channel with
    /// `away-notify`.
    pub(crate) fn away_notify(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
        let Some(c) = self.clients.get(&id).filter(|c| c.registered) else {
            return;
        };
        let body = match &c.away {
            Some(text) => line(&c.mask, "AWAY", &[text], true),
            None => line(&c.mask, "AWAY", &[], false),
        };
        let mut out = Outgoing::new(body);
        out.account = c.account.clone();
        out.stamp();
        self.broadcast_notice(ctx, id, out, NoticeKind::Away);
    }

    /// `SETNAME :<realname>`: a new real name (WHOIS, WHO, later
    /// extended-joins), echoed to the client with `setname` and relayed to
    /// those sharing a channel with it. Empty or longer than `NAMELEN`:
    /// `FAIL SETNAME INVALID_REALNAME`, nothing changes.
    pub(super) fn cmd_setname(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        p: &[&str],
    ) -> Flow {
        let Some(name) = p.first() else {
            return self.need_more_params(ctx, id, "SETNAME");
        };
        if name.is_empty() || name.len() > NAMELEN {
            let text = format!("Real name must be 1 to {NAMELEN} bytes");
            self.send_fail_line(ctx, id, "SETNAME", "INVALID_REALNAME", &[], &text);
            return Flow::Next;
        }
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        c.realname = (*name).to_string();
        let mut out = Outgoing::new(line(&c.mask, "SETNAME", &[name], true));
        out.account = c.account.clone();
        out.stamp();
        if c.caps.has(Caps::SETNAME) {
            // Its own echo: the response to its command.
            let mut r = crate::mail::Renderer::new(&out);
            let _ = crate::labels::respond_shared(ctx, c, self.info.name(), r.for_caps(c.caps));
        }
        self.broadcast_notice(ctx, id, out, NoticeKind::Setname);
        Flow::Next
    }

    /// `CHGHOST <nick> <user> <host>` (operators): see the module docs.
    pub(super) fn cmd_chghost(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        p: &[&str],
    ) -> Flow {
        let Some(c) = self.clients.get(&id) else {
            return Flow::Next;
        };
        if !c.oper {
            let text = "Permission Denied- You're not an IRC operator";
            self.numeric(ctx, id, ERR_NOPRIVILEGES, &[text]);
            return Flow::Next;
        }
        let (Some(nick), Some(user), Some(host)) = (p.first(), p.get(1), p.get(2)) else {
            return self.need_more_params(ctx, id, "CHGHOST");
        };
        if !valid_user(user) {
            let shown = truncate(user, 64);
            let text = format!("User names are 1 to {USERLEN} letters, digits or -_.~");
            self.send_fail_line(ctx, id, "CHGHOST", "INVALID_USERNAME", &[shown], &text);
            return Flow::Next;
        }
        if !valid_host(host) {
            let shown = truncate(host, 64);
            let text = format!("Hosts are 1 to {HOSTLEN} letters, digits or -.:/");
            self.send_fail_line(ctx, id, "CHGHOST", "INVALID_HOSTNAME", &[shown], &text);
            return Flow::Next;
        }
        let nick = truncate(nick, 64).to_string();
        let to = owner_of(&nick, self.shards);
        let req = Request::Chghost {
            nick,
            user: (*user).to_string(),
            host: (*host).to_string(),
        };
        if self.request(ctx, id, to, req) {
            Flow::Park
        } else {
            Flow::Next
        }
    }

    /// `Request::ChghostLocal` for client `target` of this shard, from
    /// operator `from`.
    pub(crate) fn chghost_local(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        from: ClientRef,
        target: ClientRef,
        nick: &str,
        user: String,
        host: String,
    ) {
        let reply = |body| ChatMsg::reply(from, body);
        let Some(c) = self
            .clients
            .get_mut(&target.id)
            .filter(|c| target.shard == self.me && c.registered && c.quitting.is_none())
        else {
            let gone = Numeric::new(ERR_NOSUCHNICK, [nick, "No such nick/channel"]);
            let msg = reply(ReplyBody::Numerics(vec![gone]));
            self.outbox.post(ctx, ShardId(from.shard), msg);
            return;
        };
        let mut out = Outgoing::new(line(&c.mask, "CHGHOST", &[&user, &host], false));
        out.account = c.account.clone();
        out.stamp();
        let userhost: std::sync::Arc<str> = format!("{user}@{host}").into();
        c.user = Some(user);
        c.host = host;
        c.update_mask();
        if c.alive && c.caps.has(Caps::CHGHOST) {
            let mut r = crate::mail::Renderer::new(&out);
            let _ = crate::websocket::send_shared(ctx, c, r.for_caps(c.caps));
        }
        let mut fanout = 0;
        if !c.channels.is_empty() {
            let chans = c.channels.clone();
            for s in 0..self.shards {
                let notice = UserNotice {
                    who: target,
                    out: out.clone(),
                    chans: chans.clone(),
                    kind: NoticeKind::Chghost {
                        userhost: userhost.clone(),
                        by: from,
                    },
                };
                self.outbox
                    .post(ctx, ShardId(s), ChatMsg::Notice(Box::new(notice)));
                fanout += 1;
            }
        }
        let msg = ChatMsg::Reply {
            to: from,
            fanout,
            body: ReplyBody::Done,
        };
        self.outbox.post(ctx, ShardId(from.shard), msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_host_rules() {
        assert!(valid_user("~bob") && valid_user("a.b-c_d"));
        assert!(!valid_user("") && !valid_user("a b") && !valid_user("a@b"));
        assert!(!valid_user(&"u".repeat(USERLEN + 1)) && valid_user(&"u".repeat(USERLEN)));
        assert!(valid_host("example.com") && valid_host("2001:db8::1") && valid_host("a/b"));
        assert!(!valid_host("") && !valid_host(":x") && !valid_host("-x") && !valid_host("a b"));
        assert!(!valid_host("a!b") && !valid_host("a@b") && !valid_host("a,b"));
        assert!(!valid_host(&"h".repeat(HOSTLEN + 1)) && valid_host(&"h".repeat(HOSTLEN)));
    }
}
