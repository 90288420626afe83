//! IRCv3 MONITOR, labeled-response and standard replies, over raw TCP:
//! MONITOR's `+`, `-`, `C`, `L` and `S` with the nicks held on other shards
//! than the watcher's; 730/731 as nicks come online and go (registration,
//! NICK, QUIT, a dropped connection); the per-client limit (734, `MONITOR=` in
//! 005, off at 0) and the per-shard total; clean-up when a watcher leaves.
//! Labeled responses: one line, a batch, ACK, a cross-shard WHOIS,
//! echo-message, unrelated traffic kept outside. Both backends, 1 and 4 shards.

mod common;

use std::time::{Duration, Instant};

use common::{each_server, each_server_with, scrape, Client, Line, TestServer, WAIT};
use shardline::Io;
use shardline_chat::casemap::owner_of;

/// The lines a command answers with (up to a PING's PONG).
fn answer(c: &mut Client, command: &str) -> Vec<Line> {
    c.send(command);
    c.sync()
}

/// The nicks listed by the `code` lines among `lines` (comma-separated last
/// parameter), in order.
fn listed(lines: &[Line], code: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.is(code))
        .flat_map(|l| l.last().split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Reads until a `code` line listing `nick` arrives; fails on any other
/// MONITOR numeric meanwhile.
fn expect_mon(c: &mut Client, code: &str, nick: &str) {
    let (l, before) = c.until(&format!("{code} {nick}"), |l| l.is("730") || l.is("731"));
    assert!(
        l.is(code) && l.last() == nick,
        "expected {code} {nick}, got {} after {before:?}",
        l.raw
    );
}

fn monitor_across_shards(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut bob = srv.register_on(1, "Bob");
        let mut alice = srv.register_on(0, "alice");
        // Online (held on another shard at 4 shards) and offline targets;
        // each state exactly once.
        let lines = answer(&mut alice, "MONITOR + bob,carol,Dave");
        assert_eq!(listed(&lines, "730"), ["Bob"], "{label}: {lines:?}");
        assert_eq!(
            sorted(listed(&lines, "731")),
            ["Dave", "carol"],
            "{label}: {lines:?}"
        );
        assert!(
            lines.iter().all(|l| l.is("730") || l.is("731")),
            "{label}: {lines:?}"
        );
        // Asked again: its state again, not a second entry.
        let lines = answer(&mut alice, "MONITOR + BOB");
        assert_eq!(listed(&lines, "730"), ["Bob"], "{label}: {lines:?}");
        let lines = answer(&mut alice, "MONITOR L");
        assert_eq!(listed(&lines, "732"), ["bob", "carol", "Dave"], "{label}");
        assert!(lines.last().unwrap().is("733"), "{label}: {lines:?}");

        // carol registers on a third shard, changes nick, comes back.
        let mut carol = srv.register_on(2, "carol");
        expect_mon(&mut alice, "730", "carol");
        carol.send("NICK carla");
        carol.expect("NICK");
        expect_mon(&mut alice, "731", "carol");
        carol.send("NICK Carol");
        carol.expect("NICK");
        expect_mon(&mut alice, "730", "Carol");

        // dave: QUIT, then a dropped connection.
        let mut dave = srv.register_on(3, "dave");
        expect_mon(&mut alice, "730", "dave");
        dave.send("QUIT :bye");
        dave.until_closed();
        expect_mon(&mut alice, "731", "dave");
        let dave = srv.register_on(3, "Dave");
        expect_mon(&mut alice, "730", "Dave");
        drop(dave);
        expect_mon(&mut alice, "731", "Dave");

        // S answers from the owners.
        let lines = answer(&mut alice, "MONITOR S");
        assert_eq!(
            sorted(listed(&lines, "730")),
            ["Bob", "Carol"],
            "{label}: {lines:?}"
        );
        assert_eq!(listed(&lines, "731"), ["Dave"], "{label}: {lines:?}");

        // - : no output, and no more notices about it.
        let lines = answer(&mut alice, "MONITOR - carol");
        assert!(lines.is_empty(), "{label}: {lines:?}");
        carol.send("QUIT");
        carol.until_closed();
        // C: nothing listed, nothing notified.
        let lines = answer(&mut alice, "MONITOR C");
        assert!(lines.is_empty(), "{label}: {lines:?}");
        bob.send("NICK robert");
        bob.expect("NICK");
        bob.sync();
        let lines = answer(&mut alice, "MONITOR L");
        assert_eq!(lines.len(), 1, "{label}: {lines:?}");
        assert!(lines[0].is("733"), "{label}: {lines:?}");
        let lines = alice.sync();
        assert!(lines.is_empty(), "{label}: stale notices {lines:?}");

        // A client with no list: L and S answer with an empty list.
        let lines = answer(&mut bob, "MONITOR S");
        assert!(lines.is_empty(), "{label}: {lines:?}");
    });
}

