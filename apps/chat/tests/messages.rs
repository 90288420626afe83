//! PRIVMSG and NOTICE to channels and nicks between clients on different shards,
//! IRCv3 tags and echo, QUIT and NICK seen by channel members, and the refusal
//! numerics. Both backends, 1 and 4 shards.

mod common;

use common::{each_server, join_all, sync_all};
use shardline::Io;

fn channel_and_private_messages_cross_shards(io: Io) {
    each_server(io, |srv| {
        let [mut a, mut b, mut c] = srv.register_each(["alice", "bob", "carol"]);
        if srv.shards > 1 {
            assert_ne!(a.shard, b.shard);
            assert_ne!(b.shard, c.shard);
        }
        join_all("#room", [&mut a, &mut b, &mut c]);
        sync_all([&mut a, &mut b]);
        a.send("PRIVMSG #room :hello room");
        for x in [&mut b, &mut c] {
            let m = x.expect("PRIVMSG");
            assert_eq!(m.source.as_deref(), Some("alice!~alice@127.0.0.1"));
            assert_eq!(m.params, ["#room", "hello room"], "{}", srv.label());
        }
        // No echo without echo-message.
        a.sync_without("PRIVMSG");
        b.send("NOTICE #ROOM :a notice");
        let n = a.expect("NOTICE");
        assert_eq!(n.params, ["#ROOM", "a notice"]);
        b.send("PRIVMSG Alice :psst");
        let m = a.expect("PRIVMSG");
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
        assert_eq!(b.expect("NOTICE").last(), "back");
        // Several targets at once.
        a.send("PRIVMSG bob,carol :to both");
        assert_eq!(b.expect("PRIVMSG").last(), "to both");
        assert_eq!(c.expect("PRIVMSG").last(), "to both");
    });
}

fn message_refusals(io: Io) {
    each_server(io, |srv| {
        let [mut a, mut b] = srv.register_each(["alice", "bob"]);
        b.join("#closed");
        a.send("PRIVMSG");
        assert_eq!(a.expect("411").params[0], "alice");
        a.send("PRIVMSG bob");
        a.expect("412");
        a.send("PRIVMSG bob :");
        a.expect("412");
        a.send_expect("PRIVMSG nobody :hi", "401", "nobody");
        a.send_expect("PRIVMSG #nowhere :hi", "403", "#nowhere");
        // +n: outsiders cannot speak in a channel.
        a.send_expect("PRIVMSG #closed :let me in", "404", "#closed");
        a.send_expect("PRIVMSG a,b,c,d,e :many", "407", "e");
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
    });
}

fn echo_message_server_time_and_client_tags(io: Io) {
    each_server(io, |srv| {
        let mut a = srv.connect_on(0);
        a.register_with_caps("alice", "echo-message server-time message-tags");
        let mut b = srv.connect_on(1);
        b.register_with_caps("bob", "server-time");
        let mut c = srv.register_on(2, "carol");
        join_all("#tags", [&mut a, &mut b, &mut c]);
        sync_all([&mut a, &mut b]);
        a.send("@+draft/react=\\:) PRIVMSG #tags :tagged");
        let echo = a.expect("PRIVMSG");
        assert_eq!(echo.last(), "tagged", "{}", srv.label());
        assert_eq!(echo.tag("+draft/react"), Some(";)"), "{}", echo.raw);
        let time = echo.tag("time").expect("server-time tag").to_string();
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
        let at_b = b.expect("PRIVMSG");
        assert_eq!(
            at_b.tag("time"),
            Some(time.as_str()),
            "one time for everyone"
        );
        assert_eq!(at_b.tag("+draft/react"), None, "bob lacks message-tags");
        let at_c = c.expect("PRIVMSG");
        assert!(at_c.tags.is_empty(), "{}", at_c.raw);
        // Private messages are echoed too.
        a.send("PRIVMSG carol :direct");
        let echo = a.expect("PRIVMSG");
        assert_eq!((echo.params[0].as_str(), echo.last()), ("carol", "direct"));
        assert_eq!(c.expect("PRIVMSG").last(), "direct");
    });
}

