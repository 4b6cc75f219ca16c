//! Iceberg manifests (the data files a snapshot adds, with their partition
//! and column statistics) and manifest lists (a snapshot's manifests), as
//! format version 2 stores them in Avro.

use chrono::NaiveDate;

use crate::core::iceberg::avro::{
    self, AvroError, Value, put_array, put_bool, put_bytes, put_long, put_optional,
};
use crate::core::partition::{PARTITION_COLUMNS, PartitionKey};

/// The field id of the first partition field (Iceberg's convention).
pub const FIRST_PARTITION_FIELD_ID: i32 = 1000;

/// One partition's values: the lake's partition columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionValues {
    /// `event_type`
    pub event_type: String,
    /// `event_subtype` (null when the event name has none)
    pub event_subtype: Option<String>,
    /// `event_date`, days since 1970-01-01
    pub event_date: i32,
}

impl From<&PartitionKey> for PartitionValues {
    fn from(p: &PartitionKey) -> Self {
        PartitionValues {
            event_type: p.event_type.clone(),
            event_subtype: p.event_subtype.clone(),
            event_date: days_since_epoch(p.event_date),
        }
    }
}

/// Iceberg's `date`: days since 1970-01-01.
pub fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - NaiveDate::default()).num_days() as i32
}

/// One column's metrics in a data file, by its Iceberg field id.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMetrics {
    /// The field id.
    pub id: i32,
    /// Bytes stored.
    pub bytes: u64,
    /// Values, nulls included.
    pub values: u64,
    /// Nulls.
    pub nulls: u64,
    /// Whether it is a floating-point column (NaN counts apply: always 0 here).
    pub floating: bool,
    /// Lower and upper bounds, in Iceberg's single-value serialization.
    pub bounds: Option<(Vec<u8>, Vec<u8>)>,
}

/// A data file a snapshot adds.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    /// Its full location (`s3://…`, `file://…`).
    pub path: String,
    /// Its partition.
    pub partition: PartitionValues,
    /// Rows.
    pub records: u64,
    /// Bytes.
    pub size: u64,
    /// Its columns' metrics.
    pub columns: Vec<ColumnMetrics>,
}

/// The Avro type of a `map<int, V>`: an array of key/value records.
fn int_map(name: &str, key_id: i32, value_id: i32, value: &str, field_id: i32) -> String {
    format!(
        r#"{{"name":"{name}","type":["null",{{"type":"array","logicalType":"map","items":{{"type":"record","name":"k{key_id}_v{value_id}","fields":[{{"name":"key","type":"int","field-id":{key_id}}},{{"name":"value","type":"{value}","field-id":{value_id}}}]}}}}],"default":null,"field-id":{field_id}}}"#
    )
}

/// The Avro schema of a manifest entry of our partition spec.
fn manifest_entry_schema() -> String {
    let [t, s, d] = PARTITION_COLUMNS;
    let p = FIRST_PARTITION_FIELD_ID;
    let partition = format!(
        r#"{{"type":"record","name":"r102","fields":[{{"name":"{t}","type":["null","string"],"default":null,"field-id":{p}}},{{"name":"{s}","type":["null","string"],"default":null,"field-id":{}}},{{"name":"{d}","type":["null",{{"type":"int","logicalType":"date"}}],"default":null,"field-id":{}}}]}}"#,
        p + 1,
        p + 2
    );
    let maps = [
        int_map("column_sizes", 117, 118, "long", 108),
        int_map("value_counts", 119, 120, "long", 109),
        int_map("null_value_counts", 121, 122, "long", 110),
        int_map("nan_value_counts", 138, 139, "long", 137),
        int_map("lower_bounds", 126, 127, "bytes", 125),
        int_map("upper_bounds", 129, 130, "bytes", 128),
    ]
    .join(",");
    format!(
        r#"{{"type":"record","name":"manifest_entry","fields":[{{"name":"status","type":"int","field-id":0}},{{"name":"snapshot_id","type":["null","long"],"default":null,"field-id":1}},{{"name":"sequence_number","type":["null","long"],"default":null,"field-id":3}},{{"name":"file_sequence_number","type":["null","long"],"default":null,"field-id":4}},{{"name":"data_file","type":{{"type":"record","name":"r2","fields":[{{"name":"content","type":"int","field-id":134}},{{"name":"file_path","type":"string","field-id":100}},{{"name":"file_format","type":"string","field-id":101}},{{"name":"partition","type":{partition},"field-id":102}},{{"name":"record_count","type":"long","field-id":103}},{{"name":"file_size_in_bytes","type":"long","field-id":104}},{maps},{{"name":"key_metadata","type":["null","bytes"],"default":null,"field-id":131}},{{"name":"split_offsets","type":["null",{{"type":"array","items":"long","element-id":133}}],"default":null,"field-id":132}},{{"name":"equality_ids","type":["null",{{"type":"array","items":"int","element-id":136}}],"default":null,"field-id":135}},{{"name":"sort_order_id","type":["null","int"],"default":null,"field-id":140}}]}},"field-id":2}}]}}"#
    )
}

