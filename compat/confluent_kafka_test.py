#!/usr/bin/env python3
"""confluent-kafka (librdkafka) compatibility check for Odradek.

Creates a 3-partition topic with AdminClient, produces 10,000 keyed messages
with acks=all, reads them back from the beginning with a manually assigned
consumer (no consumer-group protocol), and checks every message. Then consumes
the topic again with a consumer group of two subscribed Consumers (sync commit
after every batch and on revocation), checks that the group saw every message
exactly once, that both members were assigned partitions, and that the group's
committed offsets (AdminClient.list_consumer_group_offsets) are the end
offsets. Finally the configs phase on the same topic: IncrementalAlterConfigs
(SET, APPEND, SUBTRACT, DELETE) checked with DescribeConfigs, an invalid value
refused with INVALID_CONFIG, and DeleteRecords on one partition. Last, a
transactions phase on a second topic: an idempotent producer, then a
transactional producer committing, aborting and committing again, checked with
read_committed (committed records only, in order) and read_uncommitted readers.
Then ElectLeaders (ELECTION_NOT_NEEDED for every partition: one node leads
them all) and CreateAcls (SECURITY_DISABLED: no authorizer).

    BOOTSTRAP=127.0.0.1:19092 target/compat-venv/bin/python compat/confluent_kafka_test.py
"""
import os
import signal
import sys
import time
import uuid

from confluent_kafka import (OFFSET_BEGINNING, Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, ElectionType,
                             KafkaError, KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient, AlterConfigOpType,
                                   ConfigEntry, ConfigResource, ConfigSource, NewTopic, ResourcePatternType,
                                   ResourceType)
from common import (DELETE_RECORDS_BEFORE, HARD_LIMIT_S, N, PARTITIONS, TOPIC_CONFIG_DEFAULTS, TOPIC_CONFIG_SET,
                    TOPIC_CONFIG_TYPES, key_of, remaining, value_of, verify, watchdog_for)


CLIENT = "confluent-kafka"


def commit_sync(consumer):
    """Commit the offsets of everything consume() has handed out (librdkafka
    stores them on delivery: enable.auto.offset.store=true). Returns False if
    there was nothing to commit."""
    try:
        result = consumer.commit(asynchronous=False)
    except KafkaException as e:
        if e.args[0].code() == KafkaError._NO_OFFSET:
            return False
        raise
    errs = [f"p{tp.partition}: {tp.error}" for tp in result or [] if tp.error]
    if errs:
        raise RuntimeError(f"commit: {', '.join(errs)}")
    return True


def group_consume(common, topic, end):
    """Consume the (already produced) topic with a group of two subscribed
    consumers. Returns (group id, records [(partition, offset, key, value)] in
    consumption order across both members, per-member info).

    librdkafka joins in its own threads, so both members are polled from this
    one thread, alternately with short timeouts; both JoinGroups reach the
    broker together and normally land in the first generation (the broker
    holds the first join of an empty group for group.initial.rebalance.delay.ms,
    3 s by default). Each member commits synchronously after every batch, and
    on_revoke (served inside consume(), before the partitions move) commits
    again, so even a late joiner causes no redelivery: exactly once is a fair
    expectation.
    """
    group = f"{topic}-group"
    total = sum(end.values())
    info = [{"assigned": set(), "records": 0, "commits": 0, "revoke_commits": 0, "errors": []} for _ in range(2)]
    consumers = []

    def listeners(i):
        def on_assign(_consumer, partitions):
            i["assigned"].update(tp.partition for tp in partitions if tp.topic == topic)

        def on_revoke(consumer, partitions):
            if partitions:
                try:
                    if commit_sync(consumer):
                        i["revoke_commits"] += 1
                except Exception as e:  # noqa: BLE001
                    i["errors"].append(f"commit on revoke of {sorted(tp.partition for tp in partitions)}: {e!r}")
        return on_assign, on_revoke

    try:
        for m in range(2):
            c = Consumer({**common, "client.id": f"odradek-compat-confluent-m{m}", "group.id": group,
                          "enable.auto.commit": False, "auto.offset.reset": "earliest",
                          "enable.partition.eof": False})
            consumers.append(c)
            on_assign, on_revoke = listeners(info[m])
            c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        records, seen = [], set()
        # stop when every record was seen and both members have owned partitions
        # (a late joiner gets partitions whose committed offset is already the end)
        while len(seen) < total or not all(i["assigned"] for i in info):
            if remaining(100) <= 15:  # keep time for close + offset checks
                raise RuntimeError(f"group consume timed out: {len(seen)} of {total} records, "
                                   f"assignments {[sorted(i['assigned']) for i in info]}")
            for c, i in zip(consumers, info):
                n = 0
                for msg in c.consume(num_messages=1000, timeout=0.2):
                    if msg.error():
                        raise KafkaException(msg.error())
                    records.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
                    seen.add((msg.partition(), msg.offset()))
                    n += 1
                if n:
                    i["records"] += n
                    i["commits"] += commit_sync(c)
    finally:
        # close() revokes (on_revoke commits; nothing is left by then) and leaves the group
        for c in consumers:
            try:
                c.close()
            except Exception as e:  # noqa: BLE001
                print(f"  warning: group member close failed: {e!r}", file=sys.stderr)
    return group, records, info


