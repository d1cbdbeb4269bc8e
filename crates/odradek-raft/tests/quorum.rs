//! The quorum end to end: real TCP on 127.0.0.1, real files, several nodes in one process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use odradek_raft::{
    MetadataQuorum, MetadataStateMachine, QuorumConfig, QuorumError, RestoreError, ServerState,
};
use tokio::net::TcpListener;

/// Long enough for a loaded 2-core machine running other builds.
const DEADLINE: Duration = Duration::from_secs(20);

/// Remembers every applied record with its index.
#[derive(Default, Debug)]
struct Recorder {
    applied: Vec<(u64, Vec<u8>)>,
}

impl MetadataStateMachine for Recorder {
    fn apply(&mut self, index: u64, records: &[Bytes]) {
        for r in records {
            self.applied.push((index, r.to_vec()));
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.applied).unwrap()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        self.applied = serde_json::from_slice(snapshot)?;
        Ok(())
    }
}

type Node = MetadataQuorum<Recorder>;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn config(id: u64, voters: &BTreeMap<u64, SocketAddr>, dir: &Path) -> QuorumConfig {
    let mut c = QuorumConfig::new(
        id,
        voters[&id],
        voters.clone(),
        dir.join(format!("node-{id}")),
    );
    c.election_timeout_min = Duration::from_millis(500);
    c.election_timeout_max = Duration::from_millis(1000);
    // Also openraft's AppendEntries timeout: room for a loaded machine.
    c.heartbeat_interval = Duration::from_millis(150);
    c
}

/// Binds `n` listeners on ephemeral ports first, so every node knows every address.
async fn listeners(n: u64) -> (BTreeMap<u64, SocketAddr>, BTreeMap<u64, TcpListener>) {
    let mut addrs = BTreeMap::new();
    let mut ls = BTreeMap::new();
    for id in 1..=n {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, l.local_addr().unwrap());
        ls.insert(id, l);
    }
    (addrs, ls)
}

async fn start(config: QuorumConfig, listener: TcpListener) -> Node {
    MetadataQuorum::start_with_listener(config, listener, Recorder::default())
        .await
        .unwrap()
}

/// Starts `n` nodes one after the other, each knowing every address.
async fn start_nodes(n: u64, dir: &Path) -> (BTreeMap<u64, SocketAddr>, BTreeMap<u64, Node>) {
    let (addrs, mut ls) = listeners(n).await;
    let mut nodes = BTreeMap::new();
    for id in 1..=n {
        let listener = ls.remove(&id).unwrap();
        nodes.insert(id, start(config(id, &addrs, dir), listener).await);
    }
    (addrs, nodes)
}

