//! `chat` end to end at toy sizes (no timing asserted): against shardline-chat
//! started in this process on both backends at 2 shards, and, when they are
//! installed, against the release shardline-chat binary, ngircd and InspIRCd as
//! child servers; history on against off with the CHATHISTORY probe, in process
//! and (when the release binary is there) as child servers.

use std::{path::PathBuf, time::Duration};

use shardline::{Io, Server};
use shardline_bench::{
    chat::{self, ChatConfig, ChatServer, ProbeSpec, Scenario, Shape},
    servers,
};

fn toy() -> Scenario {
    Scenario {
        rooms: 2,
        room_size: 6,
        burst_senders: 2,
        burst_messages: 300,
        paced_senders: 2,
        paced_rate: 100.0,
        paced_duration_s: 0.3,
        text_size: 48,
    }
}

fn config(servers: Vec<ChatServer>) -> ChatConfig {
    ChatConfig {
        servers,
        chat_exe: servers::default_chat_exe(),
        build_chat: false,
        chat_config: None,
        chat_history: true,
        cluster_catchup: None,
        ngircd_exe: PathBuf::from(servers::NGIRCD_EXE),
        inspircd_exe: PathBuf::from(servers::INSPIRCD_EXE),
        shards: 2,
        server_cpus: Vec::new(),
        client_cpus: Vec::new(),
        rounds: 1,
        shapes: vec![Shape::Burst, Shape::Paced],
        scenario: toy(),
        timeout: Duration::from_secs(20),
        max_foreign_pct: 10.0,
        retries: 0,
        probe: None,
    }
}

fn assert_complete(out: &chat::ChatOutput, servers: usize) {
    assert_eq!(out.runs.len(), servers * 2, "{out:#?}");
    for run in &out.runs {
        let load = run.load.as_ref().unwrap_or_else(|| panic!("{run:#?}"));
        assert!(load.complete, "{run:#?}");
        assert_eq!(load.clients, 12);
        // Each room: each sender's messages reach the 5 other members.
        let per_sender = match load.shape {
            Shape::Burst => 300,
            Shape::Paced => 30,
        };
        assert_eq!(load.messages_sent, 2 * 2 * per_sender, "{run:#?}");
        assert_eq!(load.expected_deliveries, 2 * 2 * per_sender * 5, "{run:#?}");
        assert_eq!(load.deliveries, load.expected_deliveries, "{run:#?}");
        assert!(load.latency.p99_us >= load.latency.p50_us, "{run:#?}");
    }
    assert_eq!(out.results.len(), servers * 2, "{:#?}", out.results);
    let json = serde_json::to_value(out).expect("serializes");
    for key in ["results", "runs", "skipped", "setup", "machine"] {
        assert!(json.get(key).is_some(), "{key} missing");
    }
}

#[test]
fn chat_runs_against_shardline_chat_in_process() {
    for io in [Io::Uring, Io::Epoll] {
        let builder = Server::builder()
            .io(io)
            .shards(2)
            .pin(false)
            .listen("127.0.0.1:0".parse().expect("literal address"))
            .shutdown_timeout(Duration::from_secs(5));
        // Flood control off where the server has it (older ones refuse the
        // section); history in a scratch directory.
        let data = std::env::temp_dir().join(format!(
            "shardline-bench-chat-test-{io}-{}",
            std::process::id()
        ));
        let mut chat_config =
            shardline_chat::Config::from_toml("[flood]\nenabled = false\n").unwrap_or_default();
        chat_config.storage.dir = Some(data.clone());
        let server = shardline_chat::build(builder, chat_config)
            .expect("valid config")
            .start()
            .expect("server starts");
        let addr = server.local_addrs()[0];
        let out = chat::run(&config(vec![ChatServer::External {
            name: format!("in-process-{io}"),
            addr,
            pid: None,
        }]))
        .expect("chat runs");
        assert_complete(&out, 1);
        server.shutdown().expect("clean shutdown");
        let _ = std::fs::remove_dir_all(&data);
    }
}

