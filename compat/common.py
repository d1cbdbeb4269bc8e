"""What every Python client script in compat/ shares: the data set, the deadline and the
checks a consumed copy of it must pass."""

import os
import time
from collections import defaultdict

N = 10_000
PARTITIONS = 3
HARD_LIMIT_S = 110  # the whole script, whatever the broker does
START = time.monotonic()


# The configs phase (confluent_kafka_test.py, kafka_python_test.py): DescribeConfigs of a
# topic must list at least these, with Kafka's config types, ...
TOPIC_CONFIG_TYPES = {
    "cleanup.policy": "LIST", "compression.type": "STRING", "delete.retention.ms": "LONG",
    "max.message.bytes": "INT", "message.timestamp.type": "STRING", "min.insync.replicas": "INT",
    "retention.bytes": "LONG", "retention.ms": "LONG", "segment.bytes": "INT", "segment.ms": "LONG",
}
# ... and, on a broker with default settings, Kafka's defaults for these
TOPIC_CONFIG_DEFAULTS = {"cleanup.policy": "delete", "retention.ms": "604800000", "segment.bytes": "1073741824"}
# what the phase sets with IncrementalAlterConfigs SET (retention.ms is then DELETEd again)
TOPIC_CONFIG_SET = {"retention.ms": "123456", "max.message.bytes": "500000"}
DELETE_RECORDS_BEFORE = 10  # confluent-kafka: DeleteRecords on one partition up to this offset


def key_of(i):
    return f"key-{i % 97}".encode()


def value_of(i):
    # "value-<i>|" plus a deterministic payload of 16..408 bytes
    return f"value-{i}|".encode() + f"{i:08x}".encode() * (2 + i % 50)


def remaining(cap):
    return max(0.1, min(cap, HARD_LIMIT_S - 5 - (time.monotonic() - START)))


def watchdog_for(client):
    """A SIGALRM handler that ends the script with a FAIL line naming the client."""

    def watchdog(_sig, _frm):
        print(f"{client}: FAIL timeout: no result after {HARD_LIMIT_S}s", flush=True)
        os._exit(1)

    return watchdog


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
