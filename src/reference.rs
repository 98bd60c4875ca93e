//! Image references: parsing, validation and normalization. Pure, no I/O.
//!
//! This module owns the one answer to "which image does this string name?".
//! It follows Docker's `github.com/distribution/reference`, as the Docker CLI
//! uses it (`ParseNormalizedNamed` followed by `TagNameOnly`), so a reference
//! means the same image here as it does to `docker pull`.
//!
//! Grammar (upstream's, implemented by hand rather than with regular
//! expressions):
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [ registry "/" ] path
//! registry         := host [ ":" port ]
//! host             := domain-name | "[" ipv6-chars "]"
//! domain-name      := domain-component [ "." domain-component ]*
//! domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
//! port             := [0-9]+
//! ipv6-chars       := [a-fA-F0-9:]+          (no zones, no embedded IPv4)
//! path             := path-component [ "/" path-component ]*   (at most 255 characters)
//! path-component   := alnum [ separator alnum ]*
//! alnum            := [a-z0-9]+
//! separator        := "." | "_" | "__" | "-"+
//! tag              := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest           := algorithm ":" hex     (sha256: 64, sha384: 96, sha512: 128 lowercase hex)
//! ```
//!
//! Normalization:
//!
//! - The first `/`-separated component is a registry only when it is
//!   `localhost`, contains `.` or `:`, or contains an uppercase letter
//!   (upstream's rule: namespaces are lowercase, so an uppercase first
//!   component must be a host). Otherwise the registry is `docker.io`.
//! - `index.docker.io` is the legacy name of `docker.io` and becomes it.
//! - A single-component path on `docker.io` gets the official `library/`
//!   namespace: `nginx` is `docker.io/library/nginx`.
//! - The tag `latest` is added only when there is neither tag nor digest; a
//!   reference with both keeps both.
//! - A bare 64-character lowercase hex string is refused: Docker reserves it
//!   for image IDs.
//!
//! One deliberate difference: when the first component looks like a registry
//! (has a `.` or `:`) but is not a valid host, upstream quietly reparses the
//! whole string as a path with *no* registry at all (`my_reg.local/app` has
//! an empty domain). Every Berth reference has a registry, so that input is
//! refused here with the reason instead.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The registry of references that name none (Docker Hub).
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Docker Hub's legacy name; normalized to [`DEFAULT_REGISTRY`].
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
/// Namespace of Docker Hub's official images (`nginx` is `library/nginx`).
const OFFICIAL_NAMESPACE_PREFIX: &str = "library/";
/// The tag added when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository path (without registry), as upstream counts it.
pub const REPOSITORY_MAX_LEN: usize = 255;
/// Longest tag.
pub const TAG_MAX_LEN: usize = 128;
/// How much of a rejected input an error message repeats.
const ERROR_INPUT_MAX_CHARS: usize = 300;

/// A normalized image reference: registry, repository path, and a tag, a
/// digest or both. Always valid; build one with [`Reference::parse`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes `input` the way `docker pull` reads it:
    /// `nginx` becomes `docker.io/library/nginx:latest`.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        parse_normalized(input).map_err(|reason| ReferenceError::new(input, reason))
    }

    /// Registry host with optional port: `docker.io`, `ghcr.io`,
    /// `127.0.0.1:5000`, `[::1]:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path without the registry: `library/nginx`, `berth/demo`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Full name without tag or digest: `docker.io/library/nginx`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag; `Some("latest")` when the input had neither tag nor digest,
    /// `None` when it had only a digest.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, e.g. `sha256:` followed by 64 lowercase hex characters.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The pinned form `name@digest`; the tag is dropped.
    ///
    /// `digest` must be valid (see [`is_valid_digest`]), as digests from a
    /// registry or from another `Reference` are. For untrusted input use
    /// [`Reference::try_with_digest`].
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_owned()),
        }
    }

    /// `name:tag`; the digest is dropped.
    ///
    /// `tag` must be valid (see [`is_valid_tag`]). For untrusted input use
    /// [`Reference::try_with_tag`].
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_owned()),
            digest: None,
        }
    }

    /// Like [`Reference::with_digest`], but checks the digest first.
    pub fn try_with_digest(&self, digest: &str) -> Result<Reference, ReferenceError> {
        match check_digest(digest) {
            Ok(()) => Ok(self.with_digest(digest)),
            Err(reason) => Err(ReferenceError::new(
                &format!("{}@{digest}", self.name()),
                reason,
            )),
        }
    }

    /// Like [`Reference::with_tag`], but checks the tag first.
    pub fn try_with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if is_valid_tag(tag) {
            Ok(self.with_tag(tag))
        } else {
            Err(ReferenceError::new(
                &format!("{}:{tag}", self.name()),
                ReferenceErrorReason::InvalidTag(tag.to_owned()),
            ))
        }
    }

    /// Whether the registry host is this machine: `localhost`, an address in
    /// 127.0.0.0/8 or `[::1]`, with or without a port. Such registries are
    /// the ones Docker talks to over plain HTTP without being told to.
    pub fn is_loopback_registry(&self) -> bool {
        let host = registry_host(&self.registry);
        if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return inner.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
        }
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Reference {
    /// The canonical form: `registry/repository[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Why a string is not an image reference. Displays as one line naming the
/// input and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    input: String,
    reason: ReferenceErrorReason,
}

