//! The JSON files have the documented shapes, and the scale plot is a well-formed
//! SVG naming both backends' series.

use std::{collections::BTreeSet, path::PathBuf};

use serde_json::Value;
use shardline_bench::{
    client::{Latency, LoadReport},
    compare::{self, CompareOutput, RunRecord, Setup},
    idle::{IdleOutput, IdleRow},
    machine::MachineInfo,
    mailbox::{MailboxOutput, MailboxRow},
    scale::{self, ScaleConfig, ScaleOutput, ScalePoint},
    servers::ServerSpec,
};

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn load(rps: f64) -> LoadReport {
    LoadReport {
        mode: "closed".into(),
        conns: 64,
        msg_size: 100,
        requests: (rps * 2.0) as u64,
        window_s: 2.0,
        rps,
        latency: Latency {
            p50_us: 10.0,
            p90_us: 20.0,
            p99_us: 30.0,
            p999_us: 40.0,
            max_us: 50.0,
            mean_us: 12.0,
        },
        errors: 0,
        conns_alive: 64,
        client_cpu_pct: 90.0,
        backlog: 0,
        client_threads: 1,
    }
}

fn run(server: &str, round: usize, rps: f64) -> RunRecord {
    RunRecord {
        round,
        server: server.into(),
        msg_size: 100,
        load: Some(load(rps)),
        server_cpu_us_per_req: Some(4.0),
        foreign_cpu_pct: Some(0.0),
        attempts: 1,
        error: None,
    }
}

#[test]
fn compare_json_shape_and_ratios() {
    let servers = [
        ServerSpec::shardline(shardline::Io::Uring),
        ServerSpec::shardline(shardline::Io::Epoll),
    ];
    let runs = vec![
        run("shardline-uring", 1, 100_000.0),
        run("shardline-epoll", 1, 90_000.0),
        run("shardline-uring", 2, 110_000.0),
        run("shardline-epoll", 2, 99_000.0),
        run("shardline-uring", 3, 120_000.0),
        run("shardline-epoll", 3, 108_000.0),
    ];
    let results = compare::summarize(&servers, &[100], 64, &runs);
    let out = CompareOutput {
        results,
        runs,
        skipped: vec![],
        setup: Setup {
            threads: 1,
            server_cpus: vec![0],
            client_cpus: vec![1],
            client_threads: 1,
            rounds: 3,
            warmup_s: 0.5,
            window_s: 2.0,
            client_io: "uring".into(),
        },
        machine: MachineInfo::read(),
    };
    let v = serde_json::to_value(&out).unwrap();
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(
            keys(row),
            set(&[
                "server",
                "msg_size",
                "conns",
                "rps",
                "p50_us",
                "p99_us",
                "server_cpu_us_per_req",
                "ratio"
            ])
        );
    }
    assert_eq!(rows[0]["server"], "shardline-uring");
    assert_eq!(rows[0]["rps"], 110_000.0);
    assert_eq!(rows[0]["ratio"], 1.0);
    assert_eq!(rows[1]["rps"], 99_000.0);
    assert_eq!(rows[1]["ratio"], 0.9);
    assert_eq!(rows[1]["msg_size"], 100);
    assert_eq!(rows[1]["conns"], 64);
    assert_eq!(rows[1]["server_cpu_us_per_req"], 4.0);
}

#[test]
fn ratio_is_null_without_the_baseline() {
    let servers = [ServerSpec::shardline(shardline::Io::Epoll)];
    let rows = compare::summarize(&servers, &[100], 64, &[run("shardline-epoll", 1, 5.0)]);
    assert_eq!(rows[0].ratio, None);
    let v = serde_json::to_value(&rows[0]).unwrap();
    assert!(v["ratio"].is_null());
}

#[test]
fn idle_json_shape() {
    let out = IdleOutput {
        results: vec![IdleRow {
            server: "shardline-uring".into(),
            conns: 10_000,
            rss_per_conn_bytes: 412.5,
        }],
        runs: vec![],
        skipped: vec![],
        machine: MachineInfo::read(),
    };
    let v = serde_json::to_value(&out).unwrap();
    assert_eq!(
        keys(&v["results"][0]),
        set(&["server", "conns", "rss_per_conn_bytes"])
    );
}

#[test]
fn mailbox_json_shape() {
    let out = MailboxOutput {
        results: vec![MailboxRow {
            implementation: "crossbeam-channel".into(),
            throughput_single_items_per_s: 1.0,
            throughput_batched_items_per_s: 2.0,
            wake_single_p50_us: 3.0,
            wake_single_p99_us: 4.0,
            wake_batched_p50_us: 5.0,
            wake_batched_p99_us: 6.0,
            fulls: None,
            doorbell_writes: None,
            stream_cpu_ns_per_msg: None,
            wake_cpu_us_per_msg: None,
        }],
        cpus: vec![0, 1],
        machine: MachineInfo::read(),
    };
    let v = serde_json::to_value(&out).unwrap();
    assert!(keys(&v["results"][0]).contains("wake_single_p99_us"));
    assert!(v["results"][0]["fulls"].is_null());
    assert!(keys(&v["results"][0]).contains("stream_cpu_ns_per_msg"));
    assert!(keys(&v["results"][0]).contains("wake_cpu_us_per_msg"));
}

