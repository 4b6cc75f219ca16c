//! The Iceberg table over the lake: its schema (the lake schema's columns
//! with stable field ids), its partition spec, the snapshot a published
//! generation becomes, and the commit (requirements and updates, in the REST
//! catalog protocol's words) that adds it. Table metadata is JSON as the
//! spec writes it; what this module does not model it leaves as it is.

use serde_json::{Map, Value as Json, json};

use crate::core::columns::{FIXED_COLUMNS, PAYLOAD_JSON_COLUMN};
use crate::core::iceberg::manifest::FIRST_PARTITION_FIELD_ID;
use crate::core::partition::PARTITION_COLUMNS;
use crate::core::schema::{LakeSchema, same_to_readers};
use crate::core::value::Kind;

/// The snapshot summary property holding the published window's id.
pub const WINDOW_PROPERTY: &str = "kinesis-lake.window";
/// The snapshot summary property holding the window's generation.
pub const GENERATION_PROPERTY: &str = "kinesis-lake.generation";
/// The table property readers use to find columns in files without field ids.
pub const NAME_MAPPING_PROPERTY: &str = "schema.name-mapping.default";
/// The branch every commit advances.
pub const MAIN_BRANCH: &str = "main";

/// One field of the table schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Its id: stable for the life of the table.
    pub id: i32,
    /// Its name, as in the data files.
    pub name: String,
    /// Its Iceberg type (`string`, `long`, `double`, `boolean`, `date`).
    pub ty: String,
}

/// The Iceberg type of a lake column kind (JSON text is a string).
pub fn iceberg_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "boolean",
        Kind::Int => "long",
        Kind::Double => "double",
        Kind::String | Kind::Json => "string",
    }
}

/// The columns the table has for a lake schema, in order: the fixed
/// columns, the raw JSON (when kept), the partition columns (`event_date`
/// a date), then the payload columns as the lake schema added them.
pub fn wanted_columns(lake: &LakeSchema, payload_json: bool) -> Vec<(String, &'static str)> {
    let fixed = FIXED_COLUMNS
        .iter()
        .map(|c| (c.name.to_string(), iceberg_type(c.kind)));
    let raw = payload_json.then(|| (PAYLOAD_JSON_COLUMN.to_string(), "string"));
    let [t, s, d] = PARTITION_COLUMNS;
    let partition = [(t, "string"), (s, "string"), (d, "date")].map(|(n, ty)| (n.to_string(), ty));
    let payload = lake
        .columns
        .iter()
        .map(|c| (c.name.clone(), iceberg_type(c.kind)));
    fixed.chain(raw).chain(partition).chain(payload).collect()
}

/// The fields of `current` followed by those of `wanted` it lacks, with new
/// ids after `last_id`: the schema only grows, and a field keeps its id.
/// Names match as readers that ignore case match them (a catalog may keep
/// `Country` as `country`; the lake schema never holds two names that
/// differ only in case). `None` when nothing is new.
pub fn evolve(
    current: &[Field],
    last_id: i32,
    wanted: &[(String, &'static str)],
) -> Option<(Vec<Field>, i32)> {
    let mut fields = current.to_vec();
    let mut last = last_id;
    for (name, ty) in wanted {
        if !fields.iter().any(|f| same_to_readers(&f.name, name)) {
            last += 1;
            fields.push(Field {
                id: last,
                name: name.clone(),
                ty: (*ty).to_string(),
            });
        }
    }
    (last > last_id).then_some((fields, last))
}

/// A schema as table metadata holds it.
pub fn schema_json(schema_id: i64, fields: &[Field]) -> Json {
    json!({
        "type": "struct",
        "schema-id": schema_id,
        "fields": fields.iter().map(|f| json!({
            "id": f.id, "name": f.name, "required": false, "type": f.ty,
        })).collect::<Vec<_>>(),
    })
}

/// The partition spec: identity of each partition column, so data paths
/// keep the lake's `event_type=…/event_subtype=…/event_date=…/` layout.
pub fn spec_json(fields: &[Field]) -> Json {
    let spec_fields: Vec<Json> = PARTITION_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let source = fields
                .iter()
                .find(|f| same_to_readers(&f.name, name))
                .map_or(0, |f| f.id);
            json!({
                "name": name,
                "transform": "identity",
                "source-id": source,
                "field-id": FIRST_PARTITION_FIELD_ID + i as i32,
            })
        })
        .collect();
    json!({ "spec-id": 0, "fields": spec_fields })
}