fn quit_and_nick_reach_channel_members_once(io: Io) {
    each_server(io, |srv| {
        let [mut a, mut b] = srv.register_each(["alice", "bob"]);
        let mut c = srv.register_on(3, "carol");
        for chan in ["#one", "#two"] {
            a.join(chan);
            b.join(chan);
        }
        c.join("#other");
        sync_all([&mut a, &mut b]);
        // Two shared channels, one NICK line.
        a.send("NICK alicia");
        let own = a.expect("NICK");
        assert_eq!((own.nick(), own.last()), (Some("alice"), "alicia"));
        a.sync();
        let seen = b.sync();
        let nicks: Vec<_> = seen.iter().filter(|l| l.is("NICK")).collect();
        assert_eq!(nicks.len(), 1, "{}: {seen:?}", srv.label());
        assert_eq!(nicks[0].last(), "alicia");
        // Carol shares no channel.
        c.sync_without("NICK");
        let names = b.names_lines("#one");
        assert!(names.iter().any(|n| n.contains("@alicia")), "{names:?}");
        // The new nick receives, the old one is gone.
        b.send("PRIVMSG alicia :new you");
        assert_eq!(a.expect("PRIVMSG").last(), "new you");
        b.send("PRIVMSG alice :old you");
        b.expect("401");
        // QUIT: one line per member, with the reason; the quitter gets ERROR.
        a.send("PRIVMSG #one :last words");
        a.send("QUIT :gone fishing");
        a.expect_error_close("Quit: gone fishing");
        let (quit, before) = b.until_command("QUIT");
        assert!(
            before.iter().any(|l| l.last() == "last words"),
            "{}: the message comes before the QUIT: {before:?}",
            srv.label()
        );
        assert_eq!(
            (quit.nick(), quit.last()),
            (Some("alicia"), "Quit: gone fishing")
        );
        b.sync_without("QUIT");
        // A dropped connection is a QUIT too.
        let mut d = srv.register_on(2, "dave");
        d.join("#one");
        b.expect("JOIN");
        drop(d);
        let quit = b.expect("QUIT");
        assert_eq!(quit.nick(), Some("dave"));
        assert_eq!(
            b.names_lines("#one"),
            ["bob"],
            "{}: only bob is left (ops are not passed on)",
            srv.label()
        );
    });
}

/// A nick held by a connection that has not completed registration is nobody
/// yet: messages to it draw 401 (and reach it only once it is registered).
fn a_claimed_but_unregistered_nick_is_no_such_nick(io: Io) {
    each_server(io, |srv| {
        let mut a = srv.register_on(0, "alice");
        let mut pending = srv.connect_on(1);
        pending.send("NICK pending");
        pending.sync();
        a.send("NICK pending");
        a.expect("433");
        a.send_expect("PRIVMSG pending :too early", "401", "pending");
        a.send_expect("WHOIS pending", "401", "pending");
        a.expect("318");
        pending.sync_without("PRIVMSG");
        pending.send("USER p 0 * :P");
        pending.expect("422");
        a.send("PRIVMSG pending :now");
        let m = pending.expect("PRIVMSG");
        assert_eq!(m.last(), "now", "{}", srv.label());
    });
}

shardline::per_backend! {
    channel_and_private_messages_cross_shards => channel_and_private_messages_cross_shards;
    message_refusals => message_refusals;
    echo_message_server_time_and_client_tags => echo_message_server_time_and_client_tags;
    quit_and_nick_reach_channel_members_once => quit_and_nick_reach_channel_members_once;
    a_claimed_but_unregistered_nick_is_no_such_nick => a_claimed_but_unregistered_nick_is_no_such_nick;
}
