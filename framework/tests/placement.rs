//! The server plans placement on the configured topology, pins shards to the plan,
//! and binds each shard's read buffers to its NUMA node — on both backends.

mod common;
#[path = "common/echo_client.rs"]
mod echo_client;

use shardline::Io;
use shardline::{ConnId, Ctx, Error, Handler, Server};

struct Nop;
impl Handler for Nop {
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
        _ctx: &mut Ctx<'_, Self>,
        _conn: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        data.len()
    }
}

#[test]
fn plan_for_a_synthetic_machine_puts_each_shard_on_its_own_core() {
    let server = Server::builder()
        .topology("pack:2 numa:1 core:8 pu:2")
        .shards(16)
        .build(|_| Nop)
        .expect("config");
    let plan = server.plan().expect("plan");
    assert_eq!(plan.shards.len(), 16);
    let mut cores: Vec<usize> = plan.shards.iter().map(|s| s.core).collect();
    cores.sort_unstable();
    cores.dedup();
    assert_eq!(
        cores.len(),
        16,
        "one physical core per shard: {}",
        plan.table()
    );
    for package in 0..2 {
        let n = plan.shards.iter().filter(|s| s.package == package).count();
        assert_eq!(n, 8, "8 shards per package: {}", plan.table());
    }
    // A synthetic machine is for planning; running on it is refused, clearly.
    match server.start() {
        Err(Error::Config(msg)) => assert!(msg.contains("planning"), "{msg}"),
        other => panic!("start on a synthetic topology must fail, got {other:?}"),
    }
}

#[test]
fn too_many_shards_is_an_error_unless_oversubscribed() {
    let cpus = Server::builder()
        .build(|_| Nop)
        .expect("config")
        .plan()
        .expect("plan")
        .shards
        .len();
    let err = Server::builder()
        .shards(cpus + 1)
        .build(|_| Nop)
        .expect("config")
        .plan()
        .expect_err("more shards than CPUs");
    assert!(err.to_string().contains("oversubscription"), "{err}");
    let plan = Server::builder()
        .shards(cpus + 1)
        .oversubscribe(true)
        .build(|_| Nop)
        .expect("config")
        .plan()
        .expect("oversubscribed plan");
    assert_eq!(plan.shards.len(), cpus + 1);
}

fn pools_are_bound_to_the_shard_node(io: Io) {
    let (server, _addr) = common::start(common::builder(io, 2), |_| Nop);
    for (i, s) in server.metrics().snapshot().iter().enumerate() {
        assert!(
            s.pool_bytes >= 16 << 10,
            "{io}: shard {i} has a pool: {s:?}"
        );
        assert_eq!(s.pool_off_node_pages, 0, "{io}: shard {i}: {s:?}");
    }
    server.shutdown().expect("clean shutdown");
}

/// A pool far too small for the load: on io_uring the provided-buffer ring runs dry
/// (recvs complete with ENOBUFS and are re-armed as buffers return) and on epoll
/// the single scratch buffer is reused; either way every byte arrives.
fn tiny_pool_runs_dry_and_recovers(io: Io) {
    let builder = common::builder(io, 1)
        .uring_buffers(2)
        .read_buffer_size(4096);
    let (server, addr) = common::start(builder, |_| common::Echo);
    let report = echo_client::check(
        addr,
        200,
        |i| echo_client::size_for(9, i, 256 << 10),
        9,
        std::time::Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{io}: {e}"));
    assert!(report.bytes > 0, "{io}");
    let pool = server.metrics().total().pool_bytes;
    assert!(pool <= 2 * 4096, "{io}: the pool really is tiny: {pool} B");
    server.shutdown().expect("clean shutdown");
}

shardline::per_backend! {
    pools_are_bound_to_the_shard_node => pools_are_bound_to_the_shard_node;
    tiny_pool_runs_dry_and_recovers => tiny_pool_runs_dry_and_recovers;
}
