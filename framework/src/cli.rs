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

/// The zero-downtime upgrade flags (see [`crate::upgrade`]), the same in every
/// Shardline binary: `--upgrade-socket PATH` (serve handovers there),
/// `--upgrade-from PATH` (take the listeners of the process serving PATH), and
/// systemd socket activation (`LISTEN_FDS`) when present.
#[derive(Debug, Clone, clap::Args)]
pub struct UpgradeArgs {
    /// Serve zero-downtime upgrades on this Unix socket: a new process started
    /// with --upgrade-from PATH takes the listening sockets over, then this one
    /// stops accepting and drains. SIGUSR2 starts that new process (this
    /// binary's path, same arguments).
    #[arg(long, value_name = "PATH")]
    pub upgrade_socket: Option<std::path::PathBuf>,
    /// Take the listening sockets of the process serving --upgrade-socket PATH
    /// instead of binding them; it stops accepting once this one serves (if
    /// this one fails to start, it keeps serving).
    #[arg(long, value_name = "PATH")]
    pub upgrade_from: Option<std::path::PathBuf>,
}

impl UpgradeArgs {
    /// Before building: with `--upgrade-from`, receives the old process's
    /// listening sockets; else adopts systemd's (`LISTEN_FDS`), if any. Returns
    /// the builder that adopts them and the takeover to
    /// [`finish`](UpgradeArgs::serve) once serving.
    pub fn inherit(
        &self,
        builder: ServerBuilder,
    ) -> Result<(ServerBuilder, Option<crate::upgrade::Takeover>), Error> {
        use crate::upgrade::{InheritedListeners, Takeover, UpgradeOptions};
        if let Some(path) = &self.upgrade_from {
            let mut takeover = Takeover::connect(path, UpgradeOptions::default())?;
            let builder = match takeover.take_listeners() {
                Some(l) => builder.inherit_listeners(l),
                None => builder,
            };
            return Ok((builder, Some(takeover)));
        }
        Ok(match InheritedListeners::from_systemd()? {
            Some(l) => {
                tracing::info!(addrs = ?l.addrs(), "socket activation: adopting systemd's sockets");
                (builder.inherit_listeners(l), None)
            }
            None => (builder, None),
        })
    }

    /// Once every shard serves: tells the old process (`takeover`) to stop
    /// accepting, tells systemd (`READY=1`, and `MAINPID` after a takeover),
    /// and with `--upgrade-socket` serves the next upgrade; `on_handover` runs
    /// when this process has handed its own listeners over. Keep the returned
    /// socket alive while serving (dropping it removes the file).
    pub fn serve(
        &self,
        takeover: Option<crate::upgrade::Takeover>,
        server: crate::ShutdownHandle,
        on_handover: impl FnOnce(crate::upgrade::HandedOver) + Send + 'static,
    ) -> Result<Option<crate::upgrade::UpgradeSocket>, Error> {
        self.serve_with_state(takeover, server, None, on_handover)
    }

    /// Like [`serve`](UpgradeArgs::serve), handing `state` over to the next
    /// process when it asks ([`crate::upgrade::HandoverState`]).
    pub fn serve_with_state(
        &self,
        takeover: Option<crate::upgrade::Takeover>,
        server: crate::ShutdownHandle,
        state: Option<Box<dyn crate::upgrade::HandoverState>>,
        on_handover: impl FnOnce(crate::upgrade::HandedOver) + Send + 'static,
    ) -> Result<Option<crate::upgrade::UpgradeSocket>, Error> {
        use crate::upgrade::{notify, UpgradeOptions, UpgradeSocket};
        let took_over = takeover.is_some();
        if let Some(t) = takeover {
            let old = t.old_pid();
            match t.finish() {
                Ok(true) => {
                    tracing::info!(old_pid = old, "upgrade complete: the old process drains")
                }
                Ok(false) => tracing::warn!(
                    old_pid = old,
                    "upgrade: the old process confirmed late or partly; serving anyway"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "upgrade: serving, but the old process did not confirm")
                }
            }
        }
        let ready = if took_over {
            format!("MAINPID={}\nREADY=1", std::process::id())
        } else {
            "READY=1".to_string()
        };
        if let Err(e) = notify(&ready) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
        match &self.upgrade_socket {
            Some(path) => UpgradeSocket::serve_with_state(
                path,
                server,
                UpgradeOptions::default(),
                state,
                on_handover,
            )
            .map(Some),
            None => Ok(None),
        }
    }

    /// SIGUSR2: starts the new process — this binary's path as invoked
    /// (`argv[0]`, so a binary replaced on disk runs the new version) with the
    /// same arguments plus `--upgrade-from` this process's `--upgrade-socket`.
    /// It inherits stdout and stderr; this process keeps serving until the new
    /// one has taken over. Returns the new process's pid.
    pub fn spawn_successor(&self) -> Result<u32, Error> {
        let Some(path) = &self.upgrade_socket else {
            return Err(Error::Upgrade(
                "no --upgrade-socket: nothing to hand the listeners over with".into(),
            ));
        };
        let mut args = std::env::args_os();
        let program = args
            .next()
            .ok_or_else(|| Error::Upgrade("no argv[0] to start again".into()))?;
        let mut kept = Vec::new();
        let mut skip = false;
        for a in args {
            if skip {
                skip = false;
                continue;
            }
            let s = a.to_string_lossy();
            if s == "--upgrade-from" {
                skip = true;
                continue;
            }
            if s.starts_with("--upgrade-from=") {
                continue;
            }
            kept.push(a);
        }
        let child = std::process::Command::new(&program)
            .args(&kept)
            .arg("--upgrade-from")
            .arg(path)
            .spawn()
            .map_err(|e| {
                Error::Upgrade(format!("cannot start {}: {e}", program.to_string_lossy()))
            })?;
        let pid = child.id();
        // Reaped on its own thread if it exits while we still run (a failed
        // start); otherwise it outlives us and init reaps it.
        let _ = std::thread::Builder::new()
            .name("upgrade-child".into())
            .spawn(move || {
                let mut child = child;
                if let Ok(status) = child.wait() {
                    if !status.success() {
                        tracing::warn!(pid, %status, "the upgraded process exited");
                    }
                }
            });
        tracing::info!(pid, program = %program.to_string_lossy(), "SIGUSR2: started the new process");
        Ok(pid)
    }
}
