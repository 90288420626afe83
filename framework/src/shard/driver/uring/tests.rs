//! Tests of the io_uring driver on its own (no shard): loopback sockets driven
//! through the Driver trait.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use super::*;

/// A completion with its borrowed parts copied out (errors as kinds).
#[derive(Debug)]
enum Ev {
    Accepted(OwnedFd),
    /// A direct descriptor and the peer address the accept reported.
    AcceptedFixed(u32, Option<SocketAddr>),
    Data(ConnId, Vec<u8>),
    Closed(ConnId, Option<io::ErrorKind>),
    Sent(ConnId, usize),
    /// Relay fills: not exercised by these driver tests (tests/splice.rs is).
    Spliced,
    Connected(ConnId, Option<io::ErrorKind>),
    Doorbell,
    Readable(u32),
    Unread(ConnId, usize),
}

fn driver() -> UringDriver {
    driver_with(Some(1000), 4)
}

/// Both ways of reading: multishot with a byte cap per arm, and one-shot.
const RECV_MODES: [Option<u32>; 2] = [Some(1000), None];

fn driver_with(recv_cap: Option<u32>, buf_count: u16) -> UringDriver {
    // Tiny buffers: a 100 KiB stream takes well over a thousand recvs.
    let config = UringConfig {
        entries: 64,
        buf_count,
        buf_size: 64,
        pool: None,
        recv_cap,
        direct_files: None,
    };
    UringDriver::new(config).expect("io_uring driver on this machine")
}

fn turn(d: &mut UringDriver) -> Vec<Ev> {
    d.wait(Some(Duration::from_millis(20))).expect("wait");
    let mut evs = Vec::new();
    d.reap(&mut |c| {
        evs.push(match c {
            Completion::Accepted { result, .. } => match result.expect("accept") {
                crate::shard::driver::Accepted::Fd(fd) => Ev::Accepted(fd),
                crate::shard::driver::Accepted::Fixed { slot, peer, .. } => {
                    Ev::AcceptedFixed(slot, peer)
                }
            },
            Completion::Data { conn, data } => Ev::Data(conn, data.to_vec()),
            Completion::ReadClosed { conn, error } => Ev::Closed(conn, error.map(|e| e.kind())),
            Completion::Sent { conn, result } => Ev::Sent(conn, result.expect("send")),
            Completion::Spliced { .. } => Ev::Spliced,
            Completion::Connected { conn, result } => {
                Ev::Connected(conn, result.err().map(|e| e.kind()))
            }
            Completion::Doorbell => Ev::Doorbell,
            Completion::Readable { token } => Ev::Readable(token),
            Completion::Unread { conn, result } => Ev::Unread(conn, result.expect("SIOCINQ")),
        })
    });
    evs
}

/// A registered connection accepted by the driver, and the client's end.
fn accepted(d: &mut UringDriver, conn: ConnId) -> (OwnedFd, TcpStream, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    d.add_listener(0, listener.as_raw_fd())
        .expect("add_listener");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let fd = (0..500).find_map(|_| match turn(d).pop() {
        Some(Ev::Accepted(fd)) => Some(fd),
        _ => None,
    });
    let fd = fd.expect("no connection accepted");
    d.add_conn(conn, Sock::Fd(fd.as_raw_fd()))
        .expect("add_conn");
    d.set_reading(conn, fd.as_raw_fd(), true);
    (fd, client, listener)
}

