//! `Io::Auto` with the io_uring probe forced to fail comes up on epoll and logs why;
//! `Io::Uring` under the same condition is an error, never a silent fallback.
//!
//! One test in this file on purpose: it sets a process-wide environment variable and
//! a global log subscriber.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use shardline::{Backend, ConnId, Ctx, Error, Handler, Io, Server, ENV_FORCE_URING_PROBE_FAIL};

struct Nop;
impl Handler for Nop {
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
        _ctx: &mut Ctx<'_, Self>,
        _conn: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        data.len()
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn forced_probe_failure_falls_back_to_epoll_and_says_why() {
    let log = Capture::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();
    // SAFETY (std::env::set_var is unsafe in edition 2024): this test binary runs
    // this single test, and no other thread reads the environment concurrently.
    std::env::set_var(ENV_FORCE_URING_PROBE_FAIL, "1");

    let server = Server::builder()
        .io(Io::Auto)
        .shards(2)
        .pin(false)
        .listen("127.0.0.1:0".parse().expect("literal"))
        .build(|_| Nop)
        .expect("config")
        .start()
        .expect("auto starts on epoll");
    assert_eq!(server.backend(), Backend::Epoll);
    server.shutdown().expect("clean shutdown");

    let text = String::from_utf8(log.0.lock().expect("log").clone()).expect("utf8");
    let warn: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warn.len(), 1, "exactly one fallback warning: {text}");
    assert!(warn[0].contains("falling back to epoll"), "{text}");
    assert!(
        warn[0].contains(ENV_FORCE_URING_PROBE_FAIL),
        "the reason is named: {text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("shard started") && l.contains("backend=epoll"))
            .count(),
        2,
        "each shard logs its backend: {text}"
    );

    let forced = Server::builder()
        .io(Io::Uring)
        .shards(1)
        .pin(false)
        .build(|_| Nop)
        .expect("config")
        .start();
    match forced {
        Err(Error::UringUnavailable(reason)) => {
            assert!(reason.contains(ENV_FORCE_URING_PROBE_FAIL), "{reason}")
        }
        other => panic!("Io::Uring must fail loudly, got {other:?}"),
    }
}
