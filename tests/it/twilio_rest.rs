//! The Twilio REST client against the recording fake: form fields, auth, errors, pagination.

use tokio::net::TcpListener;
use twilio_realtime_relay::twilio::rest::{
    CreateCall, TwilioAuth, TwilioError, TwilioRest, DEFAULT_BASE_URL,
};

use crate::fake_twilio::{FakeNumber, FakeTwilio, FakeTwilioOptions};

fn client(fake: &FakeTwilio) -> TwilioRest {
    let auth = TwilioAuth::AuthToken(fake.auth_token.as_str().into());
    TwilioRest::new(&fake.base_url, &fake.account_sid, auth).expect("client")
}

fn outbound_call() -> CreateCall {
    CreateCall {
        to: "+15550002222".into(),
        from: "+15550001111".into(),
        twiml: "<Response><Say>Hi</Say></Response>".into(),
        status_callback: Some("https://relay.example.com/call-status".into()),
        status_callback_events: ["initiated", "ringing", "answered", "completed"]
            .map(String::from)
            .to_vec(),
        timeout_s: None,
    }
}

fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    let owned = fields.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    owned.collect()
}

/// Every way the error could leak the secret: Display, Debug.
fn assert_no_secret(e: &TwilioError, secret: &str) {
    for shown in [e.to_string(), format!("{e:?}")] {
        assert!(!shown.contains(secret), "secret leaked: {shown}");
    }
}

#[tokio::test]
async fn create_call_posts_the_documented_form_with_basic_auth_and_returns_the_sid() {
    let fake = FakeTwilio::start().await;
    let call = client(&fake)
        .create_call(&outbound_call())
        .await
        .expect("call");
    assert!(
        call.sid.starts_with("CA") && call.sid.len() == 34,
        "{call:?}"
    );
    assert_eq!(call.status, "queued");
    assert_eq!(
        (call.to.as_str(), call.from.as_str()),
        ("+15550002222", "+15550001111")
    );
    assert_eq!(call.direction.as_deref(), Some("outbound-api"));

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.method, "POST");
    let path = format!("/2010-04-01/Accounts/{}/Calls.json", fake.account_sid);
    assert_eq!(req.path, path);
    assert_eq!(req.auth_user.as_deref(), Some(fake.account_sid.as_str()));
    assert_eq!(req.accept.as_deref(), Some("application/json"));
    let expected = pairs(&[
        ("To", "+15550002222"),
        ("From", "+15550001111"),
        ("Twiml", "<Response><Say>Hi</Say></Response>"),
        ("StatusCallback", "https://relay.example.com/call-status"),
        ("StatusCallbackMethod", "POST"),
        ("StatusCallbackEvent", "initiated"),
        ("StatusCallbackEvent", "ringing"),
        ("StatusCallbackEvent", "answered"),
        ("StatusCallbackEvent", "completed"),
    ]);
    assert_eq!(req.form, expected);
    assert_eq!(fake.calls()[0].sid, call.sid);
}

#[tokio::test]
async fn create_call_without_a_callback_sends_no_callback_fields_but_the_timeout() {
    let fake = FakeTwilio::start().await;
    let call = CreateCall {
        status_callback: None,
        timeout_s: Some(25),
        ..outbound_call()
    };
    client(&fake).create_call(&call).await.expect("call");
    let form = &fake.requests()[0].form;
    let keys: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["To", "From", "Twiml", "Timeout"]);
    assert_eq!(fake.requests()[0].form_values("Timeout"), ["25"]);
}

#[tokio::test]
async fn api_key_auth_sends_the_key_sid_as_user_and_the_account_in_the_path() {
    let fake = FakeTwilio::start_with(FakeTwilioOptions {
        api_key: Some((
            "SK0123456789abcdef0123456789abcdef".into(),
            "key-secret-shh".into(),
        )),
        ..FakeTwilioOptions::default()
    })
    .await;
    let key = fake.api_key.clone().expect("key configured");
    let auth = TwilioAuth::ApiKey {
        sid: key.0.clone(),
        secret: key.1.as_str().into(),
    };
    let rest = TwilioRest::new(&fake.base_url, &fake.account_sid, auth).expect("client");
    rest.create_call(&outbound_call()).await.expect("call");
    let req = &fake.requests()[0];
    assert_eq!(req.auth_user.as_deref(), Some(key.0.as_str()));
    assert!(req.path.contains(&fake.account_sid), "{}", req.path);

    // With a key configured, the account's own token is refused.
    let err = client(&fake)
        .create_call(&outbound_call())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(20003));
    let shown = format!("{rest:?}");
    assert!(!shown.contains("key-secret-shh"), "{shown}");
}

