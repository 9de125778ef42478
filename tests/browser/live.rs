//! The live page while calls happen: a call appears, talks and leaves without a reload, and
//! hostile transcript text stays text.

use std::time::Duration;

use anyhow::{ensure, Context};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

use crate::driver::{element, texts, until, Browser};
use crate::relay_bin::clip;
use crate::rig::Rig;
use crate::session::PAGE;

/// How long a simulated call may take to show its turns or to end.
const CALL: Duration = Duration::from_secs(30);
/// The states `td.state` may show.
const STATES: [&str; 4] = ["ringing", "talking", "assistant speaking", "tool running"];
/// A greeting that runs script if anything inserts transcript text as HTML.
pub const HOSTILE: &str =
    "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\"> & done";

/// Records, in the page, every `td.state` text of call `arguments[0]` as it changes (a
/// MutationObserver: short-lived states are not missed between polls), and marks the document
/// so a reload would show.
const WATCH_STATES: &str = r#"
const sid = arguments[0];
window.__sameDocument = true;
window.__states = [];
const look = () => {
  const cell = document.querySelector(`tr[data-call-sid="${sid}"] td.state`);
  if (!cell) return;
  const text = cell.textContent.trim();
  if (window.__states[window.__states.length - 1] !== text) window.__states.push(text);
};
new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
"#;

/// Step: with `/` open, an inbound call starts: its row appears with from/to/direction, its
/// transcript grows with caller and assistant turns, its state changes, and when the caller
/// hangs up the row leaves; all in the same document. Returns the call's SID.
pub async fn call_appears_talks_and_leaves(browser: &Browser, rig: &Rig) -> anyhow::Result<String> {
    let c = &browser.client;
    c.goto(&rig.url("/")).await?;
    element(c, "table#live-calls, #no-live-calls", PAGE).await?;
    let (from, to) = ("+15550001111", "+15550002222");
    let clips = vec![clip("caller-hello.wav"), clip("caller-question.wav")];
    let (sid, call) = rig.inbound_call(from, to, clips);
    c.execute(WATCH_STATES, vec![json!(sid)]).await?;

    let row = format!("table#live-calls tr[data-call-sid=\"{sid}\"]");
    element(c, &row, PAGE).await?;
    let cell = |name: &str| format!("{row} td.{name}");
    ensure!(texts(c, &cell("from")).await? == [from], "td.from");
    ensure!(texts(c, &cell("to")).await? == [to], "td.to");
    let direction = texts(c, &cell("direction")).await?.join("");
    ensure!(direction.contains("inbound"), "td.direction: {direction:?}");

    let turns = format!(".transcript[data-call-sid=\"{sid}\"] .turn");
    for n in 1..=2 {
        until(&format!("{n} caller and assistant turns"), CALL, || async {
            let caller = texts(c, &format!("{turns}[data-role=\"caller\"] .text")).await?;
            let assistant = texts(c, &format!("{turns}[data-role=\"assistant\"] .text")).await?;
            if caller.len() >= n && assistant.len() >= n {
                Ok(Some(()))
            } else {
                // Not an error: `until` shows it as the last thing seen if time runs out.
                Err(anyhow::anyhow!(
                    "caller {caller:?}, assistant {assistant:?}"
                ))
            }
        })
        .await?;
        if n == 1 {
            browser.screenshot("2-live-call-in-progress").await?;
        }
    }

    let report = tokio::time::timeout(CALL, call)
        .await
        .context("the simulated caller did not hang up")??
        .context("the simulated call")?;
    ensure!(report.call_sid == sid, "the call's SID");
    until("the ended call leaves the live table", PAGE, || async {
        Ok(c.find_all(Locator::Css(&row))
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;

    let same = c
        .execute("return window.__sameDocument === true", vec![])
        .await?;
    ensure!(same == Value::Bool(true), "the live page reloaded");
    let states: Vec<String> =
        serde_json::from_value(c.execute("return window.__states", vec![]).await?)?;
    ensure!(
        states.iter().all(|s| STATES.contains(&s.as_str())),
        "td.state showed {states:?}"
    );
    ensure!(
        states.len() >= 2 && states.iter().any(|s| s == "assistant speaking"),
        "td.state never changed to and from \"assistant speaking\": {states:?}"
    );
    Ok(sid)
}

/// Step: a call whose greeting is [`HOSTILE`] shows it as text on the live page and on its call
/// page; no script of it runs, and the console logs no CSP violation or script error. The call
/// is hung up through the API at the end. Returns its SID.
pub async fn hostile_text_stays_text(browser: &Browser, rig: &Rig) -> anyhow::Result<String> {
    let c = &browser.client;
    c.goto(&rig.url("/")).await?;
    element(c, "table#live-calls, #no-live-calls", PAGE).await?;
    let body = json!({"to": "+15551230002", "greeting": HOSTILE});
    let (status, placed) = rig.api_post("/api/calls", &body).await?;
    ensure!(status == 201, "POST /api/calls: {status} {placed}");
    let sid = placed["call_sid"].as_str().context("call_sid")?.to_string();

    let turns =
        format!(".transcript[data-call-sid=\"{sid}\"] .turn[data-role=\"assistant\"] .text");
    until("the hostile greeting on the live page", CALL, || async {
        Ok(shows_literally(c, &turns).await?.then_some(()))
    })
    .await?;
    no_script_ran(c, ".transcript").await?;
    browser.screenshot("3-hostile-text-live").await?;

    c.goto(&rig.url(&format!("/calls/{sid}"))).await?;
    until("the hostile greeting on the call page", CALL, || async {
        if shows_literally(c, "#transcript .turn .text").await? {
            return Ok(Some(()));
        }
        c.refresh().await?;
        Ok(None)
    })
    .await?;
    no_script_ran(c, "#transcript").await?;

    let log = browser.console_log().await?;
    let bad: Vec<&Value> = log
        .iter()
        .filter(|e| {
            let m = e["message"].as_str().unwrap_or_default();
            m.contains("Content Security Policy")
                || m.contains("Uncaught")
                || m.contains("/assets/")
        })
        .collect();
    ensure!(bad.is_empty(), "console errors: {bad:?}");

    let (status, answer) = rig
        .api_post(&format!("/api/calls/{sid}/hangup"), &json!({}))
        .await?;
    ensure!(
        status == 200,
        "hang-up of the hostile call: {status} {answer}"
    );
    Ok(sid)
}

/// Whether some element `css` selects shows [`HOSTILE`]'s markup as literal text.
async fn shows_literally(c: &Client, css: &str) -> anyhow::Result<bool> {
    let shown = texts(c, css).await?;
    Ok(shown
        .iter()
        .any(|t| t.contains("<script>window.__xss=1</script>") && t.contains("onerror=")))
}

/// `window.__xss` is unset and `within` holds no element made of transcript text.
async fn no_script_ran(c: &Client, within: &str) -> anyhow::Result<()> {
    let xss = c.execute("return typeof window.__xss", vec![]).await?;
    ensure!(
        xss == json!("undefined"),
        "the payload ran: window.__xss is {xss}"
    );
    let injected = c
        .find_all(Locator::Css(&format!("{within} script, {within} img")))
        .await?;
    ensure!(
        injected.is_empty(),
        "{} elements injected into {within}",
        injected.len()
    );
    Ok(())
}
