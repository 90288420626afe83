//! An independent client that checks an echo server byte for byte:
//! `cargo run --release -p shardline --example echo_check -- --addr 127.0.0.1:7000 --conns 1000`.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;

#[path = "../tests/common/echo_client.rs"]
mod echo_client;

/// Opens many concurrent connections to an echo server, sends pseudo-random data of
/// log-uniform random sizes on each and verifies every byte that comes back.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Echo server address.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Largest message per connection, bytes (sizes are log-uniform from 1).
    #[arg(long, default_value_t = 1 << 20)]
    max_size: usize,
    /// Seed for sizes and contents.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Ping-pong mode: each connection sends `--msg-size` bytes and waits for the
    /// echo, this many times (checks bytes and reports round trips per second).
    #[arg(long, conflicts_with = "tls_ca")]
    rounds: Option<usize>,
    /// Message size in ping-pong mode.
    #[arg(long, default_value_t = 100)]
    msg_size: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Connect with TLS, trusting the CA certificates in this PEM file.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// The server name TLS checks the certificate against (and sends as SNI).
    #[arg(long, default_value = "localhost")]
    tls_name: String,
}

/// The TLS client configuration for `--tls-ca`.
fn tls_client(a: &Args) -> Option<echo_client::TlsClient> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let ca = a.tls_ca.as_ref()?;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| {
            eprintln!("FAILED: {}: {e}", ca.display());
            std::process::exit(2);
        });
    roots.add_parsable_certificates(certs);
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("rustls supports its default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(a.tls_name.clone()).unwrap_or_else(|_| {
        eprintln!("FAILED: {:?} is not a server name", a.tls_name);
        std::process::exit(2);
    });
    Some((std::sync::Arc::new(config), name))
}

fn main() {
    let a = Args::parse();
    if let Some(rounds) = a.rounds {
        match echo_client::pingpong(
            a.addr,
            a.conns,
            a.msg_size,
            rounds,
            Duration::from_secs(a.timeout),
        ) {
            Ok((trips, elapsed)) => println!(
                "ok: {} round trips of {} B over {} connections in {:.2} s: {:.0} round trips/s",
                trips,
                a.msg_size,
                a.conns,
                elapsed.as_secs_f64(),
                trips as f64 / elapsed.as_secs_f64()
            ),
            Err(e) => {
                eprintln!("FAILED: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let tls = tls_client(&a);
    let report = echo_client::check_with(
        a.addr,
        tls.as_ref(),
        a.conns,
        |i| echo_client::size_for(a.seed, i, a.max_size),
        a.seed,
        Duration::from_secs(a.timeout),
    );
    match report {
        Ok(r) => {
            let secs = r.elapsed.as_secs_f64();
            println!(
                "ok: {} connections, {} bytes echoed and verified in {:.2} s ({:.1} MB/s)",
                r.conns,
                r.bytes,
                secs,
                r.bytes as f64 / secs / 1e6
            );
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            std::process::exit(1);
        }
    }
}
