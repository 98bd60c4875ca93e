//! What the registry layer remembers about authentication, per process:
//! which scheme each registry asked for (so Basic goes out pre-emptively
//! and a known token realm is asked before the request, not after a 401),
//! and the bearer tokens obtained, keyed by registry, scope and credential
//! identity and kept until shortly before they expire. Also reading a token
//! endpoint's answer and the dates registries send (`issued_at`,
//! `Retry-After`). Tokens live in [`Token`], which never prints its value.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::challenge::AuthScheme;
use super::credentials::{CredentialKey, Secret};

/// A token's lifetime when the token endpoint gives none, and the least
/// Berth assumes (as Docker does).
pub(crate) const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are refreshed this long before they expire (at most; a tenth of
/// a short lifetime otherwise), so none expires between check and use.
const REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// Bounds on the caches; a process normally needs a handful of entries.
const MAX_TOKENS: usize = 512;
const MAX_SCHEMES: usize = 256;

/// A bearer token. `Debug` prints `<redacted>`.
#[derive(Clone)]
pub(crate) struct Token(Secret);

impl Token {
    pub(crate) fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A token and how long it may be used from now.
pub(crate) struct Grant {
    pub(crate) token: Token,
    pub(crate) lifetime: Duration,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    /// `scheme://host[:port]` of the registry API.
    origin: String,
    scope: String,
    credentials: CredentialKey,
}

struct CachedToken {
    token: Token,
    refresh_at: Instant,
}

/// The per-process authentication memory (see the module comment).
#[derive(Default)]
pub(crate) struct AuthCache {
    schemes: Mutex<HashMap<String, AuthScheme>>,
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
}

impl AuthCache {
    /// The scheme `origin` asked for last, if it ever did.
    pub(crate) fn scheme(&self, origin: &str) -> Option<AuthScheme> {
        lock(&self.schemes).get(origin).cloned()
    }

    pub(crate) fn remember_scheme(&self, origin: &str, scheme: AuthScheme) {
        let mut schemes = lock(&self.schemes);
        if schemes.len() >= MAX_SCHEMES && !schemes.contains_key(origin) {
            schemes.clear();
        }
        schemes.insert(origin.to_owned(), scheme);
    }

    /// A cached token still valid for a while, if any.
    pub(crate) fn token(
        &self,
        origin: &str,
        scope: &str,
        credentials: &CredentialKey,
    ) -> Option<Token> {
        let key = TokenKey {
            origin: origin.to_owned(),
            scope: scope.to_owned(),
            credentials: credentials.clone(),
        };
        let mut tokens = lock(&self.tokens);
        match tokens.get(&key) {
            Some(cached) if Instant::now() < cached.refresh_at => Some(cached.token.clone()),
            Some(_) => {
                tokens.remove(&key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn store_token(
        &self,
        origin: &str,
        scope: &str,
        credentials: &CredentialKey,
        grant: &Grant,
    ) {
        let now = Instant::now();
        let refresh_at = now + usable_for(grant.lifetime);
        let mut tokens = lock(&self.tokens);
        if tokens.len() >= MAX_TOKENS {
            tokens.retain(|_, cached| now < cached.refresh_at);
            if tokens.len() >= MAX_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(
            TokenKey {
                origin: origin.to_owned(),
                scope: scope.to_owned(),
                credentials: credentials.clone(),
            },
            CachedToken {
                token: grant.token.clone(),
                refresh_at,
            },
        );
    }

    /// Drops a token the registry refused although it had not expired.
    pub(crate) fn forget_token(&self, origin: &str, scope: &str, credentials: &CredentialKey) {
        lock(&self.tokens).remove(&TokenKey {
            origin: origin.to_owned(),
            scope: scope.to_owned(),
            credentials: credentials.clone(),
        });
    }

    #[cfg(test)]
    pub(crate) fn token_count(&self) -> usize {
        lock(&self.tokens).len()
    }
}

/// A poisoned lock only means a panic elsewhere mid-update; the maps stay
/// sound (at worst an entry is missing).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long a token with `lifetime` is used before it is refreshed.
fn usable_for(lifetime: Duration) -> Duration {
    lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 10))
}

/// A token endpoint's JSON answer (Docker's token spec, plus OAuth2's
/// `access_token` spelling). Not `Debug`: it holds the token.
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    issued_at: Option<String>,
}

/// Reads a token endpoint's 200 answer. The error says what is wrong,
/// never quoting the body (it may hold a token).
pub(crate) fn parse_token_response(body: &[u8], now: SystemTime) -> Result<Grant, String> {
    let response: TokenResponse = serde_json::from_slice(body)
        .map_err(|_| "its answer is not the JSON a token endpoint sends".to_owned())?;
    let token = [response.token, response.access_token]
        .into_iter()
        .flatten()
        .find(|token| !token.is_empty())
        .ok_or_else(|| "its answer holds neither `token` nor `access_token`".to_owned())?;
    let expires_in = response
        .expires_in
        .and_then(|seconds| u64::try_from(seconds).ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .max(DEFAULT_TOKEN_LIFETIME);
    // With `issued_at` the token expires at issued_at + expires_in; a clock
    // ahead of the registry's never makes the lifetime longer than given.
    let lifetime = match response
        .issued_at
        .as_deref()
        .and_then(parse_rfc3339)
        .and_then(|issued| issued.checked_add(expires_in))
    {
        Some(expires_at) => expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(expires_in),
        None => expires_in,
    };
    Ok(Grant {
        token: Token(Secret::new(token)),
        lifetime,
    })
}

/// `2024-01-01T00:00:00Z`, `2024-01-01T00:00:00.123456789+02:00`.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let (date, rest) = text.split_once(['T', 't', ' '])?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    let (time, offset_seconds) = if let Some(time) = rest.strip_suffix(['Z', 'z']) {
        (time, 0i64)
    } else {
        let split = rest.rfind(['+', '-'])?;
        let (time, offset) = rest.split_at(split);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = offset[1..].split_once(':')?;
        let hours: i64 = hours.parse().ok()?;
        let minutes: i64 = minutes.parse().ok()?;
        (time, sign * (hours * 3600 + minutes * 60))
    };
    let time = time.split('.').next()?;
    let mut time_parts = time.splitn(3, ':');
    let hour: u32 = time_parts.next()?.parse().ok()?;
    let minute: u32 = time_parts.next()?.parse().ok()?;
    let second: u32 = time_parts.next()?.parse().ok()?;
    to_system_time(year, month, day, hour, minute, second, offset_seconds)
}

/// An HTTP date (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`, and the
/// obsolete RFC 850 form `Sunday, 06-Nov-94 08:49:37 GMT`).
pub(crate) fn parse_http_date(text: &str) -> Option<SystemTime> {
    let (_, rest) = text.trim().split_once(',')?;
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let (day, month, year, time) = match parts.as_slice() {
        [day, month, year, time, "GMT"] => (*day, *month, year.parse::<i64>().ok()?, *time),
        [date, time, "GMT"] => {
            let mut pieces = date.splitn(3, '-');
            let day = pieces.next()?;
            let month = pieces.next()?;
            let year: i64 = pieces.next()?.parse().ok()?;
            let year = if year < 70 { 2000 + year } else { 1900 + year };
            (day, month, year, *time)
        }
        _ => return None,
    };
    let month = match month {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let mut time_parts = time.splitn(3, ':');
    let hour: u32 = time_parts.next()?.parse().ok()?;
    let minute: u32 = time_parts.next()?.parse().ok()?;
    let second: u32 = time_parts.next()?.parse().ok()?;
    to_system_time(year, month, day.parse().ok()?, hour, minute, second, 0)
}

/// `Retry-After`: delay seconds or an HTTP date (a date in the past is no
/// wait at all).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn to_system_time(
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    offset_seconds: i64,
) -> Option<SystemTime> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // A leap second reads as the next second's start.
    if second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
            - offset_seconds;
    let seconds = u64::try_from(seconds).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn dates_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(at(0)));
        assert_eq!(
            parse_rfc3339("2024-01-01T00:00:00Z"),
            Some(at(1_704_067_200))
        );
        assert_eq!(
            parse_rfc3339("2024-01-01T02:00:00.123456789+02:00"),
            Some(at(1_704_067_200))
        );
        assert_eq!(
            parse_rfc3339("2023-12-31T23:30:00-00:30"),
            Some(at(1_704_067_200))
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00Z"),
            Some(at(1_709_208_000))
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);

        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(at(784_111_777))
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(at(784_111_777))
        );
        assert_eq!(parse_http_date("06 Nov 1994"), None);
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = at(784_111_770);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_800)),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn token_answers_in_both_spellings_with_lifetimes() {
        let now = at(1_704_067_200);
        let grant =
            parse_token_response(br#"{"token":"t1","expires_in":300}"#, now).expect("token");
        assert_eq!(grant.token.expose(), "t1");
        assert_eq!(grant.lifetime, Duration::from_secs(300));

        let grant = parse_token_response(br#"{"access_token":"t2"}"#, now).expect("token");
        assert_eq!(grant.token.expose(), "t2");
        assert_eq!(grant.lifetime, DEFAULT_TOKEN_LIFETIME);

        // Empty `token`, real `access_token`; a too-short lifetime is 60 s.
        let grant =
            parse_token_response(br#"{"token":"","access_token":"t3","expires_in":5}"#, now)
                .expect("token");
        assert_eq!(grant.token.expose(), "t3");
        assert_eq!(grant.lifetime, Duration::from_secs(60));

        // Issued 100 s ago with 300 s: 200 s left. Issued "in the future"
        // (clock skew): never more than expires_in.
        let grant = parse_token_response(
            br#"{"token":"t","expires_in":300,"issued_at":"2023-12-31T23:58:20Z"}"#,
            now,
        )
        .expect("token");
        assert_eq!(grant.lifetime, Duration::from_secs(200));
        let grant = parse_token_response(
            br#"{"token":"t","expires_in":300,"issued_at":"2024-01-01T01:00:00Z"}"#,
            now,
        )
        .expect("token");
        assert_eq!(grant.lifetime, Duration::from_secs(300));

        let error = parse_token_response(br#"{"details":"secret-ish"}"#, now)
            .err()
            .expect("no token");
        assert!(!error.contains("secret-ish"), "{error}");
        assert!(parse_token_response(b"<html>", now).is_err());
        assert_eq!(format!("{:?}", grant.token), "Token(<redacted>)");
    }

    #[test]
    fn tokens_are_cached_per_origin_scope_and_credentials_until_refresh() {
        let cache = AuthCache::default();
        let alice = CredentialKey::Anonymous;
        let grant = Grant {
            token: Token(Secret::new("abc")),
            lifetime: Duration::from_secs(300),
        };
        cache.store_token("http://r", "repository:a:pull", &alice, &grant);
        assert!(cache
            .token("http://r", "repository:a:pull", &alice)
            .is_some());
        assert!(cache
            .token("http://r", "repository:b:pull", &alice)
            .is_none());
        assert!(cache
            .token("https://r", "repository:a:pull", &alice)
            .is_none());
        cache.forget_token("http://r", "repository:a:pull", &alice);
        assert!(cache
            .token("http://r", "repository:a:pull", &alice)
            .is_none());

        // A token that is already due for refresh is not handed out.
        let expired = Grant {
            token: Token(Secret::new("old")),
            lifetime: Duration::ZERO,
        };
        cache.store_token("http://r", "s", &alice, &expired);
        assert!(cache.token("http://r", "s", &alice).is_none());
        assert_eq!(cache.token_count(), 0);

        assert_eq!(usable_for(Duration::from_secs(60)), Duration::from_secs(54));
        assert_eq!(
            usable_for(Duration::from_secs(3600)),
            Duration::from_secs(3570)
        );
    }

    #[test]
    fn schemes_are_remembered_per_origin() {
        let cache = AuthCache::default();
        assert_eq!(cache.scheme("http://r"), None);
        cache.remember_scheme("http://r", AuthScheme::Basic);
        assert_eq!(cache.scheme("http://r"), Some(AuthScheme::Basic));
        assert_eq!(cache.scheme("https://r"), None);
    }
}
