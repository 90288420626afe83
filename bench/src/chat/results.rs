//! What `chat` reports: the run records, medians and ratios to ngircd, history
//! on against off with the CHATHISTORY probe, the progress lines and the
//! tables, and the JSON shapes.

use serde::Serialize;

use super::{
    probe::{ProbeLatency, ProbeResult, ProbeSpec},
    scenario::{LoadResult, Scenario, Shape},
};
use crate::{
    experiment::{self, median_of, median_of_some},
    machine::MachineInfo,
    report::{self, round},
};

/// The reference server for the ratio columns.
pub const REFERENCE: &str = "ngircd";

/// A server named `NAME` + this runs without history; it is `NAME`'s peer in
/// the history comparison.
pub const NO_HISTORY_SUFFIX: &str = "-nohistory";

/// The target: server CPU per delivery with history ≤ this × without.
pub const HISTORY_CPU_TARGET: f64 = 1.15;

/// The targets for write coalescing, paced: p50 latency ≤ this ×
/// ngircd's ...
pub const COALESCE_P50_TARGET: f64 = 1.2;
/// ... and server CPU per delivery ≤ this × ngircd's.
pub const COALESCE_CPU_TARGET: f64 = 0.5;

/// The target: CHATHISTORY LATEST p99 under the load ≤ this many ms.
pub const PROBE_P99_TARGET_MS: f64 = 5.0;

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRun {
    /// Round (from 1).
    pub round: usize,
    /// Server name.
    pub server: String,
    /// burst or paced.
    pub shape: Shape,
    /// What the client measured (absent if the run failed).
    pub load: Option<LoadResult>,
    /// Server utime + stime over the window ÷ deliveries, µs.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Server CPU over the window ÷ the window, in % of one CPU.
    pub server_cpu_pct: Option<f64>,
    /// A cluster's engine (Redis): its CPU over the window ÷ deliveries, µs
    /// (included in `server_cpu_us_per_delivery`, which counts every node and
    /// the engine).
    pub engine_cpu_us_per_delivery: Option<f64>,
    /// CPU other processes used during the window, in % of one CPU (machine busy
    /// time from /proc/stat minus the server's and the harness's).
    pub foreign_cpu_pct: Option<f64>,
    /// Measurements made for this slot (more than 1: earlier ones were noisy).
    pub attempts: usize,
    /// Why the run failed.
    pub error: Option<String>,
    /// What the CHATHISTORY probe saw (when it ran).
    pub probe: Option<ProbeResult>,
}

impl ChatRun {
    /// A run that measured nothing, and why.
    pub fn failed(
        round: usize,
        server: &str,
        shape: Shape,
        attempts: usize,
        error: String,
    ) -> ChatRun {
        ChatRun {
            round,
            server: server.to_owned(),
            shape,
            load: None,
            server_cpu_us_per_delivery: None,
            server_cpu_pct: None,
            engine_cpu_us_per_delivery: None,
            foreign_cpu_pct: None,
            attempts,
            error: Some(error),
            probe: None,
        }
    }
}

experiment::impl_attempt!(ChatRun, load);

/// One server and shape: medians over rounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatRow {
    /// Server name.
    pub server: String,
    /// burst or paced.
    pub shape: Shape,
    /// Runs with a result.
    pub runs: usize,
    /// Median deliveries per second.
    pub deliveries_per_s: f64,
    /// Median server CPU µs per delivery (a cluster: every node and the
    /// engine).
    pub server_cpu_us_per_delivery: Option<f64>,
    /// A cluster: median engine CPU µs per delivery (part of the above).
    pub engine_cpu_us_per_delivery: Option<f64>,
    /// Median p50 delivery latency, µs.
    pub p50_us: f64,
    /// Median p99 delivery latency, µs.
    pub p99_us: f64,
    /// Every run complete (all messages to all members, one order).
    pub complete: bool,
    /// Sum over runs.
    pub lost: u64,
    /// Sum over runs.
    pub members_out_of_order: usize,
    /// deliveries_per_s ÷ ngircd's (same shape).
    pub deliveries_vs_ngircd: Option<f64>,
    /// server CPU per delivery ÷ ngircd's (same shape; < 1: cheaper).
    pub cpu_vs_ngircd: Option<f64>,
    /// p50 latency ÷ ngircd's (same shape; < 1: sooner).
    pub p50_vs_ngircd: Option<f64>,
}

