//! Cluster nodes through a real Redis (Debian `redis-server`, started by the
//! test on a port of its own): nodes see each other come and go (LINKS), a
//! node that stops renewing its lease leaves the view within the node
//! timeout, a second process with a node name in use stays out, and users
//! are told when the engine goes and comes back while the node keeps
//! serving. Both backends, 1 and 4 shards.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{free_port, test_config, Client, TempDir, TestServer, SHARD_COUNTS, WAIT};
use shardline::Io;
use shardline_chat::Config;

/// A redis-server of the test's own; killed when dropped.
struct Redis {
    child: Option<Child>,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Redis {
    fn start() -> Redis {
        let addr = free_port();
        let dir = TempDir::new("redis");
        let mut r = Redis {
            child: None,
            addr,
            _dir: dir,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self._dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; ./x deps installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A key's value (`GET`), if it has one.
    fn get(&self, key: &str) -> Option<String> {
        self.bulk(&["GET", key])
    }

    /// A command's bulk-string reply (None for a nil or other reply).
    fn bulk(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(cmd.as_bytes()).ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        // `$<len>\r\n<value>\r\n`, or `$-1\r\n`.
        loop {
            let n = s.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            let (head, rest) = text.split_once("\r\n")?;
            let len: i64 = head.strip_prefix('$')?.parse().ok()?;
            if len < 0 {
                return None;
            }
            if rest.len() >= len as usize + 2 {
                return Some(rest[..len as usize].to_string());
            }
        }
    }

    /// One command's reply's first line (None when unreachable).
    fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(cmd.as_bytes()).ok()?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        Some(text.lines().next()?.to_string())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn node_config(redis: &Redis, node: &str, server: &str) -> Config {
    let mut c = test_config();
    c.server.name = server.into();
    c.cluster.url = Some(format!("redis://{}", redis.addr));
    c.cluster.node_name = Some(node.into());
    c.cluster.node_timeout_secs = 2.0;
    c
}

/// The servers LINKS lists.
fn links(c: &mut Client) -> Vec<String> {
    c.send("LINKS");
    let (_, lines) = c.until("365", |l| l.is("365"));
    let mut servers: Vec<String> = lines
        .iter()
        .filter(|l| l.is("364"))
        .map(|l| l.params[1].clone())
        .collect();
    servers.sort();
    servers
}

/// Asks (`ask`) until the answer is `want` (bounded by `WAIT`); how long
/// that took.
fn poll_until<T, W>(what: &str, want: W, mut ask: impl FnMut() -> T) -> Duration
where
    T: PartialEq<W> + std::fmt::Debug,
    W: std::fmt::Debug + Copy,
{
    let started = Instant::now();
    loop {
        let got = ask();
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < WAIT,
            "{what}: got\n{got:?}\nwant\n{want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn links_until(c: &mut Client, what: &str, want: &[&str]) -> Duration {
    poll_until(&format!("{what}: LINKS"), want, || links(c))
}

fn membership(io: Io) {
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let a = TestServer::start_with(io, shards, node_config(&redis, "na", "a.test"));
        let label = a.label();
        let b = TestServer::start_with(io, shards, node_config(&redis, "nb", "b.test"));
        let mut ca = a.register_on(0, "watcher");
        let mut cb = b.register_on(shards - 1, "other");
        links_until(&mut ca, &label, &["a.test", "b.test"]);
        links_until(&mut cb, &label, &["a.test", "b.test"]);

        // A second process with a node name in use stays out of the view,
        // and its users hear why no nick can be theirs.
        let dup = TestServer::start_with(io, shards, node_config(&redis, "nb", "dup.test"));
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            links(&mut ca),
            ["a.test", "b.test"],
            "{label}: the duplicate took nb"
        );
        let mut d = dup.connect_on(0);
        d.send("NICK hopeful");
        d.send("USER hopeful 0 * :h");
        let (fail, _) = d.until("FAIL", |l| l.is("FAIL"));
        assert_eq!(
            fail.params[..3],
            ["NICK", "CLUSTER_NAME_IN_USE", "nb"],
            "{label}: {}",
            fail.raw
        );
        d.expect_about("433", "hopeful");
        drop(d);
        dup.stop();

        // A clean stop: gone at the next read.
        drop(cb);
        b.stop();
        let took = links_until(&mut ca, &label, &["a.test"]);
        assert!(
            took < Duration::from_secs(2),
            "{label}: {took:?} to see b stop"
        );

        // A node that stops renewing (dead, or cut from the engine): its
        // lease runs out and it leaves the view within the node timeout.
        assert_eq!(
            redis
                .command(&["SADD", "shardline:nodes", "ghost"])
                .as_deref(),
            Some(":1")
        );
        let set = redis.command(&[
            "SET",
            "shardline:node:ghost",
            "0123 ghost.test",
            "PX",
            "1400",
        ]);
        assert_eq!(set.as_deref(), Some("+OK"));
        links_until(&mut ca, &label, &["a.test", "ghost.test"]);
        let took = links_until(&mut ca, &label, &["a.test"]);
        assert!(
            took < Duration::from_secs(2),
            "{label}: {took:?} to see ghost go"
        );
        a.stop();
    }
}

fn engine_lost_and_back(io: Io) {
    for shards in SHARD_COUNTS {
        let mut redis = Redis::start();
        let a = TestServer::start_with(io, shards, node_config(&redis, "na", "a.test"));
        let label = a.label();
        let b = TestServer::start_with(io, shards, node_config(&redis, "nb", "b.test"));
        let mut users: Vec<Client> = (0..shards)
            .map(|s| a.register_on(s, &format!("user{s}")))
            .collect();
        links_until(&mut users[0], &label, &["a.test", "b.test"]);
        redis.kill();
        for u in &mut users {
            u.until("the lost NOTICE", |l| {
                l.is("NOTICE") && l.last().contains("Lost the cluster engine")
            });
        }
        // The node goes on serving its own users.
        users[0].send("JOIN #local");
        users[0].until("JOIN", |l| l.is("JOIN"));
        users[0].send("PING :still");
        users[0].until("PONG", |l| l.is("PONG"));
        redis.spawn();
        for u in &mut users {
            u.until("the back NOTICE", |l| {
                l.is("NOTICE") && l.last().contains("cluster engine is back")
            });
        }
        // The restarted engine is empty: both nodes register again.
        links_until(&mut users[0], &label, &["a.test", "b.test"]);
        drop(users);
        b.stop();
        a.stop();
    }
}

/// NICK `nick` from a registered client: whether it got the nick (the NICK
/// echo) rather than 433.
fn try_nick(c: &mut Client, nick: &str) -> bool {
    c.send(&format!("NICK {nick}"));
    let (l, _) = c.until("NICK or 433", |l| l.is("NICK") || l.is("433"));
    l.is("NICK")
}

/// Tries NICK until it is granted (a release on another node reaches the
/// engine a moment after the user there saw its own QUIT).
fn nick_until(c: &mut Client, nick: &str, what: &str) -> Duration {
    let started = Instant::now();
    while !try_nick(c, nick) {
        assert!(started.elapsed() < WAIT, "{what}: {nick} never became free");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

fn nicks_are_unique_across_nodes(io: Io) {
    for shards in SHARD_COUNTS {
        let mut redis = Redis::start();
        let a = TestServer::start_with(io, shards, node_config(&redis, "na", "a.test"));
        let label = a.label();
        let b = TestServer::start_with(io, shards, node_config(&redis, "nb", "b.test"));
        let mut alice = a.register_on(0, "alice");
        // Taken on A: refused on B, before and after registration, in any case.
        let mut fresh = b.connect_on(shards - 1);
        fresh.send("NICK Alice");
        fresh.send("USER x 0 * :x");
        let e = fresh.expect("433");
        assert_eq!(e.params[1], "Alice", "{label}");
        fresh.send("NICK bob");
        fresh.until("welcome", |l| l.is("001"));
        let mut bob = fresh;
        assert!(!try_nick(&mut bob, "ALICE"), "{label}: B gave alice away");
        assert!(!try_nick(&mut alice, "bob"), "{label}: A gave bob away");
        // Freed by QUIT on A: free on B.
        alice.send("QUIT :bye");
        alice.until("ERROR", |l| l.is("ERROR"));
        let took = nick_until(&mut bob, "alice", &label);
        assert!(took < Duration::from_secs(2), "{label}: {took:?}");
        assert!(
            try_nick(&mut bob, "bob"),
            "{label}: bob released by the change"
        );

        // Both nodes lose the engine; each gives "carol" to a user of its
        // own. When it is back one claim wins and the other holder is renamed.
        let mut c1 = a.register_on(0, "c1");
        let mut c2 = b.register_on(0, "c2");
        redis.kill();
        for c in [&mut c1, &mut c2] {
            c.until("lost", |l| {
                l.is("NOTICE") && l.last().contains("Lost the cluster engine")
            });
        }
        assert!(
            try_nick(&mut c1, "carol"),
            "{label}: A refuses carol while cut off"
        );
        assert!(
            try_nick(&mut c2, "carol"),
            "{label}: B refuses carol while cut off"
        );
        redis.spawn();
        for c in [&mut c1, &mut c2] {
            c.until("back", |l| l.is("NOTICE") && l.last().contains("is back"));
        }
        // Links retry every 2 s at most, and the guest nick's claim waits out
        // the 3 s settling after its shard's link is back (more under load:
        // the deadline only bounds a failure). Other lines (a link that
        // drops once more while the engine starts) are skipped.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut renamed = [false, false];
        while !renamed.contains(&true) && Instant::now() < deadline {
            for (i, c) in [&mut c1, &mut c2].into_iter().enumerate() {
                if let Some(l) = c.next_line_within(Duration::from_millis(20)) {
                    renamed[i] |= l.is("NICK") && l.last().starts_with("Guest");
                }
            }
        }
        assert!(renamed.contains(&true), "{label}: no carol gave way");
        // The other keeps it.
        let kept = if renamed[0] { &mut c2 } else { &mut c1 };
        let seen = kept.sync();
        assert!(
            !seen.iter().any(|l| l.is("NICK")),
            "{label}: both carols renamed: {seen:?}"
        );
        // The winner's claim is in the engine: a third client is refused —
        // also after the nodes' next reads of each other's leases (a node
        // that re-registered first once took the others, not yet
        // re-registered, for dead and released their re-asserted claims).
        let mut third = a.register_on(shards - 1, "third");
        assert!(!try_nick(&mut third, "carol"), "{label}");
        std::thread::sleep(Duration::from_millis(1200));
        assert!(
            !try_nick(&mut third, "carol"),
            "{label}: a live node's claim was reaped"
        );

        // A node that stops: its users' nicks are free elsewhere once its
        // lease is gone.
        let mut dave = b.register_on(0, "dave");
        assert!(!try_nick(&mut third, "dave"), "{label}");
        dave.send("PING :x");
        dave.until("PONG", |l| l.is("PONG"));
        drop((dave, bob, c2));
        b.stop();
        nick_until(&mut third, "dave", &format!("{label}: after b stopped"));

        // A node that dies holding a nick: free once its lease expires.
        for cmd in [
            &[
                "SET",
                "shardline:node:ghost",
                "0123 ghost.test",
                "PX",
                "1000",
            ][..],
            &["SADD", "shardline:nodes", "ghost"],
            &["SET", "shardline:nick:ghostnick", "ghost 0123"],
            &["SADD", "shardline:claims:ghost", "shardline:nick:ghostnick"],
        ] {
            assert!(
                redis.command(cmd).is_some_and(|r| !r.starts_with('-')),
                "{cmd:?}"
            );
        }
        assert!(
            !try_nick(&mut third, "ghostnick"),
            "{label}: ghost's claim ignored"
        );
        let took = nick_until(&mut third, "ghostnick", &label);
        assert!(took < Duration::from_secs(3), "{label}: {took:?}");
        drop((c1, third));
        a.stop();
    }
}

fn account_config(redis: &Redis, node: &str, server: &str) -> Config {
    let mut c = node_config(redis, node, server);
    c.accounts.registration = shardline_chat::config::Registration::Open;
    c.accounts.test_cheap_hashes = true;
    c.accounts.custom_account_name = true;
    c
}

/// SASL PLAIN as `account` with `password` on a fresh connection: whether
/// it logged in (903) rather than failed (904).
fn sasl_login(srv: &TestServer, shard: usize, nick: &str, account: &str, password: &str) -> bool {
    sasl_plain(srv, shard, nick, account, password, "").1
}

/// A connection on `shard` that asked for `sasl` (and `caps`), sent NICK
/// and USER and went through SASL PLAIN as `account`; whether it logged in
/// (903) rather than failed (904). Registration waits for CAP END.
fn sasl_plain(
    srv: &TestServer,
    shard: usize,
    nick: &str,
    account: &str,
    password: &str,
    caps: &str,
) -> (Client, bool) {
    use base64::Engine as _;
    let mut c = srv.connect_on(shard);
    let caps = [" ", caps].concat();
    c.send(&format!("CAP REQ :sasl{}", caps.trim_end()));
    c.send(&format!("NICK {nick}"));
    c.send(&format!("USER {nick} 0 * :x"));
    c.send("AUTHENTICATE PLAIN");
    c.until("+", |l| l.is("AUTHENTICATE"));
    let plain = base64::engine::general_purpose::STANDARD
        .encode(format!("{account}\0{account}\0{password}"));
    c.send(&format!("AUTHENTICATE {plain}"));
    let (l, _) = c.until("903 or 904", |l| l.is("903") || l.is("904"));
    let ok = l.is("903");
    (c, ok)
}

fn accounts_across_nodes(io: Io) {
    for shards in SHARD_COUNTS {
        let mut redis = Redis::start();
        let a = TestServer::start_with(io, shards, account_config(&redis, "na", "a.test"));
        let label = a.label();
        let b = TestServer::start_with(io, shards, account_config(&redis, "nb", "b.test"));
        // Registered on A.
        register_account(&a, "alice", "alice-password");
        // The name is taken on B too, in any case.
        let mut d = b.connect_on(shards - 1);
        d.send("NICK dave");
        d.send("REGISTER ALICE * :another-password");
        let (l, _) = d.until("FAIL", |l| l.is("FAIL") || l.is("REGISTER"));
        assert_eq!(
            l.params[..2],
            ["REGISTER", "ACCOUNT_EXISTS"],
            "{label}: {}",
            l.raw
        );
        // A login on B with A's account; a wrong password fails.
        assert!(
            sasl_login(&b, 0, "x1", "alice", "alice-password"),
            "{label}: login on B"
        );
        assert!(
            !sasl_login(&b, 0, "x2", "alice", "wrong-password"),
            "{label}"
        );
        assert!(
            !sasl_login(&b, 0, "x3", "nobody", "alice-password"),
            "{label}"
        );
        // The engine restarts empty: A puts its accounts back.
        redis.kill();
        redis.spawn();
        let started = Instant::now();
        while !sasl_login(&b, shards - 1, "x4", "alice", "alice-password") {
            assert!(
                started.elapsed() < WAIT,
                "{label}: A's account never back in the engine"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(d);
        b.stop();
        a.stop();
    }
}

/// Three nodes, users on each in one channel: JOIN and PART are seen across
/// nodes, NAMES lists the other nodes' members, and three senders' messages
/// (one per node, sent at once) reach every member in one order.
fn channels_across_nodes(io: Io) {
    const N: usize = 200;
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let nodes: Vec<TestServer> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                TestServer::start_with(io, shards, node_config(&redis, n, &format!("{n}.test")))
            })
            .collect();
        let label = nodes[0].label();
        let mut watch_a = nodes[0].register_on(0, "watcha");
        links_until(&mut watch_a, &label, &["a.test", "b.test", "c.test"]);
        let mut senders: Vec<Client> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| n.register_on(i % shards, &format!("s{i}")))
            .collect();
        let mut watch_c = nodes[2].register_on(shards - 1, "watchc");
        for c in std::iter::once(&mut watch_a)
            .chain(senders.iter_mut())
            .chain(std::iter::once(&mut watch_c))
        {
            c.send("JOIN #room");
            c.until("366", |l| l.is("366"));
        }
        // watch_a saw everyone who joined after it, from every node.
        let mut joined = Vec::new();
        while joined.len() < 4 {
            let l = watch_a.next_line();
            if l.is("JOIN") {
                joined.push(l.nick().unwrap_or("").to_string());
            }
        }
        assert_eq!(joined, ["s0", "s1", "s2", "watchc"], "{label}");
        let names = watch_c.names("#room");
        let mut sorted: Vec<String> = names
            .iter()
            .map(|n| n.trim_start_matches(['@', '+']).to_string())
            .collect();
        sorted.sort();
        assert_eq!(
            sorted,
            ["s0", "s1", "s2", "watcha", "watchc"],
            "{label}: {names:?}"
        );

        for i in 0..N {
            for (s, c) in senders.iter_mut().enumerate() {
                c.send(&format!("PRIVMSG #room :s{s} {i}"));
            }
        }
        let order_a = watch_a.privmsg_texts(3 * N);
        let order_c = watch_c.privmsg_texts(3 * N);
        assert_eq!(order_a, order_c, "{label}: two members, two orders");
        for s in 0..3 {
            let mine: Vec<&String> = order_a
                .iter()
                .filter(|t| t.starts_with(&format!("s{s} ")))
                .collect();
            let want: Vec<String> = (0..N).map(|i| format!("s{s} {i}")).collect();
            assert_eq!(mine.len(), N, "{label}");
            assert!(
                mine.iter().zip(&want).all(|(a, b)| *a == b),
                "{label}: s{s} out of order"
            );
        }
        // Each sender sees the others' messages in that same order.
        for (s, c) in senders.iter_mut().enumerate() {
            let got = c.privmsg_texts(2 * N);
            let want: Vec<String> = order_a
                .iter()
                .filter(|t| !t.starts_with(&format!("s{s} ")))
                .cloned()
                .collect();
            assert_eq!(got, want, "{label}: s{s}'s order differs");
        }
        // History is cluster-wide: a new member on c reads the latest
        // messages, whichever node they were said on, in the same order.
        let mut hist = nodes[2].connect_on(0);
        hist.send("CAP REQ :batch draft/chathistory");
        hist.send("CAP END");
        hist.register("hist");
        hist.send("JOIN #room");
        hist.until("366", |l| l.is("366"));
        hist.send("CHATHISTORY LATEST #room * 10");
        let (first, _) = hist.until("BATCH +", |l| l.is("BATCH") && l.params[0].starts_with('+'));
        let id = first.params[0][1..].to_string();
        let mut texts = Vec::new();
        loop {
            let l = hist.next_line();
            if l.is("BATCH") && l.params[0] == format!("-{id}") {
                break;
            }
            if l.is("PRIVMSG") {
                texts.push(l.last().to_string());
            }
        }
        assert_eq!(texts, order_a[3 * N - 10..], "{label}: history on c");
        // A PART on b reaches a and c.
        senders[1].send("PART #room :bye");
        for w in [&mut watch_a, &mut watch_c] {
            let (l, _) = w.until("PART", |l| l.is("PART"));
            assert_eq!(l.nick(), Some("s1"), "{label}");
            assert_eq!(l.last(), "bye", "{label}");
        }
        // A QUIT on c reaches a.
        senders[2].send("QUIT :gone");
        let (l, _) = watch_a.until("QUIT", |l| l.is("QUIT"));
        assert_eq!((l.nick(), l.last()), (Some("s2"), "Quit: gone"), "{label}");
        drop((watch_a, watch_c, senders));
        for n in nodes {
            n.stop();
        }
    }
}

/// Private messages reach a user of another node (PRIVMSG, NOTICE, any
/// case of the nick, in order, with the sender's echo); a nick nobody holds
/// gets 401; a nick whose claim names another node that no longer has the
/// user (a stale claim, planted here) comes back as 401 too (the bounce).
fn private_messages_across_nodes(io: Io) {
    const N: usize = 100;
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let a = TestServer::start_with(io, shards, node_config(&redis, "a", "a.test"));
        let b = TestServer::start_with(io, shards, node_config(&redis, "b", "b.test"));
        let label = a.label();
        let mut alice = a.connect_on(0);
        alice.register_with_caps("alice", "echo-message message-tags");
        let mut bob = b.register_on(shards - 1, "bob");
        links_until(&mut alice, &label, &["a.test", "b.test"]);

        alice.send("PRIVMSG BoB :hello bob");
        let (echo, _) = alice.until("echo", |l| l.is("PRIVMSG"));
        assert_eq!(
            (echo.nick(), echo.last()),
            (Some("alice"), "hello bob"),
            "{label}"
        );
        let (got, _) = bob.until("PRIVMSG", |l| l.is("PRIVMSG"));
        assert_eq!(
            (got.nick(), got.params[0].as_str(), got.last()),
            (Some("alice"), "BoB", "hello bob"),
            "{label}: {}",
            got.raw
        );
        assert!(echo.tag("msgid").is_some(), "{label}: {}", echo.raw);

        bob.send("NOTICE alice :hi alice");
        let (n, _) = alice.until("NOTICE", |l| l.is("NOTICE") && l.nick() == Some("bob"));
        assert_eq!(n.last(), "hi alice", "{label}");

        for i in 0..N {
            alice.send(&format!("PRIVMSG bob :m{i}"));
        }
        let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
        assert_eq!(bob.privmsg_texts(N), want, "{label}: order");
        assert_eq!(alice.privmsg_texts(N), want, "{label}: echoes");

        // bob is away: alice's PRIVMSG gets 301 from bob's node, a NOTICE
        // does not.
        bob.send("AWAY :out for lunch");
        bob.expect("306");
        alice.send("PRIVMSG bob :are you there?");
        let l = alice.expect_about("301", "bob");
        assert_eq!(l.last(), "out for lunch", "{label}: {}", l.raw);
        alice.send("NOTICE bob :fyi");
        assert_eq!(bob.privmsg_texts(1), ["are you there?"], "{label}");
        bob.until("NOTICE", |l| l.is("NOTICE") && l.last() == "fyi");
        alice.sync_without("301");
        bob.send("AWAY");
        bob.expect("305");

        alice.send_expect("PRIVMSG nobody :hello?", "401", "nobody");
        // NOTICE to nobody: no reply, as on a single node.
        alice.send("NOTICE nobody :hello?");
        alice.sync_without("401");

        // A claim of b's that b's users do not hold: b bounces the message.
        let lease = redis.get("shardline:node:b").expect("b's lease");
        let incarnation = lease.split(' ').next().unwrap().to_string();
        assert_eq!(
            redis
                .command(&["SET", "shardline:nick:ghost", &format!("b {incarnation}")])
                .as_deref(),
            Some("+OK")
        );
        alice.send("PRIVMSG ghost :boo");
        // Published (the echo), then bounced.
        alice.until("echo", |l| l.is("PRIVMSG") && l.last() == "boo");
        alice.expect_about("401", "ghost");
        // The same claim naming a process b is not (a stale incarnation):
        // refused at once.
        redis.command(&["SET", "shardline:nick:ghost", "b 1234"]);
        alice.send_expect("PRIVMSG ghost :boo", "401", "ghost");
        bob.sync_without("PRIVMSG");
        // A live node (its lease held) that is not subscribed: the message
        // cannot reach it, and the sender is told so.
        redis.command(&["SET", "shardline:node:zed", "zinc zed.test", "PX", "60000"]);
        redis.command(&["SET", "shardline:nick:zoe", "zed zinc"]);
        alice.send("PRIVMSG zoe :are you there?");
        let (l, seen) = alice.until("FAIL", |l| l.is("FAIL"));
        assert_eq!(
            l.params,
            [
                "PRIVMSG",
                "UNREACHABLE",
                "zoe",
                "Not delivered: that user's server is cut off from the cluster engine"
            ],
            "{label}"
        );
        assert!(
            !seen.iter().any(|l| l.is("PRIVMSG")),
            "{label}: echoed: {seen:?}"
        );
        redis.command(&["DEL", "shardline:node:zed", "shardline:nick:zoe"]);

        drop((alice, bob));
        a.stop();
        b.stop();
    }
}

/// Two channels owned by different shards where there are several (so the
/// per-channel events of one user's NICK or QUIT come from different owners).
fn two_channels(shards: usize) -> (String, String) {
    let first = "#one".to_string();
    let owner = shardline_chat::casemap::owner_of(&first, shards);
    let second = (0..1000)
        .map(|i| format!("#two{i}"))
        .find(|c| shards == 1 || shardline_chat::casemap::owner_of(c, shards) != owner)
        .expect("a channel of another owner");
    (first, second)
}

/// A user of another node who shares two channels with a local user: its
/// NICK change shows once, renames it in NAMES, and its later PART is
/// recognised under the new nick; its QUIT shows once; when its node stops,
/// its users' QUITs show once each.
fn nick_changes_and_quits_across_nodes(io: Io) {
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let a = TestServer::start_with(io, shards, node_config(&redis, "a", "a.test"));
        let b = TestServer::start_with(io, shards, node_config(&redis, "b", "b.test"));
        let label = a.label();
        let (one, two) = two_channels(shards);
        let mut alice = a.register_on(0, "alice");
        links_until(&mut alice, &label, &["a.test", "b.test"]);
        let mut remote: Vec<Client> = ["bob", "carol", "dave"]
            .iter()
            .enumerate()
            .map(|(i, n)| b.register_on(i % shards, n))
            .collect();
        alice.join(&one);
        alice.join(&two);
        for c in remote.iter_mut() {
            c.join(&one);
            c.join(&two);
        }
        // alice saw the six JOINs.
        let mut joins = 0;
        while joins < 6 {
            if alice.next_line().is("JOIN") {
                joins += 1;
            }
        }

        remote[0].send("NICK bobby");
        remote[0].until("own NICK", |l| l.is("NICK"));
        // Said after the NICK in each channel: once both arrived, every
        // NICK line there was has arrived.
        remote[0].send(&format!("PRIVMSG {one},{two} :marker"));
        let mut nicks = Vec::new();
        let mut markers = 0;
        while markers < 2 {
            let l = alice.next_line();
            if l.is("NICK") {
                nicks.push((l.nick().unwrap_or("").to_string(), l.last().to_string()));
            } else if l.is("PRIVMSG") && l.last() == "marker" {
                assert_eq!(l.nick(), Some("bobby"), "{label}");
                markers += 1;
            }
        }
        assert_eq!(nicks, [("bob".to_string(), "bobby".to_string())], "{label}");
        let mut names = alice.names(&one);
        names.sort();
        assert!(
            names.contains(&"bobby".to_string()) && !names.contains(&"bob".to_string()),
            "{label}: {names:?}"
        );
        remote[0].send(&format!("PART {one} :later"));
        let (l, _) = alice.until("PART", |l| l.is("PART"));
        assert_eq!(l.nick(), Some("bobby"), "{label}");
        let names = alice.names(&one);
        assert!(!names.iter().any(|n| n == "bobby"), "{label}: {names:?}");

        remote[1].send("QUIT :bye");
        let (l, _) = alice.until("QUIT", |l| l.is("QUIT"));
        assert_eq!(l.nick(), Some("carol"), "{label}");
        // dave speaks in both channels after carol's QUIT there.
        std::thread::sleep(Duration::from_millis(100));
        remote[2].send(&format!("PRIVMSG {one},{two} :after"));
        let mut markers = 0;
        while markers < 2 {
            let l = alice.next_line();
            assert!(!l.is("QUIT"), "{label}: a second QUIT line: {}", l.raw);
            if l.is("PRIVMSG") && l.last() == "after" {
                markers += 1;
            }
        }

        // b stops: bobby (in one channel) and dave (in two) each QUIT once.
        drop(remote);
        b.stop();
        let mut quits = Vec::new();
        while quits.len() < 2 {
            let l = alice.next_line();
            if l.is("QUIT") {
                quits.push(l.nick().unwrap_or("").to_string());
            }
        }
        quits.sort();
        assert_eq!(quits, ["bobby", "dave"], "{label}");
        std::thread::sleep(Duration::from_millis(300));
        alice.sync_without("QUIT");
        drop(alice);
        a.stop();
    }
}

/// NAMES of `chan` (with prefixes, sorted) until it is `want`.
fn names_until(c: &mut Client, label: &str, chan: &str, want: &[&str]) {
    poll_until(&format!("{label}: NAMES {chan}"), want, || {
        let mut got = c.names(chan);
        got.sort();
        got
    });
}

/// A node that starts after others learns who is already in their channels
/// (it asks them through each partition's engine channel); and when the
/// subscribers lose the engine for a moment, a PART made meanwhile (never
/// seen by the others) is repaired by the resync when they come back.
fn a_late_node_and_missed_events_resync(io: Io) {
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let a = TestServer::start_with(io, shards, node_config(&redis, "a", "a.test"));
        let b = TestServer::start_with(io, shards, node_config(&redis, "b", "b.test"));
        let label = a.label();
        let mut alice = a.register_on(0, "alice");
        let mut bob = b.register_on(shards - 1, "bob");
        links_until(&mut alice, &label, &["a.test", "b.test"]);
        alice.join("#late");
        bob.join("#late");
        names_until(&mut alice, &label, "#late", &["@alice", "bob"]);
        alice.send("TOPIC #late :set before c started");
        alice.send("MODE #late +l 10");
        bob.until("MODE +l", |l| l.is("MODE") && l.params[1] == "+l");

        let c = TestServer::start_with(io, shards, node_config(&redis, "c", "c.test"));
        let mut carol = c.register_on(0, "carol");
        links_until(&mut carol, &label, &["a.test", "b.test", "c.test"]);
        carol.join("#late");
        names_until(&mut carol, &label, "#late", &["@alice", "bob", "carol"]);
        // The channel's state came with the members.
        let l = carol.send_expect("TOPIC #late", "332", "#late");
        assert_eq!(l.last(), "set before c started", "{label}");
        let l = carol.send_expect("MODE #late", "324", "#late");
        assert_eq!(l.params[2..], ["+ntl", "10"], "{label}: {}", l.raw);

        // Every node's subscriber drops; bob leaves meanwhile.
        let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert!(
            killed.as_deref().is_some_and(|k| k.starts_with(':')),
            "{label}: {killed:?}"
        );
        bob.send("PART #late :meanwhile");
        bob.until("own PART", |l| l.is("PART"));
        for (who, cl) in [("alice", &mut alice), ("carol", &mut carol)] {
            let (l, _) = cl.until("bob's PART", |l| l.is("PART") && l.nick() == Some("bob"));
            assert_eq!(l.params[0], "#late", "{label}: {who}");
        }
        names_until(&mut alice, &label, "#late", &["@alice", "carol"]);
        names_until(&mut carol, &label, "#late", &["@alice", "carol"]);
        // Still one channel: messages flow both ways after the resync.
        alice.send("PRIVMSG #late :after the resync");
        let (l, _) = carol.until("PRIVMSG", |l| l.is("PRIVMSG"));
        assert_eq!(l.last(), "after the resync", "{label}");

        drop((alice, bob, carol));
        c.stop();
        b.stop();
        a.stop();
    }
}