/// The name mapping of the fields: our data files carry no field ids, so
/// readers find each column by its name.
pub fn name_mapping(fields: &[Field]) -> String {
    name_mapping_for(fields, &[])
}

/// The name mapping of the fields, each also under the lake's spelling of
/// its name where the table's differs in case (the files carry the lake's).
pub fn name_mapping_for(fields: &[Field], lake: &[(String, &'static str)]) -> String {
    Json::Array(
        fields
            .iter()
            .map(|f| {
                let mut names = vec![f.name.as_str()];
                names.extend(
                    lake.iter()
                        .map(|(n, _)| n.as_str())
                        .filter(|n| *n != f.name && same_to_readers(n, &f.name)),
                );
                json!({ "field-id": f.id, "names": names })
            })
            .collect(),
    )
    .to_string()
}

/// The fields of a table's current schema.
pub fn current_fields(meta: &Json) -> Vec<Field> {
    let id = meta
        .get("current-schema-id")
        .and_then(Json::as_i64)
        .unwrap_or(0);
    let schemas = meta.get("schemas").and_then(Json::as_array);
    let schema = schemas
        .and_then(|s| {
            s.iter()
                .find(|s| s.get("schema-id").and_then(Json::as_i64) == Some(id))
        })
        .or_else(|| meta.get("schema"));
    schema
        .and_then(|s| s.get("fields"))
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some(Field {
                id: i32::try_from(f.get("id")?.as_i64()?).ok()?,
                name: f.get("name")?.as_str()?.to_string(),
                ty: match f.get("type")? {
                    Json::String(t) => t.clone(),
                    other => other.to_string(),
                },
            })
        })
        .collect()
}

/// The snapshot of the main branch, if any.
pub fn current_snapshot(meta: &Json) -> Option<&Json> {
    let id = meta
        .pointer(&format!("/refs/{MAIN_BRANCH}/snapshot-id"))
        .or_else(|| meta.get("current-snapshot-id"))
        .and_then(Json::as_i64)
        .filter(|&id| id >= 0)?;
    snapshots(meta).find(|s| s.get("snapshot-id").and_then(Json::as_i64) == Some(id))
}

fn snapshots(meta: &Json) -> impl Iterator<Item = &Json> {
    meta.get("snapshots")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
}

/// The snapshot that committed generation `generation` of window `window`,
/// if the table keeps one.
pub fn committed_snapshot(meta: &Json, window: &str, generation: u32) -> Option<i64> {
    let generation = generation.to_string();
    snapshots(meta)
        .find(|s| {
            let summary = |k: &str| s.pointer(&format!("/summary/{k}")).and_then(Json::as_str);
            summary(WINDOW_PROPERTY) == Some(window)
                && summary(GENERATION_PROPERTY) == Some(&generation)
        })
        .and_then(|s| s.get("snapshot-id").and_then(Json::as_i64))
}

/// The snapshot id of a window's generation: the same on every attempt, so a
/// retried commit cannot add it under a second id.
pub fn snapshot_id(window: &str, generation: u32) -> i64 {
    let g = generation.to_le_bytes();
    let h = crate::core::window::content_hash([window.as_bytes(), &g[..]]);
    // positive and non-zero
    ((h >> 1) as i64).max(1)
}

