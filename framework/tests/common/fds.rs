//! The process's open-files limit, for the tests that lower it (one such test
//! per binary: the limit is per process).

/// The current RLIMIT_NOFILE.
pub fn rlimit() -> libc::rlimit {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid local struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    r
}

/// Sets the soft limit (at most the hard one).
pub fn set_soft_nofile(n: u64) {
    let mut r = rlimit();
    r.rlim_cur = n.min(r.rlim_max);
    // SAFETY: setrlimit reads a valid local struct.
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) },
        0,
        "setrlimit"
    );
}

/// The highest fd number open now (fds above the soft limit would fail to open).
pub fn highest_fd() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}