/// A client asking for history (batch, chathistory, message-tags).
fn history_reader(srv: &TestServer, nick: &str) -> Client {
    let mut c = srv.connect_on(0);
    c.register_with_caps(nick, "batch draft/chathistory message-tags server-time");
    c
}

/// `CHATHISTORY LATEST <chan> * 100`: (msgid and time, text) of each
/// message.
fn history_of(c: &mut Client, chan: &str) -> Vec<(String, String)> {
    c.send(&format!("CHATHISTORY LATEST {chan} * 100"));
    let (first, _) = c.until("BATCH +", |l| l.is("BATCH") && l.params[0].starts_with('+'));
    let end = format!("-{}", &first.params[0][1..]);
    let mut got = Vec::new();
    loop {
        let l = c.next_line();
        if l.is("BATCH") && l.params[0] == end {
            return got;
        }
        if l.is("PRIVMSG") {
            let stamp = format!(
                "{} {}",
                l.tag("msgid").unwrap_or(""),
                l.tag("time").unwrap_or("")
            );
            got.push((stamp, l.last().to_string()));
        }
    }
}

/// Polls `c`'s history of `chan` until it is `want`.
fn history_until(c: &mut Client, what: &str, chan: &str, want: &[(String, String)]) {
    poll_until(&format!("{what}: history of {chan}"), want, || {
        history_of(c, chan)
    });
}

