//! Reading a Docker host address (`unix:///path`, `tcp://host:port`,
//! `ssh://user@host[:port]`) into a [`HostAddress`]. Pure: no I/O.

use std::fmt;

/// Port Docker listens on for plain TCP when an address names none.
pub const DOCKER_TCP_PORT: u16 = 2375;
/// Port Docker listens on for TCP with TLS when an address names none.
pub const DOCKER_TLS_PORT: u16 = 2376;
/// Port of SSH when an address names none.
pub const SSH_PORT: u16 = 22;

/// Where a Docker host's API is, as read from its configured address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostAddress {
    /// A Unix socket on this machine: `unix:///var/run/docker.sock`.
    Unix { path: String },
    /// A TCP endpoint: `tcp://10.0.0.5:2376`.
    Tcp { host: String, port: u16 },
    /// Docker over SSH: `ssh://deploy@10.0.0.5`.
    Ssh {
        user: Option<String>,
        host: String,
        port: u16,
    },
}

/// Why an address could not be read; the message says what form is expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressError(pub String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const EXPECTED: &str =
    "expected unix:///path/to/docker.sock, tcp://host:port or ssh://user@host[:port]";

impl HostAddress {
    /// Reads `address`. `tls` says whether TLS files are configured, which
    /// only changes the default TCP port (2376 instead of 2375), as in Docker.
    pub fn parse(address: &str, tls: bool) -> Result<HostAddress, AddressError> {
        let address = address.trim();
        if address.is_empty() {
            return Err(AddressError(format!("the address is empty; {EXPECTED}")));
        }
        let Some((scheme, rest)) = address.split_once("://") else {
            return Err(AddressError(format!(
                "`{address}` has no scheme; {EXPECTED}"
            )));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "unix" => {
                if !rest.starts_with('/') {
                    return Err(AddressError(format!(
                        "`{address}`: a unix socket path must be absolute (unix:///path)"
                    )));
                }
                Ok(HostAddress::Unix {
                    path: rest.to_owned(),
                })
            }
            "tcp" | "http" => {
                let default_port = if tls {
                    DOCKER_TLS_PORT
                } else {
                    DOCKER_TCP_PORT
                };
                let (host, port) = split_host_port(address, strip_path(rest), default_port)?;
                Ok(HostAddress::Tcp { host, port })
            }
            "ssh" => {
                let rest = strip_path(rest);
                let (user, host_port) = match rest.rsplit_once('@') {
                    Some((user, host_port)) if !user.is_empty() => {
                        (Some(user.to_owned()), host_port)
                    }
                    Some(_) => {
                        return Err(AddressError(format!(
                            "`{address}`: the user before `@` is empty"
                        )))
                    }
                    None => (None, rest),
                };
                let (host, port) = split_host_port(address, host_port, SSH_PORT)?;
                Ok(HostAddress::Ssh { user, host, port })
            }
            other => Err(AddressError(format!(
                "`{address}`: unsupported scheme `{other}`; {EXPECTED}"
            ))),
        }
    }
}

impl fmt::Display for HostAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostAddress::Unix { path } => write!(f, "unix://{path}"),
            HostAddress::Tcp { host, port } => write!(f, "tcp://{}:{port}", bracket(host)),
            HostAddress::Ssh { user, host, port } => {
                f.write_str("ssh://")?;
                if let Some(user) = user {
                    write!(f, "{user}@")?;
                }
                write!(f, "{}:{port}", bracket(host))
            }
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Drops a trailing `/` or path: Docker ignores it for tcp and ssh.
fn strip_path(rest: &str) -> &str {
    match rest.find('/') {
        Some(i) => &rest[..i],
        None => rest,
    }
}

