//! The host's HAProxy configuration, rendered from every app's routes.
//! Pure: the same routes give the same bytes, so a change is visible as a
//! diff and an unchanged host is never reloaded.
//!
//! Layout: one frontend per public port, bound on the host's publish
//! address; the domains on a frontend on a unix socket in the ingress
//! volume, which the HTTPS front (Caddy) forwards to, or with
//! `tls = "off"` on the ingress' HTTP port; one backend per exposed
//! service. A request picks its route in order of increasing prefix length,
//! each match overwriting the last, so the longest prefix wins; a request
//! no route takes gets 404 from the ingress, never another app's content.
//!
//! Why these settings: `master-worker` with a reload by signal hands the
//! listening sockets to the new worker (no refused connection), and
//! `idle-close-on-response` keeps the old worker's idle keep-alive
//! connections open until their next response carries `Connection: close`
//! (a client that does not retry sees no failure). `hard-stop-after` bounds
//! how long an old worker finishes in-flight requests: the drain. An
//! instance that dies is taken out at the first connection that fails
//! (`observe layer4`), the request retried on another (`retry-on`,
//! `redispatch`), and the health checks bring it back.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::routes::{AppRoutes, HostRoutes, ServiceRoutes};
use super::{IngressSettings, TlsMode, INTERNAL_SOCKET};

/// The unprivileged user and group the workers run as (`nobody`).
const WORKER_ID: u32 = 65534;

/// One way into a frontend: an optional host name and a path prefix.
struct Route<'a> {
    domain: Option<&'a str>,
    prefix: &'a str,
    backend: String,
    strip: bool,
}

/// The first line of every configuration Berth writes: the routes and the
/// settings it was rendered from, as one line of JSON. One file holds
/// them all, so that a reader never sees routes and configuration from
/// two different writes.
const ROUTES_HEADER: &str = "# berth-routes v1 ";

/// What the first line holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    settings: IngressSettings,
    routes: HostRoutes,
}

/// The routes and settings a configuration was rendered from (its first
/// line); `None` when it has no readable routes line (not Berth's).
pub fn routes_in(cfg: &str) -> Option<(HostRoutes, IngressSettings)> {
    let line = cfg.lines().next()?.strip_prefix(ROUTES_HEADER)?;
    let header: Header = serde_json::from_str(line).ok()?;
    Some((header.routes, header.settings))
}

