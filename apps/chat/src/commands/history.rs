//! CHATHISTORY (IRCv3 `draft/chathistory`): parsing and checking here; the
//! history is read where it is kept — a channel's by its owner (which checks the
//! client may read it now), a conversation's by its owner (found through the
//! other party's nick owner), TARGETS by every shard — and the answer comes back
//! here to be sent as one `chathistory` batch. The client's next command waits
//! for it.
//!
//! ```text
//! CHATHISTORY LATEST  <target> <* | msgref> <limit>
//! CHATHISTORY BEFORE  <target> <msgref> <limit>
//! CHATHISTORY AFTER   <target> <msgref> <limit>
//! CHATHISTORY AROUND  <target> <msgref> <limit>
//! CHATHISTORY BETWEEN <target> <msgref> <msgref> <limit>
//! CHATHISTORY TARGETS <timestamp> <timestamp> <limit>
//! msgref = msgid=<id> | timestamp=YYYY-MM-DDThh:mm:ss.sssZ
//! ```
//!
//! Bounds are exclusive, limits are cut to `CHATHISTORY=` (ISUPPORT), answers
//! are in ascending time order and hold PRIVMSG and NOTICE only (no
//! `draft/event-playback`). Errors are standard replies: `FAIL CHATHISTORY
//! INVALID_PARAMS` (unknown subcommand, missing, extra or unparsable
//! parameters), `INVALID_MSGREFTYPE` (a reference that is neither `msgid=` nor
//! `timestamp=`), `INVALID_TARGET` (no such channel now, or one the client may
//! not read: `+s`, `+i` or keyed and not a member, or banned), `MESSAGE_ERROR`
//! (a `msgid=` the history does not hold).

use shardline::Ctx;

use super::Flow;
use crate::{
    casemap::{is_channel_name, owner_of, valid_channel, valid_nick},
    client::{PendingHistory, TargetsGather},
    clock,
    history::write_history_line,
    mail::{Caps, HistRef, HistoryError, HistoryQuery, HistorySub, Request},
    reply::{truncate, write_line, Standard},
    shard::ChatShard,
    store::{select_targets, Message, TargetSummary},
};

/// Why a CHATHISTORY command is refused before it is sent anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `FAIL CHATHISTORY INVALID_PARAMS <context…> :<text>`.
    Params(Vec<String>, &'static str),
    /// `FAIL CHATHISTORY INVALID_MSGREFTYPE <sub> <target> :<text>`.
    RefType(String),
    /// `FAIL CHATHISTORY INVALID_TARGET <sub> <target> :<text>`.
    Target(String),
}

/// A parsed CHATHISTORY command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A history query on `target`.
    Query {
        /// The subcommand's name.
        sub: &'static str,
        /// The target as given.
        target: String,
        /// What to return.
        query: HistoryQuery,
    },
    /// TARGETS between two times.
    Targets {
        /// One bound, where counting starts.
        a: u64,
        /// The other.
        b: u64,
        /// At most this many.
        limit: usize,
    },
}

const SUBS: [&str; 6] = ["LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN", "TARGETS"];

