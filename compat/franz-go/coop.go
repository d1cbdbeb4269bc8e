package main

// Phases 8/9: two members of one group on a 6-partition topic, the second
// joining while the first is consuming, then leaving again; offsets are
// committed only in OnPartitionsRevoked, and only for the revoked partitions.
// Classic protocol with kgo's cooperative-sticky balancer (KIP-429
// incremental rebalances), and KIP-848 (kgo.ServerSideBalancer with the
// sticky balancer, the broker's "uniform" assignor).

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	coopParts   = 6
	coopPerPart = 100
	coopN       = coopParts * coopPerPart
)

type member struct {
	name  string
	label string
	topic string
	cl    *kgo.Client

	mu        sync.Mutex
	assigned  map[int32]bool    // owned now
	ever      map[int32]bool    // ever owned
	revokes   [][]int32         // each non-empty revocation, in order
	committed []map[int32]int64 // what each revocation committed
	lastRead  map[int32]int64   // last offset this member read per partition
	read      int
}

func sortedParts(m map[int32]bool) []int32 {
	var ps []int32
	for p, ok := range m {
		if ok {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(a, b int) bool { return ps[a] < ps[b] })
	return ps
}

func (m *member) owned() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedParts(m.assigned)
}

func (m *member) onAssigned(_ context.Context, _ *kgo.Client, added map[string][]int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range added[m.topic] {
		m.assigned[p] = true
		m.ever[p] = true
	}
}

// onRevoked commits, synchronously, the polled offsets of the revoked
// partitions and nothing else (the member keeps the others).
func (m *member) onRevoked(_ context.Context, cl *kgo.Client, revoked map[string][]int32) {
	ps := revoked[m.topic]
	if len(ps) == 0 {
		return
	}
	sort.Slice(ps, func(a, b int) bool { return ps[a] < ps[b] })
	toCommit := map[int32]kgo.EpochOffset{}
	for p, eo := range cl.UncommittedOffsets()[m.topic] {
		for _, r := range ps {
			if r == p {
				toCommit[p] = eo
			}
		}
	}
	done := map[int32]int64{}
	if len(toCommit) > 0 {
		ctx, cancel := ctxFor(15 * time.Second)
		cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{m.topic: toCommit},
			func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
				if err != nil {
					bad("%s: member %s: commit in OnPartitionsRevoked(%v): %v", m.label, m.name, ps, err)
					return
				}
				for _, t := range resp.Topics {
					for _, p := range t.Partitions {
						if e := kerr.ErrorForCode(p.ErrorCode); e != nil {
							bad("%s: member %s: commit in OnPartitionsRevoked(%v): partition %d: %v", m.label, m.name, ps, p.Partition, e)
						} else {
							done[p.Partition] = toCommit[p.Partition].Offset
						}
					}
				}
			})
		cancel()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range ps {
		delete(m.assigned, p)
	}
	m.revokes = append(m.revokes, ps)
	m.committed = append(m.committed, done)
}

func newMember(name, label, topic, group string, kip848 bool) *member {
	m := &member{name: name, label: label, topic: topic, assigned: map[int32]bool{}, ever: map[int32]bool{},
		lastRead: map[int32]int64{}}
	opts := []kgo.Opt{
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.BlockRebalanceOnPoll(),
		// Small batches (see coopPhase) and one per partition per fetch,
		// so that a member reads from all its partitions at once.
		kgo.FetchMaxPartitionBytes(1),
		kgo.OnPartitionsAssigned(m.onAssigned), kgo.OnPartitionsRevoked(m.onRevoked),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
			bad("%s: member %s lost partitions %v (fenced or kicked out)", label, name, lost[topic])
		}),
	}
	if kip848 {
		opts = append(opts, kgo.ServerSideBalancer(), kgo.Balancers(kgo.StickyBalancer()))
	} else {
		opts = append(opts, kgo.Balancers(kgo.CooperativeStickyBalancer()), kgo.HeartbeatInterval(time.Second))
	}
	m.cl = newClient(append(opts, kgo.ClientID("odradek-compat-franz-go-"+name))...)
	return m
}

type coopRun struct {
	label     string
	delivered map[int]where
	seen      map[int]where
	last      map[int32]int64
}

// poll polls m once (at most wait), checks what it got, and allows the
// rebalances BlockRebalanceOnPoll held back.
func (r *coopRun) poll(ctx context.Context, m *member, wait time.Duration) {
	pctx, cancel := context.WithTimeout(ctx, wait)
	fetches := m.cl.PollRecords(pctx, 10)
	cancel()
	fetches.EachError(func(t string, p int32, err error) {
		if !isCtxErr(err) {
			bad("%s: member %s: fetch %s/%d: %v", r.label, m.name, t, p, err)
		}
	})
	fetches.EachRecord(func(rec *kgo.Record) {
		m.mu.Lock()
		owned := m.assigned[rec.Partition]
		m.read++
		m.lastRead[rec.Partition] = rec.Offset
		m.mu.Unlock()
		if !owned {
			bad("%s: member %s got %v from a partition it does not own", r.label, m.name, where{rec.Partition, rec.Offset})
		}
		check(r.label+" member "+m.name, rec, r.delivered, r.seen, r.last)
	})
	m.cl.AllowRebalance()
}