/// Appends one `map<int, long>` of the columns that have `get`.
fn put_metric_map(
    out: &mut Vec<u8>,
    cols: &[ColumnMetrics],
    get: impl Fn(&ColumnMetrics) -> Option<u64>,
) {
    let entries: Vec<(i32, u64)> = cols
        .iter()
        .filter_map(|c| get(c).map(|v| (c.id, v)))
        .collect();
    put_optional(out, Some(&entries), |out, entries| {
        put_array(out, entries, |out, (k, v)| {
            put_long(out, i64::from(*k));
            put_long(out, *v as i64);
        });
    });
}

/// Appends one `map<int, bytes>` of bounds.
fn put_bound_map(out: &mut Vec<u8>, cols: &[ColumnMetrics], upper: bool) {
    let entries: Vec<(i32, &[u8])> = cols
        .iter()
        .filter_map(|c| {
            let (lo, hi) = c.bounds.as_ref()?;
            Some((c.id, if upper { hi.as_slice() } else { lo.as_slice() }))
        })
        .collect();
    put_optional(out, Some(&entries), |out, entries| {
        put_array(out, entries, |out, (k, v)| {
            put_long(out, i64::from(*k));
            put_bytes(out, v);
        });
    });
}

/// One manifest entry: `file`, added by `snapshot_id` (sequence numbers
/// inherited from the manifest list, so a commit retried on a newer parent
/// keeps its manifest).
fn manifest_entry(snapshot_id: i64, file: &DataFile) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + file.path.len() + 48 * file.columns.len());
    put_long(&mut out, 1); // status: ADDED
    put_optional(&mut out, Some(snapshot_id), put_long);
    put_optional(&mut out, None::<i64>, put_long);
    put_optional(&mut out, None::<i64>, put_long);
    put_long(&mut out, 0); // content: DATA
    put_bytes(&mut out, file.path.as_bytes());
    put_bytes(&mut out, b"PARQUET");
    let p = &file.partition;
    put_optional(&mut out, Some(p.event_type.as_bytes()), put_bytes);
    put_optional(
        &mut out,
        p.event_subtype.as_deref().map(str::as_bytes),
        put_bytes,
    );
    put_optional(&mut out, Some(i64::from(p.event_date)), put_long);
    put_long(&mut out, file.records as i64);
    put_long(&mut out, file.size as i64);
    let cols = &file.columns;
    put_metric_map(&mut out, cols, |c| Some(c.bytes));
    put_metric_map(&mut out, cols, |c| Some(c.values));
    put_metric_map(&mut out, cols, |c| Some(c.nulls));
    put_metric_map(&mut out, cols, |c| c.floating.then_some(0));
    put_bound_map(&mut out, cols, false);
    put_bound_map(&mut out, cols, true);
    put_optional(&mut out, None::<&[u8]>, put_bytes); // key_metadata
    put_optional(&mut out, None::<i64>, put_long); // split_offsets
    put_optional(&mut out, None::<i64>, put_long); // equality_ids
    put_optional(&mut out, None::<i64>, put_long); // sort_order_id
    out
}

