//! Exactly-once through real outages: the test servers are stopped, hung
//! and started again (through the harness's `KL_TEST_CTL`) around the real
//! adapters, the Lambda invocation and the CLI. The tests share the servers,
//! so they run one at a time (a lock), and this is a test binary of its own:
//! cargo runs test binaries one after another, so no other test sees the
//! outages.
//!
//! Run: `python3 scripts/testenv.py run -- cargo test --features integration --test aws_outage`

#![cfg(feature = "integration")]

mod util;

use std::time::Duration;

use util::*;

/// One outage at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Brings a server back when the test ends, even when it fails, so that one
/// failure does not cascade into the next tests.
struct BringBack(&'static [&'static str]);

impl Drop for BringBack {
    fn drop(&mut self) {
        if let Ok(prefix) = std::env::var("KL_TEST_CTL") {
            let mut parts = prefix.split_whitespace();
            if let Some(program) = parts.next() {
                let _ = std::process::Command::new(program)
                    .args(parts)
                    .args(self.0)
                    .output();
            }
        }
    }
}

fn ingest_args<'a>(url: &'a str, table: &'a str, input: &'a str) -> Vec<&'a str> {
    vec![
        "ingest",
        "--lake",
        url,
        "--dedup-table",
        table,
        "--json",
        "--no-progress",
        input,
    ]
}

/// S3 goes down in the middle of a batch (after some files landed); the
/// function reports the rest; after S3 is back, Lambda's re-send from the
/// lowest reported sequence number lands every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stops_mid_batch_then_the_resend_lands_every_event_once() {
    let _serial = SERIAL.lock().await;
    let mut lake = Lake::fresh("outage-s3-mid").await;
    lake.cfg.io_concurrency = 1; // puts one after another: 3 land, then S3 is gone
    let event = fixture("small-batch.json");
    let _back = BringBack(&["start", "s3"]);
    let sink = FaultySink::new(&lake.sink, SinkFault::StopServerBeforePut(3));
    let out = lake.invoke(&event, &lake.store, &sink).await;
    assert_eq!(
        out.outcome.counts.files + out.outcome.counts.dead_letter_files,
        3
    );
    assert!(out.outcome.counts.failed > 0);
    let reason = out.outcome.failed[0].reason.to_string();
    assert!(reason.contains("cannot reach S3"), "{reason}");

    ctl(&["start", "s3"]);
    assert_eq!(
        lake.keys().await.len(),
        3,
        "what landed before the outage is kept"
    );
    let next = resend_from_lowest(&event, &out.response).expect("a re-send");
    let retry = lake.invoke_real(&next).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
    assert_eq!(lake.dead_letters().await.len(), SMALL_BATCH_REJECTS);
}

/// S3 is down for a whole batch: the claims are made but nothing lands; the
/// retried batch after S3 is back lands every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_for_a_whole_batch_then_the_retry_lands_every_event_once() {
    let _serial = SERIAL.lock().await;
    let lake = Lake::fresh("outage-s3-batch").await;
    let event = fixture("small-batch.json");
    let _back = BringBack(&["start", "s3"]);
    ctl(&["stop", "s3"]);
    let out = lake.invoke_real(&event).await;
    assert_eq!(out.outcome.counts.failed, 19, "all but the in-batch repeat");
    let held = lake.store.holder(SMALL_BATCH_UUIDS[0]).await.expect("read");
    assert!(held.is_some(), "DynamoDB was up: the claims were made");

    ctl(&["start", "s3"]);
    assert!(lake.keys().await.is_empty());
    let retry = lake.invoke_real(&event).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
}

/// The CLI with S3 down exits non-zero with a clear message; run again after
/// S3 is back, it lands every event once; a third run adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_with_s3_down_exits_nonzero_then_the_rerun_lands_once() {
    let _serial = SERIAL.lock().await;
    let lake = Lake::fresh("outage-cli-s3").await;
    let url = format!("s3://{}/{}", lake.name, lake.prefix);
    let input = fixture_path("kinesis/small-batch.json");
    let args = ingest_args(&url, &lake.name, &input);
    let _back = BringBack(&["start", "s3"]);
    ctl(&["stop", "s3"]);
    let down = cli(&args, &[]);
    assert!(!down.status.success());
    let err = String::from_utf8_lossy(&down.stderr);
    for needle in [
        url.as_str(),
        "cannot reach S3",
        "run the same command again",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }

    ctl(&["start", "s3"]);
    let up = cli(&args, &[]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
    let keys = lake.all_keys().await;
    let again = cli(&args, &[]);
    assert!(again.status.success());
    assert_eq!(lake.all_keys().await, keys);
}

