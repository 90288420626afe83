//! `proxy`: HTTP/1.1 reverse proxies under wrk. shardline-proxy (io_uring and
//! epoll), HAProxy and nginx, each with the same worker count, in front of the same
//! backend (an nginx answering 13 bytes), keep-alive on both sides; plus a
//! `direct` run of wrk against the backend, to tell what each proxy adds to the
//! latency. Interleaved A B C … A B C over rounds, medians quoted.
//!
//! The headline number is requests per proxy CPU-second: requests wrk completed ÷
//! the proxy's utime + stime over the run (every thread, and every process it
//! forked), from /proc. It depends on the proxy's own work; requests per second
//! also depend on wrk and the backend, which share the other CPU.
//!
//! - `wrk`: what wrk prints, parsed;
//! - `harness`: proxies × rounds ([`run`]), starting them, measuring a run;
//! - `results`: run records, medians, ratios, verdicts, the table, the JSON;
//! - `tls`, `tlsrun`: `proxy --tls`, the same proxies terminating TLS 1.3, with
//!   connections kept alive (wrk over https) and with one new connection and full
//!   handshake per request (a client of the harness's own, [`handshake_load`]).

use shardline::Io;

mod harness;
mod results;
mod tls;
mod tlsrun;
mod wrk;

pub use self::{
    harness::{check_forwarding, default_pinning, run, wrk_args, wrk_args_url, ProxyConfig},
    results::{
        best_peer, render, summarize, verdicts, ProxyOutput, ProxyRow, ProxyRun, ProxySetup,
        Verdict,
    },
    tls::{
        check_forwarding_tls, client_config, handshake_load, parse_response, HandshakeLoad,
        HandshakeOutcome, TlsMaterial, TlsSeen, CIPHER_SUITE, KX_GROUP, SERVER_NAME,
        WRK_OPENSSL_CONF,
    },
    tlsrun::{
        render_tls, run_tls, summarize_mode, ProxyTlsOutput, TlsMode, TlsModeResult, TlsRow,
        TlsSetup,
    },
    wrk::{parse_wrk, parse_wrk_time_us, SocketErrors, WrkLatency, WrkReport},
};

/// Every proxy the harness knows, in run order.
pub const PROXIES: [&str; 5] = [
    "direct",
    "shardline-uring",
    "shardline-epoll",
    "haproxy",
    "nginx",
];

/// The established proxies shardline-proxy is measured against.
pub const PEERS: [&str; 2] = ["haproxy", "nginx"];

/// The target: requests per proxy CPU-second at least this × the better
/// peer's, with a p99 no worse.
pub const TARGET_RATIO: f64 = 1.05;

/// What wrk runs through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// No proxy: wrk against the backend itself.
    Direct,
    /// shardline-proxy on this I/O backend.
    Shardline(Io),
    /// HAProxy.
    Haproxy,
    /// nginx as a reverse proxy.
    Nginx,
}

impl Proxy {
    /// Name in reports.
    pub fn name(&self) -> String {
        match self {
            Proxy::Direct => "direct".into(),
            Proxy::Shardline(io) => format!("shardline-{io}"),
            Proxy::Haproxy => "haproxy".into(),
            Proxy::Nginx => "nginx".into(),
        }
    }

    /// Parses one of [`PROXIES`].
    pub fn parse(name: &str) -> Result<Proxy, String> {
        match name.trim() {
            "direct" => Ok(Proxy::Direct),
            "shardline-uring" => Ok(Proxy::Shardline(Io::Uring)),
            "shardline-epoll" => Ok(Proxy::Shardline(Io::Epoll)),
            "haproxy" => Ok(Proxy::Haproxy),
            "nginx" => Ok(Proxy::Nginx),
            other => Err(format!(
                "unknown proxy {other:?} (known: {})",
                PROXIES.join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_names_parse() {
        for name in PROXIES {
            assert_eq!(Proxy::parse(name).unwrap().name(), name);
        }
        assert!(Proxy::parse("envoy").is_err());
    }
}
