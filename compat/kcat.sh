#!/usr/bin/env bash
# kcat compatibility check for Odradek.
#
# kcat has no admin API, so the topic is created by the broker's
# auto-topic-creation when kcat first produces to it (it gets the broker's
# default partition count, normally 1). Set TOPIC to use a pre-created, empty
# topic instead.
#
# Produces 10,000 keyed messages (acks=all, no idempotence), consumes the
# topic from the beginning to the end (-C -e, no consumer group), and checks
# that every message arrived once, with the right key and value, at
# contiguous offsets from 0, in produce order per partition, with each key in
# a single partition, and that kcat -Q (ListOffsets) agrees on the end offsets.
#
# Then, for a single-partition topic (the broker's default), a consumer-group
# phase: two balanced consumers (-G, same fresh group, auto-commit, -e) run at
# once. One of them gets the partition, reads it to the end and exits (its
# offsets are committed on close); the other then takes the partition over at
# the committed offset, finds nothing left and exits. The two outputs together
# must hold every message exactly once, each member must have been assigned
# the partition, and a third member of the now-empty group must find nothing
# to read and report end-of-partition at the end offset (kcat cannot query
# committed offsets directly).
#
#   BOOTSTRAP=127.0.0.1:19092 compat/kcat.sh
set -uo pipefail

CLIENT=kcat
N=10000
HARD_LIMIT=110 # seconds, for the whole script
START=$SECONDS

fail() { echo "$CLIENT: FAIL $*"; exit 1; }
# seconds left for the next step, at most $1
left() { local l=$((HARD_LIMIT - 5 - (SECONDS - START))); [ "$l" -lt "$1" ] && echo $((l > 1 ? l : 1)) || echo "$1"; }

[ -n "${BOOTSTRAP:-}" ] || fail "set BOOTSTRAP=host:port"
command -v kcat >/dev/null || fail "kcat not on PATH (run compat/setup)"
TOPIC="${TOPIC:-compat-kcat-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
KCAT=(kcat -b "$BOOTSTRAP" -X client.id=odradek-compat-kcat -X api.version.request=true)

# key<TAB>value lines; the value is "value-<i>|" plus a deterministic payload
# of 16..408 bytes (same scheme as the other clients' scripts).
gen() {
  awk -v n="$N" 'BEGIN {
    for (i = 0; i < n; i++) {
      h = sprintf("%08x", i); v = "value-" i "|"
      for (j = 0; j < 2 + i % 50; j++) v = v h
      printf "key-%d\t%s\n", i % 97, v
    }
  }'
}
gen > "$WORK/input.tsv"

# 1. produce (topic auto-created by the broker)
t0=$SECONDS
timeout -k 5 "$(left 60)" "${KCAT[@]}" -P -t "$TOPIC" -K '\t' -m 15 \
  -X acks=all -X enable.idempotence=false -X linger.ms=5 -X message.timeout.ms=45000 \
  -l "$WORK/input.tsv" 2> "$WORK/produce.err"
rc=$?
produce_s=$((SECONDS - t0))
# kcat reports problems as "% ERROR: ..." / "Delivery failed" lines
if [ $rc -ne 0 ] || grep -qE '% ERROR|[Dd]elivery failed' "$WORK/produce.err"; then
  sed 's/^/  /' "$WORK/produce.err" | head -20 >&2
  fail "produce exited $rc: $(grep -E '% ERROR|[Dd]elivery failed' "$WORK/produce.err" | head -1)"
fi

# 2. how many partitions did the topic get? (Metadata)
timeout -k 5 "$(left 20)" "${KCAT[@]}" -L -t "$TOPIC" -m 10 > "$WORK/meta.txt" 2> "$WORK/meta.err" \
  || fail "metadata (-L) failed: $(head -1 "$WORK/meta.err")"
nparts=$(grep -cE '^ +partition [0-9]+, leader [0-9]+' "$WORK/meta.txt")
[ "$nparts" -ge 1 ] || fail "metadata lists no partition with a leader for $TOPIC: $(tr '\n' ' ' < "$WORK/meta.txt")"