/// A server's paced run against the write coalescing targets (p50 ≤ 1.2×
/// ngircd's, CPU per delivery ≤ 0.5× ngircd's).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CoalesceVerdict {
    /// Server name (with its coalescing, e.g. `shardline-uring@pace=1000`).
    pub server: String,
    /// p50 ÷ ngircd's.
    pub p50_vs_ngircd: f64,
    /// CPU per delivery ÷ ngircd's.
    pub cpu_vs_ngircd: f64,
    /// [`COALESCE_P50_TARGET`].
    pub p50_target: f64,
    /// [`COALESCE_CPU_TARGET`].
    pub cpu_target: f64,
    /// Complete, and both ratios within their targets.
    pub meets_both: bool,
}

/// Every shardline row of the paced shape with both ratios to ngircd, against
/// the coalescing targets (the peers are not judged).
pub fn coalesce_verdicts(rows: &[ChatRow]) -> Vec<CoalesceVerdict> {
    rows.iter()
        .filter(|r| r.shape == Shape::Paced && r.server.starts_with("shardline"))
        .filter_map(|r| {
            let (p50, cpu) = (r.p50_vs_ngircd?, r.cpu_vs_ngircd?);
            Some(CoalesceVerdict {
                server: r.server.clone(),
                p50_vs_ngircd: p50,
                cpu_vs_ngircd: cpu,
                p50_target: COALESCE_P50_TARGET,
                cpu_target: COALESCE_CPU_TARGET,
                meets_both: r.complete && p50 <= COALESCE_P50_TARGET && cpu <= COALESCE_CPU_TARGET,
            })
        })
        .collect()
}

/// The coalescing verdicts in words (nothing without one).
pub fn render_coalesce(verdicts: &[CoalesceVerdict]) -> String {
    let mut out = String::new();
    if verdicts.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "write coalescing, paced (targets: p50 ≤ {COALESCE_P50_TARGET}× ngircd's, CPU per delivery ≤ {COALESCE_CPU_TARGET}× ngircd's)\n"
    ));
    let cells: Vec<Vec<String>> = verdicts
        .iter()
        .map(|v| {
            vec![
                v.server.clone(),
                format!("{:.2}×", v.p50_vs_ngircd),
                format!("{:.2}×", v.cpu_vs_ngircd),
                if v.meets_both {
                    "meets both".into()
                } else {
                    let mut missed = Vec::new();
                    if v.p50_vs_ngircd > v.p50_target {
                        missed.push("p50");
                    }
                    if v.cpu_vs_ngircd > v.cpu_target {
                        missed.push("CPU");
                    }
                    if missed.is_empty() {
                        missed.push("incomplete");
                    }
                    format!("MISSES ({})", missed.join(", "))
                },
            ]
        })
        .collect();
    out.push_str(&report::table(
        &["server", "p50 × ngircd", "CPU × ngircd", "verdict"],
        &cells,
    ));
    out.push('\n');
    out
}

/// What `chat --json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct ChatOutput {
    /// Medians per server and shape.
    pub results: Vec<ChatRow>,
    /// History on against off, per shape, where both ran (`NAME` and
    /// `NAME-nohistory`).
    pub history: Vec<HistoryVerdict>,
    /// Paced shardline runs against the write coalescing targets (where ngircd
    /// ran).
    pub coalesce: Vec<CoalesceVerdict>,
    /// Every run.
    pub runs: Vec<ChatRun>,
    /// Servers left out, and why.
    pub skipped: Vec<String>,
    /// How the runs were set up.
    pub setup: ChatSetup,
    /// Where they ran.
    pub machine: MachineInfo,
}

