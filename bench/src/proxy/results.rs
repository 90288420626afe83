//! What `proxy` reports: the run records, medians, latency added over direct,
//! ratios to the better peer and the verdict against the target, the progress
//! lines and the table, and the JSON shapes.

use serde::Serialize;

use super::{tls::TlsSeen, WrkLatency, WrkReport, PEERS, TARGET_RATIO};
use crate::{
    experiment::{self, median_of, median_of_some},
    machine::MachineInfo,
    report::{self, round},
};

/// One measured wrk run.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyRun {
    /// Round (from 1).
    pub round: usize,
    /// Proxy name (`direct`: no proxy).
    pub proxy: String,
    /// What wrk printed, parsed (absent if the run failed).
    pub wrk: Option<WrkReport>,
    /// The proxy's CPU seconds over the run (process tree; `null` for direct).
    pub proxy_cpu_s: Option<f64>,
    /// The proxy's CPU over the run ÷ the run, in % of one CPU.
    pub proxy_cpu_pct: Option<f64>,
    /// Requests ÷ the proxy's CPU seconds.
    pub req_per_proxy_cpu_s: Option<f64>,
    /// The backend's CPU ÷ the run, in % of one CPU.
    pub backend_cpu_pct: Option<f64>,
    /// wrk's CPU ÷ the run, in % of one CPU (near 100 × threads: wrk is the
    /// limit).
    pub client_cpu_pct: Option<f64>,
    /// CPU other processes used during the run, in % of one CPU (machine busy
    /// time from /proc/stat, interrupts and steal included, minus the proxy's,
    /// the backend's, wrk's and the harness's).
    pub foreign_cpu_pct: Option<f64>,
    /// Measurements made for this slot (more than 1: earlier ones were noisy).
    pub attempts: usize,
    /// Why the run failed.
    pub error: Option<String>,
    /// `proxy --tls`: `keep-alive` or `handshake` (absent from plain runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `proxy --tls`: what the TLS connections negotiated, and how their
    /// handshakes went (absent from plain runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSeen>,
}

impl ProxyRun {
    /// Nothing measured yet.
    pub fn new(round: usize, proxy: &str, attempts: usize) -> ProxyRun {
        ProxyRun {
            round,
            proxy: proxy.to_owned(),
            wrk: None,
            proxy_cpu_s: None,
            proxy_cpu_pct: None,
            req_per_proxy_cpu_s: None,
            backend_cpu_pct: None,
            client_cpu_pct: None,
            foreign_cpu_pct: None,
            attempts,
            error: None,
            mode: None,
            tls: None,
        }
    }
}

experiment::impl_attempt!(ProxyRun, wrk);

/// One proxy: medians over rounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProxyRow {
    /// Proxy name.
    pub proxy: String,
    /// Runs with a result.
    pub runs: usize,
    /// Median requests per second.
    pub rps: f64,
    /// Median requests per proxy CPU-second (`null` for direct).
    pub req_per_proxy_cpu_s: Option<f64>,
    /// req_per_proxy_cpu_s ÷ the better peer's (HAProxy, nginx).
    pub cpu_efficiency_vs_best_peer: Option<f64>,
    /// rps ÷ the same peer's rps.
    pub rps_vs_best_peer: Option<f64>,
    /// Median proxy CPU, % of one CPU.
    pub proxy_cpu_pct: Option<f64>,
    /// Median wrk CPU, % of one CPU.
    pub client_cpu_pct: Option<f64>,
    /// Median p50 latency, µs.
    pub p50_us: f64,
    /// Median p99 latency, µs.
    pub p99_us: f64,
    /// p50_us − direct's p50_us.
    pub added_p50_us: Option<f64>,
    /// p99_us − direct's p99_us.
    pub added_p99_us: Option<f64>,
    /// Non-2xx/3xx responses over every run.
    pub non_2xx_3xx: u64,
    /// Socket errors over every run.
    pub socket_errors: u64,
}

/// How shardline-proxy fares against the target.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    /// shardline-uring or shardline-epoll.
    pub proxy: String,
    /// The peer with the most requests per CPU-second.
    pub best_peer: String,
    /// Requests per CPU-second ÷ the best peer's.
    pub cpu_efficiency_ratio: f64,
    /// p99 ÷ the best peer's p99.
    pub p99_ratio: f64,
    /// cpu_efficiency_ratio ≥ 1.05, p99_ratio ≤ 1, and no errors.
    pub meets_target: bool,
}

