//! The ingress: on every Docker host that runs an exposed web service, one
//! Berth-owned proxy gives each service a stable address (`public_port`,
//! `domains` with HTTPS, path `routes`) whatever the release, and is the
//! switch step of the deploy state machine.
//!
//! What runs on a host (all labelled `io.berth.managed=true`, kind
//! `ingress` or `ingress-tls`, restarted by Docker, in the host's network
//! namespace so that any port can be added without recreating anything):
//!
//! - `berth-ingress`: HAProxy. It binds the public ports and routes every
//!   request to the current instances (their fixed addresses on Berth's
//!   network). A switch writes the new configuration into its volume and
//!   reloads it by signal: the new worker takes over the listening sockets,
//!   the old one finishes its in-flight requests (the drain, observed by
//!   Berth as the old worker's exit) and answers each idle keep-alive
//!   connection once more with `Connection: close`. No request fails, so a
//!   client that never retries sees none fail (measured: the load tests in
//!   `tests/acceptance_ingress.rs` count failed requests, and `make bench`).
//! - `berth-ingress-tls`: Caddy, only on hosts with `domains` and
//!   `tls != "off"`. Certificates (ACME, or its local CA), TLS, HTTP → HTTPS;
//!   every request goes on to HAProxy's internal socket. Caddy reloads
//!   (which cut a few connections) only when the set of names changes.
//!   Caddy alone would be one proxy, but every change of its configuration
//!   is a full reload that cut connections in our measurements (new ones
//!   too), so it never carries a switch.
//!
//! Both are configured only through the Docker API: files copied into the
//! volume `berth-ingress`, commands run with `exec`. Nothing needs a port
//! open to the machine running Terraform; the probes of new instances run
//! inside the proxy container too, over the path the traffic takes.
//!
//! Layout: `routes` (what is routed, as data; pure), `haproxy` and `caddy`
//! (their configurations, rendered; pure), `host` (the I/O on one host).

pub mod caddy;
pub mod haproxy;
pub mod host;
pub mod routes;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use host::{IngressError, IngressHost, IngressView, PinImage, ProbeGate, SwitchOutcome};
pub use routes::{AppRoutes, Conflict, Exposure, HostRoutes, Server, ServiceRoutes};

/// The proxy's image by default: the official HAProxy image (the LTS
/// series); Berth pins it by its linux/amd64 digest when it creates the
/// container, so the proxy only changes when `image` does.
pub const DEFAULT_IMAGE: &str = "docker.io/library/haproxy:3.0";
/// The HTTPS front's image by default: the official Caddy image.
pub const DEFAULT_TLS_IMAGE: &str = "docker.io/library/caddy:2.10";
/// The proxy container's name on every host.
pub const PROXY_CONTAINER: &str = "berth-ingress";
/// The HTTPS front's container name.
pub const TLS_CONTAINER: &str = "berth-ingress-tls";
/// The volume holding the proxy's configuration and the apps' routes.
pub const VOLUME: &str = "berth-ingress";
/// Where [`VOLUME`] is mounted in both containers.
pub const VOLUME_PATH: &str = "/berth";
/// Caddy's data (certificates, its local CA, the ACME account): kept when
/// the containers are removed, so certificates are not issued again.
pub const TLS_DATA_VOLUME: &str = "berth-ingress-tls-data";
/// Caddy's own configuration directory (autosave).
pub const TLS_CONFIG_VOLUME: &str = "berth-ingress-tls-config";
/// HAProxy's socket for requests from the HTTPS front.
pub const INTERNAL_SOCKET: &str = "/berth/run/http.sock";
/// Caddy's admin API, inside its container only.
pub const TLS_ADMIN_SOCKET: &str = "/tmp/berth-caddy-admin.sock";
/// Where Caddy's local CA root is, for clients that should trust it.
pub const LOCAL_CA_ROOT: &str = "/data/caddy/pki/authorities/local/root.crt";

/// How certificates for `domains` are obtained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// From an ACME CA (Let's Encrypt), automatically; needs the names to
    /// point at the host and the HTTP and HTTPS ports reachable.
    #[default]
    Acme,
    /// From Caddy's own local CA (for tests and private networks).
    Internal,
    /// No HTTPS: domains are served over plain HTTP on `http_port`.
    Off,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Acme => "acme",
            TlsMode::Internal => "internal",
            TlsMode::Off => "off",
        }
    }

    /// Reads `acme`, `internal` or `off`.
    pub fn parse(s: &str) -> Option<TlsMode> {
        match s {
            "acme" => Some(TlsMode::Acme),
            "internal" => Some(TlsMode::Internal),
            "off" => Some(TlsMode::Off),
            _ => None,
        }
    }
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_owned()
}
fn default_tls_image() -> String {
    DEFAULT_TLS_IMAGE.to_owned()
}
fn default_http_port() -> u16 {
    80
}
fn default_https_port() -> u16 {
    443
}

