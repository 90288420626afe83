//! Message history (`draft/chathistory`): every CHATHISTORY subcommand against a
//! known history (exclusive bounds, order, limits, batches and tags), who may
//! read a channel's history now (`+s`, `+i`, `+k`, bans), msgids unique and
//! times non-decreasing per channel with senders on every shard, private history
//! seen from both sides (accounts through the `TESTACCOUNT` hook), the bounds,
//! one hand-over to the store per loop turn, a store whose writes fail, and the
//! data directory's errors at start; accounts registered with REGISTER survive
//! kill -9 too. Both backends, 1 and 4 shards.

mod common;

use std::{
    io,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering::SeqCst},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{
    binary::Binary, each_server_with, scrape, test_config, Client, Line, TempDir, TestServer,
    SHARD_COUNTS, WAIT,
};
use shardline::{Io, Server};
use shardline_chat::{
    clock::format_server_time,
    store::{Disk, DiskFile, RealDisk},
    BuildOptions, Config,
};

/// Every capability history uses.
const CAPS: &str = "batch server-time message-tags echo-message draft/chathistory";

fn history_config(max_request: usize) -> impl Fn(&mut Config) {
    move |c: &mut Config| {
        c.test_account_command = true;
        c.history.max_request = max_request;
    }
}

/// A registered client on `shard` with `caps`.
fn client(srv: &TestServer, shard: usize, nick: &str, caps: &str) -> Client {
    let mut c = srv.connect_on(shard);
    c.register_with_caps(nick, caps);
    c
}

/// What a CHATHISTORY command got back.
#[derive(Debug)]
enum Answer {
    /// A batch: its type and parameters, and its lines.
    Batch {
        params: Vec<String>,
        lines: Vec<Line>,
    },
    /// `FAIL CHATHISTORY <code> …`.
    Fail(Line),
}

impl Answer {
    fn batch(self, what: &str) -> (Vec<String>, Vec<Line>) {
        match self {
            Answer::Batch { params, lines } => (params, lines),
            Answer::Fail(l) => panic!("{what}: FAIL {}", l.raw),
        }
    }

    /// The lines of a `chathistory` batch for `target`.
    fn lines(self, what: &str, target: &str) -> Vec<Line> {
        let (params, lines) = self.batch(what);
        assert_eq!(params, ["chathistory", target], "{what}");
        lines
    }

    /// The texts of a `chathistory` batch for `target`.
    fn texts(self, what: &str, target: &str) -> Vec<String> {
        self.lines(what, target)
            .iter()
            .map(|l| l.last().to_string())
            .collect()
    }

    fn fail_code(self, what: &str) -> String {
        match self {
            Answer::Fail(l) => l.params[1].clone(),
            Answer::Batch { lines, .. } => panic!("{what}: a batch, not a FAIL: {lines:?}"),
        }
    }
}

/// Sends `CHATHISTORY <args>` and reads its answer (a client with `batch`).
fn chathistory(c: &mut Client, args: &str) -> Answer {
    c.send(&format!("CHATHISTORY {args}"));
    let (first, _) = c.until("BATCH + or FAIL", |l| {
        (l.is("BATCH") && l.params[0].starts_with('+'))
            || (l.is("FAIL") && l.params[0] == "CHATHISTORY")
    });
    if first.is("FAIL") {
        return Answer::Fail(first);
    }
    let id = first.params[0][1..].to_string();
    let mut lines = Vec::new();
    loop {
        let l = c.next_line();
        if l.is("BATCH") && l.params[0] == format!("-{id}") {
            break;
        }
        assert_eq!(l.tag("batch"), Some(id.as_str()), "in the batch: {}", l.raw);
        lines.push(l);
    }
    Answer::Batch {
        params: first.params[1..].to_vec(),
        lines,
    }
}

/// One message as a client saw it live.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    msgid: String,
    time: String,
    command: String,
    text: String,
}

impl Seen {
    fn of(l: &Line) -> Seen {
        Seen {
            msgid: l.tag("msgid").expect("msgid").to_string(),
            time: l.tag("time").expect("time").to_string(),
            command: l.command.clone(),
            text: l.last().to_string(),
        }
    }
}

fn seen(lines: &[Line]) -> Vec<Seen> {
    lines.iter().map(Seen::of).collect()
}

/// Reads lines until one `command` line arrives; returns it.
fn next_of(c: &mut Client, command: &str) -> Line {
    c.until(command, |l| l.is(command)).0
}

