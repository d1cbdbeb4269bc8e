//! A partition directory found on disk: a segment and its offset index, opened as after a
//! clean shutdown (indexes trusted) or a crash (every batch checked), then read end to
//! end, searched by timestamp and appended to.
//! Input: [flags u8][index length u16 BE][index bytes][segment bytes].
#![no_main]

use std::fs;

use libfuzzer_sys::fuzz_target;
use odradek_protocol::batch;
use odradek_storage::{Log, LogConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let (index, segment) = rest.split_at(usize::from(u16::from_be_bytes(*len)).min(rest.len()));
    // tmpfs when there is one: recovery and close fsync, which a disk makes slow.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir");
    fs::write(dir.path().join("00000000000000000000.log"), segment).expect("segment");
    fs::write(dir.path().join("00000000000000000000.index"), index).expect("index");
    let config = LogConfig {
        index_interval_bytes: 128,
        ..LogConfig::default()
    };
    let clean_shutdown = flags & 1 == 1;
    let Ok(mut log) = Log::open(dir.path(), config, clean_shutdown) else {
        return;
    };
    let end = log.log_end_offset();
    assert!(log.log_start_offset() <= end);
    let mut next = log.log_start_offset();
    while next < end {
        let Ok(read) = log.prepare_read(next, 1 << 16, true).and_then(|r| r.read()) else {
            break;
        };
        let Some(last) = batch::complete_batches(&read.records)
            .map(|(h, _)| h.last_offset())
            .last()
        else {
            break;
        };
        assert!(last >= next, "a read from {next} ended at {last}");
        next = last + 1;
    }
    let _ = log.offset_for_timestamp(i64::from(flags) << 32);
    let _ = log.max_timestamp_offset();
    let appended = log
        .append(batch::testing::batch(3, 1000), 0)
        .expect("an opened log takes an append");
    assert_eq!(appended.base_offset, end);
    let _ = log.close();
});
