//! IRCv3 MONITOR, labeled-response and standard replies, over raw TCP:
//! MONITOR's `+`, `-`, `C`, `L` and `S` with the nicks held on other shards
//! than the watcher's; 730/731 as nicks come online and go (registration,
//! NICK, QUIT, a dropped connection); the per-client limit (734, `MONITOR=` in
//! 005, off at 0) and the per-shard total; clean-up when a watcher leaves.
//! Labeled responses: one line, a batch, ACK, a cross-shard WHOIS,
//! echo-message, unrelated traffic kept outside. Both backends, 1 and 4 shards.

mod common;

use std::time::{Duration, Instant};

use common::{each_server, each_server_with, Client, Line, TestServer, WAIT};
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
            assert_eq!(listed(&lines, "731"), ["n1", "n2", "n3"], "{label}");
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

fn monitor_shard_total_and_cleanup(io: Io) {
    each_server_with(
        io,
        |c| c.limits.monitor_shard_total = 2,
        |srv| {
            let label = srv.label();
            let nicks = owned_by_first(srv, "w", 3);
            let mut w1 = srv.register_on(1, "watcher");
            let lines = answer(&mut w1, &format!("MONITOR + {},{}", nicks[0], nicks[1]));
            assert_eq!(listed(&lines, "731"), nicks[..2], "{label}: {lines:?}");
            // The owner holds two pairs: a third is refused, and not listed.
            let mut w2 = srv.register_on(2, "other");
            let lines = answer(&mut w2, &format!("MONITOR + {}", nicks[2]));
            let full: Vec<&Line> = lines.iter().filter(|l| l.is("734")).collect();
            assert_eq!(full.len(), 1, "{label}: {lines:?}");
            assert_eq!(full[0].params[2], nicks[2], "{label}");
            assert!(listed(&lines, "731").is_empty(), "{label}: {lines:?}");
            let lines = answer(&mut w2, "MONITOR L");
            assert!(listed(&lines, "732").is_empty(), "{label}: {lines:?}");
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

shardline::per_backend! {
    monitor_across_shards => monitor_across_shards;
    monitor_bad_input => monitor_bad_input;
    monitor_limits => monitor_limits;
    monitor_shard_total_and_cleanup => monitor_shard_total_and_cleanup;
}
