//! monoio 0.2 on its io_uring driver: one runtime and SO_REUSEPORT listener per
//! thread, echo as in monoio's `examples/echo.rs` (see `shardline_peers::monoio_echo`).

use std::process::ExitCode;

use shardline_peers::{monoio_echo, run_shards, Args};

fn main() -> ExitCode {
    let args = Args::parse_for(
        "peer-monoio-uring",
        "Echo server on monoio's io_uring driver, one runtime and SO_REUSEPORT listener per thread",
    );
    run_shards(
        &args,
        "peer-monoio-uring",
        monoio_echo::serve::<monoio::IoUringDriver>,
    )
}
