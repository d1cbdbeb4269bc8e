package odradek.compat.streams;

import java.time.Duration;
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;

/**
 * The word-count application: lines -> words -> groupBy(word) (the repartition
 * topic "<app>-words-repartition") -> count() into the store "word-counts"
 * (changelog "<app>-word-counts-changelog") -> the counts topic; and the same
 * grouped stream counted in tumbling windows on the record timestamps
 * (store "window-counts") -> the window-counts topic as word@windowStart.
 * Runs until SIGTERM (clean close) or kill -9; exits 3 if Streams fails.
 */
final class App {
    static final String REPARTITION = "words";
    static final String COUNT_STORE = "word-counts";
    static final String WINDOW_STORE = "window-counts";

    private App() {}

    static Topology topology(String input, String counts, String windowCounts) {
        StreamsBuilder b = new StreamsBuilder();
        KGroupedStream<String, String> byWord = b
            .stream(input, Consumed.with(Serdes.String(), Serdes.String()))
            .flatMapValues(line -> Arrays.asList(line.split(" ")))
            .groupBy((k, word) -> word, Grouped.with(REPARTITION, Serdes.String(), Serdes.String()));
        byWord.count(Materialized.as(COUNT_STORE))
            .toStream()
            .to(counts, Produced.with(Serdes.String(), Serdes.Long()));
        // A grace of a day: records reach the window tasks out of timestamp
        // order (4 input partitions merge in the repartition topic) and none
        // may be dropped as late.
        byWord.windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMillis(Input.WINDOW_MS), Duration.ofDays(1)))
            .count(Materialized.as(WINDOW_STORE))
            .toStream()
            .map((wk, n) -> KeyValue.pair(Input.windowKey(wk.key(), wk.window().start()), n))
            .to(windowCounts, Produced.with(Serdes.String(), Serdes.Long()));
        return b.build();
    }

    static int run(String bootstrap, String appId, String stateDir, String input, String counts,
                   String windowCounts, int threads) throws InterruptedException {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        // STREAMS_GUARANTEE=at_least_once shows that the check can fail: the
        // records processed since the last commit are counted again after a kill -9.
        String guarantee = System.getenv().getOrDefault("STREAMS_GUARANTEE", StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        System.err.println("app: processing.guarantee=" + guarantee);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 300);
        // Purge the repartition topic (DeleteRecords) at most every second.
        p.put(StreamsConfig.REPARTITION_PURGE_INTERVAL_MS_CONFIG, 1000);
        // Internal topics roll a segment every 2 s of record time, so that the
        // broker's log cleaner compacts the changelogs while the application
        // runs and the restarted instances restore from compacted logs.
        p.put(StreamsConfig.topicPrefix("segment.ms"), 2000);
        p.put(StreamsConfig.topicPrefix("min.cleanable.dirty.ratio"), 0.1);
        // replication.factor is left at Streams' default (-1: the broker's).
        // A member killed with kill -9 leaves the group after the session
        // timeout (the broker's minimum by default); then the restarted one
        // gets its tasks.
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 6000);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 1500);

        // STREAMS_EXTRA="key=value,..." adds or overrides Streams configs (to explore).
        for (String kv : System.getenv().getOrDefault("STREAMS_EXTRA", "").split(",")) {
            int eq = kv.indexOf('=');
            if (eq > 0) p.put(kv.substring(0, eq).trim(), kv.substring(eq + 1).trim());
        }
        System.err.println("app: configs " + p);
        KafkaStreams streams = new KafkaStreams(topology(input, counts, windowCounts), p);
        CountDownLatch done = new CountDownLatch(1);
        int[] rc = {0};
        streams.setStateListener((now, before) -> {
            System.err.printf("app: %s -> %s%n", before, now);
            if (now == KafkaStreams.State.ERROR) {
                rc[0] = 3;
                done.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("app: uncaught exception in a stream thread:");
            e.printStackTrace();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.err.println("app: closing (SIGTERM)");
            boolean closed = streams.close(Duration.ofSeconds(30));
            System.err.println("app: closed=" + closed);
            done.countDown();
        }));
        System.err.println("app: topology\n" + topology(input, counts, windowCounts).describe());
        streams.start();
        done.await();
        if (rc[0] != 0) {
            streams.close(Duration.ofSeconds(10));
            System.err.println("app: FAILED (state ERROR)");
            Runtime.getRuntime().halt(rc[0]);
        }
        return rc[0];
    }
}
