//! The `provider "berth"` block: its schema and its parsed form. Settings
//! for features that land later (hooks) are accepted and documented as
//! coming, so configurations written today keep working.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::diag::{AttributePath, Diagnostic, Diagnostics};
use super::schema::{Attribute, Nesting, Schema, Type};
use super::value::Value;
use crate::docker::{HostMode, TlsFiles, TlsPart};
use crate::ingress::{IngressSettings, TlsMode};
use crate::registry::Secret;

/// One Docker host as configured (`hosts["NAME"]`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostConfig {
    pub address: String,
    pub publish_address: Option<String>,
    /// `ca_pem`, `cert_pem`, `key_pem`: all three, for `tcp://` only.
    pub tls: Option<TlsFiles>,
    pub mode: HostMode,
}

/// The TLS attributes of a host, by the part of the material they hold.
const TLS_ATTRIBUTES: [(&str, TlsPart); 3] = [
    ("ca_pem", TlsPart::Ca),
    ("cert_pem", TlsPart::Cert),
    ("key_pem", TlsPart::Key),
];

/// The parsed provider configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProviderConfig {
    pub state_dir: Option<PathBuf>,
    /// The `store` URL, parsed (its password never shown).
    pub store: Option<crate::store::StoreLocation>,
    pub insecure_registries: Vec<String>,
    pub hooks_url: Option<String>,
    pub hosts: BTreeMap<String, HostConfig>,
    /// The `ingress` block, defaults filled in.
    pub ingress: IngressSettings,
}

