//! An HTTP/1.1 "hello" server with keep-alive and pipelining.
//!
//! Shows: parsing requests straight out of the read buffer (`httparse`), leaving an
//! incomplete request unconsumed so the framework presents it again with the next
//! bytes, answering every complete request of one read in order (pipelining), and
//! per-connection state (`type Conn`) counting the requests of a connection. A
//! malformed request gets `400 Bad Request` and the connection is closed once the
//! answer is sent.
//!
//! ```text
//! cargo run --release -p shardline --example http_hello -- --addr 127.0.0.1:7200
//! curl -v http://127.0.0.1:7200/ http://127.0.0.1:7200/again   # one connection, requests #1 and #2
//! printf 'nonsense\r\n\r\n' | nc 127.0.0.1 7200                  # 400 Bad Request
//! ```

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use shardline::{cli::ServerArgs, ConnId, Ctx, Handler, Listener, Server};

/// Shardline HTTP hello server.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7200")]
    addr: SocketAddr,
    #[command(flatten)]
    server: ServerArgs,
}

/// Largest request head (request line and headers) accepted, bytes.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted (it is read and ignored), bytes.
const MAX_BODY: usize = 64 * 1024;

/// Per connection: how many requests it has made.
struct Conn {
    requests: u64,
}

struct Hello;

enum Parsed {
    /// A complete request of `len` bytes (head and body); `close` if the client
    /// asked the connection to end after it.
    Request {
        len: usize,
        close: bool,
        path: String,
    },
    Partial,
    Bad(&'static str),
}

fn parse(data: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if data.len() > MAX_HEAD => {
            return Parsed::Bad("head too large")
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Bad("malformed request"),
    };
    // HTTP/1.1 keeps the connection open unless told otherwise; 1.0 the reverse.
    let mut close = req.version != Some(1);
    let mut body = 0;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if n <= MAX_BODY => body = n,
                _ => return Parsed::Bad("bad content-length"),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad("transfer-encoding not supported");
        }
    }
    if data.len() < head + body {
        return Parsed::Partial;
    }
    let path = req.path.unwrap_or("/").to_owned();
    Parsed::Request {
        len: head + body,
        close,
        path,
    }
}

impl Handler for Hello {
    type Msg = ();
    type Timer = ();
    type Conn = Conn;
    type Listener = ();

    fn on_accept(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _: Listener<'_, ()>,
        _: SocketAddr,
    ) -> Conn {
        Conn { requests: 0 }
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        state: &mut Conn,
        data: &[u8],
    ) -> usize {
        let mut used = 0;
        // Every complete request in the buffer is answered, in order: pipelining.
        loop {
            match parse(&data[used..]) {
                Parsed::Partial => return used,
                Parsed::Bad(why) => {
                    let body = format!("bad request: {why}\n");
                    let head = format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = ctx.send(conn, head.as_bytes());
                    let _ = ctx.send(conn, body.as_bytes());
                    ctx.close(conn);
                    return data.len();
                }
                Parsed::Request { len, close, path } => {
                    used += len;
                    state.requests += 1;
                    let body = format!(
                        "hello from shard {}: request #{} on this connection, path {path}\n",
                        ctx.shard_id(),
                        state.requests
                    );
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
                        body.len(),
                        if close { "Connection: close\r\n" } else { "" }
                    );
                    let _ = ctx.send(conn, head.as_bytes());
                    let _ = ctx.send(conn, body.as_bytes());
                    if close {
                        ctx.close(conn);
                        return data.len();
                    }
                }
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logger = tracing_subscriber::fmt().with_env_filter(log);
    logger.with_ansi(ansi).init();
    let args = Args::parse();
    let server = args
        .server
        .apply(Server::builder().listen(args.addr))
        .build(|_shard| Hello)
        .context("configuring server")?;
    if args.server.print_plan_if_asked(&server)? {
        return Ok(());
    }
    server.run().context("running http_hello")?;
    Ok(())
}
