//! Outbound connections: to a local listener (data both ways), and to a closed port
//! (the error reaches `on_connect`, no `on_close`).

mod common;

use shardline::Io;
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    sync::mpsc,
    time::Duration,
};

use shardline::{CloseReason, ConnId, Ctx, Handler, Server};

#[derive(Debug, PartialEq)]
enum Event {
    Connected(Result<(), std::io::ErrorKind>),
    Data(Vec<u8>),
    Closed(CloseReason),
}

struct Dialer {
    target: SocketAddr,
    events: mpsc::Sender<Event>,
}

impl Handler for Dialer {
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

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        let conn = ctx.connect(self.target, ()).expect("socket");
        // Queued before the connect completes: flushed once connected.
        let _ = ctx.send(conn, b"hello from shard");
    }

    fn on_connect(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        _conn: ConnId,
        _state: &mut Self::Conn,
        result: std::io::Result<()>,
    ) {
        let _ = self
            .events
            .send(Event::Connected(result.map_err(|e| e.kind())));
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        let _ = self.events.send(Event::Data(data.to_vec()));
        ctx.close(conn);
        data.len()
    }

    fn on_close(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        _conn: ConnId,
        _state: Self::Conn,
        reason: &CloseReason,
    ) {
        let _ = self.events.send(Event::Closed(reason.clone()));
    }
}

fn client_only(
    io: shardline::Io,
    target: SocketAddr,
    tx: mpsc::Sender<Event>,
) -> shardline::RunningServer {
    common::init_tracing();
    Server::builder()
        .io(io)
        .shards(1)
        .pin(false)
        .build(move |_| Dialer {
            target,
            events: tx.clone(),
        })
        .expect("config")
        .start()
        .expect("start")
}

fn connect_to_local_listener_exchanges_data(io: Io) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let target = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    let server = client_only(io, target, tx);
    let (mut peer, _) = listener.accept().expect("accept");
    peer.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    peer.read_exact(&mut buf).expect("read greeting");
    assert_eq!(&buf, b"hello from shard", "{io}");
    peer.write_all(b"hello from peer").expect("write");
    let wait = Duration::from_secs(30);
    assert_eq!(
        rx.recv_timeout(wait).expect("event"),
        Event::Connected(Ok(())),
        "{io}"
    );
    assert_eq!(
        rx.recv_timeout(wait).expect("event"),
        Event::Data(b"hello from peer".to_vec()),
        "{io}"
    );
    // The handler closed after the reply: the peer sees EOF, then on_close.
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).expect("EOF");
    drop(peer);
    assert_eq!(
        rx.recv_timeout(wait).expect("event"),
        Event::Closed(CloseReason::Closed),
        "{io}"
    );
    let m = server.metrics().total();
    assert_eq!(m.conns_connected, 1, "{io}");
    server.shutdown().expect("clean shutdown");
}

fn connect_to_closed_port_reports_error(io: Io) {
    let (_reserved, closed) = common::refusing_addr();
    let (tx, rx) = mpsc::channel();
    let server = client_only(io, closed, tx);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)).expect("event"),
        Event::Connected(Err(std::io::ErrorKind::ConnectionRefused)),
        "{io}"
    );
    // No on_close for a connection that never opened.
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "{io}");
    let m = server.metrics().total();
    assert_eq!((m.conns_connected, m.conns_live), (0, 0), "{io}");
    server.shutdown().expect("clean shutdown");
}

shardline::per_backend! {
    connect_to_local_listener_exchanges_data => connect_to_local_listener_exchanges_data;
    connect_to_closed_port_reports_error => connect_to_closed_port_reports_error;
}