fn every_subcommand_against_a_known_history(io: Io) {
    each_server_with(io, history_config(12), |srv| {
        let label = srv.label();
        let mut a = client(srv, 0, "alice", CAPS);
        let mut b = client(srv, 1, "bob", CAPS);
        a.join("#known");
        b.join("#known");
        a.sync();
        b.sync();
        // 20 messages, the 11th a NOTICE, and a TAGMSG (not kept) after the 13th;
        // a millisecond or more apart so every time is distinct.
        let mut live = Vec::new();
        for i in 0..20 {
            let (cmd, text) = match i {
                10 => ("NOTICE", format!("n{i}")),
                _ => ("PRIVMSG", format!("m{i}")),
            };
            a.send(&format!("{cmd} #known :{text}"));
            let echo = Seen::of(&next_of(&mut a, cmd));
            let got = Seen::of(&next_of(&mut b, cmd));
            assert_eq!(
                echo, got,
                "{label}: the echo and the delivery are one message"
            );
            live.push(got);
            if i == 13 {
                a.send("@+typing=active TAGMSG #known");
                let t = next_of(&mut b, "TAGMSG");
                assert!(t.tag("msgid").is_some(), "{label}: {}", t.raw);
            }
            thread::sleep(Duration::from_millis(2));
        }
        for w in live.windows(2) {
            assert!(w[0].time < w[1].time, "{label}: {w:?}");
        }
        let text = |r: std::ops::Range<usize>| -> Vec<String> {
            r.map(|i| live[i].text.clone()).collect()
        };
        let id = |i: usize| format!("msgid={}", live[i].msgid);
        let ts = |i: usize| format!("timestamp={}", live[i].time);
        let q = |c: &mut Client, args: String| chathistory(c, &args).texts(&args, "#known");

        // The batch holds the messages as they were delivered: same tags,
        // source, command and text.
        let lines = chathistory(&mut b, "LATEST #known * 5").lines("latest", "#known");
        assert_eq!(seen(&lines), live[15..].to_vec(), "{label}");
        assert!(lines
            .iter()
            .all(|l| l.source.as_deref() == Some("alice!~alice@127.0.0.1")));
        assert_eq!(
            q(&mut b, format!("LATEST #known {} 10", id(16))),
            text(17..20)
        );
        assert_eq!(
            q(&mut b, format!("LATEST #known {} 10", ts(16))),
            text(17..20)
        );
        assert_eq!(
            q(&mut b, format!("BEFORE #known {} 3", id(10))),
            text(7..10)
        );
        assert_eq!(
            q(&mut b, format!("BEFORE #known {} 3", ts(10))),
            text(7..10)
        );
        assert_eq!(
            q(&mut b, format!("AFTER #known {} 3", id(10))),
            text(11..14)
        );
        assert_eq!(
            q(&mut b, format!("AFTER #known {} 3", ts(10))),
            text(11..14)
        );
        // AROUND: half the limit before, the rest from the reference on.
        assert_eq!(
            q(&mut b, format!("AROUND #known {} 4", id(10))),
            text(8..12)
        );
        assert_eq!(
            q(&mut b, format!("AROUND #known {} 3", ts(10))),
            text(9..12)
        );
        // BETWEEN: both ends excluded, counted from the first.
        assert_eq!(
            q(&mut b, format!("BETWEEN #known {} {} 10", id(5), id(9))),
            text(6..9)
        );
        assert_eq!(
            q(&mut b, format!("BETWEEN #known {} {} 2", id(9), id(5))),
            text(7..9)
        );
        assert_eq!(
            q(&mut b, format!("BETWEEN #known {} {} 2", ts(5), ts(9))),
            text(6..8)
        );
        assert_eq!(
            q(&mut b, format!("BETWEEN #known {} {} 2", ts(9), id(5))),
            text(7..9)
        );
        // Limits are cut to CHATHISTORY=12; before the first or after the last
        // there is nothing.
        assert_eq!(q(&mut b, "LATEST #known * 1000".into()), text(8..20));
        assert_eq!(q(&mut b, format!("BEFORE #known {} 5", id(0))), text(0..0));
        assert_eq!(q(&mut b, format!("AFTER #known {} 5", id(19))), text(0..0));
        // The channel's name as its owner knows it, whatever case was asked.
        let lines = chathistory(&mut b, "LATEST #KNOWN * 1").lines("case", "#known");
        assert_eq!(seen(&lines), live[19..].to_vec(), "{label}");
        // A channel that never had history, and one that is not there.
        b.join("#empty");
        assert!(chathistory(&mut b, "LATEST #empty * 5")
            .texts("empty", "#empty")
            .is_empty());

        // Errors.
        for (args, code) in [
            ("LATEST #known * 0", "INVALID_PARAMS"),
            ("LATEST #known *", "INVALID_PARAMS"),
            ("LATEST #known * 5 6", "INVALID_PARAMS"),
            ("SIDEWAYS #known * 5", "INVALID_PARAMS"),
            ("BEFORE #known timestamp=yesterday 5", "INVALID_PARAMS"),
            ("BEFORE #known seq=4 5", "INVALID_MSGREFTYPE"),
            ("BEFORE #known msgid=nosuchid 5", "MESSAGE_ERROR"),
            (
                "TARGETS msgid=x timestamp=2020-01-01T00:00:00.000Z 5",
                "INVALID_PARAMS",
            ),
            ("LATEST #nowhere * 5", "INVALID_TARGET"),
            ("LATEST no,nick * 5", "INVALID_TARGET"),
        ] {
            assert_eq!(
                chathistory(&mut b, args).fail_code(args),
                code,
                "{label}: {args}"
            );
        }
        b.send("CHATHISTORY");
        b.expect("461");

        // Without `batch` the lines come alone; without `message-tags` they
        // have no msgid, without `server-time` no time.
        let mut c = client(srv, 2, "carol", "server-time");
        c.send("CHATHISTORY LATEST #known * 2");
        let got = c.sync();
        assert_eq!(got.len(), 2, "{label}: {got:?}");
        for (l, want) in got.iter().zip(&live[18..]) {
            assert!(
                l.is("PRIVMSG") && l.last() == want.text,
                "{label}: {}",
                l.raw
            );
            assert_eq!(l.tag("time"), Some(want.time.as_str()));
            assert_eq!(l.tag("msgid"), None);
            assert_eq!(l.tag("batch"), None);
        }
        let mut d = srv.register_on(3, "dave");
        d.send("CHATHISTORY LATEST #known * 1");
        let got = d.sync();
        assert_eq!(got.len(), 1, "{label}: {got:?}");
        assert!(got[0].tags.is_empty(), "{label}: {}", got[0].raw);
        assert_eq!(
            got[0].raw,
            format!(":alice!~alice@127.0.0.1 PRIVMSG #known :m19")
        );
    });
}