/// The whole configuration file for a host. `listen` is the host's
/// publish address (where public ports and, with `tls = "off"`, the HTTP
/// port are bound).
pub fn render(routes: &HostRoutes, settings: &IngressSettings, listen: &str) -> String {
    let mut out = String::new();
    let header = Header {
        settings: settings.clone(),
        routes: routes.clone(),
    };
    let _ = writeln!(
        out,
        "{ROUTES_HEADER}{}",
        serde_json::to_string(&header).unwrap_or_else(|_| "{}".into())
    );
    let drain = routes
        .values()
        .map(|a| a.drain_seconds())
        .max()
        .unwrap_or(0)
        .max(1);
    let _ = write!(
        out,
        "# Written by Berth: every change is overwritten by the next `terraform apply` or\n\
         # `berth apply`. Rendered from the routes on the first line (one entry per app).\n\
         global\n\
         \x20 master-worker\n\
         \x20 uid {WORKER_ID}\n\
         \x20 gid {WORKER_ID}\n\
         \x20 hard-stop-after {drain}s\n\
         \x20 log stdout format raw local0 notice\n\
         \n\
         defaults\n\
         \x20 mode http\n\
         \x20 log global\n\
         \x20 option idle-close-on-response\n\
         \x20 option http-keep-alive\n\
         \x20 option redispatch 1\n\
         \x20 retries 2\n\
         \x20 retry-on conn-failure empty-response\n\
         \x20 timeout connect 1s\n\
         \x20 timeout client 60s\n\
         \x20 timeout server 300s\n\
         \x20 timeout http-request 30s\n\
         \x20 timeout http-keep-alive 10s\n\
         \x20 timeout queue 30s\n\
         \x20 timeout tunnel 1h\n\
         \x20 default-server check inter 1s fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down\n"
    );

    // Public ports.
    let mut ports: BTreeMap<u16, Vec<Route>> = BTreeMap::new();
    // Domains (all on one frontend: the internal socket, or the HTTP port).
    let mut domains: Vec<Route> = Vec::new();
    let mut backends: Vec<(String, &ServiceRoutes)> = Vec::new();
    for (app, app_routes) in routes {
        for (service, s) in &app_routes.services {
            if s.servers.is_empty() {
                continue;
            }
            let backend = backend_name(app, service);
            let prefixes: Vec<&str> = if s.exposure.routes.is_empty() {
                vec!["/"]
            } else {
                s.exposure.routes.iter().map(String::as_str).collect()
            };
            for prefix in &prefixes {
                if let Some(port) = s.exposure.public_port {
                    ports.entry(port).or_default().push(Route {
                        domain: None,
                        prefix,
                        backend: backend.clone(),
                        strip: s.exposure.strip_prefix,
                    });
                }
                for domain in &s.exposure.domains {
                    domains.push(Route {
                        domain: Some(domain),
                        prefix,
                        backend: backend.clone(),
                        strip: s.exposure.strip_prefix,
                    });
                }
            }
            backends.push((backend, s));
        }
    }

    let domain_frontend_on_http_port = settings.tls == TlsMode::Off && settings.http_port != 0;
    // The internal frontend always exists: HAProxy needs a proxy to start,
    // and the HTTPS front forwards every request for a domain to it.
    let _ = write!(
        out,
        "\nfrontend internal\n\
         \x20 bind unix@{INTERNAL_SOCKET} mode 666\n"
    );
    write_routes(
        &mut out,
        if domain_frontend_on_http_port {
            &[]
        } else {
            &domains
        },
    );
    if domain_frontend_on_http_port && !domains.is_empty() {
        let _ = write!(
            out,
            "\nfrontend http\n\
             \x20 bind {}\n\
             \x20 option forwardfor\n\
             \x20 http-request set-header X-Forwarded-Proto http\n",
            bind_address(listen, settings.http_port)
        );
        write_routes(&mut out, &domains);
    }
    for (port, port_routes) in &ports {
        let _ = write!(
            out,
            "\nfrontend port_{port}\n\
             \x20 bind {}\n\
             \x20 option forwardfor\n\
             \x20 http-request set-header X-Forwarded-Proto http\n",
            bind_address(listen, *port)
        );
        write_routes(&mut out, port_routes);
    }
    for (backend, s) in &backends {
        let _ = write!(
            out,
            "\nbackend {backend}\n\
             \x20 balance roundrobin\n\
             \x20 option httpchk\n\
             \x20 http-check send meth GET uri {} ver HTTP/1.1 hdr Host berth-ingress\n\
             \x20 http-check expect status 200-399\n",
            s.exposure.health_path
        );
        for server in &s.servers {
            let _ = writeln!(out, "  server {} {}", server.name, server.address);
        }
    }
    out
}

/// The parts of a configuration that concern `app` (its backends, the
/// frontends of its public ports, and the domain frontends when it has
/// domains), in order: what its drift is judged on, so that one app's
/// plan never reports another app's changes on a shared ingress.
pub fn app_sections(cfg: &str, app: &str, routes: &AppRoutes) -> Vec<String> {
    let mut wanted: Vec<String> = vec![format!("backend be_{app}_")];
    for s in routes.services.values() {
        if let Some(port) = s.exposure.public_port {
            wanted.push(format!("frontend port_{port}\n"));
        }
        if !s.exposure.domains.is_empty() {
            wanted.push("frontend internal\n".to_owned());
            wanted.push("frontend http\n".to_owned());
        }
    }
    let mut sections: Vec<String> = Vec::new();
    for line in cfg.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            sections.push(String::new());
        }
        if let Some(last) = sections.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    sections
        .into_iter()
        .filter(|s| wanted.iter().any(|w| s.starts_with(w.as_str())))
        .collect()
}

/// The backend of one service: `_` never appears in app or service names.
pub fn backend_name(app: &str, service: &str) -> String {
    format!("be_{app}_{service}")
}

