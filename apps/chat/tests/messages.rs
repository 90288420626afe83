//! PRIVMSG and NOTICE to channels and nicks between clients on different shards,
//! IRCv3 tags and echo, QUIT and NICK seen by channel members, and the refusal
//! numerics. Both backends, 1 and 4 shards.

mod common;

use common::{matrix, TestServer};

#[test]
fn channel_and_private_messages_cross_shards() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(1, "bob");
        let mut c = srv.register_on(2, "carol");
        if shards > 1 {
            assert_ne!(a.shard, b.shard);
            assert_ne!(b.shard, c.shard);
        }
        for x in [&mut a, &mut b, &mut c] {
            x.join("#room");
        }
        a.sync();
        b.sync();
        a.send("PRIVMSG #room :hello room");
        for x in [&mut b, &mut c] {
            let m = x.until("PRIVMSG", |l| l.is("PRIVMSG")).0;
            assert_eq!(m.source.as_deref(), Some("alice!~alice@127.0.0.1"));
            assert_eq!(m.params, ["#room", "hello room"], "{}", srv.label());
        }
        // No echo without echo-message.
        let own = a.sync();
        assert!(
            !own.iter().any(|l| l.is("PRIVMSG")),
            "{}: {own:?}",
            srv.label()
        );
        b.send("NOTICE #ROOM :a notice");
        let n = a.until("NOTICE", |l| l.is("NOTICE")).0;
        assert_eq!(n.params, ["#ROOM", "a notice"]);
        b.send("PRIVMSG Alice :psst");
        let m = a.until("PRIVMSG", |l| l.is("PRIVMSG")).0;
        assert_eq!(
            (m.nick(), m.params[0].as_str(), m.last()),
            (Some("bob"), "Alice", "psst")
        );
        let others = c.sync();
        assert!(
            !others.iter().any(|l| l.last() == "psst"),
            "private stays private"
        );
        a.send("NOTICE bob :back");
        assert_eq!(b.until("NOTICE", |l| l.is("NOTICE")).0.last(), "back");
        // Several targets at once.
        a.send("PRIVMSG bob,carol :to both");
        assert_eq!(b.until("PRIVMSG", |l| l.is("PRIVMSG")).0.last(), "to both");
        assert_eq!(c.until("PRIVMSG", |l| l.is("PRIVMSG")).0.last(), "to both");
        srv.stop();
    }
}

#[test]
fn message_refusals() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(1, "bob");
        b.join("#closed");
        a.send("PRIVMSG");
        assert_eq!(a.expect("411").params[0], "alice");
        a.send("PRIVMSG bob");
        a.expect("412");
        a.send("PRIVMSG bob :");
        a.expect("412");
        a.send("PRIVMSG nobody :hi");
        assert_eq!(a.expect("401").params[1], "nobody", "{}", srv.label());
        a.send("PRIVMSG #nowhere :hi");
        assert_eq!(a.expect("403").params[1], "#nowhere", "{}", srv.label());
        // +n: outsiders cannot speak in a channel.
        a.send("PRIVMSG #closed :let me in");
        assert_eq!(a.expect("404").params[1], "#closed", "{}", srv.label());
        a.send("PRIVMSG a,b,c,d,e :many");
        assert_eq!(a.expect("407").params[1], "e");
        let rest = a.sync();
        assert_eq!(rest.iter().filter(|l| l.is("401")).count(), 4, "{rest:?}");
        // NOTICE never draws an error.
        a.send("NOTICE nobody :hi");
        a.send("NOTICE #nowhere :hi");
        a.send("NOTICE #closed :hi");
        let quiet = a.sync();
        let errors: Vec<&str> = quiet.iter().map(|l| l.raw.as_str()).collect();
        assert!(
            !quiet.iter().any(|l| l.command.starts_with('4')),
            "{}: {errors:?}",
            srv.label()
        );
        let got = b.sync();
        assert!(
            !got.iter().any(|l| l.is("NOTICE") || l.is("PRIVMSG")),
            "{got:?}"
        );
        srv.stop();
    }
}

#[test]
fn echo_message_server_time_and_client_tags() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let mut a = srv.connect_on(0);
        a.register_with_caps("alice", "echo-message server-time message-tags");
        let mut b = srv.connect_on(1);
        b.register_with_caps("bob", "server-time");
        let mut c = srv.register_on(2, "carol");
        for x in [&mut a, &mut b, &mut c] {
            x.join("#tags");
        }
        a.sync();
        b.sync();
        a.send("@+draft/react=\\:) PRIVMSG #tags :tagged");
        let echo = a.until("PRIVMSG", |l| l.is("PRIVMSG")).0;
        assert_eq!(echo.last(), "tagged", "{}", srv.label());
        assert_eq!(echo.tag("+draft/react"), Some(";)"), "{}", echo.raw);
        let time = echo.tag("time").expect("server-time tag").to_string();
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
        let at_b = b.until("PRIVMSG", |l| l.is("PRIVMSG")).0;
        assert_eq!(
            at_b.tag("time"),
            Some(time.as_str()),
            "one time for everyone"
        );
        assert_eq!(at_b.tag("+draft/react"), None, "bob lacks message-tags");
        let at_c = c.until("PRIVMSG", |l| l.is("PRIVMSG")).0;
        assert!(at_c.tags.is_empty(), "{}", at_c.raw);
        // Private messages are echoed too.
        a.send("PRIVMSG carol :direct");
        let echo = a.until("PRIVMSG", |l| l.is("PRIVMSG")).0;
        assert_eq!((echo.params[0].as_str(), echo.last()), ("carol", "direct"));
        assert_eq!(c.until("PRIVMSG", |l| l.is("PRIVMSG")).0.last(), "direct");
        srv.stop();
    }
}

