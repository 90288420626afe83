//! Write coalescing (`ServerBuilder::flush_delay`) on both backends: small output
//! waits for its delay, the shard wakes by itself to write it, and large output,
//! closes and half-closes are not held.

mod common;

use shardline::Io;
use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::Duration,
};

use common::{builder, start};
use shardline::{ConnId, Ctx, Handler};

/// Echoes; closes after echoing a line that is exactly `bye`.
struct EchoBye;

impl Handler for EchoBye {
    type Msg = ();
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _: shardline::Listener<'_, ()>,
        _: std::net::SocketAddr,
    ) {
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        let _ = ctx.send(conn, data);
        if data.ends_with(b"bye") {
            ctx.close(conn);
        }
        data.len()
    }
}

fn connect(addr: std::net::SocketAddr, timeout: Duration) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(timeout)).expect("timeout");
    s
}

fn small_output_waits_for_the_delay_large_output_does_not(io: Io) {
    // A delay far longer than the test: only the 16 KiB rule can flush.
    let b = builder(io, 1).flush_delay(Duration::from_secs(60));
    let (server, addr) = start(b, |_| EchoBye);
    let mut client = connect(addr, Duration::from_millis(300));
    client.write_all(b"a").expect("write");
    let mut byte = [0u8; 1];
    // Blocking reads in a process with io_uring shards see a stray EINTR now and
    // then (as in apps/chat's tests): read again.
    let early = loop {
        match client.read(&mut byte) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "{io:?}: one byte must wait for the delay, got {early:?}"
    );
    let big = vec![7u8; 20 << 10];
    client.write_all(&big).expect("write");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut back = vec![0u8; 1 + big.len()];
    client
        .read_exact(&mut back)
        .expect("flushed once 16 KiB were queued");
    assert_eq!(back[0], b'a', "{io:?}: order kept");
    assert!(back[1..] == big[..], "{io:?}");
    server.shutdown().expect("clean shutdown");
}

fn closing_is_not_held(io: Io) {
    let b = builder(io, 1).flush_delay(Duration::from_secs(60));
    let (server, addr) = start(b, |_| EchoBye);
    let mut client = connect(addr, Duration::from_secs(10));
    client.write_all(b"bye").expect("write");
    let mut back = Vec::new();
    client.read_to_end(&mut back).expect("echo then EOF");
    assert_eq!(back, b"bye", "{io:?}");
    server.shutdown().expect("clean shutdown");
}

fn the_shard_wakes_to_write_held_output(io: Io) {
    // Nothing else happens on the server: each echo goes out only because the
    // shard wakes when its delay is up.
    let b = builder(io, 1).flush_delay(Duration::from_millis(20));
    let (server, addr) = start(b, |_| EchoBye);
    let mut client = connect(addr, Duration::from_secs(10));
    for i in 0..30u8 {
        client.write_all(&[i]).expect("write");
        let mut byte = [0u8; 1];
        client
            .read_exact(&mut byte)
            .expect("held echo written when due");
        assert_eq!(byte[0], i, "{io:?}");
    }
    server.shutdown().expect("clean shutdown");
}

shardline::per_backend! {
    small_output_waits_for_the_delay_large_output_does_not => small_output_waits_for_the_delay_large_output_does_not;
    closing_is_not_held => closing_is_not_held;
    the_shard_wakes_to_write_held_output => the_shard_wakes_to_write_held_output;
}
