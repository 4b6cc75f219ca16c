//! Staged writes and publication against the real servers (SeaweedFS for S3,
//! DynamoDB Local): the exactly-once cases of `tests/aws.rs` with each batch
//! staged and its window published afterwards, and the publisher's own
//! cases (a crash between staging and publication, a publisher that dies
//! after some partition files, two publishers at once, a late staging
//! object, a duplicate arriving after its window was published).
//!
//! Run: `python3 scripts/testenv.py run -- cargo test --features integration --test aws_publish`

#![cfg(feature = "integration")]

mod util;

use std::time::Duration;

use chrono::{DateTime, Utc};
use kinesis_lake::kinesis::{KinesisEvent, raw_records};
use kinesis_lake::run_batch;
use util::*;

const WINDOW: u32 = 300;

/// A window start in the past, so that tests choose when windows close.
const T0: i64 = 1_710_670_500;

fn at(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).expect("valid time")
}

/// Runs one batch as the consumer would, at a chosen time.
async fn stage_at(
    lake: &Lake,
    event: &KinesisEvent,
    now: DateTime<Utc>,
) -> kinesis_lake::BatchOutcome {
    let records = raw_records(event.clone()).expect("records");
    run_batch(&records, &lake.store, &lake.sink, &lake.cfg, now).await
}

fn staging_only(keys: &[String]) -> bool {
    keys.iter().all(|k| !k.ends_with(".parquet"))
}

/// Case 1, staged: a producer re-send on another shard is dropped, both
/// before its window is published and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_resend_before_and_after_publication_is_dropped() {
    let lake = Lake::fresh_staged("st-case1", WINDOW).await;
    let first = lake.invoke_real(&fixture("small-batch.json")).await;
    assert!(
        first.response.batch_item_failures.is_empty(),
        "{:?}",
        first.outcome.failed
    );
    let c = &first.outcome.counts;
    assert_eq!((c.written, c.staging_objects, c.files), (8, 1, 0));
    assert!(
        staging_only(&lake.keys().await),
        "nothing visible before publication"
    );
    let staged = lake.staging_keys().await;
    assert_eq!(staged.len(), 1);
    assert!(staged[0].contains("/shardId-000000000000-"), "{staged:?}");

    // before publication: the staging object holds the event
    let resend = fixture("retry-batch.json");
    let second = lake.invoke_real(&resend).await;
    assert_eq!(
        (
            second.outcome.counts.written,
            second.outcome.counts.duplicates
        ),
        (1, 2)
    );
    let p = lake.publish_all().await;
    assert_eq!((p.events, p.staging_objects), (9, 2));
    let mut all = SMALL_BATCH_UUIDS.to_vec();
    all.push("00000000-0000-4000-8000-000000000009");
    lake.assert_exactly_once(&all).await;

    // after publication: the published staging object still holds it
    let third = lake.invoke_real(&resend).await;
    assert!(third.response.batch_item_failures.is_empty());
    assert_eq!(
        (
            third.outcome.counts.written,
            third.outcome.counts.duplicates
        ),
        (0, 3)
    );
    lake.publish_all().await;
    lake.assert_exactly_once(&all).await;
    assert_eq!(lake.dead_letters().await.len(), SMALL_BATCH_REJECTS);
}

/// Case 2, staged: the claims fail (or their answers are lost) before
/// anything is staged; the retry stages every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_failure_before_staging_then_the_retry_lands_once() {
    let lake = Lake::fresh_staged("st-case2", WINDOW).await;
    let event = fixture("small-batch.json");
    for fault in [StoreFault::FailAll, StoreFault::LoseAcks] {
        let failing = FaultyStore::new(&lake.store, fault);
        let out = lake.invoke(&event, &failing, &lake.sink).await;
        assert_eq!(out.outcome.counts.failed, 19, "{fault:?}");
        assert!(
            lake.keys().await.is_empty(),
            "{fault:?}: nothing may be written"
        );
    }
    let retry = lake.invoke_real(&event).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    lake.publish_all().await;
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
    assert_eq!(lake.dead_letters().await.len(), SMALL_BATCH_REJECTS);
}