/// The setup, echoed into the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ChatSetup {
    /// shardline-chat shards.
    pub shards: usize,
    /// shardline-chat's CPUs.
    pub server_cpus: Vec<usize>,
    /// ngircd's CPU.
    pub ngircd_cpus: Vec<usize>,
    /// The client's CPUs (empty: unpinned).
    pub client_cpus: Vec<usize>,
    /// Rounds.
    pub rounds: usize,
    /// Rooms and load.
    pub scenario: Scenario,
    /// Delivery timeout, seconds.
    pub timeout_s: f64,
    /// shardline-chat kept message history (stored in its scratch directory).
    pub chat_history: bool,
    /// Cluster nodes' `cluster.catchup_messages` (`null`: the chat's
    /// default, 1000).
    #[serde(default)]
    pub cluster_catchup: Option<usize>,
    /// The CHATHISTORY probe (`null`: none).
    pub probe: Option<ProbeSpec>,
}

/// The CHATHISTORY probe over every run of one server and shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeSummary {
    /// Runs with a probe result.
    pub runs: usize,
    /// Requests sent.
    pub requests: u64,
    /// Answers received.
    pub answers: u64,
    /// Answers with as many messages as asked for.
    pub full_answers: u64,
    /// Mean messages per answer.
    pub messages_per_answer: f64,
    /// Answers that failed a check, errors and answers that never came.
    pub bad_answers: u64,
    /// Requests sent late (the last answer was still out at their turn).
    pub late_sends: u64,
    /// Over every answer of every run (pooled, not a median of rounds).
    pub latency: ProbeLatency,
}

/// History on against off for one server and shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryVerdict {
    /// burst or paced.
    pub shape: Shape,
    /// With history (e.g. `shardline-uring`).
    pub server: String,
    /// Without (`…-nohistory`).
    pub peer: String,
    /// Median server CPU µs per delivery with history.
    pub cpu_us_per_delivery: Option<f64>,
    /// The same without.
    pub peer_cpu_us_per_delivery: Option<f64>,
    /// The first ÷ the second: the headline.
    pub cpu_ratio: Option<f64>,
    /// The same ratio in each round where both measured (how much it moves).
    pub round_cpu_ratios: Vec<f64>,
    /// ≤ this meets the target.
    pub cpu_target: f64,
    /// The probe in the runs with history (`null`: it did not run).
    pub probe: Option<ProbeSummary>,
    /// Probe p99 ≤ this many ms meets the target.
    pub p99_target_ms: f64,
    /// Both runs complete, the CPU ratio at or under its target, and the probe
    /// (if it ran) answered, every answer good, p99 at or under its target.
    pub meets_target: bool,
}

pub(super) fn describe(run: &ChatRun) -> String {
    match (&run.load, &run.error) {
        (Some(l), _) => format!(
            "round {} {:<16} {}: {:>9} deliveries/s  server {} µs/delivery ({} % CPU)  p50 {:.1} µs  p99 {:.1} µs  {}  client CPU {:.0} %  others {} %{}",
            run.round,
            run.server,
            run.shape,
            report::krps(l.deliveries_per_s),
            run.server_cpu_us_per_delivery
                .map_or_else(|| "?".into(), |c| format!("{c:.3}")),
            run.server_cpu_pct
                .map_or_else(|| "?".into(), |c| format!("{c:.0}")),
            l.latency.p50_us,
            l.latency.p99_us,
            if l.complete {
                "complete".to_owned()
            } else {
                format!(
                    "INCOMPLETE ({}: {} of {} deliveries, {} lost, {} duplicates, {} members out of order, {} disconnected)",
                    l.stop, l.deliveries, l.expected_deliveries, l.lost, l.duplicates,
                    l.members_out_of_order, l.disconnected
                )
            },
            l.client_cpu_pct,
            run.foreign_cpu_pct
                .map_or_else(|| "?".into(), |f| format!("{f:.0}")),
            if l.problems.is_empty() {
                String::new()
            } else {
                format!("\n    problems: {}", l.problems.join("\n              "))
            }
        ) + &run.probe.as_ref().map_or_else(String::new, describe_probe),
        (None, e) => format!(
            "round {} {:<16} {}: failed: {}",
            run.round,
            run.server,
            run.shape,
            e.as_deref().unwrap_or("unknown error")
        ),
    }
}

