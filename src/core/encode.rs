//! Encode: the events of one partition into one Parquet file, in memory.
//!
//! Columns: `event_uuid`, `event_name`, `created_at` (double), `created_datetime`,
//! then every top-level payload field, typed. The partition columns are not
//! repeated inside the file (Hive/Spark convention).
//!
//! Typing rules (per file):
//! - JSON booleans, integers that fit 64 bits, other numbers, and strings map
//!   to BOOLEAN, INT64, DOUBLE and STRING columns.
//! - Objects, arrays and integers beyond 64 bits are kept as JSON text, exactly
//!   as sent (every digit, every key) in a STRING column.
//! - A field's column takes its most frequent kind in the file (ties go to the
//!   narrower kind); a field that holds integers and other numbers becomes
//!   DOUBLE (integers above 2^53 in magnitude then go to a variant column).
//! - A value that does not fit its field's column goes, as sent, to a variant
//!   column beside it, `<field>__v_<kind>` (kind: bool, int, double, string,
//!   json), so no value is ever truncated, rounded or nulled.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde_json::value::RawValue;

use crate::core::enrich::Event;

/// Failure to build or encode a file. It is a bug or resource limit, never bad
/// input: every input value has a column it fits.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Arrow refused the columns.
    #[error("building the Arrow batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The Parquet writer failed.
    #[error("writing Parquet failed: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// The kind of one payload value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// true / false
    Bool,
    /// An integer that fits in i64.
    Int,
    /// Any other finite number.
    Double,
    /// A JSON string.
    String,
    /// An object, array, or an integer beyond 64 bits: kept as JSON text.
    Json,
}

impl Kind {
    /// The suffix of a variant column of this kind.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Double => "double",
            Kind::String => "string",
            Kind::Json => "json",
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Double => DataType::Float64,
            Kind::String | Kind::Json => DataType::Utf8,
        }
    }
}

/// One classified payload value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// JSON null.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// Another finite number.
    Double(f64),
    /// A string, unescaped.
    String(Cow<'a, str>),
    /// JSON text as sent.
    Json(&'a str),
}

impl Cell<'_> {
    /// The kind, or `None` for null.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Cell::Null => None,
            Cell::Bool(_) => Some(Kind::Bool),
            Cell::Int(_) => Some(Kind::Int),
            Cell::Double(_) => Some(Kind::Double),
            Cell::String(_) => Some(Kind::String),
            Cell::Json(_) => Some(Kind::Json),
        }
    }
}

/// Largest integer magnitude a double holds exactly.
const EXACT_IN_DOUBLE: i64 = 1 << 53;

/// Classifies one raw JSON value.
pub fn classify(raw: &RawValue) -> Cell<'_> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Cell::Null,
        Some(b't') => Cell::Bool(true),
        Some(b'f') => Cell::Bool(false),
        Some(b'"') => {
            let inner = &text[1..text.len() - 1];
            if inner.contains('\\') {
                match serde_json::from_str::<String>(text) {
                    Ok(s) => Cell::String(Cow::Owned(s)),
                    // cannot happen for a RawValue; keep the text rather than lose it
                    Err(_) => Cell::Json(text),
                }
            } else {
                Cell::String(Cow::Borrowed(inner))
            }
        }
        Some(b'{' | b'[') => Cell::Json(text),
        _ => {
            let integer = !text.contains(['.', 'e', 'E']);
            if integer {
                match text.parse::<i64>() {
                    Ok(i) => Cell::Int(i),
                    Err(_) => Cell::Json(text),
                }
            } else {
                match text.parse::<f64>() {
                    Ok(f) if f.is_finite() => Cell::Double(f),
                    _ => Cell::Json(text),
                }
            }
        }
    }
}

/// Options of the Parquet writer.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// Compression codec and level.
    pub compression: Compression,
    /// Rows per row group.
    pub max_row_group_rows: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            compression: Compression::ZSTD(ZstdLevel::default()),
            max_row_group_rows: 128 * 1024,
        }
    }
}

struct Column {
    name: String,
    kind: Kind,
    builder: Builder,
    filled: usize,
}

enum Builder {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Double(Float64Builder),
    Str(StringBuilder),
}

