//! Record batches (magic 2) as raw bytes: validation and the few header rewrites a broker
//! makes, without decoding records or decompressing; and, for the log cleaner and
//! broker-side recompression, codec helpers that keep every record's bytes verbatim.
//!
//! Layout of a batch header (all big-endian), from Kafka's `DefaultRecordBatch`:
//!
//! ```text
//! 0  baseOffset           i64   rewritten by the broker
//! 8  batchLength          i32   bytes after this field
//! 12 partitionLeaderEpoch i32   rewritten by the broker
//! 16 magic                i8
//! 17 crc                  u32   CRC-32C of bytes 21..end
//! 21 attributes           i16
//! 23 lastOffsetDelta      i32
//! 27 baseTimestamp        i64
//! 35 maxTimestamp         i64   rewritten for LogAppendTime
//! 43 producerId           i64
//! 51 producerEpoch        i16
//! 53 baseSequence         i32
//! 57 recordCount          i32
//! 61 records...
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

pub const HEADER_LEN: usize = 61;
/// Bytes in front of `batchLength`'s coverage: `baseOffset` and `batchLength` themselves.
pub const LOG_OVERHEAD: usize = 12;
const LENGTH_OFFSET: usize = 8;
const LEADER_EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
const RECORD_COUNT_OFFSET: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

/// Why a batch was refused. Each maps to the Kafka error code a producer expects.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// Kafka: `CORRUPT_MESSAGE`.
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// Kafka: `INVALID_RECORD`.
    #[error("invalid record batch: {0}")]
    Invalid(String),
    /// Kafka: `MESSAGE_TOO_LARGE`.
    #[error("record batch of {size} bytes exceeds max.message.bytes ({max})")]
    TooLarge { size: usize, max: usize },
}

/// What the broker learned from a batch header while validating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    pub record_count: u32,
    pub max_timestamp: i64,
    pub compression: Compression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec named by a batch's attributes; `None` for an unknown codec (5-7).
    pub fn from_attributes(attributes: i16) -> Option<Self> {
        Some(match attributes & COMPRESSION_MASK {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            _ => return None,
        })
    }

    fn attribute_bits(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    (&b[at..at + 4]).get_i32()
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    (&b[at..at + 8]).get_i64()
}

/// A read-only view of a batch header. Callers guarantee `bytes.len() >= HEADER_LEN`.
#[derive(Debug, Clone, Copy)]
pub struct BatchHeader<'a>(&'a [u8]);

impl<'a> BatchHeader<'a> {
    /// Views the header at the start of `bytes`, if enough bytes are there.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() >= HEADER_LEN).then_some(Self(bytes))
    }
    /// Views a header read into a buffer of exactly its size: cannot fail, unlike
    /// [`Self::parse`] of a slice.
    pub fn from_array(bytes: &'a [u8; HEADER_LEN]) -> Self {
        Self(bytes)
    }
    pub fn base_offset(&self) -> i64 {
        i64_at(self.0, 0)
    }
    /// Total size of the batch on disk and on the wire, including the first 12 bytes.
    /// Negative lengths are reported as 0 so callers treat them as corrupt.
    pub fn total_size(&self) -> usize {
        usize::try_from(i32_at(self.0, LENGTH_OFFSET)).map_or(0, |l| l + LOG_OVERHEAD)
    }
    /// The epoch of the leader that appended the batch (`partitionLeaderEpoch`).
    pub fn partition_leader_epoch(&self) -> i32 {
        i32_at(self.0, LEADER_EPOCH_OFFSET)
    }
    pub fn magic(&self) -> i8 {
        self.0[MAGIC_OFFSET] as i8
    }
    pub fn last_offset_delta(&self) -> i32 {
        i32_at(self.0, LAST_OFFSET_DELTA_OFFSET)
    }
    pub fn last_offset(&self) -> i64 {
        // Saturating: a header read from disk or the network can hold any base offset.
        self.base_offset()
            .saturating_add(i64::from(self.last_offset_delta()))
    }
    pub fn attributes(&self) -> i16 {
        i16_at(self.0, ATTRIBUTES_OFFSET)
    }
    pub fn base_timestamp(&self) -> i64 {
        i64_at(self.0, BASE_TIMESTAMP_OFFSET)
    }
    pub fn max_timestamp(&self) -> i64 {
        i64_at(self.0, MAX_TIMESTAMP_OFFSET)
    }
    pub fn producer_id(&self) -> i64 {
        i64_at(self.0, PRODUCER_ID_OFFSET)
    }
    pub fn producer_epoch(&self) -> i16 {
        i16_at(self.0, PRODUCER_EPOCH_OFFSET)
    }
    pub fn base_sequence(&self) -> i32 {
        i32_at(self.0, BASE_SEQUENCE_OFFSET)
    }
    /// The sequence number of the batch's last record; sequences wrap from `i32::MAX` to 0.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence(), self.last_offset_delta())
    }
    pub fn record_count(&self) -> i32 {
        i32_at(self.0, RECORD_COUNT_OFFSET)
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_FLAG != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_FLAG != 0
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & TIMESTAMP_TYPE_LOG_APPEND != 0
    }
    /// The batch's codec; `None` for an unknown one.
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_attributes(self.attributes())
    }
    fn stored_crc(&self) -> u32 {
        (&self.0[CRC_OFFSET..CRC_OFFSET + 4]).get_u32()
    }
}

