//! A cross-shard counter driven from outside the shards with a [`Remote`].
//!
//! Each shard counts its own connections and the bytes they send (plain fields: no
//! atomics, no sharing). A plain thread, outside the shards, posts `Msg::Report`
//! into every shard through [`RunningServer::remote`] once a second; a shard cannot
//! answer a `Remote`, so it answers on a channel the thread reads, and the thread
//! prints the totals. SIGHUP posts `Msg::Reset` to every shard through the same
//! `Remote`, which zeroes the counts (open connections stay counted).
//!
//! [`Server::run_with`] handles the signals (SIGINT/SIGTERM: graceful shutdown;
//! SIGHUP: the [`Server::on_hangup`] hook, which posts the reset) and hands the
//! running server to a setup closure, which gives the reporting thread its `Remote`.
//!
//! ```text
//! cargo run --release -p shardline --example counter -- --addr 127.0.0.1:7300 --shards 2
//! head -c 5000 /dev/urandom | nc -q 1 127.0.0.1 7300   # "report N: open=0 accepted=1 bytes=5000"
//! kill -HUP <pid>                                       # the next reports start from zero
//! ```

use std::{net::SocketAddr, sync::mpsc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use shardline::{
    cli::ServerArgs, CloseReason, ConnId, Ctx, Handler, Listener, Origin, PostError, Remote,
    Server, ShardId,
};

/// Shardline counter: counts connections and bytes, reports the totals every second.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7300")]
    addr: SocketAddr,
    /// Milliseconds between reports.
    #[arg(long, default_value_t = 1000)]
    every_ms: u64,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Clone)]
enum Msg {
    /// Send your counts on the channel, tagged with this report number.
    Report(u64),
    /// Zero the counts.
    Reset,
}

/// One shard's counts, sent to the reporting thread.
#[derive(Default, Clone, Copy)]
struct Counts {
    open: u64,
    accepted: u64,
    bytes: u64,
}

struct Counter {
    shard: ShardId,
    counts: Counts,
    answers: mpsc::Sender<(u64, ShardId, Counts)>,
}

impl Handler for Counter {
    type Msg = Msg;
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(&mut self, _: &mut Ctx<'_, Self>, _: ConnId, _: Listener<'_, ()>, _: SocketAddr) {
        self.counts.open += 1;
        self.counts.accepted += 1;
    }

    fn on_data(&mut self, _: &mut Ctx<'_, Self>, _: ConnId, _: &mut (), data: &[u8]) -> usize {
        self.counts.bytes += data.len() as u64;
        data.len()
    }

    fn on_close(&mut self, _: &mut Ctx<'_, Self>, _: ConnId, _: (), _: &CloseReason) {
        self.counts.open -= 1;
    }

    fn on_message(&mut self, _: &mut Ctx<'_, Self>, _: Origin, msg: Msg) {
        match msg {
            // The reporter may have stopped; then nobody wants the answer.
            Msg::Report(n) => drop(self.answers.send((n, self.shard, self.counts))),
            Msg::Reset => {
                self.counts = Counts {
                    open: self.counts.open,
                    ..Counts::default()
                };
                tracing::info!(shard = %self.shard, "counters reset");
            }
        }
    }
}

/// The thread outside the shards: asks every shard for its counts and prints the sum.
fn report(remote: Remote<Msg>, answers: mpsc::Receiver<(u64, ShardId, Counts)>, every: Duration) {
    for n in 1.. {
        std::thread::sleep(every);
        if let Err(failed) = remote.broadcast(Msg::Report(n), every) {
            if failed
                .iter()
                .any(|(_, e)| matches!(e, PostError::Stopped(_)))
            {
                return; // shutting down
            }
        }
        let mut total = Counts::default();
        let mut missing = remote.shards();
        while missing > 0 {
            match answers.recv_timeout(every) {
                Ok((m, _, c)) if m == n => {
                    (total.open, total.accepted, total.bytes) = (
                        total.open + c.open,
                        total.accepted + c.accepted,
                        total.bytes + c.bytes,
                    );
                    missing -= 1;
                }
                Ok(_) => {} // a late answer to an earlier report
                Err(_) => break,
            }
        }
        let note = if missing > 0 {
            format!(" ({missing} shards did not answer)")
        } else {
            String::new()
        };
        println!(
            "report {n}: open={} accepted={} bytes={}{note}",
            total.open, total.accepted, total.bytes
        );
    }
}

fn main() -> anyhow::Result<()> {
    let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logger = tracing_subscriber::fmt().with_env_filter(log);
    logger.with_ansi(ansi).init();
    let args = Args::parse();
    let (tx, rx) = mpsc::channel();
    let server = args
        .server
        .apply(Server::builder().listen(args.addr))
        .build(move |shard| Counter {
            shard,
            counts: Counts::default(),
            answers: tx.clone(),
        })
        .context("configuring server")?;
    if args.server.print_plan_if_asked(&server)? {
        return Ok(());
    }
    let every = Duration::from_millis(args.every_ms.max(1));
    server
        .on_hangup(|remote| {
            if let Err(failed) = remote.broadcast(Msg::Reset, Duration::from_secs(1)) {
                tracing::warn!(
                    shards = failed.len(),
                    "SIGHUP: some shards missed the reset"
                );
            }
        })
        .run_with(move |running| {
            let remote = running.remote();
            std::thread::spawn(move || report(remote, rx, every));
        })
        .context("running counter")
}