fn monitor_bad_input(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut a = srv.register_on(0, "alice");
        let lines = answer(&mut a, "MONITOR");
        assert!(lines[0].is("461"), "{label}: {lines:?}");
        let lines = answer(&mut a, "MONITOR +");
        assert!(lines[0].is("461"), "{label}: {lines:?}");
        let lines = answer(&mut a, "MONITOR X nick");
        assert!(lines[0].is("400"), "{label}: {lines:?}");
        let lines = answer(&mut a, "MONITOR + 1bad,ok,#chan,,ok");
        let bad: Vec<&str> = lines
            .iter()
            .filter(|l| l.is("432"))
            .map(|l| l.params[1].as_str())
            .collect();
        assert_eq!(bad, ["1bad", "#chan"], "{label}: {lines:?}");
        assert_eq!(listed(&lines, "731"), ["ok"], "{label}: {lines:?}");
        let lines = answer(&mut a, "MONITOR L");
        assert_eq!(listed(&lines, "732"), ["ok"], "{label}: {lines:?}");
        // Before registration: 451, like every other command.
        let mut b = srv.connect();
        let lines = answer(&mut b, "MONITOR + alice");
        assert!(lines[0].is("451"), "{label}: {lines:?}");
    });
}

fn monitor_limits(io: Io) {
    each_server_with(
        io,
        |c| c.limits.monitor = 3,
        |srv| {
            let label = srv.label();
            let mut a = srv.connect_on(1);
            a.send("NICK alice");
            a.send("USER alice 0 * :A");
            let (_, burst) = a.until("end of MOTD", |l| l.is("376") || l.is("422"));
            assert!(
                burst
                    .iter()
                    .any(|l| l.is("005") && l.params.iter().any(|p| p == "MONITOR=3")),
                "{label}: {burst:?}"
            );
            let lines = answer(&mut a, "MONITOR + n1,n2,n3,n4,n5");
            let full: Vec<&Line> = lines.iter().filter(|l| l.is("734")).collect();
            assert_eq!(full.len(), 1, "{label}: {lines:?}");
            assert_eq!(
                full[0].params[1..],
                ["3", "n4,n5", "Monitor list is full."],
                "{label}"
            );
            assert_eq!(sorted(listed(&lines, "731")), ["n1", "n2", "n3"], "{label}");
            let lines = answer(&mut a, "MONITOR L");
            assert_eq!(listed(&lines, "732"), ["n1", "n2", "n3"], "{label}");
            // Full: nothing more, but one already listed may be asked again.
            let lines = answer(&mut a, "MONITOR + N2,n6");
            assert_eq!(listed(&lines, "731"), ["N2"], "{label}: {lines:?}");
            assert!(
                lines.iter().any(|l| l.is("734") && l.params[2] == "n6"),
                "{label}"
            );
            answer(&mut a, "MONITOR - n1");
            let lines = answer(&mut a, "MONITOR + n6");
            assert_eq!(listed(&lines, "731"), ["n6"], "{label}: {lines:?}");
            let lines = answer(&mut a, "MONITOR L");
            assert_eq!(listed(&lines, "732"), ["n2", "n3", "n6"], "{label}");
            // n4 never made it in: no notice when it comes.
            let _n4 = srv.register_on(0, "n4");
            let mut n6 = srv.register_on(2, "n6");
            expect_mon(&mut a, "730", "n6");
            n6.sync();
            let lines = a.sync();
            assert!(!lines.iter().any(|l| l.is("730")), "{label}: {lines:?}");
        },
    );
    each_server_with(
        io,
        |c| c.limits.monitor = 0,
        |srv| {
            let label = srv.label();
            let mut a = srv.connect();
            a.send("NICK alice");
            a.send("USER alice 0 * :A");
            let (_, burst) = a.until("end of MOTD", |l| l.is("376") || l.is("422"));
            assert!(
                !burst
                    .iter()
                    .any(|l| l.is("005") && l.params.iter().any(|p| p.starts_with("MONITOR"))),
                "{label}: {burst:?}"
            );
            let lines = answer(&mut a, "MONITOR + bob");
            assert!(lines[0].is("421"), "{label}: {lines:?}");
        },
    );
}

