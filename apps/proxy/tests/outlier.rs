//! Outlier ejection (`[pool.NAME.outlier]`): a backend answering 500s is
//! taken out after `consecutive_failures`, gets no traffic while ejected, and
//! serves again once its ejection is over; `max_ejected_percent` caps how
//! many go; an all-ejected pool still serves. One keep-alive client, so one
//! shard decides (ejection is per shard). Both I/O backends, 1 and 4 shards.

mod common;

use std::{net::SocketAddr, thread, time::Duration};

use common::{
    get, http_config, sample_sum, wait_until, Answer, HttpBackend, HttpClient, TestProxy,
    SHARD_COUNTS, WAIT,
};
use shardline::Io;

fn config(backends: &[SocketAddr], failures: u32, base_ms: u64, percent: u32) -> String {
    http_config(
        backends,
        &format!(
            "[pool.p.outlier]\nconsecutive_failures = {failures}\nbase_ejection_ms = {base_ms}\n\
             max_ejection_ms = {base_ms}\nmax_ejected_percent = {percent}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
}

/// The next response on `c`: status and X-Backend.
fn ask(c: &mut HttpClient<std::net::TcpStream>) -> (u16, String) {
    c.send(&get("/x"));
    let r = c.response(false);
    (r.status, r.header("X-Backend").unwrap_or("").to_string())
}

fn metric(proxy: &TestProxy, name: &str, backend: SocketAddr) -> f64 {
    let label = format!("backend=\"{backend}\"");
    sample_sum(&proxy.scrape(), name, &[label.as_str()])
}

fn a_failing_backend_is_ejected_then_serves_again(io: Io) {
    for shards in SHARD_COUNTS {
        let a = HttpBackend::start("a", Answer::Info);
        let mut b = HttpBackend::start("b", Answer::Error500);
        let b_addr = b.addr();
        let proxy = TestProxy::start(io, shards, &config(&[a.addr(), b_addr], 3, 4000, 50));
        let mut c = HttpClient::new(proxy.connect());
        // Round-robin on one shard: b answers 500 every other request; its
        // third in a row ejects it (a's successes do not reset b's streak).
        let mut seen = Vec::new();
        while seen.iter().filter(|(s, _)| *s == 500).count() < 3 {
            seen.push(ask(&mut c));
            assert!(seen.len() <= 6, "{}: {seen:?}", proxy.label);
        }
        let b_before = b.traffic();
        assert_eq!(b_before, 3, "{}", proxy.label);
        for i in 0..6 {
            let (status, from) = ask(&mut c);
            assert_eq!(
                (status, from.as_str()),
                (200, "a"),
                "{}: request {i}",
                proxy.label
            );
        }
        assert_eq!(
            b.traffic(),
            b_before,
            "{}: ejected b got traffic",
            proxy.label
        );
        assert_eq!(
            metric(&proxy, "shardline_proxy_backend_ejected", b_addr),
            1.0,
            "{}",
            proxy.label
        );
        assert_eq!(
            metric(&proxy, "shardline_proxy_backend_ejections_total", b_addr),
            1.0,
            "{}",
            proxy.label
        );
        assert_eq!(
            metric(&proxy, "shardline_proxy_backend_ejected", a.addr()),
            0.0,
            "{}",
            proxy.label
        );
        // b is fixed meanwhile (restarted healthy on its address).
        b.kill();
        let b2 = HttpBackend::start_on(b_addr, "b", Answer::Info);
        // After the ejection b serves again.
        let back = wait_until(WAIT, || {
            thread::sleep(Duration::from_millis(50));
            let (status, from) = ask(&mut c);
            assert_eq!(status, 200, "{}", proxy.label);
            from == "b"
        });
        assert!(back, "{}: b never came back", proxy.label);
        assert!(b2.traffic() >= 1, "{}", proxy.label);
        assert!(
            wait_until(WAIT, || metric(
                &proxy,
                "shardline_proxy_backend_ejected",
                b_addr
            ) == 0.0),
            "{}: the gauge still says ejected",
            proxy.label
        );
        // And it is in the rotation again: every other request.
        let next: Vec<String> = (0..4).map(|_| ask(&mut c).1).collect();
        assert_eq!(
            next.iter().filter(|f| *f == "b").count(),
            2,
            "{}: {next:?}",
            proxy.label
        );
    }
}

fn max_ejected_percent_caps_ejections_and_the_pool_keeps_serving(io: Io) {
    for shards in SHARD_COUNTS {
        // Both failing, at most 50 %: one is ejected, the other stays and
        // keeps answering (its 500s go to the client: never a 503).
        let a = HttpBackend::start("a", Answer::Error500);
        let b = HttpBackend::start("b", Answer::Error500);
        let proxy = TestProxy::start(io, shards, &config(&[a.addr(), b.addr()], 2, 60_000, 50));
        let mut c = HttpClient::new(proxy.connect());
        let statuses: Vec<u16> = (0..20).map(|_| ask(&mut c).0).collect();
        assert!(
            statuses.iter().all(|&s| s == 500),
            "{}: {statuses:?}",
            proxy.label
        );
        let ejections = metric(&proxy, "shardline_proxy_backend_ejections_total", a.addr())
            + metric(&proxy, "shardline_proxy_backend_ejections_total", b.addr());
        assert_eq!(ejections, 1.0, "{}", proxy.label);
        assert!(
            a.traffic() >= 10 || b.traffic() >= 10,
            "{}: a {} b {}",
            proxy.label,
            a.traffic(),
            b.traffic()
        );
        drop(proxy);

        // At 100 % both go, and the pool still serves as if none were.
        let proxy = TestProxy::start(io, shards, &config(&[a.addr(), b.addr()], 2, 60_000, 100));
        let mut c = HttpClient::new(proxy.connect());
        let statuses: Vec<u16> = (0..20).map(|_| ask(&mut c).0).collect();
        assert!(
            statuses.iter().all(|&s| s == 500),
            "{}: {statuses:?}",
            proxy.label
        );
        let ejections = metric(&proxy, "shardline_proxy_backend_ejections_total", a.addr())
            + metric(&proxy, "shardline_proxy_backend_ejections_total", b.addr());
        assert_eq!(ejections, 2.0, "{}", proxy.label);
    }
}

shardline::per_backend! {
    a_failing_backend_is_ejected_then_serves_again => a_failing_backend_is_ejected_then_serves_again;
    max_ejected_percent_caps_ejections_and_the_pool_keeps_serving => max_ejected_percent_caps_ejections_and_the_pool_keeps_serving;
}