// until polls the given members in turn until cond holds or within limit.
func (r *coopRun) until(what string, limit time.Duration, cond func() bool, ms ...*member) bool {
	ctx, cancel := ctxFor(limit)
	defer cancel()
	for !cond() {
		if ctx.Err() != nil || failing() {
			if !failing() {
				bad("%s: %s: not reached within %v", r.label, what, limit)
			}
			return false
		}
		if len(ms) == 0 {
			time.Sleep(50 * time.Millisecond)
		}
		for _, m := range ms {
			r.poll(ctx, m, 200*time.Millisecond)
		}
	}
	return true
}

func samePartitions(a, b []int32) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

func coopPhase(adm *kadm.Client, base string, kip848 bool) string {
	t0 := time.Now()
	name, suffix := "cooperative-sticky", "coop"
	if kip848 {
		name, suffix = "KIP-848 uniform", "848"
	}
	topic := base + "-" + suffix
	group := topic + "-group"
	label := fmt.Sprintf("%s group %s", name, group)
	createTopic(adm, topic, coopParts)
	r := &coopRun{label: label, delivered: produceSpread(topic, coopParts, 0, coopN, kgo.ProducerBatchMaxBytes(2048)), seen: map[int]where{}, last: map[int32]int64{}}

	a := newMember("A", label, topic, group, kip848)
	var b *member
	defer func() {
		if b != nil {
			b.cl.Close()
		}
		a.cl.Close()
	}()
	// 1. A alone: all six partitions; it reads some records of each.
	// The batches are at most 2 KB (about 10 records) and A fetches at
	// most one batch per partition (FetchMaxPartitionBytes(1): only the
	// first partition with data returns one, KIP-74). Kafka moves a
	// partition that returned data to the end of the fetch session
	// (KIP-227), so the partitions take turns and A has read from all six
	// after about 6 fetches; it must not have to read half the topic.
	if !r.until("member A alone owns all partitions and reads from each", 30*time.Second, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.lastRead) == coopParts
	}, a) {
		return ""
	}
	aFirst := len(r.seen)
	if len(r.seen) >= coopN/2 {
		a.mu.Lock()
		badLater("%s: member A read %d records before it had read from all %d partitions (last offsets %v); Kafka moves a partition that returned data to the end of the fetch session (KIP-227), so that partitions take turns",
			label, len(r.seen), coopParts, a.lastRead)
		a.mu.Unlock()
	}
	if len(a.revokes) != 0 {
		bad("%s: member A had partitions revoked while alone: %v", label, a.revokes)
	}

	// 2. B joins; A is not polled meanwhile (so it keeps its place), the
	// group rebalances in the background.
	b = newMember("B", label, topic, group, kip848)
	if !r.until("member B joins, gets partitions and reads", 40*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.read > 0
	}, b) {
		return ""
	}
	a.mu.Lock()
	revokes := append([][]int32(nil), a.revokes...)
	commits := append([]map[int32]int64(nil), a.committed...)
	a.mu.Unlock()
	aOwned, bOwned := a.owned(), b.owned()
	if len(revokes) != 1 || len(revokes[0]) != coopParts/2 {
		bad("%s: when B joined, A had %v revoked; expected one incremental revocation of %d of its %d partitions",
			label, revokes, coopParts/2, coopParts)
		return ""
	}
	if len(aOwned) != coopParts/2 || len(bOwned) != coopParts/2 || !samePartitions(bOwned, revokes[0]) {
		bad("%s: after B joined, A owns %v and B %v; expected B to own exactly what A gave up (%v), A to keep the other %d",
			label, aOwned, bOwned, revokes[0], coopParts/2)
	}
	// Only the revoked partitions were committed, at what A had read.
	want := map[int32]int64{}
	a.mu.Lock()
	for _, p := range revokes[0] {
		if last, read := a.lastRead[p]; read {
			want[p] = last + 1
		}
	}
	a.mu.Unlock()
	if fmt.Sprint(commits[0]) != fmt.Sprint(want) {
		bad("%s: in OnPartitionsRevoked(%v) A committed %v; expected the revoked partitions it had read from, %v", label, revokes[0], commits[0], want)
	}
	if p := offsetsMatch(adm, group, topic, want); p != "" {
		bad("%s: after the hand-over to B: %s (only the revoked partitions, where A stopped)", label, p)
	}

	describeTwo(adm, label, group, topic, kip848)

	// 3. Both consume until B has read 60 records (its partitions hold
	// well over that), then B leaves with its partitions half read.
	if !r.until("both members consume until B has read 60", 30*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.read >= 60
	}, a, b) {
		return ""
	}
	b.cl.Close()
	b.mu.Lock()
	bRevokes, bRead := b.revokes, b.read
	b.mu.Unlock()
	if len(bRevokes) != 1 || !samePartitions(bRevokes[0], revokes[0]) {
		bad("%s: B's revocations %v; expected one, on leaving, of %v", label, bRevokes, revokes[0])
	}
	b = nil

	// 4. A takes B's partitions back and reads everything.
	if !r.until("A owns every partition again and all records are read", 40*time.Second, func() bool {
		return len(a.owned()) == coopParts && len(r.seen) == coopN
	}, a) {
		return ""
	}
	a.mu.Lock()
	aRevokes := len(a.revokes)
	a.mu.Unlock()
	a.cl.Close()
	a.mu.Lock()
	if len(a.revokes) != aRevokes+1 || len(a.revokes[len(a.revokes)-1]) != coopParts {
		bad("%s: on close A's last revocation was %v; expected all %d partitions", label, a.revokes[len(a.revokes)-1:], coopParts)
	}
	aEver := sortedParts(a.ever)
	a.mu.Unlock()
	if len(aEver) != coopParts {
		bad("%s: A owned only %v", label, aEver)
	}
	if len(r.seen) != coopN {
		bad("%s: read %d of %d records", label, len(r.seen), coopN)
	}

	ends := endOffsets(adm, topic, false)
	if got, err := committedOffsets(adm, group, topic); err != nil {
		bad("%s: FetchOffsets: %v", label, err)
	} else if fmt.Sprint(got) != fmt.Sprint(ends) {
		bad("%s: committed offsets after close %v, expected the end offsets %v", label, got, ends)
	}
	ctx, cancel := ctxFor(15 * time.Second)
	defer cancel()
	groupType := "classic"
	if kip848 {
		groupType = "consumer"
		d, err := adm.DescribeConsumerGroups(ctx, group)
		g := d[group]
		if err != nil || g.Err != nil || g.State != "Empty" || len(g.Members) != 0 || g.AssignorName != "uniform" {
			bad("%s: DescribeConsumerGroups: error %v/%v, state %q, %d members, assignor %q; expected Empty, none, uniform",
				label, err, g.Err, g.State, len(g.Members), g.AssignorName)
		}
	} else {
		d, err := adm.DescribeGroups(ctx, group)
		g := d[group]
		if err != nil || g.Err != nil || g.State != "Empty" || len(g.Members) != 0 {
			bad("%s: DescribeGroups: error %v/%v, state %q, %d members; expected Empty with none",
				label, err, g.Err, g.State, len(g.Members))
		}
	}
	listed, err := adm.ListGroups(ctx)
	if lg, ok := listed[group]; err != nil || !ok || lg.GroupType != groupType {
		bad("%s: ListGroups: error %v, listed %v, type %q; expected type %q", label, err, ok, lg.GroupType, groupType)
	}
	return fmt.Sprintf("%s group %.1fs (A read %d from all %d partitions, B took %v from A, read %d, left)",
		name, time.Since(t0).Seconds(), aFirst, coopParts, revokes[0], bRead)
}

