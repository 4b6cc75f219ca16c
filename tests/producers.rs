//! End-to-end tests of what real producers send, on the `kinesis-lake`
//! binary: `created_at` in milliseconds (`--created-at-unit`), KPL-aggregated
//! records, and `replay` of dead letters and failed batches.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::AsArray;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

/// Runs `kinesis-lake ARGS...`.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(args)
        .env_remove("CREATED_AT_UNIT")
        .env_remove("PUBLISH_WINDOW_SECONDS")
        .output()
        .expect("the binary runs")
}

/// Runs a command that must succeed and print one JSON summary.
fn run_json(args: &[&str]) -> Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every event_uuid in the lake's Parquet files, sorted (repeats kept).
fn lake_uuids(lake: &Path) -> Vec<String> {
    let mut uuids = Vec::new();
    for f in files_under(lake, ".parquet") {
        let file = std::fs::File::open(&f).expect("open parquet");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("footer")
            .build()
            .expect("reader");
        for b in reader {
            let b = b.expect("batch");
            let col = b.column_by_name("event_uuid").expect("event_uuid");
            uuids.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
        }
    }
    uuids.sort();
    uuids
}

/// Every dead letter of the lake, in file order.
fn dead_letters(lake: &Path) -> Vec<Value> {
    files_under(&lake.join("_errors"), ".ndjson")
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .expect("read dead letters")
                .lines()
                .map(|l| serde_json::from_str(l).expect("dead letter is JSON"))
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn ms_events(dir: &Path) -> PathBuf {
    let path = dir.join("ms.ndjson");
    let lines = [
        r#"{"event_uuid":"ms-1","event_name":"a:b","created_at":1710670530250}"#,
        r#"{"event_uuid":"ms-2","event_name":"a:b","created_at":1710670531000}"#,
    ];
    std::fs::write(&path, lines.join("\n") + "\n").expect("write input");
    path
}

#[test]
fn milliseconds_are_read_once_the_unit_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = ms_events(dir.path());
    let input = input.to_str().expect("utf-8 path");
    for window in ["0", "300"] {
        let lake = dir.path().join(format!("lake-{window}"));
        let lake = lake.to_str().expect("utf-8 path");
        let s = run_json(&[
            "ingest",
            "--json",
            "--window",
            window,
            "--created-at-unit",
            "ms",
            "--lake",
            lake,
            input,
        ]);
        assert_eq!(
            (s["written"].as_u64(), s["rejected"].as_u64()),
            (Some(2), Some(0)),
            "{s}"
        );
        assert_eq!(lake_uuids(Path::new(lake)), ["ms-1", "ms-2"]);
        let folders: Vec<String> = files_under(Path::new(lake), ".parquet")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert!(
            folders.iter().all(|f| f.contains("event_date=2024-03-17")),
            "{folders:?}"
        );
    }
    // a typo is refused before anything is read
    let out = run(&[
        "ingest",
        "--created-at-unit",
        "millis",
        "--lake",
        "x",
        input,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("s (seconds, the default), ms, us or ns")
    );
}

#[test]
fn milliseconds_are_dead_letters_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = ms_events(dir.path());
    let lake = dir.path().join("lake");
    let s = run_json(&[
        "ingest",
        "--json",
        "--lake",
        lake.to_str().expect("utf-8"),
        input.to_str().expect("utf-8"),
    ]);
    assert_eq!(s["rejected"].as_u64(), Some(2), "{s}");
    let letters = dead_letters(&lake);
    assert!(
        letters
            .iter()
            .all(|l| l["reason_code"] == "created_at_not_seconds"),
        "{letters:?}"
    );
}

#[test]
fn replay_moves_millisecond_dead_letters_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = ms_events(dir.path());
    let lake = dir.path().join("lake");
    let lake_s = lake.to_str().expect("utf-8");
    run_json(&[
        "ingest",
        "--json",
        "--lake",
        lake_s,
        input.to_str().expect("utf-8"),
    ]);
    assert!(lake_uuids(&lake).is_empty());
    let replay = |unit: &str| {
        run_json(&[
            "replay",
            "--json",
            "--lake",
            lake_s,
            "--created-at-unit",
            unit,
        ])
    };
    let s = replay("s");
    assert_eq!(
        (
            s["moved"].as_u64(),
            s["stayed"]["created_at_not_seconds"].as_u64()
        ),
        (Some(0), Some(2)),
        "{s}"
    );
    let s = replay("ms");
    assert_eq!(
        (s["dead_letters"].as_u64(), s["moved"].as_u64()),
        (Some(2), Some(2)),
        "{s}"
    );
    assert_eq!(lake_uuids(&lake), ["ms-1", "ms-2"]);
    let s = replay("ms");
    assert_eq!(
        (s["moved"].as_u64(), s["replayed_before"].as_u64()),
        (Some(0), Some(2)),
        "{s}"
    );
    assert_eq!(lake_uuids(&lake), ["ms-1", "ms-2"]);
    assert_eq!(
        dead_letters(&lake).len(),
        2,
        "dead letters are kept, never copied"
    );
}

#[test]
fn replay_reads_an_s3_on_failure_record_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let lake_s = lake.to_str().expect("utf-8");
    let data = base64_of(r#"{"event_uuid":"f-1","event_name":"a:b","created_at":1710670530}"#);
    let record = format!(
        r#"{{"requestContext":{{"requestId":"r","functionArn":"arn:aws:lambda:eu-west-1:123456789012:function:f","condition":"RetryAttemptsExhausted","approximateInvokeCount":3}},"responseContext":{{"statusCode":200,"executedVersion":"$LATEST","functionError":"Unhandled"}},"version":"1.0","timestamp":"2024-03-17T10:15:31.000Z","KinesisBatchInfo":{{"shardId":"shardId-000000000000","startSequenceNumber":"11","endSequenceNumber":"11","approximateArrivalOfFirstRecord":"2024-03-17T10:15:30.000Z","approximateArrivalOfLastRecord":"2024-03-17T10:15:30.000Z","batchSize":1,"streamArn":"arn:aws:kinesis:eu-west-1:123456789012:stream/events"}},"payload":{{"Records":[{{"eventID":"shardId-000000000000:11","eventSourceARN":"arn:aws:kinesis:eu-west-1:123456789012:stream/events","kinesis":{{"data":"{data}","sequenceNumber":"11","partitionKey":"p"}}}}]}}}}"#
    );
    let path = dir.path().join("failure.json");
    std::fs::write(&path, record).expect("write");
    let path_s = path.to_str().expect("utf-8");
    for _ in 0..2 {
        run_json(&["replay", "--json", "--lake", lake_s, "--failed", path_s]);
    }
    assert_eq!(lake_uuids(&lake), ["f-1"]);
    // a metadata-only record without its stream cannot be read back: it
    // says what it lacks (with a streamArn it is read from the stream:
    // tests/stream, against kinesalite)
    let meta = dir.path().join("meta.json");
    std::fs::write(&meta, r#"{"KinesisBatchInfo":{"shardId":"shardId-000000000000","startSequenceNumber":"11","endSequenceNumber":"12"}}"#).expect("write");
    let out = run(&[
        "replay",
        "--lake",
        lake_s,
        "--failed",
        meta.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("meta.json") && stderr.contains("lacks streamArn"),
        "{stderr}"
    );
    assert_eq!(lake_uuids(&lake), ["f-1"]);
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