pub fn schema() -> Schema {
    Schema::new(
        "Configures where Berth keeps its records and how it reaches registries and Docker hosts. Every setting is optional: with an empty `provider \"berth\" {}` block Berth talks to registries directly (plain HTTP only for registries on loopback) and to the local Docker.",
        vec![
            Attribute::string("state_dir").optional().describe(
                "Directory for Berth's local state: the default store (`berth.db`: registry credentials, deploy hooks, releases) and its key file `secret.key`. Defaults to `$BERTH_STATE_DIR`, else `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`.",
            ),
            Attribute::string("store").optional().sensitive().describe(
                "Where Berth keeps its records: `sqlite:///PATH/berth.db` (the default is `berth.db` in the state directory), or a PostgreSQL database shared by every runner of a team: `postgres://USER@HOST:5432/DATABASE?sslmode=verify-full&sslrootcert=/PATH/ca.pem`, libpq's URL form (`sslmode` `disable`, `prefer` (the default), `require`, `verify-ca` or `verify-full`; `sslrootcert`, `sslcert` and `sslkey` name PEM files; `application_name`, `connect_timeout` in seconds). The password comes from the URL, else `PGPASSWORD`, else the password file (`passfile`, `PGPASSFILE`, `~/.pgpass`); it is never logged. Defaults to `$BERTH_STORE`. With PostgreSQL, set `BERTH_SECRET_KEY` to the same key on every runner and `berth serve`: secrets are sealed with it before they reach the database.",
            ),
            Attribute::typed("insecure_registries", Type::list(Type::String))
                .optional()
                .describe(
                    "Registries, as `host` or `host:port`, to reach over plain HTTP instead of HTTPS. Registries on loopback (`localhost`, `127.0.0.0/8`, `[::1]`) always use plain HTTP, as Docker does; list any other registry here only if it really has no TLS.",
                ),
            Attribute::string("hooks_url").optional().describe(
                "Base URL where `berth serve` is reachable, the default `base_url` of `berth_deploy_hook` resources, e.g. `https://deploy.example.com`.",
            ),
            Attribute::nested(
                "hosts",
                Nesting::Map,
                vec![
                    Attribute::string("address").required().describe(
                        "How to reach the Docker Engine: `unix:///var/run/docker.sock` (a socket on the machine running Terraform); `tcp://HOST:PORT`, in plain HTTP, or with TLS when `ca_pem`, `cert_pem` and `key_pem` are set (the port defaults to 2376 with TLS, 2375 without); or `ssh://USER@HOST`, which runs `ssh USER@HOST docker system dial-stdio` with the keys, agent, `known_hosts` and `~/.ssh/config` of the user running Terraform (it must work without a prompt). Over SSH only port 22 can be given: for another port, or an IPv6 address, add a `Host` alias to `~/.ssh/config` and use `ssh://USER@ALIAS`.",
                    ),
                    Attribute::string("mode").optional().describe(
                        "How apps run on this host: `\"containers\"` (the default: Berth places each instance as a container, switches traffic through its ingress and stops the old ones) or `\"swarm\"`: the host is a Docker Swarm manager, and each service and worker of an app becomes a Swarm service (`instances` as replicas, the image pinned by the linux/amd64 digest the plan showed, placement on linux/amd64 nodes) that Swarm places and rolls (start-first, one task at a time, rollback on failure) while Berth watches it converge within a deadline and rolls back itself, with the failing tasks' errors, when it does not. A Swarm host must be the provider's only host. `public_port` and `domains` are served by Berth's ingress on the manager, which follows each slot from the old task to the new one (tasks publish their `http_port` in host mode on an ephemeral port of their node; a new task of an exposed service is held 3 s before Swarm may call it healthy, so its slot's requests move to it before the old task stops); inside the cluster, services reach each other at `web.APP` on the `berth-swarm` overlay network.",
                    ),
                    Attribute::string("publish_address").optional().describe(
                        "Address on that host where app instances publish their ports. Defaults to `127.0.0.1`. Hosts that are daemons on the same machine need different addresses (e.g. `127.0.0.1` and `127.0.0.2`): each daemon picks free ports on its own, blind to the other's.",
                    ),
                    Attribute::string("ca_pem").optional().describe(
                        "For a `tcp://` host with TLS (the daemon runs with `--tlsverify`): the PEM certificate of the CA that signed the daemon's certificate, like Docker's `ca.pem`. The daemon's certificate must be issued for the host name or IP address in `address`. Set `ca_pem`, `cert_pem` and `key_pem` together.",
                    ),
                    Attribute::string("cert_pem").optional().describe(
                        "For a `tcp://` host with TLS: Berth's client certificate in PEM, like Docker's `cert.pem`, signed by a CA the daemon trusts (its `--tlscacert`).",
                    ),
                    Attribute::string("key_pem").optional().sensitive().describe(
                        "For a `tcp://` host with TLS: the private key of `cert_pem` in PEM (PKCS#8, RSA or EC), like Docker's `key.pem`. While Terraform runs the provider, the three PEM blocks are kept in a private temporary directory (mode 0700, files 0600) that is removed when the provider exits.",
                    ),
                ],
            )
            .optional()
            .describe(
                "Docker hosts that apps deploy to, by name; a `berth_app` spreads its instances over them (instance `i` on the `i`-th host in name order). Defaults to one host called `local` at `$DOCKER_HOST` or the local socket.",
            ),
            Attribute::nested(
                "ingress",
                Nesting::Single,
                vec![
                    Attribute::string("image").optional().describe(format!(
                        "The proxy's image: HAProxy 2.6 or later (it binds the public ports and switches traffic between releases). A tag is resolved to its linux/amd64 digest once, when the proxy is created, and the proxy keeps that digest until this setting changes (changing it restarts the ingress on every host: a brief interruption). Defaults to `{}`; on hosts without internet access, give an image from a registry they reach.",
                        crate::ingress::DEFAULT_IMAGE
                    )),
                    Attribute::string("tls_image").optional().describe(format!(
                        "The HTTPS front's image: Caddy 2.6 or later, which obtains the certificates of `domains` and terminates TLS. It runs only on hosts that serve `domains` with `tls` other than `\"off\"`. Defaults to `{}`.",
                        crate::ingress::DEFAULT_TLS_IMAGE
                    )),
                    Attribute::number("http_port").optional().describe(
                        "Port for plain HTTP to `domains` on each host's publish address: redirects to HTTPS (and answers ACME challenges), or serves the domains when `tls` is `\"off\"`. `0` for none. Defaults to `80`.",
                    ),
                    Attribute::number("https_port").optional().describe(
                        "Port for HTTPS to `domains` on each host's publish address. Defaults to `443`.",
                    ),
                    Attribute::string("tls").optional().describe(
                        "How `domains` get certificates: `\"acme\"` (default) from Let's Encrypt, automatically, which needs the names to point at the hosts and the HTTP and HTTPS ports reachable from the internet; `\"internal\"` from a local CA of the ingress (for tests and private networks: clients must trust its root, `/data/caddy/pki/authorities/local/root.crt` in the `berth-ingress-tls` container); `\"off\"` for plain HTTP on `http_port`.",
                    ),
                    Attribute::string("acme_email").optional().describe(
                        "Contact address given to the ACME CA (expiry notices).",
                    ),
                ],
            )
            .optional()
            .describe(
                "The ingress: on every host that runs a service with `public_port` or `domains`, Berth runs a proxy (container `berth-ingress`, in the host's network namespace) that gives each service a stable address whatever the release, and switches traffic to new releases with no failed request.",
            ),
        ],
    )
}

