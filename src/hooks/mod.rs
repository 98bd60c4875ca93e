//! `berth serve`: the deploy-hook server, the third front end of the
//! engine (after the provider and the `berth` command). It shares Berth's
//! store with them: hooks are created by `berth_deploy_hook`, and a call
//! deploys the app as Berth recorded it at its last apply (secret values
//! and hosts included), through [`Apps::deploy`].
//!
//! - `GET /healthz`: `200 {"status":"ok"}` when the store answers.
//! - `GET|POST /deploy/{id}?key=…[&imgURL=…]`: the image (the app's tag,
//!   or `imgURL`: another tag or digest of the same repository) is
//!   resolved to its linux/amd64 digest first, so a missing or refused
//!   image is answered at once (422, or 502 when the registry fails);
//!   otherwise `202 {"deploy": {"id", "status", "digest", …}}` and the
//!   deploy runs in the background ([`queue`]).
//! - `GET /deploy/{id}/deploys/{deploy}?key=…`: that deploy's status.
//! - A wrong or missing key, an unknown hook, a deleted app, an `imgURL`
//!   of another repository: the same 404, byte for byte. Other methods on
//!   these paths: 405. Repeated bad keys from one address: 429 ([`limit`]).
//!
//! The key is never logged, at any level: requests are logged by hook id
//! and outcome, never by URI.

pub mod limit;
pub mod queue;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::engine::apps::HOOK_TRIGGER;
use crate::engine::hooks::{same_repository, IMAGE_PARAM, KEY_PARAM};
use crate::engine::{Apps, AppsError, DeployRequest, Record};
use crate::reference::Reference;
use crate::registry::RegistryError;
use limit::Limiter;
use queue::{Deploy, Finished, Job, Queue, Runner, Status};

/// Longest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Longest request body read (a hook ignores its body).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a client may take to send the request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send the body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After this long a connection is closed once its request is answered
/// (idle keep-alive connections included).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Connections served at once by default; more wait in the backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// The body of every "no such hook" answer: the same bytes whatever the
/// reason (unknown hook, wrong key, deleted app, another repository).
const NOT_FOUND_BODY: &str =
    r#"{"error":{"code":"not_found","message":"no such deploy hook, or a wrong key"}}"#;

/// How `berth serve` runs, read once at the edge.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Connections served at once.
    pub max_connections: usize,
    /// A header the reverse proxy in front sets to the caller's address
    /// (e.g. `X-Real-IP`); without one the peer address is the caller's.
    pub client_ip_header: Option<HeaderName>,
    /// How long a stop waits for running deploys.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            client_ip_header: None,
            shutdown_grace: Duration::from_secs(600),
        }
    }
}

/// Loads a TLS certificate chain and key (PEM files) for the listener.
pub fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|_| {
        format!(
            "--tls-key {}: holds no readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Runs a hook's deploy: the app as recorded when the deploy starts (a
/// terraform apply in between counts), on the hosts it was deployed to.
struct EngineRunner {
    apps: Arc<Apps>,
}

#[async_trait]
impl Runner for EngineRunner {
    async fn run(&self, job: &Job) -> Result<Finished, String> {
        tracing::info!(hook = %job.hook, app = %job.app, deploy = %job.id, digest = %job.digest, "deploy started");
        let result = self.deploy(job).await;
        match &result {
            Ok(f) => {
                tracing::info!(hook = %job.hook, app = %job.app, deploy = %job.id, release = f.release, new_release = f.new_release, "deploy succeeded")
            }
            Err(error) => {
                tracing::warn!(hook = %job.hook, app = %job.app, deploy = %job.id, %error, "deploy failed")
            }
        }
        result
    }
}

impl EngineRunner {
    async fn deploy(&self, job: &Job) -> Result<Finished, String> {
        let recorded = self
            .apps
            .recorded(&job.app)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("app {:?} has no record any more (destroyed?)", job.app))?;
        let on_hosts = self
            .apps
            .on_recorded_hosts(&recorded.private)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "Berth's record of app {:?} does not say which hosts it runs on (it was last deployed by an older Berth); apply it once more, then call the hook again",
                    job.app
                )
            })?;
        let image = Reference::parse(&job.image).map_err(|e| e.to_string())?;
        let outcome = on_hosts
            .deploy(DeployRequest {
                spec: recorded.spec,
                image,
                digest: job.digest.clone(),
                trigger: HOOK_TRIGGER.to_owned(),
                record: Record::Keep,
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(Finished {
            release: outcome.release,
            new_release: outcome.new_release,
        })
    }
}

