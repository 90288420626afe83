//! Fairness on one shard: a client that floods an echo handler (a writer thread sending
//! 64 KiB chunks non-stop, a reader thread taking everything back) does not starve a
//! ping-pong client. 200 round trips of 16 bytes must complete, byte-exact, while the
//! flood keeps moving data through the same shard; with the default read budget and
//! with a 16 KiB one. The flood's echo is checked byte by byte as well.

mod common;

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use shardline::{CloseReason, ConnId, Ctx, Handler, Io};

const KIB: usize = 1024;
const FLOOD_CHUNK: usize = 64 * KIB;
/// The flood must have echoed this much before the ping-pong starts.
const FLOOD_WARMUP: u64 = 1024 * 1024;
const ROUNDS: usize = 200;
const MSG: usize = 16;
/// Liveness bound for every wait.
use common::LIMIT;

/// Byte `offset` of the flood stream. 251 does not divide 64 KiB, so a lost or
/// repeated chunk shows.
fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

type Closes = Arc<Mutex<Vec<(SocketAddr, CloseReason)>>>;

/// Echoes, pausing reads on backpressure and resuming them once drained.
struct Echo {
    closes: Closes,
    peers: HashMap<ConnId, SocketAddr>,
}

impl Handler for Echo {
    type Msg = ();
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _listener: shardline::Listener<'_, Self::Listener>,
        peer: SocketAddr,
    ) {
        self.peers.insert(conn, peer);
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        // A refusal closes the connection; the test sees it in `on_close`.
        let _ = ctx.send(conn, data);
        data.len()
    }

    fn on_backpressure(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _state: &mut Self::Conn) {
        ctx.pause_reading(conn);
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _state: &mut Self::Conn) {
        ctx.resume_reading(conn);
    }

    fn on_close(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: Self::Conn,
        reason: &CloseReason,
    ) {
        if let Some(peer) = self.peers.remove(&conn) {
            self.closes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((peer, reason.clone()));
        }
    }
}

/// Counters the flood threads publish.
#[derive(Default)]
struct Flood {
    stop: AtomicBool,
    writer_done: AtomicBool,
    written: AtomicU64,
    echoed: AtomicU64,
}