/// `bind` argument for `port` on `listen` (`[::1]:80` for IPv6; all
/// addresses for `0.0.0.0`/`::`).
fn bind_address(listen: &str, port: u16) -> String {
    match listen {
        "0.0.0.0" => format!("0.0.0.0:{port}"),
        "::" => format!(":::{port} v4v6"),
        l if l.contains(':') => format!("[{l}]:{port}"),
        l => format!("{l}:{port}"),
    }
}

/// The route rules of one frontend, then the 404 for everything else.
fn write_routes(out: &mut String, routes: &[Route]) {
    let mut ordered: Vec<&Route> = routes.iter().collect();
    // Shorter prefixes first: a later match overwrites an earlier one, so
    // the longest prefix wins. Ties in a stable order.
    ordered.sort_by(|a, b| {
        (a.prefix.len(), a.domain, a.prefix, &a.backend).cmp(&(
            b.prefix.len(),
            b.domain,
            b.prefix,
            &b.backend,
        ))
    });
    if ordered.iter().any(|r| r.domain.is_some()) {
        let _ = writeln!(
            out,
            "  http-request set-var(txn.berth_host) req.hdr(host),field(1,:),lower"
        );
    }
    for (i, route) in ordered.iter().enumerate() {
        let host = route
            .domain
            .map(|d| format!(" {{ var(txn.berth_host) -m str {d} }}"))
            .unwrap_or_default();
        let condition = if route.prefix == "/" {
            if host.is_empty() {
                String::new()
            } else {
                format!(" if{host}")
            }
        } else {
            format!(
                " if{host} {{ path -m str {p} }} ||{host} {{ path -m beg {p}/ }}",
                p = route.prefix
            )
        };
        let _ = writeln!(
            out,
            "  http-request set-var(txn.berth_route) str(r{i}){condition}"
        );
    }
    for (i, route) in ordered.iter().enumerate() {
        if route.strip && route.prefix != "/" {
            let _ = writeln!(
                out,
                "  http-request replace-path ^{}/?(.*)$ /\\1 if {{ var(txn.berth_route) -m str r{i} }}",
                regex_escape(route.prefix)
            );
        }
    }
    let _ = writeln!(
        out,
        "  http-request return status 404 content-type text/plain string \"no app is served here\" if !{{ var(txn.berth_route) -m found }}"
    );
    for (i, route) in ordered.iter().enumerate() {
        let _ = writeln!(
            out,
            "  use_backend {} if {{ var(txn.berth_route) -m str r{i} }}",
            route.backend
        );
    }
}

