#!/usr/bin/env python3
"""aiokafka compatibility check for Odradek.

Creates a 3-partition topic with AIOKafkaAdminClient, produces 10,000 keyed
messages with acks=all, reads them back from the beginning with an
AIOKafkaConsumer that has no group (group_id=None, assign + seek), and checks
every message. Then consumes the topic again with a consumer group of two
subscribed AIOKafkaConsumers (commit after every batch and on revocation),
checks that the group saw every message exactly once, that both members were
assigned partitions, and that the group's committed offsets (admin
OffsetFetch) are the end offsets.

    BOOTSTRAP=127.0.0.1:19092 target/compat-venv/bin/python compat/aiokafka_test.py
"""
import asyncio
import os
import signal
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError
from common import HARD_LIMIT_S, N, PARTITIONS, key_of, remaining, value_of, verify, watchdog_for


CLIENT = "aiokafka"
PHASE = ["start"]  # for the timeout message


async def create_topic(admin, topic):
    resp = await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                                     timeout_ms=20000)
    for t in resp.to_object()["topic_errors"]:
        if t["error_code"] != 0:
            raise RuntimeError(f"create_topics: {t['topic']}: error {t['error_code']} {t.get('error_message') or ''}")
    ready_by = time.monotonic() + 20
    while True:  # wait until metadata shows every partition with a leader
        mds = [t for t in await admin.describe_topics([topic]) if t["topic"] == topic]
        md = mds[0] if mds else None
        if md and md["error_code"] == 0 and len(md["partitions"]) == PARTITIONS \
                and all(p["leader"] >= 0 for p in md["partitions"]):
            return
        if time.monotonic() > ready_by:
            state = f"error {md['error_code']}, {len(md['partitions'])} partitions" if md else "topic missing"
            raise RuntimeError(f"topic metadata not ready after 20s: {state}")
        await asyncio.sleep(0.2)


async def produce(bootstrap, topic):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="odradek-compat-aiokafka",
                                acks="all", enable_idempotence=False, linger_ms=5, request_timeout_ms=30000)
    await producer.start()
    try:
        # send() enqueues and returns a future for the broker's ack
        futures = [await producer.send(topic, key=key_of(i), value=value_of(i)) for i in range(N)]
        await producer.flush()
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await asyncio.wait_for(producer.stop(), 10)
    delivered, failed = {}, []
    for i, r in enumerate(results):
        if isinstance(r, BaseException):
            failed.append((i, r))
        else:
            delivered[i] = (r.partition, r.offset)
    if failed:
        raise RuntimeError(f"produce: {len(failed)} of {N} failed, first: {failed[0][0]}: {failed[0][1]!r}")
    return delivered