/// A manifest of the data files a snapshot adds. `schema` and `spec` are the
/// table's schema and partition spec as JSON (readers take them from the
/// manifest's metadata).
pub fn manifest(
    schema: &str,
    schema_id: i64,
    spec: &str,
    snapshot_id: i64,
    files: &[DataFile],
) -> Vec<u8> {
    let records: Vec<Vec<u8>> = files
        .iter()
        .map(|f| manifest_entry(snapshot_id, f))
        .collect();
    let schema_id = schema_id.to_string();
    avro::container(
        &manifest_entry_schema(),
        &[
            ("schema", schema.as_bytes()),
            ("schema-id", schema_id.as_bytes()),
            ("partition-spec", spec.as_bytes()),
            ("partition-spec-id", b"0"),
            ("format-version", b"2"),
            ("content", b"data"),
        ],
        &records,
    )
}

/// A partition field's summary over a manifest's files.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSummary {
    /// Whether a file's value is null.
    pub contains_null: bool,
    /// Whether a value is NaN (floating-point fields only).
    pub contains_nan: Option<bool>,
    /// The least value.
    pub lower: Option<Vec<u8>>,
    /// The greatest value.
    pub upper: Option<Vec<u8>>,
}

/// One manifest of a snapshot, as its manifest list holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestFile {
    /// Its location.
    pub path: String,
    /// Its size.
    pub length: i64,
    /// The partition spec of its files.
    pub spec_id: i64,
    /// 0 data, 1 deletes.
    pub content: i64,
    /// The sequence number of the snapshot that added it.
    pub sequence_number: i64,
    /// The least data sequence number of its files.
    pub min_sequence_number: i64,
    /// The snapshot that added it.
    pub added_snapshot_id: i64,
    /// Files added, kept and deleted.
    pub files: [i64; 3],
    /// Rows added, kept and deleted.
    pub rows: [i64; 3],
    /// Per partition field.
    pub partitions: Option<Vec<FieldSummary>>,
    /// Encryption key metadata.
    pub key_metadata: Option<Vec<u8>>,
}

/// The manifest list entry of a new manifest of `files`.
pub fn manifest_file_of(
    path: String,
    length: usize,
    snapshot_id: i64,
    sequence_number: i64,
    files: &[DataFile],
) -> ManifestFile {
    let summary = |values: Vec<Option<Vec<u8>>>, date: bool| {
        let present: Vec<&Vec<u8>> = values.iter().flatten().collect();
        let order = |a: &&Vec<u8>, b: &&Vec<u8>| {
            if date {
                let day = |v: &[u8]| v.try_into().map(i32::from_le_bytes).unwrap_or(0);
                day(a).cmp(&day(b))
            } else {
                a.cmp(b)
            }
        };
        FieldSummary {
            contains_null: present.len() < values.len(),
            contains_nan: None,
            lower: present.iter().copied().min_by(order).cloned(),
            upper: present.iter().copied().max_by(order).cloned(),
        }
    };
    let partitions = vec![
        summary(
            files
                .iter()
                .map(|f| Some(f.partition.event_type.clone().into_bytes()))
                .collect(),
            false,
        ),
        summary(
            files
                .iter()
                .map(|f| f.partition.event_subtype.clone().map(String::into_bytes))
                .collect(),
            false,
        ),
        summary(
            files
                .iter()
                .map(|f| Some(f.partition.event_date.to_le_bytes().to_vec()))
                .collect(),
            true,
        ),
    ];
    ManifestFile {
        path,
        length: length as i64,
        spec_id: 0,
        content: 0,
        sequence_number,
        min_sequence_number: sequence_number,
        added_snapshot_id: snapshot_id,
        files: [files.len() as i64, 0, 0],
        rows: [files.iter().map(|f| f.records as i64).sum(), 0, 0],
        partitions: Some(partitions),
        key_metadata: None,
    }
}

