// The Java client (org.apache.kafka:kafka-clients) against an Odradek broker.
//
// Built by compat/setup (Maven, pom.xml beside src/) into target/compat-java;
//   BOOTSTRAP=127.0.0.1:19092 java -jar target/compat-java/odradek-compat-java.jar
// (or the address as the only argument). Prints one line, "java: OK ..." or
// "java: FAIL ..." (details on stderr), exits non-zero on any problem, and
// gives up after 110 s whatever the broker does.
//
// Phases, each on what the one before left behind (the first that fails ends the run):
//   1. admin: createTopics (the main topic and the transactions topic with 3 partitions,
//      the codec topic with 5, the rebalance topic with 6, the admin topic with 2),
//      describeTopics, describeCluster, listTopics, describeConfigs (Kafka's defaults,
//      DEFAULT_CONFIG);
//   2. an idempotent producer (acks=all) sends 1,000 keyed records; every
//      callback must report success, and the acked offsets must be 0..n-1 per
//      partition;
//   3. compression: for each codec (none, gzip, snappy, lz4, zstd) a producer with the
//      client's defaults (idempotent, acks=all) and that compression.type sends 200
//      records to its own partition of the codec topic: null/empty/binary keys and
//      values, headers (a duplicate key, a null value, an empty value, a non-ASCII key)
//      and out-of-order CreateTime timestamps; read back without a group, every key,
//      value, header (order and duplicates) and timestamp must be as sent;
//   4. a classic consumer group (group.protocol=classic) reads the 1,000 records,
//      committing synchronously after every poll; the committed offsets
//      (listConsumerGroupOffsets) must be the end offsets, and
//      describeConsumerGroups must show the group EMPTY, of type CLASSIC;
//   5. the same with group.protocol=consumer (KIP-848), group type CONSUMER;
//   6. two members of a classic group on the 6-partition rebalance topic (3,000
//      records), one committing with commitSync, the other with commitAsync (every
//      callback must succeed), both with commitSync in onPartitionsRevoked; once both
//      consume, the async one close()s mid-way and the other must take over its
//      partitions at the committed offsets: every record exactly once, the committed
//      offsets the end offsets, the group EMPTY;
//   7. the same with group.protocol=consumer;
//   8. a transactional producer on the transactions topic commits a transaction (with
//      sendOffsetsToTransaction for a group), aborts one, commits another; a
//      read_committed consumer sees exactly the committed records in order,
//      a read_uncommitted one sees all three, and the group has the offsets of
//      the committed transaction only;
//   9. an AdminClient tour: listOffsets (earliest, latest, max-timestamp, by timestamp),
//      describeTopics (by name and by id), createPartitions (grow; shrink refused),
//      incrementalAlterConfigs (SET, APPEND, SUBTRACT, DELETE) with describeConfigs,
//      listConsumerGroups/listGroups, describeConsumerGroups, alterConsumerGroupOffsets,
//      listConsumerGroupOffsets, deleteConsumerGroupOffsets, deleteConsumerGroups,
//      describeCluster, describeLogDirs, deleteRecords, describeFeatures, and the ACL
//      calls (no authorizer: SecurityDisabledException).
package odradek.compat;

