//! The straightforward version of the in-process pipeline, for calibration
//! only: what issue 5 calls "a straightforward serde_json + arrow version"
//! (said to reach about half of the 250,000 events/s target). Every record is
//! parsed into a `serde_json::Map`, enriched in place, deduplicated by uuid
//! and grouped by partition; each group becomes one Arrow `RecordBatch`
//! (builders, a column type per field from its first value) written by the
//! parquet crate's `ArrowWriter` with zstd(1), as our files are. Timing it in
//! the same rounds as `run_batch` gives the ratio on the machine at hand,
//! whatever its speed.
//!
//! It is not a second implementation of the lake: no variant columns, no
//! dead-letter files, no schema registry; a value that does not fit its
//! column's type is written as null.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::{DateTime, SecondsFormat};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};

use kinesis_lake::RawRecord;
use kinesis_lake::core::decode::decode;

/// What a run did: files written, their bytes, events in them, records rejected.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub files: usize,
    pub bytes: usize,
    pub events: usize,
    pub rejected: usize,
}

/// One partition: event type, subtype, UTC date.
type Partition = (String, Option<String>, String);

/// The whole job on one batch, on the calling thread.
pub fn run(records: &[RawRecord]) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut groups: BTreeMap<Partition, Vec<Map<String, Value>>> = BTreeMap::new();
    for r in records {
        let Some((partition, event)) = enrich(r) else {
            out.rejected += 1;
            continue;
        };
        let uuid = event
            .get("event_uuid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if seen.insert(uuid.to_string()) {
            groups.entry(partition).or_default().push(event);
        }
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .build();
    for events in groups.values() {
        let batch = to_batch(events)?;
        let mut file = Vec::new();
        let mut w = ArrowWriter::try_new(&mut file, batch.schema(), Some(props.clone()))?;
        w.write(&batch)?;
        w.close()?;
        out.files += 1;
        out.bytes += file.len();
        out.events += events.len();
    }
    Ok(out)
}

/// Parses and validates one record and adds `created_datetime`; `None` when
/// it cannot be used.
fn enrich(r: &RawRecord) -> Option<(Partition, Map<String, Value>)> {
    let bytes = decode(&r.data).ok()?;
    let mut event: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    event
        .get("event_uuid")?
        .as_str()
        .filter(|u| !u.is_empty())?;
    let name = event.get("event_name")?.as_str()?.to_string();
    let created_at = event.get("created_at")?.as_f64()?;
    let secs = created_at.floor();
    let nanos = ((created_at - secs) * 1e9).round().min(999_999_999.0) as u32;
    let time = DateTime::from_timestamp(secs as i64, nanos)?;
    let mut parts = name.split(':');
    let event_type = parts.next().filter(|t| !t.is_empty())?.to_string();
    let event_subtype = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
    event.insert(
        "created_datetime".into(),
        Value::String(time.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    );
    let date = time.date_naive().format("%Y-%m-%d").to_string();
    Some(((event_type, event_subtype, date), event))
}

/// One Arrow batch of a partition's events: the fixed columns first, then
/// every other field in the order first seen; a field's type is its first
/// value's (objects and arrays as JSON text).
fn to_batch(events: &[Map<String, Value>]) -> anyhow::Result<RecordBatch> {
    let mut fields: Vec<(String, DataType)> = vec![
        ("event_uuid".into(), DataType::Utf8),
        ("event_name".into(), DataType::Utf8),
        ("created_at".into(), DataType::Float64),
        ("created_datetime".into(), DataType::Utf8),
    ];
    let mut index: HashMap<String, usize> = fields
        .iter()
        .enumerate()
        .map(|(i, (f, _))| (f.clone(), i))
        .collect();
    for e in events {
        for (k, v) in e {
            if v.is_null() || index.contains_key(k) {
                continue;
            }
            let ty = match v {
                Value::Bool(_) => DataType::Boolean,
                Value::Number(n) if n.is_i64() => DataType::Int64,
                Value::Number(_) => DataType::Float64,
                _ => DataType::Utf8,
            };
            index.insert(k.clone(), fields.len());
            fields.push((k.clone(), ty));
        }
    }
    let columns: Vec<ArrayRef> = fields
        .iter()
        .map(|(name, ty)| column(events, name, ty))
        .collect();
    let schema = Schema::new(
        fields
            .into_iter()
            .map(|(name, ty)| Field::new(name, ty, true))
            .collect::<Vec<_>>(),
    );
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

fn column(events: &[Map<String, Value>], name: &str, ty: &DataType) -> ArrayRef {
    let values = events.iter().map(|e| e.get(name));
    match ty {
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(events.len());
            values.for_each(|v| b.append_option(v.and_then(Value::as_bool)));
            Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(events.len());
            values.for_each(|v| b.append_option(v.and_then(Value::as_i64)));
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::with_capacity(events.len());
            values.for_each(|v| b.append_option(v.and_then(Value::as_f64)));
            Arc::new(b.finish())
        }
        _ => {
            let mut b = StringBuilder::with_capacity(events.len(), events.len() * 16);
            for v in values {
                match v {
                    Some(Value::String(s)) => b.append_value(s),
                    Some(v @ (Value::Object(_) | Value::Array(_))) => b.append_value(v.to_string()),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
    }
}
