//! A two-node Docker Swarm for the tests of the Swarm backend: host b of
//! the dev environment as the manager, and a worker that is a dockerd of
//! the test's own in a network namespace of the test's own, joined over a
//! veth pair (`10.230.N.1` on the machine, `10.230.N.2` in the namespace).
//! The worker reaches the loopback registry through two forwarders:
//! `busybox nc` on its own `127.0.0.1:5000`, and a relay on the machine's
//! side of the veth. Everything is put back when the guard drops: the
//! test's services and routes removed, both nodes out of the swarm, the
//! worker's daemon stopped by its pid, the namespace, the veth and the
//! directories removed.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use crate::latency_relay::{Endpoint, LatencyRelay};
use crate::support::hosts::{docker, require_two_daemons, HOST_B};

/// How long the worker's daemon gets to answer, and to stop.
const DAEMON_WAIT: Duration = Duration::from_secs(60);

pub struct TwoNodes {
    app: String,
    /// The namespace, and the veth's end on the machine.
    netns: String,
    veth: String,
    /// `10.230.N`: `.1` is the manager's side, `.2` the worker's.
    prefix: String,
    /// Its socket, pid file and exec root (short: containerd's sockets
    /// live under it).
    dir: PathBuf,
    /// Its images and containers.
    data: PathBuf,
    dockerd: Option<Child>,
    forwarder: Option<Child>,
    /// Keeps the machine-side relay running.
    _relay: Option<(tokio::runtime::Runtime, LatencyRelay)>,
    _serial: MutexGuard<'static, ()>,
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn must(program: &str, args: &[&str]) -> String {
    let (ok, out) = run(program, args);
    assert!(ok, "{program} {args:?} failed: {out}");
    out
}

impl TwoNodes {
    /// The worker's Docker API.
    pub fn worker_host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// The worker's address in the swarm.
    pub fn worker_addr(&self) -> String {
        format!("{}.2", self.prefix)
    }

    /// Host b as the manager (it must not be in a swarm) and a worker in a
    /// namespace, for `app`'s test.
    pub fn start(app: &str) -> TwoNodes {
        require_two_daemons();
        let serial = crate::support::swarm::serial();
        let state = docker(HOST_B, &["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        assert_eq!(
            state.trim(),
            "inactive",
            "host b must not be in a swarm for the two-node test"
        );
        let id = std::process::id();
        let n = 20 + id % 200;
        let dir = PathBuf::from(format!("/run/berth-n2-{id}"));
        let data = PathBuf::from(format!("/var/lib/berth-dev/n2-{id}"));
        for d in [&dir, &data] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).expect("the worker's directories");
        }
        let mut nodes = TwoNodes {
            app: app.to_owned(),
            netns: format!("berth-n2-{id}"),
            veth: format!("bn2h{}", id % 100_000),
            prefix: format!("10.230.{n}"),
            dir,
            data,
            dockerd: None,
            forwarder: None,
            _relay: None,
            _serial: serial,
        };
        nodes.network();
        nodes.registry_forwarders();
        nodes.worker_daemon();
        nodes.swarm();
        nodes
    }