const MANIFEST_LIST_SCHEMA: &str = r#"{"type":"record","name":"manifest_file","fields":[{"name":"manifest_path","type":"string","field-id":500},{"name":"manifest_length","type":"long","field-id":501},{"name":"partition_spec_id","type":"int","field-id":502},{"name":"content","type":"int","field-id":517},{"name":"sequence_number","type":"long","field-id":515},{"name":"min_sequence_number","type":"long","field-id":516},{"name":"added_snapshot_id","type":"long","field-id":503},{"name":"added_files_count","type":"int","field-id":504},{"name":"existing_files_count","type":"int","field-id":505},{"name":"deleted_files_count","type":"int","field-id":506},{"name":"added_rows_count","type":"long","field-id":512},{"name":"existing_rows_count","type":"long","field-id":513},{"name":"deleted_rows_count","type":"long","field-id":514},{"name":"partitions","type":["null",{"type":"array","items":{"type":"record","name":"r508","fields":[{"name":"contains_null","type":"boolean","field-id":509},{"name":"contains_nan","type":["null","boolean"],"default":null,"field-id":518},{"name":"lower_bound","type":["null","bytes"],"default":null,"field-id":510},{"name":"upper_bound","type":["null","bytes"],"default":null,"field-id":511}]},"element-id":508}],"default":null,"field-id":507},{"name":"key_metadata","type":["null","bytes"],"default":null,"field-id":519}]}"#;

/// A snapshot's manifest list.
pub fn manifest_list(
    snapshot_id: i64,
    parent: Option<i64>,
    sequence_number: i64,
    manifests: &[ManifestFile],
) -> Vec<u8> {
    let records: Vec<Vec<u8>> = manifests
        .iter()
        .map(|m| {
            let mut out = Vec::with_capacity(256 + m.path.len());
            put_bytes(&mut out, m.path.as_bytes());
            for v in [
                m.length,
                m.spec_id,
                m.content,
                m.sequence_number,
                m.min_sequence_number,
                m.added_snapshot_id,
            ] {
                put_long(&mut out, v);
            }
            for v in m.files.iter().chain(&m.rows) {
                put_long(&mut out, *v);
            }
            put_optional(&mut out, m.partitions.as_deref(), |out, parts| {
                put_array(out, parts, |out, s| {
                    put_bool(out, s.contains_null);
                    put_optional(out, s.contains_nan, put_bool);
                    put_optional(out, s.lower.as_deref(), put_bytes);
                    put_optional(out, s.upper.as_deref(), put_bytes);
                });
            });
            put_optional(&mut out, m.key_metadata.as_deref(), put_bytes);
            out
        })
        .collect();
    let snapshot = snapshot_id.to_string();
    let parent = parent.map_or_else(|| "null".to_string(), |p| p.to_string());
    let sequence = sequence_number.to_string();
    avro::container(
        MANIFEST_LIST_SCHEMA,
        &[
            ("snapshot-id", snapshot.as_bytes()),
            ("parent-snapshot-id", parent.as_bytes()),
            ("sequence-number", sequence.as_bytes()),
            ("format-version", b"2"),
        ],
        &records,
    )
}

/// The manifests of a manifest list, whoever wrote it (a format version 1
/// list has no content or sequence numbers: data, 0).
pub fn read_manifest_list(bytes: &[u8]) -> Result<Vec<ManifestFile>, AvroError> {
    let (records, _) = avro::read_container(bytes)?;
    Ok(records.iter().map(manifest_file_from).collect())
}