/// The two tests each run three busy threads; one at a time keeps a 2-core machine
/// from being oversubscribed by this file alone.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn ping_pong_completes_while_a_peer_floods(io: Io, read_budget: Option<usize>) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let closes = Closes::default();
    let mut builder = common::builder(io, 1);
    if let Some(bytes) = read_budget {
        builder = builder.read_budget(bytes);
    }
    let (server, addr) = {
        let closes = closes.clone();
        common::start(builder, move |_| Echo {
            closes: closes.clone(),
            peers: HashMap::new(),
        })
    };
    let metrics = server.metrics();
    // Every flood chunk is a slice of this, starting at `offset % 251`.
    let base: Arc<Vec<u8>> = Arc::new((0..(FLOOD_CHUNK + 251) as u64).map(pattern).collect());
    let flood = Arc::new(Flood::default());

    let mut f_read = common::connect_bounded(addr, io);
    let mut f_write = f_read.try_clone().expect("clone flood socket");
    let writer = {
        let (flood, base) = (flood.clone(), base.clone());
        thread::spawn(move || -> io::Result<u64> {
            // Bounded even if nobody says stop.
            let deadline = Instant::now() + 2 * LIMIT;
            let mut off = 0u64;
            let result = loop {
                if flood.stop.load(Ordering::Acquire) || Instant::now() >= deadline {
                    break Ok(off);
                }
                let start = (off % 251) as usize;
                if let Err(e) = f_write.write_all(&base[start..start + FLOOD_CHUNK]) {
                    break Err(e);
                }
                off += FLOOD_CHUNK as u64;
                flood.written.store(off, Ordering::Release);
            };
            flood.writer_done.store(true, Ordering::Release);
            result
        })
    };
    let reader = {
        let (flood, base) = (flood.clone(), base.clone());
        thread::spawn(move || -> Result<u64, String> {
            // Short timeouts so the reader notices the end of the flood; it stops
            // once it has everything the writer wrote, or after LIMIT without
            // progress.
            f_read
                .set_read_timeout(Some(Duration::from_millis(20)))
                .map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; FLOOD_CHUNK];
            let mut got = 0u64;
            let mut progress = Instant::now();
            loop {
                if flood.writer_done.load(Ordering::Acquire)
                    && got == flood.written.load(Ordering::Acquire)
                {
                    return Ok(got);
                }
                if progress.elapsed() > LIMIT {
                    return Err(format!("flood echo stalled at {got} B"));
                }
                let n = match f_read.read(&mut buf) {
                    Ok(0) => return Err(format!("flood got EOF after {got} B")),
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue
                    }
                    Err(e) => return Err(format!("flood read after {got} B: {e}")),
                };
                let start = (got % 251) as usize;
                if buf[..n] != base[start..start + n] {
                    return Err(format!(
                        "flood echo corrupted within {got}..{}",
                        got + n as u64
                    ));
                }
                got += n as u64;
                progress = Instant::now();
                flood.echoed.store(got, Ordering::Relaxed);
            }
        })
    };

    assert!(
        common::wait_until(LIMIT, || flood.echoed.load(Ordering::Relaxed)
            >= FLOOD_WARMUP
            || reader.is_finished()
            || writer.is_finished()),
        "{io}: the flood never got going"
    );
    if reader.is_finished() {
        panic!("{io}: flood reader stopped early: {:?}", reader.join());
    }
    if writer.is_finished() {
        panic!("{io}: flood writer stopped early: {:?}", writer.join());
    }

    let mut p = common::connect_bounded(addr, io);
    let echoed_before = flood.echoed.load(Ordering::Relaxed);
    let bytes_in_before = metrics.total().bytes_in;
    let started = Instant::now();
    let mut back = [0u8; MSG];
    for round in 0..ROUNDS {
        let msg: [u8; MSG] = std::array::from_fn(|i| (round * 7 + i) as u8);
        p.write_all(&msg)
            .and_then(|()| p.read_exact(&mut back))
            .unwrap_or_else(|e| panic!("{io}: ping-pong round {round} failed: {e}"));
        assert_eq!(
            back, msg,
            "{io}: ping-pong round {round} echoed wrong bytes"
        );
    }
    let elapsed = started.elapsed();
    let echoed_after = flood.echoed.load(Ordering::Relaxed);
    let flood_in = metrics.total().bytes_in - bytes_in_before - (ROUNDS * MSG) as u64;
    let still_flooding = !writer.is_finished() && !reader.is_finished();
    eprintln!(
        "{io} budget {read_budget:?}: {ROUNDS} rounds in {elapsed:?}; flood echoed \
             {echoed_before} B before, {echoed_after} B after, server read {flood_in} B of \
             flood meanwhile"
    );
    assert!(
        elapsed < LIMIT,
        "{io}: {ROUNDS} ping-pong rounds took {elapsed:?}"
    );
    assert!(
        still_flooding,
        "{io}: the flood stopped before the ping-pong finished"
    );
    assert!(
        echoed_after > FLOOD_WARMUP,
        "{io}: flood echoed only {echoed_after} B"
    );
    assert!(
        flood_in > 0,
        "{io}: the server read nothing from the flood while the ping-pong ran"
    );

    assert_eq!(
        *closes.lock().unwrap_or_else(|e| e.into_inner()),
        vec![],
        "{io}: no connection was closed while the flood and the ping-pong ran"
    );

    flood.stop.store(true, Ordering::Release);
    let written = writer
        .join()
        .expect("writer thread")
        .unwrap_or_else(|e| panic!("{io}: flood write: {e}"));
    let echoed = reader
        .join()
        .expect("reader thread")
        .unwrap_or_else(|e| panic!("{io}: {e}"));
    assert_eq!(echoed, written, "{io}: every flood byte echoed");
    let total = metrics.total();
    assert_eq!(total.closed_send_queue_full, 0, "{io}: {total:?}");
    assert_eq!(total.handler_panics, 0, "{io}: {total:?}");
    drop(p);
    common::shutdown_within(server, io);
}

fn ping_pong_completes_while_a_peer_floods_default_budget(io: Io) {
    ping_pong_completes_while_a_peer_floods(io, None);
}

fn ping_pong_completes_while_a_peer_floods_16k_read_budget(io: Io) {
    ping_pong_completes_while_a_peer_floods(io, Some(16 * KIB));
}

shardline::per_backend! {
    ping_pong_completes_while_a_peer_floods_default_budget => ping_pong_completes_while_a_peer_floods_default_budget;
    ping_pong_completes_while_a_peer_floods_16k_read_budget => ping_pong_completes_while_a_peer_floods_16k_read_budget;
}
