//! The admin endpoint of the chat server: `/metrics` over real HTTP shows users,
//! channels owned, commands in and lines delivered per shard exactly as a little
//! traffic makes them, the framework's byte counters, and cross-shard mail at 4
//! shards (none at 1). Both backends, 1 and 4 shards.

mod common;

use std::{
    collections::HashMap,
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{scrape, sync_all, test_config, TestServer, SHARD_COUNTS, WAIT};
use shardline::{Io, Server};
use shardline_chat::casemap::owner_of;

/// `name`'s value per shard (fails if a shard's sample is missing).
fn per_shard(s: &HashMap<String, f64>, name: &str, shards: usize, label: &str) -> Vec<u64> {
    (0..shards)
        .map(|i| {
            let key = format!("{name}{{shard=\"{i}\"}}");
            let v = s
                .get(&key)
                .unwrap_or_else(|| panic!("{label}: no {key} in {s:#?}"));
            *v as u64
        })
        .collect()
}

/// The total of `name` over every sample (any labels).
fn total(s: &HashMap<String, f64>, name: &str) -> u64 {
    s.iter()
        .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| *v as u64)
        .sum()
}

/// Adds `n` at `shard` in a per-shard tally.
fn tally(counts: &mut [u64], shard: usize, n: u64) {
    counts[shard] += n;
}