fn a_channel_history_is_shown_only_to_who_may_read_it_now(io: Io) {
    each_server_with(io, history_config(50), |srv| {
        let label = srv.label();
        let mut a = client(srv, 0, "alice", CAPS);
        let mut b = client(srv, 1, "bob", CAPS);
        let mut e = client(srv, 2, "eve", CAPS);
        for chan in ["#pub", "#sec", "#inv", "#key", "#ban"] {
            a.join(chan);
            b.join(chan);
        }
        a.send("MODE #sec +s");
        a.send("MODE #inv +i");
        a.send("MODE #key +k sesame");
        a.send("MODE #ban +b eve!*@*");
        for chan in ["#pub", "#sec", "#inv", "#key", "#ban"] {
            a.send(&format!("PRIVMSG {chan} :said in {chan}"));
        }
        a.sync();
        b.sync();
        let read = |c: &mut Client, chan: &str| -> Option<Vec<String>> {
            match chathistory(c, &format!("LATEST {chan} * 10")) {
                Answer::Batch { lines, .. } => {
                    Some(lines.iter().map(|l| l.last().to_string()).collect())
                }
                Answer::Fail(l) => {
                    assert_eq!(l.params[1], "INVALID_TARGET", "{}", l.raw);
                    assert_eq!(l.params[3], chan, "{}", l.raw);
                    None
                }
            }
        };
        for chan in ["#pub", "#sec", "#inv", "#key", "#ban"] {
            let want = vec![format!("said in {chan}")];
            assert_eq!(
                read(&mut b, chan),
                Some(want.clone()),
                "{label}: member, {chan}"
            );
            let outsider = (chan == "#pub").then_some(want);
            assert_eq!(read(&mut e, chan), outsider, "{label}: outsider, {chan}");
        }
        // Nobody reads a channel that is not there now (its modes are unknown).
        assert_eq!(read(&mut e, "#gone"), None);
        // "Now": modes and membership as they are at the query.
        a.send("MODE #sec -s");
        a.sync();
        assert_eq!(read(&mut e, "#sec"), Some(vec!["said in #sec".to_string()]));
        b.send("PART #key");
        b.sync();
        assert_eq!(read(&mut b, "#key"), None, "{label}: left a keyed channel");
        a.send("MODE #ban -b eve!*@*");
        a.sync();
        assert_eq!(read(&mut e, "#ban"), Some(vec!["said in #ban".to_string()]));
    });
}

fn msgids_are_unique_and_times_monotonic_per_channel(io: Io) {
    each_server_with(io, history_config(1000), |srv| {
        let label = srv.label();
        let shards = srv.shards;
        let mut senders: Vec<Client> = (0..4)
            .map(|i| client(srv, i, &format!("s{i}"), "message-tags"))
            .collect();
        let mut watchers: Vec<Client> = (0..2)
            .map(|i| client(srv, i + shards - 1, &format!("w{i}"), CAPS))
            .collect();
        for c in senders.iter_mut().chain(watchers.iter_mut()) {
            c.join("#busy");
        }
        for c in senders.iter_mut().chain(watchers.iter_mut()) {
            c.sync();
        }
        // Bursts from every sender (so from every shard), interleaved.
        const EACH: usize = 50;
        for round in 0..5 {
            for (i, s) in senders.iter_mut().enumerate() {
                let burst: String = (0..EACH / 5)
                    .map(|k| format!("PRIVMSG #busy :{i}-{}\r\n", round * EACH / 5 + k))
                    .collect();
                s.send_raw(burst.as_bytes());
            }
        }
        let total = 4 * EACH;
        let mut views = Vec::new();
        for w in &mut watchers {
            let mut got = Vec::new();
            while got.len() < total {
                let l = w.next_line();
                if l.is("PRIVMSG") {
                    got.push(Seen::of(&l));
                }
            }
            views.push(got);
        }
        assert_eq!(
            views[0], views[1],
            "{label}: one msgid and time per message"
        );
        let v = &views[0];
        let mut ids: Vec<&str> = v.iter().map(|s| s.msgid.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), total, "{label}: msgids unique");
        assert!(
            v.windows(2).all(|w| w[0].time <= w[1].time),
            "{label}: times never go back in a channel"
        );
        // Each sender's messages in its order.
        for i in 0..4 {
            let mine: Vec<usize> = v
                .iter()
                .filter_map(|s| s.text.strip_prefix(&format!("{i}-")))
                .map(|n| n.parse().expect("number"))
                .collect();
            assert_eq!(mine, (0..EACH).collect::<Vec<_>>(), "{label}: sender {i}");
        }
        // The history is what was delivered, in that order.
        let hist = chathistory(&mut watchers[0], "LATEST #busy * 1000").lines("all", "#busy");
        assert_eq!(seen(&hist), *v, "{label}");
    });
}

