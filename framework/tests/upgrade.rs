//! Zero-downtime upgrades (`shardline::upgrade`): a server hands its listening
//! sockets over a Unix socket to a second server (in this test process: the
//! descriptors travel the same way as between processes), which adopts them —
//! with another shard count and accept mode — and the first stops accepting.
//! A flood of new connections across two handovers sees no refused, reset or
//! unanswered connection; a client connected before keeps being served by the
//! old server until it shuts down, then sees a clean EOF. A takeover that is
//! abandoned before `finish` leaves the old server serving. Application state
//! (`HandoverState`) is released when the new server asks, reclaimed when that
//! takeover is abandoned, refused by a server without any. Both backends.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use shardline::{
    upgrade::{HandedOver, HandoverState, Takeover, UpgradeOptions, UpgradeSocket},
    AcceptMode, Balance, Io, RunningServer, Server,
};

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    l.local_addr().expect("probe address")
}

fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("shardline-upg-{}-{tag}.sock", std::process::id()))
}

fn start(
    io: Io,
    addr: SocketAddr,
    shards: usize,
    mode: AcceptMode,
    takeover: Option<&mut Takeover>,
) -> RunningServer {
    common::init_tracing();
    let mut b = Server::builder()
        .io(io)
        .shards(shards)
        .pin(false)
        .accept_mode(mode)
        .listen(addr)
        .shutdown_timeout(Duration::from_secs(10));
    if let Some(t) = takeover {
        b = b.inherit_listeners(t.take_listeners().expect("listeners received once"));
    }
    b.build(|_| common::Echo)
        .expect("valid config")
        .start()
        .unwrap_or_else(|e| panic!("{io} {mode}: start on {addr}: {e}"))
}

/// Clients that each connect, send 8 bytes, expect them back and close, as fast
/// as they can, counting what went wrong.
struct Flood {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Flood {
    fn start(addr: SocketAddr, clients: usize) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|c| {
                let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        match Flood::one(addr, c, n) {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                if let Ok(mut v) = errors.lock() {
                                    v.push(e);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Flood {
            stop,
            ok,
            errors,
            threads,
        }
    }

    fn one(addr: SocketAddr, c: usize, n: u64) -> Result<(), String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let msg = format!("{c:03}{n:05}");
        let msg = &msg.as_bytes()[..8];
        s.write_all(msg).map_err(|e| format!("write: {e}"))?;
        let mut back = [0u8; 8];
        s.read_exact(&mut back).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => "EOF before the echo".to_string(),
            _ => format!("read: {e}"),
        })?;
        if back != msg {
            return Err("wrong echo".into());
        }
        Ok(())
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let errors = self.errors.lock().map(|v| v.clone()).unwrap_or_default();
        (self.ok.load(Ordering::Relaxed), errors)
    }
}

fn echo_once(s: &mut TcpStream, what: &[u8], label: &str) {
    s.write_all(what)
        .unwrap_or_else(|e| panic!("{label}: write: {e}"));
    let mut back = vec![0u8; what.len()];
    s.read_exact(&mut back)
        .unwrap_or_else(|e| panic!("{label}: echo: {e}"));
    assert_eq!(back, what, "{label}");
}

fn accepted(server: &RunningServer) -> u64 {
    server.metrics().total().conns_accepted
}

/// Hands `old`'s listeners to a new server (`shards`, `mode`) through the
/// control socket at `path`; returns the new server once the old one stopped
/// accepting.
fn upgrade(
    io: Io,
    addr: SocketAddr,
    path: &PathBuf,
    old: &RunningServer,
    shards: usize,
    mode: AcceptMode,
) -> RunningServer {
    let (tx, rx) = mpsc::channel::<HandedOver>();
    let control = UpgradeSocket::serve(
        path,
        old.shutdown_handle(),
        UpgradeOptions::default(),
        move |h| {
            let _ = tx.send(h);
        },
    )
    .expect("serve the upgrade socket");
    let mut takeover =
        Takeover::connect(path, UpgradeOptions::default()).expect("take over the listeners");
    assert_eq!(takeover.old_pid(), std::process::id());
    let new = start(io, addr, shards, mode, Some(&mut takeover));
    assert!(
        takeover.finish().expect("old server confirms"),
        "every shard released"
    );
    let done = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("on_handover ran");
    assert!(done.all_released);
    drop(control);
    new
}

