//! One segment of a log: a `.log` file of consecutive record batches plus its indexes.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use odradek_protocol::batch::{self, BatchHeader};
use tracing::{error, warn};

use crate::index::{OffsetPosition, TimestampOffset};
use crate::log::UnsyncedFile;
use crate::recovery_point::RecoveryPoint;
use crate::{OffsetIndex, StorageError, TimeIndex, offset_file_stem};

/// Bytes read per `pread` while scanning a segment during recovery or index rebuilds.
const SCAN_CHUNK: usize = 1 << 20;

#[derive(Debug)]
pub struct LogSegment {
    base_offset: i64,
    log_path: PathBuf,
    file: Arc<File>,
    /// Bytes of complete batches; always on a batch boundary.
    size: u64,
    /// One past the last offset stored here (the base offset while empty).
    next_offset: i64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    bytes_since_last_index_entry: u64,
    /// Wall-clock time of the first append, which `segment.ms` rolling counts from.
    first_append_ms: Option<i64>,
}

/// Writes every byte of `parts`, in order, at `offset`: `pwritev`, repeated after a short
/// write.
fn write_all_vectored_at(file: &File, parts: &[&[u8]], mut offset: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    let mut start = 0;
    while start < parts.len() {
        let iov: Vec<libc::iovec> = parts[start..]
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let count = libc::c_int::try_from(iov.len()).unwrap_or(libc::c_int::MAX);
        let at = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::other("file offset beyond off_t"))?;
        // SAFETY: every iovec points into a live slice of `parts` for the call's duration.
        let written = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), count, at) };
        if written < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut written = written as usize;
        offset += written as u64;
        while written > 0 {
            let first = parts[start];
            if written >= first.len() {
                written -= first.len();
                start += 1;
            } else {
                parts[start] = &first[written..];
                written = 0;
            }
        }
    }
    Ok(())
}

/// How far to trust a segment found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// Rolled, or closed cleanly: use its indexes if they are consistent.
    Trusted,
    /// The active segment after a crash: check every batch's CRC and cut a torn tail.
    Recover,
}

/// Why a scan stopped before the end of the file.
struct ScanStop {
    reason: String,
    /// A whole batch failed its CRC or broke the offset order: the data was damaged, not
    /// merely cut short by a crash in the middle of a write.
    corrupt: bool,
}

impl ScanStop {
    fn torn(reason: String) -> Self {
        Self {
            reason,
            corrupt: false,
        }
    }
    fn corrupt(reason: String) -> Self {
        Self {
            reason,
            corrupt: true,
        }
    }
}

/// A batch found while scanning a segment.
struct ScannedBatch {
    position: u64,
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    size: u64,
}

impl LogSegment {
    fn paths(dir: &Path, base_offset: i64) -> (PathBuf, PathBuf, PathBuf) {
        let stem = offset_file_stem(base_offset);
        (
            dir.join(format!("{stem}.log")),
            dir.join(format!("{stem}.index")),
            dir.join(format!("{stem}.timeindex")),
        )
    }