/// Every node shows the same CHATHISTORY: a node started after messages
/// were said places them in its history from the engine's stream (with the
/// msgids the others show), and so does a node whose subscriber was cut
/// while messages were said (it missed them live).
fn history_catches_up_across_nodes(io: Io) {
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let a = TestServer::start_with(io, shards, node_config(&redis, "a", "a.test"));
        let b = TestServer::start_with(io, shards, node_config(&redis, "b", "b.test"));
        let label = a.label();
        let mut alice = a.register_on(0, "alice");
        let mut bob = b.register_on(shards - 1, "bob");
        links_until(&mut alice, &label, &["a.test", "b.test"]);
        alice.join("#h");
        bob.join("#h");
        names_until(&mut alice, &label, "#h", &["@alice", "bob"]);
        for i in 0..5 {
            alice.send(&format!("PRIVMSG #h :before c {i}"));
            bob.send(&format!("PRIVMSG #h :bob before c {i}"));
        }
        assert_eq!(alice.privmsg_texts(5).len(), 5, "{label}");
        assert_eq!(bob.privmsg_texts(5).len(), 5, "{label}");
        let mut ra = history_reader(&a, "ra");
        let mut want = history_of(&mut ra, "#h");
        assert_eq!(want.len(), 10, "{label}: {want:?}");

        // A late node: the messages said before it started.
        let c = TestServer::start_with(io, shards, node_config(&redis, "c", "c.test"));
        let mut carol = c.register_on(0, "carol");
        links_until(&mut carol, &label, &["a.test", "b.test", "c.test"]);
        carol.join("#h");
        let mut rc = history_reader(&c, "rc");
        history_until(&mut rc, &format!("{label}: late node"), "#h", &want);

        // c's subscribers are cut (found by the links' names) while alice
        // talks: carol misses some live, and c's history has them after.
        let mut missed = false;
        for round in 0..5 {
            let list = redis.bulk(&["CLIENT", "LIST"]).expect("CLIENT LIST");
            let ids: Vec<&str> = list
                .lines()
                .filter(|l| l.contains(" name=c/") && l.contains("/events "))
                .filter_map(|l| l.split(' ').next()?.strip_prefix("id="))
                .collect();
            assert_eq!(ids.len(), shards, "{label}: c's subscribers in\n{list}");
            for id in ids {
                redis.command(&["CLIENT", "KILL", "ID", id]);
            }
            for i in 0..5 {
                alice.send(&format!("PRIVMSG #h :cut {round}.{i}"));
            }
            // Everything alice sent reached b; alice was warned of each
            // message c's subscriber was away for (so c never saw it live).
            assert_eq!(bob.privmsg_texts(5).len(), 5, "{label}");
            let warned = alice
                .sync()
                .iter()
                .any(|l| l.is("WARN") && l.params.get(1).is_some_and(|p| p == "PARTIAL_DELIVERY"));
            carol.sync();
            want = history_of(&mut ra, "#h");
            history_until(&mut rc, &format!("{label}: cut {round}"), "#h", &want);
            if warned {
                missed = true;
                break;
            }
        }
        assert!(missed, "{label}: carol never missed a message while cut");
        // And b's history is the same.
        let mut rb = history_reader(&b, "rb");
        history_until(&mut rb, &label, "#h", &want);
        drop((alice, bob, carol, ra, rb, rc));
        c.stop();
        b.stop();
        a.stop();
    }
}

