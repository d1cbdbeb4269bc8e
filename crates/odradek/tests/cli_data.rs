//! The data commands (`odradek produce`, `odradek consume`, `odradek group reset-offsets`, …)
//! against a real broker, with the real binary on both ends.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn odradek_with_stdin(broker: &BrokerProcess, args: &[&str], stdin: &str) -> Output {
    let mut args = args.to_vec();
    args.extend(["-b", &broker.addr]);
    odradek_exactly(&args, stdin)
}

/// Runs odradek with exactly `args` (no -b appended) and `stdin`.
fn odradek_exactly(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_odradek"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running odradek");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("writing stdin");
    child.wait_with_output().expect("odradek output")
}

fn odradek(broker: &BrokerProcess, args: &[&str]) -> Output {
    odradek_with_stdin(broker, args, "")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn json(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("JSON output")
}

#[test]
fn data_commands_take_the_client_options_before_the_subcommand() {
    let broker = BrokerProcess::start();
    let b = broker.addr.as_str();
    let written = json(odradek_exactly(
        &["-b", b, "--output", "json", "produce", "front", "-K", ":"],
        "k:v1\nk:v2\n",
    ));
    assert_eq!(written["records"], 2);
    let shown = ok(odradek_exactly(
        &[
            "-b",
            b,
            "consume",
            "front",
            "--from-beginning",
            "-n",
            "2",
            "-g",
            "front-group",
            "-f",
            "%k=%v\\n",
        ],
        "",
    ));
    assert_eq!(shown, "k=v1\nk=v2\n");
    let plan = json(odradek_exactly(
        &[
            "--output",
            "json",
            "-b",
            b,
            "group",
            "reset-offsets",
            "front-group",
            "--topic",
            "front",
            "--to-earliest",
        ],
        "",
    ));
    assert_eq!(plan["executed"], false);
    let partitions = plan["partitions"].as_array().unwrap();
    assert!(
        partitions
            .iter()
            .any(|p| p["current"] == 2 && p["new"] == 0),
        "{plan}"
    );
    let configs = json(odradek_exactly(
        &[
            "--output",
            "json",
            "-b",
            b,
            "config",
            "get",
            "--topic",
            "front",
            "cleanup.policy",
        ],
        "",
    ));
    assert_eq!(configs[0]["value"], "delete", "{configs}");
}

#[test]
fn lines_produced_with_keys_and_headers_come_back_through_a_format_template() {
    let broker = BrokerProcess::start();
    ok(odradek(&broker, &["topic", "create", "lines", "-p", "1"]));
    let written = json(odradek_with_stdin(
        &broker,
        &[
            "produce",
            "lines",
            "--key-separator",
            ":",
            "--header",
            "src=cli",
            "--header",
            "src=again",
            "--compression",
            "zstd",
            "--output",
            "json",
        ],
        "k1:hello\nk2:world\nnokey\nk1:again:x\n",
    ));
    assert_eq!(written["records"], 4);
    assert_eq!(written["partitions"][0]["first_offset"], 0);
    assert_eq!(written["partitions"][0]["last_offset"], 3);

    let shown = ok(odradek(
        &broker,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--count",
            "4",
            "--format",
            r"%o %k=%v [%h] %T/%p\n",
        ],
    ));
    assert_eq!(
        shown,
        "0 k1=hello [src=cli,src=again] lines/0\n\
         1 k2=world [src=cli,src=again] lines/0\n\
         2 =nokey [src=cli,src=again] lines/0\n\
         3 k1=again:x [src=cli,src=again] lines/0\n"
    );
    assert_eq!(
        ok(odradek(
            &broker,
            &["consume", "lines", "--offset", "2", "-n", "1"]
        )),
        "nokey\n"
    );

    // acks=0 gets no answer; the records still arrive.
    ok(odradek_with_stdin(
        &broker,
        &["produce", "lines", "--acks", "0", "--compression", "lz4"],
        "fire\nforget\n",
    ));
    assert_eq!(
        ok(odradek(
            &broker,
            &[
                "consume", "lines", "--offset", "4", "-n", "2", "-f", "%o:%v,"
            ]
        )),
        "4:fire,5:forget,"
    );
}

