//! A TCP echo server on Shardline, using only the public API.
//!
//! ```text
//! cargo run --release -p shardline --example echo -- --addr 127.0.0.1:7000 --shards 2 --io auto
//! cargo run --release -p shardline --example echo -- --tls            # self-signed, made now
//! cargo run --release -p shardline --example echo -- --tls-cert c.pem --tls-key k.pem
//! ```
//!
//! With `--tls` the server makes a CA and a certificate for `localhost` at start
//! and writes the CA to `--tls-dir` (default: a directory under /tmp, logged), so
//! a client can verify it: `openssl s_client -connect 127.0.0.1:7000 -CAfile
//! DIR/ca.pem`, or `echo_check --tls-ca DIR/ca.pem`.
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
    /// Serve TLS with a certificate for `localhost` made at start (its CA is
    /// written to `--tls-dir`).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls: bool,
    /// Where `--tls` writes ca.pem, cert.pem and key.pem.
    #[arg(long, requires = "tls")]
    tls_dir: Option<std::path::PathBuf>,
    /// Serve TLS with this certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

/// Makes a CA and a `localhost` certificate signed by it in `dir`.
fn make_certificate(
    dir: &std::path::Path,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names, or the leaf looks self-signed to OpenSSL.
    ca.distinguished_name
        .push(DnType::CommonName, "Shardline echo example CA");
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    Ok((cert_path, key_path))
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
    let files = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ if args.tls => {
            let dir = args.tls_dir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("shardline-echo-tls-{}", std::process::id()))
            });
            let files = make_certificate(&dir)?;
            tracing::info!(ca = %dir.join("ca.pem").display(), "TLS certificate for localhost made");
            Some(files)
        }
        _ => None,
    };
    let mut acceptor = None;
    let builder = match files {
        Some((cert, key)) => {
            let tls = shardline::TlsAcceptor::from_files(cert, key).context("loading TLS files")?;
            acceptor = Some(tls.clone());
            Server::builder().listen_tls(args.addr, tls)
        }
        None => Server::builder().listen(args.addr),
    };
    let builder = builder.tcp_nodelay(!args.no_nodelay);
    let server = args
        .server
        .apply(builder)
        .build(|_shard| Echo)
        .context("configuring server")?;
    if args.server.print_plan_if_asked(&server)? {
        return Ok(());
    }
    // SIGHUP re-reads the certificate files (renewals): new handshakes use them.
    let server = server.on_hangup(move |_remote| {
        if let Some(tls) = &acceptor {
            if let Err(e) = tls.reload() {
                tracing::error!(error = %e, "SIGHUP: certificates not reloaded; the old ones stay");
            }
        }
    });
    server.run().context("running echo server")?;
    Ok(())
}