/// Nicks `prefix0`, `prefix1`, … owned by shard 0 of `srv`.
fn owned_by_first(srv: &TestServer, prefix: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|nick| owner_of(nick, srv.shards) == 0)
        .take(n)
        .collect()
}

/// MONITOR entries all shards keep (`/metrics`).
fn watches(srv: &TestServer) -> f64 {
    let admin = srv.admin_addr().expect("admin_listen set");
    scrape(admin, &srv.label())
        .iter()
        .filter(|(k, _)| k.starts_with("shardline_chat_monitor_watches"))
        .map(|(_, v)| v)
        .sum()
}

fn monitor_shard_total_and_cleanup(io: Io) {
    each_server_with(
        io,
        |c| {
            c.limits.monitor_shard_total = 2;
            c.server.admin_listen = Some("127.0.0.1:0".parse().expect("literal"));
        },
        |srv| {
            let label = srv.label();
            let nicks = owned_by_first(srv, "w", 3);
            let mut w1 = srv.register_on(1, "watcher");
            let lines = answer(&mut w1, &format!("MONITOR + {},{}", nicks[0], nicks[1]));
            assert_eq!(listed(&lines, "731"), nicks[..2], "{label}: {lines:?}");
            assert_eq!(watches(srv), 2.0, "{label}");
            // The owner holds two pairs: a third is refused, and not listed.
            let mut w2 = srv.register_on(2, "other");
            let lines = answer(&mut w2, &format!("MONITOR + {}", nicks[2]));
            let full: Vec<&Line> = lines.iter().filter(|l| l.is("734")).collect();
            assert_eq!(full.len(), 1, "{label}: {lines:?}");
            assert_eq!(full[0].params[2], nicks[2], "{label}");
            assert!(listed(&lines, "731").is_empty(), "{label}: {lines:?}");
            let lines = answer(&mut w2, "MONITOR L");
            assert!(listed(&lines, "732").is_empty(), "{label}: {lines:?}");
            assert_eq!(watches(srv), 2.0, "{label}");
            // The watcher leaves: the owner forgets its pairs, room again.
            drop(w1);
            let deadline = Instant::now() + WAIT;
            loop {
                let lines = answer(&mut w2, &format!("MONITOR + {}", nicks[2]));
                if listed(&lines, "731") == [nicks[2].clone()] {
                    break;
                }
                assert!(Instant::now() < deadline, "{label}: never cleaned up");
                std::thread::sleep(Duration::from_millis(20));
            }
            // Only w2's entry is left.
            assert_eq!(watches(srv), 1.0, "{label}");
            answer(&mut w2, "MONITOR C");
            assert_eq!(watches(srv), 0.0, "{label}");
            // A new client with the same nick starts with nothing.
            let deadline = Instant::now() + WAIT;
            while answer(&mut w2, "ISON watcher")
                .iter()
                .any(|l| l.last() == "watcher")
            {
                assert!(Instant::now() < deadline, "{label}: nick never released");
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut w1 = srv.register_on(1, "watcher");
            let _n = srv.register_on(3, &nicks[0]);
            let lines = answer(&mut w1, "MONITOR L");
            assert!(listed(&lines, "732").is_empty(), "{label}: {lines:?}");
            let lines = w1.sync();
            assert!(lines.is_empty(), "{label}: stale: {lines:?}");
        },
    );
}

/// Reads the response to a labelled command: the lines up to the single
/// labelled line, the `ACK`, or the end of the labelled batch. Returns the
/// response (for a batch: its lines, opening and closing included) and the
/// other lines read meanwhile.
fn labelled(c: &mut Client, label: &str) -> (Vec<Line>, Vec<Line>) {
    let (first, others) = c.until(&format!("label {label}"), |l| l.tag("label") == Some(label));
    assert!(
        others
            .iter()
            .all(|l| l.tag("label").is_none() && l.tag("batch").is_none()),
        "{others:?}"
    );
    if !first.is("BATCH") {
        return (vec![first], others);
    }
    assert_eq!(first.params.len(), 2, "{}", first.raw);
    assert_eq!(first.params[1], "labeled-response", "{}", first.raw);
    let reference = first.params[0]
        .strip_prefix('+')
        .expect("BATCH +ref")
        .to_string();
    let end = format!("-{reference}");
    let mut others = others;
    let mut resp = vec![first];
    loop {
        let l = c.next_line();
        if l.is("BATCH") && l.params[0] == end {
            assert!(l.tag("label").is_none(), "{}", l.raw);
            resp.push(l);
            return (resp, others);
        }
        if l.tag("batch") == Some(reference.as_str()) {
            assert!(l.tag("label").is_none(), "{}", l.raw);
            resp.push(l);
        } else {
            assert!(l.tag("label").is_none(), "{}", l.raw);
            others.push(l);
        }
    }
}

/// The commands of a batched response's content (without BATCH + and -).
fn inner(resp: &[Line]) -> Vec<String> {
    assert!(resp.len() >= 2, "{resp:?}");
    resp[1..resp.len() - 1]
        .iter()
        .map(|l| l.command.clone())
        .collect()
}

const LABEL_CAPS: &str = "batch labeled-response echo-message setname";

fn labelled_responses(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut bob = srv.register_on(1, "bob");
        let mut a = srv.connect_on(0);
        a.register_with_caps("alice", LABEL_CAPS);

        // One line: labelled, no batch.
        a.send("@label=one TIME");
        let (resp, _) = labelled(&mut a, "one");
        assert_eq!(resp.len(), 1, "{label}: {resp:?}");
        assert!(
            resp[0].is("391") && resp[0].tag("batch").is_none(),
            "{label}"
        );
        // Several: a labeled-response batch.
        a.send("@label=two LINKS");
        let (resp, _) = labelled(&mut a, "two");
        assert_eq!(inner(&resp), ["364", "365"], "{label}: {resp:?}");
        // None: ACK.
        a.send("@label=three PONG :x");
        let (resp, _) = labelled(&mut a, "three");
        assert!(
            resp[0].is("ACK") && resp[0].params.is_empty(),
            "{label}: {resp:?}"
        );
        assert_eq!(resp[0].source.as_deref(), Some("irc.test"), "{label}");
        // Errors are responses too; the value comes back as sent (escaped).
        a.send("@label=a\\sb\\:c FOO");
        let (resp, _) = labelled(&mut a, "a b;c");
        assert!(resp[0].is("421"), "{label}: {resp:?}");
        assert!(
            resp[0].raw.starts_with("@label=a\\sb\\:c "),
            "{label}: {}",
            resp[0].raw
        );

        // Across shards: WHOIS of a user held elsewhere.
        a.send("@label=w WHOIS bob");
        let (resp, _) = labelled(&mut a, "w");
        let cmds = inner(&resp);
        assert_eq!(
            cmds.first().map(String::as_str),
            Some("311"),
            "{label}: {resp:?}"
        );
        assert_eq!(
            cmds.last().map(String::as_str),
            Some("318"),
            "{label}: {resp:?}"
        );
        // JOIN: its own JOIN line (from the channel's owner) and the names.
        a.send("@label=j JOIN #lab");
        let (resp, _) = labelled(&mut a, "j");
        assert_eq!(inner(&resp), ["JOIN", "353", "366"], "{label}: {resp:?}");
        bob.join("#lab");
        a.expect("JOIN");
        // echo-message: the echo is the response.
        a.send("@label=e PRIVMSG #lab :hello");
        let (resp, _) = labelled(&mut a, "e");
        assert_eq!(resp.len(), 1, "{label}: {resp:?}");
        assert!(
            resp[0].is("PRIVMSG") && resp[0].last() == "hello",
            "{label}"
        );
        assert_eq!(bob.expect("PRIVMSG").tag("label"), None, "{label}");
        // To itself: the echo is labelled, the delivered copy is not.
        a.send("@label=me PRIVMSG alice :self");
        let (resp, others) = labelled(&mut a, "me");
        assert!(
            resp.len() == 1 && resp[0].is("PRIVMSG"),
            "{label}: {resp:?}"
        );
        let mut copies: Vec<Line> = others.into_iter().filter(|l| l.is("PRIVMSG")).collect();
        copies.extend(a.sync().into_iter().filter(|l| l.is("PRIVMSG")));
        assert_eq!(copies.len(), 1, "{label}: {copies:?}");
        assert_eq!(copies[0].tag("label"), None, "{label}");
        // SETNAME: its echo, or its FAIL (a standard reply).
        a.send("@label=s SETNAME :Alice Example");
        let (resp, _) = labelled(&mut a, "s");
        assert!(
            resp.len() == 1 && resp[0].is("SETNAME"),
            "{label}: {resp:?}"
        );
        assert_eq!(resp[0].last(), "Alice Example", "{label}");
        a.send("@label=s2 SETNAME :");
        let (resp, _) = labelled(&mut a, "s2");
        assert!(resp.len() == 1 && resp[0].is("FAIL"), "{label}: {resp:?}");
        assert_eq!(
            resp[0].params[..2],
            ["SETNAME", "INVALID_REALNAME"],
            "{label}"
        );
        // Standard replies are responses like any other.
        a.send("@label=f CHATHISTORY LATEST #nowhere * 10");
        let (resp, _) = labelled(&mut a, "f");
        assert_eq!(resp.len(), 1, "{label}: {resp:?}");
        assert!(resp[0].is("FAIL"), "{label}: {resp:?}");
        assert_eq!(
            resp[0].params,
            [
                "CHATHISTORY",
                "INVALID_TARGET",
                "LATEST",
                "#nowhere",
                "Messages could not be retrieved"
            ],
            "{label}"
        );
        // A batch of its own (chathistory) nests inside the labelled one.
        a.send("@label=h CHATHISTORY LATEST #lab * 10");
        let open = a.expect("BATCH");
        assert_eq!(open.tag("label"), Some("h"), "{label}: {}", open.raw);
        let outer = open.params[0].trim_start_matches('+').to_string();
        let inner_open = a.next_line();
        assert!(inner_open.is("BATCH"), "{label}: {}", inner_open.raw);
        assert_eq!(inner_open.tag("batch"), Some(outer.as_str()), "{label}");
        assert_eq!(inner_open.params[1], "chathistory", "{label}");
        let hist = inner_open.params[0].trim_start_matches('+').to_string();
        let msg = a.next_line();
        assert!(
            msg.is("PRIVMSG") && msg.last() == "hello",
            "{label}: {}",
            msg.raw
        );
        assert_eq!(msg.tag("batch"), Some(hist.as_str()), "{label}");
        let inner_close = a.next_line();
        assert_eq!(inner_close.params[0], format!("-{hist}"), "{label}");
        assert_eq!(inner_close.tag("batch"), Some(outer.as_str()), "{label}");
        let close = a.next_line();
        assert_eq!(
            close.params[0],
            format!("-{outer}"),
            "{label}: {}",
            close.raw
        );
        // MONITOR: the owners' answers are the response.
        a.send("@label=m MONITOR + bob,nobody");
        let (resp, _) = labelled(&mut a, "m");
        let mut cmds = inner(&resp);
        cmds.sort();
        assert_eq!(cmds, ["730", "731"], "{label}: {resp:?}");

        // A label over 64 bytes is ignored: the command runs unlabelled.
        let long = "x".repeat(65);
        let lines = answer(&mut a, &format!("@label={long} TIME"));
        assert_eq!(lines.len(), 1, "{label}: {lines:?}");
        assert!(
            lines[0].is("391") && lines[0].tag("label").is_none(),
            "{label}"
        );
        let max = "y".repeat(64);
        a.send(&format!("@label={max} TIME"));
        let (resp, _) = labelled(&mut a, &max);
        assert!(resp[0].is("391"), "{label}");
        // Without the cap: no label, no ACK.
        let lines = answer(&mut bob, "@label=z TIME");
        assert_eq!(lines.len(), 1, "{label}: {lines:?}");
        assert!(lines[0].tag("label").is_none(), "{label}");
        let lines = answer(&mut bob, "@label=z PONG :x");
        assert!(lines.is_empty(), "{label}: {lines:?}");
    });
}

