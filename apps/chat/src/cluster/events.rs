//! Channel events between nodes: what a node publishes on a partition's
//! engine channel (`shardline:ev:<partition>`) and every node's owner of
//! that partition applies, in the engine's order.
//!
//! One line of text: `1 <node> <token> <kind> <fields...> :<last>`, every
//! field but the last free of spaces (names, masks, msgids, numbers, tags;
//! `*` for none), the last the free text (real name, reason, message).
//!
//! Private messages to a user of another node ([`Event::Direct`]) and their
//! bounces ([`Event::Bounce`]) go on the partition of the target's nick,
//! whose owner on every node is subscribed to it; so do a WHOIS of another
//! node's user ([`Event::WhoisAsk`]) and its answer ([`Event::WhoisAnswer`]).

use crate::store::MessageKind;

/// The format's version.
const VERSION: &str = "1";

/// The letters of [`Event::Notify`].
const NOTIFY_KINDS: &str = "ACSHI";

/// An event of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A user joined.
    Join {
        /// The channel as named.
        chan: String,
        /// `nick!user@host`.
        mask: String,
        /// The user's account.
        account: Option<String>,
        /// The key its QUIT lines will carry ([`user_event_key`]): the
        /// same whether the QUIT comes from its node or from its node
        /// leaving the cluster.
        quit_key: u64,
        /// It becomes an operator: it created the channel, as its node
        /// decided when it published the JOIN (every node takes that).
        op: bool,
        /// Its real name (extended-join).
        realname: String,
    },
    /// A user left.
    Part {
        /// The channel as named.
        chan: String,
        /// `nick!user@host`.
        mask: String,
        /// The reason (may be empty).
        reason: String,
    },
    /// A member quit (one event per channel of its node's owner).
    Quit {
        /// The channel as named.
        chan: String,
        /// `nick!user@host`.
        mask: String,
        /// The member's QUIT key (as its JOIN said): a member of several
        /// channels gets one line.
        once: u64,
        /// The quit message.
        reason: String,
    },
    /// A member set (or cleared: empty text) the channel's topic.
    Topic {
        /// The channel as named.
        chan: String,
        /// The setter's `nick!user@host`.
        mask: String,
        /// When, seconds since the epoch.
        time: u64,
        /// The topic.
        text: String,
    },
    /// An operator removed a member (of any node) from the channel.
    Kick {
        /// The channel as named.
        chan: String,
        /// The kicker's `nick!user@host`.
        mask: String,
        /// The member's nick.
        target: String,
        /// The reason.
        reason: String,
    },
    /// An operator changed the channel's modes: the changes as asked
    /// (every node applies them to the same state, in the same order, so
    /// every node takes the same ones).
    Mode {
        /// The channel as named.
        chan: String,
        /// The setter's `nick!user@host`.
        mask: String,
        /// (adding, letter, parameter), in the order asked.
        changes: Vec<(bool, char, Option<String>)>,
    },
    /// A member's AWAY (`A`), ACCOUNT (`C`), SETNAME (`S`) or CHGHOST (`H`)
    /// line, for the members with the cap for it (one event per channel);
    /// or its INVITE of someone to the channel (`I`, for `invite-notify`:
    /// on a `+i` channel its operators only).
    Notify {
        /// The channel as named.
        chan: String,
        /// The member's `nick!user@host` (before a CHGHOST).
        mask: String,
        /// Which (the letter above).
        kind: char,
        /// The same for each channel of this change ([`user_event_key`]).
        once: u64,
        /// The line as its node rendered it, without CRLF.
        body: String,
    },
    /// A member changed its nick (one event per channel).
    Nick {
        /// The channel as named.
        chan: String,
        /// The old `nick!user@host`.
        mask: String,
        /// The new nick.
        nick: String,
        /// The same for each channel of this change ([`user_event_key`]).
        once: u64,
    },
    /// A PRIVMSG, NOTICE or TAGMSG to the channel.
    Msg {
        /// The channel as the sender wrote it.
        to: String,
        /// Which.
        kind: MessageKind,
        /// `nick!user@host`.
        mask: String,
        /// The sender's account.
        account: Option<String>,
        /// The msgid the origin gave it (the same on every node).
        msgid: String,
        /// Its time, ms since the epoch.
        time: u64,
        /// Client-only tags (`+a=b;+c`).
        tags: Option<String>,
        /// The text (empty for TAGMSG).
        text: String,
    },
    /// A PRIVMSG, NOTICE or TAGMSG to a user of another node (the node whose
    /// claim the nick is, checked in the engine as it was published).
    Direct {
        /// The target nick as the sender wrote it.
        to: String,
        /// Which.
        kind: MessageKind,
        /// `nick!user@host`.
        mask: String,
        /// The sender's account.
        account: Option<String>,
        /// The msgid the origin gave it.
        msgid: String,
        /// Its time, ms since the epoch.
        time: u64,
        /// Client-only tags.
        tags: Option<String>,
        /// The sender on its node (a bounce goes back to it).
        from: (usize, u64),
        /// The text (empty for TAGMSG).
        text: String,
    },
    /// A private message between two accounts, for every node's history
    /// of their conversation (published on the conversation's partition by
    /// the node that delivered it; delivery itself is [`Event::Direct`] or
    /// local).
    Conv {
        /// The recipient's nick as the sender wrote it.
        to: String,
        /// The recipient's account.
        peer: String,
        /// Which (never TAGMSG: not kept).
        kind: MessageKind,
        /// The sender's `nick!user@host`.
        mask: String,
        /// The sender's account.
        account: String,
        /// The msgid the sender's node gave it.
        msgid: String,
        /// Its time, ms since the epoch.
        time: u64,
        /// Client-only tags.
        tags: Option<String>,
        /// The text.
        text: String,
    },
    /// A node asks the others for their members of the channels of
    /// `partition` (it started, or its subscriber came back); the
    /// envelope's token names the ask.
    SyncAsk {
        /// The partition.
        partition: u16,
        /// The asker was away (it started, or its subscriber came back):
        /// each node that answers asks in turn, since it may have missed
        /// the asker's events meanwhile. An ask made in turn has `false`.
        again: bool,
    },
    /// Part of an answer to a [`Event::SyncAsk`] (its token): this node's
    /// own members of `chan` when it saw the ask.
    SyncMembers {
        /// The asking node.
        to_node: String,
        /// The channel as named.
        chan: String,
        /// Each member: `nick!user@host`, account, QUIT key, and its
        /// prefixes (1: operator, 2: voice).
        members: Vec<(String, Option<String>, u64, u8)>,
    },
    /// Part of an answer to a [`Event::SyncAsk`] (its token): a channel's
    /// state when the answering node saw the ask (before its members).
    SyncChannel {
        /// The asking node.
        to_node: String,
        /// The channel as named.
        chan: String,
        /// The flags set (`imnst` letters; may be empty).
        flags: String,
        /// The key.
        key: Option<String>,
        /// The limit (0: none).
        limit: u32,
        /// The ban masks.
        bans: Vec<String>,
        /// The topic: setter, time (seconds), text.
        topic: Option<(String, u64, String)>,
    },
    /// The end of an answer to a [`Event::SyncAsk`] (its token).
    SyncEnd {
        /// The asking node.
        to_node: String,
        /// The partition.
        partition: u16,
    },
    /// An INVITE of a user of another node (the node whose claim the nick
    /// is), checked on the inviter's node.
    Invite {
        /// The channel as named.
        chan: String,
        /// The inviter's `nick!user@host`.
        mask: String,
        /// The invitee's nick as written.
        target: String,
        /// The inviter on its node (a bounce goes back to it).
        from: (usize, u64),
    },
    /// A PRIVMSG whose target had left the node that was to deliver it: the
    /// sender (on node `to_node`) gets 401.
    Bounce {
        /// The sender's node.
        to_node: String,
        /// The sender on it.
        client: (usize, u64),
        /// The nick it wrote to.
        target: String,
    },
    /// A PRIVMSG reached a user of another node who is away: the sender
    /// (on node `to_node`) gets 301 with the away message.
    AwayReply {
        /// The sender's node.
        to_node: String,
        /// The sender on it.
        client: (usize, u64),
        /// The away user's nick.
        nick: String,
        /// Its away message.
        text: String,
    },
    /// A WHOIS of a user of another node (the node whose claim the nick is,
    /// checked in the engine as it was published); the envelope's token
    /// names the ask, and the answer is a [`Event::WhoisAnswer`].
    WhoisAsk {
        /// The nick as asked.
        nick: String,
        /// The asker on its node.
        from: (usize, u64),
        /// The asker negotiated `multi-prefix` (the channels' prefixes).
        multi_prefix: bool,
    },
    /// The answer to a [`Event::WhoisAsk`], on the asker's node's private
    /// channel of the nick's partition: the holder's WHOIS numerics, its
    /// 318 left out (none: nobody there holds the nick now).
    WhoisAnswer {
        /// The asker's node.
        to_node: String,
        /// The asker on it.
        client: (usize, u64),
        /// The ask's token.
        ask: u64,
        /// The numerics (code, parameters after the asker's nick); at most
        /// [`MAX_WHOIS_NUMERICS`], each with at most [`MAX_WHOIS_PARAMS`]
        /// parameters of at most [`MAX_WHOIS_PARAM`] bytes, every one but
        /// the last a word (what an IRC line can carry before its trailing
        /// parameter).
        numerics: Vec<(u16, Vec<String>)>,
    },
}

