//! `/metrics` on the admin endpoint after known traffic: requests by status
//! class, the latency histogram, client connections per shard, active upstream
//! connections and health per backend. Both I/O backends, 1 and 4 shards.

mod common;

use std::{net::SocketAddr, thread};

use common::{
    get, refused_addr, sample_sum, wait_until, Answer, HttpBackend, HttpClient, TestProxy,
    SHARD_COUNTS, WAIT,
};
use shardline::Io;

/// `/ok/` → a healthy, checked backend; `/slow/` → a backend answering after
/// 400 ms; `/dead/` → nothing listening (502); anything else → no route (404).
fn config(ok: SocketAddr, slow: SocketAddr, dead: SocketAddr) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\n\
         [[listener.route]]\npath_prefix = \"/ok/\"\npool = \"ok\"\n\
         [[listener.route]]\npath_prefix = \"/slow/\"\npool = \"slow\"\n\
         [[listener.route]]\npath_prefix = \"/dead/\"\npool = \"dead\"\n\
         [pool.ok]\nbackends = [{{ address = \"{ok}\" }}]\n\
         [pool.ok.health]\nkind = \"http\"\npath = \"/health\"\ninterval_ms = 30\n\
         timeout_ms = 500\nrise = 1\nfall = 2\n\
         [pool.slow]\nbackends = [{{ address = \"{slow}\" }}]\n\
         [pool.dead]\nbackends = [{{ address = \"{dead}\" }}]\n"
    )
}

fn metrics_move_exactly_with_known_traffic_and_health(io: Io) {
    for shards in SHARD_COUNTS {
        let ok = HttpBackend::start("ok", Answer::Info);
        let slow = HttpBackend::start("slow", Answer::SlowInfo(400));
        let proxy = TestProxy::start(io, shards, &config(ok.addr(), slow.addr(), refused_addr()));
        let label = proxy.label.clone();
        let m = proxy.scrape();
        assert_eq!(
            sample_sum(&m, "shardline_proxy_requests_total", &[]),
            0.0,
            "{label}"
        );
        let ok_labels = format!("backend=\"{}\"", ok.addr());
        let up = |m: &[(String, f64)]| {
            sample_sum(
                m,
                "shardline_proxy_backend_up",
                &["pool=\"ok\"", &ok_labels],
            )
        };
        assert_eq!(up(&m), 1.0, "{label}: up at start");

        // 3 × 2xx on one keep-alive connection, then 1 × 404 and 1 × 502 (each
        // of those closes its connection).
        let mut c = HttpClient::new(proxy.connect());
        for i in 0..3 {
            c.send(&get(&format!("/ok/{i}")));
            assert_eq!(c.response(false).status, 200, "{label}");
        }
        for (target, status) in [("/nowhere", 404), ("/dead/x", 502)] {
            let mut e = HttpClient::new(proxy.connect());
            e.send(&get(target));
            assert_eq!(e.response(false).status, status, "{label}");
        }
        let m = proxy.scrape();
        let class = |m: &[(String, f64)], c: &str| {
            sample_sum(
                m,
                "shardline_proxy_requests_total",
                &[&format!("class=\"{c}\"")],
            )
        };
        assert_eq!(class(&m, "2xx"), 3.0, "{label}");
        assert_eq!(class(&m, "4xx"), 1.0, "{label}");
        assert_eq!(class(&m, "5xx"), 1.0, "{label}");
        assert_eq!(class(&m, "3xx") + class(&m, "1xx"), 0.0, "{label}");
        let shard_lines = m
            .iter()
            .filter(|(k, _)| k.starts_with("shardline_proxy_requests_total{shard="))
            .count();
        assert_eq!(
            shard_lines,
            5 * shards,
            "{label}: one sample per shard and class"
        );
        let h = "shardline_proxy_request_duration_seconds";
        assert_eq!(sample_sum(&m, &format!("{h}_count"), &[]), 5.0, "{label}");
        assert_eq!(
            sample_sum(&m, &format!("{h}_bucket"), &["le=\"+Inf\""]),
            5.0,
            "{label}"
        );
        assert!(sample_sum(&m, &format!("{h}_sum"), &[]) > 0.0, "{label}");
        // The keep-alive client is still connected; the others are gone.
        let clients =
            |m: &[(String, f64)]| sample_sum(m, "shardline_proxy_client_connections", &[]);
        assert!(
            wait_until(WAIT, || clients(&proxy.scrape()) == 1.0),
            "{label}: one client connection open"
        );

        // A request in flight holds one active upstream connection to `slow`.
        let slow_labels = format!("backend=\"{}\"", slow.addr());
        let active = |m: &[(String, f64)]| {
            sample_sum(
                m,
                "shardline_proxy_backend_active_connections",
                &["pool=\"slow\"", &slow_labels],
            )
        };
        let addr = proxy.addr;
        let t = thread::spawn(move || {
            let mut s = HttpClient::new(common::connect_with_timeouts(addr));
            s.send(&get("/slow/1"));
            s.response(false).status
        });
        assert!(
            wait_until(WAIT, || active(&proxy.scrape()) == 1.0),
            "{label}: one active upstream connection while the request is in flight"
        );
        assert_eq!(t.join().expect("slow client"), 200, "{label}");
        // Done: back in the idle pool, not active.
        assert!(
            wait_until(WAIT, || active(&proxy.scrape()) == 0.0),
            "{label}: no active upstream connection after the response"
        );
        assert_eq!(class(&proxy.scrape(), "2xx"), 4.0, "{label}");

        drop(c);
        assert!(
            wait_until(WAIT, || clients(&proxy.scrape()) == 0.0),
            "{label}: no client connection left"
        );
        // The health checks fail: the checker's verdict reaches /metrics.
        ok.set_health(503);
        assert!(
            wait_until(WAIT, || up(&proxy.scrape()) == 0.0),
            "{label}: backend_up drops to 0"
        );
        ok.set_health(200);
        assert!(
            wait_until(WAIT, || up(&proxy.scrape()) == 1.0),
            "{label}: and comes back"
        );
    }
}

shardline::per_backend! {
    metrics_move_exactly_with_known_traffic_and_health => metrics_move_exactly_with_known_traffic_and_health;
}
