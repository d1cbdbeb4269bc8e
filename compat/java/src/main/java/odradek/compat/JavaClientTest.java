// The Java client (org.apache.kafka:kafka-clients) against an Odradek broker.
//
// Built by compat/setup (Maven, pom.xml beside src/) into target/compat-java;
//   BOOTSTRAP=127.0.0.1:19092 java -jar target/compat-java/odradek-compat-java.jar
// (or the address as the only argument). Prints one line, "java: OK ..." or
// "java: FAIL ..." (details on stderr), exits non-zero on any problem, and
// gives up after 110 s whatever the broker does.
//
// Phases, each on what the one before left behind:
//   1. admin: createTopics (3 partitions), describeTopics, describeCluster,
//      listTopics, describeConfigs (Kafka's defaults, DEFAULT_CONFIG);
//   2. an idempotent producer (acks=all) sends 1,000 keyed records; every
//      callback must report success, and the acked offsets must be 0..n-1 per
//      partition;
//   3. a classic consumer group (group.protocol=classic) reads them all,
//      committing synchronously after every poll; the committed offsets
//      (listConsumerGroupOffsets) must be the end offsets, and
//      describeConsumerGroups must show the group EMPTY, of type CLASSIC;
//   4. the same with group.protocol=consumer (KIP-848), group type CONSUMER;
//   5. a transactional producer on a second topic commits a transaction (with
//      sendOffsetsToTransaction for a group), aborts one, commits another; a
//      read_committed consumer sees exactly the committed records in order,
//      a read_uncommitted one sees all three, and the group has the offsets of
//      the committed transaction only.
package odradek.compat;