async def consume(bootstrap, topic):
    # No group: group_id=None, manual assign + seek, nothing committed.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="odradek-compat-aiokafka",
                                group_id=None, enable_auto_commit=False, auto_offset_reset="none",
                                request_timeout_ms=30000, fetch_max_wait_ms=500)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        low = await consumer.beginning_offsets(tps)
        if any(low[tp] != 0 for tp in tps):
            raise RuntimeError(f"log start offsets {[low[tp] for tp in tps]}, expected all 0")
        end = {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
        await consumer.seek_to_beginning(*tps)
        records, nxt = [], {p: 0 for p in range(PARTITIONS)}
        while any(nxt[p] < end[p] for p in end):
            if remaining(100) <= 0.1:
                raise RuntimeError(f"consume timed out: {len(records)} records read, positions {nxt}, ends {end}")
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for tp, msgs in batches.items():
                for m in msgs:
                    records.append((m.partition, m.offset, m.key, m.value))
                    nxt[m.partition] = max(nxt[m.partition], m.offset + 1)
        return records, end
    finally:
        await asyncio.wait_for(consumer.stop(), 10)


class CommitOnRevoke(ConsumerRebalanceListener):
    """aiokafka rebalances in a background task, concurrently with our getmany()
    loop, so a partition can be revoked between getmany() returning and our
    commit. So, as Kafka advises for manual commits, the consumed positions
    (everything getmany() has handed out) are committed again when partitions
    are revoked, before the JoinGroup. Also records every assignment."""

    def __init__(self, consumer, info):
        self.consumer, self.info = consumer, info

    async def on_partitions_revoked(self, revoked):
        if revoked:
            try:
                await self.consumer.commit()
                self.info["revoke_commits"] += 1
            except Exception as e:  # noqa: BLE001
                self.info["errors"].append(f"commit on revoke of {sorted(tp.partition for tp in revoked)}: {e!r}")

    async def on_partitions_assigned(self, assigned):
        self.info["assigned"].update(tp.partition for tp in assigned)


async def group_consume(bootstrap, topic, end):
    """Consume the (already produced) topic with a group of two subscribed
    consumers running as two tasks. Returns (group id, records [(partition,
    offset, key, value)] in consumption order across both members, per-member
    info).

    Both members start together, so both JoinGroups normally land in the first
    generation (the broker holds the first join of an empty group for
    group.initial.rebalance.delay.ms, 3 s by default). Each member commits
    after every batch and, through CommitOnRevoke, before giving up a
    partition, so even a late joiner causes no redelivery: exactly once is a
    fair expectation.
    """
    group = f"{topic}-group"
    total = sum(end.values())
    records, seen = [], set()
    info = [{"assigned": set(), "records": 0, "commits": 0, "revoke_commits": 0, "commit_races": 0,
             "errors": []} for _ in range(2)]
    done = asyncio.Event()

    def finished():
        # every record seen and both members have owned partitions (a late
        # joiner gets partitions whose committed offset is already the end)
        return len(seen) >= total and all(i["assigned"] for i in info)

    async def member(consumer, i):
        try:
            await member_loop(consumer, i)
        finally:
            done.set()  # on error, stop the other member too

    async def member_loop(consumer, i):
        while not done.is_set():
            if remaining(100) <= 15:  # keep time for stop + offset checks
                raise RuntimeError(f"group consume timed out: {len(seen)} of {total} records, "
                                   f"assignments {[sorted(x['assigned']) for x in info]}")
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            n = 0
            for msgs in batches.values():
                for m in msgs:
                    records.append((m.partition, m.offset, m.key, m.value))
                    seen.add((m.partition, m.offset))
                    n += 1
            if n:
                i["records"] += n
                try:
                    await consumer.commit()
                    i["commits"] += 1
                except CommitFailedError:
                    # a rebalance overtook this commit; CommitOnRevoke already
                    # committed these positions before the partitions moved
                    i["commit_races"] += 1
            if finished():
                done.set()

    consumers = []
    try:
        for m in range(2):
            c = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id=f"odradek-compat-aiokafka-m{m}",
                                 group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
                                 request_timeout_ms=30000, fetch_max_wait_ms=500)
            consumers.append(c)
            c.subscribe([topic], listener=CommitOnRevoke(c, info[m]))
        await asyncio.gather(*(c.start() for c in consumers))
        await asyncio.gather(*(member(c, i) for c, i in zip(consumers, info)))
    finally:
        # stop() sends LeaveGroup; every batch was committed already
        for c in consumers:
            try:
                await asyncio.wait_for(c.stop(), 5)
            except Exception as e:  # noqa: BLE001
                print(f"  warning: group member stop failed: {e!r}", file=sys.stderr)
    return group, records, info


async def check_group(admin, group, topic, end):
    """After both members left: committed offsets == end offsets, group Empty."""
    problems = []
    offsets = await admin.list_consumer_group_offsets(group)
    committed = {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}
    if committed != end:
        problems.append(f"committed offsets {dict(sorted(committed.items()))}, "
                        f"expected the end offsets {dict(sorted(end.items()))}")
    described = [g for r in await admin.describe_consumer_groups([group]) for g in r.to_object()["groups"]]
    desc = next((g for g in described if g.get("group") == group or g.get("group_id") == group), None)
    if not desc or desc["error_code"] != 0 or desc["state"] != "Empty" or desc["members"]:
        problems.append(f"described as {desc!r} after both members left, expected Empty with no members")
    listed = [g[0] for g in await admin.list_consumer_groups()]
    if group not in listed:
        problems.append(f"not in ListGroups ({len(listed)} groups listed)")
    return problems