/// `sequence + increment`, wrapping past `i32::MAX` to 0 as Kafka's producers do.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// Checks a complete batch's framing and CRC: what recovery and reads rely on.
/// `bytes` must be exactly one batch.
pub fn verify_crc(bytes: &[u8]) -> Result<(), BatchError> {
    let header =
        BatchHeader::parse(bytes).ok_or_else(|| BatchError::Corrupt("truncated header".into()))?;
    let computed = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
    if computed != header.stored_crc() {
        return Err(BatchError::Corrupt(format!(
            "CRC mismatch: stored {:#010x}, computed {computed:#010x}",
            header.stored_crc()
        )));
    }
    Ok(())
}

/// Validates the records a producer sent for one partition, as Kafka's `LogValidator` does
/// for produce requests v3 and later: exactly one magic-2 batch, consistent framing and
/// counts, a valid CRC, within `max_message_bytes`. Nothing is decompressed.
pub fn validate_produced(
    records: &[u8],
    max_message_bytes: usize,
) -> Result<BatchInfo, BatchError> {
    let header = BatchHeader::parse(records).ok_or_else(|| {
        BatchError::Corrupt(format!(
            "{} bytes cannot hold a batch header",
            records.len()
        ))
    })?;
    if header.magic() != 2 {
        return Err(BatchError::Invalid(format!(
            "produce requests v3+ only allow record batch magic 2, got {}",
            header.magic()
        )));
    }
    let size = header.total_size();
    if size < HEADER_LEN {
        return Err(BatchError::Corrupt(format!(
            "batch length {size} is below the header size"
        )));
    }
    if size != records.len() {
        return Err(BatchError::Invalid(format!(
            "produce requests v3+ must carry exactly one record batch; batch is {size} bytes of {}",
            records.len()
        )));
    }
    verify_crc(records)?;
    if size > max_message_bytes {
        return Err(BatchError::TooLarge {
            size,
            max: max_message_bytes,
        });
    }
    let count = header.record_count();
    if count <= 0 {
        return Err(BatchError::Invalid(format!("invalid record count {count}")));
    }
    if i64::from(header.last_offset_delta()) + 1 != i64::from(count) {
        return Err(BatchError::Invalid(format!(
            "inconsistent batch: lastOffsetDelta {} but {count} records",
            header.last_offset_delta()
        )));
    }
    if header.is_control() {
        return Err(BatchError::Invalid(
            "clients may not produce control batches".into(),
        ));
    }
    let compression = Compression::from_attributes(header.attributes()).ok_or_else(|| {
        BatchError::Invalid(format!(
            "unknown compression in attributes {:#x}",
            header.attributes()
        ))
    })?;
    Ok(BatchInfo {
        record_count: count as u32,
        max_timestamp: header.max_timestamp(),
        compression,
    })
}

/// Stamps a validated batch with its place in the log: base offset and leader epoch, which lie
/// outside the CRC, so no checksum work is needed.
pub fn assign_offsets(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[LEADER_EPOCH_OFFSET..LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Applies `message.timestamp.type=LogAppendTime`: sets the timestamp-type attribute and the
/// max timestamp to the broker's clock, then recomputes the CRC both are covered by.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = i16_at(batch, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_LOG_APPEND;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Walks consecutive batches in `bytes`, yielding each batch's header and total size, and
/// stopping before a batch that is not complete. Used by reads and recovery.
pub fn complete_batches(bytes: &[u8]) -> impl Iterator<Item = (BatchHeader<'_>, usize)> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(&bytes[pos..])?;
        let size = header.total_size();
        if size < HEADER_LEN || pos + size > bytes.len() {
            return None;
        }
        pos += size;
        Some((header, size))
    })
}

/// Reads a zigzag varint as Kafka's record format encodes it; `None` on truncation/overflow.
fn read_varlong(bytes: &[u8], pos: &mut usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

/// One record of an uncompressed batch, borrowed from the batch bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Reads a length-prefixed (zigzag varint) byte field; -1 is null.
fn read_nullable_bytes<'a>(bytes: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = read_varlong(bytes, pos)?;
    if len < 0 {
        return Some(None);
    }
    let end = pos
        .checked_add(usize::try_from(len).ok()?)
        .filter(|&e| e <= bytes.len())?;
    let field = &bytes[*pos..end];
    *pos = end;
    Some(Some(field))
}

