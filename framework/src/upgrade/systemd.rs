//! `sd_notify(3)`: telling systemd the service is ready, or that another
//! process is now its main process.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` ("READY=1", "MAINPID=1234\nREADY=1", "STOPPING=1", …) to
/// systemd when it asked for notifications (`Type=notify`: `$NOTIFY_SOCKET`).
/// Returns whether it was sent; without `$NOTIFY_SOCKET` it is a no-op (false).
/// Errors are returned as text for the caller to log: a failed notification
/// never stops a server.
pub fn notify(state: &str) -> Result<bool, String> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => <SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name),
        None => SocketAddr::from_pathname(std::path::Path::new(&path)),
    }
    .map_err(|e| format!("NOTIFY_SOCKET {path:?}: {e}"))?;
    let sock = UnixDatagram::unbound().map_err(|e| format!("notify socket: {e}"))?;
    sock.send_to_addr(state.as_bytes(), &addr)
        .map_err(|e| format!("notifying systemd ({path:?}): {e}"))?;
    Ok(true)
}
