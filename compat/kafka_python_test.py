#!/usr/bin/env python3
"""kafka-python compatibility check for Odradek.

Creates a 3-partition topic with KafkaAdminClient, produces 10,000 keyed
messages with acks=all, reads them back from the beginning with a
KafkaConsumer that has no group (group_id=None, assign + seek), and checks
every message, and checks DescribeLogDirs (describe_log_dirs()) lists each
partition with at least its payload's bytes. Then consumes the topic again with a consumer group of two
subscribed KafkaConsumers (sync commit after every batch), checks that the
group saw every message exactly once, that both members were assigned
partitions, and that the group's committed offsets (admin OffsetFetch) are the
end offsets. Then the configs phase on the same topic: IncrementalAlterConfigs
(alter_configs(incremental=True): SET, DELETE) checked with DescribeConfigs,
and an invalid value refused with InvalidConfigurationError. Finally
ElectLeaders, Alter/ListPartitionReassignments and the ACL APIs (refused with
SecurityDisabledError: no authorizer).

    BOOTSTRAP=127.0.0.1:19092 target/compat-venv/bin/python compat/kafka_python_test.py
"""
import os
import signal
import sys
import time
import uuid

import kafka.errors as Errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, AlterConfigOp,
                         ConfigResource, ConfigResourceType, ResourcePattern, ResourcePatternFilter, ResourceType)
from common import (HARD_LIMIT_S, N, PARTITIONS, TOPIC_CONFIG_DEFAULTS, TOPIC_CONFIG_SET, TOPIC_CONFIG_TYPES, key_of,
                    remaining, value_of, verify, watchdog_for)


CLIENT = "kafka-python"


def group_consume(common, topic, end):
    """Consume the (already produced) topic with a group of two subscribed
    consumers. Returns (group id, records [(partition, offset, key, value)] in
    consumption order across both members, per-member info).

    Both members are polled from this one thread, alternately with short
    timeouts: kafka-python keeps a JoinGroup in flight across polls, so the two
    JoinGroups reach the broker back to back and normally both land in the
    first generation (the broker holds the first join of an empty group for
    group.initial.rebalance.delay.ms, 3 s by default). Rebalances only run
    inside poll() and records are only returned while the member is stable, so
    committing synchronously after every non-empty batch, before the next
    poll, means nothing handed to us is uncommitted when a partition moves:
    exactly once is a fair expectation even if a member joins late.
    """
    group = f"{topic}-group"
    total = sum(end.values())
    members = []
    try:
        for m in range(2):
            c = KafkaConsumer(**dict(common, client_id=f"odradek-compat-kafka-python-m{m}"), group_id=group,
                              enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=500)
            members.append(c)
            c.subscribe([topic])
        records, seen = [], set()
        info = [{"assigned": set(), "records": 0, "commits": 0} for _ in members]
        # stop when every record was seen and both members have owned partitions
        # (a late joiner gets partitions whose committed offset is already the end)
        while len(seen) < total or not all(i["assigned"] for i in info):
            if remaining(100) <= 15:  # keep time for close + offset checks
                raise RuntimeError(f"group consume timed out: {len(seen)} of {total} records, "
                                   f"assignments {[sorted(i['assigned']) for i in info]}")
            for c, i in zip(members, info):
                batch = c.poll(timeout_ms=200, max_records=1000)
                i["assigned"].update(tp.partition for tp in c.assignment() if tp.topic == topic)
                n = 0
                for msgs in batch.values():
                    for r in msgs:
                        records.append((r.partition, r.offset, r.key, r.value))
                        seen.add((r.partition, r.offset))
                        n += 1
                if n:
                    c.commit(timeout_ms=15000)
                    i["records"] += n
                    i["commits"] += 1
    finally:
        # close() sends LeaveGroup; nothing is left to commit (and auto-commit is off)
        for c in members:
            try:
                c.close(autocommit=False, timeout_ms=5000)
            except Exception as e:  # noqa: BLE001
                print(f"  warning: group member close failed: {e!r}", file=sys.stderr)
    return group, records, info