impl Builder {
    fn new(kind: Kind, cap: usize) -> Builder {
        match kind {
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(cap)),
            Kind::Int => Builder::Int(Int64Builder::with_capacity(cap)),
            Kind::Double => Builder::Double(Float64Builder::with_capacity(cap)),
            Kind::String | Kind::Json => Builder::Str(StringBuilder::with_capacity(cap, cap * 16)),
        }
    }

    fn append_nulls(&mut self, n: usize) {
        match self {
            Builder::Bool(b) => b.append_nulls(n),
            Builder::Int(b) => b.append_nulls(n),
            Builder::Double(b) => b.append_nulls(n),
            Builder::Str(b) => b.append_nulls(n),
        }
    }

    /// Appends a cell already known to fit this builder's column.
    fn append(&mut self, cell: &Cell<'_>) {
        match (self, cell) {
            (Builder::Bool(b), Cell::Bool(v)) => b.append_value(*v),
            (Builder::Int(b), Cell::Int(v)) => b.append_value(*v),
            (Builder::Double(b), Cell::Double(v)) => b.append_value(*v),
            (Builder::Double(b), Cell::Int(v)) => b.append_value(*v as f64),
            (Builder::Str(b), Cell::String(v)) => b.append_value(v),
            (Builder::Str(b), Cell::Json(v)) => b.append_value(v),
            (b, _) => b.append_nulls(1),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Double(b) => Arc::new(b.finish()),
            Builder::Str(b) => Arc::new(b.finish()),
        }
    }
}

/// Whether a value of kind `v` is stored in a column of kind `col`.
fn fits(col: Kind, cell: &Cell<'_>) -> bool {
    match (col, cell) {
        (Kind::Double, Cell::Int(i)) => i.unsigned_abs() <= EXACT_IN_DOUBLE as u64,
        (k, c) => c.kind() == Some(k),
    }
}

/// Decides each payload field's base kind from the file's values, whatever
/// their order: DOUBLE when the field holds both integers and doubles, else
/// its most frequent kind (ties go to the narrower kind: bool, int, double,
/// string, json), STRING when it is always null.
fn base_kinds<'a>(rows: &[Vec<(&'a str, Cell<'a>)>]) -> (Vec<&'a str>, HashMap<&'a str, Kind>) {
    const KINDS: [Kind; 5] = [
        Kind::Bool,
        Kind::Int,
        Kind::Double,
        Kind::String,
        Kind::Json,
    ];
    let mut order = Vec::new();
    let mut counts: HashMap<&str, [usize; 5]> = HashMap::new();
    for row in rows {
        for (name, cell) in row {
            let entry = counts.entry(name).or_insert_with(|| {
                order.push(*name);
                [0; 5]
            });
            if let Some(k) = cell.kind() {
                entry[KINDS.iter().position(|x| *x == k).unwrap_or(4)] += 1;
            }
        }
    }
    let resolved = counts
        .into_iter()
        .map(|(name, c)| {
            let (int, double) = (c[1], c[2]);
            let base = if int > 0 && double > 0 {
                Kind::Double
            } else {
                // max_by_key keeps the last maximum: scan from widest to narrowest
                KINDS
                    .iter()
                    .zip(c)
                    .rev()
                    .filter(|(_, n)| *n > 0)
                    .max_by_key(|(_, n)| *n)
                    .map_or(Kind::String, |(k, _)| *k)
            };
            (name, base)
        })
        .collect();
    (order, resolved)
}

