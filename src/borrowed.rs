//! One serde helper shared by the per-frame probes of both protocols ([`crate::twilio::media`],
//! [`crate::realtime::server`]).

use std::borrow::Cow;

use serde::Deserialize;

/// `Option<Cow<str>>` that borrows from the input when it holds no escapes: serde only borrows
/// bare `Cow` fields, and an optional one would otherwise be copied on every frame. Use with
/// `#[serde(default, borrow, deserialize_with = "crate::borrowed::optional_str")]`.
pub(crate) fn optional_str<'de, D>(d: D) -> Result<Option<Cow<'de, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed>::deserialize(d)?.map(|b| b.0))
}
