//! A relay on loopback that puts a network's distance between Berth and a
//! real server: every byte is delivered a fixed delay after it was read,
//! each way, in order, and a new connection's first bytes wait one round
//! trip more (the TCP handshake a real network would cost). It also
//! counts the HTTP request lines passing towards the server (`HEAD
//! /v2/…/manifests/t1`), keep-alive requests included.
//!
//! Nothing outside the process changes (no `tc`, no netem): it listens on
//! 127.0.0.1 or on a unix socket of its own and connects to the upstream
//! like any client. Bounded: it stops when dropped or at its lifetime,
//! whichever comes first, closing every connection it relays.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Where a relay listens or connects.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// `host:port`.
    Tcp(String),
    Unix(PathBuf),
}

/// Request lines seen, as `METHOD /path` (query and Docker's `/v1.NN`
/// prefix dropped), with their counts.
pub type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

pub struct LatencyRelay {
    /// What to give clients instead of the upstream.
    pub listen: Endpoint,
    counts: Counts,
    accepted: Arc<std::sync::atomic::AtomicU64>,
    /// The delay each way, in microseconds (changeable while it runs).
    delay_us: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// Chunks in flight per direction before the reader waits for the writer.
const CHUNKS_IN_FLIGHT: usize = 1024;

impl LatencyRelay {
    /// Listens on `127.0.0.1:0` in front of `upstream`.
    pub async fn tcp(
        upstream: Endpoint,
        delay: Duration,
        lifetime: Duration,
    ) -> std::io::Result<LatencyRelay> {
        Self::tcp_at("127.0.0.1:0", upstream, delay, lifetime).await
    }

    /// Listens on `bind` (`ip:port`) in front of `upstream`.
    pub async fn tcp_at(
        bind: &str,
        upstream: Endpoint,
        delay: Duration,
        lifetime: Duration,
    ) -> std::io::Result<LatencyRelay> {
        let listener = TcpListener::bind(bind).await?;
        let listen = Endpoint::Tcp(listener.local_addr()?.to_string());
        Ok(Self::spawn(
            listen,
            Listener::Tcp(listener),
            upstream,
            delay,
            lifetime,
        ))
    }

    /// Listens on the unix socket `path` (replaced if it exists).
    pub async fn unix(
        path: PathBuf,
        upstream: Endpoint,
        delay: Duration,
        lifetime: Duration,
    ) -> std::io::Result<LatencyRelay> {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        Ok(Self::spawn(
            Endpoint::Unix(path),
            Listener::Unix(listener),
            upstream,
            delay,
            lifetime,
        ))
    }

    fn spawn(
        listen: Endpoint,
        listener: Listener,
        upstream: Endpoint,
        delay: Duration,
        lifetime: Duration,
    ) -> LatencyRelay {
        let counts: Counts = Arc::default();
        let seen = counts.clone();
        let accepted: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let connected = accepted.clone();
        let delay_us = Arc::new(std::sync::atomic::AtomicU64::new(
            u64::try_from(delay.as_micros()).unwrap_or(u64::MAX),
        ));
        let current = delay_us.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (at the lifetime, or when the relay is
            // dropped and this task aborted) ends every connection.
            let mut connections = JoinSet::new();
            let accepting = async {
                loop {
                    let Some(client) = listener.accept().await else {
                        continue;
                    };
                    connected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (upstream, seen, delay) = (upstream.clone(), seen.clone(), current.clone());
                    connections.spawn(async move {
                        if let Ok(server) = connect(&upstream).await {
                            relay(client, server, delay, seen).await;
                        }
                    });
                    // Reap finished connections so the set stays small.
                    while connections.try_join_next().is_some() {}
                }
            };
            let _ = tokio::time::timeout(lifetime, accepting).await;
        });
        LatencyRelay {
            listen,
            counts,
            accepted,
            delay_us,
            task,
        }
    }

    /// `127.0.0.1:PORT` of a TCP relay (panics for a unix one).
    pub fn addr(&self) -> &str {
        match &self.listen {
            Endpoint::Tcp(addr) => addr,
            Endpoint::Unix(path) => panic!("relay listens on {}, not TCP", path.display()),
        }
    }

    /// `unix:///…` of a unix relay, `tcp://127.0.0.1:PORT` of a TCP one.
    pub fn docker_host(&self) -> String {
        match &self.listen {
            Endpoint::Tcp(addr) => format!("tcp://{addr}"),
            Endpoint::Unix(path) => format!("unix://{}", path.display()),
        }
    }

