// Reads every partition of a topic from its start to its end offset (as listed when it
// starts) with Kafka's own consumer, no group, and prints one line per record and one per
// partition:
//   R <partition> <offset> <key> <value>        (key/value as UTF-8, "null" when null)
//   E <partition> <start offset> <end offset> <records read>
// Run with the source launcher:
//   java -cp 'target/kafka-dist/libs/*' TopicDump.java HOST:PORT TOPIC [read_committed]
// (with read_committed the end offsets are the last stable offsets and only committed
// records are read; transaction markers are never records)
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class TopicDump {
    public static void main(String[] args) {
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("enable.auto.commit", "false");
        p.put("allow.auto.create.topics", "false");
        if (args.length > 2) p.put("isolation.level", args[2]);
        String topic = args[1];
        long deadline = System.currentTimeMillis() + 60_000;
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo pi : c.partitionsFor(topic, Duration.ofSeconds(30)))
                tps.add(new TopicPartition(topic, pi.partition()));
            tps.sort(Comparator.comparingInt(TopicPartition::partition));
            c.assign(tps);
            Map<TopicPartition, Long> start = c.beginningOffsets(tps, Duration.ofSeconds(30));
            Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofSeconds(30));
            c.seekToBeginning(tps);
            Map<TopicPartition, Integer> count = new HashMap<>();
            StringBuilder out = new StringBuilder();
            while (true) {
                boolean done = true;
                for (TopicPartition tp : tps) if (c.position(tp) < end.get(tp)) done = false;
                if (done) break;
                if (System.currentTimeMillis() > deadline) {
                    System.err.println("TopicDump: did not reach the end offsets " + end + " in 60 s");
                    System.exit(1);
                }
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                    TopicPartition tp = new TopicPartition(r.topic(), r.partition());
                    if (r.offset() >= end.get(tp)) continue;
                    count.merge(tp, 1, Integer::sum);
                    out.append("R ").append(r.partition()).append(' ').append(r.offset()).append(' ')
                       .append(r.key() == null ? "null" : new String(r.key())).append(' ')
                       .append(r.value() == null ? "null" : new String(r.value())).append('\n');
                }
            }
            for (TopicPartition tp : tps)
                out.append("E ").append(tp.partition()).append(' ').append(start.get(tp)).append(' ')
                   .append(end.get(tp)).append(' ').append(count.getOrDefault(tp, 0)).append('\n');
            System.out.print(out);
        }
    }
}
