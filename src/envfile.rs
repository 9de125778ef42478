//! `.env`: read before the command line is parsed, applied only if the whole file parses.
//!
//! The file is found as `dotenvy` finds it (the working directory, then its parents) and parsed
//! with its syntax; variables already in the environment win. Two rules of our own:
//! an empty value means "unset" for every option (so `cp .env.example .env` starts: its empty
//! `WORKER_THREADS=` is the default, not an integer that failed to parse), and a name that is not
//! one of ours but is a near miss of one (`VOCIE`, `openai_api_key`) is reported with the name it
//! probably meant, since the relay would otherwise ignore it in silence. Syntax errors name the
//! line, never the value (it may be a secret).

use std::path::{Path, PathBuf};

use tracing::warn;

/// Variables read outside the clap options: the log filter and TLS roots.
const OTHER_NAMES: [&str; 4] = ["RUST_LOG", "SSL_CERT_FILE", "SSL_CERT_DIR", "NO_COLOR"];

/// What loading `.env` found: the file (if any) and the near misses to warn about.
#[derive(Debug, Default)]
pub struct EnvFile {
    /// The `.env` read, if one was found.
    pub path: Option<PathBuf>,
    /// Names in the file that are not ours but close to one of ours.
    pub near_misses: Vec<NearMiss>,
}

/// A `.env` name that is probably a typo of one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearMiss {
    /// 1-based line of the file.
    pub line: usize,
    /// The name as written.
    pub name: String,
    /// The option it most likely means.
    pub meant: String,
}

/// Why `.env` cannot be used; nothing of it has been applied.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    /// A line dotenv syntax cannot parse.
    #[error("{path}: line {line}{}: cannot parse this line at column {column}; write NAME=value and quote values that contain spaces, `#` or quotes", in_parens(.name))]
    Syntax {
        /// The file.
        path: String,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        /// The variable the line sets, when that much parsed (the value is never shown).
        name: Option<String>,
    },
    /// The file exists but cannot be read, or a `${VAR}` reference is broken.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The I/O or substitution error.
        reason: String,
    },
}

fn in_parens(name: &Option<String>) -> String {
    name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
}

impl EnvFile {
    /// Log each near miss as a warning naming the line and the intended variable.
    pub fn log_warnings(&self) {
        let path = self.path.as_deref().unwrap_or(Path::new(".env")).display();
        for miss in &self.near_misses {
            warn!(
                path = %path,
                line = miss.line,
                variable = miss.name.as_str(),
                meant = miss.meant.as_str(),
                "{} is not a setting of this relay and is ignored; did you mean {}?",
                miss.name,
                miss.meant
            );
        }
    }
}

/// Every environment variable `command` (and its subcommands) reads, plus the few read outside
/// clap (`RUST_LOG`, `SSL_CERT_FILE`, `SSL_CERT_DIR`, `NO_COLOR`).
pub fn known_names(command: &clap::Command) -> Vec<String> {
    let mut names: Vec<String> = OTHER_NAMES.iter().map(|n| n.to_string()).collect();
    collect_names(command, &mut names);
    names.sort();
    names.dedup();
    names
}

fn collect_names(command: &clap::Command, names: &mut Vec<String>) {
    for arg in command.get_arguments() {
        if let Some(env) = arg.get_env() {
            names.push(env.to_string_lossy().into_owned());
        }
    }
    for sub in command.get_subcommands() {
        collect_names(sub, names);
    }
}

/// Find and apply `.env`, then treat every empty variable in `known` as unset (removed from the
/// process environment, wherever it came from). Must run before any other thread exists: it
/// changes the process environment.
pub fn load(known: &[String]) -> Result<EnvFile, EnvFileError> {
    let mut found = EnvFile::default();
    if let Some(path) = find() {
        let (text, pairs) = read(&path)?;
        found.near_misses = near_misses(&text, pairs.iter().map(|(k, _)| k.as_str()), known);
        for (key, value) in pairs {
            let unset =
                std::env::var_os(&key).is_none_or(|v| v.to_string_lossy().trim().is_empty());
            if unset && !value.trim().is_empty() {
                std::env::set_var(&key, value);
            }
        }
        found.path = Some(path);
    }
    for name in known {
        if std::env::var_os(name).is_some_and(|v| v.to_string_lossy().trim().is_empty()) {
            std::env::remove_var(name);
        }
    }
    Ok(found)
}

/// `.env` in the working directory or the nearest parent that has one.
fn find() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|dir| dir.join(".env"))
        .find(|candidate| candidate.is_file())
}

/// The text of the file at `path` and its `(name, value)` pairs in order, or the first error.
fn read(path: &Path) -> Result<(String, Vec<(String, String)>), EnvFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| EnvFileError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let pairs = parse(&text).map_err(|e| match e {
        EnvFileError::Syntax {
            line, column, name, ..
        } => EnvFileError::Syntax {
            path: shown,
            line,
            column,
            name,
        },
        EnvFileError::Unreadable { reason, .. } => EnvFileError::Unreadable {
            path: shown,
            reason,
        },
    })?;
    Ok((text, pairs))
}