/// The hook server's state: the app operations, the queue, the limiter.
pub struct Server {
    apps: Arc<Apps>,
    queue: Queue,
    limiter: Limiter,
    options: ServeOptions,
}

type Answer = Response<Full<Bytes>>;

impl Server {
    pub fn new(apps: Arc<Apps>, options: ServeOptions) -> Arc<Server> {
        Arc::new(Server {
            queue: Queue::new(Arc::new(EngineRunner { apps: apps.clone() })),
            apps,
            limiter: Limiter::default(),
            options,
        })
    }

    /// Serves `listener` (through TLS when `tls` is given) until
    /// `shutdown` resolves; then stops accepting, lets open connections
    /// finish their request, and waits for running deploys (up to
    /// [`ServeOptions::shutdown_grace`]).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: impl Future<Output = ()>,
    ) {
        let max = self.options.max_connections.max(1);
        let permits = Arc::new(Semaphore::new(max));
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => permit.expect("never closed"),
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let server = self.clone();
            let tls = tls.clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tls {
                    None => server.connection(stream, peer, stop).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => server.connection(stream, peer, stop).await,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        drop(listener);
        let _ = stop_tx.send(true);
        // Open connections end within one request and a grace second.
        let _ = tokio::time::timeout(
            HEAD_TIMEOUT + BODY_TIMEOUT + Duration::from_secs(1),
            permits.acquire_many(max as u32),
        )
        .await;
        let left = self.queue.shutdown(self.options.shutdown_grace).await;
        if left > 0 {
            tracing::warn!(
                running = left,
                "stopping with deploys still running; their leases run out and the next deploy recovers"
            );
        }
    }

    async fn connection<S>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        mut stop: watch::Receiver<bool>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let server = self.clone();
        let service = hyper::service::service_fn(move |request| {
            let server = server.clone();
            async move { Ok::<_, std::convert::Infallible>(server.answer(request, peer.ip()).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let lifetime = tokio::time::sleep(CONNECTION_LIFETIME);
        tokio::pin!(lifetime);
        let mut closing = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = &mut lifetime, if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                changed = stop.changed(), if !closing => {
                    let _ = changed;
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }

    /// One request's answer.
    async fn answer(&self, request: Request<Incoming>, peer: IpAddr) -> Answer {
        let client = self.client_address(&request, peer);
        let path: Vec<String> = request
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .map(str::to_owned)
            .collect();
        let method = request.method().clone();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        match segments.as_slice() {
            ["healthz"] => match method {
                Method::GET | Method::HEAD => self.health().await,
                _ => not_allowed("GET, HEAD"),
            },
            ["deploy", hook] => match method {
                Method::GET | Method::POST => {
                    if let Err(answer) = drain_body(request).await {
                        return answer;
                    }
                    self.trigger(hook, &query, client).await
                }
                _ => not_allowed("GET, POST"),
            },
            ["deploy", hook, "deploys", deploy] => match method {
                Method::GET => self.status(hook, deploy, &query, client).await,
                _ => not_allowed("GET"),
            },
            _ => not_found(),
        }
    }

    fn client_address(&self, request: &Request<Incoming>, peer: IpAddr) -> IpAddr {
        self.options
            .client_ip_header
            .as_ref()
            .and_then(|name| request.headers().get_all(name).iter().next_back())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(peer)
    }

    async fn health(&self) -> Answer {
        match self.apps.store().get_hook(String::new()).await {
            Ok(_) => json_answer(StatusCode::OK, &json!({"status": "ok"})),
            Err(e) => {
                tracing::warn!(error = %e, "health check: the store failed");
                error_answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    &format!("Berth's store failed: {e}"),
                )
            }
        }
    }

    /// The hook `id` if `key` is its, counting a strike otherwise; `Err`
    /// is the answer to give.
    async fn authorize(
        &self,
        id: &str,
        query: &str,
        client: IpAddr,
    ) -> Result<crate::engine::hooks::Authorized, Answer> {
        if let Err(wait) = self.limiter.check(client) {
            tracing::info!(hook = %loggable(id), %client, outcome = "rate_limited", "hook call refused");
            return Err(too_many(wait));
        }
        let key = query_param(query, KEY_PARAM).unwrap_or_default();
        let authorized = if key.is_empty() {
            None
        } else {
            match self.apps.authorize_hook(id, &key).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(hook = %loggable(id), error = %e, "hook call failed: the store failed");
                    return Err(error_answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        "Berth's store failed; try again",
                    ));
                }
            }
        };
        match authorized {
            Some(a) => Ok(a),
            None => {
                self.limiter.strike(client);
                tracing::info!(hook = %loggable(id), %client, outcome = "not_found", "hook call refused: unknown hook or wrong key");
                Err(not_found())
            }
        }
    }

    async fn trigger(&self, id: &str, query: &str, client: IpAddr) -> Answer {
        let authorized = match self.authorize(id, query, client).await {
            Ok(a) => a,
            Err(answer) => return answer,
        };
        let hook = authorized.hook;
        let Some(app) = authorized.app else {
            tracing::info!(hook = %hook.id, app = %hook.app, outcome = "not_found", "hook call refused: the app has no record");
            return not_found();
        };
        let configured = match Reference::parse(&app.spec.image) {
            Ok(r) => r,
            Err(e) => {
                return error_answer(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "invalid_record",
                    &format!("the app's recorded image is not valid: {e}"),
                )
            }
        };
        let image = match query_param(query, IMAGE_PARAM) {
            None => configured.clone(),
            Some(given) => match Reference::parse(&given) {
                Ok(image) if same_repository(&configured, &image) => image,
                Ok(image) => {
                    tracing::info!(hook = %hook.id, app = %hook.app, image = %image, outcome = "not_found", "hook call refused: imgURL names another repository");
                    return not_found();
                }
                Err(e) => {
                    tracing::info!(hook = %hook.id, app = %hook.app, outcome = "invalid_image", "hook call refused: imgURL is not an image reference");
                    return error_answer(
                        StatusCode::BAD_REQUEST,
                        "invalid_image",
                        &format!("{IMAGE_PARAM}: {e}"),
                    );
                }
            },
        };
        let resolved = match self.apps.resolve(&app.spec, &image).await {
            Ok(r) => r,
            Err(e) => {
                let (status, code) = refusal(&e);
                tracing::info!(hook = %hook.id, app = %hook.app, image = %image, outcome = code, "hook call refused: {e}");
                return error_answer(status, code, &e.to_string());
            }
        };
        let job = Job {
            id: new_deploy_id(),
            app: hook.app.clone(),
            hook: hook.id.clone(),
            image: image.to_string(),
            digest: resolved.digest,
        };
        match self.queue.submit(job.clone()) {
            Ok(deploy) => {
                let joined = deploy.job.id != job.id;
                tracing::info!(hook = %hook.id, app = %hook.app, deploy = %deploy.job.id, digest = %deploy.job.digest, status = deploy.status.word(), joined, outcome = "accepted", "hook call accepted");
                let key = query_param(query, KEY_PARAM).unwrap_or_default();
                json_answer(StatusCode::ACCEPTED, &deploy_json(&hook.id, &key, &deploy))
            }
            Err(queue::Closed) => error_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopping",
                "the hook server is stopping; call again when it is back",
            ),
        }
    }

    async fn status(&self, id: &str, deploy: &str, query: &str, client: IpAddr) -> Answer {
        let authorized = match self.authorize(id, query, client).await {
            Ok(a) => a,
            Err(answer) => return answer,
        };
        match self.queue.get(&authorized.hook.app, deploy) {
            Some(found) => {
                let key = query_param(query, KEY_PARAM).unwrap_or_default();
                json_answer(StatusCode::OK, &deploy_json(id, &key, &found))
            }
            None => not_found(),
        }
    }
}

