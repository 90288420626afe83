//! `proxy --tls`: the same proxies terminating TLS 1.3 with one certificate made
//! for the run (ECDSA P-256, self-signed), in front of the same plaintext nginx
//! backend, in two modes interleaved over rounds:
//!
//! - `keep-alive`: wrk over https (`--conns` connections, kept alive): requests
//!   per proxy CPU-second, p99;
//! - `handshake`: one new TLS connection per request, full handshake each (see
//!   [`super::tls`] for why not wrk): handshakes per proxy CPU-second, p99 from
//!   `connect()` to the response's last byte.
//!
//! Ratios are against the better peer (HAProxy or nginx) of the same run.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::bail;
use serde::Serialize;

use super::{
    best_peer,
    harness::{measure_load, run_wrk_url, start_backend, tool_versions, wrk_args_url, Load},
    results::{describe, fmt_opt},
    summarize,
    tls::{
        check_forwarding_tls, client_config, handshake_load, HandshakeLoad, TlsMaterial, TlsSeen,
        CIPHER_SUITE, KX_GROUP, SERVER_NAME,
    },
    Proxy, ProxyConfig, ProxyRow, ProxyRun, ProxySetup,
};
use crate::{
    experiment::{self, Quiet},
    machine::MachineInfo,
    report::{self, round},
    servers::{self, NginxRole, ServerProc, TlsFiles},
};

/// The two measurements of `proxy --tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// wrk over https, connections kept alive.
    KeepAlive,
    /// A new connection, with a full handshake, for every request.
    Handshake,
}

impl TlsMode {
    /// Both, in run order.
    pub const ALL: [TlsMode; 2] = [TlsMode::KeepAlive, TlsMode::Handshake];

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::KeepAlive => "keep-alive",
            TlsMode::Handshake => "handshake",
        }
    }
}

/// One proxy in one mode: medians over rounds (a [`ProxyRow`]; in the handshake
/// mode its requests are handshakes), the p99 against the better peer's, and what
/// the TLS connections negotiated.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TlsRow {
    /// The medians; `cpu_efficiency_vs_best_peer` and `rps_vs_best_peer` are
    /// against the better peer of this mode.
    #[serde(flatten)]
    pub row: ProxyRow,
    /// p99_us ÷ the better peer's p99_us.
    pub p99_vs_best_peer: Option<f64>,
    /// Protocol seen: by the handshake load, or in the keep-alive mode by the
    /// forwarding check (wrk offers the same and reports nothing of TLS).
    pub protocol: Option<String>,
    /// Cipher suite.
    pub cipher_suite: Option<String>,
    /// Key exchange group.
    pub kx_group: Option<String>,
    /// Handshake mode: full handshakes over every run.
    pub full_handshakes: u64,
    /// Handshake mode: resumed handshakes over every run (0 expected).
    pub resumed_handshakes: u64,
    /// Handshake mode: full handshakes after a HelloRetryRequest.
    pub hello_retries: u64,
}

/// One mode's results.
#[derive(Debug, Clone, Serialize)]
pub struct TlsModeResult {
    /// `keep-alive` or `handshake`.
    pub mode: TlsMode,
    /// The better peer of this mode (most requests per proxy CPU-second).
    pub best_peer: Option<String>,
    /// One row per proxy.
    pub results: Vec<TlsRow>,
}

/// How the TLS side was set up, echoed into the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct TlsSetup {
    /// The certificate every proxy serves.
    pub certificate: String,
    /// What every client offers (and so what is negotiated).
    pub protocol: String,
    /// The one cipher suite offered.
    pub cipher_suite: String,
    /// The one key exchange group offered.
    pub kx_group: String,
    /// The keep-alive mode's wrk command (with its OpenSSL configuration).
    pub keepalive_command: String,
    /// The handshake mode's client.
    pub handshake_client: String,
    /// Connections in flight in the handshake mode.
    pub handshake_conns: usize,
    /// How shardline-proxy is started (besides the shard flags).
    pub shardline_proxy_args: String,
}

