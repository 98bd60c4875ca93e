//! One HTTP exchange with a registry, authenticated the way it asked: no
//! credentials until a `401` says how, then HTTP Basic (sent pre-emptively
//! from then on) or the bearer token flow (a token from the challenge's
//! realm for the service and the repository's scope, cached, and fetched
//! before the request once the realm is known). A cached, valid token makes
//! every request a single round trip; nothing probes `/v2/` first.
//!
//! `429 Too Many Requests` with a `Retry-After` of at most
//! [`MAX_RETRY_AFTER`] is waited out and retried (at most
//! [`MAX_RATE_LIMIT_RETRIES`] times); longer waits become
//! [`RegistryError::RateLimited`] naming the wait.
//!
//! Secrets go out only in `Authorization` headers (which reqwest marks
//! sensitive); logs here name registries, scopes and users, never a
//! password or token.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::auth::{parse_retry_after, parse_token_response, Grant, Token};
use super::challenge::{parse_challenges, preferred_scheme, AuthScheme};
use super::error::{registry_words, FailureContext};
use super::{Credentials, RegistryClient, RegistryError};

/// Longest `Retry-After` Berth waits out by itself.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// How often one request is retried after a `429`.
pub(crate) const MAX_RATE_LIMIT_RETRIES: u32 = 2;
/// Error bodies and token answers are small; read no more than this.
const MAX_SMALL_BODY_BYTES: usize = 64 * 1024;
const MAX_TOKEN_BODY_BYTES: usize = 1024 * 1024;

/// What goes into the `Authorization` header.
enum Authorization {
    None,
    Basic,
    Bearer(Token),
}

/// A token endpoint's refusal, which callers word differently (a resolve
/// tells anonymous from rejected; a login check says rejected).
pub(crate) enum TokenFailure {
    /// 401 or 403, with the endpoint's words.
    Refused {
        status: u16,
        words: String,
    },
    Failed(RegistryError),
}

impl RegistryClient {
    /// Sends the request `build` makes for `origin` (`scheme://host`), with
    /// the authentication the registry wants for `scope` (e.g.
    /// `repository:berth/demo:pull`). The answer may still be a `401` (or
    /// any other failure status) for the caller to classify.
    pub(crate) async fn send_authorized(
        &self,
        ctx: &FailureContext<'_>,
        origin: &str,
        scope: &str,
        credentials: &Credentials,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let http = self.http(ctx)?;
        let identity = credentials.cache_key();
        let auth = self.auth_cache();
        let mut fresh_token = false;
        let mut authorization = match auth.scheme(origin) {
            Some(AuthScheme::Basic) if credentials.username().is_some() => Authorization::Basic,
            Some(AuthScheme::Bearer { realm, service }) => {
                match auth.token(origin, scope, &identity) {
                    Some(token) => Authorization::Bearer(token),
                    None => {
                        fresh_token = true;
                        let token = self
                            .obtain_token(
                                ctx,
                                origin,
                                &realm,
                                service.as_deref(),
                                scope,
                                credentials,
                            )
                            .await?;
                        Authorization::Bearer(token)
                    }
                }
            }
            _ => Authorization::None,
        };
        let mut sent_basic = matches!(authorization, Authorization::Basic);

        // At most: as is, then with new credentials, then once more after a
        // cached token turned out stale.
        for round in 0..3 {
            let response = self
                .send_with_retry(ctx, || authorize(build(&http), &authorization, credentials))
                .await?;
            if response.status() != StatusCode::UNAUTHORIZED || round == 2 {
                return Ok(response);
            }
            match preferred_scheme(&challenges(response.headers())) {
                Some(AuthScheme::Bearer { realm, service }) => {
                    auth.remember_scheme(
                        origin,
                        AuthScheme::Bearer {
                            realm: realm.clone(),
                            service: service.clone(),
                        },
                    );
                    if fresh_token {
                        // A token made for this very request was refused:
                        // the credentials may not do this.
                        return Ok(response);
                    }
                    if matches!(authorization, Authorization::Bearer(_)) {
                        auth.forget_token(origin, scope, &identity);
                    }
                    fresh_token = true;
                    let token = self
                        .obtain_token(ctx, origin, &realm, service.as_deref(), scope, credentials)
                        .await?;
                    authorization = Authorization::Bearer(token);
                }
                Some(AuthScheme::Basic) => {
                    auth.remember_scheme(origin, AuthScheme::Basic);
                    if sent_basic || credentials.username().is_none() {
                        return Ok(response);
                    }
                    tracing::debug!(origin, "registry wants HTTP Basic authentication");
                    authorization = Authorization::Basic;
                    sent_basic = true;
                }
                None => return Ok(response),
            }
        }
        unreachable_response(ctx)
    }

    /// A token for `scope` from the cache-filling token flow; refusals
    /// become the resolve's errors (anonymous → authentication required,
    /// otherwise rejected or denied).
    async fn obtain_token(
        &self,
        ctx: &FailureContext<'_>,
        origin: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credentials: &Credentials,
    ) -> Result<Token, RegistryError> {
        match self
            .fetch_token(ctx, origin, realm, service, Some(scope), credentials)
            .await
        {
            Ok(grant) => {
                self.auth_cache()
                    .store_token(origin, scope, &credentials.cache_key(), &grant);
                Ok(grant.token)
            }
            Err(TokenFailure::Refused { status: 403, words }) => Err(ctx.denied(&words)),
            Err(TokenFailure::Refused { words, .. }) => Err(ctx.unauthorized(&words)),
            Err(TokenFailure::Failed(error)) => Err(error),
        }
    }