/// One record inside a (decompressed) records section, with its exact bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// The whole record as stored, length prefix included: what a rewrite copies verbatim.
    pub bytes: &'a [u8],
    pub timestamp_delta: i64,
    pub offset_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Parses the record starting at `*pos` in a records section, advancing `pos` past it.
/// `None` if it is truncated or malformed. Headers are not decoded (they stay in `bytes`).
fn parse_record<'a>(section: &'a [u8], pos: &mut usize) -> Option<RawRecord<'a>> {
    let start = *pos;
    let mut cursor = start;
    let len = usize::try_from(read_varlong(section, &mut cursor)?).ok()?;
    let end = cursor.checked_add(len).filter(|&e| e <= section.len())?;
    let record = &section[..end];
    cursor += 1; // attributes byte
    let timestamp_delta = read_varlong(record, &mut cursor)?;
    let offset_delta = read_varlong(record, &mut cursor)?;
    let key = read_nullable_bytes(record, &mut cursor)?;
    let value = read_nullable_bytes(record, &mut cursor)?;
    *pos = end;
    Some(RawRecord {
        bytes: &section[start..end],
        timestamp_delta,
        offset_delta,
        key,
        value,
    })
}

/// A record's headers, keys and values borrowed from its bytes (duplicate keys kept, in
/// order). Malformed headers end the list.
pub fn record_headers<'a>(record: &RawRecord<'a>) -> Vec<(&'a [u8], Option<&'a [u8]>)> {
    let bytes = record.bytes;
    let mut pos = 0;
    let mut headers = Vec::new();
    let parsed = (|| {
        read_varlong(bytes, &mut pos)?; // length
        pos += 1; // attributes
        read_varlong(bytes, &mut pos)?; // timestamp delta
        read_varlong(bytes, &mut pos)?; // offset delta
        read_nullable_bytes(bytes, &mut pos)?; // key
        read_nullable_bytes(bytes, &mut pos)?; // value
        let count = read_varlong(bytes, &mut pos)?;
        for _ in 0..count.max(0) {
            let key = read_nullable_bytes(bytes, &mut pos)??;
            let value = read_nullable_bytes(bytes, &mut pos)?;
            headers.push((key, value));
        }
        Some(())
    })();
    let _ = parsed;
    headers
}

/// Walks the records of a records section (see [`decompressed_records`]). A malformed or
/// truncated record yields one `Err` and ends the walk.
pub fn raw_records(section: &[u8]) -> impl Iterator<Item = Result<RawRecord<'_>, BatchError>> + '_ {
    let mut pos = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= section.len() {
            return None;
        }
        let at = pos;
        match parse_record(section, &mut pos) {
            Some(r) => Some(Ok(r)),
            None => {
                failed = true;
                Some(Err(BatchError::Corrupt(format!(
                    "malformed record at byte {at} of the records section"
                ))))
            }
        }
    })
}

/// For an uncompressed batch, yields its records, stopping at the first malformed one.
/// Compressed batches yield nothing: their records need inflating.
pub fn records(batch: &[u8]) -> impl Iterator<Item = RecordView<'_>> + '_ {
    let header = BatchHeader::parse(batch);
    let uncompressed = header
        .map(|h| Compression::from_attributes(h.attributes()) == Some(Compression::None))
        .unwrap_or(false);
    let end = if uncompressed {
        batch.len().min(header.map_or(0, |h| h.total_size()))
    } else {
        HEADER_LEN.min(batch.len())
    };
    let section = &batch[HEADER_LEN.min(end)..end];
    raw_records(section)
        .map_while(Result::ok)
        .filter_map(move |r| {
            let h = header?;
            Some(record_view(&h, &r))
        })
}

fn record_view<'a>(h: &BatchHeader<'_>, r: &RawRecord<'a>) -> RecordView<'a> {
    let timestamp = if h.is_log_append_time() {
        h.max_timestamp()
    } else {
        h.base_timestamp().wrapping_add(r.timestamp_delta)
    };
    RecordView {
        offset: h.base_offset().wrapping_add(r.offset_delta),
        timestamp,
        key: r.key,
        value: r.value,
    }
}

/// The offset and timestamp of a record of the batch whose header is `header`.
pub fn record_offset_and_timestamp(header: &BatchHeader<'_>, record: &RawRecord<'_>) -> (i64, i64) {
    let v = record_view(header, record);
    (v.offset, v.timestamp)
}

/// The most a records section may inflate to: `INFLATION_FACTOR` times the batch's size,
/// and at least `MIN_INFLATION_LIMIT`. A batch is already bounded by `max.message.bytes`,
/// so this bounds the memory a decompression bomb can claim; real data, even very
/// repetitive, stays far below it.
pub const INFLATION_FACTOR: usize = 64;
pub const MIN_INFLATION_LIMIT: usize = 16 << 20;