/// A client logged in by SASL PLAIN as `account` (password `pw`), with
/// `caps` besides `sasl`.
fn logged_in(srv: &TestServer, nick: &str, account: &str, pw: &str, caps: &str) -> Client {
    let (mut c, ok) = sasl_plain(srv, 0, nick, account, pw, caps);
    assert!(ok, "{nick}: SASL PLAIN as {account} failed");
    c.send("CAP END");
    c.until("end of MOTD", |l| l.is("376") || l.is("422"));
    c
}

/// Registers account `name` on `srv`.
fn register_account(srv: &TestServer, name: &str, pw: &str) {
    let mut c = srv.connect_on(0);
    c.send(&format!("NICK {name}"));
    c.send(&format!("REGISTER {name} * :{pw}"));
    let (l, _) = c.until("REGISTER", |l| l.is("REGISTER") || l.is("FAIL"));
    assert!(l.is("REGISTER"), "{name}: {}", l.raw);
}

/// Private messages between two accounts on two nodes are in their
/// conversation's history on every node — the two nodes, a third where one
/// of them logs in too, and a node started after they were said — with the
/// same msgids, times and order.
fn conversations_across_nodes(io: Io) {
    const CAPS: &str = "batch draft/chathistory message-tags server-time";
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let a = TestServer::start_with(io, shards, account_config(&redis, "a", "a.test"));
        let b = TestServer::start_with(io, shards, account_config(&redis, "b", "b.test"));
        let c = TestServer::start_with(io, shards, account_config(&redis, "c", "c.test"));
        let label = a.label();
        register_account(&a, "alice", "alice-password");
        register_account(&b, "bob", "bob-password");
        let mut alice = logged_in(&a, "alice", "alice", "alice-password", CAPS);
        let mut bob = logged_in(&b, "bob", "bob", "bob-password", CAPS);
        links_until(&mut alice, &label, &["a.test", "b.test", "c.test"]);
        for i in 0..3 {
            alice.send(&format!("PRIVMSG bob :from alice {i}"));
            let (l, _) = bob.until("alice's message", |l| l.is("PRIVMSG"));
            assert_eq!(l.last(), format!("from alice {i}"), "{label}");
            bob.send(&format!("PRIVMSG alice :from bob {i}"));
            let (l, _) = alice.until("bob's message", |l| l.is("PRIVMSG"));
            assert_eq!(l.last(), format!("from bob {i}"), "{label}");
        }
        // Each reaches history when its event comes back from the engine.
        let started = Instant::now();
        let mut want = history_of(&mut alice, "bob");
        while want.len() < 6 && started.elapsed() < WAIT {
            std::thread::sleep(Duration::from_millis(50));
            want = history_of(&mut alice, "bob");
        }
        let texts: Vec<&str> = want.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            [
                "from alice 0",
                "from bob 0",
                "from alice 1",
                "from bob 1",
                "from alice 2",
                "from bob 2"
            ],
            "{label}: on a"
        );
        history_until(&mut bob, &format!("{label}: on b"), "alice", &want);
        let mut alice_c = logged_in(&c, "alice-c", "alice", "alice-password", CAPS);
        history_until(&mut alice_c, &format!("{label}: on c"), "bob", &want);
        // A node started afterwards catches up from the stream.
        let d = TestServer::start_with(io, shards, account_config(&redis, "d", "d.test"));
        let mut bob_d = logged_in(&d, "bob-d", "bob", "bob-password", CAPS);
        history_until(&mut bob_d, &format!("{label}: on d, late"), "alice", &want);
        drop((alice, bob, alice_c, bob_d));
        d.stop();
        c.stop();
        b.stop();
        a.stop();
    }
}

