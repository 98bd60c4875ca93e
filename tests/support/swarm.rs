//! A single-node Docker Swarm on the dev environment's host b, for the
//! tests of the Swarm backend: made a manager on loopback when it is not
//! in a swarm, and put back as it was found when the test ends.

use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use super::hosts::{docker, require_two_daemons, HOST_B};

/// Serializes the Swarm tests of one test binary: each leaves the swarm as
/// it found it, which another one running at the same time would undo.
static SWARM: Mutex<()> = Mutex::new(());

/// Holds the Swarm tests of this binary one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    SWARM.lock().unwrap_or_else(|e| e.into_inner())
}

/// Host b as a single-node Swarm manager for one test. On drop: removes
/// the test's services (by their `io.berth.test` label and the app's
/// name) and its routes on host b's ingress, and leaves the swarm if this
/// guard created it.
pub struct SwarmGuard {
    app: String,
    created: bool,
    _serial: MutexGuard<'static, ()>,
}

fn swarm_state() -> String {
    docker(HOST_B, &["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .trim()
        .to_owned()
}

impl SwarmGuard {
    pub fn single_node(app: &str) -> SwarmGuard {
        require_two_daemons();
        let serial = serial();
        let state = swarm_state();
        let created = match state.as_str() {
            "active" => false,
            "inactive" => {
                let port = super::free_port();
                docker(
                    HOST_B,
                    &[
                        "swarm",
                        "init",
                        "--advertise-addr",
                        "127.0.0.1",
                        "--listen-addr",
                        &format!("127.0.0.1:{port}"),
                    ],
                );
                true
            }
            other => panic!("host b's swarm is {other:?}; expected active or inactive"),
        };
        SwarmGuard {
            app: app.to_owned(),
            created,
            _serial: serial,
        }
    }
}

/// Names of the services on host b carrying `label` (`key=value`).
pub fn services_with(label: &str) -> Vec<String> {
    let mut names: Vec<String> = docker(
        HOST_B,
        &[
            "service",
            "ls",
            "--filter",
            &format!("label={label}"),
            "--format",
            "{{.Name}}",
        ],
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    names.sort();
    names
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        // The app's services, and those of apps named `APP-…` (a test's
        // `count`): the name filter matches prefixes.
        let prefix = format!("{}-", self.app);
        let names: Vec<String> = Command::new("docker")
            .args(["-H", HOST_B, "service", "ls", "--format", "{{.Name}}"])
            .args(["--filter", "label=io.berth.managed"])
            .args(["--filter", &format!("name={prefix}")])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter(|n| n.starts_with(&prefix))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if !names.is_empty() {
            let _ = Command::new("docker")
                .args(["-H", HOST_B, "service", "rm"])
                .args(&names)
                .output();
        }
        // Its routes on host b's ingress too (a test that failed half-way
        // leaves them), while the daemon is still a manager.
        super::forget_routes(HOST_B, &self.app);
        if self.created {
            let _ = Command::new("docker")
                .args(["-H", HOST_B, "swarm", "leave", "--force"])
                .output();
        }
    }
}
