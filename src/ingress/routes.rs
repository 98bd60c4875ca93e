//! What a host's ingress routes, as data. Pure.
//!
//! Each app that exposes services on a host owns one [`AppRoutes`] there
//! (kept in the ingress's volume as `apps/APP.json`); the host's ingress
//! configuration is rendered from all of them ([`HostRoutes`]). An app's
//! part lists, per service, how it is reached (`public_port`, `domains`,
//! path `routes`) and the instances it is sent to (`servers`): switching
//! traffic to a new release is writing a new `AppRoutes` with the new
//! instances and reloading the proxy.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{IngressSettings, TlsMode};

/// How one service is reached through the ingress, from its spec
/// (the same on every host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    /// The service answers on this port of each host's publish address.
    pub public_port: Option<u16>,
    /// Host names it answers for on the ingress' HTTP(S) ports.
    pub domains: Vec<String>,
    /// Path prefixes routed to it (`/` when none given).
    pub routes: Vec<String>,
    /// Whether the matched prefix is removed before the request reaches
    /// the service.
    pub strip_prefix: bool,
    /// How long in-flight requests to an old instance may run after
    /// traffic has moved.
    pub drain_seconds: u32,
    /// The service's health-check path (the proxy's own checks use it).
    pub health_path: String,
    /// The port the instances listen on.
    pub http_port: u16,
}

impl Exposure {
    /// Whether the service is exposed through the ingress at all.
    pub fn is_exposed(&self) -> bool {
        self.public_port.is_some() || !self.domains.is_empty()
    }
}

/// One instance the ingress sends a service's requests to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Server {
    /// The container's name (unique on the host).
    pub name: String,
    /// `ip:port` on Berth's network.
    pub address: String,
}

/// One service's routes on one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRoutes {
    #[serde(flatten)]
    pub exposure: Exposure,
    /// The instances on this host, sorted by name.
    pub servers: Vec<Server>,
}

/// One app's part of a host's ingress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRoutes {
    pub app: String,
    /// Exposed services with at least one instance on this host.
    pub services: BTreeMap<String, ServiceRoutes>,
}

impl AppRoutes {
    /// Sends `service`'s requests to `servers` (kept sorted by name); a
    /// service without any is left out.
    pub fn route(&mut self, service: &str, exposure: &Exposure, mut servers: Vec<Server>) {
        if servers.is_empty() {
            return;
        }
        servers.sort();
        self.services.insert(
            service.to_owned(),
            ServiceRoutes {
                exposure: exposure.clone(),
                servers,
            },
        );
    }

    /// The most any of the app's services lets old requests drain.
    pub fn drain_seconds(&self) -> u32 {
        self.services
            .values()
            .map(|s| s.exposure.drain_seconds)
            .max()
            .unwrap_or(0)
    }

    /// The same routes with other servers; for comparing what a switch
    /// changes besides the instances.
    pub fn without_servers(&self) -> AppRoutes {
        let mut out = self.clone();
        for s in out.services.values_mut() {
            s.servers.clear();
        }
        out
    }
}

/// Every app's routes on one host, by app name.
pub type HostRoutes = BTreeMap<String, AppRoutes>;

/// Why an app cannot have the routes it asks for on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The service asking.
    pub service: String,
    /// `public_port` or `domains`.
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "services[{:?}].{}: {}",
            self.service, self.field, self.message
        )
    }
}

/// What `candidate` (app `app`'s exposed services) asks for that another
/// app on host `host` already has.
pub fn conflicts(
    host: &str,
    others: &HostRoutes,
    candidate: &BTreeMap<String, Exposure>,
    app: &str,
) -> Vec<Conflict> {
    let mut out = Vec::new();
    for (service, exposure) in candidate {
        if let Some(port) = exposure.public_port {
            for (other_app, routes) in others.iter().filter(|(name, _)| *name != app) {
                if let Some((other_service, _)) = routes
                    .services
                    .iter()
                    .find(|(_, s)| s.exposure.public_port == Some(port))
                {
                    out.push(Conflict {
                        service: service.clone(),
                        field: "public_port",
                        message: format!(
                            "port {port} on host {host} is taken by service {other_service:?} of app {other_app:?}; pick another port, or remove it there first"
                        ),
                    });
                }
            }
        }
        for domain in &exposure.domains {
            for (other_app, routes) in others.iter().filter(|(name, _)| *name != app) {
                if let Some((other_service, _)) = routes
                    .services
                    .iter()
                    .find(|(_, s)| s.exposure.domains.contains(domain))
                {
                    out.push(Conflict {
                        service: service.clone(),
                        field: "domains",
                        message: format!(
                            "{domain:?} on host {host} is claimed by service {other_service:?} of app {other_app:?}; a name belongs to one app"
                        ),
                    });
                }
            }
        }
    }
    out
}

