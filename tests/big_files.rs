//! The publisher writes the biggest files the lake's Parquet writer writes:
//! a window of one partition across several staged batches becomes one file
//! of several row groups and several pages per column chunk. Every column
//! chunk's min / max / null count must match the values it holds (readers
//! skip row groups by them: a wrong max silently drops rows from a filtered
//! query), and every value must read back.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use bytes::Bytes;
use chrono::DateTime;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;

use kinesis_lake::core::publish::{PublishConfig, Which, publish};
use kinesis_lake::memory::{MemSink, MemStore};
use kinesis_lake::record::{Origin, RawRecord};
use kinesis_lake::{PipelineConfig, run_batch};

/// More than one row group (131,072 rows) and, for the strings, more than
/// one 1 MiB page per chunk.
const EVENTS: usize = 140_000;
const BATCH: usize = 35_000;

/// One event's payload values, as sent.
struct Payload {
    flag: Option<bool>,
    count: i64,
    price: f64,
    city: &'static str,
    note: String,
    maybe: Option<i64>,
}

fn payload(i: usize) -> Payload {
    let cities = ["Lyon", "Oslo", "Accra", "Quito", "Hanoi", "Perth"];
    // a spread that is not monotonic, so each row group has its own range
    let x = (i as i64 * 7919) % 100_003 - 50_000;
    Payload {
        flag: (!i.is_multiple_of(5)).then_some(i.is_multiple_of(3)),
        count: x,
        price: (x as f64) * 0.25 + 0.125,
        city: cities[(i * 31) % cities.len()],
        note: format!("note-{:07}-{}", (i * 104_729) % 9_999_991, i % 97),
        maybe: i.is_multiple_of(3).then_some(x * 3),
    }
}

fn event_json(i: usize) -> String {
    let p = payload(i);
    let mut fields = vec![
        format!("\"event_uuid\":\"big-{i:07}\""),
        "\"event_name\":\"big:file\"".to_string(),
        "\"created_at\":1710670530".to_string(),
        format!("\"count\":{}", p.count),
        format!("\"price\":{:?}", p.price),
        format!("\"city\":\"{}\"", p.city),
        format!("\"note\":\"{}\"", p.note),
    ];
    if let Some(f) = p.flag {
        fields.push(format!("\"flag\":{f}"));
    }
    if let Some(m) = p.maybe {
        fields.push(format!("\"maybe\":{m}"));
    }
    format!("{{{}}}", fields.join(","))
}

/// Stages the events in batches into one window, then publishes it.
async fn published_lake() -> MemSink {
    let (store, sink) = (MemStore::default(), MemSink::default());
    let staged = PipelineConfig {
        window_secs: 300,
        ..PipelineConfig::default()
    };
    let t0 = 1_710_670_500;
    for (b, start) in (0..EVENTS).step_by(BATCH).enumerate() {
        let records: Vec<RawRecord> = (start..(start + BATCH).min(EVENTS))
            .map(|i| {
                RawRecord::new(
                    event_json(i).into_bytes(),
                    Origin::File {
                        path: "/big.ndjson".into(),
                        line: i as u64 + 1,
                    },
                )
            })
            .collect();
        let at = DateTime::from_timestamp(t0 + b as i64, 0).expect("time");
        let out = run_batch(&records, &store, &sink, &staged, at).await;
        assert_eq!(
            out.counts.written as usize,
            records.len(),
            "{:?}",
            out.failed.first()
        );
    }
    let cfg = PublishConfig {
        window_secs: 300,
        ..PublishConfig::default()
    };
    let now = DateTime::from_timestamp(t0 + 400, 0).expect("time");
    let p = publish(&sink, &cfg, Which::Closed, now)
        .await
        .expect("published");
    assert_eq!((p.events as usize, p.files), (EVENTS, 1));
    sink
}

/// Expected statistics of one column chunk.
#[derive(Debug, PartialEq)]
enum Expect {
    Int(Option<(i64, i64)>, u64),
    Double(Option<(f64, f64)>, u64),
    Bool(Option<(bool, bool)>, u64),
    Str(Option<(String, String)>, u64),
}

fn range<T: PartialOrd + Clone>(values: impl Iterator<Item = Option<T>>) -> (Option<(T, T)>, u64) {
    let mut nulls = 0;
    let mut r: Option<(T, T)> = None;
    for v in values {
        match v {
            None => nulls += 1,
            Some(v) => {
                r = Some(match r {
                    None => (v.clone(), v),
                    Some((lo, hi)) => (
                        if v < lo { v.clone() } else { lo },
                        if v > hi { v } else { hi },
                    ),
                })
            }
        }
    }
    (r, nulls)
}