/// A node in the view whose subscriber is away (planted: a lease and a name
/// in the node set, nothing subscribed) misses channel messages: their
/// senders get `WARN PRIVMSG PARTIAL_DELIVERY`, and the node that is there
/// still gets them.
fn partial_delivery_is_reported(io: Io) {
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let a = TestServer::start_with(io, shards, node_config(&redis, "a", "a.test"));
        let b = TestServer::start_with(io, shards, node_config(&redis, "b", "b.test"));
        let label = a.label();
        let mut alice = a.register_on(0, "alice");
        let mut bob = b.register_on(shards - 1, "bob");
        links_until(&mut alice, &label, &["a.test", "b.test"]);
        alice.join("#p");
        bob.join("#p");
        alice.send("PRIVMSG #p :all here");
        bob.until("PRIVMSG", |l| l.is("PRIVMSG") && l.last() == "all here");
        alice.sync_without("WARN");

        redis.command(&["SADD", "shardline:nodes", "zed"]);
        redis.command(&["SET", "shardline:node:zed", "zinc zed.test", "PX", "60000"]);
        links_until(&mut alice, &label, &["a.test", "b.test", "zed.test"]);
        alice.send("PRIVMSG #p :zed is away");
        let (w, _) = alice.until("WARN", |l| l.is("WARN"));
        assert_eq!(
            w.params[..3],
            ["PRIVMSG", "PARTIAL_DELIVERY", "#p"],
            "{label}: {}",
            w.raw
        );
        assert!(w.last().contains("1 of the 3"), "{label}: {}", w.raw);
        bob.until("PRIVMSG", |l| l.is("PRIVMSG") && l.last() == "zed is away");
        // NOTICE too; TAGMSG quietly.
        alice.send("NOTICE #p :still away");
        let (w, _) = alice.until("WARN", |l| l.is("WARN"));
        assert_eq!(w.params[0], "NOTICE", "{label}");

        redis.command(&["DEL", "shardline:node:zed"]);
        links_until(&mut alice, &label, &["a.test", "b.test"]);
        alice.send("PRIVMSG #p :zed is gone");
        bob.until("PRIVMSG", |l| l.is("PRIVMSG") && l.last() == "zed is gone");
        alice.sync_without("WARN");
        drop((alice, bob));
        a.stop();
        b.stop();
    }
}

