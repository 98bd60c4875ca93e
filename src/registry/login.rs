//! Checking credentials the way `docker login` does, before anything is
//! pulled with them: ask the registry's `/v2/` how it authenticates, then
//! try the credentials that way (HTTP Basic on `/v2/`, or a token request
//! with the service and no scope). Refusals name the registry and the user
//! and what kind of token the registry expects, never the secret.

use reqwest::StatusCode;

use super::challenge::{preferred_scheme, AuthScheme};
use super::error::{registry_words, FailureContext};
use super::exchange::{challenges, read_error_body, TokenFailure};
use super::{api_host, Credentials, RegistryClient, RegistryError, Secret};
use crate::reference::{normalize_registry, Reference};

impl RegistryClient {
    /// Checks that `registry` (a normalized host such as `ghcr.io`,
    /// `docker.io` or `127.0.0.1:5001`) accepts `username` and `secret`.
    /// A registry that answers `/v2/` anonymously accepts anyone.
    pub async fn verify_login(
        &self,
        registry: &str,
        username: &str,
        secret: &Secret,
    ) -> Result<(), RegistryError> {
        let host = normalize_registry(registry).map_err(|reason| RegistryError::Protocol {
            url: registry.to_owned(),
            status: None,
            detail: reason,
            advice: "Give the registry's host, like `ghcr.io` or `registry.example.com:5000`."
                .to_owned(),
        })?;
        let is_loopback = Reference::parse(&format!("{host}/x"))
            .map(|probe| probe.is_loopback_registry())
            .unwrap_or(false);
        let scheme = self.scheme_for(&host, is_loopback);
        let origin = format!("{}://{}", scheme.as_str(), api_host(&host));
        let base_url = format!("{origin}/v2/");
        let credentials = Credentials::basic(username, secret.clone());
        let ctx = FailureContext {
            reference: "",
            registry: &host,
            repository: "",
            base_url: &base_url,
            object: "",
            fetching_blob: false,
            username: Some(username),
            secret: Some(secret),
        };
        let result = self
            .bounded(&ctx, self.login(&ctx, &origin, &credentials))
            .await;
        match &result {
            Ok(()) => tracing::debug!(registry = %host, username, "registry accepted the login"),
            Err(error) => tracing::debug!(
                registry = %host,
                username,
                error = %error,
                "registry refused the login"
            ),
        }
        result
    }

    async fn login(
        &self,
        ctx: &FailureContext<'_>,
        origin: &str,
        credentials: &Credentials,
    ) -> Result<(), RegistryError> {
        let http = self.http(ctx)?;
        let url = ctx.base_url;
        let mut response = self.send_with_retry(ctx, || http.get(url)).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status != StatusCode::UNAUTHORIZED {
            return Err(self.unexpected(ctx, &mut response).await);
        }
        let username = credentials.username().unwrap_or_default();
        match preferred_scheme(&challenges(response.headers())) {
            Some(AuthScheme::Basic) => {
                self.auth_cache().remember_scheme(origin, AuthScheme::Basic);
                let mut response = self
                    .send_with_retry(ctx, || match credentials {
                        Credentials::Basic { username, password } => {
                            http.get(url).basic_auth(username, Some(password.expose()))
                        }
                        Credentials::Anonymous => http.get(url),
                    })
                    .await?;
                let status = response.status();
                if status.is_success() {
                    Ok(())
                } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    let body = read_error_body(&mut response).await;
                    Err(ctx.rejected(username, &registry_words(&body).0))
                } else {
                    Err(self.unexpected(ctx, &mut response).await)
                }
            }
            Some(AuthScheme::Bearer { realm, service }) => {
                self.auth_cache().remember_scheme(
                    origin,
                    AuthScheme::Bearer {
                        realm: realm.clone(),
                        service: service.clone(),
                    },
                );
                match self
                    .fetch_token(ctx, origin, &realm, service.as_deref(), None, credentials)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(TokenFailure::Refused { words, .. }) => Err(ctx.rejected(username, &words)),
                    Err(TokenFailure::Failed(error)) => Err(error),
                }
            }
            None => Err(ctx.protocol(
                Some(401),
                "it answered 401 Unauthorized without a Basic or Bearer challenge \
                 (WWW-Authenticate header)",
            )),
        }
    }

    /// Any other answer to `/v2/`: not a registry API, or a broken one.
    async fn unexpected(
        &self,
        ctx: &FailureContext<'_>,
        response: &mut reqwest::Response,
    ) -> RegistryError {
        let status = response.status().as_u16();
        let body = read_error_body(response).await;
        match status {
            429 => ctx.classify_response(status, &body),
            _ => ctx.protocol(Some(status), &registry_words(&body).0),
        }
    }
}
