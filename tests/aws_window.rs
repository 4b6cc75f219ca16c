//! Window dedup (`DEDUP_MODE=window`) against the real S3 server (SeaweedFS):
//! no dedup store at all; a retried batch finds its staging object by name,
//! a producer re-send is dropped by the publisher's look-back, and an S3
//! answer lost after the staging object landed stages nothing twice.
//!
//! Run: `python3 scripts/testenv.py run -- cargo test --features integration --test aws_window`

#![cfg(feature = "integration")]

mod util;

use kinesis_lake::core::dedup::{DedupMode, NoClaims};
use util::*;

const WINDOW: u32 = 300;

/// A fresh lake whose consumer stages with window dedup.
async fn window_lake(test: &str) -> Lake {
    let mut lake = Lake::fresh_staged(test, WINDOW).await;
    lake.cfg.dedup = DedupMode::Window;
    lake
}

/// A retry of the whole batch (the answer to Lambda was lost), then a
/// producer re-send in another batch: every event once, the dead letters
/// once, and not one request to a dedup store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_dedup_a_retry_and_a_resend_land_each_event_once() {
    let lake = window_lake("win-retry").await;
    let event = fixture("small-batch.json");
    let first = lake.invoke(&event, &NoClaims, &lake.sink).await;
    assert!(
        first.response.batch_item_failures.is_empty(),
        "{:?}",
        first.outcome.failed
    );
    assert_eq!(first.outcome.counts.staging_objects, 1);
    let staged = lake.staging_keys().await;
    let retry = lake.invoke(&event, &NoClaims, &lake.sink).await;
    assert!(retry.response.batch_item_failures.is_empty());
    let c = &retry.outcome.counts;
    assert_eq!((c.written, c.staging_objects, c.duplicates), (0, 0, 9));
    assert_eq!(c.rejected, SMALL_BATCH_REJECTS as u64);
    assert_eq!(
        lake.staging_keys().await,
        staged,
        "the same name, no new object"
    );

    // a producer re-send (another batch: another staging object)
    let resend = lake
        .invoke(&fixture("retry-batch.json"), &NoClaims, &lake.sink)
        .await;
    assert_eq!(resend.outcome.counts.staging_objects, 1);
    let p = lake.publish_all().await;
    assert_eq!(p.events, 9, "{p:?}");
    let mut all = SMALL_BATCH_UUIDS.to_vec();
    all.push("00000000-0000-4000-8000-000000000009");
    lake.assert_exactly_once(&all).await;
    assert_eq!(lake.dead_letters().await.len(), SMALL_BATCH_REJECTS);
}

/// The staging object landed but S3's answer was lost: the batch fails, and
/// its retry finds the object there and stages nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_dedup_a_staging_write_that_landed_unacknowledged_is_not_staged_twice() {
    let lake = window_lake("win-acks").await;
    let event = fixture("small-batch.json");
    let lossy = FaultySink::every_put(&lake.sink, SinkFault::LoseAcks);
    let out = lake.invoke(&event, &NoClaims, &lossy).await;
    assert!(out.outcome.counts.failed > 0, "{:?}", out.outcome.counts);
    assert_eq!(lake.staging_keys().await.len(), 1, "it landed");
    let retry = lake.invoke(&event, &NoClaims, &lake.sink).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    assert_eq!(retry.outcome.counts.staging_objects, 0);
    lake.publish_all().await;
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
    assert_eq!(lake.dead_letters().await.len(), SMALL_BATCH_REJECTS);
}

/// A batch retried after its window was published (Lambda retries for as
/// long as the records live): the publisher's look-back drops every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_dedup_a_retry_after_publication_is_dropped_by_the_look_back() {
    let lake = window_lake("win-late").await;
    let event = fixture("small-batch.json");
    lake.invoke(&event, &NoClaims, &lake.sink).await;
    let p = lake.publish_all().await;
    assert_eq!(p.events, 8);
    let retry = lake.invoke(&event, &NoClaims, &lake.sink).await;
    assert!(retry.response.batch_item_failures.is_empty());
    let p = lake.publish_all().await;
    assert_eq!(p.events, 0, "{p:?}");
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
}

/// The CLI on an S3 lake with `--dedup window`: no dedup table named, and
/// DynamoDB unreachable; the same input twice lands every event once; a
/// dedup table named beside window dedup is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_dedup_cli_on_s3_needs_no_table_and_a_rerun_adds_nothing() {
    let lake = Lake::fresh("win-cli").await;
    let url = format!("s3://{}/{}", lake.name, lake.prefix);
    let nobody = format!("http://127.0.0.1:{}", closed_port());
    let env = [("AWS_ENDPOINT_URL_DYNAMODB", nobody.as_str())];
    let input = fixture_path("kinesis");
    let args = [
        "ingest",
        "--lake",
        &url,
        "--dedup",
        "window",
        "--json",
        "--no-progress",
        &input,
    ];
    let mut published = Vec::new();
    for _ in 0..2 {
        let out = cli(&args, &env);
        assert!(
            out.status.success(),
            "ingest failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
        assert_eq!(s["failed"], 0, "{s}");
        published.push(s["published"]["events"].as_u64().expect("published"));
    }
    assert_eq!(
        published[1], 0,
        "the re-run publishes nothing: {published:?}"
    );
    let rows = lake.rows().await;
    assert_eq!(rows.len() as u64, published[0], "{rows:?}");
    assert!(rows.values().all(|n| *n == 1), "{rows:?}");
    for u in SMALL_BATCH_UUIDS {
        assert_eq!(rows.get(u), Some(&1), "{u}");
    }

    let both = cli(
        &[
            "ingest",
            "--lake",
            &url,
            "--dedup",
            "window",
            "--dedup-table",
            "t",
            &input,
        ],
        &env,
    );
    assert!(!both.status.success());
    assert!(
        String::from_utf8_lossy(&both.stderr).contains("--dedup window uses no dedup table"),
        "{}",
        String::from_utf8_lossy(&both.stderr)
    );
}
