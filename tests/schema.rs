//! The lake schema across batches: every value kept and rebuildable from its
//! row, every file of the lake agreeing on every column's type, concurrent
//! writers converging on one base type.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use chrono::{DateTime, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value, json};

use kinesis_lake::core::registry::{SchemaCache, load_latest};
use kinesis_lake::core::schema::LakeSchema;
use kinesis_lake::core::value::Kind;
use kinesis_lake::memory::{MemSink, MemStore};
use kinesis_lake::{Origin, PipelineConfig, RawRecord, run_batch};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A JSON value of a random kind, including the awkward ones.
fn value(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => json!(rng.next() as i64),
        3 => json!((rng.below(2000) as i64) - 1000),
        4 => json!((rng.below(1_000_000) as f64) / 7.0),
        5 => json!(1.5),
        6 => Value::String(format!("s{}", rng.below(100))),
        7 => Value::String("12".into()),
        8 => json!({"k": rng.below(5), "nested": [1, "two", null]}),
        9 => json!([rng.below(3), rng.below(3)]),
        // beyond 64 bits: every digit must survive
        10 => serde_json::from_str("123456789012345678901234567890").expect("big number"),
        _ => json!(9_007_199_254_740_993_i64),
    }
}

fn event(rng: &mut Rng, n: usize) -> Value {
    let mut m = Map::new();
    m.insert("event_uuid".into(), json!(format!("e{n}")));
    let types = ["pay:order", "pay:refund", "lesson", "video:play"];
    m.insert("event_name".into(), json!(types[rng.below(4) as usize]));
    m.insert(
        "created_at".into(),
        json!(1_710_633_600 + rng.below(3 * 86_400) as i64),
    );
    for f in ["amount", "id", "meta", "flag"] {
        if rng.below(4) != 0 {
            m.insert(f.into(), value(rng));
        }
    }
    Value::Object(m)
}

fn records(events: &[Value], first_line: u64) -> Vec<RawRecord> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| RawRecord {
            data: serde_json::to_vec(e).expect("serialise"),
            origin: Origin::File {
                path: "/gen.ndjson".into(),
                line: first_line + i as u64,
            },
            unreadable: None,
        })
        .collect()
}