/// Every `(name, value)` of a `.env` text, in order, or the first error (`path` left empty).
fn parse(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut pairs = Vec::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok(pair) => pairs.push(pair),
            Err(dotenvy::Error::LineParse(logical, index)) => {
                let (line, column, name) = locate(text, &logical, index);
                return Err(EnvFileError::Syntax {
                    path: String::new(),
                    line,
                    column,
                    name,
                });
            }
            Err(e) => {
                return Err(EnvFileError::Unreadable {
                    path: String::new(),
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(pairs)
}

/// Where dotenvy's error is: the 1-based line and column, and the name that line sets.
///
/// dotenvy reports the text it failed on (a whole line, the value part of one, or from an
/// unterminated quote to the end of the file) and a character index into it, not a line
/// number. That text is found in the file at a line start or after a `=` (parsing stops at the
/// first error, so the first such occurrence is the one); an index at its end (an unterminated
/// quote) points at where it starts.
fn locate(text: &str, failed: &str, index: usize) -> (usize, usize, Option<String>) {
    let start = text
        .match_indices(failed)
        .map(|(at, _)| at)
        .find(|&at| {
            let before = text[..at].trim_end_matches([' ', '\t', '"', '\'']);
            before.is_empty() || before.ends_with('\n') || before.ends_with('=')
        })
        .unwrap_or(0);
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let mut line = text[..start].matches('\n').count() + 1;
    let lead = text[line_start..start].chars().count();
    let column = if index < failed.chars().count() {
        let before: String = failed.chars().take(index).collect();
        match before.rsplit_once('\n') {
            Some((earlier, last)) => {
                line += earlier.matches('\n').count() + 1;
                last.chars().count() + 1
            }
            None => lead + before.chars().count() + 1,
        }
    } else {
        lead + 1
    };
    let physical = text[line_start..].lines().next().unwrap_or("");
    let name = physical
        .split_once('=')
        .map(|(name, _)| {
            let name = name.trim();
            name.strip_prefix("export ").unwrap_or(name).trim()
        })
        .filter(|n| is_name(n))
        .map(str::to_string);
    (line, column, name)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// The names among `names` that are not in `known` but close to one name there, with the line
/// of `text` where each is set.
fn near_misses<'a>(
    text: &str,
    names: impl Iterator<Item = &'a str>,
    known: &[String],
) -> Vec<NearMiss> {
    names
        .filter(|name| !known.iter().any(|k| k == name))
        .filter_map(|name| {
            let meant = closest(name, known)?;
            Some(NearMiss {
                line: line_setting(text, name).unwrap_or(0),
                name: name.to_string(),
                meant: meant.to_string(),
            })
        })
        .collect()
}

/// The known name `name` most likely means: the same name in other case or with `-` or `.` for
/// `_` or without underscores, or within two edits (Damerau–Levenshtein: a swap of two letters
/// is one edit) that change at most a quarter of it, so `PORT` is not taken for `HOST`.
fn closest<'k>(name: &str, known: &'k [String]) -> Option<&'k str> {
    let normal: String = name
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    let squeezed = |s: &str| s.replace('_', "");
    known
        .iter()
        .filter_map(|k| {
            let distance = strsim::damerau_levenshtein(&normal, k);
            let same = distance == 0 || squeezed(&normal) == squeezed(k);
            let close = distance <= 2 && distance * 4 <= k.len();
            (same || close).then_some((if same { 0 } else { distance }, k.as_str()))
        })
        .min()
        .map(|(_, k)| k)
}

/// The 1-based line of `text` that sets `name` (`NAME=…` or `export NAME=…`).
fn line_setting(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            line.strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["VOICE", "OPENAI_API_KEY", "PORT", "HOST", "WORKER_THREADS"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn syntax_errors_name_the_line_and_column_but_never_the_value() {
        let text = "# comment\nPORT=8080\n\nOPENAI_API_KEY=sk-secret value\nVOICE=marin\n";
        let err = parse(text).unwrap_err();
        let EnvFileError::Syntax {
            line, column, name, ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!((*line, *column), (4, 26), "{err}");
        assert_eq!(name.as_deref(), Some("OPENAI_API_KEY"));
        assert!(!err.to_string().contains("sk-secret"), "{err}");

        let err = parse("PORT=1\nthis is not a setting\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        // An unterminated quote is reported where its line starts.
        let err = parse("PORT=1\nVOICE=\"marin\nHOST=x\n").unwrap_err();
        assert!(err.to_string().contains("line 2 (VOICE)"), "{err}");
        // Names may not contain `-`.
        let err = parse("PORT=1\n\nWORKER-THREADS=2\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn multi_line_values_keep_later_line_numbers_right() {
        let text = "A=\"one\ntwo\"\nB=ok\nC=bad value\n";
        let err = parse(text).unwrap_err();
        assert!(err.to_string().contains("line 4"), "{err}");
    }

    #[test]
    fn near_misses_name_the_option_they_probably_mean() {
        let text = "VOCIE=cedar\nexport openai_api_key=sk\nOPENAI_APIKEY=sk\nworker.threads=2\nNODE_ENV=production\nPATH=/bin\nPROT=1\nVOICE=marin\n";
        let pairs = parse(text).unwrap();
        let misses = near_misses(text, pairs.iter().map(|(k, _)| k.as_str()), &known());
        let got: Vec<(usize, &str, &str)> = misses
            .iter()
            .map(|m| (m.line, m.name.as_str(), m.meant.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "VOCIE", "VOICE"),
                (2, "openai_api_key", "OPENAI_API_KEY"),
                (3, "OPENAI_APIKEY", "OPENAI_API_KEY"),
                (4, "worker.threads", "WORKER_THREADS"),
                (7, "PROT", "PORT"),
            ],
            "NODE_ENV and PATH are someone else's"
        );
    }

    #[test]
    fn known_names_cover_subcommands_and_the_log_filter() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: Sub,
        }
        #[derive(clap::Subcommand)]
        enum Sub {
            Serve(crate::config::Config),
        }
        let names = known_names(&<Cli as clap::CommandFactory>::command());
        for name in ["VOICE", "WORKER_THREADS", "DEEPGRAM_API_KEY", "RUST_LOG"] {
            assert!(names.iter().any(|n| n == name), "{name}");
        }
    }
}