/// TOPIC and KICK across nodes: the creator shows as an operator on every
/// node; a topic set on one node shows (and is kept) on the others; an
/// operator kicks a member of another node, who is out of the channel there;
/// the checks (operator, +t) hold for the other node's members.
fn topic_and_kick_across_nodes(io: Io) {
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let a = TestServer::start_with(io, shards, node_config(&redis, "a", "a.test"));
        let b = TestServer::start_with(io, shards, node_config(&redis, "b", "b.test"));
        let label = a.label();
        let mut alice = a.register_on(0, "alice");
        let mut bob = b.register_on(0, "bob");
        let mut carol = b.register_on(shards - 1, "carol");
        links_until(&mut alice, &label, &["a.test", "b.test"]);
        alice.join("#t");
        bob.join("#t");
        carol.join("#t");
        assert_eq!(bob.names("#t"), ["@alice", "bob", "carol"], "{label}");

        bob.send_expect("TOPIC #t :mine", "482", "#t");
        alice.send("TOPIC #t :hello world");
        alice.until("own TOPIC", |l| l.is("TOPIC"));
        for c in [&mut bob, &mut carol] {
            let (l, _) = c.until("TOPIC", |l| l.is("TOPIC"));
            assert_eq!(
                (l.nick(), l.last()),
                (Some("alice"), "hello world"),
                "{label}"
            );
        }
        let l = bob.send_expect("TOPIC #t", "332", "#t");
        assert_eq!(l.last(), "hello world", "{label}");

        bob.send_expect("KICK #t alice :no", "482", "#t");
        alice.send("KICK #t bob :out you go");
        for c in [&mut alice, &mut bob, &mut carol] {
            let (l, _) = c.until("KICK", |l| l.is("KICK"));
            assert_eq!(
                (l.nick(), l.params[1].as_str(), l.last()),
                (Some("alice"), "bob", "out you go"),
                "{label}"
            );
        }
        bob.send_expect("PRIVMSG #t :still here?", "404", "#t");
        names_until(&mut alice, &label, "#t", &["@alice", "carol"]);
        names_until(&mut carol, &label, "#t", &["@alice", "carol"]);
        alice.send_expect("KICK #t nobody", "401", "nobody");

        drop((alice, bob, carol));
        a.stop();
        b.stop();
    }
}

/// MODE across nodes: +o/+v of another node's member, +k and +l set on one
/// node and enforced on the other, -o taking effect on the member's own
/// node; NAMES agrees everywhere.
fn modes_across_nodes(io: Io) {
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let a = TestServer::start_with(io, shards, node_config(&redis, "a", "a.test"));
        let b = TestServer::start_with(io, shards, node_config(&redis, "b", "b.test"));
        let label = a.label();
        let mut alice = a.register_on(0, "alice");
        let mut bob = b.register_on(0, "bob");
        let mut carol = b.register_on(shards - 1, "carol");
        links_until(&mut alice, &label, &["a.test", "b.test"]);
        alice.join("#m");
        bob.join("#m");
        carol.join("#m");

        alice.send("MODE #m +o bob");
        for c in [&mut alice, &mut bob, &mut carol] {
            let (l, _) = c.until("MODE", |l| l.is("MODE"));
            assert_eq!(l.params[1..], ["+o", "bob"], "{label}: {}", l.raw);
        }
        assert_eq!(bob.names("#m"), ["@alice", "@bob", "carol"], "{label}");
        assert_eq!(alice.names("#m"), ["@alice", "@bob", "carol"], "{label}");

        // bob, an operator now on his own node too, sets a key and a voice.
        bob.send("MODE #m +kv sesame carol");
        let (l, _) = alice.until("MODE", |l| l.is("MODE"));
        assert_eq!(
            l.params[1..],
            ["+kv", "sesame", "carol"],
            "{label}: {}",
            l.raw
        );
        assert_eq!(alice.names("#m"), ["+carol", "@alice", "@bob"], "{label}");
        let mut dave = a.register_on(shards - 1, "dave");
        dave.send_expect("JOIN #m", "475", "#m");
        dave.send("JOIN #m sesame");
        dave.until("366", |l| l.is("366"));
        // A limit of 4 with 4 members on two nodes: full for a fifth.
        alice.send("MODE #m +l 4");
        bob.until("MODE +l", |l| l.is("MODE") && l.params[1] == "+l");
        let mut erin = b.register_on(0, "erin");
        erin.send_expect("JOIN #m sesame", "471", "#m");

        alice.send("MODE #m -o bob");
        bob.until("MODE -o", |l| l.is("MODE") && l.params[1] == "-o");
        bob.send_expect("MODE #m +i", "482", "#m");
        assert_eq!(
            carol.names("#m"),
            ["+carol", "@alice", "bob", "dave"],
            "{label}"
        );

        drop((alice, bob, carol, dave, erin));
        a.stop();
        b.stop();
    }
}

