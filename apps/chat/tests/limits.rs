//! Connection limits and flood control over raw TCP: connections per IP counted
//! across shards, fake lag that delays (and never loses) a client's commands, and
//! "Excess Flood" past the backlog. Both backends, 1 and 4 shards.

mod common;

use std::io::Write;

use common::{each_server_with, join_all, numbered, numbered_privmsgs, Client};
use shardline::Io;

/// Sends `line` to a connection the server may already have closed.
fn try_send(c: &Client, line: &str) {
    let _ = c
        .try_clone_stream()
        .write_all(format!("{line}\r\n").as_bytes());
}

fn connections_per_ip_are_counted_across_shards(io: Io) {
    each_server_with(
        io,
        |config| config.limits.max_connections_per_ip = 3,
        |srv| {
            let label = srv.label();
            // connect() takes whichever shard the kernel picks: with 4 shards these
            // spread, and only a count kept in one place sees them all.
            let mut first = srv.connect();
            first.register("one");
            let mut kept: Vec<_> = (0..2)
                .map(|i| {
                    let mut c = srv.connect();
                    c.register(&format!("more{i}"));
                    c
                })
                .collect();
            let mut over = srv.connect();
            try_send(&over, "NICK over");
            let lines = over.expect_error_close("Too many connections from your host");
            assert!(!lines.iter().any(|l| l.is("001")), "{label}: {lines:?}");
            // A slot frees when a connection goes (asynchronously: retry, bounded).
            first.send("QUIT");
            first.until_closed();
            let mut admitted = false;
            for attempt in 0..50 {
                let mut c = srv.connect();
                try_send(&c, &format!("NICK late{attempt}\r\nUSER late 0 * :Late"));
                let (line, _) = c.until("001 or ERROR", |l| l.is("001") || l.is("ERROR"));
                if line.is("001") {
                    admitted = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            assert!(admitted, "{label}: a freed slot is usable again");
            kept[0].send("PING :alive");
            assert_eq!(kept[0].expect("PONG").last(), "alive");
        },
    );
}

fn fake_lag_delays_but_loses_nothing(io: Io) {
    each_server_with(
        io,
        |config| {
            config.flood.enabled = true;
            config.flood.command_cost_ms = 5;
            config.flood.max_lag_ms = 20;
        },
        |srv| {
            let label = srv.label();
            let [mut a, mut b] = srv.register_each(["alice", "bob"]);
            join_all("#f", [&mut a, &mut b]);
            a.sync();
            let n = 60;
            let mut burst = numbered_privmsgs("#f", n);
            burst.push_str("PING :done\r\n");
            a.send_raw(burst.as_bytes());
            assert_eq!(a.expect("PONG").last(), "done", "{label}");
            assert_eq!(b.privmsg_texts(n), numbered(n), "{label}");
        },
    );
}

fn lines_sent_before_a_half_close_still_run(io: Io) {
    each_server_with(
        io,
        |config| {
            // Every command past the first few waits 40 ms: the burst below is
            // still waiting when the client shuts its sending side down.
            config.flood.enabled = true;
            config.flood.command_cost_ms = 40;
            config.flood.max_lag_ms = 40;
        },
        |srv| {
            let label = srv.label();
            let mut b = srv.register_on(1, "bob");
            b.join("#f");
            let mut a = srv.register_on(0, "alice");
            a.join("#f");
            b.expect("JOIN");
            let n = 10;
            let mut burst = numbered_privmsgs("#f", n);
            burst.push_str("QUIT :last words\r\n");
            a.send_raw(burst.as_bytes());
            a.try_clone_stream()
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown");
            // Everything it said before, in order, then its QUIT with its reason.
            assert_eq!(b.privmsg_texts(n), numbered(n), "{label}");
            let quit = b.expect("QUIT");
            assert_eq!(quit.last(), "Quit: last words", "{label}: {}", quit.raw);
            let lines = a.until_closed();
            assert!(
                lines.last().is_some_and(|l| l.is("ERROR")),
                "{label}: {lines:?}"
            );
            // A half-close with nothing pending still ends the connection.
            let mut c = srv.register_on(0, "carol");
            c.join("#f");
            b.expect("JOIN");
            c.try_clone_stream()
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown");
            let quit = b.expect("QUIT");
            assert_eq!(quit.nick(), Some("carol"), "{label}");
            assert_eq!(quit.last(), "Remote host closed the connection", "{label}");
        },
    );
}

fn excess_flood_disconnects(io: Io) {
    each_server_with(
        io,
        |config| {
            config.flood.enabled = true;
            // Registration (NICK, USER), JOIN and one message run at once; after that
            // every command waits a minute, far longer than this test.
            config.flood.command_cost_ms = 60_000;
            config.flood.max_lag_ms = 180_000;
            config.flood.max_backlog_bytes = 1024;
        },
        |srv| {
            let label = srv.label();
            let mut b = srv.register_on(1, "bob");
            b.join("#f");
            let mut a = srv.register_on(0, "alice");
            a.join("#f");
            b.expect("JOIN");
            a.send("PRIVMSG #f :first");
            a.send("PRIVMSG #f :second");
            assert_eq!(b.expect("PRIVMSG").last(), "first");
            let filler = "PRIVMSG #f :filler filler filler filler filler\r\n".repeat(40);
            a.send_raw(filler.as_bytes());
            let lines = a.until_closed();
            let err = lines.last().expect("an ERROR before the close");
            assert!(err.last().contains("Excess Flood"), "{label}: {}", err.raw);
            // Nothing after "first" ran: bob sees the QUIT next.
            let (quit, before) = b.until_command("QUIT");
            assert!(
                quit.last().contains("Excess Flood"),
                "{label}: {}",
                quit.raw
            );
            assert!(
                !before.iter().any(|l| l.is("PRIVMSG")),
                "{label}: {before:?}"
            );
        },
    );
}

shardline::per_backend! {
    connections_per_ip_are_counted_across_shards => connections_per_ip_are_counted_across_shards;
    fake_lag_delays_but_loses_nothing => fake_lag_delays_but_loses_nothing;
    excess_flood_disconnects => excess_flood_disconnects;
    lines_sent_before_a_half_close_still_run => lines_sent_before_a_half_close_still_run;
}
