//! The `shardline-chat` binary as a child process, for what needs a real
//! process: `kill -9`, restarts on a data directory, upgrades between two
//! processes. Its output is collected for [`Binary::wait_log`].

use std::{
    ffi::OsString,
    io::BufRead,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use shardline::Io;

use super::{Client, WAIT};

/// A running `shardline-chat`, killed if the test fails before it stops it.
pub struct Binary {
    pub child: Child,
    /// Where it serves IRC.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    pub label: String,
}

impl Binary {
    /// Starts it on `shards` shards with the configuration file `config` and
    /// the data directory `data`, on a free port; returns once it serves.
    pub fn start_with_data(io: Io, shards: usize, config: &Path, data: &Path) -> Binary {
        let addr = super::free_port();
        let mut args: Vec<OsString> = vec!["--config".into(), config.into()];
        args.extend(["--data-dir".into(), data.into()]);
        let b = Binary::spawn(io, shards, addr, &args);
        b.wait_log("server started", 1);
        b
    }

    /// Starts it listening on `addr` with `args` besides the backend and shard
    /// count; returns at once (see [`Binary::wait_log`]).
    pub fn spawn(io: Io, shards: usize, addr: SocketAddr, args: &[OsString]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardline-chat"))
            .args(args)
            .args(["--listen", &addr.to_string()])
            .args(["--shards", &shards.to_string()])
            .args(["--io", &io.to_string(), "--no-pin"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shardline-chat");
        let log = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let log = log.clone();
            thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    log.lock().expect("log").push(line);
                }
            });
        }
        Binary {
            child,
            addr,
            log,
            label: format!("--io {io} --shards {shards}"),
        }
    }

    /// Its output so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// Waits (bounded) until `n` lines of its output contain `text`; returns
    /// the output so far.
    pub fn wait_log(&self, text: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log();
            if log.iter().filter(|l| l.contains(text)).count() >= n {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{}: waited for {n} log lines with {text:?}:\n{}",
                self.label,
                log.join("\n")
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// A client registered as `nick` with the capabilities `caps`.
    pub fn client(&self, nick: &str, caps: &str) -> Client {
        let mut c = Client::connect_to(self.addr, &self.label);
        c.register_with_caps(nick, caps);
        c
    }

    /// Waits (bounded) for it to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: still running:\n{}",
                self.label,
                self.log().join("\n")
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and a clean exit (bounded); returns its output.
    pub fn stop(mut self) -> Vec<String> {
        // SAFETY: kill(2) on our own child, not reaped yet.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        let status = self.wait_exit();
        assert!(status.success(), "{}: exit status {status}", self.label);
        thread::sleep(Duration::from_millis(50));
        self.log()
    }

    /// SIGKILL: no shutdown at all.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
