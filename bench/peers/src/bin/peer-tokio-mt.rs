//! tokio's multi-thread runtime with `--threads` workers, one listener, and a task
//! per connection, as in tokio's `TcpListener` docs and tutorial: read into a
//! buffer allocated per connection, `write_all` it back.

use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use shardline_peers::{announce, pin_current_thread, Args};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

fn main() -> ExitCode {
    let args = Args::parse_for(
        "peer-tokio-mt",
        "Echo server on tokio's multi-thread runtime (one listener, a task per connection)",
    );
    // Worker i is pinned to LIST[i % len]; the runtime starts its workers itself, so
    // they take their numbers from a counter as they start.
    let next_worker = Arc::new(AtomicUsize::new(0));
    let pin_args = args.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .thread_name("peer-tokio-mt")
        .on_thread_start(move || {
            let i = next_worker.fetch_add(1, Ordering::Relaxed);
            if let Some(cpu) = pin_args.cpu_for(i) {
                if let Err(e) = pin_current_thread(cpu) {
                    eprintln!("peer-tokio-mt: {e}");
                }
            }
        })
        .enable_io()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peer-tokio-mt: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer-tokio-mt: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.addr).await?;
    announce(listener.local_addr()?);
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of fds or a connection reset before accept: keep serving the rest.
            Err(e) => {
                eprintln!("peer-tokio-mt: accept: {e}");
                continue;
            }
        };
        tokio::spawn(echo(socket));
    }
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