/// The records section of a whole batch, inflated if the batch is compressed (an
/// uncompressed batch's section is copied out). Records inside are kept byte for byte.
/// Inflation stops with `Corrupt` past the limit above.
pub fn decompressed_records(batch: &[u8]) -> Result<Bytes, BatchError> {
    let header =
        BatchHeader::parse(batch).ok_or_else(|| BatchError::Corrupt("truncated header".into()))?;
    let size = header.total_size();
    if size < HEADER_LEN || size > batch.len() {
        return Err(BatchError::Corrupt(format!(
            "batch length {size} does not fit the {} bytes given",
            batch.len()
        )));
    }
    let codec = header.compression().ok_or_else(|| {
        BatchError::Invalid(format!(
            "unknown compression in attributes {:#x}",
            header.attributes()
        ))
    })?;
    let section = &batch[HEADER_LEN..size];
    let limit = size
        .saturating_mul(INFLATION_FACTOR)
        .max(MIN_INFLATION_LIMIT);
    inflate(codec, section, limit)
        .map_err(|e| BatchError::Corrupt(format!("cannot decompress {codec:?} records: {e}")))
}

/// Inflates `section` with `codec`, failing once the output would exceed `limit` bytes.
fn inflate(codec: Compression, section: &[u8], limit: usize) -> std::io::Result<Bytes> {
    use std::io::Read;
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("inflates beyond {limit} bytes"),
        )
    };
    // Reads at most one byte past the limit, to tell "exactly the limit" from "more".
    let bounded = |reader: &mut dyn Read| {
        let mut out = Vec::new();
        reader.take(limit as u64 + 1).read_to_end(&mut out)?;
        if out.len() > limit {
            return Err(too_large());
        }
        Ok(Bytes::from(out))
    };
    match codec {
        Compression::None => Ok(Bytes::copy_from_slice(section)),
        Compression::Gzip => bounded(&mut flate2::read::GzDecoder::new(section)),
        Compression::Lz4 => bounded(&mut lz4::Decoder::new(section)?),
        Compression::Zstd => bounded(&mut zstd::stream::read::Decoder::new(section)?),
        Compression::Snappy => inflate_snappy(section, limit, too_large),
    }
}

/// Kafka's snappy framing (xerial's `SnappyOutputStream`): a 16-byte magic header, then
/// blocks of `[compressed length u32][raw snappy block]`. Without the magic the section is
/// one raw snappy block, as Kafka's reader also accepts. Each block declares its inflated
/// length up front, so the limit is checked before any buffer is reserved.
fn inflate_snappy(
    section: &[u8],
    limit: usize,
    too_large: impl Fn() -> std::io::Error,
) -> std::io::Result<Bytes> {
    const MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut out = Vec::new();
    let block = |compressed: &[u8], out: &mut Vec<u8>| -> std::io::Result<()> {
        let len = snap::raw::decompress_len(compressed)?;
        let start = out.len();
        if start.saturating_add(len) > limit {
            return Err(too_large());
        }
        out.resize(start + len, 0);
        snap::raw::Decoder::new().decompress(compressed, &mut out[start..])?;
        Ok(())
    };
    let Some(mut rest) = section.strip_prefix(MAGIC) else {
        block(section, &mut out)?;
        return Ok(out.into());
    };
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| invalid("truncated snappy block length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let compressed = tail
            .get(..len)
            .ok_or_else(|| invalid("truncated snappy block"))?;
        block(compressed, &mut out)?;
        rest = &tail[len..];
    }
    Ok(out.into())
}

