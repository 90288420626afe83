//! AWAY and OPER: state of the client itself, kept on its own shard (WHO, WHOIS
//! and the 301 for messages to it are answered there); KILL and WALLOPS for
//! operators.
//!
//! KILL goes to the victim's nick owner, which forwards it to the victim's
//! shard ([`Request::KillLocal`]): there the victim gets the KILL line and
//! leaves like any client (`ERROR`, then `QUIT :Killed (<oper> (<reason>))`
//! to its channels from every shard), and the operator's shard is answered
//! (401 if it left meanwhile). WALLOPS goes to every shard
//! ([`Request::Wallops`]), each sending the line to its `+w` clients; the
//! operator's next command waits for every shard's answer.

use shardline::Ctx;

use super::Flow;
use crate::{
    auth::{
        oper::Busy,
        password::{constant_time_eq, OperPassword, Password},
    },
    casemap::{owner_of, valid_nick},
    mail::{ReplyBody, Request},
    mask,
    reply::{code::*, line, truncate},
    shard::ChatShard,
};

/// Longest KILL reason and WALLOPS text kept, bytes.
const TEXTLEN: usize = 300;

impl ChatShard {
    pub(super) fn cmd_away(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let awaylen = self.info.config.limits.awaylen;
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        match p.first().filter(|m| !m.is_empty()) {
            Some(text) => {
                c.away = Some(truncate(text, awaylen).to_string());
                self.numeric(
                    ctx,
                    id,
                    RPL_NOWAWAY,
                    &["You have been marked as being away"],
                );
            }
            None => {
                c.away = None;
                self.numeric(
                    ctx,
                    id,
                    RPL_UNAWAY,
                    &["You are no longer marked as being away"],
                );
            }
        }
        self.away_notify(ctx, id);
        Flow::Next
    }

    /// OPER name password: 491 if no operator block has that name for the
    /// client's host, 464 if the password is wrong, else 381 and user mode +o.
    /// Plaintext passwords are compared here (constant time, every block);
    /// if none matched and some of the blocks hold an argon2 hash, the check
    /// goes to the OPER checker's thread and the client's input waits for its
    /// answer ([`ChatShard::oper_checked`]); a full queue draws 263.
    pub(super) fn cmd_oper(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let (Some(name), Some(password)) = (p.first(), p.get(1)) else {
            return self.need_more_params(ctx, id, "OPER");
        };
        let Some(c) = self.clients.get(&id) else {
            return Flow::Next;
        };
        let (mut block, mut granted) = (false, false);
        let mut hashes = Vec::new();
        // Every plaintext block is compared in full: the time taken says
        // nothing about which names exist or how much of a password was right.
        for op in &self.info.config.operators {
            let name_ok = constant_time_eq(op.name.as_bytes(), name.as_bytes());
            // The real address: a host set by CHGHOST proves nothing.
            let here = name_ok && mask::matches(&op.host, &c.real_host);
            // Checked at load: a value that does not parse is no password.
            match OperPassword::parse(&op.password) {
                Ok(OperPassword::Plain(expected)) => {
                    let pass_ok = constant_time_eq(expected.as_bytes(), password.as_bytes());
                    block |= here;
                    granted |= here && pass_ok;
                }
                Ok(OperPassword::Hash(phc)) if here => {
                    block = true;
                    hashes.push(phc);
                }
                Ok(OperPassword::Hash(_)) | Err(_) => {}
            }
        }
        if !block {
            self.numeric(ctx, id, ERR_NOOPERHOST, &["No O-lines for your host"]);
            return Flow::Next;
        }
        if granted {
            self.grant_oper(ctx, id);
            return Flow::Next;
        }
        if hashes.is_empty() {
            self.numeric(ctx, id, ERR_PASSWDMISMATCH, &["Password incorrect"]);
            return Flow::Next;
        }
        let given = Password::from(*password);
        match self.oper_checker.submit(self.me, id, given, hashes) {
            Ok(()) => {
                if let Some(c) = self.clients.get_mut(&id) {
                    // Counted like a request: the input (and a QUIT) waits.
                    c.unreplied += 1;
                    c.oper_pending = true;
                }
                Flow::Park
            }
            Err(Busy) => {
                let text = "Please wait a while and try again.";
                self.numeric(ctx, id, RPL_TRYAGAIN, &["OPER", text]);
                Flow::Next
            }
        }
    }