def check_group(admin, group, topic, end):
    """After both members left: committed offsets == end offsets, group Empty."""
    problems = []
    offsets = admin.list_group_offsets({group: None}).get(group, {})
    committed = {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}
    if committed != end:
        problems.append(f"group {group}: committed offsets {dict(sorted(committed.items()))}, "
                        f"expected the end offsets {dict(sorted(end.items()))}")
    desc = admin.describe_groups([group]).get(group)
    state = desc and (desc.get("group_state") or desc.get("state"))
    if not desc or desc.get("error") or state != "Empty" or desc.get("members"):
        problems.append(f"group {group}: described as {desc!r} after both members left, expected Empty with no members")
    listed = [g.get("group_id") for g in admin.list_groups()]
    if group not in listed:
        problems.append(f"group {group}: not in ListGroups ({len(listed)} groups listed)")
    return problems


def log_dirs_phase(admin, topic, end, payload_bytes):
    """DescribeLogDirs through KafkaAdminClient.describe_log_dirs(): one broker,
    one directory, every partition of the topic once, each holding at least the
    key and value bytes produced to it (no compression here)."""
    problems = []
    brokers = admin.describe_log_dirs([topic])
    dirs = [d for b in brokers for d in b["log_dirs"]]
    if len(brokers) != 1 or len(dirs) != 1:
        return [f"describe_log_dirs: expected one broker with one directory, got {brokers}"], ""
    found = {}
    for t in dirs[0]["topics"]:
        if t["name"] != topic:
            problems.append(f"describe_log_dirs: listed topic {t['name']}, asked only for {topic}")
        for p in t["partitions"]:
            if p["partition_index"] in found:
                problems.append(f"describe_log_dirs: partition {p['partition_index']} listed twice")
            found[p["partition_index"]] = p["partition_size"]
    if set(found) != set(range(PARTITIONS)):
        problems.append(f"describe_log_dirs: partitions {sorted(found)}, expected 0..{PARTITIONS - 1}")
    for p, size in found.items():
        if size < payload_bytes.get(p, 0):
            problems.append(f"describe_log_dirs: partition {p} is {size} bytes, less than the "
                            f"{payload_bytes.get(p, 0)} bytes of keys and values it holds")
    total = sum(found.values())
    return problems, f"log dir {dirs[0]['log_dir']} holds {total} bytes of it"


