//! A produced record batch through everything the produce path does with it: validation,
//! the header rewrites, record walks, inflation and recompression. Each input is tried as
//! it is and with its CRC made valid, so the fuzzer gets past the checksum.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use odradek_protocol::batch::{self, BatchHeader, Compression};

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn exercise(bytes: &[u8]) {
    for (_, size) in batch::complete_batches(bytes) {
        assert!(size >= batch::HEADER_LEN);
    }
    let _ = batch::verify_crc(bytes);
    for _ in batch::records(bytes) {}
    let Ok(info) = batch::validate_produced(bytes, 1 << 20) else {
        return;
    };
    let header = BatchHeader::parse(bytes).expect("a valid batch has a header");
    assert_eq!(info.record_count as i32, header.record_count());
    if let Ok(section) = batch::decompressed_records(bytes) {
        for record in batch::raw_records(&section).map_while(Result::ok) {
            let _ = batch::record_offset_and_timestamp(&header, &record);
        }
        let target = CODECS[bytes.len() % CODECS.len()];
        if let Ok(rebuilt) = batch::build_batch(
            bytes,
            &section,
            header.record_count(),
            header.max_timestamp(),
            target,
        ) {
            batch::verify_crc(&rebuilt).expect("a rebuilt batch has a valid CRC");
        }
    }
    let mut stamped = BytesMut::from(bytes);
    batch::assign_offsets(&mut stamped, 1 << 40, 7);
    batch::set_log_append_time(&mut stamped, 1_700_000_000_000);
    batch::verify_crc(&stamped).expect("the broker's rewrites keep the CRC valid");
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    if data.len() >= batch::HEADER_LEN {
        let mut fixed = data.to_vec();
        let crc = crc32c::crc32c(&fixed[21..]);
        fixed[17..21].copy_from_slice(&crc.to_be_bytes());
        exercise(&fixed);
    }
});