/// A scale output as `scale` builds it: `cfg`'s plan on a 2-CPU machine.
fn scale_output_of(cfg: &ScaleConfig) -> ScaleOutput {
    let plan = scale::plan(cfg, &[0, 1]).expect("plans");
    let (note, capped) = scale::summary(cfg, &plan, 2);
    let mut results = Vec::new();
    for backend in ["uring", "epoll"] {
        for accept in cfg.accept.iter().map(|a| a.to_string()) {
            for setup in &plan.setups {
                let shards = setup.shards;
                results.push(ScalePoint {
                    backend: backend.into(),
                    accept: accept.clone(),
                    shards,
                    rps: 100_000.0 * shards as f64,
                    p50_us: 300.0,
                    p99_us: 900.0 / shards as f64,
                    server_cpu_us_per_req: Some(4.0),
                });
            }
        }
    }
    ScaleOutput {
        profile: cfg.profile.clone(),
        cpus_available: 2,
        requested_max_shards: None,
        max_shards: plan.setups.last().unwrap().shards,
        capped_by_machine: capped,
        note,
        shards_run: plan.setups.iter().map(|s| s.shards).collect(),
        shards_skipped: plan.skipped.clone(),
        server_cpus: plan.server_cpus.clone(),
        setups: plan.setups.clone(),
        setup_notes: plan.notes.clone(),
        backends: vec!["uring".into(), "epoll".into()],
        accept: cfg.accept.iter().map(|a| a.to_string()).collect(),
        rounds: cfg.rounds,
        warmup_s: cfg.warmup.as_secs_f64(),
        window_s: cfg.duration.as_secs_f64(),
        planned_runs: plan.runs,
        planned_wall_s: plan.wall.as_secs_f64(),
        planned_wall_max_s: plan.wall_max.as_secs_f64(),
        elapsed_s: 1.0,
        msg_size: cfg.msg_size,
        conns: plan.conns,
        results,
        failures: vec![],
        machine: MachineInfo::read(),
    }
}

fn scale_output() -> ScaleOutput {
    scale_output_of(&ScaleConfig::from_profile(
        PathBuf::new(),
        scale::Profile::full(),
    ))
}

#[test]
fn scale_json_says_when_capped() {
    let v = serde_json::to_value(scale_output()).unwrap();
    assert_eq!(v["capped_by_machine"], true);
    assert_eq!(v["max_shards"], 2);
    assert!(v["note"].as_str().unwrap().contains("capped"));
    assert_eq!(
        keys(&v["results"][0]),
        set(&[
            "backend",
            "accept",
            "shards",
            "rps",
            "p50_us",
            "p99_us",
            "server_cpu_us_per_req"
        ])
    );
}

#[test]
fn scale_json_records_counts_run_skipped_cpu_sets_and_client_threads() {
    let quick = ScaleConfig::from_profile(PathBuf::new(), scale::Profile::quick());
    let v = serde_json::to_value(scale_output_of(&quick)).unwrap();
    assert_eq!(v["profile"], "quick");
    assert_eq!(v["shards_run"], serde_json::json!([1, 2]));
    let skipped: Vec<u64> = v["shards_skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["shards"].as_u64().unwrap())
        .collect();
    assert_eq!(skipped, [4, 8, 12]);
    for s in v["shards_skipped"].as_array().unwrap() {
        assert!(s["reason"].as_str().unwrap().contains("server CPU"), "{s}");
    }
    assert_eq!(v["server_cpus"], serde_json::json!([0, 1]));
    assert_eq!(
        keys(&v["setups"][0]),
        set(&[
            "shards",
            "server_cpus",
            "client_cpus",
            "client_pinned",
            "client_threads",
            "client_shares_server_cpus"
        ])
    );
    assert_eq!(v["setups"][0]["client_cpus"], serde_json::json!([1]));
    assert_eq!(v["setups"][1]["client_pinned"], false);
    assert!(v["setup_notes"][0].as_str().unwrap().contains("unpinned"));
    assert_eq!(v["planned_runs"], 4);
    assert!(v["planned_wall_s"].as_f64().unwrap() > 0.0);
    assert!(v["note"].as_str().unwrap().contains("skipped 4, 8, 12"));
}

#[test]
fn scale_svg_is_well_formed_and_names_both_backends() {
    let path = std::env::temp_dir().join(format!("scale-{}.svg", std::process::id()));
    scale::plot(&scale_output(), &path).expect("plot drawn");
    let text = std::fs::read_to_string(&path).expect("SVG written");
    let _ = std::fs::remove_file(&path);
    let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect();
    for series in [
        "uring/reuseport",
        "epoll/reuseport",
        "uring/handoff",
        "epoll/exclusive",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(series)),
            "{series} missing from the legend: {texts:?}"
        );
    }
    assert!(texts.iter().any(|t| t.contains("capped at 2")));
}
