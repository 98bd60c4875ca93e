//! A constant HTTP load that never retries, for the zero-failed-requests
//! tests: half of the workers keep one connection alive for all their
//! requests, half open a new connection per request. Every request that
//! does not come back as a whole 2xx answer counts as failed, with what
//! went wrong; bodies are counted, and per kept-alive connection the order
//! of versions is checked (once a connection saw the new version, it never
//! sees the old one again).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one worker saw.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: Vec<String>,
    bodies: BTreeMap<String, u64>,
    /// Bodies in the order seen, kept-alive workers only (to check order).
    sequence: Vec<String>,
    reconnects: u64,
}

/// The whole load's outcome.
#[derive(Debug, Default)]
pub struct Report {
    pub ok: u64,
    /// Every failed request, in words (connect, write, read, status).
    pub failed: Vec<String>,
    /// Body → how many answers carried it.
    pub bodies: BTreeMap<String, u64>,
    /// Per kept-alive worker, the bodies in the order seen.
    pub sequences: Vec<Vec<String>>,
    pub elapsed: Duration,
    /// `Connection: close` answers that made a kept-alive worker reconnect.
    pub reconnects: u64,
}

impl Report {
    pub fn total(&self) -> u64 {
        self.ok + self.failed.len() as u64
    }

    /// Requests per second over the run.
    pub fn rate(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(0.001)
    }

    /// Panics with the details unless every request succeeded, at least
    /// `min_rate` per second were made, and every kept-alive connection
    /// went from `old` to `new` at most once (never back).
    pub fn assert_clean(&self, min_rate: f64, old: &str, new: &str) {
        self.assert_served(min_rate);
        for seq in &self.sequences {
            let mut seen_new = false;
            for body in seq {
                if body == new {
                    seen_new = true;
                } else if body == old && seen_new {
                    panic!("a kept-alive connection saw {old:?} again after {new:?}");
                }
            }
        }
    }

    /// Panics with the details unless every request succeeded and at
    /// least `min_rate` per second were made (a rolling update, where old
    /// and new answer side by side for a while).
    pub fn assert_served(&self, min_rate: f64) {
        assert!(
            self.failed.is_empty(),
            "{} of {} requests failed: {:?}",
            self.failed.len(),
            self.total(),
            &self.failed[..self.failed.len().min(10)]
        );
        assert!(
            self.rate() >= min_rate,
            "the load ran at {:.0} requests/s, below the {min_rate} the test needs",
            self.rate()
        );
    }
}

/// A load running in background threads until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    started: Instant,
    workers: Vec<(bool, JoinHandle<Tally>)>,
}

impl Load {
    /// `workers` kept-alive and `workers` new-connection workers against
    /// `addr` (`ip:port`), each at `per_worker_rate` requests per second,
    /// with `host` as the Host header.
    pub fn start(addr: &str, host: &str, workers: usize, per_worker_rate: f64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let pause = Duration::from_secs_f64(1.0 / per_worker_rate);
        let mut handles = Vec::new();
        for keep_alive in [true, false] {
            for _ in 0..workers {
                let (addr, host, stop) = (addr.to_owned(), host.to_owned(), stop.clone());
                handles.push((
                    keep_alive,
                    std::thread::spawn(move || worker(&addr, &host, keep_alive, pause, &stop)),
                ));
            }
        }
        Load {
            stop,
            started: Instant::now(),
            workers: handles,
        }
    }

    /// Stops the workers and sums up.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        let mut report = Report::default();
        for (keep_alive, handle) in self.workers {
            let tally = handle.join().expect("load worker panicked");
            report.ok += tally.ok;
            report.failed.extend(tally.failed);
            report.reconnects += tally.reconnects;
            for (body, n) in tally.bodies {
                *report.bodies.entry(body).or_default() += n;
            }
            if keep_alive {
                report.sequences.push(tally.sequence);
            }
        }
        report.elapsed = self.started.elapsed();
        report
    }
}

fn worker(addr: &str, host: &str, keep_alive: bool, pause: Duration, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<BufReader<TcpStream>> = None;
    // Requests are due at a fixed rate: a slow one is followed at once by
    // the next one due, so the rate holds.
    let mut due = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let result = (|| -> Result<(String, bool), String> {
            if conn.is_none() {
                conn = Some(BufReader::new(connect(addr)?));
            }
            let c = conn.as_mut().expect("connection");
            request(c, host, keep_alive)
        })();
        match result {
            Ok((body, close)) => {
                tally.ok += 1;
                *tally.bodies.entry(body.clone()).or_default() += 1;
                if keep_alive {
                    tally.sequence.push(body);
                }
                if close || !keep_alive {
                    if keep_alive {
                        tally.reconnects += 1;
                    }
                    conn = None;
                }
            }
            Err(e) => {
                tally.failed.push(format!(
                    "{} {e}",
                    if keep_alive {
                        "kept-alive:"
                    } else {
                        "new connection:"
                    }
                ));
                conn = None;
            }
        }
        due += pause;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > pause * 20 {
            // Far behind (a very slow request): do not burst to catch up.
            due = now;
        }
    }
    tally
}

fn connect(addr: &str) -> Result<TcpStream, String> {
    let sock = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let s = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.set_write_timeout(Some(Duration::from_secs(10))).ok();
    s.set_nodelay(true).ok();
    Ok(s)
}

/// One GET on `c`: the body (trimmed) and whether the server closes.
fn request(
    c: &mut BufReader<TcpStream>,
    host: &str,
    keep_alive: bool,
) -> Result<(String, bool), String> {
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: berth-load\r\n{}\r\n",
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        }
    );
    c.get_mut()
        .write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut status = String::new();
    c.read_line(&mut status)
        .map_err(|e| format!("read status: {e}"))?;
    if status.is_empty() {
        return Err("the server closed the connection without an answer".into());
    }
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status:?}"))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = false;
    loop {
        let mut line = String::new();
        c.read_line(&mut line)
            .map_err(|e| format!("read headers: {e}"))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        } else if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            c.read_line(&mut size)
                .map_err(|e| format!("read chunk: {e}"))?;
            let n = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| format!("bad chunk size {size:?}"))?;
            let mut chunk = vec![0; n + 2];
            c.read_exact(&mut chunk)
                .map_err(|e| format!("read chunk: {e}"))?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body
    } else if let Some(n) = length {
        let mut body = vec![0; n];
        c.read_exact(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
        body
    } else {
        close = true;
        let mut body = Vec::new();
        c.read_to_end(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
        body
    };
    let body = String::from_utf8_lossy(&body).trim().to_owned();
    if !(200..300).contains(&code) {
        return Err(format!("HTTP {code}: {body}"));
    }
    Ok((body, close))
}