/// What `proxy --tls --json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyTlsOutput {
    /// Per mode, medians per proxy and ratios.
    pub modes: Vec<TlsModeResult>,
    /// Every run (`mode` says which).
    pub runs: Vec<ProxyRun>,
    /// Proxies left out, and why.
    pub skipped: Vec<String>,
    /// The proxies, wrk and the rounds.
    pub setup: ProxySetup,
    /// The TLS side.
    pub tls: TlsSetup,
    /// Where they ran.
    pub machine: MachineInfo,
}

/// A directory removed on drop (the run's certificate and key).
#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_tls_proxy(
    cfg: &ProxyConfig,
    proxy: Proxy,
    backend: std::net::SocketAddr,
    tls: &TlsFiles,
) -> anyhow::Result<ServerProc> {
    let w = cfg.workers;
    match proxy {
        Proxy::Direct => bail!("direct has no TLS listener"),
        Proxy::Shardline(io) => {
            servers::start_shardline_proxy_tls(&cfg.proxy_exe, io, backend, w, &cfg.proxy_cpus, tls)
        }
        Proxy::Haproxy => servers::start_haproxy_tls(
            &cfg.haproxy_exe,
            backend,
            w,
            &cfg.proxy_cpus,
            cfg.conns,
            tls,
        ),
        Proxy::Nginx => servers::start_nginx_tls(
            &cfg.nginx_exe,
            "nginx-proxy",
            NginxRole::Proxy {
                upstream: backend,
                keepalive: cfg.conns,
            },
            w,
            &cfg.proxy_cpus,
            cfg.conns,
            tls,
        ),
    }
}

/// Which of `cfg.proxies` run with TLS, and notes on the others (direct has no
/// TLS; a missing HAProxy; a shardline-proxy without `--tls-cert`).
fn tls_proxies(cfg: &ProxyConfig) -> (Vec<Proxy>, Vec<String>) {
    let mut skipped = Vec::new();
    let mut proxies = Vec::new();
    let mut shardline_ok: Option<Result<(), String>> = None;
    for &p in &cfg.proxies {
        let missing = match p {
            Proxy::Direct => Some(
                "no TLS run: the backend speaks plain HTTP (the latency a proxy adds is what the plain `proxy` run measures)"
                    .to_string(),
            ),
            Proxy::Nginx => None,
            Proxy::Haproxy => (!cfg.haproxy_exe.is_file()).then(|| {
                format!(
                    "no {} (install the Debian package: apt-get install haproxy, or ./x bench-deps)",
                    cfg.haproxy_exe.display()
                )
            }),
            Proxy::Shardline(_) => shardline_ok
                .get_or_insert_with(|| {
                    servers::resolve_workspace_exe(
                        &cfg.proxy_exe,
                        "shardline-proxy",
                        cfg.build_proxy,
                    )
                    .and_then(|()| servers::proxy_supports_tls(&cfg.proxy_exe))
                })
                .clone()
                .err(),
        };
        match missing {
            Some(why) => {
                if matches!(p, Proxy::Shardline(_)) {
                    if !skipped.iter().any(|s: &String| s.starts_with("shardline-")) {
                        println!(
                            "NOTE: shardline-proxy is NOT measured: {why}; the peers still run"
                        );
                    }
                } else {
                    println!("note: skipping {}: {why}", p.name());
                }
                skipped.push(format!("{}: {why}", p.name()));
            }
            None if !proxies.contains(&p) => proxies.push(p),
            None => {}
        }
    }
    (proxies, skipped)
}

