//! [`DockerError`]: everything that can go wrong talking to a Docker host,
//! in words that name the host and say what to try, and the classification
//! of bollard's errors into it. No message ever carries a password: errors
//! are built from the daemon's messages and Berth's own names only.

use std::time::Duration;

/// A failure of the `docker` layer.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The host's configuration cannot be used (bad address, duplicate name).
    #[error("Docker host `{host}`: {detail}")]
    InvalidConfig { host: String, detail: String },

    /// The address is valid but this build cannot speak it yet.
    #[error("Docker host `{host}` at {address}: {detail}")]
    Unsupported {
        host: String,
        address: String,
        detail: String,
    },

    /// The daemon did not answer: socket missing, connection refused, …
    #[error("cannot reach Docker host `{host}` at {address}: {detail} — {}", unreachable_hint(.address, .detail))]
    Unreachable {
        host: String,
        address: String,
        detail: String,
    },

    /// The daemon answered but took longer than Berth waits for `operation`.
    #[error("Docker host `{host}` did not finish {operation} within {}s — is the host overloaded or the network slow? Try again", .after.as_secs())]
    Timeout {
        host: String,
        operation: String,
        after: Duration,
    },

    /// The thing asked for does not exist on the host.
    #[error("Docker host `{host}` has no {what}: {detail}")]
    NotFound {
        host: String,
        what: String,
        detail: String,
    },

    /// Berth refuses to act on something it does not manage.
    #[error("refusing to {action} {what} on Docker host `{host}`: it does not carry the label io.berth.managed=true, so Berth did not create it and never touches it — remove or rename it by hand if it is in the way")]
    NotManaged {
        host: String,
        action: String,
        what: String,
    },

    /// The daemon could not pull an image.
    #[error("Docker host `{host}` could not pull {image}: {detail} — check that the registry is reachable from that host and, for a private image, that the credentials allow pulling it")]
    PullFailed {
        host: String,
        image: String,
        detail: String,
    },

    /// A name is taken, or an object is in use.
    #[error("conflict on Docker host `{host}` for {what}: {detail}")]
    Conflict {
        host: String,
        what: String,
        detail: String,
    },

    /// A spec Berth was asked to run is not acceptable (e.g. not pinned).
    #[error("invalid container spec for Docker host `{host}`: {detail}")]
    InvalidSpec { host: String, detail: String },

    /// Any other answer of the daemon.
    #[error("Docker host `{host}` failed {operation}: {detail}")]
    Api {
        host: String,
        operation: String,
        detail: String,
    },
}

impl DockerError {
    /// True when the failure says nothing about the object but only that the
    /// host could not be talked to (unreachable or timed out): the engine
    /// reports the host as unknown rather than the app as broken.
    pub fn is_host_unavailable(&self) -> bool {
        matches!(
            self,
            DockerError::Unreachable { .. } | DockerError::Timeout { .. }
        )
    }

    /// True for [`DockerError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::NotFound { .. })
    }
}

fn unreachable_hint(address: &str, detail: &str) -> &'static str {
    let lower = detail.to_ascii_lowercase();
    if address.starts_with("ssh://") {
        "can this user run `ssh USER@HOST docker version` without a prompt (a key or agent, the host in known_hosts), and is the user on that host allowed to use Docker?"
    } else if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
        || lower.contains("unknownissuer")
    {
        "check the host's TLS files: ca_pem must be the CA that signed the daemon's certificate (issued for the name or IP in the address), and cert_pem/key_pem a client certificate the daemon's --tlscacert trusts"
    } else if lower.contains("permission denied") {
        "does this user have access to the Docker socket (the `docker` group)?"
    } else if lower.contains("client version") || lower.contains("api version") {
        "the daemon is too old for Berth; upgrade Docker Engine on that host"
    } else {
        "is the Docker daemon running, and is the address right?"
    }
}

/// What kind of failure a bollard error is, before the context is added.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The transport failed: no connection.
    Transport(String),
    /// bollard's own per-request timeout.
    Timeout,
    /// The daemon answered with an HTTP status.
    Status(u16, String),
    /// Anything else (decoding, …).
    Other(String),
}

/// Sorts a bollard error into a [`Failure`].
pub(crate) fn classify(err: &bollard::errors::Error) -> Failure {
    use bollard::errors::Error as B;
    match err {
        B::DockerResponseServerError {
            status_code,
            message,
        } => Failure::Status(*status_code, message.trim().to_owned()),
        B::DockerContainerWaitError { error, code } => {
            Failure::Other(format!("container exited with status {code}: {error}"))
        }
        B::RequestTimeoutError => Failure::Timeout,
        B::SocketNotFoundError(_) => Failure::Transport("No such file or directory".to_owned()),
        B::IOError { err } => Failure::Transport(io_detail(err)),
        B::HyperLegacyError { .. } | B::HttpClientError { .. } | B::HyperResponseError { .. } => {
            match innermost_io_error(err) {
                Some(io) => Failure::Transport(io_detail(io)),
                None => Failure::Other(innermost_message(err)),
            }
        }
        other => Failure::Other(innermost_message(other)),
    }
}

fn innermost_io_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a std::io::Error> {
    let mut found = None;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            found = Some(io);
        }
        current = e.source();
    }
    found
}

fn innermost_message(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// An I/O error in words, without the `(os error N)` suffix.
fn io_detail(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_reads_as_words() {
        let err = DockerError::Unreachable {
            host: "local".into(),
            address: "unix:///var/run/docker.sock".into(),
            detail: "No such file or directory".into(),
        };
        assert_eq!(
            err.to_string(),
            "cannot reach Docker host `local` at unix:///var/run/docker.sock: \
             No such file or directory — is the Docker daemon running, and is the address right?"
        );
        assert!(err.is_host_unavailable());
    }

    #[test]
    fn permission_denied_suggests_the_group() {
        let err = DockerError::Unreachable {
            host: "a".into(),
            address: "unix:///x".into(),
            detail: "Permission denied".into(),
        };
        assert!(err.to_string().contains("`docker` group"));
    }

    #[test]
    fn classifies_daemon_statuses_and_transport() {
        let e = bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message: "No such container: x\n".into(),
        };
        assert_eq!(
            classify(&e),
            Failure::Status(404, "No such container: x".into())
        );
        let e = bollard::errors::Error::SocketNotFoundError("/nope".into());
        assert_eq!(
            classify(&e),
            Failure::Transport("No such file or directory".into())
        );
        let e = bollard::errors::Error::IOError {
            err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(matches!(classify(&e), Failure::Transport(_)));
        assert_eq!(
            classify(&bollard::errors::Error::RequestTimeoutError),
            Failure::Timeout
        );
    }

    #[test]
    fn ssh_and_tls_failures_get_their_own_hint() {
        let err = DockerError::Unreachable {
            host: "b".into(),
            address: "ssh://deploy@box:22".into(),
            detail: "Permission denied (publickey)".into(),
        };
        assert!(err.to_string().contains("without a prompt"), "{err}");
        let err = DockerError::Unreachable {
            host: "c".into(),
            address: "tcp://box:2376".into(),
            detail: "invalid peer certificate: UnknownIssuer".into(),
        };
        assert!(err.to_string().contains("ca_pem must be the CA"), "{err}");
    }

    #[test]
    fn io_detail_drops_os_error_number() {
        let err = std::io::Error::from_raw_os_error(2);
        assert_eq!(io_detail(&err), "No such file or directory");
    }
}
