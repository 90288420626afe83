//! Channel modes over raw TCP: changes seen by every member, prefixes in NAMES,
//! and what `+k +l +i +b +m +n +t` do to JOIN, PRIVMSG and TOPIC, with every
//! refusal numeric. Members sit on different shards whenever the server has more
//! than one. Both backends, 1 and 4 shards.

mod common;

use common::{matrix, Client, Line, TestServer};

fn names(c: &mut Client, chan: &str) -> Vec<String> {
    c.send(&format!("NAMES {chan}"));
    let (_, lines) = c.until("366", |l| l.is("366"));
    let mut n: Vec<String> = lines
        .iter()
        .filter(|l| l.is("353") && l.params[2].eq_ignore_ascii_case(chan))
        .flat_map(|l| l.last().split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    n.sort();
    n
}

/// Every client in `all` gets the same MODE line; returns it.
fn mode_seen_by(all: &mut [&mut Client]) -> Line {
    let lines: Vec<Line> = all.iter_mut().map(|c| c.expect("MODE")).collect();
    for l in &lines {
        assert_eq!(l.raw, lines[0].raw);
    }
    lines[0].clone()
}

#[test]
fn mode_changes_reach_every_member_and_show_in_names() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let label = srv.label();
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(1, "bob");
        let mut c = srv.register_on(2, "carol");
        let mut d = srv.connect_on(3);
        d.register_with_caps("dave", "multi-prefix");
        for x in [&mut a, &mut b, &mut c, &mut d] {
            x.join("#m");
        }
        for x in [&mut a, &mut b, &mut c, &mut d] {
            x.sync();
        }
        a.send("MODE #m +o-t+v bob carol");
        let m = mode_seen_by(&mut [&mut a, &mut b, &mut c, &mut d]);
        assert_eq!(m.nick(), Some("alice"), "{label}");
        assert_eq!(m.params, ["#m", "+o-t+v", "bob", "carol"], "{label}");
        c.send("MODE #m");
        let q = c.expect("324");
        assert_eq!(q.params[1..], ["#m", "+n"], "{label}");
        c.expect("329");
        assert_eq!(
            names(&mut c, "#m"),
            ["+carol", "@alice", "@bob", "dave"],
            "{label}"
        );
        // Bob is op now: he can voice himself; multi-prefix shows both.
        b.send("MODE #m +v bob");
        mode_seen_by(&mut [&mut a, &mut b, &mut c, &mut d]);
        assert_eq!(
            names(&mut d, "#m"),
            ["+carol", "@+bob", "@alice", "dave"],
            "{label}"
        );
        assert_eq!(
            names(&mut c, "#m"),
            ["+carol", "@alice", "@bob", "dave"],
            "{label}"
        );
        // Flags, a key and a limit in one change; the key only shown to members.
        a.send("MODE #m +imsk-o+l sesame alice 10");
        let m = mode_seen_by(&mut [&mut a, &mut b, &mut c, &mut d]);
        assert_eq!(
            m.params,
            ["#m", "+imsk-o+l", "sesame", "alice", "10"],
            "{label}"
        );
        d.send("MODE #m");
        assert_eq!(
            d.expect("324").params[1..],
            ["#m", "+imnskl", "sesame", "10"]
        );
        let mut e = srv.register_on(1, "eve");
        e.send("MODE #m");
        assert_eq!(e.expect("324").params[1..], ["#m", "+imnskl", "*", "10"]);
        // Alice is no op any more; removing what is not set changes nothing.
        a.send("MODE #m -i");
        assert_eq!(a.expect("482").params[1], "#m", "{label}");
        b.send("MODE #m -kl-t *");
        let m = mode_seen_by(&mut [&mut a, &mut b, &mut c, &mut d]);
        assert_eq!(m.params, ["#m", "-kl", "*"], "{label}");
        b.send("MODE #m -t");
        let quiet = b.sync();
        assert!(!quiet.iter().any(|l| l.is("MODE")), "{label}: {quiet:?}");
        srv.stop();
    }
}

#[test]
fn mode_refusals() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let label = srv.label();
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(1, "bob");
        let mut c = srv.register_on(2, "carol");
        a.join("#r");
        b.join("#r");
        a.sync();
        b.send("MODE #r +i");
        assert_eq!(b.expect("482").params[1], "#r", "{label}");
        b.send("MODE #r +o bob");
        b.expect("482");
        a.send("MODE #r +o");
        let e = a.expect("696");
        assert_eq!(e.params[1..4], ["#r", "o", "*"], "{label}");
        a.send("MODE #r +o nobody");
        assert_eq!(a.expect("401").params[1], "nobody", "{label}");
        a.send("MODE #r +v carol");
        let e = a.expect("441");
        assert_eq!(e.params[1..3], ["carol", "#r"], "{label}");
        a.send("MODE #r +y");
        assert_eq!(a.expect("472").params[1], "y", "{label}");
        a.send("MODE #r +l many");
        assert_eq!(a.expect("696").params[2..4], ["l", "many"]);
        a.send("MODE #r +k a,b");
        assert_eq!(a.expect("696").params[2], "k");
        a.send("MODE #r +k sesame");
        assert_eq!(b.expect("MODE").params, ["#r", "+k", "sesame"]);
        a.send("MODE #r +k other");
        assert_eq!(a.expect("467").params[1], "#r", "{label}");
        a.send("MODE #ghost +i");
        assert_eq!(a.expect("403").params[1], "#ghost");
        a.send("MODE #ghost");
        a.expect("403");
        c.send("MODE #r -k");
        c.expect("482");
        // Nothing of that reached the members.
        let seen = b.sync();
        assert!(!seen.iter().any(|l| l.is("MODE")), "{label}: {seen:?}");
        srv.stop();
    }
}