/// Runs every TLS proxy × mode × round, printing progress and the tables.
/// `handshake_conns`: connections in flight in the handshake mode.
pub fn run_tls(cfg: &ProxyConfig, handshake_conns: usize) -> anyhow::Result<ProxyTlsOutput> {
    if cfg.rounds == 0
        || cfg.proxies.is_empty()
        || cfg.duration_s == 0
        || cfg.conns == 0
        || handshake_conns == 0
    {
        bail!("need at least one round, one proxy, one connection and a duration ≥ 1 s");
    }
    for (exe, what) in [(&cfg.wrk_exe, "wrk"), (&cfg.nginx_exe, "nginx")] {
        if !exe.is_file() {
            bail!(
                "no {}: {what} is needed (install the Debian package: apt-get install {what}, or ./x bench-deps)",
                exe.display()
            );
        }
    }
    let machine_at_start = MachineInfo::announce();
    let (proxies, skipped) = tls_proxies(cfg);
    if proxies.is_empty() {
        bail!("no proxy to run with TLS: {}", skipped.join("; "));
    }
    let dir =
        TempDir(std::env::temp_dir().join(format!("shardline-bench-tls-{}", std::process::id())));
    let material = TlsMaterial::generate(&dir.0)?;
    let client = client_config(&material.cert_der)?;
    let versions = tool_versions(cfg, &proxies);
    let backend = start_backend(cfg)?;
    let keepalive_command = format!(
        "OPENSSL_CONF=wrk-openssl.cnf wrk {}",
        wrk_args_url(cfg, cfg.duration_s, &format!("https://{SERVER_NAME}:PORT/")).join(" ")
    );
    let handshake_client = format!(
        "shardline-bench's own (rustls, one thread): {handshake_conns} connections in flight, each connect + full TLS 1.3 handshake (no session offered) + GET / with Connection: close + response + close; latency from connect() to the response's last byte; {} s timeout",
        cfg.wrk_timeout_s.max(1)
    );
    println!(
        "proxy --tls: {} proxies × 2 modes × {} round(s); {} worker(s) each on CPUs {:?}; TLS 1.3, {CIPHER_SUITE}, {KX_GROUP}, ECDSA P-256 certificate made for this run; backend nginx (plain HTTP, {} B body) on CPUs {:?}; client on CPUs {:?}; {} s warm-up + {} s measured per run",
        proxies.len(),
        cfg.rounds,
        cfg.workers,
        cfg.proxy_cpus,
        servers::BACKEND_BODY.len(),
        cfg.backend_cpus,
        cfg.client_cpus,
        cfg.warmup_s,
        cfg.duration_s,
    );
    println!("keep-alive: {keepalive_command}");
    println!("handshake: {handshake_client}");
    let slots: Vec<(TlsMode, Proxy)> = TlsMode::ALL
        .iter()
        .flat_map(|&m| proxies.iter().map(move |&p| (m, p)))
        .collect();
    let quiet = Quiet::new(cfg.max_foreign_pct, cfg.retries);
    let timeout = Duration::from_secs(cfg.wrk_timeout_s.max(1));
    let mut runs = Vec::new();
    for (round, &(mode, p)) in experiment::schedule(cfg.rounds, &slots) {
        let name = p.name();
        let failed = |msg: String| ProxyRun {
            error: Some(msg),
            mode: Some(mode.name().into()),
            ..ProxyRun::new(round, &name, 0)
        };
        let proc = match start_tls_proxy(cfg, p, backend.addr, &material.files) {
            Ok(proc) => proc,
            Err(e) => {
                let msg = format!("failed to start: {e:#}");
                println!("round {round} {name} {}: {msg}", mode.name());
                runs.push(failed(msg));
                continue;
            }
        };
        let checked =
            match check_forwarding_tls(proc.addr, &client, servers::BACKEND_BODY.as_bytes()) {
                Ok(seen) => seen,
                Err(e) => {
                    let msg = format!("does not forward a GET over TLS: {e:#}");
                    println!("round {round} {name} {}: {msg}", mode.name());
                    runs.push(failed(msg));
                    continue;
                }
            };
        // By name, so that wrk's SNI is the certificate's name: given an IP
        // literal wrk sends it as SNI (RFC 6066 forbids that), and rustls then
        // logs a warning per connection. wrk tries each address of the name.
        let url = format!("https://{SERVER_NAME}:{}/", proc.addr.port());
        let hs = HandshakeLoad {
            addr: proc.addr,
            conns: handshake_conns,
            duration: Duration::from_secs(cfg.duration_s),
            timeout,
            cpus: cfg.client_cpus.clone(),
            config: client.clone(),
        };
        let conf = material.wrk_openssl_conf.as_path();
        let load = |seconds: u64| -> anyhow::Result<Load> {
            match mode {
                TlsMode::KeepAlive => {
                    let report = run_wrk_url(cfg, seconds, &url, Some(conf))?;
                    // wrk says nothing of TLS: what the forwarding check
                    // negotiated (wrk offers the same), without its handshake.
                    Ok(Load {
                        seen: Some(TlsSeen {
                            full_handshakes: 0,
                            hello_retries: 0,
                            ..checked.clone()
                        }),
                        ..Load::of(report)
                    })
                }
                TlsMode::Handshake => {
                    let out = handshake_load(&HandshakeLoad {
                        duration: Duration::from_secs(seconds),
                        ..hs.clone()
                    })?;
                    Ok(Load {
                        report: out.report,
                        seen: Some(out.seen),
                        client_cpu_s: Some(out.client_cpu_s),
                    })
                }
            }
        };
        if cfg.warmup_s > 0 {
            if let Err(e) = load(cfg.warmup_s) {
                println!(
                    "round {round} {name} {}: warm-up failed: {e:#}",
                    mode.name()
                );
            }
        }
        let label = format!("round {round} {name:<16} {}", mode.name());
        let mut run = quiet.measure(&label, "run", || {
            let mut r = measure_load(&name, Some(proc.pid), backend.pid, round, || {
                load(cfg.duration_s)
            });
            r.mode = Some(mode.name().into());
            r
        });
        run.mode = Some(mode.name().into());
        println!("{}", describe(&run));
        runs.push(run);
        drop(proc);
    }
    let mut args = servers::shardline_proxy_tls_args(
        ([127, 0, 0, 1], 0).into(),
        backend.addr,
        &TlsFiles {
            cert: Path::new("cert.pem").into(),
            key: Path::new("key.pem").into(),
            combined: Path::new("cert+key.pem").into(),
        },
    );
    args[1] = "127.0.0.1:PORT".into();
    let shardline_proxy_args = args.join(" ");
    drop(backend);
    let names: Vec<String> = proxies.iter().map(Proxy::name).collect();
    let modes: Vec<TlsModeResult> = TlsMode::ALL
        .iter()
        .map(|&m| summarize_mode(m, &names, &runs))
        .collect();
    println!();
    print!("{}", render_tls(&modes));
    let wrk_command = keepalive_command.clone();
    Ok(ProxyTlsOutput {
        modes,
        runs,
        skipped,
        setup: ProxySetup {
            workers: cfg.workers,
            conns: cfg.conns,
            wrk_threads: cfg.wrk_threads,
            wrk_command,
            rounds: cfg.rounds,
            warmup_s: cfg.warmup_s,
            duration_s: cfg.duration_s,
            proxy_cpus: cfg.proxy_cpus.clone(),
            client_cpus: cfg.client_cpus.clone(),
            backend_cpus: cfg.backend_cpus.clone(),
            backend_body_bytes: servers::BACKEND_BODY.len(),
            versions,
        },
        tls: TlsSetup {
            certificate: "ECDSA P-256, self-signed for localhost and 127.0.0.1, generated for this run (rcgen)".into(),
            protocol: "TLSv1.3".into(),
            cipher_suite: CIPHER_SUITE.into(),
            kx_group: KX_GROUP.into(),
            keepalive_command,
            handshake_client,
            handshake_conns,
            shardline_proxy_args,
        },
        machine: machine_at_start,
    })
}