/// The most numerics a [`Event::WhoisAnswer`] carries.
pub const MAX_WHOIS_NUMERICS: usize = 32;
/// The most parameters of one numeric of a [`Event::WhoisAnswer`].
pub const MAX_WHOIS_PARAMS: usize = 8;
/// The longest parameter of a [`Event::WhoisAnswer`]'s numeric, in bytes.
pub const MAX_WHOIS_PARAM: usize = 512;

/// An event with where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The origin node.
    pub node: String,
    /// The origin owner's token (its own echo finds the request with it).
    pub token: u64,
    /// The event.
    pub event: Event,
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("*")
}

fn word_ok(s: &str) -> bool {
    !s.is_empty() && !s.contains([' ', '\r', '\n', '\0'])
}

impl Envelope {
    /// The wire form, or `None` if a field cannot be carried (a space in
    /// a name: never from a registered client).
    pub fn encode(&self) -> Option<String> {
        let extra: String;
        let list: String;
        let (kind, words, last): (&str, Vec<&str>, &str) = match &self.event {
            Event::Join {
                chan,
                mask,
                account,
                quit_key,
                op,
                realname,
            } => {
                extra = format!("{quit_key} {}", u8::from(*op));
                let mut words = vec![chan.as_str(), mask, opt(account)];
                words.extend(extra.split(' '));
                ("J", words, realname)
            }
            Event::Part { chan, mask, reason } => ("P", vec![chan, mask], reason),
            Event::Quit {
                chan,
                mask,
                once,
                reason,
            } => {
                extra = once.to_string();
                ("Q", vec![chan, mask, &extra], reason)
            }
            Event::Nick {
                chan,
                mask,
                nick,
                once,
            } => {
                extra = once.to_string();
                ("N", vec![chan, mask, nick, &extra], "")
            }
            Event::Notify {
                chan,
                mask,
                kind,
                once,
                body,
            } => {
                if !NOTIFY_KINDS.contains(*kind) {
                    return None;
                }
                extra = format!("{kind} {once}");
                let mut words = vec![chan.as_str(), mask.as_str()];
                words.extend(extra.split(' '));
                ("U", words, body)
            }
            Event::Topic {
                chan,
                mask,
                time,
                text,
            } => {
                extra = time.to_string();
                ("T", vec![chan, mask, &extra], text)
            }
            Event::Kick {
                chan,
                mask,
                target,
                reason,
            } => ("K", vec![chan, mask, target], reason),
            Event::Mode {
                chan,
                mask,
                changes,
            } => {
                // `+o<nick> -k +b<mask>`: sign, letter, parameter.
                let mut list = Vec::with_capacity(changes.len());
                for (adding, letter, param) in changes {
                    let p = param.as_deref().unwrap_or("");
                    if !letter.is_ascii_alphabetic() || p.contains([' ', '\r', '\n', '\0']) {
                        return None;
                    }
                    list.push(format!("{}{letter}{p}", if *adding { '+' } else { '-' }));
                }
                extra = list.join(" ");
                ("O", vec![chan, mask], extra.as_str())
            }
            Event::Msg {
                to,
                kind,
                mask,
                account,
                msgid,
                time: _,
                tags,
                text,
            } => {
                let k = kind_letter(*kind);
                ("M", vec![to, k, mask, opt(account), msgid, opt(tags)], text)
            }
            Event::Direct {
                to,
                kind,
                mask,
                account,
                msgid,
                time: _,
                tags,
                from,
                text,
            } => {
                extra = format!("{}.{}", from.0, from.1);
                let words = vec![
                    to.as_str(),
                    kind_letter(*kind),
                    mask,
                    opt(account),
                    msgid,
                    opt(tags),
                    &extra,
                ];
                ("D", words, text)
            }
            Event::Conv {
                to,
                peer,
                kind,
                mask,
                account,
                msgid,
                time: _,
                tags,
                text,
            } => {
                let k = kind_letter(*kind);
                let words = vec![to.as_str(), peer, k, mask, account, msgid, opt(tags)];
                ("V", words, text)
            }
            Event::Bounce {
                to_node,
                client,
                target,
            } => {
                extra = format!("{}.{}", client.0, client.1);
                ("B", vec![to_node.as_str(), &extra, target], "")
            }
            Event::AwayReply {
                to_node,
                client,
                nick,
                text,
            } => {
                extra = format!("{}.{}", client.0, client.1);
                ("Y", vec![to_node.as_str(), &extra, nick], text)
            }
            Event::Invite {
                chan,
                mask,
                target,
                from,
            } => {
                extra = format!("{}.{}", from.0, from.1);
                ("I", vec![chan.as_str(), mask, target, &extra], "")
            }
            Event::SyncAsk { partition, again } => {
                extra = partition.to_string();
                (
                    "S",
                    vec![extra.as_str(), if *again { "1" } else { "0" }],
                    "",
                )
            }
            Event::SyncMembers {
                to_node,
                chan,
                members,
            } => {
                let mut list = Vec::with_capacity(members.len());
                for (mask, account, key, flags) in members {
                    if !word_ok(mask) || account.as_deref().is_some_and(|a| !word_ok(a)) {
                        return None;
                    }
                    list.push(format!("{mask} {} {key} {flags}", opt(account)));
                }
                extra = list.join(" ");
                ("W", vec![to_node.as_str(), chan], extra.as_str())
            }
            Event::SyncChannel {
                to_node,
                chan,
                flags,
                key,
                limit,
                bans,
                topic,
            } => {
                if !flags.bytes().all(|b| b"imnst".contains(&b))
                    || bans.iter().any(|b| b.is_empty() || b.contains([',', ' ']))
                {
                    return None;
                }
                let (setter, time, text) = match topic {
                    Some((s, t, x)) => (s.as_str(), *t, x.as_str()),
                    None => ("*", 0, ""),
                };
                extra = format!(
                    "+{flags} {} {limit} {} {setter} {time}",
                    opt(key),
                    if bans.is_empty() {
                        "*".to_string()
                    } else {
                        bans.join(",")
                    }
                );
                let mut words = vec![to_node.as_str(), chan.as_str()];
                words.extend(extra.split(' '));
                ("C", words, text)
            }
            Event::SyncEnd { to_node, partition } => {
                extra = partition.to_string();
                ("E", vec![to_node.as_str(), &extra], "")
            }
            Event::WhoisAsk {
                nick,
                from,
                multi_prefix,
            } => {
                extra = format!("{}.{} {}", from.0, from.1, u8::from(*multi_prefix));
                let mut words = vec![nick.as_str()];
                words.extend(extra.split(' '));
                ("A", words, "")
            }
            Event::WhoisAnswer {
                to_node,
                client,
                ask,
                numerics,
            } => {
                extra = format!("{}.{} {ask}", client.0, client.1);
                list = encode_numerics(numerics)?;
                let mut words = vec![to_node.as_str()];
                words.extend(extra.split(' '));
                ("R", words, list.as_str())
            }
        };
        if !word_ok(&self.node)
            || words.iter().any(|w| !word_ok(w))
            || last.contains(['\r', '\n', '\0'])
        {
            return None;
        }
        let mut out = format!("{VERSION} {} {} {kind}", self.node, self.token);
        for w in words {
            out.push(' ');
            out.push_str(w);
        }
        if let Event::Msg { time, .. } | Event::Direct { time, .. } | Event::Conv { time, .. } =
            &self.event
        {
            out.push_str(&format!(" {time}"));
        }
        out.push_str(" :");
        out.push_str(last);
        Some(out)
    }