# 3. end offsets per partition (ListOffsets, timestamp -1 = latest)
qargs=()
for ((p = 0; p < nparts; p++)); do qargs+=(-t "$TOPIC:$p:-1"); done
timeout -k 5 "$(left 20)" "${KCAT[@]}" -Q "${qargs[@]}" -m 10 > "$WORK/offsets.txt" 2> "$WORK/offsets.err" \
  || fail "query offsets (-Q) failed: $(head -1 "$WORK/offsets.err")"

# 4. consume everything from the beginning, exit at the end of every partition
t1=$SECONDS
timeout -k 5 "$(left 60)" "${KCAT[@]}" -C -t "$TOPIC" -o beginning -e -q -m 15 \
  -f '%p\t%o\t%k\t%s\n' > "$WORK/output.tsv" 2> "$WORK/consume.err"
rc=$?
consume_s=$((SECONDS - t1))
if [ $rc -ne 0 ]; then
  sed 's/^/  /' "$WORK/consume.err" | head -20 >&2
  fail "consume exited $rc after $(wc -l < "$WORK/output.tsv") records: $(grep -i error "$WORK/consume.err" | head -1)"
fi

# 5. verify (a function: the group phase checks its output the same way)
verify() {
awk -F'\t' -v n="$N" -v offsets="$WORK/offsets.txt" '
  function bad(msg) { if (nbad < 20) print "  " msg > "/dev/stderr"; if (!nbad) first = msg; nbad++ }
  function expect(i,   h, v, j) { h = sprintf("%08x", i); v = "value-" i "|"; for (j = 0; j < 2 + i % 50; j++) v = v h; return v }
  BEGIN {
    # kcat -Q prints lines like: <topic> [<partition>] offset <n>
    while ((getline line < offsets) > 0) {
      if (match(line, /\[[0-9]+\] offset -?[0-9]+/)) {
        s = substr(line, RSTART + 1, RLENGTH - 1); split(s, a, /\] offset /); hw[a[1]] = a[2] + 0; nhw++
      }
    }
  }
  NF != 4 { bad("malformed line " NR ": " substr($0, 1, 60)); next }
  {
    p = $1; off = $2 + 0; k = $3; v = $4; total++
    if (!match(v, /^value-[0-9]+\|/)) { bad("p" p "@" off ": unparseable value " substr(v, 1, 40)); next }
    i = substr(v, 7, RLENGTH - 7) + 0
    if (i < 0 || i >= n) { bad("p" p "@" off ": value index " i " out of range"); next }
    if (i in seen) { bad("p" p "@" off ": duplicate of message " i " (first seen at " seen[i] ")"); next }
    seen[i] = "p" p "@" off
    if (v != expect(i)) bad("p" p "@" off ": value of message " i " differs (" length(v) " bytes, expected " length(expect(i)) ")")
    if (k != "key-" (i % 97)) bad("p" p "@" off ": key of message " i " is " k ", expected key-" (i % 97))
    if (k in keypart && keypart[k] != p) bad("key " k " found in partitions " keypart[k] " and " p)
    keypart[k] = p
    if (off != cnt[p] + 0) bad("partition " p ": offset " off " at position " cnt[p] + 0 " (offsets not contiguous from 0)")
    if (p in last && i <= last[p]) bad("partition " p ": message " i " consumed after " last[p] " (not in produce order)")
    last[p] = i; cnt[p]++
  }
  END {
    if (total != n) bad("consumed " total + 0 " records, expected " n)
    missing = 0; for (i = 0; i < n; i++) if (!(i in seen)) { if (!missing) fm = i; missing++ }
    if (missing) bad(missing " messages never consumed, first: " fm)
    sum = 0
    for (p in hw) { sum += hw[p]; if (hw[p] != cnt[p] + 0) bad("partition " p ": end offset " hw[p] " but " cnt[p] + 0 " records consumed") }
    if (!nhw) bad("kcat -Q returned no end offsets")
    else if (sum != n) bad("end offsets sum to " sum ", expected " n)
    for (p in cnt) { counts = counts (counts ? "," : "") "p" p "=" cnt[p] }
    if (nbad) { print nbad " problem(s), first: " first; exit 1 }
    print counts
  }