#[test]
fn keyed_lines_spread_by_key_and_a_group_resumes_where_it_committed() {
    let broker = BrokerProcess::start();
    ok(odradek(&broker, &["topic", "create", "spread", "-p", "4"]));
    let lines: String = (0..40).map(|i| format!("key{}|v{i}\n", i % 8)).collect();
    let written = json(odradek_with_stdin(
        &broker,
        &["produce", "spread", "-K", "|", "--output", "json"],
        &lines,
    ));
    assert_eq!(written["records"], 40);
    let shown = ok(odradek(
        &broker,
        &[
            "consume",
            "spread",
            "--from-beginning",
            "-n",
            "40",
            "-f",
            r"%k %p\n",
        ],
    ));
    let mut partition_of = std::collections::HashMap::new();
    for line in shown.lines() {
        let (key, partition) = line.split_once(' ').expect("key and partition");
        assert_eq!(
            *partition_of.entry(key.to_string()).or_insert(partition),
            partition,
            "{key} in two partitions"
        );
    }
    assert_eq!(partition_of.len(), 8);

    // A group consumer commits what it printed and the next one continues from there.
    let first = ok(odradek(
        &broker,
        &[
            "consume",
            "spread",
            "-p",
            "2",
            "-g",
            "readers",
            "--from-beginning",
            "-n",
            "1",
            "-f",
            "%o",
        ],
    ));
    assert_eq!(first, "0");
    let described = json(odradek(
        &broker,
        &["group", "describe", "readers", "--output", "json"],
    ));
    assert_eq!(described["partitions"][0]["partition"], 2);
    assert_eq!(described["partitions"][0]["committed"], 1);
    let next = ok(odradek(
        &broker,
        &[
            "consume", "spread", "-p", "2", "-g", "readers", "-n", "1", "-f", "%o",
        ],
    ));
    assert_eq!(next, "1");
}

