//! The bundled caller clips (`assets/*.wav`), compiled in so the demo and the Twilio stand-in's
//! simulated callee run from any directory.

use anyhow::Context;

/// The clips, by the path they were compiled from: 8 kHz μ-law WAV each.
const CLIPS: [(&str, &[u8]); 2] = [
    (
        "assets/caller-hello.wav",
        include_bytes!("../../assets/caller-hello.wav"),
    ),
    (
        "assets/caller-question.wav",
        include_bytes!("../../assets/caller-question.wav"),
    ),
];

/// How many bundled clips there are.
pub const COUNT: usize = CLIPS.len();

/// The bundled clips decoded to 8 kHz μ-law, in order ("hello", then a question).
///
/// # Errors
/// Only if a compiled-in file is not a WAV this crate reads (a build mistake).
pub fn clips() -> anyhow::Result<Vec<Vec<u8>>> {
    CLIPS
        .iter()
        .map(|(name, bytes)| crate::wav::decode_wav(bytes).with_context(|| name.to_string()))
        .collect()
}

/// `paths` read as clips (8 kHz μ-law or 16-bit PCM WAV), or the bundled clips when empty.
///
/// # Errors
/// A file cannot be read or is not such a WAV.
pub fn clips_or(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    if paths.is_empty() {
        return clips();
    }
    paths.iter().map(|p| crate::wav::read_ulaw(p)).collect()
}
