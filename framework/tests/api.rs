//! The handler API's own promises, on both backends: per-connection state kept by
//! the framework, listener values in `on_accept`, typed timers (see timers.rs),
//! `Remote` posts from outside threads, and the `Outbox` keeping order under `Full`.

mod common;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::mpsc,
    time::Duration,
};

use shardline::{
    CloseReason, ConnId, Ctx, Handler, Io, Listener, ListenerId, Origin, Outbox, PostError, Server,
    ShardId,
};

/// Which listener a connection came from, and what it has said so far.
#[derive(Debug)]
struct Session {
    kind: &'static str,
    listener: ListenerId,
    lines: usize,
}

#[derive(Debug)]
enum Out {
    Closed { kind: &'static str, lines: usize },
    Connected { outbound: u32, ok: bool },
}

/// Accepts on two listeners with different values and greets every connection
/// with the value of its listener; counts lines per connection in its state;
/// reports the state at close.
struct Stateful {
    report: mpsc::Sender<Out>,
    refused: Option<SocketAddr>,
}

/// Per-connection state: an accepted session or an outbound probe.
#[derive(Debug)]
enum State {
    In(Session),
    Probe(u32),
}

impl Handler for Stateful {
    type Msg = ();
    type Timer = ();
    type Conn = State;
    type Listener = &'static str;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        if let Some(addr) = self.refused {
            // An outbound connect that fails hands its state back in on_connect.
            ctx.connect(addr, State::Probe(41)).expect("socket");
        }
    }

    fn on_accept(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        listener: Listener<'_, &'static str>,
        _peer: SocketAddr,
    ) -> State {
        let greeting = format!("{} {}\n", listener.value, listener.id.0);
        ctx.send(conn, greeting.as_bytes()).expect("send");
        assert_eq!(ctx.local_addr(conn), Some(listener.addr));
        State::In(Session {
            kind: listener.value,
            listener: listener.id,
            lines: 0,
        })
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        state: &mut State,
        data: &[u8],
    ) -> usize {
        let State::In(s) = state else {
            panic!("data on a probe")
        };
        let lines = data.iter().filter(|&&b| b == b'\n').count();
        s.lines += lines;
        let reply = format!("{} {} {}\n", s.kind, s.listener.0, s.lines);
        for _ in 0..lines {
            ctx.send(conn, reply.as_bytes()).expect("send");
        }
        data.len()
    }

    fn on_connect(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        _conn: ConnId,
        state: &mut State,
        result: std::io::Result<()>,
    ) {
        let State::Probe(n) = state else {
            panic!("on_connect for an accepted connection")
        };
        let _ = self.report.send(Out::Connected {
            outbound: *n,
            ok: result.is_ok(),
        });
    }

    fn on_close(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        _conn: ConnId,
        state: State,
        _reason: &CloseReason,
    ) {
        if let State::In(s) = state {
            let _ = self.report.send(Out::Closed {
                kind: s.kind,
                lines: s.lines,
            });
        }
    }
}

fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).expect("read") == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).expect("utf-8")
}