def configs_phase(admin, topic):
    """IncrementalAlterConfigs and DescribeConfigs on the topic (after both
    read-backs). KafkaAdminClient.alter_configs(incremental=True) sends
    IncrementalAlterConfigs (kafka-python 3.x; without incremental=True it
    would pick it from ApiVersions anyway) and, by default (raise_on_unknown),
    first a DescribeConfigs to check that every key is a known dynamic config.
    Returns (problems, summary). Stops at the first request that fails
    outright: the later steps build on the earlier ones."""
    problems = []
    dynamic = {}  # what this phase has set on the topic: name -> value

    def alter(configs):
        """{name: (AlterConfigOp, value)} -> the broker's result for the topic: 'OK' or an error string"""
        res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)], incremental=True)
        return res.get("topic", {}).get(topic, f"no result for the topic in {res!r}")

    def describe(when):
        """DescribeConfigs (with synonyms) of the topic: every config set by this
        phase must be reported as DYNAMIC_TOPIC_CONFIG with its value, and be
        its own first synonym; every other one must not be a topic config."""
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], include_synonyms=True,
                                         config_filter="all").get("topic", {}).get(topic, {})
        missing = [n for n in TOPIC_CONFIG_TYPES if n not in configs]
        if missing:
            problems.append(f"{when}: DescribeConfigs lists {len(configs)} configs, not {', '.join(missing)}")
        for name, c in sorted(configs.items()):
            src = c.get("config_source")
            if name in dynamic:
                first = (c.get("synonyms") or [{}])[0]
                if (c.get("value"), src) != (dynamic[name], "DYNAMIC_TOPIC_CONFIG") or \
                        (first.get("name"), first.get("value"), first.get("source")) != \
                        (name, dynamic[name], "DYNAMIC_TOPIC_CONFIG"):
                    problems.append(f"{when}: {name}={c.get('value')!r} source {src} synonyms {c.get('synonyms')}, "
                                    f"expected {dynamic[name]!r} source DYNAMIC_TOPIC_CONFIG, also as first synonym")
            elif src == "DYNAMIC_TOPIC_CONFIG":
                problems.append(f"{when}: {name}={c.get('value')!r} source {src}, never set on the topic "
                                f"(expected a default or broker-level source)")
            if name in TOPIC_CONFIG_TYPES and c.get("config_type") != TOPIC_CONFIG_TYPES[name]:
                problems.append(f"{when}: {name} has type {c.get('config_type')}, expected {TOPIC_CONFIG_TYPES[name]}")
        for name, value in TOPIC_CONFIG_DEFAULTS.items():
            c = configs.get(name)
            if name not in dynamic and c and (c.get("value"), c.get("config_source")) != (value, "DEFAULT_CONFIG"):
                problems.append(f"{when}: {name}={c.get('value')!r} source {c.get('config_source')}, "
                                f"expected the default {value!r} (DEFAULT_CONFIG)")
        return configs

    when = "start"
    try:
        when = "IncrementalAlterConfigs SET " + ", ".join(f"{k}={v}" for k, v in TOPIC_CONFIG_SET.items())
        res = alter({k: (AlterConfigOp.SET, v) for k, v in TOPIC_CONFIG_SET.items()})
        if res != "OK":
            raise RuntimeError(res)
        dynamic.update(TOPIC_CONFIG_SET)
        described = len(describe(f"after {when}"))

        when = "IncrementalAlterConfigs DELETE retention.ms"
        res = alter({"retention.ms": (AlterConfigOp.DELETE, None)})
        if res != "OK":
            raise RuntimeError(res)
        del dynamic["retention.ms"]  # back to the default (checked by describe)

        when = "IncrementalAlterConfigs SET segment.bytes=abc"
        res = alter({"segment.bytes": (AlterConfigOp.SET, "abc")})
        if res == "OK":
            problems.append(f"{when}: accepted, expected {Errors.InvalidConfigurationError.__name__}")
        elif Errors.InvalidConfigurationError.__name__ not in res:
            problems.append(f"{when}: refused with {res!r}, expected {Errors.InvalidConfigurationError.__name__}")
        describe("after DELETE retention.ms and the refused SET segment.bytes=abc")
    except Exception as e:  # noqa: BLE001
        problems.append(f"{when}: {type(e).__name__}: {e}")
        return problems, f"configs failed at {when}"
    if problems:
        return problems, f"configs: {len(problems)} problem(s)"
    return problems, f"configs ok ({described} described; SET/DELETE; abc refused)"


def replicas_and_acls_phase(admin, topic):
    """ElectLeaders, AlterPartitionReassignments, ListPartitionReassignments and
    the three ACL APIs, as KafkaAdminClient sends them. One node holds and leads
    every partition, so no election is needed, the only valid reassignment is to
    that node (done at once), nothing is ever being reassigned; and with no
    authorizer every ACL request is refused with SECURITY_DISABLED, as Kafka
    refuses it. Returns (problems, summary)."""
    problems = []
    node = admin.describe_cluster()["controller_id"]
    tp = lambda p: TopicPartition(topic, p)  # noqa: E731

    elected = admin.elect_leaders(0, {topic: list(range(PARTITIONS))})
    codes = {r.partition_id: r.error_code for t in elected.replica_election_results for r in t.partition_result}
    if codes != {p: Errors.ElectionNotNeededError.errno for p in range(PARTITIONS)}:
        problems.append(f"elect_leaders (preferred) on every partition: {codes}, expected ELECTION_NOT_NEEDED each")
    missing = admin.elect_leaders(1, {topic: [PARTITIONS]}, raise_errors=False)
    codes = [r.error_code for t in missing.replica_election_results for r in t.partition_result]
    if codes != [Errors.UnknownTopicOrPartitionError.errno]:
        problems.append(f"elect_leaders (unclean) on partition {PARTITIONS}: {codes}, expected UNKNOWN_TOPIC_OR_PARTITION")

    expected = {tp(0): None, tp(1): Errors.InvalidReplicationAssignmentError,
                tp(2): Errors.NoReassignmentInProgressError, tp(PARTITIONS): Errors.UnknownTopicOrPartitionError}
    got = admin.alter_partition_reassignments({tp(0): [node], tp(1): [node, node + 1], tp(2): None,
                                               tp(PARTITIONS): [node]})
    if got != expected:
        problems.append(f"alter_partition_reassignments: {got}, expected {expected}")
    for asked in (None, {topic: list(range(PARTITIONS))}):
        listed = admin.list_partition_reassignments(asked)
        if listed != {}:
            problems.append(f"list_partition_reassignments({asked}): {listed}, expected none in progress")

    acl = ACL(principal="User:compat", host="*", operation=ACLOperation.READ,
              permission_type=ACLPermissionType.ALLOW,
              resource_pattern=ResourcePattern(ResourceType.TOPIC, topic, ACLResourcePatternType.LITERAL))
    any_acl = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
                        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))
    try:
        admin.describe_acls(any_acl)
        problems.append("describe_acls: answered, expected SecurityDisabledError (no authorizer)")
    except Errors.SecurityDisabledError:
        pass
    created = admin.create_acls([acl])
    if created["succeeded"] or created["failed"] != [Errors.SecurityDisabledError]:
        problems.append(f"create_acls: {created}, expected one SecurityDisabledError")
    deleted = [err for _f, _matched, err in admin.delete_acls([any_acl])]
    if deleted != [Errors.SecurityDisabledError]:
        problems.append(f"delete_acls: {deleted}, expected one SecurityDisabledError")
    return problems, "elections not needed, reassignment to the node only, ACLs refused (security disabled)"


