//! `odradek group list|describe`: consumer groups, their members, and lag per partition,
//! against Odradek or any Kafka cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::Context;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use odradek_client::Client;
use serde_json::json;

use crate::cli::{ClientArgs, LATEST, check, offsets_at, print_table, s};

/// How long a group request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Address of the coordinator of `group`.
pub fn coordinator(client: &mut Client, group: &str) -> anyhow::Result<String> {
    let (version, r) = client.send(None, |v| {
        let r = FindCoordinatorRequest::default().with_key_type(0);
        if v >= 4 {
            r.with_coordinator_keys(vec![s(group)])
        } else {
            r.with_key(s(group))
        }
    })?;
    let (code, host, port) = if version >= 4 {
        let c = r
            .coordinators
            .first()
            .context("no coordinator in the response")?;
        (c.error_code, c.host.to_string(), c.port)
    } else {
        (r.error_code, r.host.to_string(), r.port)
    };
    check(code, "FindCoordinator")?;
    Ok(format!("{host}:{port}"))
}

struct MemberView {
    member_id: String,
    client_id: String,
    host: String,
    partitions: Vec<(String, i32)>,
}

struct GroupView {
    state: String,
    protocol_type: String,
    members: Vec<MemberView>,
}

fn decode_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let mut rest = bytes::Bytes::copy_from_slice(&bytes[2..]);
    let Ok(a) = ConsumerProtocolAssignment::decode(&mut rest, version.clamp(0, 3)) else {
        return Vec::new();
    };
    a.assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.to_string(), *p)))
        .collect()
}

fn describe_members(
    client: &mut Client,
    coordinator: &str,
    group: &str,
) -> anyhow::Result<GroupView> {
    let (_, r) = client.send(Some(coordinator), |_| {
        DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))])
    })?;
    let g = r.groups.first().context("no group in the response")?;
    if g.error_code == ResponseError::GroupIdNotFound.code() {
        // Possibly a KIP-848 consumer group, which the classic API does not describe.
        if let Ok((_, r)) = client.send(Some(coordinator), |_| {
            ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(group))])
        }) && let Some(g) = r.groups.first()
            && g.error_code == 0
        {
            return Ok(GroupView {
                state: g.group_state.to_string(),
                protocol_type: "consumer".into(),
                members: g
                    .members
                    .iter()
                    .map(|m| MemberView {
                        member_id: m.member_id.to_string(),
                        client_id: m.client_id.to_string(),
                        host: m.client_host.to_string(),
                        partitions: m
                            .assignment
                            .topic_partitions
                            .iter()
                            .flat_map(|t| {
                                t.partitions
                                    .iter()
                                    .map(move |p| (t.topic_name.to_string(), *p))
                            })
                            .collect(),
                    })
                    .collect(),
            });
        }
    }
    check(g.error_code, "DescribeGroups")?;
    let consumer = g.protocol_type.as_str() == "consumer";
    Ok(GroupView {
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        members: g
            .members
            .iter()
            .map(|m| MemberView {
                member_id: m.member_id.to_string(),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                partitions: if consumer {
                    decode_assignment(&m.member_assignment)
                } else {
                    Vec::new()
                },
            })
            .collect(),
    })
}

pub fn committed_offsets(
    client: &mut Client,
    coordinator: &str,
    group: &str,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let (version, r) = client.send(Some(coordinator), |v| {
        if v >= 8 {
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(group)))
                    .with_topics(None),
            ])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(None)
        }
    })?;
    let mut out = BTreeMap::new();
    if version >= 8 {
        let g = r
            .groups
            .first()
            .context("no group in OffsetFetch response")?;
        check(g.error_code, "OffsetFetch")?;
        for t in &g.topics {
            for p in &t.partitions {
                check(p.error_code, "OffsetFetch")?;
                if p.committed_offset >= 0 {
                    out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
                }
            }
        }
    } else {
        check(r.error_code, "OffsetFetch")?;
        for t in &r.topics {
            for p in &t.partitions {
                if p.committed_offset >= 0 {
                    out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
                }
            }
        }
    }
    Ok(out)
}

pub fn list(args: &ClientArgs) -> anyhow::Result<()> {
    let mut client = args.connect(TIMEOUT)?;
    let (_, r) = client.send(None, |_| ListGroupsRequest::default())?;
    check(r.error_code, "ListGroups")?;
    let mut groups: Vec<_> = r
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.to_string(),
                g.group_state.to_string(),
                g.group_type.to_string(),
                g.protocol_type.to_string(),
            )
        })
        .collect();
    groups.sort();
    if args.json() {
        let rows: Vec<_> = groups.iter().map(|(id, state, ty, pt)| json!({"group": id, "state": state, "type": ty, "protocol_type": pt})).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(
            &["GROUP", "STATE", "TYPE"],
            groups
                .iter()
                .map(|(id, state, ty, _)| vec![id.clone(), state.clone(), ty.clone()])
                .collect(),
        );
    }
    Ok(())
}

