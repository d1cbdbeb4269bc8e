//! Several "hosts" on one machine, for cluster tests that need to cut a node off or slow it
//! down: each host is a Linux network namespace with its own address, and all of them hang
//! off one bridge that the test's own namespace is attached to as well. Needs root and
//! iproute2 (`ip`). Delays (`tc netem`) are left out: this machine's kernel has no netem.
//!
//! For a network with id `odradek-<pid>-<start time>-<n>`:
//! - the switch namespace `<id>-sw` holds the bridge `br0`, one port `h<i>` per host, and
//!   `uplink`;
//! - host namespace `<id>-h<i>` holds `lo` and `eth0` (the peer of `h<i>`), 10.A.B.(i+1)/24;
//! - the test's namespace holds `odk-10.A.B` (the peer of `uplink`), 10.A.B.254/24.
//!
//! The bridge gets a namespace of its own rather than living in the test's: with
//! br_netfilter loaded, bridged frames go through the iptables FORWARD chain of the
//! namespace that holds the bridge, and a host firewall there (Docker sets FORWARD to DROP)
//! would silently eat traffic between hosts. A fresh namespace has no rules, so nothing
//! global has to change.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Every namespace this module creates starts with this, so that a later run can find and
/// remove the ones a crashed run left behind.
const PREFIX: &str = "odradek-";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// N hosts, each in its own network namespace, on one private bridge that the test process
/// (its own namespace) is also attached to, so the test can reach every host directly.
pub struct Network {
    id: String,
    hosts: usize,
    /// 10.A.B.0/24; `None` until the subnet is claimed, so that `drop` after a failed
    /// `create` knows there is no uplink to delete.
    subnet: Option<[u8; 2]>,
}

impl Network {
    /// Creates `hosts` namespaces. Names and the subnet are unique per instance, so tests
    /// running in parallel (several test binaries, several threads) never collide. Panics
    /// with a clear message when not root or `ip` is missing.
    pub fn create(hosts: usize) -> Network {
        assert!(
            (1..=250).contains(&hosts),
            "a network has 1 to 250 hosts, not {hosts}"
        );
        preflight();
        remove_stale();
        let pid = std::process::id();
        let start = start_time(pid).expect("reading our own /proc/self/stat");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // From here on a panic drops `network`, which removes whatever was made so far.
        let mut network = Network {
            id: format!("{PREFIX}{pid}-{start}-{n}"),
            hosts: 0,
            subnet: None,
        };
        let sw = network.switch_ns();
        ip(&format!("netns add {sw}"));
        if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
            // Belt and braces on top of the empty rule set (bridged frames then skip iptables
            // altogether, which also keeps them cheap), so a missing `sysctl` is no reason
            // to fail.
            let sysctl = format!(
                "netns exec {sw} sysctl -q -w net.bridge.bridge-nf-call-iptables=0 \
                 net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0"
            );
            let _ = try_run(Command::new("ip").args(sysctl.split_whitespace()));
        }
        // STP is off by default; with forward_delay 0 as well a port forwards as soon as it
        // is up, so `heal` takes effect at once.
        ip(&format!("-n {sw} link add br0 type bridge forward_delay 0"));
        ip(&format!("-n {sw} link set dev br0 up"));

        let [a, b] = network.claim_subnet(pid, n);
        network.subnet = Some([a, b]);
        let uplink = network.uplink();
        ip(&format!("-n {sw} link set dev uplink master br0 up"));
        ip(&format!("addr add 10.{a}.{b}.254/24 dev {uplink}"));
        ip(&format!("link set dev {uplink} up"));

