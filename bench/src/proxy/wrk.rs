//! What wrk prints, parsed: requests, rate, the latency distribution, errors.

use serde::Serialize;

/// wrk's socket error counters (`Socket errors: connect N, read N, write N,
/// timeout N`; all 0 when wrk prints no such line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SocketErrors {
    /// Failed connects.
    pub connect: u64,
    /// Failed reads (a connection closed before a complete response included).
    pub read: u64,
    /// Failed writes.
    pub write: u64,
    /// Requests without a response within wrk's `--timeout`.
    pub timeout: u64,
}

impl SocketErrors {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }
}

/// wrk's `--latency` distribution, µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WrkLatency {
    /// 50th percentile.
    pub p50_us: f64,
    /// 75th percentile.
    pub p75_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

/// What one wrk run printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WrkReport {
    /// Completed responses (`N requests in T`).
    pub requests: u64,
    /// wrk's run time, seconds (`in T`).
    pub duration_s: f64,
    /// `Requests/sec`.
    pub rps: f64,
    /// Mean latency (the `Latency` line of the thread stats), µs.
    pub mean_latency_us: f64,
    /// Largest latency, µs.
    pub max_latency_us: f64,
    /// The distribution (absent without `--latency`).
    pub latency: Option<WrkLatency>,
    /// Responses with a status outside 2xx/3xx (`Non-2xx or 3xx responses`).
    pub non_2xx_3xx: u64,
    /// Socket errors.
    pub socket_errors: SocketErrors,
}

impl WrkReport {
    /// Non-2xx/3xx responses plus socket errors.
    pub fn errors(&self) -> u64 {
        self.non_2xx_3xx + self.socket_errors.total()
    }
}

/// A wrk time (`880.00us`, `1.75ms`, `2.01s`, `1.50m`, `1.00h`) in µs.
pub fn parse_wrk_time_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e6)
    } else {
        return None;
    };
    let v: f64 = num.trim().parse().ok()?;
    v.is_finite().then_some(v * mult)
}