pub fn describe(args: &ClientArgs, group: &str) -> anyhow::Result<()> {
    let mut client = args.connect(TIMEOUT)?;
    let coordinator = coordinator(&mut client, group)?;
    let view = describe_members(&mut client, &coordinator, group)?;
    let committed = committed_offsets(&mut client, &coordinator, group)?;
    let mut owner: HashMap<(String, i32), &MemberView> = HashMap::new();
    for m in &view.members {
        for tp in &m.partitions {
            owner.insert(tp.clone(), m);
        }
    }
    let partitions: BTreeSet<(String, i32)> = committed
        .keys()
        .cloned()
        .chain(owner.keys().cloned())
        .collect();
    let ends = offsets_at(&mut client, &partitions, LATEST)?;
    let rows: Vec<_> = partitions
        .iter()
        .map(|tp| {
            let committed = committed.get(tp).copied();
            let end = ends.get(tp).copied();
            let lag = committed.zip(end).map(|(c, e)| (e - c).max(0));
            let member = owner.get(tp);
            (tp, committed, end, lag, member)
        })
        .collect();
    if args.json() {
        let out = json!({
            "group": group,
            "state": view.state,
            "protocol_type": view.protocol_type,
            "coordinator": coordinator,
            "members": view.members.iter().map(|m| json!({"member_id": m.member_id, "client_id": m.client_id, "host": m.host,
                "partitions": m.partitions.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
            "partitions": rows.iter().map(|(tp, c, e, l, m)| json!({"topic": tp.0, "partition": tp.1, "committed": c, "end_offset": e,
                "lag": l, "member_id": m.map(|m| m.member_id.clone()), "client_id": m.map(|m| m.client_id.clone()), "host": m.map(|m| m.host.clone())})).collect::<Vec<_>>(),
            "total_lag": rows.iter().filter_map(|r| r.3).sum::<i64>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "Group {group} ({}, {} members, state {})",
        if view.protocol_type.is_empty() {
            "no protocol"
        } else {
            &view.protocol_type
        },
        view.members.len(),
        view.state
    );
    let dash = || "-".to_string();
    print_table(
        &[
            "TOPIC",
            "PARTITION",
            "COMMITTED",
            "END-OFFSET",
            "LAG",
            "MEMBER",
            "CLIENT",
            "HOST",
        ],
        rows.iter()
            .map(|(tp, c, e, l, m)| {
                vec![
                    tp.0.clone(),
                    tp.1.to_string(),
                    c.map_or_else(dash, |v| v.to_string()),
                    e.map_or_else(dash, |v| v.to_string()),
                    l.map_or_else(dash, |v| v.to_string()),
                    m.map_or_else(dash, |m| m.member_id.clone()),
                    m.map_or_else(dash, |m| m.client_id.clone()),
                    m.map_or_else(dash, |m| m.host.clone()),
                ]
            })
            .collect(),
    );
    Ok(())
}

/// Commits `offsets` of `topic` for `group` as a simple consumer (generation -1, no member),
/// which Kafka accepts only while the group has no members.
pub fn commit_offsets(
    client: &mut Client,
    coordinator: &str,
    group: &str,
    topic: &str,
    topic_id: uuid::Uuid,
    offsets: &BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let (_, r) = client.send(Some(coordinator), |_| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_retention_time_ms(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_topic_id(topic_id)
                    .with_partitions(
                        offsets
                            .iter()
                            .map(|(p, o)| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(*o)
                                    .with_committed_leader_epoch(-1)
                            })
                            .collect(),
                    ),
            ])
    })?;
    for t in &r.topics {
        for p in &t.partitions {
            check(
                p.error_code,
                &format!(
                    "OffsetCommit for {group} on partition {}",
                    p.partition_index
                ),
            )?;
        }
    }
    Ok(())
}

/// `odradek group delete`: deletes groups that have no members, with their offsets.
pub fn delete(args: &ClientArgs, groups: &[String]) -> anyhow::Result<()> {
    let mut client = args.connect(TIMEOUT)?;
    for group in groups {
        let coordinator = coordinator(&mut client, group)?;
        let (_, r) = client.send(Some(&coordinator), |_| {
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))])
        })?;
        let result = r.results.first().context("no group in the response")?;
        check(result.error_code, &format!("DeleteGroups {group}"))?;
        eprintln!("deleted group {group}");
    }
    Ok(())
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("target").required(true)
    .args(["to_earliest", "to_latest", "to_offset", "to_timestamp", "shift_by"]))]
