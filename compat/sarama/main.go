// Sarama compatibility check for Odradek.
//
// Sarama is Debian's golang-github-shopify-sarama-dev (1.22.1), built in GOPATH
// mode against /usr/share/gocode: the Go module proxy is not reachable from
// here, Debian's packages are. Configured as a Kafka 2.1 client
// (config.Version = V2_1_0_0, the oldest protocol Kafka 4 still serves), it
// speaks the lowest versions Odradek advertises: Produce v3, Fetch v4,
// ListOffsets v1, Metadata v5, CreateTopics v2, DeleteTopics v1, JoinGroup v1,
// SyncGroup v0, OffsetCommit v2, OffsetFetch v1.
//
// Creates a 3-partition topic with the ClusterAdmin, produces 10,000 keyed
// messages with a SyncProducer (acks=all), reads every partition back from the
// oldest offset with a plain Consumer and checks every message against what
// the producer was told. Then a consumer group of two members reads the topic
// again; each message must be seen exactly once, both members must get
// partitions, and the committed offsets (OffsetFetch) must be the end offsets.
//
//	compat/setup && BOOTSTRAP=127.0.0.1:19092 target/compat-sarama
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

const (
	client     = "sarama"
	n          = 10000
	partitions = 3
	sendBatch  = 1000
	hardLimit  = 110 * time.Second
)

var start = time.Now()

func keyOf(i int) string { return fmt.Sprintf("key-%d", i%97) }

// "value-<i>|" plus a deterministic payload of 16..408 bytes, as the other scripts.
func valueOf(i int) string {
	return fmt.Sprintf("value-%d|", i) + strings.Repeat(fmt.Sprintf("%08x", i), 2+i%50)
}

type where struct {
	partition int32
	offset    int64
}

type record struct {
	where
	key, value string
}

func fail(format string, args ...interface{}) {
	fmt.Printf("%s: FAIL "+format+"\n", append([]interface{}{client}, args...)...)
	os.Exit(1)
}

func config() *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = "odradek-compat-sarama"
	c.Version = sarama.V2_1_0_0
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Producer.Retry.Max = 0
	c.Consumer.Return.Errors = true
	// A retention makes Sarama commit with OffsetCommit v2 (v0 and v1 are gone
	// since Kafka 4, KIP-896).
	c.Consumer.Offsets.Retention = 24 * time.Hour
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Metadata.Retry.Backoff = 100 * time.Millisecond
	return c
}

// verify checks a consumed copy of the data set against what the producer was
// told; it returns at most 20 problems.
func verify(records []record, ends map[int32]int64, delivered map[int]where) []string {
	var problems []string
	bad := func(format string, args ...interface{}) {
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	if len(records) != n {
		bad("consumed %d records, expected %d", len(records), n)
	}
	var endSum int64
	for _, e := range ends {
		endSum += e
	}
	if endSum != n {
		bad("end offsets %v sum to %d, expected %d", ends, endSum, n)
	}
	seen := map[int]bool{}
	last := map[int32]int64{}
	for _, r := range records {
		prefix := strings.SplitN(strings.TrimPrefix(r.value, "value-"), "|", 2)[0]
		i, err := strconv.Atoi(prefix)
		if err != nil || !strings.HasPrefix(r.value, "value-") || i < 0 || i >= n {
			bad("p%d@%d: unparseable value %.40q", r.partition, r.offset, r.value)
			continue
		}
		if seen[i] {
			bad("p%d@%d: message %d seen twice", r.partition, r.offset, i)
			continue
		}
		seen[i] = true
		if r.value != valueOf(i) || r.key != keyOf(i) {
			bad("p%d@%d: message %d has key %q and a %d-byte value, expected %q and %d bytes",
				r.partition, r.offset, i, r.key, len(r.value), keyOf(i), len(valueOf(i)))
		}
		if d, ok := delivered[i]; !ok || d != r.where {
			bad("message %d read at p%d@%d, but the producer was told p%d@%d", i, r.partition, r.offset, d.partition, d.offset)
		}
		if prev, ok := last[r.partition]; ok && r.offset <= prev {
			bad("p%d: offset %d after %d", r.partition, r.offset, prev)
		}
		last[r.partition] = r.offset
	}
	return problems
}

func produce(addrs []string, topic string) map[int]where {
	producer, err := sarama.NewSyncProducer(addrs, config())
	if err != nil {
		fail("producer: %v", err)
	}
	defer producer.Close()
	delivered := map[int]where{}
	for first := 0; first < n; first += sendBatch {
		batch := make([]*sarama.ProducerMessage, 0, sendBatch)
		for i := first; i < first+sendBatch && i < n; i++ {
			batch = append(batch, &sarama.ProducerMessage{
				Topic:    topic,
				Key:      sarama.StringEncoder(keyOf(i)),
				Value:    sarama.StringEncoder(valueOf(i)),
				Metadata: i,
			})
		}
		if err := producer.SendMessages(batch); err != nil {
			fail("produce: %v", err)
		}
		for _, m := range batch {
			delivered[m.Metadata.(int)] = where{m.Partition, m.Offset}
		}
	}
	return delivered
}

func endOffsets(c sarama.Client, topic string) map[int32]int64 {
	ends := map[int32]int64{}
	for p := int32(0); p < partitions; p++ {
		end, err := c.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			fail("ListOffsets p%d: %v", p, err)
		}
		ends[p] = end
	}
	return ends
}

