//! The data directory and its lock: one process at a time.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Seek, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::error::StoreError;

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "lock";

/// An open data directory, locked for this process: an exclusive `flock` on
/// `DIR/lock`, which holds the holder's pid. Every shard's [`super::Store`]
/// keeps a clone; the lock is released when the last one is dropped (or the
/// process dies — `flock` locks never outlive their holder).
///
/// `flock` belongs to an open file description, so a second `DataDir::open`
/// of the same directory fails even within one process.
#[derive(Debug, Clone)]
pub struct DataDir {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Unlock explicitly rather than by closing: a process forked meanwhile
        // (any thread's `Command::spawn`) holds a duplicate of this descriptor
        // until its exec, and the lock lives as long as any duplicate does.
        // LOCK_UN releases it for every duplicate at once.
        // SAFETY: flock on a descriptor this struct owns; no memory is passed.
        unsafe { libc::flock(self._lock.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl DataDir {
    /// Creates `path` if missing and locks it. Fails with
    /// [`StoreError::Locked`] ("data directory DIR is in use by process PID")
    /// if another holder has it, and with a clear I/O error if it cannot be
    /// created or written.
    pub fn open(path: impl AsRef<Path>) -> Result<DataDir, StoreError> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path)
            .map_err(|e| StoreError::io("create data directory", &path, e))?;
        let lock_path = path.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| StoreError::io("open lock file", &lock_path, e))?;
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(StoreError::Locked {
                    dir: path,
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.to_owned()
                    },
                });
            }
            return Err(StoreError::io("lock", &lock_path, e));
        }
        let write_pid = |f: &mut File| -> io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())
        };
        write_pid(&mut file).map_err(|e| StoreError::io("write lock file", &lock_path, e))?;
        Ok(DataDir {
            inner: Arc::new(Inner { path, _lock: file }),
        })
    }

    /// Lets go of the lock while keeping the directory open (an upgrade: the
    /// new process takes it). Every store of this directory must have stopped
    /// writing first ([`super::Store::detach`]).
    pub fn unlock(&self) {
        // SAFETY: flock on a descriptor this struct owns; no memory is passed.
        unsafe { libc::flock(self.inner._lock.as_raw_fd(), libc::LOCK_UN) };
    }

    /// Takes the lock back after [`DataDir::unlock`] (an upgrade that failed):
    /// [`StoreError::Locked`] if another process holds it now.
    pub fn relock(&self) -> Result<(), StoreError> {
        let lock_path = self.inner.path.join(LOCK_FILE);
        let fd = self.inner._lock.as_raw_fd();
        // SAFETY: flock on a descriptor this struct owns; no memory is passed.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let pid = std::fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(StoreError::Locked {
                    dir: self.inner.path.clone(),
                    pid: match pid.trim() {
                        "" => "unknown".to_owned(),
                        p => p.to_owned(),
                    },
                });
            }
            return Err(StoreError::io("lock", &lock_path, e));
        }
        // The pid is rewritten through another description of the same file
        // (this one is shared, read-only by reference).
        std::fs::write(&lock_path, format!("{}\n", std::process::id()))
            .map_err(|e| StoreError::io("write lock file", &lock_path, e))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The log file of partition `p`: `DIR/pNN.log`.
    pub fn log_path(&self, p: u16) -> PathBuf {
        self.inner.path.join(format!("p{p:02}.log"))
    }

    /// Where compaction writes partition `p`'s new log before renaming it.
    pub(crate) fn compact_path(&self, p: u16) -> PathBuf {
        self.inner.path.join(format!("p{p:02}.log.compact"))
    }
}
