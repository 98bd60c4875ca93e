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
//! all others over HTTPS. One [`RegistryClient`] per process keeps one
//! `oci-client` client per transport and per set of credentials, created on
//! first use, so repeated resolves reuse connections and bearer tokens while
//! tokens obtained with one credential never serve another.
//!
//! Layout: `resolve` (the walk from tag to digest), `manifest` (pure reading
//! of manifests, indexes and configs), `error` (refusals and failure
//! classification), `credentials` (redacting secret types).

mod credentials;
mod error;
mod manifest;
mod resolve;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};

pub use credentials::{Credentials, Secret};
pub use error::RegistryError;

use credentials::CredentialKey;

/// Largest compressed image (config plus layers) Berth deploys: 10 GB.
pub const MAX_COMPRESSED_SIZE: u64 = 10_000_000_000;

/// How long to wait for a TCP (and TLS) connection to a registry.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a started response may stall between two reads.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one whole registry exchange (token, request, body).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// More distinct (transport, credentials) clients than this and the cache
/// starts over; a process normally needs a handful.
const MAX_CACHED_CLIENTS: usize = 64;

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

/// The process's registry client; cheap to clone, cheap to create (nothing
/// is set up until the first resolve).
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Lower-cased `host[:port]` entries.
    insecure_registries: Vec<String>,
    request_timeout: Duration,
    clients: Mutex<HashMap<ClientKey, oci_client::Client>>,
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

#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    scheme: Scheme,
    credentials: CredentialKey,
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
                clients: Mutex::new(HashMap::new()),
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

    /// The cached `oci-client` client for this transport and credentials,
    /// created on first use.
    pub(crate) fn client_for(
        &self,
        scheme: Scheme,
        credentials: &Credentials,
    ) -> Result<oci_client::Client, String> {
        let key = ClientKey {
            scheme,
            credentials: credentials.cache_key(),
        };
        // A poisoned lock only means another resolve panicked mid-insert;
        // the map itself is still sound.
        let mut clients = self
            .inner
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = build_client(scheme)?;
        if clients.len() >= MAX_CACHED_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        tracing::debug!(
            scheme = scheme.as_str(),
            cached = clients.len(),
            "created registry client"
        );
        Ok(client)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
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

fn build_client(scheme: Scheme) -> Result<oci_client::Client, String> {
    let config = ClientConfig {
        protocol: match scheme {
            Scheme::Http => ClientProtocol::Http,
            Scheme::Https => ClientProtocol::Https,
        },
        // Berth picks the platform itself (see `manifest::select_linux_amd64`).
        platform_resolver: None,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: USER_AGENT,
        ..ClientConfig::default()
    };
    // `Client::new` would fall back to a default client without timeouts
    // on failure; refuse instead.
    oci_client::Client::try_from(config)
        .map_err(|e| format!("the HTTP client could not be set up: {e}"))
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
    fn clients_are_cached_per_transport_and_credentials() {
        let client = RegistryClient::new(RegistryOptions::default());
        assert!(client
            .inner
            .clients
            .lock()
            .map(|c| c.is_empty())
            .unwrap_or(false));
        let anonymous = Credentials::Anonymous;
        let basic = Credentials::basic("berth", "berth-pass");
        client.client_for(Scheme::Http, &anonymous).expect("client");
        client.client_for(Scheme::Http, &anonymous).expect("client");
        client
            .client_for(Scheme::Https, &anonymous)
            .expect("client");
        client.client_for(Scheme::Http, &basic).expect("client");
        client
            .client_for(Scheme::Http, &Credentials::basic("berth", "other"))
            .expect("client");
        assert_eq!(client.inner.clients.lock().map(|c| c.len()).unwrap_or(0), 4);
        // Clones share the cache.
        let clone = client.clone();
        clone.client_for(Scheme::Https, &basic).expect("client");
        assert_eq!(client.inner.clients.lock().map(|c| c.len()).unwrap_or(0), 5);
    }

    #[test]
    fn debug_shows_no_credentials() {
        let client = RegistryClient::new(RegistryOptions::default());
        client
            .client_for(Scheme::Http, &Credentials::basic("berth", "berth-pass"))
            .expect("client");
        let shown = format!("{client:?}");
        assert!(!shown.contains("berth-pass"), "{shown}");
    }
}