    /// Reads the wire form; `None` for anything else.
    pub fn decode(s: &str) -> Option<Envelope> {
        let (head, last) = s.split_once(" :")?;
        let mut w = head.split(' ');
        if w.next()? != VERSION {
            return None;
        }
        let node = w.next()?.to_string();
        let token = w.next()?.parse().ok()?;
        let kind = w.next()?;
        let mut next = || w.next().filter(|x| !x.is_empty()).map(str::to_string);
        let account = |a: String| (a != "*").then_some(a);
        let event = match kind {
            "J" => Event::Join {
                chan: next()?,
                mask: next()?,
                account: account(next()?),
                quit_key: next()?.parse().ok()?,
                op: match next()?.as_str() {
                    "1" => true,
                    "0" => false,
                    _ => return None,
                },
                realname: last.to_string(),
            },
            "P" => Event::Part {
                chan: next()?,
                mask: next()?,
                reason: last.to_string(),
            },
            "Q" => Event::Quit {
                chan: next()?,
                mask: next()?,
                once: next()?.parse().ok()?,
                reason: last.to_string(),
            },
            "U" => Event::Notify {
                chan: next()?,
                mask: next()?,
                kind: {
                    let k = next()?;
                    let mut c = k.chars();
                    let kind = c.next().filter(|c| NOTIFY_KINDS.contains(*c))?;
                    if c.next().is_some() {
                        return None;
                    }
                    kind
                },
                once: next()?.parse().ok()?,
                body: last.to_string(),
            },
            "T" => Event::Topic {
                chan: next()?,
                mask: next()?,
                time: next()?.parse().ok()?,
                text: last.to_string(),
            },
            "K" => Event::Kick {
                chan: next()?,
                mask: next()?,
                target: next()?,
                reason: last.to_string(),
            },
            "O" => {
                let chan = next()?;
                let mask = next()?;
                let mut changes = Vec::new();
                for w in last.split(' ').filter(|w| !w.is_empty()) {
                    let mut c = w.chars();
                    let adding = match c.next()? {
                        '+' => true,
                        '-' => false,
                        _ => return None,
                    };
                    let letter = c.next().filter(char::is_ascii_alphabetic)?;
                    let p = c.as_str();
                    changes.push((adding, letter, (!p.is_empty()).then(|| p.to_string())));
                }
                Event::Mode {
                    chan,
                    mask,
                    changes,
                }
            }
            "N" => Event::Nick {
                chan: next()?,
                mask: next()?,
                nick: next()?,
                once: next()?.parse().ok()?,
            },
            "M" => {
                let to = next()?;
                let kind = letter_kind(&next()?)?;
                let mask = next()?;
                let acct = account(next()?);
                let msgid = next()?;
                let tags = account(next()?);
                let time = next()?.parse().ok()?;
                Event::Msg {
                    to,
                    kind,
                    mask,
                    account: acct,
                    msgid,
                    time,
                    tags,
                    text: last.to_string(),
                }
            }
            "V" => {
                let to = next()?;
                let peer = next()?;
                let kind = letter_kind(&next()?)?;
                let mask = next()?;
                let sender = next()?;
                let msgid = next()?;
                let tags = account(next()?);
                let time = next()?.parse().ok()?;
                Event::Conv {
                    to,
                    peer,
                    kind,
                    mask,
                    account: sender,
                    msgid,
                    time,
                    tags,
                    text: last.to_string(),
                }
            }
            "D" => {
                let to = next()?;
                let kind = letter_kind(&next()?)?;
                let mask = next()?;
                let acct = account(next()?);
                let msgid = next()?;
                let tags = account(next()?);
                let from = client_ref(&next()?)?;
                let time = next()?.parse().ok()?;
                Event::Direct {
                    to,
                    kind,
                    mask,
                    account: acct,
                    msgid,
                    time,
                    tags,
                    from,
                    text: last.to_string(),
                }
            }
            "S" => Event::SyncAsk {
                partition: next()?.parse().ok()?,
                again: match next()?.as_str() {
                    "1" => true,
                    "0" => false,
                    _ => return None,
                },
            },
            "W" => {
                let to_node = next()?;
                let chan = next()?;
                let words: Vec<&str> = last.split(' ').filter(|w| !w.is_empty()).collect();
                if words.len() % 4 != 0 {
                    return None;
                }
                let mut members = Vec::with_capacity(words.len() / 4);
                for m in words.chunks(4) {
                    let account = (m[1] != "*").then(|| m[1].to_string());
                    let flags: u8 = m[3].parse().ok().filter(|f| *f < 4)?;
                    members.push((m[0].to_string(), account, m[2].parse().ok()?, flags));
                }
                Event::SyncMembers {
                    to_node,
                    chan,
                    members,
                }
            }
            "C" => {
                let to_node = next()?;
                let chan = next()?;
                let flags = next()?.strip_prefix('+')?.to_string();
                if !flags.bytes().all(|b| b"imnst".contains(&b)) {
                    return None;
                }
                let key = account(next()?);
                let limit = next()?.parse().ok()?;
                let bans = match next()?.as_str() {
                    "*" => Vec::new(),
                    list => list.split(',').map(str::to_string).collect(),
                };
                if bans.iter().any(String::is_empty) {
                    return None;
                }
                let setter = next()?;
                let time = next()?.parse().ok()?;
                let topic = (setter != "*").then(|| (setter, time, last.to_string()));
                Event::SyncChannel {
                    to_node,
                    chan,
                    flags,
                    key,
                    limit,
                    bans,
                    topic,
                }
            }
            "E" => Event::SyncEnd {
                to_node: next()?,
                partition: next()?.parse().ok()?,
            },
            "I" => Event::Invite {
                chan: next()?,
                mask: next()?,
                target: next()?,
                from: client_ref(&next()?)?,
            },
            "B" => Event::Bounce {
                to_node: next()?,
                client: client_ref(&next()?)?,
                target: next()?,
            },
            "Y" => Event::AwayReply {
                to_node: next()?,
                client: client_ref(&next()?)?,
                nick: next()?,
                text: last.to_string(),
            },
            "A" => Event::WhoisAsk {
                nick: next()?,
                from: client_ref(&next()?)?,
                multi_prefix: match next()?.as_str() {
                    "1" => true,
                    "0" => false,
                    _ => return None,
                },
            },
            "R" => Event::WhoisAnswer {
                to_node: next()?,
                client: client_ref(&next()?)?,
                ask: next()?.parse().ok()?,
                numerics: decode_numerics(last)?,
            },
            _ => return None,
        };
        if next().is_some() || !word_ok(&node) {
            return None;
        }
        Some(Envelope { node, token, event })
    }
}