import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.Set;
import java.util.TreeSet;
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
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListGroupsOptions;
import org.apache.kafka.clients.admin.DeletedRecords;
import org.apache.kafka.clients.admin.FeatureMetadata;
import org.apache.kafka.clients.admin.FinalizedVersionRange;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.ReplicaInfo;
import org.apache.kafka.clients.admin.SupportedVersionRange;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.TopicCollection;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.errors.SecurityDisabledException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
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

    static void adminPhase(Admin admin, String topic, String txnTopic, List<NewTopic> more) {
        List<NewTopic> all = new ArrayList<>(List.of(
                new NewTopic(topic, PARTITIONS, (short) 1),
                new NewTopic(txnTopic, PARTITIONS, (short) 1)));
        all.addAll(more);
        get("createTopics", admin.createTopics(all).all());

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
        for (NewTopic t : all) {
            if (!names.contains(t.name())) {
                bad("listTopics: " + t.name() + " missing from " + names);
            }
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

    // ---- 4./5. consumer groups ------------------------------------------------------------

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

    // ---- 8. transactions ------------------------------------------------------------------

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

    // ---- 3. every compression codec, with headers and timestamps --------------------------

    static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};
    static final int CODEC_N = 200;

    /** What was sent as record i of a codec's partition. */
    record Sent(byte[] key, byte[] value, long timestamp, List<Header> headers) {
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /**
     * Record i of codec c: a null key every 7th record, a null value (tombstone) every 13th, an
     * empty one every 11th, otherwise a compressible text with some pseudo-random bytes; headers
     * on 4 records of 5, with a duplicate key (order matters), a null and an empty value and a
     * non-ASCII key; CreateTime timestamps in the past, out of order, one maximum.
     */
    static Sent sentOf(int c, int i, long base) {
        byte[] key = i % 7 == 0 ? null : utf8("k-" + CODECS[c] + "-" + i);
        byte[] value;
        if (i % 13 == 0) {
            value = null;
        } else if (i % 11 == 0) {
            value = new byte[0];
        } else {
            byte[] text = utf8(("v-" + CODECS[c] + "-" + i + "|").repeat(4 + i % 30));
            byte[] noise = new byte[i % 17];
            new Random(c * 1000L + i).nextBytes(noise);
            value = Arrays.copyOf(text, text.length + noise.length);
            System.arraycopy(noise, 0, value, text.length, noise.length);
        }
        List<Header> headers = new ArrayList<>();
        if (i % 5 != 4) {
            headers.add(new RecordHeader("trace", utf8(CODECS[c] + "-" + i)));
            headers.add(new RecordHeader("dup", utf8("first-" + i)));
            headers.add(new RecordHeader("null", (byte[]) null));
            headers.add(new RecordHeader("dup", utf8("second-" + i)));
            headers.add(new RecordHeader("empty", new byte[0]));
            headers.add(new RecordHeader("schlüssel-ключ", new byte[] {0, 1, (byte) 0xff, (byte) (i & 0x7f)}));
        }
        // (i * 119) mod 200 is a permutation of 0..199: every timestamp differs, one is the largest.
        long ts = base + ((i * 119L) % CODEC_N) * 10;
        return new Sent(key, value, ts, headers);
    }

    static int maxTimestampIndex() {
        for (int i = 0; i < CODEC_N; i++) {
            if ((i * 119L) % CODEC_N == CODEC_N - 1) {
                return i;
            }
        }
        throw new IllegalStateException();
    }

    static String show(byte[] b) {
        return b == null ? "null" : b.length + " bytes";
    }

    static String showHeaders(Iterable<Header> hs) {
        List<String> out = new ArrayList<>();
        for (Header h : hs) {
            out.add(h.key() + "=" + (h.value() == null ? "null" : HexFormat.of().formatHex(h.value())));
        }
        return out.toString();
    }

    static boolean sameHeaders(List<Header> want, Header[] got) {
        if (want.size() != got.length) {
            return false;
        }
        for (int j = 0; j < got.length; j++) {
            if (!want.get(j).key().equals(got[j].key()) || !Arrays.equals(want.get(j).value(), got[j].value())) {
                return false;
            }
        }
        return true;
    }

    /** One producer per codec, the Java client's defaults otherwise (idempotent, acks=all). */
    static String codecsPhase(Admin admin, String topic, long base) {
        long t0 = System.nanoTime();
        for (int c = 0; c < CODECS.length; c++) {
            Properties p = common();
            p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, CODECS[c]);
            p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
            p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
            String where = "produce " + CODECS[c];
            AtomicReference<String> firstError = new AtomicReference<>();
            CountDownLatch done = new CountDownLatch(CODEC_N);
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
                for (int i = 0; i < CODEC_N; i++) {
                    Sent s = sentOf(c, i, base);
                    final int id = i;
                    producer.send(new ProducerRecord<>(topic, c, s.timestamp(), s.key(), s.value(), s.headers()),
                            (md, e) -> {
                                if (e != null) {
                                    firstError.compareAndSet(null, "record " + id + ": " + e);
                                } else if (md.offset() != id || md.timestamp() != s.timestamp()) {
                                    firstError.compareAndSet(null, "record " + id + " acked at offset " + md.offset()
                                            + " with timestamp " + md.timestamp() + ", expected offset " + id
                                            + " and its CreateTime " + s.timestamp());
                                }
                                done.countDown();
                            });
                }
                producer.flush();
                if (!done.await(remainingMs(30_000), TimeUnit.MILLISECONDS)) {
                    throw new Abort(where + ": " + done.getCount() + " callbacks never called", null);
                }
            } catch (InterruptedException e) {
                throw new Abort(where + ": interrupted", e);
            } catch (RuntimeException e) {
                if (e instanceof Abort) {
                    throw e;
                }
                throw new Abort(where + ": " + e, e);
            }
            if (firstError.get() != null) {
                throw new Abort(where + ": " + firstError.get(), null);
            }
        }

        // Read every codec's partition back from the start, without a group.
        Properties cp = consumerProps(null, null, IsolationLevel.READ_UNCOMMITTED);
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "500");
        List<TopicPartition> tps = new ArrayList<>();
        for (int c = 0; c < CODECS.length; c++) {
            tps.add(new TopicPartition(topic, c));
        }
        int[] next = new int[CODECS.length];
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp)) {
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long deadline = System.nanoTime() + remainingMs(20_000) * 1_000_000;
            while (Arrays.stream(next).anyMatch(n -> n < CODEC_N) && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    int c = r.partition();
                    String where = "read " + CODECS[c] + " p" + c + "@" + r.offset();
                    if (r.offset() != next[c]) {
                        bad(where + ": expected offset " + next[c]);
                    }
                    next[c] = (int) r.offset() + 1;
                    if (r.offset() >= CODEC_N) {
                        bad(where + ": beyond the " + CODEC_N + " records sent");
                        continue;
                    }
                    Sent s = sentOf(c, (int) r.offset(), base);
                    if (!Arrays.equals(s.key(), r.key())) {
                        bad(where + ": key " + show(r.key()) + ", expected " + show(s.key()));
                    }
                    if (!Arrays.equals(s.value(), r.value())) {
                        bad(where + ": value " + show(r.value()) + " differs from the " + show(s.value()) + " sent");
                    }
                    if (r.timestampType() != TimestampType.CREATE_TIME || r.timestamp() != s.timestamp()) {
                        bad(where + ": timestamp " + r.timestamp() + " (" + r.timestampType() + "), expected "
                                + s.timestamp() + " (CreateTime)");
                    }
                    Header[] got = r.headers().toArray();
                    if (!sameHeaders(s.headers(), got)) {
                        bad(where + ": headers " + showHeaders(Arrays.asList(got)) + ", expected " + showHeaders(s.headers()));
                    } else if (!s.headers().isEmpty()) {
                        List<String> dups = new ArrayList<>();
                        r.headers().headers("dup").forEach(h -> dups.add(new String(h.value(), StandardCharsets.UTF_8)));
                        Header last = r.headers().lastHeader("dup");
                        if (!dups.equals(List.of("first-" + r.offset(), "second-" + r.offset()))
                                || last == null || !Arrays.equals(last.value(), utf8("second-" + r.offset()))) {
                            bad(where + ": headers(\"dup\") " + dups + ", lastHeader " + last);
                        }
                    }
                }
            }
        }
        for (int c = 0; c < CODECS.length; c++) {
            if (next[c] != CODEC_N) {
                bad("read " + CODECS[c] + " p" + c + ": read up to offset " + next[c] + " of " + CODEC_N);
            }
        }
        return String.format("codecs %.1fs (%s: %d records each, headers, CreateTime)",
                secondsSince(t0), String.join("/", CODECS), CODEC_N);
    }

    // ---- 6./7. two members, one leaves mid-way --------------------------------------------

    static final int REB_PARTITIONS = 6;
    static final int REB_N = 3000;
    /** The async member leaves once it has consumed this many (of its ~1,500). */
    static final int LEAVE_AFTER = 400;

    /** REB_N records, record i in partition i % 6 with value "rebal-<i>": offsets known in advance. */
    static void produceRebalanceTopic(String topic) {
        Properties p = common();
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        AtomicReference<String> firstError = new AtomicReference<>();
        CountDownLatch done = new CountDownLatch(REB_N);
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < REB_N; i++) {
                final int id = i;
                producer.send(new ProducerRecord<>(topic, i % REB_PARTITIONS, keyOf(i), "rebal-" + i), (md, e) -> {
                    if (e != null) {
                        firstError.compareAndSet(null, "record " + id + ": " + e);
                    } else if (md.offset() != id / REB_PARTITIONS) {
                        firstError.compareAndSet(null, "record " + id + " acked at offset " + md.offset()
                                + ", expected " + id / REB_PARTITIONS);
                    }
                    done.countDown();
                });
            }
            producer.flush();
            if (!done.await(remainingMs(30_000), TimeUnit.MILLISECONDS)) {
                throw new Abort("produce " + topic + ": " + done.getCount() + " callbacks never called", null);
            }
        } catch (InterruptedException e) {
            throw new Abort("produce " + topic + ": interrupted", e);
        }
        if (firstError.get() != null) {
            throw new Abort("produce " + topic + ": " + firstError.get(), null);
        }
    }

    /** A group member, polled from the main thread (the two members take turns). */
    static final class Member implements ConsumerRebalanceListener {
        final String name;
        final boolean async;
        final String where;
        final KafkaConsumer<String, String> consumer;
        final Set<TopicPartition> everAssigned = new TreeSet<>((a, b) -> Integer.compare(a.partition(), b.partition()));
        /** Partitions are kept paused until both members own some, so that both consume. */
        static volatile boolean gateOpen;
        int consumed;
        int asyncCalls;
        final AtomicInteger asyncCallbacks = new AtomicInteger();
        final AtomicReference<String> asyncError = new AtomicReference<>();
        int syncCommits;
        final Map<TopicPartition, Long> firstOffset = new HashMap<>();

        Member(String name, boolean async, String group, String protocol, String topic) {
            this.name = name;
            this.async = async;
            this.where = "group " + group + " (" + protocol + ") member " + name;
            Properties p = consumerProps(group, protocol, IsolationLevel.READ_UNCOMMITTED);
            p.put(ConsumerConfig.CLIENT_ID_CONFIG, "odradek-compat-java-" + name);
            if (protocol.equals("classic")) {
                // Notice the other member's leaving sooner than the default 3 s.
                p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
            }
            consumer = new KafkaConsumer<>(p);
            consumer.subscribe(List.of(topic), this);
        }

        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
            // Commit what was consumed before the partitions move: nothing is read twice.
            try {
                consumer.commitSync(Duration.ofMillis(remainingMs(15_000)));
                syncCommits++;
            } catch (RuntimeException e) {
                bad(where + ": commitSync in onPartitionsRevoked(" + partitions + "): " + e);
            }
        }

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
            everAssigned.addAll(partitions);
            if (!gateOpen) {
                consumer.pause(partitions);
            }
        }

        @Override
        public void onPartitionsLost(Collection<TopicPartition> partitions) {
            bad(where + ": partitions " + partitions + " lost (the member was fenced or its session expired)");
        }

        /** One poll; records go to `seen` (partition -> offsets seen, in order). */
        void pollOnce(Map<Integer, List<Long>> seen) {
            ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(100));
            for (ConsumerRecord<String, String> r : records) {
                long i = r.offset() * REB_PARTITIONS + r.partition();
                if (!("rebal-" + i).equals(r.value()) || !keyOf((int) i).equals(r.key())) {
                    bad(where + ": p" + r.partition() + "@" + r.offset() + " has key " + r.key() + ", value " + r.value()
                            + "; expected " + keyOf((int) i) + ", rebal-" + i);
                }
                seen.computeIfAbsent(r.partition(), k -> new ArrayList<>()).add(r.offset());
                firstOffset.putIfAbsent(new TopicPartition(r.topic(), r.partition()), r.offset());
                consumed++;
            }
            if (records.isEmpty()) {
                return;
            }
            if (async) {
                asyncCalls++;
                consumer.commitAsync((offsets, e) -> {
                    asyncCallbacks.incrementAndGet();
                    if (e != null) {
                        asyncError.compareAndSet(null, e + " (offsets " + offsets + ")");
                    }
                });
            } else {
                consumer.commitSync(Duration.ofMillis(remainingMs(15_000)));
                syncCommits++;
            }
        }

        boolean hasUnreadData(Map<Integer, Long> ends) {
            return consumer.assignment().stream().anyMatch(tp -> consumer.position(tp) < ends.get(tp.partition()));
        }
    }

    static Map<TopicPartition, OffsetAndMetadata> committedOffsets(Admin admin, String group) {
        return get("listConsumerGroupOffsets " + group, admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
    }

    /**
     * Two members of a fresh group on the 6-partition topic, started together and polled in
     * turn; "sync" commits with commitSync after each poll, "async" with commitAsync (every
     * callback must report success); both commitSync in onPartitionsRevoked. Once both consume,
     * "async" closes mid-way: "sync" must take over its partitions at the committed offsets and
     * read to the end. Every record exactly once; afterwards the committed offsets are the end
     * offsets and the group is empty.
     */
    static String rebalancePhase(Admin admin, String topic, String protocol, GroupType wantType) {
        long t0 = System.nanoTime();
        String group = topic + "-" + protocol;
        String where = "group " + group + " (group.protocol=" + protocol + ")";
        Map<Integer, Long> ends = new TreeMap<>();
        for (int q = 0; q < REB_PARTITIONS; q++) {
            ends.put(q, (long) (REB_N / REB_PARTITIONS + (q < REB_N % REB_PARTITIONS ? 1 : 0)));
        }
        Map<Integer, List<Long>> seen = new TreeMap<>();
        Member.gateOpen = false;
        Member a = new Member("sync", false, group, protocol, topic);
        Member b = new Member("async", true, group, protocol, topic);
        Map<TopicPartition, OffsetAndMetadata> leftAt = null;
        Set<TopicPartition> bHad = Set.of();
        double gateAt = 0;
        double leftAtS = 0;
        try {
            long deadline = System.nanoTime() + remainingMs(40_000) * 1_000_000;
            while (System.nanoTime() < deadline) {
                a.pollOnce(seen);
                if (leftAt == null) {
                    b.pollOnce(seen);
                }
                if (!Member.gateOpen && !a.consumer.assignment().isEmpty() && !b.consumer.assignment().isEmpty()) {
                    Member.gateOpen = true;
                    gateAt = secondsSince(t0);
                    a.consumer.resume(a.consumer.assignment());
                    b.consumer.resume(b.consumer.assignment());
                }
                if (leftAt == null && b.consumed >= LEAVE_AFTER && b.hasUnreadData(ends)) {
                    bHad = new HashSet<>(b.consumer.assignment());
                    b.consumer.close(CloseOptions.timeout(Duration.ofMillis(remainingMs(20_000))));
                    leftAtS = secondsSince(t0);
                    leftAt = committedOffsets(admin, group);
                }
                int total = seen.values().stream().mapToInt(List::size).sum();
                if (leftAt != null && total >= REB_N && a.consumer.assignment().size() == REB_PARTITIONS) {
                    break;
                }
            }
            a.consumer.close(CloseOptions.timeout(Duration.ofMillis(remainingMs(20_000))));
            if (leftAt == null) {
                b.consumer.close(CloseOptions.timeout(Duration.ofMillis(remainingMs(20_000))));
            }
        } catch (RuntimeException e) {
            if (e instanceof Abort) {
                throw e;
            }
            throw new Abort(where + ": " + e, e);
        }

        // Every record exactly once, none skipped.
        for (int q = 0; q < REB_PARTITIONS; q++) {
            List<Long> offs = seen.getOrDefault(q, List.of()).stream().sorted().toList();
            for (int j = 0; j < Math.max(offs.size(), ends.get(q)); j++) {
                if (j >= offs.size() || offs.get(j) != j) {
                    bad(where + ": p" + q + ": offsets seen are not exactly 0.." + (ends.get(q) - 1) + " once each (at "
                            + j + ": " + (j < offs.size() ? offs.get(j) : "missing") + "; " + offs.size() + " seen)");
                    break;
                }
            }
        }
        if (leftAt == null) {
            bad(where + ": member async never consumed " + LEAVE_AFTER + " records with more left to read (" + b.consumed
                    + " consumed, assigned " + b.everAssigned + "); sync consumed " + a.consumed);
        } else {
            // The remaining member picked up each partition of the leaver where it had committed.
            for (TopicPartition tp : bHad) {
                OffsetAndMetadata om = leftAt.get(tp);
                long from = om == null ? 0 : om.offset();
                Long first = a.firstOffset.get(tp);
                if (from < ends.get(tp.partition()) && (first == null || first != from)) {
                    bad(where + ": " + tp + " committed at " + from + " when async left, but sync's first record there is "
                            + (first == null ? "none" : "at " + first));
                }
            }
        }
        if (a.everAssigned.isEmpty() || b.everAssigned.isEmpty()) {
            bad(where + ": assigned sync " + a.everAssigned + ", async " + b.everAssigned + "; expected both some");
        }
        if (b.asyncCallbacks.get() != b.asyncCalls) {
            bad(where + ": " + b.asyncCalls + " commitAsync calls but " + b.asyncCallbacks.get() + " callbacks after close()");
        }
        if (b.asyncError.get() != null) {
            bad(where + ": a commitAsync callback reported " + b.asyncError.get());
        }
        Map<TopicPartition, OffsetAndMetadata> committed = committedOffsets(admin, group);
        for (int q = 0; q < REB_PARTITIONS; q++) {
            OffsetAndMetadata om = committed.get(new TopicPartition(topic, q));
            if (om == null || om.offset() != ends.get(q)) {
                bad(where + ": after close committed offset of p" + q + " is " + om + ", expected the end offset " + ends.get(q));
            }
        }
        ConsumerGroupDescription desc = get("describeConsumerGroups " + group,
                admin.describeConsumerGroups(List.of(group)).describedGroups().get(group));
        if (desc.type() != wantType || desc.groupState() != GroupState.EMPTY || !desc.members().isEmpty()) {
            bad(where + ": describeConsumerGroups says type " + desc.type() + ", state " + desc.groupState()
                    + ", " + desc.members().size() + " members; expected " + wantType + ", EMPTY, none");
        }
        return String.format("%s rebalance %.1fs (both consuming at %.1fs, async left at %.1fs after %d records;"
                        + " sync %d records/%d commitSync, async %d records/%d commitAsync)",
                protocol, secondsSince(t0), gateAt, leftAtS, b.consumed, a.consumed, a.syncCommits, b.consumed, b.asyncCalls);
    }

    // ---- 9. AdminClient tour --------------------------------------------------------------

    /** Runs `call` until `ok` accepts its result or the deadline passes; returns the last result. */
    static <T> T until(long capMs, java.util.function.Supplier<T> call, java.util.function.Predicate<T> ok) {
        long deadline = System.nanoTime() + remainingMs(capMs) * 1_000_000;
        T last = call.get();
        while (!ok.test(last) && System.nanoTime() < deadline) {
            try {
                Thread.sleep(100);
            } catch (InterruptedException e) {
                throw new Abort("interrupted", e);
            }
            last = call.get();
        }
        return last;
    }

    /** The exception a future fails with (null if it succeeds). */
    static Throwable failure(KafkaFuture<?> future) {
        try {
            future.get(remainingMs(30_000), TimeUnit.MILLISECONDS);
            return null;
        } catch (java.util.concurrent.ExecutionException e) {
            return e.getCause();
        } catch (Exception e) {
            return e;
        }
    }

    static Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> listOffsets(
            Admin admin, String topic, int partitions, OffsetSpec spec, String what) {
        Map<TopicPartition, OffsetSpec> want = new HashMap<>();
        for (int q = 0; q < partitions; q++) {
            want.put(new TopicPartition(topic, q), spec);
        }
        return get("listOffsets " + what, admin.listOffsets(want).all());
    }

    static Config topicConfig(Admin admin, String topic) {
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        return get("describeConfigs " + topic, admin.describeConfigs(List.of(res)).all()).get(res);
    }

    static void alter(Admin admin, String topic, AlterConfigOp.OpType op, String name, String value) {
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        get("incrementalAlterConfigs " + op + " " + name + (value == null ? "" : "=" + value),
                admin.incrementalAlterConfigs(Map.of(res, List.of(new AlterConfigOp(new ConfigEntry(name, value), op)))).all());
    }

    /** Waits until describeConfigs shows each name with its value and source; reports otherwise. */
    static void expectConfigs(Admin admin, String topic, String step, Map<String, String> values,
                              Map<String, ConfigEntry.ConfigSource> sources) {
        java.util.function.Function<Config, List<String>> wrong = cfg -> {
            List<String> out = new ArrayList<>();
            for (var e : values.entrySet()) {
                ConfigEntry ce = cfg.get(e.getKey());
                if (ce == null || !e.getValue().equals(ce.value()) || ce.source() != sources.get(e.getKey())) {
                    out.add(e.getKey() + "=" + (ce == null ? "(not listed)" : ce.value() + " (" + ce.source() + ")")
                            + ", expected " + e.getValue() + " (" + sources.get(e.getKey()) + ")");
                }
            }
            return out;
        };
        // Kafka applies config changes through its metadata log: describeConfigs may lag a moment.
        List<String> problems = wrong.apply(until(10_000, () -> topicConfig(admin, topic), cfg -> wrong.apply(cfg).isEmpty()));
        problems.forEach(pr -> bad("configs, after " + step + ": " + pr));
    }

    /** Groups listed by the (deprecated since 4.1) listConsumerGroups: id -> "TYPE STATE". */
    @SuppressWarnings("removal")
    static Map<String, String> listConsumerGroups(Admin admin) {
        Map<String, String> out = new TreeMap<>();
        for (org.apache.kafka.clients.admin.ConsumerGroupListing l
                : get("listConsumerGroups", admin.listConsumerGroups().all())) {
            out.put(l.groupId(), l.type().orElse(null) + " " + l.groupState().orElse(null));
        }
        return out;
    }

    /** The same through its replacement, listGroups(ListGroupsOptions.forConsumerGroups()). */
    static Map<String, String> listGroups(Admin admin) {
        Map<String, String> out = new TreeMap<>();
        for (GroupListing l : get("listGroups", admin.listGroups(ListGroupsOptions.forConsumerGroups()).all())) {
            out.put(l.groupId(), l.type().orElse(null) + " " + l.groupState().orElse(null));
        }
        return out;
    }

    static String adminTour(Admin admin, String topic, String codecTopic, String rebalTopic, String adminTopic, long base) {
        long t0 = System.nanoTime();
        List<String> did = new ArrayList<>();

        // listOffsets: earliest, latest, max-timestamp and by timestamp on the codec topic.
        var earliest = listOffsets(admin, codecTopic, CODECS.length, OffsetSpec.earliest(), "earliest");
        var latest = listOffsets(admin, codecTopic, CODECS.length, OffsetSpec.latest(), "latest");
        var maxTs = listOffsets(admin, codecTopic, CODECS.length, OffsetSpec.maxTimestamp(), "max-timestamp");
        long target = base + 1000;
        var byTs = listOffsets(admin, codecTopic, CODECS.length, OffsetSpec.forTimestamp(target), "for-timestamp");
        int maxIdx = maxTimestampIndex();
        int firstAtTarget = 0;
        while (sentOf(0, firstAtTarget, base).timestamp() < target) {
            firstAtTarget++;
        }
        for (int c = 0; c < CODECS.length; c++) {
            TopicPartition tp = new TopicPartition(codecTopic, c);
            if (earliest.get(tp).offset() != 0 || latest.get(tp).offset() != CODEC_N) {
                bad("listOffsets " + tp + ": earliest " + earliest.get(tp).offset() + ", latest " + latest.get(tp).offset()
                        + "; expected 0 and " + CODEC_N);
            }
            long wantTs = sentOf(c, maxIdx, base).timestamp();
            if (maxTs.get(tp).offset() != maxIdx || maxTs.get(tp).timestamp() != wantTs) {
                bad("listOffsets max-timestamp " + tp + " (" + CODECS[c] + "): offset " + maxTs.get(tp).offset()
                        + " timestamp " + maxTs.get(tp).timestamp() + "; expected " + maxIdx + " and " + wantTs);
            }
            long wantTsAt = sentOf(c, firstAtTarget, base).timestamp();
            if (byTs.get(tp).offset() != firstAtTarget || byTs.get(tp).timestamp() != wantTsAt) {
                bad("listOffsets for-timestamp " + target + " " + tp + " (" + CODECS[c] + "): offset " + byTs.get(tp).offset()
                        + " timestamp " + byTs.get(tp).timestamp() + "; expected the first record at or after it, "
                        + firstAtTarget + " with " + wantTsAt);
            }
        }
        did.add("listOffsets");

        // describeTopics by name and by id.
        var byName = get("describeTopics", admin.describeTopics(List.of(codecTopic, rebalTopic)).allTopicNames());
        for (var e : Map.of(codecTopic, CODECS.length, rebalTopic, REB_PARTITIONS).entrySet()) {
            TopicDescription d = byName.get(e.getKey());
            if (d == null || d.partitions().size() != e.getValue()) {
                bad("describeTopics " + e.getKey() + ": " + (d == null ? "missing" : d.partitions().size() + " partitions")
                        + ", expected " + e.getValue());
            }
        }
        TopicDescription codecDesc = byName.get(codecTopic);
        if (codecDesc != null) {
            // Not through get(): a failure here is reported and the tour goes on.
            KafkaFuture<Map<Uuid, TopicDescription>> byId = admin.describeTopics(TopicCollection.ofTopicIds(
                    List.of(codecDesc.topicId()))).allTopicIds();
            Throwable t = failure(byId);
            TopicDescription d = t == null ? get("describeTopics by id", byId).get(codecDesc.topicId()) : null;
            if (d == null || !codecTopic.equals(d.name()) || d.partitions().size() != CODECS.length) {
                bad("describeTopics by id " + codecDesc.topicId() + ": " + (t != null ? t : d) + ", expected " + codecTopic);
            }
        }
        did.add("describeTopics");

        // createPartitions: 2 -> 4, then describe; shrinking is refused.
        get("createPartitions", admin.createPartitions(Map.of(adminTopic, NewPartitions.increaseTo(4))).all());
        TopicDescription grown = until(10_000,
                () -> get("describeTopics " + adminTopic, admin.describeTopics(List.of(adminTopic)).allTopicNames()).get(adminTopic),
                d -> d.partitions().size() == 4 && d.partitions().stream().allMatch(p -> p.leader() != null && !p.leader().isEmpty()));
        if (grown.partitions().size() != 4
                || grown.partitions().stream().anyMatch(p -> p.leader() == null || p.leader().isEmpty())) {
            bad("createPartitions to 4: describeTopics shows " + grown.partitions());
        }
        Throwable shrink = failure(admin.createPartitions(Map.of(adminTopic, NewPartitions.increaseTo(3))).all());
        if (!(shrink instanceof InvalidPartitionsException)) {
            bad("createPartitions 4 -> 3: " + shrink + ", expected InvalidPartitionsException");
        }
        did.add("createPartitions");

        // incrementalAlterConfigs, checked with describeConfigs.
        var DEF = ConfigEntry.ConfigSource.DEFAULT_CONFIG;
        var DYN = ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG;
        alter(admin, adminTopic, AlterConfigOp.OpType.SET, "retention.ms", "123456");
        expectConfigs(admin, adminTopic, "SET retention.ms",
                Map.of("retention.ms", "123456", "cleanup.policy", "delete", "segment.bytes", "1073741824"),
                Map.of("retention.ms", DYN, "cleanup.policy", DEF, "segment.bytes", DEF));
        alter(admin, adminTopic, AlterConfigOp.OpType.APPEND, "cleanup.policy", "compact");
        expectConfigs(admin, adminTopic, "APPEND cleanup.policy compact",
                Map.of("cleanup.policy", "delete,compact", "retention.ms", "123456"),
                Map.of("cleanup.policy", DYN, "retention.ms", DYN));
        alter(admin, adminTopic, AlterConfigOp.OpType.SUBTRACT, "cleanup.policy", "delete");
        expectConfigs(admin, adminTopic, "SUBTRACT cleanup.policy delete",
                Map.of("cleanup.policy", "compact"), Map.of("cleanup.policy", DYN));
        alter(admin, adminTopic, AlterConfigOp.OpType.DELETE, "retention.ms", null);
        alter(admin, adminTopic, AlterConfigOp.OpType.DELETE, "cleanup.policy", null);
        expectConfigs(admin, adminTopic, "DELETE retention.ms and cleanup.policy",
                Map.of("retention.ms", "604800000", "cleanup.policy", "delete"),
                Map.of("retention.ms", DEF, "cleanup.policy", DEF));
        did.add("incrementalAlterConfigs");

        // Consumer groups: list, describe, alter/list/delete offsets, delete.
        String classicGroup = rebalTopic + "-classic";
        String consumerGroup = rebalTopic + "-consumer";
        Map<String, String> listed = listConsumerGroups(admin);
        Map<String, String> listedNew = listGroups(admin);
        for (var e : Map.of(classicGroup, GroupType.CLASSIC, consumerGroup, GroupType.CONSUMER).entrySet()) {
            String want = e.getValue() + " " + GroupState.EMPTY;
            if (!want.equals(listed.get(e.getKey()))) {
                bad("listConsumerGroups: " + e.getKey() + " listed as " + listed.get(e.getKey()) + ", expected " + want);
            }
            if (!want.equals(listedNew.get(e.getKey()))) {
                bad("listGroups(forConsumerGroups): " + e.getKey() + " listed as " + listedNew.get(e.getKey())
                        + ", expected " + want);
            }
        }
        var described = get("describeConsumerGroups", admin.describeConsumerGroups(List.of(classicGroup, consumerGroup)).all());
        for (var e : Map.of(classicGroup, GroupType.CLASSIC, consumerGroup, GroupType.CONSUMER).entrySet()) {
            ConsumerGroupDescription d = described.get(e.getKey());
            if (d == null || d.type() != e.getValue() || d.groupState() != GroupState.EMPTY || !d.members().isEmpty()
                    || d.coordinator() == null || d.coordinator().isEmpty()) {
                bad("describeConsumerGroups " + e.getKey() + ": " + d);
            }
        }
        String offsetsGroup = adminTopic + "-offsets";
        Map<TopicPartition, OffsetAndMetadata> set = new HashMap<>();
        for (int q = 0; q < PARTITIONS; q++) {
            set.put(new TopicPartition(topic, q), new OffsetAndMetadata(5 + q, "set by alter " + q));
        }
        get("alterConsumerGroupOffsets", admin.alterConsumerGroupOffsets(offsetsGroup, set).all());
        Map<TopicPartition, OffsetAndMetadata> got = committedOffsets(admin, offsetsGroup);
        if (!set.equals(got)) {
            bad("listConsumerGroupOffsets after alterConsumerGroupOffsets: " + got + ", expected " + set);
        }
        TopicPartition dropped = new TopicPartition(topic, 1);
        get("deleteConsumerGroupOffsets", admin.deleteConsumerGroupOffsets(offsetsGroup, Set.of(dropped)).all());
        got = committedOffsets(admin, offsetsGroup);
        Map<TopicPartition, OffsetAndMetadata> rest = new HashMap<>(set);
        rest.remove(dropped);
        if (!rest.equals(got)) {
            bad("listConsumerGroupOffsets after deleteConsumerGroupOffsets(" + dropped + "): " + got + ", expected " + rest);
        }
        get("deleteConsumerGroups", admin.deleteConsumerGroups(List.of(offsetsGroup)).all());
        if (listConsumerGroups(admin).containsKey(offsetsGroup)) {
            bad("listConsumerGroups still lists " + offsetsGroup + " after deleteConsumerGroups");
        }
        Throwable again = failure(admin.deleteConsumerGroups(List.of(offsetsGroup)).all());
        if (!(again instanceof GroupIdNotFoundException)) {
            bad("deleteConsumerGroups of a deleted group: " + again + ", expected GroupIdNotFoundException");
        }
        did.add("groups");

        // describeCluster, then describeLogDirs of its brokers: the codec topic's partitions with data.
        Collection<Node> nodes = get("describeCluster", admin.describeCluster().nodes());
        List<Integer> ids = nodes.stream().map(Node::id).toList();
        Map<Integer, Map<String, LogDirDescription>> dirs = get("describeLogDirs", admin.describeLogDirs(ids).allDescriptions());
        Map<Integer, Long> sizes = new TreeMap<>();
        for (var byBroker : dirs.values()) {
            for (var dir : byBroker.entrySet()) {
                if (dir.getValue().error() != null) {
                    bad("describeLogDirs " + dir.getKey() + ": " + dir.getValue().error());
                }
                for (Map.Entry<TopicPartition, ReplicaInfo> r : dir.getValue().replicaInfos().entrySet()) {
                    if (r.getKey().topic().equals(codecTopic)) {
                        sizes.merge(r.getKey().partition(), r.getValue().size(), Long::sum);
                    }
                }
            }
        }
        for (int c = 0; c < CODECS.length; c++) {
            if (sizes.getOrDefault(c, 0L) <= 0) {
                bad("describeLogDirs: " + codecTopic + "-" + c + " (" + CODECS[c] + ") "
                        + (sizes.containsKey(c) ? "has size " + sizes.get(c) : "not listed") + "; expected size > 0");
            }
        }
        // The broker keeps the producer's compression: every compressed partition is smaller.
        for (int c = 1; c < CODECS.length && sizes.containsKey(0); c++) {
            if (sizes.getOrDefault(c, 0L) >= sizes.get(0)) {
                bad("describeLogDirs: " + CODECS[c] + " partition " + sizes.get(c) + " bytes, not smaller than the "
                        + sizes.get(0) + " bytes of the uncompressed one");
            }
        }
        did.add("describeLogDirs " + sizes.values());

        // deleteRecords: the low watermark, then listOffsets earliest agrees.
        TopicPartition cut = new TopicPartition(codecTopic, 0);
        DeletedRecords dr = get("deleteRecords", admin.deleteRecords(Map.of(cut, RecordsToDelete.beforeOffset(50))).lowWatermarks().get(cut));
        if (dr.lowWatermark() != 50) {
            bad("deleteRecords before 50 on " + cut + ": low watermark " + dr.lowWatermark());
        }
        long start = listOffsets(admin, codecTopic, 1, OffsetSpec.earliest(), "earliest after deleteRecords").get(cut).offset();
        long end = listOffsets(admin, codecTopic, 1, OffsetSpec.latest(), "latest after deleteRecords").get(cut).offset();
        if (start != 50 || end != CODEC_N) {
            bad("listOffsets after deleteRecords before 50 on " + cut + ": earliest " + start + ", latest " + end
                    + "; expected 50 and " + CODEC_N);
        }
        did.add("deleteRecords");

        // describeFeatures: metadata.version finalized, within what the broker supports.
        FeatureMetadata fm = get("describeFeatures", admin.describeFeatures().featureMetadata());
        FinalizedVersionRange mv = fm.finalizedFeatures().get("metadata.version");
        SupportedVersionRange smv = fm.supportedFeatures().get("metadata.version");
        if (mv == null || mv.maxVersionLevel() < 1 || mv.minVersionLevel() > mv.maxVersionLevel() || smv == null
                || mv.maxVersionLevel() > smv.maxVersion() || mv.maxVersionLevel() < smv.minVersion()) {
            bad("describeFeatures: metadata.version finalized " + mv + ", supported " + smv + " (" + fm + ")");
        }
        did.add("describeFeatures (metadata.version " + (mv == null ? "?" : mv.maxVersionLevel()) + ")");

        // ACLs: no authorizer is configured, so Kafka answers SECURITY_DISABLED.
        AclBinding binding = new AclBinding(new ResourcePattern(ResourceType.TOPIC, topic, PatternType.LITERAL),
                new AccessControlEntry("User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW));
        Map<String, Throwable> acl = new TreeMap<>();
        acl.put("describeAcls", failure(admin.describeAcls(AclBindingFilter.ANY).values()));
        acl.put("createAcls", failure(admin.createAcls(List.of(binding)).all()));
        acl.put("deleteAcls", failure(admin.deleteAcls(List.of(new AclBindingFilter(
                new ResourcePatternFilter(ResourceType.TOPIC, topic, PatternType.LITERAL),
                AccessControlEntryFilter.ANY))).all()));
        acl.forEach((call, t) -> {
            if (!(t instanceof SecurityDisabledException)) {
                bad(call + " without an authorizer: " + (t == null ? "succeeded" : t) + ", expected SecurityDisabledException");
            }
        });
        did.add("ACLs");
        return String.format("admin tour %.1fs (%s)", secondsSince(t0), String.join(", ", did));
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
        String codecTopic = topic + "-codecs";
        String rebalTopic = topic + "-rebalance";
        String adminTopic = topic + "-admin";
        // CreateTime timestamps for the codec topic: two hours ago, on a whole second.
        long base = (System.currentTimeMillis() - 7_200_000) / 1000 * 1000;
        Properties ap = common();
        ap.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        List<String> notes = new ArrayList<>();
        try (Admin admin = Admin.create(ap)) {
            try {
                adminPhase(admin, topic, txnTopic, List.of(
                        new NewTopic(codecTopic, CODECS.length, (short) 1),
                        new NewTopic(rebalTopic, REB_PARTITIONS, (short) 1),
                        new NewTopic(adminTopic, 2, (short) 1)));
                long t0 = System.nanoTime();
                Map<Integer, Where> delivered = produce(topic);
                notes.add(String.format("produce %.1fs", secondsSince(t0)));
                Map<Integer, Long> ends = endOffsets(admin, topic, IsolationLevel.READ_UNCOMMITTED);
                if (ends.values().stream().mapToLong(Long::longValue).sum() != N) {
                    bad("end offsets " + ends + " do not sum to " + N);
                }
                if (problems.isEmpty()) {
                    notes.add(codecsPhase(admin, codecTopic, base));
                }
                if (problems.isEmpty()) {
                    notes.add(groupPhase(admin, topic, "classic", GroupType.CLASSIC, delivered, ends));
                }
                if (problems.isEmpty()) {
                    notes.add(groupPhase(admin, topic, "consumer", GroupType.CONSUMER, delivered, ends));
                }
                if (problems.isEmpty()) {
                    t0 = System.nanoTime();
                    produceRebalanceTopic(rebalTopic);
                    notes.add(String.format("produce %d %.1fs", REB_N, secondsSince(t0)));
                }
                if (problems.isEmpty()) {
                    notes.add(rebalancePhase(admin, rebalTopic, "classic", GroupType.CLASSIC));
                }
                if (problems.isEmpty()) {
                    notes.add(rebalancePhase(admin, rebalTopic, "consumer", GroupType.CONSUMER));
                }
                if (problems.isEmpty()) {
                    notes.add(transactionsPhase(admin, topic, txnTopic, ends));
                }
                if (problems.isEmpty()) {
                    notes.add(adminTour(admin, topic, codecTopic, rebalTopic, adminTopic, base));
                }
            } catch (Abort e) {
                bad(e.getMessage());
                if (e.getCause() != null) {
                    e.getCause().printStackTrace();
                }
            }
            if (!problems.isEmpty()) {
                problems.forEach(pr -> System.err.println("  " + pr));
                System.err.println("  phases done: " + String.join(", ", notes));
                fail(problems.size() + " problem(s), first: " + problems.get(0) + " [topic " + topic + "]");
            }
            if (System.getenv("KEEP_TOPIC") == null || System.getenv("KEEP_TOPIC").isEmpty()) {
                try {
                    admin.deleteConsumerGroups(List.of(topic + "-classic", topic + "-consumer", txnTopic + "-offsets",
                                    rebalTopic + "-classic", rebalTopic + "-consumer"))
                            .all().get(remainingMs(10_000), TimeUnit.MILLISECONDS);
                    admin.deleteTopics(List.of(topic, txnTopic, codecTopic, rebalTopic, adminTopic))
                            .all().get(remainingMs(10_000), TimeUnit.MILLISECONDS);
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
