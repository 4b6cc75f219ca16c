//! Exactly-once into S3 + DynamoDB, against the real servers (SeaweedFS and
//! DynamoDB Local, started by `scripts/testenv.py`), with faults injected
//! around the real adapters. Each test has its own bucket and table, so they
//! run in parallel. The numbered cases are those of issue 3.
//!
//! Run: `python3 scripts/testenv.py run -- cargo test --features integration --test aws`

#![cfg(feature = "integration")]

mod util;

use std::time::Duration;

use kinesis_lake::core::dedup::{Claim, ClaimOutcome, DedupStore, Transfer};
use kinesis_lake::core::sink::ObjectSink;
use util::*;

fn claim<'a>(uuid: &'a str, owner: &'a str, key: &'a str) -> Claim<'a> {
    Claim {
        event_uuid: uuid,
        owner,
        object_key: key,
    }
}

/// The adapters keep the store and sink contracts the pipeline relies on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_keep_the_claim_and_existence_contracts() {
    let lake = Lake::fresh("adapters").await;
    let (s, now) = (&lake.store, 1_800_000_000);

    let r = s
        .claim(&[claim("u1", "o1", "k1"), claim("u2", "o1", "k1")], now)
        .await;
    assert!(
        matches!(
            r[..],
            [Ok(ClaimOutcome::Claimed), Ok(ClaimOutcome::Claimed)]
        ),
        "{r:?}"
    );
    // a second claim answers with the holder, in order, as a domain answer
    let r = s
        .claim(&[claim("u3", "o2", "k2"), claim("u1", "o2", "k2")], now + 5)
        .await;
    assert!(matches!(r[0], Ok(ClaimOutcome::Claimed)), "{r:?}");
    match &r[1] {
        Ok(ClaimOutcome::Held(h)) => assert_eq!(
            (h.owner.as_str(), h.object_key.as_str(), h.claimed_at),
            ("o1", "k1", now)
        ),
        other => panic!("expected held by o1, got {other:?}"),
    }
    // the same claim again (an SDK retry whose first attempt landed) is ours
    let r = s.claim(&[claim("u1", "o1", "k1")], now + 6).await;
    assert!(matches!(r[0], Ok(ClaimOutcome::Claimed)), "{r:?}");

    // transfers only from the holder as read
    let stale = Transfer {
        event_uuid: "u1",
        from_owner: "o1",
        from_key: "other-key",
        to: claim("u1", "o2", "k2"),
    };
    let r = s.transfer(&[stale], now + 10).await;
    assert!(
        matches!(&r[0], Ok(ClaimOutcome::Held(h)) if h.owner == "o1"),
        "{r:?}"
    );
    let fresh = Transfer {
        from_key: "k1",
        ..stale
    };
    let r = s.transfer(&[fresh], now + 10).await;
    assert!(matches!(r[0], Ok(ClaimOutcome::Claimed)), "{r:?}");
    let h = s.holder("u1").await.expect("read").expect("held");
    assert_eq!(
        (h.owner.as_str(), h.object_key.as_str(), h.claimed_at),
        ("o2", "k2", now + 10)
    );

    // an expired claim is free again (the dedup window)
    let later = now + 10 + TTL_SECS + 1;
    let r = s.claim(&[claim("u1", "o3", "k3")], later).await;
    assert!(matches!(r[0], Ok(ClaimOutcome::Claimed)), "{r:?}");

    // exists is an exact match, not a prefix match
    let sink = &lake.sink;
    let key = "lake/event_type=a/event_subtype=b/event_date=2024-03-17/part-1.parquet";
    assert!(!sink.exists(key).await.expect("exists"));
    sink.put(key, bytes::Bytes::from_static(b"x"))
        .await
        .expect("put");
    assert!(sink.exists(key).await.expect("exists"));
    assert!(
        !sink
            .exists(key.trim_end_matches(".parquet"))
            .await
            .expect("exists")
    );
    assert!(!sink.exists(&format!("{key}.bak")).await.expect("exists"));
    // escaped partition values survive the round trip
    let odd = "lake/event_type=video/event_subtype=watch%2F..%2Fetc%3Fx%3D1%23f/event_date=2024-03-17/part-2.parquet";
    sink.put(odd, bytes::Bytes::from_static(b"y"))
        .await
        .expect("put");
    assert!(sink.exists(odd).await.expect("exists"));
    assert_eq!(lake.keys().await, [key, odd]);

    // get, create-if-absent and one-level listing (the schema registry's needs)
    let v1 = "lake/_schemas/v0000000001.json";
    assert_eq!(sink.get(v1).await.expect("get"), None);
    assert!(
        sink.put_if_absent(v1, bytes::Bytes::from_static(b"{1}"))
            .await
            .expect("create")
    );
    assert!(
        !sink
            .put_if_absent(v1, bytes::Bytes::from_static(b"{2}"))
            .await
            .expect("create")
    );
    assert_eq!(
        sink.get(v1).await.expect("get").as_deref(),
        Some(&b"{1}"[..]),
        "not overwritten"
    );
    sink.put("lake/_schemas/sub/x.json", bytes::Bytes::from_static(b"x"))
        .await
        .expect("put");
    assert_eq!(sink.list("lake/_schemas/").await.expect("list"), [v1]);
    assert!(sink.list("lake/nothing/").await.expect("list").is_empty());
}