def main():
    bootstrap = os.environ.get("BOOTSTRAP")
    if not bootstrap:
        print(f"{CLIENT}: FAIL: set BOOTSTRAP=host:port", flush=True)
        return 2
    topic = f"compat-kafkapython-{uuid.uuid4().hex[:12]}"
    # api_version=None (the default) makes kafka-python probe the broker with
    # ApiVersions and pick protocol versions from it: record batch v2 on any
    # broker that advertises Produce v3+.
    common = dict(bootstrap_servers=bootstrap, client_id="odradek-compat-kafka-python",
                  request_timeout_ms=30000, api_version=None)

    # 1. create the topic; wait_for_metadata polls Metadata until every
    # partition has a leader.
    admin = KafkaAdminClient(**common)
    try:
        admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}},
                            timeout_ms=20000, wait_for_metadata=True)

        # 2. produce
        producer = KafkaProducer(**common, acks="all", enable_idempotence=False, linger_ms=5,
                                 max_block_ms=30000, delivery_timeout_ms=45000)
        try:
            t0 = time.monotonic()
            futures = [producer.send(topic, key=key_of(i), value=value_of(i)) for i in range(N)]
            producer.flush(timeout=remaining(60))
            delivered, failed = {}, []
            for i, fut in enumerate(futures):
                try:
                    md = fut.get(timeout=remaining(5))
                    delivered[i] = (md.partition, md.offset)
                except Exception as e:  # noqa: BLE001
                    failed.append((i, e))
            produce_s = time.monotonic() - t0
        finally:
            producer.close(timeout=5)
        if failed:
            raise RuntimeError(f"produce: {len(failed)} of {N} failed, first: {failed[0][0]}: {failed[0][1]!r}")

        # 3. consume everything back without a group: assign + seek_to_beginning,
        # no commits (enable_auto_commit=False, group_id=None).
        consumer = KafkaConsumer(**common, group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="none", fetch_max_wait_ms=500)
        try:
            parts = consumer.partitions_for_topic(topic)
            if parts != set(range(PARTITIONS)):
                raise RuntimeError(f"metadata lists partitions {parts}, expected 0..{PARTITIONS - 1}")
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            low = consumer.beginning_offsets(tps, timeout_ms=15000)
            if any(low[tp] != 0 for tp in tps):
                raise RuntimeError(f"log start offsets {[low[tp] for tp in tps]}, expected all 0")
            end = {tp.partition: off for tp, off in consumer.end_offsets(tps, timeout_ms=15000).items()}
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            records, nxt = [], {p: 0 for p in range(PARTITIONS)}
            t1 = time.monotonic()
            while any(nxt[p] < end[p] for p in end):
                if remaining(100) <= 0.1:
                    raise RuntimeError(f"consume timed out: {len(records)} records read, positions {nxt}, ends {end}")
                for tp, msgs in consumer.poll(timeout_ms=1000, max_records=2000).items():
                    for m in msgs:
                        records.append((m.partition, m.offset, m.key, m.value))
                        nxt[m.partition] = max(nxt[m.partition], m.offset + 1)
            consume_s = time.monotonic() - t1
        finally:
            consumer.close(autocommit=False)

        problems = verify(records, end, delivered)
        payload_bytes = {}
        for p, _off, key, value in records:
            payload_bytes[p] = payload_bytes.get(p, 0) + len(key or b"") + len(value or b"")
        dproblems, dirs_note = log_dirs_phase(admin, topic, end, payload_bytes)
        problems += dproblems

        # 4. consume again with a two-member consumer group, then check the
        # group's committed offsets (only if the plain read-back was right)
        group_note = ""
        if not problems:
            t2 = time.monotonic()
            group, grecords, info = group_consume(common, topic, end)
            group_s = time.monotonic() - t2
            problems = [f"group {group}: {p}" for p in verify(grecords, end, delivered)]
            for m, i in enumerate(info):
                if not i["assigned"]:
                    problems.append(f"group {group}: member {m} was never assigned a partition")
            problems += check_group(admin, group, topic, end)
            group_note = ("; group of 2: " + ", ".join(
                f"m{m} p{{{','.join(map(str, sorted(i['assigned'])))}}} {i['records']} records/{i['commits']} commits"
                for m, i in enumerate(info)) + f", {group_s:.1f}s, lag 0")
            if not problems and not os.environ.get("KEEP_TOPIC"):
                try:
                    res = admin.delete_groups([group])
                    if res.get(group) != "OK":
                        group_note += f" (warning: delete_groups: {res})"
                except Exception as e:  # noqa: BLE001
                    group_note += f" (warning: delete_groups failed: {e!r})"

        # 5. topic configs (only if the data checks passed: a failing run keeps
        # its topic untouched for inspection)
        if not problems:
            t3 = time.monotonic()
            cproblems, summary = configs_phase(admin, topic)
            problems = [f"configs: {p}" for p in cproblems]
            group_note += f"; {summary}, {time.monotonic() - t3:.1f}s"

        # 6. elections, reassignments and ACLs
        if not problems:
            rproblems, summary = replicas_and_acls_phase(admin, topic)
            problems = [f"replicas/acls: {p}" for p in rproblems]
            group_note += f"; {summary}"

        # 7. features (KIP-584): what the broker supports and the cluster finalized,
        # from ApiVersions v3+
        if not problems:
            features = admin.describe_features()
            mv = features.get("metadata.version", {})
            if mv.get("supported") != (7, 25) or mv.get("finalized") != (25, 25):
                problems.append(f"describe_features: metadata.version {mv}, expected supported (7, 25) "
                                f"and finalized at 25")
            if features.get("group.version", {}).get("finalized") != (1, 1):
                problems.append(f"describe_features: group.version {features.get('group.version')}, "
                                f"expected finalized at 1")
            group_note += f"; features {sorted(features)} finalized"

        # 8. clean up on success (best effort: a failed delete is reported, not fatal).
        # A failing run keeps its topic for inspection.
        note = ""
        if not problems and not os.environ.get("KEEP_TOPIC"):
            try:
                admin.delete_topics([topic], timeout_ms=10000)
            except Exception as e:  # noqa: BLE001
                note = f" (warning: delete_topics failed: {e!r})"
    finally:
        admin.close()

    counts = ",".join(f"p{p}={end[p]}" for p in sorted(end))
    if problems:
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        print(f"{CLIENT}: FAIL {len(problems)} problem(s), first: {problems[0]} [topic {topic}]{note}", flush=True)
        return 1
    print(f"{CLIENT}: OK {N} messages via {topic} ({counts}); produce {produce_s:.1f}s, "
          f"consume {consume_s:.1f}s; {dirs_note}{group_note}{note}", flush=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, watchdog_for(CLIENT))
    signal.alarm(HARD_LIMIT_S)
    try:
        rc = main()
    except Exception as e:  # noqa: BLE001
        print(f"{CLIENT}: FAIL {type(e).__name__}: {e}", flush=True)
        rc = 1
    sys.stdout.flush()
    os._exit(rc)  # do not let a stuck client thread delay the exit
