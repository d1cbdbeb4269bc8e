// franz-go compatibility check for Odradek.
//
// franz-go (github.com/twmb/franz-go: pkg/kgo, the client, and pkg/kadm, its
// admin client) comes through Go modules, pinned in go.mod and go.sum; compat/setup
// builds this into target/compat-franz-go:
//
//	compat/setup && BOOTSTRAP=127.0.0.1:19092 target/compat-franz-go
//
// (or the address as the only argument). Prints one line, "franz-go: OK ..."
// or "franz-go: FAIL ..." (details on stderr), exits non-zero on any problem,
// and gives up after 110 s whatever the broker does.
//
// Phases, each on what the one before left behind:
//  1. kadm: CreateTopic (3 partitions, and a 1-partition topic for the
//     transactions), ListTopics, BrokerMetadata, DescribeTopicConfigs;
//  2. kgo's producer, idempotent by default (acks=all), sends 1,000 keyed
//     records with ProduceSync; every result must be a success, and the acked
//     offsets must be 0..n-1 per partition;
//  3. a classic consumer group reads them all, committing
//     (CommitUncommittedOffsets) after every poll; the committed offsets
//     (kadm FetchOffsets) must be the end offsets, and DescribeGroups must
//     show the group Empty;
//  4. the same with KIP-848 (kgo.ServerSideBalancer), checked with
//     DescribeConsumerGroups;
//  5. a transactional producer commits a transaction, aborts one, commits
//     another; a read_committed consumer (kgo.FetchIsolationLevel) sees exactly
//     the committed records in order, a read_uncommitted one all three, and
//     the last stable offset (kadm ListCommittedOffsets) is the end offset;
//  6. GroupTransactSession (eos.go): consume-transform-produce from a
//     3-partition input to a 3-partition output, one transaction per poll;
//     one attempt is ended with TryAbort and its inputs must be polled again;
//     read_committed sees exactly one output per input, read_uncommitted the
//     aborted attempt too, the group's offsets end at the input's end;
//  7. a second GroupTransactSession (eos2.go) joins while the first has a
//     transaction open on a 4-partition input: once the first has had
//     partitions revoked, its End(TryCommit) must abort; both sessions then
//     process the rest; every aborted input polled again, read_committed sees
//     exactly one output per input, the group's offsets end at the input's end;
//  8. a cooperative-sticky group (coop.go): member A alone on 6 partitions
//     reads part of each, B joins (A gives up 3 in an incremental rebalance
//     and keeps 3), both consume, B leaves (A takes its 3 back); offsets are
//     committed only in OnPartitionsRevoked and only for the revoked
//     partitions (BlockRebalanceOnPoll); every record exactly once,
//     committed offsets = end offsets after close;
//  9. the same with KIP-848 (kgo.ServerSideBalancer, the broker's uniform
//     assignor);
//  10. the kadm tour (tour.go): CreatePartitions, AlterTopicConfigs
//     (incremental SET/DELETE, INVALID_CONFIG), ListOffsets (start, end,
//     after a millisecond), DeleteRecords, CommitOffsets/FetchOffsets/Lag/
//     DeleteOffsets/DescribeGroups/ListGroups/DeleteGroups, DescribeLogDirs,
//     DescribeBrokerConfigs, Describe/ListTransactions and DescribeProducers
//     on an open transaction, DescribeQuorum (raw kmsg: kadm has none),
//     ApiVersions with its features, and the ACL calls (SECURITY_DISABLED).
//
// Every topic and group is named after the first topic; a passing run
// deletes them all.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	client     = "franz-go"
	n          = 1000
	partitions = 3
	hardLimit  = 110 * time.Second
	txnPer     = 30 // records per transaction
)

var (
	start      = time.Now()
	bootstrap  string
	problems   []string
	problemsMu sync.Mutex

	late         []string    // problems that do not stop the later phases, reported at the end
	quorumClient *kgo.Client // the admin client's kgo client, for raw kmsg requests
)