#[test]
fn chat_runs_child_servers_when_installed() {
    let mut wanted = Vec::new();
    if servers::default_chat_exe().is_file() {
        wanted.push(ChatServer::Shardline(Io::Epoll));
    } else {
        eprintln!(
            "skipping shardline-chat as a child: no {} (cargo build --release -p shardline-chat)",
            servers::default_chat_exe().display()
        );
    }
    if PathBuf::from(servers::NGIRCD_EXE).is_file() {
        wanted.push(ChatServer::Ngircd);
    } else {
        eprintln!("skipping ngircd: not installed (apt-get install ngircd)");
    }
    if PathBuf::from(servers::INSPIRCD_EXE).is_file() {
        wanted.push(ChatServer::Inspircd);
    } else {
        eprintln!("skipping inspircd: not installed (apt-get install inspircd)");
    }
    if wanted.is_empty() {
        return;
    }
    let n = wanted.len();
    let out = chat::run(&config(wanted)).expect("chat runs");
    assert_complete(&out, n);
    for run in &out.runs {
        assert!(run.server_cpu_us_per_delivery.is_some(), "{run:#?}");
    }
}

#[test]
fn a_missing_inspircd_is_skipped_with_a_message() {
    let mut cfg = config(vec![ChatServer::Inspircd]);
    cfg.inspircd_exe = PathBuf::from("/nonexistent/inspircd");
    let err = chat::run(&cfg).unwrap_err().to_string();
    assert!(err.contains("apt-get install inspircd"), "{err}");
}

#[test]
fn a_missing_ngircd_is_skipped_with_a_message() {
    let mut cfg = config(vec![ChatServer::Ngircd]);
    cfg.ngircd_exe = PathBuf::from("/nonexistent/ngircd");
    let err = chat::run(&cfg).unwrap_err().to_string();
    assert!(err.contains("apt-get install ngircd"), "{err}");
}

/// shardline-chat in this process (epoll, 2 shards), with history in a scratch
/// directory or without; and that directory.
fn in_process_chat(
    history: bool,
    name: &str,
) -> (shardline::RunningServer<shardline_chat::ChatMsg>, PathBuf) {
    let builder = Server::builder()
        .io(Io::Epoll)
        .shards(2)
        .pin(false)
        .listen("127.0.0.1:0".parse().expect("literal address"))
        .shutdown_timeout(Duration::from_secs(5));
    let data = std::env::temp_dir().join(format!(
        "shardline-bench-chat-test-{name}-{}",
        std::process::id()
    ));
    let mut chat_config =
        shardline_chat::Config::from_toml("[flood]\nenabled = false\n").unwrap_or_default();
    chat_config.storage.dir = Some(data.clone());
    chat_config.history.enabled = history;
    let server = shardline_chat::build(builder, chat_config)
        .expect("valid config")
        .start()
        .expect("server starts");
    (server, data)
}

/// History on against off: paced only, long enough (200 messages per room) for
/// full answers of 100.
fn history_config(servers: Vec<ChatServer>) -> ChatConfig {
    let mut cfg = config(servers);
    cfg.shapes = vec![Shape::Paced];
    cfg.scenario.paced_duration_s = 1.0;
    cfg.probe = Some(ProbeSpec {
        rate: 50.0,
        limit: 100,
    });
    cfg
}

