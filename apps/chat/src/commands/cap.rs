//! `CAP` (IRCv3 capability negotiation, version 302) and `cap-notify`.
//!
//! - `LS [version]`: what is offered now. Version 302 or later gets values
//!   (`sasl=PLAIN,...`, `sts=...`), a reply cut over several lines with `*`
//!   before all but the last, and `cap-notify` enabled for good.
//! - `LIST`: what the client has enabled (cut the same way for 302 clients).
//! - `REQ :[-]cap ...`: all or nothing. If any name (case-sensitive) is not
//!   offered, or asks to remove what cannot be removed (`cap-notify` after
//!   `LS 302`), or the list is empty, the whole list is NAKed verbatim and
//!   nothing changes; otherwise it is ACKed verbatim and every change takes
//!   effect at once, left to right, before or after registration. Before
//!   registration, LS and REQ suspend it until `END`; after it they never do.
//! - `END`: ends the negotiation (ignored once registered).
//!
//! What is offered can change at run time: a rehash (SIGHUP) may turn `sts` on
//! or off or change its value, open or close account registration, change its
//! options. Each shard compares, for each of its clients with `cap-notify`,
//! what it offered before and after ([`ChatShard::cap_notify_rehash`]) and
//! sends `CAP <nick> DEL` (the cap is disabled if it was on) and `CAP <nick>
//! NEW` (new caps, and caps whose value changed, with their values for 302
//! clients). Nothing crosses shards: every shard gets the new configuration.

use shardline::Ctx;

use super::Flow;
use crate::{
    client::Client,
    mail::Caps,
    message::MAX_BODY,
    reply::{code::*, truncate, write_line},
    shard::ChatShard,
};

/// What a client is offered: `name` or `name=value`, in [`Caps::ALL`] order,
/// then `sts`.
pub(crate) type Offer = Vec<String>;

impl ChatShard {
    /// The caps offered to `c` now; `values`: with their values (302).
    pub(crate) fn cap_offer(&self, c: &Client, values: bool) -> Offer {
        let mut all: Offer = Caps::ALL
            .iter()
            .filter(|&&(_, cap)| self.cap_offered(cap))
            .map(
                |&(n, cap)| match self.cap_value(cap, c).filter(|_| values) {
                    Some(v) => format!("{n}={v}"),
                    None => n.to_string(),
                },
            )
            .collect();
        // `sts` means nothing without its value: older clients do not see it.
        // It is informational: a REQ for it is NAKed like any unknown cap.
        if let Some(sts) = self
            .info
            .sts_value(c.tls.is_some(), self.tls_port)
            // Not to WebSocket clients: the policy names the IRC TLS port,
            // which a web client cannot use.
            .filter(|_| values && c.transport == crate::websocket::Transport::Tcp)
        {
            all.push(format!("sts={sts}"));
        }
        all
    }

    pub(super) fn cmd_cap(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let Some(sub) = p.first() else {
            return self.need_more_params(ctx, id, "CAP");
        };
        let sub = sub.to_ascii_uppercase();
        let server = self.info.name().to_string();
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        let target = c.nick_or_star().to_string();
        let mut out = Vec::new();
        match sub.as_str() {
            "LS" => {
                if !c.registered {
                    c.cap_negotiating = true;
                }
                let v302 = p
                    .get(1)
                    .and_then(|v| v.parse::<u32>().ok())
                    .is_some_and(|v| v >= 302);
                if v302 {
                    // cap-notify is implied by 302 (and cannot be removed).
                    c.cap_302 = true;
                    c.caps.set(Caps::CAP_NOTIFY, true);
                }
                let multi = c.cap_302;
                let Some(c) = self.clients.get(&id) else {
                    return Flow::Next;
                };
                let all = self.cap_offer(c, v302);
                write_cap_lines(&mut out, &server, &target, "LS", &all, multi);
            }
            "LIST" => {
                let names: Vec<String> = Caps::ALL
                    .iter()
                    .filter(|(_, cap)| c.caps.has(*cap))
                    .map(|(n, _)| n.to_string())
                    .collect();
                write_cap_lines(&mut out, &server, &target, "LIST", &names, c.cap_302);
            }
            "REQ" => {
                if !c.registered {
                    c.cap_negotiating = true;
                }
                let list = p.get(1).copied().unwrap_or("");
                let Some(c) = self.clients.get(&id) else {
                    return Flow::Next;
                };
                match self.cap_changes(c, list) {
                    Some(changes) => {
                        if let Some(c) = self.clients.get_mut(&id) {
                            for (cap, on) in changes {
                                c.caps.set(cap, on);
                            }
                        }
                        write_line(&mut out, &server, "CAP", &[&target, "ACK", list], true);
                    }
                    None => write_line(&mut out, &server, "CAP", &[&target, "NAK", list], true),
                }
            }
            "END" => {
                if !c.registered && c.cap_negotiating {
                    c.cap_negotiating = false;
                    // An exchange still under way is aborted (906): the client
                    // registers without an account (sasl-3.1).
                    self.sasl_registration_completed(ctx, id);
                    if self.try_register(ctx, id) {
                        return Flow::Park;
                    }
                }
                return Flow::Next;
            }
            _ => {
                let sub = truncate(&sub, 32).to_string();
                self.numeric(ctx, id, ERR_INVALIDCAPCMD, &[&sub, "Invalid CAP command"]);
                return Flow::Next;
            }
        }
        self.send_line(ctx, id, &out);
        Flow::Next
    }

