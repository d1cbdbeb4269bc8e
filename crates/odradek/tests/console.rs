//! The HTTP listener: /health, /ready, Prometheus /metrics with real traffic, and the web
//! console rendered by headless Chromium (its screenshots are kept as test artifacts).

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use support::*;

/// The value of the sample `name{labels}` in a Prometheus text exposition.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The text of every `<text>` element of the SVG charts in a dumped page.
fn svg_texts(page: &str) -> Vec<String> {
    page.split("<text")
        .skip(1)
        .filter_map(|rest| Some(rest.split_once('>')?.1.split_once("</text>")?.0.to_string()))
        .collect()
}

/// The points of each line of the SVG charts in a dumped page.
fn polyline_points(page: &str) -> Vec<usize> {
    page.split("<polyline")
        .skip(1)
        .filter_map(|rest| {
            let points = rest.split_once("points=\"")?.1.split_once('"')?.0;
            Some(points.split_whitespace().count())
        })
        .collect()
}

/// The value shown on the overview card titled `title`.
fn card_value(page: &str, title: &str) -> Option<String> {
    let after = page.split_once(&format!(">{title}</div>"))?.1;
    let value = after.split_once("class=\"v")?.1.split_once('>')?.1;
    Some(value.split_once('<')?.0.to_string())
}

