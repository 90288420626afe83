//! Channel modes on the owner: queries (324, 329, 367/368), changes (`+imnst`,
//! `+k`, `+l`, `+b`, `+o`, `+v`) and what they mean for JOIN.
//!
//! A change is applied in the order asked; what actually changed is announced to
//! every member as one MODE line, ordered with the channel's other events, and
//! carries the view update (`+s`, prefixes) the members' shards keep.

use crate::shard::{ChatShard, Outbox};
use std::sync::Arc;

use shardline::Ctx;

use super::{
    channel::{delivery, Ban, Channel},
    events::{no_such_channel, not_op},
    numerics, reply, Answer, Owner,
};
use crate::{
    casemap::{casefold, NameKey},
    clock,
    info::ServerInfo,
    mail::{ClientRef, Membership, ModeChange, Numeric, Outgoing, ReplyBody, ViewUpdate},
    mask::normalize_ban,
    reply::{code::*, line},
};

/// Bans one channel may hold (`MAXLIST=b:` in ISUPPORT).
pub const MAX_BANS: usize = 100;
/// Longest channel key (`KEYLEN`).
pub const KEYLEN: usize = 23;

impl Channel {
    /// Why `who` (`mask`, giving `key`) may not join, if it may not: a ban, `+i`
    /// without an invitation, a wrong key, or a full channel.
    pub fn refuses_join(
        &self,
        who: ClientRef,
        mask: &str,
        key: Option<&str>,
    ) -> Option<(u16, &'static str)> {
        if !self.bans.is_empty() && self.banned(&casefold(mask)) {
            return Some((ERR_BANNEDFROMCHAN, "Cannot join channel (+b)"));
        }
        if self.modes.invite_only && !self.invites.contains(&who) {
            return Some((ERR_INVITEONLYCHAN, "Cannot join channel (+i)"));
        }
        if self.modes.key.as_deref().is_some_and(|k| key != Some(k)) {
            return Some((ERR_BADCHANNELKEY, "Cannot join channel (+k)"));
        }
        // Members of every node count (a cluster's other nodes: `remote`).
        if self
            .modes
            .limit
            .is_some_and(|l| self.members.len() + self.remote.len() >= l as usize)
        {
            return Some((ERR_CHANNELISFULL, "Cannot join channel (+l)"));
        }
        None
    }
}

fn invalid_param(chan: &str, mode: char, param: &str, text: &str) -> Numeric {
    Numeric::new(ERR_INVALIDMODEPARAM, [chan, &mode.to_string(), param, text])
}

/// Whether `key` may be a channel key: 1 to [`KEYLEN`] printable ASCII
/// characters, no space (a trailing parameter may carry one), no `,` (it
/// separates JOIN's keys) and no leading `:`. modern.ircdocs.horse lets
/// servers validate keys and answer 696 for an invalid one.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= KEYLEN
        && !key.starts_with(':')
        && key.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// Changes as they take effect, folded into one `+ab-c x y` string.
#[derive(Default)]
struct Applied {
    letters: String,
    args: Vec<String>,
    sign: Option<bool>,
}

impl Applied {
    fn push(&mut self, adding: bool, mode: char, arg: Option<String>) {
        if self.sign != Some(adding) {
            self.letters.push(if adding { '+' } else { '-' });
            self.sign = Some(adding);
        }
        self.letters.push(mode);
        self.args.extend(arg);
    }
}

impl Owner {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mode(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        from: ClientRef,
        chan: &str,
        mask: &Arc<str>,
        changes: Vec<ModeChange>,
    ) -> Answer {
        let ckey: NameKey = casefold(chan).into();
        let Some(ch) = self.chans.get_mut(&ckey) else {
            return no_such_channel(chan);
        };
        let member = ch.members.get(&from);
        if changes.is_empty() {
            return numerics(vec![
                Numeric::new(RPL_CHANNELMODEIS, ch.mode_params(member.is_some())),
                Numeric::new(RPL_CREATIONTIME, [ch.name.clone(), ch.created.to_string()]),
            ]);
        }
        let is_op = member.is_some_and(|m| m.op);
        if is_op && !ch.room(outbox, info, None) {
            return reply(ReplyBody::Busy);
        }
        let (fanout, nums, missing) =
            apply_modes(ch, ctx, outbox, from, &ckey, mask, changes, is_op);
        let body = if missing.is_empty() {
            ReplyBody::Numerics(nums)
        } else {
            ReplyBody::CheckNicks {
                nums,
                chan: ch.name.clone(),
                nicks: missing,
            }
        };
        (fanout, Some(body))
    }
}

