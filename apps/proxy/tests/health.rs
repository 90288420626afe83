//! Health checks and failover through real backends: a backend killed under
//! load costs no retryable request and gets traffic again after `rise` checks;
//! an unhealthy backend gets no traffic; fail-open; passive 5xx accounting.
//! Both I/O backends, 1 and 4 shards.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread,
};

use common::{
    get, http_config, wait_until, Answer, HttpBackend, HttpClient, TestProxy, SHARD_COUNTS, WAIT,
};
use shardline::Io;

/// One pool over `backends` with HTTP health checks of `/health` every 30 ms.
fn config(backends: &[SocketAddr], rise: u32, fall: u32, fail_open: bool, kind: &str) -> String {
    http_config(
        backends,
        &format!(
            "fail_open = {fail_open}\n\
             [pool.p.health]\nkind = \"{kind}\"\npath = \"/health\"\ninterval_ms = 30\n\
             timeout_ms = 500\nrise = {rise}\nfall = {fall}\n\
             [timeouts]\nconnect_ms = 1000\n"
        ),
    )
}

/// One GET on a new connection (so requests spread over the shards).
fn one_get(proxy: &TestProxy) -> (u16, String) {
    let mut c = HttpClient::new(proxy.connect());
    c.send(&get("/x"));
    let r = c.response(false);
    (r.status, r.header("X-Backend").unwrap_or("").to_string())
}

fn a_backend_killed_under_load_costs_no_request_and_comes_back_after_rise(io: Io) {
    for shards in SHARD_COUNTS {
        let a = HttpBackend::start("a", Answer::Info);
        let mut b = HttpBackend::start("b", Answer::Info);
        let b_addr = b.addr();
        let rise = 3;
        let proxy = TestProxy::start(
            io,
            shards,
            &config(&[a.addr(), b_addr], rise, 2, false, "http"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..4)
            .map(|i| {
                let (stop, failed, done) = (stop.clone(), failed.clone(), done.clone());
                // Keep-alive clients and new-connection clients both.
                let mut c = HttpClient::new(proxy.connect());
                let addr = proxy.addr;
                thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        if i % 2 == 1 {
                            let s = std::net::TcpStream::connect(addr).expect("connect");
                            s.set_read_timeout(Some(WAIT)).expect("timeout");
                            c = HttpClient::new(s);
                        }
                        c.send(&get("/load"));
                        match c.try_response(false) {
                            Some(r) if r.status == 200 => {}
                            other => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                eprintln!("failed: {:?}", other.map(|r| r.status));
                                return;
                            }
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        assert!(
            wait_until(WAIT, || b.traffic() > 20),
            "{}: b serves",
            proxy.label
        );
        b.kill();
        let at_kill = done.load(Ordering::SeqCst);
        assert!(
            wait_until(WAIT, || done.load(Ordering::SeqCst) > at_kill + 200),
            "{}: load goes on after the kill",
            proxy.label
        );
        // Back on the same port: traffic returns, but only after `rise`
        // successful checks (it was marked down meanwhile).
        let b2 = HttpBackend::start_on(b_addr, "b", Answer::Info);
        assert!(
            wait_until(WAIT, || b2.traffic() > 5),
            "{}: traffic returns to b",
            proxy.label
        );
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().expect("client");
        }
        assert_eq!(
            failed.load(Ordering::SeqCst),
            0,
            "{}: a request failed",
            proxy.label
        );
        let seen = b2.requests();
        let first = seen
            .iter()
            .position(|r| r.target != "/health")
            .expect("traffic");
        assert!(
            first >= rise as usize,
            "{}: traffic after {first} checks (rise {rise})",
            proxy.label
        );
    }
}

fn an_unhealthy_backend_gets_no_traffic_until_it_recovers(io: Io) {
    for shards in SHARD_COUNTS {
        let a = HttpBackend::start("a", Answer::Info);
        let b = HttpBackend::start("b", Answer::Info);
        b.set_health(503);
        let proxy = TestProxy::start(
            io,
            shards,
            &config(&[a.addr(), b.addr()], 2, 2, false, "http"),
        );
        // Down after 2 failed checks; a few more let the news reach every shard.
        assert!(wait_until(WAIT, || b.checks() >= 5), "{}", proxy.label);
        let before = b.traffic();
        for _ in 0..30 {
            assert_eq!(one_get(&proxy), (200, "a".to_string()), "{}", proxy.label);
        }
        assert_eq!(
            b.traffic(),
            before,
            "{}: b got traffic while down",
            proxy.label
        );
        b.set_health(200);
        assert!(
            wait_until(WAIT, || {
                one_get(&proxy);
                b.traffic() > before
            }),
            "{}: b gets traffic once healthy",
            proxy.label
        );
    }
}

fn every_backend_down_answers_503_or_fails_open(io: Io) {
    for shards in SHARD_COUNTS {
        for fail_open in [false, true] {
            let a = HttpBackend::start("a", Answer::Info);
            let b = HttpBackend::start("b", Answer::Info);
            a.set_health(500);
            b.set_health(500);
            let cfg = config(&[a.addr(), b.addr()], 2, 1, fail_open, "http");
            let proxy = TestProxy::start(io, shards, &cfg);
            assert!(wait_until(WAIT, || a.checks() >= 4 && b.checks() >= 4));
            for _ in 0..8 {
                let (status, _) = one_get(&proxy);
                let want = if fail_open { 200 } else { 503 };
                assert_eq!(status, want, "{} fail_open={fail_open}", proxy.label);
            }
        }
    }
}

fn passive_5xx_takes_a_backend_down(io: Io) {
    for shards in SHARD_COUNTS {
        let a = HttpBackend::start("a", Answer::Info);
        let b = HttpBackend::start("b", Answer::Error500);
        // TCP checks: b always passes them; only its 5xx answers count.
        let cfg = config(&[a.addr(), b.addr()], 2, 3, false, "tcp")
            .replace("interval_ms = 30", "interval_ms = 60000");
        let proxy = TestProxy::start(io, shards, &cfg);
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(one_get(&proxy).0);
        }
        let errors = statuses.iter().filter(|&&s| s == 500).count();
        assert!(errors >= 3, "{}: {statuses:?}", proxy.label);
        assert!(
            statuses[20..].iter().all(|&s| s == 200),
            "{}: b still gets traffic after its 5xx: {statuses:?}",
            proxy.label
        );
    }
}

shardline::per_backend! {
    a_backend_killed_under_load_costs_no_request_and_comes_back_after_rise => a_backend_killed_under_load_costs_no_request_and_comes_back_after_rise;
    an_unhealthy_backend_gets_no_traffic_until_it_recovers => an_unhealthy_backend_gets_no_traffic_until_it_recovers;
    every_backend_down_answers_503_or_fails_open => every_backend_down_answers_503_or_fails_open;
    passive_5xx_takes_a_backend_down => passive_5xx_takes_a_backend_down;
}
