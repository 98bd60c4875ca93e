//! Why a resolve (or a login check) failed, in words a user can act on:
//! [`RegistryError`], and the classification of HTTP failures and answers
//! (status, the registry's error envelope) into it. Registry text that goes
//! into a message is scrubbed of the password and shortened; tokens never
//! reach this module.

use std::time::Duration;

use serde::Deserialize;

use super::credentials::{scrub, Secret};
use super::hints::hint_sentence;
use super::manifest::format_gb;
use super::MAX_COMPRESSED_SIZE;

/// Longest piece of registry-provided text quoted in a message.
const MAX_QUOTED_CHARS: usize = 300;

/// A failed resolve. `Display` is the full detail (what was found, the
/// likely cause, what to do); [`RegistryError::summary`] is a short title.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The tag or digest does not exist in the repository (or the
    /// repository does not exist).
    #[error(
        "image `{reference}` was not found: registry {registry} has no manifest `{tag_or_digest}` \
         in repository `{repository}`. Check the repository name and the tag or digest, and that \
         the image has been pushed to this registry."
    )]
    NotFound {
        reference: String,
        registry: String,
        repository: String,
        tag_or_digest: String,
    },

    /// The image is not published for linux/amd64.
    #[error(
        "image `{reference}` has no linux/amd64 variant; it is published for {}. Berth deploys \
         only linux/amd64 images (the platform of its Docker hosts). Publish an amd64 image, e.g. \
         `docker buildx build --platform linux/amd64 --push -t {reference} .`, or a multi-platform \
         build that includes linux/amd64.",
        platform_list(.platforms)
    )]
    NoLinuxAmd64 {
        reference: String,
        /// What the image offers instead, e.g. `linux/arm64`.
        platforms: Vec<String>,
    },

    /// An index lists an entry as linux/amd64 whose config says otherwise.
    #[error(
        "image `{reference}`: the index lists manifest {digest} as linux/amd64, but its image \
         config says {found}. Berth deploys only linux/amd64 images and will not trust a \
         mislabelled index; republish the image with a correct linux/amd64 build, e.g. \
         `docker buildx build --platform linux/amd64`."
    )]
    PlatformMismatch {
        reference: String,
        digest: String,
        /// What the config says, e.g. `linux/arm64`.
        found: String,
    },

    /// Over [`MAX_COMPRESSED_SIZE`].
    #[error(
        "image `{reference}` is {} compressed ({size_bytes} bytes of config and layers), over \
         Berth's limit of {} compressed per image. Make the image smaller (multi-stage build, \
         smaller base image, fewer layers) or keep large data out of it (volumes, object storage).",
        format_gb(*.size_bytes),
        format_gb(MAX_COMPRESSED_SIZE)
    )]
    TooLarge { reference: String, size_bytes: u64 },

    /// No connection to the registry (refused, DNS, TLS, reset).
    #[error(
        "could not reach the registry at {url}: {cause}. Check the registry address in the image \
         reference, that the registry is running, and that this machine can reach it (DNS, \
         proxy, firewall).{hint}"
    )]
    Unreachable {
        /// The address tried, e.g. `http://127.0.0.1:5999/v2/`.
        url: String,
        /// The underlying (OS) error.
        cause: String,
        hint: String,
    },

    /// The registry did not answer in time.
    #[error(
        "the registry at {url} did not answer within {seconds} seconds. It may be overloaded or \
         unreachable through a firewall that drops packets; try again later."
    )]
    Timeout { url: String, seconds: u64 },

    /// Anonymous access refused (401): credentials are needed.
    #[error(
        "registry {registry} requires authentication to pull `{repository}` (it answered \
         401 Unauthorized to an anonymous request). Create a `berth_registry_credential` for \
         {registry} with a username and a password or token that may pull this repository, and \
         pass its id as `registry_credential_id`. (Some registries, Docker Hub among them, also \
         answer 401 for repositories that do not exist: check the name too.){}",
        hint_sentence(.registry)
    )]
    AuthenticationRequired {
        registry: String,
        repository: String,
    },

    /// The credentials given were not accepted (401 with credentials, or
    /// the token endpoint refused them).
    #[error(
        "registry {registry} rejected the credentials of user `{username}`{}{detail}. Check the \
         username and the password or token of the `berth_registry_credential` passed as \
         `registry_credential_id`{}.{}",
        pulling(.repository),
        may_pull(.repository),
        hint_sentence(.registry)
    )]
    CredentialsRejected {
        registry: String,
        username: String,
        /// Empty for a login check (no repository involved).
        repository: String,
        /// `": <registry's words>"` or empty.
        detail: String,
    },

    /// Authenticated (or anonymous) but not allowed (403).
    #[error(
        "registry {registry} denied access to `{repository}` (403 Forbidden{detail}). The \
         {who} may not pull this repository: grant it read (pull) permission on `{repository}`, \
         or use a `berth_registry_credential` that has it.{}",
        hint_sentence(.registry)
    )]
    Denied {
        registry: String,
        repository: String,
        /// `"anonymous request"` or `"user `name`"`.
        who: String,
        detail: String,
    },

    /// 429 Too Many Requests.
    #[error(
        "registry {registry} is rate limiting pulls (429 Too Many Requests{detail}). Wait {} \
         before retrying, or authenticate with a `berth_registry_credential`, which usually \
         raises the limit.",
        retry_wait(*.retry_after_seconds)
    )]
    RateLimited {
        registry: String,
        detail: String,
        /// The registry's `Retry-After`, when it sent one.
        retry_after_seconds: Option<u64>,
    },

    /// The content does not hash to the digest it was named by.
    #[error(
        "the content registry {registry} returned for `{reference}` does not match its digest: \
         expected {expected}, got {actual}. Something between Berth and the registry altered \
         it, or the registry is broken; Berth will not deploy it. Retry, and tell the registry's \
         operator if it persists."
    )]
    DigestMismatch {
        registry: String,
        reference: String,
        expected: String,
        actual: String,
    },

    /// A manifest or config Berth cannot use (schema 1, an artifact that is
    /// not a container image, malformed JSON, missing config blob).
    #[error("`{reference}` is not a container image Berth can deploy: {detail}.")]
    InvalidImage { reference: String, detail: String },

    /// Anything else the registry answered.
    #[error("registry at {url} answered unexpectedly{}: {detail}. {advice}", status_text(*.status))]
    Protocol {
        url: String,
        status: Option<u16>,
        detail: String,
        advice: String,
    },
}