fn describe_probe(p: &ProbeResult) -> String {
    let mut s = if p.chathistory {
        format!(
            "\n    probe: {} answers of {} requests ({} full, {:.1} messages each, {} bad, {} sent late)  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            p.answers,
            p.requests,
            p.full_answers,
            p.messages as f64 / p.answers.max(1) as f64,
            p.bad_answers,
            p.late_sends,
            p.latency.p50_us / 1e3,
            p.latency.p99_us / 1e3,
            p.latency.max_us / 1e3,
        )
    } else {
        format!(
            "\n    probe: no draft/chathistory offered; listened only ({} live messages)",
            p.live_messages
        )
    };
    if !p.problems.is_empty() {
        s.push_str(&format!(
            "\n    probe problems: {}",
            p.problems.join("\n                    ")
        ));
    }
    s
}

/// The probe over `runs` (those that have one).
fn probe_summary(runs: &[&ChatRun]) -> Option<ProbeSummary> {
    let probes: Vec<&ProbeResult> = runs.iter().filter_map(|r| r.probe.as_ref()).collect();
    if probes.is_empty() {
        return None;
    }
    let samples: Vec<f64> = probes
        .iter()
        .flat_map(|p| p.samples_us.iter().copied())
        .collect();
    let answers: u64 = probes.iter().map(|p| p.answers).sum();
    let messages: u64 = probes.iter().map(|p| p.messages).sum();
    Some(ProbeSummary {
        runs: probes.len(),
        requests: probes.iter().map(|p| p.requests).sum(),
        answers,
        full_answers: probes.iter().map(|p| p.full_answers).sum(),
        messages_per_answer: round(messages as f64 / answers.max(1) as f64, 1),
        bad_answers: probes.iter().map(|p| p.bad_answers).sum(),
        late_sends: probes.iter().map(|p| p.late_sends).sum(),
        latency: ProbeLatency::of(&samples),
    })
}

/// History on against off: for every server `NAME` run together with
/// `NAME-nohistory`, per shape, the ratio of their median CPU per delivery and
/// the probe's answers pooled over `NAME`'s runs (`probe`: whether it ran).
pub fn history_verdicts(
    servers: &[String],
    shapes: &[Shape],
    runs: &[ChatRun],
    rows: &[ChatRow],
    probe: Option<ProbeSpec>,
) -> Vec<HistoryVerdict> {
    let mut out = Vec::new();
    for &shape in shapes {
        for s in servers {
            let peer = format!("{s}{NO_HISTORY_SUFFIX}");
            if !servers.contains(&peer) {
                continue;
            }
            let row = |name: &str| rows.iter().find(|r| r.server == name && r.shape == shape);
            let (with, without) = (row(s), row(&peer));
            let cpu = with.and_then(|r| r.server_cpu_us_per_delivery);
            let peer_cpu = without.and_then(|r| r.server_cpu_us_per_delivery);
            let ratio = match (cpu, peer_cpu) {
                (Some(a), Some(b)) if b > 0.0 => Some(round(a / b, 3)),
                _ => None,
            };
            let of = |name: &str| -> Vec<&ChatRun> {
                runs.iter()
                    .filter(|r| r.server == name && r.shape == shape && r.load.is_some())
                    .collect()
            };
            let (mine, theirs) = (of(s), of(&peer));
            let mut round_cpu_ratios = Vec::new();
            for r in &mine {
                let other = theirs.iter().find(|t| t.round == r.round);
                if let (Some(a), Some(b)) = (
                    r.server_cpu_us_per_delivery,
                    other.and_then(|t| t.server_cpu_us_per_delivery),
                ) {
                    if b > 0.0 {
                        round_cpu_ratios.push(round(a / b, 3));
                    }
                }
            }
            let summary = probe.and(probe_summary(&mine));
            let complete = with.is_some_and(|r| r.complete) && without.is_some_and(|r| r.complete);
            let probe_ok = summary.as_ref().is_none_or(|p| {
                p.answers > 0 && p.bad_answers == 0 && p.latency.p99_us <= PROBE_P99_TARGET_MS * 1e3
            });
            out.push(HistoryVerdict {
                shape,
                server: s.clone(),
                peer,
                cpu_us_per_delivery: cpu,
                peer_cpu_us_per_delivery: peer_cpu,
                cpu_ratio: ratio,
                round_cpu_ratios,
                cpu_target: HISTORY_CPU_TARGET,
                probe: summary,
                p99_target_ms: PROBE_P99_TARGET_MS,
                meets_target: complete
                    && ratio.is_some_and(|r| r <= HISTORY_CPU_TARGET)
                    && probe_ok,
            });
        }
    }
    out
}

