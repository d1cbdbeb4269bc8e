package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// badLater records a problem that fails the run but does not stop the
// phases after it (from the main goroutine only).
func badLater(format string, args ...interface{}) {
	late = append(late, fmt.Sprintf(format, args...))
}

// failing reports whether any problem has been recorded.
func failing() bool {
	problemsMu.Lock()
	defer problemsMu.Unlock()
	return len(problems) > 0
}

func isCtxErr(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

func createTopic(adm *kadm.Client, topic string, parts int32) {
	ctx, cancel := ctxFor(20 * time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, parts, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		abort("CreateTopic %s: %v", topic, err)
	}
}

// produceSpread sends records first..first+count-1 of the data set (key
// keyOf(i), value valueOf(i)) to partition i % parts, idempotent with
// acks=all, and returns where each landed. opts are added to the producer's.
func produceSpread(topic string, parts int32, first, count int, opts ...kgo.Opt) map[int]where {
	cl := newClient(append([]kgo.Opt{kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(5 * time.Millisecond)}, opts...)...)
	defer cl.Close()
	ctx, cancel := ctxFor(30 * time.Second)
	defer cancel()
	records := make([]*kgo.Record, count)
	for j := range records {
		i := first + j
		records[j] = &kgo.Record{Key: []byte(keyOf(i)), Value: []byte(valueOf(i)), Partition: int32(i) % parts,
			Context: context.WithValue(ctx, idKey{}, i)}
	}
	results := cl.ProduceSync(ctx, records...)
	if err := results.FirstErr(); err != nil {
		abort("ProduceSync to %s: %v", topic, err)
	}
	delivered := make(map[int]where, count)
	for _, r := range results {
		delivered[r.Record.Context.Value(idKey{}).(int)] = where{r.Record.Partition, r.Record.Offset}
	}
	return delivered
}

// readTopic reads every partition of topic from the start, without a group,
// at the given isolation level, until it has at least want records and
// nothing more has come for half a second (or the time is up).
func readTopic(topic string, level kgo.IsolationLevel, want int) []*kgo.Record {
	cl := newClient(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(level))
	defer cl.Close()
	ctx, cancel := ctxFor(20 * time.Second)
	defer cancel()
	var records []*kgo.Record
	var quiet time.Time
	for ctx.Err() == nil {
		pctx, pcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		fetches := cl.PollFetches(pctx)
		pcancel()
		fetches.EachError(func(t string, p int32, err error) {
			if !isCtxErr(err) {
				bad("read %s: fetch %s/%d: %v", topic, t, p, err)
			}
		})
		got := 0
		fetches.EachRecord(func(r *kgo.Record) { records = append(records, r); got++ })
		if got > 0 {
			quiet = time.Time{}
		}
		if len(records) >= want {
			if quiet.IsZero() {
				quiet = time.Now()
			} else if time.Since(quiet) > 500*time.Millisecond {
				break
			}
		}
	}
	return records
}

// committedOffsets is what kadm FetchOffsets reports for group on topic.
func committedOffsets(adm *kadm.Client, group, topic string) (map[int32]int64, error) {
	ctx, cancel := ctxFor(20 * time.Second)
	defer cancel()
	offsets, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = offsets.Error()
	}
	if err != nil {
		return nil, err
	}
	got := map[int32]int64{}
	offsets.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic {
			got[o.Partition] = o.At
		}
	})
	return got, nil
}

// eventually retries check (which returns a problem, or "" when satisfied)
// every 100 ms for up to limit, and returns its last answer. For state that
// Kafka updates asynchronously after a call returns (transaction markers
// are written after EndTxn answers), even where Odradek is synchronous.
func eventually(limit time.Duration, check func() string) string {
	ctx, cancel := ctxFor(limit)
	defer cancel()
	for {
		problem := check()
		if problem == "" || ctx.Err() != nil {
			return problem
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func offsetsMatch(adm *kadm.Client, group, topic string, want map[int32]int64) string {
	got, err := committedOffsets(adm, group, topic)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		return fmt.Sprintf("group %s has committed offsets %v (error %v) on %s, expected %v", group, got, err, topic, want)
	}
	return ""
}
