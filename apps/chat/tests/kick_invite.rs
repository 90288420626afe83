//! KICK and INVITE over raw TCP, with the kicker, the victim, the inviter and the
//! invitee on different shards whenever there are several, and every refusal
//! numeric. Both backends, 1 and 4 shards.

mod common;

use common::{matrix, TestServer};

#[test]
fn kick_reaches_everyone_and_removes_the_member() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let label = srv.label();
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(1, "bob");
        let mut c = srv.register_on(2, "carol");
        for x in [&mut a, &mut b, &mut c] {
            x.join("#kick");
        }
        for x in [&mut a, &mut b, &mut c] {
            x.sync();
        }
        a.send("KICK #kick BOB :behave");
        for x in [&mut a, &mut b, &mut c] {
            let k = x.expect("KICK");
            assert_eq!(k.nick(), Some("alice"), "{label}");
            assert_eq!(k.params, ["#kick", "bob", "behave"], "{label}");
        }
        // Bob is out: he no longer gets the channel's messages, and may not speak.
        a.send("PRIVMSG #kick :after");
        assert_eq!(c.until("PRIVMSG", |l| l.is("PRIVMSG")).0.last(), "after");
        let at_b = b.sync();
        assert!(!at_b.iter().any(|l| l.is("PRIVMSG")), "{label}: {at_b:?}");
        b.send("PRIVMSG #kick :let me back");
        b.expect("404");
        b.send("NAMES #kick");
        let (_, lines) = b.until("366", |l| l.is("366"));
        let names: Vec<&str> = lines
            .iter()
            .filter(|l| l.is("353"))
            .map(|l| l.last())
            .collect();
        assert!(
            names.len() == 1 && !names[0].contains("bob"),
            "{label}: {names:?}"
        );
        // The default reason is the kicker's nick; several victims at once.
        b.join("#kick");
        a.send("KICK #kick bob,carol");
        let mut kicked: Vec<String> = (0..2)
            .map(|_| {
                let k = a.expect("KICK");
                assert_eq!(k.last(), "alice", "{label}");
                k.params[1].clone()
            })
            .collect();
        kicked.sort();
        assert_eq!(kicked, ["bob", "carol"], "{label}");
        // Carol's shard has removed her once she has seen her KICK (a JOIN sent
        // before that would find her still in the channel).
        c.until("carol's KICK", |l| l.is("KICK") && l.params[1] == "carol");
        // Kicking the last member empties (and removes) the channel.
        a.send("KICK #kick alice :bye me");
        a.expect("KICK");
        c.join("#kick");
        c.send("NAMES #kick");
        let (_, lines) = c.until("366", |l| l.is("366"));
        assert!(
            lines.iter().any(|l| l.is("353") && l.last() == "@carol"),
            "{label}: {lines:?}"
        );
        srv.stop();
    }
}

#[test]
fn kick_refusals() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let label = srv.label();
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(1, "bob");
        let mut c = srv.register_on(2, "carol");
        a.join("#k");
        b.join("#k");
        a.sync();
        a.send("KICK");
        assert_eq!(a.expect("461").params[1], "KICK");
        a.send("KICK #k");
        a.expect("461");
        a.send("KICK #nowhere bob");
        assert_eq!(a.expect("403").params[1], "#nowhere", "{label}");
        c.send("KICK #k bob");
        assert_eq!(c.expect("442").params[1], "#k", "{label}");
        b.send("KICK #k alice");
        assert_eq!(b.expect("482").params[1], "#k", "{label}");
        a.send("KICK #k carol");
        let e = a.expect("441");
        assert_eq!(e.params[1..3], ["carol", "#k"], "{label}");
        a.send("KICK #k nobody");
        assert_eq!(a.expect("401").params[1], "nobody", "{label}");
        let seen = b.sync();
        assert!(!seen.iter().any(|l| l.is("KICK")), "{label}: {seen:?}");
        srv.stop();
    }
}

#[test]
fn invite_and_its_refusals() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let label = srv.label();
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(1, "bob");
        let mut c = srv.register_on(2, "carol");
        a.join("#inv");
        b.join("#inv");
        a.sync();
        // Without +i any member may invite.
        b.send("INVITE carol #inv");
        let ok = b.expect("341");
        assert_eq!(ok.params, ["bob", "carol", "#inv"], "{label}");
        let got = c.expect("INVITE");
        assert_eq!(got.source.as_deref(), Some("bob!~bob@127.0.0.1"));
        assert_eq!(got.params, ["carol", "#inv"], "{label}");
        b.send("INVITE");
        assert_eq!(b.expect("461").params[1], "INVITE");
        b.send("INVITE carol");
        b.expect("461");
        b.send("INVITE nobody #inv");
        assert_eq!(b.expect("401").params[1], "nobody", "{label}");
        b.send("INVITE alice #inv");
        let e = b.expect("443");
        assert_eq!(e.params[1..3], ["alice", "#inv"], "{label}");
        c.send("INVITE bob #inv");
        assert_eq!(c.expect("442").params[1], "#inv", "{label}");
        b.send("INVITE carol #nowhere");
        assert_eq!(b.expect("403").params[1], "#nowhere", "{label}");
        // +i: only ops invite.
        a.send("MODE #inv +i");
        b.expect("MODE");
        b.send("INVITE carol #inv");
        assert_eq!(b.expect("482").params[1], "#inv", "{label}");
        let quiet = c.sync();
        assert!(!quiet.iter().any(|l| l.is("INVITE")), "{label}: {quiet:?}");
        a.send("INVITE carol #inv");
        a.expect("341");
        c.expect("INVITE");
        c.join("#inv");
        srv.stop();
    }
}
