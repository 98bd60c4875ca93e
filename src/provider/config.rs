//! The `provider "berth"` block: its schema and its parsed form. Settings
//! for features that land later (Docker hosts, hooks) are accepted and
//! documented as coming, so configurations written today keep working.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::diag::{AttributePath, Diagnostic, Diagnostics};
use super::schema::{Attribute, Nesting, Schema, Type};
use super::value::Value;

/// One Docker host as configured (used by `berth_app`, coming soon).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostConfig {
    pub address: String,
    pub publish_address: Option<String>,
}

/// The parsed provider configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProviderConfig {
    pub state_dir: Option<PathBuf>,
    pub insecure_registries: Vec<String>,
    pub hooks_url: Option<String>,
    pub hosts: BTreeMap<String, HostConfig>,
}

pub fn schema() -> Schema {
    Schema::new(
        "Configures where Berth keeps its records and how it reaches registries and Docker hosts. Every setting is optional: with an empty `provider \"berth\" {}` block Berth talks to registries directly (plain HTTP only for registries on loopback) and to the local Docker.",
        vec![
            Attribute::string("state_dir").optional().describe(
                "Directory for the engine's records (registry credentials, deploy hooks, releases). Defaults to `$BERTH_STATE_DIR`, else `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`.",
            ),
            Attribute::typed("insecure_registries", Type::list(Type::String))
                .optional()
                .describe(
                    "Registries, as `host` or `host:port`, to reach over plain HTTP instead of HTTPS. Registries on loopback (`localhost`, `127.0.0.0/8`, `[::1]`) always use plain HTTP, as Docker does; list any other registry here only if it really has no TLS.",
                ),
            Attribute::string("hooks_url").optional().describe(
                "Base URL where `berth serve` is reachable, used to build the URLs of `berth_deploy_hook` resources (coming in a later release), e.g. `https://deploy.example.com`.",
            ),
            Attribute::nested(
                "hosts",
                Nesting::Map,
                vec![
                    Attribute::string("address").required().describe(
                        "How to reach the Docker Engine: `unix:///var/run/docker.sock`, `tcp://host:2376` or `ssh://user@host`.",
                    ),
                    Attribute::string("publish_address").optional().describe(
                        "Address on that host where app instances publish their ports. Defaults to `127.0.0.1`.",
                    ),
                ],
            )
            .optional()
            .describe(
                "Docker hosts that apps deploy to, by name (used by `berth_app`, coming in a later release). Defaults to one host called `local` at `$DOCKER_HOST` or the local socket.",
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
                cfg.hosts.insert(
                    name.clone(),
                    HostConfig {
                        address: address.to_string(),
                        publish_address: host.get("publish_address").as_str().map(String::from),
                    },
                );
            }
        }
        if diags.has_errors() {
            Err(diags)
        } else {
            Ok(cfg)
        }
    }
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

    #[test]
    fn unknown_values_are_unset() {
        let v = object([("hooks_url", Value::Unknown)]);
        assert_eq!(ProviderConfig::from_value(&v).unwrap().hooks_url, None);
    }
}
