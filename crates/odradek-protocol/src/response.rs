//! Response frames as a list of byte chunks.
//!
//! A fetch response is mostly record batches the broker has just read from disk into
//! buffers of their own. Encoding them into one contiguous frame would copy every fetched
//! byte once more (it was 15–20% of the broker's CPU when serving consumers), so the frame
//! keeps those buffers as chunks of their own and the socket writer sends all chunks with
//! vectored writes.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// An encoded response, size prefix included, ready to be written to a socket.
#[derive(Debug, Default)]
pub struct ResponseFrame {
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl ResponseFrame {
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl Buf for ResponseFrame {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| &c[..])
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, chunk) in dst.iter_mut().zip(&self.chunks) {
            *slot = IoSlice::new(chunk);
            filled += 1;
        }
        filled
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(
            cnt <= self.remaining,
            "advance past the end of a response frame"
        );
        self.remaining -= cnt;
        while cnt > 0 {
            // `remaining` is the sum of the chunks' lengths, so they cannot run out first.
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.chunks.pop_front();
        }
    }
}

/// Buffers smaller than this are copied: a chunk of its own costs an iovec entry and a
/// reference count, which only pays for itself on sizeable record sets.
const LEND_AT_LEAST: usize = 4096;

/// The encoder's output buffer. It behaves as one growing buffer, except that a slice the
/// encoder copies whole which is exactly one of the `lent` buffers is taken by reference.
pub(crate) struct FrameWriter {
    sealed: Vec<Chunk>,
    sealed_len: usize,
    current: BytesMut,
    lent: Vec<Bytes>,
    /// Where to look first: the encoder meets lent buffers in the order they were given.
    next_lent: usize,
}

enum Chunk {
    Owned(BytesMut),
    Lent(Bytes),
}

impl FrameWriter {
    /// A writer whose first four bytes are reserved for the frame size.
    pub(crate) fn new(lent: Vec<Bytes>) -> Self {
        let mut current = BytesMut::with_capacity(256);
        current.put_i32(0);
        Self {
            sealed: Vec::new(),
            sealed_len: 0,
            current,
            lent: lent
                .into_iter()
                .filter(|b| b.len() >= LEND_AT_LEAST)
                .collect(),
            next_lent: 0,
        }
    }

    fn take_lent(&mut self, src: &[u8]) -> Option<Bytes> {
        if src.len() < LEND_AT_LEAST || self.lent.is_empty() {
            return None;
        }
        let n = self.lent.len();
        let found = (0..n)
            .map(|i| (self.next_lent + i) % n)
            .find(|&i| self.lent[i].as_ptr() == src.as_ptr() && self.lent[i].len() == src.len())?;
        self.next_lent = found + 1;
        Some(self.lent[found].clone())
    }

    fn seal(&mut self) {
        if !self.current.is_empty() {
            let part = self.current.split();
            self.sealed_len += part.len();
            self.sealed.push(Chunk::Owned(part));
        }
    }

    /// The unsealed tail, for encoders that only write into a `BytesMut`.
    pub(crate) fn tail(&mut self) -> &mut BytesMut {
        &mut self.current
    }

    /// Bytes written so far, size prefix included.
    pub(crate) fn len(&self) -> usize {
        self.sealed_len + self.current.len()
    }

    /// Writes the size prefix (`len() - 4`, which the caller has checked fits an i32) and
    /// hands the chunks over.
    pub(crate) fn finish(mut self, size: i32) -> ResponseFrame {
        self.seal();
        let remaining = self.sealed_len;
        let chunks = self
            .sealed
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| match chunk {
                Chunk::Owned(mut bytes) => {
                    if i == 0 {
                        bytes[..4].copy_from_slice(&size.to_be_bytes());
                    }
                    bytes.freeze()
                }
                Chunk::Lent(bytes) => bytes,
            })
            .collect();
        ResponseFrame { chunks, remaining }
    }
}