#[test]
fn watch_readable_reports_each_readiness_until_unwatched() {
    let mut d = driver();
    let (mut a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    d.watch_readable(5, b.as_raw_fd()).expect("watch");
    a.write_all(b"x").expect("write");
    let seen = (0..50).any(|_| turn(&mut d).iter().any(|e| matches!(e, Ev::Readable(5))));
    assert!(seen, "readiness reported");
    d.unwatch_readable(5);
    turn(&mut d);
    a.write_all(b"y").expect("write");
    let after: Vec<Ev> = (0..5).flat_map(|_| turn(&mut d)).collect();
    assert!(
        !after.iter().any(|e| matches!(e, Ev::Readable(_))),
        "{after:?}"
    );
}

#[test]
fn probe_succeeds_here() {
    probe().expect("io_uring is usable on the project's machines");
}

/// Probing leaves the calling thread alone: the probe ring's teardown task
/// work used to land on the caller and turn its next blocking socket read
/// with a timeout into EINTR (a flaky failure in the apps' tests).
#[test]
fn probing_does_not_interrupt_the_caller() {
    let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    quiet
        .set_read_timeout(Some(std::time::Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 1];
    for round in 0..50 {
        probe().unwrap();
        let err = quiet.recv(&mut buf).expect_err("nothing was sent");
        assert_ne!(
            err.kind(),
            io::ErrorKind::Interrupted,
            "round {round}: a read right after the probe was interrupted"
        );
    }
}

#[test]
fn loopback_echo_through_a_tiny_buffer_ring() {
    for mode in RECV_MODES {
        echo_through_a_tiny_buffer_ring(mode);
    }
}

fn echo_through_a_tiny_buffer_ring(recv_cap: Option<u32>) {
    const LEN: usize = 100 * 1024;
    let (mut d, conn) = (
        driver_with(recv_cap, 4),
        ConnId {
            index: 3,
            generation: 7,
        },
    );
    let (fd, client, _listener) = accepted(&mut d, conn);
    let payload: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    let mut writer = client.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        writer
            .write_all(&payload)
            .and_then(|()| writer.shutdown(Shutdown::Write))
    });
    let reader = std::thread::spawn(move || {
        let mut back = Vec::new();
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        (&client).read_to_end(&mut back).map(|_| back)
    });
    let (mut queue, mut in_flight, mut echoed, mut eof) = (VecDeque::new(), false, 0, false);
    for _ in 0..20_000 {
        for ev in turn(&mut d) {
            match ev {
                Ev::Data(c, bytes) if c == conn => queue.push_back(Bytes::from(bytes)),
                Ev::Closed(c, None) if c == conn => eof = true,
                Ev::Sent(c, mut n) if c == conn => {
                    (in_flight, echoed) = (false, echoed + n);
                    while n > 0 {
                        let front: &mut Bytes = queue.front_mut().expect("sent too much");
                        let step = n.min(front.len());
                        let _ = front.split_to(step);
                        n -= step;
                        if front.is_empty() {
                            queue.pop_front();
                        }
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if !in_flight && !queue.is_empty() {
            let chunks: Vec<Bytes> = queue.iter().take(MAX_SEND_CHUNKS).cloned().collect();
            d.send(conn, fd.as_raw_fd(), &chunks);
            in_flight = true;
        }
        if eof && echoed == LEN {
            break;
        }
    }
    assert!(eof && echoed == LEN, "eof {eof}, echoed {echoed} of {LEN}");
    writer.join().expect("writer thread").expect("client write");
    d.remove_conn(conn, fd.as_raw_fd());
    drop(fd);
    turn(&mut d);
    let back = reader.join().expect("reader thread").expect("client read");
    assert!(back == expected, "echo differs ({} bytes back)", back.len());
}

#[test]
fn remove_conn_cancels_the_read_so_the_peer_sees_the_close() {
    let (mut d, conn) = (
        driver(),
        ConnId {
            index: 0,
            generation: 1,
        },
    );
    let (fd, mut client, _listener) = accepted(&mut d, conn);
    turn(&mut d);
    // The armed recv holds the file: without its cancel the socket stays open.
    d.remove_conn(conn, fd.as_raw_fd());
    drop(fd);
    turn(&mut d);
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(client.read(&mut [0u8; 16]).expect("EOF, not a timeout"), 0);
}

#[test]
fn connect_reports_refused_and_success() {
    let open = TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let mut d = driver();
    let mut sockets = Vec::new();
    let targets: [(u32, SocketAddr); 2] = [(1, closed), (2, open.local_addr().expect("addr"))];
    for (index, addr) in targets {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None);
        let s = s.expect("socket");
        s.set_nonblocking(true).expect("nonblocking");
        let conn = ConnId {
            index,
            generation: 1,
        };
        d.add_conn(conn, Sock::Fd(s.as_raw_fd())).expect("add_conn");
        d.connect(conn, s.as_raw_fd(), addr.into());
        sockets.push(s);
    }
    let mut results = Vec::new();
    for _ in 0..500 {
        if results.len() == 2 {
            break;
        }
        results.extend(turn(&mut d).into_iter().map(|ev| match ev {
            Ev::Connected(conn, error) => (conn.index, error),
            other => panic!("unexpected {other:?}"),
        }));
    }
    results.sort_by_key(|r| r.0);
    assert_eq!(
        results,
        [(1, Some(io::ErrorKind::ConnectionRefused)), (2, None)]
    );
}

#[test]
fn doorbell_fires_on_every_ring() {
    let mut d = driver();
    // SAFETY: eventfd takes no pointers; the result is checked.
    let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(raw >= 0, "eventfd: {}", io::Error::last_os_error());
    // SAFETY: a fresh descriptor nothing else owns.
    let _bell = unsafe { OwnedFd::from_raw_fd(raw) };
    d.watch_doorbell(raw).expect("watch");
    for _ in 0..3 {
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        assert_eq!(
            unsafe { libc::write(raw, (&1u64 as *const u64).cast(), 8) },
            8
        );
        let rung = (0..100).any(|_| turn(&mut d).iter().any(|e| matches!(e, Ev::Doorbell)));
        assert!(rung, "doorbell did not fire");
    }
}

#[test]
fn a_paused_connection_takes_in_at_most_one_arm_more() {
    // Multishot: at most the cap (1000 B) after the pause, rounded up to whole
    // 64-byte buffers (the kernel ends the arm once the cap is reached); one-shot:
    // one buffer.
    for (mode, bound) in [(Some(1000), 1000 + 63), (None, 64)] {
        paused_input_is_bounded(mode, bound);
    }
}

fn paused_input_is_bounded(recv_cap: Option<u32>, bound: usize) {
    const LEN: usize = 256 * 1024;
    let (mut d, conn) = (
        // 64 buffers of 64 B: the ring (4 KiB) outlasts the cap, so the cap ends arms.
        driver_with(recv_cap, 64),
        ConnId {
            index: 1,
            generation: 2,
        },
    );
    let (fd, client, _listener) = accepted(&mut d, conn);
    let mut writer = client.try_clone().expect("clone");
    let writer = std::thread::spawn(move || writer.write_all(&[7u8; LEN]));
    let data_len = |evs: Vec<Ev>| -> usize {
        evs.into_iter()
            .map(|ev| match ev {
                Ev::Data(c, bytes) if c == conn => bytes.len(),
                other => panic!("unexpected {other:?}"),
            })
            .sum()
    };
    let mut before = 0;
    for _ in 0..500 {
        before += data_len(turn(&mut d));
        if before > 0 {
            break;
        }
    }
    assert!(before > 0, "no data before the pause");
    d.set_reading(conn, fd.as_raw_fd(), false);
    // The writer keeps the socket full; whatever still arrives must stay bounded.
    let after: usize = (0..20).map(|_| data_len(turn(&mut d))).sum();
    assert!(
        after <= bound,
        "{recv_cap:?}: {after} bytes arrived after the pause (bound {bound})"
    );
    d.set_reading(conn, fd.as_raw_fd(), true);
    let mut total = before + after;
    for _ in 0..20_000 {
        if total == LEN {
            break;
        }
        total += data_len(turn(&mut d));
    }
    assert_eq!(total, LEN, "{recv_cap:?}: every byte after resume");
    writer.join().expect("writer thread").expect("client write");
    // 64-byte buffers: a one-shot arm reads one; a capped multishot arm reads until
    // its 1000 bytes are in (or a pause cancels it, or the ring runs dry). Without
    // the cap an arm would last until the ring's 4 KiB ran dry: ~64 arms in all.
    let arms = d.recv_arms as usize;
    match recv_cap {
        Some(cap) => assert!(
            arms >= LEN / (cap as usize).next_multiple_of(64) && arms < LEN / 64 / 4,
            "{arms} multishot arms for {LEN} bytes"
        ),
        None => assert!(arms >= LEN / 64, "{arms} one-shot arms for {LEN} bytes"),
    }
    assert_eq!(
        d.recv_cap, recv_cap,
        "this kernel (6.16+) caps multishot recvs; the driver fell back to one-shot"
    );
    d.remove_conn(conn, fd.as_raw_fd());
}

/// The bytes of `conn`'s first `Data` completion (empty if none came).
fn first_read(d: &mut UringDriver, conn: ConnId) -> Vec<u8> {
    (0..500)
        .flat_map(|_| turn(d))
        .find_map(|e| match e {
            Ev::Data(c, data) if c == conn => Some(data),
            _ => None,
        })
        .unwrap_or_default()
}

fn direct_driver(files: u32) -> UringDriver {
    let config = UringConfig {
        entries: 64,
        buf_count: 4,
        buf_size: 64,
        pool: None,
        recv_cap: Some(1000),
        direct_files: Some(files),
    };
    let d = UringDriver::new(config).expect("io_uring driver on this machine");
    assert!(d.direct_descriptors(), "a file table registers here");
    d
}

/// Direct descriptors end to end on the driver: accepted into a slot with the
/// peer's address, read and written through the slot, half-closed and closed
/// through the ring, and the slot reused only after its close completed.
#[test]
fn direct_descriptors_accept_read_write_shutdown_and_close() {
    let mut d = direct_driver(64);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    d.add_listener(0, listener.as_raw_fd())
        .expect("add_listener");
    // The driver keeps ACCEPT_DEPTH accepts armed, each holding a slot.
    turn(&mut d);
    assert_eq!(d.fixed_in_use(), u32::from(direct::ACCEPT_DEPTH));
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (slot, peer) = (0..500)
        .find_map(|_| {
            turn(&mut d).into_iter().find_map(|e| match e {
                Ev::AcceptedFixed(slot, peer) => Some((slot, peer)),
                _ => None,
            })
        })
        .expect("no connection accepted");
    assert_eq!(
        peer,
        Some(client.local_addr().unwrap()),
        "peer address from the accept"
    );
    // Re-armed: one more slot taken for the next accept.
    assert_eq!(d.fixed_in_use(), u32::from(direct::ACCEPT_DEPTH) + 1);
    let conn = ConnId::from_bits(7);
    assert_eq!(d.add_conn(conn, Sock::Fixed(slot)).expect("add_conn"), None);
    d.set_reading(conn, -1, true);
    client.write_all(b"ping").unwrap();
    let got = first_read(&mut d, conn);
    assert_eq!(got, b"ping");
    d.send(conn, -1, &[Bytes::from_static(b"pong")]);
    let sent = (0..500).flat_map(|_| turn(&mut d)).find_map(|e| match e {
        Ev::Sent(c, n) if c == conn => Some(n),
        _ => None,
    });
    assert_eq!(sent, Some(4));
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    // Half-close through the ring: the client reads EOF.
    d.shutdown_fixed(slot);
    turn(&mut d);
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    assert_eq!(client.read(&mut buf).unwrap(), 0, "EOF after SHUT_WR");
    d.remove_conn(conn, -1);
    d.close_fixed(slot);
    let before = d.fixed_in_use();
    for _ in 0..20 {
        turn(&mut d);
        if d.fixed_in_use() < before {
            break;
        }
    }
    assert_eq!(d.fixed_in_use(), before - 1, "the slot is free once closed");
    // The socket really closed: the client's read side sees the end.
    client.write_all(b"x").ok();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    d.remove_listener(0, listener.as_raw_fd());
    for _ in 0..20 {
        turn(&mut d);
    }
    assert_eq!(
        d.fixed_in_use(),
        0,
        "cancelled accepts give their slots back"
    );
}

/// FIONREAD for a slot: the socket command answers how much is unread.
#[test]
fn unread_input_of_a_direct_descriptor_is_asked_through_the_ring() {
    let mut d = direct_driver(8);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (server, _) = listener.accept().unwrap();
    let conn = ConnId::from_bits(5);
    d.add_conn(conn, Sock::Fd(server.as_raw_fd()))
        .expect("add_conn")
        .expect("adopted");
    drop(server);
    let ask = |d: &mut UringDriver| {
        d.query_unread(conn);
        (0..100).flat_map(|_| turn(d)).find_map(|e| match e {
            Ev::Unread(c, n) if c == conn => Some(n),
            _ => None,
        })
    };
    assert_eq!(ask(&mut d), Some(0), "nothing sent yet");
    client.write_all(b"12345").unwrap();
    let mut n = None;
    for _ in 0..50 {
        n = ask(&mut d);
        if n == Some(5) {
            break;
        }
    }
    assert_eq!(n, Some(5), "five bytes wait unread (not reading)");
}

/// An ordinary socket (an outbound connect, a handed-off accept) moves into the
/// table; the process's fd can then be closed and the socket lives on.
#[test]
fn an_ordinary_socket_is_adopted_into_the_table() {
    let mut d = direct_driver(8);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (server, _) = listener.accept().unwrap();
    let conn = ConnId::from_bits(3);
    let slot = d
        .add_conn(conn, Sock::Fd(server.as_raw_fd()))
        .expect("add_conn")
        .expect("adopted into a slot");
    drop(server);
    d.set_reading(conn, -1, true);
    client.write_all(b"still here").unwrap();
    let got = first_read(&mut d, conn);
    assert_eq!(got, b"still here");
    d.remove_conn(conn, -1);
    d.close_fixed(slot);
    for _ in 0..20 {
        turn(&mut d);
    }
    assert_eq!(d.fixed_in_use(), 0);
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(client.read(&mut buf).unwrap(), 0, "closed with the slot");
}
