//! AWAY and OPER: state of the client itself, kept on its own shard (WHO, WHOIS
//! and the 301 for messages to it are answered there).

use shardline::Ctx;

use super::Flow;
use crate::{
    auth::{
        oper::Busy,
        password::{constant_time_eq, OperPassword, Password},
    },
    mask,
    reply::{code::*, line, truncate},
    shard::ChatShard,
};

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
