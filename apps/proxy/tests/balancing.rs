//! Balancing through real backends: weighted round-robin follows the weights
//! exactly and smoothly; least-connections and power-of-two-choices send fewer
//! requests to a slow backend than round-robin does; consistent hash is sticky,
//! and keeps every key whose backend stays when another leaves. Both I/O
//! backends, 1 and 4 shards.

mod common;

use std::{
    collections::HashMap,
    thread,
    time::{Duration, Instant},
};

use common::{get, http_config, Answer, HttpBackend, HttpClient, TestProxy, SHARD_COUNTS};
use shardline::Io;

/// One HTTP pool over `backends` balanced by `balance`.
fn config(backends: &[std::net::SocketAddr], balance: &str) -> String {
    http_config(backends, &format!("balance = \"{balance}\"\n"))
}

/// `clients` keep-alive clients send GETs back to back for `run`; returns how
/// many responses came from each backend (by `X-Backend`). Every response must
/// be a 200.
fn load(proxy: &TestProxy, clients: usize, run: Duration) -> HashMap<String, usize> {
    let deadline = Instant::now() + run;
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let mut c = HttpClient::new(proxy.connect());
            let label = proxy.label.clone();
            thread::spawn(move || {
                let mut seen: HashMap<String, usize> = HashMap::new();
                while Instant::now() < deadline {
                    c.send(&get("/"));
                    let r = c.response(false);
                    assert_eq!(r.status, 200, "{label}");
                    let b = r.header("X-Backend").unwrap_or("?").to_string();
                    *seen.entry(b).or_default() += 1;
                }
                seen
            })
        })
        .collect();
    let mut total: HashMap<String, usize> = HashMap::new();
    for t in threads {
        for (b, n) in t.join().expect("client thread") {
            *total.entry(b).or_default() += n;
        }
    }
    total
}

fn slow_share(seen: &HashMap<String, usize>) -> f64 {
    let slow = seen.get("slow").copied().unwrap_or(0);
    let all: usize = seen.values().sum();
    slow as f64 / all.max(1) as f64
}

/// A backend that takes 100 ms per response beside one that answers at once:
/// least-connections keeps the slow one at about one request in flight per
/// shard, so it gets a small share; round-robin (the control) gives it half.
fn least_connections_sends_less_to_a_slow_backend(io: Io) {
    for shards in SHARD_COUNTS {
        let slow = HttpBackend::start("slow", Answer::SlowInfo(100));
        let fast = HttpBackend::start("fast", Answer::Info);
        let addrs = [slow.addr(), fast.addr()];
        let rr = TestProxy::start(io, shards, &config(&addrs, "round-robin"));
        let rr_share = slow_share(&load(&rr, 8, Duration::from_millis(600)));
        drop(rr);
        let lc = TestProxy::start(io, shards, &config(&addrs, "least-connections"));
        let seen = load(&lc, 8, Duration::from_millis(600));
        let lc_share = slow_share(&seen);
        assert!(
            rr_share > 0.35,
            "{}: round-robin gives the slow backend {rr_share:.2}",
            lc.label
        );
        assert!(
            lc_share < 0.2,
            "{}: least-connections gives the slow backend {lc_share:.2} ({seen:?})",
            lc.label
        );
        assert!(
            seen.get("slow").copied().unwrap_or(0) > 0,
            "{}: slow is still used",
            lc.label
        );
    }
}

/// Backends a, b and c behind a proxy that hashes on `X-User`, plus `extra`
/// TOML (after the pool's keys).
fn hashing_proxy(io: shardline::Io, shards: usize, extra: &str) -> (Vec<HttpBackend>, TestProxy) {
    let backends: Vec<HttpBackend> = ["a", "b", "c"]
        .iter()
        .map(|n| HttpBackend::start(n, Answer::Info))
        .collect();
    let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
    let pool = "balance = \"consistent-hash\"\nhash_header = \"X-User\"\n";
    let proxy = TestProxy::start(io, shards, &http_config(&addrs, &format!("{pool}{extra}")));
    (backends, proxy)
}

/// One GET for user `u{user}` (`X-User`) on a new connection, so on any shard:
/// the name of the backend that answered (it must be a 200).
fn backend_for(proxy: &TestProxy, user: u32) -> String {
    let mut c = HttpClient::new(proxy.connect());
    c.send(format!("GET / HTTP/1.1\r\nHost: t\r\nX-User: u{user}\r\n\r\n").as_bytes());
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}: user {user}", proxy.label);
    r.header("X-Backend").expect("backend").to_string()
}

