//! Reading a partition log back: header check, record scan, torn-tail
//! truncation, and refusal of damage that is not a torn tail.

use std::{io, sync::Arc};

use tracing::{info, warn};

use super::{
    codec::{self, check_header, decode, frame_at, DecodeError, Frame, HeaderProblem, Record},
    disk::{Disk, DiskFile},
    error::StoreError,
    lock::DataDir,
    memory::Memory,
};

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every byte was a valid record.
    Clean,
    /// The records end at `at`: what follows is an incomplete or damaged frame
    /// with no valid record after it — an interrupted write.
    Torn { at: usize },
    /// A damaged frame at `at`, and a valid record at `next`.
    Corrupt { at: usize, next: usize },
}

/// The size of the valid, decodable frame at `off`, if there is one.
fn decodable_at(buf: &[u8], off: usize) -> Option<usize> {
    match frame_at(buf, off) {
        Frame::Valid { len } => {
            let start = off + codec::FRAME_HEADER;
            decode(&buf[start..start + len]).ok()?;
            Some(codec::FRAME_HEADER + len)
        }
        Frame::Truncated | Frame::Bad => None,
    }
}

/// The first offset from `from` where a valid record starts that is followed
/// by the end of the file, another valid record, or a frame cut by the end of
/// the file. (A lone checksum match followed by garbage is taken as chance — or
/// as bytes inside a record's text — not as a record.)
fn next_valid(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find(|&q| {
        decodable_at(buf, q).is_some_and(|size| {
            let end = q + size;
            end == buf.len()
                || decodable_at(buf, end).is_some()
                || frame_at(buf, end) == Frame::Truncated
        })
    })
}

/// Scans the records of `buf` from `start`, handing each (and its frame size)
/// to `apply`. Fails at a record whose checksum is good but which does not
/// decode (a bug or a newer format), with its offset.
pub(crate) fn scan(
    buf: &[u8],
    start: usize,
    mut apply: impl FnMut(Record, usize),
) -> Result<ScanEnd, (usize, DecodeError)> {
    let mut off = start;
    while off < buf.len() {
        match frame_at(buf, off) {
            Frame::Valid { len } => {
                let size = codec::FRAME_HEADER + len;
                let rec =
                    decode(&buf[off + codec::FRAME_HEADER..off + size]).map_err(|e| (off, e))?;
                apply(rec, size);
                off += size;
            }
            Frame::Truncated | Frame::Bad => {
                return Ok(match next_valid(buf, off + 1) {
                    Some(next) => ScanEnd::Corrupt { at: off, next },
                    None => ScanEnd::Torn { at: off },
                });
            }
        }
    }
    Ok(ScanEnd::Clean)
}

/// A partition log opened for appending after recovery.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) file: Arc<dyn DiskFile>,
    /// Its length: where the next record goes.
    pub(crate) len: u64,
    /// Whether it was (re)created: its directory entry needs a sync.
    pub(crate) created: bool,
}

/// Opens partition `p`'s log in `dir` (creating it with its header if
/// missing), replays its records into `mem`, and truncates a torn tail. With
/// `salvage`, damage followed by valid records is truncated too (and logged)
/// instead of refused.
pub(crate) fn recover_partition(
    dir: &DataDir,
    p: u16,
    disk: &dyn Disk,
    mem: &mut Memory,
    salvage: bool,
) -> Result<Opened, StoreError> {
    let path = dir.log_path(p);
    let tmp = dir.compact_path(p);
    match std::fs::remove_file(&tmp) {
        Ok(()) => info!(path = %tmp.display(), "removed an unfinished compaction"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io("remove", tmp, e)),
    }
    let buf = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(StoreError::io("read", path, e)),
    };
    match check_header(&buf, p) {
        Ok(()) => {}
        Err(HeaderProblem::Invalid(reason)) => return Err(StoreError::BadHeader { path, reason }),
        Err(HeaderProblem::Partial) => {
            if !buf.is_empty() {
                warn!(
                    path = %path.display(),
                    bytes = buf.len(),
                    "partition file holds only part of a header (its creation was cut short); \
                     rewriting it"
                );
            }
            let file = disk
                .open_append(&path)
                .map_err(|e| StoreError::io("open", &path, e))?;
            // No sync: a header lost to a crash is rewritten at the next open,
            // and the first records' sync covers it. The directory entry is
            // synced once for all new files by the caller.
            let h = codec::header(p);
            file.truncate(0)
                .and_then(|()| file.write_all(&h))
                .map_err(|e| StoreError::io("write header of", &path, e))?;
            return Ok(Opened {
                file,
                len: h.len() as u64,
                created: true,
            });
        }
    }
    let end = scan(&buf, codec::HEADER_LEN, |r, size| mem.replay(r, size));
    let keep = match end {
        Ok(ScanEnd::Clean) => buf.len(),
        Ok(ScanEnd::Torn { at }) => {
            warn!(
                path = %path.display(),
                offset = at,
                dropped_bytes = buf.len() - at,
                "dropping a torn tail (a write cut short by a crash)"
            );
            at
        }
        Ok(ScanEnd::Corrupt { at, next }) if salvage => {
            warn!(
                path = %path.display(),
                offset = at,
                next_valid = next,
                dropped_bytes = buf.len() - at,
                "salvage: truncating at a damaged record, dropping the valid records after it"
            );
            at
        }
        Ok(ScanEnd::Corrupt { at, next }) => {
            return Err(StoreError::Corrupt {
                path,
                offset: at as u64,
                next_valid: next as u64,
            })
        }
        Err((at, e)) if salvage => {
            warn!(
                path = %path.display(),
                offset = at,
                error = %e,
                dropped_bytes = buf.len() - at,
                "salvage: truncating at a record that does not decode"
            );
            at
        }
        Err((at, e)) => {
            return Err(StoreError::Undecodable {
                path,
                offset: at as u64,
                reason: e.to_string(),
            })
        }
    };
    let file = disk
        .open_append(&path)
        .map_err(|e| StoreError::io("open", &path, e))?;
    if keep < buf.len() {
        file.truncate(keep as u64)
            .and_then(|()| file.sync())
            .map_err(|e| StoreError::io("truncate", &path, e))?;
    }
    Ok(Opened {
        file,
        len: keep as u64,
        created: false,
    })
}

/// Reads `[0, upto)` of partition `p`'s log and replays it into `mem`,
/// refusing anything but whole valid records (what compaction reads: bytes
/// this process wrote).
pub(crate) fn replay_exact(
    path: &std::path::Path,
    p: u16,
    upto: u64,
    mem: &mut Memory,
) -> Result<(), String> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(upto).read_to_end(&mut buf))
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    if buf.len() as u64 != upto {
        return Err(format!(
            "{} is shorter ({} bytes) than written ({upto})",
            path.display(),
            buf.len()
        ));
    }
    check_header(&buf, p).map_err(|e| format!("{}: {e:?}", path.display()))?;
    match scan(&buf, codec::HEADER_LEN, |r, size| mem.replay(r, size)) {
        Ok(ScanEnd::Clean) => Ok(()),
        Ok(ScanEnd::Torn { at } | ScanEnd::Corrupt { at, .. }) => {
            Err(format!("{}: damaged record at byte {at}", path.display()))
        }
        Err((at, e)) => Err(format!("{}: record at byte {at}: {e}", path.display())),
    }
}
