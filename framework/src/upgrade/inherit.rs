//! Listening sockets a process did not bind itself: from the process it
//! upgrades (a handover) or from systemd (`LISTEN_FDS`), grouped by address.

use std::{fmt, net::SocketAddr, os::fd::OwnedFd};

use socket2::{Socket, Type};

use crate::error::Error;

/// Listening TCP sockets handed to this process, grouped by the address they
/// are bound to. Give them to
/// [`ServerBuilder::inherit_listeners`](crate::ServerBuilder::inherit_listeners);
/// see [`crate::upgrade`] for how they are matched and shared out.
pub struct InheritedListeners {
    /// (address, sockets bound to it), in the order first seen.
    groups: Vec<(SocketAddr, Vec<Socket>)>,
    from: String,
}

impl fmt::Debug for InheritedListeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InheritedListeners")
            .field("from", &self.from)
            .field(
                "groups",
                &self
                    .groups
                    .iter()
                    .map(|(a, s)| (*a, s.len()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl InheritedListeners {
    /// None yet; `from` says where they come from (for logs).
    pub(crate) fn new(from: impl Into<String>) -> InheritedListeners {
        InheritedListeners {
            groups: Vec::new(),
            from: from.into(),
        }
    }

    /// Where these sockets came from ("pid 1234", "systemd").
    pub fn source(&self) -> &str {
        &self.from
    }

    /// The addresses, each with how many sockets are bound to it.
    pub fn addrs(&self) -> Vec<(SocketAddr, usize)> {
        self.groups.iter().map(|(a, s)| (*a, s.len())).collect()
    }

    /// No socket at all.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Adds `fd` after checking it is a listening TCP socket; `claimed`, if
    /// given, must be the address it is bound to. Makes it non-blocking and
    /// close-on-exec.
    pub(crate) fn push(&mut self, fd: OwnedFd, claimed: Option<SocketAddr>) -> Result<(), Error> {
        let socket = Socket::from(fd);
        let bad = |why: String| Error::Upgrade(format!("an inherited descriptor {why}"));
        match socket.r#type() {
            Ok(t) if t == Type::STREAM => {}
            Ok(_) => return Err(bad("is not a stream socket".into())),
            Err(e) => return Err(bad(format!("is not a socket ({e})"))),
        }
        if !socket.is_listener().map_err(|e| bad(format!("({e})")))? {
            return Err(bad("is not a listening socket".into()));
        }
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| bad("is not a TCP/IP socket".into()))?;
        if let Some(c) = claimed {
            if c != addr {
                return Err(bad(format!("said to be bound to {c} is bound to {addr}")));
            }
        }
        socket
            .set_nonblocking(true)
            .and_then(|()| socket.set_cloexec(true))
            .map_err(|e| bad(format!("bound to {addr} cannot be set up ({e})")))?;
        match self.groups.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, list)) => list.push(socket),
            None => self.groups.push((addr, vec![socket])),
        }
        Ok(())
    }

    /// Takes the sockets bound to exactly `addr`.
    pub(crate) fn take(&mut self, addr: SocketAddr) -> Vec<Socket> {
        match self.groups.iter().position(|(a, _)| *a == addr) {
            Some(i) => self.groups.remove(i).1,
            None => Vec::new(),
        }
    }

    /// What no configured address took.
    pub(crate) fn leftover(&mut self) -> Vec<(SocketAddr, usize)> {
        let left = self.addrs();
        self.groups.clear();
        left
    }

    /// The sockets systemd passed (socket activation: `LISTEN_PID` is this
    /// process, `LISTEN_FDS` sockets from fd 3 on), or `None` when there are
    /// none. Every one must be a listening TCP socket (`ListenStream=` with an
    /// address or port); anything else is an error. The variables are removed
    /// so children do not see them: call this early, before other threads
    /// start.
    pub fn from_systemd() -> Result<Option<InheritedListeners>, Error> {
        let Some(pid) = std::env::var_os("LISTEN_PID") else {
            return Ok(None);
        };
        let fds = std::env::var_os("LISTEN_FDS");
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
        let pid: u32 = pid
            .to_str()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| Error::Upgrade("LISTEN_PID is not a number".into()))?;
        if pid != std::process::id() {
            // Meant for another process (a parent that did not clear it).
            return Ok(None);
        }
        let n: i32 = fds
            .as_ref()
            .and_then(|f| f.to_str())
            .and_then(|f| f.parse().ok())
            .filter(|n| (0..=4096).contains(n))
            .ok_or_else(|| Error::Upgrade("LISTEN_FDS is missing or not a count".into()))?;
        let mut out = InheritedListeners::new("systemd");
        for fd in 3..3 + n {
            // SAFETY: sd_listen_fds(3): descriptors 3 .. 3+LISTEN_FDS are passed
            // to this process (LISTEN_PID checked above) for it to own; nothing
            // else in the process uses them.
            let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            out.push(owned, None)
                .map_err(|e| Error::Upgrade(format!("systemd's fd {fd}: {e}")))?;
        }
        Ok((!out.is_empty()).then_some(out))
    }
}
