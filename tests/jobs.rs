//! Jobs (issue 11) with the real parts: the `berth` command deploys an app
//! with jobs to the local Docker Engine, real `berth serve` processes run
//! their schedules, and the runs journal (`berth runs --json`) and the
//! containers on the host are what the tests check.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth::devtools::fixtures::PLAIN_REGISTRY;
use serde_json::Value;
use support::serve::Serve;
use support::{require_env, unique_app, unique_tag, AppGuard};

/// A state directory and an app of one test.
struct Scratch {
    dir: tempfile::TempDir,
    app: String,
    _guard: AppGuard,
    /// `BERTH_STORE` and `BERTH_SECRET_KEY` of a PostgreSQL store (empty:
    /// the state directory's SQLite), and its database.
    store_env: Vec<(String, String)>,
    _db: Option<berth::devtools::pg::TestDatabase>,
}

impl Scratch {
    fn new(prefix: &str) -> Scratch {
        require_env();
        let app = unique_app(prefix);
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
            _guard: AppGuard(app.clone()),
            app,
            store_env: Vec::new(),
            _db: None,
        }
    }

    /// A scratch whose store is a PostgreSQL database of its own.
    fn on_postgres(prefix: &str) -> Scratch {
        let mut s = Scratch::new(prefix);
        let db = berth::devtools::pg::TestDatabase::create();
        let key = berth::store::SecretKey::generate(berth::store::KeySource::Environment)
            .expect("key")
            .expose_base64();
        s.store_env = vec![
            ("BERTH_STORE".to_owned(), db.url()),
            ("BERTH_SECRET_KEY".to_owned(), key),
        ];
        s._db = Some(db);
        s
    }

    /// A `berth serve` on this scratch's store, with a state directory of
    /// its own when `own_state` is given (another machine, as it were).
    fn serve(&self, own_state: Option<&Path>) -> Serve {
        Serve::start_env(
            own_state.unwrap_or(self.state()),
            "info",
            &[],
            &self.store_env,
        )
    }

    fn state(&self) -> &Path {
        self.dir.path()
    }

    fn berth(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .env("BERTH_STATE_DIR", self.state())
            .env("BERTH_TEST_LABEL", "1")
            .env_remove("BERTH_LOG")
            .env_remove("BERTH_SECRET_KEY")
            .env_remove("BERTH_STORE")
            .envs(self.store_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .expect("run berth")
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Output {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Writes the spec and applies it.
    fn apply(&self, spec: &str) -> Output {
        let file = self.dir.path().join("app.yaml");
        std::fs::write(&file, spec).expect("write spec");
        self.ok(&["apply", "-f", &file.display().to_string()])
    }

    /// The journal's runs of `job`, newest first.
    fn runs(&self, job: &str) -> Vec<Value> {
        let out = self.ok(&["runs", &self.app, job, "--json", "--limit", "200"]);
        let v: Value = serde_json::from_slice(&out.stdout).expect("runs json");
        v["runs"].as_array().cloned().unwrap_or_default()
    }

    /// Waits (at most `limit`) until `done` holds for the runs of `job`.
    #[track_caller]
    fn wait_runs(&self, job: &str, limit: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let runs = self.runs(job);
            if done(&runs) {
                return runs;
            }
            assert!(
                start.elapsed() < limit,
                "job {job}: not there within {limit:?}; runs: {runs:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.berth(&["destroy", &self.app]);
    }
}

fn with_state<'a>(runs: &'a [Value], state: &str) -> Vec<&'a Value> {
    runs.iter().filter(|r| r["state"] == state).collect()
}

fn push(tag: &str, version: &str) -> String {
    support::push_demo_tag(tag, version)
}

fn spec(app: &str, image: &str, jobs: &str, extra: &str) -> String {
    format!(
        "name: {app}\nimage: {image}\nenv:\n  GREETING: hello\nsecret_env:\n  TOKEN: s3cret-token\n{extra}services:\n  web:\n    http_port: 8080\njobs:\n{jobs}"
    )
}

/// Containers of the app's job `job` on the host, with their state.
fn job_containers(app: &str, job: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.State}}"])
        .args(["--filter", &format!("label=io.berth.app={app}")])
        .args(["--filter", &format!("label=io.berth.job={job}")])
        .output()
        .expect("docker ps");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn scheduled_runs_are_journaled_with_output_see_secrets_and_follow_the_new_digest() {
    let s = Scratch::new("jobs-cron");
    let tag = unique_tag("jobs");
    let v1 = push(&tag, "v1");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:{tag}");
    let jobs = "  tick:\n    schedule: \"*/2 * * * * *\"\n    command: /bin/busybox sh -c 'echo tick $GREETING $TOKEN'\n  fail:\n    schedule: \"*/2 * * * * *\"\n    command: /bin/busybox sh -c 'echo going down; exit 3'\n";
    s.apply(&spec(&s.app, &image, jobs, ""));
    let _serve = Serve::start(s.state(), "info");

    // Every 2 s: at least two runs within ten seconds, each journaled.
    let runs = s.wait_runs("tick", Duration::from_secs(10), |r| {
        with_state(r, "succeeded").len() >= 2
    });
    for run in with_state(&runs, "succeeded") {
        assert_eq!(run["exit_code"], 0, "{run}");
        assert_eq!(run["trigger"], "schedule", "{run}");
        assert_eq!(run["digest"], v1, "{run}");
        assert!(run["scheduled_at"].is_string(), "{run}");
        assert!(run["host"].is_string(), "{run}");
        let tail = run["log_tail"].to_string();
        assert!(
            tail.contains("tick hello s3cret-token"),
            "env and secret env: {run}"
        );
    }
    let failed = s.wait_runs("fail", Duration::from_secs(10), |r| {
        with_state(r, "failed").len() >= 2
    });
    for run in with_state(&failed, "failed") {
        assert_eq!(run["exit_code"], 3, "{run}");
        assert!(run["log_tail"].to_string().contains("going down"), "{run}");
    }
    // Finished runs are removed; the last failed ones are kept (at most 3).
    let kept = s.wait_runs("fail", Duration::from_secs(20), |r| {
        with_state(r, "failed").len() >= 5
    });
    assert!(kept.len() >= 5);
    let fail_left = job_containers(&s.app, "fail");
    let exited = fail_left.iter().filter(|st| *st == "exited").count();
    assert!(
        (1..=3).contains(&exited),
        "kept failed containers: {fail_left:?}"
    );
    let tick_left = job_containers(&s.app, "tick");
    assert!(
        !tick_left.iter().any(|st| st == "exited"),
        "a finished successful run was left: {tick_left:?}"
    );

    // After an image update the next run uses the new digest.
    let v2 = push(&tag, "v2");
    assert_ne!(v1, v2);
    s.apply(&spec(&s.app, &image, jobs, ""));
    s.wait_runs("tick", Duration::from_secs(15), |r| {
        r.iter()
            .any(|run| run["digest"] == v2 && run["state"] == "succeeded")
    });

    // `berth jobs` names them with their next runs.
    let out = s.ok(&["jobs", &s.app, "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("jobs json");
    let names: Vec<&str> = listed["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["fail", "tick"]);
    assert!(listed["jobs"][1]["next_run"].is_string(), "{listed}");
    assert!(listed["jobs"][1]["last_run"]["id"].is_number(), "{listed}");
}

#[test]
fn forbid_skips_a_run_while_the_last_one_runs_and_replace_stops_it() {
    let s = Scratch::new("jobs-conc");
    let tag = unique_tag("jobsc");
    push(&tag, "v1");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:{tag}");
    let jobs = "  slow:\n    schedule: \"*/2 * * * * *\"\n    command: /bin/busybox sleep 5\n  newest:\n    schedule: \"*/2 * * * * *\"\n    concurrency: replace\n    command: /bin/busybox sleep 30\n";
    s.apply(&spec(&s.app, &image, jobs, ""));
    let _serve = Serve::start(s.state(), "info");
    let slow = s.wait_runs("slow", Duration::from_secs(20), |r| {
        !with_state(r, "skipped").is_empty() && !with_state(r, "succeeded").is_empty()
    });
    // Never two at once: every skipped time fell inside a run.
    for skipped in with_state(&slow, "skipped") {
        assert!(
            skipped["reason"]
                .as_str()
                .unwrap_or("")
                .contains("still running"),
            "{skipped}"
        );
    }
    let newest = s.wait_runs("newest", Duration::from_secs(20), |r| {
        with_state(r, "replaced").len() >= 2
    });
    assert!(with_state(&newest, "running").len() <= 1, "{newest:#?}");
    assert!(with_state(&newest, "skipped").is_empty(), "{newest:#?}");
}

#[test]
fn two_serve_processes_on_one_store_run_each_scheduled_time_once() {
    let s = Scratch::new("jobs-two");
    two_serve_processes_run_each_scheduled_time_once(&s, None);
}

#[test]
fn two_serve_processes_on_one_postgresql_store_run_each_scheduled_time_once() {
    // Two `berth serve` as on two machines: state directories of their
    // own, one PostgreSQL store.
    let s = Scratch::on_postgres("jobs-pg");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    two_serve_processes_run_each_scheduled_time_once(&s, Some(elsewhere.path()));
}

fn two_serve_processes_run_each_scheduled_time_once(s: &Scratch, second_state: Option<&Path>) {
    let tag = unique_tag("jobs2");
    push(&tag, "v1");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:{tag}");
    // `replace`, and a run shorter than the period: nothing may ever be
    // replaced, least of all by the other process's run of the same time.
    let jobs = "  hi:\n    schedule: \"*/2 * * * * *\"\n    concurrency: replace\n    command: /bin/busybox sh -c 'sleep 0.5; echo hi'\n";
    s.apply(&spec(&s.app, &image, jobs, ""));
    let a = s.serve(None);
    let b = s.serve(second_state);
    let runs = s.wait_runs("hi", Duration::from_secs(20), |r| {
        with_state(r, "succeeded").len() >= 5
    });
    let mut times: Vec<&str> = runs
        .iter()
        .filter(|r| r["trigger"] == "schedule")
        .filter_map(|r| r["scheduled_at"].as_str())
        .collect();
    let all = times.len();
    times.sort();
    times.dedup();
    assert_eq!(times.len(), all, "a scheduled time ran twice: {runs:#?}");
    assert!(with_state(&runs, "replaced").is_empty(), "{runs:#?}");
    // Both processes were scheduling (each logged the scheduler start).
    for serve in [&a, &b] {
        assert!(
            serve.log().contains("job scheduler started"),
            "{}",
            serve.log()
        );
    }
}

#[test]
fn run_now_and_deploy_commands_see_the_new_release_or_the_failure() {
    let s = Scratch::new("jobs-deploy");
    let tag = unique_tag("jobsd");
    push(&tag, "v1");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:{tag}");
    let jobs = "  report:\n    command: /bin/busybox sh -c 'echo report for $GREETING; exit 0'\n";
    let app = s.app.clone();
    // post-deploy reaches the new release's service by its alias.
    let post = format!(
        "post_deploy_command: \"/bin/busybox sh -c 'wget -qO- http://web.{app}:8080/'\"\nfailed_deploy_command: \"/bin/busybox sh -c 'echo \\\"failed: $BERTH_DEPLOY_ERROR\\\"'\"\n"
    );
    s.apply(&spec(&app, &image, jobs, &post));
    let posted = s.runs("post-deploy");
    assert_eq!(posted.len(), 1, "{posted:#?}");
    assert_eq!(posted[0]["state"], "succeeded", "{posted:#?}");
    assert!(
        posted[0]["log_tail"].to_string().contains("berth demo v1"),
        "{posted:#?}"
    );

    // A new release: post-deploy sees it, not the old one.
    push(&tag, "v2");
    s.apply(&spec(&app, &image, jobs, &post));
    let posted = s.runs("post-deploy");
    assert_eq!(posted.len(), 2, "{posted:#?}");
    assert!(
        posted[0]["log_tail"].to_string().contains("berth demo v2"),
        "{posted:#?}"
    );

    // On demand: `berth run` waits and prints the output.
    let out = s.ok(&["run", &app, "report"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("report for hello"), "{text}");
    let manual = s.runs("report");
    assert_eq!(manual[0]["trigger"], "manual");
    let out = s.berth(&["run", &app, "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no job \"nope\""));

    // A failed health check: failed-deploy runs with the reason; the
    // release before keeps serving; no post-deploy.
    let unhealthy = format!("{PLAIN_REGISTRY}/berth/unhealthy:latest");
    let bad = spec(&app, &unhealthy, jobs, &post).replace(
        "http_port: 8080\n",
        "http_port: 8080\n    health_check:\n      start_period_seconds: 2\n      unhealthy_threshold: 1\n",
    );
    let file = s.dir.path().join("bad.yaml");
    std::fs::write(&file, bad).expect("write");
    let out = s.berth(&["apply", "-f", &file.display().to_string()]);
    assert!(!out.status.success(), "the unhealthy deploy must fail");
    let failed = s.runs("failed-deploy");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let tail = failed[0]["log_tail"].to_string();
    assert!(tail.contains("failed: ROLL failed"), "{tail}");
    assert!(tail.contains("did not become healthy"), "{tail}");
    assert_eq!(
        s.runs("post-deploy").len(),
        2,
        "no post-deploy after a failure"
    );

    // A failing post-deploy keeps the release and warns.
    let failing = post.replace(&format!("wget -qO- http://web.{app}:8080/"), "exit 7");
    push(&tag, "v3");
    let out = s.apply(&spec(&app, &image, jobs, &failing));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: the post-deploy command"),
        "{stderr}"
    );
    assert!(stderr.contains("exited with code 7"), "{stderr}");
    assert!(stderr.contains("stays: it serves"), "{stderr}");
}

#[test]
fn through_terraform_a_job_change_rolls_nothing_out_and_a_failed_post_deploy_warns() {
    require_env();
    let name = unique_app("acc-jobs");
    let _guard = AppGuard(name.clone());
    let tag = unique_tag("accjobs");
    push(&tag, "v1");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:{tag}");
    let config = |schedule: &str, post: &str| {
        format!(
            r#"
resource "berth_app" "demo" {{
  name                = "{name}"
  image               = "{image}"
  post_deploy_command = "{post}"
  services = {{
    web = {{ http_port = 8080 }}
  }}
  jobs = {{
    report = {{
      command  = "/bin/busybox echo report"
      schedule = "{schedule}"
    }}
  }}
}}

output "release" {{ value = berth_app.demo.release }}
"#
        )
    };
    let tf = support::Tf::new();
    tf.config(&config("0 3 * * *", "/bin/busybox true"));
    tf.init();
    tf.apply();
    let before = support::app_containers(&name);
    assert_eq!(before.len(), 1);
    assert_eq!(tf.output("release"), 1);
    tf.assert_converged();

    // Another schedule: an update of the record, not a release.
    tf.config(&config("30 4 * * 1-5", "/bin/busybox true"));
    let plan = tf.ok(&["plan", "-no-color", "-input=false"]);
    assert!(
        plan.contains("~ schedule") || plan.contains("schedule"),
        "{plan}"
    );
    tf.apply();
    assert_eq!(support::app_containers(&name), before, "nothing rolled out");
    assert_eq!(tf.output("release"), 1);
    tf.assert_converged();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["jobs", &name, "--json"])
        .env("BERTH_STATE_DIR", tf.state_dir.path())
        .output()
        .expect("berth jobs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(jobs["jobs"][0]["schedule"], "30 4 * * 1-5", "{jobs}");

    // A new release whose post-deploy command fails: the apply succeeds
    // with a warning, and the release serves.
    push(&tag, "v2");
    tf.config(&config("30 4 * * 1-5", "/bin/busybox false"));
    let out = support::squash(&tf.apply());
    assert!(out.contains("Warning: App"), "{out}");
    assert!(out.contains("post-deploy command"), "{out}");
    assert!(out.contains("exited with code 1"), "{out}");
    assert_eq!(tf.output("release"), 2);
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(support::app_containers(&name).is_empty());
}

#[test]
fn the_spec_file_warns_of_a_schedule_that_runs_every_minute() {
    let s = Scratch::new("jobs-warn");
    let image = format!("{PLAIN_REGISTRY}/berth/demo:v1");
    let file = s.dir.path().join("app.yaml");
    let jobs = "  tick:\n    schedule: \"* * * * *\"\n    command: /bin/busybox true\n";
    std::fs::write(&file, spec(&s.app, &image, jobs, "")).expect("write");
    let out = s.ok(&["plan", "-f", &file.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning:"), "{stderr}");
    assert!(stderr.contains("jobs[\"tick\"].schedule"), "{stderr}");
    assert!(stderr.contains("runs every minute"), "{stderr}");
    assert!(stderr.contains("UTC"), "the next runs: {stderr}");
    // A bad one is refused with its field.
    let bad = "  tick:\n    schedule: \"* * *\"\n    command: /bin/busybox true\n";
    std::fs::write(&file, spec(&s.app, &image, bad, "")).expect("write");
    let out = s.berth(&["plan", "-f", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("jobs[\"tick\"].schedule"), "{stderr}");
    assert!(stderr.contains("has 3 fields"), "{stderr}");
}
