//! The operator console in a real browser (issue 14): headless Chromium through chromedriver
//! against the real relay binary, with the Twilio and Realtime stand-ins placing and answering
//! calls. Each step asserts what an operator sees, in one browser and one relay, in sequence:
//! signing in and out; a call appearing, talking and leaving the live page without a reload;
//! hostile transcript text shown as text with no script run; placing a call through the form;
//! hanging a call up from the live page; filtering the history and opening a call's page.
//!
//! Every step ends with a screenshot under `target/browser-artifacts/`; a failing step also
//! leaves `failed-STEP.png`, its page's HTML and the relay's log there. Without
//! `/usr/bin/chromium` and `/usr/bin/chromedriver` (`.ci/run` installs them) the test says it
//! was skipped and passes.

#[path = "common/relay_bin.rs"]
mod relay_bin;

#[path = "browser/calls.rs"]
mod calls;
#[path = "browser/driver.rs"]
mod driver;
#[path = "browser/live.rs"]
mod live;
#[path = "browser/rig.rs"]
mod rig;
#[path = "browser/session.rs"]
mod session;

use std::time::Instant;

use driver::{artifacts_dir, Browser};
use rig::Rig;

/// Report a finished step: its screenshot, or on failure what the browser and the relay
/// showed, then the failure itself.
async fn check<T>(browser: &Browser, rig: &mut Rig, step: &str, result: anyhow::Result<T>) -> T {
    match result {
        Ok(value) => {
            if let Err(e) = browser.screenshot(step).await {
                eprintln!("browser: no screenshot of {step}: {e:#}");
            }
            eprintln!("browser: step {step} ok");
            value
        }
        Err(e) => {
            browser.save_failure(step).await;
            let mut log = String::new();
            while let Ok(line) = rig.relay.lines.try_recv() {
                log.push_str(&line.to_string());
                log.push('\n');
            }
            let path = artifacts_dir().join(format!("failed-{step}-relay.log"));
            if std::fs::write(&path, log).is_ok() {
                eprintln!("browser: the relay's log: {}", path.display());
            }
            panic!("browser step {step} failed: {e:#}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_watches_places_hangs_up_and_finds_calls_in_a_real_browser() {
    if !driver::available() {
        eprintln!("skipped: chromium/chromedriver not installed (.ci/run installs them)");
        return;
    }
    let started = Instant::now();
    let mut rig = Rig::start().await.expect("the relay and its stand-ins");
    let browser = Browser::start().await.expect("headless Chromium");

    eprintln!("browser: step 1-sign-in: wrong token, right token, sign-out");
    let r = session::sign_in_and_out(&browser, &rig).await;
    check(&browser, &mut rig, "1-sign-in", r).await;

    eprintln!("browser: step 2-live-call: a call appears, talks and leaves");
    let r = live::call_appears_talks_and_leaves(&browser, &rig).await;
    let inbound = check(&browser, &mut rig, "2-live-call", r).await;

    eprintln!("browser: step 3-hostile-text: <script> in a transcript stays text");
    let r = live::hostile_text_stays_text(&browser, &rig).await;
    let hostile = check(&browser, &mut rig, "3-hostile-text", r).await;

    eprintln!("browser: step 4-place-call: the form's error, then a placed call");
    let r = calls::place_call(&browser, &rig).await;
    let placed = check(&browser, &mut rig, "4-place-call", r).await;

    eprintln!("browser: step 5-hang-up: the live page's hang-up button");
    let r = calls::hang_up(&browser, &rig, &placed).await;
    check(&browser, &mut rig, "5-hang-up", r).await;

    eprintln!("browser: step 6-history: filters and a call's page");
    let r = calls::history(&browser, &rig, &inbound, &[&hostile, &placed]).await;
    check(&browser, &mut rig, "6-history", r).await;

    browser.close().await;
    eprintln!("browser: all steps in {:?}", started.elapsed());
}
