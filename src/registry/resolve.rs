//! The walk from a reference to the linux/amd64 image: fetch what the tag
//! or digest names; if it is an index, pick the linux/amd64 entry and fetch
//! that manifest; fetch the image config and check its platform; add up the
//! compressed size. Every fetched document is checked against its digest,
//! and every exchange is bounded in time.

use std::time::Instant;

use reqwest::header::ACCEPT;
use reqwest::Method;

use super::error::FailureContext;
use super::exchange::{read_error_body, read_limited};
use super::manifest::{
    compressed_size, config_platform, digest_matches, is_target_platform, parse_document,
    select_linux_amd64, sha256_digest, Descriptor, Document, ACCEPTED_MANIFEST_MEDIA_TYPES,
};
use super::{
    api_host, Credentials, KnownImage, KnownImages, RegistryClient, RegistryError, ResolvedImage,
    MAX_COMPRESSED_SIZE,
};
use crate::reference::Reference;

/// Image configs are small JSON documents; a "config" larger than this is
/// not one, and reading it whole would only waste memory.
const MAX_CONFIG_BYTES: usize = 8 * 1024 * 1024;
/// Registries refuse manifests over 4 MiB (distribution's limit).
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

impl RegistryClient {
    /// Resolves `reference` to its linux/amd64 image manifest digest,
    /// refusing images Berth cannot deploy (see [`RegistryError`]).
    ///
    /// A tag naming a multi-platform index yields the digest of its
    /// linux/amd64 entry plus the index digest; a digest reference works
    /// the same, whether it names an index or a manifest.
    pub async fn resolve(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<ResolvedImage, RegistryError> {
        let started = Instant::now();
        let canonical = reference.to_string();
        let session = Session::new(self, reference, credentials, &canonical);
        tracing::debug!(
            reference = %canonical,
            url = %session.base_url,
            authenticated = credentials.username().is_some(),
            "resolving image"
        );
        let result = session.resolve().await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(resolved) => tracing::debug!(
                reference = %canonical,
                digest = %resolved.digest,
                index_digest = resolved.index_digest.as_deref().unwrap_or("-"),
                size_bytes = resolved.size_bytes,
                elapsed_ms,
                "resolved image"
            ),
            Err(error) => tracing::debug!(
                reference = %canonical,
                error = %error,
                elapsed_ms,
                "could not resolve image"
            ),
        }
        result
    }

    /// [`RegistryClient::resolve`], remembering what each digest resolved
    /// to in `known`. A reference whose digest (from one `HEAD` request)
    /// resolved before is answered from `known` with no `GET` at all:
    /// HEAD requests do not count against Docker Hub's pull limits, so
    /// plans of unchanged tags cost none. A new digest, or a `HEAD` the
    /// registry does not answer usefully, takes the full resolve (whose
    /// errors carry the registry's own explanation).
    pub async fn resolve_known(
        &self,
        reference: &Reference,
        credentials: &Credentials,
        known: &dyn KnownImages,
    ) -> Result<ResolvedImage, RegistryError> {
        let head = self.manifest_digest(reference, credentials).await.ok();
        self.resolve_known_after(reference, credentials, known, head)
            .await
    }

    /// [`RegistryClient::resolve_known`] with the `HEAD` already made:
    /// `head` is the digest it answered (`None`: it failed or was not
    /// useful), so a caller can send it early, or share one between
    /// several waiters, without asking twice.
    pub async fn resolve_known_after(
        &self,
        reference: &Reference,
        credentials: &Credentials,
        known: &dyn KnownImages,
        head: Option<String>,
    ) -> Result<ResolvedImage, RegistryError> {
        if let Some(top) = head {
            if let Some(image) = known.known(&top).await {
                tracing::debug!(
                    reference = %reference,
                    top_digest = %top,
                    digest = %image.digest,
                    "resolved image from a digest resolved before"
                );
                return Ok(ResolvedImage::of(reference, image));
            }
        }
        let resolved = self.resolve(reference, credentials).await?;
        // Keyed by what the full resolve fetched, not by the HEAD answer:
        // the tag may have moved in between.
        let top = resolved.index_digest.as_deref().unwrap_or(&resolved.digest);
        known.remember(top, &resolved.known()).await;
        Ok(resolved)
    }

