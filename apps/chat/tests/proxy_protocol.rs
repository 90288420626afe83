//! `server.proxy_protocol`, both backends: a client behind a proxy (it sends
//! a PROXY header first) is seen with the header's address (its mask in
//! WHOIS), per-IP limits count that address, and a source not in
//! `proxy_protocol_trusted` is refused.

mod common;

use std::{
    io::{Read, Write},
    net::SocketAddr,
    time::Duration,
};

use common::{test_config, Client, TestServer};
use shardline::{proxy_protocol, Io};

/// A client that sent a PROXY header (v1 or v2) naming `src`.
fn behind_proxy(srv: &TestServer, src: SocketAddr, v2: bool) -> Client {
    let mut c = Client::connect_to(srv.addr, &srv.label());
    let mut h = Vec::new();
    if v2 {
        proxy_protocol::encode_v2(src, srv.addr, &mut h);
    } else {
        proxy_protocol::encode_v1(src, srv.addr, &mut h);
    }
    c.send_raw(&h);
    c
}

fn clients_are_seen_with_the_header_address(io: Io) {
    let mut config = test_config();
    config.server.proxy_protocol = true;
    config.server.proxy_protocol_trusted = vec!["127.0.0.0/8".parse().unwrap()];
    config.limits.max_connections_per_ip = 2;
    let srv = TestServer::start_with(io, 2, config);
    let label = srv.label();

    let mut alice = behind_proxy(&srv, "203.0.113.9:5000".parse().unwrap(), false);
    alice.register("alice");
    let mut bob = behind_proxy(&srv, "[2001:db8::42]:6000".parse().unwrap(), true);
    bob.register("bob");
    alice.send("WHOIS bob");
    let whois = alice.expect_about("311", "bob");
    assert!(
        whois.raw.contains(" 2001:db8::42 "),
        "{label}: {}",
        whois.raw
    );
    bob.send("WHOIS alice");
    let whois = bob.expect_about("311", "alice");
    assert!(
        whois.raw.contains(" 203.0.113.9 "),
        "{label}: {}",
        whois.raw
    );

    // The per-IP limit counts the header's address: a second client from
    // 203.0.113.9 is admitted, a third refused, while one from elsewhere (all
    // from 127.0.0.1 as far as the sockets go) is still admitted.
    let mut second = behind_proxy(&srv, "203.0.113.9:5001".parse().unwrap(), true);
    second.register("second");
    let mut third = behind_proxy(&srv, "203.0.113.9:5002".parse().unwrap(), false);
    third.send("NICK third");
    let lines = third.expect_error_close("Too many connections from your host");
    assert!(!lines.iter().any(|l| l.is("001")), "{label}: {lines:?}");
    let mut other = behind_proxy(&srv, "198.51.100.1:1".parse().unwrap(), false);
    other.register("other");

    // No header from a trusted source: closed unregistered.
    let mut raw = std::net::TcpStream::connect(srv.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    raw.write_all(b"NICK plain\r\nUSER plain 0 * :P\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(got.is_empty(), "{label}: {}", String::from_utf8_lossy(&got));
    srv.stop();
}

fn untrusted_sources_are_refused(io: Io) {
    let mut config = test_config();
    config.server.proxy_protocol = true;
    config.server.proxy_protocol_trusted = vec!["10.0.0.0/8".parse().unwrap()];
    let srv = TestServer::start_with(io, 1, config);
    let mut raw = std::net::TcpStream::connect(srv.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut h = Vec::new();
    proxy_protocol::encode_v1("203.0.113.9:1".parse().unwrap(), srv.addr, &mut h);
    let _ = raw.write_all(&h);
    let _ = raw.write_all(b"NICK x\r\nUSER x 0 * :x\r\n");
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert_eq!(srv.metrics().total().preamble_refused, 1);
    srv.stop();
}

shardline::per_backend! {
    clients_are_seen_with_the_header_address => clients_are_seen_with_the_header_address;
    untrusted_sources_are_refused => untrusted_sources_are_refused;
}
