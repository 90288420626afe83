//! Write coalescing (`ServerBuilder::flush_delay`, `ServerBuilder::coalesce`) on
//! both backends: small output waits for its delay, the shard wakes by itself to
//! write it, and large output, closes and half-closes are not held. Pacing
//! writes a quiet connection's output at once and holds only what follows a
//! send within the interval, then writes it all in one send.

mod common;

use shardline::{Coalesce, Io};
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
    assert_held(&mut client, io, "one byte must wait for the delay");
    big_output_flushes_what_was_held(&mut client, io, b"a");
    server.shutdown().expect("clean shutdown");
}

/// Nothing to read within the client's read timeout: the output is held.
fn assert_held(client: &mut TcpStream, io: Io, what: &str) {
    let mut byte = [0u8; 1];
    let got = read_once(client, &mut byte);
    assert!(
        matches!(&got, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "{io:?}: {what}, got {got:?}"
    );
}

/// Sends 20 KiB: over the 16 KiB rule, so the held `held` and the echo of the
/// 20 KiB come back at once, in order.
fn big_output_flushes_what_was_held(client: &mut TcpStream, io: Io, held: &[u8]) {
    let big = vec![7u8; 20 << 10];
    client.write_all(&big).expect("write");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut back = vec![0u8; held.len() + big.len()];
    client
        .read_exact(&mut back)
        .expect("flushed once 16 KiB were queued");
    assert_eq!(
        &back[..held.len()],
        held,
        "{io:?}: held output first, in order"
    );
    assert!(back[held.len()..] == big[..], "{io:?}");
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

/// One read, retried on EINTR (blocking reads in a process with io_uring
/// shards see a stray one now and then, as in apps/chat's tests).
fn read_once(client: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match client.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn pacing_writes_a_quiet_connection_at_once_and_holds_what_follows(io: Io) {
    // An interval far longer than the test: only "quiet connection" (nothing
    // sent to it yet) and the 16 KiB rule can flush.
    let b = builder(io, 1).coalesce(Coalesce::Pace(Duration::from_secs(60)));
    let (server, addr) = start(b, |_| EchoBye);
    let mut client = connect(addr, Duration::from_secs(10));
    client.write_all(b"a").expect("write");
    let mut byte = [0u8; 1];
    read_once(&mut client, &mut byte).expect("a quiet connection's output is not held");
    assert_eq!(byte[0], b'a', "{io:?}");
    // Sent to just now: the next output waits for the interval.
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    client.write_all(b"b").expect("write");
    assert_held(
        &mut client,
        io,
        "output right after a send waits for the interval",
    );
    client.write_all(b"c").expect("write");
    big_output_flushes_what_was_held(&mut client, io, b"bc");
    server.shutdown().expect("clean shutdown");
}

fn pacing_writes_held_output_when_the_interval_ends(io: Io) {
    // Two lines per round: the first goes at once when the connection has been
    // quiet for the interval, the second is held until the interval since that
    // send ends (the shard wakes for it by itself).
    let interval = Duration::from_millis(30);
    let b = builder(io, 1).coalesce(Coalesce::Pace(interval));
    let (server, addr) = start(b, |_| EchoBye);
    let mut client = connect(addr, Duration::from_secs(10));
    for i in 0..10u8 {
        std::thread::sleep(interval + Duration::from_millis(5));
        client.write_all(&[2 * i]).expect("write");
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).expect("first echo");
        assert_eq!(byte[0], 2 * i, "{io:?}");
        client.write_all(&[2 * i + 1]).expect("write");
        client
            .read_exact(&mut byte)
            .expect("held echo written when due");
        assert_eq!(byte[0], 2 * i + 1, "{io:?}");
    }
    server.shutdown().expect("clean shutdown");
}

shardline::per_backend! {
    pacing_writes_a_quiet_connection_at_once_and_holds_what_follows => pacing_writes_a_quiet_connection_at_once_and_holds_what_follows;
    pacing_writes_held_output_when_the_interval_ends => pacing_writes_held_output_when_the_interval_ends;
    small_output_waits_for_the_delay_large_output_does_not => small_output_waits_for_the_delay_large_output_does_not;
    closing_is_not_held => closing_is_not_held;
    the_shard_wakes_to_write_held_output => the_shard_wakes_to_write_held_output;
}
