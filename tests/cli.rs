//! End-to-end tests of the `kinesis-lake` binary on the fixtures: run the CLI,
//! then read the lake back with the parquet crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Runs `kinesis-lake ingest OPTIONS --lake LAKE INPUT...`.
fn run_ingest(options: &[&str], lake: &Path, inputs: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .arg("ingest")
        .args(options)
        .arg("--lake")
        .arg(lake)
        .args(inputs)
        .output()
        .expect("the binary runs")
}

fn ingest(lake: &Path, inputs: &[PathBuf]) -> (Value, Output) {
    let out = run_ingest(&["--json"], lake, inputs);
    assert!(
        out.status.success(),
        "ingest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = serde_json::from_slice(&out.stdout).expect("summary is JSON");
    (summary, out)
}

fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
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

fn read_parquet(path: &Path) -> RecordBatch {
    let f = std::fs::File::open(path).expect("open parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("parquet footer")
        .build()
        .expect("reader");
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("batches");
    arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat")
}

/// Every row of the lake: (relative folder, event_uuid) -> batch row reader.
fn lake_uuids(lake: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files_under(lake, ".parquet") {
        let rel = f
            .parent()
            .expect("folder")
            .strip_prefix(lake)
            .expect("inside lake")
            .to_string_lossy()
            .into_owned();
        let b = read_parquet(&f);
        let col = b.column_by_name("event_uuid").expect("event_uuid");
        for u in col.as_string::<i32>().iter().flatten() {
            out.entry(u.to_string()).or_default().push(rel.clone());
        }
    }
    out
}

fn row_of(lake: &Path, uuid: &str) -> (PathBuf, RecordBatch, usize) {
    for f in files_under(lake, ".parquet") {
        let b = read_parquet(&f);
        let col = b
            .column_by_name("event_uuid")
            .expect("event_uuid")
            .as_string::<i32>()
            .clone();
        if let Some(i) = col.iter().position(|u| u == Some(uuid)) {
            return (f, b, i);
        }
    }
    panic!("{uuid} not in the lake")
}

fn dead_letters(lake: &Path) -> Vec<Value> {
    files_under(&lake.join("_errors"), ".ndjson")
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .expect("read dead letters")
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

#[test]
fn ndjson_fixture_lands_partitioned_typed_and_accounted_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let (s, _) = ingest(&lake, &[fixture("events.ndjson")]);
    let n = |k: &str| s[k].as_u64().expect(k);
    let lines = std::fs::read_to_string(fixture("events.ndjson")).expect("fixture");
    assert_eq!(n("records"), lines.lines().count() as u64);
    assert_eq!(n("records"), n("written") + n("duplicates") + n("rejected"));
    assert_eq!((n("written"), n("duplicates"), n("failed")), (8, 1, 0));

    let rows = lake_uuids(&lake);
    assert_eq!(rows.len(), 8, "{rows:?}");
    assert!(
        rows.values().all(|v| v.len() == 1),
        "each event once: {rows:?}"
    );
    assert_eq!(
        rows[&uuid(1)],
        ["event_type=account/event_subtype=created/event_date=2024-03-17"]
    );
    assert_eq!(
        rows[&uuid(4)],
        ["event_type=payment/event_subtype=order/event_date=2024-03-18"]
    );
    assert_eq!(
        rows[&uuid(5)],
        ["event_type=account/event_subtype=__HIVE_DEFAULT_PARTITION__/event_date=2024-03-17"]
    );
    // a hostile subtype is escaped and stays a single folder inside the lake
    assert_eq!(
        rows[&uuid(6)],
        [
            "event_type=video/event_subtype=watch%2F..%2F..%2Fetc%3Fx%3D1%23frag/event_date=2024-03-17"
        ]
    );
    // a forged event_type in the payload does not choose the partition
    assert_eq!(
        rows[&uuid(7)],
        ["event_type=quiz/event_subtype=submitted/event_date=2024-03-17"]
    );
}

#[test]
fn values_and_types_survive_the_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    ingest(&lake, &[fixture("events.ndjson")]);

    let (_, b, i) = row_of(&lake, &uuid(3));
    let schema = b.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        &names[..4],
        ["event_uuid", "event_name", "created_at", "created_datetime"]
    );
    for partition_col in ["event_type", "event_subtype", "event_date"] {
        assert!(
            !names.contains(&partition_col),
            "{partition_col} is not repeated in files"
        );
    }
    let s = |c: &str| {
        b.column_by_name(c)
            .expect(c)
            .as_string::<i32>()
            .value(i)
            .to_string()
    };
    assert_eq!(s("event_name"), "payment:order:completed");
    assert_eq!(s("created_datetime"), "2024-03-17T10:15:30.250Z");
    let created = b.column_by_name("created_at").expect("created_at");
    assert_eq!(
        created.as_primitive::<Float64Type>().value(i),
        1710670530.25
    );
    // an integer beyond 64 bits keeps every digit
    assert_eq!(s("order_id__v_json"), "123456789012345678901234567890");
    let order_id = b.column_by_name("order_id").expect("order_id");
    assert_eq!(order_id.data_type(), &DataType::Int64);

    let (_, b, i) = row_of(&lake, &uuid(2));
    let col = |c: &str| b.column_by_name(c).expect(c).clone();
    assert_eq!(col("lesson_id").as_primitive::<Int64Type>().value(i), 7);
    assert_eq!(col("progress").as_primitive::<Float64Type>().value(i), 0.25);
    assert_eq!(col("tags").as_string::<i32>().value(i), r#"["a", "b"]"#);
    let device: Value =
        serde_json::from_str(col("device").as_string::<i32>().value(i)).expect("JSON text");
    assert_eq!(device["os"], "ios");

    let (_, b, i) = row_of(&lake, &uuid(1));
    assert!(
        b.column_by_name("trial")
            .expect("trial")
            .as_boolean()
            .value(i)
    );

    // the payload's own event_type/event_date are kept under other names
    let (_, b, i) = row_of(&lake, &uuid(7));
    let kept = b.column_by_name("event_type__payload").expect("kept");
    assert_eq!(kept.as_string::<i32>().value(i), "forged");
    // a field that has only ever been null has no column yet (null and absent read the same)
    assert!(b.column_by_name("score").is_none());
}

#[test]
fn every_rejection_reason_is_in_the_dead_letter_area_with_its_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let (s, _) = ingest(&lake, &[fixture("kinesis/small-batch.json")]);
    let dl = dead_letters(&lake);
    assert_eq!(dl.len() as u64, s["rejected"].as_u64().expect("rejected"));
    let codes: BTreeSet<&str> = dl
        .iter()
        .map(|d| d["reason_code"].as_str().expect("code"))
        .collect();
    let expected: BTreeSet<&str> = [
        "invalid_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "empty_event_uuid",
        "empty_event_type",
        "name_part_too_long",
        "created_at_not_seconds",
        "created_at_out_of_range",
        "bad_gzip",
    ]
    .into();
    assert_eq!(codes, expected);
    let doc: Value = serde_json::from_slice(
        &std::fs::read(fixture("kinesis/small-batch.json")).expect("fixture"),
    )
    .expect("fixture JSON");
    for d in &dl {
        assert!(!d["reason"].as_str().expect("reason").is_empty());
        let seq = d["origin"]["sequence_number"]
            .as_str()
            .expect("sequence number");
        let sent = doc["Records"]
            .as_array()
            .expect("records")
            .iter()
            .find(|r| r["kinesis"]["sequenceNumber"] == seq)
            .expect("dead letter names a record of the batch");
        assert_eq!(
            d["data_base64"], sent["kinesis"]["data"],
            "original bytes kept"
        );
        assert_eq!(d["origin"]["shard_id"], "shardId-000000000000");
    }
    // the gzip-compressed record was decoded and written
    assert!(lake_uuids(&lake).contains_key(&uuid(2)));
}

