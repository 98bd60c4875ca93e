//! The `berth` binary as scripts use it: what it prints on stdout and
//! stderr and how it exits. `resolve` runs against the real local registries
//! of the dev environment (`bash tests/devenv.sh up`); the fixtures are
//! pushed once per test binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use base64::Engine as _;
use berth::devtools::fixtures::{
    push_all, push_demo, FixtureSet, Pushed, AUTH_PASSWORD, AUTH_REGISTRY, AUTH_USER,
    PLAIN_REGISTRY,
};
use serde_json::Value;

/// Runs `berth args…` with `stdin` piped in and `env` set, logging off
/// unless `env` says otherwise.
fn berth_with(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args(args)
        .env_remove("BERTH_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start berth");
    {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // The command may exit without reading stdin; that is fine.
        let _ = pipe.write_all(stdin);
    }
    child.wait_with_output().expect("wait for berth")
}

fn berth(args: &[&str]) -> Output {
    berth_with(args, b"", &[])
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("utf-8 stderr")
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            stdout(output),
            stderr(output)
        )
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The fixture images in the plain registry, pushed once.
fn fixtures() -> &'static FixtureSet {
    static FIXTURES: OnceLock<FixtureSet> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        runtime()
            .block_on(push_all(PLAIN_REGISTRY))
            .expect("push fixtures (is `bash tests/devenv.sh up` done?)")
    })
}

/// `berth/private:v1` in the registry that requires authentication.
fn private_image() -> &'static Pushed {
    static PRIVATE: OnceLock<Pushed> = OnceLock::new();
    PRIVATE.get_or_init(|| {
        runtime()
            .block_on(push_demo(
                AUTH_REGISTRY,
                "berth/private",
                "v1",
                "v1",
                Some((AUTH_USER, AUTH_PASSWORD)),
            ))
            .expect("push berth/private:v1 to the auth registry")
    })
}

// ------------------------------------------------------------ version, help

