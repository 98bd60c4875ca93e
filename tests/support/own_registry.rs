//! A registry a test owns: Debian's `docker-registry` on a free loopback
//! port with its own htpasswd (bcrypt) file and storage, started by the
//! test and stopped by pid when it is dropped. For passwords the shared
//! dev registries do not have, and for rotating a password for real.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OwnRegistry {
    pub addr: String,
    pub user: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRegistry {
    /// Starts a registry that accepts only `user` / `password`.
    pub fn start(user: &str, password: &str) -> OwnRegistry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut registry = OwnRegistry {
            addr: format!("127.0.0.1:{port}"),
            user: user.to_owned(),
            dir: tempfile::Builder::new()
                .prefix("berth-own-registry-")
                .tempdir()
                .expect("registry dir"),
            child: None,
        };
        registry.write_config();
        registry.set_password(password);
        registry
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    fn write_config(&self) {
        let dir = self.dir.path().display();
        std::fs::write(
            self.config(),
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {dir}/storage\nhttp:\n  addr: {}\n  secret: own-registry\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {dir}/htpasswd\n",
                self.addr
            ),
        )
        .expect("registry config");
    }

    /// Makes `password` the only one accepted (the registry restarted, as
    /// it reads its htpasswd file when it starts).
    pub fn set_password(&mut self, password: &str) {
        self.stop();
        let out = Command::new("htpasswd")
            .args(["-Bbc"])
            .arg(self.dir.path().join("htpasswd"))
            .args([&self.user, password])
            .output()
            .expect("run htpasswd (apache2-utils, installed by tests/devenv.sh)");
        assert!(
            out.status.success(),
            "htpasswd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::File::create(self.dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry (installed by tests/devenv.sh)");
        self.child = Some(child);
        let begun = Instant::now();
        loop {
            let answer = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "2",
                ])
                .arg(format!("http://{}/v2/", self.addr))
                .output()
                .expect("curl");
            if String::from_utf8_lossy(&answer.stdout) == "401" {
                return;
            }
            assert!(
                begun.elapsed() < Duration::from_secs(20),
                "the registry on {} did not answer 401 on /v2/ within 20 s: {}",
                self.addr,
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the registry (it answers nothing until `set_password`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}
