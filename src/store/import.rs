//! `twilio-realtime-relay import DIR`: load the JSON files of earlier versions (transcripts
//! `DIR/*.json`, call records `DIR/calls/*.json`) into the store, once. A call already in the
//! store is left as it is, so a second run adds nothing.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::Store;
use crate::config::Config;
use crate::events::EventHub;
use crate::records::CallRecord;
use crate::stats::Stats;
use crate::transcript::Transcript;

/// `import` options.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A `TRANSCRIPT_DIR` of an earlier version: `*.json` transcripts and `calls/*.json` records.
    pub dir: PathBuf,
    /// The store to load into (as `serve`'s `DATABASE_URL`).
    #[arg(long, env = "DATABASE_URL", default_value = crate::config::DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

/// What one import did: added, already there, unreadable (skipped), for each kind of file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub records_added: usize,
    pub records_present: usize,
    pub transcripts_added: usize,
    pub transcripts_present: usize,
    pub unreadable: usize,
}

/// Run `import`: load `args.dir` and print the counts.
///
/// # Errors
/// `DATABASE_URL` is unusable, `DIR` cannot be read, or a write failed.
pub async fn main(args: ImportArgs) -> anyhow::Result<()> {
    let config = Config {
        database_url: args.database_url,
        transcript_export: crate::config::TranscriptExport::Off,
        ..Config::default()
    };
    let store = Store::open(&config, Stats::default(), EventHub::default())?;
    let counts = import(&store, &args.dir).await?;
    println!(
        "imported from {}: {} call records ({} already in the store), {} transcripts ({} already in the store), {} unreadable files skipped",
        args.dir.display(),
        counts.records_added,
        counts.records_present,
        counts.transcripts_added,
        counts.transcripts_present,
        counts.unreadable
    );
    Ok(())
}

/// Load `dir` into `store`; see the module docs.
///
/// # Errors
/// `dir` cannot be read, or the store failed.
pub async fn import(store: &Store, dir: &Path) -> anyhow::Result<Counts> {
    store.ready().await?;
    let mut counts = Counts::default();
    for path in json_files(&dir.join("calls"))? {
        match read::<CallRecord>(&path) {
            Ok(record) => {
                if store.insert_record_if_absent(&record).await? {
                    counts.records_added += 1;
                } else {
                    counts.records_present += 1;
                }
            }
            Err(e) => skip(&mut counts, &path, &e),
        }
    }
    for path in json_files(dir)? {
        match read::<Transcript>(&path) {
            Ok(t) => {
                if store.insert_transcript_if_absent(&t).await? {
                    counts.transcripts_added += 1;
                } else {
                    counts.transcripts_present += 1;
                }
            }
            Err(e) => skip(&mut counts, &path, &e),
        }
    }
    Ok(counts)
}

fn skip(counts: &mut Counts, path: &Path, e: &anyhow::Error) {
    counts.unreadable += 1;
    tracing::warn!(path = %path.display(), error = format!("{e:#}"), "import: skipped an unreadable file");
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// `dir/*.json`, sorted; a missing directory has none.
fn json_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}
