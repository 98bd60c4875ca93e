//! Registry authentication against real registries (`bash tests/devenv.sh
//! up`): the bearer token flow against distribution 2.8 with `auth: token`
//! on 127.0.0.1:5002, whose token service these tests run themselves
//! (`support/token_service.rs` on 127.0.0.1:5003); HTTP Basic on :5001; the
//! open registry on :5000. Also: tokens cached (one token request for
//! repeated resolves), short rate limits waited out (a scripted local
//! server answering 429), and no password or token in any message or log
//! line, even at trace level.

#[path = "support/token_service.rs"]
mod token_service;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use berth::devtools::fixtures::{push_demo, Pushed, AUTH_REGISTRY, PLAIN_REGISTRY};
use berth::reference::Reference;
use berth::registry::{
    docker_server_address, hint, Credentials, RegistryClient, RegistryError, RegistryOptions,
    Secret,
};
use sha2::{Digest, Sha256};
use token_service::{PASSWORD, TOKEN_REGISTRY, USER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

const WRONG_PASSWORD: &str = "not-the-berth-password";

fn reference(input: &str) -> Reference {
    Reference::parse(input).expect("valid reference")
}

fn client() -> RegistryClient {
    RegistryClient::new(RegistryOptions::default())
}

fn good() -> Credentials {
    Credentials::basic(USER, PASSWORD)
}

fn wrong() -> Credentials {
    Credentials::basic(USER, WRONG_PASSWORD)
}

/// Pushes `berth/<repository>:v1` (the demo v1 image) to the token-auth
/// registry through the token flow, once per test binary and repository.
async fn pushed(repository: &'static str) -> &'static Pushed {
    static PRIVATE: OnceCell<Pushed> = OnceCell::const_new();
    static CACHE_PROBE: OnceCell<Pushed> = OnceCell::const_new();
    token_service::shared();
    let cell = match repository {
        "berth/private" => &PRIVATE,
        _ => &CACHE_PROBE,
    };
    cell.get_or_init(|| async move {
        push_demo(
            TOKEN_REGISTRY,
            repository,
            "v1",
            "v1",
            Some((USER, PASSWORD)),
        )
        .await
        .expect("push to the token-auth registry (is `bash tests/devenv.sh up` done?)")
    })
    .await
}

#[tokio::test]
async fn token_flow_resolves_a_private_image_and_refuses_wrong_or_missing_credentials() {
    let pushed = pushed("berth/private").await;
    let client = client();
    let private = reference("127.0.0.1:5002/berth/private:v1");

    let resolved = client
        .resolve(&private, &good())
        .await
        .expect("resolve through the token flow");
    assert_eq!(resolved.digest, pushed.digest);
    assert_eq!(
        resolved.pinned_reference,
        format!("127.0.0.1:5002/berth/private@{}", pushed.digest)
    );

    let error = client
        .resolve(&private, &wrong())
        .await
        .expect_err("wrong password");
    assert!(
        matches!(error, RegistryError::CredentialsRejected { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(
            "registry 127.0.0.1:5002 rejected the credentials of user `berth` for pulling \
             `berth/private`: incorrect username or password."
        ),
        "{message}"
    );
    assert!(!message.contains(WRONG_PASSWORD), "{message}");

    // Anonymous: the token service hands out a token without access, and
    // the registry refuses it.
    let error = client
        .resolve(&private, &Credentials::Anonymous)
        .await
        .expect_err("anonymous");
    assert!(
        matches!(error, RegistryError::AuthenticationRequired { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("registry 127.0.0.1:5002 requires authentication to pull `berth/private`"),
        "{error}"
    );

    // Good credentials still work after the refusals, on the same client.
    let again = client.resolve(&private, &good()).await.expect("again");
    assert_eq!(again.digest, pushed.digest);
}

#[tokio::test]
async fn resolving_twice_asks_the_token_service_once() {
    let pushed = pushed("berth/cache-probe").await;
    let service = token_service::shared();
    let scope = "repository:berth/cache-probe:pull";
    let before = service.requests(USER, scope);
    let client = client();
    let probe = reference("127.0.0.1:5002/berth/cache-probe:v1");

    for _ in 0..2 {
        let resolved = client.resolve(&probe, &good()).await.expect("resolve");
        assert_eq!(resolved.digest, pushed.digest);
    }
    // HEAD for the current digest: same scope, same cached token.
    let digest = client
        .manifest_digest(&probe, &good())
        .await
        .expect("HEAD digest");
    assert_eq!(&digest, &pushed.digest);
    assert_eq!(
        service.requests(USER, scope) - before,
        1,
        "two resolves (four GETs) and a HEAD need one token"
    );

    // Another credential never uses that token: it asks for its own.
    let anonymous_before = service.requests("", scope);
    client
        .resolve(&probe, &Credentials::Anonymous)
        .await
        .expect_err("anonymous");
    assert_eq!(service.requests("", scope) - anonymous_before, 1);
}

#[tokio::test]
async fn verify_login_on_the_open_basic_and_token_registries() {
    token_service::shared();
    let client = client();
    let good_secret = Secret::new(PASSWORD);
    let wrong_secret = Secret::new(WRONG_PASSWORD);

    // Open registry: anyone is welcome.
    client
        .verify_login(PLAIN_REGISTRY, USER, &wrong_secret)
        .await
        .expect("the open registry accepts anyone");

    for registry in [AUTH_REGISTRY, TOKEN_REGISTRY] {
        client
            .verify_login(registry, USER, &good_secret)
            .await
            .unwrap_or_else(|e| panic!("{registry}: {e}"));
        let error = client
            .verify_login(registry, USER, &wrong_secret)
            .await
            .expect_err("wrong password");
        assert!(
            matches!(error, RegistryError::CredentialsRejected { .. }),
            "{registry}: {error:?}"
        );
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "registry {registry} rejected the credentials of user `berth` at login"
            )),
            "{message}"
        );
        assert!(!message.contains(WRONG_PASSWORD), "{message}");
        assert_eq!(error.summary(), "Registry rejected the credentials");
    }
    // The token login asked for a token without scope.
    assert!(token_service::shared().requests(USER, "") >= 1);
}

#[test]
fn hosted_registries_have_hints_and_docker_hub_its_v1_address() {
    assert!(hint("ghcr.io").is_some_and(|h| h.contains("`read:packages`")));
    assert!(hint("registry.gitlab.com").is_some_and(|h| h.contains("`read_registry`")));
    assert!(hint("europe-docker.pkg.dev").is_some_and(|h| h.contains("Artifact Registry Reader")));
    assert!(hint("docker.io").is_some_and(|h| h.contains("Docker ID")));
    assert!(hint("registry.digitalocean.com").is_some());
    assert_eq!(hint("127.0.0.1:5002"), None);
    assert_eq!(
        docker_server_address("docker.io"),
        "https://index.docker.io/v1/"
    );
    assert_eq!(docker_server_address("ghcr.io"), "ghcr.io");
}

// ------------------------------------------------------------ rate limits

/// A tiny registry serving one image (a manifest and its config), whose
/// manifest answers are `429` with `retry_after` for the first
/// `limited` requests. Returns its port, the request counter, and the task.
async fn rate_limited_registry(
    limited: usize,
    retry_after: &'static str,
) -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(config)));
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
        config.len()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let manifest_requests = Arc::new(AtomicUsize::new(0));
    let counter = manifest_requests.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => head.extend_from_slice(&buffer[..read]),
                }
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let (status, extra, body): (&str, String, Vec<u8>) = if path.contains("/manifests/") {
                let seen = counter.fetch_add(1, Ordering::SeqCst);
                if seen < limited {
                    (
                        "429 Too Many Requests",
                        format!("Retry-After: {retry_after}\r\n"),
                        br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#
                            .to_vec(),
                    )
                } else {
                    (
                        "200 OK",
                        "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n".to_owned(),
                        manifest.clone().into_bytes(),
                    )
                }
            } else if path.ends_with(&config_digest) {
                ("200 OK", String::new(), config.to_vec())
            } else {
                ("404 Not Found", String::new(), Vec::new())
            };
            let mut response = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            response.extend_from_slice(&body);
            let _ = socket.write_all(&response).await;
        }
    });
    (port, manifest_requests, task)
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out_and_a_long_one_reported() {
    // Two 429s with `Retry-After: 1`, then the image: resolved after ~2 s.
    let (port, requests, task) = rate_limited_registry(2, "1").await;
    let started = Instant::now();
    let resolved = client()
        .resolve(
            &reference(&format!("127.0.0.1:{port}/berth/limited:v1")),
            &Credentials::Anonymous,
        )
        .await
        .expect("resolved after waiting");
    let waited = started.elapsed();
    assert_eq!(resolved.platform, "linux/amd64");
    assert_eq!(requests.load(Ordering::SeqCst), 3);
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    task.abort();

    // Three 429s: two retries, then the refusal (bounded).
    let (port, requests, task) = rate_limited_registry(usize::MAX, "1").await;
    let started = Instant::now();
    let error = client()
        .resolve(
            &reference(&format!("127.0.0.1:{port}/berth/limited:v1")),
            &Credentials::Anonymous,
        )
        .await
        .expect_err("still limited");
    assert!(
        matches!(error, RegistryError::RateLimited { .. }),
        "{error:?}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 3);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        error
            .to_string()
            .contains("Wait 1 second (the registry's Retry-After) before retrying"),
        "{error}"
    );
    task.abort();

    // A long wait is not waited out: reported at once, naming it.
    let (port, requests, task) = rate_limited_registry(usize::MAX, "120").await;
    let started = Instant::now();
    let error = client()
        .resolve(
            &reference(&format!("127.0.0.1:{port}/berth/limited:v1")),
            &Credentials::Anonymous,
        )
        .await
        .expect_err("limited for long");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    let message = error.to_string();
    assert!(
        message.contains("429 Too Many Requests: slow down"),
        "{message}"
    );
    assert!(
        message.contains("Wait 120 seconds (the registry's Retry-After)"),
        "{message}"
    );
    assert!(error.is_transient());
    task.abort();
}