fn labelled_response_excludes_other_traffic(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let _bob = srv.register_on(1, "bob");
        let mut carol = srv.register_on(2, "carol");
        let mut a = srv.connect_on(3);
        a.register_with_caps("alice", LABEL_CAPS);
        a.join("#mix");
        carol.join("#mix");
        a.expect("JOIN");
        const N: usize = 200;
        for round in 0..5 {
            // Messages from carol, to alice and to a channel they share,
            // race alice's labelled WHO (answered in parts by every shard:
            // the messages often arrive while its batch is open).
            let mut burst = String::new();
            for i in 0..N {
                let to = if i % 2 == 0 { "alice" } else { "#mix" };
                burst.push_str(&format!("PRIVMSG {to} :m{round}-{i}\r\n"));
            }
            carol.send_raw(burst.as_bytes());
            let l = format!("w{round}");
            a.send(&format!("@label={l} WHO *"));
            let (resp, mut others) = labelled(&mut a, &l);
            let cmds = inner(&resp);
            assert!(
                cmds.iter().all(|c| c.starts_with('3')),
                "{label}: only WHOIS numerics inside: {resp:?}"
            );
            assert_eq!(cmds.last().map(String::as_str), Some("315"), "{label}");
            others.extend(a.sync());
            let got: Vec<&Line> = others.iter().filter(|l| l.is("PRIVMSG")).collect();
            let mut n = got.len();
            // Any not in yet come after.
            while n < N {
                let l = a.next_line();
                assert!(
                    l.tag("label").is_none() && l.tag("batch").is_none(),
                    "{label}"
                );
                if l.is("PRIVMSG") {
                    n += 1;
                }
            }
            assert!(
                got.iter()
                    .all(|l| l.tag("label").is_none() && l.tag("batch").is_none()),
                "{label}"
            );
        }
    });
}

