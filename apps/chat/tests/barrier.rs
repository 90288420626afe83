//! The PING barrier: a PONG comes only after every effect of the client's earlier
//! commands, cross-shard ones included. Both backends, 1 and 4 shards.

mod common;

use common::{each_server, join_all, sync_all};
use shardline::Io;

fn pong_comes_after_join_echo(io: Io) {
    each_server(io, |srv| {
        let mut a = srv.register_on(0, "alice");
        for round in 0..20 {
            let chan = format!("#barrier{round}");
            a.send(&format!("JOIN {chan}"));
            a.send(&format!("PING :after-{round}"));
            let (pong, before) = a.until_command("PONG");
            assert_eq!(pong.last(), format!("after-{round}"));
            assert!(
                before.iter().any(|l| l.is("JOIN") && l.params[0] == chan),
                "{}: PONG before the JOIN echo: {before:?}",
                srv.label()
            );
            assert!(
                before.iter().any(|l| l.is("366")),
                "{}: PONG before NAMES: {before:?}",
                srv.label()
            );
        }
    });
}

/// After A's PONG, B's shard has queued A's earlier messages: a PING from B then
/// returns them before its own PONG.
fn pong_comes_after_delivery_on_other_shards(io: Io) {
    each_server(io, |srv| {
        let [mut a, mut b, mut c] = srv.register_each(["alice", "bob", "carol"]);
        join_all("#sync", [&mut a, &mut b, &mut c]);
        sync_all([&mut a, &mut b, &mut c]);
        for round in 0..20 {
            a.send(&format!("PRIVMSG #sync :round {round}"));
            a.send(&format!("PRIVMSG carol :private {round}"));
            a.sync();
            let at_b = b.sync();
            assert!(
                at_b.iter().any(|l| l.last() == format!("round {round}")),
                "{}: {at_b:?}",
                srv.label()
            );
            let at_c = c.sync();
            for want in [format!("round {round}"), format!("private {round}")] {
                assert!(
                    at_c.iter().any(|l| l.last() == want),
                    "{}: {at_c:?}",
                    srv.label()
                );
            }
        }
    });
}

shardline::per_backend! {
    pong_comes_after_join_echo => pong_comes_after_join_echo;
    pong_comes_after_delivery_on_other_shards => pong_comes_after_delivery_on_other_shards;
}
