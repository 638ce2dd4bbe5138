//! A running `hotstock serve` for integration tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str]) -> Server {
        Server::start_logging(dir, extra, Stdio::null())
    }

    /// `start_with`, with the server's log lines (stderr) going to `logs`.
    pub fn start_logging(dir: &Path, extra: &[&str], logs: Stdio) -> Server {
        Server::start_at(dir, "127.0.0.1:0", extra, logs)
    }

    /// `start_logging` on the address `listen` (for nodes that must know
    /// each other's addresses before they start).
    pub fn start_at(dir: &Path, listen: &str, extra: &[&str], logs: Stdio) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hotstock"))
            .args([
                "serve",
                "--listen",
                listen,
                "--durability",
                "sync",
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(logs)
            .spawn()
            .expect("start hotstock serve");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server announces its address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .expect("listening line")
            .parse()
            .expect("address");
        Server { child, addr }
    }

    /// One request on a fresh connection; returns the status and JSON body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.raw(method, path, body.as_bytes(), headers)
    }

    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        request(self.addr, method, path, body, headers)
    }

    /// SIGTERM, and the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait").code()
    }

    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }
}

/// A test that fails before stopping its server must not leave it running
/// (a cluster node left behind keeps polling the escrow, and every later
/// measurement on the machine pays for it).
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One request to `addr` on a fresh connection; the status and JSON body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, Value) {
    try_request(addr, method, path, body, headers)
        .unwrap_or_else(|error| panic!("{method} {path} at {addr}: {error}"))
}

/// `request`, with a connection refused or cut off (a killed server) as
/// an error rather than a panic.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = (text.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line (cut off?)"))?;
    let json = text.split_once("\r\n\r\n").map_or(Value::Null, |(_, b)| {
        serde_json::from_str(b).unwrap_or(Value::Null)
    });
    Ok((status, json))
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hotstock-http-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The whole `/metrics` response, status line included.
pub fn metrics_text(server: &Server) -> String {
    metrics_response(server, "")
}

/// The `/metrics` response, asked with an `Authorization` header.
pub fn metrics_text_with(server: &Server, auth: &str) -> String {
    metrics_response(server, &format!("Authorization: {auth}\r\n"))
}

fn metrics_response(server: &Server, headers: &str) -> String {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// One value from `/metrics`.
pub fn metric(server: &Server, name: &str) -> u64 {
    let text = metrics_text(server);
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}
