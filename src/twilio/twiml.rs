//! TwiML documents we serve: the `<Connect><Stream>` answer and the no-assistant fallback.
//!
//! Follows `PROTOCOLS.md` § "TwiML" (twilio.com/docs/voice/twiml/stream): the stream URL is `wss://`
//! without a query string; data rides in `<Parameter>`s; values are XML-escaped, and characters
//! XML 1.0 forbids are dropped, so whatever a caller's `From` or a configured message holds, the
//! document stays well-formed (Twilio answers an ill-formed one with an application error).

use std::fmt::Write;

/// Whether XML 1.0 allows `c` in a document (§2.2 `Char`): tab, line feed, carriage return and
/// everything from U+0020 except U+FFFE and U+FFFF (Rust strings hold no surrogates).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// `s` for XML text or attribute values: markup escaped, tab, line feed and carriage return as
/// character references (so attribute-value normalization cannot turn them into spaces), and
/// characters XML forbids (other C0 controls, U+FFFE, U+FFFF) dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c if !is_xml_char(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// A `<Parameter>` value as Twilio will receive it: characters XML forbids dropped, then cut to
/// Twilio's 500 characters (PROTOCOLS.md § "TwiML"). Escape the result with [`escape`].
pub fn parameter_value(value: &str) -> String {
    value
        .chars()
        .filter(|&c| is_xml_char(c))
        .take(500)
        .collect()
}

const HEADER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// `<Say>intro</Say>?<Connect><Stream url><Parameter…/></Stream></Connect><Say>fallback</Say>`.
///
/// `stream_url` is the `wss://…/media-stream` URL; `parameters` become `<Parameter name value>`
/// (see [`parameter_value`]: Twilio limits each to 500 characters; longer values are cut). The trailing `<Say>` is only
/// played when the stream ends while the call is still up, e.g. the assistant was unreachable.
pub fn connect_stream(
    intro: Option<&str>,
    stream_url: &str,
    parameters: &[(&str, &str)],
    fallback: &str,
) -> String {
    let mut xml = String::from(HEADER);
    xml.push_str("<Response>");
    if let Some(intro) = intro {
        let _ = write!(xml, "<Say>{}</Say>", escape(intro));
    }
    let _ = write!(xml, r#"<Connect><Stream url="{}">"#, escape(stream_url));
    for (name, value) in parameters {
        let value = parameter_value(value);
        let _ = write!(
            xml,
            r#"<Parameter name="{}" value="{}"/>"#,
            escape(name),
            escape(&value)
        );
    }
    let _ = write!(
        xml,
        "</Stream></Connect><Say>{}</Say></Response>",
        escape(fallback)
    );
    xml
}

/// `<Say>message</Say><Hangup/>`: for when no assistant can take the call.
pub fn say_and_hang_up(message: &str) -> String {
    format!(
        "{HEADER}<Response><Say>{}</Say><Hangup/></Response>",
        escape(message)
    )
}

/// `<Reject reason="busy"/>`: the caller hears a busy signal and the call is not answered.
pub fn reject_busy() -> String {
    format!(r#"{HEADER}<Response><Reject reason="busy"/></Response>"#)
}

/// `<Response><Dial callerId="…">target</Dial></Response>`: hand the call to a number, or with
/// `<Sip>` to a `sip:`/`sips:` URI (twilio.com/docs/voice/twiml/dial). `caller_id` (E.164) is shown
/// to the person called; without it Twilio uses its default. Sent inline as a call update's
/// `Twiml`, so no XML declaration.
pub fn dial(target: &str, caller_id: Option<&str>) -> String {
    let lower = target.to_ascii_lowercase();
    let sip = lower.starts_with("sip:") || lower.starts_with("sips:");
    let mut xml = String::from("<Response><Dial");
    if let Some(id) = caller_id {
        let _ = write!(xml, r#" callerId="{}""#, escape(id));
    }
    if sip {
        let _ = write!(xml, "><Sip>{}</Sip></Dial></Response>", escape(target));
    } else {
        let _ = write!(xml, ">{}</Dial></Response>", escape(target));
    }
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_parameter_values_stay_inside_their_attribute() {
        let xml = connect_stream(
            None,
            "wss://h/media-stream",
            &[("From", r#""/><Hangup/><x a=""#)],
            "bye",
        );
        assert!(!xml.contains("<Hangup/>"), "{xml}");
        assert!(xml.contains("&quot;/&gt;&lt;Hangup/&gt;"));
    }

    #[test]
    fn characters_xml_forbids_are_dropped_and_whitespace_survives_as_references() {
        assert_eq!(escape("a\u{0}\u{1b}b\u{FFFE}\u{FFFF}c"), "abc");
        assert_eq!(escape("a\tb\r\nc"), "a&#x9;b&#xD;&#xA;c");
        assert_eq!(escape("é\u{10000}\u{FFFD}"), "é\u{10000}\u{FFFD}");
        let long = format!("\u{0}{}", "x".repeat(600));
        assert_eq!(parameter_value(&long), "x".repeat(500));
    }

    #[test]
    fn a_transfer_dials_a_number_or_a_sip_uri_keeping_the_caller_id() {
        assert_eq!(
            dial("+15551230001", Some("+15550001111")),
            r#"<Response><Dial callerId="+15550001111">+15551230001</Dial></Response>"#
        );
        assert_eq!(
            dial("sip:help@example.com", None),
            "<Response><Dial><Sip>sip:help@example.com</Sip></Dial></Response>"
        );
    }

    #[test]
    fn intro_comes_before_connect_and_fallback_after() {
        let xml = connect_stream(Some("Hi & welcome"), "wss://h/media-stream", &[], "Sorry");
        let say = xml.find("<Say>Hi &amp; welcome</Say>").unwrap();
        let connect = xml.find("<Connect>").unwrap();
        let fallback = xml.find("</Connect><Say>Sorry</Say>").unwrap();
        assert!(say < connect && connect < fallback);
    }
}
