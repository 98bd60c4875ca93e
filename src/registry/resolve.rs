//! The walk from a reference to the linux/amd64 image: fetch what the tag
//! or digest names; if it is an index, pick the linux/amd64 entry and fetch
//! that manifest; fetch the image config and check its platform; add up the
//! compressed size. Every fetched document is checked against its digest,
//! and every exchange is bounded in time.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::secrets::RegistryAuth;

use super::error::FailureContext;
use super::manifest::{
    compressed_size, config_platform, digest_matches, is_target_platform, parse_document,
    select_linux_amd64, sha256_digest, Descriptor, Document, ACCEPTED_MANIFEST_MEDIA_TYPES,
    TARGET_ARCHITECTURE, TARGET_OS,
};
use super::{
    Credentials, RegistryClient, RegistryError, ResolvedImage, Scheme, MAX_COMPRESSED_SIZE,
};
use crate::reference::Reference;

/// Image configs are small JSON documents; a "config" larger than this is
/// not one, and reading it whole would only waste memory.
const MAX_CONFIG_BYTES: i64 = 8 * 1024 * 1024;

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
        let scheme = self.scheme_for(reference.registry(), reference.is_loopback_registry());
        let oci_reference = oci_client::Reference::with_tag(
            reference.registry().to_owned(),
            reference.repository().to_owned(),
            "latest".to_owned(),
        );
        let base_url = format!(
            "{}://{}/v2/",
            scheme.as_str(),
            oci_reference.resolve_registry()
        );
        tracing::debug!(
            reference = %canonical,
            url = %base_url,
            authenticated = credentials.username().is_some(),
            "resolving image"
        );
        let session = Session {
            registry_client: self,
            scheme,
            reference,
            credentials,
            auth: credentials.to_registry_auth(),
            canonical: &canonical,
            base_url: &base_url,
            request_timeout: self.request_timeout(),
        };
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
}

/// One resolve: the facts every request and message needs.
struct Session<'a> {
    registry_client: &'a RegistryClient,
    scheme: Scheme,
    reference: &'a Reference,
    credentials: &'a Credentials,
    auth: RegistryAuth,
    canonical: &'a str,
    base_url: &'a str,
    request_timeout: Duration,
}

/// A fetched manifest or index and its verified digest.
struct Fetched {
    raw: Vec<u8>,
    digest: String,
}

enum BlobFailure {
    Registry(OciDistributionError),
    Read(std::io::Error),
}

