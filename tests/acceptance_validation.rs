//! Bad input, as a new user writes it: every invalid `berth_app` is refused
//! at plan time by the real terraform, with an error whose attribute path
//! makes terraform show the offending line, and whose message names the
//! attribute; nothing is deployed. The same mistakes in the `berth`
//! command's spec file name the field.
//!
//! Terraform (1.11) turns a diagnostic's path into a source range through
//! nested blocks only: inside a nested attribute (`services`, a map of
//! objects) it resolves the attribute and one key, so for a field of a
//! service it shows the service's line (`web = {`, written on one line
//! here as users often do) and the message starts with the exact path.

mod support;

use std::process::Command;

use berth::devtools::fixtures::PLAIN_REGISTRY;
use support::{app_containers, require_env, unique_app, Tf};

/// One invalid config: the resource body's extra lines, the web service's
/// extra lines, the line terraform must quote, and words of the message.
struct Case {
    what: &'static str,
    app: &'static str,
    web: &'static str,
    line: &'static str,
    words: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        what: "memory below Docker's minimum",
        app: "",
        web: "memory_mb = 1",
        line: "web = { memory_mb = 1 }",
        words: &["services[\"web\"].memory_mb", "6 MiB"],
    },
    Case {
        what: "negative cpus on a worker",
        app: "workers = { queue = { command = \"sleep 100\", cpus = -2 } }",
        web: "",
        line: "workers = { queue = { command = \"sleep 100\", cpus = -2 } }",
        words: &["workers[\"queue\"].cpus", "-2"],
    },
    Case {
        what: "health-check path without /",
        app: "",
        web: "health_check = { path = \"healthz\" }",
        line: "web = { health_check = { path = \"healthz\" } }",
        words: &["services[\"web\"].health_check.path", "must start with \"/\""],
    },
    Case {
        what: "unterminated quote in a command",
        app: "",
        web: "command = \"sh -c 'echo hi\"",
        line: "web = { command = \"sh -c 'echo hi\" }",
        words: &["services[\"web\"].command", "quotes"],
    },
    Case {
        what: "probe interval of zero",
        app: "",
        web: "health_check = { interval_seconds = 0 }",
        line: "web = { health_check = { interval_seconds = 0 } }",
        words: &["services[\"web\"].health_check.interval_seconds", "out of range"],
    },
    Case {
        what: "unhealthy threshold of zero",
        app: "",
        web: "health_check = { unhealthy_threshold = 0 }",
        line: "web = { health_check = { unhealthy_threshold = 0 } }",
        words: &["services[\"web\"].health_check.unhealthy_threshold", "at least 1"],
    },
    Case {
        what: "too many instances",
        app: "",
        web: "instances = 101",
        line: "web = { instances = 101 }",
        words: &["services[\"web\"].instances", "100"],
    },
    Case {
        what: "http_port zero",
        app: "",
        web: "http_port = 0",
        line: "web = { http_port = 0 }",
        words: &["services[\"web\"].http_port", "65535"],
    },
    Case {
        what: "public_port out of range",
        app: "",
        web: "public_port = 70000",
        line: "web = { public_port = 70000 }",
        words: &["services[\"web\"].public_port", "65535"],
    },
    Case {
        what: "invalid domain",
        app: "",
        web: "domains = [\"not a domain\"]",
        line: "web = { domains = [\"not a domain\"] }",
        words: &["services[\"web\"].domains", "not a domain"],
    },
    Case {
        what: "invalid env key",
        app: "env = { \"1BAD\" = \"x\" }",
        web: "",
        line: "env = { \"1BAD\" = \"x\" }",
        words: &["1BAD"],
    },
    Case {
        what: "empty pre-deploy command",
        app: "pre_deploy_command = \"\"",
        web: "",
        line: "pre_deploy_command = \"\"",
        words: &["empty"],
    },
    Case {
        what: "a worker named like a service",
        app: "workers = { web = { command = \"sleep 100\" } }",
        web: "",
        line: "workers = { web = { command = \"sleep 100\" } }",
        words: &["same name"],
    },
    Case {
        what: "secret_env and secret_env_wo with the same key",
        app: "secret_env = { TOKEN = \"a\" }\n  secret_env_wo = { TOKEN = \"b\" }\n  secret_env_wo_version = 1",
        web: "",
        line: "secret_env_wo = { TOKEN = \"b\" }",
        words: &["secret_env", "secret_env_wo", "TOKEN"],
    },
    Case {
        what: "an invalid cron expression",
        app: "jobs = { nightly = { command = \"true\", schedule = \"61 3 * * *\" } }",
        web: "",
        line: "jobs = { nightly = { command = \"true\", schedule = \"61 3 * * *\" } }",
        words: &["jobs[\"nightly\"].schedule", "out of range for the minute field", "MINUTE HOUR"],
    },
    Case {
        what: "an unknown time zone",
        app: "jobs = { nightly = { command = \"true\", schedule = \"@daily\", time_zone = \"Mars/Olympus\" } }",
        web: "",
        line: "jobs = { nightly = { command = \"true\", schedule = \"@daily\", time_zone = \"Mars/Olympus\" } }",
        words: &["jobs[\"nightly\"].time_zone", "Europe/Berlin"],
    },
    Case {
        what: "a job timeout of zero",
        app: "jobs = { nightly = { command = \"true\", timeout_seconds = 0 } }",
        web: "",
        line: "jobs = { nightly = { command = \"true\", timeout_seconds = 0 } }",
        words: &["jobs[\"nightly\"].timeout_seconds", "1 to 604800"],
    },
    Case {
        what: "a job named like a service",
        app: "jobs = { web = { command = \"true\" } }",
        web: "",
        line: "jobs = { web = { command = \"true\" } }",
        words: &["services[\"web\"] has the same name", "job names must differ"],
    },
    Case {
        what: "an unknown concurrency policy",
        app: "jobs = { nightly = { command = \"true\", concurrency = \"queue\" } }",
        web: "",
        line: "jobs = { nightly = { command = \"true\", concurrency = \"queue\" } }",
        words: &["forbid", "replace"],
    },
];

