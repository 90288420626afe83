//! A TCP echo server on Shardline, using only the public API.
//!
//! ```text
//! cargo run --release -p shardline --example echo -- --addr 127.0.0.1:7000 --shards 2 --io auto
//! ```
//!
//! Backpressure: when a client sends faster than it reads, its outbound queue passes
//! the high-water mark and the server stops reading from it until the queue drains,
//! so memory stays bounded whatever the client does.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use shardline::{cli::ServerArgs, ConnId, Ctx, Handler, Server};

/// Shardline echo server: every byte received is sent back.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    #[command(flatten)]
    server: ServerArgs,
    /// Disable TCP_NODELAY on accepted sockets.
    #[arg(long)]
    no_nodelay: bool,
}

struct Echo;

impl Handler for Echo {
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
        // An error means the connection is already closing; nothing to do.
        let _ = ctx.send(conn, data);
        data.len()
    }

    fn on_backpressure(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _state: &mut Self::Conn) {
        ctx.pause_reading(conn);
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _state: &mut Self::Conn) {
        ctx.resume_reading(conn);
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let builder = Server::builder()
        .listen(args.addr)
        .tcp_nodelay(!args.no_nodelay);
    let server = args
        .server
        .apply(builder)
        .build(|_shard| Echo)
        .context("configuring server")?;
    if args.server.print_plan_if_asked(&server)? {
        return Ok(());
    }
    server.run().context("running echo server")?;
    Ok(())
}
