//! Errors: opening a store (clear, naming the file) and writing at run time.

use std::{io, path::PathBuf, sync::Arc};

/// Why a store could not be opened, or a call was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another [`super::DataDir`] in this one) holds the
    /// directory's lock.
    #[error("data directory {dir} is in use by process {pid}")]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// What the lock file says (the holder's pid), or `unknown`.
        pid: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("open", "read", "truncate", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A partition file's header is wrong: not a store file, another version,
    /// or another partition's file.
    #[error("{path}: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A damaged record with good records after it: not a torn tail, so not
    /// dropped silently.
    #[error(
        "{path}: damaged record at byte {offset}, but a valid record follows at byte \
         {next_valid}; refusing to drop the records after it (a disk fault, or a power \
         loss in a mode without fsync — see the store's durability policy). Move the \
         file aside or open with salvage to truncate it at byte {offset}"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// Where the next record with a valid checksum starts.
        next_valid: u64,
    },
    /// A record with a valid checksum that this version cannot decode.
    #[error("{path}: record at byte {offset} does not decode: {reason}")]
    Undecodable {
        /// The file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The key's partition is not one this store opened (another shard owns
    /// it).
    #[error("key {key:?} is in partition {partition}, which this store does not own")]
    NotOwned {
        /// The key.
        key: String,
        /// Its partition.
        partition: u16,
    },
    /// The record would be larger than the format allows.
    #[error("record too large ({0} bytes)")]
    TooLarge(usize),
    /// The writer thread is gone (it could not start, or the store is closed).
    #[error("the store's writer thread has stopped")]
    WriterGone,
    /// The store let go of its data directory for a new process (an
    /// upgrade, [`super::Store::detach`]): it serves from memory only.
    #[error("the data directory was handed over to a new process (an upgrade)")]
    Detached,
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Why a write failed at run time (what an account ticket completes with).
/// Cheap to clone: one is shared by every record of a failed write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    /// The kind of the underlying I/O error (`StorageFull`, `ReadOnlyFilesystem`,
    /// ...).
    pub kind: io::ErrorKind,
    /// What failed, with the file.
    pub message: Arc<str>,
}

impl WriteError {
    pub(crate) fn new(op: &str, path: &std::path::Path, e: &io::Error) -> WriteError {
        WriteError {
            kind: e.kind(),
            message: format!("{op} {}: {e}", path.display()).into(),
        }
    }
}
