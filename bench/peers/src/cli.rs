//! The command line every peer takes: `--addr`, `--threads`, `--cpus`.

use std::{fmt, net::SocketAddr, str::FromStr};

use clap::{error::ErrorKind, CommandFactory, FromArgMatches, Parser};

/// Command line shared by every peer echo server.
#[derive(Debug, Clone, Parser)]
pub struct Args {
    /// Address to listen on, e.g. 127.0.0.1:7000 (port 0 picks a free port; the
    /// `listening on` line names it).
    #[arg(long)]
    pub addr: SocketAddr,
    /// Server threads (each with its own runtime or event loop).
    #[arg(long, default_value_t = 1, value_parser = parse_threads)]
    pub threads: usize,
    /// CPUs to pin to, e.g. `0` or `0,1` or `0-3`: thread i runs on LIST[i % len].
    #[arg(long)]
    pub cpus: Option<CpuList>,
}

impl Args {
    /// Parses the process arguments for the binary `name`; on a bad argument prints
    /// what is wrong and exits with code 2 (clap's usage-error code).
    pub fn parse_for(name: &'static str, about: &'static str) -> Args {
        let mut cmd = Args::command().name(name).bin_name(name).about(about);
        let matches = cmd.get_matches_mut();
        Args::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut cmd).exit())
    }

    /// As [`Args::parse_for`], for a server that runs on exactly one thread: any
    /// `--threads` but 1 is a usage error (exit code 2).
    pub fn parse_single_thread(name: &'static str, about: &'static str) -> Args {
        let args = Args::parse_for(name, about);
        if args.threads != 1 {
            Args::command()
                .name(name)
                .bin_name(name)
                .error(
                    ErrorKind::ValueValidation,
                    format!(
                        "{name} is a single-threaded loop: --threads must be 1 (got {}); \
                         start one process per CPU instead",
                        args.threads
                    ),
                )
                .exit();
        }
        args
    }

    /// The CPU that thread `index` is pinned to, if `--cpus` was given.
    pub fn cpu_for(&self, index: usize) -> Option<usize> {
        self.cpus.as_ref().map(|list| list.0[index % list.0.len()])
    }
}

fn parse_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        Ok(n) => Err(format!("{n} threads: give 1 to 1024")),
        Err(e) => Err(format!("not a thread count: {e}")),
    }
}

/// A non-empty list of CPU ids this process may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

impl FromStr for CpuList {
    type Err = String;

    fn from_str(s: &str) -> Result<CpuList, String> {
        let mut cpus = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let number = |t: &str| {
                t.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("`{part}` is not a CPU id or range (like 0 or 0-3)"))
            };
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (number(lo)?, number(hi)?);
                    if lo > hi {
                        return Err(format!("empty CPU range `{part}`"));
                    }
                    cpus.extend(lo..=hi);
                }
                None => cpus.push(number(part)?),
            }
        }
        // Only CPUs in this process's affinity mask can be pinned to.
        let allowed: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        if let Some(bad) = cpus.iter().find(|c| !allowed.contains(c)) {
            return Err(format!(
                "CPU {bad} is not available to this process (available: {allowed:?})"
            ));
        }
        Ok(CpuList(cpus))
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.0.iter().map(|c| c.to_string()).collect();
        f.write_str(&ids.join(","))
    }
}
