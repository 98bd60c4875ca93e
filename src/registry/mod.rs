//! The only code that talks to container registries.
//!
//! It owns resolving an image reference to what Berth deploys: the
//! linux/amd64 image manifest digest (and the digest of the multi-platform
//! index the tag names, if any), checked against the image config's
//! platform and against the 10 GB compressed size limit; authenticating
//! (anonymous, or username and password given to the registry's bearer token
//! flow or as HTTP Basic); and turning every failure into a
//! [`RegistryError`] that says what was found and what to do.
//!
//! Transport follows Docker: registries on loopback (`localhost`,
//! 127.0.0.0/8, `[::1]`) and those listed in
//! [`RegistryOptions::insecure_registries`] are spoken to over plain HTTP,
//! all others over HTTPS; Docker Hub's API is `registry-1.docker.io`. One
//! [`RegistryClient`] per process holds one HTTP client (reqwest: its
//! connection pool, timeouts, redirects that drop `Authorization` when they
//! leave the host) and one [`auth`] cache: the scheme each registry asked
//! for and bearer tokens per registry, scope and credentials, so repeated
//! resolves reuse connections and tokens while a token obtained with one
//! credential never serves another.
//!
//! Layout: `resolve` (the walk from tag to digest), `login` (checking
//! credentials like `docker login`), `exchange` (one authenticated request,
//! rate limits), `challenge` (reading `WWW-Authenticate`), `auth` (the token
//! cache, token answers, dates), `manifest` (pure reading of manifests,
//! indexes and configs), `error` (refusals and failure classification),
//! `hints` (what the big registries expect), `credentials` (redacting secret
//! types).

mod auth;
mod challenge;
mod credentials;
mod error;
mod exchange;
mod hints;
mod login;
mod manifest;
mod resolve;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::reference::Reference;

pub use credentials::{docker_server_address, Credentials, Secret};
pub use error::RegistryError;
pub use hints::hint;

use auth::AuthCache;
use error::FailureContext;

/// Largest compressed image (config plus layers) Berth deploys: 10 GB.
pub const MAX_COMPRESSED_SIZE: u64 = 10_000_000_000;

/// How long to wait for a TCP (and TLS) connection to a registry.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a started response may stall between two reads.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one whole registry exchange (token, request, body, and the
/// waits of a rate limit).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));

/// Settings of the registry layer.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) to speak plain HTTP to, besides loopback
    /// ones, like Docker's `insecure-registries`.
    pub insecure_registries: Vec<String>,
}

/// What a reference resolves to for Berth's platform, linux/amd64.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ResolvedImage {
    /// The canonical form of the reference asked for.
    pub reference: String,
    /// Digest of the linux/amd64 image manifest: what Berth pulls and runs.
    pub digest: String,
    /// Digest of the multi-platform index, when the reference names one.
    pub index_digest: Option<String>,
    /// Always `linux/amd64`.
    pub platform: String,
    /// Compressed size: config plus all layers, in bytes.
    pub size_bytes: u64,
    /// `registry/repository@<digest>`.
    pub pinned_reference: String,
}

impl ResolvedImage {
    /// What `reference` resolves to when `image` is its linux/amd64 image.
    fn of(reference: &Reference, image: KnownImage) -> ResolvedImage {
        ResolvedImage {
            reference: reference.to_string(),
            pinned_reference: reference.with_digest(&image.digest).to_string(),
            digest: image.digest,
            index_digest: image.index_digest,
            platform: format!("{}/{}", manifest::TARGET_OS, manifest::TARGET_ARCHITECTURE),
            size_bytes: image.size_bytes,
        }
    }

    /// The part of the resolution that depends only on the image's digest.
    pub fn known(&self) -> KnownImage {
        KnownImage {
            digest: self.digest.clone(),
            index_digest: self.index_digest.clone(),
            size_bytes: self.size_bytes,
        }
    }
}

/// A resolution already made, remembered by the digest the reference
/// pointed at (a multi-platform index or a single manifest). Digests name
/// content, so what was found for one never goes stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownImage {
    /// The linux/amd64 image manifest digest.
    pub digest: String,
    /// The index digest, when the reference pointed at an index.
    pub index_digest: Option<String>,
    /// Compressed size in bytes.
    pub size_bytes: u64,
}

/// Where [`RegistryClient::resolve_known`] remembers resolutions across
/// processes (Berth's store). Best effort: a lookup or a write that fails
/// only costs a fuller resolve next time.
#[async_trait::async_trait]
pub trait KnownImages: Send + Sync {
    /// What `top_digest` resolved to before, if anything.
    async fn known(&self, top_digest: &str) -> Option<KnownImage>;
    /// Remembers what `top_digest` resolved to.
    async fn remember(&self, top_digest: &str, image: &KnownImage);
}

/// The process's registry client; cheap to clone, cheap to create (nothing
/// is set up until the first request).
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Lower-cased `host[:port]` entries.
    insecure_registries: Vec<String>,
    request_timeout: Duration,
    http: OnceLock<reqwest::Client>,
    auth: AuthCache,
    /// Config blobs by digest. Content-addressed and verified, so one
    /// fetch serves every later resolve of an image sharing it (a plan
    /// with many tags of one image, or re-plans in one process). Only
    /// reached after the manifest request, which checks access.
    configs: std::sync::Mutex<std::collections::HashMap<String, Arc<Vec<u8>>>>,
}

