//! Twilio request signatures (`X-Twilio-Signature`): computing and checking them, without I/O.
//!
//! Follows `PROTOCOLS.md` § "Twilio request signatures" (twilio.com/docs/usage/security):
//! the string signed is the full URL Twilio requested, then, for a form POST, each parameter's
//! name and value sorted by name (byte order; repeated names by value, an identical pair once)
//! with no separators; the signature is base64(HMAC-SHA1(auth token, that string)). JSON bodies
//! are covered through a `bodySHA256` query value instead. Callers holding the token as a
//! [`crate::config::Secret`] pass `secret.expose()`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// The query parameter Twilio adds to the URL when the request body is JSON.
const BODY_SHA256_PARAM: &str = "bodySHA256";

/// `base64(HMAC-SHA1(auth_token, url + sorted params))`, e.g. `RSOYDt4T1cUTdK1PDd93/VVr8B8=`.
///
/// `url` is used exactly as given (no port is added or removed); `params` are the decoded form
/// fields of a POST (empty for GET, WebSocket upgrades and JSON bodies), in any order; a repeated
/// identical name/value pair is signed once, as Twilio does. Always a 28-character string.
/// See `PROTOCOLS.md` § "Twilio request signatures".
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(mac(auth_token, url, &sorted_params(params)))
}

/// Whether `signature` (the `X-Twilio-Signature` header value) is Twilio's for `url` and `params`.
///
/// `url` is the full URL Twilio requested: scheme, host, optional port, path and query. Because
/// Twilio signs HTTPS URLs without the port, both forms are accepted, as Twilio's own libraries do:
/// a URL without a port is also tried with the scheme's default port (`:443` for https/wss, `:80`
/// for http/ws), and one with the default port is also tried without it. Any other port is used as
/// given. The comparison is constant-time and length-safe; an empty, truncated or non-base64
/// signature is simply `false`. Never panics. See `PROTOCOLS.md` § "Twilio request signatures".
pub fn is_valid(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let given = signature.as_bytes();
    let sorted = sorted_params(params);
    let mut matched = Choice::from(0);
    // Every candidate is computed and compared, so timing does not say which form matched.
    for candidate in url_port_forms(url) {
        let expected = STANDARD.encode(mac(auth_token, &candidate, &sorted));
        matched |= expected.as_bytes().ct_eq(given);
    }
    matched.into()
}

/// Whether a request with a JSON `body` is Twilio's: the URL's `bodySHA256` query value must equal
/// [`body_sha256_hex`]`(body)` and `signature` must be valid for the URL alone (no parameters),
/// with the same port handling as [`is_valid`].
///
/// `false` when `bodySHA256` is missing, appears more than once, or does not match. Never panics.
/// See `PROTOCOLS.md` § "Twilio request signatures" (JSON bodies).
pub fn is_valid_json(auth_token: &str, url: &str, body: &[u8], signature: &str) -> bool {
    let Some(claimed) = single_query_value(url, BODY_SHA256_PARAM) else {
        return false;
    };
    let body_matches: bool = body_sha256_hex(body)
        .as_bytes()
        .ct_eq(claimed.as_bytes())
        .into();
    // `&`, not `&&`: both checks always run, so timing does not say which one failed.
    is_valid(auth_token, url, &[], signature) & body_matches
}

/// SHA-256 of `body` as 64 lowercase hex digits: the value Twilio puts in `bodySHA256`.
pub fn body_sha256_hex(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Form parameters in signing order: by name, then value (`str` ordering is byte order), each
/// identical name/value pair once. Twilio's libraries drop such duplicates (twilio-python's
/// `sorted(set(values))`), and their published repeated-values vector only matches with it.
fn sorted_params(params: &[(String, String)]) -> Vec<&(String, String)> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    sorted
}

/// The string to sign, piece by piece: the URL, then name, value, name, value… of `sorted`.
fn pieces_to_sign<'a>(
    url: &'a str,
    sorted: &'a [&'a (String, String)],
) -> impl Iterator<Item = &'a str> {
    let params = sorted
        .iter()
        .flat_map(|(name, value)| [name.as_str(), value.as_str()]);
    std::iter::once(url).chain(params)
}

/// The raw 20-byte HMAC-SHA1 of the string to sign, fed piece by piece (never concatenated).
fn mac(auth_token: &str, url: &str, sorted: &[&(String, String)]) -> impl AsRef<[u8]> {
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC accepts keys of any length");
    for piece in pieces_to_sign(url, sorted) {
        mac.update(piece.as_bytes());
    }
    mac.finalize().into_bytes()
}

