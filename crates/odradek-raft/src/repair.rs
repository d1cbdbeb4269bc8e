//! The way out when the log refuses to open because of damage in its middle: every entry
//! that is still intact is kept, and each one that is not is replaced by a blank entry at
//! its index, so the log stays contiguous. Only the lost entries' records are gone; on a
//! node of a larger quorum the leader sends a follower what it lacks, but a single voter
//! has no one to ask.
//!
//! The damaged segment files are kept beside the repaired ones (`*.damaged-<seconds>`).

use std::fs;
use std::path::{Path, PathBuf};

use openraft::EntryPayload;

use crate::fsutil::{sync_dir, write_atomic};
use crate::log_store::{LOG_DIR, StoreError, encode, parse_frame, segment_path, valid_frame_after};
use crate::types::Entry;

/// A stretch of a segment file that holds no intact entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedStretch {
    pub path: PathBuf,
    pub start: u64,
    pub end: u64,
}

/// What a repair finds, and does when asked.
#[derive(Debug, Default)]
pub struct LogRepair {
    pub damaged: Vec<DamagedStretch>,
    /// Indexes of entries that cannot be read back: they become blank entries.
    pub lost: Vec<u64>,
    /// Intact entries kept.
    pub kept: usize,
    /// Where each damaged segment file was kept, once the repair is applied.
    pub kept_damaged_files: Vec<PathBuf>,
}

struct SegmentScan {
    base: u64,
    path: PathBuf,
    entries: Vec<Entry>,
    damaged: Vec<DamagedStretch>,
}

fn scan_segment(path: PathBuf, base: u64) -> Result<SegmentScan, StoreError> {
    let data = fs::read(&path).map_err(|source| StoreError::Io {
        path: path.clone(),
        source,
    })?;
    let mut scan = SegmentScan {
        base,
        path,
        entries: Vec::new(),
        damaged: Vec::new(),
    };
    let mut pos = 0;
    while pos < data.len() {
        match parse_frame(&data, pos) {
            Ok((entry, size)) => {
                scan.entries.push(entry);
                pos += size;
            }
            Err(_) => {
                let end = valid_frame_after(&data, pos).unwrap_or(data.len());
                scan.damaged.push(DamagedStretch {
                    path: scan.path.clone(),
                    start: pos as u64,
                    end: end as u64,
                });
                pos = end;
            }
        }
    }
    Ok(scan)
}

/// Finds the damage in the log under `dir` (the quorum's directory) and, with `apply`,
/// rewrites each damaged segment. Run it only while no node uses `dir`.
pub fn repair_log(dir: &Path, apply: bool) -> Result<LogRepair, StoreError> {
    let log_dir = dir.join(LOG_DIR);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let mut bases: Vec<u64> = match fs::read_dir(&log_dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(&log_dir)(e)),
    };
    bases.sort_unstable();
    let scans = bases
        .iter()
        .map(|&base| scan_segment(segment_path(&log_dir, base), base))
        .collect::<Result<Vec<_>, _>>()?;
    let mut report = LogRepair::default();
    for (i, scan) in scans.iter().enumerate() {
        report.kept += scan.entries.len();
        report.damaged.extend(scan.damaged.iter().cloned());
        if scan.damaged.is_empty() {
            continue;
        }
        // The entries this segment should hold run from its base to the next segment's
        // base; past the last segment, to its last intact entry (a torn tail loses nothing
        // that was acknowledged).
        let end = scans
            .get(i + 1)
            .map(|next| next.base)
            .or_else(|| scan.entries.last().map(|e| e.log_id.index + 1))
            .unwrap_or(scan.base);
        let mut rebuilt = Vec::new();
        let mut intact = scan.entries.iter().peekable();
        for index in scan.base..end {
            match intact.peek() {
                Some(entry) if entry.log_id.index == index => {
                    rebuilt.push((*entry).clone());
                    intact.next();
                }
                _ => {
                    // The lost entry's term lies between its neighbours'; the next one's
                    // keeps the log's terms ascending.
                    let leader_id = scan
                        .entries
                        .iter()
                        .find(|e| e.log_id.index > index)
                        .or(scan.entries.last())
                        .map(|e| e.log_id.leader_id)
                        .unwrap_or_default();
                    report.lost.push(index);
                    rebuilt.push(Entry {
                        log_id: openraft::LogId::new(leader_id, index),
                        payload: EntryPayload::Blank,
                    });
                }
            }
        }
        if !apply {
            continue;
        }
        let mut bytes = Vec::new();
        for entry in &rebuilt {
            encode(entry, &mut bytes).map_err(|e| StoreError::Corrupt {
                path: scan.path.clone(),
                offset: 0,
                reason: format!("re-encoding an entry: {e}"),
            })?;
        }
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut kept_name = scan.path.file_name().unwrap_or_default().to_os_string();
        kept_name.push(format!(".damaged-{seconds}"));
        let kept = log_dir.join(kept_name);
        fs::copy(&scan.path, &kept).map_err(io(&kept))?;
        write_atomic(&scan.path, &bytes).map_err(io(&scan.path))?;
        report.kept_damaged_files.push(kept);
    }
    if apply && !report.kept_damaged_files.is_empty() {
        sync_dir(&log_dir).map_err(io(&log_dir))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_store::LogStore;
    use crate::types::Batch;

    fn entry(term: u64, index: u64, record: &str) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Batch {
                records: vec![bytes::Bytes::from(record.to_string())],
            }),
        }
    }

    #[test]
    fn a_damaged_entry_in_the_middle_becomes_blank_and_the_rest_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join(LOG_DIR);
        fs::create_dir_all(&log_dir).unwrap();
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for i in 0..5 {
            starts.push(bytes.len());
            encode(&entry(1, i, &format!("record {i}")), &mut bytes).unwrap();
        }
        bytes[starts[2] + 20] ^= 0x01;
        let segment = segment_path(&log_dir, 0);
        fs::write(&segment, &bytes).unwrap();
        let refused = LogStore::open(dir.path(), 1 << 20).unwrap_err();
        assert!(
            matches!(refused, StoreError::Corrupt { offset, .. } if offset == starts[2] as u64)
        );

        let plan = repair_log(dir.path(), false).unwrap();
        assert_eq!(plan.lost, [2]);
        assert_eq!(plan.kept, 4);
        assert_eq!(fs::read(&segment).unwrap(), bytes, "a plan changes nothing");

        let done = repair_log(dir.path(), true).unwrap();
        assert_eq!(fs::read(&done.kept_damaged_files[0]).unwrap(), bytes);
        LogStore::open(dir.path(), 1 << 20).expect("the repaired log opens");
        let again = repair_log(dir.path(), false).unwrap();
        assert!(again.damaged.is_empty() && again.lost.is_empty());
        assert_eq!(again.kept, 5);
    }
}