' "$1"
}
verify "$WORK/output.tsv" > "$WORK/verdict.txt"
rc=$?
verdict="$(cat "$WORK/verdict.txt")"
[ $rc -eq 0 ] || fail "$verdict [topic $TOPIC]"

# 6. consumer group (see the top). Only for a single-partition topic: with
# several, kcat -G -e keeps counting partitions at EOF across an eager
# rebalance and can exit before its new assignment is read to the end.
if [ "$nparts" -ne 1 ]; then
  group_note="; group phase skipped ($nparts partitions, kcat -G -e needs 1)"
else
  GROUP="$TOPIC-group"
  # no -o: in -G mode kcat would apply it to every assignment, ignoring the
  # committed offsets; auto.offset.reset only applies when there are none
  KG=("${KCAT[@]}" -G "$GROUP" -X auto.offset.reset=earliest -X enable.partition.eof=true -e -m 15
      -f '%p\t%o\t%k\t%s\n')
  t2=$SECONDS
  gl=$(left 60)
  pids=()
  for m in 0 1; do
    timeout -k 5 "$gl" "${KG[@]}" -X client.id=odradek-compat-kcat-m$m "$TOPIC" \
      > "$WORK/group$m.tsv" 2> "$WORK/group$m.err" &
    pids+=($!)
  done
  wait "${pids[0]}"; rc0=$?
  wait "${pids[1]}"; rc1=$?
  group_s=$((SECONDS - t2))
  for m in 0 1; do
    rc=$([ "$m" -eq 0 ] && echo $rc0 || echo $rc1)
    if [ "$rc" -ne 0 ] || grep -q '% ERROR' "$WORK/group$m.err"; then
      sed 's/^/  /' "$WORK/group$m.err" | head -20 >&2
      fail "group member $m exited $rc after $(wc -l < "$WORK/group$m.tsv") records: $(grep -E '% ERROR' "$WORK/group$m.err" | head -1) [topic $TOPIC, group $GROUP]"
    fi
    # "% Group <g> rebalanced (memberid <id>): assigned: <topic> [0]"
    grep -qE "rebalanced .*assigned: .*\[[0-9]+\]" "$WORK/group$m.err" \
      || fail "group member $m was never assigned a partition [topic $TOPIC, group $GROUP]"
  done
  # the members hand the partition over; sort their outputs back into offset order
  sort -s -t$'\t' -k1,1n -k2,2n "$WORK/group0.tsv" "$WORK/group1.tsv" > "$WORK/group.tsv"
  verify "$WORK/group.tsv" > "$WORK/group-verdict.txt" \
    || fail "group $GROUP: $(cat "$WORK/group-verdict.txt") [topic $TOPIC]"
  # committed offsets: a new member starts at them; it must read nothing and
  # hit end-of-partition at the end offset
  end0=$(sed -nE 's/.*\[0\] offset ([0-9]+).*/\1/p' "$WORK/offsets.txt" | head -1)
  timeout -k 5 "$(left 30)" "${KG[@]}" -X client.id=odradek-compat-kcat-check "$TOPIC" \
    > "$WORK/group-check.tsv" 2> "$WORK/group-check.err"
  rc=$?
  eof=$(sed -nE 's/.*Reached end of topic .* \[0\] at offset ([0-9]+).*/\1/p' "$WORK/group-check.err" | head -1)
  if [ $rc -ne 0 ] || [ -s "$WORK/group-check.tsv" ] || [ "$eof" != "$end0" ]; then
    sed 's/^/  /' "$WORK/group-check.err" | head -20 >&2
    fail "group $GROUP: after both members left, a new member (exit $rc) read $(wc -l < "$WORK/group-check.tsv") records and reached the end at offset ${eof:-none}, expected 0 records and the end offset $end0 as committed offset [topic $TOPIC]"
  fi
  group_note="; group of 2: m0 $(wc -l < "$WORK/group0.tsv") records, m1 $(wc -l < "$WORK/group1.tsv") records, ${group_s}s, committed offset $eof (lag 0)"
fi

echo "$CLIENT: OK $N messages via $TOPIC ($verdict); produce ${produce_s}s, consume ${consume_s}s$group_note (topic left in place: kcat has no delete)"
