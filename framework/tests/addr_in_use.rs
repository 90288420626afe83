//! An address another server already listens on is refused with
//! `Error::AddrInUse` — in every accept mode, the default reuseport one included
//! (where binding would otherwise silently join the first server's SO_REUSEPORT
//! group) — and the first server goes on serving every connection. Joining the
//! group takes `join_reuseport_group(true)`. A restart over the previous run's
//! TIME_WAIT connections is not refused. Both backends, IPv4 and IPv6.

mod common;

use std::{
    io::{Read, Write},
    net::SocketAddr,
    time::Duration,
};

use shardline::{AcceptMode, Balance, Error, Io, RunningServer, Server, ServerBuilder};

const MODES: [AcceptMode; 3] = [
    AcceptMode::ReusePort,
    AcceptMode::Exclusive,
    AcceptMode::Handoff(Balance::RoundRobin),
];

fn builder(io: Io, mode: AcceptMode, addr: SocketAddr) -> ServerBuilder {
    Server::builder()
        .io(io)
        .shards(2)
        .pin(false)
        .accept_mode(mode)
        .listen(addr)
}

fn second(io: Io, mode: AcceptMode, addr: SocketAddr) -> Result<RunningServer, Error> {
    common::init_tracing();
    builder(io, mode, addr)
        .build(|_| common::Echo)
        .expect("valid config")
        .start()
}

fn roundtrip(addr: SocketAddr, io: Io) {
    let mut s = common::connect_bounded(addr, io);
    s.write_all(b"still here").expect("write");
    let mut back = [0u8; 10];
    s.read_exact(&mut back)
        .unwrap_or_else(|e| panic!("{io}: echo from {addr}: {e}"));
    assert_eq!(&back, b"still here");
}

/// Starts a server on `first` (port 0), then a second on its address: refused
/// with the exact message, and every connection still reaches the first.
fn refused(io: Io, first_mode: AcceptMode, second_mode: AcceptMode, first: SocketAddr) {
    let (server, addr) = common::start(builder(io, first_mode, first), |_| common::Echo);
    let label = format!("{io} {first_mode} then {second_mode} on {addr}");
    match second(io, second_mode, addr) {
        Err(e @ Error::AddrInUse { addr: taken }) => {
            assert_eq!(taken, addr, "{label}");
            assert_eq!(
                e.to_string(),
                format!("{addr} is already in use by another process"),
                "{label}"
            );
        }
        Err(other) => panic!("{label}: wrong error: {other}"),
        Ok(s) => {
            s.shutdown().expect("stop the intruder");
            panic!("{label}: the second server started");
        }
    }
    let metrics = server.metrics();
    let before = metrics.total().conns_accepted;
    for _ in 0..20 {
        roundtrip(addr, io);
    }
    assert_eq!(
        metrics.total().conns_accepted - before,
        20,
        "{label}: the first server took every connection"
    );
    common::shutdown_within(server, io);
}

fn a_second_server_on_a_served_address_is_refused_in_every_mode(io: Io) {
    let v4: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    for mode in MODES {
        refused(io, mode, mode, v4);
    }
    // Across modes too: a reuseport server meets an exclusive one and back.
    refused(io, AcceptMode::ReusePort, AcceptMode::Exclusive, v4);
    refused(io, AcceptMode::Exclusive, AcceptMode::ReusePort, v4);
}

fn ipv6_addresses_are_checked_too(io: Io) {
    let v6: SocketAddr = "[::1]:0".parse().expect("literal");
    if std::net::TcpListener::bind(v6).is_err() {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    }
    for mode in MODES {
        refused(io, mode, mode, v6);
    }
}

fn joining_the_reuseport_group_takes_the_explicit_option(io: Io) {
    let (first, addr) = common::start(common::builder(io, 1), |_| common::Echo);
    let joined = Server::builder()
        .io(io)
        .shards(1)
        .pin(false)
        .listen(addr)
        .join_reuseport_group(true)
        .build(|_| common::Echo)
        .expect("valid config")
        .start()
        .unwrap_or_else(|e| panic!("{io}: joining the group: {e}"));
    // Both take connections now; every one is served by one of them.
    let (m1, m2) = (first.metrics(), joined.metrics());
    for _ in 0..20 {
        roundtrip(addr, io);
    }
    let total = m1.total().conns_accepted + m2.total().conns_accepted;
    assert_eq!(total, 20, "{io}");
    // The old one stops; the new one keeps the address.
    common::shutdown_within(first, io);
    roundtrip(addr, io);
    common::shutdown_within(joined, io);
}

#[test]
fn joining_needs_the_reuseport_mode() {
    for mode in [
        AcceptMode::Exclusive,
        AcceptMode::Handoff(Balance::LeastConnections),
    ] {
        let built = Server::builder()
            .accept_mode(mode)
            .join_reuseport_group(true)
            .build(|_| common::Echo);
        match built {
            Err(Error::Config(msg)) => assert!(msg.contains("join_reuseport_group"), "{msg}"),
            Err(e) => panic!("{mode}: wrong error: {e}"),
            Ok(_) => panic!("{mode}: join_reuseport_group accepted"),
        }
    }
}

fn a_restart_over_time_wait_connections_binds(io: Io) {
    for mode in MODES {
        let (server, addr) =
            common::start(common::builder(io, 1).accept_mode(mode), |_| common::Echo);
        // The server closes first (shutdown), so TIME_WAIT is on its port.
        let mut c = common::connect_bounded(addr, io);
        c.write_all(b"x").expect("write");
        let mut one = [0u8; 1];
        c.read_exact(&mut one).expect("echo");
        common::shutdown_within(server, io);
        assert_eq!(c.read(&mut one).expect("EOF"), 0, "{io} {mode}");
        drop(c);
        std::thread::sleep(Duration::from_millis(20));
        let again = second(io, mode, addr)
            .unwrap_or_else(|e| panic!("{io} {mode}: restart on {addr}: {e}"));
        roundtrip(addr, io);
        common::shutdown_within(again, io);
    }
}

shardline::per_backend! {
    a_second_server_on_a_served_address_is_refused_in_every_mode => a_second_server_on_a_served_address_is_refused_in_every_mode;
    ipv6_addresses_are_checked_too => ipv6_addresses_are_checked_too;
    joining_the_reuseport_group_takes_the_explicit_option => joining_the_reuseport_group_takes_the_explicit_option;
    a_restart_over_time_wait_connections_binds => a_restart_over_time_wait_connections_binds;
}
