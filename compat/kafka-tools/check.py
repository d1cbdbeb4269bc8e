#!/usr/bin/env python3
"""Assertions on the output of Kafka's command-line tools, for compat/kafka-tools.sh.

Usage: check.py STEP ARGS...   Each step reads the saved output of one tool run.
On success it exits 0 and prints what the caller needs next (if anything) on
stdout; on failure it prints one line saying what is wrong and exits 1.
"""
import json
import os
import re
import sys
import time


class Bad(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise Bad(msg)


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def table(text, first_col):
    """Rows of a tab-separated table printed by ToolsUtils.prettyPrintTable
    (header row starts with first_col), as dicts keyed by the header."""
    lines = [l for l in text.splitlines() if l.strip()]
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.split("\t")]
        if cells and cells[0] == first_col:
            header = cells
            rows = []
            for row in lines[i + 1:]:
                vals = [c.strip() for c in row.split("\t")]
                vals += [""] * (len(header) - len(vals))
                rows.append(dict(zip(header, vals)))
            return rows
    raise Bad(f"no table with a {first_col} column in the output")


def offsets(text, topic):
    """GetOffsetShell lines 'topic:partition:offset' -> {partition: offset}."""
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(.+):(\d+):(-?\d+)", line.strip())
        if m and m.group(1) == topic:
            out[int(m.group(2))] = int(m.group(3))
    return out


# ---- kafka-topics -------------------------------------------------------------

def topic_describe(path, topic, partitions, configs):
    """--describe of one topic: header with the partition count, replication
    factor 1 and the configs; one line per partition with a leader that is its
    only replica and the whole ISR. Prints the leader of partition 0."""
    text = read(path)
    partitions = int(partitions)
    head = [l for l in text.splitlines() if l.startswith(f"Topic: {topic}\tTopicId:")]
    need(len(head) == 1, f"expected one header line for {topic}, got {len(head)}")
    h = dict(re.findall(r"(\w+): ([^\t]*)", head[0]))
    need(h.get("PartitionCount") == str(partitions), f"PartitionCount {h.get('PartitionCount')!r}, expected {partitions}")
    need(h.get("ReplicationFactor") == "1", f"ReplicationFactor {h.get('ReplicationFactor')!r}, expected 1")
    need(re.fullmatch(r"[A-Za-z0-9_-]{22}", h.get("TopicId", "")) and h["TopicId"] != "AAAAAAAAAAAAAAAAAAAAAA",
         f"TopicId {h.get('TopicId')!r} is not a topic id")
    got_cfg = dict(kv.split("=", 1) for kv in h.get("Configs", "").split(",") if "=" in kv)
    for kv in configs.split(","):
        k, v = kv.split("=", 1)
        need(got_cfg.get(k) == v, f"Configs {h.get('Configs')!r} lack {kv}")
    seen = {}
    for line in text.splitlines():
        if not line.startswith(f"\tTopic: {topic}\tPartition:"):
            continue
        f = dict(re.findall(r"(\w+): ([^\t]*)", line))
        p = int(f["Partition"])
        leader, replicas, isr = f.get("Leader"), f.get("Replicas"), f.get("Isr")
        need(leader is not None and re.fullmatch(r"\d+", leader), f"partition {p}: Leader {leader!r}")
        need(replicas == leader, f"partition {p}: Replicas {replicas!r}, expected the leader {leader}")
        need(isr == leader, f"partition {p}: Isr {isr!r}, expected the leader {leader}")
        need(p not in seen, f"partition {p} listed twice")
        seen[p] = int(leader)
    need(sorted(seen) == list(range(partitions)), f"partitions listed {sorted(seen)}, expected 0..{partitions - 1}")
    print(seen[0])


def in_list(path, name, want):
    names = set(l.strip() for l in read(path).splitlines())
    if want == "present":
        need(name in names, f"{name} not listed ({len(names)} names listed)")
    else:
        need(name not in names, f"{name} still listed")


