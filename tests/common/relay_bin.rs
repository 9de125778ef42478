//! The real relay binary as tests drive it: `serve` on `127.0.0.1:0` with only the environment a
//! test gives, its JSON log read line by line from stderr, killed if the test fails first; plain
//! HTTP/1.1 requests over fresh connections; the bundled caller clips.
//!
//! Shared by the test binaries that run the real binary (`shutdown`, `cluster`, `browser`) through
//! `#[path = "common/relay_bin.rs"] mod relay_bin;`; each uses a different part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use twilio_realtime_relay::fake_openai::FakeOpenAi;
use twilio_realtime_relay::sim::CallOptions;
use twilio_realtime_relay::wav;

/// The relay binary, running; killed if a test fails before it exits.
pub struct Relay {
    pub pid: u32,
    pub addr: SocketAddr,
    pub dir: TempDir,
    /// JSON log lines from stderr, as they come.
    pub lines: mpsc::UnboundedReceiver<Value>,
    /// The log lines before "listening".
    pub startup: Vec<Value>,
    pub exit: Option<oneshot::Receiver<std::io::Result<ExitStatus>>>,
    pub exited: Arc<AtomicBool>,
}

impl Relay {
    /// Start `serve` with only the environment given here (plus PATH and HOME), bridging to `fake`.
    pub async fn start(fake: &FakeOpenAi, grace_secs: u64) -> Relay {
        Self::start_with(fake, grace_secs, &[]).await
    }

    /// [`Relay::start`] with more environment variables.
    pub async fn start_with(fake: &FakeOpenAi, grace_secs: u64, env: &[(&str, &str)]) -> Relay {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_twilio-realtime-relay"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("OPENAI_API_KEY", "sk-test-key")
            .env("OPENAI_REALTIME_URL", fake.url())
            .env("TRANSCRIPT_DIR", dir.path())
            .env("SHUTDOWN_GRACE_SECS", grace_secs.to_string())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            // No `.env` from the developer's checkout.
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the relay binary starts");
        let pid = child.id();
        let stderr = child.stderr.take().expect("piped stderr");
        let (line_tx, mut lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if line_tx.send(value).is_err() {
                    break;
                }
            }
        });
        let (exit_tx, exit) = oneshot::channel();
        let exited = Arc::new(AtomicBool::new(false));
        let flag = exited.clone();
        std::thread::spawn(move || {
            let status = child.wait();
            flag.store(true, Ordering::SeqCst);
            let _ = exit_tx.send(status);
        });
        let mut startup = Vec::new();
        let listening = loop {
            let line = next_line(&mut lines, Duration::from_secs(10), |_| true).await;
            if line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("listening"))
            {
                break line;
            }
            startup.push(line);
        };
        let addr = listening["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr in {listening}"));
        Relay {
            pid,
            addr,
            dir,
            lines,
            startup,
            exit: Some(exit),
            exited,
        }
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Wait for the log line `pred` accepts.
    pub async fn log(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        next_line(&mut self.lines, timeout, pred).await
    }

    /// The exit status, or `None` if the process is still running after `timeout`.
    pub async fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let exit = self.exit.as_mut().expect("exit awaited once");
        let status = tokio::time::timeout(timeout, exit).await.ok()?;
        self.exit = None;
        Some(status.expect("waiter thread").expect("wait"))
    }

    pub fn transcript(&self, call_sid: &str) -> Value {
        let path: PathBuf = self.dir.path().join(format!("{call_sid}.json"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&bytes).expect("transcript JSON")
    }

    pub fn call(&self, clips: Vec<Vec<u8>>) -> CallOptions {
        let mut opts = CallOptions::new(format!("ws://{}/media-stream", self.addr), clips);
        opts.quiet_ms = 400;
        opts.reply_timeout_ms = 8_000;
        opts.max_call_ms = 40_000;
        opts
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.exited.load(Ordering::SeqCst) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

pub async fn next_line(
    lines: &mut mpsc::UnboundedReceiver<Value>,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let found = tokio::time::timeout(timeout, async {
        while let Some(line) = lines.recv().await {
            if pred(&line) {
                return Some(line);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        Ok(None) => panic!("the relay's stderr ended before the expected log line"),
        Err(_) => panic!("no such log line within {timeout:?}"),
    }
}

/// `POST path` with a form body over a fresh connection; returns the status and the body.
pub async fn post_form(addr: SocketAddr, path: &str, form: &str) -> (u16, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    exchange(addr, &request).await
}

/// `GET path` over a fresh connection; returns the status and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    exchange(addr, &request).await
}

/// Send one HTTP/1.1 request and read the whole response (at most 5 s).
pub async fn exchange(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut response))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    let text = String::from_utf8(response).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, body.to_string())
}

/// A port nobody listens on now, for a `PUBLIC_URL` that must name the port before the server
/// binds it (HAProxy cannot report a port the kernel chose; a relay's TwiML and signatures use
/// `PUBLIC_URL`). Taken at once by the caller, so another process grabbing it is unlikely.
pub fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr").port()
}

pub fn clip(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "assets", name]
        .iter()
        .collect();
    wav::read_ulaw(&path).expect("bundled clip")
}