    /// Asks the token endpoint `realm` for a token for `service` and
    /// `scope` (none for a login check), with HTTP Basic when there are
    /// credentials. Does not cache.
    pub(crate) async fn fetch_token(
        &self,
        ctx: &FailureContext<'_>,
        origin: &str,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        credentials: &Credentials,
    ) -> Result<Grant, TokenFailure> {
        let realm_ctx = ctx.at(realm);
        let url = reqwest::Url::parse(realm).map_err(|_| {
            TokenFailure::Failed(ctx.protocol(
                Some(401),
                &format!("its token endpoint `{realm}` (the challenge's realm) is not a URL"),
            ))
        })?;
        match url.scheme() {
            "https" => {}
            // Credentials go over plain HTTP only where the registry itself
            // is spoken to that way (loopback, insecure registries).
            "http" if origin.starts_with("http://") || credentials.username().is_none() => {}
            _ => {
                return Err(TokenFailure::Failed(ctx.protocol(
                    Some(401),
                    &format!(
                        "its token endpoint `{realm}` is not HTTPS; Berth does not send \
                         credentials there"
                    ),
                )))
            }
        }
        let http = self.http(ctx).map_err(TokenFailure::Failed)?;
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = service {
            query.push(("service", service));
        }
        if let Some(scope) = scope {
            query.push(("scope", scope));
        }
        if let Some(username) = credentials.username() {
            query.push(("account", username));
        }
        let mut response = self
            .send_with_retry(&realm_ctx, || {
                let request = http.get(url.clone()).query(&query);
                authorize(request, &Authorization::Basic, credentials)
            })
            .await
            .map_err(TokenFailure::Failed)?;
        let status = response.status();
        if !status.is_success() {
            let body = read_error_body(&mut response).await;
            let (words, _) = registry_words(&body);
            return Err(match status.as_u16() {
                code @ (401 | 403) => TokenFailure::Refused {
                    status: code,
                    words,
                },
                code => TokenFailure::Failed(realm_ctx.protocol(Some(code), &words)),
            });
        }
        let body = match read_limited(&mut response, MAX_TOKEN_BODY_BYTES).await {
            Ok(Some(body)) => body,
            Ok(None) => {
                return Err(TokenFailure::Failed(realm_ctx.protocol(
                    Some(status.as_u16()),
                    "its token endpoint sent an answer too large to be a token",
                )))
            }
            Err(error) => return Err(TokenFailure::Failed(realm_ctx.request_failed(&error))),
        };
        let grant = parse_token_response(&body, SystemTime::now()).map_err(|reason| {
            TokenFailure::Failed(realm_ctx.protocol(
                Some(status.as_u16()),
                &format!("its token endpoint answered, but {reason}"),
            ))
        })?;
        tracing::debug!(
            origin,
            scope = scope.unwrap_or("-"),
            authenticated = credentials.username().is_some(),
            lifetime_s = grant.lifetime.as_secs(),
            "obtained a registry token"
        );
        Ok(grant)
    }

    /// Sends a request, waiting out short rate limits (see the module
    /// comment).
    pub(crate) async fn send_with_retry(
        &self,
        ctx: &FailureContext<'_>,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut retries = 0;
        loop {
            let mut response = build()
                .send()
                .await
                .map_err(|error| ctx.request_failed(&error))?;
            if response.status() != StatusCode::TOO_MANY_REQUESTS {
                return Ok(response);
            }
            let wait = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, SystemTime::now()));
            match wait {
                Some(wait) if wait <= MAX_RETRY_AFTER && retries < MAX_RATE_LIMIT_RETRIES => {
                    retries += 1;
                    tracing::debug!(
                        url = %ctx.base_url,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        retry = retries,
                        "registry is rate limiting; waiting as its Retry-After asks"
                    );
                    drop(response);
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    let body = read_error_body(&mut response).await;
                    let (words, _) = registry_words(&body);
                    return Err(ctx.rate_limited(&words, wait));
                }
            }
        }
    }
}

fn unreachable_response(ctx: &FailureContext<'_>) -> Result<Response, RegistryError> {
    // The loop above always returns in its last round; kept total anyway.
    Err(ctx.protocol(Some(401), "authentication did not settle"))
}

fn authorize(
    request: RequestBuilder,
    authorization: &Authorization,
    credentials: &Credentials,
) -> RequestBuilder {
    match (authorization, credentials) {
        (Authorization::Bearer(token), _) => request.bearer_auth(token.expose()),
        (Authorization::Basic, Credentials::Basic { username, password }) => {
            request.basic_auth(username, Some(password.expose()))
        }
        _ => request,
    }
}

/// Every challenge of every `WWW-Authenticate` header of an answer.
pub(crate) fn challenges(headers: &HeaderMap) -> Vec<super::challenge::Challenge> {
    parse_challenges(
        headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok()),
    )
}

/// The whole body, or `None` when it is longer than `limit`.
pub(crate) async fn read_limited(
    response: &mut Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// The start of an error answer's body (for the message); what cannot be
/// read is left out.
pub(crate) async fn read_error_body(response: &mut Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_SMALL_BODY_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_SMALL_BODY_BYTES {
            break;
        }
    }
    body
}