#[test]
fn consume_exits_cleanly_on_ctrl_c() {
    let broker = BrokerProcess::start();
    ok(odradek_with_stdin(
        &broker,
        &["produce", "waiting"],
        "one\n",
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_odradek"))
        .args(["consume", "waiting", "--from-beginning", "-b", &broker.addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running odradek consume");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("first record");
    assert_eq!(line, "one\n");
    // SAFETY: signalling our own child process by its pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for consume") {
            break status;
        }
        assert!(Instant::now() < deadline, "consume ignored SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
}

fn committed(broker: &BrokerProcess, group: &str) -> serde_json::Value {
    json(odradek(
        broker,
        &["group", "describe", group, "--output", "json"],
    ))["partitions"][0]["committed"]
        .clone()
}

#[test]
fn reset_offsets_plans_by_default_commits_with_execute_and_groups_are_deleted() {
    let broker = BrokerProcess::start();
    ok(odradek(&broker, &["topic", "create", "resets", "-p", "1"]));
    let lines: String = (0..10).map(|i| format!("r{i}\n")).collect();
    ok(odradek_with_stdin(&broker, &["produce", "resets"], &lines));
    ok(odradek(
        &broker,
        &[
            "consume",
            "resets",
            "-g",
            "ops",
            "--from-beginning",
            "-n",
            "3",
        ],
    ));
    assert_eq!(committed(&broker, "ops"), 3);

    let reset = |extra: &[&str]| {
        let mut args = vec![
            "group",
            "reset-offsets",
            "ops",
            "--topic",
            "resets",
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        json(odradek(&broker, &args))
    };
    let plan = reset(&["--to-earliest"]);
    assert_eq!(plan["executed"], false);
    assert_eq!(
        (
            &plan["partitions"][0]["current"],
            &plan["partitions"][0]["new"]
        ),
        (&serde_json::json!(3), &serde_json::json!(0))
    );
    assert_eq!(committed(&broker, "ops"), 3, "a dry run changes nothing");

    reset(&["--to-earliest", "--execute"]);
    assert_eq!(committed(&broker, "ops"), 0);
    reset(&["--shift-by", "4", "--execute"]);
    assert_eq!(committed(&broker, "ops"), 4);
    reset(&["--shift-by", "-10", "--execute"]);
    assert_eq!(committed(&broker, "ops"), 0, "kept at the earliest offset");
    reset(&["--to-offset", "100", "--execute"]);
    assert_eq!(committed(&broker, "ops"), 10, "kept at the latest offset");
    reset(&["--to-offset", "7", "--execute"]);
    assert_eq!(
        ok(odradek(
            &broker,
            &["consume", "resets", "-g", "ops", "-n", "1"]
        )),
        "r7\n"
    );

    ok(odradek(&broker, &["group", "delete", "ops"]));
    let gone = odradek(&broker, &["group", "delete", "ops"]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("GROUP_ID_NOT_FOUND"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

#[test]
fn cluster_info_counts_topics_and_names_the_controller_and_the_quorum() {
    let broker = BrokerProcess::start_with(&["--set", "broker.rack=eu-west-1a"]);
    ok(odradek(&broker, &["topic", "create", "a", "-p", "2"]));
    ok(odradek(&broker, &["topic", "create", "b", "-p", "3"]));
    let info = json(odradek(&broker, &["cluster", "info", "--output", "json"]));
    assert_eq!(
        (&info["topics"], &info["partitions"]),
        (&serde_json::json!(2), &serde_json::json!(5))
    );
    assert_eq!(info["brokers"][0]["address"], broker.addr.as_str());
    assert_eq!(info["controller"], info["brokers"][0]["id"]);
    assert_eq!(
        info["brokers"][0]["rack"], "eu-west-1a",
        "broker.rack is reported"
    );
    assert!(!info["cluster_id"].as_str().unwrap_or_default().is_empty());
    let quorum = &info["quorum"];
    assert_eq!(quorum["leader"], 1, "{info}");
    assert!(quorum["epoch"].as_i64().is_some_and(|e| e >= 1), "{info}");
    let high_watermark = quorum["high_watermark"].as_i64().unwrap_or_default();
    assert!(high_watermark >= 2, "two topic creations committed: {info}");
    assert_eq!(
        quorum["voters"],
        serde_json::json!([{"id": 1, "log_end_offset": high_watermark}])
    );
    let table = ok(odradek(&broker, &["cluster", "info"]));
    assert!(table.contains("2 topics, 5 partitions"), "{table}");
    assert!(
        table.contains("Metadata quorum: leader 1, epoch"),
        "{table}"
    );
}

#[test]
fn broker_configs_set_and_deleted_from_the_command_line_read_back() {
    let broker = BrokerProcess::start();
    let get = |args: &[&str]| {
        let mut all = vec!["config", "get", "--output", "json"];
        all.extend_from_slice(args);
        json(odradek(&broker, &all))
    };
    ok(odradek(
        &broker,
        &["config", "set", "--broker", "1", "log.retention.ms=123456"],
    ));
    let value = get(&["--broker", "1", "log.retention.ms"]);
    assert_eq!(value[0]["value"], "123456");
    assert_eq!(value[0]["source"], "DYNAMIC_BROKER_CONFIG");
    ok(odradek(
        &broker,
        &[
            "config",
            "set",
            "--cluster-default",
            "log.retention.ms=654321",
        ],
    ));
    ok(odradek(
        &broker,
        &[
            "config",
            "set",
            "--broker",
            "1",
            "--delete",
            "log.retention.ms",
        ],
    ));
    let value = get(&["log.retention.ms"]);
    assert_eq!(value[0]["value"], "654321");
    assert_eq!(value[0]["source"], "DYNAMIC_DEFAULT_BROKER_CONFIG");
    assert_eq!(
        get(&["--cluster-default"]),
        serde_json::json!([{"name": "log.retention.ms", "value": "654321",
            "source": "DYNAMIC_DEFAULT_BROKER_CONFIG", "read_only": false}])
    );

    ok(odradek(
        &broker,
        &["topic", "create", "configured", "-c", "retention.ms=1000"],
    ));
    let topic = get(&["--topic", "configured", "retention.ms"]);
    assert_eq!(topic[0]["value"], "1000");
    let bad = odradek(
        &broker,
        &["config", "set", "--broker", "1", "log.retention.ms=soon"],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("INVALID_CONFIG"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    for verb in [
        &["get", "--broker", "9"][..],
        &["set", "--broker", "9", "a=b"],
    ] {
        let mut args = vec!["config"];
        args.extend_from_slice(verb);
        let elsewhere = odradek(&broker, &args);
        assert!(
            String::from_utf8_lossy(&elsewhere.stderr)
                .contains("no broker 9 in the cluster (brokers: 1)"),
            "{}",
            String::from_utf8_lossy(&elsewhere.stderr)
        );
    }
}

#[test]
fn completion_scripts_name_the_commands() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef odradek"),
        ("fish", "complete -c odradek"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_odradek"))
            .args(["completions", shell])
            .output()
            .expect("running odradek completions");
        let script = ok(out);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("reset-offsets"),
            "{shell} script lacks reset-offsets"
        );
    }
}

#[test]
fn reset_offsets_is_refused_while_the_group_has_members() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let broker = BrokerProcess::start();
    ok(odradek_with_stdin(&broker, &["produce", "busy"], "x\n"));
    let member: BaseConsumer = consumer(&broker.addr, &[("group.id", "busy-group")]);
    member.subscribe(&["busy"]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(15);
    while member.assignment().map_or(0, |a| a.count()) == 0 {
        assert!(Instant::now() < deadline, "no assignment");
        let _ = member.poll(Duration::from_millis(100));
    }
    let refused = odradek(
        &broker,
        &[
            "group",
            "reset-offsets",
            "busy-group",
            "--topic",
            "busy",
            "--to-earliest",
            "--execute",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("1 active members"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
