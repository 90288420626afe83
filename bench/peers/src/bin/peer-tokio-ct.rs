//! `--threads` OS threads, each running its own tokio current_thread runtime with
//! its own SO_REUSEPORT listener (`TcpSocket::set_reuseport`), so the kernel spreads
//! connections over the threads and no task ever moves between them. The echo task
//! is the same as `peer-tokio-mt`'s: tokio's docs' read/`write_all` loop.

use std::{net::SocketAddr, process::ExitCode};

use shardline_peers::{pin_current_thread, run_shards, Args, Shard};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
};

fn main() -> ExitCode {
    let args = Args::parse_for(
        "peer-tokio-ct",
        "Echo server: one tokio current_thread runtime and SO_REUSEPORT listener per thread",
    );
    run_shards(&args, "peer-tokio-ct", shard)
}

fn shard(shard: Shard) -> Result<(), String> {
    if let Some(cpu) = shard.cpu {
        pin_current_thread(cpu)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let listener = listen(shard.addr).map_err(|e| format!("listen on {}: {e}", shard.addr))?;
        shard
            .ready
            .bound(listener.local_addr().map_err(|e| e.to_string())?);
        loop {
            match listener.accept().await {
                Ok((socket, _)) => {
                    tokio::spawn(echo(socket));
                }
                // Out of fds or a connection reset before accept: keep serving the rest.
                Err(e) => eprintln!("peer-tokio-ct: accept: {e}"),
            }
        }
    })
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn echo(mut socket: TcpStream) {
    if socket.set_nodelay(true).is_err() {
        return;
    }
    let mut buf = vec![0; 4096];
    loop {
        let n = match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if socket.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