/// What `proxy --json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyOutput {
    /// Medians per proxy.
    pub results: Vec<ProxyRow>,
    /// shardline-proxy against the target.
    pub verdicts: Vec<Verdict>,
    /// Every run.
    pub runs: Vec<ProxyRun>,
    /// Proxies left out, and why.
    pub skipped: Vec<String>,
    /// How the runs were set up.
    pub setup: ProxySetup,
    /// Where they ran.
    pub machine: MachineInfo,
}

/// The setup, echoed into the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ProxySetup {
    /// Workers / threads / shards of every proxy.
    pub workers: usize,
    /// wrk connections.
    pub conns: usize,
    /// wrk threads.
    pub wrk_threads: usize,
    /// The wrk command line of a measured run (the URL's port varies).
    pub wrk_command: String,
    /// Rounds.
    pub rounds: usize,
    /// Warm-up seconds per run.
    pub warmup_s: u64,
    /// Measured seconds per run.
    pub duration_s: u64,
    /// Proxy CPUs.
    pub proxy_cpus: Vec<usize>,
    /// wrk CPUs.
    pub client_cpus: Vec<usize>,
    /// Backend CPUs.
    pub backend_cpus: Vec<usize>,
    /// The backend's response body, bytes.
    pub backend_body_bytes: usize,
    /// Versions of the programs involved, as they report them.
    pub versions: Vec<String>,
}

pub(super) fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

pub(super) fn describe(run: &ProxyRun) -> String {
    let (label, width) = match &run.mode {
        Some(m) => (format!("{} {m}", run.proxy), 26),
        None => (run.proxy.clone(), 16),
    };
    let tls_note = match &run.tls {
        Some(t) if t.resumed_handshakes + t.hello_retries + t.not_closed > 0 => format!(
            "  TLS: {} resumed, {} hello retries, {} not closed",
            t.resumed_handshakes, t.hello_retries, t.not_closed
        ),
        _ => String::new(),
    };
    let first_error = match run.tls.as_ref().and_then(|t| t.first_error.as_ref()) {
        Some(e) => format!(" (first: {e})"),
        None => String::new(),
    };
    match (&run.wrk, &run.error) {
        (Some(w), _) => {
            let lat = w.latency.as_ref();
            format!(
                "round {} {:<width$}: {:>9} req/s  {} req/proxy-CPU-s (proxy {} % CPU)  p50 {} ms  p99 {} ms  backend {} %  client {} %  others {} %{}{tls_note}",
                run.round,
                label,
                report::krps(w.rps),
                fmt_opt(run.req_per_proxy_cpu_s, report::krps),
                fmt_opt(run.proxy_cpu_pct, |c| format!("{c:.0}")),
                fmt_opt(lat.map(|l| l.p50_us), |x| format!("{:.2}", x / 1e3)),
                fmt_opt(lat.map(|l| l.p99_us), |x| format!("{:.2}", x / 1e3)),
                fmt_opt(run.backend_cpu_pct, |c| format!("{c:.0}")),
                fmt_opt(run.client_cpu_pct, |c| format!("{c:.0}")),
                fmt_opt(run.foreign_cpu_pct, |c| format!("{c:.0}")),
                if w.errors() > 0 {
                    format!(
                        "  ERRORS: {} non-2xx/3xx, socket {:?}{first_error}",
                        w.non_2xx_3xx, w.socket_errors
                    )
                } else {
                    String::new()
                }
            )
        }
        (None, e) => format!(
            "round {} {:<width$}: failed: {}",
            run.round,
            label,
            e.as_deref().unwrap_or("unknown error")
        ),
    }
}

