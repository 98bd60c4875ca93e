//! A real `berth serve` process for the tests: on a free loopback port,
//! with a state directory of the test's, its log (stderr) in a file.
//! Killed by pid when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Serve {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Serve {
    /// Starts `berth serve --listen 127.0.0.1:0 EXTRA…` on `state_dir`
    /// with `BERTH_LOG=log_filter`; returns once it printed its address
    /// (at most 20 s).
    pub fn start(state_dir: &Path, log_filter: &str) -> Serve {
        Serve::start_with(state_dir, log_filter, &[])
    }

    pub fn start_with(state_dir: &Path, log_filter: &str, extra: &[&str]) -> Serve {
        Serve::start_env(state_dir, log_filter, extra, &[])
    }

    /// [`Serve::start_with`], with more environment (e.g. `BERTH_STORE`
    /// and `BERTH_SECRET_KEY` for a shared store).
    pub fn start_env(
        state_dir: &Path,
        log_filter: &str,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Serve {
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log = log_dir.path().join("serve.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("BERTH_STATE_DIR", state_dir)
            .env("BERTH_TEST_LABEL", "1")
            .env("BERTH_LOG", log_filter)
            .env_remove("BERTH_SECRET_KEY")
            .env_remove("BERTH_STORE")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start berth serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("berth serve printed no address within 20 s");
        let base = line
            .trim()
            .strip_prefix("berth serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from berth serve: {line:?}"))
            .to_owned();
        Serve {
            child,
            base,
            log,
            _log_dir: log_dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
