//! Headless Chromium driven through chromedriver (WebDriver, `fantoccini`): starting both,
//! screenshots and page sources under `target/browser-artifacts/`, the browser's console log,
//! and waiting for what a page shows, always with a deadline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::http::Method;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// Debian's Chromium (`.ci/run` installs it with `chromium-driver`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver, matching [`CHROMIUM`]'s version.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long chromedriver may take to say which port it listens on.
const DRIVER_START: Duration = Duration::from_secs(10);
/// How often [`until`] looks again.
const POLL: Duration = Duration::from_millis(100);

/// Whether both binaries are installed; the tests say they were skipped otherwise.
pub fn available() -> bool {
    Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file()
}

/// Where screenshots and page sources go: `target/browser-artifacts/` (gitignored).
pub fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts")
}

/// One chromedriver with one headless Chromium session; both end when this is dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Start chromedriver on a port it picks (`--port=0`, read from its banner) and open a
    /// headless Chromium session with a 1280×900 window and the browser console logged.
    pub async fn start() -> anyhow::Result<Browser> {
        let mut driver = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("chromedriver starts")?;
        let stdout = driver.stdout.take().expect("piped stdout");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        // Keep reading after the banner too: a full pipe would block chromedriver.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
                {
                    let _ = port_tx.send(port);
                }
            }
        });
        let port = tokio::task::spawn_blocking(move || port_rx.recv_timeout(DRIVER_START))
            .await?
            .context("chromedriver did not report its port within 10 s")?;
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .context("a WebDriver session in headless Chromium")?;
        client.set_window_size(1280, 900).await?;
        Ok(Browser { client, driver })
    }

    /// Save a PNG of the viewport as `target/browser-artifacts/NAME.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Save what a failure looked like: a screenshot, the page's HTML and its URL.
    pub async fn save_failure(&self, step: &str) {
        let name = format!("failed-{step}");
        match self.screenshot(&name).await {
            Ok(path) => eprintln!("browser: screenshot of the failure: {}", path.display()),
            Err(e) => eprintln!("browser: no screenshot of the failure: {e:#}"),
        }
        let url = self.client.current_url().await.map(|u| u.to_string());
        if let Ok(html) = self.client.source().await {
            let path = artifacts_dir().join(format!("{name}.html"));
            let page = format!("<!-- {url:?} -->\n{html}");
            if std::fs::write(&path, page).is_ok() {
                eprintln!("browser: page source: {}", path.display());
            }
        }
    }

    /// The browser console's entries since the last call (chromedriver's `goog:loggingPrefs`
    /// log), each `{"level","message","source","timestamp"}`.
    pub async fn console_log(&self) -> anyhow::Result<Vec<Value>> {
        let entries = self.client.issue_cmd(BrowserLog).await?;
        Ok(entries.as_array().cloned().unwrap_or_default())
    }

    /// Close the session, then stop chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver takes its Chromium with it.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Headless Chromium as containers and CI run it: no sandbox (no user namespaces there), no
/// GPU, `/tmp` instead of a small `/dev/shm`.
fn capabilities() -> Capabilities {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
            ],
        },
        "goog:loggingPrefs": {"browser": "ALL"},
    });
    match caps {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

/// chromedriver's log endpoint (`POST /session/{id}/se/log`, type `browser`): the console
/// messages, CSP violations included, which WebDriver itself has no command for.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _url: &url::Url) -> (Method, Option<String>) {
        (Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

/// Look every 100 ms until `probe` returns `Some`, for at most `timeout`; the error names
/// `what` and the last thing `probe` said it saw (its `Err`).
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("nothing yet");
    loop {
        match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?} (last seen: {last})");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The element `css` selects once it is there (fantoccini's wait), at most `timeout`.
pub async fn element(
    client: &Client,
    css: &str,
    timeout: Duration,
) -> anyhow::Result<fantoccini::elements::Element> {
    client
        .wait()
        .at_most(timeout)
        .every(POLL)
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("no {css} within {timeout:?}"))
}

/// The texts of every element `css` selects now (empty when there are none).
pub async fn texts(client: &Client, css: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in client.find_all(Locator::Css(css)).await? {
        out.push(e.text().await?);
    }
    Ok(out)
}

/// The path of the page the browser shows, e.g. `/calls/CA…`.
pub async fn path(client: &Client) -> anyhow::Result<String> {
    Ok(client.current_url().await?.path().to_string())
}