fn conn_state_and_listener_values(io: Io) {
    common::init_tracing();
    // A port nobody listens on (kept bound so that nobody can).
    let (_reserved, refused) = common::refusing_addr();
    let (tx, rx) = mpsc::channel();
    let server = Server::builder()
        .io(io)
        .shards(2)
        .pin(false)
        .listen_with("127.0.0.1:0".parse().unwrap(), "plain")
        .listen_with("127.0.0.1:0".parse().unwrap(), "fancy")
        .build(move |shard| Stateful {
            report: tx.clone(),
            refused: (shard == ShardId(0)).then_some(refused),
        })
        .expect("valid config")
        .start()
        .expect("starts");
    let addrs = server.local_addrs().to_vec();
    match rx.recv_timeout(common::LIMIT).expect("probe reported") {
        Out::Connected { outbound, ok } => {
            assert_eq!(outbound, 41, "{io}: the probe's state came back");
            assert!(!ok, "{io}: nothing listens there");
        }
        other => panic!("{io}: unexpected {other:?}"),
    }
    let mut clients = Vec::new();
    for i in 0..8 {
        let (kind, idx) = if i % 2 == 0 {
            ("plain", 0)
        } else {
            ("fancy", 1)
        };
        let mut c = common::connect_bounded(addrs[idx], io);
        assert_eq!(read_line(&mut c), format!("{kind} {idx}"), "{io}: greeting");
        for n in 1..=3 {
            c.write_all(b"hello\n").expect("write");
            assert_eq!(
                read_line(&mut c),
                format!("{kind} {idx} {n}"),
                "{io}: state kept"
            );
        }
        clients.push((kind, c));
    }
    let mut want: HashMap<&str, usize> = HashMap::new();
    for (kind, c) in clients {
        *want.entry(kind).or_default() += 1;
        drop(c);
    }
    let mut got: HashMap<&str, usize> = HashMap::new();
    for _ in 0..8 {
        match rx.recv_timeout(common::LIMIT).expect("close reported") {
            Out::Closed { kind, lines } => {
                assert_eq!(lines, 3, "{io}: on_close gets the final state");
                *got.entry(kind).or_default() += 1;
            }
            other => panic!("{io}: unexpected {other:?}"),
        }
    }
    assert_eq!(
        got, want,
        "{io}: every connection closed with its own state"
    );
    common::shutdown_within(server, io);
}

/// A listener value of another type than the handler's `Listener` is refused at
/// build time, naming both types.
#[test]
fn listener_value_of_the_wrong_type_is_refused() {
    let err = Server::builder()
        .listen_with("127.0.0.1:0".parse().unwrap(), 7u32)
        .build(|_| Stateful {
            report: mpsc::channel().0,
            refused: None,
        })
        .expect_err("mismatched listener value");
    let text = err.to_string();
    assert!(text.contains("u32") && text.contains("&str"), "{text}");
}

/// Counts what `Remote` posts arrive, per poster, checking each poster's order.
struct Sink {
    report: mpsc::Sender<(usize, u64, u64)>,
    next: HashMap<u64, u64>,
    me: usize,
}

impl Handler for Sink {
    type Msg = (u64, u64);
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(&mut self, _: &mut Ctx<'_, Self>, _: ConnId, _: Listener<'_, ()>, _: SocketAddr) {}

    fn on_data(&mut self, _: &mut Ctx<'_, Self>, _: ConnId, _: &mut (), d: &[u8]) -> usize {
        d.len()
    }

    fn on_message(&mut self, _ctx: &mut Ctx<'_, Self>, from: Origin, (poster, seq): (u64, u64)) {
        assert_eq!(from, Origin::Remote);
        let next = self.next.entry(poster).or_default();
        assert_eq!(seq, *next, "posts from one thread arrive in order");
        *next += 1;
        let _ = self.report.send((self.me, poster, seq));
    }
}

