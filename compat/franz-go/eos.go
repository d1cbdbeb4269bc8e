package main

// Phase 6: exactly-once consume-transform-produce with kgo's
// GroupTransactSession, from an input topic to an output topic, with one
// attempt aborted on purpose.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	eosParts = 3
	eosWave  = 150 // records per wave; the second wave comes once the first is committed
	eosN     = 2 * eosWave
)

// transformed is what the session writes for input record i.
func transformed(i int, at where) string {
	return fmt.Sprintf("out-%d|from %v|%d", i, at, len(valueOf(i)))
}

func eosPhase(adm *kadm.Client, base string) string {
	t0 := time.Now()
	in, out := base+"-eos-in", base+"-eos-out"
	group, txnID := in+"-group", in+"-session"
	label := "GroupTransactSession " + txnID
	createTopic(adm, in, eosParts)
	createTopic(adm, out, eosParts)
	delivered := produceSpread(in, eosParts, 0, eosWave)

	s, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(bootstrap), kgo.ClientID("odradek-compat-franz-go-eos"),
		kgo.TransactionalID(txnID), kgo.TransactionTimeout(30*time.Second),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DefaultProduceTopic(out), kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)
	if err != nil {
		abort("%s: NewGroupTransactSession: %v", label, err)
	}
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()

	ctx, cancel := ctxFor(45 * time.Second)
	defer cancel()
	committed := map[int]where{} // input record -> where it was, once its transaction committed
	aborted := map[int]where{}   // inputs of the aborted attempt
	reprocessed := 0
	commits, abortedOut := 0, 0
	wave2 := false
	for len(committed) < eosN && ctx.Err() == nil && !failing() {
		if !wave2 && len(committed) == eosWave {
			// Every partition now has a committed offset; the abort
			// below rewinds to them.
			ends := endOffsets(adm, in, false)
			if p := eventually(10*time.Second, func() string { return offsetsMatch(adm, group, in, ends) }); p != "" {
				bad("%s: after the first wave: %s", label, p)
				break
			}
			for i, w := range produceSpread(in, eosParts, eosWave, eosWave) {
				delivered[i] = w
			}
			wave2 = true
		}
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fetches := s.PollRecords(pctx, 40)
		pcancel()
		fetches.EachError(func(t string, p int32, err error) {
			if !isCtxErr(err) {
				bad("%s: fetch %s/%d: %v", label, t, p, err)
			}
		})
		if fetches.NumRecords() == 0 {
			continue
		}
		if err := s.Begin(); err != nil {
			abort("%s: Begin: %v", label, err)
		}
		batch := map[int]where{}
		var outRecords []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) {
			at := where{r.Partition, r.Offset}
			i, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(string(r.Value), "value-"), "|", 2)[0])
			if err != nil || delivered[i] != at || string(r.Value) != valueOf(i) {
				bad("%s: input %v: unexpected record %.40q", label, at, r.Value)
				return
			}
			if prev, dup := committed[i]; dup {
				bad("%s: input %d at %v polled again after its transaction committed (%v)", label, i, at, prev)
			}
			if _, again := aborted[i]; again {
				reprocessed++
			}
			batch[i] = at
			outRecords = append(outRecords, &kgo.Record{Key: r.Key, Value: []byte(transformed(i, at)), Partition: r.Partition})
		})
		if err := s.ProduceSync(ctx, outRecords...).FirstErr(); err != nil {
			abort("%s: ProduceSync in the transaction: %v", label, err)
		}
		try := kgo.TryCommit
		if wave2 && len(aborted) == 0 {
			try = kgo.TryAbort
		}
		ok, err := s.End(ctx, try)
		if err != nil {
			abort("%s: End(%v): %v", label, try, err)
		}
		switch {
		case try == kgo.TryAbort && ok:
			bad("%s: End(TryAbort) reported a commit", label)
		case try == kgo.TryAbort:
			for i, at := range batch {
				aborted[i] = at
			}
			abortedOut += len(outRecords)
		case !ok:
			bad("%s: End(TryCommit) aborted (a rebalance of a one-member group, or a failed offset commit)", label)
		default:
			commits++
			for i, at := range batch {
				committed[i] = at
			}
		}
	}
	if len(committed) < eosN && !failing() {
		bad("%s: %d of %d inputs committed within the time", label, len(committed), eosN)
	}
	if len(aborted) == 0 || reprocessed != len(aborted) {
		bad("%s: %d inputs in the aborted attempt, %d of them polled again; expected all to be reprocessed", label, len(aborted), reprocessed)
	}
	s.Close()
	closed = true
	if failing() {
		return ""
	}

	// read_committed: exactly one transformed record per input, in the input's partition.
	want := map[string]int32{}
	for i, at := range delivered {
		want[transformed(i, at)] = at.partition
	}
	got := readTopic(out, kgo.ReadCommitted(), eosN)
	dups := 0
	for _, r := range got {
		p, ok := want[string(r.Value)]
		if !ok {
			bad("%s: read_committed reader of %s got %.50q at %v: not one expected (a duplicate or an aborted record)",
				label, out, r.Value, where{r.Partition, r.Offset})
			dups++
			continue
		}
		if p != r.Partition {
			bad("%s: %q in partition %d, expected %d", label, r.Value, r.Partition, p)
		}
		delete(want, string(r.Value))
	}
	if len(want) > 0 || len(got) != eosN {
		bad("%s: read_committed reader of %s saw %d records, %d inputs without their output", label, out, len(got), len(want))
	}
	// read_uncommitted also sees the aborted attempt's records.
	if all := readTopic(out, kgo.ReadUncommitted(), eosN+abortedOut); len(all) != eosN+abortedOut {
		bad("%s: read_uncommitted reader of %s saw %d records, expected %d committed + %d aborted", label, out, len(all), eosN, abortedOut)
	}
	ends := endOffsets(adm, in, false)
	if p := eventually(10*time.Second, func() string { return offsetsMatch(adm, group, in, ends) }); p != "" {
		bad("%s: at the end: %s", label, p)
	}
	outEnds, outLSO := endOffsets(adm, out, false), endOffsets(adm, out, true)
	if fmt.Sprint(outEnds) != fmt.Sprint(outLSO) {
		bad("%s: output last stable offsets %v, high watermarks %v: a transaction left open", label, outLSO, outEnds)
	}
	if p := eventually(10*time.Second, func() string {
		dctx, dcancel := ctxFor(10 * time.Second)
		defer dcancel()
		txns, err := adm.DescribeTransactions(dctx, txnID)
		if d := txns[txnID]; err != nil || d.Err != nil || d.State != "CompleteCommit" || d.ProducerID < 0 || len(d.Topics) != 0 {
			return fmt.Sprintf("DescribeTransactions: error %v/%v, state %q, producer id %d, partitions %v; expected CompleteCommit, none",
				err, d.Err, d.State, d.ProducerID, d.Topics)
		}
		return ""
	}); p != "" {
		bad("%s: %s", label, p)
	}
	return fmt.Sprintf("GroupTransactSession %.1fs (%d inputs, %d transactions committed, 1 aborted and its %d inputs reprocessed)",
		time.Since(t0).Seconds(), eosN, commits, len(aborted))
}