    fn open_file(path: &Path, create: bool) -> Result<File, StorageError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .open(path)
            .map_err(|e| StorageError::io(path, e))
    }

    fn empty(base_offset: i64, log_path: PathBuf, file: File) -> Self {
        Self {
            base_offset,
            log_path,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            bytes_since_last_index_entry: 0,
            first_append_ms: None,
        }
    }

    /// Creates a new, empty segment file. The caller syncs the directory before relying on it.
    pub(crate) fn create(dir: &Path, base_offset: i64) -> Result<Self, StorageError> {
        let (log_path, index_path, time_path) = Self::paths(dir, base_offset);
        let file = Self::open_file(&log_path, true)?;
        file.set_len(0)
            .map_err(|e| StorageError::io(&log_path, e))?;
        // Indexes of an earlier segment at this offset would describe other bytes.
        for stale in [index_path, time_path] {
            let _ = fs::remove_file(stale);
        }
        Ok(Self::empty(base_offset, log_path, file))
    }

    /// Creates an empty segment file at `log_path` (not the usual name): the cleaner writes
    /// its output under a temporary name and renames it into place.
    pub(crate) fn create_at(log_path: PathBuf, base_offset: i64) -> Result<Self, StorageError> {
        let file = Self::open_file(&log_path, true)?;
        file.set_len(0)
            .map_err(|e| StorageError::io(&log_path, e))?;
        Ok(Self::empty(base_offset, log_path, file))
    }

    /// Opens an existing segment. Returns it and the number of bytes cut from its tail.
    /// In `Recover` mode, `resume` (a recovery point of this segment) spares checking the
    /// bytes it covers, which were synced before it was written.
    pub(crate) fn open(
        dir: &Path,
        base_offset: i64,
        mode: OpenMode,
        index_interval_bytes: u64,
        resume: Option<RecoveryPoint>,
    ) -> Result<(Self, u64), StorageError> {
        let (log_path, index_path, time_path) = Self::paths(dir, base_offset);
        let file = Self::open_file(&log_path, false)?;
        let file_len = file
            .metadata()
            .map_err(|e| StorageError::io(&log_path, e))?
            .len();
        let mut segment = Self::empty(base_offset, log_path, file);

        let indexes = match mode {
            // A power loss before the log's next flush can leave a rolled segment's
            // indexes missing, short or zero-filled: those are rebuilt from the segment.
            OpenMode::Trusted => OffsetIndex::read_from(&index_path)
                .filter(|i| i.is_consistent(file_len))
                .zip(TimeIndex::read_from(&time_path).filter(TimeIndex::is_consistent)),
            OpenMode::Recover => None,
        };
        let resume = resume.filter(|p| {
            mode == OpenMode::Recover && p.base_offset == base_offset && p.position <= file_len
        });
        let scan_from = match (indexes, resume) {
            (_, Some(point)) => {
                segment.offset_index = point.offset_index;
                segment.time_index = point.time_index;
                segment.max_timestamp = point.max_timestamp;
                segment.offset_of_max_timestamp = point.offset_of_max_timestamp;
                segment.next_offset = point.next_offset;
                segment.size = point.position;
                point.position
            }
            (indexes, None) => match indexes {
                Some((offset_index, time_index)) => {
                    // Only the batches after the last index entry need reading to find the end.
                    let from = offset_index.entries().last().map_or(0, |e| e.position);
                    segment.offset_index = offset_index;
                    if let Some(last) = time_index.entries().last() {
                        segment.max_timestamp = last.timestamp;
                        segment.offset_of_max_timestamp =
                            base_offset + i64::from(last.relative_offset);
                    }
                    segment.time_index = time_index;
                    segment.size = u64::from(from);
                    if let Some(last) = segment.offset_index.entries().last() {
                        segment.next_offset = base_offset + i64::from(last.relative_offset);
                    }
                    u64::from(from)
                }
                None => 0,
            },
        };
        let verify_crc = mode == OpenMode::Recover;
        let rebuild_index = scan_from == 0;
        let mut valid_end = scan_from;
        let mut stop: Option<ScanStop> = None;
        let (file, path) = (segment.file.clone(), segment.log_path.clone());
        Self::scan(
            &file,
            &path,
            scan_from,
            file_len,
            verify_crc,
            |found| match found {
                Ok(b) => {
                    // Offsets must continue the segment and stay within its 32-bit index
                    // range; the CRC does not cover the base offset, and a trusted
                    // segment's CRCs are not checked at all.
                    let problem = if b.base_offset < segment.next_offset {
                        Some(format!(
                            "offset {} below the expected {}",
                            b.base_offset, segment.next_offset
                        ))
                    } else if b.last_offset < b.base_offset {
                        Some(format!(
                            "last offset {} below its base offset {}",
                            b.last_offset, b.base_offset
                        ))
                    } else if b.last_offset - base_offset > i64::from(u32::MAX) {
                        Some(format!(
                            "offset {} beyond the segment's range",
                            b.last_offset
                        ))
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        stop = Some(ScanStop::corrupt(format!(
                            "batch at position {} has {problem}",
                            b.position
                        )));
                        return false;
                    }
                    if rebuild_index || b.position > scan_from {
                        segment.index_batch(&b, index_interval_bytes);
                    } else {
                        segment.note_timestamp(&b);
                    }
                    segment.next_offset = b.last_offset + 1;
                    valid_end = b.position + b.size;
                    true
                }
                Err(reason) => {
                    stop = Some(reason);
                    false
                }
            },
        )?;
        segment.size = valid_end;
        let truncated = file_len - valid_end;
        if truncated > 0 {
            let reason = stop
                .as_ref()
                .map_or("incomplete batch at the tail", |s| &s.reason);
            // A torn tail is what a crash mid-write leaves, and was never acknowledged as
            // durable. Damage inside a whole batch, or anything to cut from a segment whose
            // writes had finished, is lost data that an operator must hear about.
            if stop.as_ref().is_some_and(|s| s.corrupt) || mode == OpenMode::Trusted {
                error!(
                    segment = %segment.log_path.display(),
                    valid_bytes = valid_end,
                    dropped_bytes = truncated,
                    first_dropped_offset = segment.next_offset,
                    reason,
                    "corrupt segment: dropping every batch from the first bad one"
                );
            } else {
                warn!(
                    segment = %segment.log_path.display(),
                    valid_bytes = valid_end,
                    truncated_bytes = truncated,
                    reason,
                    "truncating segment tail during recovery"
                );
            }
            segment
                .file
                .set_len(valid_end)
                .map_err(|e| StorageError::io(&segment.log_path, e))?;
            segment
                .file
                .sync_all()
                .map_err(|e| StorageError::io(&segment.log_path, e))?;
        }
        if segment.size > 0 {
            // Unknown after a restart; counting `segment.ms` from now errs towards keeping data.
            segment.first_append_ms = Some(now_ms());
        }
        Ok((segment, truncated))
    }

    /// Walks the batches between `from` and `to`, handing each to `visit` until it returns
    /// false. A batch that is incomplete, malformed or (when `verify_crc`) fails its CRC is
    /// reported as `Err` with the reason, which ends the scan.
    fn scan(
        file: &File,
        path: &Path,
        from: u64,
        to: u64,
        verify_crc: bool,
        mut visit: impl FnMut(Result<ScannedBatch, ScanStop>) -> bool,
    ) -> Result<(), StorageError> {
        let mut pos = from;
        let mut buf = Vec::new();
        // Bytes the next read must cover to hold a whole batch larger than a chunk.
        let mut need = 0usize;
        while pos < to {
            let left = usize::try_from(to - pos).unwrap_or(usize::MAX);
            buf.resize(left.min(need.max(SCAN_CHUNK)), 0);
            need = 0;
            file.read_exact_at(&mut buf, pos)
                .map_err(|e| StorageError::io(path, e))?;
            let mut consumed = 0usize;
            while let Some(header) = BatchHeader::parse(&buf[consumed..]) {
                let at = pos + consumed as u64;
                let size = header.total_size();
                if size < batch::HEADER_LEN || header.magic() != 2 {
                    visit(Err(ScanStop::torn(format!(
                        "malformed batch header at position {at}"
                    ))));
                    return Ok(());
                }
                if consumed + size > buf.len() {
                    if at + size as u64 > to {
                        visit(Err(ScanStop::torn(format!(
                            "incomplete batch at position {at}"
                        ))));
                        return Ok(());
                    }
                    need = size;
                    break;
                }
                let bytes = &buf[consumed..consumed + size];
                if verify_crc && let Err(e) = batch::verify_crc(bytes) {
                    visit(Err(ScanStop::corrupt(format!("{e} at position {at}"))));
                    return Ok(());
                }
                let found = ScannedBatch {
                    position: at,
                    base_offset: header.base_offset(),
                    last_offset: header.last_offset(),
                    max_timestamp: header.max_timestamp(),
                    size: size as u64,
                };
                if !visit(Ok(found)) {
                    return Ok(());
                }
                consumed += size;
            }
            if consumed == 0 && need == 0 {
                visit(Err(ScanStop::torn(format!(
                    "incomplete batch header at position {pos}"
                ))));
                return Ok(());
            }
            pos += consumed as u64;
        }
        Ok(())
    }

    fn note_timestamp(&mut self, b: &ScannedBatch) {
        if b.max_timestamp > self.max_timestamp {
            self.max_timestamp = b.max_timestamp;
            self.offset_of_max_timestamp = b.last_offset;
        }
    }

    /// Updates the in-memory indexes for a batch stored at `b.position`.
    fn index_batch(&mut self, b: &ScannedBatch, index_interval_bytes: u64) {
        self.note_timestamp(b);
        if self.bytes_since_last_index_entry >= index_interval_bytes
            || self.offset_index.entries().is_empty()
        {
            let relative_offset = self.relative(b.base_offset);
            self.offset_index.push(OffsetPosition {
                relative_offset,
                position: b.position as u32,
            });
            if self
                .time_index
                .max_timestamp()
                .is_none_or(|t| self.max_timestamp > t)
            {
                self.time_index.push(TimestampOffset {
                    timestamp: self.max_timestamp,
                    relative_offset,
                });
            }
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += b.size;
    }

    // Cannot fail: the log rolls to a new segment before an offset would not fit (see
    // `fits`), and recovery stops at a batch beyond the range or below the base offset.
    #[allow(clippy::expect_used)]
    fn relative(&self, offset: i64) -> u32 {
        u32::try_from(offset - self.base_offset)
            .expect("a segment's offsets lie within 2^32 above its base offset")
    }

    /// Whether a batch ending at `last_offset` and of `size` bytes can go in this segment
    /// without overflowing the 32-bit relative offsets and positions of its indexes.
    pub(crate) fn fits(&self, last_offset: i64, size: u64) -> bool {
        last_offset - self.base_offset <= i64::from(u32::MAX)
            && self.size + size <= u64::from(u32::MAX)
    }

    /// Appends one batch whose offsets are already assigned, given as consecutive parts (the
    /// rewritten header and the untouched rest, written with one `pwritev`, so produced
    /// bytes are not copied to be stored). On a failed or short write the file is cut back
    /// so no partial batch is ever visible.
    pub(crate) fn append(
        &mut self,
        parts: &[&[u8]],
        now_ms: i64,
        index_interval_bytes: u64,
    ) -> Result<(), StorageError> {
        let header =
            crate::log::header_of(parts.first().copied().unwrap_or_default(), &self.log_path)?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if let Err(e) = write_all_vectored_at(&self.file, parts, self.size) {
            if let Err(cut) = self.file.set_len(self.size) {
                warn!(segment = %self.log_path.display(), error = %cut, "cannot cut back a failed append");
                return Err(StorageError::Offline(self.log_path.clone()));
            }
            return Err(StorageError::io(&self.log_path, e));
        }
        let found = ScannedBatch {
            position: self.size,
            base_offset: header.base_offset(),
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp(),
            size: len as u64,
        };
        self.index_batch(&found, index_interval_bytes);
        self.size += found.size;
        self.next_offset = found.last_offset + 1;
        self.first_append_ms.get_or_insert(now_ms);
        Ok(())
    }

    /// The segment's state as of now, for a recovery point once its bytes are synced.
    pub(crate) fn recovery_point(&self) -> RecoveryPoint {
        RecoveryPoint {
            base_offset: self.base_offset,
            position: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            offset_of_max_timestamp: self.offset_of_max_timestamp,
            offset_index: self.offset_index.clone(),
            time_index: self.time_index.clone(),
        }
    }

    /// The partition directory the segment's files are in. `log_path` always names a file
    /// in it; a bare file name would mean the current directory, which `""` stands for.
    fn dir(&self) -> &Path {
        self.log_path.parent().unwrap_or(Path::new(""))
    }

    /// Removes the segment's files.
    pub(crate) fn delete_files(&self) -> Result<(), StorageError> {
        self.delete_index_files()?;
        let (log, _, _) = Self::paths(self.dir(), self.base_offset);
        fs::remove_file(&log).map_err(|e| StorageError::io(log, e))
    }

    /// Removes the segment's index files, if there are any.
    fn delete_index_files(&self) -> Result<(), StorageError> {
        let (_, index, time) = Self::paths(self.dir(), self.base_offset);
        for path in [index, time] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(path, e)),
            }
        }
        Ok(())
    }

    /// Cuts the file to its first `position` bytes (a batch boundary), durably, for a log
    /// truncation. The index files on disk go first: they describe the bytes being cut, and
    /// the log is re-opened from disk afterwards, which rebuilds the indexes of what is left.
    /// The caller syncs the directory.
    pub(crate) fn cut_file_to(&self, position: u64) -> Result<(), StorageError> {
        self.delete_index_files()?;
        if position < self.size {
            let io = |e| StorageError::io(&self.log_path, e);
            self.file.set_len(position).map_err(io)?;
            self.file.sync_all().map_err(io)?;
        }
        Ok(())
    }

    /// Writes the indexes, once the segment will receive no more appends or at shutdown,
    /// into the page cache: the caller syncs the returned files.
    pub(crate) fn write_indexes(&self) -> Result<[UnsyncedFile; 2], StorageError> {
        let (_, index_path, time_path) = Self::paths(self.dir(), self.base_offset);
        self.write_indexes_to(index_path, time_path)
    }

    /// Writes the indexes to the given paths (the cleaner's temporary files), unsynced.
    pub(crate) fn write_indexes_to(
        &self,
        index_path: PathBuf,
        time_path: PathBuf,
    ) -> Result<[UnsyncedFile; 2], StorageError> {
        let index = Arc::new(self.offset_index.write_to(&index_path)?);
        let time = Arc::new(self.time_index.write_to(&time_path)?);
        Ok([(index, index_path), (time, time_path)])
    }

    /// Records the file's name after a rename (the open file is unaffected).
    pub(crate) fn set_log_path(&mut self, path: PathBuf) {
        self.log_path = path;
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    pub fn offset_of_max_timestamp(&self) -> i64 {
        self.offset_of_max_timestamp
    }
    pub(crate) fn first_append_ms(&self) -> Option<i64> {
        self.first_append_ms
    }
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }
    pub(crate) fn offset_index(&self) -> &OffsetIndex {
        &self.offset_index
    }
    pub(crate) fn time_index(&self) -> &TimeIndex {
        &self.time_index
    }
}

/// Milliseconds since the Unix epoch, the clock Kafka timestamps use.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectored_writes_land_in_order_at_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        file.write_all_at(b"0123", 0).unwrap();
        let big = vec![7u8; 3 << 20];
        write_all_vectored_at(&file, &[b"ab", b"", &big, b"z"], 4).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..6], b"0123ab");
        assert_eq!(bytes.len(), 4 + 2 + big.len() + 1);
        assert!(bytes[6..6 + big.len()].iter().all(|&b| b == 7));
        assert_eq!(bytes.last(), Some(&b'z'));
    }
}
