//! The other subcommands run end to end at toy sizes (no timing asserted).

use std::path::PathBuf;

use shardline_bench::{
    idle::{self, IdleConfig},
    mailbox::{self, MailboxConfig},
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