#[test]
fn quit_and_nick_reach_channel_members_once() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(1, "bob");
        let mut c = srv.register_on(3, "carol");
        for chan in ["#one", "#two"] {
            a.join(chan);
            b.join(chan);
        }
        c.join("#other");
        a.sync();
        b.sync();
        // Two shared channels, one NICK line.
        a.send("NICK alicia");
        let own = a.expect("NICK");
        assert_eq!((own.nick(), own.last()), (Some("alice"), "alicia"));
        a.sync();
        let seen = b.sync();
        let nicks: Vec<_> = seen.iter().filter(|l| l.is("NICK")).collect();
        assert_eq!(nicks.len(), 1, "{}: {seen:?}", srv.label());
        assert_eq!(nicks[0].last(), "alicia");
        assert!(
            !c.sync().iter().any(|l| l.is("NICK")),
            "carol shares no channel"
        );
        b.send("NAMES #one");
        let (_, lines) = b.until("366", |l| l.is("366"));
        assert!(lines
            .iter()
            .any(|l| l.is("353") && l.last().contains("@alicia")));
        // The new nick receives, the old one is gone.
        b.send("PRIVMSG alicia :new you");
        assert_eq!(a.until("PRIVMSG", |l| l.is("PRIVMSG")).0.last(), "new you");
        b.send("PRIVMSG alice :old you");
        b.expect("401");
        // QUIT: one line per member, with the reason; the quitter gets ERROR.
        a.send("PRIVMSG #one :last words");
        a.send("QUIT :gone fishing");
        let lines = a.until_closed();
        let err = lines.last().expect("ERROR");
        assert!(
            err.is("ERROR") && err.last().contains("Quit: gone fishing"),
            "{}",
            err.raw
        );
        let (quit, before) = b.until("QUIT", |l| l.is("QUIT"));
        assert!(
            before.iter().any(|l| l.last() == "last words"),
            "{}: the message comes before the QUIT: {before:?}",
            srv.label()
        );
        assert_eq!(
            (quit.nick(), quit.last()),
            (Some("alicia"), "Quit: gone fishing")
        );
        let after = b.sync();
        assert!(!after.iter().any(|l| l.is("QUIT")), "{after:?}");
        // A dropped connection is a QUIT too.
        let mut d = srv.register_on(2, "dave");
        d.join("#one");
        b.expect("JOIN");
        drop(d);
        let quit = b.until("QUIT", |l| l.is("QUIT")).0;
        assert_eq!(quit.nick(), Some("dave"));
        b.send("NAMES #one");
        let (_, lines) = b.until("366", |l| l.is("366"));
        let names: Vec<&str> = lines
            .iter()
            .filter(|l| l.is("353"))
            .map(|l| l.last())
            .collect();
        assert_eq!(
            names,
            ["bob"],
            "{}: only bob is left (ops are not passed on)",
            srv.label()
        );
        srv.stop();
    }
}

/// A nick held by a connection that has not completed registration is nobody
/// yet: messages to it draw 401 (and reach it only once it is registered).
#[test]
fn a_claimed_but_unregistered_nick_is_no_such_nick() {
    for (io, shards) in matrix() {
        let srv = TestServer::start(io, shards);
        let mut a = srv.register_on(0, "alice");
        let mut pending = srv.connect_on(1);
        pending.send("NICK pending");
        pending.sync();
        a.send("NICK pending");
        a.expect("433");
        a.send("PRIVMSG pending :too early");
        assert_eq!(a.expect("401").params[1], "pending", "{}", srv.label());
        a.send("WHOIS pending");
        assert_eq!(a.expect("401").params[1], "pending");
        a.expect("318");
        let early = pending.sync();
        assert!(
            !early.iter().any(|l| l.is("PRIVMSG")),
            "{}: {early:?}",
            srv.label()
        );
        pending.send("USER p 0 * :P");
        pending.until("422", |l| l.is("422"));
        a.send("PRIVMSG pending :now");
        let m = pending.until("PRIVMSG", |l| l.is("PRIVMSG")).0;
        assert_eq!(m.last(), "now", "{}", srv.label());
        srv.stop();
    }
}