fn metrics_follow_the_traffic(io: Io) {
    for shards in SHARD_COUNTS {
        let mut config = test_config();
        config.server.admin_listen = Some("127.0.0.1:0".parse().expect("literal"));
        let srv = TestServer::start_with(io, shards, config);
        let label = srv.label();
        let admin = srv.admin_addr().expect("admin_listen set");

        let s = scrape(admin, &label);
        assert_eq!(s.get("shardline_shards"), Some(&(shards as f64)), "{label}");
        for name in [
            "shardline_chat_users",
            "shardline_chat_clients",
            "shardline_chat_channels",
            "shardline_chat_commands_total",
            "shardline_chat_deliveries_total",
            "shardline_chat_registrations_total",
        ] {
            assert_eq!(
                per_shard(&s, name, shards, &label),
                vec![0; shards],
                "{label}: {name}"
            );
        }

        let mut a = srv.connect();
        let mut b = srv.connect();
        let mut c = srv.connect();
        a.register("alice");
        b.register("bob");
        c.register("carol");
        a.join("#one");
        b.join("#one");
        c.join("#two");
        a.join("#three");
        sync_all([&mut a, &mut b, &mut c]);

        let mut users = vec![0u64; shards];
        let mut commands = vec![0u64; shards];
        for x in [&a, &b, &c] {
            tally(&mut users, x.shard, 1);
            tally(&mut commands, x.shard, x.sent_lines);
        }
        let mut channels = vec![0u64; shards];
        for chan in ["#one", "#two", "#three"] {
            tally(&mut channels, owner_of(chan, shards), 1);
        }
        // JOIN lines: alice's to alice, bob's to alice and bob, carol's to carol,
        // alice's second to alice.
        let mut deliveries = vec![0u64; shards];
        for x in [&a, &a, &b, &c, &a] {
            tally(&mut deliveries, x.shard, 1);
        }
        let s = scrape(admin, &label);
        let at = |name: &str| per_shard(&s, name, shards, &label);
        assert_eq!(at("shardline_chat_users"), users, "{label}");
        assert_eq!(at("shardline_chat_clients"), users, "{label}");
        assert_eq!(at("shardline_chat_registrations_total"), users, "{label}");
        assert_eq!(at("shardline_chat_channels"), channels, "{label}");
        assert_eq!(at("shardline_chat_commands_total"), commands, "{label}");
        assert_eq!(at("shardline_chat_deliveries_total"), deliveries, "{label}");
        assert_eq!(at("shardline_connections"), users, "{label}");
        let sent = a.sent_bytes + b.sent_bytes + c.sent_bytes;
        assert_eq!(total(&s, "shardline_received_bytes_total"), sent, "{label}");
        assert!(total(&s, "shardline_sent_bytes_total") > 0, "{label}");
        let mail = total(&s, "shardline_chat_mail_received_total");
        if shards == 1 {
            assert_eq!(mail, 0, "{label}: one shard has no cross-shard mail");
        } else {
            // Each registration asks every other shard for LUSERS counts, which
            // answer: at least 3 clients x 3 shards requests and as many replies.
            let requests = (0..shards)
                .map(|i| {
                    s.get(&format!(
                        "shardline_chat_mail_received_total{{shard=\"{i}\",kind=\"request\"}}"
                    ))
                    .copied()
                    .unwrap_or_else(|| panic!("{label}: request mail of shard {i}"))
                        as u64
                })
                .sum::<u64>();
            assert!(requests >= 9 && mail >= 18, "{label}: {requests} {mail}");
        }

        // Messages: 5 to #one and 1 private, all delivered to bob.
        let (before_a, before_b) = (a.sent_lines, b.sent_lines);
        for i in 0..5 {
            a.send(&format!("PRIVMSG #one :hello {i}"));
        }
        a.send("PRIVMSG bob :psst");
        // Different targets, different owners: no order between the two kinds.
        let (mut in_channel, mut private) = (0, 0);
        b.until("5 channel messages and 1 private", |l| {
            if l.is("PRIVMSG") {
                match l.params.first().map(String::as_str) {
                    Some("#one") => in_channel += 1,
                    Some("bob") => private += 1,
                    _ => {}
                }
            }
            in_channel == 5 && private == 1
        });
        a.sync();
        b.sync();
        tally(&mut deliveries, b.shard, 6);
        tally(&mut commands, a.shard, a.sent_lines - before_a);
        tally(&mut commands, b.shard, b.sent_lines - before_b);
        let s = scrape(admin, &label);
        let at = |name: &str| per_shard(&s, name, shards, &label);
        assert_eq!(at("shardline_chat_deliveries_total"), deliveries, "{label}");
        assert_eq!(at("shardline_chat_commands_total"), commands, "{label}");
        let sent = a.sent_bytes + b.sent_bytes + c.sent_bytes;
        assert_eq!(total(&s, "shardline_received_bytes_total"), sent, "{label}");

        // carol leaves: one user fewer on her shard, #two gone from its owner.
        c.send("QUIT :bye");
        tally(&mut commands, c.shard, 1);
        users[c.shard] -= 1;
        channels[owner_of("#two", shards)] -= 1;
        let deadline = Instant::now() + WAIT;
        loop {
            let s = scrape(admin, &label);
            let at = |name: &str| per_shard(&s, name, shards, &label);
            let now = (
                at("shardline_chat_users"),
                at("shardline_chat_clients"),
                at("shardline_chat_channels"),
                at("shardline_chat_commands_total"),
            );
            let want = (
                users.clone(),
                users.clone(),
                channels.clone(),
                commands.clone(),
            );
            if now == want {
                assert_eq!(total(&s, "shardline_chat_users"), 2, "{label}");
                assert_eq!(total(&s, "shardline_chat_channels"), 2, "{label}");
                assert_eq!(
                    at("shardline_chat_registrations_total").iter().sum::<u64>(),
                    3,
                    "{label}: a counter never goes down"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{label}: after QUIT got {now:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop((a, b, c));
        srv.stop();
        assert!(
            TcpStream::connect(admin).is_err(),
            "{label}: admin endpoint stopped with the server"
        );
    }
}

fn no_admin_endpoint_unless_asked(io: Io) {
    let data = common::TempDir::new("no-admin");
    let mut config = test_config();
    config.storage.dir = Some(data.path().to_path_buf());
    let server = shardline_chat::build(
        Server::builder()
            .io(io)
            .shards(1)
            .pin(false)
            .listen("127.0.0.1:0".parse().expect("literal")),
        config,
    )
    .expect("valid config")
    .start()
    .expect("server starts");
    assert_eq!(server.admin_addr(), None, "{io}");
    server.shutdown().expect("clean shutdown");
}

shardline::per_backend! {
    metrics_follow_the_traffic => metrics_follow_the_traffic;
    no_admin_endpoint_unless_asked => no_admin_endpoint_unless_asked;
}