/// Pipelined labelled and unlabelled commands (each labelled one waits for the
/// ones before it, and holds the ones after): every label comes back exactly
/// once, in order, each on its own command's response only.
fn labelled_pipeline(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut bob = srv.register_on(1, "bob");
        let mut a = srv.connect_on(2);
        a.register_with_caps("alice", LABEL_CAPS);
        a.join("#pipe");
        bob.join("#pipe");
        a.expect("JOIN");
        const N: usize = 30;
        let mut burst = String::new();
        for i in 0..N {
            burst.push_str(&format!("PRIVMSG #pipe :plain{i}\r\n"));
            burst.push_str(&format!("@label=p{i} PRIVMSG #pipe :labelled{i}\r\n"));
            burst.push_str(&format!("@label=t{i} WHOIS bob\r\n"));
            burst.push_str(&format!("PRIVMSG bob :direct{i}\r\n"));
        }
        burst.push_str("PING :done\r\n");
        a.send_raw(burst.as_bytes());
        let (_, lines) = a.until("PONG done", |l| l.is("PONG") && l.last() == "done");
        let mut labels = Vec::new();
        let mut batches: std::collections::HashMap<String, String> = Default::default();
        for l in &lines {
            if let Some(v) = l.tag("label") {
                labels.push(v.to_string());
                match v.chars().next() {
                    // The echo of the labelled message, alone.
                    Some('p') => {
                        assert!(l.is("PRIVMSG"), "{label}: {}", l.raw);
                        assert_eq!(l.last(), format!("labelled{}", &v[1..]), "{label}");
                    }
                    // WHOIS: a batch.
                    _ => {
                        assert!(l.is("BATCH"), "{label}: {}", l.raw);
                        let r = l.params[0].trim_start_matches('+').to_string();
                        batches.insert(r, v.to_string());
                    }
                }
            } else if let Some(b) = l.tag("batch") {
                let owner = batches
                    .get(b)
                    .unwrap_or_else(|| panic!("{label}: {}", l.raw));
                assert!(owner.starts_with('t'), "{label}");
                assert!(l.command.starts_with('3'), "{label}: {}", l.raw);
            } else if l.is("PRIVMSG") {
                // The unlabelled echoes (channel and private), in order.
                assert!(
                    l.last().starts_with("plain") || l.last().starts_with("direct"),
                    "{label}: {}",
                    l.raw
                );
            }
        }
        let expected: Vec<String> = (0..N)
            .flat_map(|i| [format!("p{i}"), format!("t{i}")])
            .collect();
        assert_eq!(labels, expected, "{label}");
        // bob got every message, none labelled.
        let got = bob.privmsg_texts_checking(3 * N, |l| {
            assert!(l.tag("label").is_none(), "{}", l.raw);
        });
        assert_eq!(got.len(), 3 * N, "{label}");
    });
}