fn a_flood_across_two_handovers_sees_no_error(io: Io) {
    let addr = free_port();
    let path = socket_path(&format!("flood-{io}"));
    let first = start(io, addr, 2, AcceptMode::ReusePort, None);
    let mut early = common::connect_bounded(addr, io);
    echo_once(&mut early, b"before", "early client on the first server");
    let flood = Flood::start(addr, 6);
    assert!(common::wait_until(common::LIMIT, || flood.ok() > 200));

    // reuseport, 2 shards -> reuseport, 3 shards (sockets shared out unevenly).
    let second = upgrade(io, addr, &path, &first, 3, AcceptMode::ReusePort);
    let at_switch = flood.ok();
    assert!(common::wait_until(common::LIMIT, || flood.ok() > at_switch + 200));
    // The early client is still served by the first server.
    echo_once(&mut early, b"during", "early client after the handover");
    let first_accepted = accepted(&first);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        accepted(&first),
        first_accepted,
        "{io}: the old server accepts no more"
    );
    let before_shutdown = accepted(&second);
    common::shutdown_within(first, io);
    let mut eof = [0u8; 1];
    assert_eq!(
        early.read(&mut eof).expect("a clean EOF, not a reset"),
        0,
        "{io}"
    );

    // reuseport, 3 shards -> handoff acceptor, 2 shards (all 2 original sockets).
    let third = upgrade(
        io,
        addr,
        &path,
        &second,
        2,
        AcceptMode::Handoff(Balance::RoundRobin),
    );
    let at_switch = flood.ok();
    assert!(common::wait_until(common::LIMIT, || flood.ok() > at_switch + 200));
    std::thread::sleep(Duration::from_millis(100));
    common::shutdown_within(second, io);
    let at_switch = flood.ok();
    assert!(common::wait_until(common::LIMIT, || flood.ok() > at_switch + 200));
    let (ok, errors) = flood.stop();
    assert!(
        accepted(&third) > 0 && before_shutdown > 0,
        "{io}: every server took connections"
    );
    common::shutdown_within(third, io);
    assert!(
        errors.is_empty(),
        "{io}: {} of {} connections failed: {:?}",
        errors.len(),
        ok + errors.len() as u64,
        &errors[..errors.len().min(10)]
    );
    assert!(!path.exists(), "{io}: the control socket file is removed");
}

fn an_abandoned_takeover_leaves_the_old_server_serving(io: Io) {
    let addr = free_port();
    let path = socket_path(&format!("abandon-{io}"));
    let first = start(io, addr, 2, AcceptMode::ReusePort, None);
    let (tx, rx) = mpsc::channel::<HandedOver>();
    let control = UpgradeSocket::serve(
        &path,
        first.shutdown_handle(),
        UpgradeOptions::default(),
        move |h| {
            let _ = tx.send(h);
        },
    )
    .expect("serve the upgrade socket");
    for _ in 0..2 {
        // Received, then dropped without `finish` (a new process that failed).
        let mut t = Takeover::connect(&path, UpgradeOptions::default()).expect("connect");
        let got = t.take_listeners().expect("listeners");
        assert_eq!(got.addrs(), vec![(addr, 2)], "{io}");
        drop(got);
        drop(t);
        std::thread::sleep(Duration::from_millis(50));
        let mut c = common::connect_bounded(addr, io);
        echo_once(&mut c, b"still", "after an abandoned takeover");
    }
    assert!(rx.try_recv().is_err(), "{io}: no handover happened");
    // A later attempt still works.
    let mut t = Takeover::connect(&path, UpgradeOptions::default()).expect("connect again");
    let second = start(io, addr, 1, AcceptMode::Exclusive, Some(&mut t));
    assert!(t.finish().expect("confirmed"));
    rx.recv_timeout(Duration::from_secs(10))
        .expect("handed over");
    drop(control);
    common::shutdown_within(first, io);
    let mut c = common::connect_bounded(addr, io);
    echo_once(&mut c, b"new", "served by the second server");
    drop(c);
    common::shutdown_within(second, io);
}

/// A stand-in for a locked data directory: who holds it, and a log of the
/// calls.
#[derive(Clone, Default)]
struct Lock {
    held_by_old: Arc<AtomicBool>,
    refuse: Arc<AtomicBool>,
    calls: Arc<std::sync::Mutex<Vec<&'static str>>>,
}