fn login(c: &mut Client, account: &str) {
    c.send(&format!("TESTACCOUNT {account}"));
    c.sync();
}

fn private_history_is_kept_per_account_and_seen_from_both_sides(io: Io) {
    each_server_with(io, history_config(50), |srv| {
        let label = srv.label();
        let mut a = client(srv, 0, "alice", CAPS);
        let mut b = client(srv, 1, "bob", CAPS);
        let mut c = client(srv, 2, "carol", CAPS);
        let mut d = client(srv, 3, "dave", CAPS);
        // Accounts are not nicks.
        login(&mut a, "Ann");
        login(&mut b, "Ben");
        login(&mut c, "Cat");
        let start = format!("timestamp={}", format_server_time(1));
        let mut live = Vec::new();
        for (i, from) in [0, 1, 0, 1].into_iter().enumerate() {
            let cmd = if i == 2 { "NOTICE" } else { "PRIVMSG" };
            let (s, r) = if from == 0 {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            let target = r.nick.clone();
            s.send(&format!("{cmd} {target} :private {i}"));
            let echo = Seen::of(&next_of(s, cmd));
            let got = Seen::of(&next_of(r, cmd));
            assert_eq!(echo, got, "{label}");
            live.push(got);
            thread::sleep(Duration::from_millis(2));
        }
        // Not kept: with someone without an account.
        a.send("PRIVMSG dave :not kept");
        next_of(&mut d, "PRIVMSG");
        d.send("PRIVMSG alice :nor this");
        next_of(&mut a, "PRIVMSG");

        let lines = chathistory(&mut a, "LATEST bob * 10").lines("alice's", "bob");
        assert_eq!(seen(&lines), live, "{label}: alice's side");
        assert_eq!(
            lines[0].raw.split_once(' ').map(|x| x.1),
            Some(":alice!~alice@127.0.0.1 PRIVMSG bob :private 0")
        );
        let lines = chathistory(&mut b, "LATEST alice * 10").lines("bob's", "alice");
        assert_eq!(seen(&lines), live, "{label}: bob's side");
        let q = |c: &mut Client, args: &str, target: &str| chathistory(c, args).texts(args, target);
        assert_eq!(
            q(
                &mut b,
                &format!("BEFORE alice msgid={} 10", live[3].msgid),
                "alice"
            ),
            ["private 0", "private 1", "private 2"]
        );
        // Nobody else's.
        assert!(
            q(&mut c, "LATEST alice * 10", "alice").is_empty(),
            "{label}"
        );
        assert!(
            q(&mut d, "LATEST alice * 10", "alice").is_empty(),
            "{label}"
        );
        assert!(q(&mut a, "LATEST dave * 10", "dave").is_empty(), "{label}");

        // TARGETS: the conversation (by the other's account) and the channel.
        a.join("#room");
        a.send("PRIVMSG #room :in the room");
        a.sync();
        let end = format!("timestamp={}", format_server_time(4_000_000_000_000));
        let (params, lines) =
            chathistory(&mut a, &format!("TARGETS {start} {end} 10")).batch("targets");
        assert_eq!(params, ["draft/chathistory-targets"], "{label}");
        let names: Vec<&str> = lines.iter().map(|l| l.params[1].as_str()).collect();
        assert_eq!(names, ["ben", "#room"], "{label}: {lines:?}");
        assert!(lines
            .iter()
            .all(|l| l.is("CHATHISTORY") && l.params[0] == "TARGETS"));
        assert_eq!(
            lines[0].params[2], live[3].time,
            "{label}: the latest message"
        );
        // Counted from the first bound: the latest one only, backwards.
        let (_, lines) = chathistory(&mut a, &format!("TARGETS {end} {start} 1")).batch("back");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].params[1], "#room", "{label}");

        // With bob gone, his account still names the conversation.
        b.send("QUIT");
        b.until_closed();
        assert_eq!(q(&mut a, "LATEST Ben * 10", "Ben").len(), 4, "{label}");
        // Logged out: no private history.
        login(&mut a, "*");
        assert!(q(&mut a, "LATEST Ben * 10", "Ben").is_empty(), "{label}");
    });
}

fn history_bounds_hold(io: Io) {
    let configure = |c: &mut Config| {
        history_config(100)(c);
        c.history.channel_messages = 5;
        c.history.conversation_messages = 3;
        // Long enough for the first queries on a loaded machine.
        c.history.max_age_secs = 3;
    };
    each_server_with(io, configure, |srv| {
        let label = srv.label();
        let mut a = client(srv, 0, "alice", CAPS);
        let mut b = client(srv, 1, "bob", CAPS);
        login(&mut a, "alice");
        login(&mut b, "bob");
        a.join("#bounded");
        for i in 0..8 {
            a.send(&format!("PRIVMSG #bounded :c{i}"));
            a.send(&format!("PRIVMSG bob :p{i}"));
        }
        a.sync();
        let q = |c: &mut Client, args: &str, target: &str| chathistory(c, args).texts(args, target);
        assert_eq!(
            q(&mut a, "LATEST #bounded * 100", "#bounded"),
            ["c3", "c4", "c5", "c6", "c7"]
        );
        assert_eq!(
            q(&mut b, "LATEST alice * 100", "alice"),
            ["p5", "p6", "p7"],
            "{label}"
        );
        // Past the age limit, even with nothing new said (the expiry timer
        // runs every second at this limit).
        thread::sleep(Duration::from_millis(4300));
        assert!(
            q(&mut a, "LATEST #bounded * 100", "#bounded").is_empty(),
            "{label}"
        );
        assert!(
            q(&mut b, "LATEST alice * 100", "alice").is_empty(),
            "{label}"
        );
    });
}

