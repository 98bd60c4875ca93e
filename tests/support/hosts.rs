//! The dev environment's two Docker daemons (tests/devenv.sh): `a`, the
//! default socket, and `b`, a second daemon publishing on 127.0.0.2.

use std::process::Command;

pub const HOST_A: &str = "unix:///var/run/docker.sock";
pub const HOST_B: &str = "unix:///run/berth-dev/docker-b.sock";
/// Both daemons run on this machine and each picks ephemeral host ports on
/// its own, blind to the other's: host b publishes on another loopback
/// address so the two can never pick the same address and port.
pub const PUBLISH_B: &str = "127.0.0.2";
/// Where tests/devenv.sh keeps host b's pid.
pub const DOCKER_B_PIDFILE: &str = "/var/lib/berth-dev/docker-b/dockerd.pid";

/// `docker -H <host> ARGS…`: its stdout, panicking with its stderr unless
/// it succeeds.
#[track_caller]
pub fn docker(host: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker -H {host} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Ids of `app`'s containers on one daemon (of one release, when given),
/// running or not, sorted.
#[track_caller]
pub fn ids_on(host: &str, app: &str, release: Option<u64>) -> Vec<String> {
    let app_filter = format!("label=io.berth.app={app}");
    let release_filter = release.map(|r| format!("label=io.berth.release={r}"));
    let mut args = vec!["ps", "-aq", "--filter", &app_filter];
    if let Some(f) = &release_filter {
        args.extend(["--filter", f]);
    }
    let mut ids: Vec<String> = docker(host, &args)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

/// Fails, with the fix, unless both daemons answer.
pub fn require_two_daemons() {
    super::require_env();
    for host in [HOST_A, HOST_B] {
        let ok = Command::new("docker")
            .args(["-H", host, "info", "--format", "{{.ID}}"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "the Docker daemon at {host} does not answer: run `bash tests/devenv.sh up` (it starts the second daemon, host b)"
        );
    }
}

/// Removes an app's containers and network from both daemons when the test
/// ends, passed or not.
pub struct TwoHostGuard(pub String);

impl Drop for TwoHostGuard {
    fn drop(&mut self) {
        for host in [HOST_A, HOST_B] {
            let filter = format!("label=io.berth.app={}", self.0);
            if let Ok(out) = Command::new("docker")
                .args(["-H", host, "ps", "-aq", "--filter", &filter])
                .output()
            {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker")
                        .args(["-H", host, "rm", "-f"])
                        .args(&ids)
                        .output();
                }
            }
            let _ = Command::new("docker")
                .args(["-H", host, "network", "rm", &format!("berth-{}", self.0)])
                .output();
        }
    }
}