/// The ingress settings of every host (the provider's `ingress` block, the
/// `ingress` section of the `berth` command's app spec file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngressSettings {
    /// The proxy's image (HAProxy 2.6 or later): a tag, resolved to its
    /// linux/amd64 digest when the proxy is created, or a digest.
    #[serde(default = "default_image")]
    pub image: String,
    /// The HTTPS front's image (Caddy 2.6 or later), for `domains`.
    #[serde(default = "default_tls_image")]
    pub tls_image: String,
    /// Port for plain HTTP to `domains` (redirects to HTTPS unless `tls`
    /// is `off`); 0 for none.
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// Port for HTTPS to `domains`.
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// `acme`, `internal` or `off`.
    #[serde(default)]
    pub tls: TlsMode,
    /// Contact address given to the ACME CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme_email: Option<String>,
}

impl Default for IngressSettings {
    fn default() -> Self {
        IngressSettings {
            image: default_image(),
            tls_image: default_tls_image(),
            http_port: default_http_port(),
            https_port: default_https_port(),
            tls: TlsMode::default(),
            acme_email: None,
        }
    }
}

impl IngressSettings {
    /// Every problem with the settings, as (field, message).
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.https_port == 0 {
            out.push(("https_port", "must be between 1 and 65535".to_owned()));
        }
        if self.http_port == self.https_port {
            out.push((
                "https_port",
                format!("{} is also http_port: the two must differ", self.https_port),
            ));
        }
        for (field, image) in [("image", &self.image), ("tls_image", &self.tls_image)] {
            if let Err(e) = crate::reference::Reference::parse(image) {
                out.push((field, e.to_string()));
            }
        }
        if let Some(email) = &self.acme_email {
            let ok = email
                .split_once('@')
                .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'));
            if !ok {
                out.push((
                    "acme_email",
                    format!("{email:?} is not an email address (e.g. ops@example.com)"),
                ));
            }
        }
        out
    }
}

/// Checks a host name for `domains`: lowercase letters, digits, dashes and
/// dots, at least two labels, no wildcard (names are issued one by one).
pub fn check_domain(name: &str) -> Result<(), String> {
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && labels.len() >= 2 && labels.iter().all(label_ok) {
        Ok(())
    } else if name.starts_with("*.") {
        Err(format!(
            "{name:?}: wildcard names are not supported; list each name"
        ))
    } else {
        Err(format!(
            "{name:?} is not a host name: use lowercase letters, digits, dashes and dots, e.g. \"shop.example.com\""
        ))
    }
}

/// Checks a path prefix for `routes`: starts with `/`, no trailing `/`
/// (except `/` itself), letters, digits and `-._~/` only.
pub fn check_route(prefix: &str) -> Result<(), String> {
    let chars_ok = prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~/".contains(c));
    if prefix == "/"
        || (prefix.starts_with('/') && !prefix.ends_with('/') && chars_ok && !prefix.contains("//"))
    {
        Ok(())
    } else {
        Err(format!(
            "{prefix:?} is not a path prefix: start with \"/\", no trailing \"/\", letters, digits and -._~ only (e.g. \"/api\")"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_defaults_and_checks() {
        let s = IngressSettings::default();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        assert_eq!(s.http_port, 80);
        let bad = IngressSettings {
            http_port: 443,
            acme_email: Some("nobody".into()),
            ..IngressSettings::default()
        };
        let fields: Vec<&str> = bad.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, vec!["https_port", "acme_email"]);
        let parsed: IngressSettings =
            serde_json::from_value(serde_json::json!({"tls": "internal", "https_port": 8443}))
                .unwrap();
        assert_eq!(parsed.tls, TlsMode::Internal);
        assert_eq!(parsed.image, DEFAULT_IMAGE);
    }

    #[test]
    fn domains_and_routes() {
        assert!(check_domain("shop.example.com").is_ok());
        for bad in [
            "localhost",
            "Shop.example",
            "a..b",
            "-a.b",
            "*.example.com",
            "a_b.c",
        ] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
        assert!(check_domain("*.example.com")
            .unwrap_err()
            .contains("wildcard"));
        for ok in ["/", "/api", "/v1.2/x"] {
            assert!(check_route(ok).is_ok(), "{ok}");
        }
        for bad in ["api", "/api/", "//x", "/a b", "/a?b"] {
            assert!(check_route(bad).is_err(), "{bad}");
        }
    }
}
