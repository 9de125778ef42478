//! `GET|POST /transcribe-call`: TwiML that forks both tracks of the call to `/transcription-stream`
//! and forwards the call to `TRANSCRIBE_FORWARD_TO`.
//!
//! Follows PROTOCOLS.md § "TwiML" (twilio.com/docs/voice/twiml/stream): `<Start><Stream>` forks and
//! continues at once, `track="both_tracks"` is allowed on forks only, the URL is `wss://` without a
//! query, data rides in `<Parameter>`s (values under 500 characters), everything is escaped.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use tracing::{info, warn};

use crate::app::AppState;
use crate::routes::stream_url;
use crate::twilio::twiml::{escape, parameter_value};

/// Said (then `<Hangup/>`) when `TRANSCRIBE_FORWARD_TO` is unset; the fork still runs.
pub const NO_FORWARD_MESSAGE: &str =
    "This call is being transcribed, but no forwarding number is configured. Goodbye.";

/// `<Response><Start><Stream url track="both_tracks"><Parameter…/></Stream></Start><Dial>…</Dial></Response>`.
///
/// `stream_url` is the `wss://…/transcription-stream` URL; `from`/`to` become the `From`/`To`
/// `<Parameter>`s (see [`parameter_value`]). `forward_to` is an E.164 number (`<Dial>+1…</Dial>`) or
/// a SIP URI (`<Dial><Sip>sip:…</Sip></Dial>`); without one the caller hears
/// [`NO_FORWARD_MESSAGE`] and the call is hung up.
pub fn transcribe_twiml(
    stream_url: &str,
    from: Option<&str>,
    to: Option<&str>,
    forward_to: Option<&str>,
) -> String {
    let mut xml = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#);
    let _ = write!(
        xml,
        r#"<Start><Stream url="{}" track="both_tracks">"#,
        escape(stream_url)
    );
    for (name, value) in [("From", from), ("To", to)] {
        if let Some(value) = value {
            let _ = write!(
                xml,
                r#"<Parameter name="{name}" value="{}"/>"#,
                escape(&parameter_value(value))
            );
        }
    }
    xml.push_str("</Stream></Start>");
    match forward_to {
        Some(target) if is_sip(target) => {
            let _ = write!(xml, "<Dial><Sip>{}</Sip></Dial>", escape(target));
        }
        Some(number) => {
            let _ = write!(xml, "<Dial>{}</Dial>", escape(number));
        }
        None => {
            let _ = write!(xml, "<Say>{}</Say><Hangup/>", escape(NO_FORWARD_MESSAGE));
        }
    }
    xml.push_str("</Response>");
    xml
}

fn is_sip(target: &str) -> bool {
    let lower = target.trim_start().to_ascii_lowercase();
    lower.starts_with("sip:") || lower.starts_with("sips:")
}

/// `GET|POST /transcribe-call`: Twilio's voice webhook for numbers whose calls are forwarded and
/// transcribed. Twilio's parameters come as a form (POST) or query (GET); `From` and `To` are
/// passed on to the stream. Always answers 200 `text/xml`.
pub async fn transcribe_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let params = form.map(|Form(p)| p).unwrap_or_default();
    let config = &state.config;
    let forward_to = config.transcribe.transcribe_forward_to.as_deref();
    let url = stream_url(
        config.public_url.as_deref(),
        &headers,
        "/transcription-stream",
    );
    let call_sid = params.get("CallSid").map(String::as_str).unwrap_or("-");
    if forward_to.is_none() {
        warn!(
            call_sid,
            "call to /transcribe-call hung up: TRANSCRIBE_FORWARD_TO is not set"
        );
    } else {
        info!(call_sid, stream_url = %url, forward_to, "forked call forwarded");
    }
    let body = transcribe_twiml(
        &url,
        params.get("From").map(String::as_str),
        params.get("To").map(String::as_str),
        forward_to,
    );
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}: {xml}"))
    }

    #[test]
    fn forks_both_tracks_with_parameters_then_dials_the_number() {
        let xml = transcribe_twiml(
            "wss://relay.example.com/transcription-stream",
            Some("+15550001111"),
            Some("+15550002222"),
            Some("+15550003333"),
        );
        let doc = parse(&xml);
        let stream = doc
            .descendants()
            .find(|n| n.has_tag_name("Stream"))
            .unwrap();
        assert_eq!(stream.parent().unwrap().tag_name().name(), "Start");
        assert_eq!(
            stream.attribute("url"),
            Some("wss://relay.example.com/transcription-stream")
        );
        assert_eq!(stream.attribute("track"), Some("both_tracks"));
        let params: Vec<_> = stream
            .children()
            .filter(|n| n.is_element())
            .map(|p| (p.attribute("name").unwrap(), p.attribute("value").unwrap()))
            .collect();
        assert_eq!(params, [("From", "+15550001111"), ("To", "+15550002222")]);
        let dial = doc.descendants().find(|n| n.has_tag_name("Dial")).unwrap();
        assert_eq!(dial.text(), Some("+15550003333"));
        let order: Vec<&str> = doc
            .root_element()
            .children()
            .map(|n| n.tag_name().name())
            .collect();
        assert_eq!(order, ["Start", "Dial"]);
    }

    #[test]
    fn sip_targets_use_a_sip_noun_and_values_are_escaped() {
        let xml = transcribe_twiml(
            "wss://h/transcription-stream",
            Some(r#""/><Hangup/>"#),
            None,
            Some("sip:agent@pbx.example.com;transport=tls"),
        );
        let doc = parse(&xml);
        assert!(
            !doc.descendants().any(|n| n.has_tag_name("Hangup")),
            "{xml}"
        );
        let sip = doc.descendants().find(|n| n.has_tag_name("Sip")).unwrap();
        assert_eq!(sip.parent().unwrap().tag_name().name(), "Dial");
        assert_eq!(sip.text(), Some("sip:agent@pbx.example.com;transport=tls"));
        let from = doc
            .descendants()
            .find(|n| n.has_tag_name("Parameter"))
            .unwrap();
        assert_eq!(from.attribute("value"), Some(r#""/><Hangup/>"#));
    }

    #[test]
    fn without_a_forward_target_it_still_forks_then_says_why_and_hangs_up() {
        let xml = transcribe_twiml("wss://h/transcription-stream", None, None, None);
        let doc = parse(&xml);
        let order: Vec<&str> = doc
            .root_element()
            .children()
            .map(|n| n.tag_name().name())
            .collect();
        assert_eq!(order, ["Start", "Say", "Hangup"]);
        assert!(xml.contains("no forwarding number is configured"));
    }
}