fn expected(column: &str, rows: std::ops::Range<usize>) -> Expect {
    let p = || rows.clone().map(payload);
    match column {
        "event_uuid" => {
            let (r, n) = range(rows.clone().map(|i| Some(format!("big-{i:07}"))));
            Expect::Str(r, n)
        }
        "event_name" => Expect::Str(Some(("big:file".into(), "big:file".into())), 0),
        "created_at" => Expect::Double(Some((1_710_670_530.0, 1_710_670_530.0)), 0),
        "created_datetime" => Expect::Str(
            Some(("2024-03-17T10:15:30Z".into(), "2024-03-17T10:15:30Z".into())),
            0,
        ),
        "count" => {
            let (r, n) = range(p().map(|v| Some(v.count)));
            Expect::Int(r, n)
        }
        "maybe" => {
            let (r, n) = range(p().map(|v| v.maybe));
            Expect::Int(r, n)
        }
        "price" => {
            let (r, n) = range(p().map(|v| Some(v.price)));
            Expect::Double(r, n)
        }
        "flag" => {
            let (r, n) = range(p().map(|v| v.flag));
            Expect::Bool(r, n)
        }
        "city" => {
            let (r, n) = range(p().map(|v| Some(v.city.to_string())));
            Expect::Str(r, n)
        }
        "note" => {
            let (r, n) = range(p().map(|v| Some(v.note)));
            Expect::Str(r, n)
        }
        other => panic!("unexpected column {other}"),
    }
}

fn actual(stats: &Statistics) -> Expect {
    let nulls = stats.null_count_opt().unwrap_or(u64::MAX);
    match stats {
        Statistics::Int64(s) => {
            Expect::Int(s.min_opt().zip(s.max_opt()).map(|(a, b)| (*a, *b)), nulls)
        }
        Statistics::Double(s) => {
            Expect::Double(s.min_opt().zip(s.max_opt()).map(|(a, b)| (*a, *b)), nulls)
        }
        Statistics::Boolean(s) => {
            Expect::Bool(s.min_opt().zip(s.max_opt()).map(|(a, b)| (*a, *b)), nulls)
        }
        Statistics::ByteArray(s) => Expect::Str(
            s.min_opt().zip(s.max_opt()).map(|(a, b)| {
                (
                    String::from_utf8_lossy(a.data()).into_owned(),
                    String::from_utf8_lossy(b.data()).into_owned(),
                )
            }),
            nulls,
        ),
        other => panic!("unexpected statistics {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_chunk_of_a_published_file_has_the_statistics_of_its_values() {
    let sink = published_lake().await;
    let files: Vec<(String, Bytes)> = sink
        .objects()
        .into_iter()
        .filter(|(k, _)| k.ends_with(".parquet"))
        .collect();
    assert_eq!(files.len(), 1);
    let (key, body) = &files[0];
    assert!(
        key.ends_with("part-20240317T101500Z-g0000-0000.parquet"),
        "{key}"
    );

    let reader = SerializedFileReader::new(body.clone()).expect("footer");
    let meta = reader.metadata();
    assert!(
        meta.num_row_groups() >= 2,
        "{} row groups",
        meta.num_row_groups()
    );
    let mut first_row = 0usize;
    let mut checked = 0;
    for g in 0..meta.num_row_groups() {
        let rg = meta.row_group(g);
        let rows = first_row..first_row + rg.num_rows() as usize;
        for c in 0..rg.num_columns() {
            let chunk = rg.column(c);
            let name = chunk.column_descr().name().to_string();
            let stats = chunk
                .statistics()
                .unwrap_or_else(|| panic!("{name} in row group {g} has no statistics"));
            assert_eq!(
                actual(stats),
                expected(&name, rows.clone()),
                "{name}, row group {g}"
            );
            checked += 1;
        }
        first_row = rows.end;
    }
    assert_eq!(first_row, EVENTS);
    assert!(checked >= 2 * 10, "{checked} chunks checked");
    // the string chunks of the first row group span several pages
    let pages = reader
        .get_row_group(0)
        .expect("row group")
        .get_column_page_reader(
            (0..meta.row_group(0).num_columns())
                .find(|&c| meta.row_group(0).column(c).column_descr().name() == "note")
                .expect("note"),
        )
        .expect("pages")
        .count();
    assert!(pages >= 2, "note: {pages} page(s)");

    // and every value reads back, in arrival order
    let batches = ParquetRecordBatchReaderBuilder::try_new(body.clone())
        .expect("reader")
        .build()
        .expect("batches");
    let mut i = 0usize;
    let mut cities: BTreeMap<String, usize> = BTreeMap::new();
    for b in batches {
        let b = b.expect("batch");
        let uuid = b
            .column_by_name("event_uuid")
            .expect("uuid")
            .as_string::<i32>();
        let count = b
            .column_by_name("count")
            .expect("count")
            .as_primitive::<Int64Type>();
        let price = b
            .column_by_name("price")
            .expect("price")
            .as_primitive::<Float64Type>();
        let maybe = b
            .column_by_name("maybe")
            .expect("maybe")
            .as_primitive::<Int64Type>();
        let flag = b.column_by_name("flag").expect("flag").as_boolean();
        let city = b.column_by_name("city").expect("city").as_string::<i32>();
        for r in 0..b.num_rows() {
            let p = payload(i);
            assert_eq!(uuid.value(r), format!("big-{i:07}"));
            assert_eq!(
                (count.value(r), price.value(r)),
                (p.count, p.price),
                "row {i}"
            );
            assert_eq!(
                maybe.is_valid(r).then(|| maybe.value(r)),
                p.maybe,
                "row {i}"
            );
            assert_eq!(flag.is_valid(r).then(|| flag.value(r)), p.flag, "row {i}");
            *cities.entry(city.value(r).to_string()).or_default() += 1;
            i += 1;
        }
    }
    assert_eq!(i, EVENTS);
    assert_eq!(cities.len(), 6);
}
