//! The CLI's staged writes and publication on a folder lake: `ingest` stages
//! each batch and publishes what it staged, `--no-publish` leaves it staged,
//! `publish` publishes it; every event lands once, one file per partition.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::AsArray;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

fn kl(args: &[&str], lake: &Path, rest: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(args)
        .arg("--lake")
        .arg(lake)
        .args(rest)
        .output()
        .expect("the binary runs")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("summary is JSON")
}

/// Waits, if need be, until the current publication window (the CLI's
/// default length, aligned on the Unix epoch) has a minute left, so that a run
/// expected to stage into one window does not straddle two: each window is
/// published as files of its own.
fn clear_of_window_end() {
    let window = f64::from(kinesis_lake::core::window::DEFAULT_WINDOW_SECS);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    let left = window - now.as_secs_f64() % window;
    if left < 60.0 {
        std::thread::sleep(std::time::Duration::from_secs_f64(left + 0.5));
    }
}

/// An NDJSON file of `n` events alternating between two event types.
fn input(dir: &Path, name: &str, first: usize, n: usize) -> PathBuf {
    let path = dir.join(name);
    let lines: String = (first..first + n)
        .map(|i| {
            let t = if i % 2 == 0 { "video:play" } else { "page:view" };
            format!(
                "{{\"event_uuid\":\"e-{i:05}\",\"event_name\":\"{t}\",\"created_at\":1710670530,\"n\":{i}}}\n"
            )
        })
        .collect();
    std::fs::write(&path, lines).expect("write input");
    path
}

fn files_under(dir: &Path, ending: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(ending) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every event uuid of the lake's Parquet files, per file (relative path).
fn lake_uuids(lake: &Path) -> BTreeMap<String, Vec<String>> {
    files_under(lake, ".parquet")
        .into_iter()
        .map(|p| {
            let f = std::fs::File::open(&p).expect("open");
            let reader = ParquetRecordBatchReaderBuilder::try_new(f)
                .expect("footer")
                .build()
                .expect("reader");
            let mut uuids = Vec::new();
            for b in reader {
                let b = b.expect("batch");
                let col = b.column_by_name("event_uuid").expect("event_uuid");
                uuids.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
            }
            let rel = p
                .strip_prefix(lake)
                .expect("inside")
                .to_string_lossy()
                .into_owned();
            (rel, uuids)
        })
        .collect()
}

fn all_sorted(lake: &Path) -> Vec<String> {
    let mut v: Vec<String> = lake_uuids(lake).into_values().flatten().collect();
    v.sort();
    v
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("e-{i:05}")).collect()
}

#[test]
fn ingest_stages_each_batch_and_publishes_one_file_per_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let file = input(dir.path(), "in.ndjson", 0, 40);
    // ten batches of four: ten staging objects, still one file per partition
    clear_of_window_end();
    let s = json_of(&kl(
        &["ingest", "--json", "--batch-records", "4"],
        &lake,
        &[&file],
    ));
    assert_eq!(s["written"], 40);
    assert_eq!(s["staging_objects"], 10);
    assert_eq!(s["files"], 0, "no batch writes Parquet itself");
    assert_eq!(s["published"]["events"], 40);
    assert_eq!(s["published"]["files"], 2);
    let files = lake_uuids(&lake);
    assert_eq!(files.len(), 2, "{:?}", files.keys());
    for (rel, uuids) in &files {
        let name = rel.rsplit('/').next().expect("name");
        assert!(
            name.starts_with("part-") && name.ends_with("-g0000-0000.parquet"),
            "{rel}"
        );
        let mut sorted = uuids.clone();
        sorted.sort();
        assert_eq!(&sorted, uuids, "events in arrival order in {rel}");
    }
    assert_eq!(all_sorted(&lake), expected(0..40));
    assert!(
        files_under(&lake.join("_staging"), ".kls").is_empty(),
        "published staging objects are removed from a folder lake"
    );
    assert_eq!(files_under(&lake.join("_publish"), ".done.json").len(), 1);

    // the same input again: every event a duplicate, no new file
    let again = json_of(&kl(
        &["ingest", "--json", "--batch-records", "4"],
        &lake,
        &[&file],
    ));
    assert_eq!(
        (again["written"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(40))
    );
    assert_eq!(lake_uuids(&lake).len(), 2);
}

#[test]
fn no_publish_leaves_the_events_staged_until_publish_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let first = input(dir.path(), "a.ndjson", 0, 10);
    let s = json_of(&kl(&["ingest", "--json", "--no-publish"], &lake, &[&first]));
    assert_eq!(
        (s["written"].as_u64(), s["staging_objects"].as_u64()),
        (Some(10), Some(1))
    );
    assert!(s.get("published").is_none());
    assert!(
        lake_uuids(&lake).is_empty(),
        "nothing visible before publication"
    );
    assert_eq!(files_under(&lake.join("_staging"), ".kls").len(), 1);

    // staged but unpublished events are still duplicates of a re-send
    let resend = input(dir.path(), "b.ndjson", 5, 10);
    let s = json_of(&kl(
        &["ingest", "--json", "--no-publish"],
        &lake,
        &[&resend],
    ));
    assert_eq!(
        (s["written"].as_u64(), s["duplicates"].as_u64()),
        (Some(5), Some(5))
    );

    let p = json_of(&kl(&["publish", "--json"], &lake, &[]));
    assert_eq!(p["events"], 15);
    assert_eq!(p["staging_objects"], 2);
    assert_eq!(all_sorted(&lake), expected(0..15));
    // nothing left to publish
    let p = json_of(&kl(&["publish", "--json"], &lake, &[]));
    assert_eq!(p["events"], 0);
    assert_eq!(all_sorted(&lake), expected(0..15));

    // a later run (in the same window: the window's next generation) adds its
    // own files beside the first ones
    let more = input(dir.path(), "c.ndjson", 15, 4);
    json_of(&kl(&["ingest", "--json"], &lake, &[&more]));
    assert_eq!(all_sorted(&lake), expected(0..19));
    assert_eq!(lake_uuids(&lake).len(), 4);
}