/// The status code and error code of a refused image.
fn refusal(error: &AppsError) -> (StatusCode, &'static str) {
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let bad_gateway = StatusCode::BAD_GATEWAY;
    match error {
        AppsError::Registry(e) => match e {
            RegistryError::NotFound { .. } => (unprocessable, "image_not_found"),
            RegistryError::NoLinuxAmd64 { .. } | RegistryError::PlatformMismatch { .. } => {
                (unprocessable, "no_linux_amd64")
            }
            RegistryError::TooLarge { .. } => (unprocessable, "image_too_large"),
            RegistryError::InvalidImage { .. } => (unprocessable, "invalid_image"),
            RegistryError::Unreachable { .. } | RegistryError::Timeout { .. } => {
                (bad_gateway, "registry_unreachable")
            }
            RegistryError::AuthenticationRequired { .. }
            | RegistryError::CredentialsRejected { .. }
            | RegistryError::Denied { .. } => (bad_gateway, "registry_denied"),
            RegistryError::RateLimited { .. } => (bad_gateway, "registry_rate_limited"),
            RegistryError::DigestMismatch { .. } | RegistryError::Protocol { .. } => {
                (bad_gateway, "registry_error")
            }
        },
        AppsError::NoCredential { .. } | AppsError::WrongRegistry { .. } => {
            (StatusCode::CONFLICT, "credential_unusable")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// `{"deploy": {...}}`, Render's shape, with the digest and where to ask.
fn deploy_json(hook: &str, key: &str, deploy: &Deploy) -> serde_json::Value {
    let mut body = json!({
        "id": deploy.job.id,
        "status": deploy.status.word(),
        "app": deploy.job.app,
        "image": deploy.job.image,
        "digest": deploy.job.digest,
        "status_url": format!("/deploy/{hook}/deploys/{}?{KEY_PARAM}={key}", deploy.job.id),
    });
    match &deploy.status {
        Status::Succeeded(f) => {
            body["release"] = json!(f.release);
            body["new_release"] = json!(f.new_release);
        }
        Status::Failed(error) => body["error"] = json!(error),
        Status::Superseded { by } => body["superseded_by"] = json!(by),
        Status::Queued | Status::Running => {}
    }
    json!({ "deploy": body })
}

/// The first value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A hook id as given, safe to log: at most 40 characters of `[a-z0-9-]`
/// (a guessed id is not secret, but an arbitrary string is not logged).
fn loggable(id: &str) -> String {
    let clean: String = id
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '?'
            }
        })
        .collect();
    clean
}