/// Case 1: a producer re-send of an event (later batch, another shard) is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case1_a_producer_resend_on_another_shard_is_dropped() {
    let lake = Lake::fresh("case1").await;
    let first = lake.invoke_real(&fixture("small-batch.json")).await;
    assert!(
        first.response.batch_item_failures.is_empty(),
        "{:?}",
        first.outcome.failed
    );
    let c = &first.outcome.counts;
    assert_eq!(
        (c.written, c.duplicates, c.rejected),
        (8, 1, SMALL_BATCH_REJECTS as u64)
    );

    let resend = fixture("retry-batch.json");
    assert!(
        resend.records[0]
            .event_id
            .as_deref()
            .is_some_and(|id| id.starts_with("shardId-000000000001"))
    );
    let second = lake.invoke_real(&resend).await;
    assert!(second.response.batch_item_failures.is_empty());
    assert_eq!(
        (
            second.outcome.counts.written,
            second.outcome.counts.duplicates
        ),
        (1, 2)
    );

    let mut all = SMALL_BATCH_UUIDS.to_vec();
    all.push("00000000-0000-4000-8000-000000000009");
    lake.assert_exactly_once(&all).await;
    assert_eq!(lake.dead_letters().await.len(), SMALL_BATCH_REJECTS);
}

/// Case 2: the handler fails before writing anything (DynamoDB refuses every
/// claim, or applies them but the answers are lost); the retried batch lands
/// every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case2_a_failure_before_writing_then_the_retry_lands_every_event_once() {
    let lake = Lake::fresh("case2").await;
    let event = fixture("small-batch.json");
    for fault in [StoreFault::FailAll, StoreFault::LoseAcks] {
        let failing = FaultyStore::new(&lake.store, fault);
        let out = lake.invoke(&event, &failing, &lake.sink).await;
        assert_eq!(
            out.outcome.counts.failed, 19,
            "{fault:?}: every record fails but the in-batch repeat"
        );
        assert_eq!(failed_seqs(&out.response).len(), 19);
        assert!(
            lake.keys().await.is_empty(),
            "{fault:?}: nothing may be written"
        );
    }
    // the claims of the lost answers are held by the very records: taken over
    let retry = lake.invoke_real(&event).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    assert_eq!(retry.outcome.counts.written, 8);
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
    assert_eq!(lake.dead_letters().await.len(), SMALL_BATCH_REJECTS);
}