    fn network(&self) {
        let (ns, veth, p) = (&self.netns, &self.veth, &self.prefix);
        let peer = format!("{veth}p");
        must("ip", &["netns", "add", ns]);
        must(
            "ip",
            &["link", "add", veth, "type", "veth", "peer", "name", &peer],
        );
        must("ip", &["link", "set", &peer, "netns", ns]);
        must("ip", &["addr", "add", &format!("{p}.1/24"), "dev", veth]);
        must("ip", &["link", "set", veth, "up"]);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.as_str(), "ip"];
            all.extend_from_slice(args);
            must("ip", &all);
        };
        in_ns(&["link", "set", "lo", "up"]);
        in_ns(&["addr", "add", &format!("{p}.2/24"), "dev", &peer]);
        in_ns(&["link", "set", &peer, "up"]);
    }

    /// The registry on the worker's `127.0.0.1:5000`, as on the manager.
    fn registry_forwarders(&mut self) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let relay = rt
            .block_on(LatencyRelay::tcp_at(
                &format!("{}.1:5000", self.prefix),
                Endpoint::Tcp("127.0.0.1:5000".into()),
                Duration::ZERO,
                Duration::from_secs(900),
            ))
            .expect("the relay to the registry");
        self._relay = Some((rt, relay));
        let target = format!("{}.1", self.prefix);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "busybox",
                "nc",
                "-ll",
                "-p",
                "5000",
                "-e",
            ])
            .args(["busybox", "nc", &target, "5000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox nc in the namespace");
        self.forwarder = Some(child);
    }

    fn worker_daemon(&mut self) {
        let dir = &self.dir;
        std::fs::write(dir.join("daemon.json"), "{}").expect("daemon.json");
        let log = std::fs::File::create(dir.join("dockerd.log")).expect("log");
        let sock = dir.join("docker.sock");
        // nsenter, not `ip netns exec`: that one mounts a /sys of its own,
        // without the cgroup hierarchy dockerd needs.
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", sock.display()))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--data-root")
            .arg(&self.data)
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            // In a namespace of its own: its bridge and rules are its own.
            .args(["--iptables=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("dockerd in the namespace");
        self.dockerd = Some(child);
        let begun = Instant::now();
        loop {
            let (ok, _) = run("docker", &["-H", &self.worker_host(), "version"]);
            if ok {
                break;
            }
            assert!(
                begun.elapsed() < DAEMON_WAIT,
                "the worker's dockerd did not answer: {}",
                tail(&dir.join("dockerd.log"))
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn swarm(&self) {
        let manager = format!("{}.1", self.prefix);
        let port = crate::support::free_port();
        docker(
            HOST_B,
            &[
                "swarm",
                "init",
                "--advertise-addr",
                &manager,
                "--listen-addr",
                &format!("{manager}:{port}"),
            ],
        );
        let token = docker(HOST_B, &["swarm", "join-token", "-q", "worker"]);
        must(
            "docker",
            &[
                "-H",
                &self.worker_host(),
                "swarm",
                "join",
                "--token",
                token.trim(),
                "--advertise-addr",
                &self.worker_addr(),
                &format!("{manager}:{port}"),
            ],
        );
    }

    /// The swarm node ids of the manager and of the worker (both nodes
    /// share this machine's hostname, so tests tell them apart by id).
    pub fn node_ids(&self) -> (String, String) {
        let manager = docker(HOST_B, &["info", "--format", "{{.Swarm.NodeID}}"]);
        let (_, worker) = run(
            "docker",
            &[
                "-H",
                &self.worker_host(),
                "info",
                "--format",
                "{{.Swarm.NodeID}}",
            ],
        );
        (manager.trim().to_owned(), worker.trim().to_owned())
    }

    /// Stops the worker's daemon (by its pid), as a node that dies.
    pub fn stop_worker(&mut self) {
        if let Some(mut child) = self.dockerd.take() {
            stop_child(&mut child);
        }
    }
}

fn stop_child(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let begun = Instant::now();
    while begun.elapsed() < DAEMON_WAIT {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        let names = docker_quiet(
            HOST_B,
            &[
                "service",
                "ls",
                "-q",
                "--filter",
                &format!("label=io.berth.app={}", self.app),
            ],
        );
        let names: Vec<&str> = names.split_whitespace().collect();
        if !names.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(names);
            docker_quiet(HOST_B, &args);
        }
        crate::support::forget_routes(HOST_B, &self.app);
        if self.dockerd.is_some() {
            let worker = self.worker_host();
            docker_quiet(&worker, &["swarm", "leave", "--force"]);
        }
        docker_quiet(HOST_B, &["swarm", "leave", "--force"]);
        if let Some(mut child) = self.dockerd.take() {
            stop_child(&mut child);
        }
        if let Some(mut child) = self.forwarder.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = run("ip", &["link", "del", &self.veth]);
        let _ = run("ip", &["netns", "del", &self.netns]);
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// `docker -H HOST ARGS…`, its output, failures ignored (clean-up).
fn docker_quiet(host: &str, args: &[&str]) -> String {
    Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
