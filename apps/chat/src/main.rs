//! `shardline-chat`: the IRC server binary.
//!
//! ```text
//! cargo run --release -p shardline-chat                     # 127.0.0.1:6667, defaults
//! cargo run --release -p shardline-chat -- --config chat.toml --shards 4 --io epoll
//! ```

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::Parser;
use shardline::{numa::Placement, AcceptMode, Io, Server};
use shardline_chat::Config;
use tracing::info;

/// An IRC server whose channels span shards (one pinned thread per shard).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (repeatable). Default: the config's, else 127.0.0.1:6667.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Configuration file (TOML): server name, MOTD, limits.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
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
    /// Do not pin shards to CPUs.
    #[arg(long)]
    no_pin: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PlanFormat {
    Table,
    Json,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let listen = if args.listen.is_empty() {
        config.server.listen.clone()
    } else {
        args.listen.clone()
    };
    anyhow::ensure!(
        !listen.is_empty(),
        "nothing to listen on: give --listen or server.listen"
    );
    let mut builder = Server::builder()
        .io(args.io)
        .accept_mode(args.accept)
        .placement(args.placement.clone())
        .oversubscribe(args.oversubscribe)
        .pin(!args.no_pin);
    for addr in &listen {
        builder = builder.listen(*addr);
    }
    if let Some(n) = args.shards {
        builder = builder.shards(n);
    }
    if let Some(n) = args.max_conns_per_shard {
        builder = builder.max_connections_per_shard(n);
    }
    if let Some(t) = &args.topology {
        builder = builder.topology(t.clone());
    }
    let name = config.server.name.clone();
    let server = shardline_chat::build(builder, config).context("configuring server")?;
    if let Some(format) = args.print_plan {
        let plan = server.plan().context("planning shard placement")?;
        match format {
            PlanFormat::Table => print!("{}", plan.table()),
            PlanFormat::Json => println!("{}", plan.to_json()),
        }
        return Ok(());
    }
    info!(server = %name, addrs = ?listen, "shardline-chat starting");
    server.run().context("running chat server")?;
    info!("shardline-chat stopped");
    Ok(())
}
