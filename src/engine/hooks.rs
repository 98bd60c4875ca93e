//! Deploy hooks: a secret URL that deploys an app when called. This module
//! owns their keys (256 random bits, base64url; only the SHA-256 is
//! stored), the URL shape (`{base}/deploy/{id}?key={key}`, Render's, so
//! `&imgURL=…` can be appended), checking a call's key in constant time,
//! and which images a call may name (the app's repository only).

use aws_lc_rs::constant_time::verify_slices_are_equal;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::apps::{Apps, AppsError, Recorded};
use crate::reference::Reference;
use crate::registry::Secret;
use crate::store::HookRecord;

/// Random bytes in a key: 256 bits.
pub const KEY_BYTES: usize = 32;
/// The query parameter carrying the key.
pub const KEY_PARAM: &str = "key";
/// The query parameter naming another tag or digest of the app's
/// repository (Render's name for it).
pub const IMAGE_PARAM: &str = "imgURL";

/// A new random key: [`KEY_BYTES`] bytes, base64url without padding (43
/// characters, safe in a query string as is).
pub fn new_key() -> Result<Secret, AppsError> {
    let mut bytes = [0u8; KEY_BYTES];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| AppsError::Invalid("the random generator failed".into()))?;
    Ok(Secret::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ))
}

/// What the store keeps of a key: hex SHA-256. The key has 256 random
/// bits, so a fast hash is enough: guessing it is hopeless either way.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The hook's URL: `base` (trailing `/` dropped), `/deploy/{id}` and the
/// key as the query string.
pub fn hook_url(base: &str, id: &str, key: &str) -> String {
    format!(
        "{}/deploy/{id}?{KEY_PARAM}={key}",
        base.trim_end_matches('/')
    )
}

/// The key in a URL made by [`hook_url`].
pub fn key_of_url(url: &str) -> Option<&str> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(KEY_PARAM)?.strip_prefix('='))
        .filter(|key| !key.is_empty())
}

/// Checks a `base_url`: `http://` or `https://`, a host, no query string
/// or fragment (the hook's path and key are appended to it).
pub fn check_base_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("{url:?} is not an http:// or https:// URL; give where `berth serve` is reachable, e.g. \"https://deploy.example.com\"")
        })?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!(
            "{url:?} names no host; give where `berth serve` is reachable, e.g. \"https://deploy.example.com\""
        ));
    }
    if url.contains('?') || url.contains('#') {
        return Err(format!(
            "{url:?} has a query string or fragment; give the base URL only (Berth appends /deploy/ID?key=…)"
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} contains spaces or control characters"));
    }
    Ok(())
}

/// A warning when `url` sends the key in clear text to another machine
/// (plain `http://` to a host that is not loopback).
pub fn clear_text_warning(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| {
        format!("{url:?} is plain HTTP to another machine: the hook's key would cross the network in clear text, and anyone who sees it can deploy. Serve `berth serve` over HTTPS (`--tls-cert`/`--tls-key`, or a reverse proxy) and use an https:// base URL.")
    })
}

/// Whether `image` may be deployed by a hook of an app whose image is
/// `configured`: the same registry and repository (another tag or digest).
pub fn same_repository(configured: &Reference, image: &Reference) -> bool {
    configured.registry() == image.registry() && configured.repository() == image.repository()
}

/// A call's hook, its key checked.
pub struct Authorized {
    pub hook: HookRecord,
    /// The app as recorded (secret values included); `None` when the app
    /// has no record (destroyed, or never deployed).
    pub app: Option<Recorded>,
}

impl Apps {
    /// Creates a deploy hook for `app`, which must have a record (a
    /// deployed `berth_app`). Returns the stored hook and its key, which
    /// exists nowhere else from now on.
    pub async fn create_hook(&self, app: &str) -> Result<(HookRecord, Secret), AppsError> {
        if self.store().get_app(app.to_owned()).await?.is_none() {
            return Err(AppsError::NotFound {
                app: app.to_owned(),
            });
        }
        let key = new_key()?;
        let hook = self
            .store()
            .insert_hook(app.to_owned(), key_hash(key.expose()))
            .await?;
        Ok((hook, key))
    }

