//! Partial consumption: a handler that consumes only whole lines gets the remainder
//! back, prefixed, with the next read; unconsumed input past `max_input` closes the
//! connection with `InputBufferFull` and leaves the others alone.

mod common;

use shardline::Io;
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    sync::mpsc,
    time::Duration,
};

use shardline::{CloseReason, ConnId, Ctx, Handler, Limits};

/// Replies "<len>:<line>\n" for every complete line; leaves partial lines unconsumed.
struct Lines {
    closes: mpsc::Sender<CloseReason>,
}

impl Handler for Lines {
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
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        let mut consumed = 0;
        while let Some(nl) = data[consumed..].iter().position(|&b| b == b'\n') {
            let line = &data[consumed..consumed + nl];
            let reply = format!("{}:{}\n", line.len(), String::from_utf8_lossy(line));
            let _ = ctx.send(conn, reply.as_bytes());
            consumed += nl + 1;
        }
        consumed
    }

    fn on_close(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        _conn: ConnId,
        _state: Self::Conn,
        reason: &CloseReason,
    ) {
        let _ = self.closes.send(reason.clone());
    }
}

fn write_slowly(s: &mut TcpStream, parts: &[&[u8]]) {
    for p in parts {
        s.write_all(p).expect("write");
        // Separate TCP segments so the server sees separate reads.
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn remainder_is_presented_again_prefixed(io: Io) {
    let (tx, _rx) = mpsc::channel();
    let (server, addr) = common::start(common::builder(io, 1), move |_| Lines {
        closes: tx.clone(),
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write_slowly(
        &mut s,
        &[b"hel", b"lo\nwor", b"ld", b"\n\nlast", b" line\n"],
    );
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut got = Vec::new();
    for _ in 0..4 {
        let mut line = String::new();
        r.read_line(&mut line).expect("read line");
        got.push(line);
    }
    assert_eq!(
        got,
        ["5:hello\n", "5:world\n", "0:\n", "9:last line\n"],
        "{io}"
    );
    server.shutdown().expect("clean shutdown");
}

fn unconsumed_input_over_limit_closes_only_that_connection(io: Io) {
    let (tx, rx) = mpsc::channel();
    let limits = Limits {
        max_input: 64 << 10,
        ..Limits::default()
    };
    let (server, addr) = common::start(common::builder(io, 1).limits(limits), move |_| Lines {
        closes: tx.clone(),
    });
    let mut good = TcpStream::connect(addr).expect("connect");
    good.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut bad = TcpStream::connect(addr).expect("connect");
    bad.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // 200 KiB without a newline: more than max_input can hold.
    let blob = vec![b'x'; 200 << 10];
    let _ = bad.write_all(&blob); // may fail once the server has closed it
    let reason = rx.recv_timeout(Duration::from_secs(30)).expect("a close");
    assert_eq!(reason, CloseReason::InputBufferFull, "{io}");
    let mut rest = Vec::new();
    let _ = bad.read_to_end(&mut rest); // EOF or reset: closed either way
    good.write_all(b"still here\n").expect("write");
    let mut line = String::new();
    BufReader::new(&good).read_line(&mut line).expect("read");
    assert_eq!(line, "10:still here\n", "{io}");
    server.shutdown().expect("clean shutdown");
}

shardline::per_backend! {
    remainder_is_presented_again_prefixed => remainder_is_presented_again_prefixed;
    unconsumed_input_over_limit_closes_only_that_connection => unconsumed_input_over_limit_closes_only_that_connection;
}
