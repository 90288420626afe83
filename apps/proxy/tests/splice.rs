//! L4 relaying through kernel pipes (`[limits] splice = "always"`), on both
//! backends forced: bulk streams stay byte-identical both ways with half-close,
//! a pool of one pipe serves several sessions (the others copy), a stalled
//! destination pauses the source without the proxy holding more, and the switch
//! from copying to splicing mid-stream keeps the order.

mod common;

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread,
    time::Duration,
};

use common::{init_tracing, TcpBackend, WAIT};
use rand::{rngs::StdRng, RngCore, SeedableRng};
use shardline::{Io, Server};
use shardline_proxy::{Config, RunningProxy};

fn config(backend: SocketAddr, splice: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\n\
         [pool.p]\nbackends = [{{ address = \"{backend}\" }}]\n\
         [limits]\nsend_high_water = 65536\nsplice = \"{splice}\"\n"
    )
}

/// A one-shard proxy with `pipes` relay pipes.
fn start(io: Io, backend: SocketAddr, pipes: usize) -> RunningProxy {
    init_tracing();
    let config = Config::parse(&config(backend, "always"), "test").expect("valid config");
    let builder = Server::builder()
        .io(io)
        .shards(1)
        .pin(false)
        .splice_pipes(pipes)
        .shutdown_timeout(Duration::from_secs(5));
    shardline_proxy::build(builder, config)
        .expect("builds")
        .start()
        .expect("starts")
}

fn connect(proxy: &RunningProxy) -> TcpStream {
    let s = TcpStream::connect(proxy.local_addrs()[0]).expect("connect to the proxy");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.set_write_timeout(Some(WAIT)).expect("timeout");
    s
}

fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// A backend that reads everything to EOF, then answers `reply` and FINs; what
/// it read goes to `got`.
fn read_then_answer(reply: Arc<Vec<u8>>, got: mpsc::Sender<Vec<u8>>) -> TcpBackend {
    TcpBackend::start(move |mut s| {
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut all = Vec::new();
        s.read_to_end(&mut all).expect("backend reads to EOF");
        s.write_all(&reply).expect("backend answers");
        s.shutdown(Shutdown::Write).expect("backend half-closes");
        let _ = got.send(all);
    })
}

/// 32 MiB up while the way back stays open, the client's FIN, then 32 MiB down
/// and the backend's FIN: both streams arrive byte for byte, through pipes.
fn bulk_streams_both_ways_with_half_close_go_through_pipes(io: Io) {
    const LEN: usize = 32 << 20;
    let up = random(1, LEN);
    let down = Arc::new(random(2, LEN));
    let (tx, rx) = mpsc::channel();
    let backend = read_then_answer(down.clone(), tx);
    let proxy = start(io, backend.addr, 16);
    let mut client = connect(&proxy);
    client.write_all(&up).expect("client writes");
    client
        .shutdown(Shutdown::Write)
        .expect("client half-closes");
    let mut received = Vec::with_capacity(LEN);
    client
        .read_to_end(&mut received)
        .unwrap_or_else(|e| panic!("{io}: client read: {e}"));
    let got = rx.recv_timeout(WAIT).expect("backend finished");
    assert!(
        got == up,
        "{io}: upstream bytes differ ({} of {LEN})",
        got.len()
    );
    assert!(
        received == *down,
        "{io}: downstream bytes differ ({} of {LEN})",
        received.len()
    );
    let m = proxy.metrics().total();
    assert!(
        m.relays_started >= 2,
        "{io}: both directions spliced: {m:?}"
    );
    assert!(
        m.bytes_spliced > LEN as u64,
        "{io}: most bytes went through pipes: {m:?}"
    );
}

/// One pipe, four concurrent sessions: the first bulk direction gets it, the
/// others copy (and may take it when it comes back); every stream is intact.
fn a_pool_of_one_pipe_serves_several_sessions(io: Io) {
    const LEN: usize = 4 << 20;
    let (tx, rx) = mpsc::channel();
    let backend = TcpBackend::start(move |mut s| {
        // Echo: the same bytes back, then FIN after the client's FIN.
        let mut buf = vec![0u8; 64 << 10];
        let mut seen = 0usize;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen += n;
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        let _ = tx.send(seen);
    });
    let proxy = start(io, backend.addr, 1);
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let mut c = connect(&proxy);
            let data = random(10 + i, LEN);
            thread::spawn(move || {
                let mut w = c.try_clone().expect("clone");
                let mine = data.clone();
                let writer = thread::spawn(move || {
                    w.write_all(&mine).expect("client writes");
                    w.shutdown(Shutdown::Write).expect("half-close");
                });
                let mut back = Vec::with_capacity(LEN);
                c.read_to_end(&mut back).expect("client reads");
                writer.join().expect("writer");
                back == data
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        assert!(
            c.join().expect("client thread"),
            "{io}: session {i} differs"
        );
    }
    for _ in 0..4 {
        assert_eq!(rx.recv_timeout(WAIT).expect("backend done"), LEN, "{io}");
    }
    let m = proxy.metrics().total();
    assert!(m.relays_started >= 1, "{io}: the pipe was used: {m:?}");
}

/// The backend stops reading: the proxy keeps at most a pipe and a queue's
/// worth, the client's writes stall (its source is paused), and once the
/// backend reads again everything arrives intact.
fn a_stalled_destination_pauses_the_source(io: Io) {
    const LEN: usize = 48 << 20;
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let (got_tx, got_rx) = mpsc::channel();
    let backend = TcpBackend::start(move |mut s| {
        // Read one bulk chunk (so the proxy switches to splice), then stall.
        let mut first = vec![0u8; 256 << 10];
        s.read_exact(&mut first).expect("first chunk");
        let _ = go_rx.lock().expect("lock").recv_timeout(WAIT);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("backend reads the rest");
        first.extend_from_slice(&rest);
        let _ = got_tx.send(first);
    });
    let proxy = start(io, backend.addr, 16);
    let data = random(7, LEN);
    let mut client = connect(&proxy);
    let done = Arc::new(AtomicBool::new(false));
    let (d, mine) = (done.clone(), data.clone());
    let writer = thread::spawn(move || {
        client.write_all(&mine).expect("client writes");
        client.shutdown(Shutdown::Write).expect("half-close");
        d.store(true, Ordering::SeqCst);
    });
    // Let the pipeline fill up against the stalled backend.
    let m = proxy.metrics();
    let held = || {
        let t = m.total();
        t.bytes_in.saturating_sub(t.bytes_out)
    };
    let mut last = u64::MAX;
    for _ in 0..50 {
        thread::sleep(Duration::from_millis(40));
        let now = m.total().bytes_in;
        if now == last {
            break;
        }
        last = now;
    }
    assert!(
        !done.load(Ordering::SeqCst),
        "{io}: the client could not write everything while the backend stalls"
    );
    assert!(
        held() <= 2 << 20,
        "{io}: the proxy holds {} bytes for a stalled backend",
        held()
    );
    assert!(m.total().relays_started >= 1, "{io}: spliced");
    go_tx.send(()).expect("backend waits");
    writer.join().expect("writer");
    let got = got_rx.recv_timeout(WAIT).expect("backend finished");
    assert!(got == data, "{io}: bytes differ ({} of {LEN})", got.len());
}

/// The client sends small messages first (copied, each answered), then bulk
/// while the backend reads slowly, so the proxy's queue to it holds bytes when
/// the direction switches to splice: the backend sees one stream in order.
fn switching_to_splice_mid_stream_keeps_the_order(io: Io) {
    let (got_tx, got_rx) = mpsc::channel();
    let backend = TcpBackend::start(move |mut s| {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            // Slow reader: the proxy's queue to the backend fills up.
            thread::sleep(Duration::from_micros(200));
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        let _ = got_tx.send(all);
    });
    let proxy = start(io, backend.addr, 16);
    let mut client = connect(&proxy);
    let mut expected = Vec::new();
    for i in 0..20u8 {
        let msg = [i; 100];
        client.write_all(&msg).expect("small write");
        expected.extend_from_slice(&msg);
        thread::sleep(Duration::from_millis(2));
    }
    let bulk = random(9, 8 << 20);
    client.write_all(&bulk).expect("bulk write");
    expected.extend_from_slice(&bulk);
    client.shutdown(Shutdown::Write).expect("half-close");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("EOF from the proxy");
    let got = got_rx.recv_timeout(WAIT).expect("backend finished");
    assert!(
        got == expected,
        "{io}: order differs ({} of {} bytes)",
        got.len(),
        expected.len()
    );
    assert!(proxy.metrics().total().relays_started >= 1, "{io}: spliced");
}

shardline::per_backend! {
    bulk_streams_both_ways_with_half_close_go_through_pipes => bulk_streams_both_ways_with_half_close_go_through_pipes;
    a_pool_of_one_pipe_serves_several_sessions => a_pool_of_one_pipe_serves_several_sessions;
    a_stalled_destination_pauses_the_source => a_stalled_destination_pauses_the_source;
    switching_to_splice_mid_stream_keeps_the_order => switching_to_splice_mid_stream_keeps_the_order;
}