/// Consistent hash on a header: the same header value always reaches the same
/// backend, on any connection and any shard; different values spread.
fn consistent_hash_on_a_header_is_sticky(io: Io) {
    for shards in SHARD_COUNTS {
        let (_backends, proxy) = hashing_proxy(io, shards, "");
        let mut owner: HashMap<u32, String> = HashMap::new();
        for round in 0..3 {
            for user in 0..30u32 {
                let b = backend_for(&proxy, user);
                let first = owner.entry(user).or_insert_with(|| b.clone());
                assert_eq!(
                    *first, b,
                    "{}: user {user} moved in round {round}",
                    proxy.label
                );
            }
        }
        let mut used: Vec<&String> = owner.values().collect();
        used.sort();
        used.dedup();
        assert_eq!(
            used.len(),
            3,
            "{}: 30 users spread over every backend",
            proxy.label
        );
    }
}

/// Smooth weighted round-robin, weights 3 and 1: one keep-alive client (so one
/// shard's balancer) sees exactly 3 : 1 over whole cycles, never the light
/// backend twice in a row.
fn weighted_round_robin_follows_the_weights(io: Io) {
    for shards in SHARD_COUNTS {
        let heavy = HttpBackend::start("heavy", Answer::Info);
        let light = HttpBackend::start("light", Answer::Info);
        let cfg = format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n\
             [pool.p]\nbalance = \"weighted-round-robin\"\n\
             backends = [{{ address = \"{}\", weight = 3 }}, {{ address = \"{}\", weight = 1 }}]\n",
            heavy.addr(),
            light.addr()
        );
        let proxy = TestProxy::start(io, shards, &cfg);
        let mut c = HttpClient::new(proxy.connect());
        let order: Vec<String> = (0..40)
            .map(|_| {
                c.send(&get("/"));
                let r = c.response(false);
                assert_eq!(r.status, 200, "{}", proxy.label);
                r.header("X-Backend").expect("backend").to_string()
            })
            .collect();
        let light_n = order.iter().filter(|b| *b == "light").count();
        assert_eq!(light_n, 10, "{}: {order:?}", proxy.label);
        assert!(
            order
                .windows(2)
                .all(|w| !(w[0] == "light" && w[1] == "light")),
            "{}: not smooth: {order:?}",
            proxy.label
        );
    }
}

/// Power of two choices among three backends, one slow: the slow one is the
/// more loaded of its pair most of the time, so it gets far less than the
/// third round-robin would give it.
fn power_of_two_choices_avoids_a_slow_backend(io: Io) {
    for shards in SHARD_COUNTS {
        let slow = HttpBackend::start("slow", Answer::SlowInfo(100));
        let fast: Vec<HttpBackend> = ["f1", "f2"]
            .iter()
            .map(|n| HttpBackend::start(n, Answer::Info))
            .collect();
        let addrs = [slow.addr(), fast[0].addr(), fast[1].addr()];
        let proxy = TestProxy::start(io, shards, &config(&addrs, "power-of-two-choices"));
        let seen = load(&proxy, 8, Duration::from_millis(600));
        let share = slow_share(&seen);
        assert!(
            share < 0.15,
            "{}: power-of-two-choices gives the slow backend {share:.2} ({seen:?})",
            proxy.label
        );
        assert!(
            seen.contains_key("f1") && seen.contains_key("f2"),
            "{}: both fast backends used ({seen:?})",
            proxy.label
        );
    }
}

/// Consistent hash on the client's header when one of three backends leaves
/// (killed; a health check with `fall = 1` notices): every key whose backend
/// is still up stays where it was, and the leaver's keys are all still served.
fn consistent_hash_keeps_keys_when_a_backend_leaves(io: Io) {
    for shards in SHARD_COUNTS {
        let health = "[pool.p.health]\ninterval_ms = 50\ntimeout_ms = 200\nrise = 1\nfall = 1\n";
        let (mut backends, proxy) = hashing_proxy(io, shards, health);
        let ask = |user: u32| backend_for(&proxy, user);
        let before: Vec<String> = (0..60).map(ask).collect();
        backends[1].kill();
        // Down everywhere once the checker saw it (then broadcast to shards).
        thread::sleep(Duration::from_millis(400));
        let after: Vec<String> = (0..60).map(ask).collect();
        let mut moved_from_b = 0;
        for (user, (b, a)) in before.iter().zip(&after).enumerate() {
            if b == "b" {
                assert_ne!(a, "b", "{}: user {user} still on the dead one", proxy.label);
                moved_from_b += 1;
            } else {
                assert_eq!(a, b, "{}: user {user} moved though {b} is up", proxy.label);
            }
        }
        assert!(
            moved_from_b > 0,
            "{}: b owned no key: {before:?}",
            proxy.label
        );
    }
}

shardline::per_backend! {
    least_connections_sends_less_to_a_slow_backend => least_connections_sends_less_to_a_slow_backend;
    consistent_hash_on_a_header_is_sticky => consistent_hash_on_a_header_is_sticky;
    weighted_round_robin_follows_the_weights => weighted_round_robin_follows_the_weights;
    power_of_two_choices_avoids_a_slow_backend => power_of_two_choices_avoids_a_slow_backend;
    consistent_hash_keeps_keys_when_a_backend_leaves => consistent_hash_keeps_keys_when_a_backend_leaves;
}
