//! openraft's type configuration: what a log entry carries and how nodes are named.

use std::io::Cursor;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// The one openraft type configuration of the metadata quorum.
    pub TypeConfig:
        D = Batch,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// Openraft's entry type under [`TypeConfig`].
pub type Entry = openraft::Entry<TypeConfig>;
/// Openraft's log id (term, leader, index) under [`TypeConfig`].
pub type LogId = openraft::LogId<u64>;
/// A persisted vote.
pub type Vote = openraft::Vote<u64>;
/// The storage error openraft expects from storage callbacks.
pub type StorageError = openraft::StorageError<u64>;
/// The raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// The payload of one normal log entry: the records of one `propose` call. They are
/// committed and applied together, so a caller can make several records atomic (KRaft
/// does the same with a batch).
///
/// Records are opaque here. They travel and are stored as hex strings inside the JSON
/// of an entry: serde_json writes a byte array as a list of numbers (3.6 bytes per byte on
/// average), hex costs 2 and keeps the log readable with `less`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    #[serde(with = "hex_records")]
    pub records: Vec<Bytes>,
}

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batch({} records)", self.records.len())
    }
}

impl Batch {
    /// Bytes of record data in the batch (not counting framing).
    pub fn data_len(&self) -> usize {
        self.records.iter().map(Bytes::len).sum()
    }
}

mod hex_records {
    use bytes::Bytes;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    const DIGITS: &[u8; 16] = b"0123456789abcdef";

    pub fn serialize<S: Serializer>(records: &[Bytes], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(records.iter().map(|r| {
            let mut out = String::with_capacity(r.len() * 2);
            for b in r.iter() {
                out.push(DIGITS[(b >> 4) as usize] as char);
                out.push(DIGITS[(b & 0xf) as usize] as char);
            }
            out
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Bytes>, D::Error> {
        let strings = Vec::<String>::deserialize(d)?;
        strings
            .iter()
            .map(|s| {
                decode(s.as_bytes())
                    .map(Bytes::from)
                    .map_err(D::Error::custom)
            })
            .collect()
    }

    fn nibble(c: u8) -> Result<u8, &'static str> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err("invalid hex digit in record"),
        }
    }

    fn decode(s: &[u8]) -> Result<Vec<u8>, &'static str> {
        if !s.len().is_multiple_of(2) {
            return Err("odd length hex record");
        }
        s.chunks_exact(2)
            .map(|pair| Ok((nibble(pair[0])? << 4) | nibble(pair[1])?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_through_json() {
        let batch = Batch {
            records: vec![Bytes::from_static(b"\x00\xffab"), Bytes::new()],
        };
        let json = serde_json::to_string(&batch).unwrap();
        assert_eq!(json, r#"{"records":["00ff6162",""]}"#);
        assert_eq!(serde_json::from_str::<Batch>(&json).unwrap(), batch);
        assert!(serde_json::from_str::<Batch>(r#"{"records":["0g"]}"#).is_err());
    }
}