#[test]
fn running_again_adds_nothing_and_resends_are_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let inputs = [fixture("events.ndjson"), fixture("kinesis")];
    let (first, _) = ingest(&lake, &inputs);
    let files_before = files_under(&lake, "");
    let (again, _) = ingest(&lake, &inputs);
    assert_eq!(again["written"], 0);
    assert_eq!(again["files"], 0);
    assert_eq!(
        again["rejected"], first["rejected"],
        "rejects are counted, not re-written"
    );
    assert_eq!(
        files_under(&lake, "").len(),
        files_before.len(),
        "no new file of any kind"
    );
    let rows = lake_uuids(&lake);
    assert!(rows.values().all(|v| v.len() == 1), "{rows:?}");
    // the NDJSON file and the Kinesis batches carry the same events: each once
    assert_eq!(rows.len(), 9);
}

#[test]
fn gzip_ndjson_input_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let (s, _) = ingest(&lake, &[fixture("demo-events.ndjson.gz")]);
    assert_eq!(s["records"], 20_000);
    assert_eq!(s["failed"], 0);
    let written = s["written"].as_u64().expect("written");
    assert_eq!(written + s["duplicates"].as_u64().expect("dups"), 20_000);
    assert_eq!(lake_uuids(&lake).len() as u64, written);
}

