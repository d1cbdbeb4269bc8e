//! One module per Kafka API family. Each adds methods to [`crate::Broker`].

pub(crate) mod acls;
pub(crate) mod alter;
pub(crate) mod api_versions;
pub(crate) mod cluster;
pub(crate) mod configs;
pub(crate) mod consumer_groups;
pub(crate) mod fetch;
pub(crate) mod groups;
pub(crate) mod list_offsets;
pub(crate) mod metadata;
pub(crate) mod produce;
pub(crate) mod replicas;
pub(crate) mod topics;
pub(crate) mod transactions;

use kafka_protocol::ResponseError;

use crate::broker::str_bytes;

/// Why a request (or one item of it) is refused: the error code and the message sent with it.
pub(crate) type Refusal = (ResponseError, String);

/// Kafka's topic name rule (`Topic.validate`): 1-249 characters of `[a-zA-Z0-9._-]`,
/// and not `.` or `..`.
pub(crate) fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > 249 {
        return Err(format!(
            "Topic name is illegal, it can't be longer than 249 characters, topic name: {name}"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Checks the leader epoch a client believes in against ours, as Kafka does: -1 skips the
/// check; an older epoch is FENCED_LEADER_EPOCH (the client's metadata is stale), a newer
/// one UNKNOWN_LEADER_EPOCH (this broker's is).
pub(crate) fn check_leader_epoch(requested: i32, current: i32) -> Result<(), ResponseError> {
    match requested {
        -1 => Ok(()),
        e if e == current => Ok(()),
        e if e > current => Err(ResponseError::UnknownLeaderEpoch),
        _ => Err(ResponseError::FencedLeaderEpoch),
    }
}

/// A broker's id and where clients reach it: host, port, rack.
pub(crate) type Endpoint = (i32, String, i32, Option<String>);

impl crate::Broker {
    /// Whether this broker leads `topic`'s partition `index` now, so serves its data, and
    /// at which leader epoch: else NOT_LEADER_OR_FOLLOWER, which sends clients to the
    /// metadata for the leader.
    pub(crate) fn leads(&self, topic: &str, index: i32) -> Result<i32, ResponseError> {
        match self.logs.leadership(topic, index) {
            Some((leader, epoch)) if leader == self.node_id => Ok(epoch),
            _ => Err(ResponseError::NotLeaderOrFollower),
        }
    }

    /// Where clients reach each of `ids` that is registered and not fenced (this broker as
    /// it advertises itself now).
    pub(crate) fn endpoints(&self, ids: impl IntoIterator<Item = i32>) -> Vec<Endpoint> {
        let image = self.logs.image();
        ids.into_iter()
            .filter_map(|id| {
                if id == self.node_id {
                    let (host, port) = self.advertised();
                    let rack = self.config().rack();
                    return Some((id, host, port, rack));
                }
                let b = image.brokers.get(&id).filter(|b| !b.fenced)?;
                Some((b.id, b.host.clone(), b.port, b.rack.clone()))
            })
            .collect()
    }

    /// KIP-951's endpoints of `ids` for a Produce or Fetch response, built one way so
    /// that both answer alike. (Each response type has its own generated struct, with the
    /// same fields.)
    pub(crate) fn node_endpoints<E: KipEndpoint>(
        &self,
        ids: impl IntoIterator<Item = i32>,
    ) -> Vec<E> {
        self.endpoints(ids)
            .into_iter()
            .map(|(id, host, port, rack)| E::of(id, host, port, rack))
            .collect()
    }

    /// The controller as clients are told of it: this broker, as a KRaft broker names a
    /// live broker rather than the quorum leader (KIP-590). Clients send admin requests to
    /// the controller they are told of, and every broker forwards them to the quorum
    /// leader; naming the leader instead would leave a client waiting on a dead one until
    /// its next metadata refresh (librdkafka does exactly that).
    pub(crate) fn controller_id(&self) -> i32 {
        self.node_id
    }

    /// Every live broker, this one included (it serves even before its registration
    /// commits), by id.
    pub(crate) fn live_endpoints(&self) -> Vec<Endpoint> {
        let image = self.logs.image();
        let mut ids: std::collections::BTreeSet<i32> = image.live_brokers().map(|b| b.id).collect();
        ids.insert(self.node_id);
        self.endpoints(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rule() {
        for ok in ["a", "my-topic_1.v2", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "has space", "ü", &"x".repeat(250), "a/b"] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}

/// The NodeEndpoint of a response that has KIP-951's field (Produce v10+, Fetch v16+).
pub(crate) trait KipEndpoint {
    fn of(id: i32, host: String, port: i32, rack: Option<String>) -> Self;
}

macro_rules! kip_endpoint {
    ($endpoint:ty) => {
        impl KipEndpoint for $endpoint {
            fn of(id: i32, host: String, port: i32, rack: Option<String>) -> Self {
                <$endpoint>::default()
                    .with_node_id(id.into())
                    .with_host(str_bytes(host))
                    .with_port(port)
                    .with_rack(rack.map(str_bytes))
            }
        }
    };
}
kip_endpoint!(kafka_protocol::messages::produce_response::NodeEndpoint);
kip_endpoint!(kafka_protocol::messages::fetch_response::NodeEndpoint);