/// Medians per proxy; latency added over direct; ratios to the better peer.
pub fn summarize(proxies: &[String], runs: &[ProxyRun]) -> Vec<ProxyRow> {
    let mut rows = Vec::new();
    for p in proxies {
        let ok: Vec<&ProxyRun> = runs
            .iter()
            .filter(|r| &r.proxy == p && r.wrk.is_some())
            .collect();
        let wrks: Vec<&WrkReport> = ok.iter().filter_map(|r| r.wrk.as_ref()).collect();
        let Some(rps) = median_of(&wrks, |w| w.rps) else {
            continue;
        };
        let pick = |f: &dyn Fn(&ProxyRun) -> Option<f64>| median_of_some(&ok, |r| f(r));
        let lat = |f: &dyn Fn(&WrkLatency) -> f64| {
            median_of_some(&wrks, |w| w.latency.as_ref().map(f)).unwrap_or(0.0)
        };
        rows.push(ProxyRow {
            proxy: p.clone(),
            runs: wrks.len(),
            rps: round(rps, 1),
            req_per_proxy_cpu_s: pick(&|r| r.req_per_proxy_cpu_s).map(|x| round(x, 1)),
            cpu_efficiency_vs_best_peer: None,
            rps_vs_best_peer: None,
            proxy_cpu_pct: pick(&|r| r.proxy_cpu_pct).map(|x| round(x, 1)),
            client_cpu_pct: pick(&|r| r.client_cpu_pct).map(|x| round(x, 1)),
            p50_us: round(lat(&|l| l.p50_us), 1),
            p99_us: round(lat(&|l| l.p99_us), 1),
            added_p50_us: None,
            added_p99_us: None,
            non_2xx_3xx: wrks.iter().map(|w| w.non_2xx_3xx).sum(),
            socket_errors: wrks.iter().map(|w| w.socket_errors.total()).sum(),
        });
    }
    if let Some(direct) = rows.iter().find(|r| r.proxy == "direct").cloned() {
        for r in rows.iter_mut().filter(|r| r.proxy != "direct") {
            r.added_p50_us = Some(round(r.p50_us - direct.p50_us, 1));
            r.added_p99_us = Some(round(r.p99_us - direct.p99_us, 1));
        }
    }
    if let Some(best) = best_peer(&rows).cloned() {
        let b = best.req_per_proxy_cpu_s.unwrap_or(0.0);
        for r in rows.iter_mut().filter(|r| r.proxy != "direct") {
            r.cpu_efficiency_vs_best_peer = r.req_per_proxy_cpu_s.map(|x| round(x / b, 3));
            if best.rps > 0.0 {
                r.rps_vs_best_peer = Some(round(r.rps / best.rps, 3));
            }
        }
    }
    rows
}

/// The peer (HAProxy or nginx) with the most requests per proxy CPU-second.
pub fn best_peer(rows: &[ProxyRow]) -> Option<&ProxyRow> {
    rows.iter()
        .filter(|r| PEERS.contains(&r.proxy.as_str()))
        .filter(|r| r.req_per_proxy_cpu_s.is_some_and(|x| x > 0.0))
        .max_by(|a, b| {
            a.req_per_proxy_cpu_s
                .unwrap_or(0.0)
                .total_cmp(&b.req_per_proxy_cpu_s.unwrap_or(0.0))
        })
}

/// shardline-proxy's rows against the target (needs a peer result).
pub fn verdicts(rows: &[ProxyRow]) -> Vec<Verdict> {
    let Some(best) = best_peer(rows) else {
        return Vec::new();
    };
    rows.iter()
        .filter(|r| r.proxy.starts_with("shardline-"))
        .filter_map(|r| {
            let ratio = r.req_per_proxy_cpu_s? / best.req_per_proxy_cpu_s?;
            let p99 = if best.p99_us > 0.0 {
                r.p99_us / best.p99_us
            } else {
                f64::INFINITY
            };
            Some(Verdict {
                proxy: r.proxy.clone(),
                best_peer: best.proxy.clone(),
                cpu_efficiency_ratio: round(ratio, 3),
                p99_ratio: round(p99, 3),
                meets_target: ratio >= TARGET_RATIO
                    && p99 <= 1.0
                    && r.non_2xx_3xx + r.socket_errors == 0,
            })
        })
        .collect()
}