/// `url` first, then its other port form if it has one (see [`is_valid`]). A URL that cannot be
/// parsed as `scheme://authority…` yields only itself.
fn url_port_forms(url: &str) -> Vec<String> {
    let mut forms = vec![url.to_owned()];
    let Some(parts) = split_authority(url) else {
        return forms;
    };
    let default_port = match parts.scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return forms,
    };
    match parts.port {
        None => forms.push(format!(
            "{}:{default_port}{}",
            &url[..parts.host_end],
            &url[parts.host_end..]
        )),
        Some(port) if port == default_port => forms.push(format!(
            "{}{}",
            &url[..parts.host_end],
            &url[parts.authority_end..]
        )),
        Some(_) => {}
    }
    forms
}

/// Byte offsets into a URL of the form `scheme://[userinfo@]host[:port][/path][?query][#fragment]`.
struct AuthorityParts<'a> {
    scheme: &'a str,
    /// End of the host (where `:port` starts, or the authority ends).
    host_end: usize,
    /// End of the authority (where the path, query or fragment starts, or the string ends).
    authority_end: usize,
    /// The digits after the host's `:`, if any (possibly empty for `host:`).
    port: Option<&'a str>,
}

/// Splits `url` by hand (no URL crate, so nothing is normalised behind our back). IPv6 hosts
/// (`[::1]:443`) are recognised by their brackets. `None` when there is no `scheme://`.
fn split_authority(url: &str) -> Option<AuthorityParts<'_>> {
    let scheme_end = url.find("://")?;
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    // Userinfo may contain ':' too; the host starts after the last '@'.
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let host_port = &authority[host_start..];
    let port_colon = if host_port.starts_with('[') {
        // IPv6 literal: a port can only follow the closing bracket.
        host_port
            .find(']')
            .and_then(|close| host_port[close..].find(':').map(|c| close + c))
    } else {
        host_port.rfind(':')
    };
    let authority_end = authority_start + authority_len;
    let (host_end, port) = match port_colon {
        Some(colon) => (
            authority_start + host_start + colon,
            Some(&host_port[colon + 1..]),
        ),
        None => (authority_end, None),
    };
    Some(AuthorityParts {
        scheme: &url[..scheme_end],
        host_end,
        authority_end,
        port,
    })
}