    /// Request lines counted so far.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Requests counted so far whose `METHOD /path` contains `fragment`.
    pub fn count(&self, fragment: &str) -> u64 {
        self.counts()
            .iter()
            .filter(|(line, _)| line.contains(fragment))
            .map(|(_, n)| n)
            .sum()
    }

    /// Changes the delay each way, for the bytes read from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us.store(
            u64::try_from(delay.as_micros()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Forgets the requests and connections counted so far.
    pub fn reset(&self) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.clear();
        }
        self.accepted.store(0, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for LatencyRelay {
    fn drop(&mut self) {
        self.task.abort();
        if let Endpoint::Unix(path) = &self.listen {
            let _ = std::fs::remove_file(path);
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

type Stream = Box<dyn Duplex>;
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

impl Listener {
    async fn accept(&self) -> Option<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await.ok()?;
                let _ = s.set_nodelay(true);
                Some(Box::new(s))
            }
            Listener::Unix(l) => Some(Box::new(l.accept().await.ok()?.0)),
        }
    }
}

async fn connect(upstream: &Endpoint) -> std::io::Result<Stream> {
    Ok(match upstream {
        Endpoint::Tcp(addr) => {
            let s = TcpStream::connect(addr).await?;
            let _ = s.set_nodelay(true);
            Box::new(s)
        }
        Endpoint::Unix(path) => Box::new(UnixStream::connect(path).await?),
    })
}

type Delay = Arc<std::sync::atomic::AtomicU64>;

fn now(delay: &Delay) -> Duration {
    Duration::from_micros(delay.load(std::sync::atomic::Ordering::SeqCst))
}

/// Relays both ways until both sides are done, each byte `delay` late; the
/// first bytes towards the server wait a round trip (`2 × delay`) more,
/// from the moment the client connected, as a TCP handshake would.
async fn relay(client: Stream, server: Stream, delay: Delay, seen: Counts) {
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, server_write) = tokio::io::split(server);
    let handshake_done = Instant::now() + 2 * now(&delay);
    let up = pipe(
        client_read,
        server_write,
        delay.clone(),
        Some(handshake_done),
        Some(seen),
    );
    let down = pipe(server_read, client_write, delay.clone(), None, None);
    tokio::join!(up, down);
}

/// One direction: a reader stamping each chunk with when it is due, and a
/// writer delivering it then. End of stream is passed on, also late.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    delay: Delay,
    not_before: Option<Instant>,
    seen: Option<Counts>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let read = async move {
        let mut scanner = LineScanner::default();
        let mut buf = vec![0_u8; 16 * 1024];
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            let sent = not_before.map_or(Instant::now(), |t| t.max(Instant::now()));
            if let Some(seen) = &seen {
                for request in scanner.feed(&buf[..n]) {
                    if let Ok(mut counts) = seen.lock() {
                        *counts.entry(request).or_default() += 1;
                    }
                }
            }
            // An empty chunk is the end of the stream.
            let due = sent + now(&delay);
            if tx.send((due, buf[..n].to_vec())).await.is_err() || n == 0 {
                return;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if chunk.is_empty() {
                break;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// Splits a byte stream into lines and picks out HTTP request lines.
#[derive(Default)]
pub struct LineScanner {
    line: Vec<u8>,
    /// The current line is too long to be a request line (a body).
    skipping: bool,
}

impl LineScanner {
    const MAX_LINE: usize = 8 * 1024;

    /// Returns `METHOD /path` for each request line completed by `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut found = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if !self.skipping {
                    if let Some(request) = request_line(&self.line) {
                        found.push(request);
                    }
                }
                self.line.clear();
                self.skipping = false;
            } else if !self.skipping {
                self.line.push(b);
                if self.line.len() > Self::MAX_LINE {
                    self.line.clear();
                    self.skipping = true;
                }
            }
        }
        found
    }
}

/// `METHOD /path` of an HTTP/1 request line, query and Docker's API
/// version prefix (`/v1.47`) dropped.
fn request_line(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    if !METHODS.contains(&method) || !target.starts_with('/') {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    let path = match path.strip_prefix("/v1.") {
        Some(rest) => rest.find('/').map_or(path, |i| &rest[i..]),
        None => path,
    };
    Some(format!("{method} {path}"))
}
