// Kafka Streams (exactly_once_v2) against an Odradek broker: the programs
// compat/streams/run starts. Subcommands (all take the bootstrap address first):
//
//   setup   BOOTSTRAP INPUT COUNTS WCOUNTS        create the input (4 partitions)
//                                                 and output (3 partitions) topics
//   feed    BOOTSTRAP INPUT LINES DURATION_MS BASE_MS
//                                                 produce the input (Input.java),
//                                                 evenly over DURATION_MS
//   app     BOOTSTRAP APP_ID STATE_DIR INPUT COUNTS WCOUNTS THREADS
//                                                 the Streams application (App.java)
//   wait    BOOTSTRAP APP_ID INPUT MIN TIMEOUT_S  until the application's committed
//                                                 offsets on INPUT sum to >= MIN
//   verify  BOOTSTRAP APP_ID INPUT COUNTS WCOUNTS LINES BASE_MS TIMEOUT_S
//                                                 read_committed check of the output
//                                                 (Verifier.java)
//
// Exit status 0 = done, 1 = check failed, 2 = usage, 3 = Streams failed.
package odradek.compat.streams;

import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringSerializer;

public final class Main {
    private Main() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 2) usage();
        int rc;
        switch (args[0]) {
            case "setup" -> { need(args, 5); rc = setup(args[1], args[2], args[3], args[4]); }
            case "feed" -> { need(args, 6); rc = feed(args[1], args[2], Integer.parseInt(args[3]), Long.parseLong(args[4]), Long.parseLong(args[5])); }
            case "app" -> { need(args, 8); rc = App.run(args[1], args[2], args[3], args[4], args[5], args[6], Integer.parseInt(args[7])); }
            case "wait" -> { need(args, 6); rc = waitCommitted(args[1], args[2], args[3], Long.parseLong(args[4]), Long.parseLong(args[5])); }
            case "verify" -> { need(args, 9); rc = new Verifier(args[1], args[2], args[3], args[4], args[5], Integer.parseInt(args[6]), Long.parseLong(args[7]), Long.parseLong(args[8])).run(); }
            default -> { usage(); rc = 2; }
        }
        System.exit(rc);
    }

    private static void need(String[] args, int n) {
        if (args.length != n) usage();
    }

    private static void usage() {
        System.err.println("usage: see the head of Main.java (setup|feed|app|wait|verify BOOTSTRAP ...)");
        System.exit(2);
    }

    static Admin admin(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000);
        return Admin.create(p);
    }

    static int setup(String bootstrap, String input, String counts, String wcounts) throws Exception {
        try (Admin admin = admin(bootstrap)) {
            admin.createTopics(List.of(
                new NewTopic(input, Optional.of(4), Optional.empty()),
                new NewTopic(counts, Optional.of(3), Optional.empty()),
                new NewTopic(wcounts, Optional.of(3), Optional.empty()))).all().get(60, TimeUnit.SECONDS);
        }
        return 0;
    }

    static int feed(String bootstrap, String topic, int lines, long durationMs, long baseMs) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        AtomicReference<Exception> failed = new AtomicReference<>();
        long t0 = System.nanoTime();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < lines && failed.get() == null; i++) {
                long dueNs = t0 + TimeUnit.MILLISECONDS.toNanos(durationMs * i / lines);
                long aheadMs = TimeUnit.NANOSECONDS.toMillis(dueNs - System.nanoTime());
                if (aheadMs >= 5) Thread.sleep(aheadMs);
                producer.send(new ProducerRecord<>(topic, null, Input.timestamp(baseMs, i), Input.key(i), Input.line(i)),
                    (md, e) -> { if (e != null) failed.compareAndSet(null, e); });
            }
            producer.flush();
        }
        if (failed.get() != null) {
            System.err.println("feed: a send failed:");
            failed.get().printStackTrace();
            return 1;
        }
        System.err.printf("feed: %d lines in %d ms%n", lines, TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0));
        return 0;
    }

    static long committedSum(Admin admin, String group, String topic) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> offsets =
            admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
        long sum = 0;
        for (Map.Entry<TopicPartition, OffsetAndMetadata> e : offsets.entrySet()) {
            if (e.getKey().topic().equals(topic) && e.getValue() != null) sum += e.getValue().offset();
        }
        return sum;
    }

    static int waitCommitted(String bootstrap, String group, String topic, long min, long timeoutS) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutS);
        long sum = -1;
        try (Admin admin = admin(bootstrap)) {
            while (System.nanoTime() < deadline) {
                try {
                    sum = committedSum(admin, group, topic);
                } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException e) {
                    System.err.println("wait: " + e);  // the broker restarting: try again
                    Thread.sleep(500);
                    continue;
                }
                if (sum >= min) {
                    System.out.println(sum);
                    return 0;
                }
                Thread.sleep(100);
            }
        }
        System.err.printf("wait: committed offsets of %s on %s sum to %d after %d s, wanted >= %d%n",
            group, topic, sum, timeoutS, min);
        System.out.println(sum);
        return 1;
    }
}