impl HandoverState for Lock {
    fn release(&mut self) -> Result<(), String> {
        self.calls.lock().unwrap().push("release");
        if self.refuse.load(Ordering::SeqCst) {
            return Err("the disk is on fire".into());
        }
        assert!(
            self.held_by_old.swap(false, Ordering::SeqCst),
            "released twice"
        );
        Ok(())
    }

    fn reclaim(&mut self) {
        self.calls.lock().unwrap().push("reclaim");
        assert!(
            !self.held_by_old.swap(true, Ordering::SeqCst),
            "reclaimed twice"
        );
    }
}

fn application_state_is_handed_over_or_taken_back(io: Io) {
    let addr = free_port();
    let path = socket_path(&format!("state-{io}"));
    let first = start(io, addr, 2, AcceptMode::ReusePort, None);
    let lock = Lock::default();
    lock.held_by_old.store(true, Ordering::SeqCst);
    let (tx, rx) = mpsc::channel::<HandedOver>();
    let control = UpgradeSocket::serve_with_state(
        &path,
        first.shutdown_handle(),
        UpgradeOptions::default(),
        Some(Box::new(lock.clone())),
        move |h| {
            let _ = tx.send(h);
        },
    )
    .expect("serve the upgrade socket");
    let calls = || lock.calls.lock().unwrap().clone();

    // Released on request, taken back when the new process fails to start.
    let mut t = Takeover::connect(&path, UpgradeOptions::default()).expect("connect");
    t.request_state().expect("state handed over");
    assert!(!lock.held_by_old.load(Ordering::SeqCst), "{io}: released");
    drop(t);
    assert!(
        common::wait_until(Duration::from_secs(10), || calls()
            == ["release", "reclaim"]),
        "{io}: {:?}",
        calls()
    );
    assert!(lock.held_by_old.load(Ordering::SeqCst), "{io}: reclaimed");
    let mut c = common::connect_bounded(addr, io);
    echo_once(&mut c, b"still", "after an abandoned takeover");

    // A refusal reaches the new process with its reason; nothing to reclaim.
    lock.refuse.store(true, Ordering::SeqCst);
    let mut t = Takeover::connect(&path, UpgradeOptions::default()).expect("connect");
    let err = t.request_state().expect_err("refused").to_string();
    assert!(err.contains("the disk is on fire"), "{io}: {err}");
    drop(t);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(calls(), ["release", "reclaim", "release"], "{io}");
    assert!(lock.held_by_old.load(Ordering::SeqCst), "{io}: still held");
    echo_once(&mut c, b"again", "after a refused takeover");

    // Released, then the new server serves: the state stays with it.
    lock.refuse.store(false, Ordering::SeqCst);
    let mut t = Takeover::connect(&path, UpgradeOptions::default()).expect("connect");
    t.request_state().expect("state handed over");
    let second = start(io, addr, 1, AcceptMode::Exclusive, Some(&mut t));
    assert!(t.finish().expect("confirmed"));
    rx.recv_timeout(Duration::from_secs(10))
        .expect("handed over");
    assert_eq!(
        calls(),
        ["release", "reclaim", "release", "release"],
        "{io}"
    );
    assert!(
        !lock.held_by_old.load(Ordering::SeqCst),
        "{io}: the new one has it"
    );
    drop(control);
    drop(c);
    common::shutdown_within(first, io);
    common::shutdown_within(second, io);

    // A server without state refuses a request for it, and keeps serving.
    let path = socket_path(&format!("nostate-{io}"));
    let third = start(io, free_port(), 1, AcceptMode::ReusePort, None);
    let control = UpgradeSocket::serve(
        &path,
        third.shutdown_handle(),
        UpgradeOptions::default(),
        |_| {},
    )
    .expect("serve");
    let mut t = Takeover::connect(&path, UpgradeOptions::default()).expect("connect");
    let err = t.request_state().expect_err("no state").to_string();
    assert!(err.contains("no state to hand over"), "{io}: {err}");
    drop(control);
    common::shutdown_within(third, io);
}

shardline::per_backend! {
    application_state_is_handed_over_or_taken_back => application_state_is_handed_over_or_taken_back;
    a_flood_across_two_handovers_sees_no_error => a_flood_across_two_handovers_sees_no_error;
    an_abandoned_takeover_leaves_the_old_server_serving => an_abandoned_takeover_leaves_the_old_server_serving;
}
