//! Connections the handler keeps open through shutdown
//! (`Ctx::keep_open_on_shutdown`) finish their work; the deadline still closes
//! them. Both backends.

mod common;

use std::time::Duration;

use common::{builder, start};
use shardline::{ConnId, Ctx, Handler, Io};

/// Answers `slow` 300 ms later and then closes; at shutdown keeps connections with
/// an answer pending (and, if asked, one that never finishes) open.
struct Finisher {
    pending: Vec<ConnId>,
    stuck: Vec<ConnId>,
}

impl Handler for Finisher {
    type Msg = ();
    type Timer = ConnId;
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
        if data.starts_with(b"slow") {
            self.pending.push(conn);
            ctx.set_timer(Duration::from_millis(300), conn);
        } else if data.starts_with(b"stuck") {
            self.stuck.push(conn);
        }
        data.len()
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _: shardline::TimerId, conn: ConnId) {
        self.pending.retain(|c| *c != conn);
        let _ = ctx.send(conn, b"done");
        ctx.close(conn);
    }

    fn on_shutdown(&mut self, ctx: &mut Ctx<'_, Self>) {
        for &conn in self.pending.iter().chain(&self.stuck) {
            ctx.keep_open_on_shutdown(conn);
        }
    }
}

fn kept_connections_finish_their_work_and_the_deadline_still_holds(io: Io) {
    use std::io::{Read, Write};
    let b = builder(io, 1).shutdown_timeout(Duration::from_secs(3));
    let (server, addr) = start(b, |_| Finisher {
        pending: Vec::new(),
        stuck: Vec::new(),
    });
    let connect = |what: &[u8]| {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        if !what.is_empty() {
            s.write_all(what).expect("write");
        }
        s
    };
    let mut slow = connect(b"slow");
    let mut stuck = connect(b"stuck");
    let mut idle = connect(b"");
    // Let the server see both requests before shutting down.
    std::thread::sleep(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let stopper = std::thread::spawn(move || server.shutdown());
    // The idle connection is closed by the shutdown at once: EOF, no data.
    let mut buf = Vec::new();
    idle.read_to_end(&mut buf).expect("idle closed");
    assert!(buf.is_empty(), "{io:?}");
    // The kept one finishes its answer.
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer).expect("answer then EOF");
    assert_eq!(answer, b"done", "{io:?}");
    // The one that never finishes is closed at the deadline.
    let mut rest = Vec::new();
    stuck
        .read_to_end(&mut rest)
        .expect("closed at the deadline");
    assert!(rest.is_empty(), "{io:?}");
    stopper.join().expect("stopper").expect("clean shutdown");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{io:?}: the stuck connection kept the shard until its deadline"
    );
}

shardline::per_backend! {
    kept_connections_finish_their_work_and_the_deadline_still_holds => kept_connections_finish_their_work_and_the_deadline_still_holds;
}
