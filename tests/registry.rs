//! `berth::registry` against the real local registries of the dev
//! environment (`bash tests/devenv.sh up`): resolving tags and digests to the
//! linux/amd64 digest, every refusal a user can meet, and authentication.
//! Each test asserts on the message a user would read.

#[path = "support/counting_relay.rs"]
mod counting_relay;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth::devtools::fixtures::{
    push_all, push_demo, FixtureSet, Pushed, AUTH_PASSWORD, AUTH_REGISTRY, AUTH_USER,
    HUGE_CLAIMED_LAYER_SIZE, PLAIN_REGISTRY,
};
use berth::reference::Reference;
use berth::registry::{
    Credentials, RegistryClient, RegistryError, RegistryOptions, ResolvedImage, MAX_COMPRESSED_SIZE,
};
use counting_relay::CountingRelay;
use serde_json::Value;
use tokio::sync::OnceCell;

/// Pushes the fixtures once per test binary (idempotent and fast when the
/// registry already has them).
async fn fixtures() -> &'static FixtureSet {
    static FIXTURES: OnceCell<FixtureSet> = OnceCell::const_new();
    FIXTURES
        .get_or_init(|| async {
            push_all(PLAIN_REGISTRY)
                .await
                .expect("push fixtures (is `bash tests/devenv.sh up` done?)")
        })
        .await
}

async fn private_image() -> &'static Pushed {
    static PRIVATE: OnceCell<Pushed> = OnceCell::const_new();
    PRIVATE
        .get_or_init(|| async {
            push_demo(
                AUTH_REGISTRY,
                "berth/private",
                "v1",
                "v1",
                Some((AUTH_USER, AUTH_PASSWORD)),
            )
            .await
            .expect("push berth/private:v1 to the auth registry")
        })
        .await
}

fn reference(input: &str) -> Reference {
    Reference::parse(input).expect("valid reference")
}

/// A fresh client per test: each test has its own runtime, and a client's
/// connections belong to the runtime that opened them.
fn client() -> RegistryClient {
    RegistryClient::new(RegistryOptions::default())
}

async fn resolve_anonymously(input: &str) -> Result<ResolvedImage, RegistryError> {
    client()
        .resolve(&reference(input), &Credentials::Anonymous)
        .await
}

/// A hand-written HTTP/1.1 GET, to read what the registry serves without
/// going through the code under test.
fn http_get(addr: &str, path: &str, accept: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let headers = head
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (headers, raw[split + 4..].to_vec())
}

fn unique_tag(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn demo_v1_resolves_to_the_served_digest_and_size() {
    let set = fixtures().await;
    let resolved = resolve_anonymously("127.0.0.1:5000/berth/demo:v1")
        .await
        .expect("resolve demo v1");

    // What the registry itself says, read by hand.
    let (headers, body) = http_get(
        PLAIN_REGISTRY,
        "/v2/berth/demo/manifests/v1",
        "application/vnd.oci.image.manifest.v1+json",
    );
    let served_digest = headers
        .iter()
        .find(|(name, _)| name == "docker-content-digest")
        .map(|(_, value)| value.clone())
        .expect("Docker-Content-Digest");
    let manifest: Value = serde_json::from_slice(&body).expect("manifest json");
    let layers_size: u64 = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|layer| layer["size"].as_u64().expect("size"))
        .sum();
    let expected_size = manifest["config"]["size"].as_u64().expect("config size") + layers_size;

    assert_eq!(resolved.digest, set.demo_v1.digest);
    assert_eq!(resolved.digest, served_digest);
    assert_eq!(resolved.index_digest, None);
    assert_eq!(resolved.platform, "linux/amd64");
    assert_eq!(resolved.size_bytes, expected_size);
    assert_eq!(resolved.reference, "127.0.0.1:5000/berth/demo:v1");
    assert_eq!(
        resolved.pinned_reference,
        format!("127.0.0.1:5000/berth/demo@{}", set.demo_v1.digest)
    );

    // The JSON form other layers print (`berth image resolve --json`).
    let json = serde_json::to_value(&resolved).expect("serialize");
    assert_eq!(json["digest"], set.demo_v1.digest.as_str());
    assert_eq!(json["index_digest"], Value::Null);
}

