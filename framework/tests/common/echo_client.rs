//! An independent echo checker: many concurrent connections on one thread (mio),
//! each sending a pseudo-random stream of a given size and verifying every byte that
//! comes back. Used by the echo tests and by `examples/echo_check.rs` against a
//! running echo server.
#![allow(dead_code)]

use std::{
    io::{self, Read, Write},
    net::SocketAddr,
    time::{Duration, Instant},
};

use mio::{net::TcpStream, Events, Interest, Poll, Token};

/// Deterministic byte stream (xorshift64*), so sender and checker agree without
/// storing payloads.
#[derive(Clone)]
pub struct Stream(u64);

impl Stream {
    pub fn new(seed: u64) -> Stream {
        Stream(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}

/// Log-uniform sizes from 1 B to `max`, so small and large messages both occur.
pub fn size_for(seed: u64, conn: usize, max: usize) -> usize {
    let mut s = Stream::new(seed ^ (conn as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let bits = (max as f64).log2();
    let x = (s.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (2f64.powf(x * bits) as usize).clamp(1, max)
}

/// A client connection: plain TCP, or TLS (rustls) over it.
pub enum Transport {
    Plain(TcpStream),
    Tls(TcpStream, Box<rustls::ClientConnection>),
}

/// What a TLS client needs: its configuration and the server name to check.
pub type TlsClient = (
    std::sync::Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
);

impl Transport {
    pub fn connect(addr: SocketAddr, tls: Option<&TlsClient>) -> io::Result<Transport> {
        let stream = TcpStream::connect(addr)?;
        Ok(match tls {
            None => Transport::Plain(stream),
            Some((config, name)) => {
                let mut c = rustls::ClientConnection::new(config.clone(), name.clone())
                    .map_err(io::Error::other)?;
                c.set_buffer_limit(Some(256 << 10));
                Transport::Tls(stream, Box::new(c))
            }
        })
    }

    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) | Transport::Tls(s, _) => s,
        }
    }

    /// Writes the records rustls has ready (WouldBlock if the socket is full).
    fn flush_tls(sock: &mut TcpStream, c: &mut rustls::ClientConnection) -> io::Result<()> {
        while c.wants_write() {
            c.write_tls(sock)?;
        }
        Ok(())
    }

    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s, c) => {
                Self::flush_tls(s, c)?;
                let n = c.writer().write(buf)?;
                match Self::flush_tls(s, c) {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    _ => {}
                }
                if n == 0 {
                    // rustls holds its limit (the handshake is not done yet).
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            }
        }
    }

    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s, c) => loop {
                match Self::flush_tls(s, c) {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    _ => {}
                }
                match c.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if c.read_tls(s)? == 0 {
                    return Ok(0);
                }
                c.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            },
        }
    }
}

struct Conn {
    stream: Transport,
    size: usize,
    sent: usize,
    received: usize,
    tx: Stream,
    rx: Stream,
    pending: Vec<u8>,
    pending_off: usize,
    done: bool,
}

/// What a check did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub conns: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Opens `conns` connections at once, sends `size(i)` bytes on connection `i`, and
/// checks the echo byte for byte. Fails on the first mismatch, early EOF, error, or
/// when `limit` passes.
pub fn check(
    addr: SocketAddr,
    conns: usize,
    size: impl Fn(usize) -> usize,
    seed: u64,
    limit: Duration,
) -> Result<Report, String> {
    check_with(addr, None, conns, size, seed, limit)
}

