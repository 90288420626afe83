//! `Ctx::splice_into` on both backends: a relay started from inside `on_data`,
//! behind bytes already queued to the destination and the unconsumed rest of
//! the current read, keeps the order; the source's EOF comes after its last byte
//! reached the destination; with no pipe left, `splice_into` says so and
//! nothing changes.

mod common;

use shardline::Io;
use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use common::{builder, start};
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
    /// Close the source gracefully this long after the relay started.
    close_source_after: Option<Duration>,
    /// The length of the source's first slice (all of it goes to the sink the
    /// ordinary way: half sent, half left unconsumed).
    first_len: Arc<std::sync::atomic::AtomicUsize>,
    started: Arc<Mutex<Vec<Result<(), SpliceError>>>>,
}

impl Handler for Relay {
    type Msg = ();
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        _: &mut Ctx<'_, Self>,
        conn: ConnId,
        _listener: shardline::Listener<'_, Self::Listener>,
        _: std::net::SocketAddr,
    ) {
        if self.source.is_none() {
            self.source = Some(conn);
        } else {
            self.sink = Some(conn);
        }
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
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
        self.first_len
            .store(data.len(), std::sync::atomic::Ordering::SeqCst);
        ctx.send(sink, b"HEADER").expect("queued");
        let half = data.len() / 2;
        ctx.send(sink, &data[..half]).expect("queued");
        let r = ctx.splice_into(src, sink);
        let second = ctx.splice_into(src, sink);
        if let Some(after) = self.close_source_after {
            ctx.set_timer(after, ());
        }
        self.started.lock().expect("lock").extend([r, second]);
        half
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _: shardline::TimerId, _: ()) {
        if let Some(src) = self.source {
            ctx.close(src);
        }
    }

    fn on_close(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: Self::Conn,
        _: &shardline::CloseReason,
    ) {
        if Some(conn) == self.source {
            if let Some(sink) = self.sink {
                let _ = ctx.shutdown_write(sink);
            }
        }
    }

    fn on_eof(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _state: &mut Self::Conn) {
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

/// Connects the source, then the sink (the handler takes them in that order).
fn source_and_sink(addr: std::net::SocketAddr) -> (TcpStream, TcpStream) {
    let source = TcpStream::connect(addr).expect("connect source");
    thread::sleep(Duration::from_millis(100));
    let sink = TcpStream::connect(addr).expect("connect sink");
    sink.set_read_timeout(Some(LIMIT)).expect("timeout");
    thread::sleep(Duration::from_millis(100));
    (source, sink)
}

fn run(io: shardline::Io, pipes: usize) -> Vec<Result<(), SpliceError>> {
    let started = Arc::new(Mutex::new(Vec::new()));
    let s = started.clone();
    let (server, addr) = start(builder(io, 1).splice_pipes(pipes), move |_| Relay {
        started: s.clone(),
        ..Relay::default()
    });
    let (mut source, mut sink) = source_and_sink(addr);
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

fn relay_started_mid_read_keeps_queued_bytes_first_and_ends_with_eof(io: Io) {
    let r = run(io, 4);
    assert_eq!(r[0], Ok(()), "{io}: relay started");
    assert_eq!(r[1], Err(SpliceError::Busy), "{io}: not twice");
}

fn without_a_pipe_nothing_changes(io: Io) {
    let r = run(io, 0);
    assert_eq!(r[0], Err(SpliceError::NoPipe), "{io}");
}

/// A graceful close of the source while its pipe holds bytes (the sink is not
/// reading yet): everything the shard took from the source — ordinary reads and
/// pipe fills — still reaches the sink, in order; only what was left unread in
/// the source's socket is not.
fn graceful_close_of_the_source_keeps_what_it_piped(io: Io) {
    let first_len = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let f = first_len.clone();
    let (server, addr) = start(builder(io, 1).splice_pipes(4), move |_| Relay {
        close_source_after: Some(Duration::from_millis(300)),
        first_len: f.clone(),
        ..Relay::default()
    });
    let metrics = server.metrics();
    let (mut source, mut sink) = source_and_sink(addr);
    let data = pattern(8 << 20);
    let mine = data.clone();
    // The source writes until the shard's close stops it (an error then).
    let writer = thread::spawn(move || {
        let _ = source.write_all(&mine);
        source
    });
    // The sink reads nothing until well after the close: the pipe is full.
    thread::sleep(Duration::from_millis(800));
    let mut got = Vec::new();
    sink.read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("{io}: sink read: {e}"));
    let _source = writer.join().expect("writer");
    let spliced = metrics.total().bytes_spliced;
    let first = first_len.load(std::sync::atomic::Ordering::SeqCst) as u64;
    let mut expected = b"HEADER".to_vec();
    expected.extend_from_slice(&data);
    assert!(
        expected.starts_with(&got),
        "{io}: the sink's bytes are not the source's, in order"
    );
    assert!(spliced > 0, "{io}: the pipe carried bytes");
    // (Input arriving after the close is discarded, so `got` is a prefix.)
    assert!(
        got.len() as u64 >= 6 + first + spliced,
        "{io}: the sink got {} bytes, fewer than the {} the shard took in before \
         the close (6 + first slice {first} + piped {spliced})",
        got.len(),
        6 + first + spliced
    );
    drop(server);
}

shardline::per_backend! {
    relay_started_mid_read_keeps_queued_bytes_first_and_ends_with_eof => relay_started_mid_read_keeps_queued_bytes_first_and_ends_with_eof;
    without_a_pipe_nothing_changes => without_a_pipe_nothing_changes;
    graceful_close_of_the_source_keeps_what_it_piped => graceful_close_of_the_source_keeps_what_it_piped;
}
