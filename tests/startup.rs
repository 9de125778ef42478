//! Start-up of the real binary as a newcomer or an operator meets it: the shipped `.env.example`
//! copied to `.env`, a `.env` with a typo or a syntax error, configuration that must be refused
//! or warned about, and what the logs look like when stderr is not a terminal.
//!
//! Each test runs `twilio-realtime-relay serve` in a fresh directory with only the environment
//! given (plus `PATH` and `HOME`), on `127.0.0.1:0`, and reads its stderr line by line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long start-up (or refusing to start) may take.
const START: Duration = Duration::from_secs(10);

/// The relay binary, running in its own directory; killed when dropped.
struct Relay {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stderr line read so far.
    seen: Vec<String>,
    _dir: TempDir,
}

impl Relay {
    /// Start `serve` in a new directory holding `dot_env` as `.env` (if given), with `env`.
    fn start(dot_env: Option<&str>, env: &[(&str, &str)]) -> Relay {
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(text) = dot_env {
            std::fs::write(dir.path().join(".env"), text).expect("write .env");
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_twilio-realtime-relay"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("TRANSCRIPT_DIR", dir.path().join("transcripts"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the relay binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Relay {
            child,
            lines,
            seen: Vec::new(),
            _dir: dir,
        }
    }

    /// The first stderr line `pred` accepts, within [`START`]; panics with everything seen.
    fn line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + START;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no such line ({e:?}); stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Wait for the `listening` line (JSON or text logs).
    fn listening(&mut self) -> String {
        self.line(|l| l.contains("listening"))
    }

    /// The exit status and the whole of stderr, once the process ends by itself within [`START`].
    fn exit(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + START;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                // The reader ends when the process closes stderr, i.e. exits.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("still running after {START:?}:\n{}", self.seen.join("\n"))
                }
            }
        }
        let status = self.child.wait().expect("wait");
        (status, self.seen.join("\n"))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn env_example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example");
    std::fs::read_to_string(path).expect(".env.example")
}

#[test]
fn the_shipped_env_example_copied_to_env_starts_the_server() {
    let mut relay = Relay::start(Some(&env_example()), &[("LOG_FORMAT", "json")]);
    let listening = json(&relay.listening());
    assert!(listening["addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // The example sets no key: the relay says so instead of failing.
    assert!(
        relay
            .seen
            .iter()
            .any(|l| l.contains("OPENAI_API_KEY is not set")),
        "{:?}",
        relay.seen
    );
}

#[test]
fn empty_values_in_the_environment_count_as_unset_too() {
    let mut relay = Relay::start(
        None,
        &[
            ("LOG_FORMAT", "json"),
            ("WORKER_THREADS", ""),
            ("MAX_CONCURRENT_CALLS", " "),
            ("VAD_THRESHOLD", ""),
            ("TWILIO_VALIDATE_SIGNATURE", ""),
        ],
    );
    relay.listening();
}

#[test]
fn a_env_syntax_error_names_its_line_and_never_the_value() {
    let dot_env = "PORT=0\n# the key\nOPENAI_API_KEY=sk-live secret\nVOICE=marin\n";
    let (status, stderr) = Relay::start(Some(dot_env), &[]).exit();
    assert!(!status.success());
    assert!(stderr.contains(".env: line 3 (OPENAI_API_KEY)"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

#[test]
fn a_misspelt_env_name_is_warned_about_with_the_name_it_likely_means() {
    let dot_env = "VOCIE=cedar\nNODE_ENV=production\nopenai_api_key=sk-test\n";
    let mut relay = Relay::start(Some(dot_env), &[("LOG_FORMAT", "json")]);
    relay.listening();
    let warnings: Vec<Value> = relay
        .seen
        .iter()
        .map(|l| json(l))
        .filter(|l| l["meant"].is_string())
        .collect();
    let got: Vec<(&str, &str, u64)> = warnings
        .iter()
        .map(|w| {
            assert_eq!(w["level"], "WARN");
            (
                w["variable"].as_str().unwrap(),
                w["meant"].as_str().unwrap(),
                w["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("VOCIE", "VOICE", 1),
            ("openai_api_key", "OPENAI_API_KEY", 3)
        ],
        "NODE_ENV is not ours and not close: no warning"
    );
    assert!(warnings[0]["message"]
        .as_str()
        .unwrap()
        .contains("did you mean VOICE?"));
}

#[test]
fn an_unknown_voice_or_a_public_url_with_a_path_stops_start_up_naming_the_variable() {
    for (variable, value) in [
        ("VOICE", "nonsense"),
        ("PUBLIC_URL", "https://relay.example.com/incoming-call"),
    ] {
        let (status, stderr) = Relay::start(None, &[(variable, value)]).exit();
        assert!(!status.success(), "{variable}={value} was accepted");
        assert!(stderr.contains(&format!("error: {variable}: ")), "{stderr}");
    }
}

#[test]
fn a_grace_period_longer_than_the_platforms_allow_is_warned_about() {
    let mut relay = Relay::start(
        None,
        &[("LOG_FORMAT", "json"), ("SHUTDOWN_GRACE_SECS", "60")],
    );
    relay.listening();
    let warning = relay
        .seen
        .iter()
        .map(|l| json(l))
        .find(|l| l["variable"] == "SHUTDOWN_GRACE_SECS")
        .unwrap_or_else(|| panic!("no warning: {:?}", relay.seen));
    assert_eq!(warning["level"], "WARN");
    assert!(
        warning["message"].as_str().unwrap().contains("30 s"),
        "{warning}"
    );
}
#[test]
fn text_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let mut relay = Relay::start(None, &[("LOG_FORMAT", "text")]);
    relay.listening();
    for line in &relay.seen {
        assert!(!line.contains('\u{1b}'), "ANSI escape in {line:?}");
    }
    assert!(
        relay.seen.iter().any(|l| l.contains(" WARN ")),
        "{:?}",
        relay.seen
    );
}

#[test]
fn a_broken_tools_file_stops_start_up_naming_the_file_the_entry_and_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tools.json");
    let file = r#"{"functions":[{"name":"lookup_order","url":"ftp://backend.example.com/x"}]}"#;
    std::fs::write(&path, file).expect("write tools file");
    let path = path.to_str().expect("utf-8 path");
    let secret = (
        "TOOLS_WEBHOOK_SECRET",
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    );
    let (status, stderr) = Relay::start(None, &[("TOOLS_FILE", path), secret]).exit();
    assert!(!status.success(), "a broken tools file was accepted");
    let expected = format!("error: TOOLS_FILE: {path}: functions[0] (\"lookup_order\"): url:");
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn transfer_destinations_without_twilio_credentials_are_explained_at_start_up() {
    let mut relay = Relay::start(None, &[("TRANSFER_DESTINATIONS", "sales=+15551230001")]);
    let line = relay.line(|l| l.contains("transfer_call is not declared"));
    assert!(line.contains("TWILIO_ACCOUNT_SID"), "{line}");
}