impl RegistryError {
    /// A short title for diagnostics (the `Display` form is the detail).
    pub fn summary(&self) -> String {
        match self {
            RegistryError::NotFound { .. } => "Image not found",
            RegistryError::NoLinuxAmd64 { .. } => "Image has no linux/amd64 variant",
            RegistryError::PlatformMismatch { .. } => "Image platform mismatch",
            RegistryError::TooLarge { .. } => "Image too large",
            RegistryError::Unreachable { .. } => "Registry unreachable",
            RegistryError::Timeout { .. } => "Registry timed out",
            RegistryError::AuthenticationRequired { .. } => "Registry requires authentication",
            RegistryError::CredentialsRejected { .. } => "Registry rejected the credentials",
            RegistryError::Denied { .. } => "Registry denied access",
            RegistryError::RateLimited { .. } => "Registry rate limit reached",
            RegistryError::DigestMismatch { .. } => "Image digest mismatch",
            RegistryError::InvalidImage { .. } => "Unsupported image",
            RegistryError::Protocol { .. } => "Registry protocol error",
        }
        .to_owned()
    }

    /// Whether trying again later may succeed without anyone changing
    /// anything (network trouble, rate limits, registry server errors).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. }
            | RegistryError::Timeout { .. }
            | RegistryError::RateLimited { .. } => true,
            RegistryError::Protocol { status, .. } => status.is_some_and(|code| code >= 500),
            _ => false,
        }
    }
}

fn platform_list(platforms: &[String]) -> String {
    if platforms.is_empty() {
        "no platform at all (its index lists none)".to_owned()
    } else {
        platforms.join(", ")
    }
}

/// `" for pulling `repo`"`, or nothing for a login check.
fn pulling(repository: &str) -> String {
    if repository.is_empty() {
        " at login".to_owned()
    } else {
        format!(" for pulling `{repository}`")
    }
}

fn may_pull(repository: &str) -> &'static str {
    if repository.is_empty() {
        ""
    } else {
        ", and that it may pull this repository"
    }
}

fn retry_wait(seconds: Option<u64>) -> String {
    match seconds {
        Some(1) => "1 second (the registry's Retry-After)".to_owned(),
        Some(seconds) => format!("{seconds} seconds (the registry's Retry-After)"),
        None => "a while (the registry sent no Retry-After saying how long)".to_owned(),
    }
}