fn manifest_file_from(r: &Value) -> ManifestFile {
    let long = |name: &str| r.field(name).and_then(Value::long).unwrap_or(0);
    let bytes = |v: Option<&Value>| match v {
        Some(Value::Bytes(b)) => Some(b.clone()),
        _ => None,
    };
    let partitions = match r.field("partitions") {
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|s| FieldSummary {
                    contains_null: matches!(s.field("contains_null"), Some(Value::Bool(true))),
                    contains_nan: match s.field("contains_nan") {
                        Some(Value::Bool(b)) => Some(*b),
                        _ => None,
                    },
                    lower: bytes(s.field("lower_bound")),
                    upper: bytes(s.field("upper_bound")),
                })
                .collect(),
        ),
        _ => None,
    };
    // format version 1 names the counts added_data_files_count, …
    let count = |v2: &str, v1: &str| {
        r.field(v2)
            .or_else(|| r.field(v1))
            .and_then(Value::long)
            .unwrap_or(0)
    };
    ManifestFile {
        path: match r.field("manifest_path") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        },
        length: long("manifest_length"),
        spec_id: long("partition_spec_id"),
        content: long("content"),
        sequence_number: long("sequence_number"),
        min_sequence_number: long("min_sequence_number"),
        added_snapshot_id: long("added_snapshot_id"),
        files: [
            count("added_files_count", "added_data_files_count"),
            count("existing_files_count", "existing_data_files_count"),
            count("deleted_files_count", "deleted_data_files_count"),
        ],
        rows: [
            long("added_rows_count"),
            long("existing_rows_count"),
            long("deleted_rows_count"),
        ],
        partitions,
        key_metadata: bytes(r.field("key_metadata")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(t: &str, s: Option<&str>, day: i32, rows: u64) -> DataFile {
        DataFile {
            path: format!("s3://b/event_type={t}/{day}.parquet"),
            partition: PartitionValues {
                event_type: t.into(),
                event_subtype: s.map(str::to_string),
                event_date: day,
            },
            records: rows,
            size: 1000,
            columns: vec![ColumnMetrics {
                id: 3,
                bytes: 10,
                values: rows,
                nulls: 1,
                floating: true,
                bounds: Some((1.5f64.to_le_bytes().to_vec(), 9.0f64.to_le_bytes().to_vec())),
            }],
        }
    }

    #[test]
    fn a_manifest_list_reads_back_with_partition_summaries() {
        let files = [file("b", Some("x"), 20_000, 5), file("a", None, -3, 7)];
        let m = manifest_file_of("s3://b/m.avro".into(), 1234, 77, 4, &files);
        assert_eq!(m.rows[0], 12);
        let parts = m.partitions.as_ref().expect("summaries");
        assert_eq!(parts[0].lower.as_deref(), Some(&b"a"[..]));
        assert_eq!(parts[0].upper.as_deref(), Some(&b"b"[..]));
        assert!(parts[1].contains_null && !parts[0].contains_null);
        // dates order as numbers, not as bytes
        assert_eq!(parts[2].lower, Some((-3i32).to_le_bytes().to_vec()));
        assert_eq!(parts[2].upper, Some(20_000i32.to_le_bytes().to_vec()));
        let older = ManifestFile {
            path: "s3://b/old.avro".into(),
            partitions: None,
            key_metadata: Some(vec![1, 2]),
            ..m.clone()
        };
        let list = manifest_list(77, Some(76), 4, &[m.clone(), older.clone()]);
        assert_eq!(read_manifest_list(&list).expect("read"), vec![m, older]);
    }

    #[test]
    fn a_manifest_holds_each_files_partition_and_metrics() {
        let files = [file("a", None, 5, 2)];
        let bytes = manifest("{}", 0, "[]", 9, &files);
        let (entries, meta) = avro::read_container(&bytes).expect("read");
        assert_eq!(meta.get("content").map(Vec::as_slice), Some(&b"data"[..]));
        let data = entries[0].field("data_file").expect("data_file");
        assert_eq!(entries[0].field("snapshot_id"), Some(&Value::Long(9)));
        let partition = data.field("partition").expect("partition");
        assert_eq!(partition.field("event_subtype"), Some(&Value::Null));
        assert_eq!(partition.field("event_date"), Some(&Value::Long(5)));
        let Some(Value::Array(upper)) = data.field("upper_bounds") else {
            panic!("upper bounds expected");
        };
        assert_eq!(
            upper[0].field("value"),
            Some(&Value::Bytes(9.0f64.to_le_bytes().to_vec()))
        );
        assert_eq!(data.field("record_count"), Some(&Value::Long(2)));
    }

    #[test]
    fn days_count_from_the_epoch() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).expect("date");
        assert_eq!(days_since_epoch(d(1970, 1, 1)), 0);
        assert_eq!(days_since_epoch(d(1969, 12, 31)), -1);
        assert_eq!(days_since_epoch(d(2026, 12, 7)), 20_794);
    }
}