/// The history comparison in words, one block per server and shape (nothing
/// without one).
pub fn render_history(verdicts: &[HistoryVerdict]) -> String {
    let mut out = String::new();
    for v in verdicts {
        let f = |c: Option<f64>| c.map_or_else(|| "?".into(), |c| format!("{c:.3}"));
        out.push_str(&format!(
            "history, {}: {} {} µs/delivery vs {} {}: {} (target ≤ {:.2}×; by round: {})\n",
            v.shape,
            v.server,
            f(v.cpu_us_per_delivery),
            v.peer,
            f(v.peer_cpu_us_per_delivery),
            v.cpu_ratio
                .map_or_else(|| "no ratio".into(), |r| format!("{r:.3}×")),
            v.cpu_target,
            if v.round_cpu_ratios.is_empty() {
                "-".to_owned()
            } else {
                v.round_cpu_ratios
                    .iter()
                    .map(|r| format!("{r:.3}×"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ));
        if let Some(p) = &v.probe {
            out.push_str(&format!(
                "  CHATHISTORY LATEST under the load, {} runs: {} answers of {} requests ({} full, {:.1} messages each, {} bad, {} sent late); p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 ≤ {} ms)\n",
                p.runs,
                p.answers,
                p.requests,
                p.full_answers,
                p.messages_per_answer,
                p.bad_answers,
                p.late_sends,
                p.latency.p50_us / 1e3,
                p.latency.p99_us / 1e3,
                p.latency.max_us / 1e3,
                v.p99_target_ms,
            ));
        }
        out.push_str(&format!(
            "  {}: {}\n",
            v.server,
            if v.meets_target {
                "meets the target"
            } else {
                "MISSES the target"
            }
        ));
    }
    out
}

/// Medians per (server, shape) and ratios to ngircd.
pub fn summarize(servers: &[String], shapes: &[Shape], runs: &[ChatRun]) -> Vec<ChatRow> {
    let mut rows = Vec::new();
    for &shape in shapes {
        let mut at_shape = Vec::new();
        for s in servers {
            let ok: Vec<&ChatRun> = runs
                .iter()
                .filter(|r| &r.server == s && r.shape == shape && r.load.is_some())
                .collect();
            let loads: Vec<&LoadResult> = ok.iter().filter_map(|r| r.load.as_ref()).collect();
            let Some(rate) = median_of(&loads, |l| l.deliveries_per_s) else {
                continue;
            };
            let failed = runs
                .iter()
                .any(|r| &r.server == s && r.shape == shape && r.load.is_none());
            at_shape.push(ChatRow {
                server: s.clone(),
                shape,
                runs: loads.len(),
                deliveries_per_s: round(rate, 1),
                server_cpu_us_per_delivery: median_of_some(&ok, |r| r.server_cpu_us_per_delivery)
                    .map(|c| round(c, 4)),
                engine_cpu_us_per_delivery: median_of_some(&ok, |r| r.engine_cpu_us_per_delivery),
                p50_us: round(median_of(&loads, |l| l.latency.p50_us).unwrap_or(0.0), 2),
                p99_us: round(median_of(&loads, |l| l.latency.p99_us).unwrap_or(0.0), 2),
                complete: !failed && loads.iter().all(|l| l.complete),
                lost: loads.iter().map(|l| l.lost).sum(),
                members_out_of_order: loads.iter().map(|l| l.members_out_of_order).sum(),
                deliveries_vs_ngircd: None,
                cpu_vs_ngircd: None,
                p50_vs_ngircd: None,
            });
        }
        let reference = at_shape.iter().find(|r| r.server == REFERENCE).cloned();
        if let Some(base) = reference {
            for r in &mut at_shape {
                if base.deliveries_per_s > 0.0 {
                    r.deliveries_vs_ngircd =
                        Some(round(r.deliveries_per_s / base.deliveries_per_s, 3));
                }
                if let (Some(c), Some(b)) = (
                    r.server_cpu_us_per_delivery,
                    base.server_cpu_us_per_delivery,
                ) {
                    if b > 0.0 {
                        r.cpu_vs_ngircd = Some(round(c / b, 3));
                    }
                }
                if base.p50_us > 0.0 {
                    r.p50_vs_ngircd = Some(round(r.p50_us / base.p50_us, 3));
                }
            }
        }
        rows.extend(at_shape);
    }
    rows
}

/// The result table, one block per shape.
pub fn render(rows: &[ChatRow]) -> String {
    let mut out = String::new();
    let mut shapes: Vec<Shape> = rows.iter().map(|r| r.shape).collect();
    shapes.dedup();
    for shape in shapes {
        out.push_str(&format!(
            "{shape}: medians over rounds (× = ÷ {REFERENCE}'s; CPU per delivery below 1× is cheaper)\n"
        ));
        let cells: Vec<Vec<String>> = rows
            .iter()
            .filter(|r| r.shape == shape)
            .map(|r| {
                vec![
                    r.server.clone(),
                    format!("{:.1}k", r.deliveries_per_s / 1e3),
                    r.deliveries_vs_ngircd
                        .map_or_else(|| "-".into(), |x| format!("{x:.2}×")),
                    r.server_cpu_us_per_delivery
                        .map_or_else(|| "-".into(), |c| format!("{c:.3}")),
                    r.cpu_vs_ngircd
                        .map_or_else(|| "-".into(), |x| format!("{x:.2}×")),
                    format!("{:.1}", r.p50_us),
                    format!("{:.1}", r.p99_us),
                    if r.complete {
                        "yes".into()
                    } else {
                        format!(
                            "NO ({} lost, {} out of order)",
                            r.lost, r.members_out_of_order
                        )
                    },
                ]
            })
            .collect();
        out.push_str(&report::table(
            &[
                "server",
                "deliveries/s",
                "×",
                "server CPU µs/delivery",
                "×",
                "p50 µs",
                "p99 µs",
                "complete",
            ],
            &cells,
        ));
        out.push('\n');
    }
    let engine: Vec<&ChatRow> = rows
        .iter()
        .filter(|r| r.engine_cpu_us_per_delivery.is_some())
        .collect();
    if !engine.is_empty() {
        out.push_str(
            "cluster: the engine's share of the server CPU above (every node plus Redis)\n",
        );
        let cells: Vec<Vec<String>> = engine
            .iter()
            .map(|r| {
                let e = r.engine_cpu_us_per_delivery.unwrap_or(0.0);
                let all = r.server_cpu_us_per_delivery.unwrap_or(0.0);
                vec![
                    r.server.clone(),
                    r.shape.to_string(),
                    format!("{:.3}", all - e),
                    format!("{e:.3}"),
                    if all > 0.0 {
                        format!("{:.0}%", e / all * 100.0)
                    } else {
                        "-".into()
                    },
                ]
            })
            .collect();
        out.push_str(&report::table(
            &[
                "server",
                "shape",
                "nodes CPU µs/delivery",
                "Redis CPU µs/delivery",
                "Redis share",
            ],
            &cells,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Latency;

    fn run_of(server: &str, shape: Shape, rate: f64, cpu: f64, complete: bool) -> ChatRun {
        ChatRun {
            round: 1,
            server: server.into(),
            shape,
            load: Some(LoadResult {
                shape,
                clients: 10,
                rooms: 1,
                room_size: 10,
                senders: 1,
                messages_sent: 10,
                deliveries: 90,
                expected_deliveries: 90,
                window_s: 1.0,
                deliveries_per_s: rate,
                latency: Latency {
                    p50_us: 10.0,
                    p99_us: 20.0,
                    ..Latency::default()
                },
                complete,
                lost: u64::from(!complete),
                duplicates: 0,
                members_out_of_order: 0,
                disconnected: 0,
                unexpected_lines: 0,
                problems: Vec::new(),
                stop: "complete".into(),
                setup_s: 0.1,
                client_cpu_pct: 50.0,
            }),
            server_cpu_us_per_delivery: Some(cpu),
            server_cpu_pct: Some(50.0),
            engine_cpu_us_per_delivery: None,
            foreign_cpu_pct: Some(0.0),
            attempts: 1,
            error: None,
            probe: None,
        }
    }

    #[test]
    fn medians_and_ratios_to_ngircd() {
        let runs = vec![
            run_of("shardline-uring", Shape::Burst, 2e6, 0.5, true),
            run_of("shardline-uring", Shape::Burst, 4e6, 0.7, true),
            run_of("shardline-uring", Shape::Burst, 3e6, 0.6, false),
            run_of("ngircd", Shape::Burst, 1e6, 1.2, true),
            run_of("ngircd", Shape::Paced, 1e5, 2.0, true),
        ];
        let names = vec!["shardline-uring".to_owned(), "ngircd".to_owned()];
        let rows = summarize(&names, &[Shape::Burst, Shape::Paced], &runs);
        assert_eq!(rows.len(), 3, "{rows:#?}");
        let u = &rows[0];
        assert_eq!(
            (u.server.as_str(), u.shape, u.runs),
            ("shardline-uring", Shape::Burst, 3)
        );
        assert_eq!(u.deliveries_per_s, 3e6);
        assert_eq!(u.server_cpu_us_per_delivery, Some(0.6));
        assert_eq!(u.deliveries_vs_ngircd, Some(3.0));
        assert_eq!(u.cpu_vs_ngircd, Some(0.5));
        assert!(!u.complete);
        assert_eq!(u.lost, 1);
        assert_eq!(rows[1].cpu_vs_ngircd, Some(1.0));
        assert_eq!(rows[2].shape, Shape::Paced);
        let table = render(&rows);
        assert!(table.contains("burst: medians"), "{table}");
        assert!(table.contains("NO (1 lost"), "{table}");
        assert!(table.contains("3000.0k"), "{table}");
        // The JSON shape.
        let json = serde_json::to_value(&rows[0]).unwrap();
        for key in [
            "server",
            "shape",
            "runs",
            "deliveries_per_s",
            "server_cpu_us_per_delivery",
            "p50_us",
            "p99_us",
            "complete",
            "lost",
            "members_out_of_order",
            "deliveries_vs_ngircd",
            "cpu_vs_ngircd",
            "p50_vs_ngircd",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
        assert_eq!(json["shape"], "burst");
    }

    #[test]
    fn coalescing_verdicts_need_both_targets() {
        let mut runs = Vec::new();
        for (name, cpu, p50) in [
            ("ngircd", 8.0, 400.0),
            ("inspircd", 6.0, 450.0),
            ("shardline-uring@off", 5.6, 360.0),
            ("shardline-uring@pace=2000", 3.6, 1200.0),
            ("shardline-uring@pace=100", 3.9, 440.0),
        ] {
            let mut r = run_of(name, Shape::Paced, 1e5, cpu, true);
            r.load.as_mut().unwrap().latency.p50_us = p50;
            runs.push(r);
        }
        let names: Vec<String> = runs.iter().map(|r| r.server.clone()).collect();
        let rows = summarize(&names, &[Shape::Paced], &runs);
        let v = coalesce_verdicts(&rows);
        assert_eq!(v.len(), 3, "every shardline row, no peer: {v:#?}");
        let by = |n: &str| v.iter().find(|x| x.server == n).unwrap();
        assert_eq!(by("shardline-uring@off").p50_vs_ngircd, 0.9);
        assert_eq!(by("shardline-uring@off").cpu_vs_ngircd, 0.7);
        assert!(!by("shardline-uring@off").meets_both, "CPU 0.7× misses");
        assert!(!by("shardline-uring@pace=2000").meets_both, "p50 3× misses");
        assert!(by("shardline-uring@pace=100").meets_both, "1.1× and 0.49×");
        let text = render_coalesce(&v);
        assert!(text.contains("MISSES (CPU)"), "{text}");
        assert!(text.contains("MISSES (p50)"), "{text}");
        assert!(text.contains("meets both"), "{text}");
        // Without ngircd there is nothing to judge.
        let rows = summarize(&names[2..], &[Shape::Paced], &runs);
        assert!(coalesce_verdicts(&rows).is_empty());
    }

    #[test]
    fn history_on_against_off() {
        let mut runs = Vec::new();
        for (round, with, without) in [(1, 1.1, 1.0), (2, 1.4, 1.0), (3, 1.2, 1.0)] {
            let mut r = run_of("shardline-uring", Shape::Paced, 1e5, with, true);
            r.round = round;
            r.probe = Some(ProbeResult {
                chathistory: true,
                requests: 10,
                answers: 10,
                full_answers: 9,
                messages: 990,
                samples_us: (1..=10)
                    .map(|i| f64::from(i) * 100.0 * round as f64)
                    .collect(),
                ..ProbeResult::default()
            });
            runs.push(r);
            let mut r = run_of(
                "shardline-uring-nohistory",
                Shape::Paced,
                1e5,
                without,
                true,
            );
            r.round = round;
            runs.push(r);
        }
        let names = vec![
            "shardline-uring".to_owned(),
            "shardline-uring-nohistory".to_owned(),
        ];
        let rows = summarize(&names, &[Shape::Paced], &runs);
        let spec = Some(ProbeSpec::default());
        let v = history_verdicts(&names, &[Shape::Paced], &runs, &rows, spec);
        assert_eq!(v.len(), 1, "{v:#?}");
        let v = &v[0];
        assert_eq!(v.peer, "shardline-uring-nohistory");
        assert_eq!(v.cpu_ratio, Some(1.2));
        assert_eq!(v.round_cpu_ratios, [1.1, 1.4, 1.2]);
        let p = v.probe.as_ref().unwrap();
        assert_eq!((p.runs, p.answers, p.full_answers), (3, 30, 27));
        assert_eq!(p.messages_per_answer, 99.0);
        // Pooled: 30 samples, 100..=3000 µs; p99 is the largest.
        assert_eq!(p.latency.samples, 30);
        assert_eq!(p.latency.p99_us, 3000.0);
        assert!(!v.meets_target, "1.2× is over 1.15×");
        let text = render_history(std::slice::from_ref(v));
        assert!(text.contains("1.200×"), "{text}");
        assert!(text.contains("p99 3.00 ms"), "{text}");
        assert!(text.contains("MISSES"), "{text}");
        // Under both targets.
        let cheaper: Vec<ChatRun> = runs
            .iter()
            .cloned()
            .map(|mut r| {
                if r.server == "shardline-uring" {
                    r.server_cpu_us_per_delivery = Some(1.05);
                }
                r
            })
            .collect();
        let rows = summarize(&names, &[Shape::Paced], &cheaper);
        let v = history_verdicts(&names, &[Shape::Paced], &cheaper, &rows, spec);
        assert!(v[0].meets_target, "{v:#?}");
        // A bad answer misses it; without a peer there is no verdict.
        let mut bad = cheaper.clone();
        bad[0].probe.as_mut().unwrap().bad_answers = 1;
        let rows = summarize(&names, &[Shape::Paced], &bad);
        assert!(!history_verdicts(&names, &[Shape::Paced], &bad, &rows, spec)[0].meets_target);
        assert!(history_verdicts(&names[..1], &[Shape::Paced], &bad, &rows, spec).is_empty());
    }
}