/// What both comparisons check: complete loads (the probe's reads are not
/// deliveries), the probe asking only where history is on, sane answers.
fn assert_history_compare(
    out: &chat::ChatOutput,
    with: &str,
    without: &str,
) -> chat::HistoryVerdict {
    assert_eq!(out.runs.len(), 2, "{out:#?}");
    for run in &out.runs {
        let load = run.load.as_ref().unwrap_or_else(|| panic!("{run:#?}"));
        assert!(load.complete, "{run:#?}");
        // 2 rooms × 2 senders × 100 messages, each to the 5 other members.
        assert_eq!(load.messages_sent, 400, "{run:#?}");
        assert_eq!(load.deliveries, 400 * 5, "{run:#?}");
        assert_eq!(load.unexpected_lines, 0, "{run:#?}");
        let probe = run.probe.as_ref().unwrap_or_else(|| panic!("{run:#?}"));
        assert!(probe.problems.is_empty(), "{probe:#?}");
        // A member of room 0: it hears the room's 200 messages either way.
        assert_eq!(probe.live_messages, 200, "{probe:#?}");
        if run.server == with {
            assert!(probe.chathistory, "{probe:#?}");
            assert_eq!(probe.max_request, Some(100), "{probe:#?}");
            assert!(probe.requests >= 10, "{probe:#?}");
            assert_eq!(probe.answers, probe.requests, "{probe:#?}");
            assert!(probe.full_answers >= 1, "{probe:#?}");
            assert_eq!(probe.bad_answers, 0, "{probe:#?}");
            assert!(probe.latency.p50_us > 0.0, "{probe:#?}");
            assert!(probe.latency.p99_us >= probe.latency.p50_us, "{probe:#?}");
            assert!(probe.latency.max_us >= probe.latency.p99_us, "{probe:#?}");
        } else {
            assert_eq!(run.server, without);
            assert!(!probe.chathistory, "{probe:#?}");
            assert_eq!(probe.requests, 0, "{probe:#?}");
        }
    }
    assert_eq!(out.history.len(), 1, "{:#?}", out.history);
    let v = out.history[0].clone();
    assert_eq!((v.server.as_str(), v.peer.as_str()), (with, without));
    assert_eq!(v.shape, Shape::Paced);
    let p = v.probe.as_ref().expect("the probe ran");
    assert_eq!(p.runs, 1);
    assert!(p.answers >= 10 && p.bad_answers == 0, "{p:#?}");
    assert!(
        p.messages_per_answer > 0.0 && p.messages_per_answer <= 100.0,
        "{p:#?}"
    );
    assert!(p.latency.p99_us > 0.0, "{p:#?}");
    let text = chat::render_history(&out.history);
    assert!(text.contains("CHATHISTORY LATEST"), "{text}");
    assert!(text.contains(&format!("{with} ")), "{text}");
    let json = serde_json::to_value(out).expect("serializes");
    assert!(
        json["history"][0]["probe"]["latency"]["p99_us"].is_number(),
        "{json}"
    );
    assert!(json["runs"][0]["probe"].is_object(), "{json}");
    v
}

#[test]
fn history_compare_in_process() {
    let (with, with_dir) = in_process_chat(true, "history");
    let (without, without_dir) = in_process_chat(false, "nohistory");
    let servers = vec![
        ChatServer::External {
            name: "in-process".into(),
            addr: with.local_addrs()[0],
            pid: None,
        },
        ChatServer::External {
            name: format!("in-process{}", chat::NO_HISTORY_SUFFIX),
            addr: without.local_addrs()[0],
            pid: None,
        },
    ];
    let out = chat::run(&history_config(servers)).expect("chat runs");
    let v = assert_history_compare(&out, "in-process", "in-process-nohistory");
    // No process to read CPU time from: no ratio, so no verdict.
    assert_eq!(v.cpu_ratio, None);
    assert!(!v.meets_target);
    with.shutdown().expect("clean shutdown");
    without.shutdown().expect("clean shutdown");
    let _ = std::fs::remove_dir_all(&with_dir);
    let _ = std::fs::remove_dir_all(&without_dir);
}

#[test]
fn history_compare_child_servers_when_installed() {
    if !servers::default_chat_exe().is_file() {
        eprintln!(
            "skipping: no {} (cargo build --release -p shardline-chat)",
            servers::default_chat_exe().display()
        );
        return;
    }
    let cfg = history_config(vec![
        ChatServer::Shardline(Io::Epoll),
        ChatServer::ShardlineNoHistory(Io::Epoll),
    ]);
    let out = chat::run(&cfg).expect("chat runs");
    let v = assert_history_compare(&out, "shardline-epoll", "shardline-epoll-nohistory");
    assert!(out.setup.chat_history && out.setup.probe.is_some());
    let ratio = v.cpu_ratio.expect("both servers' CPU was read");
    assert!(ratio.is_finite() && ratio > 0.0, "{v:#?}");
    assert_eq!(v.round_cpu_ratios.len(), 1, "{v:#?}");
    assert!(v.cpu_us_per_delivery.is_some() && v.peer_cpu_us_per_delivery.is_some());
}
