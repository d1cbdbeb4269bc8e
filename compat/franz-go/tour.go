package main

// Phase 10: the kadm admin tour on a fresh topic "<topic>-adm", each call
// checked for what it must answer (Kafka's answers, on a broker without an
// authorizer).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const tourPer = 10 // records per partition, one second apart

type tour struct {
	adm   *kadm.Client
	ctx   context.Context
	topic string
	calls int
}

func (t *tour) fail(format string, args ...interface{}) {
	bad("kadm tour: "+format, args...)
}

func (t *tour) listed(what string, list func(context.Context, ...string) (kadm.ListedOffsets, error)) map[int32]kadm.ListedOffset {
	t.calls++
	l, err := list(t.ctx, t.topic)
	if err == nil {
		err = l.Error()
	}
	if err != nil {
		t.fail("%s: %v", what, err)
		return nil
	}
	got := map[int32]kadm.ListedOffset{}
	l.Each(func(o kadm.ListedOffset) { got[o.Partition] = o })
	return got
}

func (t *tour) offsetsAre(what string, list func(context.Context, ...string) (kadm.ListedOffsets, error), want map[int32]int64) {
	got := t.listed(what, list)
	if got == nil {
		return
	}
	short := map[int32]int64{}
	for p, o := range got {
		short[p] = o.Offset
	}
	if fmt.Sprint(short) != fmt.Sprint(want) {
		t.fail("%s: %v, expected %v", what, short, want)
	}
}

// configs returns the topic's described configs by name.
func (t *tour) configs() map[string]kadm.Config {
	t.calls++
	rcs, err := t.adm.DescribeTopicConfigs(t.ctx, t.topic)
	if err != nil {
		t.fail("DescribeTopicConfigs: %v", err)
		return nil
	}
	rc, err := rcs.On(t.topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		t.fail("DescribeTopicConfigs: %v", err)
		return nil
	}
	got := map[string]kadm.Config{}
	for _, c := range rc.Configs {
		got[c.Key] = c
	}
	return got
}

func (t *tour) configIs(step string, got map[string]kadm.Config, name, value string, source kmsg.ConfigSource) {
	c, ok := got[name]
	if !ok || c.MaybeValue() != value || c.Source != source {
		t.fail("%s: DescribeTopicConfigs: %s=%q (%v, listed %v), expected %s (%v)", step, name, c.MaybeValue(), c.Source, ok, value, source)
	}
}

func (t *tour) alter(step string, want error, configs ...kadm.AlterConfig) {
	t.calls++
	resp, err := t.adm.AlterTopicConfigs(t.ctx, configs, t.topic)
	if err == nil {
		var r kadm.AlterConfigsResponse
		r, err = resp.On(t.topic, nil)
		if err == nil {
			err = r.Err
		}
	}
	if !errors.Is(err, want) && !(want == nil && err == nil) {
		t.fail("%s: AlterTopicConfigs: error %v, expected %v", step, err, want)
	}
}

