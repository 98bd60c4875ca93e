//! Why a resolve failed, in words a user can act on: [`RegistryError`],
//! and the classification of `oci-client` failures into it. Registry text
//! that goes into a message is scrubbed of the password and shortened.

use oci_client::errors::{OciDistributionError, OciErrorCode};

use super::credentials::{scrub, Secret};
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
         answer 401 for repositories that do not exist: check the name too.)"
    )]
    AuthenticationRequired {
        registry: String,
        repository: String,
    },

    /// The credentials given were not accepted (401 with credentials, or
    /// the token endpoint refused them).
    #[error(
        "registry {registry} rejected the credentials of user `{username}` for pulling \
         `{repository}`{detail}. Check the username and the password or token of the \
         `berth_registry_credential` passed as `registry_credential_id`, and that it may pull \
         this repository."
    )]
    CredentialsRejected {
        registry: String,
        username: String,
        repository: String,
        /// `": <registry's words>"` or empty.
        detail: String,
    },

    /// Authenticated (or anonymous) but not allowed (403).
    #[error(
        "registry {registry} denied access to `{repository}` (403 Forbidden{detail}). The \
         {who} may not pull this repository: grant it read (pull) permission on `{repository}`, \
         or use a `berth_registry_credential` that has it."
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
        "registry {registry} is rate limiting pulls (429 Too Many Requests{detail}). Wait before \
         retrying (the registry's Retry-After header says how long), or authenticate with a \
         `berth_registry_credential`, which usually raises the limit."
    )]
    RateLimited { registry: String, detail: String },

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

fn status_text(status: Option<u16>) -> String {
    status
        .map(|code| format!(" with HTTP {code}"))
        .unwrap_or_default()
}

/// What was being fetched when something failed; the facts every message
/// needs, and the secret to keep out of them.
pub(crate) struct FailureContext<'a> {
    /// Canonical reference the user asked for.
    pub(crate) reference: &'a str,
    /// Registry host as the user wrote it (`docker.io`, `127.0.0.1:5000`).
    pub(crate) registry: &'a str,
    pub(crate) repository: &'a str,
    /// `scheme://host/v2/` actually contacted.
    pub(crate) base_url: &'a str,
    /// The tag or digest requested, or the blob digest.
    pub(crate) object: &'a str,
    pub(crate) fetching_blob: bool,
    pub(crate) username: Option<&'a str>,
    pub(crate) secret: Option<&'a Secret>,
}