# ---- kafka-configs ------------------------------------------------------------

def config_lines(text):
    """'  name=value sensitive=false synonyms={SOURCE:name=value, ...}' -> {name: (value, [(source, name, value)])}"""
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"  ([^=\s]+)=(.*) sensitive=(true|false) synonyms=\{(.*)\}", line)
        if not m:
            continue
        syn = [tuple(re.fullmatch(r"([A-Z_]+):([^=]+)=(.*)", s).groups())
               for s in re.split(r", (?=[A-Z_]+:)", m.group(4)) if s]
        out[m.group(1)] = (m.group(2), syn)
    return out


def topic_configs(path, topic, *specs):
    """specs: name=value (a topic override: DYNAMIC_TOPIC_CONFIG first synonym),
    name@value (Kafka's default: first synonym DEFAULT_CONFIG), -name (absent)."""
    text = read(path)
    need(re.search(rf"^(Dynamic|All) configs for topic {re.escape(topic)} are:$", text, re.M),
         "no 'configs for topic' header")
    cfg = config_lines(text)
    for spec in specs:
        if spec.startswith("-"):
            need(spec[1:] not in cfg, f"{spec[1:]} still listed: {cfg.get(spec[1:])}")
            continue
        dyn = "=" in spec
        name, value = spec.split("=" if dyn else "@", 1)
        need(name in cfg, f"{name} not listed")
        got, syn = cfg[name]
        need(got == value, f"{name}={got}, expected {value}")
        src = "DYNAMIC_TOPIC_CONFIG" if dyn else "DEFAULT_CONFIG"
        need(syn and syn[0][0] == src and syn[0][2] == value, f"{name}: synonyms {syn}, expected {src} first")
        if dyn:
            need(any(s[0] == "DEFAULT_CONFIG" for s in syn[1:]), f"{name}: no DEFAULT_CONFIG synonym in {syn}")
    print(len(cfg))


def broker_configs(path, broker):
    """--describe --all of a broker: many configs, node.id the broker asked and
    Kafka's defaults for a few configs. Prints log.dirs."""
    text = read(path)
    need(re.search(rf"^All configs for broker {broker} are:$", text, re.M), "no 'All configs for broker' header")
    cfg = config_lines(text)
    need(len(cfg) >= 50, f"only {len(cfg)} configs listed")
    need(cfg.get("node.id", ("",))[0] == broker, f"node.id {cfg.get('node.id')}, expected {broker}")
    # KRaft Kafka copies node.id into broker.id
    need(cfg.get("broker.id", ("",))[0] == broker, f"broker.id {cfg.get('broker.id')}, expected {broker} (node.id)")
    for name, default in [("num.partitions", "1"), ("log.retention.hours", "168"),
                          ("message.max.bytes", "1048588"), ("log.segment.bytes", "1073741824"),
                          ("auto.create.topics.enable", "true")]:
        need(cfg.get(name, ("",))[0] == default, f"{name}={cfg.get(name)}, expected Kafka's default {default}")
    dirs = cfg.get("log.dirs", ("null",))[0]
    need(dirs not in ("", "null"), f"log.dirs {dirs!r}")
    print(dirs)


# ---- console producer / consumer -------------------------------------------------