// describeTwo checks the group as described while A and B are both in it.
func describeTwo(adm *kadm.Client, label, group, topic string, kip848 bool) {
	ctx, cancel := ctxFor(15 * time.Second)
	defer cancel()
	if kip848 {
		d, err := adm.DescribeConsumerGroups(ctx, group)
		g := d[group]
		target := g.TargetPartitions()[topic]
		if err != nil || g.Err != nil || len(g.Members) != 2 || len(target) != coopParts || g.AssignorName != "uniform" {
			bad("%s: DescribeConsumerGroups with A and B in: error %v/%v, %d members, target assignment %v, assignor %q; expected 2 members, all %d partitions, uniform",
				label, err, g.Err, len(g.Members), target, g.AssignorName, coopParts)
		}
		return
	}
	d, err := adm.DescribeGroups(ctx, group)
	g := d[group]
	assigned := d.AssignedPartitions()[topic]
	if err != nil || g.Err != nil || g.State != "Stable" || len(g.Members) != 2 || g.Protocol != "cooperative-sticky" || len(assigned) != coopParts {
		bad("%s: DescribeGroups with A and B in: error %v/%v, state %q, protocol %q, %d members, assigned %v; expected Stable, cooperative-sticky, 2 members, all %d partitions",
			label, err, g.Err, g.State, g.Protocol, len(g.Members), assigned, coopParts)
	}
}