        for i in 0..hosts {
            let ns = network.host_ns(i);
            ip(&format!("netns add {ns}"));
            network.hosts = i + 1;
            ip(&format!(
                "-n {sw} link add h{i} type veth peer name eth0 netns {ns}"
            ));
            ip(&format!("-n {sw} link set dev h{i} master br0 up"));
            ip(&format!(
                "-n {ns} addr add 10.{a}.{b}.{}/24 dev eth0",
                i + 1
            ));
            ip(&format!("-n {ns} link set dev eth0 up"));
            ip(&format!("-n {ns} link set dev lo up"));
        }
        for i in 0..hosts {
            network.wait_until_up(i);
        }
        network
    }

    /// The address of host `host` (0-based): 10.A.B.(host+1).
    pub fn addr(&self, host: usize) -> IpAddr {
        self.check(host);
        let [a, b] = self.subnet.expect("network created");
        IpAddr::V4(Ipv4Addr::new(10, a, b, host as u8 + 1))
    }

    /// A Command that runs `program` inside host `host`'s namespace. `ip netns exec` execs
    /// the program rather than forking, so the child's pid is the program's own (signals sent
    /// to it reach the program).
    pub fn command(&self, host: usize, program: impl AsRef<OsStr>) -> Command {
        self.check(host);
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec"])
            .arg(self.host_ns(host))
            .arg(program);
        command
    }

    /// Cuts host `host` off from every other host and from the test process. Its port on the
    /// bridge goes down, so packets vanish the way they do in a real partition: connections
    /// hang and time out rather than being refused, and the host keeps its address and
    /// routes.
    pub fn isolate(&self, host: usize) {
        self.check(host);
        ip(&format!(
            "-n {} link set dev h{host} down",
            self.switch_ns()
        ));
    }

    /// Undoes `isolate`; returns once the link carries traffic again.
    pub fn heal(&self, host: usize) {
        self.check(host);
        ip(&format!("-n {} link set dev h{host} up", self.switch_ns()));
        self.wait_until_up(host);
    }

    fn check(&self, host: usize) {
        assert!(
            host < self.hosts,
            "host {host} does not exist; the network has {} hosts",
            self.hosts
        );
    }

    fn switch_ns(&self) -> String {
        format!("{}-sw", self.id)
    }

    fn host_ns(&self, host: usize) -> String {
        format!("{}-h{host}", self.id)
    }

    /// Named after the subnet: interface names in the test's namespace are the one thing
    /// every concurrent test process shares, so creating this interface is what claims the
    /// subnet (at most 14 bytes, within Linux's 15).
    fn uplink(&self) -> String {
        let [a, b] = self.subnet.expect("subnet claimed");
        format!("odk-10.{a}.{b}")
    }

    /// (namespace, device) for both ends of host `host`'s link: the bridge port and the
    /// host's own `eth0`.
    fn link_ends(&self, host: usize) -> [(String, String); 2] {
        [
            (self.switch_ns(), format!("h{host}")),
            (self.host_ns(host), "eth0".to_string()),
        ]
    }

    /// Picks a 10.A.B.0/24 no route in the test's namespace overlaps, and creates the uplink
    /// pair; the kernel refusing a duplicate name is what keeps two processes that pick the
    /// same subnet at the same moment apart.
    fn claim_subnet(&self, pid: u32, n: u32) -> [u8; 2] {
        let routes = ip("-4 route show table all");
        let taken: Vec<(u32, u32)> = routes.lines().filter_map(route_prefix).collect();
        // Spread the starting point so concurrent processes rarely try the same subnets.
        let seed = pid.wrapping_mul(2_654_435_761) ^ n.wrapping_mul(40_503);
        for k in 0..1024u32 {
            let index = seed.wrapping_add(k.wrapping_mul(7919)) & 0xffff;
            let [a, b] = [(index >> 8) as u8, index as u8];
            let net = u32::from(Ipv4Addr::new(10, a, b, 0));
            let overlaps = taken.iter().any(|&(prefix, len)| {
                let mask = u32::MAX << (32 - len.min(24));
                prefix & mask == net & mask
            });
            if overlaps {
                continue;
            }
            let name = format!("odk-10.{a}.{b}");
            let sw = self.switch_ns();
            let add = format!("-n {sw} link add uplink type veth peer name {name} netns {pid}");
            match try_run(Command::new("ip").args(add.split_whitespace())) {
                Ok(_) => return [a, b],
                Err(failure) if failure.contains("File exists") => continue,
                Err(failure) => panic!("{failure}"),
            }
        }
        panic!("no free 10.A.B.0/24 subnet for a test network");
    }

    fn wait_until_up(&self, host: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for (ns, dev) in self.link_ends(host) {
            loop {
                // operstate UP is set by the same kernel work that reactivates the queue
                // after a carrier change, so traffic flows once both ends say so.
                let state = ip(&format!("-n {ns} -o link show dev {dev}"));
                if state.contains("state UP") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{dev} in {ns} did not come up: {state}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let hosts: Vec<String> = (0..self.hosts).map(|i| self.host_ns(i)).collect();
        // std's Child does not kill on drop, so after a failed assertion a broker would
        // outlive the test; anything still running inside is ours.
        for ns in &hosts {
            kill_all_in(ns);
        }
        // Namespaces are torn down asynchronously; deleting the uplink explicitly releases
        // the subnet's name before `drop` returns.
        if self.subnet.is_some() {
            let _ = Command::new("ip")
                .args(["link", "del", "dev", &self.uplink()])
                .output();
        }
        for ns in hosts.iter().chain([&self.switch_ns()]) {
            let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        }
    }
}

fn preflight() {
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "network namespace tests must run as root (euid is {euid})"
    );
    if let Err(e) = Command::new("ip").arg("-V").output() {
        panic!("network namespace tests need iproute2's `ip` on PATH: {e}");
    }
}