/// What the ingress settings make impossible for `exposures`: a public port
/// equal to the ingress' own HTTP or HTTPS port, and domains with no port
/// to be served on (`tls = "off"` with `http_port = 0`).
pub fn setting_conflicts(
    exposures: &BTreeMap<String, Exposure>,
    settings: &IngressSettings,
) -> Vec<Conflict> {
    let mut out = Vec::new();
    for (service, exposure) in exposures {
        if let Some(port) = exposure.public_port {
            let own = [
                (settings.http_port, "http_port"),
                (settings.https_port, "https_port"),
            ];
            let domains_in_use = settings.tls != TlsMode::Off || settings.http_port != 0;
            for (ingress_port, name) in own {
                if port == ingress_port && ingress_port != 0 && domains_in_use {
                    out.push(Conflict {
                        service: service.clone(),
                        field: "public_port",
                        message: format!(
                            "{port} is the ingress' own {name} (where domains are served); pick another port, or change the ingress' {name}"
                        ),
                    });
                }
            }
        }
        if !exposure.domains.is_empty() && settings.tls == TlsMode::Off && settings.http_port == 0 {
            out.push(Conflict {
                service: service.clone(),
                field: "domains",
                message: "with the ingress' tls = \"off\" domains are served over plain HTTP on http_port, but http_port is 0 (none): set the ingress' http_port, or tls = \"acme\" or \"internal\"".into(),
            });
        }
    }
    out
}

/// The URLs a service answers on; `hosts` are the addresses (as used in a
/// URL) of the hosts that run at least one of its instances.
pub fn urls(exposure: &Exposure, hosts: &[String], settings: &IngressSettings) -> Vec<String> {
    let prefix = exposure
        .routes
        .iter()
        .find(|r| r.as_str() != "/")
        .filter(|_| !exposure.routes.iter().any(|r| r == "/"))
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    if let Some(port) = exposure.public_port {
        for host in hosts {
            out.push(format!("http://{}{prefix}", join_host_port(host, port)));
        }
    }
    for domain in &exposure.domains {
        let url = match settings.tls {
            TlsMode::Off => match settings.http_port {
                80 => format!("http://{domain}{prefix}"),
                p => format!("http://{domain}:{p}{prefix}"),
            },
            TlsMode::Acme | TlsMode::Internal => match settings.https_port {
                443 => format!("https://{domain}{prefix}"),
                p => format!("https://{domain}:{p}{prefix}"),
            },
        };
        out.push(url);
    }
    out.sort();
    out.dedup();
    out
}

/// `host:port`, with brackets for an IPv6 address.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn exposure(port: Option<u16>, domains: &[&str], routes: &[&str]) -> Exposure {
        Exposure {
            public_port: port,
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes: routes.iter().map(|r| r.to_string()).collect(),
            strip_prefix: false,
            drain_seconds: 30,
            health_path: "/".into(),
            http_port: 8080,
        }
    }

    fn app(name: &str, services: &[(&str, Exposure)]) -> AppRoutes {
        AppRoutes {
            app: name.into(),
            services: services
                .iter()
                .map(|(s, e)| {
                    (
                        s.to_string(),
                        ServiceRoutes {
                            exposure: e.clone(),
                            servers: vec![],
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn another_apps_port_or_domain_is_a_conflict() {
        let others = HostRoutes::from([(
            "shop".to_string(),
            app(
                "shop",
                &[("web", exposure(Some(18080), &["shop.example"], &["/"]))],
            ),
        )]);
        let wants = BTreeMap::from([
            ("web".to_string(), exposure(Some(18080), &[], &["/"])),
            (
                "api".to_string(),
                exposure(None, &["shop.example"], &["/api"]),
            ),
        ]);
        let found = conflicts("local", &others, &wants, "blog");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].field, "domains");
        assert!(
            found[1].message.contains("port 18080 on host local"),
            "{}",
            found[1]
        );
        // The same app redeploying is not a conflict with itself.
        assert!(conflicts("local", &others, &wants, "shop").is_empty());
    }

    #[test]
    fn the_ingress_own_ports_are_not_public_ports() {
        let settings = IngressSettings::default();
        let wants = BTreeMap::from([("web".to_string(), exposure(Some(443), &[], &["/"]))]);
        let found = setting_conflicts(&wants, &settings);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("https_port"), "{}", found[0]);
        let off = IngressSettings {
            tls: TlsMode::Off,
            http_port: 0,
            ..IngressSettings::default()
        };
        let domains = BTreeMap::from([("web".to_string(), exposure(None, &["a.example"], &["/"]))]);
        let found = setting_conflicts(&domains, &off);
        assert_eq!(found[0].field, "domains");
    }

    #[test]
    fn urls_per_host_and_domain() {
        let mut settings = IngressSettings::default();
        let e = exposure(Some(18080), &["a.example"], &["/"]);
        let hosts = vec!["127.0.0.1".to_string(), "::1".to_string()];
        assert_eq!(
            urls(&e, &hosts, &settings),
            vec![
                "http://127.0.0.1:18080",
                "http://[::1]:18080",
                "https://a.example"
            ]
        );
        settings.https_port = 18443;
        let api = exposure(None, &["a.example"], &["/api"]);
        assert_eq!(
            urls(&api, &hosts, &settings),
            vec!["https://a.example:18443/api"]
        );
        settings.tls = TlsMode::Off;
        assert_eq!(urls(&api, &hosts, &settings), vec!["http://a.example/api"]);
    }
}
