//! Reloading the configuration (what SIGHUP does): new requests and connections
//! use the new pools while a keep-alive connection and a request in flight
//! keep working; an invalid file or changed listener addresses are refused and
//! the running configuration stays; health checks start for new checked pools
//! and stop for removed ones. Both I/O backends, 1 and 4 shards.

mod common;

use std::{net::SocketAddr, thread, time::Duration};

use common::{get, wait_until, Answer, HttpBackend, HttpClient, TestProxy, SHARD_COUNTS, WAIT};
use shardline::Io;

fn config(listen: &str, backend: SocketAddr, health: bool) -> String {
    let health = if health {
        "[pool.p.health]\nkind = \"http\"\npath = \"/health\"\ninterval_ms = 20\ntimeout_ms = 500\n"
    } else {
        ""
    };
    format!(
        "[[listener]]\naddress = \"{listen}\"\nmode = \"http\"\npool = \"p\"\n\
         [pool.p]\nbackends = [{{ address = \"{backend}\" }}]\n{health}"
    )
}

fn backend_of(c: &mut HttpClient, target: &str) -> (u16, String) {
    c.send(&get(target));
    let r = c.response(false);
    (r.status, r.header("X-Backend").unwrap_or("").to_string())
}

fn reload_switches_new_requests_while_established_connections_keep_working(io: Io) {
    for shards in SHARD_COUNTS {
        let a = HttpBackend::start("a", Answer::SlowInfo(300));
        let b = HttpBackend::start("b", Answer::Info);
        let proxy = TestProxy::start(io, shards, &config("127.0.0.1:0", a.addr(), false));
        let label = proxy.label.clone();
        let mut kept = HttpClient::new(proxy.connect());
        assert_eq!(backend_of(&mut kept, "/1"), (200, "a".into()), "{label}");

        // A request in flight on the kept connection when the reload lands.
        kept.send(&get("/in-flight"));
        assert!(wait_until(WAIT, || a.traffic() == 2), "{label}: in flight");
        proxy
            .reload(&config("127.0.0.1:0", b.addr(), true))
            .expect("valid reload");
        let r = kept.response(false);
        assert_eq!(
            (r.status, r.header("X-Backend")),
            (200, Some("a")),
            "{label}"
        );
        // The same connection's next request, and new connections: the new pool.
        assert_eq!(backend_of(&mut kept, "/2"), (200, "b".into()), "{label}");
        for i in 0..4 {
            let mut c = HttpClient::new(proxy.connect());
            assert_eq!(
                backend_of(&mut c, &format!("/n{i}")),
                (200, "b".into()),
                "{label}"
            );
        }
        assert_eq!(
            a.traffic(),
            2,
            "{label}: nothing new reached the old backend"
        );
        // The new pool is checked.
        assert!(
            wait_until(WAIT, || b.checks() >= 3),
            "{label}: checks start"
        );

        // An invalid file and changed listener addresses are refused; the
        // running configuration stays.
        let dir =
            std::env::temp_dir().join(format!("proxy-reload-{}-{io}-{shards}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bad = dir.join("bad.toml");
        std::fs::write(
            &bad,
            "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"gone\"\n",
        )
        .expect("write");
        assert!(proxy.reload_from(&bad).is_err(), "{label}");
        assert!(
            proxy.reload_from(&dir.join("missing.toml")).is_err(),
            "{label}"
        );
        let moved = config("127.0.0.1:1", a.addr(), false);
        assert!(
            proxy.reload(&moved).is_err(),
            "{label}: listener addresses cannot change"
        );
        assert_eq!(backend_of(&mut kept, "/3"), (200, "b".into()), "{label}");
        let mut c = HttpClient::new(proxy.connect());
        assert_eq!(backend_of(&mut c, "/4"), (200, "b".into()), "{label}");

        // A valid file without the health section: checks stop.
        let good = dir.join("good.toml");
        std::fs::write(&good, config("127.0.0.1:0", b.addr(), false)).expect("write");
        proxy.reload_from(&good).expect("valid file");
        assert_eq!(backend_of(&mut kept, "/5"), (200, "b".into()), "{label}");
        // Let a probe already in flight finish, then none may come.
        thread::sleep(Duration::from_millis(200));
        let settled = b.checks();
        thread::sleep(Duration::from_millis(300));
        assert_eq!(
            b.checks(),
            settled,
            "{label}: checks stopped with the pool's health section"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A consistent-hash pool over `backend` with weight `weight`.
fn weighted(backend: SocketAddr, weight: u64) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"web\"\n\
         [pool.web]\nbalance = \"consistent-hash\"\n\
         backends = [{{ address = \"{backend}\", weight = {weight} }}]\n"
    )
}

fn a_reload_with_a_weight_over_the_limit_is_refused_and_the_old_pool_serves(io: Io) {
    for shards in SHARD_COUNTS {
        let a = HttpBackend::start("a", Answer::Info);
        let b = HttpBackend::start("b", Answer::Info);
        let proxy = TestProxy::start(io, shards, &weighted(a.addr(), 256));
        let label = proxy.label.clone();
        let mut kept = HttpClient::new(proxy.connect());
        assert_eq!(backend_of(&mut kept, "/1"), (200, "a".into()), "{label}");

        let dir = std::env::temp_dir().join(format!(
            "proxy-reload-weight-{}-{io}-{shards}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, weighted(b.addr(), 4_294_967_295)).expect("write");
        let e = proxy.reload_from(&bad).expect_err("refused").to_string();
        let want = format!(
            "pool \"web\": backend {}: weight 4294967295 is over the limit of 256",
            b.addr()
        );
        assert!(e.contains(&want), "{label}: {e}");
        // Give any shard time to (wrongly) switch, then: the old pool serves.
        thread::sleep(Duration::from_millis(120));
        assert_eq!(backend_of(&mut kept, "/2"), (200, "a".into()), "{label}");
        for i in 0..4 {
            let mut c = HttpClient::new(proxy.connect());
            assert_eq!(
                backend_of(&mut c, &format!("/n{i}")),
                (200, "a".into()),
                "{label}"
            );
        }
        assert_eq!(b.traffic(), 0, "{label}: the refused pool got traffic");
        // The limit itself is accepted.
        proxy
            .reload(&weighted(b.addr(), 256))
            .expect("256 is valid");
        assert_eq!(backend_of(&mut kept, "/3"), (200, "b".into()), "{label}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

shardline::per_backend! {
    reload_switches_new_requests_while_established_connections_keep_working => reload_switches_new_requests_while_established_connections_keep_working;
    a_reload_with_a_weight_over_the_limit_is_refused_and_the_old_pool_serves => a_reload_with_a_weight_over_the_limit_is_refused_and_the_old_pool_serves;
}
