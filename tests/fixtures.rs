//! The fixture images against the real dev environment
//! (`bash tests/devenv.sh up`): pushed digests are what the registry serves,
//! pushing is deterministic and idempotent, the auth registry wants its
//! credentials, and Docker really runs the images.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth::devtools::fixtures::{
    push_all, push_demo, AUTH_PASSWORD, AUTH_REGISTRY, AUTH_USER, PLAIN_REGISTRY,
};
use serde_json::Value;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A hand-written HTTP/1.1 GET (no HTTP client among the dev-dependencies).
fn http_get(addr: &str, path: &str, extra_headers: &[(&str, &str)]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in extra_headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let response = Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    assert!(
        response.header("Transfer-Encoding").is_none(),
        "chunked responses are not expected here"
    );
    Ok(response)
}

fn manifest(repository: &str, reference: &str) -> Response {
    let response = http_get(
        PLAIN_REGISTRY,
        &format!("/v2/{repository}/manifests/{reference}"),
        &[("Accept", MANIFEST_TYPES)],
    )
    .expect("registry on 127.0.0.1:5000 answers (run `bash tests/devenv.sh up`)");
    assert_eq!(
        response.status, 200,
        "GET manifest {repository}:{reference}"
    );
    response
}

fn served_digest(repository: &str, reference: &str) -> String {
    manifest(repository, reference)
        .header("Docker-Content-Digest")
        .expect("Docker-Content-Digest header")
        .to_string()
}

fn config_of(repository: &str, manifest_body: &[u8]) -> Value {
    let manifest: Value = serde_json::from_slice(manifest_body).unwrap();
    let digest = manifest["config"]["digest"].as_str().unwrap();
    let blob = http_get(
        PLAIN_REGISTRY,
        &format!("/v2/{repository}/blobs/{digest}"),
        &[],
    )
    .unwrap();
    assert_eq!(blob.status, 200);
    serde_json::from_slice(&blob.body).unwrap()
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs (run `bash tests/devenv.sh up`)")
}

/// Removes the container when the test ends, pass or fail.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fixtures_are_pushed_deterministically_and_served_as_pushed() {
    let set = push_all(PLAIN_REGISTRY).await.expect("push_all");

    for (pushed, repository, tag) in [
        (&set.demo_v1, "berth/demo", "v1"),
        (&set.demo_v2, "berth/demo", "v2"),
        (&set.arm64_only, "berth/arm64-only", "latest"),
        (&set.unhealthy, "berth/unhealthy", "latest"),
        (&set.crash, "berth/crash", "latest"),
        (&set.huge, "berth/huge", "latest"),
    ] {
        assert_eq!(
            pushed.reference,
            format!("{PLAIN_REGISTRY}/{repository}:{tag}")
        );
        assert_eq!(
            served_digest(repository, tag),
            pushed.digest,
            "{repository}:{tag}"
        );
        assert_eq!(pushed.index_digest, None);
    }
    assert_ne!(set.demo_v1.digest, set.demo_v2.digest);

    // The multi-platform tag: the index, and both platform manifests by digest.
    let index_digest = set.multi.index_digest.clone().expect("multi has an index");
    assert_eq!(served_digest("berth/multi", "latest"), index_digest);
    assert_eq!(
        served_digest("berth/multi", &set.multi.digest),
        set.multi.digest
    );
    assert_eq!(
        served_digest("berth/multi", &set.multi_arm64_digest),
        set.multi_arm64_digest
    );
    let index: Value = serde_json::from_slice(&manifest("berth/multi", "latest").body).unwrap();
    let platforms: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        vec![
            ("amd64".to_string(), set.multi.digest.clone()),
            ("arm64".to_string(), set.multi_arm64_digest.clone()),
        ]
    );
    // The amd64 member is the demo v1 image itself.
    assert_eq!(set.multi.digest, set.demo_v1.digest);

    // arm64-only says so in its config.
    let arm64 = manifest("berth/arm64-only", "latest");
    let config = config_of("berth/arm64-only", &arm64.body);
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["os"], "linux");

    // huge claims more than 10 GB of compressed layers.
    let huge: Value = serde_json::from_slice(&manifest("berth/huge", "latest").body).unwrap();
    let claimed: u64 = huge["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(claimed > 10_000_000_000, "huge claims {claimed} bytes");

    // Same content, same digests; pushing again changes nothing.
    let again = push_all(PLAIN_REGISTRY).await.expect("push_all again");
    assert_eq!(again, set);
    let v1 = push_demo(PLAIN_REGISTRY, "berth/demo", "v1", "v1", None)
        .await
        .expect("push_demo");
    assert_eq!(v1.digest, set.demo_v1.digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_registry_wants_credentials() {
    let pushed = push_demo(
        AUTH_REGISTRY,
        "berth/private",
        "v1",
        "v1",
        Some((AUTH_USER, AUTH_PASSWORD)),
    )
    .await
    .expect("push_demo to the auth registry");
    assert_eq!(
        pushed.reference,
        format!("{AUTH_REGISTRY}/berth/private:v1")
    );

    let path = "/v2/berth/private/manifests/v1";
    let anonymous = http_get(AUTH_REGISTRY, path, &[("Accept", MANIFEST_TYPES)]).unwrap();
    assert_eq!(anonymous.status, 401);
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{AUTH_USER}:{AUTH_PASSWORD}"));
    let authorization = format!("Basic {basic}");
    let authed = http_get(
        AUTH_REGISTRY,
        path,
        &[
            ("Accept", MANIFEST_TYPES),
            ("Authorization", &authorization),
        ],
    )
    .unwrap();
    assert_eq!(authed.status, 200);
    assert_eq!(
        authed.header("Docker-Content-Digest"),
        Some(pushed.digest.as_str())
    );

    let refused = push_demo(AUTH_REGISTRY, "berth/private", "v1", "v1", None).await;
    assert!(
        refused.is_err(),
        "anonymous push to the auth registry must fail"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_runs_the_demo_and_the_crash_images() {
    let set = push_all(PLAIN_REGISTRY).await.expect("push_all");

    let image = format!("{PLAIN_REGISTRY}/berth/demo@{}", set.demo_v1.digest);
    let run = docker(&[
        "run",
        "-d",
        "--rm",
        "--label",
        "io.berth.test=1",
        "-p",
        "127.0.0.1::8080",
        &image,
    ]);
    assert!(
        run.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let container = Container(String::from_utf8_lossy(&run.stdout).trim().to_string());

    let port = docker(&["port", &container.0, "8080/tcp"]);
    assert!(
        port.status.success(),
        "docker port: {}",
        String::from_utf8_lossy(&port.stderr)
    );
    let port = String::from_utf8_lossy(&port.stdout);
    let addr = port
        .lines()
        .next()
        .expect("a published port")
        .trim()
        .to_string();

    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Ok(response) = http_get(&addr, "/", &[]) {
            if response.status == 200 {
                break String::from_utf8_lossy(&response.body).to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "demo v1 did not answer on {addr} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body, "berth demo v1\n");
    let healthz = http_get(&addr, "/healthz", &[]).unwrap();
    assert_eq!(healthz.status, 200);
    drop(container);

    let crash = format!("{PLAIN_REGISTRY}/berth/crash@{}", set.crash.digest);
    let run = docker(&["run", "--rm", "--label", "io.berth.test=1", &crash]);
    assert_eq!(run.status.code(), Some(3), "crash exits with 3");
}