/// [`check`], over TLS when `tls` is given.
pub fn check_with(
    addr: SocketAddr,
    tls: Option<&TlsClient>,
    conns: usize,
    size: impl Fn(usize) -> usize,
    seed: u64,
    limit: Duration,
) -> Result<Report, String> {
    let start = Instant::now();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut list = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut stream = Transport::connect(addr, tls).map_err(|e| format!("connect {i}: {e}"))?;
        poll.registry()
            .register(
                stream.socket(),
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| e.to_string())?;
        let s = Stream::new(seed.wrapping_add(i as u64));
        list.push(Conn {
            stream,
            size: size(i),
            sent: 0,
            received: 0,
            tx: s.clone(),
            rx: s,
            pending: Vec::new(),
            pending_off: 0,
            done: false,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 << 10];
    let mut expect = vec![0u8; 64 << 10];
    let mut remaining = conns;
    let mut bytes = 0u64;
    while remaining > 0 {
        let left = limit.checked_sub(start.elapsed()).ok_or_else(|| {
            format!("timed out with {remaining} of {conns} connections unfinished")
        })?;
        poll.poll(&mut events, Some(left.min(Duration::from_millis(100))))
            .or_else(|e| {
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut list[i];
            if c.done {
                continue;
            }
            // Write as much as the socket takes.
            while c.sent < c.size {
                if c.pending_off == c.pending.len() {
                    let n = (c.size - c.sent).min(32 << 10);
                    c.pending.resize(n, 0);
                    c.tx.fill(&mut c.pending);
                    c.pending_off = 0;
                }
                match c.stream.write(&c.pending[c.pending_off..]) {
                    Ok(0) => break,
                    Ok(n) => {
                        c.pending_off += n;
                        c.sent += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("conn {i}: write: {e}")),
                }
            }
            // Read and verify everything available.
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        return Err(format!(
                            "conn {i}: EOF after {} of {} bytes",
                            c.received, c.size
                        ))
                    }
                    Ok(n) => {
                        if c.received + n > c.size {
                            return Err(format!("conn {i}: more bytes than sent"));
                        }
                        c.rx.fill(&mut expect[..n]);
                        if buf[..n] != expect[..n] {
                            let at = buf[..n]
                                .iter()
                                .zip(&expect[..n])
                                .position(|(a, b)| a != b)
                                .unwrap_or(0);
                            return Err(format!(
                                "conn {i}: wrong byte at offset {}",
                                c.received + at
                            ));
                        }
                        c.received += n;
                        bytes += n as u64;
                        if c.received == c.size {
                            c.done = true;
                            remaining -= 1;
                            let _ = poll.registry().deregister(c.stream.socket());
                            let _ = c.stream.socket().shutdown(std::net::Shutdown::Both);
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("conn {i}: read: {e}")),
                }
            }
        }
    }
    Ok(Report {
        conns,
        bytes,
        elapsed: start.elapsed(),
    })
}

/// Closed-loop ping-pong: each of `conns` connections sends `msg_size` bytes, waits
/// for all of them to come back (checked), and repeats `rounds` times. Returns the
/// total number of round trips in `Report::bytes`'s place as `round_trips`.
pub fn pingpong(
    addr: SocketAddr,
    conns: usize,
    msg_size: usize,
    rounds: usize,
    limit: Duration,
) -> Result<(u64, Duration), String> {
    let start = Instant::now();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut msg = vec![0u8; msg_size.max(1)];
    Stream::new(7).fill(&mut msg);
    struct Pp {
        stream: TcpStream,
        written: usize,
        read: usize,
        rounds: usize,
    }
    let mut list = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {i}: {e}"))?;
        let _ = stream.set_nodelay(true);
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| e.to_string())?;
        list.push(Pp {
            stream,
            written: 0,
            read: 0,
            rounds: 0,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; msg.len()];
    let mut remaining = conns;
    let mut trips = 0u64;
    while remaining > 0 {
        if start.elapsed() > limit {
            return Err(format!("timed out with {remaining} connections unfinished"));
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .or_else(|e| {
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut list[i];
            loop {
                if c.rounds == rounds {
                    break;
                }
                if c.written < msg.len() {
                    match c.stream.write(&msg[c.written..]) {
                        Ok(n) => c.written += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(format!("conn {i}: write: {e}")),
                    }
                    continue;
                }
                match c.stream.read(&mut buf[c.read..]) {
                    Ok(0) => return Err(format!("conn {i}: EOF")),
                    Ok(n) => {
                        if buf[c.read..c.read + n] != msg[c.read..c.read + n] {
                            return Err(format!("conn {i}: wrong bytes"));
                        }
                        c.read += n;
                        if c.read == msg.len() {
                            c.read = 0;
                            c.written = 0;
                            c.rounds += 1;
                            trips += 1;
                            if c.rounds == rounds {
                                remaining -= 1;
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("conn {i}: read: {e}")),
                }
            }
        }
    }
    Ok((trips, start.elapsed()))
}