fn status_text(status: Option<u16>) -> String {
    status
        .map(|code| format!(" with HTTP {code}"))
        .unwrap_or_default()
}

/// What was being fetched when something failed; the facts every message
/// needs, and the secret to keep out of them.
#[derive(Clone, Copy)]
pub(crate) struct FailureContext<'a> {
    /// Canonical reference the user asked for (empty for a login check).
    pub(crate) reference: &'a str,
    /// Registry host as the user wrote it (`docker.io`, `127.0.0.1:5000`).
    pub(crate) registry: &'a str,
    /// Empty for a login check.
    pub(crate) repository: &'a str,
    /// The address contacted: `scheme://host/v2/`, or a token endpoint.
    pub(crate) base_url: &'a str,
    /// The tag or digest requested, or the blob digest.
    pub(crate) object: &'a str,
    pub(crate) fetching_blob: bool,
    pub(crate) username: Option<&'a str>,
    pub(crate) secret: Option<&'a Secret>,
}

/// The registry's error envelope (`{"errors":[{"code":…,"message":…}]}`).
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    errors: Vec<EnvelopeError>,
}

#[derive(Deserialize)]
struct EnvelopeError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The words an error body carries: the messages of a registry error
/// envelope, the `details`/`error_description`/`message`/`error` of a token
/// endpoint's JSON, or the text itself; and the envelope's first code.
pub(crate) fn registry_words(body: &[u8]) -> (String, Option<String>) {
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(body) {
        if !envelope.errors.is_empty() {
            let words = envelope
                .errors
                .iter()
                .map(|e| {
                    if e.message.is_empty() {
                        e.code.clone()
                    } else {
                        e.message.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            let code = envelope.errors.first().map(|e| e.code.to_ascii_uppercase());
            return (words, code);
        }
    }
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(body) {
        for key in ["details", "detail", "error_description", "message", "error"] {
            if let Some(serde_json::Value::String(words)) = object.get(key) {
                return (words.clone(), None);
            }
        }
    }
    (String::from_utf8_lossy(body).into_owned(), None)
}

impl<'a> FailureContext<'a> {
    /// The same facts, about another address (a token endpoint).
    pub(crate) fn at(&self, url: &'a str) -> FailureContext<'a> {
        FailureContext {
            base_url: url,
            ..*self
        }
    }

    fn quote(&self, text: &str) -> String {
        let single_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let scrubbed = scrub(&single_line, self.secret);
        if scrubbed.chars().count() > MAX_QUOTED_CHARS {
            let cut: String = scrubbed.chars().take(MAX_QUOTED_CHARS).collect();
            format!("{cut}…")
        } else {
            scrubbed
        }
    }

    /// `": text"` for appending registry words to a sentence, or empty.
    fn detail(&self, text: &str) -> String {
        let quoted = self.quote(text);
        if quoted.is_empty() {
            String::new()
        } else {
            format!(": {quoted}")
        }
    }

    pub(crate) fn not_found(&self) -> RegistryError {
        if self.fetching_blob {
            return RegistryError::InvalidImage {
                reference: self.reference.to_owned(),
                detail: format!(
                    "registry {} lists blob {} in the image but does not have it; push the image \
                     again",
                    self.registry, self.object
                ),
            };
        }
        RegistryError::NotFound {
            reference: self.reference.to_owned(),
            registry: self.registry.to_owned(),
            repository: self.repository.to_owned(),
            tag_or_digest: self.object.to_owned(),
        }
    }

    pub(crate) fn unauthorized(&self, detail: &str) -> RegistryError {
        match self.username {
            None => RegistryError::AuthenticationRequired {
                registry: self.registry.to_owned(),
                repository: self.repository.to_owned(),
            },
            Some(username) => self.rejected(username, detail),
        }
    }

    /// The credentials were refused (by the registry or its token endpoint).
    pub(crate) fn rejected(&self, username: &str, detail: &str) -> RegistryError {
        RegistryError::CredentialsRejected {
            registry: self.registry.to_owned(),
            username: username.to_owned(),
            repository: self.repository.to_owned(),
            detail: self.detail(detail),
        }
    }

    pub(crate) fn denied(&self, detail: &str) -> RegistryError {
        let who = match self.username {
            None => "anonymous request".to_owned(),
            Some(username) => format!("user `{username}`"),
        };
        RegistryError::Denied {
            registry: self.registry.to_owned(),
            repository: self.repository.to_owned(),
            who,
            detail: self.detail(detail),
        }
    }

    pub(crate) fn rate_limited(
        &self,
        detail: &str,
        retry_after: Option<Duration>,
    ) -> RegistryError {
        RegistryError::RateLimited {
            registry: self.registry.to_owned(),
            detail: self.detail(detail),
            retry_after_seconds: retry_after.map(|wait| {
                // Round up: "0 seconds" would read as "now".
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            }),
        }
    }

    pub(crate) fn protocol(&self, status: Option<u16>, detail: &str) -> RegistryError {
        let advice = match status {
            Some(code) if code >= 500 => {
                "The registry had an internal error; try again later, and tell its operator if it \
                 persists."
            }
            _ => {
                "The registry may not implement the OCI distribution API Berth uses, or a proxy \
                 in between answered instead; check the registry address."
            }
        };
        RegistryError::Protocol {
            url: self.base_url.to_owned(),
            status,
            detail: {
                let quoted = self.quote(detail);
                if quoted.is_empty() {
                    "no details given".to_owned()
                } else {
                    quoted
                }
            },
            advice: advice.to_owned(),
        }
    }

    pub(crate) fn timeout(&self, seconds: u64) -> RegistryError {
        RegistryError::Timeout {
            url: self.base_url.to_owned(),
            seconds,
        }
    }

    pub(crate) fn digest_mismatch(&self, expected: &str, actual: &str) -> RegistryError {
        RegistryError::DigestMismatch {
            registry: self.registry.to_owned(),
            reference: self.reference.to_owned(),
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        }
    }

    pub(crate) fn invalid_image(&self, detail: impl std::fmt::Display) -> RegistryError {
        RegistryError::InvalidImage {
            reference: self.reference.to_owned(),
            detail: detail.to_string(),
        }
    }

    /// A failure to talk to the registry at all, from its error chain.
    pub(crate) fn transport(&self, error: &(dyn std::error::Error + 'static)) -> RegistryError {
        let cause = self.quote(&root_cause(error));
        let lowered = cause.to_ascii_lowercase();
        let hint = if self.base_url.starts_with("https://")
            && [
                "tls",
                "certificate",
                "handshake",
                "invalidcontenttype",
                "corrupt message",
            ]
            .iter()
            .any(|word| lowered.contains(word))
        {
            format!(
                " The TLS connection failed: if {} serves plain HTTP, list it in the provider's \
                 insecure registries; if it uses a certificate from a private authority, install \
                 that authority on this machine.",
                self.registry
            )
        } else {
            String::new()
        };
        RegistryError::Unreachable {
            url: self.base_url.to_owned(),
            cause,
            hint,
        }
    }

    /// Classifies an HTTP client failure (no answer, or no complete one).
    pub(crate) fn request_failed(&self, error: &reqwest::Error) -> RegistryError {
        if error.is_timeout() {
            // reqwest's own timeouts (connect, read) end up here.
            return self.timeout(super::READ_TIMEOUT.as_secs());
        }
        self.transport(error)
    }

    /// Classifies an answer other than success: its status first, then the
    /// code of the registry's error envelope, if any.
    pub(crate) fn classify_response(&self, status: u16, body: &[u8]) -> RegistryError {
        let (words, code) = registry_words(body);
        match status {
            401 => return self.unauthorized(&words),
            403 => return self.denied(&words),
            404 => return self.not_found(),
            429 => return self.rate_limited(&words, None),
            _ => {}
        }
        match code.as_deref() {
            Some("MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "NOT_FOUND" | "BLOB_UNKNOWN")
            | Some("MANIFEST_BLOB_UNKNOWN") => self.not_found(),
            Some("UNAUTHORIZED") => self.unauthorized(&words),
            Some("DENIED") => self.denied(&words),
            Some("TOOMANYREQUESTS") => self.rate_limited(&words, None),
            Some("NAME_INVALID") => self.invalid_image(format!(
                "registry {} says the repository name `{}` is invalid",
                self.registry, self.repository
            )),
            Some(code) => self.protocol(Some(status), &format!("{code}: {words}")),
            None => self.protocol(Some(status), &words),
        }
    }
}

/// The innermost message of an error chain: for a refused connection that
/// is the OS error ("Connection refused (os error 111)"), for DNS the
/// resolver's words. Outer layers only repeat the URL.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context<'a>(username: Option<&'a str>, secret: Option<&'a Secret>) -> FailureContext<'a> {
        FailureContext {
            reference: "127.0.0.1:5001/berth/private:v1",
            registry: "127.0.0.1:5001",
            repository: "berth/private",
            base_url: "http://127.0.0.1:5001/v2/",
            object: "v1",
            fetching_blob: false,
            username,
            secret,
        }
    }

    fn envelope(code: &str, message: &str) -> Vec<u8> {
        format!(r#"{{"errors":[{{"code":"{code}","message":"{message}","detail":null}}]}}"#)
            .into_bytes()
    }

    #[test]
    fn anonymous_401_asks_for_a_registry_credential() {
        let error = context(None, None).classify_response(401, &envelope("UNAUTHORIZED", "x"));
        assert!(matches!(
            error,
            RegistryError::AuthenticationRequired { .. }
        ));
        let message = error.to_string();
        assert!(
            message.contains("127.0.0.1:5001 requires authentication"),
            "{message}"
        );
        assert!(message.contains("`berth_registry_credential`"), "{message}");
        assert!(message.contains("`registry_credential_id`"), "{message}");
        assert!(message.ends_with("check the name too.)"), "{message}");
        assert_eq!(error.summary(), "Registry requires authentication");
    }

    #[test]
    fn rejected_credentials_never_show_the_password() {
        let secret = Secret::new("berth-pass");
        let error = context(Some("berth"), Some(&secret)).classify_response(
            401,
            b"{\"details\":\"incorrect username or password berth-pass\"}",
        );
        assert!(matches!(error, RegistryError::CredentialsRejected { .. }));
        let message = error.to_string();
        assert!(
            message.contains(
                "rejected the credentials of user `berth` for pulling `berth/private`: incorrect \
                 username or password <redacted>."
            ),
            "{message}"
        );
        assert!(
            message.contains("that it may pull this repository."),
            "{message}"
        );
        assert!(!message.contains("berth-pass"), "{message}");
        assert!(!format!("{error:?}").contains("berth-pass"));
    }

    #[test]
    fn refusals_name_what_the_big_registries_expect() {
        let mut ctx = context(Some("octocat"), None);
        ctx.registry = "ghcr.io";
        let rejected = ctx.classify_response(401, b"");
        assert!(
            rejected.to_string().contains("`read:packages`"),
            "{rejected}"
        );
        let denied = ctx.classify_response(403, b"");
        assert!(denied.to_string().contains("`read:packages`"), "{denied}");
        ctx.username = None;
        ctx.registry = "docker.io";
        let required = ctx.classify_response(401, b"");
        assert!(required.to_string().contains("Docker ID"), "{required}");

        // A login check has no repository.
        let mut login = context(Some("berth"), None);
        login.repository = "";
        login.registry = "registry.gitlab.com";
        let message = login.rejected("berth", "").to_string();
        assert!(
            message.starts_with(
                "registry registry.gitlab.com rejected the credentials of user `berth` at login. \
                 Check the username"
            ),
            "{message}"
        );
        assert!(message.contains("`read_registry`"), "{message}");
        assert!(!message.contains("this repository"), "{message}");
    }

    #[test]
    fn envelope_codes_map_to_distinct_refusals() {
        let ctx = context(None, None);
        let not_found =
            ctx.classify_response(404, &envelope("MANIFEST_UNKNOWN", "manifest unknown"));
        assert!(matches!(not_found, RegistryError::NotFound { .. }));
        let message = not_found.to_string();
        assert!(
            message.contains("`127.0.0.1:5001/berth/private:v1` was not found"),
            "{message}"
        );
        assert!(message.contains("repository `berth/private`"), "{message}");
        assert!(message.contains("no manifest `v1`"), "{message}");

        let denied = ctx.classify_response(403, &envelope("DENIED", "requested access denied"));
        assert!(matches!(denied, RegistryError::Denied { .. }));
        assert!(denied
            .to_string()
            .contains("403 Forbidden: requested access denied"));
        assert!(denied.to_string().contains("anonymous request"));

        let limited = ctx.classify_response(429, &envelope("TOOMANYREQUESTS", "pull limit"));
        assert!(matches!(limited, RegistryError::RateLimited { .. }));
        assert!(limited.to_string().contains("Retry-After"));
        assert!(limited.to_string().contains("429"));
        assert!(limited.is_transient());
        let waited = ctx.rate_limited("", Some(Duration::from_millis(29_500)));
        assert!(
            waited
                .to_string()
                .contains("Wait 30 seconds (the registry's Retry-After) before retrying"),
            "{waited}"
        );

        // Codes count when the status alone says little.
        let odd = ctx.classify_response(400, &envelope("NAME_UNKNOWN", "no such repo"));
        assert!(matches!(odd, RegistryError::NotFound { .. }), "{odd:?}");
        let other = ctx.classify_response(400, &envelope("UNSUPPORTED", "nope"));
        assert!(matches!(
            other,
            RegistryError::Protocol {
                status: Some(400),
                ..
            }
        ));
        assert!(other.to_string().contains("UNSUPPORTED: nope"), "{other}");
    }

    #[test]
    fn bare_statuses_are_classified() {
        let ctx = context(Some("berth"), None);
        assert!(matches!(
            ctx.classify_response(401, b""),
            RegistryError::CredentialsRejected { .. }
        ));
        assert!(matches!(
            ctx.classify_response(403, b""),
            RegistryError::Denied { .. }
        ));
        assert!(matches!(
            ctx.classify_response(404, b""),
            RegistryError::NotFound { .. }
        ));
        assert!(matches!(
            ctx.classify_response(429, b""),
            RegistryError::RateLimited { .. }
        ));
        let server = ctx.classify_response(502, b"<html>\n  bad   gateway\n</html>");
        let message = server.to_string();
        assert!(
            message.contains("answered unexpectedly with HTTP 502"),
            "{message}"
        );
        assert!(message.contains("<html> bad gateway </html>"), "{message}");
        assert!(message.contains("try again later"), "{message}");
        assert!(server.is_transient());
        assert_eq!(server.summary(), "Registry protocol error");
        let teapot = ctx.classify_response(418, b"");
        assert!(
            teapot.to_string().contains("HTTP 418: no details given"),
            "{teapot}"
        );
        assert!(!teapot.is_transient());
    }

    #[test]
    fn missing_blob_is_a_broken_image_not_a_missing_tag() {
        let mut ctx = context(None, None);
        ctx.fetching_blob = true;
        ctx.object = "sha256:abc";
        let error = ctx.classify_response(404, &envelope("BLOB_UNKNOWN", "blob unknown"));
        assert!(matches!(error, RegistryError::InvalidImage { .. }));
        assert!(error.to_string().contains("blob sha256:abc"), "{error}");
    }

    #[test]
    fn digest_mismatch_names_both_digests() {
        let error = context(None, None).digest_mismatch("sha256:aaa", "sha256:bbb");
        let message = error.to_string();
        assert!(
            message.contains("expected sha256:aaa, got sha256:bbb"),
            "{message}"
        );
        assert_eq!(error.summary(), "Image digest mismatch");
    }

    #[test]
    fn transport_errors_name_the_address_and_the_os_error() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let error = context(None, None).transport(&io);
        let message = error.to_string();
        assert!(
            message.starts_with(
                "could not reach the registry at http://127.0.0.1:5001/v2/: Connection refused \
                 (os error 111)."
            ),
            "{message}"
        );
        assert!(error.is_transient());
        assert_eq!(error.summary(), "Registry unreachable");
    }

    #[test]
    fn token_endpoint_words_are_read_from_their_json() {
        assert_eq!(
            registry_words(br#"{"details":"incorrect username or password"}"#).0,
            "incorrect username or password"
        );
        assert_eq!(
            registry_words(br#"{"error":"invalid_grant","error_description":"bad"}"#).0,
            "bad"
        );
        assert_eq!(registry_words(b"plain words").0, "plain words");
        let (words, code) = registry_words(&envelope("DENIED", "no"));
        assert_eq!((words.as_str(), code.as_deref()), ("no", Some("DENIED")));
    }

    #[test]
    fn platform_and_size_refusals_say_what_was_found() {
        let error = RegistryError::NoLinuxAmd64 {
            reference: "127.0.0.1:5000/berth/arm64-only:latest".to_owned(),
            platforms: vec!["linux/arm64".to_owned(), "linux/arm/v7".to_owned()],
        };
        let message = error.to_string();
        assert!(
            message.contains("published for linux/arm64, linux/arm/v7"),
            "{message}"
        );
        assert!(message.contains("only linux/amd64"), "{message}");
        assert!(
            message.contains("docker buildx build --platform linux/amd64"),
            "{message}"
        );

        let error = RegistryError::TooLarge {
            reference: "x".to_owned(),
            size_bytes: 12_480_000_000,
        };
        let message = error.to_string();
        assert!(
            message.contains("is 12.5 GB compressed (12480000000 bytes"),
            "{message}"
        );
        assert!(message.contains("limit of 10 GB"), "{message}");
    }
}