    /// The hook with `id`, if any.
    pub async fn hook(&self, id: &str) -> Result<Option<HookRecord>, AppsError> {
        Ok(self.store().get_hook(id.to_owned()).await?)
    }

    /// Deletes a hook; `false` when it did not exist.
    pub async fn delete_hook(&self, id: &str) -> Result<bool, AppsError> {
        Ok(self.store().delete_hook(id.to_owned()).await?)
    }

    /// The hook `id` if `key` is its key, compared in constant time (an
    /// unknown id costs the same comparison, so timing tells nothing).
    pub async fn authorize_hook(
        &self,
        id: &str,
        key: &str,
    ) -> Result<Option<Authorized>, AppsError> {
        let given = key_hash(key);
        let hook = self.store().get_hook(id.to_owned()).await?;
        let expected = hook
            .as_ref()
            .map_or_else(|| "0".repeat(given.len()), |h| h.key_hash.clone());
        let matches = verify_slices_are_equal(given.as_bytes(), expected.as_bytes()).is_ok();
        match hook {
            Some(hook) if matches => {
                let app = self.recorded(&hook.app).await?;
                Ok(Some(Authorized { hook, app }))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_warns_unless_loopback() {
        assert!(clear_text_warning("http://deploy.example.com").is_some());
        assert!(clear_text_warning("http://10.0.0.5:7070/x").is_some());
        assert!(clear_text_warning("http://127.0.0.1:7070").is_none());
        assert!(clear_text_warning("http://localhost:7070").is_none());
        assert!(clear_text_warning("http://[::1]:7070").is_none());
        assert!(clear_text_warning("https://deploy.example.com").is_none());
    }

    #[test]
    fn keys_are_256_random_bits_in_url_safe_text() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 43, "32 bytes, base64url unpadded");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(a.expose())
            .unwrap();
        assert_eq!(bytes.len(), KEY_BYTES);
        assert!(a
            .expose()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(key_hash(a.expose()).len(), 64);
        assert_ne!(key_hash(a.expose()), key_hash(b.expose()));
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn urls_carry_the_key_in_the_query_string() {
        let url = hook_url("https://deploy.example.com/", "dh-1", "k3y");
        assert_eq!(url, "https://deploy.example.com/deploy/dh-1?key=k3y");
        assert_eq!(key_of_url(&url), Some("k3y"));
        assert_eq!(
            key_of_url(&format!("{url}&imgURL=x%3A1")),
            Some("k3y"),
            "imgURL appended"
        );
        assert_eq!(key_of_url("https://x/deploy/dh-1"), None);
        assert_eq!(key_of_url("https://x/deploy/dh-1?key="), None);
        assert_eq!(key_of_url("https://x/deploy/dh-1?keyring=1"), None);
    }

    #[test]
    fn base_urls_are_checked() {
        check_base_url("https://deploy.example.com").unwrap();
        check_base_url("http://127.0.0.1:7070/hooks/").unwrap();
        for bad in [
            "deploy.example.com",
            "ftp://x",
            "https://",
            "https://x/?a=1",
            "https://x/#f",
            "https://x /",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_apps_repository_may_be_deployed() {
        let app = Reference::parse("127.0.0.1:5000/shop/web:v1").unwrap();
        let ok = |s: &str| same_repository(&app, &Reference::parse(s).unwrap());
        assert!(ok("127.0.0.1:5000/shop/web:v2"));
        assert!(ok(&format!(
            "127.0.0.1:5000/shop/web@sha256:{}",
            "a".repeat(64)
        )));
        assert!(!ok("127.0.0.1:5000/shop/api:v1"));
        assert!(!ok("127.0.0.1:5001/shop/web:v1"));
        let hub = Reference::parse("nginx:1").unwrap();
        assert!(same_repository(
            &hub,
            &Reference::parse("docker.io/library/nginx:2").unwrap()
        ));
    }
}
