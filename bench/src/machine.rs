//! What the harness needs to know about this machine and its own threads: CPUs it
//! may use, pinning, thread CPU time, file-descriptor limit, a one-line description
//! for reports, and today's date.

use std::{fs, time::Duration};

use anyhow::{bail, Context as _};
use serde::Serialize;

/// CPUs (OS indexes) this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread to `cpus` (it may run on any of them).
pub fn pin_current_thread(cpus: &[usize]) -> anyhow::Result<()> {
    if cpus.is_empty() {
        bail!("empty CPU list");
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in bounds
    // because indexes are checked against CPU_SETSIZE first.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if c >= libc::CPU_SETSIZE as usize {
                bail!("CPU {c} is out of range");
            }
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sched_setaffinity({cpus:?})"));
        }
    }
    Ok(())
}

/// CPU time (user + system) the calling thread has used.
pub fn thread_cpu_time() -> Duration {
    // SAFETY: a zeroed timespec is valid; clock_gettime fills it.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) != 0 {
            return Duration::ZERO;
        }
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

/// Parses a CPU list: `0`, `0,2`, `1-3`, `0,2-5`.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let num = |n: &str| {
            n.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad CPU list {s:?}: items are numbers or ranges a-b"))
        };
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("bad CPU range {item:?}"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(item)?),
        }
    }
    if cpus.is_empty() {
        return Err("empty CPU list".into());
    }
    Ok(cpus)
}

/// Formats a CPU list the way [`parse_cpus`] reads it.
pub fn format_cpus(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The soft limit on open files (RLIMIT_NOFILE).
pub fn nofile_limit() -> u64 {
    // SAFETY: a zeroed rlimit is valid; getrlimit fills it.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        r.rlim_cur
    }
}

/// The shape of the machine, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// Total memory in GiB.
    pub mem_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// UTC date of the run, YYYY-MM-DD.
    pub date: String,
    /// 1-minute load average when this was read: above ~0.5 on an idle 2-CPU
    /// machine, something else was running beside the benchmark.
    pub loadavg_1m: f64,
}

impl MachineInfo {
    /// Reads this machine.
    pub fn read() -> MachineInfo {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        MachineInfo {
            cpu_model,
            cpus: allowed_cpus().len(),
            mem_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel,
            date: today_utc(),
            loadavg_1m: loadavg_1m(),
        }
    }

    /// One line: "2 CPUs (model), 24 GiB, Linux 6.x, 2026-01-01, load 0.1".
    pub fn line(&self) -> String {
        format!(
            "{} CPUs ({}), {} GiB, Linux {}, {}, load average {:.2}",
            self.cpus, self.cpu_model, self.mem_gib, self.kernel, self.date, self.loadavg_1m
        )
    }

    /// Prints the machine line, and a warning when other work is running.
    pub fn announce() -> MachineInfo {
        let m = MachineInfo::read();
        println!("machine: {}", m.line());
        if m.loadavg_1m > 0.5 {
            println!(
                "warning: load average {:.2} before starting: other processes are using the CPUs, \
                 so absolute numbers will be low and noisy (interleaving keeps ratios fairer)",
                m.loadavg_1m
            );
        }
        m
    }
}

/// user + nice + system + steal of the `cpu` line of /proc/stat, in ticks.
pub fn parse_busy_ticks(stat: &str) -> Option<u64> {
    let f = cpu_line(stat)?;
    // user nice system idle iowait irq softirq steal ...
    Some(f.first()? + f.get(1)? + f.get(2)? + f.get(7).copied().unwrap_or(0))
}

/// The tick counts of the `cpu` (all CPUs) line of /proc/stat.
fn cpu_line(stat: &str) -> Option<Vec<u64>> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    line.split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect()
}

/// Busy CPU time of the whole machine so far *including* interrupt and softirq
/// time (user + nice + system + irq + softirq + steal, from /proc/stat). With
/// tick-based CPU accounting (no `CONFIG_IRQ_TIME_ACCOUNTING`, as on the VMs here)
/// a tick that lands in softirq is charged to the interrupted process's stime as
/// well as to /proc/stat's softirq column, so subtracting process times from this
/// sum leaves what other processes (and the hypervisor, as steal) took. Loopback
/// TCP does much of its work in softirq: without it that difference comes out
/// ~15 % of a busy CPU too low.
pub fn busy_time_with_irq() -> Option<Duration> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let ticks = parse_busy_ticks_with_irq(&stat)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// user + nice + system + irq + softirq + steal of the `cpu` line of /proc/stat,
/// in ticks.
pub fn parse_busy_ticks_with_irq(stat: &str) -> Option<u64> {
    let f = cpu_line(stat)?;
    Some(parse_busy_ticks(stat)? + f.get(5)? + f.get(6)?)
}

/// The 1-minute load average from /proc/loadavg.
pub fn loadavg_1m() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}

/// Today's date in UTC as YYYY-MM-DD.
pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = shardline::time::civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpus("0"), Ok(vec![0]));
        assert_eq!(parse_cpus("0,2-4"), Ok(vec![0, 2, 3, 4]));
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("").is_err());
        assert!(parse_cpus("x").is_err());
        assert_eq!(format_cpus(&[0, 1]), "0,1");
    }

    #[test]
    fn busy_ticks() {
        let stat = "cpu  100 5 50 1000 3 7 9 11 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_busy_ticks(stat), Some(166));
        assert_eq!(parse_busy_ticks_with_irq(stat), Some(182));
        assert!(busy_time_with_irq().is_some());
        assert_eq!(parse_busy_ticks("intr 1\n"), None);
    }
}
