//! Channel commands over raw TCP: JOIN (several, JOIN 0), PART, TOPIC, NAMES,
//! MODE queries, and their refusals. Members sit on different shards whenever the
//! server has more than one. Both backends, 1 and 4 shards.

mod common;

use common::{each_server, each_server_with, join_all, names_in};
use shardline::Io;

fn join_shows_join_topic_and_names_to_everyone(io: Io) {
    each_server(io, |srv| {
        let [mut a, mut b] = srv.register_each(["alice", "bob"]);
        a.send("JOIN #Rust");
        let join = a.expect("JOIN");
        assert_eq!(join.nick(), Some("alice"));
        assert_eq!(join.params, ["#Rust"]);
        let (_, lines) = a.until_command("366");
        assert_eq!(names_in(&lines, "#rust"), ["@alice"], "{}", srv.label());
        assert!(!lines.iter().any(|l| l.is("332")), "no topic yet");
        a.send("TOPIC #rust :all about crabs");
        let t = a.expect("TOPIC");
        assert_eq!(t.params, ["#Rust", "all about crabs"]);
        // Bob joins with another casing: the channel keeps its first name.
        b.send("JOIN #RUST");
        let join = b.expect("JOIN");
        assert_eq!(join.params, ["#Rust"], "{}", srv.label());
        let topic = b.expect("332");
        assert_eq!(topic.params[1..], ["#Rust", "all about crabs"]);
        let who = b.expect("333");
        assert_eq!(who.params[2], "alice");
        let (_, lines) = b.until_command("366");
        assert_eq!(
            names_in(&lines, "#rust"),
            ["@alice", "bob"],
            "{}",
            srv.label()
        );
        let seen = a.expect("JOIN");
        assert_eq!(seen.nick(), Some("bob"), "{}", srv.label());
        // NAMES on its own.
        assert_eq!(b.names("#rust"), ["@alice", "bob"]);
        b.send_expect("NAMES #nowhere", "366", "#nowhere");
        b.send_expect("NAMES", "366", "*");
    });
}

fn several_channels_part_and_join_zero(io: Io) {
    each_server(io, |srv| {
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(3, "bob");
        b.join("#a");
        b.join("#b");
        a.send("JOIN #a,#b,#c");
        // Three owners answer independently: every JOIN comes, in any order.
        let mut joined: Vec<String> = (0..3).map(|_| a.expect("JOIN").params[0].clone()).collect();
        joined.sort();
        assert_eq!(joined, ["#a", "#b", "#c"], "{}", srv.label());
        a.sync();
        b.expect("JOIN");
        b.expect("JOIN");
        a.send("PART #a :see you");
        let p = a.expect("PART");
        assert_eq!(p.params, ["#a", "see you"]);
        let p = b.expect("PART");
        assert_eq!((p.nick(), p.params[0].as_str()), (Some("alice"), "#a"));
        a.send_expect("PART #a", "442", "#a");
        a.send_expect("PART #never", "403", "#never");
        a.send_expect("PART", "461", "PART");
        // JOIN 0 leaves #b and #c.
        a.send("JOIN 0");
        let mut parted: Vec<String> = (0..2).map(|_| a.expect("PART").params[0].clone()).collect();
        parted.sort();
        assert_eq!(parted, ["#b", "#c"], "{}", srv.label());
        let p = b.expect("PART");
        assert_eq!((p.nick(), p.params[0].as_str()), (Some("alice"), "#b"));
        // An empty channel is gone: joining makes a new one, with a new op.
        a.join("#c");
        assert_eq!(a.names("#c"), ["@alice"]);
    });
}

fn channel_refusals(io: Io) {
    each_server_with(
        io,
        |config| config.limits.max_channels = 2,
        |srv| {
            let [mut a, mut b] = srv.register_each(["alice", "bob"]);
            join_all("#op", [&mut a, &mut b]);
            a.sync();
            a.send_expect("JOIN", "461", "JOIN");
            a.send_expect("JOIN nohash", "403", "nohash");
            a.send_expect("JOIN #x,#y", "405", "#y");
            // TOPIC: +t, so only the op (the creator) sets it.
            b.send_expect("TOPIC #op :mine", "482", "#op");
            b.send_expect("TOPIC #op", "331", "#op");
            b.send_expect("TOPIC #x", "442", "#x");
            b.send_expect("TOPIC #nonexistent", "403", "#nonexistent");
            b.send("TOPIC");
            b.expect("461");
            a.send("TOPIC #op :set by op");
            assert_eq!(b.expect("TOPIC").last(), "set by op");
            a.send("TOPIC #op :");
            assert_eq!(b.expect("TOPIC").last(), "");
            b.send("TOPIC #op");
            b.expect("331");
            // MODE queries.
            b.send("MODE #op");
            let m = b.expect("324");
            assert_eq!(m.params[1..], ["#op", "+nt"]);
            b.expect("329");
            b.send("MODE #op b");
            b.expect("368");
            b.send_expect("MODE #op +k key", "482", "#op");
            b.send_expect("MODE #op +z", "472", "z");
            b.send("MODE #ghost");
            b.expect("403");
            b.send_expect("MODE bob", "221", "+");
            b.send("MODE bob +i");
            assert_eq!(b.expect("MODE").last(), "+i");
            b.send("MODE bob +z");
            b.expect("501");
            b.send("MODE alice +i");
            b.expect("502");
            b.send("MODE");
            b.expect("461");
        },
    );
}

shardline::per_backend! {
    join_shows_join_topic_and_names_to_everyone => join_shows_join_topic_and_names_to_everyone;
    several_channels_part_and_join_zero => several_channels_part_and_join_zero;
    channel_refusals => channel_refusals;
}
