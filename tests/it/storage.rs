//! Storage failures: a call record or transcript that cannot be written is counted
//! (`errors_total{kind="storage"}`) and leaves no temp file; temp files a crash left behind are
//! removed when the relay starts.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use twilio_realtime_relay::app::AppState;
use twilio_realtime_relay::config::Config;

use crate::support::{metric, spawn_app};

/// Writing through `path` fails with ENOSPC from now on, as on a full disk.
#[cfg(target_os = "linux")]
fn full_disk_at(path: &std::path::Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/dev/full", path).unwrap();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_call_record_that_cannot_be_written_is_counted_and_leaves_no_temp_file() {
    let app = spawn_app(Config::default()).await;
    let sid = "CA0123456789abcdef0123456789abcdef";
    let tmp = app.dir.path().join(format!("calls/{sid}.json.tmp"));
    full_disk_at(&tmp);
    let callback = Request::post("/twilio/status")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "CallSid={sid}&CallStatus=ringing&SequenceNumber=1"
        )))
        .unwrap();
    let (status, _, _) = app.request(callback).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "Twilio is still answered");
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, r#"errors_total{kind="storage"}"#), 1.0);
    assert!(
        std::fs::symlink_metadata(&tmp).is_err(),
        "the temp file of the failed write is gone"
    );
    assert_eq!(app.state.records.get(sid).unwrap().status, "ringing");
    app.shutdown().await;
}

#[test]
fn temp_files_a_crash_left_are_removed_at_start_up_and_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    std::fs::create_dir_all(&calls).unwrap();
    for leftover in [dir.path().join("CA1.json.tmp"), calls.join("CA1.json.tmp")] {
        std::fs::write(leftover, b"").unwrap();
    }
    std::fs::write(dir.path().join("CA2.json"), b"{}").unwrap();
    let state = AppState::new(Config {
        transcript_dir: dir.path().to_path_buf(),
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