/// What a commit checks and changes, as the REST catalog protocol says it.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// What must still hold of the table.
    pub requirements: Vec<Json>,
    /// The changes, in order.
    pub updates: Vec<Json>,
}

/// A new snapshot and what it adds.
#[derive(Debug, Clone)]
pub struct NewSnapshot<'a> {
    /// Its id.
    pub id: i64,
    /// Its manifest list's location.
    pub manifest_list: String,
    /// The published window and generation.
    pub window: &'a str,
    /// The generation.
    pub generation: u32,
    /// Files, rows and bytes added.
    pub added: (u64, u64, u64),
    /// Its commit time.
    pub timestamp_ms: i64,
}

/// The commit that adds `snap` on top of the table as `meta` describes it,
/// first growing the schema to `evolved` when it gained columns; `lake` is
/// the lake's columns (their spellings go into the name mapping).
pub fn append_commit(
    meta: &Json,
    evolved: Option<&(Vec<Field>, i32)>,
    lake: &[(String, &'static str)],
    snap: &NewSnapshot<'_>,
) -> Commit {
    let parent = current_snapshot(meta);
    let parent_id = current_snapshot_id(meta);
    let sequence = next_sequence_number(meta);
    let mut requirements = vec![json!({
        "type": "assert-ref-snapshot-id", "ref": MAIN_BRANCH, "snapshot-id": parent_id,
    })];
    if let Some(uuid) = meta.get("table-uuid") {
        requirements.push(json!({ "type": "assert-table-uuid", "uuid": uuid }));
    }
    let mut updates = Vec::new();
    let schema_id = snapshot_schema_id(meta, evolved.is_some());
    if let Some((fields, last)) = evolved {
        let current = current_schema_id(meta);
        requirements
            .push(json!({ "type": "assert-current-schema-id", "current-schema-id": current }));
        requirements.push(json!({
            "type": "assert-last-assigned-field-id",
            "last-assigned-field-id": meta.get("last-column-id").and_then(Json::as_i64).unwrap_or(0),
        }));
        updates.push(json!({ "action": "add-schema", "schema": schema_json(schema_id, fields), "last-column-id": last }));
        updates.push(json!({ "action": "set-current-schema", "schema-id": -1 }));
    }
    // our files carry no field ids: without the name mapping readers see
    // nulls, so it is set whenever it is missing or behind the schema (a
    // table someone else created, with Athena's DDL say, has none)
    let fields = evolved.map_or_else(|| current_fields(meta), |(f, _)| f.clone());
    let mapping = name_mapping_for(&fields, lake);
    let property = format!("/properties/{}", NAME_MAPPING_PROPERTY.replace('/', "~1"));
    if meta.pointer(&property).and_then(Json::as_str) != Some(mapping.as_str()) {
        updates.push(
            json!({ "action": "set-properties", "updates": { NAME_MAPPING_PROPERTY: mapping } }),
        );
    }
    let (files, rows, bytes) = snap.added;
    let mut summary = Map::new();
    summary.insert("operation".into(), "append".into());
    summary.insert(WINDOW_PROPERTY.into(), snap.window.into());
    summary.insert(
        GENERATION_PROPERTY.into(),
        snap.generation.to_string().into(),
    );
    summary.insert("added-data-files".into(), files.to_string().into());
    summary.insert("added-records".into(), rows.to_string().into());
    summary.insert("added-files-size".into(), bytes.to_string().into());
    // totals, when the parent's summary has them to add to
    for (total, added) in [
        ("total-data-files", files),
        ("total-records", rows),
        ("total-files-size", bytes),
    ] {
        let before = match parent {
            None => Some(0),
            Some(p) => p
                .pointer(&format!("/summary/{total}"))
                .and_then(Json::as_str)
                .and_then(|v| v.parse::<u64>().ok()),
        };
        if let Some(before) = before {
            summary.insert(total.into(), (before + added).to_string().into());
        }
    }
    let mut snapshot = json!({
        "snapshot-id": snap.id,
        "sequence-number": sequence,
        "timestamp-ms": snap.timestamp_ms,
        "manifest-list": snap.manifest_list,
        "summary": summary,
        "schema-id": schema_id,
    });
    if let Some(p) = parent_id {
        snapshot["parent-snapshot-id"] = p.into();
    }
    updates.push(json!({ "action": "add-snapshot", "snapshot": snapshot }));
    updates.push(json!({
        "action": "set-snapshot-ref", "ref-name": MAIN_BRANCH, "type": "branch", "snapshot-id": snap.id,
    }));
    Commit {
        requirements,
        updates,
    }
}

/// The id of the main branch's snapshot, if any.
pub fn current_snapshot_id(meta: &Json) -> Option<i64> {
    current_snapshot(meta)?.get("snapshot-id")?.as_i64()
}

fn current_schema_id(meta: &Json) -> i64 {
    meta.get("current-schema-id")
        .and_then(Json::as_i64)
        .unwrap_or(0)
}

/// The schema id a commit on `meta` writes its files with: the current
/// one, or, when the commit grows the schema, the id after the highest in
/// use (the manifest and the snapshot must name the same).
pub fn snapshot_schema_id(meta: &Json, grows: bool) -> i64 {
    if !grows {
        return current_schema_id(meta);
    }
    let highest = meta
        .get("schemas")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("schema-id").and_then(Json::as_i64))
        .max();
    highest.map_or(0, |h| h + 1)
}

/// The sequence number a commit on `meta` gives its snapshot.
pub fn next_sequence_number(meta: &Json) -> i64 {
    meta.get("last-sequence-number")
        .and_then(Json::as_i64)
        .unwrap_or(0)
        + 1
}

/// Table properties of a new table.
pub fn new_table_properties(
    fields: &[Field],
    target_file_bytes: u64,
    data_path: Option<&str>,
    metadata_path: Option<&str>,
) -> Map<String, Json> {
    let mut p = Map::new();
    p.insert(NAME_MAPPING_PROPERTY.into(), name_mapping(fields).into());
    p.insert("write.format.default".into(), "parquet".into());
    p.insert("write.parquet.compression-codec".into(), "zstd".into());
    // what AWS's compaction aims at: the publisher's own split size
    p.insert(
        "write.target-file-size-bytes".into(),
        target_file_bytes.to_string().into(),
    );
    if let Some(d) = data_path {
        p.insert("write.data.path".into(), d.into());
    }
    if let Some(m) = metadata_path {
        p.insert("write.metadata.path".into(), m.into());
    }
    p
}

/// The REST catalog's create-table request.
pub fn create_request(
    name: &str,
    location: Option<&str>,
    fields: &[Field],
    properties: &Map<String, Json>,
) -> Json {
    let mut req = json!({
        "name": name,
        "schema": schema_json(0, fields),
        "partition-spec": spec_json(fields),
        "write-order": { "order-id": 0, "fields": [] },
        "stage-create": false,
        "properties": properties,
    });
    if let Some(l) = location {
        req["location"] = l.into();
    }
    req
}

/// The first metadata of a table that a catalog in the lake keeps.
pub fn new_metadata(
    location: &str,
    uuid: &str,
    fields: &[Field],
    properties: &Map<String, Json>,
    now_ms: i64,
) -> Json {
    json!({
        "format-version": 2,
        "table-uuid": uuid,
        "location": location,
        "last-sequence-number": 0,
        "last-updated-ms": now_ms,
        "last-column-id": fields.iter().map(|f| f.id).max().unwrap_or(0),
        "current-schema-id": 0,
        "schemas": [schema_json(0, fields)],
        "default-spec-id": 0,
        "partition-specs": [spec_json(fields)],
        "last-partition-id": FIRST_PARTITION_FIELD_ID + PARTITION_COLUMNS.len() as i32 - 1,
        "default-sort-order-id": 0,
        "sort-orders": [{ "order-id": 0, "fields": [] }],
        "properties": properties,
        "current-snapshot-id": -1,
        "refs": {},
        "snapshots": [],
        "snapshot-log": [],
        "metadata-log": [],
    })
}

/// Applies a commit to table metadata, as a catalog does: the requirements
/// are checked (an unmet one is a conflict: `Err` says which), then the
/// updates applied in order. `previous` is the location of `meta`'s file,
/// logged in the new metadata's history.
pub fn apply(meta: &Json, commit: &Commit, previous: &str, now_ms: i64) -> Result<Json, String> {
    for r in &commit.requirements {
        check(meta, r)?;
    }
    let mut m = meta.clone();
    let mut last_added_schema: Option<i64> = None;
    for u in &commit.updates {
        let action = u.get("action").and_then(Json::as_str).unwrap_or_default();
        match action {
            "add-schema" => {
                let schema = u.get("schema").cloned().unwrap_or(Json::Null);
                last_added_schema = schema.get("schema-id").and_then(Json::as_i64);
                push(&mut m, "schemas", schema);
                m["last-column-id"] = u.get("last-column-id").cloned().unwrap_or(Json::Null);
            }
            "set-current-schema" => {
                let id = u.get("schema-id").and_then(Json::as_i64).unwrap_or(-1);
                m["current-schema-id"] = if id == -1 {
                    last_added_schema.unwrap_or(0)
                } else {
                    id
                }
                .into();
            }
            "set-properties" => {
                if let (Some(Json::Object(props)), Some(Json::Object(new))) =
                    (m.get_mut("properties"), u.get("updates"))
                {
                    props.extend(new.clone());
                }
            }
            "add-snapshot" => {
                let snap = u.get("snapshot").cloned().unwrap_or(Json::Null);
                m["last-sequence-number"] =
                    snap.get("sequence-number").cloned().unwrap_or(Json::Null);
                push(&mut m, "snapshots", snap);
            }
            "set-snapshot-ref" => {
                let id = u.get("snapshot-id").cloned().unwrap_or(Json::Null);
                let name = u
                    .get("ref-name")
                    .and_then(Json::as_str)
                    .unwrap_or(MAIN_BRANCH);
                m["refs"][name] = json!({ "snapshot-id": id, "type": "branch" });
                if name == MAIN_BRANCH {
                    m["current-snapshot-id"] = id.clone();
                    push(
                        &mut m,
                        "snapshot-log",
                        json!({ "timestamp-ms": now_ms, "snapshot-id": id }),
                    );
                }
            }
            other => return Err(format!("update {other:?} is not one this catalog applies")),
        }
    }
    let before = meta.get("last-updated-ms").cloned().unwrap_or(Json::Null);
    push(
        &mut m,
        "metadata-log",
        json!({ "timestamp-ms": before, "metadata-file": previous }),
    );
    m["last-updated-ms"] = now_ms.into();
    Ok(m)
}

fn push(m: &mut Json, list: &str, item: Json) {
    match m.get_mut(list) {
        Some(Json::Array(a)) => a.push(item),
        _ => m[list] = Json::Array(vec![item]),
    }
}

/// Whether a requirement holds of `meta`.
fn check(meta: &Json, r: &Json) -> Result<(), String> {
    let ty = r.get("type").and_then(Json::as_str).unwrap_or_default();
    let (want, have) = match ty {
        "assert-table-uuid" => (r.get("uuid"), meta.get("table-uuid")),
        "assert-ref-snapshot-id" => {
            let name = r.get("ref").and_then(Json::as_str).unwrap_or(MAIN_BRANCH);
            (
                r.get("snapshot-id"),
                meta.pointer(&format!("/refs/{name}/snapshot-id")),
            )
        }
        "assert-current-schema-id" => (r.get("current-schema-id"), meta.get("current-schema-id")),
        "assert-last-assigned-field-id" => {
            (r.get("last-assigned-field-id"), meta.get("last-column-id"))
        }
        other => {
            return Err(format!(
                "requirement {other:?} is not one this catalog checks"
            ));
        }
    };
    let norm = |v: Option<&Json>| v.cloned().unwrap_or(Json::Null);
    if norm(want) == norm(have) {
        Ok(())
    } else {
        Err(format!(
            "{ty}: expected {}, the table has {}",
            norm(want),
            norm(have)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(names: &[(&str, &str)]) -> Vec<Field> {
        names
            .iter()
            .enumerate()
            .map(|(i, (n, t))| Field {
                id: i as i32 + 1,
                name: (*n).into(),
                ty: (*t).into(),
            })
            .collect()
    }

    fn snap<'a>(window: &'a str, generation: u32) -> NewSnapshot<'a> {
        NewSnapshot {
            id: snapshot_id(window, generation),
            manifest_list: format!("file:///lake/{window}-{generation}.avro"),
            window,
            generation,
            added: (2, 10, 1000),
            timestamp_ms: 1_000,
        }
    }

    #[test]
    fn a_field_keeps_its_id_and_new_fields_come_after_the_last() {
        let current = fields(&[("event_uuid", "string"), ("old", "long")]);
        let wanted = vec![
            ("new".to_string(), "double"),
            ("event_uuid".to_string(), "string"),
        ];
        // ids freed by nothing: the last assigned id may be above the fields'
        let (evolved, last) = evolve(&current, 5, &wanted).expect("a new field");
        assert_eq!(last, 6);
        assert_eq!(evolved[..2], current[..]);
        assert_eq!(
            evolved[2],
            Field {
                id: 6,
                name: "new".into(),
                ty: "double".into()
            }
        );
        assert_eq!(evolve(&evolved, 6, &wanted), None);
    }

    #[test]
    fn commits_chain_snapshots_and_find_a_committed_window() {
        let f = fields(&[
            ("event_uuid", "string"),
            ("event_type", "string"),
            ("event_subtype", "string"),
            ("event_date", "date"),
        ]);
        let meta = new_metadata(
            "file:///lake",
            "u-1",
            &f,
            &new_table_properties(&f, 1, None, None),
            0,
        );
        assert_eq!(committed_snapshot(&meta, "w1", 0), None);
        let first = append_commit(&meta, None, &[], &snap("w1", 0));
        let meta1 = apply(&meta, &first, "v1", 10).expect("first commit");
        let id1 = snapshot_id("w1", 0);
        assert_eq!(committed_snapshot(&meta1, "w1", 0), Some(id1));
        assert_eq!(committed_snapshot(&meta1, "w1", 1), None);
        assert_eq!(
            current_snapshot(&meta1).and_then(|s| s["sequence-number"].as_i64()),
            Some(1)
        );
        assert_eq!(meta1["snapshots"][0]["summary"]["total-records"], "10");

        // a commit planned on the old metadata conflicts once another landed
        let stale = append_commit(&meta, None, &[], &snap("w2", 0));
        assert!(apply(&meta1, &stale, "v2", 20).is_err());
        let second = append_commit(&meta1, None, &[], &snap("w2", 0));
        let meta2 = apply(&meta1, &second, "v2", 20).expect("second commit");
        let s2 = current_snapshot(&meta2).expect("current");
        assert_eq!(s2["parent-snapshot-id"].as_i64(), Some(id1));
        assert_eq!(s2["sequence-number"].as_i64(), Some(2));
        assert_eq!(s2["summary"]["total-records"], "20");
        assert_eq!(meta2["metadata-log"][1]["metadata-file"], "v2");
    }

    #[test]
    fn a_grown_schema_is_current_and_its_name_mapping_too() {
        let f = fields(&[("event_uuid", "string")]);
        let meta = new_metadata(
            "file:///lake",
            "u-1",
            &f,
            &new_table_properties(&f, 1, None, None),
            0,
        );
        let grown = evolve(&f, 1, &[("price".to_string(), "double")]).expect("grown");
        let c = append_commit(&meta, Some(&grown), &[], &snap("w1", 0));
        let meta1 = apply(&meta, &c, "v1", 10).expect("commit");
        assert_eq!(meta1["current-schema-id"], 1);
        assert_eq!(current_fields(&meta1), grown.0);
        assert_eq!(meta1["last-column-id"], 2);
        assert!(
            meta1["properties"][NAME_MAPPING_PROPERTY]
                .as_str()
                .is_some_and(|m| m.contains("price"))
        );
        assert_eq!(
            current_snapshot(&meta1).map(|s| s["schema-id"].clone()),
            Some(json!(1))
        );
    }

    #[test]
    fn a_table_without_the_name_mapping_gets_it_with_the_next_commit() {
        let f = fields(&[("event_uuid", "string"), ("price", "double")]);
        let mut props = new_table_properties(&f, 1, None, None);
        props.remove(NAME_MAPPING_PROPERTY);
        let meta = new_metadata("s3://b/lake", "u-1", &f, &props, 0);
        let c = append_commit(&meta, None, &[], &snap("w1", 0));
        let meta1 = apply(&meta, &c, "v1", 10).expect("commit");
        assert_eq!(meta1["properties"][NAME_MAPPING_PROPERTY], name_mapping(&f));
        // once current, a commit leaves it alone
        let c2 = append_commit(&meta1, None, &[], &snap("w2", 0));
        assert!(!c2.updates.iter().any(|u| u["action"] == "set-properties"));
    }

    #[test]
    fn a_catalog_that_lowercased_a_name_keeps_its_field_and_maps_the_lakes_spelling() {
        // a table whose catalog keeps `Country` as `country` (Athena's DDL, Glue)
        let table = fields(&[("event_uuid", "string"), ("country", "string")]);
        let lake = vec![
            ("event_uuid".to_string(), "string"),
            ("Country".to_string(), "string"),
        ];
        assert_eq!(evolve(&table, 2, &lake), None, "no second Country column");
        let mapping: Json = serde_json::from_str(&name_mapping_for(&table, &lake)).expect("json");
        assert_eq!(mapping[1]["names"], json!(["country", "Country"]));
        assert_eq!(mapping[0]["names"], json!(["event_uuid"]));
    }

    #[test]
    fn a_grown_schema_takes_the_id_after_the_highest_whatever_the_count() {
        // another engine left schemas 0 and 3 (ids need not be 0..n-1)
        let f = fields(&[("event_uuid", "string")]);
        let mut meta = new_metadata(
            "s3://b/lake",
            "u-1",
            &f,
            &new_table_properties(&f, 1, None, None),
            0,
        );
        meta["schemas"]
            .as_array_mut()
            .expect("schemas")
            .push(schema_json(3, &f));
        let grown = evolve(&f, 1, &[("price".to_string(), "double")]).expect("grown");
        assert_eq!(snapshot_schema_id(&meta, true), 4);
        assert_eq!(snapshot_schema_id(&meta, false), 0);
        let c = append_commit(&meta, Some(&grown), &[], &snap("w1", 0));
        let added = c
            .updates
            .iter()
            .find(|u| u["action"] == "add-schema")
            .expect("add-schema");
        let snapshot = c
            .updates
            .iter()
            .find(|u| u["action"] == "add-snapshot")
            .expect("add-snapshot");
        assert_eq!(added["schema"]["schema-id"], 4);
        assert_eq!(snapshot["snapshot"]["schema-id"], 4);
    }

    #[test]
    fn snapshot_ids_are_positive_and_differ_by_generation() {
        let a = snapshot_id("20261207T1200", 0);
        assert!(a > 0);
        assert_eq!(a, snapshot_id("20261207T1200", 0));
        assert_ne!(a, snapshot_id("20261207T1200", 1));
        assert_ne!(a, snapshot_id("20261207T1205", 0));
    }
}