/// Starts on the configured address again (a restart).
async fn restart(config: QuorumConfig) -> Node {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match TcpListener::bind(config.listen).await {
            Ok(l) => return start(config, l).await,
            Err(e) if Instant::now() < deadline => {
                eprintln!("rebinding {}: {e}", config.listen);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot rebind {}: {e}", config.listen),
        }
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    let start = Instant::now();
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{what}: {:?}", start.elapsed());
}

/// Waits until every node names the same leader, and that leader is among them.
async fn agreed_leader(nodes: &[&Node]) -> u64 {
    let mut leader = None;
    eventually("a leader all nodes agree on", || {
        let first = nodes[0].leader();
        leader = first;
        first.is_some()
            && nodes.iter().all(|n| n.leader() == first)
            && nodes
                .iter()
                .any(|n| Some(n.node_id()) == first && n.is_leader())
    })
    .await;
    leader.unwrap()
}

fn records(n: &Node) -> Vec<(u64, Vec<u8>)> {
    n.with_state(|s| s.applied.clone())
}

fn rec(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Proposes on whichever node leads, retrying across an election.
async fn propose_anywhere(nodes: &[&Node], batch: Vec<Bytes>) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for n in nodes {
            if n.is_leader() {
                match n.propose(batch.clone()).await {
                    Ok(index) => return index,
                    Err(e) => eprintln!("propose on {}: {e}", n.node_id()),
                }
            }
        }
        if Instant::now() >= deadline {
            for n in nodes {
                eprintln!("node {}: {}", n.node_id(), *n.raft().metrics().borrow());
            }
            panic!("no leader took the proposal");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn by_id<'a>(nodes: &[&'a Node], id: u64) -> &'a Node {
    nodes.iter().find(|n| n.node_id() == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_leads_at_once_and_replays_after_restart() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (addrs, mut ls) = listeners(1).await;
    let cfg = config(1, &addrs, dir.path());

    let node = start(cfg.clone(), ls.remove(&1).unwrap()).await;
    // A lone voter is leader by the time start returns.
    assert!(node.is_leader());
    let first = node.propose(vec![rec("a"), rec("b")]).await.unwrap();
    let second = node.propose(vec![rec("c")]).await.unwrap();
    assert!(second > first);
    // propose returns after the local apply.
    assert_eq!(
        records(&node),
        vec![
            (first, b"a".to_vec()),
            (first, b"b".to_vec()),
            (second, b"c".to_vec())
        ]
    );
    let status = node.status().await.unwrap();
    assert_eq!(status.leader, Some(1));
    assert_eq!(status.committed_index, Some(second));
    assert_eq!(status.voters, addrs);
    let huge = Bytes::from(vec![0u8; odradek_raft::MAX_PROPOSAL_BYTES + 1]);
    assert!(matches!(
        node.propose(vec![huge]).await,
        Err(QuorumError::TooLarge { .. })
    ));
    let before = records(&node);
    node.shutdown().await;

    let node = restart(cfg).await;
    assert!(node.is_leader());
    eventually("the log to be replayed", || records(&node) == before).await;
    let third = node.propose(vec![rec("d")]).await.unwrap();
    assert!(third > second);
    assert_eq!(records(&node).last(), Some(&(third, b"d".to_vec())));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_the_snapshot_then_replays_the_log_after_it() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (addrs, mut ls) = listeners(1).await;
    let mut cfg = config(1, &addrs, dir.path());
    cfg.snapshot_every_n_entries = 10;
    cfg.log_segment_bytes = 256;

    let node = start(cfg.clone(), ls.remove(&1).unwrap()).await;
    for i in 0..12 {
        node.propose(vec![rec(&format!("e{i}"))]).await.unwrap();
    }
    let before = records(&node);
    let last = node.last_applied().unwrap();
    let snapshot_at = {
        let mut at = None;
        eventually("a snapshot", || {
            at = node.raft().metrics().borrow().snapshot.map(|s| s.index);
            at.is_some_and(|i| i >= 5)
        })
        .await;
        at.unwrap()
    };
    // Entries after the snapshot exist only in the log.
    assert!(snapshot_at < last, "snapshot {snapshot_at}, last {last}");
    node.shutdown().await;

    let node = restart(cfg).await;
    eventually("snapshot plus log replay", || records(&node) == before).await;
    let m = node.raft().metrics().borrow().clone();
    assert!(m.snapshot.is_some_and(|s| s.index >= snapshot_at));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_in_order_and_followers_refuse_writes() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (addrs, mut ls) = listeners(3).await;
    // All three start at the same time; only node 1 initializes.
    let (n1, n2, n3) = tokio::join!(
        start(config(1, &addrs, dir.path()), ls.remove(&1).unwrap()),
        start(config(2, &addrs, dir.path()), ls.remove(&2).unwrap()),
        start(config(3, &addrs, dir.path()), ls.remove(&3).unwrap()),
    );
    let nodes = [&n1, &n2, &n3];
    let leader_id = agreed_leader(&nodes).await;
    let leader = by_id(&nodes, leader_id);

    let mut expected = Vec::new();
    for i in 0..20 {
        let batch = vec![rec(&format!("r{i}-a")), rec(&format!("r{i}-b"))];
        let index = leader.propose(batch.clone()).await.unwrap();
        expected.extend(batch.iter().map(|r| (index, r.to_vec())));
    }
    assert_eq!(records(leader), expected);
    eventually("every node to apply the same records", || {
        nodes.iter().all(|n| records(n) == expected)
    })
    .await;

    let follower = nodes.iter().find(|n| n.node_id() != leader_id).unwrap();
    match follower.propose(vec![rec("nope")]).await {
        Err(QuorumError::NotLeader {
            leader: Some((id, addr)),
        }) => {
            assert_eq!(id, leader_id);
            assert_eq!(addr, addrs[&leader_id]);
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }

    // DescribeQuorum's view, from the leader.
    let status = leader.status().await.unwrap();
    assert_eq!(status.state, ServerState::Leader);
    assert_eq!(status.voters, addrs);
    let last = expected.last().unwrap().0;
    eventually("the leader to see every voter caught up", || {
        let m = leader.raft().metrics().borrow().clone();
        m.replication
            .as_ref()
            .is_some_and(|r| r.len() == 3 && r.values().all(|l| l.map(|l| l.index) == Some(last)))
    })
    .await;
    let follower_status = follower.status().await.unwrap();
    assert_eq!(follower_status.leader, Some(leader_id));
    assert_eq!(follower_status.matched, None);
    assert_eq!(follower_status.term, status.term);

    for n in nodes {
        n.shutdown().await;
    }
    // One node alone, no quorum: it still replays what it knows was committed.
    let follower_id = follower.node_id();
    drop((n1, n2, n3));
    let alone = restart(config(follower_id, &addrs, dir.path())).await;
    eventually("a lone follower to replay its committed log", || {
        records(&alone) == expected
    })
    .await;
    // `leader()` may still name the last leader from the persisted vote here: openraft
    // reports it until an election replaces it. Writes fail all the same.
    let refused = tokio::time::timeout(Duration::from_secs(3), alone.propose(vec![rec("x")])).await;
    assert!(!matches!(refused, Ok(Ok(_))), "{refused:?}");
    alone.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_the_old_one_catches_up() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (addrs, mut nodes) = start_nodes(3, dir.path()).await;
    let all: Vec<&Node> = nodes.values().collect();
    let old_leader = agreed_leader(&all).await;
    propose_anywhere(&all, vec![rec("before")]).await;
    let old_term = nodes[&old_leader].status().await.unwrap().term;

    let stopped = nodes.remove(&old_leader).unwrap();
    stopped.shutdown().await;
    drop(stopped);
    let failover = Instant::now();
    let rest: Vec<&Node> = nodes.values().collect();
    let new_leader = agreed_leader(&rest).await;
    assert_ne!(new_leader, old_leader);
    let index = propose_anywhere(&rest, vec![rec("after")]).await;
    eprintln!("failover and first commit took {:?}", failover.elapsed());
    assert!(nodes[&new_leader].status().await.unwrap().term > old_term);

    let back = restart(config(old_leader, &addrs, dir.path())).await;
    let expected = records(&nodes[&new_leader]);
    assert_eq!(expected.last(), Some(&(index, b"after".to_vec())));
    eventually("the old leader to catch up", || records(&back) == expected).await;
    nodes.insert(old_leader, back);
    let all: Vec<&Node> = nodes.values().collect();
    assert_eq!(agreed_leader(&all).await, new_leader);
    for n in nodes.values() {
        n.shutdown().await;
    }
    drop(all);
    drop(nodes);

    // All three restart at once from their data: nobody initializes again, the log and
    // its first membership entry are the ones written before.
    let (r1, r2, r3) = tokio::join!(
        restart(config(1, &addrs, dir.path())),
        restart(config(2, &addrs, dir.path())),
        restart(config(3, &addrs, dir.path())),
    );
    let all = [&r1, &r2, &r3];
    agreed_leader(&all).await;
    let index = propose_anywhere(&all, vec![rec("after restart")]).await;
    let mut expected = expected;
    expected.push((index, b"after restart".to_vec()));
    eventually(
        "every node to apply the new record after the full restart",
        || all.iter().all(|n| records(n) == expected),
    )
    .await;
    for n in all {
        let m = n.raft().metrics().borrow().clone();
        assert_eq!(m.membership_config.log_id().map(|l| l.index), Some(0));
        n.shutdown().await;
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("raft-log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_purge_the_log_and_bring_lagging_nodes_up() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (addrs, mut ls) = listeners(3).await;
    let cfg = |id| {
        let mut c = config(id, &addrs, dir.path());
        c.snapshot_every_n_entries = 10;
        c.log_segment_bytes = 512;
        c
    };
    // Node 3 stays down: 1 and 2 are a majority of three.
    let l3 = ls.remove(&3).unwrap();
    let mut n1 = start(cfg(1), ls.remove(&1).unwrap()).await;
    let n2 = start(cfg(2), ls.remove(&2).unwrap()).await;
    agreed_leader(&[&n1, &n2]).await;
    for i in 0..60 {
        propose_anywhere(&[&n1, &n2], vec![rec(&format!("entry {i}"))]).await;
    }
    let expected = records(&n1);
    assert_eq!(expected.len(), 60);
    eventually("both nodes to snapshot and purge", || {
        [&n1, &n2].iter().all(|n| {
            let m = n.raft().metrics().borrow().clone();
            m.snapshot.is_some() && m.purged.is_some_and(|p| p.index >= 20)
        })
    })
    .await;
    for id in [1, 2] {
        let node_dir = dir.path().join(format!("node-{id}"));
        // A snapshot being replaced is briefly there twice (rename, then removal).
        eventually("one snapshot kept", || snapshot_files(&node_dir).len() == 1).await;
        let segments = segment_files(&node_dir);
        assert!(
            !segments
                .iter()
                .any(|p| p.ends_with("00000000000000000000.log")),
            "the first segment was purged: {segments:?}"
        );
    }

    // A brand-new node: the entries it lacks are gone from every log, so only a snapshot
    // can bring it up.
    let n3 = start(cfg(3), l3).await;
    eventually("the new node to catch up", || records(&n3) == expected).await;
    eventually("the new node to keep one snapshot", || {
        snapshot_files(&dir.path().join("node-3")).len() == 1
    })
    .await;

    // A restart restores the snapshot and replays the log after it.
    let follower_id = if n1.is_leader() { 2 } else { 1 };
    let (follower, other) = if follower_id == 1 { (n1, n2) } else { (n2, n1) };
    follower.shutdown().await;
    drop(follower);
    // More entries while it is down.
    for i in 60..70 {
        propose_anywhere(&[&other, &n3], vec![rec(&format!("entry {i}"))]).await;
    }
    n1 = restart(cfg(follower_id)).await;
    let expected = records(&other);
    assert_eq!(expected.len(), 70);
    eventually("the restarted node to catch up", || {
        records(&n1) == expected
    })
    .await;
    for n in [&n1, &other, &n3] {
        n.shutdown().await;
    }
}

/// A follower's proposal goes to the leader and comes back applied on the follower too,
/// across a failover: any broker can write metadata, as Kafka's brokers forward to the
/// controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_proposals_to_the_leader() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (_, mut nodes) = start_nodes(3, dir.path()).await;
    let all: Vec<&Node> = nodes.values().collect();
    let leader = agreed_leader(&all).await;
    let follower = nodes.keys().copied().find(|&id| id != leader).unwrap();
    let index = nodes[&follower]
        .propose_anywhere(vec![rec("from a follower")], DEADLINE)
        .await
        .unwrap();
    assert!(
        records(&nodes[&follower]).contains(&(index, b"from a follower".to_vec())),
        "applied on the proposer when it returns"
    );

    let stopped = nodes.remove(&leader).unwrap();
    stopped.shutdown().await;
    drop(stopped);
    // Straight after the leader's loss: the proposal waits out the election.
    let proposer = nodes.keys().copied().next().unwrap();
    let index = nodes[&proposer]
        .propose_anywhere(vec![rec("across a failover")], DEADLINE)
        .await
        .unwrap();
    let rest: Vec<&Node> = nodes.values().collect();
    eventually("both survivors to apply the write", || {
        rest.iter()
            .all(|n| records(n).contains(&(index, b"across a failover".to_vec())))
    })
    .await;
    for n in rest {
        n.shutdown().await;
    }
}