#[test]
fn version_prints_name_and_version() {
    let output = berth(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output),
        format!("berth {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_explains_berth_its_commands_and_exit_codes() {
    let output = berth(&["--help"]);
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(text.contains("Docker hosts"), "{text}");
    assert!(text.contains("image"), "{text}");
    assert!(text.contains("Exit codes:"), "{text}");
    assert!(text.contains("BERTH_LOG"), "{text}");

    let output = berth(&["help", "image", "resolve"]);
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(text.contains("linux/amd64"), "{text}");
    assert!(text.contains("--password-stdin"), "{text}");
    assert!(text.contains("Examples:"), "{text}");

    let output = berth(&["image", "normalize", "--help"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("berth image normalize nginx"));
}

#[test]
fn usage_errors_exit_2_with_nothing_on_stdout() {
    for args in [
        &["image", "normalize"][..],
        &["image", "frobnicate"],
        &["no-such-command"],
        &["image", "resolve", "nginx", "--password-stdin"],
    ] {
        let output = berth(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(output.stdout.is_empty(), "{args:?}: {output:?}");
        assert!(!output.stderr.is_empty(), "{args:?}");
    }
}

// -------------------------------------------------------------- normalize

#[test]
fn normalize_prints_the_canonical_reference() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let with_digest = format!("localhost:5000/a/b@{digest}");
    let cases = [
        ("nginx", "docker.io/library/nginx:latest".to_owned()),
        ("nginx:1.27", "docker.io/library/nginx:1.27".to_owned()),
        ("index.docker.io/x", "docker.io/library/x:latest".to_owned()),
        ("ghcr.io/acme/api:v3", "ghcr.io/acme/api:v3".to_owned()),
        (with_digest.as_str(), with_digest.clone()),
    ];
    for (input, expected) in &cases {
        let output = berth(&["image", "normalize", input]);
        assert!(output.status.success(), "{input}: {output:?}");
        assert_eq!(stdout(&output), format!("{expected}\n"), "{input}");
        assert!(output.stderr.is_empty(), "{input}: {}", stderr(&output));
    }
}

#[test]
fn normalize_rejects_an_invalid_reference_in_one_line() {
    let output = berth(&["image", "normalize", "Foo/Bar"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("berth: "), "{text}");
    assert!(text.contains("lowercase"), "{text}");

    // --json changes stdout only: an error stays a line on stderr.
    let output = berth(&["image", "normalize", "Foo/Bar", "--json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert_eq!(stderr(&output).lines().count(), 1);
}

#[test]
fn normalize_json_has_every_part() {
    let output = berth(&["image", "normalize", "nginx", "--json"]);
    assert!(output.status.success());
    assert_eq!(
        json(&output),
        serde_json::json!({
            "input": "nginx",
            "reference": "docker.io/library/nginx:latest",
            "registry": "docker.io",
            "repository": "library/nginx",
            "tag": "latest",
            "digest": null,
        })
    );

    let digest = format!("sha256:{}", "b".repeat(64));
    let input = format!("localhost:5000/a/b@{digest}");
    let output = berth(&["image", "normalize", "--json", &input]);
    assert!(output.status.success());
    assert_eq!(
        json(&output),
        serde_json::json!({
            "input": input,
            "reference": input,
            "registry": "localhost:5000",
            "repository": "a/b",
            "tag": null,
            "digest": digest,
        })
    );
}

// ---------------------------------------------------------------- resolve

#[test]
fn resolve_json_gives_the_fixture_digest() {
    let fixtures = fixtures();
    let output = berth(&["image", "resolve", "127.0.0.1:5000/berth/demo:v1", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value = json(&output);
    assert_eq!(value["digest"], fixtures.demo_v1.digest.as_str());
    assert_eq!(value["reference"], "127.0.0.1:5000/berth/demo:v1");
    assert_eq!(value["index_digest"], Value::Null);
    assert_eq!(value["platform"], "linux/amd64");
    assert!(
        value["size_bytes"].as_u64().is_some_and(|n| n > 0),
        "{value}"
    );
    assert_eq!(
        value["pinned_reference"],
        format!("127.0.0.1:5000/berth/demo@{}", fixtures.demo_v1.digest)
    );
}

#[test]
fn resolve_prints_an_aligned_table_by_default() {
    let fixtures = fixtures();
    let output = berth(&["image", "resolve", "127.0.0.1:5000/berth/multi:latest"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let index_digest = fixtures.multi.index_digest.as_deref().expect("index");
    let expected_rows = [
        ("reference", "127.0.0.1:5000/berth/multi:latest".to_owned()),
        ("digest", fixtures.multi.digest.clone()),
        ("index digest", index_digest.to_owned()),
        ("platform", "linux/amd64".to_owned()),
        (
            "pinned reference",
            format!("127.0.0.1:5000/berth/multi@{}", fixtures.multi.digest),
        ),
    ];
    for (label, value) in &expected_rows {
        assert!(
            text.lines()
                .any(|line| line.starts_with(label) && line.trim_end().ends_with(value.as_str())),
            "row {label}: {text}"
        );
    }
    let size_line = text
        .lines()
        .find(|line| line.starts_with("size"))
        .expect("size row");
    assert!(size_line.contains(" bytes"), "{size_line}");
    // Every value starts in the same column.
    let columns: Vec<usize> = text
        .lines()
        .map(|line| {
            let gap = line.find("  ").expect("label and value");
            gap + line[gap..].len() - line[gap..].trim_start().len()
        })
        .collect();
    assert!(columns.windows(2).all(|w| w[0] == w[1]), "{text}");
}

#[test]
fn resolve_refuses_an_image_without_linux_amd64() {
    fixtures();
    let output = berth(&["image", "resolve", "127.0.0.1:5000/berth/arm64-only:latest"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let text = stderr(&output);
    assert!(text.starts_with("berth: "), "{text}");
    assert!(text.contains("linux/arm64"), "{text}");
}

#[test]
fn resolve_reports_a_missing_tag_and_an_invalid_reference() {
    fixtures();
    let output = berth(&["image", "resolve", "127.0.0.1:5000/berth/demo:no-such-tag"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let text = stderr(&output);
    assert!(text.starts_with("berth: Image not found\n"), "{text}");
    assert!(text.contains("no-such-tag"), "{text}");

    let output = berth(&["image", "resolve", "Foo/Bar", "--json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(stderr(&output).contains("lowercase"));
}

#[test]
fn resolve_with_username_and_password_stdin_never_shows_the_password() {
    let private = private_image();
    let reference = "127.0.0.1:5001/berth/private:v1";
    let basic_header =
        base64::engine::general_purpose::STANDARD.encode(format!("{AUTH_USER}:{AUTH_PASSWORD}"));
    let assert_no_password = |output: &Output| {
        for stream in [stdout(output), stderr(output)] {
            assert!(!stream.contains(AUTH_PASSWORD), "password shown: {stream}");
            assert!(!stream.contains(&basic_header), "auth header shown");
        }
    };

    for log in ["warn", "trace"] {
        let output = berth_with(
            &[
                "image",
                "resolve",
                reference,
                "--json",
                "--username",
                AUTH_USER,
                "--password-stdin",
            ],
            format!("{AUTH_PASSWORD}\n").as_bytes(),
            &[("BERTH_LOG", log)],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(json(&output)["digest"], private.digest.as_str());
        if log == "trace" {
            assert!(!output.stderr.is_empty(), "trace logging produced nothing");
        }
        assert_no_password(&output);
    }

    // Anonymous: refused, with a hint in command-line terms.
    let output = berth(&["image", "resolve", reference]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("requires authentication"), "{text}");
    assert!(text.contains("--password-stdin"), "{text}");

    // A wrong password: refused, and neither password is shown.
    let output = berth_with(
        &[
            "image",
            "resolve",
            reference,
            "--username",
            AUTH_USER,
            "--password-stdin",
        ],
        b"not-the-berth-pass",
        &[("BERTH_LOG", "trace")],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("rejected the credentials"));
    for stream in [stdout(&output), stderr(&output)] {
        assert!(!stream.contains("not-the-berth-pass"), "{stream}");
    }

    // An empty stdin is a usage error, not an anonymous attempt.
    let output = berth(&[
        "image",
        "resolve",
        reference,
        "--username",
        AUTH_USER,
        "--password-stdin",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("stdin was empty"));
}

#[test]
fn resolve_reports_an_unreachable_registry() {
    // Port 9 (discard) on loopback: nothing listens there.
    let output = berth(&["image", "resolve", "127.0.0.1:9/berth/demo:v1"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let text = stderr(&output);
    assert!(text.starts_with("berth: Registry unreachable\n"), "{text}");
    assert!(text.contains("127.0.0.1:9"), "{text}");
}