#[test]
fn no_temporary_file_is_left_where_readers_look() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    ingest(&lake, &[fixture("events.ndjson")]);
    assert!(files_under(&lake, ".tmp").is_empty());
}

#[test]
fn unreadable_input_fails_the_tool_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(["ingest", "--lake"])
        .arg(dir.path().join("lake"))
        .arg(dir.path().join("missing.ndjson"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.ndjson"), "{err}");
}

#[test]
fn a_broken_kinesis_document_is_a_tool_error_not_a_silent_skip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("batch.json");
    std::fs::write(&bad, r#"{"Records": [{"kinesis": 5}]}"#).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(["ingest", "--lake"])
        .arg(dir.path().join("lake"))
        .arg(&bad)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Kinesis event document"), "{err}");
}

#[test]
fn help_documents_every_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(["ingest", "--help"])
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--lake",
        "--batch-mib",
        "--batch-records",
        "--json",
        "--no-progress",
        "--compression",
        "--payload-json",
    ] {
        assert!(help.contains(opt), "{opt} missing from --help:\n{help}");
    }
}

#[test]
fn human_summary_names_every_counter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(["ingest", "--lake"])
        .arg(dir.path().join("lake"))
        .arg(fixture("events.ndjson"))
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "records read",
        "events written",
        "duplicates dropped",
        "records rejected",
        "files written",
        "elapsed",
        "records/s",
    ] {
        assert!(text.contains(word), "{word} missing:\n{text}");
    }
}

#[test]
fn ddl_reads_payload_columns_from_the_lake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    ingest(&lake, &[fixture("events.ndjson")]);
    let out = Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args([
            "ddl",
            "--location",
            "s3://bucket/lake",
            "--database",
            "db",
            "--from",
        ])
        .arg(&lake)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ddl = String::from_utf8_lossy(&out.stdout);
    assert!(ddl.starts_with("CREATE EXTERNAL TABLE IF NOT EXISTS `db`.`events` ("));
    for col in [
        "`lesson_id` bigint",
        "`trial` boolean",
        "`progress` double",
        "`currency` string",
    ] {
        assert!(ddl.contains(col), "{col} missing:\n{ddl}");
    }
    assert!(
        !ddl.contains("\n  `event_type` "),
        "partition columns are not data columns"
    );
    assert!(ddl.contains("'storage.location.template'='s3://bucket/lake/event_type=${event_type}"));
}

#[test]
fn ddl_refuses_a_location_athena_cannot_read() {
    let out = Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(["ddl", "--location", "/tmp/lake"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("s3://"));
}

#[test]
fn schema_command_shows_tables_columns_and_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let input = dir.path().join("in.ndjson");
    std::fs::write(
        &input,
        concat!(
            r#"{"event_uuid":"a","event_name":"payment:order:done","created_at":1710633600,"amount":5}"#,
            "\n",
            r#"{"event_uuid":"b","event_name":"payment:order","created_at":1710633600,"amount":1.5}"#,
            "\n"
        ),
    )
    .expect("write");
    // one record per batch, written at once (no publication window): version
    // 1 commits `amount` as bigint, version 2 adds a variant
    let out = Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(["ingest", "--window", "0", "--batch-records", "1", "--lake"])
        .arg(&lake)
        .arg(&input)
        .output()
        .expect("runs");
    assert!(out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(["schema", "--lake"])
        .arg(&lake)
        .arg("payment:order:done")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("lake schema version 2"), "{text}");
    assert!(text.contains("table payment:order"), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .to_string()
    };
    assert!(line("amount").contains("bigint") && line("amount").contains("v1"));
    assert!(line("amount__v_double").contains("double") && line("amount__v_double").contains("v2"));
    assert!(
        text.contains("v2     2 columns, 1 tables: +amount__v_double"),
        "{text}"
    );
}