    /// 481 unless client `id` is an operator.
    fn oper_only(&self, ctx: &mut Ctx<'_, ChatShard>, id: u64) -> bool {
        if self.clients.get(&id).is_some_and(|c| c.oper) {
            return true;
        }
        let text = "Permission Denied- You're not an IRC operator";
        self.numeric(ctx, id, ERR_NOPRIVILEGES, &[text]);
        false
    }

    /// `KILL <nick> <reason>` (operators): 461, 481, 401.
    pub(super) fn cmd_kill(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let (Some(nick), Some(reason)) = (
            p.first().filter(|n| !n.is_empty()),
            p.get(1).filter(|r| !r.is_empty()),
        ) else {
            return self.need_more_params(ctx, id, "KILL");
        };
        if !self.oper_only(ctx, id) {
            return Flow::Next;
        }
        if !valid_nick(nick, self.info.config.limits.nicklen) {
            let nick = truncate(nick, 64);
            self.numeric(ctx, id, ERR_NOSUCHNICK, &[nick, "No such nick/channel"]);
            return Flow::Next;
        }
        let Some(c) = self.clients.get(&id) else {
            return Flow::Next;
        };
        let req = Request::Kill {
            nick: nick.to_string(),
            mask: c.mask.clone(),
            reason: truncate(reason, TEXTLEN).to_string(),
        };
        if self.request(ctx, id, owner_of(nick, self.shards), req) {
            Flow::Park
        } else {
            Flow::Next
        }
    }

    /// The victim's side of a KILL: the KILL line, then it leaves.
    pub(crate) fn kill_local(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        target: crate::mail::ClientRef,
        nick: &str,
        mask: &str,
        reason: &str,
    ) -> ReplyBody {
        let Some(c) = self
            .clients
            .get(&target.id)
            .filter(|c| target.shard == self.me && c.registered && c.quitting.is_none())
        else {
            let num = crate::mail::Numeric::new(ERR_NOSUCHNICK, [nick, "No such nick/channel"]);
            return ReplyBody::Numerics(vec![num]);
        };
        let victim = c.nick_or_star().to_string();
        let killer = mask.split('!').next().unwrap_or(mask);
        let out = line(mask, "KILL", &[&victim, reason], true);
        self.send_line(ctx, target.id, &out);
        self.begin_quit(ctx, target.id, format!("Killed ({killer} ({reason}))"));
        ReplyBody::Done
    }

    /// `WALLOPS <text>` (operators): to every user with `+w`, on every shard.
    pub(super) fn cmd_wallops(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        p: &[&str],
    ) -> Flow {
        let Some(text) = p.first().filter(|t| !t.is_empty()) else {
            return self.need_more_params(ctx, id, "WALLOPS");
        };
        if !self.oper_only(ctx, id) {
            return Flow::Next;
        }
        let Some(c) = self.clients.get(&id) else {
            return Flow::Next;
        };
        let out = bytes::Bytes::from(line(&c.mask, "WALLOPS", &[truncate(text, TEXTLEN)], true));
        for s in 0..self.shards {
            let req = Request::Wallops { line: out.clone() };
            if !self.request(ctx, id, s, req) {
                return Flow::Next;
            }
        }
        Flow::Park
    }

    /// The OPER checker's answer for client `id`.
    pub(crate) fn oper_checked(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, granted: bool) {
        let Some(c) = self.clients.get_mut(&id).filter(|c| c.oper_pending) else {
            return;
        };
        c.oper_pending = false;
        c.unreplied = c.unreplied.saturating_sub(1);
        if c.quitting.is_none() {
            if granted {
                self.grant_oper(ctx, id);
            } else {
                self.numeric(ctx, id, ERR_PASSWDMISMATCH, &["Password incorrect"]);
            }
        }
        self.settle(ctx, id);
    }

    /// 381 and user mode +o.
    fn grant_oper(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let newly = !c.oper;
        c.oper = true;
        self.numeric(ctx, id, RPL_YOUREOPER, &["You are now an IRC operator"]);
        if newly {
            let c = &self.clients[&id];
            let out = line(&c.mask, "MODE", &[c.nick_or_star(), "+o"], true);
            self.send_line(ctx, id, &out);
        }
    }
}
