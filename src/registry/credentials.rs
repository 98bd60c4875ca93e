//! Registry credentials as the registry layer receives them: a redacting
//! [`Secret`] and the [`Credentials`] a resolve authenticates with, and the
//! name Docker files credentials under ([`docker_server_address`]). Nothing
//! here prints a password, in `Debug`, `Display` or logs.

use std::fmt;

use sha2::{Digest, Sha256};

/// The server address a Docker Engine expects in the `X-Registry-Auth` of a
/// pull from `registry` (a normalized host): Docker Hub is still filed under
/// its v1 index URL, every other registry under its host.
pub fn docker_server_address(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".to_owned()
        }
        other => other.to_owned(),
    }
}

/// A secret string (password or token). `Debug` and `Display` print
/// `<redacted>`; the only way to the value is [`Secret::expose`]. It
/// serializes as its value: only into what the store seals.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How a resolve authenticates to the registry.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No credentials; bearer-token registries still hand out anonymous
    /// tokens for public repositories.
    #[default]
    Anonymous,
    /// Username and password (or access token). Registries that use the
    /// bearer token flow receive these at their token endpoint; the others
    /// receive them as HTTP Basic authentication.
    Basic { username: String, password: Secret },
}

impl Credentials {
    /// Basic credentials from a username and a password or token.
    pub fn basic(username: impl Into<String>, password: impl Into<Secret>) -> Credentials {
        Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The username, when there is one (safe to show).
    pub fn username(&self) -> Option<&str> {
        match self {
            Credentials::Anonymous => None,
            Credentials::Basic { username, .. } => Some(username),
        }
    }

    pub(crate) fn secret(&self) -> Option<&Secret> {
        match self {
            Credentials::Anonymous => None,
            Credentials::Basic { password, .. } => Some(password),
        }
    }

    /// Identifies these credentials among cached clients without keeping
    /// the password itself as a map key: a SHA-256 over username and
    /// password. Held in memory only, never logged.
    pub(crate) fn cache_key(&self) -> CredentialKey {
        match self {
            Credentials::Anonymous => CredentialKey::Anonymous,
            Credentials::Basic { username, password } => {
                let mut hasher = Sha256::new();
                hasher.update(username.as_bytes());
                hasher.update([0u8]);
                hasher.update(password.expose().as_bytes());
                CredentialKey::Basic(hasher.finalize().into())
            }
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// Cache key of one set of credentials (see [`Credentials::cache_key`]).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum CredentialKey {
    Anonymous,
    Basic([u8; 32]),
}

/// Replaces every occurrence of `secret` in text that came from elsewhere
/// (a registry's error body) before it goes into an error message.
pub(crate) fn scrub(text: &str, secret: Option<&Secret>) -> String {
    match secret {
        Some(secret) if !secret.expose().is_empty() => text.replace(secret.expose(), "<redacted>"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let credentials = Credentials::basic("berth", "berth-pass");
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("berth-pass"), "{shown}");
        assert!(shown.contains("berth"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert_eq!(format!("{:?}", Credentials::Anonymous), "Anonymous");
    }

    #[test]
    fn cache_keys_differ_by_password_and_username() {
        let a = Credentials::basic("berth", "one").cache_key();
        let b = Credentials::basic("berth", "two").cache_key();
        let c = Credentials::basic("bert", "hone").cache_key();
        assert!(a != b && a != c && b != c);
        assert!(a == Credentials::basic("berth", "one").cache_key());
        assert!(Credentials::Anonymous.cache_key() == CredentialKey::Anonymous);
    }

    #[test]
    fn docker_hub_is_filed_under_its_v1_index() {
        assert_eq!(
            docker_server_address("docker.io"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(docker_server_address("ghcr.io"), "ghcr.io");
        assert_eq!(docker_server_address("127.0.0.1:5001"), "127.0.0.1:5001");
    }

    #[test]
    fn scrub_removes_the_secret() {
        let secret = Secret::new("s3cr3t");
        assert_eq!(
            scrub("bad password s3cr3t for user", Some(&secret)),
            "bad password <redacted> for user"
        );
        assert_eq!(scrub("plain", None), "plain");
        assert_eq!(scrub("plain", Some(&Secret::new(""))), "plain");
    }
}