/// Encodes the events of one partition into Parquet bytes.
pub fn encode(events: &[&Event<'_>], opts: &EncodeOptions) -> Result<Vec<u8>, EncodeError> {
    let n = events.len();
    let rows: Vec<Vec<(&str, Cell<'_>)>> = events
        .iter()
        .map(|e| {
            e.payload
                .iter()
                .map(|(name, raw)| (name.as_str(), classify(raw)))
                .collect()
        })
        .collect();
    let (order, base) = base_kinds(&rows);

    let mut uuid = StringBuilder::with_capacity(n, n * 36);
    let mut name = StringBuilder::with_capacity(n, n * 24);
    let mut created_at = Float64Builder::with_capacity(n);
    let mut created_dt = StringBuilder::with_capacity(n, n * 24);
    for e in events {
        uuid.append_value(&e.event_uuid);
        name.append_value(&e.event_name);
        created_at.append_value(e.created_at);
        created_dt.append_value(&e.created_datetime);
    }

    // Columns in first-seen order; a variant column is created on first need.
    let mut columns: Vec<Column> = Vec::with_capacity(order.len());
    let mut index: HashMap<(&str, Kind), usize> = HashMap::with_capacity(order.len());
    for field in &order {
        let kind = base[field];
        index.insert((field, kind), columns.len());
        columns.push(Column {
            name: (*field).to_string(),
            kind,
            builder: Builder::new(kind, n),
            filled: 0,
        });
    }
    for (r, row) in rows.iter().enumerate() {
        for (field, cell) in row {
            let Some(kind) = cell.kind() else { continue };
            let col_kind = if fits(base[field], cell) {
                base[field]
            } else {
                kind
            };
            let idx = *index.entry((field, col_kind)).or_insert_with(|| {
                columns.push(Column {
                    name: format!("{field}__v_{}", col_kind.name()),
                    kind: col_kind,
                    builder: Builder::new(col_kind, n),
                    filled: 0,
                });
                columns.len() - 1
            });
            let col = &mut columns[idx];
            if col.filled > r {
                // the same field twice in one row cannot happen (keys are unique)
                continue;
            }
            col.builder.append_nulls(r - col.filled);
            col.builder.append(cell);
            col.filled = r + 1;
        }
    }

    let mut fields = vec![
        Field::new("event_uuid", DataType::Utf8, false),
        Field::new("event_name", DataType::Utf8, false),
        Field::new("created_at", DataType::Float64, false),
        Field::new("created_datetime", DataType::Utf8, false),
    ];
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(uuid.finish()),
        Arc::new(name.finish()),
        Arc::new(created_at.finish()),
        Arc::new(created_dt.finish()),
    ];
    let mut taken: std::collections::HashSet<String> =
        fields.iter().map(|f| f.name().clone()).collect();
    for mut col in columns {
        col.builder.append_nulls(n - col.filled);
        let mut col_name = col.name;
        while !taken.insert(col_name.clone()) {
            // a payload field literally named like a variant column: keep both
            col_name.push('_');
        }
        fields.push(Field::new(col_name, col.kind.data_type(), true));
        arrays.push(col.builder.finish());
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;

    let props = WriterProperties::builder()
        .set_compression(opts.compression)
        .set_max_row_group_row_count(Some(opts.max_row_group_rows))
        .set_created_by(format!("kinesis-lake {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "kinesis_lake.format".to_string(),
            "1".to_string(),
        )]))
        .build();
    let mut out = Vec::with_capacity(n * 256);
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::enrich::enrich;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn read(bytes: Vec<u8>) -> RecordBatch {
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
            .expect("parquet footer")
            .build()
            .expect("reader");
        let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
        arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat")
    }

    fn encode_lines(lines: &[&str]) -> RecordBatch {
        let events: Vec<Event<'_>> = lines
            .iter()
            .map(|l| enrich(l.as_bytes()).expect("valid"))
            .collect();
        let refs: Vec<&Event<'_>> = events.iter().collect();
        read(encode(&refs, &EncodeOptions::default()).expect("encode"))
    }

    fn ev(payload: &str) -> String {
        format!(r#"{{"event_uuid":"u","event_name":"a:b","created_at":1710670530{payload}}}"#)
    }

    #[test]
    fn fixed_columns_come_first_and_partition_columns_are_absent() {
        let b = encode_lines(&[&ev(r#","x":1"#)]);
        let names: Vec<_> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "event_uuid",
                "event_name",
                "created_at",
                "created_datetime",
                "x"
            ]
        );
        assert_eq!(b.column(2).data_type(), &DataType::Float64);
    }

    #[test]
    fn scalar_types_map_to_typed_columns() {
        let b = encode_lines(&[&ev(
            r#","i":-5,"f":1.5,"s":"h\u00e9","t":true,"o":{"k":[1,2]},"l":[1]"#,
        )]);
        let s = b.schema();
        let ty = |n: &str| s.field_with_name(n).expect(n).data_type().clone();
        assert_eq!(ty("i"), DataType::Int64);
        assert_eq!(ty("f"), DataType::Float64);
        assert_eq!(ty("s"), DataType::Utf8);
        assert_eq!(ty("t"), DataType::Boolean);
        assert_eq!(ty("o"), DataType::Utf8);
        let col = |n: &str| b.column_by_name(n).expect(n).clone();
        assert_eq!(col("s").as_string::<i32>().value(0), "hé");
        assert_eq!(col("o").as_string::<i32>().value(0), r#"{"k":[1,2]}"#);
        assert_eq!(col("l").as_string::<i32>().value(0), "[1]");
    }

    #[test]
    fn mixed_int_and_double_become_double_without_losing_big_ints() {
        let b = encode_lines(&[
            &ev(r#","amount":3"#),
            &ev(r#","amount":1.5"#),
            &ev(r#","amount":9007199254740993"#),
        ]);
        let a = b.column_by_name("amount").expect("amount");
        let a = a.as_primitive::<Float64Type>();
        assert_eq!(a.value(0), 3.0);
        assert_eq!(a.value(1), 1.5);
        assert!(a.is_null(2));
        let v = b.column_by_name("amount__v_int").expect("variant");
        assert_eq!(v.as_primitive::<Int64Type>().value(2), 9007199254740993);
    }

    #[test]
    fn the_base_kind_does_not_depend_on_row_order() {
        let rows = [ev(r#","n":"x""#), ev(r#","n":2"#), ev(r#","n":3"#)];
        let mut refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let b = encode_lines(&refs);
        refs.reverse();
        let r = encode_lines(&refs);
        assert_eq!(b.schema(), r.schema());
        assert_eq!(
            b.schema().field_with_name("n").expect("n").data_type(),
            &DataType::Int64
        );
        assert!(b.column_by_name("n__v_string").is_some());
    }

    #[test]
    fn conflicting_values_go_to_variant_columns_as_sent() {
        let b = encode_lines(&[
            &ev(r#","n":1"#),
            &ev(r#","n":2"#),
            &ev(r#","n":"12""#),
            &ev(r#","n":{"a":1}"#),
            &ev(r#","n":123456789012345678901234567890"#),
            &ev(r#","n":null"#),
        ]);
        let n = b
            .column_by_name("n")
            .expect("n")
            .as_primitive::<Int64Type>()
            .clone();
        assert_eq!((n.value(0), n.value(1)), (1, 2));
        assert!(n.is_null(2) && n.is_null(3) && n.is_null(4) && n.is_null(5));
        let s = b.column_by_name("n__v_string").expect("string variant");
        assert_eq!(s.as_string::<i32>().value(2), "12");
        let j = b.column_by_name("n__v_json").expect("json variant");
        let j = j.as_string::<i32>();
        assert_eq!(j.value(3), r#"{"a":1}"#);
        assert_eq!(j.value(4), "123456789012345678901234567890");
        assert!(j.is_null(0) && j.is_null(5));
    }

    #[test]
    fn missing_fields_are_null_and_rows_stay_aligned() {
        let b = encode_lines(&[&ev(r#","a":1"#), &ev(r#","b":2"#), &ev(r#","a":3,"b":4"#)]);
        assert_eq!(b.num_rows(), 3);
        let a = b
            .column_by_name("a")
            .expect("a")
            .as_primitive::<Int64Type>()
            .clone();
        let bb = b
            .column_by_name("b")
            .expect("b")
            .as_primitive::<Int64Type>()
            .clone();
        assert_eq!((a.value(0), a.is_null(1), a.value(2)), (1, true, 3));
        assert_eq!((bb.is_null(0), bb.value(1), bb.value(2)), (true, 2, 4));
    }

    #[test]
    fn a_field_named_like_a_variant_column_does_not_collide() {
        let b = encode_lines(&[&ev(r#","x":1,"x__v_string":"lit""#), &ev(r#","x":"s""#)]);
        let names: Vec<_> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert!(names.contains(&"x__v_string".to_string()));
        assert!(names.contains(&"x__v_string_".to_string()));
        assert_eq!(names.len(), 7);
    }
}
