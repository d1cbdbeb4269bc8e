//! The network-namespace harness itself (support/netns.rs): a real broker runs inside one
//! host, and `isolate`/`heal`/`delay` must do to its traffic what they promise, seen both from
//! the test process and from another host. Needs root and iproute2; the two tests run in
//! parallel, which also checks that two networks in one process do not collide.

mod support;

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::netns::Network;

const PORT: u16 = 9092;

#[test]
fn isolate_cuts_a_host_off_and_heal_reconnects_it() {
    let network = Network::create(2);
    let broker_addr = SocketAddr::new(network.addr(0), PORT);
    let (mut broker, log_path, _tmp) = start_broker(&network, 0);

    // `ip netns exec` must have exec'd the broker, not forked it: chaos tests signal this pid.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", broker.id())).expect("comm");
    assert_eq!(comm.trim(), "odradek", "the spawned pid is not the broker");

    assert!(from_test(broker_addr), "test process cannot reach host 0");
    assert!(
        from_host(&network, 1, broker_addr),
        "host 1 cannot reach host 0"
    );

    network.isolate(0);
    assert!(
        !from_test(broker_addr),
        "isolated host 0 is still reachable from the test process"
    );
    assert!(
        !from_host(&network, 1, broker_addr),
        "isolated host 0 is still reachable from host 1"
    );

    network.heal(0);
    // Neighbour entries went stale while the link was down, so the first attempt may have to
    // re-resolve; allow a few before calling it a failure.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(from_test(broker_addr) && from_host(&network, 1, broker_addr)) {
        assert!(
            Instant::now() < deadline,
            "host 0 unreachable after heal:\n{}",
            log(&log_path)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        broker.try_wait().expect("checking the broker").is_none(),
        "the broker exited while isolated:\n{}",
        log(&log_path)
    );

    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(broker.id() as i32, libc::SIGKILL) }, 0);
    let status = broker.wait().expect("waiting for the broker");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "broker ended with {status}"
    );
}

fn start_broker(network: &Network, host: usize) -> (Child, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let log_path = tmp.path().join("broker.log");
    let listen = SocketAddr::new(network.addr(host), PORT);
    let mut broker = network
        .command(host, env!("CARGO_BIN_EXE_odradek"))
        .arg("broker")
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["--listen", &listen.to_string(), "--http", ""])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log_path).expect("log file"))
        .spawn()
        .expect("spawning odradek in a host namespace");
    wait_until_ready(&mut broker, &log_path);
    (broker, log_path, tmp)
}

fn wait_until_ready(broker: &mut Child, log_path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log(log_path).contains("odradek broker ready") {
        if let Some(status) = broker.try_wait().expect("checking the broker") {
            panic!(
                "broker exited with {status} before becoming ready:\n{}",
                log(log_path)
            );
        }
        assert!(
            Instant::now() < deadline,
            "broker did not become ready:\n{}",
            log(log_path)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A TCP connect from the test process's own namespace.
fn from_test(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// A TCP connect from inside host `host`'s namespace, by bash's /dev/tcp; `timeout` stands in
/// for a connect timeout, since a SYN into a partition is otherwise retried for minutes.
fn from_host(network: &Network, host: usize, addr: SocketAddr) -> bool {
    let ip: IpAddr = addr.ip();
    network
        .command(host, "timeout")
        .args(["2", "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{ip}/{}", addr.port()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running bash in a host namespace")
        .success()
}
