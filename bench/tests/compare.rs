//! A tiny end-to-end `compare` with Shardline only: both backends (and io_uring
//! with ordinary fds instead of direct descriptors) run, every row comes out,
//! and the baseline's ratio is 1. No timing is asserted.

use std::{path::PathBuf, time::Duration};

use shardline_bench::{
    client::ClientIo,
    compare::{self, CompareConfig},
    report,
    servers::PeerSelection,
};

#[test]
fn compare_shardline_only() {
    let (server_cpus, client_cpus) = compare::default_pinning(1);
    let cfg = CompareConfig {
        serve_exe: PathBuf::from(env!("CARGO_BIN_EXE_shardline-bench")),
        peers: PeerSelection::None,
        peers_dir: PathBuf::from("/nonexistent"),
        sizes: vec![100],
        conns: 8,
        rounds: 2,
        threads: 1,
        server_cpus,
        client_cpus,
        // Two client threads: the merged report is what compare sees.
        client_threads: 2,
        warmup: Duration::from_millis(50),
        duration: Duration::from_millis(200),
        client_io: ClientIo::Uring,
        max_foreign_pct: 100.0,
        retries: 0,
    };
    let out = compare::run(&cfg).expect("compare runs");
    let names: Vec<&str> = out.results.iter().map(|r| r.server.as_str()).collect();
    assert_eq!(
        names,
        ["shardline-uring", "shardline-uring-fd", "shardline-epoll"],
        "{out:#?}"
    );
    assert_eq!(out.runs.len(), 6, "2 rounds × 3 servers × 1 size");
    for row in &out.results {
        assert_eq!((row.msg_size, row.conns), (100, 8));
        assert!(row.rps > 0.0, "{row:?}");
        assert!(row.ratio.is_some(), "{row:?}");
        assert!(row.server_cpu_us_per_req.is_some(), "{row:?}");
    }
    assert_eq!(out.results[0].ratio, Some(1.0));
    for run in &out.runs {
        let load = run.load.as_ref().expect("every run measured");
        assert_eq!(load.errors, 0, "{run:?}");
        assert_eq!(load.conns_alive, 8, "{run:?}");
    }

    let path = std::env::temp_dir().join(format!("compare-{}.json", std::process::id()));
    report::write_json(&path, &out).expect("JSON written");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read back")).expect("JSON");
    let _ = std::fs::remove_file(&path);
    assert_eq!(v["results"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["results"][0]["ratio"], 1.0);
}