impl FailureContext<'_> {
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
            Some(username) => RegistryError::CredentialsRejected {
                registry: self.registry.to_owned(),
                username: username.to_owned(),
                repository: self.repository.to_owned(),
                detail: self.detail(detail),
            },
        }
    }

    fn denied(&self, detail: &str) -> RegistryError {
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

    fn rate_limited(&self, detail: &str) -> RegistryError {
        RegistryError::RateLimited {
            registry: self.registry.to_owned(),
            detail: self.detail(detail),
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

    /// Classifies an `oci-client` failure.
    pub(crate) fn classify(&self, error: OciDistributionError) -> RegistryError {
        match error {
            OciDistributionError::RequestError(error) => {
                if error.is_timeout() {
                    // reqwest's own timeouts (connect, read) end up here.
                    return RegistryError::Timeout {
                        url: self.base_url.to_owned(),
                        seconds: super::READ_TIMEOUT.as_secs(),
                    };
                }
                if error.is_connect() || error.is_request() {
                    return self.transport(&error);
                }
                if let Some(status) = error.status() {
                    return self.classify_status(status.as_u16(), "");
                }
                self.transport(&error)
            }
            OciDistributionError::IoError(error) => self.transport(&error),
            OciDistributionError::UnauthorizedError { .. } => self.unauthorized(""),
            OciDistributionError::AuthenticationFailure(reason) => self.unauthorized(&reason),
            OciDistributionError::RegistryError { envelope, .. } => {
                let messages: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| {
                        if e.message.is_empty() {
                            code_name(&e.code)
                        } else {
                            e.message.clone()
                        }
                    })
                    .collect();
                let message = messages.join("; ");
                match envelope.errors.first().map(|e| &e.code) {
                    Some(
                        OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::ManifestBlobUnknown,
                    ) => self.not_found(),
                    Some(OciErrorCode::Unauthorized) => self.unauthorized(&message),
                    Some(OciErrorCode::Denied) => self.denied(&message),
                    Some(OciErrorCode::Toomanyrequests) => self.rate_limited(&message),
                    Some(OciErrorCode::NameInvalid) => self.invalid_image(format!(
                        "registry {} says the repository name `{}` is invalid",
                        self.registry, self.repository
                    )),
                    Some(code) => self.protocol(None, &format!("{}: {message}", code_name(code))),
                    None => self.protocol(None, &message),
                }
            }
            OciDistributionError::ServerError { code, message, .. } => {
                self.classify_status(code, &message)
            }
            OciDistributionError::DigestError(error) => match error {
                oci_client::errors::DigestError::VerificationError { expected, actual } => {
                    self.digest_mismatch(&expected, &actual)
                }
                other => self.protocol(None, &other.to_string()),
            },
            OciDistributionError::UnsupportedMediaTypeError(media_type) => {
                self.invalid_image(super::manifest::DocumentError::MediaType(media_type))
            }
            OciDistributionError::UnsupportedSchemaVersionError(version) => self.invalid_image(
                super::manifest::DocumentError::SchemaVersion(i64::from(version)),
            ),
            other => self.protocol(None, &other.to_string()),
        }
    }

    /// Classifies a bare HTTP status (with whatever body the registry sent).
    pub(crate) fn classify_status(&self, status: u16, body: &str) -> RegistryError {
        match status {
            401 => self.unauthorized(body),
            403 => self.denied(body),
            404 => self.not_found(),
            429 => self.rate_limited(body),
            other => self.protocol(Some(other), body),
        }
    }
}

/// The registry's own spelling of an error code (`UNSUPPORTED`).
fn code_name(code: &OciErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{code:?}"),
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
    use oci_client::errors::{OciEnvelope, OciError};

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

    fn envelope(code: OciErrorCode, message: &str) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: message.to_owned(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "http://127.0.0.1:5001/v2/berth/private/manifests/v1".to_owned(),
        }
    }

    #[test]
    fn anonymous_401_asks_for_a_registry_credential() {
        let error = context(None, None).classify(OciDistributionError::UnauthorizedError {
            url: "http://127.0.0.1:5001/v2/berth/private/manifests/v1".to_owned(),
        });
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
        assert_eq!(error.summary(), "Registry requires authentication");
    }

    #[test]
    fn rejected_credentials_never_show_the_password() {
        let secret = Secret::new("berth-pass");
        let error = context(Some("berth"), Some(&secret)).classify(
            OciDistributionError::AuthenticationFailure(
                "{\"details\":\"incorrect username or password berth-pass\"}".to_owned(),
            ),
        );
        assert!(matches!(error, RegistryError::CredentialsRejected { .. }));
        let message = error.to_string();
        assert!(
            message.contains("rejected the credentials of user `berth`"),
            "{message}"
        );
        assert!(
            message.contains("incorrect username or password"),
            "{message}"
        );
        assert!(!message.contains("berth-pass"), "{message}");
        assert!(!format!("{error:?}").contains("berth-pass"));
    }

    #[test]
    fn envelope_codes_map_to_distinct_refusals() {
        let ctx = context(None, None);
        let not_found = ctx.classify(envelope(OciErrorCode::ManifestUnknown, "manifest unknown"));
        assert!(matches!(not_found, RegistryError::NotFound { .. }));
        let message = not_found.to_string();
        assert!(
            message.contains("`127.0.0.1:5001/berth/private:v1` was not found"),
            "{message}"
        );
        assert!(message.contains("repository `berth/private`"), "{message}");
        assert!(message.contains("no manifest `v1`"), "{message}");

        let denied = ctx.classify(envelope(OciErrorCode::Denied, "requested access denied"));
        assert!(matches!(denied, RegistryError::Denied { .. }));
        assert!(denied
            .to_string()
            .contains("403 Forbidden: requested access denied"));
        assert!(denied.to_string().contains("anonymous request"));

        let limited = ctx.classify(envelope(OciErrorCode::Toomanyrequests, "pull limit"));
        assert!(matches!(limited, RegistryError::RateLimited { .. }));
        assert!(limited.to_string().contains("Retry-After"));
        assert!(limited.to_string().contains("429"));
        assert!(limited.is_transient());

        let other = ctx.classify(envelope(OciErrorCode::Unsupported, "nope"));
        assert!(matches!(
            other,
            RegistryError::Protocol { status: None, .. }
        ));
        assert!(other.to_string().contains("UNSUPPORTED: nope"), "{other}");
    }

    #[test]
    fn bare_statuses_are_classified() {
        let ctx = context(Some("berth"), None);
        assert!(matches!(
            ctx.classify_status(401, ""),
            RegistryError::CredentialsRejected { .. }
        ));
        assert!(matches!(
            ctx.classify_status(403, ""),
            RegistryError::Denied { .. }
        ));
        assert!(matches!(
            ctx.classify_status(404, ""),
            RegistryError::NotFound { .. }
        ));
        assert!(matches!(
            ctx.classify_status(429, ""),
            RegistryError::RateLimited { .. }
        ));
        let server = ctx.classify(OciDistributionError::ServerError {
            code: 502,
            url: "http://127.0.0.1:5001/v2/".to_owned(),
            message: "<html>\n  bad   gateway\n</html>".to_owned(),
        });
        let message = server.to_string();
        assert!(
            message.contains("answered unexpectedly with HTTP 502"),
            "{message}"
        );
        assert!(message.contains("<html> bad gateway </html>"), "{message}");
        assert!(message.contains("try again later"), "{message}");
        assert!(server.is_transient());
        assert_eq!(server.summary(), "Registry protocol error");
        let teapot = ctx.classify_status(418, "");
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
        let error = ctx.classify(envelope(OciErrorCode::BlobUnknown, "blob unknown"));
        assert!(matches!(error, RegistryError::InvalidImage { .. }));
        assert!(error.to_string().contains("blob sha256:abc"), "{error}");
    }

    #[test]
    fn digest_mismatch_names_both_digests() {
        let error = context(None, None).classify(OciDistributionError::DigestError(
            oci_client::errors::DigestError::VerificationError {
                expected: "sha256:aaa".to_owned(),
                actual: "sha256:bbb".to_owned(),
            },
        ));
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
        let error = context(None, None).classify(OciDistributionError::IoError(io));
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
