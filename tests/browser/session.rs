//! Signing in and out as an operator does: the login form, a wrong token, the right one, the
//! nav's sign-out button.

use std::time::Duration;

use anyhow::{ensure, Context};
use fantoccini::{Client, Locator};

use crate::driver::{element, path, until, Browser};
use crate::rig::{Rig, TOKEN};

/// How long a page may take to show what is expected.
pub const PAGE: Duration = Duration::from_secs(10);

/// Step: `/` without a session lands on `/login`; a wrong token shows `#login-error` and no
/// session; the right one shows the live page with the nav; sign-out returns to `/login` and the
/// console is closed again; then sign in for the steps after this one.
pub async fn sign_in_and_out(browser: &Browser, rig: &Rig) -> anyhow::Result<()> {
    let c = &browser.client;
    c.goto(&rig.url("/")).await?;
    ensure!(
        path(c).await? == "/login",
        "/ without a session showed {}",
        path(c).await?
    );

    submit_token(c, "not-the-token").await?;
    let error = element(c, "#login-error", PAGE).await?;
    ensure!(
        !error.text().await?.trim().is_empty(),
        "#login-error says nothing"
    );
    ensure!(
        c.find_all(Locator::Css("nav#nav")).await?.is_empty(),
        "a wrong token shows the signed-in nav"
    );

    sign_in(c, rig).await?;
    element(c, "a#nav-live", PAGE).await?;
    for id in ["nav-history", "nav-new", "nav-setup"] {
        c.find(Locator::Css(&format!("nav#nav a#{id}")))
            .await
            .with_context(|| format!("the nav has no a#{id}"))?;
    }
    // The session cookie is HttpOnly: the page's own scripts cannot read it.
    let cookies = c.execute("return document.cookie", vec![]).await?;
    ensure!(
        !cookies
            .as_str()
            .unwrap_or_default()
            .contains("relay_session"),
        "document.cookie shows the session: {cookies}"
    );

    click(c, "form#sign-out button, form#sign-out input[type=submit]").await?;
    until("sign-out lands on /login", PAGE, || async {
        Ok((path(c).await? == "/login").then_some(()))
    })
    .await?;
    element(c, "form#login", PAGE).await?;
    c.goto(&rig.url("/")).await?;
    ensure!(
        path(c).await? == "/login",
        "after sign-out / showed {}",
        path(c).await?
    );

    sign_in(c, rig).await
}

/// Sign in with the right token and wait for the live page.
pub async fn sign_in(c: &Client, rig: &Rig) -> anyhow::Result<()> {
    c.goto(&rig.url("/login")).await?;
    submit_token(c, TOKEN).await?;
    until("the right token opens the live page", PAGE, || async {
        let on_live = path(c).await? == "/";
        let table = !c
            .find_all(Locator::Css("table#live-calls, #no-live-calls"))
            .await?
            .is_empty();
        Ok((on_live && table).then_some(()))
    })
    .await
}

/// Type `token` into the login form and press its button.
async fn submit_token(c: &Client, token: &str) -> anyhow::Result<()> {
    let input = element(c, "form#login input#token", PAGE).await?;
    ensure!(
        input.attr("type").await?.as_deref() == Some("password"),
        "the token field is not a password field"
    );
    input.clear().await?;
    input.send_keys(token).await?;
    click(c, "form#login button#sign-in").await
}

/// Click the first element `css` selects, as the operator would.
pub async fn click(c: &Client, css: &str) -> anyhow::Result<()> {
    element(c, css, PAGE).await?.click().await?;
    Ok(())
}
