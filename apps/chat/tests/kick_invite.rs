//! KICK and INVITE over raw TCP, with the kicker, the victim, the inviter and the
//! invitee on different shards whenever there are several, and every refusal
//! numeric. Both backends, 1 and 4 shards.

mod common;

use common::{each_server, join_all, sync_all};
use shardline::Io;

fn kick_reaches_everyone_and_removes_the_member(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, mut b, mut c] = srv.register_each(["alice", "bob", "carol"]);
        join_all("#kick", [&mut a, &mut b, &mut c]);
        sync_all([&mut a, &mut b, &mut c]);
        a.send("KICK #kick BOB :behave");
        for x in [&mut a, &mut b, &mut c] {
            let k = x.expect("KICK");
            assert_eq!(k.nick(), Some("alice"), "{label}");
            assert_eq!(k.params, ["#kick", "bob", "behave"], "{label}");
        }
        // Bob is out: he no longer gets the channel's messages, and may not speak.
        a.send("PRIVMSG #kick :after");
        assert_eq!(c.expect("PRIVMSG").last(), "after");
        b.sync_without("PRIVMSG");
        b.send("PRIVMSG #kick :let me back");
        b.expect("404");
        let names = b.names_lines("#kick");
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
        let names = c.names_lines("#kick");
        assert!(names.iter().any(|n| n == "@carol"), "{label}: {names:?}");
    });
}

fn kick_refusals(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, mut b, mut c] = srv.register_each(["alice", "bob", "carol"]);
        join_all("#k", [&mut a, &mut b]);
        a.sync();
        a.send_expect("KICK", "461", "KICK");
        a.send("KICK #k");
        a.expect("461");
        a.send_expect("KICK #nowhere bob", "403", "#nowhere");
        c.send_expect("KICK #k bob", "442", "#k");
        b.send_expect("KICK #k alice", "482", "#k");
        a.send("KICK #k carol");
        let e = a.expect("441");
        assert_eq!(e.params[1..3], ["carol", "#k"], "{label}");
        a.send_expect("KICK #k nobody", "401", "nobody");
        b.sync_without("KICK");
    });
}

fn invite_and_its_refusals(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, mut b, mut c] = srv.register_each(["alice", "bob", "carol"]);
        join_all("#inv", [&mut a, &mut b]);
        a.sync();
        // Without +i any member may invite.
        b.send("INVITE carol #inv");
        let ok = b.expect("341");
        assert_eq!(ok.params, ["bob", "carol", "#inv"], "{label}");
        let got = c.expect("INVITE");
        assert_eq!(got.source.as_deref(), Some("bob!~bob@127.0.0.1"));
        assert_eq!(got.params, ["carol", "#inv"], "{label}");
        b.send_expect("INVITE", "461", "INVITE");
        b.send("INVITE carol");
        b.expect("461");
        b.send_expect("INVITE nobody #inv", "401", "nobody");
        b.send("INVITE alice #inv");
        let e = b.expect("443");
        assert_eq!(e.params[1..3], ["alice", "#inv"], "{label}");
        c.send_expect("INVITE bob #inv", "442", "#inv");
        b.send_expect("INVITE carol #nowhere", "403", "#nowhere");
        // +i: only ops invite.
        a.send("MODE #inv +i");
        b.expect("MODE");
        b.send_expect("INVITE carol #inv", "482", "#inv");
        c.sync_without("INVITE");
        a.send("INVITE carol #inv");
        a.expect("341");
        c.expect("INVITE");
        c.join("#inv");
    });
}

shardline::per_backend! {
    kick_reaches_everyone_and_removes_the_member => kick_reaches_everyone_and_removes_the_member;
    kick_refusals => kick_refusals;
    invite_and_its_refusals => invite_and_its_refusals;
}