func keyOf(i int) string { return fmt.Sprintf("key-%d", i%97) }

// "value-<i>|" plus a deterministic payload of 16..408 bytes, as the other scripts.
func valueOf(i int) string {
	return fmt.Sprintf("value-%d|", i) + strings.Repeat(fmt.Sprintf("%08x", i), 2+i%50)
}

type where struct {
	partition int32
	offset    int64
}

func (w where) String() string { return fmt.Sprintf("p%d@%d", w.partition, w.offset) }

// bad records a problem; rebalance callbacks call it from kgo's goroutines.
func bad(format string, args ...interface{}) {
	problemsMu.Lock()
	defer problemsMu.Unlock()
	if len(problems) < 20 {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
}

func fail(format string, args ...interface{}) {
	fmt.Printf("%s: FAIL "+format+"\n", append([]interface{}{client}, args...)...)
	os.Exit(1)
}

// abort ends the run with what has gone wrong so far plus this.
func abort(format string, args ...interface{}) {
	bad(format, args...)
	report()
}

func report() {
	problemsMu.Lock()
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "  "+p)
	}
	fail("%d problem(s), first: %s", len(problems), problems[0])
}

// ctxFor is a context that ends within cap and before the hard limit.
func ctxFor(cap time.Duration) (context.Context, context.CancelFunc) {
	left := hardLimit - 5*time.Second - time.Since(start)
	if left > cap {
		left = cap
	}
	if left < 100*time.Millisecond {
		left = 100 * time.Millisecond
	}
	return context.WithTimeout(context.Background(), left)
}

func randomHex(bytes int) string {
	b := make([]byte, bytes)
	if _, err := rand.Read(b); err != nil {
		fail("random: %v", err)
	}
	return hex.EncodeToString(b)
}

func newClient(opts ...kgo.Opt) *kgo.Client {
	base := []kgo.Opt{kgo.SeedBrokers(bootstrap), kgo.ClientID("odradek-compat-franz-go")}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		fail("kgo.NewClient: %v", err)
	}
	return cl
}

// ---- 1. admin ------------------------------------------------------------------------

func adminPhase(adm *kadm.Client, topic, txnTopic string) {
	ctx, cancel := ctxFor(30 * time.Second)
	defer cancel()
	for _, t := range []struct {
		name  string
		parts int32
	}{{topic, partitions}, {txnTopic, 1}} {
		resp, err := adm.CreateTopic(ctx, t.parts, 1, nil, t.name)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			abort("CreateTopic %s: %v", t.name, err)
		}
	}

	topics, err := adm.ListTopics(ctx)
	if err != nil {
		abort("ListTopics: %v", err)
	}
	if !topics.Has(topic) || !topics.Has(txnTopic) {
		bad("ListTopics: %s or %s missing from %v", topic, txnTopic, topics.Names())
	}
	d := topics[topic]
	if d.Err != nil || len(d.Partitions) != partitions || d.ID == (kadm.TopicID{}) || d.IsInternal {
		bad("ListTopics: %s has error %v, %d partitions, id %v, internal %v; expected %d partitions and an id",
			topic, d.Err, len(d.Partitions), d.ID, d.IsInternal, partitions)
	}

	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		abort("BrokerMetadata: %v", err)
	}
	brokers := map[int32]bool{}
	for _, b := range md.Brokers {
		brokers[b.NodeID] = true
	}
	if md.Cluster == "" || len(brokers) == 0 || !brokers[md.Controller] {
		bad("BrokerMetadata: cluster %q, brokers %v, controller %d: expected a cluster id and a controller among the brokers",
			md.Cluster, md.Brokers.NodeIDs(), md.Controller)
	}
	for _, p := range d.Partitions {
		if p.Err != nil || !brokers[p.Leader] {
			bad("ListTopics: %s partition %d: error %v, leader %d not a broker", topic, p.Partition, p.Err, p.Leader)
		}
	}

	configs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		abort("DescribeTopicConfigs: %v", err)
	}
	rc, err := configs.On(topic, nil)
	if err != nil || rc.Err != nil {
		abort("DescribeTopicConfigs %s: %v %v", topic, err, rc.Err)
	}
	got := map[string]kadm.Config{}
	for _, c := range rc.Configs {
		got[c.Key] = c
	}
	defaults := map[string]string{"cleanup.policy": "delete", "retention.ms": "604800000", "segment.bytes": "1073741824"}
	for _, name := range []string{"cleanup.policy", "compression.type", "max.message.bytes",
		"min.insync.replicas", "retention.bytes", "retention.ms", "segment.bytes"} {
		c, ok := got[name]
		if !ok {
			bad("DescribeTopicConfigs: %s not listed", name)
			continue
		}
		if c.Source == kmsg.ConfigSourceDynamicTopicConfig {
			bad("DescribeTopicConfigs: %s has source DYNAMIC_TOPIC_CONFIG on a topic created without configs", name)
		}
		if want, ok := defaults[name]; ok && (c.Value == nil || *c.Value != want || c.Source != kmsg.ConfigSourceDefaultConfig) {
			bad("DescribeTopicConfigs: %s=%v (%v), expected %s (DEFAULT_CONFIG)", name, c.MaybeValue(), c.Source, want)
		}
	}
}

