//! The HTTP surface: TwiML from `/incoming-call`, `/health` and `/metrics`.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use twilio_realtime_relay::config::Config;

use crate::support::spawn_app;

fn configured() -> Config {
    Config {
        openai_api_key: Some("sk-test".into()),
        public_url: Some("https://relay.example.com".into()),
        intro_message: Some("Connecting you to our assistant.".into()),
        ..Config::default()
    }
}

fn form_post(body: &str) -> Request<Body> {
    Request::post("/incoming-call")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_string()))
        .expect("request")
}

#[tokio::test]
async fn incoming_call_answers_twiml_that_connects_the_stream_with_from_and_to() {
    let app = spawn_app(configured()).await;
    let (status, headers, body) = app
        .request(form_post(
            "CallSid=CA1&From=%2B15551234567&To=%2B15557654321",
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/xml");

    let doc = roxmltree::Document::parse(&body).expect("TwiML is XML");
    let response = doc.root_element();
    assert_eq!(response.tag_name().name(), "Response");
    let children: Vec<_> = response.children().filter(|n| n.is_element()).collect();
    let names: Vec<_> = children.iter().map(|n| n.tag_name().name()).collect();
    assert_eq!(names, ["Say", "Connect", "Say"]);
    assert_eq!(children[0].text(), Some("Connecting you to our assistant."));
    assert_eq!(
        children[2].text(),
        Some(Config::default().fallback_message.as_str())
    );

    let stream = children[1].first_element_child().expect("Stream");
    assert_eq!(stream.tag_name().name(), "Stream");
    assert_eq!(
        stream.attribute("url"),
        Some("wss://relay.example.com/media-stream")
    );
    let params: Vec<_> = stream
        .children()
        .filter(|n| n.has_tag_name("Parameter"))
        .map(|n| (n.attribute("name").unwrap(), n.attribute("value").unwrap()))
        .collect();
    assert_eq!(params, [("From", "+15551234567"), ("To", "+15557654321")]);
    app.shutdown().await;
}

#[tokio::test]
async fn incoming_call_by_get_derives_the_stream_url_from_forwarded_headers() {
    let app = spawn_app(Config {
        openai_api_key: Some("sk-test".into()),
        ..Config::default()
    })
    .await;
    let req = Request::get("/incoming-call?From=%2B1555&To=%2B1666")
        .header(header::HOST, "abc.ngrok.app")
        .header("x-forwarded-proto", "https")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = app.request(req).await;
    assert_eq!(status, StatusCode::OK);
    let doc = roxmltree::Document::parse(&body).unwrap();
    let stream = doc
        .descendants()
        .find(|n| n.has_tag_name("Stream"))
        .unwrap();
    assert_eq!(
        stream.attribute("url"),
        Some("wss://abc.ngrok.app/media-stream")
    );
    let from = doc
        .descendants()
        .find(|n| n.attribute("name") == Some("From"))
        .unwrap();
    assert_eq!(from.attribute("value"), Some("+1555"));
    app.shutdown().await;
}

#[tokio::test]
async fn without_an_openai_key_callers_hear_the_fallback_and_are_hung_up() {
    let app = spawn_app(Config::default()).await;
    let (status, _, body) = app.request(form_post("CallSid=CA1&From=%2B1555")).await;
    assert_eq!(status, StatusCode::OK);
    let doc = roxmltree::Document::parse(&body).unwrap();
    let names: Vec<_> = doc
        .root_element()
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name())
        .collect();
    assert_eq!(names, ["Say", "Hangup"]);
    assert!(!body.contains("<Connect>"));
    app.shutdown().await;
}

#[tokio::test]
async fn health_reports_status_counters_and_whether_openai_is_configured() {
    for (config, configured) in [(Config::default(), false), (configured(), true)] {
        let app = spawn_app(config).await;
        let (status, headers, body) = app
            .request(Request::get("/health").body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(health["status"], "healthy");
        assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
        assert!(health["uptime_s"].is_u64());
        let uptime = health["uptime"]
            .as_str()
            .expect("the sample's uptime field");
        assert!(uptime.ends_with('s') && uptime[..uptime.len() - 1].parse::<u64>().is_ok());
        assert!(
            chrono::DateTime::parse_from_rfc3339(health["timestamp"].as_str().unwrap()).is_ok()
        );
        assert_eq!(health["connections"]["active"], 0);
        assert_eq!(health["connections"]["total"], 0);
        assert_eq!(health["errors"], 0);
        assert_eq!(health["openai_configured"], configured);
        assert_eq!(health["twilio_configured"], false);
        app.shutdown().await;
    }
}

/// What Prometheus's classic text parser needs to keep a sample's type: a `# TYPE` line for the
/// sample's own name (`calls_total`, not `calls`), or for a histogram its `_bucket`, `_sum` and
/// `_count` samples; nothing it does not know (`# UNIT`, `# EOF`).
fn assert_classic_types(body: &str) {
    let mut declared: Option<(String, String)> = None;
    let mut samples = 0;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            declared = Some((name.to_string(), kind.to_string()));
        } else if let Some(comment) = line.strip_prefix('#') {
            assert!(
                comment.starts_with(" HELP "),
                "classic text has no {line:?}"
            );
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            let (family, kind) = declared
                .as_ref()
                .unwrap_or_else(|| panic!("{name} has no # TYPE"));
            let typed = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family)),
                _ => name == family,
            };
            assert!(
                typed,
                "{name} is not covered by # TYPE {family} {kind}:\n{body}"
            );
            samples += 1;
        }
    }
    assert!(samples > 10, "{body}");
}

#[tokio::test]
async fn metrics_are_served_in_the_format_their_content_type_names() {
    let app = spawn_app(configured()).await;
    let get = |accept: Option<&str>| {
        let mut request = Request::get("/metrics");
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        request.body(Body::empty()).unwrap()
    };
    // curl, or a scraper that only speaks the classic format.
    for accept in [None, Some("*/*"), Some("text/plain;version=0.0.4")] {
        let (status, headers, body) = app.request(get(accept)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        assert_classic_types(&body);
        assert!(
            body.contains("# TYPE calls_total counter\ncalls_total 0\n"),
            "{body}"
        );
    }
    // What Prometheus sends: it gets OpenMetrics, labelled as such.
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (_, headers, body) = app.request(get(Some(prometheus))).await;
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(
        body.contains("# TYPE calls counter\ncalls_total 0\n"),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    app.shutdown().await;
}