fn history_off_means_no_store_and_no_chathistory(io: Io) {
    let off = |c: &mut Config| c.history.enabled = false;
    each_server_with(io, off, |srv| {
        let label = srv.label();
        let mut a = srv.connect();
        a.send("CAP LS 302");
        let ls = a.expect("CAP");
        assert!(
            !ls.last().contains("draft/chathistory"),
            "{label}: {}",
            ls.raw
        );
        assert!(ls.last().contains("batch"), "{label}");
        a.send("CAP REQ :draft/chathistory");
        let nak = a.expect("CAP");
        assert_eq!(nak.params[1], "NAK", "{label}");
        a.send("CAP END");
        a.nick = "alice".into();
        a.send("NICK alice");
        a.send("USER alice 0 * :A");
        let (_, burst) = a.until("end of MOTD", |l| l.is("376") || l.is("422"));
        let isupport: Vec<&str> = burst
            .iter()
            .filter(|l| l.is("005"))
            .flat_map(|l| l.params.iter().map(String::as_str))
            .collect();
        assert!(
            !isupport.iter().any(|t| t.starts_with("CHATHISTORY")),
            "{label}"
        );
        a.send("CHATHISTORY LATEST #x * 5");
        a.expect("421");
        // Messages still get their msgid and time.
        let mut b = client(srv, 1, "bob", "message-tags server-time");
        a.send("PRIVMSG bob :hi");
        let l = next_of(&mut b, "PRIVMSG");
        assert!(
            l.tag("msgid").is_some() && l.tag("time").is_some(),
            "{label}: {}",
            l.raw
        );
    });
}

fn isupport_and_caps_advertise_history(io: Io) {
    each_server_with(io, history_config(42), |srv| {
        let label = srv.label();
        let mut a = srv.connect();
        a.send("CAP LS 302");
        let ls = a.expect("CAP");
        for cap in ["batch", "draft/chathistory", "message-tags", "server-time"] {
            assert!(
                ls.last().split(' ').any(|c| c == cap),
                "{label}: {cap}: {}",
                ls.raw
            );
        }
        a.send("NICK alice");
        a.send("USER alice 0 * :A");
        a.send("CAP END");
        let (_, burst) = a.until("end of MOTD", |l| l.is("376") || l.is("422"));
        let tokens: Vec<&str> = burst
            .iter()
            .filter(|l| l.is("005"))
            .flat_map(|l| l.params.iter().map(String::as_str))
            .collect();
        assert!(tokens.contains(&"CHATHISTORY=42"), "{label}: {tokens:?}");
        assert!(tokens.contains(&"MSGREFTYPES=msgid,timestamp"), "{label}");
        // TAGMSG reaches only clients with message-tags, and its sender's echo
        // too.
        let mut t = client(srv, 1, "tagger", "message-tags echo-message");
        let mut p = client(srv, 2, "plain", "echo-message");
        t.join("#t");
        p.join("#t");
        t.send("@+typing=active TAGMSG #t");
        let echo = next_of(&mut t, "TAGMSG");
        assert_eq!(echo.tag("+typing"), Some("active"), "{label}");
        p.sync_without("TAGMSG");
        p.send("@+typing=active TAGMSG #t");
        let got = next_of(&mut t, "TAGMSG");
        assert_eq!(got.nick(), Some("plain"));
        p.sync_without("TAGMSG");
    });
}

fn the_store_gets_batches_not_a_write_per_message(io: Io) {
    for shards in SHARD_COUNTS {
        let mut config = test_config();
        config.server.admin_listen = Some("127.0.0.1:0".parse().expect("literal"));
        let srv = TestServer::start_with(io, shards, config);
        let label = srv.label();
        let admin = srv.admin_addr().expect("admin");
        let mut a = srv.register_on(0, "alice");
        a.join("#turns");
        a.sync();
        let sum = |name: &str| -> u64 {
            let s = scrape(admin, &label);
            s.iter()
                .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
                .map(|(_, v)| *v as u64)
                .sum()
        };
        let (appends0, turns0) = (
            sum("shardline_chat_history_appends_total"),
            sum("shardline_chat_history_turns_total"),
        );
        // 200 messages in one write: the owner takes them in a few loop turns.
        const N: u64 = 200;
        a.send_raw(common::numbered_privmsgs("#turns", N as usize).as_bytes());
        a.sync();
        let appends = sum("shardline_chat_history_appends_total") - appends0;
        assert_eq!(appends, N, "{label}");
        // History is handed over within one sync interval (5 ms) of its
        // first append: wait for that, boundedly.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut turns = sum("shardline_chat_history_turns_total") - turns0;
        while turns == 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            turns = sum("shardline_chat_history_turns_total") - turns0;
        }
        assert!(
            turns >= 1 && turns * 4 <= N,
            "{label}: {turns} hand-overs for {N} appends"
        );
        srv.stop();
    }
}

/// The real disk, whose writes fail while `fail` is set (`ENOSPC`).
#[derive(Debug, Default, Clone)]
struct FailingDisk {
    fail: Arc<AtomicBool>,
}