def check_group(admin, group, topic, end):
    """After both members left: committed offsets == end offsets, group Empty."""
    problems = []
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                            request_timeout=15)[group].result(timeout=remaining(20))
    committed = {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == topic}
    if committed != end:
        problems.append(f"committed offsets {dict(sorted(committed.items()))}, "
                        f"expected the end offsets {dict(sorted(end.items()))}")
    desc = admin.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=remaining(20))
    if desc.state != ConsumerGroupState.EMPTY or desc.members:
        problems.append(f"described as {desc.state} with {len(desc.members)} member(s) after both members left, "
                        f"expected EMPTY with none")
    listed = admin.list_consumer_groups(request_timeout=15).result(timeout=remaining(20))
    if group not in [g.group_id for g in listed.valid]:
        problems.append(f"not in ListGroups ({len(listed.valid)} groups listed, errors {listed.errors})")
    return problems


def configs_phase(admin, common, topic, end):
    """IncrementalAlterConfigs, DescribeConfigs and DeleteRecords on the topic
    (after both read-backs, so the data checks are not affected). Returns
    (problems, summary). Stops at the first request that fails outright: the
    later steps build on the earlier ones."""
    problems = []
    dynamic = {}  # what this phase has set on the topic: name -> value

    def alter(*entries):
        res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=list(entries))
        admin.incremental_alter_configs([res], request_timeout=remaining(15))[res].result(timeout=remaining(20))

    def op(kind, name, value=None):
        return ConfigEntry(name, value, incremental_operation=kind)

    def describe(when):
        """DescribeConfigs of the topic: every config set by this phase must be
        reported as DYNAMIC_TOPIC_CONFIG with its value, every other one must
        not be a topic config, and is_default must agree with the source."""
        res = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = admin.describe_configs([res], request_timeout=remaining(15))[res].result(timeout=remaining(20))
        missing = [n for n in TOPIC_CONFIG_TYPES if n not in configs]
        if missing:
            problems.append(f"{when}: DescribeConfigs lists {len(configs)} configs, not {', '.join(missing)}")
        for name, e in sorted(configs.items()):
            src = ConfigSource(e.source)
            if name in dynamic:
                if (e.value, src, e.is_default) != (dynamic[name], ConfigSource.DYNAMIC_TOPIC_CONFIG, False):
                    problems.append(f"{when}: {name}={e.value!r} source {src.name} is_default {e.is_default}, "
                                    f"expected {dynamic[name]!r} source DYNAMIC_TOPIC_CONFIG is_default False")
            elif src is ConfigSource.DYNAMIC_TOPIC_CONFIG or e.is_default != (src is ConfigSource.DEFAULT_CONFIG):
                problems.append(f"{when}: {name}={e.value!r} source {src.name} is_default {e.is_default}, "
                                f"never set on the topic (expected a default or broker-level source)")
        for name, value in TOPIC_CONFIG_DEFAULTS.items():
            e = configs.get(name)
            if name not in dynamic and e and (e.value, ConfigSource(e.source), e.is_default) != \
                    (value, ConfigSource.DEFAULT_CONFIG, True):
                problems.append(f"{when}: {name}={e.value!r} source {ConfigSource(e.source).name} is_default "
                                f"{e.is_default}, expected the default {value!r} (DEFAULT_CONFIG, is_default True)")
        return configs

    when = "start"
    try:
        when = "IncrementalAlterConfigs SET " + ", ".join(f"{k}={v}" for k, v in TOPIC_CONFIG_SET.items())
        alter(*(op(AlterConfigOpType.SET, k, v) for k, v in TOPIC_CONFIG_SET.items()))
        dynamic.update(TOPIC_CONFIG_SET)
        configs = describe(f"after {when}")
        described = len(configs)

        when = "IncrementalAlterConfigs APPEND cleanup.policy compact"
        alter(op(AlterConfigOpType.APPEND, "cleanup.policy", "compact"))
        dynamic["cleanup.policy"] = "delete,compact"
        describe(f"after {when}")
        # back to delete only (the topic is not meant to be compacted); Kafka keeps
        # the result as a topic override
        when = "IncrementalAlterConfigs SUBTRACT cleanup.policy compact"
        alter(op(AlterConfigOpType.SUBTRACT, "cleanup.policy", "compact"))
        dynamic["cleanup.policy"] = "delete"
        describe(f"after {when}")

        when = "IncrementalAlterConfigs DELETE retention.ms"
        alter(op(AlterConfigOpType.DELETE, "retention.ms"))
        del dynamic["retention.ms"]  # back to the default (checked by describe)

        when = "IncrementalAlterConfigs SET segment.bytes=abc"
        try:
            alter(op(AlterConfigOpType.SET, "segment.bytes", "abc"))
            problems.append(f"{when}: accepted, expected INVALID_CONFIG")
        except KafkaException as e:
            if e.args[0].code() != KafkaError.INVALID_CONFIG:
                problems.append(f"{when}: refused with {e.args[0].name()} ({e.args[0].str()}), expected INVALID_CONFIG")
        describe("after DELETE retention.ms and the refused SET segment.bytes=abc")

        # DeleteRecords on the partition with the most records (all have thousands)
        p = max(end, key=lambda q: end[q])
        when = f"DeleteRecords p{p} before offset {DELETE_RECORDS_BEFORE}"
        (fut,) = admin.delete_records([TopicPartition(topic, p, DELETE_RECORDS_BEFORE)], request_timeout=remaining(15),
                                      operation_timeout=10).values()
        low = fut.result(timeout=remaining(20)).low_watermark
        if low != DELETE_RECORDS_BEFORE:
            problems.append(f"{when}: low watermark {low}, expected {DELETE_RECORDS_BEFORE}")
        consumer = Consumer({**common, "group.id": f"unused-{topic}", "enable.auto.commit": False})
        try:
            when = f"get_watermark_offsets p{p} after DeleteRecords"
            marks = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=remaining(15), cached=False)
        finally:
            consumer.close()
        if tuple(marks) != (DELETE_RECORDS_BEFORE, end[p]):
            problems.append(f"{when}: (low, high) = {tuple(marks)}, expected ({DELETE_RECORDS_BEFORE}, {end[p]})")
    except Exception as e:  # noqa: BLE001
        problems.append(f"{when}: {type(e).__name__}: {e}")
        return problems, f"configs failed at {when}"
    if problems:
        return problems, f"configs: {len(problems)} problem(s)"
    return problems, (f"configs ok ({described} described; SET/APPEND/SUBTRACT/DELETE; abc refused; "
                      f"p{p} deleted to {DELETE_RECORDS_BEFORE})")