impl ProviderConfig {
    /// Parses and checks the block. Unknown values (not yet known at plan
    /// time) count as unset.
    pub fn from_value(v: &Value) -> Result<ProviderConfig, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut cfg = ProviderConfig {
            state_dir: v.get("state_dir").as_str().map(PathBuf::from),
            ..ProviderConfig::default()
        };
        if let Some(url) = v.get("store").as_str() {
            match crate::store::StoreLocation::parse(url, None, &crate::store::process_env) {
                Ok(location) => cfg.store = Some(location),
                Err(e) => diags.push(
                    Diagnostic::error("Invalid store URL", e.to_string())
                        .at(AttributePath::root("store")),
                ),
            }
        }
        if let Some(items) = v.get("insecure_registries").as_elements() {
            for (i, item) in items.iter().enumerate() {
                let Some(s) = item.as_str() else { continue };
                match check_registry_host(s) {
                    Ok(()) => cfg.insecure_registries.push(s.to_string()),
                    Err(why) => diags.push(
                        Diagnostic::error(
                            "Invalid insecure registry",
                            format!("{s:?} {why}. Write the registry as `host` or `host:port`, e.g. `registry.internal:5000`, without `http://` or a path."),
                        )
                        .at(AttributePath::root("insecure_registries").index(i as i64)),
                    ),
                }
            }
        }
        if let Some(url) = v.get("hooks_url").as_str() {
            if url.starts_with("http://") || url.starts_with("https://") {
                cfg.hooks_url = Some(url.trim_end_matches('/').to_string());
            } else {
                diags.push(
                    Diagnostic::error(
                        "Invalid hooks URL",
                        format!("{url:?} is not an http:// or https:// URL. Give the base URL where `berth serve` is reachable, e.g. `https://deploy.example.com`."),
                    )
                    .at(AttributePath::root("hooks_url")),
                );
            }
        }
        if let Some(hosts) = v.get("hosts").as_entries() {
            for (name, host) in hosts {
                let Some(address) = host.get("address").as_str() else {
                    continue;
                };
                let scheme_ok = ["unix://", "tcp://", "ssh://"]
                    .iter()
                    .any(|p| address.starts_with(p));
                if !scheme_ok {
                    diags.push(
                        Diagnostic::error(
                            "Invalid Docker host address",
                            format!("Host {name:?} has address {address:?}. Use `unix:///var/run/docker.sock`, `tcp://HOST:PORT` or `ssh://USER@HOST`."),
                        )
                        .at(AttributePath::root("hosts").key(name).attr("address")),
                    );
                    continue;
                }
                let tls = match host_tls(name, address, host) {
                    Ok(tls) => tls,
                    Err(mut errs) => {
                        diags.0.append(&mut errs.0);
                        continue;
                    }
                };
                let mode = match host.get("mode").as_str() {
                    None => HostMode::Containers,
                    Some(m) => match HostMode::parse(m) {
                        Some(mode) => mode,
                        None => {
                            diags.push(
                                Diagnostic::error(
                                    "Invalid host mode",
                                    format!("Host {name:?} has mode {m:?}. Use \"containers\" (the default) or \"swarm\" (the host is a Swarm manager)."),
                                )
                                .at(AttributePath::root("hosts").key(name).attr("mode")),
                            );
                            continue;
                        }
                    },
                };
                cfg.hosts.insert(
                    name.clone(),
                    HostConfig {
                        address: address.to_string(),
                        publish_address: host.get("publish_address").as_str().map(String::from),
                        tls,
                        mode,
                    },
                );
            }
        }
        if cfg.hosts.len() > 1 {
            if let Some(name) = cfg
                .hosts
                .iter()
                .find(|(_, h)| h.mode == HostMode::Swarm)
                .map(|(n, _)| n.clone())
            {
                diags.push(
                    Diagnostic::error(
                        "A Swarm host must be the only host",
                        format!("Host {name:?} is a Swarm manager (mode = \"swarm\"): Swarm places every task of the cluster, so it must be the provider's only host. Configure plain Docker hosts in another `provider \"berth\"` block with an `alias`."),
                    )
                    .at(AttributePath::root("hosts").key(&name).attr("mode")),
                );
            }
        }
        match ingress_settings(v.get("ingress")) {
            Ok(ingress) => cfg.ingress = ingress,
            Err(mut errs) => diags.0.append(&mut errs.0),
        }
        if diags.has_errors() {
            Err(diags)
        } else {
            Ok(cfg)
        }
    }
}