#[tokio::test]
async fn multi_platform_tag_gives_the_amd64_digest_and_the_index_digest() {
    let set = fixtures().await;
    let resolved = resolve_anonymously("127.0.0.1:5000/berth/multi:latest")
        .await
        .expect("resolve multi");
    assert_eq!(resolved.digest, set.multi.digest);
    assert_ne!(resolved.digest, set.multi_arm64_digest);
    assert_eq!(resolved.index_digest, set.multi.index_digest);
    assert_eq!(
        resolved.pinned_reference,
        format!("127.0.0.1:5000/berth/multi@{}", set.multi.digest)
    );

    // The index digest as a reference resolves the same way.
    let index_digest = set.multi.index_digest.as_deref().expect("index digest");
    let by_index = resolve_anonymously(&format!("127.0.0.1:5000/berth/multi@{index_digest}"))
        .await
        .expect("resolve by index digest");
    assert_eq!(by_index.digest, set.multi.digest);
    assert_eq!(by_index.index_digest.as_deref(), Some(index_digest));

    // The amd64 manifest digest names a manifest: no index.
    let by_manifest =
        resolve_anonymously(&format!("127.0.0.1:5000/berth/multi@{}", set.multi.digest))
            .await
            .expect("resolve by manifest digest");
    assert_eq!(by_manifest.digest, set.multi.digest);
    assert_eq!(by_manifest.index_digest, None);
    assert_eq!(by_manifest.size_bytes, resolved.size_bytes);
}

#[tokio::test]
async fn arm64_only_image_is_refused_naming_its_platform() {
    fixtures().await;
    let error = resolve_anonymously("127.0.0.1:5000/berth/arm64-only:latest")
        .await
        .expect_err("arm64 only");
    assert!(
        matches!(error, RegistryError::NoLinuxAmd64 { .. }),
        "{error:?}"
    );
    assert_eq!(error.summary(), "Image has no linux/amd64 variant");
    let message = error.to_string();
    assert!(message.contains("has no linux/amd64 variant"), "{message}");
    assert!(message.contains("published for linux/arm64"), "{message}");
    assert!(
        message.contains("Berth deploys only linux/amd64"),
        "{message}"
    );
    assert!(
        message.contains("docker buildx build --platform linux/amd64"),
        "{message}"
    );

    // The arm64 entry of the index, named by digest, is refused the same way.
    let set = fixtures().await;
    let error = resolve_anonymously(&format!(
        "127.0.0.1:5000/berth/multi@{}",
        set.multi_arm64_digest
    ))
    .await
    .expect_err("arm64 by digest");
    assert!(
        error.to_string().contains("published for linux/arm64"),
        "{error}"
    );
}

#[tokio::test]
async fn huge_image_is_refused_with_its_size() {
    fixtures().await;
    let error = resolve_anonymously("127.0.0.1:5000/berth/huge:latest")
        .await
        .expect_err("too large");
    let RegistryError::TooLarge { size_bytes, .. } = &error else {
        panic!("expected TooLarge, got {error:?}");
    };
    assert!(*size_bytes > MAX_COMPRESSED_SIZE);
    assert!(*size_bytes > HUGE_CLAIMED_LAYER_SIZE);
    assert_eq!(error.summary(), "Image too large");
    let message = error.to_string();
    assert!(
        message.contains("127.0.0.1:5000/berth/huge:latest"),
        "{message}"
    );
    assert!(message.contains("is 11 GB compressed"), "{message}");
    assert!(
        message.contains(&format!("({size_bytes} bytes")),
        "{message}"
    );
    assert!(message.contains("limit of 10 GB"), "{message}");
}

#[tokio::test]
async fn missing_tag_and_digest_are_not_found() {
    fixtures().await;
    let error = resolve_anonymously("127.0.0.1:5000/berth/demo:no-such-tag")
        .await
        .expect_err("missing tag");
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error:?}");
    assert_eq!(error.summary(), "Image not found");
    let message = error.to_string();
    assert!(
        message.contains("image `127.0.0.1:5000/berth/demo:no-such-tag` was not found"),
        "{message}"
    );
    assert!(message.contains("no manifest `no-such-tag`"), "{message}");
    assert!(message.contains("repository `berth/demo`"), "{message}");

    let absent = format!("sha256:{}", "0".repeat(64));
    let error = resolve_anonymously(&format!("127.0.0.1:5000/berth/demo@{absent}"))
        .await
        .expect_err("missing digest");
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error:?}");
    assert!(error.to_string().contains(&absent), "{error}");

    let error = resolve_anonymously("127.0.0.1:5000/berth/no-such-repository:v1")
        .await
        .expect_err("missing repository");
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("repository `berth/no-such-repository`"),
        "{error}"
    );
}

#[tokio::test]
async fn unreachable_registry_names_the_address_and_the_os_error() {
    let error = resolve_anonymously("127.0.0.1:5999/berth/demo:v1")
        .await
        .expect_err("nothing listens on 5999");
    assert!(
        matches!(error, RegistryError::Unreachable { .. }),
        "{error:?}"
    );
    assert_eq!(error.summary(), "Registry unreachable");
    assert!(error.is_transient());
    let message = error.to_string();
    assert!(
        message.contains("could not reach the registry at http://127.0.0.1:5999/v2/"),
        "{message}"
    );
    assert!(message.contains("Connection refused"), "{message}");
}