/// Case 3, staged: the claims were made, the staging write failed; the
/// retry stages the events under the same name, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_claims_made_but_the_staging_write_failed_then_the_retry_lands_once() {
    let lake = Lake::fresh_staged("st-case3", WINDOW).await;
    let event = fixture("small-batch.json");
    let s3_down = FaultySink::every_put(
        &lake.sink,
        SinkFault::FailPutsMatching(vec!["_staging/".into()]),
    );
    let out = lake.invoke(&event, &lake.store, &s3_down).await;
    assert_eq!(out.outcome.counts.written, 0);
    assert_eq!(
        out.outcome.counts.failed, 8,
        "the events; dead letters were written"
    );
    assert!(lake.staging_keys().await.is_empty());
    let held = lake
        .store
        .holder(SMALL_BATCH_UUIDS[0])
        .await
        .expect("read")
        .expect("claimed");
    assert!(held.object_key.contains("/_staging/window="), "{held:?}");

    let retry = lake.invoke_real(&event).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    let staged = lake.staging_keys().await;
    assert_eq!(
        staged,
        std::slice::from_ref(&held.object_key),
        "a retry of the same records writes the same name"
    );
    lake.publish_all().await;
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
}

/// Case 5, staged: the staging object landed but the answer was lost, or
/// the deadline passed while it was on the way; the retried batch stages
/// nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_writes_that_landed_unacknowledged_or_late_are_not_staged_twice() {
    let lake = Lake::fresh_staged("st-case5", WINDOW).await;
    let event = fixture("small-batch.json");
    let sink = FaultySink::every_put(&lake.sink, SinkFault::LoseAcks);
    let out = lake.invoke(&event, &lake.store, &sink).await;
    assert_eq!(out.outcome.counts.failed, 19);
    assert_eq!(lake.staging_keys().await.len(), 1, "it landed");
    let retry = lake.invoke_real(&event).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    assert_eq!(
        (
            retry.outcome.counts.written,
            retry.outcome.counts.staging_objects
        ),
        (0, 0)
    );

    let lake = Lake::fresh_staged("st-case5-timeout", WINDOW).await;
    let slow = DetachedSink::every_put(lake.sink.clone());
    let out = lake
        .invoke_by(&event, &lake.store, &slow, Duration::from_secs(5))
        .await;
    assert_eq!(out.outcome.counts.failed, 19, "{:?}", out.outcome.counts);
    assert!(
        lake.keys().await.is_empty(),
        "nothing had landed by the deadline"
    );
    slow.open();
    assert_eq!(
        slow.settle().await,
        2,
        "the staging object and the dead letters land late"
    );
    let retry = lake.invoke_real(&event).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    assert_eq!(retry.outcome.counts.written, 0);
    lake.publish_all().await;
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
    assert_eq!(lake.dead_letters().await.len(), SMALL_BATCH_REJECTS);
}

/// Case 4 and 6, staged: partial failures re-sent from the lowest sequence
/// number, and two shards racing for the same uuids, publish every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staged_concurrent_shards_with_shared_uuids_publish_each_once() {
    let lake = Lake::fresh_staged("st-case6", WINDOW).await;
    let uuids = race_shared_uuids(&lake, 6).await;
    lake.publish_all().await;
    let uuids: Vec<&str> = uuids.iter().map(String::as_str).collect();
    lake.assert_exactly_once(&uuids).await;
}

/// A crash between staging and publication loses nothing: the staging
/// object waits; a re-delivered batch finds its events staged. (Its claims
/// must outlive the test: DynamoDB Local removes expired items, so the times
/// are an hour ago, not in 2024.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_staging_and_publication_loses_nothing() {
    let lake = Lake::fresh_staged("st-crash", WINDOW).await;
    let event = fixture("small-batch.json");
    let t0 = (Utc::now().timestamp() - 3600) / 300 * 300;
    let first = stage_at(&lake, &event, at(t0 + 10)).await;
    assert_eq!(
        (first.counts.written, first.counts.staging_objects),
        (8, 1),
        "{:?}",
        first.failed
    );
    // the window has closed but no publisher ran; the batch comes again
    let again = stage_at(&lake, &event, at(t0 + 500)).await;
    assert_eq!((again.counts.written, again.counts.duplicates), (0, 9));
    assert_eq!(lake.staging_keys().await.len(), 1);
    let p = lake
        .publish_at(&lake.sink, at(t0 + 600))
        .await
        .expect("publish");
    assert_eq!((p.windows, p.events), (1, 8));
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
}

