//! A second shardline-chat on an address the first one serves exits at once with a
//! clear error instead of joining the first one's SO_REUSEPORT group (the default
//! accept mode) and taking half of its connections; the first goes on serving.
//! Both I/O backends.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use shardline::Io;

const WAIT: Duration = Duration::from_secs(30);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardline-chat"))
}

/// An address nothing listens on (bound, then closed).
fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn start(io: Io, listen: SocketAddr, stderr: Stdio, data: &common::TempDir) -> Child {
    bin()
        .args(["--listen", &listen.to_string()])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--shards", "2", "--no-pin", "--io", &io.to_string()])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn shardline-chat")
}

fn connect_when_listening(addr: SocketAddr, first: &mut Child) -> TcpStream {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                s.set_read_timeout(Some(WAIT)).expect("timeout");
                return s;
            }
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let _ = first.kill();
                panic!("shardline-chat never listened on {addr}: {e}");
            }
        }
    }
}

/// Waits at most `limit` for `child` to exit.
fn exited_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    if exited_within(child, WAIT).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Registers: the server answers with a numeric.
fn serves(mut s: TcpStream) -> bool {
    s.write_all(b"NICK probe\r\nUSER probe 0 * :probe\r\n")
        .expect("write");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with(':')
}

fn a_second_server_on_a_served_port_exits_with_a_clear_error(io: Io) {
    let addr = free_addr();
    // Each its own data directory: the second must fail on the address.
    let (data1, data2) = (
        common::TempDir::new("first"),
        common::TempDir::new("second"),
    );
    let mut first = start(io, addr, Stdio::null(), &data1);
    drop(connect_when_listening(addr, &mut first));
    let mut second = start(io, addr, Stdio::piped(), &data2);
    let status = exited_within(&mut second, Duration::from_secs(5));
    let Some(status) = status else {
        let _ = second.kill();
        let _ = second.wait();
        stop(&mut first);
        panic!("{io}: the second shardline-chat on {addr} was still running after 5 s");
    };
    let mut err = String::new();
    let _ = second
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut err);
    assert!(!status.success(), "{io}: second exited with {status:?}");
    let expected = format!("{addr} is already in use by another process");
    assert!(
        err.contains(&expected),
        "{io}: stderr lacks {expected:?}:\n{err}"
    );
    // The first one is untouched.
    for _ in 0..4 {
        let s = connect_when_listening(addr, &mut first);
        assert!(serves(s), "{io}: the first shardline-chat stopped serving");
    }
    assert!(
        first.try_wait().expect("wait").is_none(),
        "{io}: first exited"
    );
    stop(&mut first);
}

shardline::per_backend! {
    a_second_server_on_a_served_port_exits_with_a_clear_error => a_second_server_on_a_served_port_exits_with_a_clear_error;
}