/// Case 3: the claims succeeded but the S3 writes failed; the batch retried
/// after S3 recovers lands every event once (claims are not "seen").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case3_claims_made_but_s3_writes_failed_then_the_retry_lands_once() {
    let lake = Lake::fresh("case3").await;
    let event = fixture("small-batch.json");
    let s3_down = FaultySink::new(&lake.sink, SinkFault::FailPutsMatching(vec![String::new()]));
    let out = lake.invoke(&event, &lake.store, &s3_down).await;
    assert_eq!(out.outcome.counts.written, 0);
    assert_eq!(out.outcome.counts.failed, 19);
    assert!(lake.keys().await.is_empty());
    let held = lake.store.holder(SMALL_BATCH_UUIDS[0]).await.expect("read");
    assert!(held.is_some(), "the claims were made before the writes");

    let retry = lake.invoke_real(&event).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
    assert_eq!(lake.dead_letters().await.len(), SMALL_BATCH_REJECTS);
}

/// Case 3, the Nth put: one file fails among several; Lambda re-sends from
/// the lowest failed sequence number; every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case3_the_nth_put_fails_then_the_resend_lands_once() {
    for n in [0, 3, 7] {
        let lake = Lake::fresh(&format!("case3-nth-{n}")).await;
        let event = fixture("small-batch.json");
        let sink = FaultySink::new(&lake.sink, SinkFault::FailPutNumber(n));
        let out = lake.invoke(&event, &lake.store, &sink).await;
        assert_eq!(
            sink.puts(),
            9,
            "7 partitions, the dead letters, then the schema summary (_common_metadata)"
        );
        assert!(out.outcome.counts.failed > 0, "put {n} failed");
        let next = resend_from_lowest(&event, &out.response).expect("a re-send");
        let retry = lake.invoke_real(&next).await;
        assert!(
            retry.response.batch_item_failures.is_empty(),
            "{:?}",
            retry.outcome.failed
        );
        lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
        assert_eq!(
            lake.dead_letters().await.len(),
            SMALL_BATCH_REJECTS,
            "put {n}"
        );
    }
}

/// Case 4: some partitions' files were written, others failed; the response
/// names exactly the failed records; Lambda re-sends from the lowest of them:
/// every event once, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case4_partial_partition_failures_then_a_resend_from_the_lowest_sequence_number() {
    let lake = Lake::fresh("case4").await;
    let names = [
        "payment:order",
        "account:created",
        "lesson:started",
        "quiz:done",
    ];
    let payloads: Vec<String> = (0..40)
        .map(|i| ev(&format!("e-{i:03}"), names[i % names.len()]))
        .collect();
    let event = kinesis_event("shardId-000000000003", 100, &payloads);
    let sink = FaultySink::new(
        &lake.sink,
        SinkFault::FailPutsMatching(vec!["event_type=account".into(), "event_type=quiz".into()]),
    );
    let out = lake.invoke(&event, &lake.store, &sink).await;
    assert_eq!(out.outcome.counts.written, 20);
    let failed = failed_seqs(&out.response);
    let expected: Vec<String> = (0..40u64)
        .filter(|i| i % 4 == 1 || i % 4 == 3)
        .map(|i| seq(100 + i))
        .collect();
    assert_eq!(failed, expected, "the failed records, by sequence number");

    // Lambda re-sends from the lowest reported: records 1.. (written ones among them)
    let next = resend_from_lowest(&event, &out.response).expect("a re-send");
    assert_eq!(next.records.len(), 39);
    let retry = lake.invoke_real(&next).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    assert_eq!(
        (
            retry.outcome.counts.written,
            retry.outcome.counts.duplicates
        ),
        (20, 19)
    );
    let uuids: Vec<String> = (0..40).map(|i| format!("e-{i:03}")).collect();
    let uuids: Vec<&str> = uuids.iter().map(String::as_str).collect();
    lake.assert_exactly_once(&uuids).await;
}