func readBack(c sarama.Client, topic string, ends map[int32]int64) []record {
	consumer, err := sarama.NewConsumerFromClient(c)
	if err != nil {
		fail("consumer: %v", err)
	}
	defer consumer.Close()
	var records []record
	for p := int32(0); p < partitions; p++ {
		if ends[p] == 0 {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			fail("ConsumePartition p%d: %v", p, err)
		}
		deadline := time.After(hardLimit - 5*time.Second - time.Since(start))
	read:
		for {
			select {
			case m := <-pc.Messages():
				records = append(records, record{where{m.Partition, m.Offset}, string(m.Key), string(m.Value)})
				if m.Offset+1 >= ends[p] {
					break read
				}
			case e := <-pc.Errors():
				fail("consuming p%d: %v", p, e.Err)
			case <-deadline:
				fail("consuming p%d timed out with %d records read", p, len(records))
			}
		}
		pc.Close()
	}
	return records
}

// groupRun is what the group members share while they read the topic.
type groupRun struct {
	mu       sync.Mutex
	records  []record
	assigned [2]map[int32]bool
	finished context.CancelFunc
}

// member is one consumer group member. While it is alone in the group it reads
// nothing: the other member's join is a rebalance, and records read before it
// and not yet committed would be read again by their new owner. Once the two
// share the partitions, each marks what it reads, for the offset commits.
type member struct {
	id  int
	run *groupRun
}

func (m member) Setup(s sarama.ConsumerGroupSession) error {
	m.run.mu.Lock()
	defer m.run.mu.Unlock()
	for _, p := range s.Claims()[topicOf(s)] {
		m.run.assigned[m.id][p] = true
	}
	return nil
}

func (m member) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (m member) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	if len(s.Claims()[claim.Topic()]) == partitions {
		<-s.Context().Done()
		return nil
	}
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			s.MarkMessage(msg, "")
			m.run.mu.Lock()
			m.run.records = append(m.run.records,
				record{where{msg.Partition, msg.Offset}, string(msg.Key), string(msg.Value)})
			if len(m.run.records) >= n {
				m.run.finished()
			}
			m.run.mu.Unlock()
		case <-s.Context().Done():
			return nil
		}
	}
}

func topicOf(s sarama.ConsumerGroupSession) string {
	for t := range s.Claims() {
		return t
	}
	return ""
}

