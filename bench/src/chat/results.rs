//! What `chat` reports: the run records, medians and ratios to ngircd, the
//! progress lines and the table, and the JSON shapes.

use serde::Serialize;

use super::scenario::{LoadResult, Scenario, Shape};
use crate::{
    experiment::{self, median_of, median_of_some},
    machine::MachineInfo,
    report::{self, round},
};

/// The reference server for the ratio columns.
pub const REFERENCE: &str = "ngircd";

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
    /// CPU other processes used during the window, in % of one CPU (machine busy
    /// time from /proc/stat minus the server's and the harness's).
    pub foreign_cpu_pct: Option<f64>,
    /// Measurements made for this slot (more than 1: earlier ones were noisy).
    pub attempts: usize,
    /// Why the run failed.
    pub error: Option<String>,
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
            foreign_cpu_pct: None,
            attempts,
            error: Some(error),
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
    /// Median server CPU µs per delivery.
    pub server_cpu_us_per_delivery: Option<f64>,
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
}

/// What `chat --json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct ChatOutput {
    /// Medians per server and shape.
    pub results: Vec<ChatRow>,
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
        ),
        (None, e) => format!(
            "round {} {:<16} {}: failed: {}",
            run.round,
            run.server,
            run.shape,
            e.as_deref().unwrap_or("unknown error")
        ),
    }
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
                p50_us: round(median_of(&loads, |l| l.latency.p50_us).unwrap_or(0.0), 2),
                p99_us: round(median_of(&loads, |l| l.latency.p99_us).unwrap_or(0.0), 2),
                complete: !failed && loads.iter().all(|l| l.complete),
                lost: loads.iter().map(|l| l.lost).sum(),
                members_out_of_order: loads.iter().map(|l| l.members_out_of_order).sum(),
                deliveries_vs_ngircd: None,
                cpu_vs_ngircd: None,
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
            foreign_cpu_pct: Some(0.0),
            attempts: 1,
            error: None,
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
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
        assert_eq!(json["shape"], "burst");
    }
}
