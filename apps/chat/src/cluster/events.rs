//! Channel events between nodes: what a node publishes on a partition's
//! engine channel (`shardline:ev:<partition>`) and every node's owner of
//! that partition applies, in the engine's order.
//!
//! One line of text: `1 <node> <token> <kind> <fields...> :<last>`, every
//! field but the last free of spaces (names, masks, msgids, numbers, tags;
//! `*` for none), the last the free text (real name, reason, message).

use crate::store::MessageKind;

/// The format's version.
const VERSION: &str = "1";

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
        /// The quit message.
        reason: String,
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
}

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
        let (kind, words, last): (&str, Vec<&str>, &str) = match &self.event {
            Event::Join {
                chan,
                mask,
                account,
                realname,
            } => ("J", vec![chan, mask, opt(account)], realname),
            Event::Part { chan, mask, reason } => ("P", vec![chan, mask], reason),
            Event::Quit { chan, mask, reason } => ("Q", vec![chan, mask], reason),
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
                let k = match kind {
                    MessageKind::Privmsg => "P",
                    MessageKind::Notice => "N",
                    MessageKind::Tagmsg => "T",
                };
                ("M", vec![to, k, mask, opt(account), msgid, opt(tags)], text)
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
        if let Event::Msg { time, .. } = &self.event {
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
                reason: last.to_string(),
            },
            "M" => {
                let to = next()?;
                let kind = match next()?.as_str() {
                    "P" => MessageKind::Privmsg,
                    "N" => MessageKind::Notice,
                    "T" => MessageKind::Tagmsg,
                    _ => return None,
                };
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
            _ => return None,
        };
        if next().is_some() || !word_ok(&node) {
            return None;
        }
        Some(Envelope { node, token, event })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for event in [
            Event::Join {
                chan: "#Room".into(),
                mask: "alice!~a@127.0.0.1".into(),
                account: Some("alice".into()),
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
        ] {
            assert_eq!(Envelope::decode(s), None, "{s:?}");
        }
    }
}
