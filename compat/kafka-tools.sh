#!/usr/bin/env bash
# Apache Kafka's own command-line tools against a running Odradek broker.
#
# Runs the tools of Kafka 4.3.1 (target/kafka-dist/libs, built by
# compat/setup) exactly as Kafka's bin/kafka-*.sh scripts start them
# (`java -cp "libs/*" <main class> ...`), the way a person would use them, and
# checks what they print (compat/kafka-tools/check.py parses each output):
#
#   kafka-topics           create (3 partitions, retention.ms), --list,
#                          --describe (partition count, leader = replicas = Isr,
#                          configs), --alter --partitions 4, --delete
#   kafka-configs          topic: --describe, --alter --add-config and
#                          --delete-config, --describe --all (sources);
#                          broker: --describe --all
#   kafka-console-producer 300 keyed lines (--property parse.key=true)
#   kafka-console-consumer --group --from-beginning --max-messages 300 with
#                          print.key/partition/offset/timestamp
#   kafka-get-offsets      --time -1 (= records per partition), -3 (the record
#                          with the largest timestamp, from the consumer's
#                          print.timestamp), --time -2 after kafka-delete-records
#   kafka-consumer-groups  --list, --describe (CURRENT-OFFSET, LOG-END-OFFSET,
#                          LAG), --reset-offsets --to-earliest and --to-offset
#                          --execute, --describe again, --delete
#   kafka-delete-records   --offset-json-file
#   kafka-log-dirs         --describe --topic-list: every partition, its size
#                          (against the segment files when the directory is on
#                          this machine)
#   kafka-producer-perf-test 20,000 records, --throughput -1, acks=all, with
#                          --transactional-id and --transaction-duration-ms
#   kafka-consumer-perf-test reads the 20,000 back (count and bytes)
#   kafka-transactions     list (the perf test's transactional id committed, one
#                          left open by a killed producer), describe (the open
#                          one), describe-producers on a partition, abort
#   kafka-metadata-quorum  describe --status and --replication
#
# 35 JVM starts: 40-80 s on a busy 2-core machine with a debug broker, most of
# it JVM start-up and two consumer-group joins (the broker holds a new group's
# first join for group.initial.rebalance.delay.ms, 3 s). The
# topics are compat-kafka-tools-<random> and <that>-perf, the group <topic>-group
# (all deleted at the end of a passing run unless KEEP_TOPIC=1; the
# transactional ids <topic>-txn and <topic>-open stay, as Kafka keeps them
# until transactional.id.expiration.ms); the broker is expected to run with
# Kafka's default settings (the configs checks look at defaults).
#
#   BOOTSTRAP=127.0.0.1:19092 compat/kafka-tools.sh
# KAFKA_LIBS overrides the jar directory; JAVA the java binary; VERBOSE=1
# prints each step's exit code and the time so far on stderr; KEEP_OUTPUT=1
# keeps every tool's output (the directory is named on stderr).
set -uo pipefail

NAME=kafka-tools
HARD_LIMIT=110 # seconds, for the whole script
START=$SECONDS
COMPAT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$COMPAT/.." && pwd)"
LIBS="${KAFKA_LIBS:-$REPO/target/kafka-dist/libs}"
CHECK="$COMPAT/kafka-tools/check.py"
JAVA="${JAVA:-java}"
# kafka-run-class.sh's heap; C1 only and the serial collector, as the tools
# are short-lived; JVM warnings to stderr (they would go to stdout, among the
# output parsed). The first run dumps the classes it loaded into a class-data
# sharing archive that the later runs map (-Xshare:auto: ignored if unusable):
# about half a second less per run on a busy 2-core machine. (A second archive
# for the Scala ConfigCommand costs as much to dump as it saves.)
JVM=(-Xmx256M -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:-UsePerfData -Xshare:auto -Djava.awt.headless=true
     -Xlog:disable -Xlog:all=warning:stderr -Dorg.slf4j.simpleLogger.defaultLogLevel=warn)

fail() { echo "$NAME: FAIL $*"; exit 1; }
# seconds left for the next step, at most $1
left() { local l=$((HARD_LIMIT - 3 - (SECONDS - START))); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }

[ -n "${BOOTSTRAP:-}" ] || fail "set BOOTSTRAP=host:port"
[ -f "$LIBS/kafka-tools-4.3.1.jar" ] || fail "no Kafka tools in $LIBS (run compat/setup)"
command -v "$JAVA" >/dev/null || fail "no java on PATH (run compat/setup)"
command -v python3 >/dev/null || fail "no python3 on PATH"

# a broker must answer there (else every tool would retry for its full timeout)
python3 -c 'import socket, sys; h, _, p = sys.argv[1].rpartition(":"); socket.create_connection((h.strip("[]"), int(p)), 5).close()' \
  "${BOOTSTRAP%%,*}" 2>/dev/null || fail "nothing accepts connections at ${BOOTSTRAP%%,*}"

RAND="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
T="compat-kafka-tools-$RAND"   # the topic the person works with
TP="$T-perf"                   # the perf tests' topic
G="$T-group"
TX="$T-txn"
WORK="$(mktemp -d)"
OPEN_PID= # the transactional producer killed on purpose, below
trap '[ -z "$OPEN_PID" ] || kill -9 $OPEN_PID 2>/dev/null; [ -n "${KEEP_OUTPUT:-}" ] || rm -rf "$WORK"' EXIT
trap 'exit 1' TERM INT
[ -z "${KEEP_OUTPUT:-}" ] || echo "outputs kept in $WORK" >&2
B=(--bootstrap-server "$BOOTSTRAP")
runs=0

# show a step's command and output on stderr
details() {
  {
    echo "--- $1: $(cat "$WORK/$1.cmd")"
    sed 's/^/  out| /' "$WORK/$1.out" | head -40
    # (a client retrying prints the same warning many times)
    grep -v 'is deprecated and will be removed' "$WORK/$1.err" | awk '!seen[$0]++' | sed 's/^/  err| /' | head -40
  } >&2
}

# tool STEP CLASS ARGS... : one tool run, stdin from $IN (default /dev/null),
# output in $WORK/STEP.out and .err; a non-zero exit or a timeout fails the check
tool() {
  local step=$1 cls=$2 t rc; shift 2
  t=$(left 60)
  [ "$t" -gt 1 ] || fail "gave up after $HARD_LIMIT s (before $step; $runs tool runs done)"
  echo "$cls $*" > "$WORK/$step.cmd"
  local cds=-XX:ArchiveClassesAtExit="$WORK/tools.jsa"
  [ $runs -gt 0 ] && cds=-XX:SharedArchiveFile="$WORK/tools.jsa"
  timeout -k 3 "$t" "$JAVA" "${JVM[@]}" "$cds" -cp "$LIBS/*" "$cls" "$@" \
    < "${IN:-/dev/null}" > "$WORK/$step.out" 2> "$WORK/$step.err"
  rc=$?
  runs=$((runs + 1))
  [ -n "${VERBOSE:-}" ] && echo "$step: exit $rc after $((SECONDS - START)) s" >&2
  if [ $rc -ne 0 ]; then
    details "$step"
    [ $rc -eq 124 ] && fail "$step: no answer in $t s ($cls)"
    fail "$step exited $rc: $(grep -v -e '^\s*at ' -e 'is deprecated' "$WORK/$step.err" | head -2 | tr '\n\t' '  ')"
  fi
}

# check STEP ASSERTION ARGS... : runs check.py on the step's output; its
# answer (what the caller needs next) is left in $OUT
check() {
  local step=$1; shift
  OUT=$(python3 "$CHECK" "$@")
  if [ $? -ne 0 ]; then
    details "$step"
    fail "$step: $OUT"
  fi
}

# expect STEP REGEX : the step printed a line matching REGEX (grep -E)
expect() {
  grep -qE "$2" "$WORK/$1.out" || { details "$1"; fail "$1: no line matching '$2'"; }
}

TOPICS=org.apache.kafka.tools.TopicCommand
CONFIGS=kafka.admin.ConfigCommand
PRODUCER=org.apache.kafka.tools.ConsoleProducer
CONSUMER=org.apache.kafka.tools.consumer.ConsoleConsumer
CGROUPS=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
OFFSETS=org.apache.kafka.tools.GetOffsetShell
DELREC=org.apache.kafka.tools.DeleteRecordsCommand
LOGDIRS=org.apache.kafka.tools.LogDirsCommand
TXNS=org.apache.kafka.tools.TransactionsCommand
QUORUM=org.apache.kafka.tools.MetadataQuorumCommand
PPERF=org.apache.kafka.tools.ProducerPerformance
CPERF=org.apache.kafka.tools.ConsumerPerformance

