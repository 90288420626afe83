//! Channel commands over raw TCP: JOIN (several, JOIN 0), PART, TOPIC, NAMES,
//! MODE queries, and their refusals. Members sit on different shards whenever the
//! server has more than one. Both backends, 1 and 4 shards.

mod common;

use common::{matrix, test_config, Line, TestServer};

fn names(lines: &[Line], chan: &str) -> Vec<String> {
    let mut n: Vec<String> = lines
        .iter()
        .filter(|l| l.is("353") && l.params[2].eq_ignore_ascii_case(chan))
        .flat_map(|l| l.last().split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    n.sort();
    n
}

#[test]
fn join_shows_join_topic_and_names_to_everyone() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(1, "bob");
        a.send("JOIN #Rust");
        let join = a.expect("JOIN");
        assert_eq!(join.nick(), Some("alice"));
        assert_eq!(join.params, ["#Rust"]);
        let (_, lines) = a.until("366", |l| l.is("366"));
        assert_eq!(names(&lines, "#rust"), ["@alice"], "{}", srv.label());
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
        let (_, lines) = b.until("366", |l| l.is("366"));
        assert_eq!(names(&lines, "#rust"), ["@alice", "bob"], "{}", srv.label());
        let seen = a.expect("JOIN");
        assert_eq!(seen.nick(), Some("bob"), "{}", srv.label());
        // NAMES on its own.
        b.send("NAMES #rust");
        let (_, lines) = b.until("366", |l| l.is("366"));
        assert_eq!(names(&lines, "#rust"), ["@alice", "bob"]);
        b.send("NAMES #nowhere");
        let end = b.expect("366");
        assert_eq!(end.params[1], "#nowhere");
        b.send("NAMES");
        assert_eq!(b.expect("366").params[1], "*");
        srv.stop();
    }
}

#[test]
fn several_channels_part_and_join_zero() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(3, "bob");
        b.join("#a");
        b.join("#b");
        a.send("JOIN #a,#b,#c");
        // Three owners answer independently: every JOIN comes, in any order.
        let mut joined: Vec<String> = (0..3)
            .map(|_| a.until("JOIN", |l| l.is("JOIN")).0.params[0].clone())
            .collect();
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
        a.send("PART #a");
        let e = a.expect("442");
        assert_eq!(e.params[1], "#a");
        a.send("PART #never");
        assert_eq!(a.expect("403").params[1], "#never");
        a.send("PART");
        assert_eq!(a.expect("461").params[1], "PART");
        // JOIN 0 leaves #b and #c.
        a.send("JOIN 0");
        let mut parted: Vec<String> = (0..2).map(|_| a.expect("PART").params[0].clone()).collect();
        parted.sort();
        assert_eq!(parted, ["#b", "#c"], "{}", srv.label());
        let p = b.expect("PART");
        assert_eq!((p.nick(), p.params[0].as_str()), (Some("alice"), "#b"));
        // An empty channel is gone: joining makes a new one, with a new op.
        a.join("#c");
        a.send("NAMES #c");
        let (_, lines) = a.until("366", |l| l.is("366"));
        assert_eq!(names(&lines, "#c"), ["@alice"]);
        srv.stop();
    }
}

#[test]
fn channel_refusals() {
    for (io, shards) in matrix() {
        let mut config = test_config();
        config.limits.max_channels = 2;
        let srv = TestServer::start_with(io, shards, config);
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(1, "bob");
        a.join("#op");
        b.join("#op");
        a.sync();
        a.send("JOIN");
        assert_eq!(a.expect("461").params[1], "JOIN");
        a.send("JOIN nohash");
        assert_eq!(a.expect("403").params[1], "nohash");
        a.send("JOIN #x,#y");
        let e = a.until("405", |l| l.is("405")).0;
        assert_eq!(e.params[1], "#y", "{}", srv.label());
        // TOPIC: +t, so only the op (the creator) sets it.
        b.send("TOPIC #op :mine");
        let e = b.expect("482");
        assert_eq!(e.params[1], "#op");
        b.send("TOPIC #op");
        assert_eq!(b.expect("331").params[1], "#op");
        b.send("TOPIC #x");
        assert_eq!(b.expect("442").params[1], "#x", "{}", srv.label());
        b.send("TOPIC #nonexistent");
        assert_eq!(b.expect("403").params[1], "#nonexistent");
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
        b.send("MODE #op +k key");
        assert_eq!(b.expect("482").params[1], "#op");
        b.send("MODE #op +z");
        assert_eq!(b.expect("472").params[1], "z");
        b.send("MODE #ghost");
        b.expect("403");
        b.send("MODE bob");
        assert_eq!(b.expect("221").params[1], "+");
        b.send("MODE bob +i");
        assert_eq!(b.expect("MODE").last(), "+i");
        b.send("MODE bob +z");
        b.expect("501");
        b.send("MODE alice +i");
        b.expect("502");
        b.send("MODE");
        b.expect("461");
        srv.stop();
    }
}