/// The `ingress` block, checked; defaults for what it leaves unset (or
/// does not know yet).
fn ingress_settings(block: &Value) -> Result<IngressSettings, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut settings = IngressSettings::default();
    let path = |attr: &str| AttributePath::root("ingress").attr(attr);
    if block.is_null() || block.is_unknown() {
        return Ok(settings);
    }
    if let Some(image) = block.get("image").as_str() {
        settings.image = image.to_owned();
    }
    if let Some(image) = block.get("tls_image").as_str() {
        settings.tls_image = image.to_owned();
    }
    for (attr, slot) in [
        ("http_port", &mut settings.http_port),
        ("https_port", &mut settings.https_port),
    ] {
        if let Value::Number(n) = block.get(attr) {
            match n.as_i64().and_then(|i| u16::try_from(i).ok()) {
                Some(port) => *slot = port,
                None => diags.push(
                    Diagnostic::error(
                        "Invalid ingress port",
                        format!(
                            "{} = {n} is not a port: use 1 to 65535 (0 for no HTTP port).",
                            path(attr)
                        ),
                    )
                    .at(path(attr)),
                ),
            }
        }
    }
    if let Some(tls) = block.get("tls").as_str() {
        match TlsMode::parse(tls) {
            Some(mode) => settings.tls = mode,
            None => diags.push(
                Diagnostic::error(
                    "Invalid ingress TLS mode",
                    format!(
                        "{} = {tls:?}: use \"acme\", \"internal\" or \"off\".",
                        path("tls")
                    ),
                )
                .at(path("tls")),
            ),
        }
    }
    settings.acme_email = block.get("acme_email").as_str().map(String::from);
    if !diags.has_errors() {
        for (attr, message) in settings.validate() {
            diags.push(
                Diagnostic::error(
                    "Invalid ingress setting",
                    format!("{}: {message}", path(attr)),
                )
                .at(path(attr)),
            );
        }
    }
    if diags.has_errors() {
        Err(diags)
    } else {
        Ok(settings)
    }
}