# ---- kafka-topics
tool topics-create $TOPICS "${B[@]}" --create --topic "$T" --partitions 3 --replication-factor 1 --config retention.ms=123456
expect topics-create "^Created topic $T\.$"
tool topics-list $TOPICS "${B[@]}" --list
check topics-list in-list "$WORK/topics-list.out" "$T" present
# (an --alter to 4 partitions is refused unless the topic has fewer)
tool topics-alter $TOPICS "${B[@]}" --alter --topic "$T" --partitions 4
tool topics-describe-4 $TOPICS "${B[@]}" --describe --topic "$T"
check topics-describe-4 topic-describe "$WORK/topics-describe-4.out" "$T" 4 retention.ms=123456
LEADER=$OUT

# ---- kafka-configs
CT=(--entity-type topics --entity-name "$T")
tool configs-add $CONFIGS "${B[@]}" --alter "${CT[@]}" --add-config max.message.bytes=500000,retention.ms=654321
expect configs-add "^Completed updating config for topic $T\.$"
tool configs-describe $CONFIGS "${B[@]}" --describe "${CT[@]}"
check configs-describe topic-configs "$WORK/configs-describe.out" "$T" max.message.bytes=500000 retention.ms=654321 -cleanup.policy
tool configs-delete $CONFIGS "${B[@]}" --alter "${CT[@]}" --delete-config retention.ms
expect configs-delete "^Completed updating config for topic $T\.$"
tool configs-describe-all $CONFIGS "${B[@]}" --describe "${CT[@]}" --all
check configs-describe-all topic-configs "$WORK/configs-describe-all.out" "$T" \
  max.message.bytes=500000 retention.ms@604800000 cleanup.policy@delete segment.bytes@1073741824
tool configs-broker $CONFIGS "${B[@]}" --describe --entity-type brokers --entity-name "$LEADER" --all
check configs-broker broker-configs "$WORK/configs-broker.out" "$LEADER"
LOG_DIRS=$OUT

# ---- console producer and consumer: 300 keyed records
N=300
awk -v n=$N 'BEGIN { for (i = 0; i < n; i++) printf "key-%d\tvalue-%d|%08x\n", i % 50, i, i * 2654435761 % 4294967296 }' > "$WORK/input.tsv"
IN="$WORK/input.tsv" tool console-producer $PRODUCER "${B[@]}" --topic "$T" --property parse.key=true
if grep -qE 'Exception|ERROR' "$WORK/console-producer.err"; then
  details console-producer; fail "console-producer: $(grep -m1 -E 'Exception|ERROR' "$WORK/console-producer.err")"
fi
PRINT=(--property print.key=true --property print.partition=true --property print.offset=true --property print.timestamp=true)
# (without --group, Kafka 4's console consumer joins a group of its own too,
# only without committing: one run with --group covers both)
tool console-consumer $CONSUMER "${B[@]}" --topic "$T" --group "$G" --from-beginning --max-messages $N --timeout-ms 40000 "${PRINT[@]}"
check console-consumer console-consume "$WORK/console-consumer.out" "$WORK/console-consumer.err" "$WORK/input.tsv" "$T" 4
COUNTS=$(sed -n 1p <<< "$OUT") # "p:records ..." per partition
MAXTS=$(sed -n 2p <<< "$OUT")  # "p:offset ..." of each partition's max-timestamp record

# ---- kafka-get-offsets: the end offsets are the records per partition; -3
# (max timestamp) the first record with the partition's largest timestamp
tool offsets-latest $OFFSETS "${B[@]}" --topic "$T" --time -1
check offsets-latest get-offsets "$WORK/offsets-latest.out" "$T" "$COUNTS"
tool offsets-max-timestamp $OFFSETS "${B[@]}" --topic "$T" --time -3
check offsets-max-timestamp get-offsets "$WORK/offsets-max-timestamp.out" "$T" "$MAXTS"