impl Session<'_> {
    async fn resolve(&self) -> Result<ResolvedImage, RegistryError> {
        let client = self
            .registry_client
            .client_for(self.scheme, self.credentials)
            .map_err(|cause| RegistryError::Unreachable {
                url: self.base_url.to_owned(),
                cause,
                hint: String::new(),
            })?;

        let (top_object, top_expected) = match self.reference.digest() {
            Some(digest) => (digest, Some(digest)),
            None => (self.reference.tag().unwrap_or("latest"), None),
        };
        let top = self
            .fetch_manifest(&client, top_object, top_expected)
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
                        .fetch_manifest(&client, &entry.digest, Some(&entry.digest))
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

        let config_raw = self.fetch_config(&client, &config).await?;
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

        Ok(ResolvedImage {
            reference: self.canonical.to_owned(),
            pinned_reference: self.reference.with_digest(&digest).to_string(),
            digest,
            index_digest,
            platform: format!("{TARGET_OS}/{TARGET_ARCHITECTURE}"),
            size_bytes,
        })
    }

    fn context<'s>(&'s self, object: &'s str, fetching_blob: bool) -> FailureContext<'s> {
        FailureContext {
            reference: self.canonical,
            registry: self.reference.registry(),
            repository: self.reference.repository(),
            base_url: self.base_url,
            object,
            fetching_blob,
            username: self.credentials.username(),
            secret: self.credentials.secret(),
        }
    }

    fn oci_reference(&self, object: &str) -> oci_client::Reference {
        let registry = self.reference.registry().to_owned();
        let repository = self.reference.repository().to_owned();
        if object.contains(':') {
            oci_client::Reference::with_digest(registry, repository, object.to_owned())
        } else {
            oci_client::Reference::with_tag(registry, repository, object.to_owned())
        }
    }

    /// Runs one registry exchange within the request timeout.
    async fn bounded<T, E>(
        &self,
        context: &FailureContext<'_>,
        exchange: impl Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, RegistryError> {
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| context.timeout(self.request_timeout.as_secs().max(1)))
    }

    /// Fetches the manifest or index `object` (tag or digest) names and
    /// checks it hashes to `expected` (when named by digest) and to what
    /// the registry says it is.
    async fn fetch_manifest(
        &self,
        client: &oci_client::Client,
        object: &str,
        expected: Option<&str>,
    ) -> Result<Fetched, RegistryError> {
        let context = self.context(object, false);
        let target = self.oci_reference(object);
        let fetched = self
            .bounded(
                &context,
                client.pull_manifest_raw(&target, &self.auth, &ACCEPTED_MANIFEST_MEDIA_TYPES),
            )
            .await?;
        let (raw, registry_digest) = match fetched {
            Ok(fetched) => fetched,
            Err(error) => return Err(self.explain(client, &context, &target, error).await),
        };
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
            raw: raw.to_vec(),
            digest: expected.map_or(computed, str::to_owned),
        })
    }

    /// Fetches the image config blob (bounded in size) and verifies it.
    async fn fetch_config(
        &self,
        client: &oci_client::Client,
        config: &Descriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        let context = self.context(&config.digest, true);
        if config.size > MAX_CONFIG_BYTES {
            return Err(context.invalid_image(format!(
                "its config blob claims {} bytes; image configs are small JSON documents",
                config.size
            )));
        }
        let target = self.oci_reference(&config.digest);
        let limit = usize::try_from(MAX_CONFIG_BYTES).unwrap_or(usize::MAX);
        let read = async {
            let mut stream = client
                .pull_blob_stream(&target, config.digest.as_str())
                .await
                .map_err(BlobFailure::Registry)?;
            let mut content = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(BlobFailure::Read)?;
                if content.len() + chunk.len() > limit {
                    return Ok(None);
                }
                content.extend_from_slice(&chunk);
            }
            Ok(Some(content))
        };
        let content = match self.bounded(&context, read).await? {
            Ok(Some(content)) => content,
            Ok(None) => {
                return Err(context.invalid_image(format!(
                    "its config blob {} is larger than {MAX_CONFIG_BYTES} bytes; image configs \
                     are small JSON documents",
                    config.digest
                )))
            }
            Err(BlobFailure::Registry(error)) => {
                return Err(self.explain(client, &context, &target, error).await)
            }
            Err(BlobFailure::Read(error)) => {
                return Err(
                    match error
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<DigestError>())
                    {
                        Some(DigestError::VerificationError { expected, actual }) => {
                            context.digest_mismatch(expected, actual)
                        }
                        _ => context.transport(&error),
                    },
                )
            }
        };
        if !digest_matches(&content, &config.digest) {
            return Err(context.digest_mismatch(&config.digest, &sha256_digest(&content)));
        }
        Ok(content)
    }

    /// Classifies a failed exchange. When credentials were refused, asks
    /// the registry's token endpoint once more for its reason, since
    /// `oci-client` drops it on the way.
    async fn explain(
        &self,
        client: &oci_client::Client,
        context: &FailureContext<'_>,
        target: &oci_client::Reference,
        error: OciDistributionError,
    ) -> RegistryError {
        let refused_credentials = matches!(error, OciDistributionError::UnauthorizedError { .. })
            && self.credentials.username().is_some();
        if refused_credentials {
            let retry = client.auth(target, &self.auth, oci_client::RegistryOperation::Pull);
            if let Ok(Err(OciDistributionError::AuthenticationFailure(reason))) =
                tokio::time::timeout(self.request_timeout, retry).await
            {
                return context.unauthorized(&reason);
            }
        }
        context.classify(error)
    }
}

#[cfg(test)]
mod tests {
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