    /// The digest the reference names right now (of an index or a
    /// manifest, whichever the tag points at), from one `HEAD` request:
    /// cheap (Docker Hub does not count it against pull limits), for
    /// noticing that a tag moved. Does not check platform or size.
    pub async fn manifest_digest(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<String, RegistryError> {
        let canonical = reference.to_string();
        let session = Session::new(self, reference, credentials, &canonical);
        let object = session.top_object();
        let ctx = session.context(object, false);
        let url = session.manifest_url(object);
        self.bounded(&ctx, async {
            let response = session
                .send(&ctx, Method::HEAD, &url, Some(&manifest_accept()))
                .await?;
            let status = response.status();
            if !status.is_success() {
                return Err(ctx.classify_response(status.as_u16(), b""));
            }
            let served = response
                .headers()
                .get(DOCKER_CONTENT_DIGEST)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            match (served, reference.digest()) {
                (Some(served), Some(asked)) if served != asked => {
                    Err(ctx.digest_mismatch(asked, &served))
                }
                (Some(served), _) => Ok(served),
                (None, Some(asked)) => Ok(asked.to_owned()),
                (None, None) => Err(ctx.protocol(
                    Some(status.as_u16()),
                    "its answer to HEAD has no Docker-Content-Digest header",
                )),
            }
        })
        .await
    }
}

fn manifest_accept() -> String {
    ACCEPTED_MANIFEST_MEDIA_TYPES.join(", ")
}

/// One resolve: the facts every request and message needs.
struct Session<'a> {
    registry_client: &'a RegistryClient,
    reference: &'a Reference,
    credentials: &'a Credentials,
    canonical: &'a str,
    /// `scheme://host` of the registry API.
    origin: String,
    /// `scheme://host/v2/`, as messages name it.
    base_url: String,
    /// `repository:<name>:pull`.
    scope: String,
}

/// A fetched manifest or index and its verified digest.
struct Fetched {
    raw: Vec<u8>,
    digest: String,
}