#[tokio::test]
async fn private_image_anonymously_asks_for_a_registry_credential() {
    private_image().await;
    let error = resolve_anonymously("127.0.0.1:5001/berth/private:v1")
        .await
        .expect_err("needs credentials");
    assert!(
        matches!(error, RegistryError::AuthenticationRequired { .. }),
        "{error:?}"
    );
    assert_eq!(error.summary(), "Registry requires authentication");
    let message = error.to_string();
    assert!(
        message.contains("registry 127.0.0.1:5001 requires authentication to pull `berth/private`"),
        "{message}"
    );
    assert!(message.contains("`berth_registry_credential`"), "{message}");
    assert!(message.contains("`registry_credential_id`"), "{message}");
}

#[tokio::test]
async fn private_image_resolves_with_credentials_and_refuses_a_wrong_password() {
    let pushed = private_image().await;
    let client = client();
    let private = reference("127.0.0.1:5001/berth/private:v1");

    // Anonymous first on the same client: nothing it caches may leak into
    // the authenticated resolves below, nor the other way round.
    client
        .resolve(&private, &Credentials::Anonymous)
        .await
        .expect_err("anonymous");

    let resolved = client
        .resolve(&private, &Credentials::basic(AUTH_USER, AUTH_PASSWORD))
        .await
        .expect("resolve with credentials");
    assert_eq!(resolved.digest, pushed.digest);
    assert_eq!(resolved.index_digest, None);
    assert_eq!(
        resolved.pinned_reference,
        format!("127.0.0.1:5001/berth/private@{}", pushed.digest)
    );

    let wrong_password = "not-the-password";
    let error = client
        .resolve(&private, &Credentials::basic(AUTH_USER, wrong_password))
        .await
        .expect_err("wrong password");
    assert!(
        matches!(error, RegistryError::CredentialsRejected { .. }),
        "{error:?}"
    );
    assert_eq!(error.summary(), "Registry rejected the credentials");
    let message = error.to_string();
    assert!(
        message.contains("registry 127.0.0.1:5001 rejected the credentials of user `berth`"),
        "{message}"
    );
    assert!(message.contains("`registry_credential_id`"), "{message}");
    assert!(!message.contains(wrong_password), "{message}");
    assert!(!format!("{error:?}").contains(wrong_password));

    // Still anonymous-refused after an authenticated success on this client.
    let error = client
        .resolve(&private, &Credentials::Anonymous)
        .await
        .expect_err("anonymous again");
    assert!(
        matches!(error, RegistryError::AuthenticationRequired { .. }),
        "{error:?}"
    );

    // And the right password still works after the wrong one.
    let again = client
        .resolve(&private, &Credentials::basic(AUTH_USER, AUTH_PASSWORD))
        .await
        .expect("resolve with credentials again");
    assert_eq!(again.digest, pushed.digest);
}

#[tokio::test]
async fn a_moved_tag_resolves_to_the_new_digest() {
    let set = fixtures().await;
    let tag = unique_tag("moving");
    let client = client();
    let moving = reference(&format!("127.0.0.1:5000/berth/demo:{tag}"));

    let first = push_demo(PLAIN_REGISTRY, "berth/demo", &tag, "v1", None)
        .await
        .expect("push v1 to the fresh tag");
    let before = client
        .resolve(&moving, &Credentials::Anonymous)
        .await
        .expect("resolve before the move");
    assert_eq!(before.digest, first.digest);
    assert_eq!(before.digest, set.demo_v1.digest);

    let second = push_demo(PLAIN_REGISTRY, "berth/demo", &tag, "v2", None)
        .await
        .expect("push v2 over the tag");
    let after = client
        .resolve(&moving, &Credentials::Anonymous)
        .await
        .expect("resolve after the move");
    assert_eq!(after.digest, second.digest);
    assert_eq!(after.digest, set.demo_v2.digest);
    assert_ne!(after.digest, before.digest);
}

#[tokio::test]
async fn localhost_is_plain_http_like_loopback_addresses() {
    let set = fixtures().await;
    let resolved = resolve_anonymously("localhost:5000/berth/demo:v1")
        .await
        .expect("localhost is loopback");
    assert_eq!(resolved.digest, set.demo_v1.digest);
    assert_eq!(
        resolved.pinned_reference,
        format!("localhost:5000/berth/demo@{}", set.demo_v1.digest)
    );
}