/// `"7.81 KiB/s"` as bytes per second, if it is a rate in binary units with at most three
/// significant digits (so never `752.6494701059787 B/s`, nor decimal `KB/s`).
fn parse_rate(label: &str) -> Option<f64> {
    let (number, unit) = label.strip_suffix("/s")?.split_once(' ')?;
    let scale = ["B", "KiB", "MiB", "GiB", "TiB"]
        .iter()
        .position(|u| *u == unit)?;
    // Three significant digits, or four for 1000-1023 of a unit.
    let digits = number.chars().filter(char::is_ascii_digit).count();
    if digits > 4 || (scale == 0 && number.contains('.')) {
        return None;
    }
    Some(number.parse::<f64>().ok()? * 1024f64.powi(scale as i32))
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The page at `url` after its scripts ran, as headless Chromium serialises it; also saves
/// a screenshot named `shot`.
fn render(url: &str, shot: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let chrome = |extra: &[String]| {
        let output = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1280,1000",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .output()
            .expect("running chromium (scripts/test installs it: apt-get install chromium)");
        assert!(
            output.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let path = artifacts().join(shot);
    chrome(&[format!("--screenshot={}", path.display())]);
    assert!(path.exists(), "no screenshot at {}", path.display());
    chrome(&["--dump-dom".to_string()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_console_show_topics_traffic_and_group_lag() {
    let broker = BrokerProcess::start();
    let http = broker.http.clone();
    assert_eq!(get(&http, "/health"), (200, "ok\n".to_string()));
    assert_eq!(get(&http, "/ready").0, 200);

    create_topic(&broker.addr, "web", 2, &[("retention.ms", "86400000")]).await;
    let p = producer(&broker.addr, &[("acks", "all")]);
    let hostile = "<img src=x onerror=\"document.title='pwned'\">";
    let mut sends = Vec::new();
    for i in 0..100 {
        let value = if i == 99 {
            hostile.to_string()
        } else {
            format!("message {i}")
        };
        let key = format!("k{i}");
        let headers = OwnedHeaders::new().insert(Header {
            key: "trace",
            value: Some("t-1"),
        });
        sends.push(enqueue(
            &p,
            FutureRecord::to("web")
                .partition(i % 2)
                .key(&key)
                .payload(&value)
                .headers(headers),
        ));
    }
    for s in sends {
        delivered(s).await.expect("delivered");
    }
    let mut config = client_config(&broker.addr);
    config
        .set("group.id", "web-group")
        .set("enable.auto.commit", "false");
    let committer: rdkafka::consumer::BaseConsumer = config.create().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("web", 0, Offset::Offset(10))
        .unwrap();
    offsets
        .add_partition_offset("web", 1, Offset::Offset(20))
        .unwrap();
    committer.commit(&offsets, CommitMode::Sync).unwrap();
    consume(&broker.addr, "web", 0, 0, 50, Duration::from_secs(30));

    let (status, metrics) = get(&http, "/metrics");
    assert_eq!(status, 200);
    let value = |series: &str| {
        sample(&metrics, series).unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
    };
    assert_eq!(value(r#"odradek_messages_in_total{topic="web"}"#), 100.0);
    assert!(value(r#"odradek_bytes_in_total{topic="web"}"#) > 100.0 * 10.0);
    assert!(value(r#"odradek_bytes_out_total{topic="web"}"#) > 0.0);
    assert_eq!(
        value(r#"odradek_log_end_offset{topic="web",partition="0"}"#),
        50.0
    );
    assert_eq!(
        value(r#"odradek_consumer_group_lag{group="web-group",topic="web",partition="0"}"#),
        40.0
    );
    assert_eq!(
        value(r#"odradek_consumer_group_lag{group="web-group",topic="web",partition="1"}"#),
        30.0
    );
    assert!(value(r#"odradek_requests_total{api="Produce"}"#) >= 1.0);
    assert!(value(r#"odradek_request_duration_seconds_count{api="Produce",phase="total"}"#) >= 1.0);
    assert!(value(r#"odradek_request_duration_seconds_count{api="Fetch",phase="remote"}"#) >= 1.0);
    assert!(
        value("odradek_fsync_duration_seconds_count") >= 1.0,
        "acks=all produces were fsync'd"
    );
    assert!(value(r#"odradek_connections{listener="PLAINTEXT"}"#) >= 1.0);
    assert!(value("odradek_process_resident_memory_bytes") > 1e6);
    assert!(value(r#"odradek_consumer_groups{state="Empty"}"#) >= 1.0);

    // The console, in a real browser.
    let (status, page) = get(&http, "/");
    assert_eq!(status, 200);
    assert!(
        page.len() < 100 * 1024,
        "the console page is {} bytes",
        page.len()
    );
    // Throughput is sampled every second: wait for a few points of the load above.
    let deadline = Instant::now() + Duration::from_secs(30);
    let api_overview = loop {
        let (status, body) = get(&http, "/api/overview");
        assert_eq!(status, 200, "{body}");
        let o: serde_json::Value = serde_json::from_str(&body).unwrap();
        if o["traffic"].as_array().map_or(0, Vec::len) >= 4 {
            break o;
        }
        assert!(
            Instant::now() < deadline,
            "throughput history stays short: {o}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // The user's partitions only: web's 2, not the 50 of __consumer_offsets (the group
    // commit above created it), which is listed on its own.
    assert_eq!(api_overview["partitions"], 2, "{api_overview}");
    assert_eq!(
        api_overview["internal_topics"],
        serde_json::json!([{"name": "__consumer_offsets", "partitions": 50}])
    );
    let peak = api_overview["traffic"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| [&p["bytes_in_per_sec"], &p["bytes_out_per_sec"]])
        .filter_map(serde_json::Value::as_f64)
        .fold(0.0, f64::max);

    let overview = render(&format!("http://{http}/#/"), "overview.png");
    assert!(
        overview.contains("Overview") && overview.contains("Consumer groups"),
        "{overview}"
    );
    assert_eq!(card_value(&overview, "Partitions").as_deref(), Some("2"));
    assert!(overview.contains("__consumer_offsets (50)"), "{overview}");
    let labels: Vec<String> = svg_texts(&overview)
        .into_iter()
        .filter(|t| t.ends_with("/s"))
        .collect();
    assert!(!labels.is_empty(), "no throughput axis labels:\n{overview}");
    let rates: Vec<f64> = labels
        .iter()
        .map(|l| {
            parse_rate(l).unwrap_or_else(|| panic!("axis label {l:?} is not a formatted rate"))
        })
        .collect();
    let top = rates.iter().copied().fold(0.0, f64::max);
    assert!(
        peak > 0.0 && (top - peak).abs() <= peak * 0.01,
        "the top label {labels:?} should show the peak of {peak} B/s"
    );
    let lines = polyline_points(&overview);
    assert!(
        lines.len() == 2 && lines.iter().all(|&n| n >= 4),
        "throughput lines with {lines:?} points"
    );
    let topics = render(&format!("http://{http}/#/topics"), "topics.png");
    let (user, internal) = topics
        .split_once("Internal topics")
        .unwrap_or_else(|| panic!("no internal topics section:\n{topics}"));
    assert!(
        user.contains(">web<") && !user.contains("__consumer_offsets"),
        "{topics}"
    );
    assert!(internal.contains("__consumer_offsets"), "{topics}");
    let topic = render(
        &format!("http://{http}/#/topics/web?partition=1&limit=60"),
        "topic.png",
    );
    assert!(topic.contains("Topic web"), "{topic}");
    assert!(
        topic.contains("message 97") && topic.contains("trace=t-1"),
        "messages missing:\n{topic}"
    );
    assert!(
        topic.contains("&lt;img src=x onerror=\"document.title='pwned'\"&gt;"),
        "topic data must be shown as text:\n{topic}"
    );
    assert!(
        !topic.contains("<img src=\"x\""),
        "topic data became markup:\n{topic}"
    );
    // The partition table shows placement: leader 1, epoch 0, replicas and ISR [1].
    let plain = |page: &str| page.replace(" class=\"\"", "");
    assert!(
        plain(&topic).contains("<td>1</td><td>1</td><td>0</td><td>1</td><td>1</td>"),
        "no placement for partition 1:\n{topic}"
    );
    let brokers = render(&format!("http://{http}/#/brokers"), "brokers.png");
    let row = format!(
        "<td>{}</td><td>-</td><td>live</td><td>yes</td>",
        broker.addr
    );
    assert!(
        plain(&brokers).contains(&row),
        "broker 1 should be live and lead the quorum:\n{brokers}"
    );
    let group = render(&format!("http://{http}/#/groups/web-group"), "group.png");
    assert!(group.contains("Group web-group"), "{group}");
    // Total lag 70: 40 on partition 0, 30 on partition 1.
    assert!(
        group.contains(">70<") && group.contains(">40<") && group.contains(">30<"),
        "lag missing:\n{group}"
    );
}