/// The value of `name` in `url`'s query string, if it appears exactly once. Values are compared
/// raw (not percent-decoded): Twilio's `bodySHA256` is plain hex.
fn single_query_value<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let mut values = query
        .split('&')
        .filter_map(|pair| pair.split_once('=').filter(|(key, _)| *key == name))
        .map(|(_, value)| value);
    let first = values.next()?;
    // Two values would make "which one was checked" ambiguous; Twilio sends one.
    values.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// The form parameters of Twilio's published vectors, deliberately out of order.
    fn params() -> Vec<(String, String)> {
        pairs(&[
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("Caller", "+14158675309"),
        ])
    }

    #[test]
    fn string_to_sign_matches_the_published_first_row() {
        let params = params();
        assert_eq!(
            pieces_to_sign(URL, &sorted_params(&params)).collect::<String>(),
            "https://mycompany.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675309Digits1234From+14158675309To+18005551212"
        );
    }

    #[test]
    fn published_url_vectors_sign_and_validate() {
        let vectors = [
            (URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            (
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                "kvajT1Ptam85bY51eRf/AJRuM3w=",
            ),
            (
                "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
                "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            ),
            (
                "http://mycompany.com:80/myapp.php?foo=1&bar=2",
                "0ZXoZLH/DfblKGATFgpif+LLRf4=",
            ),
        ];
        for (url, signature) in vectors {
            assert_eq!(sign(TOKEN, url, &params()), signature, "{url}");
            assert!(is_valid(TOKEN, url, &params(), signature), "{url}");
        }
    }

    #[test]
    fn https_is_accepted_with_and_without_the_default_port() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        // Signed without the port, requested with it, and the other way round.
        assert!(is_valid(
            TOKEN,
            with_port,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(is_valid(
            TOKEN,
            URL,
            &params(),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        // http's default is 80, not 443.
        let http = "http://mycompany.com/myapp.php?foo=1&bar=2";
        assert!(is_valid(
            TOKEN,
            http,
            &params(),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
        assert!(!is_valid(
            TOKEN,
            http,
            &params(),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
    }

    #[test]
    fn a_non_default_port_is_not_dropped() {
        let no_port = "http://mycompany.com/myapp.php?foo=1&bar=2";
        assert!(!is_valid(
            TOKEN,
            no_port,
            &params(),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        ));
        let other = "https://mycompany.com:8443/myapp.php?foo=1&bar=2";
        assert!(!is_valid(
            TOKEN,
            other,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn websocket_upgrades_are_accepted_with_and_without_443() {
        let bare = "wss://relay.example.com/media-stream";
        let ported = "wss://relay.example.com:443/media-stream";
        let signature = sign(TOKEN, bare, &[]);
        assert!(is_valid(TOKEN, bare, &[], &signature));
        assert!(is_valid(TOKEN, ported, &[], &signature));
        let signature = sign(TOKEN, ported, &[]);
        assert!(is_valid(TOKEN, bare, &[], &signature));
        assert!(is_valid(TOKEN, ported, &[], &signature));
        assert!(!is_valid(
            TOKEN,
            "wss://relay.example.com:80/media-stream",
            &[],
            &signature
        ));
    }

    #[test]
    fn repeated_names_are_sorted_by_value_and_duplicates_signed_once() {
        let repeated = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(sign(TOKEN, URL, &repeated), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
        assert!(is_valid(
            TOKEN,
            URL,
            &repeated,
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        ));
    }

    #[test]
    fn json_bodies_are_checked_through_body_sha256() {
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        assert_eq!(body_sha256_hex(body), hash);
        let url = format!("{URL}&bodySHA256={hash}");
        assert_eq!(sign(TOKEN, &url, &[]), "a9nBmqA0ju/hNViExpshrM61xv4=");
        assert!(is_valid_json(
            TOKEN,
            &url,
            body,
            "a9nBmqA0ju/hNViExpshrM61xv4="
        ));
        let ported = url.replacen(".com/", ".com:443/", 1);
        assert!(is_valid_json(
            TOKEN,
            &ported,
            body,
            "a9nBmqA0ju/hNViExpshrM61xv4="
        ));
    }

    #[test]
    fn json_bodies_with_a_wrong_missing_or_doubled_hash_are_rejected() {
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash = body_sha256_hex(body);
        let tampered = br#"{"property": "value", "boolean": false}"#;
        let url = format!("{URL}&bodySHA256={hash}");
        let signature = sign(TOKEN, &url, &[]);
        assert!(!is_valid_json(TOKEN, &url, tampered, &signature));
        // Validly signed, but there is no hash to bind the body to.
        assert!(!is_valid_json(TOKEN, URL, body, &sign(TOKEN, URL, &[])));
        let doubled = format!("{url}&bodySHA256={hash}");
        assert!(!is_valid_json(
            TOKEN,
            &doubled,
            body,
            &sign(TOKEN, &doubled, &[])
        ));
    }

    #[test]
    fn any_change_to_the_request_is_rejected() {
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        let mut changed = params();
        changed[2].1 = "1235".into();
        assert!(!is_valid(TOKEN, URL, &changed, good));
        let mut added = params();
        added.push(("Extra".into(), "1".into()));
        assert!(!is_valid(TOKEN, URL, &added, good));
        assert!(!is_valid(TOKEN, URL, &[], good));
        assert!(!is_valid("54321", URL, &params(), good));
        let other_url = "https://mycompany.com/myapp.php?foo=1&bar=3";
        assert!(!is_valid(TOKEN, other_url, &params(), good));
        let other_signature = sign(TOKEN, other_url, &params());
        assert!(!is_valid(TOKEN, URL, &params(), &other_signature));
    }

    #[test]
    fn empty_truncated_and_garbage_signatures_are_rejected() {
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        for bad in [
            "",
            &good[..27],
            &good[..1],
            "RSOYDt4T1cUTdK1PDd93/VVr8B8",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8==",
            " RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            "!!!!not base64 at all!!!!!!",
            "rsoydt4t1cutdk1pdd93/vvr8b8=",
        ] {
            assert!(!is_valid(TOKEN, URL, &params(), bad), "{bad:?}");
        }
    }

    #[test]
    fn odd_urls_do_not_panic_and_keep_their_form() {
        assert_eq!(
            url_port_forms("https://[::1]/x"),
            ["https://[::1]/x", "https://[::1]:443/x"]
        );
        assert_eq!(
            url_port_forms("wss://[::1]:443?a=b"),
            ["wss://[::1]:443?a=b", "wss://[::1]?a=b"]
        );
        assert_eq!(
            url_port_forms("https://user:pw@host:443/p"),
            ["https://user:pw@host:443/p", "https://user:pw@host/p"]
        );
        assert_eq!(url_port_forms("ftp://host/x"), ["ftp://host/x"]);
        for url in [
            "",
            "://",
            "https://",
            "https://[",
            "https://[::1",
            "https://h:",
            "x?#@:[",
        ] {
            assert!(!url_port_forms(url).is_empty());
            assert!(!is_valid(TOKEN, url, &[], "x"));
            assert!(!is_valid_json(TOKEN, url, b"", "x"));
        }
    }
}
