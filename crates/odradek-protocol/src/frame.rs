//! Length-prefixed framing: every Kafka request and response is a big-endian `i32` size
//! followed by that many bytes.

use bytes::{Buf, Bytes, BytesMut};

/// Why a frame could not be accepted. Both end the connection, as they do in Kafka.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame size {size} is negative")]
    Negative { size: i32 },
    #[error("frame size {size} exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: i32, max: usize },
}

/// Splits complete frames off the front of `buf`.
///
/// The size is checked against `max_size` first, and no space is reserved for a frame
/// before its bytes arrive, so a hostile size prefix can never make the broker allocate.
pub fn take_frame(buf: &mut BytesMut, max_size: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(size_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]]);
    if size < 0 {
        return Err(FrameError::Negative { size });
    }
    let len = size as usize;
    if len > max_size {
        return Err(FrameError::TooLarge {
            size,
            max: max_size,
        });
    }
    if buf.len() < 4 + len {
        // Nothing is reserved for the rest of the frame: the buffer grows as its bytes
        // actually arrive, so a size prefix alone cannot make the broker allocate.
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// How many more bytes the frame at the front of `buf` needs, once its size is known.
pub fn missing(buf: &[u8]) -> Option<usize> {
    let size = i32::from_be_bytes(buf.get(..4)?.try_into().ok()?);
    usize::try_from(size)
        .ok()?
        .checked_add(4)?
        .checked_sub(buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_counts_what_the_front_frame_still_needs() {
        assert_eq!(missing(&[0, 0, 1]), None);
        assert_eq!(missing(&[0, 0, 1, 0]), Some(256));
        assert_eq!(missing(&[0, 0, 0, 2, b'a']), Some(1));
        assert_eq!(missing(&[0, 0, 0, 1, b'a', 0]), None);
        assert_eq!(missing(&[0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn splits_pipelined_frames_and_waits_for_partial_ones() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 2, b'a', b'b', 0, 0, 0, 3, b'c']);
        assert_eq!(
            take_frame(&mut buf, 100).unwrap().unwrap(),
            Bytes::from_static(b"ab")
        );
        assert_eq!(take_frame(&mut buf, 100).unwrap(), None);
        buf.extend_from_slice(b"de");
        assert_eq!(
            take_frame(&mut buf, 100).unwrap().unwrap(),
            Bytes::from_static(b"cde")
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_oversized_and_negative_sizes_without_allocating() {
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            take_frame(&mut buf, 1024),
            Err(FrameError::TooLarge {
                size: i32::MAX,
                max: 1024
            })
        );
        assert!(buf.capacity() < 1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xfe][..]);
        assert_eq!(
            take_frame(&mut buf, 1024),
            Err(FrameError::Negative { size: -2 })
        );
    }
}