import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class JavaClientTest {
    static final String CLIENT = "java";
    static final int N = 1000;
    static final int PARTITIONS = 3;
    static final long HARD_LIMIT_MS = 110_000;
    static final long START = System.nanoTime();

    static String bootstrap;
    static final List<String> problems = new ArrayList<>();

    /** A phase that cannot go on: the message becomes the FAIL line. */
    static final class Abort extends RuntimeException {
        Abort(String message, Throwable cause) {
            super(message, cause);
        }
    }

    record Where(int partition, long offset) {
        @Override
        public String toString() {
            return "p" + partition + "@" + offset;
        }
    }

    static String keyOf(int i) {
        return "key-" + (i % 97);
    }

    /** "value-<i>|" plus a deterministic payload of 16..408 bytes, as the other scripts. */
    static String valueOf(int i) {
        return "value-" + i + "|" + String.format("%08x", i).repeat(2 + i % 50);
    }

    static void bad(String problem) {
        synchronized (problems) {
            if (problems.size() < 20) {
                problems.add(problem);
            }
        }
    }

    static long remainingMs(long capMs) {
        long elapsed = (System.nanoTime() - START) / 1_000_000;
        return Math.max(100, Math.min(capMs, HARD_LIMIT_MS - 5_000 - elapsed));
    }

    static double secondsSince(long t0) {
        return (System.nanoTime() - t0) / 1e9;
    }

    static void fail(String message) {
        System.out.println(CLIENT + ": FAIL " + message);
        System.out.flush();
        Runtime.getRuntime().halt(1);
    }

    /** Waits for an admin or producer future, turning any failure into an Abort. */
    static <T> T get(String what, org.apache.kafka.common.KafkaFuture<T> future) {
        try {
            return future.get(remainingMs(30_000), TimeUnit.MILLISECONDS);
        } catch (Exception e) {
            Throwable cause = e instanceof java.util.concurrent.ExecutionException && e.getCause() != null ? e.getCause() : e;
            throw new Abort(what + ": " + cause, cause);
        }
    }

    static String randomHex(int bytes) {
        byte[] b = new byte[bytes];
        new SecureRandom().nextBytes(b);
        return HexFormat.of().formatHex(b);
    }

    static Properties common() {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", "odradek-compat-java");
        return p;
    }

    // ---- 1. admin -------------------------------------------------------------------------

    static void adminPhase(Admin admin, String topic, String txnTopic) {
        get("createTopics", admin.createTopics(List.of(
                new NewTopic(topic, PARTITIONS, (short) 1),
                new NewTopic(txnTopic, PARTITIONS, (short) 1))).all());

        TopicDescription d = get("describeTopics", admin.describeTopics(List.of(topic)).allTopicNames()).get(topic);
        if (d == null) {
            throw new Abort("describeTopics: " + topic + " not described", null);
        }
        if (d.partitions().size() != PARTITIONS) {
            bad("describeTopics: " + d.partitions().size() + " partitions, expected " + PARTITIONS);
        }
        if (d.topicId() == null || d.topicId().equals(Uuid.ZERO_UUID)) {
            bad("describeTopics: topic id " + d.topicId());
        }
        if (d.isInternal()) {
            bad("describeTopics: topic reported internal");
        }
        for (TopicPartitionInfo p : d.partitions()) {
            if (p.leader() == null || p.leader().isEmpty()) {
                bad("describeTopics: partition " + p.partition() + " has no leader");
            } else if (!p.replicas().contains(p.leader()) || !p.isr().contains(p.leader())) {
                bad("describeTopics: partition " + p.partition() + " leader " + p.leader().id()
                        + " not in replicas " + p.replicas() + " / isr " + p.isr());
            }
        }

        DescribeClusterResult cluster = admin.describeCluster();
        Collection<Node> nodes = get("describeCluster nodes", cluster.nodes());
        Node controller = get("describeCluster controller", cluster.controller());
        String clusterId = get("describeCluster clusterId", cluster.clusterId());
        if (nodes.isEmpty()) {
            bad("describeCluster: no nodes");
        }
        if (clusterId == null || clusterId.isEmpty()) {
            bad("describeCluster: no cluster id");
        }
        // Kafka 4 clients see a random broker as "controller" (KIP-919 hides the real one);
        // whichever it is, it must be one of the nodes.
        if (controller == null || controller.isEmpty() || nodes.stream().noneMatch(n -> n.id() == controller.id())) {
            bad("describeCluster: controller " + controller + " is not one of the nodes " + nodes);
        }

        Set<String> names = get("listTopics", admin.listTopics().names());
        if (!names.contains(topic) || !names.contains(txnTopic)) {
            bad("listTopics: " + topic + " or " + txnTopic + " missing from " + names);
        }

        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config config = get("describeConfigs", admin.describeConfigs(List.of(res)).all()).get(res);
        if (config == null) {
            throw new Abort("describeConfigs: no configs for " + topic, null);
        }
        Map<String, String> defaults = Map.of(
                "cleanup.policy", "delete",
                "retention.ms", "604800000",
                "segment.bytes", "1073741824");
        for (String name : List.of("cleanup.policy", "compression.type", "max.message.bytes",
                "min.insync.replicas", "retention.bytes", "retention.ms", "segment.bytes")) {
            ConfigEntry e = config.get(name);
            if (e == null) {
                bad("describeConfigs: " + name + " not listed");
                continue;
            }
            if (e.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG) {
                bad("describeConfigs: " + name + " has source DYNAMIC_TOPIC_CONFIG on a topic created without configs");
            }
            String want = defaults.get(name);
            if (want != null && (!want.equals(e.value()) || e.source() != ConfigEntry.ConfigSource.DEFAULT_CONFIG)) {
                bad("describeConfigs: " + name + "=" + e.value() + " (" + e.source() + "), expected " + want
                        + " (DEFAULT_CONFIG)");
            }
        }
    }

    // ---- 2. idempotent producer -----------------------------------------------------------

    static Map<Integer, Where> produce(String topic) {
        Properties p = common();
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        Map<Integer, Where> delivered = new ConcurrentHashMap<>();
        AtomicReference<String> firstError = new AtomicReference<>();
        AtomicInteger errors = new AtomicInteger();
        CountDownLatch done = new CountDownLatch(N);
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < N; i++) {
                final int id = i;
                producer.send(new ProducerRecord<>(topic, keyOf(i), valueOf(i)), (md, e) -> {
                    if (e != null) {
                        errors.incrementAndGet();
                        firstError.compareAndSet(null, "message " + id + ": " + e);
                    } else if (delivered.put(id, new Where(md.partition(), md.offset())) != null) {
                        firstError.compareAndSet(null, "message " + id + ": callback called twice");
                    }
                    done.countDown();
                });
            }
            producer.flush();
            if (!done.await(remainingMs(60_000), TimeUnit.MILLISECONDS)) {
                throw new Abort("produce: " + done.getCount() + " callbacks never called", null);
            }
        } catch (InterruptedException e) {
            throw new Abort("produce: interrupted", e);
        }
        if (firstError.get() != null) {
            throw new Abort("produce: " + errors.get() + " failed sends, first: " + firstError.get(), null);
        }
        // The acked offsets of each partition must be 0..count-1, each once.
        Map<Integer, List<Long>> byPartition = new TreeMap<>();
        delivered.values().forEach(w -> byPartition.computeIfAbsent(w.partition(), k -> new ArrayList<>()).add(w.offset()));
        for (var e : byPartition.entrySet()) {
            List<Long> offs = e.getValue().stream().sorted().toList();
            for (int j = 0; j < offs.size(); j++) {
                if (offs.get(j) != j) {
                    bad("produce: partition " + e.getKey() + " acked offsets are not 0.." + (offs.size() - 1)
                            + " (position " + j + " is " + offs.get(j) + ")");
                    break;
                }
            }
        }
        if (byPartition.size() != PARTITIONS) {
            bad("produce: data went to partitions " + byPartition.keySet() + ", expected all " + PARTITIONS);
        }
        return delivered;
    }

    static Map<Integer, Long> endOffsets(Admin admin, String topic, IsolationLevel isolation) {
        Map<TopicPartition, OffsetSpec> want = new HashMap<>();
        for (int p = 0; p < PARTITIONS; p++) {
            want.put(new TopicPartition(topic, p), OffsetSpec.latest());
        }
        var result = get("listOffsets", admin.listOffsets(want,
                new org.apache.kafka.clients.admin.ListOffsetsOptions(isolation)).all());
        Map<Integer, Long> ends = new TreeMap<>();
        for (Map.Entry<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> e : result.entrySet()) {
            ends.put(e.getKey().partition(), e.getValue().offset());
        }
        return ends;
    }

    // ---- 3./4. consumer groups ------------------------------------------------------------

    static Properties consumerProps(String group, String protocol, IsolationLevel isolation) {
        Properties p = common();
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        }
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation.toString());
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "100");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return p;
    }

    /** One member of a fresh group reads the topic, committing after every poll. */
    static String groupPhase(Admin admin, String topic, String protocol, GroupType wantType,
                             Map<Integer, Where> delivered, Map<Integer, Long> ends) {
        long t0 = System.nanoTime();
        String group = topic + "-" + protocol;
        String where = "group " + group + " (group.protocol=" + protocol + ")";
        Map<Integer, Where> seen = new HashMap<>();
        Map<Integer, Long> lastOffset = new HashMap<>();
        int commits = 0;
        try (KafkaConsumer<String, String> consumer =
                     new KafkaConsumer<>(consumerProps(group, protocol, IsolationLevel.READ_UNCOMMITTED))) {
            consumer.subscribe(List.of(topic));
            long deadline = System.nanoTime() + remainingMs(40_000) * 1_000_000;
            while (seen.size() < N && System.nanoTime() < deadline) {
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                for (ConsumerRecord<String, String> r : records) {
                    check(where, r, delivered, seen, lastOffset);
                }
                if (!records.isEmpty()) {
                    consumer.commitSync(Duration.ofMillis(remainingMs(15_000)));
                    commits++;
                }
            }
            if (seen.size() < N) {
                bad(where + ": read " + seen.size() + " of " + N + " records before the deadline");
            }
            if (consumer.assignment().size() != PARTITIONS) {
                bad(where + ": assignment " + consumer.assignment() + ", expected all " + PARTITIONS + " partitions");
            }
        }
        // The member has left: the group is empty, and its offsets are the end offsets.
        Map<TopicPartition, OffsetAndMetadata> committed = get("listConsumerGroupOffsets",
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        for (int p = 0; p < PARTITIONS; p++) {
            OffsetAndMetadata om = committed.get(new TopicPartition(topic, p));
            if (om == null || om.offset() != ends.get(p)) {
                bad(where + ": committed offset of p" + p + " is " + om + ", expected " + ends.get(p));
            }
        }
        ConsumerGroupDescription desc = get("describeConsumerGroups",
                admin.describeConsumerGroups(List.of(group)).describedGroups().get(group));
        if (desc.type() != wantType || desc.groupState() != GroupState.EMPTY || !desc.members().isEmpty()) {
            bad(where + ": describeConsumerGroups says type " + desc.type() + ", state " + desc.groupState()
                    + ", " + desc.members().size() + " members; expected " + wantType + ", EMPTY, none");
        }
        return String.format("%s group %.1fs (%d commits)", protocol, secondsSince(t0), commits);
    }

    static void check(String where, ConsumerRecord<String, String> r, Map<Integer, Where> delivered,
                      Map<Integer, Where> seen, Map<Integer, Long> lastOffset) {
        Where at = new Where(r.partition(), r.offset());
        String v = r.value() == null ? "" : r.value();
        int i;
        try {
            i = Integer.parseInt(v.substring("value-".length(), v.indexOf('|')));
        } catch (RuntimeException e) {
            bad(where + ": " + at + ": unparseable value " + v.substring(0, Math.min(40, v.length())));
            return;
        }
        if (i < 0 || i >= N) {
            bad(where + ": " + at + ": value index " + i + " out of range");
            return;
        }
        Where first = seen.putIfAbsent(i, at);
        if (first != null) {
            bad(where + ": " + at + ": message " + i + " seen twice (first at " + first + ")");
            return;
        }
        if (!valueOf(i).equals(v) || !keyOf(i).equals(r.key())) {
            bad(where + ": " + at + ": message " + i + " has key " + r.key() + " and a " + v.length()
                    + "-byte value, expected " + keyOf(i) + " and " + valueOf(i).length());
        }
        if (!at.equals(delivered.get(i))) {
            bad(where + ": message " + i + " read at " + at + ", but the producer was told " + delivered.get(i));
        }
        Long prev = lastOffset.put(r.partition(), r.offset());
        if (prev != null && r.offset() <= prev) {
            bad(where + ": p" + r.partition() + ": offset " + r.offset() + " after " + prev);
        }
    }

    // ---- 5. transactions ------------------------------------------------------------------

    /** Values of every partition of `topic` as a group-less reader with `isolation` sees them. */
    static Map<Integer, List<String>> readAll(Admin admin, String topic, IsolationLevel isolation) {
        Map<Integer, Long> ends = endOffsets(admin, topic, isolation);
        Map<Integer, List<String>> values = new TreeMap<>();
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < PARTITIONS; p++) {
            tps.add(new TopicPartition(topic, p));
            values.put(p, new ArrayList<>());
        }
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(null, null, isolation))) {
            c.assign(tps);
            c.seekToBeginning(tps);
            long deadline = System.nanoTime() + remainingMs(20_000) * 1_000_000;
            while (System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    values.get(r.partition()).add(r.value());
                }
                if (tps.stream().allMatch(tp -> c.position(tp) >= ends.get(tp.partition()))) {
                    return values;
                }
            }
            throw new Abort(isolation + " read of " + topic + ": positions "
                    + tps.stream().map(c::position).toList() + " never reached the end offsets " + ends, null);
        }
    }

    static String transactionsPhase(Admin admin, String topic, String txnTopic, Map<Integer, Long> ends) {
        long t0 = System.nanoTime();
        String txnGroup = txnTopic + "-offsets";
        Properties p = common();
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnTopic + "-producer");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        String[] names = {"A", "B", "C"};
        int per = 30;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            producer.initTransactions();
            for (int t = 0; t < names.length; t++) {
                producer.beginTransaction();
                for (int i = 0; i < per; i++) {
                    producer.send(new ProducerRecord<>(txnTopic, "key-" + (i % 7), names[t] + "-" + i));
                }
                // Offsets in the transaction: A commits the end offsets, B (aborted) offset 1.
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (int q = 0; q < PARTITIONS; q++) {
                    offsets.put(new TopicPartition(topic, q),
                            new OffsetAndMetadata(t == 1 ? 1 : ends.get(q), "txn " + names[t]));
                }
                if (t != 2) {
                    producer.sendOffsetsToTransaction(offsets, new ConsumerGroupMetadata(txnGroup));
                }
                if (t == 1) {
                    // abortTransaction drops batches the producer has not sent yet, so without
                    // this flush B's records may never reach the broker for read_uncommitted to see.
                    producer.flush();
                    producer.abortTransaction();
                } else {
                    producer.commitTransaction();
                }
            }
        } catch (RuntimeException e) {
            throw new Abort("transactional producer: " + e, e);
        }

        Map<Integer, List<String>> committed = readAll(admin, txnTopic, IsolationLevel.READ_COMMITTED);
        Map<Integer, List<String>> all = readAll(admin, txnTopic, IsolationLevel.READ_UNCOMMITTED);
        for (int q = 0; q < PARTITIONS; q++) {
            List<String> c = committed.get(q);
            List<String> want = all.get(q).stream().filter(v -> !v.startsWith("B-")).toList();
            if (!c.equals(want)) {
                bad("read_committed p" + q + " saw " + c.size() + " values " + abbrev(c) + ", expected the "
                        + want.size() + " of A and C " + abbrev(want));
            }
        }
        Map<String, Long> counts = all.values().stream().flatMap(List::stream)
                .collect(Collectors.groupingBy(v -> v.substring(0, 1), TreeMap::new, Collectors.counting()));
        if (!counts.equals(Map.of("A", (long) per, "B", (long) per, "C", (long) per))) {
            bad("read_uncommitted saw " + counts + " values of transactions A, B, C; expected " + per + " each");
        }
        Map<TopicPartition, OffsetAndMetadata> offsets = get("listConsumerGroupOffsets " + txnGroup,
                admin.listConsumerGroupOffsets(txnGroup).partitionsToOffsetAndMetadata());
        for (int q = 0; q < PARTITIONS; q++) {
            OffsetAndMetadata om = offsets.get(new TopicPartition(topic, q));
            if (om == null || om.offset() != ends.get(q) || !"txn A".equals(om.metadata())) {
                bad("group " + txnGroup + ": offset of p" + q + " is " + om + ", expected " + ends.get(q)
                        + " with metadata 'txn A' (committed with transaction A; B was aborted)");
            }
        }
        return String.format("transactions %.1fs (A, C committed, B aborted, read_committed ok)", secondsSince(t0));
    }

    static String abbrev(List<String> values) {
        return values.size() <= 6 ? values.toString()
                : "[" + String.join(", ", values.subList(0, 3)) + ", ..., "
                + String.join(", ", values.subList(values.size() - 2, values.size())) + "]";
    }

    // ---- main -----------------------------------------------------------------------------

    public static void main(String[] args) {
        bootstrap = args.length > 0 ? args[0] : System.getenv("BOOTSTRAP");
        if (bootstrap == null || bootstrap.isEmpty()) {
            fail("give the broker as argument or BOOTSTRAP=host:port");
        }
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(HARD_LIMIT_MS);
            } catch (InterruptedException e) {
                return;
            }
            fail("timeout: no result after " + HARD_LIMIT_MS / 1000 + " s");
        }, "watchdog");
        watchdog.setDaemon(true);
        watchdog.start();

        String topic = "compat-java-" + randomHex(6);
        String txnTopic = topic + "-txn";
        Properties ap = common();
        ap.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        List<String> notes = new ArrayList<>();
        try (Admin admin = Admin.create(ap)) {
            try {
                adminPhase(admin, topic, txnTopic);
                long t0 = System.nanoTime();
                Map<Integer, Where> delivered = produce(topic);
                notes.add(String.format("produce %.1fs", secondsSince(t0)));
                Map<Integer, Long> ends = endOffsets(admin, topic, IsolationLevel.READ_UNCOMMITTED);
                if (ends.values().stream().mapToLong(Long::longValue).sum() != N) {
                    bad("end offsets " + ends + " do not sum to " + N);
                }
                if (problems.isEmpty()) {
                    notes.add(groupPhase(admin, topic, "classic", GroupType.CLASSIC, delivered, ends));
                }
                if (problems.isEmpty()) {
                    notes.add(groupPhase(admin, topic, "consumer", GroupType.CONSUMER, delivered, ends));
                }
                if (problems.isEmpty()) {
                    notes.add(transactionsPhase(admin, topic, txnTopic, ends));
                }
            } catch (Abort e) {
                bad(e.getMessage());
                if (e.getCause() != null) {
                    e.getCause().printStackTrace();
                }
            }
            if (!problems.isEmpty()) {
                problems.forEach(pr -> System.err.println("  " + pr));
                fail(problems.size() + " problem(s), first: " + problems.get(0) + " [topic " + topic + "]");
            }
            if (System.getenv("KEEP_TOPIC") == null || System.getenv("KEEP_TOPIC").isEmpty()) {
                try {
                    admin.deleteConsumerGroups(List.of(topic + "-classic", topic + "-consumer", txnTopic + "-offsets"))
                            .all().get(remainingMs(10_000), TimeUnit.MILLISECONDS);
                    admin.deleteTopics(List.of(topic, txnTopic)).all().get(remainingMs(10_000), TimeUnit.MILLISECONDS);
                } catch (Exception e) {
                    notes.add("warning: cleanup failed: " + e);
                }
            }
        }
        System.out.println(CLIENT + ": OK " + N + " messages via " + topic + "; " + String.join(", ", notes));
        System.out.flush();
        Runtime.getRuntime().halt(0);
    }
}