// ---- 2. idempotent producer ------------------------------------------------------------

func produce(topic string) map[int]where {
	// Idempotence is franz-go's default; acks=all with it.
	cl := newClient(kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(5*time.Millisecond))
	defer cl.Close()
	ctx, cancel := ctxFor(60 * time.Second)
	defer cancel()
	records := make([]*kgo.Record, n)
	for i := range records {
		records[i] = &kgo.Record{Key: []byte(keyOf(i)), Value: []byte(valueOf(i)), Context: context.WithValue(ctx, idKey{}, i)}
	}
	results := cl.ProduceSync(ctx, records...)
	if err := results.FirstErr(); err != nil {
		failed := 0
		for _, r := range results {
			if r.Err != nil {
				failed++
			}
		}
		abort("ProduceSync: %d of %d records failed, first: %v", failed, n, err)
	}
	delivered := map[int]where{}
	byPartition := map[int32][]int64{}
	for _, r := range results {
		i := r.Record.Context.Value(idKey{}).(int)
		delivered[i] = where{r.Record.Partition, r.Record.Offset}
		byPartition[r.Record.Partition] = append(byPartition[r.Record.Partition], r.Record.Offset)
	}
	if len(delivered) != n {
		bad("ProduceSync: %d distinct results for %d records", len(delivered), n)
	}
	for p, offs := range byPartition {
		sort.Slice(offs, func(a, b int) bool { return offs[a] < offs[b] })
		for j, o := range offs {
			if o != int64(j) {
				bad("produce: partition %d acked offsets are not 0..%d (position %d is %d)", p, len(offs)-1, j, o)
				break
			}
		}
	}
	if len(byPartition) != partitions {
		bad("produce: data went to %d partitions, expected all %d", len(byPartition), partitions)
	}
	return delivered
}

type idKey struct{}

func endOffsets(adm *kadm.Client, topic string, committed bool) map[int32]int64 {
	ctx, cancel := ctxFor(20 * time.Second)
	defer cancel()
	list := adm.ListEndOffsets
	if committed {
		list = adm.ListCommittedOffsets
	}
	listed, err := list(ctx, topic)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		abort("ListOffsets %s: %v", topic, err)
	}
	ends := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	return ends
}

// ---- 3./4. consumer groups -------------------------------------------------------------