/// INVITE of another node's user: the inviter gets 341, the invitee the
/// INVITE line, and the invitation lets it into the +i channel on its own
/// node (an uninvited user there gets 473); a member gets 443, nobody 401.
fn invite_across_nodes(io: Io) {
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let a = TestServer::start_with(io, shards, node_config(&redis, "a", "a.test"));
        let b = TestServer::start_with(io, shards, node_config(&redis, "b", "b.test"));
        let label = a.label();
        let mut alice = a.register_on(0, "alice");
        let mut bob = b.register_on(shards - 1, "bob");
        let mut carol = b.register_on(0, "carol");
        links_until(&mut alice, &label, &["a.test", "b.test"]);
        alice.join("#inv");
        alice.send("MODE #inv +i");
        alice.until("MODE", |l| l.is("MODE"));
        bob.send_expect("JOIN #inv", "473", "#inv");

        let l = alice.send_expect("INVITE BOB #inv", "341", "BOB");
        assert_eq!(l.params[2], "#inv", "{label}");
        let (l, _) = bob.until("INVITE", |l| l.is("INVITE"));
        assert_eq!(
            (l.nick(), l.params[0].as_str(), l.params[1].as_str()),
            (Some("alice"), "BOB", "#inv"),
            "{label}"
        );
        bob.join("#inv");
        carol.send_expect("JOIN #inv", "473", "#inv");
        alice.until("bob's JOIN", |l| l.is("JOIN") && l.nick() == Some("bob"));
        alice.send_expect("INVITE bob #inv", "443", "bob");
        alice.send_expect("INVITE nobody #inv", "401", "nobody");

        // invite-notify on both nodes: an INVITE of a user of the other
        // node (carol) and of one of this node (hal) reaches the members
        // with the cap on each node (erin on b, frank on a), once, and not
        // gus (no cap).
        let mut erin = b.connect_on(shards - 1);
        erin.register_with_caps("erin", "invite-notify");
        let mut frank = a.connect_on(shards - 1);
        frank.register_with_caps("frank", "invite-notify");
        let mut gus = b.register_on(0, "gus");
        let hal = a.register_on(0, "hal");
        alice.join("#open");
        for c in [&mut erin, &mut frank, &mut gus] {
            c.join("#open");
        }
        names_until(
            &mut alice,
            &label,
            "#open",
            &["@alice", "erin", "frank", "gus"],
        );
        for target in ["carol", "hal"] {
            alice.send_expect(&format!("INVITE {target} #open"), "341", target);
            for (who, c) in [("erin", &mut erin), ("frank", &mut frank)] {
                let (l, _) = c.until("invite-notify", |l| l.is("INVITE"));
                assert_eq!(
                    (l.nick(), l.params[0].as_str(), l.params[1].as_str()),
                    (Some("alice"), target, "#open"),
                    "{label}: {who}: {}",
                    l.raw
                );
                c.sync_without("INVITE");
            }
        }
        gus.sync_without("INVITE");
        drop((erin, frank, gus, hal));

        drop((alice, bob, carol));
        a.stop();
        b.stop();
    }
}

/// AWAY and SETNAME of another node's member reach the clients with the
/// cap for them, once however many channels they share, and nobody else.
fn notifications_across_nodes(io: Io) {
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let a = TestServer::start_with(io, shards, node_config(&redis, "a", "a.test"));
        let b = TestServer::start_with(io, shards, node_config(&redis, "b", "b.test"));
        let label = a.label();
        let (one, two) = two_channels(shards);
        let mut alice = a.connect_on(0);
        alice.register_with_caps("alice", "away-notify setname");
        let mut plain = a.register_on(shards - 1, "plain");
        let mut bob = b.connect_on(0);
        bob.register_with_caps("bob", "setname");
        links_until(&mut plain, &label, &["a.test", "b.test"]);
        for c in [&mut alice, &mut plain, &mut bob] {
            c.join(&one);
            c.join(&two);
        }
        bob.send("AWAY :lunch");
        bob.until("306", |l| l.is("306"));
        bob.send("SETNAME :Bob Builder");
        bob.until("own SETNAME", |l| l.is("SETNAME"));
        // Said after both in each channel: once both arrived, every line
        // of them there was has arrived.
        bob.send(&format!("PRIVMSG {one},{two} :marker"));
        for (c, want) in [
            (&mut alice, vec!["AWAY lunch", "SETNAME Bob Builder"]),
            (&mut plain, vec![]),
        ] {
            let mut got = Vec::new();
            let mut markers = 0;
            while markers < 2 {
                let l = c.next_line();
                if (l.is("AWAY") || l.is("SETNAME")) && l.nick() == Some("bob") {
                    got.push(format!("{} {}", l.command, l.last()));
                } else if l.is("PRIVMSG") && l.last() == "marker" {
                    markers += 1;
                }
            }
            assert_eq!(got, want, "{label}");
        }
        drop((alice, plain, bob));
        a.stop();
        b.stop();
    }
}

/// The engine stalls (SIGSTOP, shorter than half the node timeout, so the
/// link is kept): a sender flooding a channel with members on another node
/// is paced — the server stops reading it once its requests in flight are
/// waiting — instead of buffering without bound; when the engine goes on,
/// every message arrives on the other node, in order.
fn a_stalled_engine_paces_senders(io: Io) {
    // More than the kernel's socket buffers hold on both ends (~20 MB).
    const N: usize = 50_000;
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let mut ca = node_config(&redis, "na", "a.test");
        ca.cluster.node_timeout_secs = 10.0;
        let mut cb = node_config(&redis, "nb", "b.test");
        cb.cluster.node_timeout_secs = 10.0;
        let a = TestServer::start_with(io, shards, ca);
        let label = a.label();
        let b = TestServer::start_with(io, shards, cb);
        let mut sender = a.register_on(0, "flood");
        let mut receiver = b.register_on(shards - 1, "reader");
        links_until(&mut receiver, &label, &["a.test", "b.test"]);
        for c in [&mut receiver, &mut sender] {
            c.send("JOIN #flood");
            c.until("366", |l| l.is("366"));
        }
        receiver.until("flood's JOIN", |l| {
            l.is("JOIN") && l.nick() == Some("flood")
        });
        let pid = redis.child.as_ref().expect("running").id() as i32;
        // SAFETY: a signal to our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let mut stream = sender.try_clone_stream();
        stream.set_nonblocking(true).expect("nonblocking");
        let lines: Vec<Vec<u8>> = (0..N)
            .map(|i| format!("PRIVMSG #flood :message {i:05} {}\r\n", "x".repeat(380)).into_bytes())
            .collect();
        let all: Vec<u8> = lines.concat();
        let mut written = 0;
        let stop = Instant::now() + Duration::from_secs(2);
        while written < all.len() && Instant::now() < stop {
            match stream.write(&all[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("{label}: write: {e}"),
            }
        }
        assert!(
            written < all.len(),
            "{label}: the server took all {} bytes while the engine was stopped",
            all.len()
        );
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        // The rest from another thread while the reader reads (its send
        // queue would overflow otherwise).
        let rest = all[written..].to_vec();
        let writer = std::thread::spawn(move || {
            stream.set_nonblocking(false)?;
            stream.write_all(&rest)
        });
        let got = receiver.privmsg_texts(N);
        writer.join().expect("writer").expect("the rest written");
        for (i, t) in got.iter().enumerate() {
            assert!(
                t.starts_with(&format!("message {i:05} ")),
                "{label}: #{i} is {t:?}"
            );
        }
        drop((sender, receiver));
        b.stop();
        a.stop();
    }
}

/// The WHOIS lines of `nick` (sent by `c`): every line up to its 318.
fn whois(c: &mut Client, nick: &str) -> Vec<common::Line> {
    c.send(&format!("WHOIS {nick}"));
    let (end, mut lines) = c.until("318", |l| l.is("318"));
    lines.push(end);
    lines
}