#[test]
fn payload_json_keeps_each_event_as_received() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let out = run_ingest(
        &["--payload-json", "--json"],
        &lake,
        &[fixture("events.ndjson")],
    );
    assert!(out.status.success());
    let (_, b, i) = row_of(&lake, &uuid(2));
    let kept = b.column_by_name("payload_json").expect("payload_json");
    let line = std::fs::read_to_string(fixture("events.ndjson"))
        .expect("fixture")
        .lines()
        .find(|l| l.contains(&uuid(2)))
        .expect("line")
        .to_string();
    assert_eq!(kept.as_string::<i32>().value(i), line);
}

#[test]
fn compression_is_chosen_per_run_or_by_chunk_size_and_a_bad_codec_is_refused() {
    use parquet::basic::Compression;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = tempfile::tempdir().expect("tempdir");
    // enough rows for pages above the writer's small-page limit
    let input = dir.path().join("in.ndjson");
    let lines: String = (0..100)
        .map(|i| {
            format!(
                "{{\"event_uuid\":\"u-{i}\",\"event_name\":\"a:b\",\"created_at\":{},\"note\":\"the same words again, {i:03}\"}}\n",
                1_700_000_000 + i
            )
        })
        .collect();
    std::fs::write(&input, lines).expect("write input");
    let ingest_with = |codec: &str| {
        let lake = dir.path().join(codec);
        let out = run_ingest(
            &["--json", "--compression", codec],
            &lake,
            std::slice::from_ref(&input),
        );
        assert!(
            out.status.success(),
            "{codec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lake
    };
    for (codec, want) in [
        ("snappy", Compression::SNAPPY),
        ("zstd(5)", Compression::ZSTD(Default::default())),
    ] {
        let lake = ingest_with(codec);
        // every column chunk uses the codec, or none where the codec did not
        // shrink it; some chunk must have been compressed
        let mut seen = 0;
        for f in files_under(&lake, ".parquet") {
            let r =
                SerializedFileReader::new(std::fs::File::open(&f).expect("open")).expect("footer");
            for rg in r.metadata().row_groups() {
                for c in rg.columns() {
                    let used = c.compression();
                    assert!(
                        used == Compression::UNCOMPRESSED
                            || std::mem::discriminant(&used) == std::mem::discriminant(&want),
                        "{codec}: {} in {} uses {used:?}",
                        c.column_path(),
                        f.display()
                    );
                    seen += usize::from(used != Compression::UNCOMPRESSED);
                }
            }
        }
        assert!(seen > 0, "{codec}: no column was compressed at all");
    }
    // auto: the 100 notes (~3,100 bytes, all different, so not a dictionary)
    // with zstd, the short uuids (~750 bytes) with snappy, in the same file
    let files = files_under(&ingest_with("auto"), ".parquet");
    assert_eq!(files.len(), 1, "{files:?}");
    let r =
        SerializedFileReader::new(std::fs::File::open(&files[0]).expect("open")).expect("footer");
    let codec_of = |name: &str| {
        let rg = r.metadata().row_group(0);
        let c = rg
            .columns()
            .iter()
            .find(|c| c.column_path().string() == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        c.compression()
    };
    assert!(matches!(codec_of("note"), Compression::ZSTD(_)));
    assert_eq!(codec_of("event_uuid"), Compression::SNAPPY);

    let out = run_ingest(
        &["--compression", "lz4"],
        &dir.path().join("x"),
        &[fixture("events.ndjson")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lz4") && err.contains("snappy"), "{err}");
}

/// Runs the binary and waits at most `limit` for it: a hang fails the test
/// (the child is killed) instead of blocking the suite.
fn run_bounded(args: &[&std::ffi::OsStr], limit: std::time::Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}: killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

const EVENT: &str = r#"{"event_uuid":"a","event_name":"t:x","created_at":1710670530}"#;

#[test]
fn a_symlink_cycle_in_an_input_folder_is_skipped_with_a_warning() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("d");
    std::fs::create_dir(&d).expect("mkdir");
    std::fs::write(d.join("a.ndjson"), format!("{EVENT}\n")).expect("write");
    symlink(".", d.join("x")).expect("symlink");
    symlink(".", d.join("y")).expect("symlink");
    symlink("../d", d.join("self")).expect("symlink");
    let lake = dir.path().join("lake");
    let out = run_bounded(
        &[
            "ingest".as_ref(),
            "--json".as_ref(),
            "--lake".as_ref(),
            lake.as_os_str(),
            d.as_os_str(),
        ],
        std::time::Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let s: Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(
        (s["input_files"].as_u64(), s["written"].as_u64()),
        (Some(1), Some(1))
    );
    for link in ["d/x", "d/y", "d/self"] {
        assert!(
            err.lines()
                .any(|l| l.contains(link) && l.contains("skipped")),
            "{link}: {err}"
        );
    }
}

#[test]
fn a_lake_inside_its_input_folder_is_not_read_as_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("d");
    std::fs::create_dir(&d).expect("mkdir");
    std::fs::write(d.join("a.ndjson"), format!("{EVENT}\n")).expect("write");
    let lake = d.join("lake");
    for _ in 0..3 {
        let (s, _) = ingest(&lake, std::slice::from_ref(&d));
        assert_eq!(
            (s["records"].as_u64(), s["rejected"].as_u64()),
            (Some(1), Some(0))
        );
    }
    assert!(!lake.join("_errors").exists(), "no dead letter");
}

#[test]
fn temporary_files_of_a_killed_run_are_removed_by_the_next_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    ingest(&lake, &[fixture("events.ndjson")]);
    let part = files_under(&lake, ".parquet")
        .pop()
        .expect("a parquet file");
    let folder = part.parent().expect("folder");
    let stale = [
        folder.join(".part-0190c7a3-x.parquet.0190c7a3b3f07c4e8a1b2c3d4e5f6071.tmp"),
        lake.join("_errors/.part-1.ndjson.0190c7a3b3f07c4e8a1b2c3d4e5f6072.tmp"),
        lake.join("_staging/.x.0190c7a3b3f07c4e8a1b2c3d4e5f6073.tmp"),
    ];
    let kept = [folder.join(".notes.tmp"), lake.join("mine.tmp")];
    for f in stale.iter().chain(&kept) {
        std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
        std::fs::write(f, "partial").expect("write");
    }
    ingest(&lake, &[fixture("events.ndjson")]);
    for f in &stale {
        assert!(!f.exists(), "{} left", f.display());
    }
    for f in &kept {
        assert!(f.exists(), "{} removed", f.display());
    }
}

#[test]
fn a_truncated_gzip_input_is_ingested_up_to_the_break_and_the_rest_dead_lettered() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("d");
    std::fs::create_dir(&d).expect("mkdir");
    let text: String = (0..3000)
        .map(|i| {
            format!(
                "{{\"event_uuid\":\"u{i}\",\"event_name\":\"t:x\",\"created_at\":1710670530,\"n\":{}}}\n",
                i * 7919 % 10007
            )
        })
        .collect();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).expect("gzip");
    let z = enc.finish().expect("gzip");
    std::fs::write(d.join("a.ndjson.gz"), &z[..z.len() / 2]).expect("write");
    std::fs::write(
        d.join("b.ndjson"),
        r#"{"event_uuid":"other","event_name":"t:x","created_at":1710670530}"#,
    )
    .expect("write");
    let lake = dir.path().join("lake");
    let (s, _) = ingest(&lake, std::slice::from_ref(&d));
    let written = s["written"].as_u64().expect("written");
    assert!(written > 100, "{s}");
    assert_eq!(s["rejected"], 1);
    assert!(
        lake_uuids(&lake).contains_key("other"),
        "the other file is ingested"
    );
    let dl = dead_letters(&lake);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["reason_code"], "corrupt_input");
    assert_eq!(dl[0]["origin"]["line"], written);
    assert!(
        dl[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("breaks off after"),
        "{}",
        dl[0]["reason"]
    );
    // a second run adds nothing, the dead letter included
    let (again, _) = ingest(&lake, std::slice::from_ref(&d));
    assert_eq!(
        (again["written"].as_u64(), again["files"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(dead_letters(&lake).len(), 1);
}

#[test]
fn reasons_name_the_real_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    // Kinesis data that is not base64
    let doc = dir.path().join("batch.json");
    std::fs::write(
        &doc,
        r#"{"Records":[{"kinesis":{"data":"!!!not base64***","sequenceNumber":"1"}}]}"#,
    )
    .expect("write");
    ingest(&lake, &[doc]);
    let dl = dead_letters(&lake);
    assert_eq!(dl[0]["reason_code"], "not_base64", "{}", dl[0]);
    // a byte-order mark before a pretty-printed Kinesis document
    let bom = dir.path().join("bom.json");
    let data =
        "eyJldmVudF91dWlkIjoiYm9tIiwiZXZlbnRfbmFtZSI6InQ6eCIsImNyZWF0ZWRfYXQiOjE3MTA2NzA1MzB9";
    std::fs::write(
        &bom,
        format!(
            "\u{feff}{{\n  \"Records\": [\n    {{\"kinesis\": {{\"data\": \"{data}\", \"sequenceNumber\": \"2\"}}}}\n  ]\n}}\n"
        ),
    )
    .expect("write");
    let (s, _) = ingest(&lake, &[bom]);
    assert_eq!(
        (s["written"].as_u64(), s["rejected"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
    // and before an NDJSON file's first line
    let nd = dir.path().join("bom.ndjson");
    std::fs::write(
        &nd,
        format!("\u{feff}{}\n", EVENT.replace("\"a\"", "\"bom2\"")),
    )
    .expect("write");
    let (s, _) = ingest(&lake, &[nd]);
    assert_eq!(
        (s["written"].as_u64(), s["rejected"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
}

#[test]
fn a_missing_input_names_its_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_ingest(&[], &dir.path().join("lake"), &[dir.path().join("nosuch")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

#[test]
fn schema_of_an_unknown_event_name_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    ingest(&lake, &[fixture("events.ndjson")]);
    let out = Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(["schema", "--lake"])
        .arg(&lake)
        .arg("nosuch:event")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nosuch:event") && err.contains("payment:order"),
        "{err}"
    );
}

#[test]
fn zero_batch_limits_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for flag in ["--batch-records", "--batch-mib"] {
        let out = run_ingest(
            &[flag, "0"],
            &dir.path().join("lake"),
            &[fixture("events.ndjson")],
        );
        assert!(!out.status.success(), "{flag} 0 accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains(flag));
    }
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // the fixture has rejected records: each is logged
    let out = run_ingest(&[], &dir.path().join("lake"), &[fixture("events.ndjson")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WARN"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err}");
}

/// Runs `kinesis-lake ARGS...` with warnings only.
fn run_cli(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kinesis-lake"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("the binary runs")
}

#[test]
fn a_damaged_dedup_store_is_reported_with_what_to_do_never_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let input = [fixture("demo-events.ndjson.gz")];
    ingest(&lake, &input);
    let store = lake.join("_state").join("dedup.redb");
    let mut bytes = std::fs::read(&store).expect("read store");
    // 64 KiB of (deterministic) noise in the middle of the file
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 65536] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&store, &bytes).expect("write store");
    let out = run_ingest(&["--json"], &lake, &input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&format!("the dedup store {} is damaged", store.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "kinesis-lake rebuild-state --lake {}",
            lake.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_lake_without_its_store_refuses_ingest_until_rebuilt_and_then_writes_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let inputs = [fixture("events.ndjson"), fixture("kinesis")];
    let (first, _) = ingest(&lake, &inputs);
    assert!(first["written"].as_u64() > Some(0) && first["rejected"].as_u64() > Some(0));
    let before = lake_uuids(&lake);
    let dead_before = files_under(&lake.join("_errors"), ".ndjson");
    let store = lake.join("_state").join("dedup.redb");
    std::fs::remove_file(&store).expect("delete the store");

    let refused = run_ingest(&["--json"], &lake, &inputs);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has no dedup store"), "{stderr}");
    assert!(stderr.contains("rebuild-state --lake"), "{stderr}");
    assert_eq!(lake_uuids(&lake), before, "nothing written");
    assert!(!store.exists(), "no empty store left behind");

    let rebuilt = run_cli(&[
        "rebuild-state".as_ref(),
        "--lake".as_ref(),
        lake.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let summary: Value = serde_json::from_slice(&rebuilt.stdout).expect("JSON");
    assert_eq!(summary["events"], first["written"]);
    assert_eq!(summary["dead_letters"], first["rejected"]);
    assert_eq!(summary["duplicated_uuids"], 0);
    assert!(store.exists());

    // a second rebuild never overwrites the store
    let again = run_cli(&[
        "rebuild-state".as_ref(),
        "--lake".as_ref(),
        lake.as_os_str(),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let (second, _) = ingest(&lake, &inputs);
    assert_eq!(second["written"], 0, "{second}");
    assert_eq!(second["dead_letter_files"], 0, "{second}");
    assert_eq!(
        second["duplicates"].as_u64(),
        Some(first["written"].as_u64().unwrap_or(0) + first["duplicates"].as_u64().unwrap_or(0)),
        "{second}"
    );
    assert_eq!(lake_uuids(&lake), before);
    assert_eq!(files_under(&lake.join("_errors"), ".ndjson"), dead_before);
}