/// A publisher that dies after some partition files: running it again
/// writes the same files, none twice; until then a reader sees each
/// partition's events once or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_killed_after_some_partition_files_resumes_without_a_second_copy() {
    let lake = Lake::fresh_staged("st-killed", WINDOW).await;
    let event = fixture("small-batch.json");
    stage_at(&lake, &event, at(T0)).await;
    let dying = FaultySink::new(
        &lake.sink,
        SinkFault::FailPutsMatching(vec!["event_type=payment".into()]),
    );
    assert!(lake.publish_at(&dying, at(T0 + 400)).await.is_err());
    let partial = lake.rows().await;
    assert!(
        !partial.is_empty() && partial.len() < SMALL_BATCH_UUIDS.len(),
        "{partial:?}"
    );
    assert!(partial.values().all(|&n| n == 1));
    let files_before: Vec<String> = lake
        .keys()
        .await
        .into_iter()
        .filter(|k| k.ends_with(".parquet"))
        .collect();

    let p = lake
        .publish_at(&lake.sink, at(T0 + 401))
        .await
        .expect("resume");
    assert_eq!(p.generations, 1);
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
    let files: Vec<String> = lake
        .keys()
        .await
        .into_iter()
        .filter(|k| k.ends_with(".parquet"))
        .collect();
    assert!(
        files_before.iter().all(|f| files.contains(f)),
        "the same names again"
    );
    assert_eq!(files.len(), 7, "one file per partition");
}

/// Two publishers at once on the same closed windows: one plan per
/// generation wins, both carry it out, every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_publishers_at_once_publish_every_event_once() {
    let lake = Lake::fresh_staged("st-two", WINDOW).await;
    let mut uuids = Vec::new();
    for shard in 0..4u64 {
        let batch: Vec<String> = (0..25)
            .map(|i| {
                let u = format!("s{shard}-e{i:02}");
                let name = ["a:x", "b:y", "c:z"][i % 3];
                uuids.push(u.clone());
                ev(&u, name)
            })
            .collect();
        let event = kinesis_event(&format!("shardId-00000000000{shard}"), 10, &batch);
        stage_at(&lake, &event, at(T0 + shard as i64)).await;
    }
    let (a, b) = tokio::join!(
        lake.publish_at(&lake.sink, at(T0 + 400)),
        lake.publish_at(&lake.sink, at(T0 + 400)),
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert!(a.generations + b.generations >= 1);
    let uuids: Vec<&str> = uuids.iter().map(String::as_str).collect();
    lake.assert_exactly_once(&uuids).await;
    let plans: Vec<String> = lake
        .all_keys()
        .await
        .into_iter()
        .filter(|k| k.ends_with(".plan.json"))
        .collect();
    assert_eq!(plans.len(), 1, "{plans:?}");
}

/// A staging object that lands after its window was published (a writer
/// that started in the window and ran long) becomes the window's next
/// generation; after the lease the window is final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_staging_object_is_published_by_the_next_generation() {
    let lake = Lake::fresh_staged("st-late", WINDOW).await;
    let early = kinesis_event("shardId-000000000000", 1, &[ev("on-time", "a:x")]);
    stage_at(&lake, &early, at(T0 + 5)).await;
    let p = lake
        .publish_at(&lake.sink, at(T0 + 340))
        .await
        .expect("publish");
    assert_eq!(p.events, 1);
    // an invocation that started in the window stages now, 14 minutes later
    let late = kinesis_event("shardId-000000000001", 1, &[ev("late", "a:x")]);
    stage_at(&lake, &late, at(T0 + 6)).await;
    let p = lake
        .publish_at(&lake.sink, at(T0 + 300 + 840))
        .await
        .expect("late");
    assert_eq!((p.events, p.generations), (1, 1));
    lake.assert_exactly_once(&["late", "on-time"]).await;
    let p = lake
        .publish_at(&lake.sink, at(T0 + 300 + 1200))
        .await
        .expect("final");
    assert_eq!(p.events, 0);
    assert!(
        lake.all_keys()
            .await
            .iter()
            .any(|k| k.ends_with("/_publish/final/window=20240317T101500Z.json")),
        "the window is final after the lease"
    );
}

/// The publisher's metrics name the oldest window that waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_window_is_reported_as_waiting() {
    let lake = Lake::fresh_staged("st-waiting", WINDOW).await;
    let event = kinesis_event("shardId-000000000000", 1, &[ev("w1", "a:x")]);
    stage_at(&lake, &event, at(T0 + 5)).await;
    let p = lake
        .publish_at(&lake.sink, at(T0 + 200))
        .await
        .expect("publish");
    assert_eq!(p.events, 0);
    assert_eq!(p.oldest_unpublished.as_deref(), Some("20240317T101500Z"));
    assert!(lake.rows().await.is_empty());
}