/// Parses CHATHISTORY's parameters (limits cut to `max`).
pub(crate) fn parse(
    p: &[&str],
    max: usize,
    nicklen: usize,
    channellen: usize,
) -> Result<Parsed, (&'static str, Refusal)> {
    let given = p.first().copied().unwrap_or("");
    let upper = given.to_ascii_uppercase();
    let Some(sub) = SUBS.iter().copied().find(|s| *s == upper) else {
        let shown = truncate(given, 32).to_string();
        return Err(("*", Refusal::Params(vec![shown], "Unknown command")));
    };
    let want = match sub {
        "BETWEEN" => 5,
        _ => 4,
    };
    let params = |text| Refusal::Params(vec![sub.to_string()], text);
    if p.len() < want {
        return Err((sub, params("Insufficient parameters")));
    }
    if p.len() > want {
        return Err((sub, params("Too many parameters")));
    }
    let limit = match p[want - 1].parse::<usize>() {
        Ok(n) if n > 0 => n.min(max),
        _ => {
            let shown = truncate(p[want - 1], 32).to_string();
            return Err((
                sub,
                Refusal::Params(vec![sub.into(), shown], "Invalid limit"),
            ));
        }
    };
    let time = |s: &str| -> Result<u64, (&'static str, Refusal)> {
        s.strip_prefix("timestamp=")
            .and_then(clock::parse_server_time)
            .ok_or_else(|| {
                let shown = truncate(s, 64).to_string();
                (
                    sub,
                    Refusal::Params(vec![sub.into(), shown], "Invalid timestamp"),
                )
            })
    };
    if sub == "TARGETS" {
        return Ok(Parsed::Targets {
            a: time(p[1])?,
            b: time(p[2])?,
            limit,
        });
    }
    let target = p[1];
    let ok_target = if is_channel_name(target) {
        valid_channel(target, channellen)
    } else {
        valid_nick(target, nicklen)
    };
    if !ok_target {
        let shown = truncate(target, 64).to_string();
        return Err((sub, Refusal::Target(shown)));
    }
    let msgref = |s: &str| -> Result<HistRef, (&'static str, Refusal)> {
        if s.starts_with("timestamp=") {
            return time(s).map(HistRef::Time);
        }
        match s.strip_prefix("msgid=") {
            Some(id) if !id.is_empty() && id.len() <= 64 => Ok(HistRef::MsgId(id.to_string())),
            Some(_) => {
                let shown = truncate(s, 64).to_string();
                Err((
                    sub,
                    Refusal::Params(vec![sub.into(), shown], "Invalid msgid"),
                ))
            }
            None if s.contains('=') => Err((sub, Refusal::RefType(target.to_string()))),
            None => {
                let shown = truncate(s, 64).to_string();
                let text = "Invalid message reference";
                Err((sub, Refusal::Params(vec![sub.into(), shown], text)))
            }
        }
    };
    let hsub = match sub {
        "LATEST" if p[2] == "*" => HistorySub::Latest(None),
        "LATEST" => HistorySub::Latest(Some(msgref(p[2])?)),
        "BEFORE" => HistorySub::Before(msgref(p[2])?),
        "AFTER" => HistorySub::After(msgref(p[2])?),
        "AROUND" => HistorySub::Around(msgref(p[2])?),
        _ => HistorySub::Between(msgref(p[2])?, msgref(p[3])?),
    };
    Ok(Parsed::Query {
        sub,
        target: target.to_string(),
        query: HistoryQuery { sub: hsub, limit },
    })
}

/// A made-up unique batch reference (letters and digits).
fn batch_ref(shard: usize, n: u64) -> String {
    format!("h{shard}x{n}")
}

impl ChatShard {
    pub(super) fn cmd_chathistory(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        p: &[&str],
    ) -> Flow {
        if p.is_empty() {
            return self.need_more_params(ctx, id, "CHATHISTORY");
        }
        let l = &self.info.config.limits;
        let max = self.info.config.history.max_request;
        let parsed = match parse(p, max, l.nicklen, l.channellen) {
            Ok(parsed) => parsed,
            Err((_, refusal)) => {
                self.history_refusal(ctx, id, refusal);
                return Flow::Next;
            }
        };
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        match parsed {
            Parsed::Targets { a, b, limit } => {
                c.history = Some(PendingHistory {
                    sub: "TARGETS",
                    targets: Some(TargetsGather {
                        remaining: self.shards,
                        a,
                        b,
                        limit,
                        found: Vec::new(),
                    }),
                });
                let (chans, account) = (c.channels.clone(), c.account.clone());
                for s in 0..self.shards {
                    let req = Request::HistoryTargets {
                        chans: chans.clone(),
                        account: account.clone(),
                        a,
                        b,
                        limit,
                    };
                    if !self.request(ctx, id, s, req) {
                        return Flow::Next;
                    }
                }
                Flow::Park
            }
            Parsed::Query { sub, target, query } => {
                let (to, req) = if is_channel_name(&target) {
                    let mask = c.mask.clone();
                    let req = Request::ChanHistory {
                        chan: target.clone(),
                        mask,
                        query,
                    };
                    (owner_of(&target, self.shards), req)
                } else {
                    let Some(account) = c.account.clone() else {
                        // Private history is kept per account: none without one.
                        self.send_history(ctx, id, sub, target, Ok(Vec::new()));
                        return Flow::Next;
                    };
                    let req = Request::NickHistory {
                        nick: target.clone(),
                        account,
                        query,
                    };
                    (owner_of(&target, self.shards), req)
                };
                c.history = Some(PendingHistory { sub, targets: None });
                if self.request(ctx, id, to, req) {
                    Flow::Park
                } else {
                    Flow::Next
                }
            }
        }
    }