/// Medians per proxy for `mode`, ratios against the better peer of that mode.
pub fn summarize_mode(mode: TlsMode, proxies: &[String], runs: &[ProxyRun]) -> TlsModeResult {
    let of_mode: Vec<ProxyRun> = runs
        .iter()
        .filter(|r| r.mode.as_deref() == Some(mode.name()))
        .cloned()
        .collect();
    let rows = summarize(proxies, &of_mode);
    let best = best_peer(&rows).cloned();
    let results = rows
        .into_iter()
        .map(|row| {
            let seen: Vec<&TlsSeen> = of_mode
                .iter()
                .filter(|r| r.proxy == row.proxy && r.wrk.is_some())
                .filter_map(|r| r.tls.as_ref())
                .collect();
            let first = seen.iter().find(|s| s.protocol.is_some());
            let sum = |f: fn(&TlsSeen) -> u64| seen.iter().map(|s| f(s)).sum();
            TlsRow {
                p99_vs_best_peer: best
                    .as_ref()
                    .filter(|b| b.p99_us > 0.0)
                    .map(|b| round(row.p99_us / b.p99_us, 3)),
                protocol: first.and_then(|s| s.protocol.clone()),
                cipher_suite: first.and_then(|s| s.cipher_suite.clone()),
                kx_group: first.and_then(|s| s.kx_group.clone()),
                full_handshakes: sum(|s| s.full_handshakes),
                resumed_handshakes: sum(|s| s.resumed_handshakes),
                hello_retries: sum(|s| s.hello_retries),
                row,
            }
        })
        .collect();
    TlsModeResult {
        mode,
        best_peer: best.map(|b| b.proxy),
        results,
    }
}

