//! Channel modes over raw TCP: changes seen by every member, prefixes in NAMES,
//! and what `+k +l +i +b +m +n +t` do to JOIN, PRIVMSG and TOPIC, with every
//! refusal numeric. Members sit on different shards whenever the server has more
//! than one. Both backends, 1 and 4 shards.

mod common;

use common::{each_server, join_all, sync_all, Client, Line};
use shardline::Io;

/// Every client in `all` gets the same MODE line; returns it.
fn mode_seen_by(all: &mut [&mut Client]) -> Line {
    let lines: Vec<Line> = all.iter_mut().map(|c| c.expect("MODE")).collect();
    for l in &lines {
        assert_eq!(l.raw, lines[0].raw);
    }
    lines[0].clone()
}

fn mode_changes_reach_every_member_and_show_in_names(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, mut b, mut c] = srv.register_each(["alice", "bob", "carol"]);
        let mut d = srv.connect_on(3);
        d.register_with_caps("dave", "multi-prefix");
        join_all("#m", [&mut a, &mut b, &mut c, &mut d]);
        sync_all([&mut a, &mut b, &mut c, &mut d]);
        a.send("MODE #m +o-t+v bob carol");
        let m = mode_seen_by(&mut [&mut a, &mut b, &mut c, &mut d]);
        assert_eq!(m.nick(), Some("alice"), "{label}");
        assert_eq!(m.params, ["#m", "+o-t+v", "bob", "carol"], "{label}");
        c.send("MODE #m");
        let q = c.expect("324");
        assert_eq!(q.params[1..], ["#m", "+n"], "{label}");
        c.expect("329");
        assert_eq!(
            c.names("#m"),
            ["+carol", "@alice", "@bob", "dave"],
            "{label}"
        );
        // Bob is op now: he can voice himself; multi-prefix shows both.
        b.send("MODE #m +v bob");
        mode_seen_by(&mut [&mut a, &mut b, &mut c, &mut d]);
        assert_eq!(
            d.names("#m"),
            ["+carol", "@+bob", "@alice", "dave"],
            "{label}"
        );
        assert_eq!(
            c.names("#m"),
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
        a.send_expect("MODE #m -i", "482", "#m");
        b.send("MODE #m -kl-t *");
        let m = mode_seen_by(&mut [&mut a, &mut b, &mut c, &mut d]);
        assert_eq!(m.params, ["#m", "-kl", "*"], "{label}");
        b.send("MODE #m -t");
        b.sync_without("MODE");
    });
}

fn mode_refusals(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, mut b, mut c] = srv.register_each(["alice", "bob", "carol"]);
        join_all("#r", [&mut a, &mut b]);
        a.sync();
        b.send_expect("MODE #r +i", "482", "#r");
        b.send("MODE #r +o bob");
        b.expect("482");
        a.send("MODE #r +o");
        let e = a.expect("696");
        assert_eq!(e.params[1..4], ["#r", "o", "*"], "{label}");
        a.send_expect("MODE #r +o nobody", "401", "nobody");
        a.send("MODE #r +v carol");
        let e = a.expect("441");
        assert_eq!(e.params[1..3], ["carol", "#r"], "{label}");
        a.send_expect("MODE #r +y", "472", "y");
        a.send("MODE #r +l many");
        assert_eq!(a.expect("696").params[2..4], ["l", "many"]);
        a.send("MODE #r +k a,b");
        assert_eq!(a.expect("696").params[2], "k");
        a.send("MODE #r +k sesame");
        assert_eq!(b.expect("MODE").params, ["#r", "+k", "sesame"]);
        a.send_expect("MODE #r +k other", "467", "#r");
        a.send_expect("MODE #ghost +i", "403", "#ghost");
        a.send("MODE #ghost");
        a.expect("403");
        c.send("MODE #r -k");
        c.expect("482");
        // Nothing of that reached the members.
        b.sync_without("MODE");
    });
}

fn bans_keep_out_and_silence(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, mut b, mut c] = srv.register_each(["alice", "bob", "carol"]);
        join_all("#b", [&mut a, &mut c]);
        a.sync();
        a.send("MODE #b +b B?B");
        assert_eq!(c.expect("MODE").params, ["#b", "+b", "B?B!*@*"], "{label}");
        a.send("MODE #b +b *!*@10.*");
        c.expect("MODE");
        c.send("MODE #b b");
        let (end, list) = c.until_command("368");
        assert_eq!(end.params[1], "#b");
        let masks: Vec<&str> = list
            .iter()
            .filter(|l| l.is("367"))
            .map(|l| l.params[2].as_str())
            .collect();
        assert_eq!(masks, ["B?B!*@*", "*!*@10.*"], "{label}");
        let first = list.iter().find(|l| l.is("367")).expect("367");
        assert_eq!(first.params[3], "alice");
        b.send_expect("JOIN #b", "474", "#b");
        a.send("MODE #b -b b?b!*@*");
        assert_eq!(c.expect("MODE").params, ["#b", "-b", "B?B!*@*"], "{label}");
        b.join("#b");
        // A banned member may stay but not speak, unless voiced.
        a.send("MODE #b +b bob!*@*");
        b.expect("MODE");
        b.send_expect("PRIVMSG #b :muted", "404", "#b");
        a.send("MODE #b +v bob");
        b.expect("MODE");
        b.send("PRIVMSG #b :voiced");
        let m = c.expect("PRIVMSG");
        assert_eq!(m.last(), "voiced", "{label}");
    });
}

fn join_keys_limits_and_invite_only(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, mut b, mut c, mut d] = srv.register_each(["alice", "bob", "carol", "dave"]);
        a.join("#k");
        a.send("MODE #k +k sesame");
        a.expect("MODE");
        b.send_expect("JOIN #k", "475", "#k");
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
        d.send_expect("JOIN #k sesame", "471", "#k");
        a.send("MODE #k -l+i");
        a.expect("MODE");
        d.send_expect("JOIN #k sesame", "473", "#k");
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
        d.send_expect("JOIN #k sesame", "473", "#k");
    });
}

fn moderated_external_and_topic_modes(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, mut b, mut c] = srv.register_each(["alice", "bob", "carol"]);
        join_all("#mod", [&mut a, &mut b]);
        a.sync();
        a.send("MODE #mod +m");
        b.expect("MODE");
        b.send_expect("PRIVMSG #mod :hello?", "404", "#mod");
        a.send("PRIVMSG #mod :ops may");
        assert_eq!(b.expect("PRIVMSG").last(), "ops may");
        a.send("MODE #mod +v bob");
        b.expect("MODE");
        b.send("PRIVMSG #mod :voiced now");
        assert_eq!(a.expect("PRIVMSG").last(), "voiced now");
        // +n (the default) keeps outsiders out; -n lets them speak.
        c.send_expect("PRIVMSG #mod :from outside", "404", "#mod");
        a.send("MODE #mod -mn");
        b.expect("MODE");
        c.send("PRIVMSG #mod :from outside");
        for x in [&mut a, &mut b] {
            let m = x.expect("PRIVMSG");
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
    });
}

shardline::per_backend! {
    mode_changes_reach_every_member_and_show_in_names => mode_changes_reach_every_member_and_show_in_names;
    mode_refusals => mode_refusals;
    bans_keep_out_and_silence => bans_keep_out_and_silence;
    join_keys_limits_and_invite_only => join_keys_limits_and_invite_only;
    moderated_external_and_topic_modes => moderated_external_and_topic_modes;
}
