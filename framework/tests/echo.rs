//! Echo correctness: 1,000 concurrent connections, sizes from 1 B to 1 MiB, every
//! byte checked, on both backends.

mod common;
#[path = "common/echo_client.rs"]
mod echo_client;

use shardline::Io;
use std::time::Duration;

fn thousand_connections_random_sizes_every_byte_checked(io: Io) {
    let (server, addr) = common::start(common::builder(io, 2), |_| common::Echo);
    let seed = 42;
    let report = echo_client::check(
        addr,
        1000,
        |i| echo_client::size_for(seed, i, 1 << 20),
        seed,
        Duration::from_secs(240),
    )
    .unwrap_or_else(|e| panic!("{io}: {e}"));
    let expected: u64 = (0..1000)
        .map(|i| echo_client::size_for(seed, i, 1 << 20) as u64)
        .sum();
    assert_eq!(report.bytes, expected, "{io}");
    let metrics = server.metrics();
    assert!(
        common::wait_until(Duration::from_secs(30), || metrics.total().conns_closed
            == 1000),
        "{io}: every connection closes: {:?}",
        metrics.total()
    );
    let total = metrics.total();
    assert_eq!(total.conns_accepted, 1000, "{io}");
    assert_eq!(total.bytes_in, expected, "{io}");
    assert_eq!(total.bytes_out, expected, "{io}");
    server.shutdown().expect("clean shutdown");
}

shardline::per_backend! {
    thousand_connections_random_sizes_every_byte_checked => thousand_connections_random_sizes_every_byte_checked;
}