/// The provider's shared resolutions: concurrent and later questions about
/// the same image make one resolution (one GET of the manifest); a failed
/// question is asked again rather than remembered.
#[tokio::test]
async fn a_provider_process_shares_one_resolution_per_image() {
    use berth::provider::config::ProviderConfig;
    use berth::provider::value::Value as TfValue;
    use berth::provider::Context;

    let tag = unique_tag("shared");
    push_demo(PLAIN_REGISTRY, "berth/demo", &tag, "v1", None)
        .await
        .expect("push");
    let relay = CountingRelay::start(PLAIN_REGISTRY);
    let state = tempfile::tempdir().expect("state dir");
    let ctx = Context::new(ProviderConfig {
        state_dir: Some(state.path().to_path_buf()),
        ..Default::default()
    });
    let image = format!("{}/berth/demo:{tag}", relay.addr);
    let wanted = reference(&image);
    let gets = |tag: &str| {
        relay
            .requests(&format!("/manifests/{tag}"))
            .into_iter()
            .filter(|line| line.starts_with("GET "))
            .count()
    };

    let (first, second) = tokio::join!(
        ctx.resolve_image(&wanted, &TfValue::Null),
        ctx.resolve_image(&wanted, &TfValue::Null)
    );
    let third = ctx.resolve_image(&wanted, &TfValue::Null).await;
    let digests: Vec<String> = [first, second, third]
        .into_iter()
        .map(|r| r.expect("resolves").digest)
        .collect();
    assert!(digests.iter().all(|d| d == &digests[0]), "{digests:?}");
    assert_eq!(gets(&tag), 1, "{:?}", relay.requests(""));
    assert_eq!(
        relay.requests(&format!("/manifests/{tag}")).len(),
        2,
        "and one HEAD"
    );

    let absent = unique_tag("absent");
    let missing = reference(&format!("{}/berth/demo:{absent}", relay.addr));
    for _ in 0..2 {
        let error = ctx
            .resolve_image(&missing, &TfValue::Null)
            .await
            .expect_err("no such tag");
        assert!(
            format!("{error:?}").contains("Image not found"),
            "{error:?}"
        );
    }
    assert_eq!(
        gets(&absent),
        2,
        "a failure is asked again: {:?}",
        relay.requests("")
    );
}

/// Berth's store remembers what each digest resolved to: the next resolve
/// of an unchanged tag is one HEAD request (not counted by Docker Hub's
/// pull limits), a moved tag is resolved in full, and an index keeps its
/// linux/amd64 entry.
#[tokio::test]
async fn a_digest_resolved_before_needs_only_a_head_request() {
    use berth::provider::StoredImages;
    use berth::store::{Store, StoreOptions};

    let set = fixtures().await;
    let tag = unique_tag("known");
    let v1 = push_demo(PLAIN_REGISTRY, "berth/demo", &tag, "v1", None)
        .await
        .expect("push v1");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreOptions::in_dir(dir.path().to_path_buf(), None))
        .await
        .expect("store");
    let known = StoredImages(&store);
    let relay = CountingRelay::start(PLAIN_REGISTRY);
    let resolve = |input: String| {
        let known = &known;
        async move {
            client()
                .resolve_known(&reference(&input), &Credentials::Anonymous, known)
                .await
        }
    };
    let image = format!("{}/berth/demo:{tag}", relay.addr);
    let manifests = |tag: &str| relay.requests(&format!("/manifests/{tag}"));

    let first = resolve(image.clone()).await.expect("first");
    assert_eq!(first.digest, v1.digest);
    let second = resolve(image.clone()).await.expect("second");
    assert_eq!(second, first);
    let asked = manifests(&tag);
    assert_eq!(asked.len(), 3, "HEAD + GET, then HEAD: {asked:?}");
    assert!(asked[2].starts_with("HEAD "), "{asked:?}");

    let v2 = push_demo(PLAIN_REGISTRY, "berth/demo", &tag, "v2", None)
        .await
        .expect("push v2");
    let moved = resolve(image.clone()).await.expect("moved");
    assert_eq!(moved.digest, v2.digest, "a moved tag is resolved in full");
    assert_eq!(
        moved.pinned_reference,
        format!("{}/berth/demo@{}", relay.addr, v2.digest)
    );

    let multi = format!("{}/berth/multi:latest", relay.addr);
    let full = resolve(multi.clone()).await.expect("index");
    let remembered = resolve(multi).await.expect("index again");
    assert_eq!(remembered, full);
    assert_eq!(remembered.digest, set.multi.digest);
    assert_eq!(remembered.index_digest, set.multi.index_digest);
    assert!(
        manifests("latest")
            .last()
            .is_some_and(|l| l.starts_with("HEAD ")),
        "{:?}",
        manifests("latest")
    );
}
