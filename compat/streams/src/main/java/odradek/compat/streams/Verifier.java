package odradek.compat.streams;

import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Reads both output topics with read_committed from the beginning and checks,
 * for every key, that the values go up strictly (a repeat or a drop is a
 * record processed twice, or state lost, across the kill -9s) and never pass
 * the expected count, until the last value of every key is the expected count
 * (or the deadline passes). Then: the application's committed offsets on the
 * input are its end offsets; the word-counts changelog, read_committed, ends
 * on the expected counts; the internal topics exist with Streams' configs.
 * Prints the figures on stdout (one line), problems on stderr.
 */
final class Verifier {
    private final String bootstrap, appId, input, counts, wcounts;
    private final int lines;
    private final long baseMs;
    private final long deadline;
    private final List<String> problems = new ArrayList<>();

    Verifier(String bootstrap, String appId, String input, String counts, String wcounts, int lines, long baseMs,
             long timeoutS) {
        this.bootstrap = bootstrap;
        this.appId = appId;
        this.input = input;
        this.counts = counts;
        this.wcounts = wcounts;
        this.lines = lines;
        this.baseMs = baseMs;
        this.deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutS);
    }

    private boolean beforeDeadline() {
        return System.nanoTime() < deadline;
    }

    private void problem(String s) {
        if (problems.size() < 30) System.err.println("verify: " + s);
        problems.add(s);
    }

    /** One output topic: its expected last values and what was read. */
    private static final class Output {
        final String topic;
        final Map<String, Long> expected;
        final Map<String, Long> last = new HashMap<>();
        long records;
        long duplicates, decreases, overshoots, unknown;

        Output(String topic, Map<String, Long> expected) {
            this.topic = topic;
            this.expected = expected;
        }

        long matching() {
            long n = 0;
            for (Map.Entry<String, Long> e : expected.entrySet()) {
                if (e.getValue().equals(last.get(e.getKey()))) n++;
            }
            return n;
        }

        boolean complete() {
            return matching() == expected.size();
        }
    }

    private static long decodeLong(byte[] v) {
        if (v == null || v.length != 8) return Long.MIN_VALUE;
        return ByteBuffer.wrap(v).getLong();
    }

    private void take(Output out, ConsumerRecord<byte[], byte[]> r) {
        out.records++;
        String key = r.key() == null ? "<null>" : new String(r.key(), java.nio.charset.StandardCharsets.UTF_8);
        long v = decodeLong(r.value());
        String at = out.topic + "-" + r.partition() + "@" + r.offset();
        Long exp = out.expected.get(key);
        if (v == Long.MIN_VALUE) {
            problem(at + ": key " + key + " has a value that is not a long: " + (r.value() == null ? "null" : r.value().length + " bytes"));
            out.unknown++;
            return;
        }
        if (exp == null) {
            problem(at + ": unexpected key " + key + " = " + v);
            out.unknown++;
            return;
        }
        Long prev = out.last.get(key);
        if (prev != null && v == prev) {
            out.duplicates++;
            problem(at + ": key " + key + " repeats the count " + v + " (a record counted twice or an output written twice)");
        } else if (prev != null && v < prev) {
            out.decreases++;
            problem(at + ": key " + key + " goes down from " + prev + " to " + v + " (state lost)");
        }
        if (v > exp) {
            out.overshoots++;
            problem(at + ": key " + key + " = " + v + " above the expected " + exp + " (input counted twice)");
        }
        out.last.put(key, v);
    }

    private KafkaConsumer<byte[], byte[]> consumer() {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, IsolationLevel.READ_COMMITTED.toString());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        return new KafkaConsumer<>(p);
    }

    private static List<TopicPartition> partitions(KafkaConsumer<?, ?> c, String... topics) {
        List<TopicPartition> tps = new ArrayList<>();
        for (String t : topics) {
            c.partitionsFor(t, Duration.ofSeconds(30)).forEach(pi -> tps.add(new TopicPartition(t, pi.partition())));
        }
        return tps;
    }

    /** Polls until the consumer's positions reach the given end offsets. */
    private boolean drainTo(KafkaConsumer<byte[], byte[]> c, Map<TopicPartition, Long> end,
                            java.util.function.Consumer<ConsumerRecord<byte[], byte[]>> sink) {
        while (beforeDeadline()) {
            boolean done = true;
            for (Map.Entry<TopicPartition, Long> e : end.entrySet()) {
                if (c.position(e.getKey(), Duration.ofSeconds(30)) < e.getValue()) done = false;
            }
            if (done) return true;
            c.poll(Duration.ofMillis(200)).forEach(sink);
        }
        return false;
    }

    int run() throws Exception {
        long t0 = System.nanoTime();
        Output cnt = new Output(counts, Input.expectedCounts(lines));
        Output win = new Output(wcounts, Input.expectedWindowCounts(lines, baseMs));
        Map<String, Output> byTopic = Map.of(counts, cnt, wcounts, win);
        StringBuilder figures = new StringBuilder();
        try (KafkaConsumer<byte[], byte[]> c = consumer(); Admin admin = Main.admin(bootstrap)) {
            List<TopicPartition> tps = partitions(c, counts, wcounts);
            c.assign(tps);
            c.seekToBeginning(tps);
            // 1. Until every key's last value is the expected count.
            // A repeat, a drop or an overshoot is final: no need to wait on.
            while (beforeDeadline() && problems.isEmpty() && !(cnt.complete() && win.complete())) {
                c.poll(Duration.ofMillis(200)).forEach(r -> take(byTopic.get(r.topic()), r));
            }
            if (!problems.isEmpty()) {
                System.out.println(problems.size() + " problem(s) in the first " + (cnt.records + win.records)
                    + " output records, first: " + problems.get(0));
                return 1;
            }
            if (!(cnt.complete() && win.complete())) {
                for (Output o : List.of(cnt, win)) {
                    int shown = 0;
                    for (Map.Entry<String, Long> e : new TreeMap<>(o.expected).entrySet()) {
                        Long got = o.last.get(e.getKey());
                        if (!e.getValue().equals(got) && shown++ < 5) {
                            System.err.printf("verify: %s: %s is %s, expected %d%n", o.topic, e.getKey(), got, e.getValue());
                        }
                    }
                }
                problem(String.format("deadline: %d/%d words and %d/%d windows at their expected counts",
                    cnt.matching(), cnt.expected.size(), win.matching(), win.expected.size()));
            }
            long tComplete = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);

            // 2. The application committed all of the input.
            Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
            for (TopicPartition tp : partitions(c, input)) latest.put(tp, OffsetSpec.latest());
            Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> inputEnd =
                admin.listOffsets(latest).all().get(30, TimeUnit.SECONDS);
            long inputTotal = inputEnd.values().stream().mapToLong(ListOffsetsResult.ListOffsetsResultInfo::offset).sum();
            if (inputTotal != lines) problem("the input topic holds " + inputTotal + " records, not " + lines);
            long committed = -1;
            while (beforeDeadline()) {
                committed = Main.committedSum(admin, appId, input);
                if (committed == inputTotal) break;
                Thread.sleep(200);
            }
            if (committed != inputTotal) problem("the application committed " + committed + " of " + inputTotal + " input offsets");

            // 3. Everything committed on the outputs so far (the last stable
            // offsets), checked the same way: nothing may follow the final counts.
            Map<TopicPartition, Long> outEnd = c.endOffsets(tps, Duration.ofSeconds(30));
            if (!drainTo(c, outEnd, r -> take(byTopic.get(r.topic()), r))) {
                problem("could not read the outputs to their last stable offsets " + outEnd);
            }
            for (Output o : List.of(cnt, win)) {
                if (!o.complete()) problem(o.topic + ": " + o.matching() + "/" + o.expected.size() + " keys at their expected counts after the final read");
            }

            // 4. The count store's changelog ends on the expected counts.
            String changelog = appId + "-" + App.COUNT_STORE + "-changelog";
            String wchangelog = appId + "-" + App.WINDOW_STORE + "-changelog";
            String repartition = appId + "-" + App.REPARTITION + "-repartition";
            Map<String, TopicDescription> internal =
                admin.describeTopics(List.of(changelog, wchangelog, repartition)).allTopicNames().get(30, TimeUnit.SECONDS);
            Map<String, Long> changelogLast = new HashMap<>();
            long changelogRecords, changelogOffsets;
            try (KafkaConsumer<byte[], byte[]> cc = consumer()) {
                List<TopicPartition> ctps = partitions(cc, changelog);
                cc.assign(ctps);
                cc.seekToBeginning(ctps);
                long[] n = {0};
                Map<TopicPartition, Long> end = cc.endOffsets(ctps, Duration.ofSeconds(30));
                if (!drainTo(cc, end, r -> {
                    n[0]++;
                    changelogLast.put(new String(r.key(), java.nio.charset.StandardCharsets.UTF_8), decodeLong(r.value()));
                })) problem("could not read " + changelog + " to its end " + end);
                changelogRecords = n[0];
                changelogOffsets = end.values().stream().mapToLong(Long::longValue).sum();
            }
            if (!changelogLast.equals(cnt.expected)) {
                long wrong = cnt.expected.entrySet().stream().filter(e -> !e.getValue().equals(changelogLast.get(e.getKey()))).count();
                problem(changelog + ": " + wrong + " of " + cnt.expected.size() + " words do not end on their expected count ("
                    + changelogLast.size() + " keys read)");
            }

            // 5. The internal topics and their configs as Streams asked for them.
            Map<ConfigResource, Config> configs = admin.describeConfigs(List.of(
                new ConfigResource(ConfigResource.Type.TOPIC, changelog),
                new ConfigResource(ConfigResource.Type.TOPIC, wchangelog),
                new ConfigResource(ConfigResource.Type.TOPIC, repartition))).all().get(30, TimeUnit.SECONDS);
            Map<String, String> policy = new HashMap<>();
            configs.forEach((r, cfg) -> policy.put(r.name(), cfg.get("cleanup.policy").value()));
            expectPolicy(policy, changelog, "compact");
            expectPolicy(policy, wchangelog, "compact,delete");
            expectPolicy(policy, repartition, "delete");
            for (TopicDescription d : internal.values()) {
                if (d.partitions().size() != 4) problem(d.name() + " has " + d.partitions().size() + " partitions, not 4 (the input's)");
            }
            Map<TopicPartition, OffsetSpec> rq = new HashMap<>();
            for (int p = 0; p < internal.get(repartition).partitions().size(); p++) {
                rq.put(new TopicPartition(repartition, p), OffsetSpec.earliest());
            }
            Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> rstart = admin.listOffsets(rq).all().get(30, TimeUnit.SECONDS);
            long purged = rstart.values().stream().filter(i -> i.offset() > 0).count();
            long purgedRecords = rstart.values().stream().mapToLong(ListOffsetsResult.ListOffsetsResultInfo::offset).sum();

            figures.append(String.format(
                "%d lines, %d words (%d distinct, %d word-windows); read_committed: %d count + %d window records, "
                    + "complete after %d ms; word-counts changelog %d records (%d after compaction); repartition purged to %d in %d/%d partitions",
                lines, Input.totalWords(lines), cnt.expected.size(), win.expected.size(), cnt.records, win.records,
                tComplete, changelogOffsets, changelogRecords, purgedRecords, purged, rstart.size()));
        }
        if (!problems.isEmpty()) {
            System.out.println(problems.size() + " problem(s), first: " + problems.get(0));
            return 1;
        }
        System.out.println(figures);
        return 0;
    }

    private void expectPolicy(Map<String, String> policy, String topic, String want) {
        String got = policy.get(topic);
        if (got == null || !normalize(got).equals(normalize(want))) {
            problem(topic + ": cleanup.policy " + got + ", Streams asks for " + want);
        }
    }

    private static String normalize(String s) {
        List<String> parts = new ArrayList<>(List.of(s.replace(" ", "").split(",")));
        java.util.Collections.sort(parts);
        return String.join(",", parts);
    }
}