fn codes(lines: &[common::Line]) -> Vec<&str> {
    lines.iter().map(|l| l.command.as_str()).collect()
}

/// WHOIS of a user of another node: the holder's node answers (311 with its
/// user and host, 312 naming that node's server, 319 without `+s` channels,
/// 301, 318), in any case of the nick; nobody holding it, or the holder
/// gone (a claim its node no longer has, planted; or after its QUIT), 401
/// and 318. A node that takes the ask but never answers (a planted lease
/// and claim, and a silent subscriber on its channel) times out into 401
/// and 318, and the asker goes on (PING); one that cannot take it at all
/// (nothing subscribed) is 401 at once.
fn whois_across_nodes(io: Io) {
    for shards in SHARD_COUNTS {
        let redis = Redis::start();
        let a = TestServer::start_with(io, shards, node_config(&redis, "a", "a.test"));
        let b = TestServer::start_with(io, shards, node_config(&redis, "b", "b.test"));
        let label = a.label();
        let mut alice = a.register_on(0, "alice");
        let mut bob = b.register_on(shards - 1, "bob");
        links_until(&mut alice, &label, &["a.test", "b.test"]);
        bob.join("#open");
        bob.join("#hidden");
        bob.send("MODE #hidden +s");
        bob.until("MODE", |l| l.is("MODE") && l.params[0] == "#hidden");
        bob.send("AWAY :out to lunch");
        bob.expect("306");

        // What bob's own node says of it, to compare.
        let here = whois(&mut bob, "bob");
        let user_here = here.iter().find(|l| l.is("311")).expect("311").clone();

        let lines = whois(&mut alice, "BoB");
        let got = codes(&lines);
        assert_eq!(got[0], "311", "{label}: {got:?}");
        assert_eq!(*got.last().unwrap(), "318", "{label}: {got:?}");
        assert!(!got.contains(&"401"), "{label}: {got:?}");
        let user = &lines[0];
        assert_eq!(
            user.params[1..],
            user_here.params[1..],
            "{label}: {}",
            user.raw
        );
        assert_eq!(user.params[1], "bob", "{label}");
        let server = lines.iter().find(|l| l.is("312")).expect("312");
        assert_eq!(
            server.params[1..3],
            ["bob", "b.test"],
            "{label}: {}",
            server.raw
        );
        let chans: Vec<&str> = lines
            .iter()
            .filter(|l| l.is("319"))
            .map(|l| l.last())
            .collect();
        assert_eq!(chans, ["@#open"], "{label}: no +s channel");
        let away = lines.iter().find(|l| l.is("301")).expect("301");
        assert_eq!(away.last(), "out to lunch", "{label}");
        assert!(lines.iter().any(|l| l.is("317")), "{label}: {got:?}");
        assert_eq!(lines.last().unwrap().params[1], "bob", "{label}");

        let lines = whois(&mut alice, "nobody");
        assert_eq!(codes(&lines), ["401", "318"], "{label}");
        assert_eq!(lines[0].params[1], "nobody", "{label}");

        // A claim of b's that b's users do not hold: b answers "not found".
        let lease = redis.get("shardline:node:b").expect("b's lease");
        let incarnation = lease.split(' ').next().unwrap().to_string();
        let ghost = format!("b {incarnation}");
        redis.command(&["SET", "shardline:nick:ghost", &ghost]);
        assert_eq!(
            codes(&whois(&mut alice, "ghost")),
            ["401", "318"],
            "{label}"
        );
        redis.command(&["DEL", "shardline:nick:ghost"]);

        // Several in a row: answered in the order asked.
        alice.send("WHOIS bob");
        alice.send("WHOIS nobody");
        alice.send("WHOIS bob");
        let mut ends = Vec::new();
        while ends.len() < 3 {
            let l = alice.next_line();
            if l.is("318") {
                ends.push(l.params[1].clone());
            }
        }
        assert_eq!(ends, ["bob", "nobody", "bob"], "{label}");

        // After bob quits: 401.
        bob.send("QUIT :bye");
        bob.until_closed();
        let started = Instant::now();
        loop {
            let lines = whois(&mut alice, "bob");
            if codes(&lines) == ["401", "318"] {
                break;
            }
            assert!(
                started.elapsed() < WAIT,
                "{label}: bob still answers: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        // A live node whose subscriber is away: 401 at once.
        redis.command(&["SET", "shardline:node:zed", "zinc zed.test", "PX", "60000"]);
        redis.command(&["SET", "shardline:nick:zoe", "zed zinc"]);
        assert_eq!(codes(&whois(&mut alice, "zoe")), ["401", "318"], "{label}");
        // One whose subscriber takes the ask and never answers: 401 after
        // the timeout (half the node timeout here: 1 s).
        let mut silent = TcpStream::connect(redis.addr).expect("redis");
        silent.set_read_timeout(Some(WAIT)).unwrap();
        let pattern = "shardline:dm:zed:*";
        let cmd = format!(
            "*2\r\n$10\r\nPSUBSCRIBE\r\n${}\r\n{pattern}\r\n",
            pattern.len()
        );
        silent.write_all(cmd.as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = silent.read(&mut buf).unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).contains("psubscribe"),
            "{label}"
        );
        let started = Instant::now();
        let lines = whois(&mut alice, "zoe");
        let took = started.elapsed();
        assert_eq!(codes(&lines), ["401", "318"], "{label}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{label}: answered after {took:?}"
        );
        let n = silent.read(&mut buf).unwrap();
        let ask = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(ask.contains(" A zoe "), "{label}: {ask:?}");
        // Not stuck.
        alice.sync();
        drop(silent);
        redis.command(&["DEL", "shardline:node:zed", "shardline:nick:zoe"]);

        drop(alice);
        a.stop();
        b.stop();
    }
}

#[test]
fn refuses_bad_cluster_settings() {
    for (url, node, want) in [
        ("nats://127.0.0.1:4222", "n", "redis:// is the one"),
        ("redis://example.com:6379", "n", "IP address or localhost"),
        ("redis://:pw@127.0.0.1:6379", "n", "no credentials"),
        ("redis://127.0.0.1:6379", "bad name", "cluster.node_name"),
    ] {
        let text = format!("[cluster]\nurl = \"{url}\"\nnode_name = \"{node}\"\n");
        let err = Config::from_toml(&text).expect_err(url).to_string();
        assert!(err.contains(want), "{url} {node}: {err}");
    }
    let ok = Config::from_toml("[cluster]\nurl = \"redis://localhost\"\n").expect("localhost");
    let engine = ok.cluster.engine().expect("valid").expect("on");
    assert_eq!(engine.addr, "127.0.0.1:6379".parse().unwrap());
}

shardline::per_backend! {
    membership => membership;
    engine_lost_and_back => engine_lost_and_back;
    nicks_are_unique_across_nodes => nicks_are_unique_across_nodes;
    accounts_across_nodes => accounts_across_nodes;
    channels_across_nodes => channels_across_nodes;
    private_messages_across_nodes => private_messages_across_nodes;
    nick_changes_and_quits_across_nodes => nick_changes_and_quits_across_nodes;
    a_late_node_and_missed_events_resync => a_late_node_and_missed_events_resync;
    history_catches_up_across_nodes => history_catches_up_across_nodes;
    conversations_across_nodes => conversations_across_nodes;
    partial_delivery_is_reported => partial_delivery_is_reported;
    topic_and_kick_across_nodes => topic_and_kick_across_nodes;
    modes_across_nodes => modes_across_nodes;
    invite_across_nodes => invite_across_nodes;
    notifications_across_nodes => notifications_across_nodes;
    a_stalled_engine_paces_senders => a_stalled_engine_paces_senders;
    whois_across_nodes => whois_across_nodes;
}
