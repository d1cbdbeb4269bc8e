//! The high-watermark checkpoint: Kafka's `replication-offset-checkpoint` file in the data
//! dir, so a restarted replica knows how far its log is committed before any fetch tells
//! it (without it, a replica that comes back as leader would start from its log start).
//!
//! Format, as Kafka's `OffsetCheckpointFile`: a version line (0), a count line, then one
//! `topic partition offset` line per partition.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

pub const FILE: &str = "replication-offset-checkpoint";

/// The checkpointed high watermarks by (topic, partition); empty when the file is missing
/// or damaged (then each replica starts from its log start and learns the rest from its
/// leader, which is slower but safe).
pub fn read(data_dir: &Path) -> HashMap<(String, i32), i64> {
    let Ok(text) = fs::read_to_string(data_dir.join(FILE)) else {
        return HashMap::new();
    };
    parse(&text).unwrap_or_else(|| {
        tracing::warn!(dir = %data_dir.display(), "ignoring a damaged {FILE}");
        HashMap::new()
    })
}

fn parse(text: &str) -> Option<HashMap<(String, i32), i64>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut offsets = HashMap::with_capacity(count);
    for line in lines.by_ref().take(count) {
        let mut fields = line.split_whitespace();
        let (topic, partition, offset) = (fields.next()?, fields.next()?, fields.next()?);
        if fields.next().is_some() {
            return None;
        }
        offsets.insert(
            (topic.to_string(), partition.parse().ok()?),
            offset.parse().ok()?,
        );
    }
    (offsets.len() == count && lines.next().is_none()).then_some(offsets)
}

/// Replaces the checkpoint with `offsets` durably (temporary file, fsync, rename, fsync of
/// the directory): a crash leaves the old file or the new one.
pub fn write(data_dir: &Path, offsets: &[(String, i32, i64)]) -> std::io::Result<()> {
    let mut text = format!("0\n{}\n", offsets.len());
    for (topic, partition, offset) in offsets {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, data_dir.join(FILE))?;
    fs::File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_offsets_read_back_and_damage_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).is_empty());
        write(
            dir.path(),
            &[("orders".into(), 0, 42), ("orders".into(), 1, 7)],
        )
        .unwrap();
        let read_back = read(dir.path());
        assert_eq!(read_back.len(), 2);
        assert_eq!(read_back[&("orders".to_string(), 1)], 7);
        for damaged in [
            "1\n1\na 0 1\n",
            "0\n2\na 0 1\n",
            "0\n1\na x 1\n",
            "0\n1\na 0 1 2\n",
        ] {
            assert_eq!(parse(damaged), None, "{damaged:?}");
        }
    }
}