/// One table per mode, then one line per shardline-proxy row with its ratios.
pub fn render_tls(modes: &[TlsModeResult]) -> String {
    let ms = |us: f64| format!("{:.2}", us / 1e3);
    let x = |v: Option<f64>| fmt_opt(v, |x| format!("{x:.2}×"));
    let mut out = String::new();
    for m in modes {
        let (unit, what) = match m.mode {
            TlsMode::KeepAlive => ("req", "requests over kept-alive TLS connections (wrk)"),
            TlsMode::Handshake => (
                "hs",
                "one new connection and full handshake per request (hs = handshakes = requests)",
            ),
        };
        out.push_str(&format!(
            "TLS {}: {what}; medians over rounds; × = ÷ the better peer's{}\n",
            m.mode.name(),
            m.best_peer
                .as_deref()
                .map_or_else(|| " (no peer result)".to_string(), |b| format!(" ({b})"))
        ));
        let cells: Vec<Vec<String>> = m
            .results
            .iter()
            .map(|r| {
                let row = &r.row;
                let mut c = vec![
                    row.proxy.clone(),
                    report::krps(row.rps),
                    x(row.rps_vs_best_peer),
                    fmt_opt(row.req_per_proxy_cpu_s, report::krps),
                    x(row.cpu_efficiency_vs_best_peer),
                    fmt_opt(row.proxy_cpu_pct, |v| format!("{v:.0}")),
                    fmt_opt(row.client_cpu_pct, |v| format!("{v:.0}")),
                    ms(row.p50_us),
                    ms(row.p99_us),
                    x(r.p99_vs_best_peer),
                    format!("{}", row.non_2xx_3xx + row.socket_errors),
                ];
                if m.mode == TlsMode::Handshake {
                    c.push(format!("{}", r.resumed_handshakes));
                }
                c
            })
            .collect();
        let per_s = format!("{unit}/s");
        let per_cpu = format!("{unit}/s per proxy CPU-s");
        let mut headers = vec![
            "proxy",
            per_s.as_str(),
            "×",
            per_cpu.as_str(),
            "×",
            "proxy CPU %",
            "client CPU %",
            "p50 ms",
            "p99 ms",
            "p99 ×",
            "errors",
        ];
        if m.mode == TlsMode::Handshake {
            headers.push("resumed");
        }
        out.push_str(&report::table(&headers, &cells));
        for r in m
            .results
            .iter()
            .filter(|r| r.row.proxy.starts_with("shardline-"))
        {
            if let (Some(best), Some(ratio)) = (&m.best_peer, r.row.cpu_efficiency_vs_best_peer) {
                out.push_str(&format!(
                    "{} ({}): {ratio:.2}× {best}'s {unit}/s per proxy CPU-second, p99 {}× its p99\n",
                    r.row.proxy,
                    m.mode.name(),
                    fmt_opt(r.p99_vs_best_peer, |v| format!("{v:.2}")),
                ));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::{SocketErrors, WrkLatency, WrkReport};

    fn run_of(proxy: &str, mode: TlsMode, per_cpu: f64, p99: f64, resumed: u64) -> ProxyRun {
        let rps = per_cpu * 0.9;
        ProxyRun {
            wrk: Some(WrkReport {
                requests: (rps * 5.0) as u64,
                duration_s: 5.0,
                rps,
                mean_latency_us: p99 / 2.0,
                max_latency_us: p99 * 2.0,
                latency: Some(WrkLatency {
                    p50_us: p99 / 2.0,
                    p75_us: p99 / 1.5,
                    p90_us: p99 / 1.2,
                    p99_us: p99,
                }),
                non_2xx_3xx: 0,
                socket_errors: SocketErrors::default(),
            }),
            proxy_cpu_s: Some(rps * 5.0 / per_cpu),
            proxy_cpu_pct: Some(90.0),
            req_per_proxy_cpu_s: Some(per_cpu),
            mode: Some(mode.name().into()),
            tls: Some(TlsSeen {
                protocol: Some("TLSv1_3".into()),
                cipher_suite: Some(CIPHER_SUITE.into()),
                kx_group: Some(KX_GROUP.into()),
                full_handshakes: 100,
                resumed_handshakes: resumed,
                ..TlsSeen::default()
            }),
            ..ProxyRun::new(1, proxy, 1)
        }
    }

    #[test]
    fn modes_are_summarized_apart_with_ratios_to_their_own_better_peer() {
        use TlsMode::*;
        let runs = vec![
            run_of("shardline-uring", KeepAlive, 60_000.0, 2_000.0, 0),
            run_of("haproxy", KeepAlive, 40_000.0, 2_500.0, 0),
            run_of("nginx", KeepAlive, 50_000.0, 2_000.0, 0),
            run_of("shardline-uring", Handshake, 3_000.0, 30_000.0, 0),
            run_of("haproxy", Handshake, 4_000.0, 20_000.0, 0),
            run_of("nginx", Handshake, 2_000.0, 40_000.0, 1),
        ];
        let names: Vec<String> = ["shardline-uring", "haproxy", "nginx"]
            .map(String::from)
            .to_vec();
        let ka = summarize_mode(KeepAlive, &names, &runs);
        assert_eq!(ka.best_peer.as_deref(), Some("nginx"));
        assert_eq!(ka.results[0].row.cpu_efficiency_vs_best_peer, Some(1.2));
        assert_eq!(ka.results[0].p99_vs_best_peer, Some(1.0));
        assert_eq!(
            ka.results[0].row.runs, 1,
            "the other mode's run is not counted"
        );
        let hs = summarize_mode(Handshake, &names, &runs);
        assert_eq!(hs.best_peer.as_deref(), Some("haproxy"));
        assert_eq!(hs.results[0].row.cpu_efficiency_vs_best_peer, Some(0.75));
        assert_eq!(hs.results[0].p99_vs_best_peer, Some(1.5));
        assert_eq!(hs.results[2].resumed_handshakes, 1);
        assert_eq!(hs.results[1].full_handshakes, 100);
        assert_eq!(hs.results[1].cipher_suite.as_deref(), Some(CIPHER_SUITE));
        let table = render_tls(&[ka.clone(), hs.clone()]);
        assert!(table.contains("TLS keep-alive"), "{table}");
        assert!(table.contains("hs/s per proxy CPU-s"), "{table}");
        assert!(
            table.contains("shardline-uring (handshake): 0.75× haproxy's hs/s per proxy CPU-second, p99 1.50× its p99"),
            "{table}"
        );
        let v = serde_json::to_value(&hs).unwrap();
        assert_eq!(v["mode"], "handshake");
        let row = &v["results"][0];
        for key in [
            "proxy",
            "rps",
            "req_per_proxy_cpu_s",
            "cpu_efficiency_vs_best_peer",
            "p99_us",
            "p99_vs_best_peer",
            "cipher_suite",
            "resumed_handshakes",
        ] {
            assert!(row.get(key).is_some(), "{key} missing: {row}");
        }
        // Without a peer: no ratios, no ratio line.
        let alone = summarize_mode(Handshake, &names[..1], &runs);
        assert_eq!(alone.best_peer, None);
        assert_eq!(alone.results[0].p99_vs_best_peer, None);
        assert!(!render_tls(&[alone]).contains("per proxy CPU-second,"));
    }

    #[test]
    fn plain_runs_keep_their_json_shape() {
        let v = serde_json::to_value(ProxyRun::new(1, "nginx", 1)).unwrap();
        assert!(v.get("mode").is_none() && v.get("tls").is_none(), "{v}");
    }
}
