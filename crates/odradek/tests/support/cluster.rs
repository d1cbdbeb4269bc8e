//! A cluster of real broker processes for the multi-node tests: node `i` (1-based) listens
//! on its own loopback address, 127.0.0.i, with its own data dir. By default every node is
//! a voter of the metadata quorum and a broker (Kafka's combined mode); `start_roles` gives
//! each node its own role. Nodes can be killed (`-9`), paused (`SIGSTOP`), stopped
//! (`SIGTERM`) and restarted on the same addresses and data.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the broker binary on a node's host (a network namespace, or this one).
pub type Launcher = Box<dyn Fn() -> Command + Send>;

/// What a node runs as (`process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A voter and a broker.
    Combined,
    /// A voter only: no client listener.
    Controller,
    /// A broker only, with Kafka 4's usual config for one: no controller listener, and the
    /// quorum found through `controller.quorum.bootstrap.servers`.
    Broker,
    /// A controller joining a running quorum: it names the voters as its bootstrap
    /// servers, and observes until an AddRaftVoter makes it a voter.
    JoiningController,
}

impl Role {
    fn is_controller(self) -> bool {
        matches!(
            self,
            Role::Combined | Role::Controller | Role::JoiningController
        )
    }
}

pub struct ClusterNode {
    pub id: i32,
    pub role: Role,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Where the other voters reach this node's quorum listener.
    pub controller: SocketAddr,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    launcher: Launcher,
}

pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    voters: String,
    args: Vec<String>,
    _tmp: tempfile::TempDir,
}

/// A free port on `ip`, as the kernel hands them out: the listener is closed again at once,
/// so a node restarted later binds the same port.
fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl ClusterNode {
    fn new(dir: &std::path::Path, id: i32, ip: IpAddr, launcher: Launcher, role: Role) -> Self {
        // A loopback address is shared with every other test; a host of its own (a
        // network namespace) has Kafka's usual ports free.
        let (client, controller) = if ip.is_loopback() {
            (free_port(ip), free_port(ip))
        } else {
            (9092, 9093)
        };
        ClusterNode {
            id,
            role,
            addr: SocketAddr::new(ip, client),
            controller: SocketAddr::new(ip, controller),
            data_dir: dir.join(format!("node-{id}")),
            log_path: dir.join(format!("node-{id}.log")),
            child: None,
            launcher,
        }
    }
}

impl Cluster {
    /// Starts `n` nodes on 127.0.0.1 … 127.0.0.n and waits until each serves.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    /// As [`start`](Self::start), with extra broker arguments for every node (`{id}` in
    /// an argument stands for the node's id, e.g. `broker.rack=rack-{id}`).
    pub fn start_with(n: usize, args: &[&str]) -> Cluster {
        Self::start_with_env(n, args, &[])
    }