/// The TLS material of `hosts[name]`: none, or all three PEM blocks, for a
/// `tcp://` address, each holding what it should. A host with a value not
/// known yet (plan time) gets none and no check.
fn host_tls(name: &str, address: &str, host: &Value) -> Result<Option<TlsFiles>, Diagnostics> {
    let path = |attr: &str| AttributePath::root("hosts").key(name).attr(attr);
    if TLS_ATTRIBUTES
        .iter()
        .any(|(attr, _)| host.get(attr).is_unknown())
    {
        return Ok(None);
    }
    let values: Vec<(&str, Option<&str>)> = TLS_ATTRIBUTES
        .iter()
        .map(|(attr, _)| (*attr, host.get(attr).as_str()))
        .collect();
    let set: Vec<&str> = values
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(a, _)| *a)
        .collect();
    if set.is_empty() {
        return Ok(None);
    }
    let mut diags = Diagnostics::default();
    if !address.starts_with("tcp://") {
        for attr in &set {
            diags.push(
                Diagnostic::error(
                    "TLS files for a host that is not tcp://",
                    format!("{} is set, but host {name:?} has address {address:?}. TLS files apply to `tcp://` addresses only: a unix socket needs none, and `ssh://` uses your SSH keys. Remove `ca_pem`, `cert_pem` and `key_pem` from this host, or use its `tcp://HOST:2376` address.", path(attr)),
                )
                .at(path(attr)),
            );
        }
        return Err(diags);
    }
    for (attr, value) in &values {
        if value.is_none() {
            diags.push(
                Diagnostic::error(
                    "Incomplete TLS files",
                    format!("{} is missing: host {name:?} sets {}, and TLS needs all three of `ca_pem`, `cert_pem` and `key_pem` (Docker's ca.pem, cert.pem and key.pem). Set it, or remove the others to use plain HTTP.", path(attr), set.join(", ")),
                )
                .at(path(attr)),
            );
        }
    }
    if diags.has_errors() {
        return Err(diags);
    }
    let [ca, cert, key] = [0, 1, 2].map(|i| values[i].1.unwrap_or_default().to_owned());
    let tls = TlsFiles {
        ca,
        cert,
        key: Secret::new(key),
    };
    if let Err(e) = crate::docker::check_tls_material(&tls) {
        let attr = TLS_ATTRIBUTES
            .iter()
            .find(|(_, part)| *part == e.part)
            .map_or("ca_pem", |(attr, _)| *attr);
        diags.push(
            Diagnostic::error(
                "Invalid TLS file",
                format!("{} (host {name:?}): {e}. Give the file's whole PEM text, e.g. `file(\"certs/{}\")`.", path(attr), attr.replace("_pem", ".pem")),
            )
            .at(path(attr)),
        );
        return Err(diags);
    }
    Ok(Some(tls))
}

