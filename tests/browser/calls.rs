//! Calls through the console's forms: placing one, hanging one up from the live page, finding
//! past ones in the history and reading a call's page.

use std::time::Duration;

use anyhow::{ensure, Context};
use fantoccini::{Client, Locator};
use serde_json::json;

use crate::driver::{element, path, texts, until, Browser};
use crate::rig::{Rig, TOOL};
use crate::session::{click, PAGE};

/// How long a placed call may take to ring, stream and show turns, or to end.
const CALL: Duration = Duration::from_secs(30);
/// The per-call instructions typed into the form; the Realtime stand-in must receive them.
const INSTRUCTIONS: &str = "You are the browser test's own assistant.";

/// Step: `/calls/new` with a bad number re-renders with the API's own message as the `to`
/// field's error; with a good one it lands on the new call's page, whose transcript then shows
/// turns, and the call runs with the instructions typed. Returns the call's SID.
pub async fn place_call(browser: &Browser, rig: &Rig) -> anyhow::Result<String> {
    let c = &browser.client;
    c.goto(&rig.url("/calls/new")).await?;
    element(c, "form#place-call", PAGE).await?;
    c.find(Locator::Css(&format!(
        "input[name=tools][value=\"{TOOL}\"]"
    )))
    .await
    .context("no checkbox for the TOOLS_FILE's tool")?;

    let (status, refused) = rig
        .api_post("/api/calls", &json!({"to": "555-0100"}))
        .await?;
    ensure!(status == 422, "the API took 555-0100: {status} {refused}");
    let message = refused["error"]["message"]
        .as_str()
        .or(refused["message"].as_str())
        .context("the API's 422 has no message")?
        .to_string();
    fill(c, "input[name=to]", "555-0100").await?;
    click(c, "button#place").await?;
    let error = element(c, ".field-error[data-field=\"to\"]", PAGE).await?;
    let shown = error.text().await?;
    ensure!(
        shown.contains(&message),
        "the form says {shown:?}, the API {message:?}"
    );

    fill(c, "input[name=to]", "+15551230003").await?;
    fill(c, "textarea[name=instructions]", INSTRUCTIONS).await?;
    fill(c, "input[name=greeting]", "Hello from the browser test.").await?;
    click(c, "button#place").await?;
    let sid = until("placing lands on the call's page", CALL, || async {
        let p = path(c).await?;
        Ok(p.strip_prefix("/calls/CA").map(|hex| format!("CA{hex}")))
    })
    .await?;

    until("the placed call's transcript on its page", CALL, || async {
        let assistant = texts(c, "#transcript .turn[data-role=\"assistant\"] .text").await?;
        let caller = texts(c, "#transcript .turn[data-role=\"caller\"] .text").await?;
        if !assistant.is_empty() && !caller.is_empty() {
            return Ok(Some(()));
        }
        c.refresh().await?;
        Ok(None)
    })
    .await?;
    let applied = rig
        .realtime
        .wait_for(PAGE, |conns| {
            conns.iter().any(|conn| {
                conn.client_events.iter().any(|e| {
                    e["type"] == "session.update" && e["session"]["instructions"] == INSTRUCTIONS
                })
            })
        })
        .await;
    ensure!(
        applied,
        "the Realtime stand-in never got the form's instructions"
    );
    Ok(sid)
}

