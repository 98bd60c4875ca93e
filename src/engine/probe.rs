//! Health probes from outside the container: an HTTP GET against the
//! published port, judged by the status line. No curl or HEALTHCHECK is
//! needed in the image.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The result of one probe, in words for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// 2xx or 3xx.
    Healthy(u16),
    /// Any other status.
    Status(u16),
    /// No answer: refused, reset, timed out, garbage.
    NoAnswer(String),
}

impl Probe {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Probe::Healthy(_))
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Healthy(s) => write!(f, "HTTP {s}"),
            Probe::Status(s) => write!(f, "HTTP {s}"),
            Probe::NoAnswer(why) => write!(f, "no answer: {why}"),
        }
    }
}

/// GET `path` from `addr` (`host:port`) within `timeout`.
pub async fn http_get(addr: &str, path: &str, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, get(addr, path)).await {
        Ok(p) => p,
        Err(_) => Probe::NoAnswer(format!("timed out after {:.1}s", timeout.as_secs_f64())),
    }
}

async fn get(addr: &str, path: &str) -> Probe {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Probe::NoAnswer(e.to_string()),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: berth-probe\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return Probe::NoAnswer(e.to_string());
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut buf[got..]).await {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Probe::NoAnswer(e.to_string()),
        }
    }
    parse_status(&buf[..got])
}

/// The status code of an HTTP/1.x status line.
pub fn parse_status(head: &[u8]) -> Probe {
    let text = String::from_utf8_lossy(head);
    let mut parts = text.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => {
            if (200..400).contains(&code) {
                Probe::Healthy(code)
            } else {
                Probe::Status(code)
            }
        }
        _ if head.is_empty() => Probe::NoAnswer("connection closed without a response".into()),
        _ => Probe::NoAnswer("not an HTTP response".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Probe::Healthy(200));
        assert_eq!(parse_status(b"HTTP/1.0 302 Found"), Probe::Healthy(302));
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Unavailable"),
            Probe::Status(503)
        );
        assert!(matches!(parse_status(b""), Probe::NoAnswer(_)));
        assert!(matches!(
            parse_status(b"SSH-2.0-OpenSSH"),
            Probe::NoAnswer(_)
        ));
    }

    #[tokio::test]
    async fn refused_port_is_no_answer() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let p = http_get(&addr, "/", Duration::from_secs(1)).await;
        assert!(matches!(p, Probe::NoAnswer(_)), "{p}");
    }

    #[tokio::test]
    async fn real_server_answer() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 256];
            let _ = s.read(&mut b).await;
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
        });
        assert_eq!(
            http_get(&addr, "/healthz", Duration::from_secs(2)).await,
            Probe::Healthy(204)
        );
    }
}
