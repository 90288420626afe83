//! The other subcommands run end to end at toy sizes (no timing asserted).

use std::{path::PathBuf, time::Duration};

use shardline_bench::{
    idle::{self, IdleConfig},
    mailbox::{self, MailboxConfig},
    scale::{self, Profile, ScaleConfig, ShardChoice},
    servers::PeerSelection,
};

#[test]
fn mailbox_runs_on_both_backends() {
    let out = mailbox::run(&MailboxConfig {
        messages: 20_000,
        pings: 20,
        backends: vec![shardline::Io::Uring, shardline::Io::Epoll],
    })
    .expect("mailbox runs");
    let names: Vec<&str> = out
        .results
        .iter()
        .map(|r| r.implementation.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "shardline-uring",
            "shardline-epoll",
            "crossbeam-channel",
            "std-mpsc"
        ]
    );
    for r in &out.results {
        let shardline = r.implementation.starts_with("shardline");
        assert_eq!(r.stream_cpu_ns_per_msg.is_some(), shardline, "{r:?}");
        assert_eq!(r.wake_cpu_us_per_msg.is_some(), shardline, "{r:?}");
        assert!(r.throughput_single_items_per_s > 0.0, "{r:?}");
        assert!(r.throughput_batched_items_per_s > 0.0, "{r:?}");
        assert!(r.wake_single_p50_us > 0.0, "{r:?}");
        assert!(r.wake_batched_p99_us >= r.wake_batched_p50_us, "{r:?}");
    }
}

#[test]
fn idle_holds_connections_and_reads_rss() {
    let out = idle::run(&IdleConfig {
        serve_exe: PathBuf::from(env!("CARGO_BIN_EXE_shardline-bench")),
        conns: Some(200),
        peers: PeerSelection::None,
        peers_dir: PathBuf::from("/nonexistent"),
        sources: 2,
        ping: true,
        server_cpus: vec![],
    })
    .expect("idle runs");
    assert_eq!(out.results.len(), 2, "{out:#?}");
    for (row, run) in out.results.iter().zip(&out.runs) {
        assert_eq!(row.conns, 200, "{run:?}");
        assert!(run.error.is_none(), "{run:?}");
        assert!(run.rss_before_bytes > 0);
        let direct = run.server == "shardline-uring"
            && std::env::var(shardline::ENV_DIRECT_DESCRIPTORS).map_or(true, |v| v.trim() != "0");
        if direct {
            // io_uring direct descriptors: the connections are in the rings'
            // file tables, not the process's fd table.
            assert!(run.server_fds.1 < run.server_fds.0 + 200, "{run:?}");
        } else {
            assert!(run.server_fds.1 >= run.server_fds.0 + 200, "{run:?}");
        }
    }
}

#[test]
fn scale_quick_runs_what_fits_with_several_client_threads() {
    let mut cfg = ScaleConfig::from_profile(
        PathBuf::from(env!("CARGO_BIN_EXE_shardline-bench")),
        Profile::quick(),
    );
    // One shard, and a count no machine here has CPUs for.
    cfg.shards = ShardChoice::List(vec![1, 4096]);
    cfg.backends = vec![shardline::Io::Epoll];
    cfg.warmup = Duration::from_millis(50);
    cfg.duration = Duration::from_millis(200);
    cfg.conns = Some(6);
    cfg.client_threads = Some(2);
    cfg.max_foreign_pct = 100.0;
    cfg.retries = 0;
    let out = scale::run(&cfg).expect("scale runs");
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert_eq!(out.shards_run, [1]);
    assert_eq!(out.shards_skipped.len(), 1);
    assert_eq!(out.shards_skipped[0].shards, 4096);
    assert_eq!(out.setups[0].client_threads, 2);
    assert_eq!(out.results.len(), 1, "{:?}", out.results);
    let p = &out.results[0];
    assert_eq!((p.series().as_str(), p.shards), ("epoll/reuseport", 1));
    assert!(p.rps > 0.0, "{p:?}");
    let path = std::env::temp_dir().join(format!("scale-smoke-{}.svg", std::process::id()));
    scale::plot(&out, &path).expect("plot drawn");
    let _ = std::fs::remove_file(&path);
}