# ---- kafka-consumer-groups: the console consumer's group committed every record
tool groups-list $CGROUPS "${B[@]}" --list
check groups-list in-list "$WORK/groups-list.out" "$G" present
tool groups-describe $CGROUPS "${B[@]}" --describe --group "$G"
all_read="" from_start="" earliest=""
for pc in $COUNTS; do
  p=${pc%%:*} n=${pc#*:}
  all_read+="$p:$n:$n " from_start+="$p:0:$n " earliest+="$p:0 "
done
check groups-describe group-describe "$WORK/groups-describe.out" "$G" "$T" "$all_read"
tool groups-reset-earliest $CGROUPS "${B[@]}" --group "$G" --topic "$T" --reset-offsets --to-earliest --execute
check groups-reset-earliest group-reset "$WORK/groups-reset-earliest.out" "$G" "$T" "$earliest"
# the partition with the most records goes to half its records
read -r PMAX NMAX < <(tr ' ' '\n' <<< "$COUNTS" | awk -F: 'NF == 2 && $2 > n { p = $1; n = $2 } END { print p, n }')
HALF=$((NMAX / 2))
tool groups-reset-offset $CGROUPS "${B[@]}" --group "$G" --topic "$T:$PMAX" --reset-offsets --to-offset "$HALF" --execute
check groups-reset-offset group-reset "$WORK/groups-reset-offset.out" "$G" "$T" "$PMAX:$HALF"
tool groups-describe-reset $CGROUPS "${B[@]}" --describe --group "$G"
check groups-describe-reset group-describe "$WORK/groups-describe-reset.out" "$G" "$T" \
  "$(sed -E "s/(^| )$PMAX:0:/\1$PMAX:$HALF:/" <<< "$from_start")"

# ---- kafka-delete-records, then kafka-get-offsets --time -2 shows the new start
DEL=3
printf '{"version":1,"partitions":[{"topic":"%s","partition":%d,"offset":%d}]}\n' "$T" "$PMAX" "$DEL" > "$WORK/delete.json"
tool delete-records $DELREC "${B[@]}" --offset-json-file "$WORK/delete.json"
check delete-records delete-records "$WORK/delete-records.out" "$T" "$PMAX" "$DEL"
tool offsets-earliest $OFFSETS "${B[@]}" --topic "$T" --time -2
check offsets-earliest get-offsets "$WORK/offsets-earliest.out" "$T" "$(sed -E "s/(^| )$PMAX:0/\1$PMAX:$DEL/" <<< "$earliest")"

# ---- kafka-log-dirs
tool log-dirs $LOGDIRS "${B[@]}" --describe --topic-list "$T"
check log-dirs log-dirs "$WORK/log-dirs.out" "$T" "$COUNTS" "$LOG_DIRS"
SIZES=$OUT

# ---- perf tests: 20,000 records in transactions, read back
PN=20000
tool topics-create-perf $TOPICS "${B[@]}" --create --topic "$TP" --partitions 3 --replication-factor 1
expect topics-create-perf "^Created topic $TP\.$"
tool producer-perf $PPERF "${B[@]}" --topic "$TP" --num-records $PN --record-size 100 --throughput -1 \
  --command-property acks=all --transactional-id "$TX" --transaction-duration-ms 500
check producer-perf producer-perf "$WORK/producer-perf.out" "$WORK/producer-perf.err" $PN
PRATE=$OUT
tool consumer-perf $CPERF "${B[@]}" --topic "$TP" --num-records $PN --timeout 40000
check consumer-perf consumer-perf "$WORK/consumer-perf.out" $PN 100
CRATE=$OUT

# ---- kafka-transactions
# A second transactional producer is killed (-9) in the middle of its
# transaction once some of its records are acknowledged: its transaction stays
# open (until the coordinator times it out, 60 s later), and is then aborted
# by hand with `kafka-transactions abort`, as one would a hanging transaction.
TX2="$T-open"
# (1,200 records at 20/s: should the script itself be killed, it ends in a minute)
( exec "$JAVA" "${JVM[@]}" -XX:SharedArchiveFile="$WORK/tools.jsa" -cp "$LIBS/*" $PPERF "${B[@]}" \
    --topic "$TP" --num-records 1200 --record-size 10 --throughput 20 --reporting-interval 100 \
    --transactional-id "$TX2" --transaction-duration-ms 600000 ) > "$WORK/open-producer.out" 2> "$WORK/open-producer.err" &
OPEN_PID=$!
echo "$PPERF ... --transactional-id $TX2 (killed once records are acknowledged)" > "$WORK/open-producer.cmd"
until grep -qs 'records sent' "$WORK/open-producer.out"; do
  kill -0 $OPEN_PID 2>/dev/null || { details open-producer; fail "open-producer: the transactional producer exited before any record was acknowledged"; }
  [ "$(left 60)" -gt 30 ] || { details open-producer; fail "open-producer: no record acknowledged"; }
  sleep 0.2
done
kill -9 $OPEN_PID; wait $OPEN_PID 2>/dev/null
grep -q 'Exception' "$WORK/open-producer.err" && { details open-producer; fail "open-producer: $(grep -m1 Exception "$WORK/open-producer.err")"; }
runs=$((runs + 1))
tool txn-list $TXNS "${B[@]}" list
check txn-list txn-list "$WORK/txn-list.out" "$TX" CompleteCommit
PID=$OUT
check txn-list txn-list "$WORK/txn-list.out" "$TX2" Ongoing
PID2=$OUT
tool txn-describe-open $TXNS "${B[@]}" describe --transactional-id "$TX2"
check txn-describe-open txn-describe "$WORK/txn-describe-open.out" "$TX2" "$PID2" Ongoing "$TP"
OPEN_PARTS=$OUT # the partitions of the open transaction
P2=${OPEN_PARTS%% *}
tool txn-producers $TXNS "${B[@]}" describe-producers --topic "$TP" --partition "$P2"
# the perf test's producer wrote every partition and committed; the killed one is open
check txn-producers txn-producers "$WORK/txn-producers.out" "$PID" committed $PN
check txn-producers txn-producers "$WORK/txn-producers.out" "$PID2" open $PN
START2=$OUT
for p in $OPEN_PARTS; do
  if [ "$p" != "$P2" ]; then # rarely more than one partition: find each one's start offset
    tool txn-producers-$p $TXNS "${B[@]}" describe-producers --topic "$TP" --partition "$p"
    check txn-producers-$p txn-producers "$WORK/txn-producers-$p.out" "$PID2" open $PN
    OPEN_START=$OUT
  else
    OPEN_START=$START2
  fi
  tool txn-abort-$p $TXNS "${B[@]}" abort --topic "$TP" --partition "$p" --start-offset "$OPEN_START"
done
tool txn-producers-aborted $TXNS "${B[@]}" describe-producers --topic "$TP" --partition "$P2"
check txn-producers-aborted txn-producers "$WORK/txn-producers-aborted.out" "$PID2" committed $PN

# ---- kafka-metadata-quorum
tool quorum-status $QUORUM "${B[@]}" describe --status
check quorum-status quorum-status "$WORK/quorum-status.out"
read -r QLEADER QHWM QVOTERS <<< "$OUT"
tool quorum-replication $QUORUM "${B[@]}" describe --replication
check quorum-replication quorum-replication "$WORK/quorum-replication.out" "$QLEADER" "$QHWM" "$QVOTERS"

# ---- clean up as a person would: the group, then the topics
if [ -z "${KEEP_TOPIC:-}" ]; then
  tool groups-delete $CGROUPS "${B[@]}" --delete --group "$G"
  expect groups-delete "^Deletion of requested consumer groups \('$G'\) was successful\.$"
  tool topics-delete $TOPICS "${B[@]}" --delete --topic "$T|$TP"
  tool topics-list-after $TOPICS "${B[@]}" --list
  check topics-list-after in-list "$WORK/topics-list-after.out" "$T" absent
  check topics-list-after in-list "$WORK/topics-list-after.out" "$TP" absent
fi

echo "$NAME: OK $runs tool runs in $((SECONDS - START)) s; topic $T: partitions $COUNTS (sizes $SIZES)," \
  "group reset and delete-records checked; perf: $PN records ($PRATE produced, $CRATE msg/s consumed)," \
  "transaction $TX committed, $TX2 left open and aborted with kafka-transactions abort; quorum leader $QLEADER"
