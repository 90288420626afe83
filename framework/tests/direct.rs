//! io_uring direct descriptors: one process serves more connections than
//! RLIMIT_NOFILE lets it open, because each shard's sockets live in its ring's
//! file table, not the process's fd table.
//!
//! The limit is lowered for this process so the test stays small (a few hundred
//! connections). The clients run in a child process (this test binary again,
//! with `DIRECT_TEST_CLIENT` set): they need an fd each.
//!
//! io_uring only: epoll has no file table (its cap, the fd limit, is stated at
//! start and tested in emfile.rs). Skipped when direct descriptors are turned
//! off by `SHARDLINE_DIRECT_DESCRIPTORS=0` (the suite's second run).

mod common;
#[path = "common/fds.rs"]
mod fds;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use fds::{highest_fd, rlimit, set_soft_nofile};
use shardline::Io;

const CLIENT_ENV: &str = "DIRECT_TEST_CLIENT";

/// The client side, run in the child: `count` connections to `addr`, one echo
/// round trip on each, "ready N" on stdout, then hold them until stdin closes.
fn client(spec: &str) {
    let (addr, count) = spec.split_once(',').expect("addr,count");
    let addr: SocketAddr = addr.parse().expect("addr");
    let count: usize = count.parse().expect("count");
    // The parent lowered the soft limit before spawning us; we need more.
    set_soft_nofile(rlimit().rlim_max);
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {i}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let tag = (i as u32).to_le_bytes();
        s.write_all(&tag).unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("echo on connection {i}: {e}"));
        assert_eq!(back, tag, "connection {i} got another's bytes");
        conns.push(s);
    }
    println!("ready {}", conns.len());
    std::io::stdout().flush().unwrap();
    let mut rest = String::new();
    let _ = std::io::stdin().read_to_string(&mut rest);
    // Every connection is still served at the end.
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(b"end!").unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("final echo on connection {i}: {e}"));
    }
    println!("done");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_process_serves_more_connections_than_its_fd_limit() {
    if let Ok(spec) = std::env::var(CLIENT_ENV) {
        return client(&spec);
    }
    if std::env::var(shardline::ENV_DIRECT_DESCRIPTORS).is_ok_and(|v| v.trim() == "0") {
        eprintln!("direct descriptors turned off; nothing to test");
        return;
    }
    let original = rlimit().rlim_cur;
    // Room for the server's own fds (rings, eventfds, listener) and the test
    // harness, and no more: connections beyond it cannot be ordinary fds.
    let limit = highest_fd() + 400;
    set_soft_nofile(limit);
    // Each shard's table holds `limit` (less the slots its armed accepts
    // hold): 5/4 of it over two shards leaves room for an uneven spread.
    let count = (limit as usize) * 5 / 4;
    let (server, addr) = common::start(common::builder(Io::Uring, 2), |_| common::Echo);
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_process_serves_more_connections_than_its_fd_limit",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CLIENT_ENV, format!("{addr},{count}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the client process");
    // Killed if this test fails midway, so nothing is left holding sockets.
    let mut child = KillOnDrop(child);
    let child = &mut child.0;
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    // The harness prints "test NAME ... " before the test's own output, on
    // the same line.
    while !line.contains("ready ") {
        line.clear();
        if out.read_line(&mut line).expect("client output") == 0 {
            let status = child.wait().expect("client exit");
            panic!("client ended before connecting all: {status}");
        }
    }
    assert!(line.trim().ends_with(&format!("ready {count}")), "{line}");
    let metrics = server.metrics();
    let live = metrics.total().conns_live;
    assert_eq!(live, count as u64, "every connection is held at once");
    assert!(
        live > limit,
        "{live} connections with RLIMIT_NOFILE {limit}: more than fds allow"
    );
    // The server opened no fd per connection.
    assert!(
        highest_fd() < limit,
        "no fd at or above the limit (highest {})",
        highest_fd()
    );
    drop(child.stdin.take());
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("client output");
    let status = child.wait().expect("client exit");
    assert!(status.success(), "client: {status}\n{rest}");
    assert!(rest.contains("done"), "{rest}");
    server.shutdown().expect("clean shutdown");
    set_soft_nofile(original);
}
