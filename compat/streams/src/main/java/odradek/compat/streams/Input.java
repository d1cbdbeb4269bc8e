package odradek.compat.streams;

import java.util.HashMap;
import java.util.Map;

/**
 * The deterministic input: line i (key "line-i", timestamp base + i * STEP_MS)
 * holds 4 + i % 7 words out of a vocabulary of VOCAB. The feeder produces it,
 * the verifier recomputes the counts it must lead to.
 */
final class Input {
    static final int VOCAB = 211;
    /** Record timestamp step between consecutive lines. */
    static final long STEP_MS = 5;
    /** Tumbling window size of the windowed count: 1,000 lines per window. */
    static final long WINDOW_MS = 5_000;

    private Input() {}

    static String key(int i) {
        return "line-" + i;
    }

    static long timestamp(long baseMs, int i) {
        return baseMs + i * STEP_MS;
    }

    static String word(int i, int j) {
        long h = (i * 2_654_435_761L) ^ (j * 40_503L + 12_345L);
        h ^= h >>> 15;
        h *= 0x2c1b3c6dL;
        h ^= h >>> 12;
        return String.format("w%03d", Math.floorMod(h, VOCAB));
    }

    static int words(int i) {
        return 4 + i % 7;
    }

    static String line(int i) {
        StringBuilder sb = new StringBuilder();
        for (int j = 0; j < words(i); j++) {
            if (j > 0) sb.append(' ');
            sb.append(word(i, j));
        }
        return sb.toString();
    }

    /** The output key of the windowed count: word@windowStartMs. */
    static String windowKey(String word, long windowStart) {
        return word + "@" + windowStart;
    }

    static long windowStart(long timestamp) {
        return timestamp - Math.floorMod(timestamp, WINDOW_MS);
    }

    /** word -> its count over lines [0, lines). */
    static Map<String, Long> expectedCounts(int lines) {
        Map<String, Long> m = new HashMap<>();
        for (int i = 0; i < lines; i++) {
            for (int j = 0; j < words(i); j++) m.merge(word(i, j), 1L, Long::sum);
        }
        return m;
    }

    /** word@windowStart -> its count in that window. */
    static Map<String, Long> expectedWindowCounts(int lines, long baseMs) {
        Map<String, Long> m = new HashMap<>();
        for (int i = 0; i < lines; i++) {
            long start = windowStart(timestamp(baseMs, i));
            for (int j = 0; j < words(i); j++) m.merge(windowKey(word(i, j), start), 1L, Long::sum);
        }
        return m;
    }

    static long totalWords(int lines) {
        long n = 0;
        for (int i = 0; i < lines; i++) n += words(i);
        return n;
    }
}
