//! Storage failures: a database or transcript file that cannot be written is counted
//! (`errors_total{kind="storage"}`), leaves no temp file and never ends the call; temp files a
//! crash left behind are removed when the relay starts.

use twilio_realtime_relay::app::AppState;
use twilio_realtime_relay::config::Config;

use sqlx::{Connection, SqliteConnection};
use twilio_realtime_relay::fake_openai::{FakeOptions, Mode};
use twilio_realtime_relay::sim;

use crate::support::{self, call_options, clip, metric, spawn_with_fake};

fn parrot() -> FakeOptions {
    FakeOptions {
        mode: Mode::Parrot,
        ..FakeOptions::default()
    }
}

/// Writing through `path` fails with ENOSPC from now on, as on a full disk.
#[cfg(target_os = "linux")]
fn full_disk_at(path: &std::path::Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/dev/full", path).unwrap();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_transcript_file_that_cannot_be_written_is_counted_and_the_store_keeps_the_call() {
    let (app, _fake) = spawn_with_fake(parrot(), |_| {}).await;
    let sid = "CA0123456789abcdef0123456789abcdef";
    let tmp = app.dir.path().join(format!("{sid}.json.tmp"));
    full_disk_at(&tmp);
    let mut call = call_options(&app, vec![clip("caller-hello.wav")]);
    call.call_sid = Some(sid.into());
    let report = sim::run(call).await.expect("the call goes on");
    assert!(!report.received_audio.is_empty(), "the caller was answered");
    app.calls_finished().await;
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, r#"errors_total{kind="storage"}"#), 1.0);
    assert!(
        std::fs::symlink_metadata(&tmp).is_err(),
        "the temp file of the failed write is gone"
    );
    let stored = app
        .state
        .store
        .transcript(sid)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(
        stored.turns.len(),
        2,
        "the store has the turns the file lacks"
    );
    app.shutdown().await;
}

/// Another process holding SQLite's write lock (as a backup tool or a stuck writer would):
/// every write fails after the busy timeout, and the call still goes on.
#[tokio::test]
async fn a_database_that_cannot_be_written_is_counted_and_the_call_goes_on() {
    let (app, _fake) = spawn_with_fake(parrot(), |_| {}).await;
    assert!(
        app.state.store.healthy().await,
        "migrated before the lock is taken"
    );
    let url = support::sqlite_url(app.dir.path());
    let mut lock = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    let report = sim::run(call_options(&app, vec![clip("caller-hello.wav")]))
        .await
        .expect("the call goes on");
    assert!(!report.received_audio.is_empty(), "the caller was answered");
    app.calls_finished().await;
    let metrics = app.metrics().await;
    assert!(
        metric(&metrics, r#"errors_total{kind="storage"}"#) >= 2.0,
        "{metrics}"
    );
    // The export falls back to the call's own copy, so the transcript is not lost too.
    assert_eq!(
        app.transcript(&report.call_sid)["turns"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn temp_files_a_crash_left_are_removed_at_start_up_and_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    std::fs::create_dir_all(&calls).unwrap();
    for leftover in [dir.path().join("CA1.json.tmp"), calls.join("CA1.json.tmp")] {
        std::fs::write(leftover, b"").unwrap();
    }
    std::fs::write(dir.path().join("CA2.json"), b"{}").unwrap();
    let state = AppState::new(Config {
        transcript_dir: dir.path().to_path_buf(),
        database_url: support::sqlite_url(&dir.path().join("db")),
        ..Config::default()
    });
    let mut left: Vec<String> = walk(dir.path());
    left.sort();
    assert_eq!(left, ["CA2.json", "calls"]);
    assert!(walk(&calls).is_empty());
    assert_eq!(state.stats.errors(), 0);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}
