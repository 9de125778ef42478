//! TwiML as the stand-in runs it: the verbs of a `<Response>` document (`PROTOCOLS.md` § TwiML),
//! parsed with roxmltree.

use std::time::Duration;

/// Longest `<Pause>` honoured, s.
const MAX_PAUSE_SECS: u64 = 600;

/// One verb of a `<Response>`, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// `<Say>text</Say>`: spoken for the stand-in's say time.
    Say(String),
    /// `<Pause length="N"/>` (default 1 s, at most 600 s).
    Pause(Duration),
    /// `<Connect><Stream url>` with its `<Parameter name value>`s: blocks while the WebSocket is up.
    Stream {
        url: String,
        parameters: Vec<(String, String)>,
    },
    /// `<Dial>+1…</Dial>` (or a `<Number>`, `<Sip>`, `<Client>` inside): the callee talks to that
    /// party for the stand-in's dial time.
    Dial(String),
    /// `<Hangup/>` or `<Reject/>`: the call ends here.
    Hangup,
    /// A verb the stand-in does not simulate (`<Start><Stream>` forks, `<Gather>`, `<Play>`, …):
    /// skipped, with its name noted in the call's log.
    Unsupported(String),
}

/// The verbs of `xml`, a TwiML document whose root is `<Response>`.
///
/// # Errors
/// Not XML, or a root other than `<Response>`, or a `<Stream>` without `url` (Twilio: error 12100,
/// "Document parse failure"; the text says what was wrong).
pub fn parse(xml: &str) -> Result<Vec<Verb>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Response" {
        return Err(format!(
            "the root element is <{}>, not <Response>",
            root.tag_name().name()
        ));
    }
    root.children()
        .filter(roxmltree::Node::is_element)
        .map(verb)
        .collect()
}

fn verb(node: roxmltree::Node<'_, '_>) -> Result<Verb, String> {
    let name = node.tag_name().name();
    Ok(match name {
        "Say" => Verb::Say(text(node)),
        "Pause" => {
            let secs = match node.attribute("length") {
                None => 1,
                Some(s) => s
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("<Pause length={s:?}> is not a whole number"))?,
            };
            Verb::Pause(Duration::from_secs(secs.min(MAX_PAUSE_SECS)))
        }
        "Connect" => match node.children().find(|c| c.has_tag_name("Stream")) {
            Some(stream) => {
                let url = stream
                    .attribute("url")
                    .filter(|u| !u.trim().is_empty())
                    .ok_or("<Stream> has no url attribute")?;
                let parameters = stream
                    .children()
                    .filter(|c| c.has_tag_name("Parameter"))
                    .filter_map(|p| {
                        Some((p.attribute("name")?.into(), p.attribute("value")?.into()))
                    })
                    .collect();
                Verb::Stream {
                    url: url.trim().into(),
                    parameters,
                }
            }
            None => Verb::Unsupported("Connect without Stream".into()),
        },
        "Dial" => {
            let inner = node.children().find(roxmltree::Node::is_element);
            let target = inner.map_or_else(|| text(node), text);
            if target.is_empty() {
                return Err("<Dial> names no one to dial".into());
            }
            Verb::Dial(target)
        }
        "Hangup" | "Reject" => Verb::Hangup,
        "Start" => Verb::Unsupported("Start (forks are not simulated)".into()),
        other => Verb::Unsupported(other.into()),
    })
}

/// The element's text, whitespace trimmed.
fn text(node: roxmltree::Node<'_, '_>) -> String {
    let all: String = node
        .descendants()
        .filter(roxmltree::Node::is_text)
        .filter_map(|t| t.text())
        .collect();
    all.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relays_own_twiml_parses_into_its_verbs() {
        let xml = crate::twilio::twiml::connect_stream(
            Some("Connecting you."),
            "wss://relay.example.com/media-stream",
            &[("CallRef", "ref-1"), ("From", "+15550001111")],
            "Sorry, goodbye.",
        );
        let verbs = parse(&xml).expect("the relay's TwiML");
        assert_eq!(
            verbs,
            [
                Verb::Say("Connecting you.".into()),
                Verb::Stream {
                    url: "wss://relay.example.com/media-stream".into(),
                    parameters: vec![
                        ("CallRef".into(), "ref-1".into()),
                        ("From".into(), "+15550001111".into())
                    ],
                },
                Verb::Say("Sorry, goodbye.".into()),
            ]
        );
        let dial = crate::twilio::twiml::dial("+15550003333", Some("+15550001111"));
        assert_eq!(
            parse(&dial).expect("dial"),
            [Verb::Dial("+15550003333".into())]
        );
    }

    #[test]
    fn other_verbs_and_bad_documents() {
        let xml = r#"<Response><Pause length="2"/><Dial><Sip>sip:desk@example.com</Sip></Dial><Gather/><Start><Stream url="wss://x"/></Start><Reject reason="busy"/></Response>"#;
        assert_eq!(
            parse(xml).expect("valid"),
            [
                Verb::Pause(Duration::from_secs(2)),
                Verb::Dial("sip:desk@example.com".into()),
                Verb::Unsupported("Gather".into()),
                Verb::Unsupported("Start (forks are not simulated)".into()),
                Verb::Hangup,
            ]
        );
        assert!(parse("<Response><Say>unclosed</Response>").is_err());
        assert!(parse("<Html/>").unwrap_err().contains("<Html>"));
        assert!(parse("<Response><Connect><Stream/></Connect></Response>").is_err());
        assert!(parse(r#"<Response><Pause length="x"/></Response>"#).is_err());
    }
}