impl ReferenceError {
    fn new(input: &str, reason: ReferenceErrorReason) -> Self {
        let mut shown: String = input.chars().take(ERROR_INPUT_MAX_CHARS).collect();
        if shown.len() < input.len() {
            shown.push('…');
        }
        ReferenceError {
            input: shown,
            reason,
        }
    }

    /// The rejected input (shortened when very long).
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &ReferenceErrorReason {
        &self.reason
    }
}

/// What is wrong with a rejected reference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceErrorReason {
    #[error("reference is empty")]
    Empty,
    #[error("reference must not contain whitespace")]
    Whitespace,
    #[error(
        "a 64-character hexadecimal string is reserved for image IDs and cannot be a repository name"
    )]
    ImageId,
    #[error("repository name must be lowercase")]
    Uppercase,
    #[error(
        "registry {0:?} is not a valid host (a domain name, an IPv4 address or an [IPv6] address, with an optional :port)"
    )]
    InvalidRegistry(String),
    #[error("repository name has an empty path component (a leading, trailing or doubled '/')")]
    EmptyPathComponent,
    #[error(
        "repository path component {0:?} is invalid: use lowercase letters and digits, separated by '.', '_', '__' or dashes"
    )]
    InvalidPathComponent(String),
    #[error("repository name must not be more than 255 characters (it has {0})")]
    NameTooLong(usize),
    #[error(
        "tag {0:?} is invalid: a tag is 1 to 128 letters, digits, '_', '.' or '-' and does not start with '.' or '-'"
    )]
    InvalidTag(String),
    #[error("digest {0:?} is not of the form algorithm:hex (e.g. sha256: and 64 lowercase hex characters)")]
    InvalidDigestFormat(String),
    #[error("digest algorithm {0:?} is not supported (use sha256, sha384 or sha512)")]
    UnsupportedDigestAlgorithm(String),
    #[error("digest {digest:?} has {actual} hex characters, but {algorithm} needs {expected}")]
    InvalidDigestLength {
        digest: String,
        algorithm: String,
        actual: usize,
        expected: usize,
    },
    #[error("digest {0:?} must be lowercase hex")]
    UppercaseDigest(String),
}

/// Whether `s` is a digest a registry would accept: `sha256:` and 64
/// lowercase hex characters (or `sha384:`/`sha512:` with 96/128).
pub fn is_valid_digest(s: &str) -> bool {
    check_digest(s).is_ok()
}

/// Whether `s` is a valid tag: 1 to 128 of `[A-Za-z0-9_.-]`, not starting
/// with `.` or `-`.
pub fn is_valid_tag(s: &str) -> bool {
    let mut bytes = s.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    s.len() <= TAG_MAX_LEN
        && is_word_byte(first)
        && bytes.all(|b| is_word_byte(b) || b == b'.' || b == b'-')
}

type Reason = ReferenceErrorReason;

/// The whole of `ParseNormalizedNamed` + `TagNameOnly`, reporting the reason
/// only; [`Reference::parse`] adds the input.
fn parse_normalized(input: &str) -> Result<Reference, Reason> {
    if input.is_empty() {
        return Err(Reason::Empty);
    }
    if input.chars().any(char::is_whitespace) {
        return Err(Reason::Whitespace);
    }
    if is_image_id(input) {
        return Err(Reason::ImageId);
    }

    let (registry, remainder) = split_registry(input)?;

    // The path holds neither ':' nor '@', a tag holds neither, and a digest
    // holds no '@': so the first '@' starts the digest and the first ':'
    // before it starts the tag.
    let (name_and_tag, digest) = match remainder.split_once('@') {
        Some((name_and_tag, digest)) => (name_and_tag, Some(digest)),
        None => (remainder, None),
    };
    let (path, tag) = match name_and_tag.split_once(':') {
        Some((path, tag)) => (path, Some(tag)),
        None => (name_and_tag, None),
    };

    if path.to_lowercase() != path {
        return Err(Reason::Uppercase);
    }
    check_path(path)?;
    let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("{OFFICIAL_NAMESPACE_PREFIX}{path}")
    } else {
        path.to_owned()
    };
    if repository.len() > REPOSITORY_MAX_LEN {
        return Err(Reason::NameTooLong(repository.len()));
    }

    if let Some(tag) = tag {
        if !is_valid_tag(tag) {
            return Err(Reason::InvalidTag(tag.to_owned()));
        }
    }
    if let Some(digest) = digest {
        check_digest(digest)?;
    }

    let tag = match (tag, digest) {
        (None, None) => Some(DEFAULT_TAG),
        (tag, _) => tag,
    };
    Ok(Reference {
        registry: registry.to_owned(),
        repository,
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
    })
}