func tourPhase(adm *kadm.Client, base string) string {
	t0 := time.Now()
	ctx, cancel := ctxFor(40 * time.Second)
	defer cancel()
	t := &tour{adm: adm, ctx: ctx, topic: base + "-adm"}

	// CreateTopic with 2 partitions, CreatePartitions to 3; shrinking is refused.
	createTopic(adm, t.topic, 2)
	t.calls++
	cp, err := adm.CreatePartitions(ctx, 1, t.topic)
	if err == nil {
		err = cp.Error()
	}
	if err != nil {
		abort("kadm tour: CreatePartitions(+1): %v", err)
	}
	t.calls++
	if cp, err := adm.UpdatePartitions(ctx, 2, t.topic); err != nil || !errors.Is(cp.Error(), kerr.InvalidPartitions) {
		t.fail("UpdatePartitions(3 -> 2): error %v / %v, expected INVALID_PARTITIONS", err, cp.Error())
	}
	t.calls++
	if td, err := adm.ListTopics(ctx, t.topic); err != nil || len(td[t.topic].Partitions) != 3 {
		t.fail("ListTopics after CreatePartitions: error %v, %d partitions, expected 3", err, len(td[t.topic].Partitions))
	}

	// Incremental config changes.
	v := func(s string) *string { return &s }
	t.alter("set", nil, kadm.AlterConfig{Op: kadm.SetConfig, Name: "retention.ms", Value: v("123456")},
		kadm.AlterConfig{Op: kadm.SetConfig, Name: "max.message.bytes", Value: v("500000")})
	if got := t.configs(); got != nil {
		t.configIs("after SET", got, "retention.ms", "123456", kmsg.ConfigSourceDynamicTopicConfig)
		t.configIs("after SET", got, "max.message.bytes", "500000", kmsg.ConfigSourceDynamicTopicConfig)
	}
	t.alter("delete", nil, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: "retention.ms"})
	t.alter("invalid", kerr.InvalidConfig, kadm.AlterConfig{Op: kadm.SetConfig, Name: "segment.bytes", Value: v("abc")})
	if got := t.configs(); got != nil {
		t.configIs("after DELETE", got, "retention.ms", "604800000", kmsg.ConfigSourceDefaultConfig)
		t.configIs("after DELETE", got, "max.message.bytes", "500000", kmsg.ConfigSourceDynamicTopicConfig)
		t.configIs("after an invalid SET", got, "segment.bytes", "1073741824", kmsg.ConfigSourceDefaultConfig)
	}

	// tourPer records per partition, the j-th stamped t1 + j seconds.
	t1 := time.Now().Add(-time.Hour).Truncate(time.Second)
	pcl := newClient(kgo.DefaultProduceTopic(t.topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var records []*kgo.Record
	for p := int32(0); p < 3; p++ {
		for j := 0; j < tourPer; j++ {
			records = append(records, &kgo.Record{Partition: p, Timestamp: t1.Add(time.Duration(j) * time.Second),
				Key: []byte(fmt.Sprint(j)), Value: []byte(fmt.Sprintf("p%d-%d", p, j))})
		}
	}
	err = pcl.ProduceSync(ctx, records...).FirstErr()
	pcl.Close()
	if err != nil {
		abort("kadm tour: ProduceSync: %v", err)
	}
	all := func(o int64) map[int32]int64 { return map[int32]int64{0: o, 1: o, 2: o} }
	t.offsetsAre("ListStartOffsets", adm.ListStartOffsets, all(0))
	t.offsetsAre("ListEndOffsets", adm.ListEndOffsets, all(tourPer))
	mid := t1.Add(4500 * time.Millisecond).UnixMilli()
	if got := t.listed("ListOffsetsAfterMilli", func(ctx context.Context, ts ...string) (kadm.ListedOffsets, error) {
		return adm.ListOffsetsAfterMilli(ctx, mid, ts...)
	}); got != nil {
		for p := int32(0); p < 3; p++ {
			if o := got[p]; o.Offset != 5 || o.Timestamp != t1.Add(5*time.Second).UnixMilli() {
				t.fail("ListOffsetsAfterMilli(t+4.5s) p%d: offset %d at %d, expected 5 at %d", p, o.Offset, o.Timestamp, t1.Add(5*time.Second).UnixMilli())
			}
		}
	}
	later := time.Now().Add(time.Hour).UnixMilli()
	t.offsetsAre("ListOffsetsAfterMilli(later than every record)", func(ctx context.Context, ts ...string) (kadm.ListedOffsets, error) {
		return adm.ListOffsetsAfterMilli(ctx, later, ts...)
	}, all(tourPer))

	// DeleteRecords below offset 4 of partition 0; past the end is refused.
	var del kadm.Offsets
	del.Add(kadm.Offset{Topic: t.topic, Partition: 0, At: 4})
	t.calls++
	if dr, err := adm.DeleteRecords(ctx, del); err != nil {
		t.fail("DeleteRecords: %v", err)
	} else if r, ok := dr.Lookup(t.topic, 0); !ok || r.Err != nil || r.LowWatermark != 4 {
		t.fail("DeleteRecords p0 before 4: error %v, low watermark %d (found %v), expected 4", r.Err, r.LowWatermark, ok)
	}
	t.offsetsAre("ListStartOffsets after DeleteRecords", adm.ListStartOffsets, map[int32]int64{0: 4, 1: 0, 2: 0})
	var beyond kadm.Offsets
	beyond.Add(kadm.Offset{Topic: t.topic, Partition: 1, At: tourPer + 5})
	t.calls++
	if dr, err := adm.DeleteRecords(ctx, beyond); err != nil {
		t.fail("DeleteRecords past the end: %v", err)
	} else if r, _ := dr.Lookup(t.topic, 1); !errors.Is(r.Err, kerr.OffsetOutOfRange) {
		t.fail("DeleteRecords p1 before %d (past the end %d): error %v, expected OFFSET_OUT_OF_RANGE", tourPer+5, tourPer, r.Err)
	}

	t.groups()
	t.logDirsAndBroker()
	t.transactions()
	t.quorumAndVersions()
	t.acls()
	return fmt.Sprintf("kadm tour %.1fs (%d calls)", time.Since(t0).Seconds(), t.calls)
}

// groups: offsets committed by the admin client to a group without members.
func (t *tour) groups() {
	adm, ctx, group := t.adm, t.ctx, t.topic+"-group"
	var os kadm.Offsets
	for p, at := range map[int32]int64{0: 5, 1: 7, 2: 10} {
		os.Add(kadm.Offset{Topic: t.topic, Partition: p, At: at, LeaderEpoch: -1, Metadata: fmt.Sprintf("meta-%d", p)})
	}
	t.calls++
	if resp, err := adm.CommitOffsets(ctx, group, os); err != nil || resp.Error() != nil {
		t.fail("CommitOffsets: %v %v", err, resp.Error())
		return
	}
	fetch := func(step string, want map[int32]int64) {
		t.calls++
		got, err := adm.FetchOffsets(ctx, group)
		if err == nil {
			err = got.Error()
		}
		if err != nil {
			t.fail("%s: FetchOffsets: %v", step, err)
			return
		}
		short := map[int32]int64{}
		got.Each(func(o kadm.OffsetResponse) {
			short[o.Partition] = o.At
			if o.Topic != t.topic || o.Metadata != fmt.Sprintf("meta-%d", o.Partition) {
				t.fail("%s: FetchOffsets: %s/%d has metadata %q", step, o.Topic, o.Partition, o.Metadata)
			}
		})
		if fmt.Sprint(short) != fmt.Sprint(want) {
			t.fail("%s: FetchOffsets: %v, expected %v", step, short, want)
		}
	}
	fetch("after CommitOffsets", map[int32]int64{0: 5, 1: 7, 2: 10})
	t.calls++
	if lag, err := adm.Lag(ctx, group); err != nil || lag.Error() != nil {
		t.fail("Lag: %v %v", err, lag.Error())
	} else if l := lag[group].Lag[t.topic]; l[0].Lag != tourPer-5 || l[1].Lag != tourPer-7 || l[2].Lag != 0 {
		t.fail("Lag: p0 %d, p1 %d, p2 %d; expected %d, %d, 0", l[0].Lag, l[1].Lag, l[2].Lag, tourPer-5, tourPer-7)
	}
	t.calls++
	if d, err := adm.DescribeGroups(ctx, group); err != nil || d[group].Err != nil || d[group].State != "Empty" || len(d[group].Members) != 0 {
		t.fail("DescribeGroups of a group with offsets only: error %v/%v, state %q, %d members; expected Empty",
			err, d[group].Err, d[group].State, len(d[group].Members))
	}
	t.calls++
	if l, err := adm.ListGroups(ctx); err != nil || l[group].State != "Empty" || l[group].GroupType != "classic" {
		t.fail("ListGroups: error %v, %s is %+v; expected listed, Empty, classic", err, group, l[group])
	}
	t.calls++
	ts := kadm.TopicsSet{}
	ts.Add(t.topic, 1)
	if resp, err := adm.DeleteOffsets(ctx, group, ts); err != nil || resp.Error() != nil {
		t.fail("DeleteOffsets p1: %v %v", err, resp.Error())
	}
	fetch("after DeleteOffsets p1", map[int32]int64{0: 5, 2: 10})
	t.calls++
	if resp, err := adm.DeleteGroups(ctx, group); err != nil || resp.Error() != nil {
		t.fail("DeleteGroups: %v %v", err, resp.Error())
	}
	t.calls++
	if resp, err := adm.DeleteGroups(ctx, group); err != nil || !errors.Is(resp[group].Err, kerr.GroupIDNotFound) {
		t.fail("DeleteGroups again: %v %v, expected GROUP_ID_NOT_FOUND", err, resp[group].Err)
	}
	t.calls++
	if d, err := adm.DescribeGroups(ctx, group); err != nil || (d[group].State != "Dead" && !errors.Is(d[group].Err, kerr.GroupIDNotFound)) {
		t.fail("DescribeGroups of a deleted group: error %v/%v, state %q; expected Dead or GROUP_ID_NOT_FOUND", err, d[group].Err, d[group].State)
	}
	t.calls++
	if l, err := adm.ListGroups(ctx); err != nil || l.Groups() == nil {
		t.fail("ListGroups: %v", err)
	} else if _, still := l[group]; still {
		t.fail("ListGroups still lists deleted group %s", group)
	}
}

func (t *tour) logDirsAndBroker() {
	adm, ctx := t.adm, t.ctx
	ts := kadm.TopicsSet{}
	ts.Add(t.topic, 0, 1, 2)
	t.calls++
	dirs, err := adm.DescribeAllLogDirs(ctx, ts)
	if err != nil {
		t.fail("DescribeAllLogDirs: %v", err)
	} else {
		found := map[int32]int{}
		for _, d := range dirs.Sorted() {
			if d.Err != nil {
				t.fail("DescribeAllLogDirs: broker %d dir %s: %v", d.Broker, d.Dir, d.Err)
			}
			if d.TotalBytes <= 0 || d.UsableBytes < 0 || d.UsableBytes > d.TotalBytes {
				t.fail("DescribeAllLogDirs: broker %d dir %s: total %d, usable %d bytes", d.Broker, d.Dir, d.TotalBytes, d.UsableBytes)
			}
			for p, dp := range d.Topics[t.topic] {
				found[p]++
				// tourPer records of at least 3 value bytes each
				if dp.Size < int64(tourPer*3) {
					t.fail("DescribeAllLogDirs: %s/%d is %d bytes", t.topic, p, dp.Size)
				}
			}
		}
		if fmt.Sprint(found) != fmt.Sprint(map[int32]int{0: 1, 1: 1, 2: 1}) {
			t.fail("DescribeAllLogDirs: partitions listed %v times, expected each once", found)
		}
	}

	t.calls++
	md, err := adm.BrokerMetadata(ctx)
	if err != nil || len(md.Brokers) == 0 {
		t.fail("BrokerMetadata: %v", err)
		return
	}
	node := md.Brokers[0].NodeID
	t.calls++
	rcs, err := adm.DescribeBrokerConfigs(ctx, node)
	if err != nil {
		t.fail("DescribeBrokerConfigs(%d): %v", node, err)
		return
	}
	rc, err := rcs.On(fmt.Sprint(node), nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		t.fail("DescribeBrokerConfigs(%d): %v", node, err)
		return
	}
	got := map[string]kadm.Config{}
	for _, c := range rc.Configs {
		got[c.Key] = c
	}
	for name, want := range map[string]string{"log.retention.hours": "168", "num.partitions": "1", "log.segment.bytes": "1073741824"} {
		if c, ok := got[name]; !ok || c.MaybeValue() != want {
			t.fail("DescribeBrokerConfigs(%d): %s=%q (listed %v), expected %s; %d configs listed", node, name, c.MaybeValue(), ok, want, len(got))
		}
	}
}

// transactions: describe a transaction while it is open, and after its abort.
func (t *tour) transactions() {
	adm, ctx, txnID := t.adm, t.ctx, t.topic+"-txn"
	cl := newClient(kgo.TransactionalID(txnID), kgo.DefaultProduceTopic(t.topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.TransactionTimeout(20*time.Second))
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		t.fail("BeginTransaction: %v", err)
		return
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Partition: 2, Value: []byte("open")}).FirstErr(); err != nil {
		t.fail("transactional ProduceSync: %v", err)
		return
	}
	t.calls++
	d, err := adm.DescribeTransactions(ctx, txnID)
	dt := d[txnID]
	if err != nil || dt.Err != nil || dt.State != "Ongoing" || dt.ProducerID < 0 || dt.TimeoutMillis != 20000 ||
		fmt.Sprint(dt.Topics.Sorted()) != fmt.Sprint(kadm.TopicsList{{Topic: t.topic, Partitions: []int32{2}}}) {
		t.fail("DescribeTransactions while open: error %v/%v, state %q, producer %d, timeout %d ms, partitions %v; expected Ongoing, 20000, %s/2",
			err, dt.Err, dt.State, dt.ProducerID, dt.TimeoutMillis, dt.Topics.Sorted(), t.topic)
	}
	t.calls++
	lt, err := adm.ListTransactions(ctx, nil, []string{"Ongoing"})
	if l, ok := lt[txnID]; err != nil || !ok || l.State != "Ongoing" || l.ProducerID != dt.ProducerID {
		t.fail("ListTransactions(Ongoing): error %v, %s listed %v as %+v", err, txnID, ok, l)
	}
	ts := kadm.TopicsSet{}
	ts.Add(t.topic, 2)
	describeProducer := func() (kadm.DescribedProducer, bool) {
		t.calls++
		dp, err := adm.DescribeProducers(ctx, ts)
		if err != nil {
			t.fail("DescribeProducers: %v", err)
			return kadm.DescribedProducer{}, false
		}
		part := dp[t.topic].Partitions[2]
		if part.Err != nil {
			t.fail("DescribeProducers: %v", part.Err)
		}
		p, ok := part.ActiveProducers[dt.ProducerID]
		return p, ok
	}
	if p, ok := describeProducer(); !ok || p.CurrentTxnStartOffset != tourPer || p.LastSequence != 0 || p.ProducerEpoch != dt.ProducerEpoch {
		t.fail("DescribeProducers %s/2 while open: producer %d listed %v, %+v; expected its transaction from offset %d, sequence 0",
			t.topic, dt.ProducerID, ok, p, tourPer)
	}
	t.offsetsAre("ListCommittedOffsets (last stable) while open", t.adm.ListCommittedOffsets, map[int32]int64{0: tourPer, 1: tourPer, 2: tourPer})
	t.offsetsAre("ListEndOffsets while open", t.adm.ListEndOffsets, map[int32]int64{0: tourPer, 1: tourPer, 2: tourPer + 1})
	if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.fail("EndTransaction(TryAbort): %v", err)
		return
	}
	if p := eventually(10*time.Second, func() string {
		t.calls++
		d, err := adm.DescribeTransactions(ctx, txnID)
		if dt := d[txnID]; err != nil || dt.Err != nil || dt.State != "CompleteAbort" || len(dt.Topics) != 0 {
			return fmt.Sprintf("DescribeTransactions after the abort: error %v/%v, state %q, partitions %v; expected CompleteAbort, none", err, dt.Err, dt.State, dt.Topics)
		}
		return ""
	}); p != "" {
		t.fail("%s", p)
	}
	if p, ok := describeProducer(); ok && p.CurrentTxnStartOffset != -1 {
		t.fail("DescribeProducers after the abort: %+v, expected no open transaction", p)
	}
	if p := eventually(10*time.Second, func() string {
		got := t.listed("ListCommittedOffsets after the abort", t.adm.ListCommittedOffsets)
		if got[2].Offset != tourPer+2 {
			return fmt.Sprintf("ListCommittedOffsets (last stable) of p2 after the abort: %d, expected %d (the record and the marker)", got[2].Offset, tourPer+2)
		}
		return ""
	}); p != "" {
		t.fail("%s", p)
	}
	t.calls++
	if d, err := adm.DescribeTransactions(ctx, t.topic+"-no-such-txn"); err != nil || !errors.Is(d[t.topic+"-no-such-txn"].Err, kerr.TransactionalIDNotFound) {
		t.fail("DescribeTransactions of an unknown id: %v %v, expected TRANSACTIONAL_ID_NOT_FOUND", err, d[t.topic+"-no-such-txn"].Err)
	}
}

