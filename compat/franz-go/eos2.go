package main

// Phase 7: a second GroupTransactSession joins the group while the first
// is in the middle of a transaction. The first session's transaction must
// be aborted (kgo aborts when partitions were revoked before End) and its
// inputs reprocessed, by whichever session owns them afterwards; the output
// must still hold exactly one record per input.

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	eos2Parts = 4
	eos2N     = 200
)

type eosSession struct {
	name    string
	s       *kgo.GroupTransactSession
	revoked chan []int32 // non-empty revocations, from OnPartitionsRevoked
	commits int
}

type eosRun struct {
	label     string
	delivered map[int]where
	committed map[int]string // input -> the session whose transaction committed it
	aborted   map[int]bool
	again     int // aborted inputs polled again
}

func newEosSession(name, label, txnID, group, in, out string) *eosSession {
	e := &eosSession{name: name, revoked: make(chan []int32, 16)}
	s, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(bootstrap), kgo.ClientID("odradek-compat-franz-go-"+name),
		kgo.TransactionalID(txnID), kgo.TransactionTimeout(30*time.Second),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(in), kgo.HeartbeatInterval(time.Second),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DefaultProduceTopic(out), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, r map[string][]int32) {
			if len(r[in]) > 0 {
				e.revoked <- r[in]
			}
		}),
	)
	if err != nil {
		abort("%s: NewGroupTransactSession %s: %v", label, name, err)
	}
	e.s = s
	return e
}

// poll polls e once; with records, it begins a transaction and produces
// their transforms, returning the batch (input -> where), else nil.
func (r *eosRun) poll(ctx context.Context, e *eosSession) map[int]where {
	pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	fetches := e.s.PollRecords(pctx, 20)
	cancel()
	fetches.EachError(func(t string, p int32, err error) {
		if !isCtxErr(err) {
			bad("%s: session %s: fetch %s/%d: %v", r.label, e.name, t, p, err)
		}
	})
	if fetches.NumRecords() == 0 {
		return nil
	}
	if err := e.s.Begin(); err != nil {
		abort("%s: session %s: Begin: %v", r.label, e.name, err)
	}
	batch := map[int]where{}
	var outs []*kgo.Record
	fetches.EachRecord(func(rec *kgo.Record) {
		at := where{rec.Partition, rec.Offset}
		i, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(string(rec.Value), "value-"), "|", 2)[0])
		if err != nil || r.delivered[i] != at || string(rec.Value) != valueOf(i) {
			bad("%s: session %s: input %v: unexpected record %.40q", r.label, e.name, at, rec.Value)
			return
		}
		if by, dup := r.committed[i]; dup {
			bad("%s: session %s polled input %d at %v, which session %s already committed", r.label, e.name, i, at, by)
		}
		if r.aborted[i] {
			r.again++
			delete(r.aborted, i)
		}
		batch[i] = at
		outs = append(outs, &kgo.Record{Key: rec.Key, Value: []byte(transformed(i, at)), Partition: rec.Partition})
	})
	if err := e.s.ProduceSync(ctx, outs...).FirstErr(); err != nil {
		abort("%s: session %s: ProduceSync in the transaction: %v", r.label, e.name, err)
	}
	return batch
}

// end ends e's transaction trying to commit; it returns whether it committed.
func (r *eosRun) end(ctx context.Context, e *eosSession, batch map[int]where) bool {
	ok, err := e.s.End(ctx, kgo.TryCommit)
	if err != nil {
		abort("%s: session %s: End(TryCommit): %v", r.label, e.name, err)
	}
	for i := range batch {
		if ok {
			r.committed[i] = e.name
		} else {
			r.aborted[i] = true
		}
	}
	if ok {
		e.commits++
	}
	return ok
}

func eosRebalancePhase(adm *kadm.Client, base string) string {
	t0 := time.Now()
	in, out := base+"-eos2-in", base+"-eos2-out"
	group := in + "-group"
	label := "two GroupTransactSessions in " + group
	createTopic(adm, in, eos2Parts)
	createTopic(adm, out, eos2Parts)
	r := &eosRun{label: label, delivered: produceSpread(in, eos2Parts, 0, eos2N),
		committed: map[int]string{}, aborted: map[int]bool{}}
	ctx, cancel := ctxFor(45 * time.Second)
	defer cancel()

	s1 := newEosSession("S1", label, in+"-S1", group, in, out)
	var s2 *eosSession
	defer func() {
		s1.s.Close()
		if s2 != nil {
			s2.s.Close()
		}
	}()
	// S1 alone commits a few transactions.
	for s1.commits < 2 && ctx.Err() == nil && !failing() {
		if batch := r.poll(ctx, s1); batch != nil && !r.end(ctx, s1, batch) {
			bad("%s: S1 alone: End(TryCommit) did not commit", label)
		}
	}
	// S1 opens a transaction; S2 joins; once S1 has had partitions revoked
	// its End must abort.
	var open map[int]where
	for open == nil && ctx.Err() == nil && !failing() {
		open = r.poll(ctx, s1)
	}
	if failing() || ctx.Err() != nil {
		bad("%s: S1 got no records for its open transaction", label)
		return ""
	}
	s2 = newEosSession("S2", label, in+"-S2", group, in, out)
	var revoked []int32
	select {
	case revoked = <-s1.revoked:
		sort.Slice(revoked, func(a, b int) bool { return revoked[a] < revoked[b] })
	case <-ctx.Done():
		bad("%s: S1 had no partitions revoked after S2 joined", label)
		return ""
	}
	if r.end(ctx, s1, open) {
		bad("%s: S1's transaction spanning the rebalance (partitions %v revoked) committed; GroupTransactSession must abort it", label, revoked)
	}
	spanning := len(open)

	// Both sessions until every input is committed.
	for len(r.committed) < eos2N && ctx.Err() == nil && !failing() {
		for _, e := range []*eosSession{s1, s2} {
			if batch := r.poll(ctx, e); batch != nil {
				r.end(ctx, e, batch)
			}
		}
	}
	if len(r.committed) < eos2N && !failing() {
		bad("%s: %d of %d inputs committed in time", label, len(r.committed), eos2N)
	}
	if s2.commits == 0 || len(r.aborted) > 0 {
		bad("%s: S2 committed %d transactions; %d aborted inputs never reprocessed", label, s2.commits, len(r.aborted))
	}
	s1.s.Close()
	s2.s.Close()
	if failing() {
		return ""
	}

	want := map[string]bool{}
	for i, at := range r.delivered {
		want[transformed(i, at)] = true
	}
	got := readTopic(out, kgo.ReadCommitted(), eos2N)
	for _, rec := range got {
		if !want[string(rec.Value)] {
			bad("%s: read_committed reader of %s got %.50q at %v: a duplicate or an aborted record", label, out, rec.Value, where{rec.Partition, rec.Offset})
		}
		delete(want, string(rec.Value))
	}
	if len(want) > 0 || len(got) != eos2N {
		bad("%s: read_committed reader of %s saw %d records, %d inputs without their output", label, out, len(got), len(want))
	}
	ends := endOffsets(adm, in, false)
	if p := eventually(10*time.Second, func() string { return offsetsMatch(adm, group, in, ends) }); p != "" {
		bad("%s: at the end: %s", label, p)
	}
	return fmt.Sprintf("2 sessions %.1fs (S1 gave %v to S2 with a transaction of %d inputs open: aborted; %d+%d commits)",
		time.Since(t0).Seconds(), revoked, spanning, s1.commits, s2.commits)
}