    fn history_refusal(&self, ctx: &mut Ctx<'_, ChatShard>, id: u64, refusal: Refusal) {
        let (code, mut params, text) = match refusal {
            Refusal::Params(context, text) => ("INVALID_PARAMS", context, text),
            Refusal::RefType(target) => (
                "INVALID_MSGREFTYPE",
                vec!["*".into(), target],
                "Only msgid= and timestamp= references are supported",
            ),
            Refusal::Target(target) => (
                "INVALID_TARGET",
                vec!["*".into(), target],
                "Messages could not be retrieved",
            ),
        };
        params.push(text.to_string());
        self.send_fail(ctx, id, code, &params);
    }

    /// `:server FAIL CHATHISTORY <code> <params…> :<last>`.
    fn send_fail(&self, ctx: &mut Ctx<'_, ChatShard>, id: u64, code: &str, params: &[String]) {
        let all: Vec<&str> = params.iter().map(String::as_str).collect();
        let (text, context) = all.split_last().unwrap_or((&"", &[]));
        self.standard_reply(ctx, id, Standard::Fail, "CHATHISTORY", code, context, text);
    }

    /// Sends a CHATHISTORY answer: a `chathistory` batch (plain lines without
    /// `batch`), or the FAIL for `result`'s error.
    pub(crate) fn send_history(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        sub: &'static str,
        target: String,
        result: Result<Vec<Message>, HistoryError>,
    ) {
        let msgs = match result {
            Ok(msgs) => msgs,
            Err(e) => {
                let (code, text) = match e {
                    HistoryError::NoAccess => ("INVALID_TARGET", "Messages could not be retrieved"),
                    HistoryError::UnknownMsgid => (
                        "MESSAGE_ERROR",
                        "Messages could not be retrieved: unknown msgid",
                    ),
                    HistoryError::Unavailable => (
                        "MESSAGE_ERROR",
                        "Messages could not be retrieved: no history",
                    ),
                };
                let params = [sub.to_string(), target, text.to_string()];
                self.send_fail(ctx, id, code, &params);
                return;
            }
        };
        let Some(c) = self.clients.get(&id).filter(|c| c.alive) else {
            return;
        };
        let caps = c.caps;
        let out = self.batched(
            caps,
            &["chathistory", &target],
            64 + msgs.len() * 160,
            |out, _, batch| {
                for m in &msgs {
                    write_history_line(out, m, caps, batch);
                }
            },
        );
        self.send_line(ctx, id, &out);
    }

    /// What `lines` writes, inside a `BATCH +ref <params>` … `BATCH -ref` for
    /// a client with the `batch` cap (`lines` gets the server name and the
    /// batch reference to tag its lines with), bare for one without.
    fn batched(
        &mut self,
        caps: Caps,
        params: &[&str],
        capacity: usize,
        lines: impl FnOnce(&mut Vec<u8>, &str, Option<&str>),
    ) -> Vec<u8> {
        let batch = caps
            .has(Caps::BATCH)
            .then(|| batch_ref(self.me, self.next_batch()));
        let server = self.info.name();
        let mut out = Vec::with_capacity(capacity);
        if let Some(b) = &batch {
            let start = format!("+{b}");
            let mut open = vec![start.as_str()];
            open.extend_from_slice(params);
            write_line(&mut out, server, "BATCH", &open, false);
        }
        lines(&mut out, server, batch.as_deref());
        if let Some(b) = &batch {
            write_line(&mut out, server, "BATCH", &[&format!("-{b}")], false);
        }
        out
    }

