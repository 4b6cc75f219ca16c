//! Encode: the events of one partition into one Parquet file, in memory.
//!
//! Columns: `event_uuid`, `event_name`, `created_at` (double), `created_datetime`,
//! then the columns the committed [`LakeSchema`] lists for the event's table,
//! each value routed by the schema's rules (base column or variant column; see
//! `core::schema`). The partition columns are not repeated inside the file
//! (Hive/Spark convention). The file records the schema version it was written
//! against in its key-value metadata (`kinesis_lake.schema_version`).

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt as _};

use crate::core::columns::{FIXED_COLUMN_NAMES, PAYLOAD_JSON_COLUMN};
use crate::core::enrich::Event;
use crate::core::parallel::map_parallel;
use crate::core::parquet_file::{
    Codec, Column, ColumnSpec, ColumnStats, ColumnType, CompressError, FileWriter,
};
use crate::core::schema::{BatchStats, FieldStats, LakeSchema, fits, table_name};
use crate::core::value::{Cell, Kind, classify, kind_of};

/// Failure to build or encode a file. It is a bug or resource limit, never bad
/// input: every input value has a column it fits.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A page could not be compressed.
    #[error(transparent)]
    Compress(#[from] CompressError),
    /// The schema has no column for a value (the schema was not planned for
    /// this batch: a bug, reported rather than dropping the value).
    #[error("schema version {version} has no column for field `{field}` ({kind:?} value)")]
    Unrouted {
        /// The schema version.
        version: u64,
        /// The field.
        field: String,
        /// The value's kind.
        kind: Kind,
    },
}

/// Options of the Parquet writer.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// Compression of the data pages (a column whose first page does not get
    /// smaller is stored uncompressed).
    pub compression: Codec,
    /// Rows per row group.
    pub max_row_group_rows: usize,
    /// Also keep each event's JSON exactly as received in a `payload_json`
    /// column (lossless replay and debugging, at a size cost: BENCHMARKS.md).
    pub payload_json: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            // level 1: the smallest files at the least time of the levels;
            // `Codec::AUTO` is faster on small files for more bytes (BENCHMARKS.md)
            compression: Codec::Zstd(1),
            max_row_group_rows: 128 * 1024,
            payload_json: false,
        }
    }
}