def read_partition(common, topic, isolation, expect_at_least):
    """Values of partition 0 of `topic` as a consumer with `isolation` sees them:
    reads until `expect_at_least` values arrived, then 1 s more for stragglers."""
    c = Consumer({**common, "group.id": f"unused-{topic}", "enable.auto.commit": False,
                  "isolation.level": isolation, "enable.partition.eof": False})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        values, quiet_until = [], None
        while True:
            if remaining(100) <= 5:
                raise RuntimeError(f"{isolation} read of {topic}: only {len(values)} values")
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error():
                    raise KafkaException(m.error())
                values.append(m.value().decode())
            if len(values) >= expect_at_least:
                quiet_until = quiet_until or time.monotonic() + 1.0
                if time.monotonic() > quiet_until:
                    return values
    finally:
        c.close()


def transactions_phase(admin, common, topic):
    """Idempotent and transactional producers. Returns (problems, summary)."""
    txn_topic = f"{topic}-txn"
    admin.create_topics([NewTopic(txn_topic, num_partitions=1, replication_factor=1)],
                        operation_timeout=20, request_timeout=30)[txn_topic].result(timeout=remaining(35))
    idem = Producer({**common, "enable.idempotence": True, "linger.ms": 5})
    for i in range(100):
        idem.produce(txn_topic, value=f"idem-{i}")
    if idem.flush(remaining(30)):
        raise RuntimeError("idempotent producer: undelivered records")
    txn = Producer({**common, "transactional.id": f"{txn_topic}-producer", "linger.ms": 5})
    txn.init_transactions(remaining(30))
    for name, commit in (("A", True), ("B", False), ("C", True)):
        txn.begin_transaction()
        for i in range(100):
            txn.produce(txn_topic, value=f"{name}-{i}")
        if commit:
            txn.commit_transaction(remaining(30))
        else:
            txn.flush(remaining(30))
            txn.abort_transaction(remaining(30))
    expected = [f"idem-{i}" for i in range(100)] + [f"{n}-{i}" for n in "AC" for i in range(100)]
    problems = []
    committed = read_partition(common, txn_topic, "read_committed", len(expected))
    if committed != expected:
        problems.append(f"read_committed saw {len(committed)} values, expected {len(expected)} "
                        f"(first difference at {next((i for i, (a, b) in enumerate(zip(committed, expected)) if a != b), min(len(committed), len(expected)))})")
    everything = read_partition(common, txn_topic, "read_uncommitted", 400)
    if sorted(everything) != sorted(expected + [f"B-{i}" for i in range(100)]):
        problems.append(f"read_uncommitted saw {len(everything)} values, expected 400")
    if not problems and not os.environ.get("KEEP_TOPIC"):
        admin.delete_topics([txn_topic], operation_timeout=10, request_timeout=15)[txn_topic].result(timeout=remaining(15))
    return problems, "transactions ok (idempotent 100; committed A, C seen, aborted B hidden)"


