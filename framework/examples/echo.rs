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
use shardline::{numa::Placement, AcceptMode, ConnId, Ctx, Handler, Io, Server};

/// Shardline echo server: every byte received is sent back.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Number of shards (threads); default one per CPU this process may use.
    #[arg(long)]
    shards: Option<usize>,
    /// I/O backend: auto (io_uring, else epoll), uring, or epoll.
    #[arg(long, default_value = "auto")]
    io: Io,
    /// How connections reach shards: reuseport, exclusive, handoff (round-robin) or
    /// handoff-least (least connections).
    #[arg(long, default_value = "reuseport")]
    accept: AcceptMode,
    /// Most live connections per shard (default: no cap).
    #[arg(long)]
    max_conns_per_shard: Option<usize>,
    /// Machine to plan for: a synthetic hwloc description ("pack:2 numa:2 core:8
    /// pu:2") or an hwloc XML file. Default: $SHARDLINE_TOPOLOGY, else this machine.
    #[arg(long)]
    topology: Option<String>,
    /// Shard placement: compact, spread, or cpus=LIST (e.g. cpus=0,2-5).
    #[arg(long, default_value = "compact")]
    placement: Placement,
    /// Allow more shards than CPUs.
    #[arg(long)]
    oversubscribe: bool,
    /// Print where each shard would run (table, or =json) and exit.
    #[arg(long, num_args = 0..=1, default_missing_value = "table", value_name = "FORMAT")]
    print_plan: Option<PlanFormat>,
    /// Disable TCP_NODELAY on accepted sockets.
    #[arg(long)]
    no_nodelay: bool,
    /// Do not pin shards to CPUs.
    #[arg(long)]
    no_pin: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PlanFormat {
    Table,
    Json,
}

struct Echo;

impl Handler for Echo {
    type Msg = ();

    fn on_data(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, data: &[u8]) -> usize {
        // An error means the connection is already closing; nothing to do.
        let _ = ctx.send(conn, data);
        data.len()
    }

    fn on_backpressure(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
        ctx.pause_reading(conn);
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
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
    let mut builder = Server::builder()
        .listen(args.addr)
        .io(args.io)
        .accept_mode(args.accept)
        .placement(args.placement.clone())
        .oversubscribe(args.oversubscribe)
        .tcp_nodelay(!args.no_nodelay)
        .pin(!args.no_pin);
    if let Some(n) = args.shards {
        builder = builder.shards(n);
    }
    if let Some(n) = args.max_conns_per_shard {
        builder = builder.max_connections_per_shard(n);
    }
    if let Some(t) = &args.topology {
        builder = builder.topology(t.clone());
    }
    let server = builder.build(|_shard| Echo).context("configuring server")?;
    if let Some(format) = args.print_plan {
        let plan = server.plan().context("planning shard placement")?;
        match format {
            PlanFormat::Table => print!("{}", plan.table()),
            PlanFormat::Json => println!("{}", plan.to_json()),
        }
        return Ok(());
    }
    server.run().context("running echo server")?;
    Ok(())
}
