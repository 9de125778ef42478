//! Tracing set-up in one place: `RUST_LOG` filter (default `info`), text or JSON lines on stderr.
//! Text is coloured only when stderr is a terminal (and `NO_COLOR` is unset, see no-color.org):
//! escape codes in a file, `docker logs` or a log collector are noise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// `filter` with the targets that would log secrets capped below `trace`: tungstenite logs the
/// whole upgrade request there, `Authorization` header included. Applied whatever `RUST_LOG` asks.
pub fn guarded(filter: EnvFilter) -> EnvFilter {
    // Only cap: adding the directive when trace is off would raise the target to debug.
    if filter.max_level_hint() == Some(tracing::level_filters::LevelFilter::TRACE) {
        filter.add_directive(
            "tungstenite::handshake=debug"
                .parse()
                .expect("a valid directive"),
        )
    } else {
        filter
    }
}

/// Whether text logs get ANSI colours: stderr is a terminal and `NO_COLOR` is unset or empty.
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Install the global subscriber. Safe to call once; later calls are ignored.
pub fn init(format: LogFormat) {
    let filter =
        guarded(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
