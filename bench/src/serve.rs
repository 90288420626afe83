//! `serve`: the Shardline echo server the other subcommands run as a child process.
//! It prints `listening on ADDR` once every shard serves and stops on SIGTERM or
//! SIGINT (a second signal exits at once), like the peers.

use std::{io::Write as _, net::SocketAddr};

use anyhow::Context as _;
use shardline::{numa::Placement, AcceptMode, ConnId, Ctx, Handler, Io, Server};

/// Options of `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// I/O backend.
    pub io: Io,
    /// Shard count.
    pub shards: usize,
    /// Accept mode.
    pub accept: AcceptMode,
    /// Listen address (port 0 picks one).
    pub addr: SocketAddr,
    /// CPUs to pin shard i to (empty: compact placement on the allowed CPUs).
    pub cpus: Vec<usize>,
}

/// Echoes every byte; stops reading a connection whose outbound queue is over its
/// high-water mark until it drains, so a client that does not read cannot grow it.
#[derive(Debug)]
pub struct Echo;

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

/// Runs the echo server until a signal.
pub fn run(cfg: &ServeConfig) -> anyhow::Result<()> {
    use signal_hook::{consts::signal::*, iterator::Signals};
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let mut builder = Server::builder()
        .listen(cfg.addr)
        .io(cfg.io)
        .accept_mode(cfg.accept)
        .shards(cfg.shards);
    if !cfg.cpus.is_empty() {
        builder = builder.placement(Placement::Cpus(cfg.cpus.clone()));
        if cfg.cpus.len() < cfg.shards {
            builder = builder.oversubscribe(true);
        }
    }
    let server = builder
        .build(|_shard| Echo)
        .context("configuring the echo server")?
        .start()
        .context("starting the echo server")?;
    let addr = server.local_addrs()[0];
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}").context("writing to stdout")?;
    out.flush().context("flushing stdout")?;
    drop(out);
    let shutdown = server.shutdown_handle();
    let handle = signals.handle();
    let watcher = std::thread::Builder::new()
        .name("serve-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for _ in signals.forever() {
                seen += 1;
                if seen == 1 {
                    shutdown.shutdown();
                } else {
                    std::process::exit(130);
                }
            }
        })
        .context("spawning the signal thread")?;
    let result = server.join();
    handle.close();
    let _ = watcher.join();
    result.context("echo server")
}