/// Parses what `wrk --latency` prints on stdout. Errors say what is missing
/// (wrk prints nothing there when it cannot connect at all).
pub fn parse_wrk(out: &str) -> Result<WrkReport, String> {
    let mut requests_line = None;
    let mut rps = None;
    let mut mean = None;
    let mut max = None;
    let mut dist: [Option<f64>; 4] = [None; 4];
    let mut in_dist = false;
    let mut non_2xx_3xx = 0;
    let mut socket_errors = SocketErrors::default();
    for line in out.lines() {
        let t = line.trim();
        if t == "Latency Distribution" {
            in_dist = true;
            continue;
        }
        if in_dist {
            if let Some((pct, v)) = t.split_once('%') {
                let slot = match pct.trim() {
                    "50" => Some(0),
                    "75" => Some(1),
                    "90" => Some(2),
                    "99" => Some(3),
                    _ => None,
                };
                if let Some(i) = slot {
                    dist[i] = Some(
                        parse_wrk_time_us(v)
                            .ok_or_else(|| format!("bad latency percentile line {t:?}"))?,
                    );
                    continue;
                }
            }
            in_dist = false;
        }
        if let Some(rest) = t.strip_prefix("Latency ") {
            // Latency  AVG  STDEV  MAX  +/-STDEV
            let f: Vec<&str> = rest.split_whitespace().collect();
            mean = f.first().and_then(|x| parse_wrk_time_us(x));
            max = f.get(2).and_then(|x| parse_wrk_time_us(x));
        } else if let Some(rest) = t.strip_prefix("Requests/sec:") {
            rps = rest.trim().parse::<f64>().ok();
        } else if let Some(rest) = t.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx_3xx = rest.trim().parse().map_err(|_| format!("bad line {t:?}"))?;
        } else if let Some(rest) = t.strip_prefix("Socket errors:") {
            for item in rest.split(',') {
                let mut kv = item.split_whitespace();
                let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                    return Err(format!("bad line {t:?}"));
                };
                let v: u64 = v.parse().map_err(|_| format!("bad line {t:?}"))?;
                match k {
                    "connect" => socket_errors.connect = v,
                    "read" => socket_errors.read = v,
                    "write" => socket_errors.write = v,
                    "timeout" => socket_errors.timeout = v,
                    _ => return Err(format!("unknown socket error kind in {t:?}")),
                }
            }
        } else if t.contains(" requests in ") {
            requests_line = Some(t.to_owned());
        }
    }
    let line = requests_line.ok_or("no \"N requests in T\" line")?;
    let mut words = line.split_whitespace();
    let requests: u64 = words
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("bad line {line:?}"))?;
    let duration_us = line
        .split(" requests in ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(parse_wrk_time_us)
        .ok_or_else(|| format!("bad line {line:?}"))?;
    let rps = rps.ok_or("no Requests/sec line")?;
    let latency = match dist {
        [Some(p50_us), Some(p75_us), Some(p90_us), Some(p99_us)] => Some(WrkLatency {
            p50_us,
            p75_us,
            p90_us,
            p99_us,
        }),
        [None, None, None, None] => None,
        _ => return Err("incomplete latency distribution".into()),
    };
    Ok(WrkReport {
        requests,
        duration_s: duration_us / 1e6,
        rps,
        mean_latency_us: mean.ok_or("no Latency line")?,
        max_latency_us: max.ok_or("no Latency line")?,
        latency,
        non_2xx_3xx,
        socket_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = include_str!("../../tests/fixtures/wrk/ok-64c.txt");
    const NO_LATENCY: &str = include_str!("../../tests/fixtures/wrk/no-latency.txt");
    const NON_2XX: &str = include_str!("../../tests/fixtures/wrk/non2xx.txt");
    const READ_ERRORS: &str = include_str!("../../tests/fixtures/wrk/read-errors.txt");
    const TIMEOUTS: &str = include_str!("../../tests/fixtures/wrk/timeouts.txt");
    const TRUNCATED: &str = include_str!("../../tests/fixtures/wrk/truncated-responses.txt");

    #[test]
    fn wrk_times() {
        let near = |s: &str, us: f64| {
            let v = parse_wrk_time_us(s).unwrap_or_else(|| panic!("{s:?} does not parse"));
            assert!((v - us).abs() < 1e-6 * us.max(1.0), "{s:?}: {v} ≠ {us}");
        };
        near("209.00us", 209.0);
        near("0.88ms", 880.0);
        near("2.01s", 2_010_000.0);
        near("1.50m", 90e6);
        near("1.00h", 3600e6);
        assert_eq!(parse_wrk_time_us("-nan%"), None);
        assert_eq!(parse_wrk_time_us("12"), None);
    }

    #[test]
    fn wrk_report_with_latency_distribution() {
        let r = parse_wrk(OK).unwrap();
        assert_eq!(r.requests, 94_077);
        assert!((r.duration_s - 2.01).abs() < 1e-9);
        assert_eq!(r.rps, 46_727.99);
        let near = |a: f64, b: f64| assert!((a - b).abs() < 1e-6, "{a} ≠ {b}");
        near(r.mean_latency_us, 1_150.0);
        near(r.max_latency_us, 7_690.0);
        let l = r.latency.expect("--latency output");
        near(l.p50_us, 880.0);
        near(l.p75_us, 970.0);
        near(l.p90_us, 1_750.0);
        near(l.p99_us, 5_970.0);
        assert_eq!(r.errors(), 0);
    }

    #[test]
    fn wrk_report_without_latency_flag() {
        let r = parse_wrk(NO_LATENCY).unwrap();
        assert_eq!(r.requests, 42_193);
        assert_eq!(r.rps, 41_859.17);
        assert_eq!(r.latency, None);
    }

    #[test]
    fn wrk_errors_are_counted() {
        let r = parse_wrk(NON_2XX).unwrap();
        assert_eq!((r.requests, r.non_2xx_3xx), (12_444, 12_444));
        assert!((r.latency.unwrap().p50_us - 209.0).abs() < 1e-6);
        assert_eq!(r.errors(), 12_444);

        let r = parse_wrk(READ_ERRORS).unwrap();
        assert_eq!(r.requests, 0);
        assert_eq!(
            r.socket_errors,
            SocketErrors {
                connect: 0,
                read: 7_350,
                write: 0,
                timeout: 0
            }
        );

        let r = parse_wrk(TIMEOUTS).unwrap();
        assert_eq!((r.requests, r.socket_errors.timeout), (27, 7));
        assert!((r.latency.unwrap().p99_us - 209_400.0).abs() < 1e-6);
        assert_eq!(r.rps, 6.73);

        let r = parse_wrk(TRUNCATED).unwrap();
        assert_eq!(r.socket_errors.read, 14_437);
        assert_eq!(r.errors(), 14_437);
    }

    #[test]
    fn wrk_failures_are_errors_not_zeros() {
        assert!(parse_wrk("").is_err());
        assert!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n").is_err());
        // Cut before Requests/sec.
        let cut = &OK[..OK.find("Requests/sec").unwrap()];
        assert!(parse_wrk(cut).is_err());
        let bad = OK.replace("     99%    5.97ms", "     99%    soon");
        assert!(parse_wrk(&bad).is_err());
    }
}
