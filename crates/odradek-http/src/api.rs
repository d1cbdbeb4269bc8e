//! The console's JSON endpoints, under `/api/`. Read-only.

use serde_json::{Value, json};

use crate::Served;

pub enum ApiError {
    NotFound(String),
    BadRequest(String),
}

/// Most records one message-browser request returns.
const MAX_MESSAGES: usize = 500;

fn param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn number(query: &str, name: &str) -> Result<Option<i64>, ApiError> {
    param(query, name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("{name} must be a number")))
        })
        .transpose()
}

/// `%xx` decoding for path segments (topic and group names may need it).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn answer(s: &Served, path: &str, query: &str) -> Result<String, ApiError> {
    let parts: Vec<String> = path.split('/').map(percent_decode).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let value = match parts.as_slice() {
        ["overview"] => overview(s),
        ["brokers"] => brokers(s),
        ["topics"] => topics(s),
        ["topics", name] => topic(s, name)?,
        ["topics", name, "messages"] => messages(s, name, query)?,
        ["groups"] => groups(s),
        ["groups", id] => group(s, id)?,
        _ => return Err(ApiError::NotFound(format!("no endpoint /api/{path}"))),
    };
    Ok(value.to_string())
}

fn overview(s: &Served) -> Value {
    let b = &s.broker;
    let (internal, topics): (Vec<_>, Vec<_>) =
        b.topic_summaries().into_iter().partition(|t| t.internal);
    let totals = &b.metrics.totals;
    // The counts are of the user's topics: the 50 partitions of __consumer_offsets would
    // otherwise dwarf them. Internal topics are listed on their own.
    json!({
        "cluster_id": b.cluster_id(),
        "node_id": b.node_id(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": b.uptime().as_millis() as u64,
        "topics": topics.len(),
        "partitions": topics.iter().map(|t| t.partitions.len()).sum::<usize>(),
        "internal_topics": internal
            .iter()
            .map(|t| json!({"name": t.name, "partitions": t.partitions.len()}))
            .collect::<Vec<_>>(),
        "groups": b.group_summaries().len(),
        "bytes_in": totals.bytes_in.get(),
        "bytes_out": totals.bytes_out.get(),
        "messages_in": totals.messages_in.get(),
        "traffic": s.history.traffic(),
        "traffic_every_ms": crate::history::TRAFFIC_EVERY.as_millis() as u64,
    })
}

/// The registered brokers with their health, and which node leads the metadata quorum
/// (the active controller; it may be a controller that is no broker).
fn brokers(s: &Served) -> Value {
    let (brokers, quorum_leader) = s.broker.broker_summaries();
    json!({
        "quorum_leader": quorum_leader,
        "brokers": brokers
            .iter()
            .map(|b| json!({
                "id": b.id,
                "address": format!("{}:{}", b.host, b.port),
                "rack": b.rack,
                "fenced": b.fenced,
                "quorum_leader": Some(b.id) == quorum_leader,
            }))
            .collect::<Vec<_>>(),
    })
}

fn topics(s: &Served) -> Value {
    let list: Vec<Value> = s
        .broker
        .topic_summaries()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "internal": t.internal,
                "partitions": t.partitions.len(),
                "size_bytes": t.size_bytes(),
                "records": t.records(),
                "bytes_in_per_sec": s.history.topic_rate(&t.name),
            })
        })
        .collect();
    Value::Array(list)
}

fn topic(s: &Served, name: &str) -> Result<Value, ApiError> {
    let topic = s
        .broker
        .topic_summaries()
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no topic {name}")))?;
    Ok(json!({
        "name": topic.name,
        "id": topic.id,
        "internal": topic.internal,
        "configs": topic.configs,
        "size_bytes": topic.size_bytes(),
        "records": topic.records(),
        "bytes_in_per_sec": s.history.topic_rate(&topic.name),
        "partitions": topic.partitions,
    }))
}

fn messages(s: &Served, name: &str, query: &str) -> Result<Value, ApiError> {
    let partition = number(query, "partition")?.unwrap_or(0) as i32;
    let limit = number(query, "limit")?
        .unwrap_or(50)
        .clamp(1, MAX_MESSAGES as i64) as usize;
    let summary = s
        .broker
        .topic_summaries()
        .into_iter()
        .find(|t| t.name == name)
        .and_then(|t| t.partitions.into_iter().find(|p| p.partition == partition))
        .ok_or_else(|| ApiError::NotFound(format!("no partition {name}-{partition}")))?;
    // Without an offset: the latest `limit` records.
    let offset = number(query, "offset")?
        .unwrap_or(summary.log_end_offset - limit as i64)
        .clamp(summary.log_start_offset, summary.log_end_offset);
    let records = s
        .broker
        .read_messages(name, partition, offset, limit)
        .map_err(ApiError::BadRequest)?;
    let list: Vec<Value> = records
        .iter()
        .map(|m| {
            json!({
                "offset": m.offset,
                "timestamp": m.timestamp,
                "key": m.key.as_deref().map(hex),
                "value": m.value.as_deref().map(hex),
                "headers": m.headers.iter().map(|(k, v)| json!([k, v.as_deref().map(hex)])).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "partition": partition,
        "offset": offset,
        "log_start_offset": summary.log_start_offset,
        "log_end_offset": summary.log_end_offset,
        "messages": list,
    }))
}

fn groups(s: &Served) -> Value {
    let list: Vec<Value> = s
        .broker
        .group_summaries()
        .iter()
        .map(|g| {
            json!({
                "group": g.group,
                "state": g.state,
                "type": g.group_type,
                "members": g.members.len(),
                "lag": g.total_lag(),
            })
        })
        .collect();
    Value::Array(list)
}

fn group(s: &Served, id: &str) -> Result<Value, ApiError> {
    let g = s
        .broker
        .group_summaries()
        .into_iter()
        .find(|g| g.group == id)
        .ok_or_else(|| ApiError::NotFound(format!("no group {id}")))?;
    Ok(json!({
        "group": g.group,
        "state": g.state,
        "type": g.group_type,
        "lag": g.total_lag(),
        "members": g.members,
        "partitions": g.partitions,
        "lag_history": s.history.lag(id),
        "lag_every_ms": crate::history::SAMPLE_EVERY.as_millis() as u64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_path_helpers() {
        assert_eq!(param("a=1&b=2", "b"), Some("2"));
        assert_eq!(param("a=1", "c"), None);
        assert_eq!(percent_decode("my%2Ftopic%20x"), "my/topic x");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(hex(b"\x00\xffA"), "00ff41");
    }
}