// ------------------------------------------------------------ no leaks

/// Log lines of the threads that asked for them (see [`capture_logs`]).
static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

thread_local! {
    static CAPTURING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if CAPTURING.with(|capturing| capturing.get()) {
            CAPTURED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A trace-level subscriber for the whole binary (also receiving `log`
/// records, e.g. reqwest's) that keeps only the lines of threads that set
/// `CAPTURING`.
fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| CaptureWriter)
            .try_init();
    });
    CAPTURING.with(|capturing| capturing.set(true));
}

#[tokio::test(flavor = "current_thread")]
async fn no_password_or_token_in_messages_or_trace_logs() {
    pushed("berth/private").await;
    capture_logs();
    let client = client();
    let private = reference("127.0.0.1:5002/berth/private:v1");
    let basic_private = reference("127.0.0.1:5001/berth/private:v1");
    let mut messages = Vec::new();

    client.resolve(&private, &good()).await.expect("resolve");
    client
        .resolve(&private, &good())
        .await
        .expect("resolve, cached token");
    for (target, credentials) in [
        (&private, wrong()),
        (&private, Credentials::Anonymous),
        (&basic_private, wrong()),
    ] {
        let error = client
            .resolve(target, &credentials)
            .await
            .expect_err("refused");
        messages.push(format!("{error}\n{error:?}"));
    }
    for registry in [AUTH_REGISTRY, TOKEN_REGISTRY] {
        client
            .verify_login(registry, USER, &Secret::new(PASSWORD))
            .await
            .expect("login");
        let error = client
            .verify_login(registry, USER, &Secret::new(WRONG_PASSWORD))
            .await
            .expect_err("refused");
        messages.push(format!("{error}\n{error:?}"));
    }
    messages.push(format!("{client:?} {:?}", good()));
    CAPTURING.with(|capturing| capturing.set(false));

    let logs = String::from_utf8_lossy(&CAPTURED.lock().expect("logs")).to_string();
    assert!(
        logs.contains("obtained a registry token"),
        "trace logs were captured: {logs}"
    );
    let tokens = token_service::shared().issued_tokens();
    assert!(!tokens.is_empty());
    let mut secrets: Vec<String> = vec![
        PASSWORD.to_owned(),
        WRONG_PASSWORD.to_owned(),
        STANDARD.encode(format!("{USER}:{PASSWORD}")),
        STANDARD.encode(format!("{USER}:{WRONG_PASSWORD}")),
    ];
    for token in &tokens {
        secrets.push(token.clone());
        // The signature alone is secret enough to count as a leak.
        if let Some(signature) = token.rsplit('.').next() {
            secrets.push(signature.to_owned());
        }
    }
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
        for message in &messages {
            assert!(
                !message.contains(secret.as_str()),
                "a secret is in: {message}"
            );
        }
    }
}