/// The field statistics of every table, from each partition's events (all
/// of one partition, so of one table), counted on every core when
/// `parallel`; the counts do not depend on how the work was shared.
pub fn batch_stats(partitions: &[&[&Event<'_>]], parallel: bool) -> BatchStats {
    let counted = map_parallel(partitions, parallel, |events| {
        let mut fields = BTreeMap::new();
        add_table_stats(events.iter().copied(), &mut fields);
        let table = events.first().map(|e| {
            table_name(
                &e.partition.event_type,
                e.partition.event_subtype.as_deref(),
            )
        });
        (table, fields)
    });
    let mut stats = BatchStats::new();
    for (table, fields) in counted {
        let Some(table) = table else { continue };
        merge_fields(stats.entry(table).or_default(), fields);
    }
    stats
}

/// Merges fields' counts into a table's statistics.
fn merge_fields<K: AsRef<str> + Into<String>>(
    table: &mut BTreeMap<String, FieldStats>,
    fields: impl IntoIterator<Item = (K, FieldStats)>,
) {
    for (field, s) in fields {
        match table.get_mut(field.as_ref()) {
            Some(t) => t.merge(&s),
            None => {
                table.insert(field.into(), s);
            }
        }
    }
}

/// Adds the payload values of many events of one table to its field
/// statistics: counted in a hash map by borrowed field name first, then
/// merged. Only each value's kind is taken ([`kind_of`]); the values are
/// parsed once, by [`encode`].
pub fn add_table_stats<'r, 'a: 'r>(
    events: impl IntoIterator<Item = &'r Event<'a>>,
    stats: &mut BTreeMap<String, FieldStats>,
) {
    // Events of one table mostly list the same fields in the same order: the
    // slot of the field at each position in the previous event is tried
    // first (one string comparison), the hash map only when it differs.
    let mut fields: Vec<(&str, FieldStats)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut by_position: Vec<usize> = Vec::new();
    for event in events {
        for (k, (field, raw)) in event.payload.iter().enumerate() {
            let field: &str = field;
            let slot = match by_position.get(k) {
                Some(&i) if fields[i].0 == field => i,
                _ => {
                    let i = *index.entry(field).or_insert_with(|| {
                        fields.push((field, FieldStats::default()));
                        fields.len() - 1
                    });
                    if k < by_position.len() {
                        by_position[k] = i;
                    } else {
                        by_position.push(i);
                    }
                    i
                }
            };
            let (kind, big_int) = kind_of(raw);
            fields[slot].1.add_kind(kind, big_int);
        }
    }
    merge_fields(stats, fields);
}

/// The Parquet type of a column of this kind.
pub(crate) fn column_type(kind: Kind) -> ColumnType {
    match kind {
        Kind::Bool => ColumnType::Bool,
        Kind::Int => ColumnType::Int64,
        Kind::Double => ColumnType::Double,
        Kind::String | Kind::Json => ColumnType::String,
    }
}

/// Appends a cell the schema routed to this column.
fn push_cell(col: &mut Column, cell: &Cell<'_>) {
    match (col.column_type(), cell) {
        (ColumnType::Bool, Cell::Bool(v)) => col.push_bool(*v),
        (ColumnType::Int64, Cell::Int(v)) => col.push_i64(*v),
        (ColumnType::Double, Cell::Double(v)) => col.push_f64(*v),
        // routing only sends integers a double holds exactly here
        (ColumnType::Double, Cell::Int(v)) => col.push_f64(*v as f64),
        (ColumnType::String, Cell::String(v)) => col.push_str(v),
        (ColumnType::String, Cell::Json(v)) => col.push_str(v),
        _ => col.push_nulls(1),
    }
}

/// Encodes the events of one table's partition into a Parquet file, with the
/// table's columns of a committed schema that holds every value. Each payload
/// value is parsed here, once, as it goes into its column.
pub fn encode_file(
    rows: &[&Event<'_>],
    schema: &LakeSchema,
    table: &str,
    opts: &EncodeOptions,
) -> Result<EncodedFile, EncodeError> {
    let defs = schema.table_columns(table);
    // this table's routes: field -> base slot, (field, kind) -> variant slot
    let mut base_slot: HashMap<&str, (usize, Kind)> = HashMap::with_capacity(defs.len());
    let mut variant_slot: HashMap<(&str, Kind), usize> = HashMap::new();
    for (i, c) in defs.iter().enumerate() {
        if c.variant {
            variant_slot.insert((c.field.as_str(), c.kind), i);
        } else {
            base_slot.insert(c.field.as_str(), (i, c.kind));
        }
    }

    // the fixed columns (string bytes per row guessed from their usual size),
    // the optional raw JSON, then the table's payload columns
    let required = |name: &str, ty, bytes_per_row| ColumnSpec {
        name: name.to_string(),
        ty,
        required: true,
        bytes_per_row,
    };
    let [uuid, name, created_at, created_datetime] = FIXED_COLUMN_NAMES;
    let mut specs = vec![
        required(uuid, ColumnType::String, 36),
        required(name, ColumnType::String, 24),
        required(created_at, ColumnType::Double, 0),
        required(created_datetime, ColumnType::String, 24),
    ];
    if opts.payload_json {
        let avg = rows.iter().map(|r| r.json.len()).sum::<usize>() / rows.len().max(1);
        specs.push(required(PAYLOAD_JSON_COLUMN, ColumnType::String, avg));
    }
    let first_payload = specs.len();
    specs.extend(defs.iter().map(|d| ColumnSpec {
        name: d.name.clone(),
        ty: column_type(d.kind),
        required: false,
        bytes_per_row: 0,
    }));
    let mut file = FileWriter::new(opts.compression, specs);

    for rows in rows.chunks(opts.max_row_group_rows.max(1)) {
        let n = rows.len();
        let mut cols = file.new_columns(n);
        let (fixed, payload) = cols.split_at_mut(first_payload);
        for r in rows {
            fixed[0].push_str(&r.event_uuid);
            fixed[1].push_str(&r.event_name);
            fixed[2].push_f64(r.created_at);
            fixed[3].push_str(&r.created_datetime);
            if let Some(raw) = fixed.get_mut(4) {
                raw.push_str(&String::from_utf8_lossy(r.json));
            }
        }

        // the route of the field at each position in the previous row: rows
        // of one table mostly repeat their fields in the same order and kinds
        let mut by_position: Vec<Option<(&str, Kind, usize)>> = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            for (k, (field, raw)) in row.payload.iter().enumerate() {
                let field: &str = field;
                let cell = classify(raw);
                let Some(kind) = cell.kind() else { continue };
                let slot = match by_position.get(k) {
                    Some(&Some((f, kd, slot))) if kd == kind && f == field => slot,
                    _ => {
                        // the same rule as LakeSchema::route, over this table's columns
                        let base = base_slot.get(field).copied();
                        let slot = match base {
                            Some((slot, base)) if fits(base, &cell) => Some(slot),
                            _ => variant_slot.get(&(field, kind)).copied(),
                        };
                        // an int goes to a double base only when small enough:
                        // that route depends on the value, not just the kind
                        let cacheable =
                            !(kind == Kind::Int && matches!(base, Some((_, Kind::Double))));
                        let Some(slot) = slot else {
                            return Err(EncodeError::Unrouted {
                                version: schema.version,
                                field: field.to_string(),
                                kind,
                            });
                        };
                        if by_position.len() <= k {
                            by_position.resize(k + 1, None);
                        }
                        by_position[k] = cacheable.then_some((field, kind, slot));
                        slot
                    }
                };
                // nulls are added lazily, when a column's next value comes
                let col = &mut payload[slot];
                if col.len() > r {
                    // a field twice in one row cannot happen (keys are unique)
                    continue;
                }
                col.push_nulls(r - col.len());
                push_cell(col, &cell);
            }
        }
        for col in payload.iter_mut() {
            col.push_nulls(n - col.len());
        }
        file.write_row_group(&cols)?;
    }

    let version = schema.version.to_string();
    let columns = file.column_stats();
    let bytes = file.finish(
        concat!("kinesis-lake version ", env!("CARGO_PKG_VERSION")),
        &[
            ("kinesis_lake.format", "1"),
            ("kinesis_lake.schema_version", &version),
        ],
    );
    Ok(EncodedFile { bytes, columns })
}

/// A data file's bytes and its columns' statistics.
#[derive(Debug)]
pub struct EncodedFile {
    /// The Parquet file.
    pub bytes: Vec<u8>,
    /// Each column's statistics, in file order.
    pub columns: Vec<ColumnStats>,
}

/// Encodes one table's events as a Parquet file (see [`encode_file`]).
pub fn encode(
    rows: &[&Event<'_>],
    schema: &LakeSchema,
    table: &str,
    opts: &EncodeOptions,
) -> Result<Vec<u8>, EncodeError> {
    encode_file(rows, schema, table, opts).map(|f| f.bytes)
}

/// Test helper: the stats of events as one table's batch.
#[cfg(test)]
pub(crate) fn stats_of(rows: &[&Event<'_>], table: &str) -> crate::core::schema::BatchStats {
    let mut s = crate::core::schema::BatchStats::new();
    add_table_stats(
        rows.iter().copied(),
        s.entry(table.to_string()).or_default(),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::enrich::{CreatedAtUnit, enrich};
    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::datatypes::{DataType, Float64Type, Int64Type};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn read(bytes: Vec<u8>) -> RecordBatch {
        crate::core::parquet_file::tests::read(&bytes)
    }

    /// Plans a schema from the lines (from `base`) and encodes them with it.
    fn encode_with(base: &LakeSchema, lines: &[&str]) -> (RecordBatch, LakeSchema) {
        let events: Vec<Event<'_>> = lines
            .iter()
            .map(|l| enrich(l.as_bytes(), CreatedAtUnit::S).expect("valid"))
            .collect();
        let rows: Vec<&Event<'_>> = events.iter().collect();
        let schema = base
            .plan(&stats_of(&rows, "t"))
            .unwrap_or_else(|| base.clone());
        let bytes = encode(&rows, &schema, "t", &EncodeOptions::default()).expect("encode");
        (read(bytes), schema)
    }

    fn encode_lines(lines: &[&str]) -> RecordBatch {
        encode_with(&LakeSchema::default(), lines).0
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
    fn routes_remembered_by_position_never_send_a_value_astray() {
        // same field, same position, same kind (int) but different routes:
        // small ints to the double base, big ones to the int variant
        let b = encode_lines(&[
            &ev(r#","amount":1.5,"tag":"a""#),
            &ev(r#","amount":9007199254740993,"tag":"b""#),
            &ev(r#","amount":3,"tag":"c""#),
            &ev(r#","amount":9007199254740995,"tag":"d""#),
            // fields in another order, then back
            &ev(r#","tag":"e","amount":4"#),
            &ev(r#","amount":5,"tag":"f""#),
        ]);
        let a = b.column_by_name("amount").expect("amount");
        let a = a.as_primitive::<Float64Type>();
        let v = b.column_by_name("amount__v_int").expect("variant");
        let v = v.as_primitive::<Int64Type>();
        let base: Vec<Option<f64>> = (0..6).map(|i| a.is_valid(i).then(|| a.value(i))).collect();
        let variant: Vec<Option<i64>> = (0..6).map(|i| v.is_valid(i).then(|| v.value(i))).collect();
        assert_eq!(
            base,
            [Some(1.5), None, Some(3.0), None, Some(4.0), Some(5.0)]
        );
        assert_eq!(
            variant,
            [
                None,
                Some(9007199254740993),
                None,
                Some(9007199254740995),
                None,
                None
            ]
        );
        let t = b.column_by_name("tag").expect("tag");
        let tags: Vec<&str> = (0..6).map(|i| t.as_string::<i32>().value(i)).collect();
        assert_eq!(tags, ["a", "b", "c", "d", "e", "f"]);
    }

    #[test]
    fn a_committed_int_column_never_takes_a_double() {
        let (_, v1) = encode_with(&LakeSchema::default(), &[&ev(r#","amount":3"#)]);
        let (b, v2) = encode_with(&v1, &[&ev(r#","amount":1.5"#), &ev(r#","amount":4"#)]);
        assert_eq!(v2.base("amount").map(|c| c.kind), Some(Kind::Int));
        let a = b
            .column_by_name("amount")
            .expect("amount")
            .as_primitive::<Int64Type>()
            .clone();
        assert!(a.is_null(0));
        assert_eq!(a.value(1), 4);
        let d = b.column_by_name("amount__v_double").expect("variant");
        assert_eq!(d.as_primitive::<Float64Type>().value(0), 1.5);
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
    fn payload_json_keeps_the_event_as_received_when_asked() {
        let line = ev(r#", "a" : [1, 2.50]"#);
        let events = [enrich(line.as_bytes(), CreatedAtUnit::S).expect("valid")];
        let rows: Vec<&Event<'_>> = events.iter().collect();
        let schema = LakeSchema::default()
            .plan(&stats_of(&rows, "t"))
            .expect("plan");
        let opts = EncodeOptions {
            payload_json: true,
            ..EncodeOptions::default()
        };
        let b = read(encode(&rows, &schema, "t", &opts).expect("encode"));
        let kept = b.column_by_name(PAYLOAD_JSON_COLUMN).expect("payload_json");
        assert_eq!(kept.as_string::<i32>().value(0), line);
        let plain = read(encode(&rows, &schema, "t", &EncodeOptions::default()).expect("encode"));
        assert!(plain.column_by_name(PAYLOAD_JSON_COLUMN).is_none());
    }

    #[test]
    fn the_file_records_its_schema_version() {
        let line = ev(r#","a":1"#);
        let events = [enrich(line.as_bytes(), CreatedAtUnit::S).expect("valid")];
        let rows: Vec<&Event<'_>> = events.iter().collect();
        let schema = LakeSchema::default()
            .plan(&stats_of(&rows, "t"))
            .expect("plan");
        let bytes = encode(&rows, &schema, "t", &EncodeOptions::default()).expect("encode");
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes)).expect("footer");
        let kv = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .expect("kv")
            .clone();
        assert!(
            kv.iter()
                .any(|k| k.key == "kinesis_lake.schema_version" && k.value.as_deref() == Some("1"))
        );
    }

    #[test]
    fn an_unplanned_value_is_an_error_not_a_silent_drop() {
        let line = ev(r#","a":1"#);
        let events = [enrich(line.as_bytes(), CreatedAtUnit::S).expect("valid")];
        let rows: Vec<&Event<'_>> = events.iter().collect();
        let err = encode(
            &rows,
            &LakeSchema::default(),
            "t",
            &EncodeOptions::default(),
        )
        .expect_err("no column");
        assert!(matches!(err, EncodeError::Unrouted { .. }), "{err}");
    }

    #[test]
    fn batch_stats_counts_every_table_the_same_on_every_core() {
        // two partitions of table a:b (two dates), one of c:d; field kinds vary
        let lines = [
            r#"{"event_uuid":"1","event_name":"a:b","created_at":1710670530,"x":1,"y":"s"}"#,
            r#"{"event_uuid":"2","event_name":"a:b","created_at":1710670530,"x":2.5}"#,
            r#"{"event_uuid":"3","event_name":"a:b","created_at":1710756930,"x":"t","z":true}"#,
            r#"{"event_uuid":"4","event_name":"c:d","created_at":1710670530,"x":9007199254740993}"#,
        ];
        let events: Vec<Event<'_>> = lines
            .iter()
            .map(|l| enrich(l.as_bytes(), CreatedAtUnit::S).expect("valid"))
            .collect();
        let rows: Vec<&Event<'_>> = events.iter().collect();
        let partitions: [&[&Event<'_>]; 3] = [&rows[0..2], &rows[2..3], &rows[3..4]];
        let one = batch_stats(&partitions, false);
        let many = batch_stats(&partitions, true);
        assert_eq!(one, many);
        assert_eq!(one.keys().collect::<Vec<_>>(), ["a:b", "c:d"]);
        let mut whole = stats_of(&rows[0..3], "a:b");
        whole.extend(stats_of(&rows[3..4], "c:d"));
        assert_eq!(one, whole, "the same as counting each table in one go");
        assert_eq!(one["a:b"]["x"].counts, [0, 1, 1, 1, 0]);
        assert!(one["c:d"]["x"].big_int);
    }
}