def console_consume(path, errpath, inpath, topic, npart):
    """ConsoleConsumer output (print.timestamp/partition/offset/key) against the
    lines the console producer read: every record exactly once, per partition
    offsets 0..n-1 in produce order, each key in one partition. Prints
    'p:count ...' and, on a second line, 'p:offset ...' of each non-empty
    partition's max-timestamp record."""
    sent = [l.split("\t", 1) for l in read(inpath).splitlines()]
    got = []
    stamps = {}
    for line in read(path).splitlines():
        if re.fullmatch(r"Option --property is deprecated .*", line):
            continue  # Kafka 4 prints this on stdout; --formatter-property is the new name
        m = re.fullmatch(r"CreateTime:(\d+)\tPartition:(\d+)\tOffset:(\d+)\t([^\t]*)\t(.*)", line)
        need(m, f"unexpected output line {line!r}")
        got.append((int(m.group(2)), int(m.group(3)), m.group(4), m.group(5)))
        stamps[(int(m.group(2)), int(m.group(3)))] = int(m.group(1))
    need(re.search(rf"Processed a total of {len(sent)} messages", read(errpath)),
         f"no 'Processed a total of {len(sent)} messages' (printed {len(got)} records)")
    need(len(got) == len(sent), f"{len(got)} records printed, {len(sent)} sent")
    need(sorted((k, v) for _, _, k, v in got) == sorted((k, v) for k, v in sent),
         "the (key, value) pairs printed differ from those sent")
    order = {v: i for i, (_, v) in enumerate(sent)}
    counts = {}
    key_part = {}
    for p in range(int(npart)):
        recs = sorted((o, k, v) for q, o, k, v in got if q == p)
        need([o for o, _, _ in recs] == list(range(len(recs))), f"partition {p}: offsets not 0..{len(recs) - 1}")
        need([order[v] for _, _, v in recs] == sorted(order[v] for _, _, v in recs),
             f"partition {p}: records not in produce order")
        counts[p] = len(recs)
        for _, k, _ in recs:
            need(key_part.setdefault(k, p) == p, f"key {k} in partitions {key_part[k]} and {p}")
    need(sum(counts.values()) == len(sent), "records in partitions outside 0..%d" % (int(npart) - 1))
    print(" ".join(f"{p}:{n}" for p, n in sorted(counts.items())))
    # ListOffsets MAX_TIMESTAMP (kafka-get-offsets --time -3), as Kafka answers it:
    # the first record of the partition carrying its largest timestamp
    maxts = []
    for p, n in sorted(counts.items()):
        if n:
            top = max(stamps[(p, o)] for o in range(n))
            maxts.append(f"{p}:{min(o for o in range(n) if stamps[(p, o)] == top)}")
    print(" ".join(maxts))


# ---- kafka-get-offsets ---------------------------------------------------------------

def get_offsets(path, topic, expected):
    """expected: 'p:offset p:offset ...' (every partition)."""
    want = {int(a): int(b) for a, b in (x.split(":") for x in expected.split())}
    got = offsets(read(path), topic)
    need(got == want, f"offsets {dict(sorted(got.items()))}, expected {want}")


def offsets_sum(path, topic, npart):
    got = offsets(read(path), topic)
    need(sorted(got) == list(range(int(npart))), f"partitions {sorted(got)}, expected 0..{int(npart) - 1}")
    print(sum(got.values()))


# ---- kafka-consumer-groups -------------------------------------------------------------

def group_describe(path, group, topic, expected):
    """expected: 'p:current:logend ...' for every partition; LAG must be the
    difference; no active member (CONSUMER-ID '-')."""
    want = {}
    for x in expected.split():
        p, cur, end = map(int, x.split(":"))
        want[p] = (cur, end)
    rows = {}
    text = read(path)
    need(re.search(r"^GROUP\s+TOPIC\s+PARTITION\s+CURRENT-OFFSET\s+LOG-END-OFFSET\s+LAG\s+CONSUMER-ID\s+HOST\s+CLIENT-ID\s*$",
                   text, re.M), "no GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ... header")
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 6 and f[0] == group and f[1] == topic:
            need(f[2] not in rows, f"partition {f[2]} listed twice")
            rows[int(f[2])] = f[3:]
    for p, (cur, end) in sorted(want.items()):
        need(p in rows, f"partition {p} not listed")
        r = rows[p]
        need(r[0] == str(cur) and r[1] == str(end) and r[2] == str(end - cur),
             f"partition {p}: CURRENT-OFFSET {r[0]} LOG-END-OFFSET {r[1]} LAG {r[2]}, expected {cur} {end} {end - cur}")
        need(r[3:6] == ["-", "-", "-"], f"partition {p}: CONSUMER-ID/HOST/CLIENT-ID {r[3:6]}, expected none (no member)")
    need(sorted(rows) == sorted(want), f"partitions listed {sorted(rows)}, expected {sorted(want)}")