/// Four threads post 5,000 messages each through clones of one `Remote` into
/// two shards' small mailboxes: every message is either delivered (counted,
/// in order per thread) or handed back as `Full` and retried — none lost.
fn remote_posts_arrive_counted(io: Io) {
    common::init_tracing();
    const THREADS: u64 = 4;
    const EACH: u64 = 5_000;
    let (tx, rx) = mpsc::channel();
    let server = Server::builder()
        .io(io)
        .shards(2)
        .pin(false)
        .mailbox_capacity(8)
        .build(move |shard| Sink {
            report: tx.clone(),
            next: HashMap::new(),
            me: shard.0,
        })
        .expect("valid config")
        .start()
        .expect("starts");
    let remote = server.remote();
    assert!(matches!(
        remote.post(ShardId(2), (0, 0)),
        Err(PostError::NoSuchShard(_))
    ));
    let posters: Vec<_> = (0..THREADS)
        .map(|t| {
            let remote = remote.clone();
            std::thread::spawn(move || {
                let mut full = 0u64;
                for seq in 0..EACH {
                    let mut msg = (t, seq);
                    loop {
                        match remote.post(ShardId((t % 2) as usize), msg) {
                            Ok(()) => break,
                            Err(PostError::Full(m)) => {
                                full += 1;
                                msg = m;
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("post failed: {e}"),
                        }
                    }
                }
                full
            })
        })
        .collect();
    let full: u64 = posters.into_iter().map(|p| p.join().expect("poster")).sum();
    let mut per_poster: HashMap<u64, u64> = HashMap::new();
    for _ in 0..THREADS * EACH {
        let (shard, poster, _seq) = rx.recv_timeout(common::LIMIT).expect("every post arrives");
        assert_eq!(
            shard as u64,
            poster % 2,
            "{io}: delivered to the shard posted to"
        );
        *per_poster.entry(poster).or_default() += 1;
    }
    assert!(
        per_poster.values().all(|&n| n == EACH),
        "{io}: {per_poster:?}"
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "{io}: nothing extra"
    );
    eprintln!("{io}: {full} posts met a full mailbox and were retried");
    server.shutdown_handle().shutdown();
    assert!(
        matches!(remote.post(ShardId(0), (9, 9)), Err(PostError::Stopped(_))),
        "{io}: posting after shutdown is refused"
    );
    common::shutdown_within(server, io);
}

/// Shard 0 sends 20,000 numbered messages to shard 1 through an `Outbox` over a
/// mailbox of 4: many meet `Full`, all arrive, in order.
struct Ordered {
    me: usize,
    outbox: Outbox<u64>,
    next: u64,
    sent: u64,
    report: mpsc::Sender<(u64, usize)>,
}

const ORDERED: u64 = 20_000;

impl Ordered {
    fn pump(&mut self, ctx: &mut Ctx<'_, Self>) {
        // Post in slices so the shard loop turns (and shard 1 drains) meanwhile.
        let end = (self.sent + 500).min(ORDERED);
        while self.sent < end {
            self.outbox.post(ctx, ShardId(1), self.sent);
            self.sent += 1;
        }
        if self.sent < ORDERED {
            ctx.set_timer(Duration::ZERO, ());
        }
    }
}

impl Handler for Ordered {
    type Msg = u64;
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        if self.me == 0 {
            self.pump(ctx);
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _: shardline::TimerId, _: ()) {
        self.pump(ctx);
    }

    fn on_mailbox_ready(&mut self, ctx: &mut Ctx<'_, Self>, to: ShardId) {
        self.outbox.flush(ctx, to);
        if self.sent == ORDERED && self.outbox.is_empty() {
            let _ = self.report.send((u64::MAX, 0));
        }
    }

    fn on_accept(&mut self, _: &mut Ctx<'_, Self>, _: ConnId, _: Listener<'_, ()>, _: SocketAddr) {}

    fn on_data(&mut self, _: &mut Ctx<'_, Self>, _: ConnId, _: &mut (), d: &[u8]) -> usize {
        d.len()
    }

    fn on_message(&mut self, _ctx: &mut Ctx<'_, Self>, _from: Origin, n: u64) {
        assert_eq!(n, self.next, "outbox order");
        self.next += 1;
        if self.next == ORDERED {
            let _ = self.report.send((self.next, self.outbox.len()));
        }
    }
}

fn outbox_keeps_order_under_full(io: Io) {
    common::init_tracing();
    let (tx, rx) = mpsc::channel();
    let server = Server::builder()
        .io(io)
        .shards(2)
        .pin(false)
        .mailbox_capacity(4)
        .build(move |shard| Ordered {
            me: shard.0,
            outbox: Outbox::new(),
            next: 0,
            sent: 0,
            report: tx.clone(),
        })
        .expect("valid config")
        .start()
        .expect("starts");
    let mut received = None;
    while received.is_none() {
        let (n, _) = rx.recv_timeout(common::LIMIT).expect("progress");
        if n != u64::MAX {
            received = Some(n);
        }
    }
    assert_eq!(
        received,
        Some(ORDERED),
        "{io}: every message arrived in order"
    );
    let full = server.metrics().total().mailbox_full;
    assert!(
        full > 0,
        "{io}: the test must have met Full to mean anything"
    );
    common::shutdown_within(server, io);
}

shardline::per_backend! {
    conn_state_and_listeners => conn_state_and_listener_values;
    remote_posts => remote_posts_arrive_counted;
    outbox_order => outbox_keeps_order_under_full;
}
