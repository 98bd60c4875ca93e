//! The token service of the dev environment's token-auth registry
//! (`tests/devenv.sh`: distribution on 127.0.0.1:5002 with `auth: token`,
//! realm `http://127.0.0.1:5003/token`), written for the tests: it checks
//! HTTP Basic credentials (`berth` / `berth-pass`; no credentials is an
//! anonymous token with no access), and issues ES256 JWTs signed with the
//! test-only key in `tests/fixtures/token-auth/`, the certificate in the
//! `x5c` header (what distribution 2.8 verifies against its
//! `rootcertbundle`). It grants a known user the `pull`/`push` actions it
//! asks for, and counts requests and remembers every token it issued so
//! tests can check caching and that no token leaks.
//!
//! One instance per test binary, on its own thread and runtime (each test
//! has its own runtime, which ends with the test); [`shared`] starts it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const TOKEN_SERVICE_ADDR: &str = "127.0.0.1:5003";
pub const TOKEN_REGISTRY: &str = "127.0.0.1:5002";
pub const SERVICE: &str = "berth-test-registry";
pub const ISSUER: &str = "berth-test-issuer";
pub const USER: &str = "berth";
pub const PASSWORD: &str = "berth-pass";
/// Lifetime of the tokens issued.
pub const EXPIRES_IN: u64 = 300;

const KEY_PEM: &str = include_str!("../fixtures/token-auth/key.pem");
const CERT_PEM: &str = include_str!("../fixtures/token-auth/cert.pem");

/// What the tests can ask the running service.
pub struct TokenService {
    /// Token requests by `(account, scope)`; account `""` is anonymous,
    /// scope `""` a request without scope (a login check).
    requests: Mutex<HashMap<(String, String), usize>>,
    /// Every token issued, to look for in logs and messages.
    issued: Mutex<Vec<String>>,
    next_id: AtomicU64,
}

impl TokenService {
    pub fn requests(&self, account: &str, scope: &str) -> usize {
        self.requests
            .lock()
            .expect("lock")
            .get(&(account.to_owned(), scope.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn issued_tokens(&self) -> Vec<String> {
        self.issued.lock().expect("lock").clone()
    }
}

/// The service, started on first use (bind retried for a while in case
/// another test binary holds the port right now).
pub fn shared() -> &'static TokenService {
    static SERVICE_STATE: OnceLock<&'static TokenService> = OnceLock::new();
    SERVICE_STATE.get_or_init(|| {
        let state: &'static TokenService = Box::leak(Box::new(TokenService {
            requests: Mutex::new(HashMap::new()),
            issued: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        }));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("token-service".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("token service runtime");
                runtime.block_on(async move {
                    let mut listener = None;
                    for _ in 0..120 {
                        match tokio::net::TcpListener::bind(TOKEN_SERVICE_ADDR).await {
                            Ok(bound) => {
                                listener = Some(bound);
                                break;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                        }
                    }
                    let Some(listener) = listener else {
                        let _ = ready_tx.send(false);
                        return;
                    };
                    let _ = ready_tx.send(true);
                    serve(listener, state).await;
                });
            })
            .expect("token service thread");
        let ready = ready_rx
            .recv_timeout(Duration::from_secs(70))
            .unwrap_or(false);
        assert!(
            ready,
            "could not bind the token service on {TOKEN_SERVICE_ADDR}"
        );
        state
    })
}

async fn serve(listener: tokio::net::TcpListener, state: &'static TokenService) {
    let key = signing_key();
    let cert_der = pem_body(CERT_PEM);
    let key = std::sync::Arc::new(key);
    let cert_b64 = std::sync::Arc::new(STANDARD.encode(cert_der));
    while let Ok((mut socket, _)) = listener.accept().await {
        let key = key.clone();
        let cert_b64 = cert_b64.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => head.extend_from_slice(&buffer[..read]),
                }
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let (status, body) = answer(&head, state, &key, &cert_b64);
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

fn answer(
    head: &str,
    state: &TokenService,
    key: &EcdsaKeyPair,
    cert_b64: &str,
) -> (&'static str, String) {
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/token" {
        return ("404 Not Found", r#"{"details":"not found"}"#.to_owned());
    }
    let authorization = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.trim().to_owned());
    let account = match authorization {
        None => String::new(),
        Some(value) => {
            let decoded = value
                .strip_prefix("Basic ")
                .and_then(|b64| STANDARD.decode(b64).ok())
                .and_then(|raw| String::from_utf8(raw).ok());
            match decoded.as_deref().and_then(|pair| pair.split_once(':')) {
                Some((USER, PASSWORD)) => USER.to_owned(),
                _ => {
                    return (
                        "401 Unauthorized",
                        r#"{"details":"incorrect username or password"}"#.to_owned(),
                    )
                }
            }
        }
    };
    let mut service = None;
    let mut scopes = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match name {
            "service" => service = Some(value),
            "scope" => scopes.push(value),
            _ => {}
        }
    }
    if service.as_deref() != Some(SERVICE) {
        return (
            "400 Bad Request",
            r#"{"details":"unknown service"}"#.to_owned(),
        );
    }
    *state
        .requests
        .lock()
        .expect("lock")
        .entry((account.clone(), scopes.join(" ")))
        .or_insert(0) += 1;

    // A known user gets the pull/push it asks for; anonymous gets nothing.
    let access: Vec<serde_json::Value> = if account.is_empty() {
        Vec::new()
    } else {
        scopes
            .iter()
            .filter_map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let kind = parts.next()?;
                let name = parts.next()?;
                let actions: Vec<&str> = parts
                    .next()?
                    .split(',')
                    .filter(|action| matches!(*action, "pull" | "push"))
                    .collect();
                Some(json!({"type": kind, "name": name, "actions": actions}))
            })
            .collect()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [cert_b64]});
    let claims = json!({
        "iss": ISSUER,
        "sub": account,
        "aud": SERVICE,
        "exp": now + EXPIRES_IN,
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": format!("berth-test-{now}-{id}"),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .expect("sign");
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    );
    state.issued.lock().expect("lock").push(token.clone());
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": EXPIRES_IN,
        "issued_at": rfc3339(now),
    });
    ("200 OK", body.to_string())
}

fn signing_key() -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pem_body(KEY_PEM))
        .expect("tests/fixtures/token-auth/key.pem is a PKCS#8 P-256 key")
}

/// The DER inside a one-block PEM file.
fn pem_body(pem: &str) -> Vec<u8> {
    let base64: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(base64).expect("PEM body")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' if at + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[at + 1..at + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        at += 3;
                    }
                    None => {
                        out.push(b'%');
                        at += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                at += 1;
            }
            byte => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `2024-01-01T00:00:00Z` for Unix seconds.
fn rfc3339(seconds: u64) -> String {
    let days = i64::try_from(seconds / 86_400).unwrap_or(0);
    let rest = seconds % 86_400;
    // H. Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[test]
fn token_service_helpers() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_704_067_200), "2024-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_709_208_000), "2024-02-29T12:00:00Z");
    assert_eq!(
        percent_decode("repository%3Aberth%2Fprivate%3Apull%2Cpush"),
        "repository:berth/private:pull,push"
    );
    signing_key();
}
