//! glommio 0.9: one `LocalExecutor` per thread, placed on its CPU with
//! `Placement::Fixed` when `--cpus` is given, each with its own `TcpListener::bind`
//! (glommio sets SO_REUSEPORT on every listener it binds). A task per connection
//! (`glommio::spawn_local(..).detach()`, as in glommio's server examples) reads into
//! a 4 KiB buffer and `write_all`s it back.
//!
//! Each executor registers 10 MiB of I/O buffers (`io_memory`) with its io_uring,
//! which needs a memlock limit above that or CAP_IPC_LOCK (root has it).

use std::process::ExitCode;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::{
    net::{TcpListener, TcpStream},
    LocalExecutorBuilder, Placement,
};
use shardline_peers::{run_shards, Args, Shard};

fn main() -> ExitCode {
    let args = Args::parse_for(
        "peer-glommio",
        "Echo server on glommio: one LocalExecutor and SO_REUSEPORT listener per thread",
    );
    run_shards(&args, "peer-glommio", shard)
}

fn shard(shard: Shard) -> Result<(), String> {
    let placement = match shard.cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    // `make` builds the executor on this thread (and pins it) instead of spawning
    // one, so all peers start and watch their threads the same way.
    let executor = LocalExecutorBuilder::new(placement)
        .name(&format!("peer-glommio-{}", shard.index))
        .make()
        .map_err(|e| format!("cannot start the executor: {e}"))?;
    executor.run(async {
        let listener =
            TcpListener::bind(shard.addr).map_err(|e| format!("listen on {}: {e}", shard.addr))?;
        shard
            .ready
            .bound(listener.local_addr().map_err(|e| e.to_string())?);
        loop {
            match listener.accept().await {
                Ok(stream) => glommio::spawn_local(echo(stream)).detach(),
                // Out of fds or a connection reset before accept: keep serving the rest.
                Err(e) => {
                    eprintln!("peer-glommio: accept: {e}");
                    continue;
                }
            };
        }
    })
}

async fn echo(mut stream: TcpStream) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