def group_state(path, group):
    text = read(path)
    m = re.search(rf"^{re.escape(group)}\s+(\S+):(\d+)\s+\((\d+)\)\s+(\S+)\s+(\S+)\s+(\d+)\s*$", text, re.M)
    need(m, "no state line for the group")
    need(m.group(5) == "Empty" and m.group(6) == "0", f"STATE {m.group(5)} #MEMBERS {m.group(6)}, expected Empty 0")


def group_reset(path, group, topic, expected):
    """expected: 'p:new-offset ...' exactly the partitions reset."""
    want = {int(a): int(b) for a, b in (x.split(":") for x in expected.split())}
    got = {}
    for line in read(path).splitlines():
        f = line.split()
        if len(f) == 4 and f[0] == group and f[1] == topic:
            got[int(f[2])] = int(f[3])
    need(got == want, f"NEW-OFFSET {dict(sorted(got.items()))}, expected {want}")


# ---- kafka-delete-records ------------------------------------------------------------------

def delete_records(path, topic, partition, low):
    text = read(path)
    need(re.search(rf"^partition: {re.escape(topic)}-{partition}\tlow_watermark: {low}$", text, re.M),
         f"no 'partition: {topic}-{partition}\\tlow_watermark: {low}' line")
    need("error" not in text.lower(), "an error is reported")


# ---- kafka-log-dirs ----------------------------------------------------------------------

def log_dirs(path, topic, counts, broker_log_dirs):
    """The JSON line: each partition of the topic once, in a log dir the
    broker's log.dirs names, no error, offsetLag 0, not future; size > 0 exactly
    for the partitions holding records; where the directory is on this machine,
    size = the bytes of the partition's segment files."""
    counts = {int(a): int(b) for a, b in (x.split(":") for x in counts.split())}
    lines = [l for l in read(path).splitlines() if l.startswith("{")]
    need(len(lines) == 1, f"{len(lines)} JSON lines in the output")
    doc = json.loads(lines[0])
    seen = {}
    for b in doc["brokers"]:
        for d in b["logDirs"]:
            need(d.get("error") is None, f"log dir {d.get('logDir')}: error {d.get('error')}")
            for p in d["partitions"]:
                name = p["partition"]
                if not name.startswith(topic + "-") or not name[len(topic) + 1:].isdigit():
                    continue
                need(name not in seen, f"{name} listed twice")
                seen[name] = (d["logDir"], p)
    for part, n in counts.items():
        name = f"{topic}-{part}"
        need(name in seen, f"{name} not listed")
        logdir, p = seen[name]
        need(logdir in broker_log_dirs.split(","), f"{name} in {logdir}, not one of log.dirs {broker_log_dirs}")
        need(p["offsetLag"] == 0 and p["isFuture"] is False, f"{name}: offsetLag {p['offsetLag']} isFuture {p['isFuture']}")
        need((p["size"] > 0) == (n > 0), f"{name}: size {p['size']} with {n} records")
        pdir = os.path.join(logdir, name)
        if os.path.isdir(pdir):
            disk = sum(os.path.getsize(os.path.join(pdir, f)) for f in os.listdir(pdir) if f.endswith(".log"))
            need(p["size"] == disk, f"{name}: size {p['size']}, its segment files hold {disk} bytes")
    need(len(seen) == len(counts), f"{len(seen)} partitions of {topic} listed, expected {len(counts)}")
    print(" ".join(f"{k[len(topic) + 1:]}={seen[k][1]['size']}" for k in sorted(seen)))