func consumeWithGroup(addrs []string, admin sarama.ClusterAdmin, topic string, ends map[int32]int64) ([]record, string, []string) {
	group := "compat-sarama-" + randomHex(6)
	ctx, finished := context.WithTimeout(context.Background(), hardLimit-10*time.Second-time.Since(start))
	defer finished()
	run := &groupRun{finished: finished}
	var wg sync.WaitGroup
	var problems []string
	for id := 0; id < 2; id++ {
		run.assigned[id] = map[int32]bool{}
		cg, err := sarama.NewConsumerGroup(addrs, group, config())
		if err != nil {
			fail("consumer group member %d: %v", id, err)
		}
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			go func() {
				for e := range cg.Errors() {
					fmt.Fprintf(os.Stderr, "member %d: %v\n", id, e)
				}
			}()
			for ctx.Err() == nil {
				if err := cg.Consume(ctx, []string{topic}, member{id, run}); err != nil && ctx.Err() == nil {
					fmt.Fprintf(os.Stderr, "member %d: consume: %v\n", id, err)
					time.Sleep(100 * time.Millisecond)
				}
			}
			// Leaving the group commits what was marked.
			if err := cg.Close(); err != nil {
				fmt.Fprintf(os.Stderr, "member %d: close: %v\n", id, err)
			}
		}(id)
		// The second member joins once the first owns the partitions.
		for id == 0 && ctx.Err() == nil && !run.owns(0, partitions) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	wg.Wait()
	for id := 0; id < 2; id++ {
		if len(run.assigned[id]) == 0 {
			problems = append(problems, fmt.Sprintf("group %s: member %d was never assigned a partition", group, id))
		}
	}
	// OffsetFetch: the group's committed offsets are the end offsets.
	wanted := map[string][]int32{topic: {0, 1, 2}}
	committed, err := admin.ListConsumerGroupOffsets(group, wanted)
	if err != nil {
		problems = append(problems, fmt.Sprintf("group %s: OffsetFetch: %v", group, err))
	} else {
		for p := int32(0); p < partitions; p++ {
			block := committed.GetBlock(topic, p)
			if block == nil || block.Err != sarama.ErrNoError || block.Offset != ends[p] {
				problems = append(problems, fmt.Sprintf("group %s: committed offset of p%d is %+v, expected %d", group, p, block, ends[p]))
			}
		}
	}
	return run.records, group, problems
}

func (r *groupRun) owns(id, count int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.assigned[id]) == count
}

func randomHex(bytes int) string {
	b := make([]byte, bytes)
	if _, err := rand.Read(b); err != nil {
		fail("random: %v", err)
	}
	return hex.EncodeToString(b)
}

func main() {
	bootstrap := os.Getenv("BOOTSTRAP")
	if bootstrap == "" {
		fail("set BOOTSTRAP=host:port")
	}
	time.AfterFunc(hardLimit, func() { fail("timeout: no result after %v", hardLimit) })
	addrs := []string{bootstrap}
	topic := "compat-sarama-" + randomHex(6)

	admin, err := sarama.NewClusterAdmin(addrs, config())
	if err != nil {
		fail("admin: %v", err)
	}
	defer admin.Close()
	detail := &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}
	if err := admin.CreateTopic(topic, detail, false); err != nil {
		fail("CreateTopics: %v", err)
	}

	t0 := time.Now()
	delivered := produce(addrs, topic)
	produced := time.Since(t0)

	c, err := sarama.NewClient(addrs, config())
	if err != nil {
		fail("client: %v", err)
	}
	defer c.Close()
	ends := endOffsets(c, topic)
	t1 := time.Now()
	problems := verify(readBack(c, topic, ends), ends, delivered)
	consumed := time.Since(t1)

	groupNote := ""
	if len(problems) == 0 {
		t2 := time.Now()
		records, group, groupProblems := consumeWithGroup(addrs, admin, topic, ends)
		for _, p := range verify(records, ends, delivered) {
			groupProblems = append(groupProblems, "group "+group+": "+p)
		}
		problems = groupProblems
		groupNote = fmt.Sprintf("; group of 2: %.1fs, committed offsets at the ends", time.Since(t2).Seconds())
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "  "+p)
		}
		fail("%d problem(s), first: %s [topic %s]", len(problems), problems[0], topic)
	}
	note := ""
	if os.Getenv("KEEP_TOPIC") == "" {
		if err := admin.DeleteTopic(topic); err != nil {
			note = fmt.Sprintf(" (warning: DeleteTopics failed: %v)", err)
		}
	}
	fmt.Printf("%s: OK %d messages via %s (p0=%d,p1=%d,p2=%d); produce %.1fs, consume %.1fs%s%s\n",
		client, n, topic, ends[0], ends[1], ends[2], produced.Seconds(), consumed.Seconds(), groupNote, note)
}
