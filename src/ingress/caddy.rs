//! The host's HTTPS front for domains (Caddy), rendered from every app's
//! routes. Pure.
//!
//! Caddy does what it is best at: certificates (ACME, or its local CA with
//! `tls = "internal"`), TLS, and the redirect from HTTP to HTTPS. Every
//! request for a known name goes on to HAProxy's internal socket unchanged
//! (HAProxy picks the app and path route), on a new connection each time,
//! so that the proxy's reloads never meet an idle connection of Caddy's.
//! Its configuration changes only when the set of names does, never when a
//! release is switched.

use serde_json::{json, Value};

use super::routes::HostRoutes;
use super::{IngressSettings, TlsMode, INTERNAL_SOCKET, TLS_ADMIN_SOCKET};

/// Every name served on this host, sorted.
pub fn domains(routes: &HostRoutes) -> Vec<String> {
    let mut out: Vec<String> = routes
        .values()
        .flat_map(|a| a.services.values())
        .filter(|s| !s.servers.is_empty())
        .flat_map(|s| s.exposure.domains.iter().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Caddy's JSON configuration, or `None` when the host needs no HTTPS
/// front (no domains, or `tls = "off"`).
pub fn render(routes: &HostRoutes, settings: &IngressSettings, listen: &str) -> Option<Value> {
    let names = domains(routes);
    if names.is_empty() || settings.tls == TlsMode::Off {
        return None;
    }
    let issuer = match settings.tls {
        TlsMode::Internal => json!({"module": "internal"}),
        _ => {
            let mut acme = json!({"module": "acme"});
            if let Some(email) = &settings.acme_email {
                acme["email"] = json!(email);
            }
            acme
        }
    };
    let https_suffix = if settings.https_port == 443 {
        String::new()
    } else {
        format!(":{}", settings.https_port)
    };
    let not_found = json!({
        "handle": [{
            "handler": "static_response",
            "status_code": 404,
            "body": "no app is served here",
        }]
    });
    let mut servers = json!({
        "https": {
            "listen": [listen_address(listen, settings.https_port)],
            "routes": [
                {
                    "match": [{"host": names}],
                    "handle": [{
                        "handler": "reverse_proxy",
                        "upstreams": [{"dial": format!("unix/{INTERNAL_SOCKET}")}],
                        "transport": {"protocol": "http", "keep_alive": {"enabled": false}},
                    }],
                    "terminal": true,
                },
                not_found,
            ],
            "automatic_https": {"disable_redirects": true},
        }
    });
    if settings.http_port != 0 {
        servers["http"] = json!({
            "listen": [listen_address(listen, settings.http_port)],
            "routes": [
                {
                    "match": [{"host": names}],
                    "handle": [{
                        "handler": "static_response",
                        "status_code": 308,
                        "headers": {"Location": [format!("https://{{http.request.host}}{https_suffix}{{http.request.uri}}")]},
                    }],
                    "terminal": true,
                },
                not_found,
            ],
        });
    }
    Some(json!({
        "admin": {"listen": format!("unix/{TLS_ADMIN_SOCKET}")},
        "logging": {"logs": {"default": {"level": "WARN"}}},
        "apps": {
            "http": {
                "http_port": if settings.http_port == 0 { 80 } else { settings.http_port },
                "https_port": settings.https_port,
                "servers": servers,
            },
            "tls": {"automation": {"policies": [{"subjects": names, "issuers": [issuer]}]}},
            "pki": {"certificate_authorities": {"local": {"install_trust": false}}},
        }
    }))
}

fn listen_address(listen: &str, port: u16) -> String {
    match listen {
        "0.0.0.0" | "::" => format!(":{port}"),
        l if l.contains(':') => format!("[{l}]:{port}"),
        l => format!("{l}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::routes::{AppRoutes, Exposure, Server, ServiceRoutes};
    use std::collections::BTreeMap;

    fn routes(domains: &[&str], servers: usize) -> HostRoutes {
        HostRoutes::from([(
            "shop".to_string(),
            AppRoutes {
                app: "shop".into(),
                services: BTreeMap::from([(
                    "web".to_string(),
                    ServiceRoutes {
                        exposure: Exposure {
                            public_port: None,
                            domains: domains.iter().map(|d| d.to_string()).collect(),
                            routes: vec!["/".into()],
                            strip_prefix: false,
                            drain_seconds: 30,
                            health_path: "/".into(),
                            http_port: 8080,
                        },
                        servers: (0..servers)
                            .map(|i| Server {
                                name: format!("web-{i}"),
                                address: format!("10.0.0.{i}:8080"),
                            })
                            .collect(),
                    },
                )]),
            },
        )])
    }

    #[test]
    fn no_front_without_domains_or_with_tls_off() {
        let settings = IngressSettings::default();
        assert!(render(&routes(&[], 1), &settings, "127.0.0.1").is_none());
        assert!(render(&routes(&["a.example"], 0), &settings, "127.0.0.1").is_none());
        let off = IngressSettings {
            tls: TlsMode::Off,
            ..IngressSettings::default()
        };
        assert!(render(&routes(&["a.example"], 1), &off, "127.0.0.1").is_none());
    }

    #[test]
    fn internal_ca_redirect_and_forward_to_the_proxy() {
        let settings = IngressSettings {
            tls: TlsMode::Internal,
            http_port: 18080,
            https_port: 18443,
            ..IngressSettings::default()
        };
        let cfg = render(
            &routes(&["b.example", "a.example"], 2),
            &settings,
            "127.0.0.1",
        )
        .unwrap();
        let http = &cfg["apps"]["http"];
        assert_eq!(http["https_port"], 18443);
        assert_eq!(http["servers"]["https"]["listen"][0], "127.0.0.1:18443");
        assert_eq!(
            http["servers"]["https"]["routes"][0]["match"][0]["host"],
            json!(["a.example", "b.example"])
        );
        assert_eq!(
            http["servers"]["https"]["routes"][0]["handle"][0]["upstreams"][0]["dial"],
            format!("unix/{INTERNAL_SOCKET}")
        );
        assert_eq!(
            http["servers"]["http"]["routes"][0]["handle"][0]["headers"]["Location"][0],
            "https://{http.request.host}:18443{http.request.uri}"
        );
        assert_eq!(
            http["servers"]["http"]["routes"][1]["handle"][0]["status_code"],
            404
        );
        assert_eq!(
            cfg["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]["module"],
            "internal"
        );
    }
}
