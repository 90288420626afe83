//! The admin endpoint of the chat server: `/metrics` over real HTTP shows users,
//! channels owned, commands in and lines delivered per shard exactly as a little
//! traffic makes them, the framework's byte counters, and cross-shard mail at 4
//! shards (none at 1). Both backends, 1 and 4 shards.

mod common;

use std::{
    collections::HashMap,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::{Line, WAIT};
use shardline::{Metrics, RunningServer, Server};
use shardline_chat::casemap::owner_of;

/// A raw IRC client that knows its shard and counts what it sent.
struct Irc {
    stream: TcpStream,
    buf: Vec<u8>,
    shard: usize,
    sent: u64,
    lines: u64,
    label: String,
}

impl Irc {
    fn send(&mut self, line: &str) {
        let bytes = format!("{line}\r\n");
        self.stream
            .write_all(bytes.as_bytes())
            .unwrap_or_else(|e| panic!("{}: write: {e}", self.label));
        self.sent += bytes.len() as u64;
        self.lines += 1;
    }

    /// Reads lines until one satisfies `pred`; fails the test after `WAIT`.
    fn until(&mut self, what: &str, mut pred: impl FnMut(&Line) -> bool) -> Vec<Line> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=end).collect();
                let text = String::from_utf8_lossy(&raw);
                let line = Line::parse(text.trim_end_matches(['\r', '\n']));
                let done = pred(&line);
                seen.push(line);
                if done {
                    return seen;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}: waited for {what}; got {:#?}",
                self.label,
                seen.iter().map(|l| &l.raw).collect::<Vec<_>>()
            );
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("{}: closed while waiting for {what}", self.label),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("{}: read: {e}", self.label),
            }
        }
    }

    fn register(&mut self, nick: &str) {
        self.send(&format!("NICK {nick}"));
        self.send(&format!("USER {nick} 0 * :Test {nick}"));
        self.until("end of MOTD", |l| l.is("376") || l.is("422"));
    }

    fn join(&mut self, chan: &str) {
        self.send(&format!("JOIN {chan}"));
        self.until("366", |l| l.is("366"));
    }

    /// PING and wait for the PONG: every effect of what it sent before is done.
    fn sync(&mut self) -> Vec<Line> {
        self.send("PING :metrics-sync");
        self.until("PONG", |l| l.is("PONG") && l.last() == "metrics-sync")
    }
}

fn accepted(m: &Metrics, shards: usize) -> Vec<u64> {
    (0..shards)
        .map(|s| m.snapshot_shard(s).conns_accepted)
        .collect()
}

/// Connects one client and finds which shard took it.
fn connect(server: &RunningServer, shards: usize, label: &str) -> Irc {
    let m = server.metrics();
    let before = accepted(&m, shards);
    let stream = TcpStream::connect(server.local_addrs()[0]).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let deadline = Instant::now() + WAIT;
    loop {
        let now = accepted(&m, shards);
        if let Some(shard) = (0..shards).find(|&s| now[s] > before[s]) {
            return Irc {
                stream,
                buf: Vec::new(),
                shard,
                sent: 0,
                lines: 0,
                label: label.to_string(),
            };
        }
        assert!(Instant::now() < deadline, "{label}: no shard accepted");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One scrape of `/metrics`: `name{labels}` -> value.
fn scrape(admin: SocketAddr, label: &str) -> HashMap<String, f64> {
    let mut s = TcpStream::connect(admin).unwrap_or_else(|e| panic!("{label}: admin: {e}"));
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
    assert!(head.starts_with("HTTP/1.1 200 "), "{label}: {head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{label}: {head}"
    );
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample");
            (k.to_string(), v.parse().expect("value"))
        })
        .collect()
}

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

#[test]
fn metrics_follow_the_traffic() {
    for (io, shards) in common::matrix() {
        common::init_tracing();
        let label = format!("{io} x{shards}");
        let mut config = common::test_config();
        config.server.admin_listen = Some("127.0.0.1:0".parse().expect("literal"));
        let builder = Server::builder()
            .io(io)
            .shards(shards)
            .pin(false)
            .listen("127.0.0.1:0".parse().expect("literal"))
            .shutdown_timeout(Duration::from_secs(10));
        let server = shardline_chat::build(builder, config)
            .expect("valid config")
            .start()
            .expect("server starts");
        let admin = server.admin_addr().expect("admin_listen set");

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

        let mut a = connect(&server, shards, &format!("{label} a"));
        let mut b = connect(&server, shards, &format!("{label} b"));
        let mut c = connect(&server, shards, &format!("{label} c"));
        a.register("alice");
        b.register("bob");
        c.register("carol");
        a.join("#one");
        b.join("#one");
        c.join("#two");
        a.join("#three");
        for x in [&mut a, &mut b, &mut c] {
            x.sync();
        }

        let mut users = vec![0u64; shards];
        let mut commands = vec![0u64; shards];
        for x in [&a, &b, &c] {
            tally(&mut users, x.shard, 1);
            tally(&mut commands, x.shard, x.lines);
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
        let sent = a.sent + b.sent + c.sent;
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
        let (before_a, before_b) = (a.lines, b.lines);
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
        tally(&mut commands, a.shard, a.lines - before_a);
        tally(&mut commands, b.shard, b.lines - before_b);
        let s = scrape(admin, &label);
        let at = |name: &str| per_shard(&s, name, shards, &label);
        assert_eq!(at("shardline_chat_deliveries_total"), deliveries, "{label}");
        assert_eq!(at("shardline_chat_commands_total"), commands, "{label}");
        let sent = a.sent + b.sent + c.sent;
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
        server.shutdown().expect("clean shutdown");
        assert!(
            TcpStream::connect(admin).is_err(),
            "{label}: admin endpoint stopped with the server"
        );
    }
}

#[test]
fn no_admin_endpoint_unless_asked() {
    let server = shardline_chat::build(
        Server::builder()
            .shards(1)
            .pin(false)
            .listen("127.0.0.1:0".parse().expect("literal")),
        common::test_config(),
    )
    .expect("valid config")
    .start()
    .expect("server starts");
    assert_eq!(server.admin_addr(), None);
    server.shutdown().expect("clean shutdown");
}
