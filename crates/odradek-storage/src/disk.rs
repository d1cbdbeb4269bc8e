//! What the file system holding the logs has room for.

use std::path::Path;

use crate::StorageError;

/// Total and usable bytes of the file system holding `dir`, as Kafka reports them in
/// DescribeLogDirs (`FileStore.getTotalSpace` / `getUsableSpace`: usable is what an
/// unprivileged writer may still use, so it excludes the blocks reserved for root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub total_bytes: u64,
    pub usable_bytes: u64,
}

impl DiskSpace {
    pub fn of(dir: &Path) -> Result<Self, StorageError> {
        use std::os::unix::ffi::OsStrExt;
        let io = |e| StorageError::io(dir, e);
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `path` is a NUL-terminated string and `stats` has room for the struct
        // the call fills in; it is read only when the call succeeded.
        let stats = unsafe {
            if libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) != 0 {
                return Err(io(std::io::Error::last_os_error()));
            }
            stats.assume_init()
        };
        let block = stats.f_frsize;
        Ok(Self {
            total_bytes: stats.f_blocks.saturating_mul(block),
            usable_bytes: stats.f_bavail.saturating_mul(block),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_reports_its_file_system_and_a_missing_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::of(dir.path()).unwrap();
        assert!(space.total_bytes > 0);
        assert!(space.usable_bytes <= space.total_bytes);
        assert!(DiskSpace::of(&dir.path().join("missing")).is_err());
    }
}
