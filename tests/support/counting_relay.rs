//! A TCP relay on 127.0.0.1 in front of a real server that records the
//! HTTP request lines passing through it, so a test can count what Berth
//! asked a registry (`GET /v2/…/manifests/v1 HTTP/1.1`). Requests without
//! bodies only (registry reads): a body is not parsed and could hide a line.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

pub struct CountingRelay {
    /// `127.0.0.1:PORT`, to use in place of the upstream address.
    pub addr: String,
    lines: Arc<Mutex<Vec<String>>>,
    stopped: Arc<AtomicBool>,
}

impl CountingRelay {
    pub fn start(upstream: &str) -> CountingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().expect("relay address").to_string();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let stopped: Arc<AtomicBool> = Arc::default();
        let (seen, stop, upstream) = (lines.clone(), stopped.clone(), upstream.to_owned());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                relay(client, server, seen.clone());
            }
        });
        CountingRelay {
            addr,
            lines,
            stopped,
        }
    }

    /// Request lines seen so far whose path contains `fragment`.
    pub fn requests(&self, fragment: &str) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().filter(|l| l.contains(fragment)).cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and ends.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Copies both ways until either side closes, noting request lines.
fn relay(client: TcpStream, server: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let (Ok(mut client_read), Ok(mut server_write)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    let (mut server_read, mut client_write) = (server, client);
    thread::spawn(move || {
        let mut pending = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n @ 1..) = client_read.read(&mut buf) {
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&pending[..end]).into_owned();
                pending.drain(..end + 2);
                if is_request_line(&line) {
                    if let Ok(mut lines) = seen.lock() {
                        lines.push(line);
                    }
                }
            }
            if server_write.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server_write.shutdown(Shutdown::Write);
    });
    thread::spawn(move || {
        let _ = std::io::copy(&mut server_read, &mut client_write);
        let _ = client_write.shutdown(Shutdown::Write);
    });
}

fn is_request_line(line: &str) -> bool {
    let mut parts = line.split(' ');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE"), Some(_), Some(v), None)
            if v.starts_with("HTTP/1.")
    )
}
