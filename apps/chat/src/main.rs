//! `shardline-chat`: the IRC server binary.
//!
//! ```text
//! cargo run --release -p shardline-chat                     # 127.0.0.1:6667, defaults
//! cargo run --release -p shardline-chat -- --config chat.toml --shards 4 --io epoll
//! kill -HUP <pid>                                           # reread chat.toml (rehash)
//! cargo run --release -p shardline-chat -- --hash-password   # an [[operators]] password hash
//! cargo run --release -p shardline-chat -- --tls-listen 0.0.0.0:6697 \
//!     --tls-cert fullchain.pem --tls-key privkey.pem         # TLS beside 6667
//! cargo run --release -p shardline-chat -- --websocket-listen 127.0.0.1:8067
//!                                   # IRC over WebSocket + the web client at /
//! printf '%s\n' "$PW" | shardline-chat --data-dir DIR account add alice
//! shardline-chat --data-dir DIR account list                # server stopped
//! # zero-downtime upgrade: the new process takes the listeners and the data
//! # directory; the old one keeps its sessions (history in memory only) until
//! # they leave or --upgrade-deadline
//! shardline-chat --upgrade-socket /run/shardline-chat/upgrade.sock
//! kill -USR2 <pid>     # or start the new binary with --upgrade-from that path
//! ```

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shardline::{
    cli::{ServerArgs, UpgradeArgs},
    Server,
};
use shardline_chat::{
    auth::cli::{run_account_command_with, AccountCommandOptions, CliError, Terminal},
    store::{StoreError, StoreOptions},
    Config, Overrides, RehashSource,
};
use tracing::info;

