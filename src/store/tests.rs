//! The store's contract, one body run against both engines (PostgreSQL only with
//! `TEST_DATABASE_URL`, in a scratch database of its own).

use std::time::Duration;

use super::*;
use crate::active::CallSettings;
use crate::records::CallRecord;
use crate::transcript::{EndReason, Role, Transcript};

fn config(url: String, dir: &std::path::Path) -> Config {
    Config {
        database_url: url,
        transcript_dir: dir.to_path_buf(),
        instance_heartbeat_secs: 1,
        ..Config::default()
    }
}

/// Poll `check` every 20 ms until it holds, for at most 5 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn contract(url: String) {
    let dir = tempfile::tempdir().unwrap();
    let stats = Stats::default();
    let store = Store::open(&config(url, dir.path()), stats.clone(), EventHub::default()).unwrap();
    assert_eq!(
        store.start().await.unwrap(),
        0,
        "a fresh store has no leftovers"
    );

    // Records: created, changed in place, listed in progress first then newest first.
    let old = store
        .update(
            "CA_old",
            || CallRecord::new("CA_old", "inbound", "in-progress"),
            |r| r.end("completed", Some(EndReason::CallerHungUp)),
        )
        .await;
    assert!(old.is_ended());
    store
        .update(
            "CA_live",
            || CallRecord::new("CA_live", "outbound-api", "queued"),
            |r| r.metadata = Some(serde_json::json!({"order": 7})),
        )
        .await;
    let applied = store
        .update_existing("CA_live", |r| {
            assert!(r.apply_status("ringing", Some(3), None));
        })
        .await
        .unwrap();
    assert_eq!(applied.last_sequence, Some(3));
    let again = store.get("CA_live").await.unwrap().unwrap();
    assert_eq!(again.status, "ringing");
    assert_eq!(
        again.last_sequence,
        Some(3),
        "the sequence survives the round trip"
    );
    assert_eq!(again.metadata, Some(serde_json::json!({"order": 7})));
    assert!(store.update_existing("CA_none", |_| {}).await.is_none());
    let sids: Vec<String> = store
        .list(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.call_sid)
        .collect();
    assert_eq!(sids, ["CA_live", "CA_old"]);
    assert_eq!(store.list(1).await.unwrap().len(), 1);

    // Settings: taken once.
    let settings = CallSettings {
        voice: Some("cedar".into()),
        instructions: Some("Be brief.".into()),
        tools: Some(vec!["lookup".into()]),
        ..CallSettings::default()
    };
    let reference = store.put_settings(&settings).await.unwrap();
    assert_eq!(
        store.take_settings(&reference).await.unwrap(),
        Some(settings)
    );
    assert_eq!(store.take_settings(&reference).await.unwrap(), None);

    // Transcripts: each saved turn lands in the store while the call goes on.
    let mut t = Transcript::new("CA_live", "MZ1", Some("+15550001".into()), None);
    t.complete("a", Role::Caller, "hello");
    store.save_transcript(&t);
    eventually("the first turn is stored", || async {
        store
            .transcript("CA_live")
            .await
            .unwrap()
            .is_some_and(|s| s.turns.len() == 1)
    })
    .await;
    t.begin("b", Role::Assistant, chrono::Utc::now());
    t.interrupt("b", 640);
    t.complete("b", Role::Assistant, "hi there");
    t.finish(EndReason::CallerHungUp);
    let path = store.finish_transcript(&t).await.expect("exported");
    let stored = store.transcript("CA_live").await.unwrap().unwrap();
    let json = |t: &Transcript| serde_json::to_value(t).unwrap();
    assert_eq!(
        json(&stored),
        json(&t),
        "the store gives back the transcript as written"
    );
    let file: Transcript = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(json(&file), json(&t), "the export is the stored transcript");
    assert_eq!(stored.turns[1].heard_ms, Some(640));

    // Registry: this instance is live and beats.
    let before = store.instances().await.unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].state, "live");
    store.heartbeat().await.unwrap();
    let after = store.instances().await.unwrap();
    assert!(after[0].heartbeat_at >= before[0].heartbeat_at);
    store.stop().await;
    assert_eq!(store.instances().await.unwrap()[0].state, "stopped");
    assert!(store.healthy().await);
    assert_eq!(stats.errors(), 0);
}

#[tokio::test]
async fn the_store_contract_holds_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    contract(format!("sqlite://{}/db/relay.db", dir.path().display())).await;
    assert!(
        dir.path().join("db/relay.db").exists(),
        "created with its directory"
    );
}

#[tokio::test]
async fn the_store_contract_holds_on_postgres() {
    let Some(db) = scratch::postgres("the_store_contract_holds_on_postgres")
        .await
        .unwrap()
    else {
        return;
    };
    contract(db.url.clone()).await;
    db.drop_database().await.unwrap();
}

#[test]
fn database_urls_of_other_engines_are_refused() {
    assert!(check_url("sqlite://./data/relay.db").is_ok());
    assert!(check_url("postgres://postgres@127.0.0.1:5432/relay").is_ok());
    let err = check_url("mysql://root@localhost/relay").unwrap_err();
    assert!(err.contains("sqlite:// or postgres://"), "{err}");
}
