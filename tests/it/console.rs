//! The operator console (`/`): sign-in, CSRF, security headers, escaping, history filters and
//! paging, placing and hanging up calls, the set-up page. Over the real router, with the
//! Twilio REST fake.

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::fake_openai::FakeOptions;
use twilio_realtime_relay::records::CallRecord;
use twilio_realtime_relay::transcript::{EndReason, Role, Transcript, Turn};

use crate::fake_twilio::FakeTwilio;
use crate::support::{spawn_app, spawn_with_fake, TestApp};

const TOKEN: &str = "console-token-0123456789";

async fn console_app(twilio: Option<&FakeTwilio>) -> TestApp {
    let fake = twilio.map(|t| {
        (
            t.base_url.clone(),
            t.account_sid.clone(),
            t.auth_token.clone(),
        )
    });
    let (app, _openai) = spawn_with_fake(FakeOptions::default(), move |c| {
        c.api_token = Some(TOKEN.into());
        c.twilio_phone_number = Some("+15550009999".into());
        c.twilio_validate_signature = false;
        if let Some((base, account, token)) = fake {
            c.twilio_api_base = base;
            c.twilio_account_sid = Some(account);
            c.twilio_auth_token = Some(token.as_str().into());
        }
    })
    .await;
    app
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

fn post(path: &str, cookie: &str, form: &[(&str, &str)]) -> Request<Body> {
    Request::post(path)
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
        .unwrap()
}

/// The `value` of the first hidden `csrf` input in `html`.
fn csrf_of(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf input") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

fn set_cookie(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie"))
}

/// Sign in: the session cookie pair (`relay_session=…`) and the pages' CSRF token.
async fn sign_in(app: &TestApp) -> (String, String) {
    let (_, headers, html) = app.request(get("/login", None)).await;
    let login = set_cookie(&headers, "relay_login");
    let login_pair = login.split(';').next().unwrap().to_string();
    let (status, headers, _) = app
        .request(post(
            "/login",
            &login_pair,
            &[("token", TOKEN), ("csrf", &csrf_of(&html))],
        ))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = set_cookie(&headers, "relay_session");
    let pair = session.split(';').next().unwrap().to_string();
    let (status, _, page) = app.request(get("/", Some(&pair))).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = csrf_of(&page);
    (pair, csrf)
}

fn sid(n: u32) -> String {
    format!("CA{n:032x}")
}

async fn record(
    app: &TestApp,
    n: u32,
    direction: &str,
    from: &str,
    reason: Option<EndReason>,
    started_ms: i64,
) -> String {
    let sid = sid(n);
    app.state
        .store
        .update(
            &sid,
            || CallRecord::new(&sid, direction, "in-progress"),
            |r| {
                r.from = Some(from.into());
                r.to = Some("+15550009999".into());
                r.started_at = chrono::DateTime::from_timestamp_millis(started_ms).unwrap();
                if let Some(reason) = reason {
                    r.end("completed", Some(reason));
                }
            },
        )
        .await;
    sid
}

#[tokio::test]
async fn without_api_token_the_console_says_how_to_enable_it_and_shows_no_calls() {
    let app = spawn_app(Config::default()).await;
    record(
        &app,
        1,
        "inbound",
        "+15557770001",
        Some(EndReason::CallerHungUp),
        1_700_000_000_000,
    )
    .await;
    for path in [
        "/",
        "/login",
        "/calls",
        "/setup",
        &format!("/calls/{}", sid(1)),
    ] {
        let (status, _, body) = app.request(get(path, None)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(body.contains(r#"id="console-disabled""#), "{path}: {body}");
        assert!(body.contains("API_TOKEN"));
        assert!(!body.contains("+15557770001"), "{path} shows call data");
    }
}

#[tokio::test]
async fn signing_in_takes_the_api_token_and_sets_a_strict_session_cookie() {
    let app = console_app(None).await;
    let (status, headers, _) = app.request(get("/", None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "pages need a session");
    assert_eq!(headers[header::LOCATION], "/login");
    let (status, _, _) = app.request(get("/console/events", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (_, headers, html) = app.request(get("/login", None)).await;
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(html.contains(r#"id="login""#) && html.contains(r#"id="token""#));
    let login = set_cookie(&headers, "relay_login");
    let pair = login.split(';').next().unwrap();
    let csrf = csrf_of(&html);
    let (status, _, body) = app
        .request(post("/login", pair, &[("token", "wrong"), ("csrf", &csrf)]))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains(r#"id="login-error""#));
    let (status, _, _) = app
        .request(post(
            "/login",
            pair,
            &[("token", TOKEN), ("csrf", "forged")],
        ))
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the double-submit token must match"
    );

    let (status, headers, _) = app
        .request(post("/login", pair, &[("token", TOKEN), ("csrf", &csrf)]))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = set_cookie(&headers, "relay_session");
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    let session = cookie.split(';').next().unwrap();
    let (status, _, page) = app.request(get("/", Some(session))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"id="nav""#) && page.contains(r#"id="sign-out""#));
    // The session also reads the JSON API (GET only).
    let (status, _, _) = app.request(get("/api/calls", Some(session))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = app.request(post("/api/calls", session, &[])).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no POST to the API on a cookie"
    );
}

#[tokio::test]
async fn a_form_without_the_csrf_token_is_refused() {
    let twilio = FakeTwilio::start().await;
    let app = console_app(Some(&twilio)).await;
    let (session, _) = sign_in(&app).await;
    for path in [
        "/logout",
        "/calls/new",
        &format!("/calls/{}/hangup", sid(5)),
    ] {
        let (status, _, _) = app
            .request(post(
                path,
                &session,
                &[("csrf", "nope"), ("to", "+15551234567")],
            ))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    assert!(twilio.requests().is_empty(), "nothing reached Twilio");
}

#[tokio::test]
async fn a_transcript_containing_a_script_tag_renders_as_text() {
    let app = console_app(None).await;
    let (session, _) = sign_in(&app).await;
    let sid = record(
        &app,
        2,
        "inbound",
        "+15557770002",
        Some(EndReason::CallerHungUp),
        1_700_000_000_000,
    )
    .await;
    let mut t = Transcript::new(&sid, "MZ1", Some("+15557770002".into()), None);
    t.add(Turn::new(
        Role::Caller,
        "<script>alert(1)</script>".into(),
        chrono::Utc::now(),
    ));
    t.finish(EndReason::CallerHungUp);
    app.state.store.finish_transcript(&t).await;
    let (status, _, page) = app
        .request(get(&format!("/calls/{sid}"), Some(&session)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"));
    assert!(page.contains(r#"id="transcript""#) && page.contains(r#"id="latency""#));
    let (status, _, _) = app
        .request(get(&format!("/calls/{}", self::sid(99)), Some(&session)))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn history_filters_by_direction_reason_number_and_date_and_pages_newest_first() {
    let app = console_app(None).await;
    let (session, _) = sign_in(&app).await;
    let day = 1_700_000_000_000; // 2023-11-14
    for n in 0..60u32 {
        let (direction, reason) = if n % 2 == 0 {
            ("inbound", EndReason::CallerHungUp)
        } else {
            ("outbound-api", EndReason::ApiHangup)
        };
        let from = format!("+1555000{n:04}");
        record(
            &app,
            n + 10,
            direction,
            &from,
            Some(reason),
            day + i64::from(n) * 1000,
        )
        .await;
    }
    let rows = |page: &str| page.matches("<tr data-call-sid=").count();
    let (_, _, page) = app.request(get("/calls", Some(&session))).await;
    assert_eq!(rows(&page), 50);
    assert!(
        page.find(&sid(69)).unwrap() < page.find(&sid(68)).unwrap(),
        "newest first"
    );
    assert!(page.contains(r#"id="next-page""#) && !page.contains(r#"id="prev-page""#));
    let next = page
        .split(r#"id="next-page" href=""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let (_, _, older) = app.request(get(&next, Some(&session))).await;
    assert_eq!(rows(&older), 10);
    assert!(older.contains(r#"id="prev-page""#));

    let (_, _, page) = app
        .request(get(
            "/calls?direction=outbound&end_reason=api_hangup",
            Some(&session),
        ))
        .await;
    assert_eq!(rows(&page), 30);
    let (_, _, page) = app
        .request(get(
            "/calls?direction=inbound&end_reason=api_hangup",
            Some(&session),
        ))
        .await;
    assert_eq!(rows(&page), 0);
    let (_, _, page) = app
        .request(get("/calls?number=5550000007", Some(&session)))
        .await;
    assert_eq!(rows(&page), 1);
    assert!(page.contains(&sid(17)));
    let (_, _, page) = app
        .request(get("/calls?from=2023-11-15", Some(&session)))
        .await;
    assert_eq!(rows(&page), 0);
    let (_, _, page) = app
        .request(get(
            "/calls?from=2023-11-14&to=2023-11-14&direction=inbound",
            Some(&session),
        ))
        .await;
    assert_eq!(rows(&page), 30);
}

#[tokio::test]
async fn placing_a_call_from_the_form_uses_the_apis_checks_and_reaches_twilio() {
    let twilio = FakeTwilio::start().await;
    let app = console_app(Some(&twilio)).await;
    let (session, csrf) = sign_in(&app).await;
    let (status, _, page) = app
        .request(post(
            "/calls/new",
            &session,
            &[("csrf", &csrf), ("to", "555")],
        ))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.contains(r#"class="field-error" data-field="to""#),
        "{page}"
    );
    assert!(
        page.contains("must be an E.164 number such as +15551234567"),
        "the API's message"
    );
    assert!(twilio.requests().is_empty());

    let (status, headers, _) = app
        .request(post(
            "/calls/new",
            &session,
            &[("csrf", &csrf), ("to", "+15551234567"), ("greeting", "Hi")],
        ))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let location = headers[header::LOCATION].to_str().unwrap();
    assert!(location.starts_with("/calls/CA"), "{location}");
    assert_eq!(
        twilio.requests().len(),
        1,
        "Twilio was asked to place the call"
    );
}

#[tokio::test]
async fn the_hang_up_button_ends_a_call_as_api_hangup() {
    let twilio = FakeTwilio::start().await;
    let app = console_app(Some(&twilio)).await;
    let (session, csrf) = sign_in(&app).await;
    let sid = sid(7);
    twilio.add_inbound_call(&sid, "+15557770007", "+15550009999");
    // Served only after start-up recovery closed leftover calls: the record below is not one.
    let health = reqwest::get(format!("http://{}/health", app.addr)).await;
    assert!(health.is_ok(), "the relay serves");
    app.state
        .store
        .update(
            &sid,
            || CallRecord::new(&sid, "inbound", "in-progress"),
            |_| {},
        )
        .await;
    let (_, _, live) = app.request(get("/", Some(&session))).await;
    assert!(
        live.contains(&format!(r#"<tr data-call-sid="{sid}""#)),
        "the unfinished call is listed"
    );
    let (status, headers, _) = app
        .request(post(
            &format!("/calls/{sid}/hangup"),
            &session,
            &[("csrf", &csrf)],
        ))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/");
    let record = app.state.store.get(&sid).await.unwrap().unwrap();
    assert_eq!(record.end_reason, Some(EndReason::ApiHangup));
}

#[tokio::test]
async fn the_setup_page_shows_the_webhooks_and_never_the_secrets() {
    let twilio = FakeTwilio::start().await;
    let app = console_app(Some(&twilio)).await;
    let (session, _) = sign_in(&app).await;
    let (status, _, page) = app
        .request(
            Request::get("/setup")
                .header(header::COOKIE, &session)
                .header(header::HOST, "relay.test:8443")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for id in ["webhooks", "config", "model", "signatures", "health"] {
        assert!(page.contains(&format!(r#"id="{id}""#)), "{id}");
    }
    assert!(
        page.contains("/incoming-call")
            && page.contains("/transcribe-call")
            && page.contains("/twilio/status")
    );
    assert!(page.contains("[redacted]"));
    assert!(
        !page.contains(twilio.auth_token.as_str()),
        "the auth token leaked"
    );
    assert!(!page.contains(TOKEN), "the API token leaked");
}

/// The live page and `/console/events` during a real (simulated) call: the feed carries the
/// call's start with its numbers, its state changes and turns, and its end; while it runs, `/`
/// lists it.
#[tokio::test]
async fn the_live_feed_follows_a_simulated_call_from_start_to_end() {
    use std::time::Duration;
    use twilio_realtime_relay::sim;

    let (app, _openai) = spawn_with_fake(FakeOptions::default(), |c| {
        c.api_token = Some(TOKEN.into());
        c.twilio_validate_signature = false;
    })
    .await;
    let (cookie, _) = sign_in(&app).await;
    twilio_realtime_relay::upstream::ensure_crypto_provider();
    let mut feed = reqwest::Client::new()
        .get(format!("http://{}/console/events", app.addr))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("the console feed");
    assert_eq!(feed.status(), 200);
    assert!(feed.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));

    let mut opts =
        crate::support::call_options(&app, vec![crate::support::clip("caller-hello.wav"); 2]);
    let sid = format!("CA{}", uuid::Uuid::new_v4().simple());
    opts.call_sid = Some(sid.clone());
    let call = tokio::spawn(sim::run(opts));

    // Read the feed until `needle` appears (30 s at most); returns everything read so far.
    let mut seen = String::new();
    async fn until(feed: &mut reqwest::Response, seen: &mut String, needle: &str) -> bool {
        tokio::time::timeout(Duration::from_secs(30), async {
            while !seen.contains(needle) {
                match feed.chunk().await {
                    Ok(Some(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                    _ => return false,
                }
            }
            true
        })
        .await
        .unwrap_or(false)
    }
    assert!(
        until(&mut feed, &mut seen, "event: call.started").await,
        "no call.started: {seen}"
    );
    let (status, _, page) = app.request(get("/", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(&format!(r#"data-call-sid="{sid}""#)),
        "the live page lists the running call"
    );
    assert!(
        until(&mut feed, &mut seen, "event: transcript.final").await,
        "no turn: {seen}"
    );
    assert!(
        until(&mut feed, &mut seen, "event: call.ended").await,
        "no call.ended: {seen}"
    );
    call.await.unwrap().unwrap();
    let events: Vec<(String, serde_json::Value)> = seen
        .split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name));
            let data = serde_json::from_str(field("data:")?.trim()).ok()?;
            Some((field("event:")?.trim().to_string(), data))
        })
        .collect();
    assert!(
        events
            .iter()
            .all(|(_, data)| data["call_sid"] == sid.as_str()),
        "every event names its call: {seen}"
    );
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"call.started"), "{names:?}");
    assert_eq!(names.last(), Some(&"call.ended"), "{names:?}");
    assert!(
        events
            .iter()
            .any(|(name, data)| name == "call.state" && data["state"] == "assistant speaking"),
        "the state went to assistant speaking: {names:?}"
    );
    for speaker in ["caller", "assistant"] {
        assert!(
            events
                .iter()
                .any(|(name, data)| name == "transcript.final" && data["speaker"] == speaker),
            "a {speaker} turn: {seen}"
        );
    }
    let (_, _, page) = app.request(get("/", Some(&cookie))).await;
    assert!(
        !page.contains(&format!(r#"data-call-sid="{sid}""#)),
        "an ended call leaves the live page"
    );
    // An open feed would hold the graceful shutdown up.
    drop(feed);
    app.shutdown().await;
}
