#!/usr/bin/env python3
"""aiokafka compatibility check for Odradek.

Creates a 3-partition topic with AIOKafkaAdminClient, produces 10,000 keyed
messages with acks=all, reads them back from the beginning with an
AIOKafkaConsumer that has no group (group_id=None, assign + seek), and checks
every message.

    BOOTSTRAP=127.0.0.1:19092 target/compat-venv/bin/python compat/aiokafka_test.py
"""
import asyncio
import os
import signal
import sys
import time
import uuid
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

CLIENT = "aiokafka"
N = 10_000
PARTITIONS = 3
HARD_LIMIT_S = 110  # the whole script, whatever the broker does
START = time.monotonic()
PHASE = ["start"]  # for the timeout message


def key_of(i):
    return f"key-{i % 97}".encode()


def value_of(i):
    # "value-<i>|" plus a deterministic payload of 16..408 bytes
    return f"value-{i}|".encode() + f"{i:08x}".encode() * (2 + i % 50)


def remaining(cap):
    return max(0.1, min(cap, HARD_LIMIT_S - 5 - (time.monotonic() - START)))


def watchdog(_sig, _frm):
    print(f"{CLIENT}: FAIL timeout: no result after {HARD_LIMIT_S}s", flush=True)
    os._exit(1)


def verify(records, end_offsets, delivered):
    """records: [(partition, offset, key, value)] in consumption order.
    end_offsets: {partition: high watermark}. delivered: {i: (partition, offset)}.
    Returns a list of problems (empty when everything matches)."""
    problems = []

    def bad(msg):
        if len(problems) < 20:
            problems.append(msg)

    if len(records) != N:
        bad(f"consumed {len(records)} records, expected {N}")
    if sum(end_offsets.values()) != N:
        bad(f"high watermarks {dict(sorted(end_offsets.items()))} sum to {sum(end_offsets.values())}, expected {N}")
    seen = {}
    by_part = defaultdict(list)
    key_part = {}
    for p, off, k, v in records:
        try:
            i = int(v.split(b"|", 1)[0].decode().removeprefix("value-"))
        except Exception:
            bad(f"p{p}@{off}: unparseable value {v[:40]!r}")
            continue
        if not 0 <= i < N:
            bad(f"p{p}@{off}: value index {i} out of range")
            continue
        if i in seen:
            bad(f"p{p}@{off}: duplicate of message {i} (first seen at p{seen[i][0]}@{seen[i][1]})")
            continue
        seen[i] = (p, off)
        if v != value_of(i):
            bad(f"p{p}@{off}: value of message {i} differs ({len(v)} bytes, expected {len(value_of(i))})")
        if k != key_of(i):
            bad(f"p{p}@{off}: key of message {i} is {k!r}, expected {key_of(i)!r}")
        if key_part.setdefault(k, p) != p:
            bad(f"key {k!r} found in partitions {key_part[k]} and {p}")
        by_part[p].append((off, i))
    missing = [i for i in range(N) if i not in seen]
    if missing:
        bad(f"{len(missing)} messages never consumed, first: {missing[:5]}")
    for p, lst in sorted(by_part.items()):
        offs = [o for o, _ in lst]
        if offs != list(range(len(offs))):
            j = next((j for j, o in enumerate(offs) if o != j), len(offs))
            bad(f"partition {p}: offsets not contiguous from 0 (position {j} has offset {offs[j] if j < len(offs) else None})")
        ids = [i for _, i in lst]
        for a, b in zip(ids, ids[1:]):
            if b <= a:
                bad(f"partition {p}: message {b} consumed after {a} (not in produce order)")
                break
        if end_offsets.get(p) != len(lst):
            bad(f"partition {p}: high watermark {end_offsets.get(p)} but {len(lst)} records consumed")
    if len(by_part) != PARTITIONS:
        bad(f"data in partitions {sorted(by_part)}, expected all of 0..{PARTITIONS - 1}")
    for i, where in sorted(delivered.items()):
        if seen.get(i, where) != where:
            bad(f"message {i}: delivery report said p{where[0]}@{where[1]}, consumed at p{seen[i][0]}@{seen[i][1]}")
    return problems


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

        PHASE[0] = "verify and delete topic"
        problems = verify(records, end, delivered)

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
          f"consume {consume_s:.1f}s{note}", flush=True)
    return 0


def main():
    bootstrap = os.environ.get("BOOTSTRAP")
    if not bootstrap:
        print(f"{CLIENT}: FAIL: set BOOTSTRAP=host:port", flush=True)
        return 2
    return asyncio.run(run(bootstrap))


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, watchdog)
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