// quorumAndVersions: DescribeQuorum (kadm has no call for it: a raw kmsg
// request through the client) and ApiVersions with its features.
func (t *tour) quorumAndVersions() {
	adm, ctx := t.adm, t.ctx
	t.calls++
	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		t.fail("BrokerMetadata: %v", err)
		return
	}
	req := kmsg.NewPtrDescribeQuorumRequest()
	rt := kmsg.NewDescribeQuorumRequestTopic()
	rt.Topic = "__cluster_metadata"
	rp := kmsg.NewDescribeQuorumRequestTopicPartition()
	rp.Partition = 0
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	t.calls++
	resp, err := req.RequestWith(ctx, quorumClient)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil || len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		t.fail("DescribeQuorum: error %v, response %+v", err, resp)
	} else {
		qp := resp.Topics[0].Partitions[0]
		voters := map[int32]int64{}
		for _, v := range qp.CurrentVoters {
			voters[v.ReplicaID] = v.LogEndOffset
		}
		if e := kerr.ErrorForCode(qp.ErrorCode); e != nil || qp.LeaderEpoch < 1 || qp.HighWatermark <= 0 {
			t.fail("DescribeQuorum __cluster_metadata-0: error %v, leader %d, epoch %d, high watermark %d", e, qp.LeaderID, qp.LeaderEpoch, qp.HighWatermark)
		} else if leo, ok := voters[qp.LeaderID]; !ok || leo < qp.HighWatermark {
			t.fail("DescribeQuorum: leader %d not among the voters %v with its log end at least the high watermark %d", qp.LeaderID, voters, qp.HighWatermark)
		} else if qp.LeaderID != md.Controller {
			t.fail("DescribeQuorum: leader %d, but Metadata names controller %d", qp.LeaderID, md.Controller)
		}
	}

	t.calls++
	vs, err := adm.ApiVersions(ctx)
	if err != nil {
		t.fail("ApiVersions: %v", err)
		return
	}
	vs.Each(func(v kadm.BrokerApiVersions) {
		if v.Err != nil {
			t.fail("ApiVersions from %d: %v", v.NodeID, v.Err)
			return
		}
		for _, key := range []int16{0, 1, 3, 18, 55, 61, 65, 66, 68, 69} {
			if _, max, ok := v.KeyVersions(key); !ok || max < 0 {
				t.fail("ApiVersions from %d: key %d (%s) not advertised", v.NodeID, key, kmsg.NameForKey(key))
			}
		}
		raw := v.Raw()
		supported, finalized := map[string][2]int16{}, map[string]int16{}
		for _, f := range raw.SupportedFeatures {
			supported[f.Name] = [2]int16{f.MinVersion, f.MaxVersion}
		}
		for _, f := range raw.FinalizedFeatures {
			finalized[f.Name] = f.MaxVersionLevel
		}
		mv, ok := finalized["metadata.version"]
		if s := supported["metadata.version"]; !ok || mv < s[0] || mv > s[1] || raw.FinalizedFeaturesEpoch < 0 {
			t.fail("ApiVersions from %d (v%d): metadata.version finalized %d (%v) outside supported %v, epoch %d",
				v.NodeID, raw.Version, mv, ok, s, raw.FinalizedFeaturesEpoch)
		}
	})
}