fn batches(sink: &MemSink) -> Vec<RecordBatch> {
    sink.objects()
        .into_iter()
        .filter(|(k, _)| k.ends_with(".parquet"))
        .flat_map(|(_, body)| {
            ParquetRecordBatchReaderBuilder::try_new(body)
                .expect("footer")
                .build()
                .expect("reader")
                .map(|b| b.expect("batch"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The JSON value of one cell, or None when null.
fn cell(col: &dyn Array, kind: Kind, i: usize) -> Option<Value> {
    if col.is_null(i) {
        return None;
    }
    Some(match kind {
        Kind::Bool => Value::Bool(col.as_boolean().value(i)),
        Kind::Int => json!(col.as_primitive::<Int64Type>().value(i)),
        Kind::Double => json!(col.as_primitive::<Float64Type>().value(i)),
        Kind::String => Value::String(col.as_string::<i32>().value(i).to_string()),
        Kind::Json => serde_json::from_str(col.as_string::<i32>().value(i)).expect("JSON text"),
    })
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        // an integer kept in a double column is the same number
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            x.as_f64() == y.as_f64()
        }
        _ => a == b,
    }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("valid")
}

#[tokio::test]
async fn every_value_is_rebuilt_from_its_row_across_evolving_batches() {
    let mut rng = Rng(0x5eed);
    let events: Vec<Value> = (0..3000).map(|n| event(&mut rng, n)).collect();
    let (store, sink) = (MemStore::default(), MemSink::default());
    let cfg = PipelineConfig::default();
    // small batches first, so the schema evolves as new kinds show up
    let mut start = 0;
    for size in [3, 7, 20, 70, 300, 600, 2000] {
        let end = (start + size).min(events.len());
        let o = run_batch(
            &records(&events[start..end], start as u64),
            &store,
            &sink,
            &cfg,
            now(),
        )
        .await;
        assert_eq!(o.counts.failed, 0, "{:?}", o.failed.first());
        start = end;
    }
    assert_eq!(start, events.len());
    let schema = load_latest(&sink, "").await.expect("schema");
    assert!(schema.version > 1, "the schema evolved over the batches");

    let by_uuid: HashMap<String, &Value> = events
        .iter()
        .map(|e| (e["event_uuid"].as_str().expect("uuid").to_string(), e))
        .collect();
    let mut seen = 0;
    for batch in batches(&sink) {
        let uuids = batch
            .column_by_name("event_uuid")
            .expect("uuid")
            .as_string::<i32>()
            .clone();
        for i in 0..batch.num_rows() {
            let sent = by_uuid[uuids.value(i)];
            for field in ["amount", "id", "meta", "flag"] {
                // exactly one column of the field holds the value, the others are null
                let held: Vec<Value> = schema
                    .columns
                    .iter()
                    .filter(|c| c.field == field)
                    .filter_map(|c| {
                        batch
                            .column_by_name(&c.name)
                            .and_then(|col| cell(col.as_ref(), c.kind, i))
                    })
                    .collect();
                match sent.get(field) {
                    None | Some(Value::Null) => assert!(held.is_empty(), "{field}: {held:?}"),
                    Some(v) => {
                        assert_eq!(held.len(), 1, "{field} of {}: {held:?}", uuids.value(i));
                        assert!(
                            same_value(&held[0], v),
                            "{field}: sent {v}, kept {}",
                            held[0]
                        );
                    }
                }
            }
            seen += 1;
        }
    }
    assert_eq!(seen, events.len());
}

#[tokio::test]
async fn every_file_of_the_lake_agrees_on_every_column_type() {
    let mut rng = Rng(42);
    let events: Vec<Value> = (0..2000).map(|n| event(&mut rng, n)).collect();
    let (store, sink) = (MemStore::default(), MemSink::default());
    let cfg = PipelineConfig::default();
    for (b, chunk) in events.chunks(100).enumerate() {
        run_batch(
            &records(chunk, (b * 100) as u64),
            &store,
            &sink,
            &cfg,
            now(),
        )
        .await;
    }
    let mut types: BTreeMap<String, DataType> = BTreeMap::new();
    for batch in batches(&sink) {
        for f in batch.schema().fields() {
            let prev = types
                .entry(f.name().clone())
                .or_insert_with(|| f.data_type().clone());
            assert_eq!(
                prev,
                f.data_type(),
                "column {} changes type between files",
                f.name()
            );
        }
    }
    assert!(types.len() > 8);
}

#[tokio::test]
async fn concurrent_writers_with_conflicting_first_types_converge() {
    let sink = MemSink::default();
    let store = MemStore::default();
    // two writers (two Lambda invocations) whose caches both hold the empty
    // schema; each first sees `amount` with a different kind
    let holding_empty = || PipelineConfig {
        schema_cache: SchemaCache::holding(LakeSchema::default()),
        ..PipelineConfig::default()
    };
    let (a, b) = (holding_empty(), holding_empty());
    let ints = records(
        &[json!({"event_uuid":"a1","event_name":"pay:order","created_at":1710633600,"amount":5})],
        1,
    );
    let doubles = records(
        &[json!({"event_uuid":"b1","event_name":"pay:order","created_at":1710633600,"amount":2.5})],
        2,
    );
    let (oa, ob) = tokio::join!(
        run_batch(&ints, &store, &sink, &a, now()),
        run_batch(&doubles, &store, &sink, &b, now())
    );
    assert_eq!((oa.counts.written, ob.counts.written), (1, 1));
    let schema: LakeSchema = load_latest(&sink, "").await.expect("schema");
    assert_eq!(
        schema.version, 2,
        "one writer's version 1 lost and was planned again"
    );
    let base = schema.base("amount").expect("one base column");
    let other = if base.kind == Kind::Int {
        Kind::Double
    } else {
        Kind::Int
    };
    if other == Kind::Double {
        assert!(
            schema.variant("amount", Kind::Double).is_some(),
            "the loser's doubles got a variant"
        );
    }
    // both values are in the lake, in the column the schema routes them to
    let mut found = Vec::new();
    for batch in batches(&sink) {
        for c in schema.columns.iter().filter(|c| c.field == "amount") {
            if let Some(col) = batch.column_by_name(&c.name) {
                for i in 0..batch.num_rows() {
                    if let Some(v) = cell(col.as_ref(), c.kind, i) {
                        found.push(v.as_f64().expect("number"));
                    }
                }
            }
        }
    }
    found.sort_by(f64::total_cmp);
    assert_eq!(found, [2.5, 5.0]);
}