fn config(name: &str, app: &str, web: &str, services_key: &str) -> String {
    format!(
        "resource \"berth_app\" \"bad\" {{\n  name  = \"{name}\"\n  image = \"{PLAIN_REGISTRY}/berth/demo:v1\"\n  {app}\n  services = {{\n    {services_key} = {{ {web} }}\n  }}\n}}\n"
    )
}

/// `terraform plan`'s output for an invalid config: it fails, shows the
/// offending line, and has the words.
fn refused(tf: &Tf, what: &str, line: &str, words: &[&str]) -> String {
    let out = tf.fails(&["plan", "-input=false", "-no-color"]);
    // The output is squashed to one line: `… line 12, in resource …: 12: LINE …`.
    let quoted = out.match_indices(line).any(|(at, _)| {
        let before = out[..at].strip_suffix(": ").unwrap_or("");
        before.ends_with(|c: char| c.is_ascii_digit())
    });
    assert!(
        quoted,
        "{what}: terraform does not show the line `{line}` (the error has no attribute path):\n{out}"
    );
    for w in words {
        assert!(out.contains(w), "{what}: the message lacks {w:?}:\n{out}");
    }
    out
}

#[test]
fn every_invalid_app_is_refused_at_the_offending_line() {
    require_env();
    let name = unique_app("acc-bad");
    let tf = Tf::new();
    tf.config(&config(&name, "", "", "web"));
    tf.init();
    for case in CASES {
        tf.config(&config(&name, case.app, case.web, "web"));
        refused(&tf, case.what, case.line, case.words);
    }
    // An invalid service name: the line of its key.
    tf.config(&config(&name, "", "", "Web_1"));
    refused(&tf, "invalid service name", "Web_1 = { }", &["Web_1"]);
    assert!(app_containers(&name).is_empty(), "nothing was deployed");
}

#[test]
fn the_spec_file_names_the_field() {
    let dir = tempfile::tempdir().expect("dir");
    let cases: &[(&str, &str)] = &[
        (
            "services: {web: {memory_mb: 1}}",
            "services[\"web\"].memory_mb",
        ),
        (
            "services: {web: {health_check: {path: healthz}}}",
            "services[\"web\"].health_check.path",
        ),
        (
            "services: {web: {command: \"sh -c 'echo\"}}",
            "services[\"web\"].command",
        ),
        (
            "services: {web: {health_check: {interval_seconds: 0}}}",
            "services[\"web\"].health_check.interval_seconds",
        ),
        (
            "services: {web: {health_check: {unhealthy_threshold: 0}}}",
            "services[\"web\"].health_check.unhealthy_threshold",
        ),
        ("services: {Web_1: {}}", "services[\"Web_1\"]"),
        (
            "env: {TOKEN: a}\nsecret_env: {TOKEN: b}\nservices: {web: {}}",
            "secret_env[\"TOKEN\"]",
        ),
        (
            "services: {web: {memory_mb: lots}}",
            "services.web.memory_mb",
        ),
    ];
    for (body, field) in cases {
        let file = dir.path().join("app.yaml");
        std::fs::write(
            &file,
            format!("name: shop\nimage: {PLAIN_REGISTRY}/berth/demo:v1\n{body}\n"),
        )
        .expect("spec");
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["plan", "-f"])
            .arg(&file)
            .env("BERTH_STATE_DIR", dir.path().join("state"))
            .output()
            .expect("berth plan");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{body}: exit code\n{text}");
        assert!(text.contains(field), "{body}: {field} not named:\n{text}");
    }
}

#[test]
fn a_job_that_runs_every_minute_is_a_warning_with_its_next_runs() {
    require_env();
    let name = unique_app("acc-cronwarn");
    let tf = Tf::new();
    tf.config(&config(
        &name,
        "jobs = { tick = { command = \"true\", schedule = \"* 3 * * *\", time_zone = \"Europe/Berlin\" } }",
        "",
        "web",
    ));
    tf.init();
    let out = tf.ok(&["validate", "-no-color"]);
    let out = support::squash(&out);
    assert!(
        out.contains("Warning: Job schedule runs very often"),
        "{out}"
    );
    assert!(
        out.contains("runs every minute of the hours it names"),
        "{out}"
    );
    assert!(out.contains("the next runs are"), "{out}");
    // Three times in the job's zone, all in its 03 hour: 03:00, 03:01,
    // 03:02, unless the test runs within that hour (then the next three
    // minutes, which may wrap to 03:00 of the next day).
    let times: Vec<&str> = out
        .split(' ')
        .filter(|w| {
            let b = w.as_bytes();
            b.len() == 8
                && w.starts_with("03:")
                && w.ends_with(":00")
                && b[3].is_ascii_digit()
                && b[4].is_ascii_digit()
        })
        .collect();
    assert_eq!(times.len(), 3, "{times:?}: {out}");
    assert!(out.contains("CET") || out.contains("CEST"), "{out}");
}
