//! Accounts as other clients see them, on the client's own shard: logging in
//! and out (`ACCOUNT` to channel peers with `account-notify`), and nick
//! protection's side of the client (`[accounts] enforce_nick`).
//!
//! # Nick protection
//!
//! A nick's owner shard is also the owner of the account of the same name
//! (both are the casefolded name's store partition), so it alone decides:
//! when the holder of a nick that is a registered account completes
//! registration, takes the nick, or logs in to another account or out,
//! without being logged in to that account, the owner sends the holder's
//! shard a warning ([`NickGuard::Warn`]: a NOTICE) and starts a grace timer;
//! logging in to the account (or giving up the nick) stops it. When it runs
//! out the owner checks again and sends [`NickGuard::Rename`]: the holder's
//! shard renames it to a free `Guest<digits>` nick, through the ordinary nick
//! claim, once its earlier commands are done (like a NICK of its own, so the
//! NICK line comes after everything it said under the old nick).

use std::sync::Arc;

use shardline::Ctx;

use crate::{
    casemap::{casefold, owner_of, NameKey},
    mail::{NickGuard, NoticeKind, Outgoing, Request},
    reply::{line, write_line},
    shard::ChatShard,
};

/// Guest nicks tried for one forced rename before the client is disconnected
/// instead (each is taken only if free, like any nick).
const GUEST_TRIES: u8 = 8;

/// Whether `account` is the account of the casefolded name `key`.
fn is_account_of(account: Option<&str>, key: &str) -> bool {
    account.is_some_and(|a| casefold(a) == key)
}

impl ChatShard {
    /// Logs client `id` in to `account` (or out, with `None`): kept on the
    /// client; told to the owner of its nick (private history between two
    /// accounts, nick protection); and once it is registered and in channels,
    /// every shard delivers `:nick!user@host ACCOUNT <account>|*` once to each
    /// of its clients sharing a channel with it that has `account-notify`,
    /// and the channel owners note it (`account-tag` on its channel events).
    ///
    /// Returns whether requests or notices went out: the caller should hold
    /// the client's next command until they are done (`Flow::Park`), and call
    /// this only once the client is settled, so that what it said before is
    /// delivered before the ACCOUNT line and without the new account, and what
    /// it says after comes after it. Logging in to the account it is already
    /// in changes nothing.
    pub(crate) fn set_account(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        account: Option<String>,
    ) -> bool {
        let Some(c) = self.clients.get_mut(&id) else {
            return false;
        };
        let account: Option<Arc<str>> = account.map(Arc::from);
        if c.account == account {
            return false;
        }
        c.account = account.clone();
        let Some(nick) = c.nick.clone() else {
            return false;
        };
        let registered = c.registered;
        let mask = c.mask.clone();
        let req = Request::SetAccount {
            key: casefold(&nick).into(),
            account: account.clone(),
        };
        if !self.request(ctx, id, owner_of(&nick, self.shards), req) {
            return false;
        }
        if registered {
            let shown = account.as_deref().unwrap_or("*");
            let mut out = Outgoing::new(line(&mask, "ACCOUNT", &[shown], false));
            out.stamp();
            self.broadcast_notice(ctx, id, out, NoticeKind::Account { account });
        }
        true
    }

    /// The owner of nick `key` says client `id` holds it without being
    /// logged in to the account of that name.
    pub(crate) fn nick_guard(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        key: NameKey,
        action: NickGuard,
    ) {
        let Some(c) = self
            .clients
            .get_mut(&id)
            .filter(|c| c.quitting.is_none() && !is_account_of(c.account.as_deref(), &key))
        else {
            return;
        };
        match action {
            NickGuard::Warn { grace_ms } => {
                // It may still be taking the nick (the warning overtakes the
                // claim's answer): name it as the owner knows it then.
                let shown = match &c.nick {
                    Some(n) if casefold(n) == *key => n.clone(),
                    _ => key.to_string(),
                };
                let secs = grace_ms.div_ceil(1000);
                let text = format!(
                    "The nickname {shown} is registered: log in to that account within \
                     {secs} seconds or you will be renamed."
                );
                let mut out = Vec::with_capacity(128);
                let target = c.nick_or_star().to_string();
                write_line(
                    &mut out,
                    self.info.name(),
                    "NOTICE",
                    &[&target, &text],
                    true,
                );
                // Not a response to any command of its own: never labelled.
                let _ = crate::websocket::send(ctx, c, &out);
            }
            NickGuard::Rename => {
                c.rename_due = Some(key);
                if !c.parked {
                    self.pump(ctx, id);
                }
            }
        }
    }

    /// Carries out a due rename of client `id` (from `pump`, once it is
    /// settled): claims a guest nick unless it gave up the nick or logged in
    /// meanwhile. Returns whether a claim went out.
    pub(crate) fn guest_rename(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) -> bool {
        let nicklen = self.info.config.limits.nicklen;
        self.guests += 1;
        let seed = self.guests ^ ((self.me as u64) << 40) ^ id.rotate_left(20);
        let Some(c) = self.clients.get_mut(&id) else {
            return false;
        };
        let Some(key) = c.rename_due.take() else {
            return false;
        };
        let holds = c.nick.as_deref().is_some_and(|n| casefold(n) == *key);
        if !holds || is_account_of(c.account.as_deref(), &key) {
            c.guest_claim = None;
            return false;
        }
        let tries = c.guest_claim.as_ref().map_or(0, |(_, n)| *n) + 1;
        if tries > GUEST_TRIES {
            c.guest_claim = None;
            self.begin_quit(ctx, id, "Nickname enforcement: no free guest nick".into());
            return false;
        }
        let guest = guest_nick(seed, nicklen);
        c.guest_claim = Some((guest.clone(), tries));
        // Tried again if the guest nick is taken (see `nick_claimed`).
        c.rename_due = Some(key);
        let req = Request::ClaimNick {
            nick: guest.clone(),
            registered: c.registered,
            account: c.account.clone(),
            ident: c.ident().filter(|_| c.registered),
        };
        self.request(ctx, id, owner_of(&guest, self.shards), req)
    }
}

/// A guest nick, `Guest` and five digits (cut to `nicklen`), from `seed`
/// mixed with the clock (splitmix64): hard to guess, likely free.
fn guest_nick(seed: u64, nicklen: usize) -> String {
    let mut z = seed ^ crate::clock::now_millis().wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let mut nick = format!("Guest{:05}", z % 100_000);
    nick.truncate(nicklen.max(1));
    nick
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::casemap::valid_nick;

    #[test]
    fn guest_nicks_are_valid_and_vary() {
        let a = guest_nick(1, 30);
        assert!(a.starts_with("Guest") && a.len() == 10, "{a}");
        assert!(valid_nick(&a, 30));
        let many: std::collections::HashSet<String> = (0..100).map(|i| guest_nick(i, 30)).collect();
        assert!(many.len() > 90, "{}", many.len());
        assert_eq!(guest_nick(7, 7).len(), 7);
        assert!(valid_nick(&guest_nick(7, 1), 1));
    }

    #[test]
    fn account_matches_its_nick_in_any_case() {
        assert!(is_account_of(Some("Alice[1]"), "alice{1}"));
        assert!(!is_account_of(Some("bob"), "alice"));
        assert!(!is_account_of(None, "alice"));
    }
}
