//! `proxy` end to end at toy size (no timing asserted): wrk through every proxy
//! that is installed (shardline-proxy from target/release, HAProxy, nginx) to the
//! nginx backend, plus the direct run. Skips cleanly when wrk or nginx is absent,
//! and leaves out each proxy that is absent.

use std::{path::PathBuf, sync::Mutex};

use shardline::Io;
use shardline_bench::{
    proxy::{self, Proxy, ProxyConfig},
    servers,
};

/// One benchmark at a time in this process: they share its reaped-children CPU
/// account and its scratch directory names, and each checks that none is left.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn proxy_runs_end_to_end_when_the_peers_are_installed() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for (what, exe) in [("wrk", servers::WRK_EXE), ("nginx", servers::NGINX_EXE)] {
        if !PathBuf::from(exe).is_file() {
            eprintln!("skipping: no {exe} ({what}; apt-get install {what}, or ./x bench-deps)");
            return;
        }
    }
    let mut proxies = vec![Proxy::Direct, Proxy::Nginx];
    if PathBuf::from(servers::HAPROXY_EXE).is_file() {
        proxies.push(Proxy::Haproxy);
    } else {
        eprintln!("leaving out haproxy: no {}", servers::HAPROXY_EXE);
    }
    if servers::default_proxy_exe().is_file() {
        proxies.push(Proxy::Shardline(Io::Uring));
        proxies.push(Proxy::Shardline(Io::Epoll));
    } else {
        eprintln!(
            "leaving out shardline-proxy: no {} (cargo build --release -p shardline-proxy)",
            servers::default_proxy_exe().display()
        );
    }
    let cfg = ProxyConfig {
        proxies: proxies.clone(),
        proxy_exe: servers::default_proxy_exe(),
        build_proxy: false,
        nginx_exe: servers::NGINX_EXE.into(),
        haproxy_exe: servers::HAPROXY_EXE.into(),
        wrk_exe: servers::WRK_EXE.into(),
        workers: 1,
        conns: 8,
        wrk_threads: 1,
        rounds: 1,
        warmup_s: 0,
        duration_s: 1,
        wrk_timeout_s: 2,
        proxy_cpus: Vec::new(),
        client_cpus: Vec::new(),
        backend_cpus: Vec::new(),
        max_foreign_pct: 1000.0,
        retries: 0,
    };
    let out = proxy::run(&cfg).expect("proxy bench runs");
    assert_eq!(out.runs.len(), proxies.len(), "{:#?}", out.runs);
    for run in &out.runs {
        let wrk = run.wrk.as_ref().unwrap_or_else(|| panic!("{run:#?}"));
        assert!(wrk.requests > 0, "{run:#?}");
        assert_eq!(wrk.errors(), 0, "{run:#?}");
        let lat = wrk.latency.expect("--latency was passed");
        assert!(lat.p99_us >= lat.p50_us, "{run:#?}");
        if run.proxy == "direct" {
            assert!(run.req_per_proxy_cpu_s.is_none(), "{run:#?}");
        } else {
            assert!(run.proxy_cpu_s.is_some(), "{run:#?}");
        }
        assert!(run.backend_cpu_pct.is_some(), "{run:#?}");
    }
    assert_eq!(out.results.len(), proxies.len(), "{:#?}", out.results);
    for row in out.results.iter().filter(|r| r.proxy != "direct") {
        assert!(row.added_p99_us.is_some(), "{row:#?}");
        assert!(row.cpu_efficiency_vs_best_peer.is_some(), "{row:#?}");
    }
    let json = serde_json::to_value(&out).expect("serializes");
    for key in ["results", "verdicts", "runs", "skipped", "setup", "machine"] {
        assert!(json.get(key).is_some(), "{key} missing");
    }
    assert!(json["setup"]["wrk_command"]
        .as_str()
        .unwrap()
        .starts_with("wrk -t1 -c8 -d1s"));
    // Every child is gone: no scratch directory of this process is left.
    let mine = format!("shardline-bench-nginx-backend-{}-", std::process::id());
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&mine))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `proxy --tls` end to end at toy size (no timing asserted): both modes through
/// every installed peer terminating TLS; shardline-proxy too when the binary in
/// target/release takes --tls-cert, else it must be reported as skipped.
#[test]
fn proxy_tls_runs_end_to_end_when_the_peers_are_installed() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for (what, exe) in [("wrk", servers::WRK_EXE), ("nginx", servers::NGINX_EXE)] {
        if !PathBuf::from(exe).is_file() {
            eprintln!("skipping: no {exe} ({what}; apt-get install {what}, or ./x bench-deps)");
            return;
        }
    }
    let mut proxies = vec![Proxy::Direct, Proxy::Nginx];
    if PathBuf::from(servers::HAPROXY_EXE).is_file() {
        proxies.push(Proxy::Haproxy);
    }
    let shardline = servers::default_proxy_exe().is_file();
    if shardline {
        proxies.push(Proxy::Shardline(Io::Epoll));
    }
    let cfg = ProxyConfig {
        proxies: proxies.clone(),
        proxy_exe: servers::default_proxy_exe(),
        build_proxy: false,
        nginx_exe: servers::NGINX_EXE.into(),
        haproxy_exe: servers::HAPROXY_EXE.into(),
        wrk_exe: servers::WRK_EXE.into(),
        workers: 1,
        conns: 4,
        wrk_threads: 1,
        rounds: 1,
        warmup_s: 0,
        duration_s: 1,
        wrk_timeout_s: 2,
        proxy_cpus: Vec::new(),
        client_cpus: Vec::new(),
        backend_cpus: Vec::new(),
        max_foreign_pct: 1000.0,
        retries: 0,
    };
    let out = proxy::run_tls(&cfg, 4).expect("proxy --tls runs");
    assert!(
        out.skipped.iter().any(|s| s.starts_with("direct:")),
        "{:?}",
        out.skipped
    );
    let tls_capable = shardline && servers::proxy_supports_tls(&cfg.proxy_exe).is_ok();
    if shardline && !tls_capable {
        assert!(
            out.skipped
                .iter()
                .any(|s| s.starts_with("shardline-epoll:") && s.contains("--tls-cert")),
            "{:?}",
            out.skipped
        );
    }
    let measured = proxies.len() - 1 - usize::from(shardline && !tls_capable);
    assert_eq!(out.runs.len(), 2 * measured, "{:#?}", out.runs);
    for run in &out.runs {
        let wrk = run.wrk.as_ref().unwrap_or_else(|| panic!("{run:#?}"));
        assert!(wrk.requests > 0, "{run:#?}");
        assert_eq!(wrk.errors(), 0, "{run:#?}");
        let tls = run.tls.as_ref().expect("TLS runs say what they negotiated");
        assert_eq!(
            tls.cipher_suite.as_deref(),
            Some(proxy::CIPHER_SUITE),
            "{run:#?}"
        );
        assert_eq!(tls.resumed_handshakes, 0, "{run:#?}");
        if run.mode.as_deref() == Some("handshake") {
            assert_eq!(tls.full_handshakes, wrk.requests, "{run:#?}");
        }
        assert!(run.proxy_cpu_s.is_some(), "{run:#?}");
    }
    assert_eq!(out.modes.len(), 2);
    for m in &out.modes {
        assert_eq!(m.results.len(), measured, "{m:#?}");
    }
    let json = serde_json::to_value(&out).expect("serializes");
    for key in ["modes", "runs", "skipped", "setup", "tls", "machine"] {
        assert!(json.get(key).is_some(), "{key} missing");
    }
    // Every child is gone and the certificate removed: no scratch directory of
    // this process is left.
    let me = std::process::id();
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&format!("shardline-bench-nginx-backend-{me}-"))
                || name == format!("shardline-bench-tls-{me}")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