#[test]
fn window_zero_writes_each_batch_at_once_and_other_lengths_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let file = input(dir.path(), "in.ndjson", 0, 8);
    let s = json_of(&kl(
        &["ingest", "--json", "--window", "0", "--batch-records", "4"],
        &lake,
        &[&file],
    ));
    assert_eq!(
        (s["files"].as_u64(), s["staging_objects"].as_u64()),
        (Some(4), Some(0))
    );
    assert!(!lake.join("_staging").exists());
    assert_eq!(all_sorted(&lake), expected(0..8));

    for bad in ["30", "901", "x"] {
        let out = kl(&["ingest", "--window", bad], &lake, &[&file]);
        assert!(!out.status.success(), "--window {bad} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("60 to 900"), "{err}");
    }
    // the variable the Lambda function reads works for the CLI too
    let other = dir.path().join("other");
    let out = Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(["ingest", "--json", "--lake"])
        .arg(&other)
        .arg(&file)
        .env("PUBLISH_WINDOW_SECONDS", "0")
        .output()
        .expect("runs");
    assert_eq!(json_of(&out)["staging_objects"], 0);
}

#[test]
fn publish_refuses_what_is_not_a_lake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = kl(&["publish"], &dir.path().join("missing"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a lake folder"));
}

#[test]
fn rebuild_state_claims_staged_events_for_their_staging_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let first = input(dir.path(), "a.ndjson", 0, 12);
    json_of(&kl(&["ingest", "--json"], &lake, &[&first]));
    let second = input(dir.path(), "b.ndjson", 12, 8);
    json_of(&kl(
        &["ingest", "--json", "--no-publish"],
        &lake,
        &[&second],
    ));
    std::fs::remove_file(lake.join("_state").join("dedup.redb")).expect("lose the store");

    // neither ingest nor publish may go on without the claims
    for args in [&["ingest", "--json"][..], &["publish", "--json"][..]] {
        let rest: Vec<&Path> = if args[0] == "ingest" {
            vec![&first]
        } else {
            vec![]
        };
        let out = kl(args, &lake, &rest);
        assert!(!out.status.success(), "{args:?} went on without a store");
        assert!(String::from_utf8_lossy(&out.stderr).contains("rebuild-state"));
    }
    let rebuilt = json_of(&kl(&["rebuild-state", "--json"], &lake, &[]));
    assert_eq!(rebuilt["staged_events"], 8, "{rebuilt}");

    // every event is known again, published or staged: nothing twice
    let again = json_of(&kl(&["ingest", "--json"], &lake, &[&first, &second]));
    assert_eq!(
        (again["written"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(20))
    );
    assert_eq!(all_sorted(&lake), expected(0..20));
}

#[test]
fn window_dedup_keeps_no_claims_and_the_publisher_drops_a_rerun() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let file = input(dir.path(), "in.ndjson", 0, 40);
    let args = [
        "ingest",
        "--json",
        "--dedup",
        "window",
        "--batch-records",
        "4",
    ];
    let s = json_of(&kl(&args, &lake, &[&file]));
    assert_eq!(s["published"]["events"], 40);
    assert_eq!(all_sorted(&lake), expected(0..40));

    // the same input again, and a resend overlapping it: the publisher's
    // look-back drops every repeat
    let resend = input(dir.path(), "b.ndjson", 30, 20);
    let again = json_of(&kl(&args, &lake, &[&file, &resend]));
    assert_eq!(again["published"]["events"], 10, "{again}");
    assert_eq!(all_sorted(&lake), expected(0..50));
    assert!(
        files_under(&lake.join("_staging"), ".kls").is_empty(),
        "nothing left staged"
    );

    // the store holds no claims for these events: claims-based ingest refuses
    let out = kl(&["ingest", "--json"], &lake, &[&file]);
    assert!(!out.status.success(), "claims-based ingest was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--dedup window") && err.contains("rebuild-state"),
        "{err}"
    );
    assert_eq!(all_sorted(&lake), expected(0..50));

    // the publisher is what drops repeats: no window, no window dedup
    let out = kl(
        &["ingest", "--dedup", "window", "--window", "0"],
        &lake,
        &[&file],
    );
    assert!(
        !out.status.success(),
        "--dedup window --window 0 was accepted"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--dedup window needs a publication window"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rebuild_state_claims_a_window_dedup_lake_for_claims_based_ingest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let file = input(dir.path(), "in.ndjson", 0, 12);
    json_of(&kl(
        &["ingest", "--json", "--dedup", "window"],
        &lake,
        &[&file],
    ));
    let store = lake.join("_state").join("dedup.redb");
    std::fs::rename(&store, dir.path().join("dedup.redb.aside")).expect("move the store aside");
    json_of(&kl(&["rebuild-state", "--json"], &lake, &[]));
    let s = json_of(&kl(&["ingest", "--json"], &lake, &[&file]));
    assert_eq!(
        (s["written"].as_u64(), s["duplicates"].as_u64()),
        (Some(0), Some(12))
    );
    assert_eq!(all_sorted(&lake), expected(0..12));
}