def elections_and_acls_phase(admin, topic):
    """librdkafka's ElectLeaders and CreateAcls: one node leads every
    partition, so a preferred election is not needed for any of them; no
    authorizer, so creating an ACL fails with SECURITY_DISABLED. Returns
    (problems, summary)."""
    problems = []
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    results = admin.elect_leaders(ElectionType.PREFERRED, tps).result(timeout=remaining(20))
    # Each value is None or the partition's KafkaError.
    codes = {tp.partition: (e.code() if e else None) for tp, e in results.items()}
    if codes != {p: KafkaError.ELECTION_NOT_NEEDED for p in range(PARTITIONS)}:
        problems.append(f"elect_leaders: {codes}, expected ELECTION_NOT_NEEDED ({KafkaError.ELECTION_NOT_NEEDED}) each")
    # CreateAcls: librdkafka reports each creation's error (its DescribeAcls drops the
    # response's top-level error, so listing shows nothing rather than the refusal).
    binding = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:compat", "*",
                         AclOperation.READ, AclPermissionType.ALLOW)
    try:
        admin.create_acls([binding], request_timeout=15)[binding].result(timeout=remaining(20))
        problems.append("create_acls: accepted, expected SECURITY_DISABLED (no authorizer)")
    except KafkaException as e:
        if e.args[0].code() != KafkaError.SECURITY_DISABLED:
            problems.append(f"create_acls: {e}, expected SECURITY_DISABLED")
    return problems, "elections not needed, ACLs refused (security disabled)"