/// Splits off the registry, choosing `docker.io` when the first component
/// is not one (upstream's `splitDockerDomain`).
fn split_registry(input: &str) -> Result<(&str, &str), Reason> {
    let Some((first, rest)) = input.split_once('/') else {
        return Ok((DEFAULT_REGISTRY, input));
    };
    if first == LEGACY_DEFAULT_REGISTRY {
        return Ok((DEFAULT_REGISTRY, rest));
    }
    let has_host_punctuation = first.contains(['.', ':']);
    let has_uppercase = first.to_lowercase() != first;
    if !(first == "localhost" || has_host_punctuation || has_uppercase) {
        return Ok((DEFAULT_REGISTRY, input));
    }
    if is_valid_registry(first) {
        Ok((first, rest))
    } else if !has_host_punctuation {
        // Only the uppercase made it look like a host, and it is not one:
        // it is a namespace written in the wrong case, e.g. `My_Org/app`.
        Err(Reason::Uppercase)
    } else {
        Err(Reason::InvalidRegistry(first.to_owned()))
    }
}

/// `host[:port]` where host is a domain name, dotted IPv4 or `[IPv6]`.
fn is_valid_registry(s: &str) -> bool {
    let port = if let Some(after_bracket) = s.strip_prefix('[') {
        let Some((address, rest)) = after_bracket.split_once(']') else {
            return false;
        };
        let is_ipv6_chars =
            !address.is_empty() && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        if !is_ipv6_chars {
            return false;
        }
        match rest.strip_prefix(':') {
            Some(port) => Some(port),
            None if rest.is_empty() => None,
            None => return false,
        }
    } else {
        let (host, port) = match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        };
        if !host.split('.').all(is_domain_component) {
            return false;
        }
        port
    };
    port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-zA-Z0-9]` at both ends, `[a-zA-Z0-9-]` between.
fn is_domain_component(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// Every `/`-separated component must be a valid path component.
fn check_path(path: &str) -> Result<(), Reason> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err(Reason::EmptyPathComponent);
        }
        if !is_path_component(component) {
            return Err(Reason::InvalidPathComponent(component.to_owned()));
        }
    }
    Ok(())
}

/// Runs of `[a-z0-9]` joined by exactly one of `.`, `_`, `__` or `-`+.
fn is_path_component(s: &str) -> bool {
    let is_alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    let mut i = 0;
    loop {
        // An alphanumeric run, at least one byte long.
        let run_start = i;
        while bytes.get(i).is_some_and(is_alnum) {
            i += 1;
        }
        if i == run_start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // A separator, followed by another run.
        let sep_start = i;
        while bytes
            .get(i)
            .is_some_and(|b| matches!(b, b'.' | b'_' | b'-'))
        {
            i += 1;
        }
        let separator = &bytes[sep_start..i];
        let valid = matches!(separator, b"." | b"_" | b"__")
            || (!separator.is_empty() && separator.iter().all(|b| *b == b'-'));
        if !valid {
            return false;
        }
    }
}

/// `algorithm:hex` per upstream's grammar, then the rules of the algorithms
/// Docker knows (`go-digest`): sha256, sha384, sha512 in lowercase hex.
fn check_digest(digest: &str) -> Result<(), Reason> {
    let format_error = || Reason::InvalidDigestFormat(digest.to_owned());
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format_error());
    };
    if !is_digest_algorithm(algorithm)
        || hex.len() < 32
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(format_error());
    }
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(Reason::UnsupportedDigestAlgorithm(algorithm.to_owned())),
    };
    if hex.len() != expected {
        return Err(Reason::InvalidDigestLength {
            digest: digest.to_owned(),
            algorithm: algorithm.to_owned(),
            actual: hex.len(),
            expected,
        });
    }
    if hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(Reason::UppercaseDigest(digest.to_owned()));
    }
    Ok(())
}

/// Components `[A-Za-z][A-Za-z0-9]*` joined by one of `-_+.`.
fn is_digest_algorithm(s: &str) -> bool {
    s.split(['-', '_', '+', '.']).all(|component| {
        let mut bytes = component.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric())
    })
}

/// A bare image ID: exactly 64 lowercase hex characters.
fn is_image_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `\w` in Go's regexp: ASCII letters, digits and underscore.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The registry without its port: `[::1]:5000` → `[::1]`, `host:80` → `host`.
fn registry_host(registry: &str) -> &str {
    if registry.starts_with('[') {
        match registry.find(']') {
            Some(end) => &registry[..=end],
            None => registry,
        }
    } else {
        registry.split(':').next().unwrap_or(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ReferenceErrorReason::*;

    const HEX64: &str = "e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582";

    fn sha256() -> String {
        format!("sha256:{HEX64}")
    }

    /// Test tables write `{D}` for a valid sha256 digest and `{HEX}` for its
    /// 64 hex characters, to keep rows on one line.
    fn expand(s: &str) -> String {
        s.replace("{D}", &sha256()).replace("{HEX}", HEX64)
    }

    fn parse(input: &str) -> Reference {
        Reference::parse(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"))
    }

    fn reason(input: &str) -> Reason {
        match Reference::parse(input) {
            Ok(r) => panic!("{input:?} should be refused, parsed as {r}"),
            Err(e) => e.reason().clone(),
        }
    }

    /// Input → canonical form. Mostly upstream's own cases (reference_test.go,
    /// normalize_test.go) read through `ParseNormalizedNamed` + `TagNameOnly`.
    #[rustfmt::skip]
    const VALID: &[(&str, &str)] = &[
        // Docker Hub: default registry, library/ namespace, latest.
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("library/nginx", "docker.io/library/nginx:latest"),
        ("docker.io/nginx", "docker.io/library/nginx:latest"),
        ("docker.io/library/nginx", "docker.io/library/nginx:latest"),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest"),
        ("index.docker.io/nginx", "docker.io/library/nginx:latest"),
        ("index.docker.io/library/debian", "docker.io/library/debian:latest"),
        ("index.docker.io/berth/demo:v1", "docker.io/berth/demo:v1"),
        ("berth/demo", "docker.io/berth/demo:latest"),
        ("docker/docker", "docker.io/docker/docker:latest"),
        ("library/foo/bar", "docker.io/library/foo/bar:latest"),
        ("store/foo/bar", "docker.io/store/foo/bar:latest"),
        ("other/library", "docker.io/other/library:latest"),
        ("test_com/foo", "docker.io/test_com/foo:latest"),
        ("ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base:latest"),
        ("dbcc1", "docker.io/library/dbcc1:latest"),
        // Other registries: no library/ namespace.
        ("ghcr.io/o/r", "ghcr.io/o/r:latest"),
        ("gcr.io/library/busybox", "gcr.io/library/busybox:latest"),
        ("example.com/privatebase", "example.com/privatebase:latest"),
        ("example.com:8000/private/moonbase", "example.com:8000/private/moonbase:latest"),
        ("test.com:8080/foo", "test.com:8080/foo:latest"),
        ("test-com:8080/foo", "test-com:8080/foo:latest"),
        ("test:5000/repo:tag", "test:5000/repo:tag"),
        ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com/myimage:xn--n3h.com"),
        ("xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo:latest"),
        ("sub-dom1.foo.com/bar/baz/quux:tag", "sub-dom1.foo.com/bar/baz/quux:tag"),
        ("b.gcr.io/test.example.com/my-app:t.e.c", "b.gcr.io/test.example.com/my-app:t.e.c"),
        ("registry-1.docker.io/library/nginx", "registry-1.docker.io/library/nginx:latest"),
        // localhost and addresses.
        ("localhost/x", "localhost/x:latest"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("127.0.0.1:5000/docker/docker", "127.0.0.1:5000/docker/docker:latest"),
        ("127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase:latest"),
        ("192.168.0.1:8/debian", "192.168.0.1:8/debian:latest"),
        ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000/repo:5050"),
        ("[::1]:5000/x", "[::1]:5000/x:latest"),
        ("[::1]/x", "[::1]/x:latest"),
        ("[fc00::1]:5000/docker/docker", "[fc00::1]:5000/docker/docker:latest"),
        ("[fc00:1:2:3:4:5:6:7]:5000/debian", "[fc00:1:2:3:4:5:6:7]:5000/debian:latest"),
        ("[2001:db8::]:5000/repo", "[2001:db8::]:5000/repo:latest"),
        ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]/repo:tag"),
        // Without a '/', a host-looking name is a Docker Hub image and its
        // ":port" is a tag (upstream's documented quirk).
        ("localhost", "docker.io/library/localhost:latest"),
        ("localhost:5000", "docker.io/library/localhost:5000"),
        ("test.com:5000", "docker.io/library/test.com:5000"),
        ("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080"),
        ("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080"),
        ("192.168.0.1", "docker.io/library/192.168.0.1:latest"),
        ("192.168.0.1:80", "docker.io/library/192.168.0.1:80"),
        // An uppercase first component is a registry (upstream's rule).
        ("Docker/docker", "Docker/docker:latest"),
        ("DOCKER/docker", "DOCKER/docker:latest"),
        ("Foo/bar", "Foo/bar:latest"),
        // Path separators: '.', '_', '__', any run of '-'.
        ("docker-rules/docker", "docker.io/docker-rules/docker:latest"),
        ("docker---rules/docker", "docker.io/docker---rules/docker:latest"),
        ("dock__er/docker", "docker.io/dock__er/docker:latest"),
        ("x/a.b_c__d-e--f", "docker.io/x/a.b_c__d-e--f:latest"),
        ("d/docker", "docker.io/d/docker:latest"),
        ("jess/t", "docker.io/jess/t:latest"),
        // Hex names are fine unless they are exactly a bare image ID.
        ("docker.io/{HEX}", "docker.io/library/{HEX}:latest"),
        ("{HEX}:tag", "docker.io/library/{HEX}:tag"),
        ("x/{HEX}", "docker.io/x/{HEX}:latest"),
        // Tags.
        ("lowercase:Uppercase", "docker.io/library/lowercase:Uppercase"),
        ("nginx:_x", "docker.io/library/nginx:_x"),
        ("nginx:1.25-alpine_3.19", "docker.io/library/nginx:1.25-alpine_3.19"),
        // Digests: no latest added; tag and digest both kept.
        ("busybox@{D}", "docker.io/library/busybox@{D}"),
        ("busybox:latest@{D}", "docker.io/library/busybox:latest@{D}"),
        ("ghcr.io/o/r@{D}", "ghcr.io/o/r@{D}"),
        ("test:5000/repo:tag@{D}", "test:5000/repo:tag@{D}"),
        ("[2001:db8::1]:5000/repo@{D}", "[2001:db8::1]:5000/repo@{D}"),
    ];

    #[test]
    fn valid_references_normalize_to_canonical_form() {
        let path_255 = format!("{}a", "a/".repeat(127));
        let tag_128 = format!("_{}z", "A.-".repeat(42));
        let hex_63 = &HEX64[..63];
        let sha512 = format!("sha512:{}", "f".repeat(128));
        let sha384 = format!("sha384:{}", "0".repeat(96));
        let song = "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev";
        let long_cases = [
            (song.to_owned(), format!("docker.io/library/{song}:latest")),
            (
                hex_63.to_owned(),
                format!("docker.io/library/{hex_63}:latest"),
            ),
            (
                format!("nginx:{tag_128}"),
                format!("docker.io/library/nginx:{tag_128}"),
            ),
            (
                format!("foo@{sha384}"),
                format!("docker.io/library/foo@{sha384}"),
            ),
            (format!("a.io/b:c@{sha512}"), format!("a.io/b:c@{sha512}")),
            // The length limit counts the path (with library/), not the registry.
            (path_255.clone(), format!("docker.io/{path_255}:latest")),
            (format!("{path_255}:x"), format!("docker.io/{path_255}:x")),
            (
                format!("a.example.com/{path_255}"),
                format!("a.example.com/{path_255}:latest"),
            ),
            (
                "a".repeat(247),
                format!("docker.io/library/{}:latest", "a".repeat(247)),
            ),
        ];
        let table = VALID.iter().map(|(i, c)| (expand(i), expand(c)));
        for (input, canonical) in table.chain(long_cases) {
            let reference = parse(&input);
            assert_eq!(reference.to_string(), canonical, "input {input:?}");
            // The canonical form is itself valid and a fixed point.
            assert_eq!(parse(&canonical), reference, "canonical {canonical:?}");
            assert_eq!(canonical.parse::<Reference>().as_ref(), Ok(&reference));
        }
    }

    #[test]
    fn accessors_split_the_parts() {
        // input, registry, repository, tag, digest
        #[rustfmt::skip]
        let cases = [
            ("nginx", "docker.io", "library/nginx", Some("latest"), None),
            ("berth/demo:v2", "docker.io", "berth/demo", Some("v2"), None),
            ("index.docker.io/debian", "docker.io", "library/debian", Some("latest"), None),
            ("ghcr.io/o/r:1", "ghcr.io", "o/r", Some("1"), None),
            ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", Some("latest"), None),
            ("localhost:5000/a/b", "localhost:5000", "a/b", Some("latest"), None),
            ("[::1]:5000/x", "[::1]:5000", "x", Some("latest"), None),
            ("Foo/bar", "Foo", "bar", Some("latest"), None),
            ("ghcr.io/o/r@{D}", "ghcr.io", "o/r", None, Some("{D}")),
            ("host.example/r:tag@{D}", "host.example", "r", Some("tag"), Some("{D}")),
        ];
        for (input, registry, repository, tag, digest) in cases {
            let r = parse(&expand(input));
            assert_eq!(r.registry(), registry, "{input}");
            assert_eq!(r.repository(), repository, "{input}");
            assert_eq!(r.name(), format!("{registry}/{repository}"), "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(r.digest().map(str::to_owned), digest.map(expand), "{input}");
        }
    }

    fn s(text: &str) -> String {
        expand(text)
    }

    /// Input → reason. Upstream's invalid cases plus Berth's own.
    fn invalid_cases() -> Vec<(String, Reason)> {
        #[rustfmt::skip]
        let mut cases: Vec<(&str, Reason)> = vec![
            ("", Empty),
            (" nginx", Whitespace),
            ("nginx ", Whitespace),
            ("ngi nx", Whitespace),
            ("nginx:1.25\n", Whitespace),
            ("\t", Whitespace),
            ("nginx:\u{a0}x", Whitespace),
            ("{HEX}", ImageId),
            ("1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a", ImageId),
            // Uppercase in the repository path.
            ("Foo", Uppercase),
            ("Uppercase:tag", Uppercase),
            ("docker/Docker", Uppercase),
            ("docker.io/docker/Docker", Uppercase),
            ("test:5000/Uppercase/lowercase:tag", Uppercase),
            ("localhost:5000/Foo", Uppercase),
            ("Foo/Bar", Uppercase),
            ("My_Org/app", Uppercase),
            ("NGINX@{D}", Uppercase),
            // Registries.
            ("https://github.com/docker/docker", InvalidRegistry(s("https:"))),
            ("-docker.io/docker/docker", InvalidRegistry(s("-docker.io"))),
            ("docker-.io/x", InvalidRegistry(s("docker-.io"))),
            ("exa..mple.com/x", InvalidRegistry(s("exa..mple.com"))),
            (".example.com/x", InvalidRegistry(s(".example.com"))),
            ("example.com:/x", InvalidRegistry(s("example.com:"))),
            ("example.com:50a/x", InvalidRegistry(s("example.com:50a"))),
            ("example.com:5000:1/x", InvalidRegistry(s("example.com:5000:1"))),
            ("fc00::1:5000/debian", InvalidRegistry(s("fc00::1:5000"))),
            ("[fe80::1%eth0]:5000/x", InvalidRegistry(s("[fe80::1%eth0]:5000"))),
            ("[fe80::1%@zone]:5000/x", InvalidRegistry(s("[fe80::1%@zone]:5000"))),
            ("[2001:db8::192.0.2.33]/x", InvalidRegistry(s("[2001:db8::192.0.2.33]"))),
            ("[]:5000/x", InvalidRegistry(s("[]:5000"))),
            ("[::1]5000/x", InvalidRegistry(s("[::1]5000"))),
            ("[::1/x", InvalidRegistry(s("[::1"))),
            ("nginx:t/g", InvalidRegistry(s("nginx:t"))),
            // Upstream would read these as registry-less paths; see the top comment.
            ("my_reg.local/app", InvalidRegistry(s("my_reg.local"))),
            ("dock..er/docker", InvalidRegistry(s("dock..er"))),
            ("dock_.er/docker", InvalidRegistry(s("dock_.er"))),
            // Path components.
            ("-docker", InvalidPathComponent(s("-docker"))),
            ("-docker/docker", InvalidPathComponent(s("-docker"))),
            ("docker-/docker", InvalidPathComponent(s("docker-"))),
            ("-docker-/docker", InvalidPathComponent(s("-docker-"))),
            ("____/____", InvalidPathComponent(s("____"))),
            ("_docker/_docker", InvalidPathComponent(s("_docker"))),
            ("x/dock..er", InvalidPathComponent(s("dock..er"))),
            ("x/dock_.er", InvalidPathComponent(s("dock_.er"))),
            ("x/dock-.er", InvalidPathComponent(s("dock-.er"))),
            ("x/dock___er", InvalidPathComponent(s("dock___er"))),
            ("x/docker.", InvalidPathComponent(s("docker."))),
            ("aa/asdf$$^/aa", InvalidPathComponent(s("asdf$$^"))),
            ("caf\u{e9}", InvalidPathComponent(s("caf\u{e9}"))),
            ("nul\u{0}", InvalidPathComponent(s("nul\u{0}"))),
            ("[fc00::1]", InvalidPathComponent(s("[fc00"))),
            ("[fc00::1]:5000", InvalidPathComponent(s("[fc00"))),
            ("[2001:db8::1]:tag", InvalidPathComponent(s("[2001"))),
            ("docker///docker", EmptyPathComponent),
            ("docker.io/docker///docker", EmptyPathComponent),
            ("docker/", EmptyPathComponent),
            ("/docker", EmptyPathComponent),
            ("docker.io/", EmptyPathComponent),
            ("localhost/", EmptyPathComponent),
            (":justtag", EmptyPathComponent),
            ("@{D}", EmptyPathComponent),
            // Tags.
            ("nginx:", InvalidTag(s(""))),
            ("nginx:-tag", InvalidTag(s("-tag"))),
            ("nginx:.tag", InvalidTag(s(".tag"))),
            ("nginx:a:b", InvalidTag(s("a:b"))),
            ("nginx:t\u{e1}g", InvalidTag(s("t\u{e1}g"))),
            ("nginx:@{D}", InvalidTag(s(""))),
            // Digests.
            ("nginx@", InvalidDigestFormat(s(""))),
            ("nginx@sha256", InvalidDigestFormat(s("sha256"))),
            ("nginx@sha256:", InvalidDigestFormat(s("sha256:"))),
            ("nginx@sha256:xyz", InvalidDigestFormat(s("sha256:xyz"))),
            ("nginx@sha256:abcdef", InvalidDigestFormat(s("sha256:abcdef"))),
            ("nginx@:{HEX}", InvalidDigestFormat(s(":{HEX}"))),
            ("nginx@1sha:{HEX}", InvalidDigestFormat(s("1sha:{HEX}"))),
            ("nginx@sha256:{HEX}g", InvalidDigestFormat(s("sha256:{HEX}g"))),
            ("nginx@{D}@{D}", InvalidDigestFormat(s("{D}@{D}"))),
            ("x@invaliddigest:{HEX}", UnsupportedDigestAlgorithm(s("invaliddigest"))),
            ("x@SHA256:{HEX}", UnsupportedDigestAlgorithm(s("SHA256"))),
            ("x@md5:0123456789abcdef0123456789abcdef", UnsupportedDigestAlgorithm(s("md5"))),
        ];
        // Upstream's "namespace too long" case: 278 characters.
        let part = "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255";
        let too_long_namespace = format!("{}/docker", [part; 4].join("_"));
        let short_hex = "f".repeat(34);
        let upper_hex = HEX64.to_uppercase();
        let length = |hex: &str| InvalidDigestLength {
            digest: format!("sha256:{hex}"),
            algorithm: "sha256".into(),
            actual: hex.len(),
            expected: 64,
        };
        let long: Vec<(String, Reason)> = vec![
            (too_long_namespace, NameTooLong(278)),
            (format!("{}a:tag", "a/".repeat(128)), NameTooLong(257)),
            ("a".repeat(248), NameTooLong(256)),
            (
                format!("a.example.com/{}", "a".repeat(256)),
                NameTooLong(256),
            ),
            (
                format!("nginx:{}", "a".repeat(129)),
                InvalidTag("a".repeat(129)),
            ),
            (format!("repo@sha256:{short_hex}"), length(&short_hex)),
            (
                format!("repo@sha256:{HEX64}0"),
                length(&format!("{HEX64}0")),
            ),
            (
                format!("repo@sha256:{upper_hex}"),
                UppercaseDigest(format!("sha256:{upper_hex}")),
            ),
        ];
        cases
            .drain(..)
            .map(|(input, reason)| (expand(input), reason))
            .chain(long)
            .collect()
    }

    #[test]
    fn invalid_references_are_refused_with_the_reason() {
        for (input, expected) in invalid_cases() {
            assert_eq!(reason(&input), expected, "input {input:?}");
        }
    }

    #[test]
    fn error_messages_are_one_line_naming_input_and_reason() {
        for (input, _) in invalid_cases() {
            let message = Reference::parse(&input)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!message.contains('\n'), "one line: {message:?}");
            assert!(
                message.starts_with("invalid image reference \""),
                "{message}"
            );
        }
        let message = |input: &str| Reference::parse(input).err().map(|e| e.to_string());
        assert_eq!(
            message("Foo/Bar").as_deref(),
            Some(r#"invalid image reference "Foo/Bar": repository name must be lowercase"#)
        );
        assert_eq!(
            message("").as_deref(),
            Some(r#"invalid image reference "": reference is empty"#)
        );
        assert_eq!(
            message("nginx:1\n").as_deref(),
            Some(r#"invalid image reference "nginx:1\n": reference must not contain whitespace"#)
        );
        let long = message(&"A".repeat(10_000)).unwrap_or_default();
        assert!(
            long.len() < 500,
            "long input is shortened: {} bytes",
            long.len()
        );
    }

    #[test]
    fn with_digest_pins_and_with_tag_retags() {
        let d = sha256();
        let tagged = parse("ghcr.io/o/r:v1");
        let pinned = tagged.with_digest(&d);
        assert_eq!(pinned.to_string(), format!("ghcr.io/o/r@{d}"));
        assert_eq!(pinned.tag(), None);
        assert_eq!(pinned.digest(), Some(d.as_str()));
        assert_eq!(parse(&pinned.to_string()), pinned);

        let both = parse(&format!("nginx:1.25@{d}"));
        let hub_pinned = format!("docker.io/library/nginx@{d}");
        assert_eq!(both.with_digest(&d).to_string(), hub_pinned);
        assert_eq!(
            both.with_tag("1.26").to_string(),
            "docker.io/library/nginx:1.26"
        );
        assert_eq!(pinned.with_tag("v2").to_string(), "ghcr.io/o/r:v2");

        assert_eq!(tagged.try_with_digest(&d), Ok(pinned.clone()));
        assert_eq!(
            tagged
                .try_with_digest("sha256:abc")
                .err()
                .map(|e| e.reason().clone()),
            Some(InvalidDigestFormat("sha256:abc".into()))
        );
        assert_eq!(tagged.try_with_tag("v2"), Ok(tagged.with_tag("v2")));
        assert!(tagged.try_with_tag("-v2").is_err());
        assert!(tagged.try_with_tag("").is_err());
    }

    #[test]
    fn loopback_registries() {
        let loopback = [
            "localhost/x",
            "localhost:5000/x",
            "LOCALHOST/x",
            "127.0.0.1/x",
            "127.0.0.1:5000/x",
            "127.1.2.3:80/x",
            "[::1]/x",
            "[::1]:5000/x",
            "[0:0:0:0:0:0:0:1]:5000/x",
        ];
        for input in loopback {
            assert!(parse(input).is_loopback_registry(), "{input}");
        }
        let remote = [
            "nginx",
            "localhost",
            "localhost:5000",
            "ghcr.io/o/r",
            "128.0.0.1/x",
            "10.0.0.1:5000/x",
            "localhost.example.com/x",
            "my.localhost.dev:5000/x",
            "[::2]:5000/x",
            "[fc00::1]/x",
        ];
        for input in remote {
            assert!(!parse(input).is_loopback_registry(), "{input}");
        }
    }

    #[test]
    fn digest_validity() {
        assert!(is_valid_digest(&sha256()));
        assert!(is_valid_digest(&format!("sha512:{}", "a".repeat(128))));
        assert!(is_valid_digest(&format!("sha384:{}", "a".repeat(96))));
        let bad = [
            "",
            "sha256",
            "sha256:",
            "{HEX}",
            "sha256:{HEX}0",
            "SHA256:{HEX}",
            " sha256:{HEX}",
            "md5:0123456789abcdef0123456789abcdef",
        ];
        let mut bad: Vec<String> = bad.into_iter().map(expand).collect();
        bad.push(format!("sha256:{}", &HEX64[..63]));
        bad.push(format!("sha256:{}", HEX64.to_uppercase()));
        bad.push(format!("sha256:{}", "g".repeat(64)));
        for digest in bad {
            assert!(!is_valid_digest(&digest), "{digest:?}");
        }
    }

    #[test]
    fn tag_validity() {
        for good in [
            "latest",
            "v1.2.3",
            "_",
            "A",
            "1",
            "a-b_c.d",
            &"x".repeat(128),
        ] {
            assert!(is_valid_tag(good), "{good:?}");
        }
        for bad in ["", "-a", ".a", "a:b", "a/b", "a@b", "a b", &"x".repeat(129)] {
            assert!(!is_valid_tag(bad), "{bad:?}");
        }
    }

    #[test]
    fn equal_references_hash_equal() {
        use std::collections::HashSet;
        let spellings = [
            "nginx",
            "docker.io/library/nginx:latest",
            "index.docker.io/nginx",
        ];
        let set: HashSet<Reference> = spellings.into_iter().map(parse).collect();
        assert_eq!(set.len(), 1);
    }

    /// Pieces that assemble into many valid and nearly-valid references.
    fn reference_like() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "a",
            "b",
            "z9",
            "0",
            ".",
            "_",
            "__",
            "-",
            "--",
            "/",
            ":",
            "@",
            "5000",
            "sha256:",
            HEX64,
            "sha512:",
            "localhost",
            "[::1]",
            "[",
            "]",
            "docker.io",
            "index.docker.io",
            "library",
            "ghcr.io",
            "127.0.0.1",
            "A",
            "Latest",
            " ",
            "é",
        ]);
        prop::collection::vec(piece, 1..12).prop_map(|pieces| pieces.concat())
    }

    fn check_round_trip(input: &str) -> Result<(), TestCaseError> {
        if let Ok(reference) = Reference::parse(input) {
            let reparsed = Reference::parse(&reference.to_string());
            prop_assert_eq!(reparsed.as_ref(), Ok(&reference), "input {:?}", input);
            prop_assert!(reference.tag().is_some() || reference.digest().is_some());
            prop_assert!(!reference.registry().is_empty());
            prop_assert!(reference.repository().len() <= REPOSITORY_MAX_LEN);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(input in any::<String>()) {
            check_round_trip(&input)?;
        }

        #[test]
        fn reference_like_strings_round_trip(input in reference_like()) {
            check_round_trip(&input)?;
        }

        #[test]
        fn generated_valid_references_parse(
            registry in prop::sample::select(vec![
                "", "docker.io/", "ghcr.io/", "localhost:5000/", "[::1]:5000/", "Reg.Example/",
            ]),
            // The first component has no '.', so it never reads as a registry.
            path in concat!(
                "[a-z0-9]{1,8}((_|__|-+)[a-z0-9]{1,8}){0,2}",
                "(/[a-z0-9]{1,8}((\\.|_|__|-+)[a-z0-9]{1,8})?){0,3}",
            ),
            tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            pinned in any::<bool>(),
        ) {
            let mut input = format!("{registry}{path}");
            if let Some(tag) = &tag {
                input.push(':');
                input.push_str(tag);
            }
            if pinned {
                input.push('@');
                input.push_str(&sha256());
            }
            let reference = Reference::parse(&input);
            prop_assert!(reference.is_ok(), "{:?}: {:?}", input, reference);
            check_round_trip(&input)?;
        }
    }
}

/// Normalizes a registry host the way users write it for `docker login`:
/// an `https://` or `http://` prefix and a trailing `/`, `/v1/` or `/v2/`
/// are dropped, the host is lowercased, and Docker Hub's aliases
/// (`index.docker.io`, `registry-1.docker.io`) become `docker.io`.
pub fn normalize_registry(input: &str) -> Result<String, String> {
    let trimmed = input.trim();
    let no_scheme = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .unwrap_or(trimmed);
    let host = ["/v1/", "/v2/", "/v1", "/v2", "/"]
        .iter()
        .find_map(|suffix| no_scheme.strip_suffix(suffix))
        .unwrap_or(no_scheme)
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!(
            "{input:?} is not a registry host: give one like `ghcr.io` or `registry.example.com:5000`"
        ));
    }
    if host.contains('/') {
        return Err(format!(
            "{input:?} has a path: give only the registry host, like `ghcr.io` or `registry.example.com:5000`, not a repository"
        ));
    }
    let probe = format!("{host}/x");
    match Reference::parse(&probe) {
        Ok(r) if r.registry() == "registry-1.docker.io" => Ok(DEFAULT_REGISTRY.to_string()),
        Ok(r) if r.registry() == host || r.registry() == DEFAULT_REGISTRY => {
            Ok(r.registry().to_string())
        }
        _ => Err(format!(
            "{input:?} is not a valid registry host: use a host name or address with an optional port, like `registry.example.com:5000`"
        )),
    }
}

#[cfg(test)]
mod registry_tests {
    use super::normalize_registry;

    #[test]
    fn registry_hosts_normalize_like_docker_login() {
        for (input, want) in [
            ("docker.io", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("GHCR.io", "ghcr.io"),
            ("registry.gitlab.com", "registry.gitlab.com"),
            ("europe-docker.pkg.dev", "europe-docker.pkg.dev"),
            ("127.0.0.1:5001", "127.0.0.1:5001"),
            ("localhost:5000/", "localhost:5000"),
        ] {
            assert_eq!(normalize_registry(input).as_deref(), Ok(want), "{input}");
        }
        for bad in ["", "ghcr.io/acme/web", "bad host", "https://"] {
            assert!(normalize_registry(bad).is_err(), "{bad}");
        }
    }
}