pub struct ResetArgs {
    group: String,
    #[arg(long)]
    topic: String,
    /// Only this partition (default: all of the topic's).
    #[arg(short, long)]
    partition: Option<i32>,
    #[arg(long)]
    to_earliest: bool,
    #[arg(long)]
    to_latest: bool,
    /// An offset, kept within each partition's earliest and latest offsets.
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// The first offset with a timestamp at or after MS (the end if none).
    #[arg(long, value_name = "MS")]
    to_timestamp: Option<i64>,
    /// Move each committed offset by N (negative: back), within earliest and latest.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    shift_by: Option<i64>,
    /// Show the plan without changing anything (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Commit the new offsets.
    #[arg(long)]
    execute: bool,
}

/// `odradek group reset-offsets`: plans new committed offsets and, with `--execute`,
/// commits them. Like Kafka's tool it refuses while the group has members, whose own
/// commits would overwrite the reset.
pub fn reset_offsets(args: ResetArgs, options: &ClientArgs) -> anyhow::Result<()> {
    let mut client = options.connect(TIMEOUT)?;
    let group = args.group.as_str();
    let coordinator = coordinator(&mut client, group)?;
    let view = describe_members(&mut client, &coordinator, group)?;
    if !view.members.is_empty() {
        anyhow::bail!(
            "group {group} has {} active members (state {}): stop its consumers before \
             resetting its offsets",
            view.members.len(),
            view.state
        );
    }
    let layout = crate::cli::topic_layout(&mut client, &args.topic, false)?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) if layout.leaders.contains_key(&p) => vec![p],
        Some(p) => anyhow::bail!("topic {} has no partition {p}", args.topic),
        None => layout.leaders.keys().copied().collect(),
    };
    let keys: BTreeSet<(String, i32)> = partitions
        .iter()
        .map(|p| (args.topic.clone(), *p))
        .collect();
    let committed = committed_offsets(&mut client, &coordinator, group)?;
    let earliest = offsets_at(&mut client, &keys, crate::cli::EARLIEST)?;
    let latest = offsets_at(&mut client, &keys, LATEST)?;
    let at_time = match args.to_timestamp {
        Some(ms) => offsets_at(&mut client, &keys, ms)?,
        None => HashMap::new(),
    };
    let mut plan = Vec::new();
    for key in &keys {
        let (low, high) = (
            earliest.get(key).copied().unwrap_or(0),
            latest.get(key).copied().unwrap_or(0),
        );
        let current = committed.get(key).copied();
        let new = if args.to_earliest {
            low
        } else if args.to_latest {
            high
        } else if let Some(o) = args.to_offset {
            o.clamp(low, high)
        } else if args.to_timestamp.is_some() {
            at_time.get(key).copied().unwrap_or(high)
        } else {
            let shift = args.shift_by.unwrap_or(0);
            let from = current.with_context(|| {
                format!(
                    "partition {} has no committed offset to shift; use --to-earliest, \
                     --to-latest or --to-offset",
                    key.1
                )
            })?;
            from.saturating_add(shift).clamp(low, high)
        };
        plan.push((key.1, current, new));
    }
    if args.execute {
        let offsets: BTreeMap<i32, i64> = plan.iter().map(|(p, _, n)| (*p, *n)).collect();
        commit_offsets(
            &mut client,
            &coordinator,
            group,
            &args.topic,
            layout.topic_id,
            &offsets,
        )?;
    }
    if options.json() {
        let rows: Vec<_> = plan
            .iter()
            .map(|(p, c, n)| json!({"topic": args.topic, "partition": p, "current": c, "new": n}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"group": group, "executed": args.execute, "partitions": rows})
            )?
        );
    } else {
        print_table(
            &["TOPIC", "PARTITION", "CURRENT", "NEW"],
            plan.iter()
                .map(|(p, c, n)| {
                    vec![
                        args.topic.clone(),
                        p.to_string(),
                        c.map_or_else(|| "-".to_string(), |c| c.to_string()),
                        n.to_string(),
                    ]
                })
                .collect(),
        );
        if !args.execute {
            eprintln!("dry run: nothing was committed; add --execute to apply this plan");
        }
    }
    Ok(())
}