#[derive(Debug)]
struct FailingFile {
    real: Arc<dyn DiskFile>,
    fail: Arc<AtomicBool>,
}

impl DiskFile for FailingFile {
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        if self.fail.load(SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.real.write_all(buf)
    }

    fn sync(&self) -> io::Result<()> {
        self.real.sync()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.real.truncate(len)
    }
}

impl Disk for FailingDisk {
    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        Ok(Arc::new(FailingFile {
            real: RealDisk.open_append(path)?,
            fail: self.fail.clone(),
        }))
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        Ok(Arc::new(FailingFile {
            real: RealDisk.create_new(path)?,
            fail: self.fail.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealDisk.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealDisk.sync_dir(dir)
    }
}

fn a_failing_store_keeps_the_chat_serving(io: Io) {
    for shards in SHARD_COUNTS {
        let disk = FailingDisk::default();
        let mut config = test_config();
        config.server.admin_listen = Some("127.0.0.1:0".parse().expect("literal"));
        let options = BuildOptions {
            disk: Some(Arc::new(disk.clone())),
            ..BuildOptions::default()
        };
        let srv = TestServer::start_with_options(io, shards, config, options);
        let label = srv.label();
        let admin = srv.admin_addr().expect("admin");
        let mut a = client(&srv, 0, "alice", CAPS);
        let mut b = client(&srv, 1, "bob", CAPS);
        a.join("#full");
        b.join("#full");
        a.send("PRIVMSG #full :stored");
        next_of(&mut b, "PRIVMSG");
        // The disk fills up.
        disk.fail.store(true, SeqCst);
        for i in 0..20 {
            a.send(&format!("PRIVMSG #full :not stored {i}"));
            assert_eq!(next_of(&mut b, "PRIVMSG").last(), format!("not stored {i}"));
        }
        // Counted (the writer fails on its own thread, a moment later)…
        let deadline = Instant::now() + WAIT;
        let (errors, dropped) = loop {
            let s = scrape(admin, &label);
            let sum = |name: &str| -> u64 {
                s.iter()
                    .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
                    .map(|(_, v)| *v as u64)
                    .sum()
            };
            let got = (
                sum("shardline_chat_store_write_errors_total"),
                sum("shardline_chat_store_records_dropped_total"),
            );
            if got.0 > 0 && got.1 > 0 {
                break got;
            }
            assert!(
                Instant::now() < deadline,
                "{label}: no write error counted: {got:?}"
            );
            thread::sleep(Duration::from_millis(20));
        };
        assert!(errors >= 1 && dropped >= 1, "{label}");
        // …and the chat goes on, history answered from memory.
        let texts = chathistory(&mut b, "LATEST #full * 3").texts("memory", "#full");
        assert_eq!(
            texts,
            ["not stored 17", "not stored 18", "not stored 19"],
            "{label}"
        );
        b.send("PRIVMSG #full :still here");
        a.until("bob's line", |l| {
            l.is("PRIVMSG") && l.last() == "still here"
        });
        // Room again: writes go on.
        disk.fail.store(false, SeqCst);
        a.send("PRIVMSG #full :stored again");
        next_of(&mut b, "PRIVMSG");
        a.sync();
        srv.stop();
    }
}

fn builder(io: Io) -> shardline::ServerBuilder {
    Server::builder()
        .io(io)
        .shards(2)
        .pin(false)
        .listen("127.0.0.1:0".parse().expect("literal"))
}

fn a_bad_data_directory_is_a_clear_error_at_start(io: Io) {
    let tmp = TempDir::new("bad-data");
    let with_dir = |dir: &Path| {
        let mut c = test_config();
        c.storage.dir = Some(dir.to_path_buf());
        c
    };
    // A file where the directory should be.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let err = shardline_chat::build(builder(io), with_dir(&file))
        .expect_err("a file is no data directory")
        .to_string();
    assert!(
        err.contains("create data directory") && err.contains("a-file"),
        "{io}: {err}"
    );
    // In use by another server.
    let dir = tmp.path().join("data");
    let first = shardline_chat::build(builder(io), with_dir(&dir)).expect("builds");
    let err = shardline_chat::build(builder(io), with_dir(&dir))
        .expect_err("locked")
        .to_string();
    assert!(err.contains("is in use by process"), "{io}: {err}");
    drop(first);
    // A damaged log: the shard that owns it cannot start, and says which file.
    let running = shardline_chat::build(builder(io), with_dir(&dir))
        .expect("builds")
        .start()
        .expect("starts");
    running.shutdown().expect("stops");
    std::fs::write(dir.join("p07.log"), b"SLCHATST but not a header").expect("write");
    let err = shardline_chat::build(builder(io), with_dir(&dir))
        .expect("builds")
        .start()
        .expect_err("a damaged store")
        .to_string();
    assert!(
        err.contains("p07.log") && err.contains("shard 1"),
        "{io}: {err}"
    );
    // The directory is free again afterwards.
    shardline_chat::build(builder(io), with_dir(&tmp.path().join("other")))
        .expect("builds")
        .start()
        .expect("starts")
        .shutdown()
        .expect("stops");
    drop(shardline_chat::build(builder(io), with_dir(&dir)).expect("unlocked after the failure"));
}

/// The texts of a channel's whole history, with their msgids.
fn whole_history(c: &mut Client, chan: &str) -> Vec<Seen> {
    seen(&chathistory(c, &format!("LATEST {chan} * 1000")).lines("whole", chan))
}

/// `kill -9` under traffic, then a restart with another shard count: every
/// message acknowledged (echoed) well before the kill is there, in order; a
/// graceful stop and a restart with yet another count lose nothing.
fn history_survives_kill_9_and_restarts_with_other_shard_counts(io: Io) {
    const CHANS: [&str; 3] = ["#r0", "#r1", "#r2"];
    // What `kill -9` may lose is only what the shard had not handed to its
    // writer thread yet, or the writer had not written: a few milliseconds.
    // Checked with a wide margin for loaded machines.
    const WINDOW: Duration = Duration::from_millis(500);
    let tmp = TempDir::new("restart");
    let data = tmp.path().join("data");
    let config = tmp.path().join("chat.toml");
    std::fs::write(
        &config,
        "[flood]\nenabled = false\n[history]\nmax_request = 1000\nchannel_messages = 5000\n",
    )
    .expect("write config");

    // Run 1, four shards: some messages, then traffic and kill -9.
    let run = Binary::start_with_data(io, 4, &config, &data);
    let label = run.label.clone();
    let mut a = run.client("alice", CAPS);
    for chan in CHANS {
        a.join(chan);
    }
    let mut sent: Vec<(usize, String, Instant)> = Vec::new();
    let mut n = 0;
    let mut say = |a: &mut Client, sent: &mut Vec<(usize, String, Instant)>, wait: bool| {
        let chan = n % CHANS.len();
        let text = format!("message {n}");
        a.send(&format!("PRIVMSG {} :{text}", CHANS[chan]));
        n += 1;
        if wait {
            let t = text.clone();
            a.until("the echo", move |l| l.is("PRIVMSG") && l.last() == t);
        }
        sent.push((chan, text, Instant::now()));
    };
    for _ in 0..60 {
        say(&mut a, &mut sent, true);
    }
    let traffic = Instant::now();
    while traffic.elapsed() < WINDOW * 3 && sent.len() < 1500 {
        say(&mut a, &mut sent, true);
        thread::sleep(Duration::from_micros(500));
    }
    // The last ones are still on their way when it dies.
    for _ in 0..50 {
        say(&mut a, &mut sent, false);
    }
    let killed = Instant::now();
    run.kill9();
    let durable: Vec<&(usize, String, Instant)> = sent
        .iter()
        .filter(|(_, _, acked)| killed.duration_since(*acked) > WINDOW)
        .collect();
    assert!(
        durable.len() > 100,
        "{label}: only {} messages to check",
        durable.len()
    );

    // Run 2, two shards (each now owns the partitions of two).
    let run = Binary::start_with_data(io, 2, &config, &data);
    let mut b = run.client("bob", CAPS);
    let mut before = Vec::new();
    for (i, chan) in CHANS.iter().enumerate() {
        b.join(chan);
        let h = whole_history(&mut b, chan);
        let texts: Vec<&str> = h.iter().map(|s| s.text.as_str()).collect();
        let want: Vec<&str> = durable
            .iter()
            .filter(|(c, _, _)| *c == i)
            .map(|(_, t, _)| t.as_str())
            .collect();
        // Everything old enough, and in order.
        assert_eq!(
            &texts[..want.len()],
            &want[..],
            "{label}: {chan} after kill -9"
        );
        let nums: Vec<usize> = texts
            .iter()
            .map(|t| t["message ".len()..].parse().expect("number"))
            .collect();
        assert!(
            nums.windows(2).all(|w| w[0] < w[1]),
            "{label}: {chan} in order"
        );
        assert!(
            h.windows(2).all(|w| w[0].time <= w[1].time),
            "{label}: times"
        );
        before.push(h);
    }
    // New messages after the restart: msgids never reused.
    for chan in CHANS {
        for k in 0..10 {
            b.send(&format!("PRIVMSG {chan} :after {k}"));
        }
    }
    b.sync();
    let mut now = Vec::new();
    for chan in CHANS {
        now.push(whole_history(&mut b, chan));
    }
    let log = run.stop();
    let closed = log
        .iter()
        .filter(|l| l.contains("history store closed and synced"))
        .count();
    assert_eq!(
        closed,
        2,
        "{label}: every shard closed its store:\n{}",
        log.join("\n")
    );
    let mut ids: Vec<&str> = now.iter().flatten().map(|s| s.msgid.as_str()).collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        count,
        "{label}: msgids unique across the restart"
    );

    // Run 3, three shards (not a divisor of 64): a graceful stop lost nothing.
    let run = Binary::start_with_data(io, 3, &config, &data);
    let mut c = run.client("carol", CAPS);
    for (i, chan) in CHANS.iter().enumerate() {
        c.join(chan);
        let h = whole_history(&mut c, chan);
        assert_eq!(h, now[i], "{label}: {chan} after a graceful stop");
        assert_eq!(h[..before[i].len()], before[i][..], "{label}: {chan}");
    }
    run.stop();
}

/// SASL PLAIN as `account`: true on 903, false on 904.
fn plain_login(c: &mut Client, account: &str, password: &str) -> bool {
    use base64::Engine;
    c.send("AUTHENTICATE PLAIN");
    let l = c.expect("AUTHENTICATE");
    assert_eq!(l.params, ["+"], "{}", l.raw);
    let payload = format!("\0{account}\0{password}");
    c.send(&format!(
        "AUTHENTICATE {}",
        base64::engine::general_purpose::STANDARD.encode(payload)
    ));
    let (end, _) = c.until("903 or 904", |l| l.is("903") || l.is("904"));
    end.is("903")
}

/// Accounts registered with `REGISTER` under traffic, `kill -9` as soon as
/// the last `REGISTER SUCCESS` came: after a restart with another shard count
/// every one of them is there and logs in with SASL, and the offline tool
/// lists them all after a graceful stop.
fn accounts_survive_kill_9_and_restarts_with_other_shard_counts(io: Io) {
    const ACCOUNTS: usize = 6;
    let tmp = TempDir::new("accounts");
    let data = tmp.path().join("data");
    let config = tmp.path().join("chat.toml");
    std::fs::write(
        &config,
        "[flood]\nenabled = false\n[accounts]\nregistration = \"open\"\nhash_threads = 2\n",
    )
    .expect("write config");
    let password = |i: usize| format!("password number {i}");

    // Run 1, four shards: channel traffic from another thread meanwhile.
    let run = Binary::start_with_data(io, 4, &config, &data);
    let label = run.label.clone();
    let mut talker = Client::connect_to(run.addr, &label);
    talker.register("talker");
    talker.join("#busy");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let mut out = talker.try_clone_stream();
        thread::spawn(move || {
            use std::io::Write;
            let mut n = 0u64;
            while !stop.load(SeqCst) {
                if out
                    .write_all(format!("PRIVMSG #busy :traffic {n}\r\n").as_bytes())
                    .is_err()
                {
                    return n;
                }
                n += 1;
                thread::sleep(Duration::from_micros(200));
            }
            n
        })
    };
    let mut clients: Vec<Client> = (0..ACCOUNTS)
        .map(|i| {
            let mut c = Client::connect_to(run.addr, &label);
            c.nick = format!("acct{i}");
            c.send(&format!("NICK acct{i}"));
            c.send(&format!("REGISTER * * :{}", password(i)));
            c
        })
        .collect();
    // Real-cost hashes (argon2 and 600,000 PBKDF2 rounds, unoptimized in
    // debug builds) on a loaded machine: longer than one `WAIT` in all.
    let deadline = Instant::now() + WAIT * 6;
    for c in &mut clients {
        let mut seen = Vec::new();
        let l = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match c.next_line_within(left) {
                Some(l) if l.is("REGISTER") || l.is("FAIL") => break l,
                Some(l) => seen.push(l),
                None => panic!("{label}: {}: no REGISTER answer; got {seen:?}", c.nick),
            }
        };
        assert!(
            l.is("REGISTER") && l.params[0] == "SUCCESS",
            "{label}: {}: {l:?} after {seen:?}",
            c.nick
        );
    }
    run.kill9();
    stop.store(true, SeqCst);
    let sent = traffic.join().expect("traffic thread");
    assert!(sent > 0, "{label}: traffic was flowing");

    // Run 2, two shards: every account logs in (on whatever shard).
    let run = Binary::start_with_data(io, 2, &config, &data);
    for i in 0..ACCOUNTS {
        let mut c = Client::connect_to(run.addr, &label);
        c.send("CAP REQ :sasl");
        c.expect("CAP");
        assert!(
            !plain_login(&mut c, &format!("acct{i}"), "not the password"),
            "{label}: the wrong password still fails"
        );
        assert!(
            plain_login(&mut c, &format!("ACCT{i}"), &password(i)),
            "{label}: account acct{i} after kill -9"
        );
    }
    run.stop();

    // The offline tool sees them all.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardline-chat"))
        .arg("--data-dir")
        .arg(&data)
        .args(["account", "list"])
        .output()
        .expect("account list");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{label}: {text}");
    for i in 0..ACCOUNTS {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("acct{i} "))),
            "{label}: acct{i} listed: {text}"
        );
    }
    assert!(
        text.ends_with(&format!("{ACCOUNTS} accounts\n")),
        "{label}: {text}"
    );
}

