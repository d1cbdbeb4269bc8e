//! A request frame as the broker receives it: framing, then the header, then — for the API
//! keys and versions the broker advertises, as `Broker::dispatch` does — the body.
//! Input: one frame without its size prefix (what `frame::take_frame` hands on).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use odradek_broker::SUPPORTED_APIS;
use odradek_protocol::{codec, frame};

fuzz_target!(|data: &[u8]| {
    // The same bytes behind a size prefix, split as the connection reader splits them.
    let mut wire = BytesMut::with_capacity(data.len() + 4);
    wire.extend_from_slice(&(data.len() as i32).to_be_bytes());
    wire.extend_from_slice(data);
    let frame = match frame::take_frame(&mut wire, 100 << 20) {
        Ok(Some(frame)) => frame,
        other => panic!("a whole frame within the limit was not split off: {other:?}"),
    };
    assert_eq!(frame, Bytes::copy_from_slice(data));
    // A prefix alone never yields a frame, whatever its size says.
    let mut prefix = BytesMut::from(&data[..data.len().min(4)]);
    let _ = frame::take_frame(&mut prefix, 100 << 20);

    let _ = codec::peek_correlation_id(&frame);
    let Ok(request) = codec::decode_header(frame) else {
        return;
    };
    let version = request.header.request_api_version;
    let advertised = SUPPORTED_APIS
        .iter()
        .any(|&(key, min, max)| key == request.api_key && (min..=max).contains(&version));
    if advertised {
        let _ = codec::decode_body(&request);
    }
});