/// Removes namespaces left by test processes that died without dropping their Network:
/// those whose creating process (pid and start time, so a reused pid does not count) is
/// gone.
fn remove_stale() {
    let Ok(out) = try_run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for name in out.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let mut fields = rest.split('-');
        let (Some(Ok(pid)), Some(Ok(start))) = (
            fields.next().map(str::parse::<u32>),
            fields.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        if start_time(pid) == Some(start) {
            continue;
        }
        kill_all_in(name);
        // Another process may be removing the same namespace; either way it is gone.
        let _ = Command::new("ip").args(["netns", "delete", name]).output();
    }
}

/// The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in field 2 may contain spaces; fields after it are plain.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

fn kill_all_in(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        // SAFETY: plain kill(2); the pid was just listed as living in our namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The prefix and length of a line of `ip -4 route show table all`, None for `default`.
fn route_prefix(line: &str) -> Option<(u32, u32)> {
    const TYPES: [&str; 10] = [
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "anycast",
        "unreachable",
        "blackhole",
        "prohibit",
        "throw",
        "nat",
    ];
    let mut words = line.split_whitespace();
    let mut dest = words.next()?;
    if TYPES.contains(&dest) {
        dest = words.next()?;
    }
    let (addr, len) = dest.split_once('/').unwrap_or((dest, "32"));
    let len: u32 = len.parse().ok()?;
    if len == 0 {
        // A default route, which every subnet "overlaps" harmlessly.
        return None;
    }
    Some((u32::from(addr.parse::<Ipv4Addr>().ok()?), len))
}

/// Runs `ip` with `args`, split on whitespace (no name here contains any).
fn ip(args: &str) -> String {
    run(Command::new("ip").args(args.split_whitespace()))
}

/// Runs `command` to completion; panics with its command line and stderr if it fails.
fn run(command: &mut Command) -> String {
    try_run(command).unwrap_or_else(|failure| panic!("{failure}"))
}

/// Runs `command` to completion: its stdout, or a description of the failure that names
/// the command line and carries its stderr.
fn try_run(command: &mut Command) -> Result<String, String> {
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let output = command
        .output()
        .map_err(|e| format!("could not run `{line}`: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{line}` failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