    /// One shard's TARGETS part came in; the answer goes out after the last.
    pub(crate) fn targets_part(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        part: Vec<TargetSummary>,
    ) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let Some(g) = c.history.as_mut().and_then(|h| h.targets.as_mut()) else {
            return;
        };
        g.found.extend(part);
        g.remaining = g.remaining.saturating_sub(1);
        if g.remaining > 0 {
            return;
        }
        let g = std::mem::take(g);
        c.history = None;
        let caps = c.caps;
        let found = select_targets(g.found, g.a, g.b, g.limit);
        let out = self.batched(
            caps,
            &["draft/chathistory-targets"],
            64 + found.len() * 80,
            |out, server, batch| {
                for t in &found {
                    if let Some(b) = batch {
                        out.extend_from_slice(format!("@batch={b} ").as_bytes());
                    }
                    let time = clock::format_server_time(t.latest);
                    write_line(
                        out,
                        server,
                        "CHATHISTORY",
                        &["TARGETS", &t.to, &time],
                        false,
                    );
                }
            },
        );
        self.send_line(ctx, id, &out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &[&str]) -> Parsed {
        parse(p, 100, 30, 50).expect("valid")
    }

    fn refused(p: &[&str]) -> Refusal {
        parse(p, 100, 30, 50).expect_err("refused").1
    }

    #[test]
    fn subcommands_and_references() {
        let t = "timestamp=2023-11-14T22:13:20.123Z";
        assert_eq!(
            ok(&["latest", "#c", "*", "10"]),
            Parsed::Query {
                sub: "LATEST",
                target: "#c".into(),
                query: HistoryQuery {
                    sub: HistorySub::Latest(None),
                    limit: 10
                }
            }
        );
        let Parsed::Query { query, .. } = ok(&["BEFORE", "bob", "msgid=abc", "500"]) else {
            panic!()
        };
        assert_eq!(query.sub, HistorySub::Before(HistRef::MsgId("abc".into())));
        assert_eq!(query.limit, 100, "cut to the maximum");
        let Parsed::Query { query, .. } = ok(&["BETWEEN", "#c", t, "msgid=x", "5"]) else {
            panic!()
        };
        assert_eq!(
            query.sub,
            HistorySub::Between(HistRef::Time(1_700_000_000_123), HistRef::MsgId("x".into()))
        );
        assert_eq!(
            ok(&["TARGETS", t, "timestamp=2023-11-14T22:13:21.000Z", "3"]),
            Parsed::Targets {
                a: 1_700_000_000_123,
                b: 1_700_000_001_000,
                limit: 3
            }
        );
    }

    #[test]
    fn refusals() {
        let params = |v: &[&str], t| Refusal::Params(v.iter().map(|s| s.to_string()).collect(), t);
        assert_eq!(refused(&["FOO", "#c"]), params(&["FOO"], "Unknown command"));
        assert_eq!(
            refused(&["LATEST", "#c", "*"]),
            params(&["LATEST"], "Insufficient parameters")
        );
        assert_eq!(
            refused(&["AFTER", "#c", "msgid=a", "1", "2"]),
            params(&["AFTER"], "Too many parameters")
        );
        assert_eq!(
            refused(&["AFTER", "#c", "msgid=a", "0"]),
            params(&["AFTER", "0"], "Invalid limit")
        );
        assert_eq!(
            refused(&["AFTER", "#c", "msgid=a", "-3"]),
            params(&["AFTER", "-3"], "Invalid limit")
        );
        assert_eq!(
            refused(&["AROUND", "#c", "timestamp=yesterday", "3"]),
            params(&["AROUND", "timestamp=yesterday"], "Invalid timestamp")
        );
        assert_eq!(
            refused(&["AROUND", "#c", "seq=3", "3"]),
            Refusal::RefType("#c".into())
        );
        assert_eq!(
            refused(&["AROUND", "#c", "12345", "3"]),
            params(&["AROUND", "12345"], "Invalid message reference")
        );
        assert_eq!(
            refused(&["BEFORE", "#c", "*", "3"]),
            params(&["BEFORE", "*"], "Invalid message reference")
        );
        assert_eq!(
            refused(&[
                "TARGETS",
                "msgid=a",
                "timestamp=2023-11-14T22:13:20.123Z",
                "3"
            ]),
            params(&["TARGETS", "msgid=a"], "Invalid timestamp")
        );
        assert_eq!(
            refused(&["LATEST", "#a,b", "*", "3"]),
            Refusal::Target("#a,b".into())
        );
        assert_eq!(
            refused(&["LATEST", "1nick", "*", "3"]),
            Refusal::Target("1nick".into())
        );
    }
}