    /// The changes a `CAP REQ` list asks for, or `None` if the whole list must
    /// be NAKed: it is empty, names a cap not offered now, or removes
    /// `cap-notify` that `LS 302` implied.
    fn cap_changes(&self, c: &Client, list: &str) -> Option<Vec<(Caps, bool)>> {
        let changes: Vec<(Caps, bool)> = list
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(|w| {
                let (name, on) = match w.strip_prefix('-') {
                    Some(name) => (name, false),
                    None => (w, true),
                };
                let cap = Caps::by_name(name).filter(|&cap| self.cap_offered(cap))?;
                if !on && cap == Caps::CAP_NOTIFY && c.cap_302 {
                    return None;
                }
                Some((cap, on))
            })
            .collect::<Option<_>>()?;
        (!changes.is_empty()).then_some(changes)
    }

    /// What each local client with `cap-notify` is offered (before a rehash).
    pub(crate) fn cap_offers(&self) -> Vec<(u64, Offer)> {
        self.clients
            .iter()
            .filter(|(_, c)| c.alive && c.caps.has(Caps::CAP_NOTIFY))
            .map(|(&id, c)| (id, self.cap_offer(c, c.cap_302)))
            .collect()
    }

    /// After a rehash: `CAP DEL` and `CAP NEW` to each client with
    /// `cap-notify` whose offer changed (`before`: from [`Self::cap_offers`]).
    pub(crate) fn cap_notify_rehash(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        before: Vec<(u64, Offer)>,
    ) {
        let server = self.info.name().to_string();
        for (id, old) in before {
            let Some(c) = self.clients.get(&id) else {
                continue;
            };
            let new = self.cap_offer(c, c.cap_302);
            let name = |e: &str| e.split_once('=').map_or(e, |(n, _)| n).to_string();
            let gone: Vec<String> = old
                .iter()
                .map(|e| name(e))
                .filter(|n| !new.iter().any(|e| name(e) == *n))
                .collect();
            let added: Vec<String> = new.iter().filter(|e| !old.contains(e)).cloned().collect();
            if gone.is_empty() && added.is_empty() {
                continue;
            }
            let Some(c) = self.clients.get_mut(&id) else {
                continue;
            };
            for n in &gone {
                if let Some(cap) = Caps::by_name(n) {
                    c.caps.set(cap, false);
                }
            }
            let target = c.nick_or_star().to_string();
            let mut out = Vec::new();
            write_cap_lines(&mut out, &server, &target, "DEL", &gone, false);
            write_cap_lines(&mut out, &server, &target, "NEW", &added, false);
            self.send_line(ctx, id, &out);
        }
    }
}

/// Appends `CAP <target> <sub> [*] :<entries>` lines, each within 512 bytes.
/// `continued`: all but the last line carry `*` (LS and LIST to 302 clients);
/// otherwise each line stands alone (NEW, DEL), or, for a pre-302 LS, all go
/// on one line as those clients expect. Nothing is written for an empty NEW
/// or DEL; LS and LIST always answer.
fn write_cap_lines(
    out: &mut Vec<u8>,
    server: &str,
    target: &str,
    sub: &str,
    entries: &[String],
    continued: bool,
) {
    let split = continued || matches!(sub, "NEW" | "DEL");
    if entries.is_empty() {
        if !matches!(sub, "NEW" | "DEL") {
            write_line(out, server, "CAP", &[target, sub, ""], true);
        }
        return;
    }
    // ":server CAP target SUB * :" around the list.
    let budget = MAX_BODY.saturating_sub(server.len() + target.len() + sub.len() + 12);
    let mut lines: Vec<String> = vec![String::new()];
    for e in entries {
        let cur = lines.last_mut().expect("one line at least");
        if split && !cur.is_empty() && cur.len() + 1 + e.len() > budget {
            lines.push(e.clone());
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(e);
        }
    }
    let n = lines.len();
    for (i, l) in lines.iter().enumerate() {
        if continued && i + 1 < n {
            write_line(out, server, "CAP", &[target, sub, "*", l], true);
        } else {
            write_line(out, server, "CAP", &[target, sub, l], true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(out: &[u8]) -> Vec<String> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    #[test]
    fn long_lists_are_cut_with_a_star() {
        let entries: Vec<String> = (0..100)
            .map(|i| format!("vendor.example/cap-{i}"))
            .collect();
        let mut out = Vec::new();
        write_cap_lines(&mut out, "irc.test", "nick", "LS", &entries, true);
        let lines = parse(&out);
        assert!(lines.len() > 1);
        let mut seen = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            assert!(l.len() + 2 <= 512, "{l}");
            let rest = if i + 1 < lines.len() {
                l.strip_prefix(":irc.test CAP nick LS * :")
                    .expect("starred")
            } else {
                l.strip_prefix(":irc.test CAP nick LS :").expect("last")
            };
            seen.extend(rest.split(' ').map(String::from));
        }
        assert_eq!(seen, entries);
        // NEW is cut into lines that each stand alone.
        let mut out = Vec::new();
        write_cap_lines(&mut out, "irc.test", "nick", "NEW", &entries, false);
        let lines = parse(&out);
        assert!(lines.len() > 1);
        assert!(lines
            .iter()
            .all(|l| l.starts_with(":irc.test CAP nick NEW :")));
        // Nothing for an empty DEL; an empty LIST still answers.
        let mut out = Vec::new();
        write_cap_lines(&mut out, "irc.test", "nick", "DEL", &[], false);
        assert!(out.is_empty());
        write_cap_lines(&mut out, "irc.test", "nick", "LIST", &[], true);
        assert_eq!(parse(&out), [":irc.test CAP nick LIST :"]);
    }
}
