//! Request decoding and response encoding on top of the generated `kafka-protocol` messages.
//!
//! Decoding is split in two steps so the broker can decide, between them, whether it supports
//! the requested API version: [`decode_header`] then [`decode_body`].

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, FetchResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::response::{FrameWriter, ResponseFrame};

/// A request frame whose header has been decoded; the body is still raw.
#[derive(Debug)]
pub struct RequestFrame {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("request of {len} bytes is too short to hold a request header")]
    TooShort { len: usize },
    #[error("unknown API key {api_key}")]
    UnknownApiKey { api_key: i16 },
    #[error("malformed {api_key:?} v{version} request header: {reason}")]
    MalformedHeader {
        api_key: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    MalformedBody {
        api_key: ApiKey,
        version: i16,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("cannot encode {api_key:?} v{version} response: {reason}")]
pub struct EncodeError {
    pub api_key: ApiKey,
    pub version: i16,
    pub reason: String,
}

/// Why a response a client received could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientFrameError {
    #[error("cannot encode a {api_key:?} v{version} request: {reason}")]
    Encode {
        api_key: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("malformed {api_key:?} v{version} response: {reason}")]
    Malformed {
        api_key: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("response to correlation id {got} where {expected} was awaited")]
    Correlation { expected: i32, got: i32 },
}

/// A whole request frame, its 4-byte size prefix included, as a client sends it: the one
/// encoder the command-line client and the brokers' own connections (follower fetchers)
/// share.
pub fn encode_request_frame<R: kafka_protocol::protocol::Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
) -> Result<bytes::BytesMut, ClientFrameError> {
    let fail = |e: anyhow::Error| ClientFrameError::Encode {
        api_key: ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions),
        version,
        reason: e.to_string(),
    };
    let mut frame = bytes::BytesMut::new();
    frame.extend_from_slice(&[0; 4]);
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_static_str(
            client_id,
        )))
        .encode(&mut frame, R::header_version(version))
        .map_err(fail)?;
    request.encode(&mut frame, version).map_err(fail)?;
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame)
}

/// Decodes a response body (the frame without its size prefix) to request `R` sent with
/// `correlation_id`. Record sets in it stay slices of `body`.
pub fn decode_response_frame<R: kafka_protocol::protocol::Request>(
    mut body: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response, ClientFrameError> {
    use kafka_protocol::protocol::HeaderVersion;
    let fail = |e: anyhow::Error| ClientFrameError::Malformed {
        api_key: ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions),
        version,
        reason: e.to_string(),
    };
    let header =
        ResponseHeader::decode(&mut body, R::Response::header_version(version)).map_err(fail)?;
    if header.correlation_id != correlation_id {
        return Err(ClientFrameError::Correlation {
            expected: correlation_id,
            got: header.correlation_id,
        });
    }
    R::Response::decode(&mut body, version).map_err(fail)
}

/// The fixed prefix every request header version shares: api key, api version, correlation id.
const HEADER_PREFIX_LEN: usize = 8;

/// Decodes the request header of a frame.
pub fn decode_header(mut frame: Bytes) -> Result<RequestFrame, DecodeError> {
    if frame.len() < HEADER_PREFIX_LEN {
        return Err(DecodeError::TooShort { len: frame.len() });
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key =
        ApiKey::try_from(raw_key).map_err(|()| DecodeError::UnknownApiKey { api_key: raw_key })?;
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|e| {
        DecodeError::MalformedHeader {
            api_key,
            version,
            reason: e.to_string(),
        }
    })?;
    Ok(RequestFrame {
        api_key,
        header,
        body: frame,
    })
}

/// Reads the correlation id of a frame too short or too odd to decode, so a failure can be
/// logged against the request that caused it.
pub fn peek_correlation_id(frame: &[u8]) -> Option<i32> {
    let id = frame.get(4..8)?;
    Some(i32::from_be_bytes([id[0], id[1], id[2], id[3]]))
}

/// Decodes the body of a request whose version the caller has accepted.
pub fn decode_body(request: &RequestFrame) -> Result<RequestKind, DecodeError> {
    let version = request.header.request_api_version;
    let mut body = request.body.clone();
    RequestKind::decode(request.api_key, &mut body, version).map_err(|e| {
        DecodeError::MalformedBody {
            api_key: request.api_key,
            version,
            reason: e.to_string(),
        }
    })
}

/// Encodes a complete response frame: size prefix, response header, body. A fetch's record
/// sets go into the frame by reference (see [`ResponseFrame`]).
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<ResponseFrame, EncodeError> {
    let err = |e: anyhow::Error| EncodeError {
        api_key,
        version,
        reason: e.to_string(),
    };
    let lent = match body {
        ResponseKind::Fetch(fetch) => record_sets(fetch),
        _ => Vec::new(),
    };
    let mut buf = FrameWriter::new(lent);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut buf, api_key.response_header_version(version))
        .map_err(err)?;
    // The generated `ResponseKind::encode` only writes into a `BytesMut`; a fetch is encoded
    // through the generic path so its record sets can be lent.
    match body {
        ResponseKind::Fetch(fetch) => fetch.encode(&mut buf, version),
        other => other.encode(buf.tail(), version),
    }
    .map_err(err)?;
    let size = i32::try_from(buf.len() - 4).map_err(|_| EncodeError {
        api_key,
        version,
        reason: format!(
            "response of {} bytes exceeds the protocol's limit",
            buf.len()
        ),
    })?;
    Ok(buf.finish(size))
}

/// The record sets a fetch response carries, which the frame can take without copying.
fn record_sets(fetch: &FetchResponse) -> Vec<Bytes> {
    fetch
        .responses
        .iter()
        .flat_map(|topic| &topic.partitions)
        .filter_map(|partition| partition.records.clone())
        .collect()
}
