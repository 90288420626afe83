//! A handler panic closes only the connection it concerned (`HandlerPanic`), is
//! counted and logged; the shard keeps serving the others and new connections.

mod common;

use shardline::Io;
use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::mpsc,
    time::Duration,
};

use shardline::{CloseReason, ConnId, Ctx, Handler};

struct Fragile {
    closes: mpsc::Sender<CloseReason>,
}

impl Handler for Fragile {
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
        if data.starts_with(b"PANIC") {
            panic!("handler bug triggered by input");
        }
        let _ = ctx.send(conn, data);
        data.len()
    }

    fn on_close(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        _conn: ConnId,
        _state: Self::Conn,
        reason: &CloseReason,
    ) {
        let _ = self.closes.send(reason.clone());
    }
}

fn roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

fn panic_closes_only_that_connection(io: Io) {
    let (tx, rx) = mpsc::channel();
    // One shard: the victim and the bystander share it.
    let (server, addr) = common::start(common::builder(io, 1), move |_| Fragile {
        closes: tx.clone(),
    });
    let mut bystander = TcpStream::connect(addr).expect("connect");
    bystander
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    roundtrip(&mut bystander, b"before");

    let mut victim = TcpStream::connect(addr).expect("connect");
    victim
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    victim.write_all(b"PANIC").expect("write");
    let mut rest = Vec::new();
    let _ = victim.read_to_end(&mut rest); // EOF or reset
    assert!(rest.is_empty(), "{io}");
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)).expect("close"),
        CloseReason::HandlerPanic,
        "{io}"
    );

    roundtrip(&mut bystander, b"after");
    let mut newcomer = TcpStream::connect(addr).expect("connect");
    newcomer
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    roundtrip(&mut newcomer, b"new");
    assert_eq!(server.metrics().total().handler_panics, 1, "{io}");
    server.shutdown().expect("clean shutdown");
}

shardline::per_backend! {
    panic_closes_only_that_connection => panic_closes_only_that_connection;
}