/// Builds a batch from `template`'s header (base offset, leader epoch, attributes other than
/// the codec, lastOffsetDelta, base timestamp, producer fields are kept), an uncompressed
/// records section holding `record_count` records (their bytes are copied verbatim), and the
/// codec to compress them with. Batch length, record count, max timestamp and CRC are set.
pub fn build_batch(
    template: &[u8],
    records: &[u8],
    record_count: i32,
    max_timestamp: i64,
    codec: Compression,
) -> Result<BytesMut, BatchError> {
    let header = BatchHeader::parse(template)
        .ok_or_else(|| BatchError::Corrupt("truncated header".into()))?;
    let mut out = BytesMut::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(&template[..HEADER_LEN]);
    let deflate = |r: anyhow::Result<()>| {
        r.map_err(|e| BatchError::Corrupt(format!("cannot compress {codec:?} records: {e:#}")))
    };
    let fill = |buf: &mut BytesMut| {
        buf.extend_from_slice(records);
        Ok(())
    };
    match codec {
        Compression::None => out.extend_from_slice(records),
        Compression::Gzip => deflate(Gzip::compress(&mut out, fill))?,
        Compression::Snappy => deflate(Snappy::compress(&mut out, fill))?,
        Compression::Lz4 => deflate(Lz4::compress(&mut out, fill))?,
        Compression::Zstd => deflate(Zstd::compress(&mut out, fill))?,
    }
    let length = i32::try_from(out.len() - LOG_OVERHEAD)
        .map_err(|_| BatchError::Invalid(format!("batch of {} bytes is too large", out.len())))?;
    let attributes = (header.attributes() & !COMPRESSION_MASK) | codec.attribute_bits();
    out[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    out[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&max_timestamp.to_be_bytes());
    out[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&record_count.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

fn put_varlong(out: &mut BytesMut, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.put_u8((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.put_u8(zigzag as u8);
}

fn put_nullable_bytes(out: &mut BytesMut, field: Option<&[u8]>) {
    match field {
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.put_slice(b);
        }
        None => put_varlong(out, -1),
    }
}

/// A record's key and value; `None` is null (a value of `None` is a tombstone).
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Who wrote a batch the broker encodes itself, and how: idempotence and transaction fields
/// of the header plus the transactional and control attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOwner {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub transactional: bool,
    pub control: bool,
}

impl BatchOwner {
    /// The broker's own, non-transactional writes (internal topics).
    pub const BROKER: Self = Self {
        producer_id: -1,
        producer_epoch: -1,
        transactional: false,
        control: false,
    };
}

/// Encodes an uncompressed magic-2 batch of key/value records without headers, for the
/// broker's own internal topics. Offsets start at 0; the log assigns the real ones.
pub fn encode_batch(records: &[KeyValue<'_>], timestamp: i64) -> BytesMut {
    encode_owned_batch(records, timestamp, BatchOwner::BROKER)
}

/// [`encode_batch`] on behalf of `owner`. Broker-written batches carry no sequence numbers.
pub fn encode_owned_batch(records: &[KeyValue<'_>], timestamp: i64, owner: BatchOwner) -> BytesMut {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut body = BytesMut::new();
    for (delta, (key, value)) in records.iter().enumerate() {
        put_record(&mut body, 0, delta as i64, *key, *value, &[]);
    }
    let mut attributes = 0;
    if owner.transactional {
        attributes |= TRANSACTIONAL_FLAG;
    }
    if owner.control {
        attributes |= CONTROL_FLAG;
    }
    let mut b = BytesMut::with_capacity(HEADER_LEN + body.len());
    put_header(
        &mut b,
        attributes,
        records.len() as i32,
        timestamp,
        timestamp,
        owner,
        body.len(),
    );
    b.put_slice(&body);
    let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A record header: key and value (`None` is null).
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// Appends one record (length prefix included) to a records section.
fn put_record(
    body: &mut BytesMut,
    timestamp_delta: i64,
    offset_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header<'_>],
) {
    let mut record = BytesMut::new();
    record.put_u8(0); // attributes
    put_varlong(&mut record, timestamp_delta);
    put_varlong(&mut record, offset_delta);
    put_nullable_bytes(&mut record, key);
    put_nullable_bytes(&mut record, value);
    put_varlong(&mut record, headers.len() as i64);
    for (k, v) in headers {
        put_nullable_bytes(&mut record, Some(k));
        put_nullable_bytes(&mut record, *v);
    }
    put_varlong(body, record.len() as i64);
    body.put_slice(&record);
}

/// Writes a batch header for `count` records and a records section of `section_len` bytes,
/// with base offset 0 and the CRC left zero.
fn put_header(
    b: &mut BytesMut,
    attributes: i16,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    owner: BatchOwner,
    section_len: usize,
) {
    b.put_i64(0);
    b.put_i32((HEADER_LEN - LOG_OVERHEAD + section_len) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(attributes);
    b.put_i32(count - 1);
    b.put_i64(base_timestamp);
    b.put_i64(max_timestamp);
    b.put_i64(owner.producer_id);
    b.put_i16(owner.producer_epoch);
    b.put_i32(-1);
    b.put_i32(count);
}

/// A record a client produces: key, value, headers (duplicate keys kept, in order) and
/// create time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<Header<'a>>,
    pub timestamp: i64,
}

/// Encodes a client's magic-2 batch (no idempotence) of `records`, compressed with `codec`.
/// Offsets start at 0; the broker assigns the real ones.
pub fn encode_producer_batch(
    records: &[ProducerRecord<'_>],
    codec: Compression,
) -> Result<BytesMut, BatchError> {
    let first = records
        .first()
        .ok_or_else(|| BatchError::Invalid("a batch holds at least one record".into()))?;
    let base_timestamp = first.timestamp;
    let max_timestamp = records
        .iter()
        .map(|r| r.timestamp)
        .max()
        .unwrap_or(base_timestamp);
    let mut section = BytesMut::new();
    for (delta, r) in records.iter().enumerate() {
        put_record(
            &mut section,
            r.timestamp - base_timestamp,
            delta as i64,
            r.key,
            r.value,
            &r.headers,
        );
    }
    let count = i32::try_from(records.len())
        .map_err(|_| BatchError::Invalid(format!("{} records in one batch", records.len())))?;
    let mut template = BytesMut::with_capacity(HEADER_LEN);
    put_header(
        &mut template,
        0,
        count,
        base_timestamp,
        max_timestamp,
        BatchOwner::BROKER,
        section.len(),
    );
    build_batch(&template, &section, count, max_timestamp, codec)
}

/// A transaction marker: the one record of a control batch that commits or aborts a
/// producer's transaction in a partition (Kafka's `EndTransactionMarker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
}

const CONTROL_TYPE_ABORT: i16 = 0;
const CONTROL_TYPE_COMMIT: i16 = 1;

impl TxnMarker {
    /// The control batch holding this marker: key = (version 0, type), value = (version 0,
    /// coordinator epoch).
    pub fn encode(&self, timestamp: i64) -> BytesMut {
        let kind = if self.commit {
            CONTROL_TYPE_COMMIT
        } else {
            CONTROL_TYPE_ABORT
        };
        let mut key = [0u8; 4];
        key[2..].copy_from_slice(&kind.to_be_bytes());
        let mut value = [0u8; 6];
        value[2..].copy_from_slice(&self.coordinator_epoch.to_be_bytes());
        let owner = BatchOwner {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            transactional: true,
            control: true,
        };
        encode_owned_batch(&[(Some(&key), Some(&value))], timestamp, owner)
    }

    /// Reads the marker of a stored control batch. `None` for a control batch that holds no
    /// transaction marker (an unknown control type, or one emptied by compaction).
    pub fn decode(batch: &[u8]) -> Option<Self> {
        let header = BatchHeader::parse(batch).filter(|h| h.is_control())?;
        let record = records(batch).next()?;
        let key = record.key.filter(|k| k.len() >= 4)?;
        let commit = match i16::from_be_bytes([key[2], key[3]]) {
            CONTROL_TYPE_ABORT => false,
            CONTROL_TYPE_COMMIT => true,
            _ => return None,
        };
        let coordinator_epoch = record
            .value
            .filter(|v| v.len() >= 6)
            .map_or(0, |v| i32::from_be_bytes([v[2], v[3], v[4], v[5]]));
        Some(Self {
            producer_id: header.producer_id(),
            producer_epoch: header.producer_epoch(),
            coordinator_epoch,
            commit,
        })
    }
}

/// Builders for tests in this and other crates.
#[cfg(any(test, feature = "test-util"))]
pub mod testing {
    use super::*;
    use bytes::BufMut;

    /// A minimal uncompressed batch holding `count` empty records, with a valid CRC.
    pub fn batch(count: i32, timestamp: i64) -> BytesMut {
        let mut records = BytesMut::new();
        for delta in 0..count {
            // length, attributes, timestampDelta=delta, offsetDelta=delta, keyLen=-1, valueLen=-1, headers=0
            // (as zigzag varints, each fitting one byte for these small values)
            let body = [0u8, (delta as u8) << 1, (delta as u8) << 1, 1, 1, 0];
            records.put_u8((body.len() as u8) << 1);
            records.put_slice(&body);
        }
        let mut b = BytesMut::new();
        b.put_i64(0);
        b.put_i32((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32);
        b.put_i32(-1);
        b.put_i8(2);
        b.put_u32(0);
        b.put_i16(0);
        b.put_i32(count - 1);
        b.put_i64(timestamp);
        b.put_i64(timestamp);
        b.put_i64(-1);
        b.put_i16(-1);
        b.put_i32(-1);
        b.put_i32(count);
        b.put_slice(&records);
        let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::testing::batch;
    use super::*;

    #[test]
    fn record_headers_keep_duplicate_keys_and_null_values() {
        let body = [0u8, 0, 0, 1, 2, b'v', 4, 2, b'h', 2, b'1', 2, b'h', 1];
        let mut section = vec![(body.len() as u8) << 1];
        section.extend_from_slice(&body);
        let record = raw_records(&section).next().unwrap().unwrap();
        assert_eq!(record.value, Some(&b"v"[..]));
        assert_eq!(
            record_headers(&record),
            vec![(&b"h"[..], Some(&b"1"[..])), (&b"h"[..], None)]
        );
    }

    #[test]
    fn txn_markers_round_trip_through_control_batches() {
        for commit in [true, false] {
            let marker = TxnMarker {
                producer_id: 77,
                producer_epoch: 3,
                coordinator_epoch: 9,
                commit,
            };
            let b = marker.encode(1234);
            verify_crc(&b).unwrap();
            let h = BatchHeader::parse(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(TxnMarker::decode(&b), Some(marker));
        }
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(5, 3), 8);
    }

    #[test]
    fn accepts_a_well_formed_batch() {
        let b = batch(3, 1000);
        let info = validate_produced(&b, 1 << 20).unwrap();
        assert_eq!(info.record_count, 3);
        assert_eq!(info.max_timestamp, 1000);
    }

    #[test]
    fn rejects_crc_mismatch_size_and_count_problems() {
        let mut b = batch(3, 1000);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(
            validate_produced(&b, 1 << 20),
            Err(BatchError::Corrupt(_))
        ));

        let b = batch(3, 1000);
        assert_eq!(
            validate_produced(&b, b.len() - 1),
            Err(BatchError::TooLarge {
                size: b.len(),
                max: b.len() - 1
            })
        );
        assert!(validate_produced(&b, b.len()).is_ok());

        let mut two = batch(1, 1);
        two.extend_from_slice(&batch(1, 1));
        assert!(matches!(
            validate_produced(&two, 1 << 20),
            Err(BatchError::Invalid(_))
        ));

        assert!(matches!(
            validate_produced(&b[..30], 1 << 20),
            Err(BatchError::Corrupt(_))
        ));
    }

    #[test]
    fn offset_assignment_keeps_the_crc_valid_and_log_append_time_recomputes_it() {
        let mut b = batch(2, 5);
        assign_offsets(&mut b, 42, 7);
        verify_crc(&b).unwrap();
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!((h.base_offset(), h.last_offset()), (42, 43));
        set_log_append_time(&mut b, 99);
        verify_crc(&b).unwrap();
        assert_eq!(BatchHeader::parse(&b).unwrap().max_timestamp(), 99);
    }

    #[test]
    fn records_walks_uncompressed_records() {
        let mut b = batch(3, 1000);
        assign_offsets(&mut b, 10, 0);
        let got: Vec<(i64, i64)> = records(&b).map(|r| (r.offset, r.timestamp)).collect();
        assert_eq!(got, vec![(10, 1000), (11, 1001), (12, 1002)]);
    }

    #[test]
    fn encoded_batches_validate_and_decode_back() {
        let big = vec![7u8; 300];
        let input: Vec<KeyValue<'_>> = vec![
            (Some(b"k1"), Some(b"v1")),
            (Some(b"k2"), None),
            (None, Some(&big)),
        ];
        let mut b = encode_batch(&input, 55);
        assert_eq!(validate_produced(&b, 1 << 20).unwrap().record_count, 3);
        assign_offsets(&mut b, 100, 0);
        let back: Vec<_> = records(&b).map(|r| (r.offset, r.key, r.value)).collect();
        assert_eq!(
            back,
            vec![
                (100, Some(&b"k1"[..]), Some(&b"v1"[..])),
                (101, Some(&b"k2"[..]), None),
                (102, None, Some(&big[..]))
            ]
        );
    }

    #[test]
    fn complete_batches_stops_at_a_torn_tail() {
        let mut log = batch(1, 1);
        log.extend_from_slice(&batch(2, 2));
        let whole = log.len();
        log.extend_from_slice(&batch(1, 3)[..20]);
        let sizes: Vec<usize> = complete_batches(&log).map(|(_, s)| s).collect();
        assert_eq!(sizes.iter().sum::<usize>(), whole);
        assert_eq!(sizes.len(), 2);
    }

    /// A record with headers (duplicate keys included), encoded by hand.
    fn raw_record(
        offset_delta: i64,
        key: &[u8],
        value: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
    ) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_u8(0);
        put_varlong(&mut body, offset_delta * 10);
        put_varlong(&mut body, offset_delta);
        put_nullable_bytes(&mut body, Some(key));
        put_nullable_bytes(&mut body, value);
        put_varlong(&mut body, headers.len() as i64);
        for (k, v) in headers {
            put_varlong(&mut body, k.len() as i64);
            body.put_slice(k);
            put_nullable_bytes(&mut body, Some(v));
        }
        let mut out = BytesMut::new();
        put_varlong(&mut out, body.len() as i64);
        out.put_slice(&body);
        out
    }

    #[test]
    fn codecs_round_trip_and_rewrites_keep_records_verbatim() {
        let dup: &[(&[u8], &[u8])] = &[(b"h", b"1"), (b"h", b"2")];
        let records = [
            raw_record(0, b"a", Some(b"v0"), dup),
            raw_record(1, b"b", None, &[]),
            raw_record(2, b"a", Some(b"v2"), dup),
        ];
        let section: Vec<u8> = records.iter().flat_map(|r| r.to_vec()).collect();
        // The template: an uncompressed batch of three records, offsets from 40.
        let mut template = batch(3, 1000);
        assign_offsets(&mut template, 40, 3);
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let full = build_batch(&template, &section, 3, 1020, codec).unwrap();
            verify_crc(&full).unwrap();
            let h = BatchHeader::parse(&full).unwrap();
            assert_eq!(h.compression(), Some(codec));
            assert_eq!(
                (h.base_offset(), h.last_offset(), h.record_count()),
                (40, 42, 3)
            );
            let back = decompressed_records(&full).unwrap();
            assert_eq!(&back[..], &section[..], "{codec:?}");
            let parsed: Vec<_> = raw_records(&back).map(Result::unwrap).collect();
            assert_eq!(parsed.len(), 3);
            assert_eq!(parsed[2].bytes, &records[2][..]);
            assert_eq!((parsed[1].key, parsed[1].value), (Some(&b"b"[..]), None));

            // Keep only the last record, verbatim: lastOffsetDelta stays, count and CRC change.
            let kept = build_batch(&full, parsed[2].bytes, 1, 1020, codec).unwrap();
            verify_crc(&kept).unwrap();
            let h = BatchHeader::parse(&kept).unwrap();
            assert_eq!(
                (h.base_offset(), h.last_offset(), h.record_count()),
                (40, 42, 1)
            );
            let back = decompressed_records(&kept).unwrap();
            assert_eq!(&back[..], &records[2][..]);
            let r = raw_records(&back).next().unwrap().unwrap();
            assert_eq!(record_offset_and_timestamp(&h, &r), (42, 1020));
        }
    }

    fn assert_refused_as_too_large(batch: &[u8], what: &str) {
        match decompressed_records(batch) {
            Err(BatchError::Corrupt(reason)) => {
                assert!(reason.contains("inflates beyond"), "{what}: {reason}")
            }
            other => panic!("{what}: {:?}", other.map(|b| b.len())),
        }
    }

    /// A decompression bomb: 20 MiB of zeros packs into a few KiB. Inflating it must stop
    /// at the limit (16 MiB for a batch this small) instead of allocating it all.
    #[test]
    fn inflation_stops_at_the_limit() {
        let template = batch(1, 1000);
        let zeros = vec![0u8; 20 << 20];
        for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            let bomb = build_batch(&template, &zeros, 1, 1000, codec).unwrap();
            assert!(
                bomb.len() * INFLATION_FACTOR < MIN_INFLATION_LIMIT,
                "{codec:?}"
            );
            assert_refused_as_too_large(&bomb, &format!("{codec:?}"));
        }
        let just_fits = vec![0u8; MIN_INFLATION_LIMIT];
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let fits = build_batch(&template, &just_fits, 1, 1000, codec).unwrap();
            assert_eq!(decompressed_records(&fits).unwrap().len(), just_fits.len());
        }
        // Snappy inflates at most ~21x, but a raw block declares its length up front. Found
        // by the segment_recovery fuzz target: a declared 1 GiB was allocated before the
        // data was looked at.
        let declares_1_gib = [0x80, 0x80, 0x80, 0x80, 0x04];
        let mut raw = build_batch(&template, &declares_1_gib, 1, 1000, Compression::None).unwrap();
        raw[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2]
            .copy_from_slice(&Compression::Snappy.attribute_bits().to_be_bytes());
        assert_refused_as_too_large(&raw, "raw snappy declaring 1 GiB");
    }

    #[test]
    fn malformed_sections_and_codecs_are_errors_not_panics() {
        let mut b = batch(1, 1);
        // Claim zstd for bytes that are not a zstd frame.
        b[ATTRIBUTES_OFFSET + 1] |= 4;
        assert!(matches!(
            decompressed_records(&b),
            Err(BatchError::Corrupt(_))
        ));
        b[ATTRIBUTES_OFFSET + 1] |= 7;
        assert!(matches!(
            decompressed_records(&b),
            Err(BatchError::Invalid(_))
        ));
        let got: Vec<_> = raw_records(&[0x10, 0, 0]).collect();
        assert!(matches!(got[..], [Err(BatchError::Corrupt(_))]));
        assert!(decompressed_records(&b[..40]).is_err());
    }

    #[test]
    fn producer_batches_keep_headers_in_every_codec() {
        let records = vec![
            ProducerRecord {
                key: Some(b"k"),
                value: Some(b"v1"),
                headers: vec![(b"h", Some(b"1")), (b"h", Some(b"2")), (b"n", None)],
                timestamp: 1000,
            },
            ProducerRecord {
                key: None,
                value: None,
                headers: vec![],
                timestamp: 1005,
            },
        ];
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = encode_producer_batch(&records, codec).unwrap();
            verify_crc(&batch).unwrap();
            let header = BatchHeader::parse(&batch).unwrap();
            assert_eq!(header.compression(), Some(codec));
            assert_eq!((header.record_count(), header.max_timestamp()), (2, 1005));
            let section = decompressed_records(&batch).unwrap();
            let decoded: Vec<_> = raw_records(&section).map(Result::unwrap).collect();
            assert_eq!(decoded.len(), 2);
            assert_eq!(
                (decoded[0].key, decoded[0].value),
                (Some(&b"k"[..]), Some(&b"v1"[..]))
            );
            assert_eq!(
                record_headers(&decoded[0]),
                vec![
                    (&b"h"[..], Some(&b"1"[..])),
                    (&b"h"[..], Some(&b"2"[..])),
                    (&b"n"[..], None)
                ]
            );
            assert_eq!((decoded[1].key, decoded[1].value), (None, None));
            assert_eq!(record_offset_and_timestamp(&header, &decoded[1]), (1, 1005));
        }
        assert!(encode_producer_batch(&[], Compression::None).is_err());
    }
}