/// Step: the live page shows call `sid` with its hang-up and transfer forms; its hang-up
/// button ends it, the row leaves, and the call's page records `api_hangup`.
pub async fn hang_up(browser: &Browser, rig: &Rig, sid: &str) -> anyhow::Result<()> {
    let c = &browser.client;
    c.goto(&rig.url("/")).await?;
    let row = format!("table#live-calls tr[data-call-sid=\"{sid}\"]");
    element(c, &row, CALL).await?;
    let transfer =
        format!("form.transfer[action=\"/calls/{sid}/transfer\"] select[name=destination]");
    element(c, &transfer, PAGE)
        .await
        .context("TRANSFER_DESTINATIONS is set but the call has no transfer form")?;
    browser.screenshot("5-live-call-before-hang-up").await?;

    click(
        c,
        &format!("form.hangup[action=\"/calls/{sid}/hangup\"] button"),
    )
    .await?;
    rig.twilio
        .wait_for_completion(sid, CALL)
        .await
        .context("Twilio never completed the hung-up call")?;
    c.goto(&rig.url("/")).await?;
    until("the hung-up call leaves the live table", PAGE, || async {
        Ok(c.find_all(Locator::Css(&row))
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;

    c.goto(&rig.url(&format!("/calls/{sid}"))).await?;
    until("the call's page says api_hangup", PAGE, || async {
        let record = element(c, "#record", PAGE).await?.text().await?;
        if record.contains("api_hangup") {
            return Ok(Some(()));
        }
        c.refresh().await?;
        Err(anyhow::anyhow!("#record: {record:?}"))
    })
    .await
}

/// Step: the history lists the three calls; filtering by direction `inbound` keeps only
/// `inbound`, by end reason `api_hangup` only the hung-up ones; a call's link opens its page with
/// the record, timed transcript turns and latency figures.
pub async fn history(
    browser: &Browser,
    rig: &Rig,
    inbound: &str,
    hung_up: &[&str],
) -> anyhow::Result<()> {
    let c = &browser.client;
    c.goto(&rig.url("/calls")).await?;
    let listed = history_sids(c).await?;
    for sid in hung_up.iter().chain([&inbound]) {
        ensure!(listed.iter().any(|s| s == sid), "{sid} not in {listed:?}");
    }

    filter(c, "inbound", "").await?;
    let listed = history_sids(c).await?;
    ensure!(
        listed.iter().any(|s| s == inbound),
        "inbound filter: {listed:?}"
    );
    ensure!(
        hung_up.iter().all(|sid| !listed.iter().any(|s| s == sid)),
        "outbound calls under the inbound filter: {listed:?}"
    );

    filter(c, "", "api_hangup").await?;
    let listed = history_sids(c).await?;
    ensure!(
        hung_up.iter().all(|sid| listed.iter().any(|s| s == sid)),
        "api_hangup filter lost a hung-up call: {listed:?}"
    );
    ensure!(
        !listed.iter().any(|s| s == inbound),
        "api_hangup filter kept {inbound}"
    );
    browser.screenshot("6-history-filtered").await?;

    filter(c, "inbound", "").await?;
    click(c, &format!("tr[data-call-sid=\"{inbound}\"] a.call-link")).await?;
    until("the call link opens the call's page", PAGE, || async {
        Ok((path(c).await? == format!("/calls/{inbound}")).then_some(()))
    })
    .await?;
    let record = element(c, "#record", PAGE).await?.text().await?;
    ensure!(record.contains("inbound"), "#record: {record:?}");
    let turns = c
        .find_all(Locator::Css("#transcript .turn[data-role]"))
        .await?;
    ensure!(turns.len() >= 4, "{} turns on the call's page", turns.len());
    for turn in &turns {
        let time = turn.find(Locator::Css(".time")).await?.text().await?;
        ensure!(
            time.chars().any(|ch| ch.is_ascii_digit()),
            "a turn's .time: {time:?}"
        );
    }
    let latency = element(c, "#latency", PAGE).await?.text().await?;
    ensure!(
        latency.chars().any(|ch| ch.is_ascii_digit()),
        "#latency shows no figures: {latency:?}"
    );
    recording_plays(c).await
}

/// The call page's player loads the call's recording (fetched with the session cookie) and
/// knows its length: the browser decoded the WAV's header.
async fn recording_plays(c: &Client) -> anyhow::Result<()> {
    element(c, "audio#recording", PAGE).await?;
    c.execute(
        "const a = document.getElementById('recording'); a.preload = 'metadata'; a.load();",
        vec![],
    )
    .await?;
    let seconds = until("the recording's metadata loads", PAGE, || async {
        let d = c
            .execute(
                "const a = document.getElementById('recording'); \
                 return a.error ? -1 : (a.readyState >= 1 ? a.duration : null);",
                vec![],
            )
            .await?;
        Ok(d.as_f64())
    })
    .await?;
    ensure!(
        seconds > 1.0 && seconds.is_finite(),
        "the recording lasts {seconds} s (-1: the player could not load it)"
    );
    Ok(())
}

/// Set the history filters as an operator does and submit them.
async fn filter(c: &Client, direction: &str, end_reason: &str) -> anyhow::Result<()> {
    let form = element(c, "form#filters", PAGE).await?;
    form.find(Locator::Css("select[name=direction]"))
        .await?
        .select_by_value(direction)
        .await?;
    form.find(Locator::Css("select[name=end_reason]"))
        .await?
        .select_by_value(end_reason)
        .await?;
    click(c, "form#filters button, form#filters input[type=submit]").await?;
    until("the filtered history", PAGE, || async {
        let url = c.current_url().await?;
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let has = |k: &str, v: &str| query.iter().any(|(qk, qv)| qk == k && qv == v);
        let applied = has("direction", direction) && has("end_reason", end_reason);
        let table = !c.find_all(Locator::Css("table#history")).await?.is_empty();
        Ok((applied && table).then_some(()))
    })
    .await
}

/// The `data-call-sid` of every history row, in order.
async fn history_sids(c: &Client) -> anyhow::Result<Vec<String>> {
    element(c, "table#history", PAGE).await?;
    let mut sids = Vec::new();
    for row in c
        .find_all(Locator::Css("table#history tr[data-call-sid]"))
        .await?
    {
        sids.extend(row.attr("data-call-sid").await?);
    }
    Ok(sids)
}

/// Replace the value of the field `css` selects with `text`, as typed.
async fn fill(c: &Client, css: &str, text: &str) -> anyhow::Result<()> {
    let field = element(c, css, PAGE).await?;
    field.clear().await?;
    field.send_keys(text).await?;
    Ok(())
}