/// Offline tools (the server must not be running on the data directory).
#[derive(Debug, Subcommand)]
enum Command {
    /// Manage accounts in the data directory (--data-dir, else the config's
    /// storage.dir): `account add NAME` and `account passwd NAME` read the
    /// password from standard input (no echo on a terminal, asked twice),
    /// `account del NAME`, `account list`, `account cert add|del NAME FP`
    /// (a TLS client certificate's SHA-256 fingerprint, for SASL EXTERNAL).
    /// Refused while a server holds the directory. Exit status 0 on success,
    /// 1 on errors, 2 on bad arguments.
    #[command(after_help = shardline_chat::auth::cli::USAGE)]
    Account {
        /// The account command and its arguments.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        args: Vec<String>,
    },
}

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
    /// Serve Prometheus /metrics and /healthz over HTTP on this address (replaces
    /// the config's server.admin_listen). Default: off.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Serve IRC over TLS on this address too, conventionally port 6697
    /// (repeatable; replaces the config's tls.listen). Needs --tls-cert and
    /// --tls-key (or tls.cert / tls.key). Plaintext --listen keeps working beside
    /// it, and its clients are told where TLS is (IRCv3 sts). Default: off.
    #[arg(long, value_name = "ADDR")]
    tls_listen: Vec<SocketAddr>,
    /// The TLS certificate chain, PEM (server certificate first, then
    /// intermediates); replaces tls.cert. Reread on SIGHUP.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key, PEM (PKCS#8, SEC1 or PKCS#1); replaces tls.key.
    /// Reread on SIGHUP.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Serve IRC over WebSocket (IRCv3: subprotocols text.ircv3.net and
    /// binary.ircv3.net) and the web client at / on this address (repeatable;
    /// replaces the config's websocket.listen). Default: off.
    #[arg(long, value_name = "ADDR")]
    websocket_listen: Vec<SocketAddr>,
    /// Like --websocket-listen over TLS (wss://), with the certificate of
    /// --tls-cert / --tls-key (repeatable; replaces websocket.tls_listen).
    #[arg(long, value_name = "ADDR")]
    websocket_tls_listen: Vec<SocketAddr>,
    /// The store's data directory (replaces the config's storage.dir). Default:
    /// $STATE_DIRECTORY, else ./shardline-chat-data.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep no message history: no store, no CHATHISTORY (history.enabled = false).
    #[arg(long)]
    no_history: bool,
    /// Join a cluster of nodes serving one network through this engine:
    /// redis://HOST:PORT (replaces cluster.url). Default: a single node.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// This node's name in the cluster, unique there (replaces
    /// cluster.node_name). Default: the server's name.
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Read a password from standard input, print its argon2id hash (for an
    /// [[operators]] password) and exit.
    #[arg(long)]
    hash_password: bool,
    /// After handing the listeners over to a new process (an upgrade), keep the
    /// IRC sessions of this one until they leave, at most this many seconds;
    /// then tell the rest to reconnect (they reach the new process) and exit.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    upgrade_deadline: u64,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    upgrade: UpgradeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// `shardline-chat account ...`: runs offline on the store and exits.
fn account_command(args: &Args, command: &[String]) -> std::process::ExitCode {
    let overrides = Overrides {
        data_dir: args.data_dir.clone(),
        ..Overrides::default()
    };
    let config = match &args.config {
        Some(path) => Config::load_with(path, &overrides),
        None => Config::from_overrides(&overrides),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardline-chat: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let dir = config.storage.data_dir();
    let options = AccountCommandOptions {
        nicklen: config.limits.nicklen,
        policy: config.accounts.password_policy(),
        store: StoreOptions {
            sync: config.storage.sync_policy(),
            ..StoreOptions::default()
        },
        cheap_hashes: false,
    };
    match run_account_command_with(&dir, command, &mut Terminal, &options) {
        Ok(out) => {
            print!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e @ CliError::Usage(_)) => {
            eprintln!("shardline-chat account: {e}");
            std::process::ExitCode::from(2)
        }
        Err(e @ CliError::Store(StoreError::Locked { .. })) => {
            eprintln!(
                "shardline-chat account: {e}: stop that server first (accounts are changed offline)"
            );
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("shardline-chat account: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    // SIGHUP's default action ends the process, and `Server::run` installs its
    // handler (rehash) only once it starts: until then a SIGHUP is ignored (the
    // configuration is being read anyway), so it never kills the server.
    // SAFETY: sets a disposition to SIG_IGN, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let args = Args::parse();
    if let Some(Command::Account { args: command }) = &args.command {
        // What the command prints goes to standard output; the store's own
        // log lines (warnings only, unless RUST_LOG says otherwise) to stderr.
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .init();
        return Ok(account_command(&args, command));
    }
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if args.hash_password {
        print!("{}", shardline_chat::auth::oper::hash_password_stdin()?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let overrides = Overrides {
        admin_listen: args.admin,
        tls_listen: args.tls_listen.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        websocket_listen: args.websocket_listen.clone(),
        websocket_tls_listen: args.websocket_tls_listen.clone(),
        data_dir: args.data_dir.clone(),
        no_history: args.no_history,
        cluster: args.cluster.clone(),
        node_name: args.node_name.clone(),
    };
    let mut config = match &args.config {
        Some(path) => Config::load_with(path, &overrides)?,
        None => Config::from_overrides(&overrides)?,
    };
    if args.server.print_plan.is_some() {
        // Only printing where shards would run: no data directory to lock.
        config.history.enabled = false;
    }
    let listen = if args.listen.is_empty() {
        config.server.listen.clone()
    } else {
        args.listen.clone()
    };
    anyhow::ensure!(
        !listen.is_empty() || config.tls.enabled() || config.websocket.listeners() > 0,
        "nothing to listen on: give --listen or server.listen (or --tls-listen, --websocket-listen)"
    );
    // An upgrade (--upgrade-from) or socket activation: adopt those listening
    // sockets. If anything below fails, the old process keeps serving.
    let (mut builder, mut takeover) = args
        .upgrade
        .inherit(args.server.apply(Server::builder()))
        .context("taking over the listening sockets")?;
    if let (Some(t), true) = (takeover.as_mut(), config.history.enabled) {
        // The old process writes out its store and unlocks the data directory
        // (see shardline_chat::upgrade); it takes it back if this one fails.
        t.request_state()
            .context("taking over the data directory")?;
    }
    for addr in &listen {
        builder = builder.listen(*addr);
    }
    let name = config.server.name.clone();
    let admin = config.server.admin_listen;
    let tls = config.tls.listen.clone();
    let websocket = (
        config.websocket.listen.clone(),
        config.websocket.tls_listen.clone(),
    );
    let history = config.history.enabled;
    // SIGHUP rereads the same file with the same flags over it, and the TLS
    // certificate files (Server::run never lets SIGHUP kill the process; without
    // a file or TLS it only logs that there is nothing to reload).
    let source = args.config.clone().map(|path| RehashSource {
        path,
        overrides: overrides.clone(),
    });
    let server =
        shardline_chat::build_with_rehash(builder, config, source).context("configuring server")?;
    if args.server.print_plan_if_asked(server.server())? {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    info!(server = %name, addrs = ?listen, tls = ?tls, websocket = ?websocket, admin = ?admin, history, "shardline-chat starting");
    let upgrade = args.upgrade.clone();
    let store_handover = server.store_handover();
    let deadline = std::time::Duration::from_secs(args.upgrade_deadline);
    let mut upgrade_socket = None;
    let mut takeover = takeover;
    let mut setup_error = None;
    let result = server.run_with(|running| {
        let handle = running.shutdown_handle();
        let metrics = running.metrics();
        // After the handover: the sessions stay until they leave or the deadline,
        // then the usual shutdown tells the rest to reconnect.
        let on_handover = move |done: shardline::upgrade::HandedOver| {
            let start = std::time::Instant::now();
            info!(
                new_pid = done.new_pid,
                sessions = metrics.total().conns_live,
                ?deadline,
                "handed over: keeping these sessions until they leave or the deadline"
            );
            while metrics.total().conns_live > 0
                && start.elapsed() < deadline
                && !handle.is_requested()
            {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            handle.shutdown();
        };
        let state = store_handover.map(|h| h.connect(running.remote()));
        match upgrade.serve_with_state(
            takeover.take(),
            running.shutdown_handle(),
            state,
            on_handover,
        ) {
            Ok(s) => upgrade_socket = s,
            Err(e) => {
                setup_error = Some(e);
                running.shutdown_handle().shutdown();
            }
        }
        // SIGUSR2 starts the new process (the framework's signal thread owns
        // SIGINT, SIGTERM and SIGHUP).
        let upgrade = upgrade.clone();
        match signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR2]) {
            Ok(mut signals) => {
                let _ = std::thread::Builder::new()
                    .name("chat-sigusr2".into())
                    .spawn(move || {
                        for _ in signals.forever() {
                            if let Err(e) = upgrade.spawn_successor() {
                                tracing::warn!(error = %e, "SIGUSR2: no upgrade");
                            }
                        }
                    });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGUSR2; upgrades need --upgrade-from")
            }
        }
    });
    drop(upgrade_socket);
    if let Some(e) = setup_error {
        return Err(e).context("serving upgrades");
    }
    result.context("running chat server")?;
    info!("shardline-chat stopped");
    Ok(std::process::ExitCode::SUCCESS)
}