/// Case 5: the function crashes after its S3 writes, before answering; the
/// whole batch is retried: nothing lands twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case5_a_crash_after_the_writes_then_the_whole_batch_again_lands_nothing_twice() {
    let lake = Lake::fresh("case5").await;
    let event = fixture("small-batch.json");
    // the answer never reaches Lambda
    let _lost = lake.invoke_real(&event).await;
    let keys = lake.all_keys().await;
    let retry = lake.invoke_real(&event).await;
    assert!(retry.response.batch_item_failures.is_empty());
    let c = &retry.outcome.counts;
    assert_eq!((c.written, c.files, c.duplicates), (0, 0, 9));
    assert_eq!(
        c.rejected, SMALL_BATCH_REJECTS as u64,
        "dead letters are not written again"
    );
    assert_eq!(lake.all_keys().await, keys, "no new object");
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
}

/// Case 5, S3 answers lost: every put lands but reports failure (the
/// function never learns); the retry counts them as duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case5_writes_that_landed_but_were_not_acknowledged_are_not_written_twice() {
    let lake = Lake::fresh("case5-acks").await;
    let event = fixture("small-batch.json");
    let sink = FaultySink::new(&lake.sink, SinkFault::LoseAcks);
    let out = lake.invoke(&event, &lake.store, &sink).await;
    assert_eq!(out.outcome.counts.failed, 19);
    let keys = lake.keys().await;
    assert_eq!(keys.len(), 8, "the files landed");
    let retry = lake.invoke_real(&event).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    assert_eq!(retry.outcome.counts.written, 0);
    assert_eq!(lake.keys().await, keys);
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
}

/// Case 5, timeout: the invocation's deadline passes while its puts are on
/// the way; they land afterwards. The records are reported failed, and the
/// retried batch writes nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case5_a_timeout_with_puts_in_flight_then_the_retry_lands_nothing_twice() {
    let lake = Lake::fresh("case5-timeout").await;
    let event = fixture("small-batch.json");
    let slow = DetachedSink::new(lake.sink.clone());
    let out = lake
        .invoke_by(&event, &lake.store, &slow, Duration::from_secs(5))
        .await;
    assert_eq!(out.outcome.counts.failed, 19, "{:?}", out.outcome.counts);
    assert!(
        out.outcome.failed[0]
            .reason
            .to_string()
            .contains("deadline"),
        "{:?}",
        out.outcome.failed[0]
    );
    assert!(
        lake.keys().await.is_empty(),
        "nothing had landed by the deadline"
    );
    slow.open();
    assert_eq!(slow.settle().await, 8, "the puts land after the deadline");
    assert_eq!(lake.keys().await.len(), 8);

    let retry = lake.invoke_real(&event).await;
    assert!(
        retry.response.batch_item_failures.is_empty(),
        "{:?}",
        retry.outcome.failed
    );
    assert_eq!(retry.outcome.counts.written, 0);
    lake.assert_exactly_once(&SMALL_BATCH_UUIDS).await;
    assert_eq!(lake.dead_letters().await.len(), SMALL_BATCH_REJECTS);
}

/// Case 6: two invocations carry the same event_uuid at the same time, on
/// different shards: it lands once (a loser still within the winner's lease
/// is retried, and then finds the winner's file).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn case6_two_concurrent_invocations_with_the_same_uuid_land_it_once() {
    let lake = Lake::fresh("case6").await;
    let uuids = race_shared_uuids(&lake, 12).await;
    let uuids: Vec<&str> = uuids.iter().map(String::as_str).collect();
    lake.assert_exactly_once(&uuids).await;
}