fn split_host_port(
    address: &str,
    host_port: &str,
    default_port: u16,
) -> Result<(String, u16), AddressError> {
    let bracketed = host_port.starts_with('[');
    let (host, port) = if let Some(inner) = host_port.strip_prefix('[') {
        // [v6]:port or [v6]
        let Some((host, after)) = inner.split_once(']') else {
            return Err(AddressError(format!(
                "`{address}`: an IPv6 host needs a closing `]`"
            )));
        };
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => {
                return Err(AddressError(format!(
                    "`{address}`: unexpected `{after}` after the host"
                )))
            }
        };
        (host, port)
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(AddressError(format!(
            "`{address}` names no host; {EXPECTED}"
        )));
    }
    if let Some(bad) = host.chars().find(|&c| {
        matches!(c, '@' | '[' | ']' | '/' | '?' | '#')
            || (c == ':' && !bracketed)
            || c.is_whitespace()
            || c.is_control()
    }) {
        let hint = match bad {
            '@' => " (only ssh:// addresses name a user: ssh://user@host)",
            ':' => " (write an IPv6 host in brackets: tcp://[::1]:2376)",
            _ => "",
        };
        return Err(AddressError(format!(
            "`{address}`: the host `{host}` cannot contain `{}`{hint}",
            bad.escape_default()
        )));
    }
    let port = match port {
        None => default_port,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => {
                return Err(AddressError(format!(
                    "`{address}`: `{port}` is not a port number (1-65535)"
                )))
            }
        },
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_socket() {
        assert_eq!(
            HostAddress::parse("unix:///var/run/docker.sock", false).unwrap(),
            HostAddress::Unix {
                path: "/var/run/docker.sock".into()
            }
        );
        assert!(HostAddress::parse("unix://docker.sock", false).is_err());
    }

    #[test]
    fn tcp_with_and_without_port() {
        assert_eq!(
            HostAddress::parse("tcp://10.0.0.5:2380", false).unwrap(),
            HostAddress::Tcp {
                host: "10.0.0.5".into(),
                port: 2380
            }
        );
        assert_eq!(
            HostAddress::parse("tcp://docker.example", false).unwrap(),
            HostAddress::Tcp {
                host: "docker.example".into(),
                port: 2375
            }
        );
        assert_eq!(
            HostAddress::parse("tcp://docker.example/", true).unwrap(),
            HostAddress::Tcp {
                host: "docker.example".into(),
                port: 2376
            }
        );
        assert_eq!(
            HostAddress::parse("tcp://[::1]:2375", false).unwrap(),
            HostAddress::Tcp {
                host: "::1".into(),
                port: 2375
            }
        );
    }

    #[test]
    fn ssh_with_user_and_port() {
        assert_eq!(
            HostAddress::parse("ssh://deploy@10.0.0.5:2222", false).unwrap(),
            HostAddress::Ssh {
                user: Some("deploy".into()),
                host: "10.0.0.5".into(),
                port: 2222
            }
        );
        assert_eq!(
            HostAddress::parse("ssh://box", false).unwrap(),
            HostAddress::Ssh {
                user: None,
                host: "box".into(),
                port: 22
            }
        );
    }

    #[test]
    fn rejects_what_docker_rejects() {
        for bad in [
            "",
            "/var/run/docker.sock",
            "npipe:////./pipe/docker_engine",
            "tcp://",
            "tcp://host:notaport",
            "tcp://host:0",
            "tcp://[::1",
            "ssh://@host",
        ] {
            let err = HostAddress::parse(bad, false).unwrap_err();
            assert!(!err.0.is_empty(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "unix:///var/run/docker.sock",
            "tcp://10.0.0.5:2376",
            "tcp://[::1]:2375",
            "ssh://deploy@box:22",
        ] {
            let parsed = HostAddress::parse(text, false).unwrap();
            assert_eq!(parsed.to_string(), text);
        }
    }
}

/// Property tests: host addresses come from users' configurations. No
/// string may panic the reader, and what it reads prints back to an
/// address that reads the same. `make fuzz` runs more cases.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn address_like() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["unix", "tcp", "ssh", "TCP", "http", "", "ssh+x"]),
            prop::option::of("[a-z]{1,6}@"),
            prop::sample::select(vec![
                "host",
                "10.0.0.1",
                "[::1]",
                "::1",
                "[fe80::1%eth0]",
                "",
                "h st",
                "/var/run/docker.sock",
            ]),
            prop::option::of(prop::sample::select(vec![
                ":22", ":0", ":65535", ":65536", ":x", ":",
            ])),
            prop::option::of("/[a-z/]{0,8}"),
        )
            .prop_map(|(scheme, user, host, port, path)| {
                format!(
                    "{scheme}://{}{host}{}{}",
                    user.unwrap_or_default(),
                    port.unwrap_or_default(),
                    path.unwrap_or_default()
                )
            })
    }

    fn check(input: &str) -> Result<(), TestCaseError> {
        for tls in [false, true] {
            if let Ok(address) = HostAddress::parse(input, tls) {
                let printed = address.to_string();
                let again = HostAddress::parse(&printed, tls)
                    .map_err(|e| TestCaseError::fail(format!("{input:?} → {printed:?}: {e}")))?;
                prop_assert_eq!(again, address, "{:?} printed as {:?}", input, printed);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn prop_any_string_reads_or_is_refused(input in any::<String>()) {
            check(&input)?;
        }

        #[test]
        fn prop_address_like_strings_round_trip(input in address_like()) {
            check(&input)?;
        }
    }
}
