//! `engines` end to end at toy sizes, against whichever of redis-server and
//! nats-server is installed (an absent one is skipped by the run itself).
//! Checks completeness, Redis's single order and the claim semantics, never
//! timings.

use shardline_bench::engines::{self, EnginesConfig, Variant};

#[test]
fn engines_runs_end_to_end_at_toy_sizes() {
    let cfg = EnginesConfig {
        variants: vec![
            Variant::Redis,
            Variant::RedisStreams,
            Variant::RedisLua,
            Variant::Nats,
            Variant::NatsJs,
        ],
        publishers: 2,
        subscribers: 2,
        messages: 300,
        batch: 8,
        payload: 100,
        rounds: 1,
        claims: 50,
        restart: true,
        restart_messages: 300,
        down_ms: 100,
    };
    let out = engines::run(&cfg).expect("engines run");
    let skipped: usize = out
        .skipped
        .iter()
        .map(|s| if s.starts_with("redis") { 3 } else { 2 })
        .sum();
    assert_eq!(out.results.len() + skipped, 5, "{:?}", out.skipped);
    for r in &out.results {
        let f = &r.fanout[0];
        assert_eq!(f.deliveries, 2 * 2 * 300, "{:?}", r.variant);
        assert_eq!(f.missing, 0);
        assert_eq!(f.fifo_violations, 0);
        if r.variant != Variant::Nats {
            // One order: one Redis thread, or the JetStream stream sequence.
            assert!(f.same_total_order, "{:?}", r.variant);
        }
        if let Some(c) = &r.claims {
            assert_eq!((c.claims, c.won, c.lost_again), (100, 100, 100));
        }
        if let Some(x) = &r.restart {
            assert_eq!(x.attempted, 300);
            assert!(x.acked > 0 && x.acked <= 300);
            assert_eq!(x.received.len(), 2);
        }
    }
    let table = engines::render(&out);
    for r in &out.results {
        assert!(table.contains(r.variant.name()));
    }
}