shardline::per_backend! {
    history_survives_kill_9_and_restarts_with_other_shard_counts => history_survives_kill_9_and_restarts_with_other_shard_counts;
    accounts_survive_kill_9_and_restarts_with_other_shard_counts => accounts_survive_kill_9_and_restarts_with_other_shard_counts;
    every_subcommand_against_a_known_history => every_subcommand_against_a_known_history;
    a_channel_history_is_shown_only_to_who_may_read_it_now => a_channel_history_is_shown_only_to_who_may_read_it_now;
    msgids_are_unique_and_times_monotonic_per_channel => msgids_are_unique_and_times_monotonic_per_channel;
    private_history_is_kept_per_account_and_seen_from_both_sides => private_history_is_kept_per_account_and_seen_from_both_sides;
    history_bounds_hold => history_bounds_hold;
    history_off_means_no_store_and_no_chathistory => history_off_means_no_store_and_no_chathistory;
    isupport_and_caps_advertise_history => isupport_and_caps_advertise_history;
    the_store_gets_batches_not_a_write_per_message => the_store_gets_batches_not_a_write_per_message;
    a_failing_store_keeps_the_chat_serving => a_failing_store_keeps_the_chat_serving;
    a_bad_data_directory_is_a_clear_error_at_start => a_bad_data_directory_is_a_clear_error_at_start;
}
