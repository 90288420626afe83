//! The monoio echo shard both monoio peers run; they differ only in the driver
//! (io_uring or the legacy epoll one). Written as monoio's `examples/echo.rs`:
//! `TcpListener::bind` (SO_REUSEPORT on by default in monoio's `ListenerOpts`), a
//! task per connection, owned-buffer `read` then `write_all` of an 8 KiB `Vec`.

use monoio::{
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::{TcpListener, TcpStream},
    Buildable, Driver, RuntimeBuilder,
};

use crate::{pin_current_thread, Shard};

/// Runs one shard on a monoio runtime with driver `D` until the process ends.
pub fn serve<D: Buildable + Driver>(shard: Shard) -> Result<(), String> {
    if let Some(cpu) = shard.cpu {
        pin_current_thread(cpu)?;
    }
    let mut runtime = <D as Buildable>::build(RuntimeBuilder::<D>::new())
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let listener =
            TcpListener::bind(shard.addr).map_err(|e| format!("listen on {}: {e}", shard.addr))?;
        shard
            .ready
            .bound(listener.local_addr().map_err(|e| e.to_string())?);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    monoio::spawn(echo(stream));
                }
                // Out of fds or a connection reset before accept: keep serving the rest.
                Err(e) => eprintln!("monoio shard {}: accept: {e}", shard.index),
            }
        }
    })
}

async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    loop {
        let (res, b) = stream.read(buf).await;
        buf = b;
        if res? == 0 {
            return Ok(());
        }
        let (res, b) = stream.write_all(buf).await;
        buf = b;
        res?;
        buf.clear();
    }
}