/// DynamoDB hangs (the process is stopped with its connections open): the
/// invocation's deadline cuts the claims short, their outcome is unknown, so
/// no file is written and every record is reported. When DynamoDB resumes it
/// may still apply those claims; the retried batch takes them over and lands
/// every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_hangs_past_the_deadline_then_the_retry_lands_every_event_once() {
    let _serial = SERIAL.lock().await;
    let lake = Lake::fresh("outage-ddb-hang").await;
    let event = fixture("small-batch.json");
    let _back = BringBack(&["resume", "dynamodb"]);
    ctl(&["pause", "dynamodb"]);
    let started = tokio::time::Instant::now();
    let out = lake
        .invoke_by(&event, &lake.store, &lake.sink, Duration::from_secs(2))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the deadline is kept"
    );
    assert_eq!(out.outcome.counts.failed, 19);
    assert_eq!(out.response.batch_item_failures.len(), 19);
    assert!(lake.keys().await.is_empty(), "no file of an unknown claim");

    ctl(&["resume", "dynamodb"]);
    let retry = lake.invoke_real(&event).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
    assert_eq!(lake.dead_letters().await.len(), SMALL_BATCH_REJECTS);
}

/// DynamoDB is down: the function writes nothing and reports every record;
/// the CLI exits non-zero with a clear message. After DynamoDB is back both
/// land every event once. (DynamoDB Local may run in memory: the table is
/// created again after the restart; nothing was claimed while it was down.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_down_then_the_function_and_the_cli_land_every_event_once() {
    let _serial = SERIAL.lock().await;
    let lake = Lake::fresh("outage-ddb-down").await;
    let event = fixture("small-batch.json");
    let url = format!("s3://{}/{}", lake.name, lake.prefix);
    let input = fixture_path("events.ndjson");
    let args = ingest_args(&url, &lake.name, &input);
    let _back = BringBack(&["start", "dynamodb"]);
    ctl(&["stop", "dynamodb"]);

    let out = lake.invoke_real(&event).await;
    assert_eq!(out.outcome.counts.failed, 19);
    assert!(
        out.outcome.failed[0]
            .reason
            .to_string()
            .contains("cannot reach DynamoDB"),
        "{:?}",
        out.outcome.failed[0]
    );
    let down = cli(&args, &[]);
    assert!(!down.status.success());
    let err = String::from_utf8_lossy(&down.stderr);
    for needle in [
        "dedup table",
        "cannot reach DynamoDB",
        "nothing was written",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    assert!(lake.keys().await.is_empty());

    ctl(&["start", "dynamodb"]);
    lake.store.ensure_table().await.expect("the table");
    let retry = lake.invoke_real(&event).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    let up = cli(&args, &[]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let rows = lake.rows().await;
    assert!(rows.values().all(|n| *n == 1), "{rows:?}");
    for u in SMALL_BATCH_UUIDS {
        assert_eq!(rows.get(u), Some(&1), "{u}");
    }
    let keys = lake.all_keys().await;
    let again = cli(&args, &[]);
    assert!(again.status.success());
    assert_eq!(lake.all_keys().await, keys, "nothing new");
}

/// S3 goes down while a window is being published (after some of its
/// partition files landed): the publisher stops with an error; once S3 is
/// back, the next run finishes the same plan and every event is in the
/// lake once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stops_during_publication_then_the_next_run_publishes_every_event_once() {
    let _serial = SERIAL.lock().await;
    let lake = Lake::fresh_staged("outage-publish", 300).await;
    let event = fixture("small-batch.json");
    let staged = lake.invoke_real(&event).await;
    assert!(staged.response.batch_item_failures.is_empty());
    let _back = BringBack(&["start", "s3"]);
    let cfg = kinesis_lake::core::publish::PublishConfig {
        io_concurrency: 1, // files one after another: 2 land, then S3 is gone
        ..lake.publish_cfg()
    };
    let sink = FaultySink::new(&lake.sink, SinkFault::StopServerBeforePut(2));
    let later = chrono::Utc::now() + chrono::Duration::seconds(900);
    let down = kinesis_lake::core::publish::publish(
        &sink,
        &cfg,
        kinesis_lake::core::publish::Which::Closed,
        later,
    )
    .await;
    let err = down.expect_err("S3 went away").to_string();
    assert!(err.contains("run the publisher again"), "{err}");

    ctl(&["start", "s3"]);
    let rows = lake.rows().await;
    assert_eq!(
        rows.len(),
        2,
        "two partitions landed before the outage: {rows:?}"
    );
    let p = lake
        .publish_at(&lake.sink, later)
        .await
        .expect("the next run");
    assert_eq!(p.generations, 1, "the same plan, finished");
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
}