    /// As [`start_with`](Self::start_with), with extra environment variables for every
    /// node's process, kept across restarts (`{id}` in a value stands for the node's id).
    pub fn start_with_env(n: usize, args: &[&str], env: &[(&str, &str)]) -> Cluster {
        let hosts = (1..=n)
            .map(|i| {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8));
                let env: Vec<(String, String)> = env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.replace("{id}", &i.to_string())))
                    .collect();
                let launcher: Launcher = Box::new(move || {
                    let mut command = Command::new(env!("CARGO_BIN_EXE_odradek"));
                    command.envs(env.iter().map(|(k, v)| (k, v)));
                    command
                });
                (ip, launcher)
            })
            .collect();
        Self::start_on(hosts, args)
    }

    /// Starts node `i` (1-based) on 127.0.0.i in the role `roles[i - 1]`.
    pub fn start_roles(roles: &[Role]) -> Cluster {
        let hosts = roles
            .iter()
            .enumerate()
            .map(|(i, &role)| {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8 + 1));
                let launcher: Launcher = Box::new(|| Command::new(env!("CARGO_BIN_EXE_odradek")));
                (ip, launcher, role)
            })
            .collect();
        Self::start_nodes(hosts, &[])
    }

    /// As [`start_roles`](Self::start_roles), with extra broker arguments for every node.
    pub fn start_roles_with(roles: &[Role], args: &[&str]) -> Cluster {
        let hosts = roles
            .iter()
            .enumerate()
            .map(|(i, &role)| {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8 + 1));
                let launcher: Launcher = Box::new(|| Command::new(env!("CARGO_BIN_EXE_odradek")));
                (ip, launcher, role)
            })
            .collect();
        Self::start_nodes(hosts, args)
    }

    /// Starts one combined node per host: its address, and how to run a program there.
    pub fn start_on(hosts: Vec<(IpAddr, Launcher)>, args: &[&str]) -> Cluster {
        let hosts = hosts
            .into_iter()
            .map(|(ip, launcher)| (ip, launcher, Role::Combined))
            .collect();
        Self::start_nodes(hosts, args)
    }

    fn start_nodes(hosts: Vec<(IpAddr, Launcher, Role)>, args: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<ClusterNode> = hosts
            .into_iter()
            .enumerate()
            .map(|(i, (ip, launcher, role))| {
                ClusterNode::new(tmp.path(), i as i32 + 1, ip, launcher, role)
            })
            .collect();
        let voters = nodes
            .iter()
            .filter(|n| n.role.is_controller())
            .map(|n| format!("{}@{}", n.id, n.controller))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            nodes,
            voters,
            args: args.iter().map(|a| a.to_string()).collect(),
            _tmp: tmp,
        };
        // All at once: a node serves only once a quorum of voters has elected a leader.
        let ids: Vec<i32> = cluster.nodes.iter().map(|n| n.id).collect();
        let starts: Vec<usize> = ids.iter().map(|&id| cluster.launch(id)).collect();
        for (&id, start) in ids.iter().zip(starts) {
            cluster.wait_ready(id, start);
        }
        cluster
    }

    /// Starts one more node, in `role`, on the next loopback address, and waits until it
    /// serves. Returns its id.
    pub fn add_node(&mut self, role: Role) -> i32 {
        let id = self.nodes.len() as i32 + 1;
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, id as u8));
        let launcher: Launcher = Box::new(|| Command::new(env!("CARGO_BIN_EXE_odradek")));
        let node = ClusterNode::new(self._tmp.path(), id, ip, launcher, role);
        self.nodes.push(node);
        let start = self.launch(id);
        self.wait_ready(id, start);
        id
    }

    pub fn node(&self, id: i32) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    fn node_mut(&mut self, id: i32) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    /// Client addresses of every running broker, comma-separated (`bootstrap.servers`).
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && matches!(n.role, Role::Combined | Role::Broker))
            .map(|n| n.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Spawns node `id`; returns where its log stood before, to find this run's lines.
    fn launch(&mut self, id: i32) -> usize {
        let voters = self.voters.clone();
        let args = self.args.clone();
        let node = self.node_mut(id);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("log file");
        let start = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let mut command = (node.launcher)();
        command
            .arg("broker")
            .args(["--node-id", &node.id.to_string()]);
        if matches!(node.role, Role::Broker | Role::JoiningController) {
            // Kafka 4's way to find the quorum: any voters' addresses.
            let servers: Vec<&str> = voters
                .split(',')
                .filter_map(|v| v.split_once('@').map(|(_, addr)| addr))
                .collect();
            command.args([
                "--set",
                &format!("controller.quorum.bootstrap.servers={}", servers.join(",")),
            ]);
        } else {
            command.args(["--controller-quorum", &voters]);
        }
        if matches!(node.role, Role::Combined | Role::Broker) {
            command.args(["--listen", &node.addr.to_string()]);
        }
        if node.role.is_controller() {
            command.args(["--controller-listen", &node.controller.to_string()]);
        }
        match node.role {
            Role::Combined => {}
            Role::Controller | Role::JoiningController => {
                command.args(["--process-roles", "controller"]);
            }
            Role::Broker => {
                command.args(["--process-roles", "broker"]);
            }
        }
        let child = command
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--http", ""])
            .args(args.iter().map(|a| a.replace("{id}", &node.id.to_string())))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning odradek");
        node.child = Some(child);
        start
    }

    fn wait_ready(&mut self, id: i32, start: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log(id);
            let run = log.get(start..).unwrap_or_default();
            let ready = match self.node(id).role {
                Role::Controller | Role::JoiningController => "odradek controller ready",
                Role::Combined | Role::Broker => "odradek broker ready",
            };
            if run.contains(ready) {
                return;
            }
            let node = self.node_mut(id);
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("node {id} exited with {status} before serving:\n{run}");
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not serve within 30 s:\n{run}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Node `id`'s log, every run of it.
    pub fn log(&self, id: i32) -> String {
        std::fs::read_to_string(&self.node(id).log_path).unwrap_or_default()
    }

    /// Every node's log, labelled: for a failing assertion's message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("===== node {} =====\n{}", n.id, self.log(n.id)))
            .collect()
    }

    fn signal(&self, id: i32, signal: i32) {
        let child = self.node(id).child.as_ref().expect("node running");
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(child.id() as i32, signal) };
        assert_eq!(rc, 0, "signal {signal} to node {id}");
    }

    /// kill -9: no chance to flush, deregister or say goodbye.
    pub fn kill9(&mut self, id: i32) {
        let mut child = self.node_mut(id).child.take().expect("node running");
        child.kill().expect("SIGKILL");
        child.wait().expect("waiting for the node");
    }

    /// SIGTERM, and waits for a clean exit (status 0) within 30 s.
    pub fn stop(&mut self, id: i32) {
        self.signal(id, libc::SIGTERM);
        let mut child = self.node_mut(id).child.take().expect("node running");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for the node") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "node {id} did not exit within 30 s of SIGTERM:\n{}",
                    self.log(id)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "node {id} exited with {status}:\n{}",
            self.log(id)
        );
    }

    /// SIGSTOP: the process is frozen, its sockets stay open (a hung machine).
    pub fn pause(&self, id: i32) {
        self.signal(id, libc::SIGSTOP);
    }

    pub fn resume(&self, id: i32) {
        self.signal(id, libc::SIGCONT);
    }

    /// Starts a killed or stopped node again on its addresses and data, and waits until it
    /// serves.
    pub fn restart(&mut self, id: i32) {
        assert!(
            self.node(id).child.is_none(),
            "stop or kill node {id} first"
        );
        let start = self.launch(id);
        self.wait_ready(id, start);
    }

    pub fn is_running(&self, id: i32) -> bool {
        self.node(id).child.is_some()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // A paused process ignores nothing but SIGKILL, which is what this sends.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `timeout`; panics with
/// `what` otherwise.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
