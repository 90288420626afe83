//! Both client engines complete echoes, closed and open loop, small messages and
//! messages that arrive in pieces, against a plain thread-per-connection echo
//! server. Counts and errors are checked, never timings.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use shardline_bench::client::{self, ClientIo, LoadConfig, Mode};

fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0; 64 << 10];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn load(addr: SocketAddr, io: ClientIo, mode: Mode, size: usize) -> LoadConfig {
    LoadConfig {
        addr,
        conns: 4,
        msg_size: size,
        mode,
        warmup: Duration::from_millis(20),
        duration: Duration::from_millis(150),
        cpus: vec![],
        io,
        threads: 1,
    }
}

#[test]
fn both_engines_echo_closed_and_open_loop() {
    let addr = echo_server();
    for io in [ClientIo::Uring, ClientIo::Mio] {
        for size in [100, 200_000] {
            for mode in [Mode::Closed, Mode::Open { rate: 2_000.0 }] {
                let mut windows = Vec::new();
                let rep = client::run_load(&load(addr, io, mode, size), &mut |w| windows.push(w))
                    .unwrap_or_else(|e| panic!("{io:?} {mode:?} {size}: {e:#}"));
                let what = format!("{io:?} {mode:?} {size} B: {rep:?}");
                assert!(rep.requests > 0, "{what}");
                assert_eq!(rep.errors, 0, "{what}");
                assert_eq!(rep.conns_alive, 4, "{what}");
                assert!(rep.window_s > 0.1, "{what}");
                assert_eq!(windows, [client::Window::Start, client::Window::End]);
                assert!(rep.latency.p50_us > 0.0, "{what}");
            }
        }
    }
}

#[test]
fn several_client_threads_share_the_connections_and_one_window() {
    let addr = echo_server();
    for io in [ClientIo::Uring, ClientIo::Mio] {
        for mode in [Mode::Closed, Mode::Open { rate: 3_000.0 }] {
            let mut cfg = load(addr, io, mode, 100);
            cfg.conns = 7;
            cfg.threads = 3;
            let mut windows = Vec::new();
            let rep = client::run_load(&cfg, &mut |w| windows.push(w))
                .unwrap_or_else(|e| panic!("{io:?} {mode:?}: {e:#}"));
            let what = format!("{io:?} {mode:?}: {rep:?}");
            assert_eq!(rep.client_threads, 3, "{what}");
            assert_eq!(rep.conns, 7, "{what}");
            assert_eq!(rep.conns_alive, 7, "{what}");
            assert_eq!(rep.errors, 0, "{what}");
            assert!(rep.requests > 0, "{what}");
            assert!(rep.latency.p50_us > 0.0, "{what}");
            assert_eq!(windows, [client::Window::Start, client::Window::End]);
        }
    }
    // More threads than connections: one connection each.
    let mut cfg = load(addr, ClientIo::Uring, Mode::Closed, 100);
    cfg.conns = 2;
    cfg.threads = 5;
    let rep = client::run_load(&cfg, &mut |_| {}).expect("runs");
    assert_eq!((rep.client_threads, rep.conns_alive), (2, 2));
}

#[test]
fn a_dead_server_is_an_error_not_a_hang() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    let r = client::run_load(&load(addr, ClientIo::Uring, Mode::Closed, 100), &mut |_| {});
    assert!(r.is_err());
    let mut threaded = load(addr, ClientIo::Uring, Mode::Closed, 100);
    threaded.threads = 3;
    assert!(client::run_load(&threaded, &mut |_| {}).is_err());
}
