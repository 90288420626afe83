//! Counters: after a known workload the live/accepted/closed and byte counters read
//! exactly what the test did.

mod common;

use shardline::Io;
use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

fn counters_match_the_workload(io: Io) {
    let (server, addr) = common::start(common::builder(io, 2), |_| common::Echo);
    let metrics = server.metrics();
    let mut clients: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let mut sent = 0u64;
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let msg = vec![i as u8; 1000 + i * 37];
        c.write_all(&msg).expect("write");
        let mut back = vec![0; msg.len()];
        c.read_exact(&mut back).expect("echo");
        assert_eq!(back, msg, "{io}");
        sent += msg.len() as u64;
    }
    assert!(
        common::wait_until(Duration::from_secs(30), || metrics.total().conns_live == 10),
        "{io}: {:?}",
        metrics.total()
    );
    let during = metrics.total();
    assert_eq!(
        (during.conns_accepted, during.conns_closed),
        (10, 0),
        "{io}"
    );
    // Close half from the client side; the server sees EOF and closes too.
    clients.truncate(5);
    assert!(
        common::wait_until(Duration::from_secs(30), || metrics.total().conns_closed
            == 5),
        "{io}: {:?}",
        metrics.total()
    );
    drop(clients);
    assert!(
        common::wait_until(Duration::from_secs(30), || metrics.total().conns_closed
            == 10),
        "{io}: {:?}",
        metrics.total()
    );
    let t = metrics.total();
    assert_eq!(t.conns_accepted, 10, "{io}");
    assert_eq!(t.conns_live, 0, "{io}");
    assert_eq!(t.bytes_in, sent, "{io}");
    assert_eq!(t.bytes_out, sent, "{io}");
    assert_eq!(t.handler_panics, 0, "{io}");
    assert!(t.loop_turns > 0 && t.syscalls > 0, "{io}: {t:?}");
    let per_shard: u64 = metrics.snapshot().iter().map(|s| s.conns_accepted).sum();
    assert_eq!(per_shard, 10, "{io}");
    server.shutdown().expect("clean shutdown");
}

shardline::per_backend! {
    counters_match_the_workload => counters_match_the_workload;
}