async def run(bootstrap):
    topic = f"compat-aiokafka-{uuid.uuid4().hex[:12]}"
    PHASE[0] = "connect"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="odradek-compat-aiokafka",
                                request_timeout_ms=30000)
    await admin.start()
    try:
        PHASE[0] = "create topic"
        await asyncio.wait_for(create_topic(admin, topic), remaining(45))
        PHASE[0] = "produce"
        t0 = time.monotonic()
        delivered = await asyncio.wait_for(produce(bootstrap, topic), remaining(60))
        produce_s = time.monotonic() - t0
        PHASE[0] = "consume"
        t1 = time.monotonic()
        # consume() gives up by itself at the deadline; this is only a backstop
        records, end = await asyncio.wait_for(consume(bootstrap, topic), remaining(HARD_LIMIT_S) + 3)
        consume_s = time.monotonic() - t1

        PHASE[0] = "verify"
        problems = verify(records, end, delivered)

        # consume again with a two-member consumer group, then check the
        # group's committed offsets (only if the plain read-back was right)
        group_note = ""
        if not problems:
            PHASE[0] = "group consume"
            t2 = time.monotonic()
            # group_consume() gives up by itself at the deadline; this is only a backstop
            group, grecords, info = await asyncio.wait_for(group_consume(bootstrap, topic, end),
                                                           remaining(HARD_LIMIT_S) + 3)
            group_s = time.monotonic() - t2
            PHASE[0] = "group check"
            problems = verify(grecords, end, delivered)
            for m, i in enumerate(info):
                if not i["assigned"]:
                    problems.append(f"member {m} was never assigned a partition")
                problems += [f"member {m}: {e}" for e in i["errors"]]
            problems += await asyncio.wait_for(check_group(admin, group, topic, end), remaining(20))
            problems = [f"group {group}: {p}" for p in problems]
            group_note = "; group of 2: " + ", ".join(
                f"m{m} p{{{','.join(map(str, sorted(i['assigned'])))}}} {i['records']} records/"
                f"{i['commits']} commits" + (f"+{i['revoke_commits']} on revoke" if i["revoke_commits"] else "")
                + (f" ({i['commit_races']} overtaken by a rebalance)" if i["commit_races"] else "")
                for m, i in enumerate(info)) + f", {group_s:.1f}s, lag 0"

        PHASE[0] = "delete topic"

        # clean up on success (best effort: a failed delete is reported, not fatal).
        # A failing run keeps its topic for inspection.
        note = ""
        if not problems and not os.environ.get("KEEP_TOPIC"):
            try:
                resp = await asyncio.wait_for(admin.delete_topics([topic], timeout_ms=10000), remaining(15))
                errs = [t for t in resp.to_object()["topic_error_codes"] if t["error_code"] != 0]
                if errs:
                    note = f" (warning: delete_topics: {errs})"
            except Exception as e:  # noqa: BLE001
                note = f" (warning: delete_topics failed: {e!r})"
    finally:
        await asyncio.wait_for(admin.close(), 10)

    counts = ",".join(f"p{p}={end[p]}" for p in sorted(end))
    if problems:
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        print(f"{CLIENT}: FAIL {len(problems)} problem(s), first: {problems[0]} [topic {topic}]{note}", flush=True)
        return 1
    print(f"{CLIENT}: OK {N} messages via {topic} ({counts}); produce {produce_s:.1f}s, "
          f"consume {consume_s:.1f}s{group_note}{note}", flush=True)
    return 0


def main():
    bootstrap = os.environ.get("BOOTSTRAP")
    if not bootstrap:
        print(f"{CLIENT}: FAIL: set BOOTSTRAP=host:port", flush=True)
        return 2
    return asyncio.run(run(bootstrap))


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, watchdog_for(CLIENT))
    signal.alarm(HARD_LIMIT_S)
    try:
        rc = main()
    except asyncio.TimeoutError:
        print(f"{CLIENT}: FAIL timeout during {PHASE[0]}", flush=True)
        rc = 1
    except Exception as e:  # noqa: BLE001
        print(f"{CLIENT}: FAIL {type(e).__name__}: {e}", flush=True)
        rc = 1
    sys.stdout.flush()
    os._exit(rc)
