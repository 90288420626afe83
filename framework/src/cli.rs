//! The command-line flags every Shardline binary shares (feature `cli`): flatten
//! [`ServerArgs`] into a clap parser, apply it to a [`ServerBuilder`], and honour
//! `--print-plan` — so `--io`, `--accept`, `--topology`, … mean the same everywhere.
//!
//! ```no_run
//! use clap::Parser;
//! use shardline::cli::ServerArgs;
//!
//! #[derive(Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     server: ServerArgs,
//! }
//! let args = Args::parse();
//! let builder = args.server.apply(shardline::Server::builder());
//! ```

use crate::{numa::Placement, AcceptMode, Error, Io, Server, ServerBuilder};

/// How `--print-plan` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    /// A human table.
    Table,
    /// JSON for scripts.
    Json,
}

/// Flags shared by every Shardline binary.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Number of shards (threads); default one per CPU this process may use.
    #[arg(long)]
    pub shards: Option<usize>,
    /// I/O backend: auto (io_uring, else epoll), uring, or epoll.
    #[arg(long, default_value = "auto")]
    pub io: Io,
    /// How connections reach shards: reuseport, exclusive, handoff (round-robin) or
    /// handoff-least (least connections).
    #[arg(long, default_value = "reuseport")]
    pub accept: AcceptMode,
    /// Most accepted connections per shard; at the cap a shard stops accepting
    /// until some close (default: no cap).
    #[arg(long)]
    pub max_conns_per_shard: Option<usize>,
    /// Most accepted connections of the whole server, split evenly over the
    /// shards (default: no cap).
    #[arg(long)]
    pub max_conns: Option<usize>,
    /// Machine to plan for: a synthetic hwloc description ("pack:2 numa:2 core:8
    /// pu:2") or an hwloc XML file. Default: $SHARDLINE_TOPOLOGY, else this machine.
    #[arg(long)]
    pub topology: Option<String>,
    /// Shard placement: compact, spread, or cpus=LIST (e.g. cpus=0,2-5).
    #[arg(long, default_value = "compact")]
    pub placement: Placement,
    /// Allow more shards than CPUs.
    #[arg(long)]
    pub oversubscribe: bool,
    /// Print where each shard would run (table, or =json) and exit.
    #[arg(long, num_args = 0..=1, default_missing_value = "table", value_name = "FORMAT")]
    pub print_plan: Option<PlanFormat>,
    /// Do not pin shards to CPUs.
    #[arg(long)]
    pub no_pin: bool,
}

impl ServerArgs {
    /// Sets every flag given on `builder`.
    pub fn apply(&self, builder: ServerBuilder) -> ServerBuilder {
        let mut b = builder
            .io(self.io)
            .accept_mode(self.accept)
            .placement(self.placement.clone())
            .oversubscribe(self.oversubscribe)
            .pin(!self.no_pin);
        if let Some(n) = self.shards {
            b = b.shards(n);
        }
        if let Some(n) = self.max_conns_per_shard {
            b = b.max_connections_per_shard(n);
        }
        if let Some(n) = self.max_conns {
            b = b.max_connections(n);
        }
        if let Some(t) = &self.topology {
            b = b.topology(t.clone());
        }
        b
    }

    /// With `--print-plan`, prints the placement plan to stdout and returns true:
    /// the binary should exit without serving.
    pub fn print_plan_if_asked<M: Send + 'static>(
        &self,
        server: &Server<M>,
    ) -> Result<bool, Error> {
        let Some(format) = self.print_plan else {
            return Ok(false);
        };
        let plan = server.plan()?;
        let text = match format {
            PlanFormat::Table => plan.table(),
            PlanFormat::Json => plan.to_json() + "\n",
        };
        // A closed stdout (`| head`) is not an error worth a panic: the reader left.
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
        Ok(true)
    }
}