/// The ingress asks for its images pinned only when it creates a
/// container: a digest is used as given, a tag is resolved (anonymously)
/// to its linux/amd64 digest, with the platform and size checks of apps.
#[async_trait::async_trait]
impl crate::ingress::PinImage for RegistryClient {
    async fn pin(&self, reference: &str) -> Result<String, String> {
        let parsed = Reference::parse(reference).map_err(|e| e.to_string())?;
        if parsed.digest().is_some() {
            return Ok(parsed.to_string());
        }
        self.resolve(&parsed, &Credentials::Anonymous)
            .await
            .map(|r| r.pinned_reference)
            .map_err(|e| e.to_string())
    }
}

/// Cached config blobs kept at most (they are small JSON documents).
const MAX_CACHED_CONFIGS: usize = 256;

impl RegistryClient {
    pub(crate) fn cached_config(&self, digest: &str) -> Option<Arc<Vec<u8>>> {
        self.inner
            .configs
            .lock()
            .ok()
            .and_then(|c| c.get(digest).cloned())
    }

    pub(crate) fn cache_config(&self, digest: &str, content: Arc<Vec<u8>>) {
        if let Ok(mut c) = self.inner.configs.lock() {
            if c.len() >= MAX_CACHED_CONFIGS {
                c.clear();
            }
            c.insert(digest.to_string(), content);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl RegistryClient {
    /// A client with the given options. Does no I/O and builds no HTTP
    /// client yet.
    pub fn new(options: RegistryOptions) -> RegistryClient {
        RegistryClient::with_request_timeout(options, REQUEST_TIMEOUT)
    }

    pub(crate) fn with_request_timeout(
        options: RegistryOptions,
        request_timeout: Duration,
    ) -> RegistryClient {
        let insecure_registries = options
            .insecure_registries
            .iter()
            .map(|entry| normalize_registry_entry(entry))
            .filter(|entry| !entry.is_empty())
            .collect();
        RegistryClient {
            inner: Arc::new(Inner {
                insecure_registries,
                request_timeout,
                http: OnceLock::new(),
                auth: AuthCache::default(),
                configs: Default::default(),
            }),
        }
    }

    /// Whether `registry` (`host[:port]`) is spoken to over plain HTTP.
    pub(crate) fn scheme_for(&self, registry: &str, is_loopback: bool) -> Scheme {
        let registry = registry.to_ascii_lowercase();
        if is_loopback || self.inner.insecure_registries.contains(&registry) {
            Scheme::Http
        } else {
            Scheme::Https
        }
    }

    /// The shared HTTP client, built on first use.
    pub(crate) fn http(&self, ctx: &FailureContext<'_>) -> Result<reqwest::Client, RegistryError> {
        if let Some(client) = self.inner.http.get() {
            return Ok(client.clone());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| RegistryError::Unreachable {
                url: ctx.base_url.to_owned(),
                cause: format!("the HTTP client could not be set up: {e}"),
                hint: String::new(),
            })?;
        tracing::debug!("created the registry HTTP client");
        // Another task may have won the race; either client is fine.
        Ok(self.inner.http.get_or_init(|| client).clone())
    }

    pub(crate) fn auth_cache(&self) -> &AuthCache {
        &self.inner.auth
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// Runs one registry exchange within the request timeout.
    pub(crate) async fn bounded<T>(
        &self,
        ctx: &FailureContext<'_>,
        exchange: impl std::future::Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        let limit = self.request_timeout();
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| ctx.timeout(limit.as_secs().max(1)))?
    }
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("insecure_registries", &self.inner.insecure_registries)
            .field("request_timeout", &self.inner.request_timeout)
            .finish_non_exhaustive()
    }
}

/// The host that serves a registry's API: Docker Hub's names all lead to
/// `registry-1.docker.io`; every other registry serves its own.
pub(crate) fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// `http://Registry.example:5000/` → `registry.example:5000`.
fn normalize_registry_entry(entry: &str) -> String {
    let entry = entry.trim();
    let entry = entry
        .strip_prefix("http://")
        .or_else(|| entry.strip_prefix("https://"))
        .unwrap_or(entry);
    entry.trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_use_plain_http() {
        let client = RegistryClient::new(RegistryOptions {
            insecure_registries: vec!["http://Registry.Internal:5000/".to_owned(), "  ".to_owned()],
        });
        assert_eq!(client.scheme_for("127.0.0.1:5000", true), Scheme::Http);
        assert_eq!(
            client.scheme_for("registry.internal:5000", false),
            Scheme::Http
        );
        assert_eq!(
            client.scheme_for("REGISTRY.internal:5000", false),
            Scheme::Http
        );
        assert_eq!(client.scheme_for("registry.internal", false), Scheme::Https);
        assert_eq!(client.scheme_for("docker.io", false), Scheme::Https);
        assert_eq!(
            client.inner.insecure_registries,
            vec!["registry.internal:5000"]
        );
    }

    #[test]
    fn docker_hub_is_served_by_registry_1() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("index.docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("ghcr.io"), "ghcr.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn debug_shows_no_credentials() {
        let client = RegistryClient::new(RegistryOptions::default());
        let shown = format!("{client:?}");
        assert!(!shown.contains("berth-pass"), "{shown}");
    }
}