func groupPhase(adm *kadm.Client, topic string, kip848 bool, delivered map[int]where, ends map[int32]int64) string {
	t0 := time.Now()
	name := "classic"
	opts := []kgo.Opt{kgo.ConsumerGroup(topic + "-classic")}
	if kip848 {
		// KIP-848 needs a balancer the broker can run (range or uniform).
		name = "consumer"
		opts = []kgo.Opt{kgo.ConsumerGroup(topic + "-consumer"), kgo.ServerSideBalancer(), kgo.Balancers(kgo.RangeBalancer())}
	}
	group := topic + "-" + name
	label := fmt.Sprintf("group %s (%s protocol)", group, name)
	opts = append(opts, kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	cl := newClient(opts...)
	ctx, cancel := ctxFor(40 * time.Second)
	defer cancel()
	seen := map[int]where{}
	last := map[int32]int64{}
	commits := 0
	for len(seen) < n && ctx.Err() == nil {
		fetches := cl.PollRecords(ctx, 100)
		if ctx.Err() != nil {
			break
		}
		fetches.EachError(func(t string, p int32, err error) { bad("%s: fetch %s/%d: %v", label, t, p, err) })
		fetches.EachRecord(func(r *kgo.Record) { check(label, r, delivered, seen, last) })
		if fetches.NumRecords() > 0 {
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				bad("%s: commit: %v", label, err)
			}
			commits++
		}
	}
	if len(seen) < n {
		bad("%s: read %d of %d records before the deadline", label, len(seen), n)
	}
	// Close leaves the group (LeaveGroup, or a heartbeat with epoch -1 for KIP-848).
	cl.Close()

	actx, acancel := ctxFor(20 * time.Second)
	defer acancel()
	offsets, err := adm.FetchOffsets(actx, group)
	if err == nil {
		err = offsets.Error()
	}
	if err != nil {
		bad("%s: FetchOffsets: %v", label, err)
	} else {
		for p := int32(0); p < partitions; p++ {
			o, ok := offsets.Lookup(topic, p)
			if !ok || o.At != ends[p] {
				bad("%s: committed offset of p%d is %v (found %v), expected %d", label, p, o.At, ok, ends[p])
			}
		}
	}
	if kip848 {
		described, err := adm.DescribeConsumerGroups(actx, group)
		g := described[group]
		if err != nil || g.Err != nil || g.State != "Empty" || len(g.Members) != 0 {
			bad("%s: DescribeConsumerGroups: error %v/%v, state %q, %d members; expected Empty with none",
				label, err, g.Err, g.State, len(g.Members))
		}
	} else {
		described, err := adm.DescribeGroups(actx, group)
		g := described[group]
		if err != nil || g.Err != nil || g.State != "Empty" || len(g.Members) != 0 || g.ProtocolType != "consumer" {
			bad("%s: DescribeGroups: error %v/%v, state %q, protocol type %q, %d members; expected Empty, consumer, none",
				label, err, g.Err, g.State, g.ProtocolType, len(g.Members))
		}
	}
	// ListGroups (v5 has the group type): listed, Empty, of the protocol's type.
	listed, err := adm.ListGroups(actx)
	if lg, ok := listed[group]; err != nil || !ok || lg.State != "Empty" || lg.GroupType != name {
		bad("%s: ListGroups: error %v, listed %v, state %q, type %q; expected Empty, type %q",
			label, err, ok, lg.State, lg.GroupType, name)
	}
	return fmt.Sprintf("%s group %.1fs (%d commits)", name, time.Since(t0).Seconds(), commits)
}

func check(label string, r *kgo.Record, delivered, seen map[int]where, last map[int32]int64) {
	at := where{r.Partition, r.Offset}
	v := string(r.Value)
	i, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(v, "value-"), "|", 2)[0])
	if err != nil || !strings.HasPrefix(v, "value-") || i < 0 {
		bad("%s: %v: unparseable value %.40q", label, at, v)
		return
	}
	if first, dup := seen[i]; dup {
		bad("%s: %v: message %d seen twice (first at %v)", label, at, i, first)
		return
	}
	seen[i] = at
	if v != valueOf(i) || string(r.Key) != keyOf(i) {
		bad("%s: %v: message %d has key %q and a %d-byte value, expected %q and %d bytes",
			label, at, i, r.Key, len(v), keyOf(i), len(valueOf(i)))
	}
	if d, ok := delivered[i]; !ok || d != at {
		bad("%s: message %d read at %v, but the producer was told %v", label, i, at, d)
	}
	if prev, ok := last[r.Partition]; ok && r.Offset <= prev {
		bad("%s: p%d: offset %d after %d", label, r.Partition, r.Offset, prev)
	}
	last[r.Partition] = r.Offset
}

