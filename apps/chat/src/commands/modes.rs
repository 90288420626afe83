//! MODE: channel modes are parsed here (which letters take a parameter, at most
//! `MODES` of those per command) and decided by the channel's owner; user modes
//! (`+i`, and `-o` to drop operator status) are the client's own shard's.

use shardline::Ctx;

use super::Flow;
use crate::{
    casemap::{casefold, is_channel_name, owner_of, valid_channel},
    info::MAX_MODES,
    mail::{ModeChange, Request},
    reply::{code::*, line, truncate},
    shard::ChatShard,
};

/// Mode letters looked at in one command (the rest of a longer string is ignored).
const MAX_CHANGES: usize = 32;

/// The changes `modes` (with `args`) asks for, in order. `o v b k` take a
/// parameter (`-k`'s is optional, `b` without one lists bans), `l` only when set;
/// past [`MAX_MODES`] changes with a parameter, the rest are ignored.
pub fn parse_channel_modes(modes: &str, args: &[&str]) -> Vec<ModeChange> {
    let mut changes = Vec::new();
    let mut args = args.iter();
    let (mut adding, mut with_param) = (true, 0);
    for mode in modes.chars().take(MAX_CHANGES) {
        match mode {
            '+' => adding = true,
            '-' => adding = false,
            _ => {
                let takes = matches!(mode, 'o' | 'v' | 'b' | 'k') || (mode == 'l' && adding);
                let param = if takes {
                    if with_param == MAX_MODES {
                        continue;
                    }
                    with_param += 1;
                    args.next().map(|a| a.to_string())
                } else {
                    None
                };
                changes.push(ModeChange {
                    adding,
                    mode,
                    param,
                });
            }
        }
    }
    changes
}

impl ChatShard {
    pub(super) fn cmd_mode(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let Some(target) = p.first().filter(|t| !t.is_empty()) else {
            return self.need_more_params(ctx, id, "MODE");
        };
        if !is_channel_name(target) {
            return self.user_mode(ctx, id, target, p.get(1).copied());
        }
        if !valid_channel(target, self.info.config.limits.channellen) {
            let chan = truncate(target, 64);
            self.numeric(ctx, id, ERR_NOSUCHCHANNEL, &[chan, "No such channel"]);
            return Flow::Next;
        }
        let changes = match p.get(1) {
            Some(modes) => parse_channel_modes(modes, &p[2..]),
            None => Vec::new(),
        };
        if p.len() > 1 && changes.is_empty() {
            // Only signs: nothing to do.
            return Flow::Next;
        }
        let Some(c) = self.clients.get(&id) else {
            return Flow::Next;
        };
        let req = Request::Mode {
            chan: target.to_string(),
            mask: c.mask.clone(),
            changes,
        };
        self.request(ctx, id, owner_of(target, self.shards), req);
        Flow::Next
    }

    /// User modes: `+i`, and `-o` (operator status is only gained by OPER).
    fn user_mode(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        target: &str,
        modes: Option<&str>,
    ) -> Flow {
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        if casefold(target) != casefold(c.nick_or_star()) {
            let text = "Can't change mode for other users";
            self.numeric(ctx, id, ERR_USERSDONTMATCH, &[text]);
            return Flow::Next;
        }
        let Some(modes) = modes else {
            let current = user_modes(c);
            self.numeric(ctx, id, RPL_UMODEIS, &[&current]);
            return Flow::Next;
        };
        let (mut adding, mut unknown) = (true, false);
        let mut changed = String::new();
        let mut sign = None;
        for ch in modes.chars().take(MAX_CHANGES) {
            let flag = match ch {
                '+' => {
                    adding = true;
                    continue;
                }
                '-' => {
                    adding = false;
                    continue;
                }
                'i' => &mut c.invisible,
                'w' => &mut c.wallops,
                'B' => &mut c.bot,
                'o' if !adding => &mut c.oper,
                // +o comes from OPER only; asking for it is silently ignored.
                'o' => continue,
                _ => {
                    unknown = true;
                    continue;
                }
            };
            if *flag != adding {
                *flag = adding;
                if sign != Some(adding) {
                    changed.push(if adding { '+' } else { '-' });
                    sign = Some(adding);
                }
                changed.push(ch);
            }
        }
        if !changed.is_empty() {
            let nick = c.nick_or_star().to_string();
            let out = line(&c.mask, "MODE", &[&nick, &changed], true);
            self.send_line(ctx, id, &out);
        }
        if unknown {
            self.numeric(ctx, id, ERR_UMODEUNKNOWNFLAG, &["Unknown MODE flag"]);
        }
        Flow::Next
    }
}

/// The user modes letters this server has, each with whether `c` has it:
/// `+iow`, `+i`, ... or `+` for none.
fn user_modes(c: &crate::client::Client) -> String {
    let mut s = String::from("+");
    for (on, letter) in [
        (c.invisible, 'i'),
        (c.oper, 'o'),
        (c.wallops, 'w'),
        (c.bot, 'B'),
    ] {
        if on {
            s.push(letter);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(adding: bool, mode: char, param: Option<&str>) -> ModeChange {
        ModeChange {
            adding,
            mode,
            param: param.map(str::to_string),
        }
    }

    #[test]
    fn parameters_follow_the_letters() {
        let c = parse_channel_modes("+ok-l+lzb", &["al", "9"]);
        assert_eq!(
            c,
            [
                change(true, 'o', Some("al")),
                change(true, 'k', Some("9")),
                change(false, 'l', None),
                change(true, 'l', None),
                change(true, 'z', None),
                change(true, 'b', None),
            ]
        );
    }

    #[test]
    fn at_most_modes_with_parameters() {
        let c = parse_channel_modes("+vvvvvi", &["a", "b", "c", "d", "e"]);
        assert_eq!(c.len(), MAX_MODES + 1, "{c:?}");
        assert_eq!(c.last(), Some(&change(true, 'i', None)));
    }
}