/// The `irc` crate's client: negotiates `batch` and `labeled-response`,
/// sends a labelled MONITOR + (its one-line answer carries the label), is
/// told (unlabelled) when the nick registers on another shard and when it
/// leaves, and lists its monitor list.
async fn irc_crate_monitor(srv: &TestServer) {
    use futures_util::StreamExt;
    use irc::client::prelude::{Capability, Command, Config, Message, Response};
    use irc::proto::message::Tag;
    let label = srv.label();
    let config = Config {
        nickname: Some("libwatch".into()),
        username: Some("libwatch".into()),
        realname: Some("irc crate watcher".into()),
        server: Some(srv.addr.ip().to_string()),
        port: Some(srv.addr.port()),
        ..Config::default()
    };
    let mut client = tokio::time::timeout(WAIT, irc::client::Client::from_config(config))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut stream = client.stream().expect("stream");
    client
        .send_cap_req(&[Capability::Batch, Capability::Custom("labeled-response")])
        .expect("CAP REQ");
    client.identify().expect("identify");
    let deadline = tokio::time::Instant::now() + WAIT;
    // The next message, skipping the library's own keep-alive PING/PONG.
    macro_rules! next {
        () => {
            loop {
                let m = tokio::time::timeout_at(deadline, stream.next())
                    .await
                    .expect("a message in time")
                    .expect("stream open")
                    .expect("a valid message");
                if !matches!(m.command, Command::PING(..) | Command::PONG(..)) {
                    break m;
                }
            }
        };
    }
    let is = |m: &Message, r: Response| matches!(&m.command, Command::Response(x, _) if *x == r);
    let args = |m: &Message| match &m.command {
        Command::Response(_, a) => a.clone(),
        _ => Vec::new(),
    };
    loop {
        let m = next!();
        if is(&m, Response::RPL_ENDOFMOTD) || is(&m, Response::ERR_NOMOTD) {
            break;
        }
    }
    let tag = |m: &Message, key: &str| {
        m.tags
            .iter()
            .flatten()
            .find(|Tag(k, _)| k == key)
            .and_then(|Tag(_, v)| v.clone())
    };
    client
        .send(Message {
            tags: Some(vec![Tag("label".into(), Some("lib1".into()))]),
            prefix: None,
            command: Command::MONITOR("+".into(), Some("Watched".into())),
        })
        .expect("MONITOR +");
    let m = next!();
    assert!(is(&m, Response::RPL_MONOFFLINE), "{label}: {m:?}");
    assert_eq!(args(&m)[1], "Watched", "{label}");
    assert_eq!(tag(&m, "label").as_deref(), Some("lib1"), "{label}");
    assert_eq!(tag(&m, "batch"), None, "{label}");

    let mut w = srv.register_on(1, "watched");
    let m = next!();
    assert!(is(&m, Response::RPL_MONONLINE), "{label}: {m:?}");
    assert_eq!(args(&m)[1], "watched", "{label}");
    assert_eq!(tag(&m, "label"), None, "{label}");
    w.send("QUIT");
    w.until_closed();
    let m = next!();
    assert!(is(&m, Response::RPL_MONOFFLINE), "{label}: {m:?}");

    client
        .send(Command::MONITOR("L".into(), None))
        .expect("MONITOR L");
    let m = next!();
    assert!(is(&m, Response::RPL_MONLIST), "{label}: {m:?}");
    assert_eq!(args(&m)[1], "Watched", "{label}");
    let m = next!();
    assert!(is(&m, Response::RPL_ENDOFMONLIST), "{label}: {m:?}");
    client.send_quit("bye").expect("QUIT");
}

fn irc_crate_monitor_and_label(io: Io) {
    each_server(io, |srv| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(irc_crate_monitor(srv));
    });
}

shardline::per_backend! {
    monitor_across_shards => monitor_across_shards;
    monitor_bad_input => monitor_bad_input;
    monitor_limits => monitor_limits;
    monitor_shard_total_and_cleanup => monitor_shard_total_and_cleanup;
    labelled_responses => labelled_responses;
    labelled_response_excludes_other_traffic => labelled_response_excludes_other_traffic;
    irc_crate_monitor_and_label => irc_crate_monitor_and_label;
    labelled_pipeline => labelled_pipeline;
}
