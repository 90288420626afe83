//! `shardline-proxy`: the binary.
//!
//! ```text
//! shardline-proxy --listen 127.0.0.1:8080 --backend 127.0.0.1:9001 --backend 127.0.0.1:9002
//! shardline-proxy --listen 127.0.0.1:5432 --backend 10.0.0.5:5432 --mode tcp
//! shardline-proxy --config proxy.toml --shards 4 --io epoll
//! # zero-downtime upgrade: the new binary takes the listening sockets over
//! shardline-proxy --config proxy.toml --upgrade-socket /run/shardline-proxy/upgrade.sock
//! shardline-proxy --config proxy.toml --upgrade-socket /run/shardline-proxy/upgrade.sock \
//!     --upgrade-from /run/shardline-proxy/upgrade.sock   # (or SIGUSR2 to the running one)
//! ```

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::Parser;
use shardline::{
    cli::{ServerArgs, UpgradeArgs},
    Server,
};
use shardline_proxy::{Config, Mode};
use tracing::{info, warn};

/// An L4 (TCP) and HTTP/1.1 load-balancing reverse proxy (one pinned thread per
/// shard). Either a config file, or --listen and --backend for a quick start.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML): listeners, pools, routes, timeouts, limits.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "backend", "mode"])]
    config: Option<PathBuf>,
    /// Quick start: address to listen on (repeatable). Default 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Quick start: an upstream server (repeatable; round-robin). Here --backend
    /// always means an upstream; the I/O backend is --io.
    #[arg(long, value_name = "ADDR")]
    backend: Vec<SocketAddr>,
    /// Quick start: http (default) or tcp.
    #[arg(long, value_name = "MODE")]
    mode: Option<Mode>,
    /// Quick start: terminate TLS on every --listen with this certificate chain
    /// (PEM, leaf first). HTTP mode then sends X-Forwarded-Proto: https; TCP mode
    /// relays the plaintext.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "config"
    )]
    tls_cert: Option<PathBuf>,
    /// Quick start: the private key of --tls-cert (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        conflicts_with = "config"
    )]
    tls_key: Option<PathBuf>,
    /// Serve Prometheus /metrics (and /healthz) on this address (overrides the
    /// file's [admin] listen).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    upgrade: UpgradeArgs,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => {
            let listen = if args.listen.is_empty() {
                vec![SocketAddr::from(([127, 0, 0, 1], 8080))]
            } else {
                args.listen.clone()
            };
            let config =
                Config::quick_start(&listen, &args.backend, args.mode.unwrap_or(Mode::Http))?;
            match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => config.with_tls_everywhere(cert, key),
                _ => config,
            }
        }
    };
    if args.admin.is_some() {
        config.admin_listen = args.admin;
    }
    // `--max-conns` is the file's limits.max_connections.
    if args.server.max_conns.is_some() {
        config.limits.max_connections = args.server.max_conns;
    }
    let described: Vec<String> = config
        .listeners
        .iter()
        .map(|l| {
            let tls = if l.tls.is_some() { ", tls" } else { "" };
            format!("{} ({}{tls})", l.address, l.mode)
        })
        .collect();
    if args.server.print_plan.is_some() {
        let proxy = shardline_proxy::build(args.server.apply(Server::builder()), config)
            .context("configuring proxy")?;
        args.server.print_plan_if_asked(proxy.server())?;
        return Ok(());
    }
    // An upgrade (--upgrade-from) or socket activation: adopt those listening
    // sockets. If anything below fails, the old process keeps serving.
    let (builder, takeover) = args
        .upgrade
        .inherit(args.server.apply(Server::builder()))
        .context("taking over the listening sockets")?;
    let proxy = shardline_proxy::build(builder, config).context("configuring proxy")?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR2,
    ])
    .context("installing signal handlers")?;
    let running = proxy.start().context("starting proxy")?;
    let handles = [running.shutdown_handle()];
    // Once a newer process took the listeners: drain (requests in flight finish,
    // idle keep-alive clients get one more answer with Connection: close).
    let on_handover = {
        let h = running.shutdown_handle();
        move |done: shardline::upgrade::HandedOver| {
            info!(
                new_pid = done.new_pid,
                "handed over to a new process; draining"
            );
            h.shutdown();
        }
    };
    let _upgrade_socket = args
        .upgrade
        .serve(takeover, running.shutdown_handle(), on_handover)
        .context("serving upgrades")?;
    let upgrade = args.upgrade.clone();
    // Validates the file and posts it to every shard (crate::reload).
    let reloader = running.reloader();
    let config_path = args.config.clone();
    let signal_handle = signals.handle();
    let watcher = std::thread::Builder::new()
        .name("proxy-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                if sig == signal_hook::consts::SIGUSR2 {
                    if let Err(e) = upgrade.spawn_successor() {
                        warn!(error = %e, "SIGUSR2: no upgrade");
                    }
                    continue;
                }
                if sig == signal_hook::consts::SIGHUP {
                    match &config_path {
                        // Logged either way; an invalid file changes nothing.
                        Some(path) => {
                            let _ = reloader.reload_from(path);
                        }
                        None => warn!("SIGHUP: no --config file to reload"),
                    }
                    continue;
                }
                seen += 1;
                if seen == 1 {
                    info!(signal = sig, "shutting down (signal again to exit at once)");
                    for h in &handles {
                        h.shutdown();
                    }
                } else {
                    warn!(
                        signal = sig,
                        "second signal: exiting without a clean shutdown"
                    );
                    std::process::exit(130);
                }
            }
        })
        .context("starting the signal watcher")?;
    info!(listeners = ?described, "shardline-proxy running");
    let result = running.join();
    signal_handle.close();
    let _ = watcher.join();
    result.context("running proxy")?;
    info!("shardline-proxy stopped");
    Ok(())
}
