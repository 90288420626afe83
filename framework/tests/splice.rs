//! `Ctx::splice_into` on both backends: a relay started from inside `on_data`,
//! behind bytes already queued to the destination and the unconsumed rest of
//! the current read, keeps the order; the source's EOF comes after its last byte
//! reached the destination; with no pipe left, `splice_into` says so and
//! nothing changes.

mod common;

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use common::{builder, start, BACKENDS};
use shardline::{ConnId, Ctx, Handler, SpliceError};

const LIMIT: Duration = Duration::from_secs(20);

/// The first connection is the source, the second the sink. The source's first
/// `on_data` queues a header and half the slice to the sink, starts the relay
/// and leaves the other half unconsumed; the source's EOF half-closes the sink.
#[derive(Default)]
struct Relay {
    source: Option<ConnId>,
    sink: Option<ConnId>,
    /// The first slice from the source was handled (header queued).
    first_done: bool,
    started: Arc<Mutex<Vec<Result<(), SpliceError>>>>,
}

impl Handler for Relay {
    type Msg = ();

    fn on_accept(&mut self, _: &mut Ctx<'_>, conn: ConnId, _: std::net::SocketAddr) {
        if self.source.is_none() {
            self.source = Some(conn);
        } else {
            self.sink = Some(conn);
        }
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, data: &[u8]) -> usize {
        let (Some(src), Some(sink)) = (self.source, self.sink) else {
            return 0; // held until the sink is there
        };
        if conn != src {
            return data.len();
        }
        if self.first_done {
            // Copying (no pipe): everything goes the ordinary way.
            ctx.send(sink, data).expect("queued");
            return data.len();
        }
        self.first_done = true;
        ctx.send(sink, b"HEADER").expect("queued");
        let half = data.len() / 2;
        ctx.send(sink, &data[..half]).expect("queued");
        let r = ctx.splice_into(src, sink);
        let second = ctx.splice_into(src, sink);
        self.started.lock().expect("lock").extend([r, second]);
        half
    }

    fn on_eof(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
        if Some(conn) == self.source {
            if let Some(sink) = self.sink {
                let _ = ctx.shutdown_write(sink);
            }
        }
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

fn run(io: shardline::Io, pipes: usize) -> Vec<Result<(), SpliceError>> {
    let started = Arc::new(Mutex::new(Vec::new()));
    let s = started.clone();
    let (server, addr) = start(builder(io, 1).splice_pipes(pipes), move |_| Relay {
        started: s.clone(),
        ..Relay::default()
    });
    let mut source = TcpStream::connect(addr).expect("connect source");
    thread::sleep(Duration::from_millis(100));
    let mut sink = TcpStream::connect(addr).expect("connect sink");
    sink.set_read_timeout(Some(LIMIT)).expect("timeout");
    thread::sleep(Duration::from_millis(100));
    let data = pattern(8 << 20);
    let mine = data.clone();
    let writer = thread::spawn(move || {
        source.write_all(&mine).expect("source writes");
        source.shutdown(Shutdown::Write).expect("source FIN");
        source
    });
    let mut got = Vec::new();
    sink.read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("{io}: sink read: {e}"));
    let _source = writer.join().expect("writer");
    let mut expected = b"HEADER".to_vec();
    expected.extend_from_slice(&data);
    assert!(
        got == expected,
        "{io} pipes={pipes}: sink got {} of {} bytes, or out of order",
        got.len(),
        expected.len()
    );
    drop(server);
    let r = started.lock().expect("lock").clone();
    r
}

#[test]
fn relay_started_mid_read_keeps_queued_bytes_first_and_ends_with_eof() {
    for io in BACKENDS {
        let r = run(io, 4);
        assert_eq!(r[0], Ok(()), "{io}: relay started");
        assert_eq!(r[1], Err(SpliceError::Busy), "{io}: not twice");
    }
}

#[test]
fn without_a_pipe_nothing_changes() {
    for io in BACKENDS {
        let r = run(io, 0);
        assert_eq!(r[0], Err(SpliceError::NoPipe), "{io}");
    }
}