fn check_registry_host(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.contains("://") {
        return Err("has a scheme");
    }
    if s.contains('/') {
        return Err("has a path");
    }
    if s.chars().any(|c| c.is_whitespace()) {
        return Err("contains white space");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::value::object;

    #[test]
    fn empty_block_is_the_default() {
        let v = object([("state_dir", Value::Null)]);
        assert_eq!(
            ProviderConfig::from_value(&v).unwrap(),
            ProviderConfig::default()
        );
    }

    #[test]
    fn a_bad_store_url_points_at_store_and_never_shows_the_password() {
        let v = object([(
            "store",
            Value::string("postgres://team:hunter2@db/b?sslmode=strict"),
        )]);
        let d = ProviderConfig::from_value(&v).unwrap_err();
        assert_eq!(d.0[0].path, Some(AttributePath::root("store")));
        assert_eq!(d.0[0].summary, "Invalid store URL");
        assert!(
            d.0[0].detail.contains("sslmode `strict`"),
            "{}",
            d.0[0].detail
        );
        assert!(!d.0[0].detail.contains("hunter2"), "{}", d.0[0].detail);
        let v = object([("store", Value::string("sqlite://berth.db"))]);
        let d = ProviderConfig::from_value(&v).unwrap_err();
        assert!(
            d.0[0].detail.contains("sqlite:///berth.db"),
            "{}",
            d.0[0].detail
        );
        let v = object([("store", Value::string("sqlite:///var/lib/berth/berth.db"))]);
        let cfg = ProviderConfig::from_value(&v).unwrap();
        assert_eq!(
            cfg.store,
            Some(crate::store::StoreLocation::Sqlite(
                "/var/lib/berth/berth.db".into()
            ))
        );
    }

    #[test]
    fn bad_insecure_registry_points_at_the_element() {
        let v = object([(
            "insecure_registries",
            Value::List(vec![
                Value::string("ok:5000"),
                Value::string("http://x:5000"),
            ]),
        )]);
        let d = ProviderConfig::from_value(&v).unwrap_err();
        assert_eq!(
            d.0[0].path,
            Some(AttributePath::root("insecure_registries").index(1))
        );
        assert!(d.0[0].detail.contains("has a scheme"));
    }

    fn tls_pems() -> (String, String, String) {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        let client = rcgen::generate_simple_self_signed(vec!["client.test".to_owned()]).unwrap();
        (
            ca.cert.pem(),
            client.cert.pem(),
            client.signing_key.serialize_pem(),
        )
    }

    fn hosts(name: &str, fields: Vec<(&'static str, Value)>) -> Value {
        object([(
            "hosts",
            Value::Map(BTreeMap::from([(name.to_owned(), object(fields))])),
        )])
    }

    #[test]
    fn tcp_host_with_all_three_tls_files() {
        let (ca, cert, key) = tls_pems();
        let v = hosts(
            "b",
            vec![
                ("address", Value::string("tcp://10.0.0.5:2376")),
                ("ca_pem", Value::string(&ca)),
                ("cert_pem", Value::string(&cert)),
                ("key_pem", Value::string(&key)),
            ],
        );
        let cfg = ProviderConfig::from_value(&v).unwrap();
        let tls = cfg.hosts["b"].tls.as_ref().expect("tls");
        assert_eq!(tls.ca, ca);
        assert_eq!(tls.cert, cert);
        assert_eq!(tls.key.expose(), key);
        assert!(
            !format!("{cfg:?}").contains(key.trim()),
            "Debug leaks the key"
        );

        let plain = hosts("a", vec![("address", Value::string("tcp://10.0.0.5:2375"))]);
        assert_eq!(
            ProviderConfig::from_value(&plain).unwrap().hosts["a"].tls,
            None
        );
    }

    #[test]
    fn tls_files_need_all_three() {
        let (ca, _, key) = tls_pems();
        let v = hosts(
            "b",
            vec![
                ("address", Value::string("tcp://10.0.0.5:2376")),
                ("ca_pem", Value::string(&ca)),
                ("key_pem", Value::string(&key)),
            ],
        );
        let d = ProviderConfig::from_value(&v).unwrap_err();
        assert_eq!(d.0.len(), 1, "{d:?}");
        let path = AttributePath::root("hosts").key("b").attr("cert_pem");
        assert_eq!(d.0[0].path, Some(path));
        assert!(
            d.0[0]
                .detail
                .starts_with(r#"hosts["b"].cert_pem is missing"#),
            "{}",
            d.0[0].detail
        );
        assert!(
            d.0[0].detail.contains("sets ca_pem, key_pem"),
            "{}",
            d.0[0].detail
        );
    }

    #[test]
    fn tls_files_only_for_tcp() {
        let (ca, _, _) = tls_pems();
        for address in ["unix:///var/run/docker.sock", "ssh://deploy@box"] {
            let v = hosts(
                "b",
                vec![
                    ("address", Value::string(address)),
                    ("ca_pem", Value::string(&ca)),
                ],
            );
            let d = ProviderConfig::from_value(&v).unwrap_err();
            assert_eq!(d.0.len(), 1, "{d:?}");
            assert_eq!(
                d.0[0].path,
                Some(AttributePath::root("hosts").key("b").attr("ca_pem"))
            );
            assert!(
                d.0[0].detail.contains(r#"hosts["b"].ca_pem is set"#),
                "{}",
                d.0[0].detail
            );
            assert!(
                d.0[0].detail.contains("`tcp://` addresses only"),
                "{}",
                d.0[0].detail
            );
        }
    }

    #[test]
    fn tls_file_contents_are_checked_and_the_key_never_quoted() {
        let (ca, cert, key) = tls_pems();
        // cert_pem given the key by mistake, key_pem given the certificate.
        let v = hosts(
            "b",
            vec![
                ("address", Value::string("tcp://box")),
                ("ca_pem", Value::string(&ca)),
                ("cert_pem", Value::string(&key)),
                ("key_pem", Value::string(&cert)),
            ],
        );
        let d = ProviderConfig::from_value(&v).unwrap_err();
        assert_eq!(
            d.0[0].path,
            Some(AttributePath::root("hosts").key("b").attr("cert_pem"))
        );
        assert!(
            d.0[0]
                .detail
                .contains("the client certificate: holds no PEM certificate"),
            "{}",
            d.0[0].detail
        );
        assert!(
            !d.0[0].detail.contains("PRIVATE KEY-----\n"),
            "{}",
            d.0[0].detail
        );

        let v = hosts(
            "b",
            vec![
                ("address", Value::string("tcp://box")),
                ("ca_pem", Value::string(&ca)),
                ("cert_pem", Value::string(&cert)),
                ("key_pem", Value::string("oops")),
            ],
        );
        let d = ProviderConfig::from_value(&v).unwrap_err();
        assert_eq!(
            d.0[0].path,
            Some(AttributePath::root("hosts").key("b").attr("key_pem"))
        );
        assert!(!d.0[0].detail.contains("oops"), "{}", d.0[0].detail);
    }

    #[test]
    fn unknown_tls_values_are_not_checked_yet() {
        let v = hosts(
            "b",
            vec![
                ("address", Value::string("tcp://box")),
                ("ca_pem", Value::Unknown),
            ],
        );
        assert_eq!(ProviderConfig::from_value(&v).unwrap().hosts["b"].tls, None);
    }

    #[test]
    fn ingress_block_defaults_and_errors_point_at_the_attribute() {
        assert_eq!(
            ProviderConfig::from_value(&object([("ingress", Value::Null)]))
                .unwrap()
                .ingress,
            IngressSettings::default()
        );
        let v = object([(
            "ingress",
            object([
                ("image", Value::string("127.0.0.1:5000/berth/ingress:local")),
                ("tls", Value::string("internal")),
                ("https_port", Value::int(18443)),
            ]),
        )]);
        let cfg = ProviderConfig::from_value(&v).unwrap();
        assert_eq!(cfg.ingress.tls, TlsMode::Internal);
        assert_eq!(cfg.ingress.https_port, 18443);
        assert_eq!(cfg.ingress.http_port, 80);
        let bad = object([(
            "ingress",
            object([
                ("tls", Value::string("on")),
                ("http_port", Value::int(70000)),
            ]),
        )]);
        let d = ProviderConfig::from_value(&bad).unwrap_err();
        let paths: Vec<_> = d.0.iter().map(|d| d.path.clone().unwrap()).collect();
        assert!(
            paths.contains(&AttributePath::root("ingress").attr("tls")),
            "{d:?}"
        );
        assert!(
            paths.contains(&AttributePath::root("ingress").attr("http_port")),
            "{d:?}"
        );
    }

    #[test]
    fn unknown_values_are_unset() {
        let v = object([("hooks_url", Value::Unknown)]);
        assert_eq!(ProviderConfig::from_value(&v).unwrap().hooks_url, None);
    }
}