#[tokio::test]
async fn a_wrong_auth_token_is_twilio_error_20003_without_the_token() {
    let fake = FakeTwilio::start().await;
    let auth = TwilioAuth::AuthToken("wrong-token-shh".into());
    let rest = TwilioRest::new(&fake.base_url, &fake.account_sid, auth).expect("client");
    let err = rest.create_call(&outbound_call()).await.unwrap_err();
    match &err {
        TwilioError::Api {
            http_status,
            code,
            message,
            more_info,
        } => {
            assert_eq!((*http_status, *code), (401, Some(20003)));
            assert_eq!(message, "Authenticate");
            assert_eq!(
                more_info.as_deref(),
                Some("https://www.twilio.com/docs/errors/20003")
            );
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert_no_secret(&err, "wrong-token-shh");
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn twilio_errors_pass_through_with_code_and_message() {
    let fake = FakeTwilio::start().await;
    fake.fail_next(400, 21211, "The 'To' number is not a valid phone number");
    let err = client(&fake)
        .create_call(&outbound_call())
        .await
        .unwrap_err();
    match &err {
        TwilioError::Api {
            http_status,
            code,
            message,
            ..
        } => {
            assert_eq!((*http_status, *code), (400, Some(21211)));
            assert_eq!(message, "The 'To' number is not a valid phone number");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert!(err.to_string().contains("21211"), "{err}");
    assert_no_secret(&err, &fake.auth_token);
}

#[tokio::test]
async fn a_non_json_error_page_becomes_an_api_error_with_its_start_and_no_secret() {
    let fake = FakeTwilio::start().await;
    // A proxy that echoes the token into its error page must not leak it through our error.
    let page = format!("<html><body>Bad gateway {}</body></html>", fake.auth_token);
    fake.respond_next(502, "text/html", &page);
    let err = client(&fake).hang_up("CA0123", None).await.unwrap_err();
    match &err {
        TwilioError::Api {
            http_status: 502,
            code: None,
            message,
            ..
        } => {
            assert!(message.starts_with("<html><body>Bad gateway"), "{message}");
        }
        other => panic!("expected a 502 API error, got {other:?}"),
    }
    assert_no_secret(&err, &fake.auth_token);
}

#[tokio::test]
async fn a_success_with_an_unexpected_body_is_a_decode_error() {
    let fake = FakeTwilio::start().await;
    fake.respond_next(200, "application/json", r#"{"unexpected":true}"#);
    let err = client(&fake)
        .create_call(&outbound_call())
        .await
        .unwrap_err();
    assert!(matches!(err, TwilioError::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn hang_up_of_a_live_call_completes_it() {
    let fake = FakeTwilio::start().await;
    let rest = client(&fake);
    let call = rest.create_call(&outbound_call()).await.expect("call");
    fake.set_call_status(&call.sid, "in-progress");
    let ended = rest
        .hang_up(&call.sid, Some("in-progress"))
        .await
        .expect("hang up");
    assert_eq!(
        (ended.sid.as_str(), ended.status.as_str()),
        (call.sid.as_str(), "completed")
    );

    let req = &fake.requests()[1];
    let path = format!(
        "/2010-04-01/Accounts/{}/Calls/{}.json",
        fake.account_sid, call.sid
    );
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", path.as_str())
    );
    assert_eq!(req.form, pairs(&[("Status", "completed")]));
    assert_eq!(fake.calls()[0].status, "completed");
}

#[tokio::test]
async fn hang_up_of_a_ringing_call_cancels_it_and_completes_it_if_it_was_answered_meanwhile() {
    let fake = FakeTwilio::start().await;
    let rest = client(&fake);
    let ringing = rest.create_call(&outbound_call()).await.expect("call");
    fake.set_call_status(&ringing.sid, "ringing");
    let ended = rest
        .hang_up(&ringing.sid, Some("ringing"))
        .await
        .expect("hang up");
    assert_eq!(ended.status, "canceled");
    assert_eq!(fake.requests()[1].form, pairs(&[("Status", "canceled")]));
    assert_eq!(fake.calls()[0].status, "canceled");

    // Our record still said ringing, but the callee has just answered: canceling does nothing
    // to an answered call, so it is completed with a second request.
    let answered = rest.create_call(&outbound_call()).await.expect("call");
    fake.set_call_status(&answered.sid, "in-progress");
    let ended = rest
        .hang_up(&answered.sid, Some("ringing"))
        .await
        .expect("hang up");
    assert_eq!(ended.status, "completed");
    let requests = fake.requests();
    let forms: Vec<_> = requests[3..].iter().map(|r| r.form.clone()).collect();
    assert_eq!(
        forms,
        [
            pairs(&[("Status", "canceled")]),
            pairs(&[("Status", "completed")])
        ]
    );
    assert_eq!(fake.calls()[1].status, "completed");
}

#[tokio::test]
async fn hang_up_of_an_unknown_call_is_not_found() {
    let fake = FakeTwilio::start().await;
    let rest = client(&fake);
    let err = rest
        .hang_up("CA00000000000000000000000000000000", None)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(err.to_string().contains("was not found"), "{err}");

    // A SID that could escape its path segment is refused locally, the same way.
    let err = rest.hang_up("CA1/../../x", None).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn incoming_numbers_follows_next_page_uri_until_the_last_page() {
    let fake = FakeTwilio::start().await;
    let numbers: Vec<FakeNumber> = (1..=5)
        .map(|i| FakeNumber::new(&format!("+1555000000{i}"), &format!("Line {i}")))
        .collect();
    fake.set_numbers(numbers.clone(), 2);

    let listed = client(&fake).incoming_numbers().await.expect("numbers");
    let got: Vec<_> = listed
        .iter()
        .map(|n| (&n.sid, &n.phone_number, &n.friendly_name))
        .collect();
    let want: Vec<_> = numbers
        .iter()
        .map(|n| (&n.sid, &n.phone_number, &n.friendly_name))
        .collect();
    assert_eq!(got, want);

    let requests = fake.requests();
    let pages: Vec<Option<&str>> = requests
        .iter()
        .map(|r| {
            r.query
                .iter()
                .find(|(k, _)| k == "Page")
                .map(|(_, v)| v.as_str())
        })
        .collect();
    assert_eq!(pages, [None, Some("1"), Some("2")]);
    assert!(requests.iter().all(|r| r.method == "GET"
        && r.path.ends_with("/IncomingPhoneNumbers.json")
        && r.auth_user.as_deref() == Some(fake.account_sid.as_str())));
}

#[tokio::test]
async fn a_next_page_uri_on_another_host_is_refused_without_following_it() {
    let fake = FakeTwilio::start().await;
    let page = r#"{"incoming_phone_numbers":[],"next_page_uri":"https://evil.example.com/steal","page":0,"page_size":50}"#;
    fake.respond_next(200, "application/json", page);
    let err = client(&fake).incoming_numbers().await.unwrap_err();
    assert!(matches!(err, TwilioError::Decode(_)), "{err:?}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn an_unreachable_base_url_is_a_transport_error() {
    // A port that was free a moment ago and now has no listener: connection refused.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let auth = TwilioAuth::AuthToken("unreachable-token-shh".into());
    let rest = TwilioRest::new(&format!("http://{addr}"), "AC123", auth).expect("client");
    let err = rest.incoming_numbers().await.unwrap_err();
    assert!(matches!(err, TwilioError::Transport(_)), "{err:?}");
    assert_no_secret(&err, "unreachable-token-shh");
}

#[tokio::test]
async fn secrets_never_appear_in_debug_output() {
    let token = TwilioAuth::AuthToken("auth-token-shh".into());
    let key = TwilioAuth::ApiKey {
        sid: "SK1".into(),
        secret: "api-secret-shh".into(),
    };
    for (auth, secret) in [(token, "auth-token-shh"), (key, "api-secret-shh")] {
        let rest = TwilioRest::new(DEFAULT_BASE_URL, "AC123", auth).expect("client");
        let shown = format!("{rest:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(
            shown.contains("[redacted]") && shown.contains("AC123"),
            "{shown}"
        );
    }
}