def main():
    bootstrap = os.environ.get("BOOTSTRAP")
    if not bootstrap:
        print(f"{CLIENT}: FAIL: set BOOTSTRAP=host:port", flush=True)
        return 2
    topic = f"compat-confluent-{uuid.uuid4().hex[:12]}"
    common = {"bootstrap.servers": bootstrap, "client.id": "odradek-compat-confluent", "socket.timeout.ms": 30000}

    # 1. create the topic
    admin = AdminClient(common)
    futures = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                                  operation_timeout=20, request_timeout=30)
    futures[topic].result(timeout=remaining(35))
    ready_by = time.monotonic() + 20
    while True:  # wait until metadata shows every partition with a leader
        md = admin.list_topics(topic=topic, timeout=remaining(10)).topics.get(topic)
        if md and md.error is None and len(md.partitions) == PARTITIONS \
                and all(pm.leader >= 0 for pm in md.partitions.values()):
            break
        if time.monotonic() > ready_by:
            state = md.error if md and md.error else (f"{len(md.partitions)} partitions" if md else "topic missing")
            raise RuntimeError(f"topic metadata not ready after 20s: {state}")
        time.sleep(0.2)

    # 2. produce
    delivered, failed = {}, []

    def on_delivery(err, msg, i):
        if err is not None:
            failed.append((i, err))
        else:
            delivered[i] = (msg.partition(), msg.offset())

    producer = Producer({**common, "acks": "all", "enable.idempotence": False, "linger.ms": 5,
                         "message.timeout.ms": 45000})
    t0 = time.monotonic()
    for i in range(N):
        while True:
            try:
                producer.produce(topic, key=key_of(i), value=value_of(i),
                                 on_delivery=lambda err, msg, i=i: on_delivery(err, msg, i))
                break
            except BufferError:  # local queue full: serve delivery reports and retry
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(remaining(60))
    produce_s = time.monotonic() - t0
    if left or failed:
        raise RuntimeError(f"produce: {left} undelivered, {len(failed)} failed, first error: {failed[:1]}")

    # 3. consume everything back. confluent-kafka refuses to build a Consumer
    # without group.id, but with assign() + no commits no group request is
    # needed: the group id is never joined, offsets are never stored.
    consumer = Consumer({**common, "group.id": f"unused-{topic}", "enable.auto.commit": False,
                         "enable.auto.offset.store": False, "auto.offset.reset": "error",
                         "enable.partition.eof": False})
    try:
        end = {}
        for p in range(PARTITIONS):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=remaining(15), cached=False)
            if low != 0:
                raise RuntimeError(f"partition {p}: log start offset {low}, expected 0")
            end[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        records, nxt = [], {p: 0 for p in range(PARTITIONS)}
        t1 = time.monotonic()
        while any(nxt[p] < end[p] for p in end):
            if remaining(100) <= 0.1:
                raise RuntimeError(f"consume timed out: {len(records)} records read, positions {nxt}, ends {end}")
            for m in consumer.consume(num_messages=1000, timeout=min(1.0, remaining(1.0))):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(m.error())
                records.append((m.partition(), m.offset(), m.key(), m.value()))
                nxt[m.partition()] = max(nxt[m.partition()], m.offset() + 1)
        consume_s = time.monotonic() - t1
    finally:
        consumer.close()

    problems = verify(records, end, delivered)

    # 4. consume again with a two-member consumer group, then check the
    # group's committed offsets (only if the plain read-back was right)
    note = ""
    if not problems:
        t2 = time.monotonic()
        group, grecords, info = group_consume(common, topic, end)
        group_s = time.monotonic() - t2
        problems = verify(grecords, end, delivered)
        for m, i in enumerate(info):
            if not i["assigned"]:
                problems.append(f"member {m} was never assigned a partition")
            problems += [f"member {m}: {e}" for e in i["errors"]]
        problems += check_group(admin, group, topic, end)
        problems = [f"group {group}: {p}" for p in problems]
        note = "; group of 2: " + ", ".join(
            f"m{m} p{{{','.join(map(str, sorted(i['assigned'])))}}} {i['records']} records/{i['commits']} commits"
            + (f"+{i['revoke_commits']} on revoke" if i["revoke_commits"] else "")
            for m, i in enumerate(info)) + f", {group_s:.1f}s, lag 0"
        if not problems and not os.environ.get("KEEP_TOPIC"):
            try:
                admin.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=remaining(15))
            except Exception as e:  # noqa: BLE001
                note += f" (warning: delete_consumer_groups failed: {e!r})"

    # 5. topic configs and DeleteRecords (only if the data checks passed: a
    # failing run keeps its topic untouched for inspection)
    if not problems:
        t3 = time.monotonic()
        cproblems, summary = configs_phase(admin, common, topic, end)
        problems = [f"configs: {p}" for p in cproblems]
        note += f"; {summary}, {time.monotonic() - t3:.1f}s"

    # 6. idempotent and transactional producers (on their own topic)
    if not problems:
        t4 = time.monotonic()
        tproblems, summary = transactions_phase(admin, common, topic)
        problems = [f"transactions: {p}" for p in tproblems]
        note += f"; {summary}, {time.monotonic() - t4:.1f}s"

    # 7. leader elections and ACLs
    if not problems:
        eproblems, summary = elections_and_acls_phase(admin, topic)
        problems = [f"elections/acls: {p}" for p in eproblems]
        note += f"; {summary}"

    # 8. clean up on success (best effort: a failed delete is reported, not fatal).
    # A failing run keeps its topic for inspection.
    if not problems and not os.environ.get("KEEP_TOPIC"):
        try:
            admin.delete_topics([topic], operation_timeout=10, request_timeout=15)[topic].result(timeout=remaining(15))
        except Exception as e:  # noqa: BLE001
            note += f" (warning: delete_topics failed: {e!r})"

    counts = ",".join(f"p{p}={end[p]}" for p in sorted(end))
    if problems:
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        print(f"{CLIENT}: FAIL {len(problems)} problem(s), first: {problems[0]} [topic {topic}]{note}", flush=True)
        return 1
    print(f"{CLIENT}: OK {N} messages via {topic} ({counts}); produce {produce_s:.1f}s, "
          f"consume {consume_s:.1f}s{note}", flush=True)
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
