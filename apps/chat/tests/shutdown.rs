//! Graceful shutdown: every client gets `ERROR :Server shutting down` and then the
//! close. Both backends, 1 and 4 shards.

mod common;

use common::{join_all, TestServer, SHARD_COUNTS};
use shardline::Io;

fn clients_are_told_on_shutdown(io: Io) {
    for shards in SHARD_COUNTS {
        let srv = TestServer::start(io, shards);
        let [mut a, mut b] = srv.register_each(["alice", "bob"]);
        join_all("#bye", [&mut a, &mut b]);
        let mut unregistered = srv.connect_on(2);
        unregistered.send("NICK early");
        unregistered.sync();
        let label = srv.label();
        // Stop in the background: shutdown waits for the clients to close.
        let stopper = std::thread::spawn(move || srv.stop());
        for c in [&mut a, &mut b, &mut unregistered] {
            let lines = c.until_closed();
            let err = lines.last().expect("ERROR before close");
            assert!(err.is("ERROR"), "{label}: {lines:?}");
            assert_eq!(err.last(), "Server shutting down", "{label}");
        }
        drop((a, b, unregistered));
        stopper.join().expect("server stopped cleanly");
    }
}

shardline::per_backend! {
    clients_are_told_on_shutdown => clients_are_told_on_shutdown;
}