fn new_deploy_id() -> String {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Unique enough for a status lookup; never a secret.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = (nanos as u64).to_be_bytes();
    }
    format!("dep-{}", hex::encode(bytes))
}

/// Reads and drops the body, bounded in size and time.
async fn drain_body(request: Request<Incoming>) -> Result<(), Answer> {
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES);
    match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(error_answer(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body took too long",
        )),
    }
}

fn json_answer(status: StatusCode, body: &serde_json::Value) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_answer(status: StatusCode, code: &str, message: &str) -> Answer {
    json_answer(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn not_found() -> Answer {
    let mut response = Response::new(Full::new(Bytes::from_static(NOT_FOUND_BODY.as_bytes())));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn not_allowed(allow: &'static str) -> Answer {
    let mut response = error_answer(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("use {allow}"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn too_many(wait: Duration) -> Answer {
    let mut response = error_answer(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many calls with a wrong key from this address; wait and call again",
    );
    response.headers_mut().insert(
        RETRY_AFTER,
        HeaderValue::from_str(&wait.as_secs().to_string()).expect("digits"),
    );
    response
}

fn too_large() -> Answer {
    error_answer(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("a hook call's body is ignored; send at most {MAX_BODY_BYTES} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let q = "key=abc_-1&imgURL=127.0.0.1%3A5000%2Fshop%2Fweb%3Av2";
        assert_eq!(query_param(q, "key").as_deref(), Some("abc_-1"));
        assert_eq!(
            query_param(q, "imgURL").as_deref(),
            Some("127.0.0.1:5000/shop/web:v2")
        );
        assert_eq!(query_param(q, "other"), None);
        assert_eq!(query_param("", "key"), None);
    }

    #[test]
    fn logged_ids_are_tame() {
        assert_eq!(loggable("dh-0123abcd"), "dh-0123abcd");
        assert_eq!(loggable("a b\nc"), "a?b?c");
        assert_eq!(loggable(&"x".repeat(100)).len(), 40);
    }

    #[test]
    fn refusals_name_what_went_wrong() {
        let e = AppsError::Registry(RegistryError::NoLinuxAmd64 {
            reference: "r/x:1".into(),
            platforms: vec!["linux/arm64".into()],
        });
        assert_eq!(
            refusal(&e),
            (StatusCode::UNPROCESSABLE_ENTITY, "no_linux_amd64")
        );
        let e = AppsError::Registry(RegistryError::TooLarge {
            reference: "r/x:1".into(),
            size_bytes: 11_000_000_000,
        });
        assert_eq!(refusal(&e).1, "image_too_large");
    }
}
