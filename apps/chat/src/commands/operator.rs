//! AWAY and OPER: state of the client itself, kept on its own shard (WHO, WHOIS
//! and the 301 for messages to it are answered there).

use shardline::Ctx;

use super::Flow;
use crate::{
    mask,
    reply::{code::*, line, truncate},
    shard::ChatShard,
};

/// Whether `a == b`, in time that depends on their lengths but not on where they
/// differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

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
        Flow::Next
    }

    /// OPER name password: 491 if no operator block has that name for the
    /// client's host, 464 if the password is wrong, else 381 and user mode +o.
    pub(super) fn cmd_oper(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let (Some(name), Some(password)) = (p.first(), p.get(1)) else {
            return self.need_more_params(ctx, id, "OPER");
        };
        let Some(c) = self.clients.get(&id) else {
            return Flow::Next;
        };
        let (mut block, mut granted) = (false, false);
        // Every block is compared in full: the time taken says nothing about
        // which names exist or how much of a password was right.
        for op in &self.info.config.operators {
            let name_ok = constant_time_eq(op.name.as_bytes(), name.as_bytes());
            let pass_ok = constant_time_eq(op.password.as_bytes(), password.as_bytes());
            if name_ok && mask::matches(&op.host, &c.host) {
                block = true;
                granted |= pass_ok;
            }
        }
        if !block {
            self.numeric(ctx, id, ERR_NOOPERHOST, &["No O-lines for your host"]);
        } else if !granted {
            self.numeric(ctx, id, ERR_PASSWDMISMATCH, &["Password incorrect"]);
        } else if let Some(c) = self.clients.get_mut(&id) {
            let newly = !c.oper;
            c.oper = true;
            self.numeric(ctx, id, RPL_YOUREOPER, &["You are now an IRC operator"]);
            if newly {
                let c = &self.clients[&id];
                let out = line(&c.mask, "MODE", &[c.nick_or_star(), "+o"], true);
                self.send_line(ctx, id, &out);
            }
        }
        Flow::Next
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