/// The result table and the verdict lines.
pub fn render(rows: &[ProxyRow], verdicts: &[Verdict]) -> String {
    let mut out = String::from(
        "medians over rounds (× = ÷ the better peer's, by req/s per proxy CPU-second; added = over direct)\n",
    );
    let ms = |us: f64| format!("{:.2}", us / 1e3);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.proxy.clone(),
                report::krps(r.rps),
                fmt_opt(r.rps_vs_best_peer, |x| format!("{x:.2}×")),
                fmt_opt(r.req_per_proxy_cpu_s, report::krps),
                fmt_opt(r.cpu_efficiency_vs_best_peer, |x| format!("{x:.2}×")),
                fmt_opt(r.proxy_cpu_pct, |x| format!("{x:.0}")),
                fmt_opt(r.client_cpu_pct, |x| format!("{x:.0}")),
                ms(r.p50_us),
                ms(r.p99_us),
                fmt_opt(r.added_p99_us, ms),
                format!("{}", r.non_2xx_3xx + r.socket_errors),
            ]
        })
        .collect();
    out.push_str(&report::table(
        &[
            "proxy",
            "req/s",
            "×",
            "req/s per proxy CPU-s",
            "×",
            "proxy CPU %",
            "wrk CPU %",
            "p50 ms",
            "p99 ms",
            "added p99 ms",
            "errors",
        ],
        &cells,
    ));
    for v in verdicts {
        out.push_str(&format!(
            "{}: {:.2}× {}'s req/s per CPU-second (target ≥ {TARGET_RATIO:.2}×), p99 {:.2}× its p99 (target ≤ 1): {}\n",
            v.proxy,
            v.cpu_efficiency_ratio,
            v.best_peer,
            v.p99_ratio,
            if v.meets_target { "meets the target" } else { "BELOW the target" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::{SocketErrors, PROXIES};

    fn run_of(proxy: &str, rps: f64, per_cpu: Option<f64>, p99: f64, errors: u64) -> ProxyRun {
        ProxyRun {
            round: 1,
            proxy: proxy.into(),
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
                non_2xx_3xx: errors,
                socket_errors: SocketErrors::default(),
            }),
            proxy_cpu_s: per_cpu.map(|p| rps * 5.0 / p),
            proxy_cpu_pct: per_cpu.map(|p| rps / p * 100.0),
            req_per_proxy_cpu_s: per_cpu,
            backend_cpu_pct: Some(50.0),
            client_cpu_pct: Some(60.0),
            foreign_cpu_pct: Some(0.0),
            attempts: 1,
            error: None,
            mode: None,
            tls: None,
        }
    }

    #[test]
    fn medians_added_latency_and_ratios() {
        let runs = vec![
            run_of("direct", 100_000.0, None, 1_000.0, 0),
            run_of("direct", 110_000.0, None, 1_200.0, 0),
            run_of("direct", 90_000.0, None, 800.0, 0),
            run_of("shardline-uring", 90_000.0, Some(95_000.0), 1_500.0, 0),
            run_of("shardline-uring", 80_000.0, Some(90_000.0), 1_700.0, 0),
            run_of("haproxy", 70_000.0, Some(72_000.0), 1_800.0, 0),
            run_of("nginx", 80_000.0, Some(83_000.0), 1_700.0, 0),
            ProxyRun {
                wrk: None,
                error: Some("boom".into()),
                ..run_of("nginx", 0.0, None, 0.0, 0)
            },
        ];
        let names: Vec<String> = PROXIES[..4]
            .iter()
            .chain(["nginx"].iter())
            .map(|s| s.to_string())
            .filter(|s| s != "shardline-epoll")
            .collect();
        let rows = summarize(&names, &runs);
        assert_eq!(rows.len(), 4, "{rows:#?}");
        let direct = &rows[0];
        assert_eq!((direct.rps, direct.p99_us), (100_000.0, 1_000.0));
        assert_eq!(direct.added_p99_us, None);
        assert_eq!(direct.cpu_efficiency_vs_best_peer, None);
        let sl = &rows[1];
        assert_eq!(sl.runs, 2);
        assert_eq!(sl.rps, 85_000.0);
        assert_eq!(sl.req_per_proxy_cpu_s, Some(92_500.0));
        assert_eq!(sl.p99_us, 1_600.0);
        assert_eq!(sl.added_p99_us, Some(600.0));
        assert_eq!(sl.added_p50_us, Some(300.0));
        // The better peer is nginx (83k per CPU-second).
        assert_eq!(best_peer(&rows).unwrap().proxy, "nginx");
        assert_eq!(
            sl.cpu_efficiency_vs_best_peer,
            Some(round(92_500.0 / 83_000.0, 3))
        );
        assert_eq!(sl.rps_vs_best_peer, Some(round(85_000.0 / 80_000.0, 3)));
        assert_eq!(rows[3].runs, 1, "the failed nginx run is left out");
        let v = verdicts(&rows);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].best_peer, "nginx");
        assert!(v[0].meets_target, "{v:?}"); // 1.114× and p99 1600 ≤ 1700
        let table = render(&rows, &v);
        assert!(table.contains("meets the target"), "{table}");
        assert!(
            table.lines().any(|l| l.starts_with("shardline-uring")),
            "{table}"
        );

        // Slower p99 than the better peer: below target whatever the CPU.
        let runs = vec![
            run_of("shardline-epoll", 90_000.0, Some(100_000.0), 2_000.0, 0),
            run_of("haproxy", 70_000.0, Some(72_000.0), 1_800.0, 0),
        ];
        let rows = summarize(&["shardline-epoll".into(), "haproxy".into()], &runs);
        let v = verdicts(&rows);
        assert!(!v[0].meets_target);
        assert_eq!(v[0].best_peer, "haproxy");
        // Errors: below target.
        let runs = vec![
            run_of("shardline-epoll", 90_000.0, Some(100_000.0), 1_000.0, 3),
            run_of("haproxy", 70_000.0, Some(72_000.0), 1_800.0, 0),
        ];
        let rows = summarize(&["shardline-epoll".into(), "haproxy".into()], &runs);
        assert!(!verdicts(&rows)[0].meets_target);
        // No peer: no verdict, no ratios.
        let rows = summarize(&["shardline-epoll".into()], &runs[..1]);
        assert!(verdicts(&rows).is_empty());
        assert_eq!(rows[0].cpu_efficiency_vs_best_peer, None);
    }

    #[test]
    fn json_shape() {
        let runs = vec![
            run_of("direct", 100_000.0, None, 1_000.0, 0),
            run_of("shardline-uring", 90_000.0, Some(95_000.0), 1_500.0, 0),
            run_of("haproxy", 70_000.0, Some(72_000.0), 1_800.0, 0),
        ];
        let names: Vec<String> = ["direct", "shardline-uring", "haproxy"]
            .map(String::from)
            .to_vec();
        let results = summarize(&names, &runs);
        let out = ProxyOutput {
            verdicts: verdicts(&results),
            results,
            runs,
            skipped: vec!["nginx: test".into()],
            setup: ProxySetup {
                workers: 1,
                conns: 64,
                wrk_threads: 1,
                wrk_command: "wrk -t1 -c64 -d5s --timeout=2s --latency http://127.0.0.1:PORT/"
                    .into(),
                rounds: 3,
                warmup_s: 1,
                duration_s: 5,
                proxy_cpus: vec![0],
                client_cpus: vec![1],
                backend_cpus: vec![1],
                backend_body_bytes: 13,
                versions: vec![],
            },
            machine: MachineInfo::read(),
        };
        let v = serde_json::to_value(&out).unwrap();
        for key in ["results", "verdicts", "runs", "skipped", "setup", "machine"] {
            assert!(v.get(key).is_some(), "{key} missing");
        }
        let row = &v["results"][1];
        for key in [
            "proxy",
            "runs",
            "rps",
            "req_per_proxy_cpu_s",
            "cpu_efficiency_vs_best_peer",
            "rps_vs_best_peer",
            "proxy_cpu_pct",
            "client_cpu_pct",
            "p50_us",
            "p99_us",
            "added_p50_us",
            "added_p99_us",
            "non_2xx_3xx",
            "socket_errors",
        ] {
            assert!(row.get(key).is_some(), "results[].{key} missing: {row}");
        }
        assert_eq!(row["proxy"], "shardline-uring");
        assert_eq!(row["added_p99_us"], 500.0);
        assert!(v["results"][0]["req_per_proxy_cpu_s"].is_null());
        let run = &v["runs"][1];
        for key in [
            "round",
            "proxy",
            "wrk",
            "proxy_cpu_s",
            "proxy_cpu_pct",
            "req_per_proxy_cpu_s",
            "backend_cpu_pct",
            "client_cpu_pct",
            "foreign_cpu_pct",
            "attempts",
            "error",
        ] {
            assert!(run.get(key).is_some(), "runs[].{key} missing: {run}");
        }
        assert_eq!(run["wrk"]["latency"]["p99_us"], 1_500.0);
        assert_eq!(run["wrk"]["socket_errors"]["timeout"], 0);
        assert_eq!(v["verdicts"][0]["best_peer"], "haproxy");
        assert_eq!(v["verdicts"][0]["meets_target"], true);
        assert_eq!(v["setup"]["backend_body_bytes"], 13);
    }
}