impl<'a> Session<'a> {
    fn new(
        registry_client: &'a RegistryClient,
        reference: &'a Reference,
        credentials: &'a Credentials,
        canonical: &'a str,
    ) -> Session<'a> {
        let scheme =
            registry_client.scheme_for(reference.registry(), reference.is_loopback_registry());
        let origin = format!("{}://{}", scheme.as_str(), api_host(reference.registry()));
        Session {
            registry_client,
            reference,
            credentials,
            canonical,
            base_url: format!("{origin}/v2/"),
            scope: format!("repository:{}:pull", reference.repository()),
            origin,
        }
    }

    fn top_object(&self) -> &'a str {
        match self.reference.digest() {
            Some(digest) => digest,
            None => self.reference.tag().unwrap_or("latest"),
        }
    }

    fn manifest_url(&self, object: &str) -> String {
        format!(
            "{}/v2/{}/manifests/{object}",
            self.origin,
            self.reference.repository()
        )
    }

    async fn resolve(&self) -> Result<ResolvedImage, RegistryError> {
        let top_object = self.top_object();
        let top = self
            .fetch_manifest(top_object, self.reference.digest())
            .await?;
        let top_context = self.context(top_object, false);

        let (image, index_digest) =
            match parse_document(&top.raw).map_err(|e| top_context.invalid_image(e))? {
                Document::Image { config, layers } => ((top.digest, config, layers), None),
                Document::Index { manifests } => {
                    let entry = select_linux_amd64(&manifests).map_err(|platforms| {
                        RegistryError::NoLinuxAmd64 {
                            reference: self.canonical.to_owned(),
                            platforms,
                        }
                    })?;
                    tracing::debug!(
                        reference = %self.canonical,
                        index_digest = %top.digest,
                        digest = %entry.digest,
                        "picked the linux/amd64 entry of the index"
                    );
                    let chosen = self
                        .fetch_manifest(&entry.digest, Some(&entry.digest))
                        .await?;
                    let entry_context = self.context(&entry.digest, false);
                    match parse_document(&chosen.raw).map_err(|e| entry_context.invalid_image(e))? {
                        Document::Image { config, layers } => {
                            ((chosen.digest, config, layers), Some(top.digest))
                        }
                        Document::Index { .. } => {
                            return Err(entry_context.invalid_image(format!(
                                "the linux/amd64 entry {} of its index is itself an index; Berth \
                             reads one level of index only",
                                entry.digest
                            )))
                        }
                    }
                }
            };
        let (digest, config, layers) = image;

        let config_raw = self.fetch_config(&config).await?;
        let platform = config_platform(&config_raw)
            .map_err(|e| self.context(&digest, false).invalid_image(e))?;
        if !is_target_platform(&platform) {
            return Err(match &index_digest {
                Some(_) => RegistryError::PlatformMismatch {
                    reference: self.canonical.to_owned(),
                    digest,
                    found: platform.to_string(),
                },
                None => RegistryError::NoLinuxAmd64 {
                    reference: self.canonical.to_owned(),
                    platforms: vec![platform.to_string()],
                },
            });
        }

        let size_bytes = compressed_size(&config, &layers)
            .map_err(|e| self.context(&digest, false).invalid_image(e))?;
        if size_bytes > MAX_COMPRESSED_SIZE {
            return Err(RegistryError::TooLarge {
                reference: self.canonical.to_owned(),
                size_bytes,
            });
        }

        Ok(ResolvedImage::of(
            self.reference,
            KnownImage {
                digest,
                index_digest,
                size_bytes,
            },
        ))
    }

    fn context<'s>(&'s self, object: &'s str, fetching_blob: bool) -> FailureContext<'s> {
        FailureContext {
            reference: self.canonical,
            registry: self.reference.registry(),
            repository: self.reference.repository(),
            base_url: &self.base_url,
            object,
            fetching_blob,
            username: self.credentials.username(),
            secret: self.credentials.secret(),
        }
    }

    /// One authenticated request to the registry API for this repository.
    async fn send(
        &self,
        ctx: &FailureContext<'_>,
        method: Method,
        url: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        self.registry_client
            .send_authorized(ctx, &self.origin, &self.scope, self.credentials, |http| {
                let request = http.request(method.clone(), url);
                match accept {
                    Some(accept) => request.header(ACCEPT, accept),
                    None => request,
                }
            })
            .await
    }

    /// Fetches the manifest or index `object` (tag or digest) names and
    /// checks it hashes to `expected` (when named by digest) and to what
    /// the registry says it is.
    async fn fetch_manifest(
        &self,
        object: &str,
        expected: Option<&str>,
    ) -> Result<Fetched, RegistryError> {
        let context = self.context(object, false);
        let url = self.manifest_url(object);
        let (raw, registry_digest) = self
            .registry_client
            .bounded(&context, async {
                let mut response = self
                    .send(&context, Method::GET, &url, Some(&manifest_accept()))
                    .await?;
                let status = response.status();
                if !status.is_success() {
                    let body = read_error_body(&mut response).await;
                    return Err(context.classify_response(status.as_u16(), &body));
                }
                let registry_digest = response
                    .headers()
                    .get(DOCKER_CONTENT_DIGEST)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                match read_limited(&mut response, MAX_MANIFEST_BYTES).await {
                    Ok(Some(raw)) => Ok((raw, registry_digest)),
                    Ok(None) => Err(context.invalid_image(format!(
                        "its manifest is larger than {MAX_MANIFEST_BYTES} bytes, more than \
                         registries accept for a manifest"
                    ))),
                    Err(error) => Err(context.request_failed(&error)),
                }
            })
            .await?;
        let computed = sha256_digest(&raw);
        if let Some(expected) = expected {
            if !digest_matches(&raw, expected) {
                return Err(context.digest_mismatch(expected, &computed));
            }
        }
        if registry_digest.starts_with("sha256:") && registry_digest != computed {
            return Err(context.digest_mismatch(&registry_digest, &computed));
        }
        Ok(Fetched {
            raw,
            digest: expected.map_or(computed, str::to_owned),
        })
    }

    /// Fetches the image config blob (bounded in size) and verifies it.
    async fn fetch_config(&self, config: &Descriptor) -> Result<Vec<u8>, RegistryError> {
        let context = self.context(&config.digest, true);
        let too_large = || {
            context.invalid_image(format!(
                "its config blob {} is larger than {MAX_CONFIG_BYTES} bytes; image configs are \
                 small JSON documents",
                config.digest
            ))
        };
        if usize::try_from(config.size).map_or(true, |size| size > MAX_CONFIG_BYTES) {
            return Err(context.invalid_image(format!(
                "its config blob claims {} bytes; image configs are small JSON documents",
                config.size
            )));
        }
        if let Some(content) = self.registry_client.cached_config(&config.digest) {
            return Ok(content.as_ref().clone());
        }
        let url = format!(
            "{}/v2/{}/blobs/{}",
            self.origin,
            self.reference.repository(),
            config.digest
        );
        let content = self
            .registry_client
            .bounded(&context, async {
                let mut response = self.send(&context, Method::GET, &url, None).await?;
                let status = response.status();
                if !status.is_success() {
                    let body = read_error_body(&mut response).await;
                    return Err(context.classify_response(status.as_u16(), &body));
                }
                match read_limited(&mut response, MAX_CONFIG_BYTES).await {
                    Ok(Some(content)) => Ok(content),
                    Ok(None) => Err(too_large()),
                    Err(error) => Err(context.request_failed(&error)),
                }
            })
            .await?;
        if !digest_matches(&content, &config.digest) {
            return Err(context.digest_mismatch(&config.digest, &sha256_digest(&content)));
        }
        self.registry_client
            .cache_config(&config.digest, std::sync::Arc::new(content.clone()));
        Ok(content)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::RegistryOptions;
    use super::*;

    const OCI_IMAGE_MEDIA_TYPE_FOR_TESTS: &str = "application/vnd.oci.image.manifest.v1+json";

    /// A scripted answer: status, extra headers, body.
    type Script = fn(&str) -> (u16, Vec<(&'static str, String)>, Vec<u8>);

    fn reference(input: &str) -> Reference {
        Reference::parse(input).expect("valid reference")
    }

    /// A scripted registry for answers the local registries never give
    /// (rate limits, server errors, tampered content): `answer` maps a
    /// request path to status, extra headers and body.
    async fn scripted_registry(answer: Script) -> (u16, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match socket.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, headers, body) = answer(&path);
                let mut response = format!(
                    "HTTP/1.1 {status} Scripted\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    response.push_str(&format!("{name}: {value}\r\n"));
                }
                response.push_str("\r\n");
                let mut bytes = response.into_bytes();
                bytes.extend_from_slice(&body);
                let _ = socket.write_all(&bytes).await;
            }
        });
        (port, task)
    }

    async fn resolve_scripted(answer: Script) -> RegistryError {
        let (port, task) = scripted_registry(answer).await;
        let result = RegistryClient::new(RegistryOptions::default())
            .resolve(
                &reference(&format!("127.0.0.1:{port}/berth/demo:v1")),
                &Credentials::Anonymous,
            )
            .await;
        task.abort();
        result.expect_err("scripted failure")
    }

    fn envelope(code: &str, message: &str) -> Vec<u8> {
        format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#).into_bytes()
    }

    #[tokio::test]
    async fn rate_limits_denials_and_server_errors_are_told_apart() {
        let limited = resolve_scripted(|path| match path {
            "/v2/" => (200, vec![], b"{}".to_vec()),
            _ => (
                429,
                vec![("Retry-After", "30".to_owned())],
                envelope("TOOMANYREQUESTS", "pull rate limit reached"),
            ),
        })
        .await;
        assert!(
            matches!(limited, RegistryError::RateLimited { .. }),
            "{limited:?}"
        );
        let message = limited.to_string();
        assert!(
            message.contains("429 Too Many Requests: pull rate limit reached"),
            "{message}"
        );
        assert!(message.contains("Retry-After"), "{message}");

        let denied = resolve_scripted(|path| match path {
            "/v2/" => (200, vec![], b"{}".to_vec()),
            _ => (
                403,
                vec![],
                envelope("DENIED", "requested access to the resource is denied"),
            ),
        })
        .await;
        assert!(matches!(denied, RegistryError::Denied { .. }), "{denied:?}");
        assert!(
            denied.to_string().contains("denied access to `berth/demo`"),
            "{denied}"
        );

        let broken = resolve_scripted(|path| match path {
            "/v2/" => (200, vec![], b"{}".to_vec()),
            _ => (500, vec![], b"database is down".to_vec()),
        })
        .await;
        assert!(
            matches!(
                broken,
                RegistryError::Protocol {
                    status: Some(500),
                    ..
                }
            ),
            "{broken:?}"
        );
        assert!(
            broken.to_string().contains("HTTP 500: database is down"),
            "{broken}"
        );
        assert!(broken.is_transient());
    }

    #[tokio::test]
    async fn content_that_does_not_match_its_digest_is_refused() {
        let error = resolve_scripted(|path| match path {
            "/v2/" => (200, vec![], b"{}".to_vec()),
            _ => (
                200,
                vec![
                    ("Content-Type", OCI_IMAGE_MEDIA_TYPE_FOR_TESTS.to_owned()),
                    (
                        "Docker-Content-Digest",
                        format!("sha256:{}", "1".repeat(64)),
                    ),
                ],
                br#"{"schemaVersion":2,"config":{"digest":"sha256:x","size":1},"layers":[]}"#
                    .to_vec(),
            ),
        })
        .await;
        assert!(
            matches!(error, RegistryError::DigestMismatch { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("expected sha256:{}", "1".repeat(64))),
            "{message}"
        );
        assert!(message.contains("will not deploy it"), "{message}");
    }

    #[tokio::test]
    async fn a_registry_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // Accept connections and keep them open without answering.
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let client = RegistryClient::with_request_timeout(
            RegistryOptions::default(),
            Duration::from_millis(300),
        );
        let error = client
            .resolve(
                &reference(&format!("127.0.0.1:{port}/berth/demo:v1")),
                &Credentials::Anonymous,
            )
            .await
            .expect_err("no answer");
        hold.abort();
        assert!(matches!(error, RegistryError::Timeout { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "registry at http://127.0.0.1:{port}/v2/ did not answer"
            )),
            "{message}"
        );
        assert_eq!(error.summary(), "Registry timed out");
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let client = RegistryClient::new(RegistryOptions::default());
        let error = client
            .resolve(
                &reference(&format!("127.0.0.1:{port}/berth/demo:v1")),
                &Credentials::basic("berth", "berth-pass"),
            )
            .await
            .expect_err("closed port");
        let message = error.to_string();
        assert!(
            matches!(error, RegistryError::Unreachable { .. }),
            "{error:?}"
        );
        assert!(
            message.contains(&format!("registry at http://127.0.0.1:{port}/v2/")),
            "{message}"
        );
        assert!(
            message.to_lowercase().contains("connection refused"),
            "{message}"
        );
        assert!(!message.contains("berth-pass"));
    }
}