// acls: no authorizer, so every ACL request is refused with SECURITY_DISABLED.
func (t *tour) acls() {
	adm, ctx := t.adm, t.ctx
	b := kadm.NewACLs().Topics(t.topic).Allow("User:alice").AllowHosts("*").
		Operations(kadm.OpRead, kadm.OpDescribe).ResourcePatternType(kadm.ACLPatternLiteral)
	t.calls++
	created, err := adm.CreateACLs(ctx, b)
	if err != nil || len(created) == 0 {
		t.fail("CreateACLs: error %v, %d results; expected a SECURITY_DISABLED result per ACL", err, len(created))
	}
	for _, c := range created {
		if !errors.Is(c.Err, kerr.SecurityDisabled) {
			t.fail("CreateACLs %s %v: error %v, expected SECURITY_DISABLED", c.Name, c.Operation, c.Err)
		}
	}
	filter := kadm.NewACLs().AnyResource().Allow().AllowHosts().Operations(kadm.OpAny).ResourcePatternType(kadm.ACLPatternAny)
	t.calls++
	described, err := adm.DescribeACLs(ctx, filter)
	if err == nil && len(described) > 0 {
		err = described[0].Err
	}
	if !errors.Is(err, kerr.SecurityDisabled) {
		t.fail("DescribeACLs: error %v (%d results), expected SECURITY_DISABLED", err, len(described))
	}
	t.calls++
	deleted, err := adm.DeleteACLs(ctx, filter)
	if err == nil && len(deleted) > 0 {
		err = deleted[0].Err
	}
	if !errors.Is(err, kerr.SecurityDisabled) {
		t.fail("DeleteACLs: error %v (%d results), expected SECURITY_DISABLED", err, len(deleted))
	}
}
