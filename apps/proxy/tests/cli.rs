//! The binary: `--help`, clear errors for bad configurations, `--print-plan`, and
//! the zero-config quick start serving a request end to end (then SIGTERM).

mod common;

use std::{
    net::TcpStream,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{free_addr, get, Answer, HttpBackend, HttpClient, WAIT};
use shardline::Io;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardline-proxy"))
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = bin().args(args).output().expect("run shardline-proxy");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn help_lists_the_flags() {
    let (ok, out, _) = run(&["--help"]);
    assert!(ok);
    for flag in [
        "--config",
        "--listen",
        "--backend",
        "--mode",
        "--shards",
        "--io",
        "--accept",
        "--topology",
        "--print-plan",
        "--admin",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}:\n{out}");
    }
}

#[test]
fn bad_configurations_are_explained() {
    let (ok, _, err) = run(&["--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("no backend"), "{err}");
    let (ok, _, err) = run(&["--config", "/nonexistent/proxy.toml"]);
    assert!(!ok);
    assert!(err.contains("cannot read /nonexistent/proxy.toml"), "{err}");
    let (ok, _, err) = run(&["--config", "x.toml", "--backend", "127.0.0.1:1"]);
    assert!(!ok);
    assert!(err.contains("cannot be used with"), "{err}");
    let (ok, _, err) = run(&["--backend", "127.0.0.1:1", "--mode", "udp"]);
    assert!(!ok);
    assert!(err.contains("udp"), "{err}");
    let dir = std::env::temp_dir().join(format!("proxy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"missing\"\n",
    )
    .expect("write");
    let (ok, _, err) = run(&["--config", path.to_str().expect("utf-8 path")]);
    assert!(!ok);
    assert!(
        err.contains("\"missing\"") && err.contains("not defined"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn print_plan_exits_without_serving() {
    let (ok, out, err) = run(&[
        "--backend",
        "127.0.0.1:1",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--topology",
        "pack:1 core:2 pu:1",
        "--print-plan",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("shard"), "{out}");
}

fn quick_start_proxies_and_stops_on_sigterm(io: Io) {
    let io = common::io_name(io);
    let a = HttpBackend::start("a", Answer::Info);
    let b = HttpBackend::start("b", Answer::Info);
    let listen = free_addr();
    let mut child = bin()
        .args([
            "--listen",
            &listen.to_string(),
            "--backend",
            &a.addr().to_string(),
            "--backend",
            &b.addr().to_string(),
            "--shards",
            "1",
            "--io",
            io,
            "--no-pin",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + WAIT;
    let stream = loop {
        match TcpStream::connect(listen) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let _ = child.kill();
                panic!("{io}: proxy never listened: {e}");
            }
        }
    };
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut c = HttpClient::new(stream);
    let mut names = Vec::new();
    for i in 0..4 {
        c.send(&get(&format!("/{i}")));
        let r = c.response(false);
        assert_eq!(r.status, 200, "{io}");
        names.push(r.header("X-Backend").unwrap_or("").to_string());
    }
    assert_eq!(
        names.iter().filter(|n| *n == "a").count(),
        2,
        "{io}: {names:?}"
    );
    drop(c);
    let status = terminate(&mut child, io);
    assert!(status.success(), "{io}: exit {status:?}");
}

/// Sends `sig` (e.g. "-HUP") to `child`.
fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

/// SIGTERM, then the exit status (killed, and the test failed, if the proxy
/// is still running after `WAIT`).
fn terminate(
    child: &mut std::process::Child,
    label: impl std::fmt::Display,
) -> std::process::ExitStatus {
    signal(child, "-TERM");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{label}: proxy did not stop on SIGTERM");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One request on a new connection: the answering backend's name.
fn which_backend(addr: std::net::SocketAddr) -> String {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut c = HttpClient::new(s);
    c.send(&get("/"));
    let r = c.response(false);
    assert_eq!(r.status, 200);
    r.header("X-Backend").unwrap_or("").to_string()
}

fn sighup_reloads_the_config_file_and_ignores_an_invalid_one(io: Io) {
    let a = HttpBackend::start("a", Answer::Info);
    let b = HttpBackend::start("b", Answer::Info);
    let listen = free_addr();
    let dir = std::env::temp_dir().join(format!("proxy-cli-hup-{}-{io}", std::process::id()));
    let io = common::io_name(io);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("proxy.toml");
    let config = |backend: std::net::SocketAddr| {
        format!(
            "[[listener]]\naddress = \"{listen}\"\nmode = \"http\"\npool = \"p\"\n\
             [pool.p]\nbackends = [{{ address = \"{backend}\" }}]\n"
        )
    };
    std::fs::write(&path, config(a.addr())).expect("write");
    let mut child = bin()
        .args(["--config", path.to_str().expect("utf-8 path")])
        .args(["--shards", "2", "--io", io, "--no-pin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(listen).is_err() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("proxy never listened");
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(which_backend(listen), "a");
    std::fs::write(&path, config(b.addr())).expect("write");
    signal(&child, "-HUP");
    let deadline = Instant::now() + WAIT;
    while which_backend(listen) != "b" {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("SIGHUP did not switch to the new backend");
        }
        thread::sleep(Duration::from_millis(20));
    }
    // An invalid file: the proxy keeps serving with the last good one.
    std::fs::write(&path, "[[listener]]\nmode = \"http\"\n").expect("write");
    signal(&child, "-HUP");
    thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        assert_eq!(which_backend(listen), "b");
    }
    assert!(child.try_wait().expect("wait").is_none(), "still running");
    let status = terminate(&mut child, "reload");
    assert!(status.success(), "exit {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A consistent-hash pool "web" over `backends`, each of weight `weight`.
fn weighted_config(
    listen: std::net::SocketAddr,
    backends: &[std::net::SocketAddr],
    weight: u64,
) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\", weight = {weight} }}"))
        .collect();
    format!(
        "[[listener]]\naddress = \"{listen}\"\nmode = \"http\"\npool = \"web\"\n\
         [pool.web]\nbalance = \"consistent-hash\"\nbackends = [{}]\n",
        list.join(", ")
    )
}

fn a_weight_over_the_limit_is_refused_at_start(io: Io) {
    let dir = std::env::temp_dir().join(format!("proxy-cli-weight-{}-{io}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("proxy.toml");
    let backend: std::net::SocketAddr = "127.0.0.1:9000".parse().expect("literal");
    std::fs::write(
        &path,
        weighted_config(free_addr(), &[backend], 4_294_967_295),
    )
    .expect("write");
    let io = common::io_name(io);
    let started = Instant::now();
    let out = bin()
        .args(["--config", path.to_str().expect("utf-8 path")])
        .args(["--shards", "2", "--io", io, "--no-pin"])
        .output()
        .expect("run shardline-proxy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{io}: accepted: {err}");
    // Refused by validation, not killed by the allocator.
    assert_eq!(out.status.code(), Some(1), "{io}: {err}");
    assert!(
        err.contains(
            "pool \"web\": backend 127.0.0.1:9000: weight 4294967295 is over the limit of 256"
        ),
        "{io}: {err}"
    );
    assert!(started.elapsed() < WAIT, "{io}: refused at once");
    let _ = std::fs::remove_dir_all(&dir);
}

fn sighup_with_a_weight_over_the_limit_is_refused_and_logged(io: Io) {
    let io = common::io_name(io);
    let a = HttpBackend::start("a", Answer::Info);
    let b = HttpBackend::start("b", Answer::Info);
    let listen = free_addr();
    let dir =
        std::env::temp_dir().join(format!("proxy-cli-hup-weight-{}-{io}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("proxy.toml");
    let log_path = dir.join("stderr.log");
    std::fs::write(&path, weighted_config(listen, &[a.addr(), b.addr()], 256)).expect("write");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = bin()
        .args(["--config", path.to_str().expect("utf-8 path")])
        .args(["--shards", "2", "--io", io, "--no-pin"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(log.try_clone().expect("clone")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(listen).is_err() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{io}: proxy never listened");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let before: Vec<String> = (0..6).map(|_| which_backend(listen)).collect();
    // The bad file names only a new backend, so serving it would show.
    let c = HttpBackend::start("c", Answer::Info);
    std::fs::write(&path, weighted_config(listen, &[c.addr()], 4_294_967_295)).expect("write");
    signal(&child, "-HUP");
    let want = format!(
        "backend {}: weight 4294967295 is over the limit of 256",
        c.addr()
    );
    let logged = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + WAIT;
    while !logged().contains(&want) {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{io}: the refusal was not logged:\n{}", logged());
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(logged().contains("reload refused"), "{io}: {}", logged());
    for _ in 0..6 {
        let name = which_backend(listen);
        assert!(
            name == "a" || name == "b",
            "{io}: served by {name:?} after a refused reload"
        );
    }
    assert_eq!(c.traffic(), 0, "{io}: the refused pool got traffic");
    assert!(
        before.iter().all(|n| n == "a" || n == "b"),
        "{io}: {before:?}"
    );
    assert!(
        child.try_wait().expect("wait").is_none(),
        "{io}: still running"
    );
    let status = terminate(&mut child, io);
    assert!(status.success(), "{io}: exit {status:?}\n{}", logged());
    let _ = std::fs::remove_dir_all(&dir);
}

shardline::per_backend! {
    sighup_reloads_the_config_file_and_ignores_an_invalid_one => sighup_reloads_the_config_file_and_ignores_an_invalid_one;
    quick_start_proxies_and_stops_on_sigterm => quick_start_proxies_and_stops_on_sigterm;
    a_weight_over_the_limit_is_refused_at_start => a_weight_over_the_limit_is_refused_at_start;
    sighup_with_a_weight_over_the_limit_is_refused_and_logged => sighup_with_a_weight_over_the_limit_is_refused_and_logged;
}