// SAFETY: every method but `put_slice` delegates to `current`, a `BytesMut`, so the
// contract (`chunk_mut` is writable, `advance_mut` only over initialised bytes) is its own.
unsafe impl BufMut for FrameWriter {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's promise about `cnt` is about `current.chunk_mut()`.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        match self.take_lent(src) {
            Some(bytes) => {
                self.seal();
                self.sealed_len += bytes.len();
                self.sealed.push(Chunk::Lent(bytes));
            }
            None => self.current.extend_from_slice(src),
        }
    }
}

impl ByteBufMut for FrameWriter {
    fn offset(&self) -> usize {
        self.len()
    }

    // Seeking and ranges serve the encoder's gaps, which only record-batch compression
    // uses; response bodies never do. They work within the unsealed tail.
    fn seek(&mut self, offset: usize) {
        assert!(
            offset >= self.sealed_len,
            "seek before the last lent buffer"
        );
        self.current.resize(offset - self.sealed_len, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        assert!(
            r.start >= self.sealed_len,
            "range before the last lent buffer"
        );
        &mut self.current[r.start - self.sealed_len..r.end - self.sealed_len]
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{
        ApiKey, FetchResponse, ResponseHeader, ResponseKind, TopicName,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use crate::codec::encode_response;

    fn fetch_response(record_sets: &[Bytes]) -> FetchResponse {
        let partitions = record_sets
            .iter()
            .enumerate()
            .map(|(i, records)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_high_watermark(1000)
                    .with_records(Some(records.clone()))
            })
            .collect();
        let topic = FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(partitions);
        FetchResponse::default()
            .with_session_id(7)
            .with_responses(vec![topic])
    }

    /// The frame as one contiguous encoding would have produced it.
    fn contiguous(version: i16, body: &FetchResponse) -> Vec<u8> {
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(42)
            .encode(&mut buf, ApiKey::Fetch.response_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        buf.to_vec()
    }

    #[test]
    fn a_fetch_frame_is_byte_for_byte_the_contiguous_encoding_and_shares_its_record_sets() {
        let big = Bytes::from(vec![7u8; 100_000]);
        let small = Bytes::from(vec![9u8; 100]);
        let other = Bytes::from((0..=255u8).cycle().take(50_000).collect::<Vec<_>>());
        let sets = [big.clone(), small, Bytes::new(), other.clone()];
        for version in [7, 11, 12, 16] {
            let body = fetch_response(&sets);
            let mut frame = encode_response(
                ApiKey::Fetch,
                version,
                42,
                &ResponseKind::Fetch(body.clone()),
            )
            .unwrap();
            let mut chunks = [std::io::IoSlice::new(&[]); 16];
            let n = frame.chunks_vectored(&mut chunks);
            let shared = |b: &Bytes| chunks[..n].iter().any(|c| c.as_ptr() == b.as_ptr());
            assert!(
                shared(&big) && shared(&other),
                "v{version}: record sets were copied"
            );
            assert_eq!(frame.remaining(), contiguous(version, &body).len());
            let flat = frame.copy_to_bytes(frame.remaining());
            assert_eq!(&flat[..], &contiguous(version, &body)[..], "v{version}");
        }
    }

    #[test]
    fn a_frame_written_in_odd_pieces_arrives_whole() {
        let body = fetch_response(&[
            Bytes::from(vec![1u8; 10_000]),
            Bytes::from(vec![2u8; 9_000]),
        ]);
        let expected = contiguous(12, &body);
        let mut frame = encode_response(ApiKey::Fetch, 12, 42, &ResponseKind::Fetch(body)).unwrap();
        let mut out = Vec::new();
        while frame.has_remaining() {
            let take = frame.chunk().len().min(777);
            out.extend_from_slice(&frame.chunk()[..take]);
            frame.advance(take);
        }
        assert_eq!(out, expected);
        assert!(frame.is_empty());
    }
}