// ---- 5. transactions ---------------------------------------------------------------------

// readTxnTopic reads partition 0 of the transactions topic from the start with
// the given isolation level until it has `want` records (then a little longer,
// to catch extra ones).
func readTxnTopic(topic string, level kgo.IsolationLevel, want int) []string {
	cl := newClient(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(level))
	defer cl.Close()
	ctx, cancel := ctxFor(20 * time.Second)
	defer cancel()
	var values []string
	var quiet time.Time
	for ctx.Err() == nil {
		pctx, pcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		fetches := cl.PollFetches(pctx)
		pcancel()
		fetches.EachError(func(t string, p int32, err error) {
			if err != context.DeadlineExceeded && err != context.Canceled {
				bad("read %s: fetch %s/%d: %v", topic, t, p, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) { values = append(values, string(r.Value)) })
		if len(values) >= want {
			if quiet.IsZero() {
				quiet = time.Now()
			} else if time.Since(quiet) > 500*time.Millisecond {
				break
			}
		}
	}
	return values
}

func transactionsPhase(adm *kadm.Client, txnTopic string) string {
	t0 := time.Now()
	cl := newClient(kgo.TransactionalID(txnTopic+"-producer"), kgo.DefaultProduceTopic(txnTopic),
		kgo.RequiredAcks(kgo.AllISRAcks()))
	names := []string{"A", "B", "C"}
	for t, name := range names {
		ctx, cancel := ctxFor(30 * time.Second)
		if err := cl.BeginTransaction(); err != nil {
			abort("transaction %s: BeginTransaction: %v", name, err)
		}
		records := make([]*kgo.Record, txnPer)
		for i := range records {
			records[i] = &kgo.Record{Key: []byte(fmt.Sprintf("key-%d", i%7)), Value: []byte(fmt.Sprintf("%s-%d", name, i))}
		}
		if err := cl.ProduceSync(ctx, records...).FirstErr(); err != nil {
			abort("transaction %s: ProduceSync: %v", name, err)
		}
		end := kgo.TryCommit
		if t == 1 {
			end = kgo.TryAbort
		}
		if err := cl.EndTransaction(ctx, end); err != nil {
			abort("transaction %s: EndTransaction(%v): %v", name, end, err)
		}
		cancel()
	}
	cl.Close()

	var want []string
	for _, name := range []string{"A", "C"} {
		for i := 0; i < txnPer; i++ {
			want = append(want, fmt.Sprintf("%s-%d", name, i))
		}
	}
	committed := readTxnTopic(txnTopic, kgo.ReadCommitted(), len(want))
	if strings.Join(committed, ",") != strings.Join(want, ",") {
		bad("read_committed saw %d values %s, expected the %d of A and C in order", len(committed), abbrev(committed), len(want))
	}
	all := readTxnTopic(txnTopic, kgo.ReadUncommitted(), 3*txnPer)
	counts := map[string]int{}
	for _, v := range all {
		counts[v[:1]]++
	}
	if len(all) != 3*txnPer || counts["A"] != txnPer || counts["B"] != txnPer || counts["C"] != txnPer {
		bad("read_uncommitted saw %d values (%v by transaction), expected %d of each of A, B, C", len(all), counts, txnPer)
	}
	// Three transactions of txnPer records, each closed by a marker; none open.
	hw := endOffsets(adm, txnTopic, false)[0]
	lso := endOffsets(adm, txnTopic, true)[0]
	if hw != 3*txnPer+3 || lso != hw {
		bad("%s: high watermark %d and last stable offset %d, expected both %d", txnTopic, hw, lso, 3*txnPer+3)
	}
	return fmt.Sprintf("transactions %.1fs (A, C committed, B aborted, read_committed ok)", time.Since(t0).Seconds())
}

func abbrev(values []string) string {
	if len(values) <= 6 {
		return fmt.Sprint(values)
	}
	return fmt.Sprintf("[%s, ..., %s]", strings.Join(values[:3], ", "), strings.Join(values[len(values)-2:], ", "))
}

func main() {
	if len(os.Args) > 1 {
		bootstrap = os.Args[1]
	} else {
		bootstrap = os.Getenv("BOOTSTRAP")
	}
	if bootstrap == "" {
		fail("give the broker as argument or BOOTSTRAP=host:port")
	}
	time.AfterFunc(hardLimit, func() { fail("timeout: no result after %v", hardLimit) })
	topic := "compat-franz-go-" + randomHex(6)
	txnTopic := topic + "-txn"

	admClient := newClient()
	defer admClient.Close()
	adm := kadm.NewClient(admClient)
	quorumClient = admClient

	adminPhase(adm, topic, txnTopic)
	t0 := time.Now()
	delivered := produce(topic)
	notes := []string{fmt.Sprintf("produce %.1fs", time.Since(t0).Seconds())}
	ends := endOffsets(adm, topic, false)
	var sum int64
	for _, e := range ends {
		sum += e
	}
	if sum != n {
		bad("end offsets %v sum to %d, expected %d", ends, sum, n)
	}
	if !failing() {
		notes = append(notes, groupPhase(adm, topic, false, delivered, ends))
	}
	if !failing() {
		notes = append(notes, groupPhase(adm, topic, true, delivered, ends))
	}
	if !failing() {
		notes = append(notes, transactionsPhase(adm, txnTopic))
	}
	if !failing() {
		notes = append(notes, eosPhase(adm, topic))
	}
	if !failing() {
		notes = append(notes, eosRebalancePhase(adm, topic))
	}
	if !failing() {
		notes = append(notes, coopPhase(adm, topic, false))
	}
	if !failing() {
		notes = append(notes, coopPhase(adm, topic, true))
	}
	if !failing() {
		notes = append(notes, tourPhase(adm, topic))
	}
	for _, p := range late {
		bad("%s", p)
	}
	if failing() {
		fmt.Fprintf(os.Stderr, "  phases: %s\n", strings.Join(notes, ", "))
	}
	if failing() {
		problems[0] += " [topic " + topic + "]"
		report()
	}
	if os.Getenv("KEEP_TOPIC") == "" {
		ctx, cancel := ctxFor(10 * time.Second)
		defer cancel()
		// Every group and topic this run made starts with the topic's name.
		var doomed []string
		listed, err := adm.ListGroups(ctx)
		for _, g := range listed.Groups() {
			if strings.HasPrefix(g, topic) {
				doomed = append(doomed, g)
			}
		}
		if err == nil && len(doomed) > 0 {
			var groups kadm.DeleteGroupResponses
			groups, err = adm.DeleteGroups(ctx, doomed...)
			if err == nil {
				err = groups.Error()
			}
		}
		var topics kadm.TopicDetails
		if err == nil {
			topics, err = adm.ListTopics(ctx)
		}
		doomed = nil
		for _, t := range topics.Names() {
			if strings.HasPrefix(t, topic) {
				doomed = append(doomed, t)
			}
		}
		if err == nil {
			var deleted kadm.DeleteTopicResponses
			deleted, err = adm.DeleteTopics(ctx, doomed...)
			if err == nil {
				err = deleted.Error()
			}
		}
		if err != nil {
			notes = append(notes, fmt.Sprintf("warning: cleanup failed: %v", err))
		}
	}
	fmt.Printf("%s: OK %d messages via %s; %s\n", client, n, topic, strings.Join(notes, ", "))
}
