//! What the big hosted registries expect as username and password, and
//! which permission a token needs to pull: the sentence added to refusals
//! (`AuthenticationRequired`, `CredentialsRejected`, `Denied`) so a user
//! with a rejected token learns what kind of token to make. Pure.

const DOCKER_HUB: &str = "Docker Hub expects your Docker ID as the username and a personal access \
     token (Account settings → Personal access tokens) with Read permission (Read-only is enough \
     to pull) as the password.";
const GHCR: &str = "GitHub Container Registry expects your GitHub username and a personal access \
     token (classic) with the `read:packages` scope as the password; the token's owner must have \
     access to the package.";
const GITLAB: &str = "GitLab's container registry expects a deploy token (its username and the \
     token) with the `read_registry` scope, or a GitLab username with a personal, project or \
     group access token that has `read_registry`.";
const GOOGLE: &str = "Google Artifact Registry (and gcr.io) expects the username `_json_key` with \
     a service account key (the whole JSON key file) as the password, or `oauth2accesstoken` \
     with an access token (`gcloud auth print-access-token`); the account needs an Artifact \
     Registry Reader role (`roles/artifactregistry.reader`) on the repository.";
const DIGITALOCEAN: &str = "DigitalOcean Container Registry expects a DigitalOcean API token with \
     read scope for the registry, given as both the username and the password.";

/// The username and token kind `registry_host` (a normalized host, as
/// [`crate::reference::normalize_registry`] gives it; a port is ignored)
/// expects, and the permission a token needs to pull; `None` for registries
/// Berth knows nothing special about.
pub fn hint(registry_host: &str) -> Option<&'static str> {
    let host = registry_host.trim().to_ascii_lowercase();
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_owned(),
        _ => host,
    };
    match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => Some(DOCKER_HUB),
        "ghcr.io" => Some(GHCR),
        "registry.digitalocean.com" => Some(DIGITALOCEAN),
        "gcr.io" => Some(GOOGLE),
        _ if host.ends_with(".pkg.dev") || host.ends_with(".gcr.io") => Some(GOOGLE),
        _ if host == "registry.gitlab.com"
            || (host.starts_with("registry.") && host.contains("gitlab")) =>
        {
            Some(GITLAB)
        }
        _ => None,
    }
}

/// `" <hint>"` for appending to a message, or empty.
pub(crate) fn hint_sentence(registry: &str) -> String {
    let normalized = crate::reference::normalize_registry(registry)
        .unwrap_or_else(|_| registry.to_ascii_lowercase());
    hint(&normalized)
        .map(|hint| format!(" {hint}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_registries_get_their_token_kind_and_permission() {
        for host in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            let text = hint(host).expect(host);
            assert!(text.contains("Docker ID"), "{text}");
            assert!(text.contains("Read permission"), "{text}");
        }
        assert!(hint("ghcr.io").expect("ghcr").contains("`read:packages`"));
        for host in ["registry.gitlab.com", "registry.gitlab.example.com:5050"] {
            assert!(
                hint(host).expect(host).contains("`read_registry`"),
                "{host}"
            );
        }
        for host in [
            "europe-docker.pkg.dev",
            "gcr.io",
            "eu.gcr.io",
            "us-central1-docker.pkg.dev",
        ] {
            let text = hint(host).expect(host);
            assert!(text.contains("`_json_key`"), "{text}");
            assert!(text.contains("`oauth2accesstoken`"), "{text}");
            assert!(text.contains("Artifact Registry Reader"), "{text}");
        }
        let text = hint("registry.digitalocean.com").expect("do");
        assert!(
            text.contains("both the username and the password"),
            "{text}"
        );
    }

    #[test]
    fn other_registries_get_none() {
        for host in [
            "127.0.0.1:5001",
            "quay.io",
            "registry.example.com",
            "gitlab.com",
            "notgcr.io",
        ] {
            assert_eq!(hint(host), None, "{host}");
        }
        assert_eq!(hint_sentence("127.0.0.1:5001"), "");
        assert!(hint_sentence("index.docker.io").starts_with(" Docker Hub"));
    }
}