/// The CLI ingests into S3 + DynamoDB; running it again adds nothing; the
/// Lambda's dedup table is shared with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_ingests_into_s3_once_and_shares_dedup_with_the_function() {
    let lake = Lake::fresh("cli").await;
    // the function has already written the small batch
    lake.invoke_real(&fixture("small-batch.json")).await;
    let url = format!("s3://{}/{}", lake.name, lake.prefix);
    let args = [
        "ingest",
        "--lake",
        &url,
        "--dedup-table",
        &lake.name,
        "--json",
        "--no-progress",
    ];
    let inputs = [fixture_path("kinesis"), fixture_path("events.ndjson")];
    let run = || {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(inputs.iter().map(String::as_str));
        cli(&a, &[])
    };
    let first = run();
    assert!(
        first.status.success(),
        "ingest failed: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&first.stdout).expect("JSON summary");
    assert_eq!(summary["failed"], 0);
    let written = summary["written"].as_u64().expect("written");
    assert!(written > 0, "{summary}");
    let rows = lake.rows().await;
    assert!(rows.values().all(|n| *n == 1), "{rows:?}");
    for u in SMALL_BATCH_UUIDS {
        assert_eq!(rows.get(u), Some(&1), "{u}");
    }
    assert_eq!(
        rows.len() as u64,
        8 + written,
        "the fixtures' new events only"
    );

    let keys = lake.all_keys().await;
    let again = run();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).expect("JSON summary");
    assert_eq!(
        (summary["written"].as_u64(), summary["files"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(lake.all_keys().await, keys, "nothing new in the bucket");
}

/// With DynamoDB unreachable the CLI writes nothing and exits non-zero,
/// saying what failed and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exits_nonzero_with_a_clear_message_when_dynamodb_is_unreachable() {
    let lake = Lake::fresh("cli-no-ddb").await;
    let url = format!("s3://{}/{}", lake.name, lake.prefix);
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let started = std::time::Instant::now();
    let out = cli(
        &[
            "ingest",
            "--lake",
            &url,
            "--dedup-table",
            &lake.name,
            "--no-progress",
            &fixture_path("events.ndjson"),
        ],
        &[("AWS_ENDPOINT_URL_DYNAMODB", dead.as_str())],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "dedup table",
        lake.name.as_str(),
        "cannot reach DynamoDB",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "nothing was written",
        "run the same command again",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "it gives up in time"
    );
    assert!(lake.keys().await.is_empty());
}

/// A missing bucket or table is named, with what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_names_a_missing_bucket_or_table() {
    let lake = Lake::fresh("cli-missing").await;
    let file = fixture_path("events.ndjson");
    let out = cli(
        &[
            "ingest",
            "--lake",
            "s3://kl-no-such-bucket-x1/lake",
            "--dedup-table",
            &lake.name,
            &file,
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s3://kl-no-such-bucket-x1/lake") && err.contains("bucket does not exist"),
        "{err}"
    );

    let url = format!("s3://{}/{}", lake.name, lake.prefix);
    let out = cli(
        &[
            "ingest",
            "--lake",
            &url,
            "--dedup-table",
            "no-such-table",
            &file,
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-table") && err.contains("table does not exist"),
        "{err}"
    );

    let out = cli(&["ingest", "--lake", &url, &file], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dedup-table TABLE"));
    assert!(lake.keys().await.is_empty());
}

/// The Lambda binary refuses to start on a bad configuration, naming the
/// variable.
#[test]
fn the_function_names_a_missing_or_invalid_variable() {
    let run = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kinesis-lake-lambda"))
            .env_remove("LAKE_BUCKET")
            .env_remove("LAKE_DIR")
            .env_remove("DEDUP_TABLE")
            .envs(env.iter().copied())
            .output()
            .expect("the lambda binary runs");
        assert!(!out.status.success());
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = run(&[]);
    assert!(out.contains("LAKE_BUCKET is not set"), "{out}");
    let out = run(&[("LAKE_BUCKET", "b-1")]);
    assert!(out.contains("DEDUP_TABLE is not set"), "{out}");
    let out = run(&[
        ("LAKE_BUCKET", "b-1"),
        ("DEDUP_TABLE", "t-1"),
        ("DEDUP_TTL_HOURS", "0"),
    ]);
    assert!(
        out.contains("DEDUP_TTL_HOURS=\\\"0\\\" is invalid")
            || out.contains("DEDUP_TTL_HOURS=\"0\" is invalid"),
        "{out}"
    );
}

/// Issue 6 against the real S3 server: writers that all start from the empty
/// schema and each see `amount` first as a different JSON type race to commit
/// the lake schema with `If-None-Match`. One base type wins, every file of the
/// lake agrees on every column's type, and every value is in the column the
/// committed schema routes it to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_with_conflicting_first_types_converge_on_s3() {
    use std::collections::BTreeMap;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float64Type, Int64Type};
    use kinesis_lake::core::registry::{SchemaCache, load_latest};
    use kinesis_lake::core::schema::LakeSchema;
    use kinesis_lake::core::value::Kind;
    use kinesis_lake::{Origin, PipelineConfig, RawRecord, run_batch};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let lake = Lake::fresh("schema-race").await;
    let values = ["7", "2.5", r#""12.50""#, "true", r#"{"v":1}"#, "9"];
    let batches: Vec<Vec<RawRecord>> = values
        .iter()
        .enumerate()
        .map(|(w, v)| {
            (0..20)
                .map(|i| RawRecord {
                    data: format!(
                        r#"{{"event_uuid":"w{w}-{i}","event_name":"pay:order","created_at":1710633600,"amount":{v}}}"#
                    )
                    .into_bytes(),
                    origin: Origin::Kinesis {
                        stream: "s".into(),
                        shard_id: format!("shardId-{w:012}"),
                        sequence_number: format!("{}", 1000 + i),
                        sub_sequence_number: None,
                        arrival_ms: None,
                    },
                    unreadable: None,
                })
                .collect()
        })
        .collect();
    let cfgs: Vec<PipelineConfig> = values
        .iter()
        .map(|_| PipelineConfig {
            schema_cache: SchemaCache::holding(LakeSchema::default()),
            ..lake.cfg.clone()
        })
        .collect();
    let now = chrono::Utc::now();
    let outcomes = futures::future::join_all(
        batches
            .iter()
            .zip(&cfgs)
            .map(|(b, cfg)| run_batch(b, &lake.store, &lake.sink, cfg, now)),
    )
    .await;
    for o in &outcomes {
        assert_eq!(
            (o.counts.written, o.counts.failed),
            (20, 0),
            "{:?}",
            o.failed.first()
        );
    }

    let schema = load_latest(&lake.sink, &lake.prefix).await.expect("schema");
    assert_eq!(
        schema
            .columns
            .iter()
            .filter(|c| c.field == "amount" && !c.variant)
            .count(),
        1,
        "one base column"
    );
    let mut types: BTreeMap<String, DataType> = BTreeMap::new();
    let mut found = 0;
    for key in lake.keys().await.iter().filter(|k| k.ends_with(".parquet")) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(lake.get(key).await)
            .expect("footer")
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            for f in batch.schema().fields() {
                let t = types
                    .entry(f.name().clone())
                    .or_insert_with(|| f.data_type().clone());
                assert_eq!(t, f.data_type(), "{} differs between files", f.name());
            }
            for c in schema.columns.iter().filter(|c| c.field == "amount") {
                let Some(col) = batch.column_by_name(&c.name) else {
                    continue;
                };
                for i in 0..batch.num_rows() {
                    if col.is_null(i) {
                        continue;
                    }
                    found += 1;
                    let text = match c.kind {
                        Kind::Int => col.as_primitive::<Int64Type>().value(i).to_string(),
                        Kind::Double => col.as_primitive::<Float64Type>().value(i).to_string(),
                        Kind::Bool => col.as_boolean().value(i).to_string(),
                        Kind::String => format!("{:?}", col.as_string::<i32>().value(i)),
                        Kind::Json => col.as_string::<i32>().value(i).to_string(),
                    };
                    assert!(values.contains(&text.as_str()), "{} holds {text}", c.name);
                }
            }
        }
    }
    assert_eq!(
        found,
        values.len() * 20,
        "every value in exactly one column"
    );
}
