//! Out of file descriptors: a server whose process hits RLIMIT_NOFILE keeps serving
//! its existing connections, does not spin, and accepts again by itself once fds
//! are available — on every accept mode and both backends. With io_uring direct
//! descriptors the ring's own accepts need no fd: that mode serves the flood.
//!
//! One test in this binary on purpose: it lowers the process's soft fd limit.

mod common;
#[path = "common/fds.rs"]
mod fds;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use fds::{highest_fd, set_soft_nofile};
use shardline::{AcceptMode, Balance, Io};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

fn roundtrip(s: &mut TcpStream, tag: u8) {
    s.write_all(&[tag; 8]).expect("write");
    let mut back = [0u8; 8];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(back, [tag; 8]);
}

/// A round trip on every flood connection (each needs an fd to dup).
fn echo_each(flood: &[Socket]) {
    for (i, s) in flood.iter().enumerate() {
        let mut stream = TcpStream::from(s.try_clone().expect("dup"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        roundtrip(&mut stream, i as u8);
    }
}

fn run(io: Io, mode: AcceptMode) {
    let original = fds::rlimit().rlim_cur;
    // Lower the limit before the server starts: io_uring's accept reads the limit
    // when it is armed, as a process that has always had this limit would.
    set_soft_nofile(highest_fd() + 150);
    let (server, addr) = common::start(common::builder(io, 1).accept_mode(mode), |_| common::Echo);
    let metrics = server.metrics();
    let mut existing = TcpStream::connect(addr).expect("connect");
    existing
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    roundtrip(&mut existing, 1);

    // Client sockets are created before the limit drops; connect needs no new fd.
    let flood: Vec<Socket> = (0..50)
        .map(|_| Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket"))
        .collect();
    // Use up every fd below the limit.
    let mut fillers = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
    }
    let turns_before = metrics.total().loop_turns;
    for s in &flood {
        s.connect(&SockAddr::from(addr))
            .expect("the kernel completes the handshake");
    }
    if direct_accepts(io, mode) {
        // io_uring accepting into its file table needs no fd: the flood is
        // served while the process has none left.
        assert!(
            common::wait_until(Duration::from_secs(30), || metrics.total().conns_accepted
                == 51),
            "{io} {mode}: direct descriptors accept without fds: {:?}",
            metrics.total()
        );
        roundtrip(&mut existing, 2);
        // The client side needs fds to check the echo (dup).
        drop(fillers);
        echo_each(&flood);
        drop(flood);
        drop(existing);
        server.shutdown().expect("clean shutdown");
        set_soft_nofile(original);
        return;
    }
    std::thread::sleep(Duration::from_millis(500));
    let turns = metrics.total().loop_turns - turns_before;
    // Backing off 100 ms between attempts: a few dozen turns, not a busy loop.
    assert!(
        turns < 2_000,
        "{io} {mode}: {turns} loop turns in 500 ms while out of fds"
    );
    assert_eq!(
        metrics.total().conns_accepted,
        1,
        "{io} {mode}: nothing accepted without fds"
    );
    roundtrip(&mut existing, 2);

    assert!(fillers.len() > 60, "room for the flood once fillers close");
    drop(fillers);
    assert!(
        common::wait_until(Duration::from_secs(30), || metrics.total().conns_accepted
            == 51),
        "{io} {mode}: accepts resume once fds free up: {:?}",
        metrics.total()
    );
    echo_each(&flood);
    roundtrip(&mut existing, 3);
    drop(flood);
    drop(existing);
    server.shutdown().expect("clean shutdown");
    set_soft_nofile(original);
}

/// Whether the driver accepts into direct descriptors (io_uring, reuseport: the
/// ring accepts; direct descriptors not turned off). Every other way needs an
/// fd at accept (accept4 by the shard or the acceptor thread).
fn direct_accepts(io: Io, mode: AcceptMode) -> bool {
    io == Io::Uring
        && mode == AcceptMode::ReusePort
        && std::env::var(shardline::ENV_DIRECT_DESCRIPTORS).map_or(true, |v| v.trim() != "0")
}

fn out_of_fds_backs_off_and_recovers(io: Io) {
    // RLIMIT_NOFILE is per process: the two backends' tests must not overlap.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for mode in [
        AcceptMode::ReusePort,
        AcceptMode::Exclusive,
        AcceptMode::Handoff(Balance::RoundRobin),
    ] {
        run(io, mode);
    }
}

shardline::per_backend! {
    out_of_fds_backs_off_and_recovers => out_of_fds_backs_off_and_recovers;
}