/// Escapes the regex characters a route prefix may hold (`.` mostly).
fn regex_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if !(c.is_ascii_alphanumeric() || c == '/' || c == '-' || c == '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::routes::{AppRoutes, Exposure, Server};

    fn service(
        port: Option<u16>,
        domains: &[&str],
        routes: &[&str],
        servers: &[&str],
    ) -> ServiceRoutes {
        ServiceRoutes {
            exposure: Exposure {
                public_port: port,
                domains: domains.iter().map(|d| d.to_string()).collect(),
                routes: routes.iter().map(|r| r.to_string()).collect(),
                strip_prefix: routes.contains(&"/api"),
                drain_seconds: 7,
                health_path: "/healthz".into(),
                http_port: 8080,
            },
            servers: servers
                .iter()
                .map(|s| Server {
                    name: format!("shop-{s}"),
                    address: format!("10.9.0.{}:8080", 130 + s.len()),
                })
                .collect(),
        }
    }

    fn shop() -> HostRoutes {
        HostRoutes::from([(
            "shop".to_string(),
            AppRoutes {
                app: "shop".into(),
                services: BTreeMap::from([
                    (
                        "web".to_string(),
                        service(Some(18080), &["shop.example"], &["/"], &["web-0"]),
                    ),
                    (
                        "api".to_string(),
                        service(None, &["shop.example"], &["/api"], &["api-00"]),
                    ),
                    ("idle".to_string(), service(Some(18081), &[], &["/"], &[])),
                ]),
            },
        )])
    }

    #[test]
    fn ports_domains_and_backends() {
        let cfg = render(&shop(), &IngressSettings::default(), "127.0.0.1");
        assert!(cfg.contains("hard-stop-after 7s"), "{cfg}");
        assert!(
            cfg.contains("frontend port_18080\n  bind 127.0.0.1:18080\n"),
            "{cfg}"
        );
        // A service with no instance on this host has no listener.
        assert!(!cfg.contains("frontend port_18081"), "{cfg}");
        assert!(cfg.contains("backend be_shop_web\n"), "{cfg}");
        assert!(
            cfg.contains("  server shop-web-0 10.9.0.135:8080\n"),
            "{cfg}"
        );
        assert!(
            cfg.contains("http-check send meth GET uri /healthz"),
            "{cfg}"
        );
        // Domains live on the internal frontend (behind the HTTPS front).
        let internal =
            &cfg[cfg.find("frontend internal").unwrap()..cfg.find("frontend port_18080").unwrap()];
        assert!(internal.contains("-m str shop.example"), "{internal}");
        assert!(!cfg.contains("frontend http\n"), "{cfg}");
    }

    #[test]
    fn the_longest_prefix_is_matched_last_and_stripped() {
        let cfg = render(&shop(), &IngressSettings::default(), "127.0.0.1");
        let internal =
            &cfg[cfg.find("frontend internal").unwrap()..cfg.find("frontend port_18080").unwrap()];
        let web = internal
            .find("str(r0) if { var(txn.berth_host) -m str shop.example }\n")
            .unwrap();
        let api = internal.find("str(r1) if { var(txn.berth_host) -m str shop.example } { path -m str /api } || { var(txn.berth_host) -m str shop.example } { path -m beg /api/ }").unwrap();
        assert!(web < api, "{internal}");
        assert!(
            internal
                .contains("replace-path ^/api/?(.*)$ /\\1 if { var(txn.berth_route) -m str r1 }"),
            "{internal}"
        );
        assert!(
            internal.contains("use_backend be_shop_api if { var(txn.berth_route) -m str r1 }"),
            "{internal}"
        );
        let not_found = internal.find("return status 404").unwrap();
        assert!(
            not_found < internal.find("use_backend").unwrap(),
            "{internal}"
        );
    }

    #[test]
    fn plain_http_domains_bind_the_http_port() {
        let settings = IngressSettings {
            tls: TlsMode::Off,
            http_port: 18090,
            ..IngressSettings::default()
        };
        let cfg = render(&shop(), &settings, "127.0.0.2");
        assert!(
            cfg.contains("frontend http\n  bind 127.0.0.2:18090\n"),
            "{cfg}"
        );
        let internal =
            &cfg[cfg.find("frontend internal").unwrap()..cfg.find("frontend http\n").unwrap()];
        assert!(!internal.contains("shop.example"), "{internal}");
    }

    #[test]
    fn an_apps_sections_are_its_own() {
        let routes = shop();
        let cfg = render(&routes, &IngressSettings::default(), "127.0.0.1");
        let sections = app_sections(&cfg, "shop", &routes["shop"]);
        let heads: Vec<&str> = sections.iter().map(|s| s.lines().next().unwrap()).collect();
        assert_eq!(
            heads,
            vec![
                "frontend internal",
                "frontend port_18080",
                "backend be_shop_api",
                "backend be_shop_web"
            ]
        );
        assert!(app_sections(&cfg, "blog", &AppRoutes::default()).is_empty());
    }

    #[test]
    fn the_routes_travel_in_the_first_line() {
        let cfg = render(&shop(), &IngressSettings::default(), "127.0.0.1");
        assert_eq!(routes_in(&cfg), Some((shop(), IngressSettings::default())));
        assert_eq!(routes_in("global\n  daemon\n"), None);
        assert_eq!(routes_in("# berth-routes v1 {not json\n"), None);
    }

    #[test]
    fn rendering_is_stable_and_empty_hosts_still_have_a_proxy() {
        let settings = IngressSettings::default();
        assert_eq!(
            render(&shop(), &settings, "127.0.0.1"),
            render(&shop(), &settings, "127.0.0.1")
        );
        let empty = render(&HostRoutes::new(), &settings, "0.0.0.0");
        assert!(empty.contains("frontend internal"), "{empty}");
        assert!(empty.contains("hard-stop-after 1s"), "{empty}");
        assert_eq!(bind_address("::", 80), ":::80 v4v6");
        assert_eq!(bind_address("::1", 80), "[::1]:80");
        assert_eq!(regex_escape("/v1.2"), "/v1\\.2");
    }
}
