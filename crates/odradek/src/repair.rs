//! `odradek repair metadata`: the way out when start-up refuses a metadata log damaged in the
//! middle. It shows what a repair would drop and acts only with `--apply`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use odradek_broker::metadata::{MetadataImage, MetadataLog, MetadataStore};
use odradek_broker::{lock_data_dir, stray_partition_dirs};

#[derive(clap::Subcommand)]
pub enum RepairCommand {
    /// Drop the damaged stretches of the metadata log (`__cluster_metadata-0/metadata.log`),
    /// keeping every intact record. Stop the broker first. Without --apply, only shows what
    /// would be dropped.
    Metadata {
        /// The broker's data directory (log.dirs).
        #[arg(long, value_name = "DIR", default_value = "./odradek-data")]
        data_dir: PathBuf,
        /// Repair: the damaged file is kept beside the new one as metadata.log.damaged-<time>.
        #[arg(long)]
        apply: bool,
    },
}

pub fn run(command: RepairCommand) -> anyhow::Result<()> {
    match command {
        RepairCommand::Metadata { data_dir, apply } => metadata(&data_dir, apply),
    }
}

fn metadata(data_dir: &Path, apply: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        data_dir.is_dir(),
        "{} is not a data directory",
        data_dir.display()
    );
    let _lock = lock_data_dir(data_dir)?;
    let dir = data_dir.join("__cluster_metadata-0");
    let mut damaged = false;
    if MetadataLog::path_in(&dir).exists() {
        damaged |= file_log(data_dir, &dir, apply)?;
    }
    damaged |= quorum_log(&dir, apply)?;
    if !damaged {
        println!("Nothing to repair.");
    } else if !apply {
        println!("Nothing changed. Run again with --apply to repair.");
    }
    Ok(())
}

/// The log's records dropped by damage show as text: a person can tell which topic or
/// config they were about.
fn file_log(data_dir: &Path, dir: &Path, apply: bool) -> anyhow::Result<bool> {
    let path = MetadataLog::path_in(dir);
    let scan = MetadataLog::scan(dir)?;
    println!(
        "{}: {} bytes, {} intact records, {} damaged stretches",
        path.display(),
        scan.len,
        scan.records.len(),
        scan.damaged.len()
    );
    if scan.damaged.is_empty() {
        return Ok(false);
    }
    for damage in &scan.damaged {
        println!(
            "dropped: bytes {}..{} ({} bytes), readable as: {}",
            damage.start,
            damage.end,
            damage.end - damage.start,
            damage.preview.escape_debug()
        );
    }
    let mut image = MetadataImage::default();
    for (_, record) in &scan.records {
        image.apply(record);
    }
    let topics: Vec<&str> = image.topics().map(|t| t.name.as_str()).collect();
    println!(
        "The repaired metadata holds {} topics: {}",
        topics.len(),
        topics.join(", ")
    );
    for stray in stray_partition_dirs(data_dir, &image) {
        println!(
            "{} belongs to no topic then: the broker will set it aside (rename it …-stray), not delete it",
            stray.display()
        );
    }
    if apply
        && let Some(kept) =
            MetadataLog::repair(dir).with_context(|| format!("repairing {}", path.display()))?
    {
        println!("Repaired. The damaged file is kept as {}.", kept.display());
    }
    Ok(true)
}

/// The quorum's log: a lost entry becomes a blank one at its index, so the log stays whole.
fn quorum_log(dir: &Path, apply: bool) -> anyhow::Result<bool> {
    let repair = MetadataStore::repair(dir, apply)?;
    println!(
        "{}: {} intact entries, {} damaged stretches",
        dir.join("raft-log").display(),
        repair.kept,
        repair.damaged.len()
    );
    if repair.damaged.is_empty() {
        return Ok(false);
    }
    for damage in &repair.damaged {
        println!(
            "dropped: bytes {}..{} of {} ({} bytes)",
            damage.start,
            damage.end,
            damage.path.display(),
            damage.end - damage.start
        );
    }
    println!(
        "Entries whose records are lost (they become blank): {:?}. A topic one of them created \
         loses its metadata: the broker sets its partition directories aside (…-stray), never \
         deletes them.",
        repair.lost
    );
    if repair.lost.contains(&0) {
        println!(
            "Entry 0 holds the quorum's membership: without it this node cannot lead. Restore \
             {} from a backup instead (docs/operations.md).",
            dir.display()
        );
    }
    for kept in &repair.kept_damaged_files {
        println!(
            "Repaired. The damaged segment is kept as {}.",
            kept.display()
        );
    }
    Ok(true)
}
