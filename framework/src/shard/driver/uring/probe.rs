//! Whether io_uring can be used here, and the best ring this kernel sets up.

use std::{io, time::Duration};

use io_uring::{opcode, types, IoUring, Probe};
use tracing::debug;

use super::bufring::BufRing;

/// Opcodes we submit, by the name an operator would search for.
const OPCODES: [(&str, u8); 7] = [
    ("ACCEPT (multishot)", opcode::AcceptMulti::CODE),
    ("RECV (buffer select)", opcode::Recv::CODE),
    ("SENDMSG", opcode::SendMsg::CODE),
    ("CONNECT", opcode::Connect::CODE),
    ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ("POLL_ADD (multishot)", opcode::PollAdd::CODE),
    ("READ", opcode::Read::CODE),
];

/// Whether this process can use io_uring the way this driver does; `Err` says why not.
///
/// The probe ring is made and closed on a thread of its own. The kernel tears
/// a closed ring down later, from a worker, and then queues "signal" task work
/// (TWA_SIGNAL) on every task that used it: on the caller's thread that would
/// interrupt whatever blocking call it is in by then — a socket read with a
/// timeout returns EINTR, which `std::io::Read::read` passes on. A thread
/// that has exited is no longer a target.
pub(crate) fn probe() -> Result<(), String> {
    std::thread::Builder::new()
        .name("shardline-probe".into())
        .spawn(probe_here)
        .map_err(|e| format!("could not start the io_uring probe thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("the io_uring probe panicked".into()))
}

fn probe_here() -> Result<(), String> {
    let (ring, _) = build_ring(8).map_err(|e| setup_failure(&e))?;
    let mut probe = Probe::new();
    let probed = ring.submitter().register_probe(&mut probe);
    probed.map_err(|e| format!("io_uring opcode probe failed: {e}"))?;
    if let Some((name, _)) = OPCODES.iter().find(|(_, code)| !probe.is_supported(*code)) {
        return Err(format!("io_uring lacks opcode {name}"));
    }
    if !ring.params().is_feature_ext_arg() {
        return Err("io_uring lacks IORING_FEAT_EXT_ARG (waiting with a timeout)".into());
    }
    let mut bufs = BufRing::with_own_memory(1, 64).map_err(|e| e.to_string())?;
    let no_bufs = |e: io::Error| format!("io_uring provided-buffer rings unusable: {e}");
    bufs.register(&ring).map_err(no_bufs)?;
    bufs.unregister(&ring).map_err(no_bufs)
}

fn setup_failure(e: &io::Error) -> String {
    let knob = "/proc/sys/kernel/io_uring_disabled";
    match e.raw_os_error() {
        Some(libc::ENOSYS) => "kernel has no io_uring (io_uring_setup: ENOSYS)".into(),
        Some(libc::EPERM | libc::EACCES) => match std::fs::read_to_string(knob) {
            Ok(v) => format!(
                "io_uring not permitted ({e}); {knob} is {} (0 on, 1 group only, 2 off)",
                v.trim()
            ),
            Err(_) => format!("io_uring not permitted ({e}); seccomp or a container policy?"),
        },
        _ => format!("io_uring_setup failed: {e}"),
    }
}

/// The best ring this kernel accepts, and which setup that was.
pub(super) fn build_ring(entries: u32) -> io::Result<(IoUring, &'static str)> {
    let cq = entries.saturating_mul(4);
    let hopeless = |e: &io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::ENOSYS | libc::EPERM | libc::EACCES)
        )
    };
    let mut builder = IoUring::builder();
    builder.setup_single_issuer().setup_defer_taskrun();
    let err = match builder.setup_submit_all().setup_cqsize(cq).build(entries) {
        Ok(ring) => return Ok((ring, "single_issuer+defer_taskrun")),
        Err(e) if hopeless(&e) => return Err(e),
        Err(e) => e,
    };
    debug!(error = %err, "io_uring: SINGLE_ISSUER+DEFER_TASKRUN refused; trying COOP_TASKRUN");
    let err = match IoUring::builder()
        .setup_coop_taskrun()
        .setup_cqsize(cq)
        .build(entries)
    {
        Ok(ring) => return Ok((ring, "coop_taskrun")),
        Err(e) => e,
    };
    debug!(error = %err, "io_uring: COOP_TASKRUN refused; trying a plain ring");
    Ok((IoUring::builder().setup_cqsize(cq).build(entries)?, "plain"))
}

/// Whether `ring`'s kernel has the SPLICE opcode and synchronous cancellation
/// (Linux 6.0), which relays rely on to close a pipe or socket safely.
pub(super) fn splice_support(ring: &IoUring) -> bool {
    let mut probe = Probe::new();
    if ring.submitter().register_probe(&mut probe).is_err()
        || !probe.is_supported(opcode::Splice::CODE)
    {
        return false;
    }
    // Cancelling nothing: ENOENT if the kernel knows the call.
    let nothing = types::CancelBuilder::user_data(u64::MAX);
    let timeout = types::Timespec::from(Duration::from_millis(1));
    match ring
        .submitter()
        .register_sync_cancel(Some(timeout), nothing)
    {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::ENOENT),
    }
}