#[test]
fn bans_keep_out_and_silence() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let label = srv.label();
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(1, "bob");
        let mut c = srv.register_on(2, "carol");
        a.join("#b");
        c.join("#b");
        a.sync();
        a.send("MODE #b +b B?B");
        assert_eq!(c.expect("MODE").params, ["#b", "+b", "B?B!*@*"], "{label}");
        a.send("MODE #b +b *!*@10.*");
        c.expect("MODE");
        c.send("MODE #b b");
        let (end, list) = c.until("368", |l| l.is("368"));
        assert_eq!(end.params[1], "#b");
        let masks: Vec<&str> = list
            .iter()
            .filter(|l| l.is("367"))
            .map(|l| l.params[2].as_str())
            .collect();
        assert_eq!(masks, ["B?B!*@*", "*!*@10.*"], "{label}");
        let first = list.iter().find(|l| l.is("367")).expect("367");
        assert_eq!(first.params[3], "alice");
        b.send("JOIN #b");
        assert_eq!(b.expect("474").params[1], "#b", "{label}");
        a.send("MODE #b -b b?b!*@*");
        assert_eq!(c.expect("MODE").params, ["#b", "-b", "B?B!*@*"], "{label}");
        b.join("#b");
        // A banned member may stay but not speak, unless voiced.
        a.send("MODE #b +b bob!*@*");
        b.expect("MODE");
        b.send("PRIVMSG #b :muted");
        assert_eq!(b.expect("404").params[1], "#b", "{label}");
        a.send("MODE #b +v bob");
        b.expect("MODE");
        b.send("PRIVMSG #b :voiced");
        let m = c.until("PRIVMSG", |l| l.is("PRIVMSG")).0;
        assert_eq!(m.last(), "voiced", "{label}");
        srv.stop();
    }
}

#[test]
fn join_keys_limits_and_invite_only() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let label = srv.label();
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(1, "bob");
        let mut c = srv.register_on(2, "carol");
        let mut d = srv.register_on(3, "dave");
        a.join("#k");
        a.send("MODE #k +k sesame");
        a.expect("MODE");
        b.send("JOIN #k");
        assert_eq!(b.expect("475").params[1], "#k", "{label}");
        b.send("JOIN #k wrong");
        b.expect("475");
        b.send("JOIN #k sesame");
        assert_eq!(b.expect("JOIN").params, ["#k"]);
        // Keys go with channels by position.
        c.send("JOIN #k,#open sesame");
        let mut joined: Vec<String> = (0..2).map(|_| c.expect("JOIN").params[0].clone()).collect();
        joined.sort();
        assert_eq!(joined, ["#k", "#open"], "{label}");
        a.send("MODE #k +l 3");
        a.expect("MODE");
        d.send("JOIN #k sesame");
        assert_eq!(d.expect("471").params[1], "#k", "{label}");
        a.send("MODE #k -l+i");
        a.expect("MODE");
        d.send("JOIN #k sesame");
        assert_eq!(d.expect("473").params[1], "#k", "{label}");
        // An invitation lets one past +i (not past the key), once.
        a.send("INVITE dave #k");
        let inv = a.expect("341");
        assert_eq!(inv.params[1..], ["dave", "#k"], "{label}");
        let got = d.expect("INVITE");
        assert_eq!(got.nick(), Some("alice"), "{label}");
        assert_eq!(got.params, ["dave", "#k"], "{label}");
        d.send("JOIN #k");
        d.expect("475");
        d.send("JOIN #k sesame");
        assert_eq!(d.expect("JOIN").params, ["#k"], "{label}");
        d.send("PART #k");
        d.expect("PART");
        d.send("JOIN #k sesame");
        assert_eq!(d.expect("473").params[1], "#k", "{label}");
        srv.stop();
    }
}

#[test]
fn moderated_external_and_topic_modes() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let label = srv.label();
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(1, "bob");
        let mut c = srv.register_on(2, "carol");
        a.join("#mod");
        b.join("#mod");
        a.sync();
        a.send("MODE #mod +m");
        b.expect("MODE");
        b.send("PRIVMSG #mod :hello?");
        assert_eq!(b.expect("404").params[1], "#mod", "{label}");
        a.send("PRIVMSG #mod :ops may");
        assert_eq!(b.until("PRIVMSG", |l| l.is("PRIVMSG")).0.last(), "ops may");
        a.send("MODE #mod +v bob");
        b.expect("MODE");
        b.send("PRIVMSG #mod :voiced now");
        assert_eq!(
            a.until("PRIVMSG", |l| l.is("PRIVMSG")).0.last(),
            "voiced now"
        );
        // +n (the default) keeps outsiders out; -n lets them speak.
        c.send("PRIVMSG #mod :from outside");
        assert_eq!(c.expect("404").params[1], "#mod", "{label}");
        a.send("MODE #mod -mn");
        b.expect("MODE");
        c.send("PRIVMSG #mod :from outside");
        for x in [&mut a, &mut b] {
            let m = x.until("PRIVMSG", |l| l.is("PRIVMSG")).0;
            assert_eq!(
                (m.nick(), m.last()),
                (Some("carol"), "from outside"),
                "{label}"
            );
        }
        // -t: anyone in the channel sets the topic.
        b.send("TOPIC #mod :no ops needed");
        b.expect("482");
        a.send("MODE #mod -t");
        b.expect("MODE");
        b.send("TOPIC #mod :no ops needed");
        assert_eq!(a.expect("TOPIC").last(), "no ops needed", "{label}");
        srv.stop();
    }
}