/// Applies `changes` asked by `mask` (`from`; an operator if `is_op`) to
/// `ch` in order and announces what changed in one MODE line; returns the
/// deliveries made, the numerics for the asker, and the nicks of +o/+v
/// that are not members. A cluster's other nodes apply another node's
/// MODE here too (with the setter's operator status as they know it), so
/// every node takes the same changes.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply_modes(
    ch: &mut Channel,
    ctx: &mut Ctx<'_, ChatShard>,
    outbox: &mut Outbox,
    from: ClientRef,
    ckey: &NameKey,
    mask: &str,
    changes: Vec<ModeChange>,
    is_op: bool,
) -> (u32, Vec<Numeric>, Vec<String>) {
    let name = ch.name.clone();
    let mut nums = Vec::new();
    let mut missing = Vec::new();
    let mut applied = Applied::default();
    let mut view = ViewUpdate::default();
    let (mut listed, mut refused) = (false, false);
    for ModeChange {
        adding,
        mode,
        param,
    } in changes
    {
        let known = "imnstklbov".contains(mode);
        if mode == 'b' && param.is_none() {
            if !listed {
                listed = true;
                nums.extend(ch.ban_numerics());
            }
            continue;
        }
        if !known {
            let text = format!("is unknown mode char to me for {name}");
            nums.push(Numeric::new(ERR_UNKNOWNMODE, [mode.to_string(), text]));
            continue;
        }
        if !is_op {
            if !refused {
                refused = true;
                nums.push(not_op(&name));
            }
            continue;
        }
        if let Some(flag) = ch.modes.flag(mode) {
            if *flag != adding {
                *flag = adding;
                applied.push(adding, mode, None);
                if mode == 's' {
                    view.secret = Some(adding);
                }
            }
            continue;
        }
        let needs_param = adding || matches!(mode, 'b' | 'o' | 'v');
        // `-k` may come with a parameter; it is not needed.
        let param = if needs_param { param } else { None };
        let Some(param) = param else {
            if needs_param {
                let text = format!("You must specify a parameter for the {mode} mode");
                nums.push(invalid_param(&name, mode, "*", &text));
            } else if mode == 'k' && ch.modes.key.take().is_some() {
                applied.push(false, 'k', Some("*".into()));
            } else if mode == 'l' && ch.modes.limit.take().is_some() {
                applied.push(false, 'l', None);
            }
            continue;
        };
        match mode {
            'k' => {
                if !valid_key(&param) {
                    nums.push(invalid_param(&name, 'k', &param, "Invalid key"));
                } else if let Some(old) = &ch.modes.key {
                    if *old != param {
                        let text = "Channel key already set";
                        nums.push(Numeric::new(ERR_KEYSET, [name.as_str(), text]));
                    }
                } else {
                    ch.modes.key = Some(param.clone());
                    applied.push(true, 'k', Some(param));
                }
            }
            'l' => match param.parse::<u32>() {
                Ok(n) if n > 0 => {
                    if ch.modes.limit != Some(n) {
                        ch.modes.limit = Some(n);
                        applied.push(true, 'l', Some(n.to_string()));
                    }
                }
                _ => nums.push(invalid_param(&name, 'l', &param, "Invalid limit")),
            },
            'b' => {
                let Some(ban) = normalize_ban(&param) else {
                    nums.push(invalid_param(&name, 'b', &param, "Invalid ban mask"));
                    continue;
                };
                let folded = casefold(&ban);
                let at = ch.bans.iter().position(|b| b.folded == folded);
                match (adding, at) {
                    (true, None) if ch.bans.len() >= MAX_BANS => {
                        let text = "Channel ban list is full";
                        nums.push(Numeric::new(ERR_BANLISTFULL, [name.as_str(), "b", text]));
                    }
                    (true, None) => {
                        let setter = mask.split('!').next().unwrap_or("").to_string();
                        ch.bans.push(Ban {
                            mask: ban.clone(),
                            folded,
                            setter,
                            time: clock::now_secs(),
                        });
                        applied.push(true, 'b', Some(ban));
                    }
                    (false, Some(i)) => {
                        let old = ch.bans.remove(i);
                        applied.push(false, 'b', Some(old.mask));
                    }
                    _ => {}
                }
            }
            _ => {
                // 'o' or 'v'.
                let folded = casefold(&param);
                let Some(&who) = ch.by_nick.get(folded.as_str()) else {
                    // Another node's member (a cluster).
                    let remote = ch
                        .remote
                        .values_mut()
                        .find(|r| casefold(r.nick()) == folded);
                    let Some(r) = remote else {
                        missing.push(param);
                        continue;
                    };
                    let flag = if mode == 'o' { &mut r.op } else { &mut r.voice };
                    if *flag != adding {
                        *flag = adding;
                        applied.push(adding, mode, Some(r.nick().to_string()));
                    }
                    continue;
                };
                let Some(m) = ch.members.get_mut(&who) else {
                    continue;
                };
                let flag = if mode == 'o' { &mut m.op } else { &mut m.voice };
                if *flag != adding {
                    *flag = adding;
                    applied.push(adding, mode, Some(m.nick.clone()));
                    view.prefixes.retain(|p| p.0 != who);
                    view.prefixes.push((who, m.op, m.voice));
                }
            }
        }
    }
    let mut fanout = 0;
    if !applied.letters.is_empty() {
        let mut params: Vec<&str> = vec![&name, &applied.letters];
        params.extend(applied.args.iter().map(String::as_str));
        let mut out = Outgoing::new(line(mask, "MODE", &params, false));
        out.account = ch.account_of(from);
        out.stamp();
        let mut d = delivery(ckey, out, from, false, Membership::Same);
        if view.secret.is_some() || !view.prefixes.is_empty() {
            d.view = Some(Arc::new(view));
        }
        fanout = ch.deliver(ctx, outbox, d);
    }
    (fanout, nums, missing)
}