/// The key of one user event (a NICK or QUIT) that goes out once per
/// channel: the same from every shard that publishes a copy, and on every
/// node that receives one (FNV-1a of what names it).
pub fn user_event_key(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn kind_letter(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Privmsg => "P",
        MessageKind::Notice => "N",
        MessageKind::Tagmsg => "T",
    }
}

fn letter_kind(s: &str) -> Option<MessageKind> {
    match s {
        "P" => Some(MessageKind::Privmsg),
        "N" => Some(MessageKind::Notice),
        "T" => Some(MessageKind::Tagmsg),
        _ => None,
    }
}

/// `<shard>.<id>`.
fn client_ref(s: &str) -> Option<(usize, u64)> {
    let (shard, id) = s.split_once('.')?;
    Some((shard.parse().ok()?, id.parse().ok()?))
}

/// The field of a stream entry holding the event ([`Envelope`]).
pub const STREAM_FIELD: &str = "e";

/// The events of an `XRANGE`/`XREVRANGE` reply of a partition's stream
/// (entries `[id, [field, value, ...]]`, the event the value of
/// [`STREAM_FIELD`]), in the reply's order. Anything else in the reply — an
/// entry of another shape, a value that is not an event — is skipped.
pub fn stream_events(reply: &redis_protocol::resp2::types::OwnedFrame) -> Vec<Envelope> {
    use redis_protocol::resp2::types::OwnedFrame;
    let OwnedFrame::Array(entries) = reply else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| match entry {
            OwnedFrame::Array(parts) => match parts.get(1) {
                Some(OwnedFrame::Array(fields)) => fields
                    .chunks_exact(2)
                    .find(|kv| super::resp::text(&kv[0]) == Some(STREAM_FIELD))
                    .and_then(|kv| super::resp::text(&kv[1]))
                    .and_then(Envelope::decode),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A [`Event::WhoisAnswer`]'s numerics as words: per numeric
/// `<code>.<count>`, then each parameter escaped (`\\` for a backslash,
/// `\s` for a space, `\e` alone for an empty one). `None` if one cannot be
/// carried (see [`Event::WhoisAnswer`]).
fn encode_numerics(numerics: &[(u16, Vec<String>)]) -> Option<String> {
    if numerics.len() > MAX_WHOIS_NUMERICS {
        return None;
    }
    let mut out = String::new();
    for (code, params) in numerics {
        if !(100..=999).contains(code) || params.len() > MAX_WHOIS_PARAMS {
            return None;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&format!("{code}.{}", params.len()));
        for (i, p) in params.iter().enumerate() {
            if !param_ok(p, i + 1 == params.len()) {
                return None;
            }
            out.push(' ');
            if p.is_empty() {
                out.push_str("\\e");
            }
            for c in p.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    ' ' => out.push_str("\\s"),
                    c => out.push(c),
                }
            }
        }
    }
    Some(out)
}

/// Reads what [`encode_numerics`] wrote; `None` for anything else (past a
/// bound included).
fn decode_numerics(s: &str) -> Option<Vec<(u16, Vec<String>)>> {
    let mut words = s.split(' ').filter(|w| !w.is_empty());
    let mut out = Vec::new();
    while let Some(head) = words.next() {
        if out.len() == MAX_WHOIS_NUMERICS {
            return None;
        }
        let (code, count) = head.split_once('.')?;
        let code: u16 = code.parse().ok().filter(|c| (100..=999).contains(c))?;
        let count: usize = count.parse().ok().filter(|n| *n <= MAX_WHOIS_PARAMS)?;
        let mut params = Vec::with_capacity(count);
        for i in 0..count {
            let p = unescape(words.next()?)?;
            if !param_ok(&p, i + 1 == count) {
                return None;
            }
            params.push(p);
        }
        out.push((code, params));
    }
    Some(out)
}

/// A numeric's parameter one can carry: bounded, no line breaks or NUL;
/// one before the last a word that does not start with `:`.
fn param_ok(p: &str, last: bool) -> bool {
    p.len() <= MAX_WHOIS_PARAM
        && !p.contains(['\r', '\n', '\0'])
        && (last || (!p.is_empty() && !p.starts_with(':') && !p.contains(' ')))
}

fn unescape(w: &str) -> Option<String> {
    if w == "\\e" {
        return Some(String::new());
    }
    let mut out = String::with_capacity(w.len());
    let mut chars = w.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            's' => out.push(' '),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_replies_give_their_events_and_skip_the_rest() {
        use redis_protocol::resp2::types::OwnedFrame::{self, Array, BulkString, Integer};
        let msg = |id: &str| Envelope {
            node: "n1".into(),
            token: 3,
            event: Event::Msg {
                to: "#room".into(),
                kind: MessageKind::Privmsg,
                mask: "a!~a@h".into(),
                account: None,
                msgid: id.into(),
                time: 1_700_000_000_000,
                tags: None,
                text: "hi".into(),
            },
        };
        let bulk = |s: &str| BulkString(s.as_bytes().to_vec());
        let entry = |id: &str, fields: Vec<OwnedFrame>| Array(vec![bulk(id), Array(fields)]);
        let wire = |e: &Envelope| e.encode().unwrap();
        let reply = Array(vec![
            entry("2-0", vec![bulk("e"), bulk(&wire(&msg("m2")))]),
            // Another field first, then the event.
            entry(
                "1-5",
                vec![bulk("x"), bulk("y"), bulk("e"), bulk(&wire(&msg("m1")))],
            ),
            // Not an event, no event field, not an entry, an odd field list.
            entry("1-4", vec![bulk("e"), bulk("junk")]),
            entry("1-3", vec![bulk("x"), bulk("y")]),
            Integer(7),
            entry("1-2", vec![bulk("e")]),
        ]);
        assert_eq!(stream_events(&reply), vec![msg("m2"), msg("m1")]);
        assert!(stream_events(&Integer(0)).is_empty());
        assert!(stream_events(&Array(Vec::new())).is_empty());
    }

    #[test]
    fn round_trips() {
        for event in [
            Event::Join {
                chan: "#Room".into(),
                mask: "alice!~a@127.0.0.1".into(),
                account: Some("alice".into()),
                quit_key: 77,
                op: true,
                realname: "Alice :) Liddell".into(),
            },
            Event::Part {
                chan: "#room".into(),
                mask: "bob!~b@::1".into(),
                reason: String::new(),
            },
            Event::Msg {
                to: "#room".into(),
                kind: MessageKind::Privmsg,
                mask: "c!~c@h".into(),
                account: None,
                msgid: "abc123".into(),
                time: 1_700_000_000_123,
                tags: Some("+draft/react=x;+y".into()),
                text: " :leading space and colon: ok\ttab".into(),
            },
            Event::Conv {
                to: "Bob".into(),
                peer: "bob".into(),
                kind: MessageKind::Privmsg,
                mask: "c!~c@h".into(),
                account: "carol".into(),
                msgid: "m3-n1".into(),
                time: 13,
                tags: Some("+draft/reply=m2".into()),
                text: ":)".into(),
            },
            Event::Direct {
                to: "Bob".into(),
                kind: MessageKind::Notice,
                mask: "c!~c@h".into(),
                account: Some("c".into()),
                msgid: "m2".into(),
                time: 12,
                tags: None,
                from: (3, 900),
                text: "hi :there".into(),
            },
            Event::Quit {
                chan: "#r".into(),
                mask: "q!~q@h".into(),
                once: u64::MAX,
                reason: "Quit: bye".into(),
            },
            Event::Nick {
                chan: "#r".into(),
                mask: "old!~o@h".into(),
                nick: "New".into(),
                once: 5,
            },
            Event::Bounce {
                to_node: "n2".into(),
                client: (0, 1),
                target: "Bob".into(),
            },
            Event::AwayReply {
                to_node: "n2".into(),
                client: (3, 77),
                nick: "Bob".into(),
                text: "out: back at 5 :)".into(),
            },
            Event::Topic {
                chan: "#r".into(),
                mask: "o!~o@h".into(),
                time: 1_700_000_000,
                text: "a topic: with colons".into(),
            },
            Event::Topic {
                chan: "#r".into(),
                mask: "o!~o@h".into(),
                time: 1,
                text: String::new(),
            },
            Event::Kick {
                chan: "#r".into(),
                mask: "o!~o@h".into(),
                target: "Victim".into(),
                reason: "bye now".into(),
            },
            Event::Mode {
                chan: "#r".into(),
                mask: "o!~o@h".into(),
                changes: vec![
                    (true, 'o', Some("bob".into())),
                    (false, 'k', None),
                    (true, 'b', Some("*!*@h=x:y".into())),
                    (true, 'n', None),
                ],
            },
            Event::Invite {
                chan: "#r".into(),
                mask: "o!~o@h".into(),
                target: "Bob".into(),
                from: (1, 22),
            },
            Event::Notify {
                chan: "#r".into(),
                mask: "a!~a@h".into(),
                kind: 'A',
                once: 9,
                body: ":a!~a@h AWAY :gone: for lunch".into(),
            },
            Event::Notify {
                chan: "#r".into(),
                mask: "a!~a@h".into(),
                kind: 'I',
                once: 10,
                body: ":a!~a@h INVITE Bob #r".into(),
            },
            Event::SyncAsk {
                partition: 63,
                again: true,
            },
            Event::SyncAsk {
                partition: 0,
                again: false,
            },
            Event::SyncMembers {
                to_node: "n2".into(),
                chan: "#r".into(),
                members: vec![
                    ("a!~a@h".into(), None, 1, 0),
                    ("b!~b@::1".into(), Some("bee".into()), u64::MAX, 3),
                ],
            },
            Event::SyncMembers {
                to_node: "n2".into(),
                chan: "#empty".into(),
                members: vec![],
            },
            Event::SyncEnd {
                to_node: "n2".into(),
                partition: 0,
            },
            Event::SyncChannel {
                to_node: "n2".into(),
                chan: "#r".into(),
                flags: "int".into(),
                key: Some("sesame".into()),
                limit: 5,
                bans: vec!["*!*@h".into(), "x!*@*".into()],
                topic: Some(("op".into(), 1_700_000_000, "the topic: here".into())),
            },
            Event::SyncChannel {
                to_node: "n2".into(),
                chan: "#r".into(),
                flags: String::new(),
                key: None,
                limit: 0,
                bans: Vec::new(),
                topic: None,
            },
            Event::WhoisAsk {
                nick: "BoB".into(),
                from: (3, 17),
                multi_prefix: true,
            },
            Event::WhoisAnswer {
                to_node: "n1".into(),
                client: (0, 5),
                ask: 9,
                numerics: vec![
                    (
                        311,
                        vec![
                            "bob".into(),
                            "~b".into(),
                            "0::1".into(),
                            "*".into(),
                            "Bob \\ the :builder\\s".into(),
                        ],
                    ),
                    (319, vec!["bob".into(), "@#a +#b".into()]),
                    (301, vec!["bob".into(), String::new()]),
                    (
                        317,
                        vec!["bob".into(), "5".into(), "17".into(), "x y".into()],
                    ),
                ],
            },
            Event::WhoisAnswer {
                to_node: "n1".into(),
                client: (0, 5),
                ask: 9,
                numerics: Vec::new(),
            },
            Event::Msg {
                to: "#room".into(),
                kind: MessageKind::Tagmsg,
                mask: "c!~c@h".into(),
                account: Some("c".into()),
                msgid: "m".into(),
                time: 0,
                tags: None,
                text: String::new(),
            },
        ] {
            let env = Envelope {
                node: "n-1.x".into(),
                token: 42,
                event,
            };
            let wire = env.encode().expect("encodes");
            assert_eq!(Envelope::decode(&wire), Some(env), "{wire}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_carry_or_read() {
        let bad = Envelope {
            node: "n".into(),
            token: 1,
            event: Event::Part {
                chan: "#a b".into(),
                mask: "x".into(),
                reason: String::new(),
            },
        };
        assert_eq!(bad.encode(), None);
        for s in [
            "",
            "2 n 1 P #a m :",
            "1 n x P #a m :",
            "1 n 1 Z #a m :",
            "1 n 1 P #a :",
            "1 n 1 P #a m extra :",
            "1 n 1 M #a Q m * id * 5 :t",
            "1 n 1 M #a P m * id * notanumber :t",
            "1 n 1 P #a m",
            "1 n 1 D bob P m * id * 3 5 :t",
            "1 n 1 D bob P m * id * 3.x 5 :t",
            "1 n 1 B n2 0.1 :",
            "1 n 1 Q #a m :no key",
            "1 n 1 N #a m new :",
            "1 n 1 N #a m new x :",
            "1 n 1 S 70000 1 :",
            "1 n 1 T #a m x :t",
            "1 n 1 U #a m X 1 :b",
            "1 n 1 U #a m AA 1 :b",
            "1 n 1 K #a m :r",
            "1 n 1 S 1 2 :",
            "1 n 1 S 1 :",
            "1 n 1 W n2 #r :a!~a@h * 1 b",
            "1 n 1 W n2 #r :a!~a@h * x 0",
            "1 n 1 W n2 #r :a!~a@h * 1 4",
            "1 n 1 W n2 #r :a!~a@h * 1",
            "1 n 1 O #r m :o",
            "1 n 1 O #r m :+",
            "1 n 1 O #r m :+1x",
            "1 n 1 E n2 :",
            "1 n 1 C n2 #r nt * 0 * * 0 :",
            "1 n 1 C n2 #r +x * 0 * * 0 :",
            "1 n 1 C n2 #r + * 0 a,,b * 0 :",
            "1 n 1 A bob 0.1 2 :",
            "1 n 1 A bob 0.1 :",
            "1 n 1 R n1 0.1 x :",
            "1 n 1 R n1 0.1 2 :311.2 bob",
            "1 n 1 R n1 0.1 2 :311.1 \\x",
            "1 n 1 R n1 0.1 2 :311.1 a\\",
            "1 n 1 R n1 0.1 2 :99.0",
            "1 n 1 R n1 0.1 2 :311.9 a b c d e f g h i",
            "1 n 1 R n1 0.1 2 :311.2 :x y",
            "1 n 1 R n1 0.1 2 :311.2 \\e y",
            "1 n 1 R n1 0.1 2 :311",
        ] {
            assert_eq!(Envelope::decode(s), None, "{s:?}");
        }
    }

    #[test]
    fn whois_answers_are_bounded() {
        let answer = |numerics: Vec<(u16, Vec<String>)>| Envelope {
            node: "n2".into(),
            token: 0,
            event: Event::WhoisAnswer {
                to_node: "n1".into(),
                client: (1, 2),
                ask: 3,
                numerics,
            },
        };
        let one = || (319, vec!["bob".to_string(), "#a #b".to_string()]);
        let most = answer(vec![one(); MAX_WHOIS_NUMERICS]);
        let wire = most.encode().expect("the most");
        assert_eq!(Envelope::decode(&wire), Some(most));
        assert_eq!(answer(vec![one(); MAX_WHOIS_NUMERICS + 1]).encode(), None);
        assert_eq!(Envelope::decode(&format!("{wire} 319.1 x")), None);
        let long = "x".repeat(MAX_WHOIS_PARAM + 1);
        assert_eq!(
            answer(vec![(301, vec!["bob".into(), long.clone()])]).encode(),
            None
        );
        assert_eq!(
            Envelope::decode(&format!("1 n2 0 R n1 1.2 3 :301.2 bob {long}")),
            None
        );
        let params = vec!["p".to_string(); MAX_WHOIS_PARAMS + 1];
        assert_eq!(answer(vec![(311, params)]).encode(), None);
        // A parameter before the last must be a word.
        let spaced = vec!["a b".to_string(), "x".to_string()];
        assert_eq!(answer(vec![(311, spaced)]).encode(), None);
    }
}