# ---- perf tests ------------------------------------------------------------------------

def producer_perf(path, errpath, n):
    out = read(path)
    lines = [l for l in out.splitlines() if re.match(r"^\d+ records sent, ", l)]
    need(lines, "no 'N records sent, ...' summary line")
    last = lines[-1]
    need(last.startswith(f"{n} records sent, "), f"summary line {last!r}, expected {n} records sent")
    need(re.search(r"ms avg latency, [\d.]+ ms max latency, \d+ ms 50th, \d+ ms 95th, \d+ ms 99th, \d+ ms 99.9th", last),
         f"summary line {last!r} has no latencies")
    err = read(errpath)
    need("Exception" not in err and "Exception" not in out, "exceptions reported (the send callback prints failed sends)")
    print(last.split(",")[1].strip())


def consumer_perf(path, n, size):
    lines = [l for l in read(path).splitlines() if l.strip()]
    for i, l in enumerate(lines):
        if l.startswith("start.time,"):
            need(i + 1 < len(lines), "no values after the header")
            h = [x.strip() for x in l.split(",")]
            v = [x.strip() for x in lines[i + 1].split(",")]
            row = dict(zip(h, v))
            need(row.get("data.consumed.in.nMsg") == n, f"data.consumed.in.nMsg {row.get('data.consumed.in.nMsg')}, expected {n}")
            mb = int(n) * int(size) / 1024 / 1024
            need(abs(float(row["data.consumed.in.MB"]) - mb) < 0.0001,
                 f"data.consumed.in.MB {row['data.consumed.in.MB']}, expected {mb:.4f} ({n} x {size} bytes)")
            print(row.get("nMsg.sec"))
            return
    raise Bad("no 'start.time, ...' header line")


# ---- kafka-transactions ----------------------------------------------------------------

def txn_list(path, txid, state):
    rows = [r for r in table(read(path), "TransactionalId") if r["TransactionalId"] == txid]
    need(len(rows) == 1, f"{txid} listed {len(rows)} times")
    r = rows[0]
    need(r["TransactionState"] == state, f"{txid}: TransactionState {r['TransactionState']}, expected {state}")
    need(re.fullmatch(r"\d+", r["ProducerId"]) and re.fullmatch(r"\d+", r["Coordinator"]), f"row {r}")
    print(r["ProducerId"])


def txn_describe(path, txid, pid, state, topic):
    """A committed transaction lists no partitions; an open one lists the
    partitions it wrote (all of topic), printed."""
    rows = table(read(path), "CoordinatorId")
    need(len(rows) == 1, f"{len(rows)} rows")
    r = rows[0]
    need(r["TransactionalId"] == txid, f"TransactionalId {r['TransactionalId']}")
    need(r["ProducerId"] == pid, f"ProducerId {r['ProducerId']}, list said {pid}")
    need(r["TransactionState"] == state, f"TransactionState {r['TransactionState']}, expected {state}")
    need(r["TransactionTimeoutMs"] == "60000", f"TransactionTimeoutMs {r['TransactionTimeoutMs']}, expected the producer's default 60000")
    need(re.fullmatch(r"\d+", r["ProducerEpoch"]), f"ProducerEpoch {r['ProducerEpoch']}")
    parts = [p for p in r["TopicPartitions"].split(",") if p]
    if state == "Ongoing":
        need(parts, "no TopicPartitions for the open transaction")
        start, dur = int(r["CurrentTransactionStartTimeMs"]), int(r["TransactionDurationMs"])
        need(abs(start + dur - time.time() * 1000) < 60_000 and 0 <= dur < 120_000,
             f"CurrentTransactionStartTimeMs {start} TransactionDurationMs {dur}: not a transaction started just now")
        nums = []
        for p in parts:
            t, _, n = p.rpartition("-")
            need(t == topic and n.isdigit(), f"TopicPartitions {r['TopicPartitions']!r}: {p} is not a partition of {topic}")
            nums.append(int(n))
        print(" ".join(map(str, sorted(nums))))
    else:
        need(not parts, f"TopicPartitions {r['TopicPartitions']!r} after the commit, expected none")


