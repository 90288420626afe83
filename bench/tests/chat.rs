//! `chat` end to end at toy sizes (no timing asserted): against shardline-chat
//! started in this process on both backends at 2 shards, and, when they are
//! installed, against the release shardline-chat binary and ngircd as child servers.

use std::{path::PathBuf, time::Duration};

use shardline::{Io, Server};
use shardline_bench::{
    chat::{self, ChatConfig, ChatServer, Scenario, Shape},
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
        ngircd_exe: PathBuf::from(servers::NGIRCD_EXE),
        shards: 2,
        server_cpus: Vec::new(),
        client_cpus: Vec::new(),
        rounds: 1,
        shapes: vec![Shape::Burst, Shape::Paced],
        scenario: toy(),
        timeout: Duration::from_secs(20),
        max_foreign_pct: 10.0,
        retries: 0,
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
fn a_missing_ngircd_is_skipped_with_a_message() {
    let mut cfg = config(vec![ChatServer::Ngircd]);
    cfg.ngircd_exe = PathBuf::from("/nonexistent/ngircd");
    let err = chat::run(&cfg).unwrap_err().to_string();
    assert!(err.contains("apt-get install ngircd"), "{err}");
}