def txn_producers(path, pid, want, records):
    """The producer's row on the partition: committed (no open transaction) or
    open (CurrentTransactionStartOffset a number, printed)."""
    rows = [r for r in table(read(path), "ProducerId") if r["ProducerId"] == pid]
    need(len(rows) == 1, f"producer {pid} listed {len(rows)} times")
    r = rows[0]
    start = r["CurrentTransactionStartOffset"]
    if want == "open":
        need(re.fullmatch(r"\d+", start), f"producer {pid}: CurrentTransactionStartOffset {start!r}, expected an offset (open transaction)")
    else:
        need(start == "None", f"producer {pid}: CurrentTransactionStartOffset {start}, expected None (no open transaction)")
    seq = int(r["LastSequence"])
    need(0 <= seq < int(records), f"producer {pid}: LastSequence {seq}, it sent fewer than {records} records")
    now = time.time() * 1000
    need(now - 600_000 < int(r["LastTimestamp"]) < now + 60_000, f"producer {pid}: LastTimestamp {r['LastTimestamp']} not recent")
    print(start)


# ---- kafka-metadata-quorum ---------------------------------------------------------------

def quorum_status(path):
    f = dict(re.findall(r"^(\w+):\s+(.*)$", read(path), re.M))
    for k in ("ClusterId", "LeaderId", "LeaderEpoch", "HighWatermark", "MaxFollowerLag", "CurrentVoters"):
        need(k in f, f"no {k}")
    need(re.fullmatch(r"[A-Za-z0-9_-]{22}", f["ClusterId"]), f"ClusterId {f['ClusterId']!r}")
    need(int(f["LeaderId"]) >= 0 and int(f["LeaderEpoch"]) >= 0, f"LeaderId {f['LeaderId']} LeaderEpoch {f['LeaderEpoch']}")
    need(int(f["HighWatermark"]) > 0, f"HighWatermark {f['HighWatermark']}")
    voters = [int(x) for x in re.findall(r'"id": (\d+)', f["CurrentVoters"])]
    need(int(f["LeaderId"]) in voters, f"LeaderId {f['LeaderId']} not in CurrentVoters {f['CurrentVoters']}")
    print(f["LeaderId"], f["HighWatermark"], len(voters))


def quorum_replication(path, leader, hwm, nvoters):
    rows = table(read(path), "NodeId")
    voters = [r for r in rows if r["Status"] in ("Leader", "Follower")]
    need(len(voters) == int(nvoters), f"{len(voters)} voters, --status said {nvoters}")
    lead = [r for r in rows if r["Status"] == "Leader"]
    need(len(lead) == 1 and lead[0]["NodeId"] == leader, f"leader rows {lead}, expected node {leader}")
    r = lead[0]
    need(int(r["LogEndOffset"]) >= int(hwm), f"leader LogEndOffset {r['LogEndOffset']} < HighWatermark {hwm}")
    need(r["Lag"] == "0", f"leader Lag {r['Lag']}")
    now = time.time() * 1000
    for k in ("LastFetchTimestamp", "LastCaughtUpTimestamp"):
        need(abs(int(r[k]) - now) < 60_000, f"leader {k} {r[k]}, expected about now ({int(now)}) as Kafka reports")


def main():
    step, args = sys.argv[1], sys.argv[2:]
    fn = globals().get(step.replace("-", "_"))
    if fn is None:
        print(f"unknown step {step}")
        return 2
    try:
        fn(*args)
    except Bad as e:
        print(e)
        return 1
    except Exception as e:  # a parse error is a failed check too
        print(f"cannot parse the output: {type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
