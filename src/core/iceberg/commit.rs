//! Committing a published generation to the Iceberg table: one fast-append
//! snapshot per generation (a window's first generation is the window),
//! found again by the window id in its summary, so a publisher that dies
//! after committing and runs again does not append it twice; a commit that
//! loses a race with another is planned again on the new table state.
//!
//! The catalog is a trait: the lake's own catalog (metadata files in the
//! lake, each version created only if absent, as the lake's other records)
//! is here; a REST catalog (AWS Glue, Amazon S3 Tables, any Iceberg REST
//! server) is an adapter.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde_json::{Map, Value as Json};

use crate::core::iceberg::manifest::{
    ColumnMetrics, DataFile, PartitionValues, manifest, manifest_file_of, manifest_list,
    read_manifest_list,
};
use crate::core::iceberg::table::{
    Commit, Field, NewSnapshot, append_commit, committed_snapshot, current_fields,
    current_snapshot, current_snapshot_id, evolve, new_metadata, new_table_properties,
    next_sequence_number, schema_json, snapshot_id, snapshot_schema_id, spec_json, wanted_columns,
};
use crate::core::parquet_file::{ColumnStats, ColumnType};
use crate::core::partition::join_prefix;
use crate::core::schema::{LakeSchema, same_to_readers};
use crate::core::sink::{ObjectSink, SinkError};

/// A table's metadata as a catalog returned it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The metadata document.
    pub metadata: Json,
    /// Where it is stored.
    pub metadata_location: String,
}

/// What a commit came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The table now has the snapshot.
    Committed,
    /// Someone else committed first (or the requirements no longer hold):
    /// plan again on the new state.
    Conflict(String),
}

/// A table to create: where, its first schema, its properties.
#[derive(Debug, Clone)]
pub struct NewTable {
    /// Its location.
    pub location: String,
    /// Its schema.
    pub fields: Vec<Field>,
    /// Its properties.
    pub properties: Map<String, Json>,
}

/// A catalog call that failed (not a conflict).
#[derive(Debug, thiserror::Error)]
#[error("Iceberg catalog ({catalog}): {operation} failed: {message}")]
pub struct CatalogError {
    /// Which catalog.
    pub catalog: String,
    /// `load`, `create`, `commit`.
    pub operation: &'static str,
    /// Why, with what to check.
    pub message: String,
}

/// An Iceberg catalog holding one table.
pub trait Catalog: Send + Sync {
    /// The table's metadata, `None` when the table does not exist.
    fn load(&self) -> BoxFuture<'_, Result<Option<Loaded>, CatalogError>>;
    /// Creates the table (when another creates it first, loads that one).
    fn create(&self, table: NewTable) -> BoxFuture<'_, Result<Loaded, CatalogError>>;
    /// Which catalog and table, for messages and the lake's table record.
    fn describe(&self) -> String;
    /// Commits `commit` on top of `current`.
    fn commit<'a>(
        &'a self,
        current: &'a Loaded,
        commit: &'a Commit,
    ) -> BoxFuture<'a, Result<CommitOutcome, CatalogError>>;
}

/// Which catalog holds the table.
#[derive(Clone)]
pub enum CatalogChoice {
    /// Metadata files in the lake itself (no server: the embedded default;
    /// DuckDB's `iceberg_scan` and pyiceberg's `StaticTable` read them).
    Lake,
    /// A catalog service.
    External(Arc<dyn Catalog>),
}

impl std::fmt::Debug for CatalogChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CatalogChoice::Lake => "Lake",
            CatalogChoice::External(_) => "External",
        })
    }
}

/// The Iceberg table the publisher commits to.
#[derive(Debug, Clone)]
pub struct IcebergTable {
    /// Its catalog.
    pub catalog: CatalogChoice,
    /// Whether the data files carry the raw JSON column.
    pub payload_json: bool,
    /// The file size the table asks compaction for.
    pub target_file_bytes: u64,
}

/// A published data file, for the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFile {
    /// Its key in the lake.
    pub key: String,
    /// Its partition.
    pub partition: crate::core::partition::PartitionKey,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
    /// Its columns' statistics, from the writer.
    pub columns: Vec<ColumnStats>,
}

/// Committing failed.
#[derive(Debug, thiserror::Error)]
pub enum IcebergError {
    /// The catalog failed.
    #[error("{0}; run the publisher again: a committed window is not appended twice")]
    Catalog(#[from] CatalogError),
    /// Reading or writing table files in the lake failed.
    #[error("Iceberg table files: {0}; run the publisher again")]
    Sink(#[from] SinkError),
    /// A manifest list cannot be read.
    #[error("Iceberg manifest list {location}: {message}")]
    ManifestList {
        /// Its location.
        location: String,
        /// Why.
        message: String,
    },
    /// A location the table records is not in the lake's bucket or folder.
    #[error(
        "Iceberg: {location} is outside the lake ({lake}); the table's files must be where the lake is"
    )]
    Elsewhere {
        /// The location.
        location: String,
        /// The lake's.
        lake: String,
    },
    /// Conflicts kept coming.
    #[error(
        "Iceberg: the commit of window {window} lost {attempts} races with other committers (last: {last}); run the publisher again"
    )]
    Contended {
        /// The window.
        window: String,
        /// Attempts made.
        attempts: u32,
        /// The last conflict.
        last: String,
    },
}

/// What committing a generation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// A new snapshot, with this id.
    Appended(i64),
    /// The table already had it (a re-run after a commit).
    Already(i64),
}

/// Commits before giving up on a contended table.
const MAX_ATTEMPTS: u32 = 8;

/// Where the table's files go for a lake at `prefix`: a lake whose prefix
/// ends in `data` is the data folder of a table at its parent (the layout
/// S3 Tables and other managed catalogs require: `<table>/data`,
/// `<table>/metadata`); any other lake is the table's location and keeps
/// the table's metadata in `_iceberg/metadata/` (a folder Hive-style readers
/// skip). Returns the table location's key and the metadata folder's key.
pub fn layout(prefix: &str) -> (String, String) {
    let p = prefix.trim_end_matches('/');
    match p.strip_suffix("data") {
        Some(parent) if parent.is_empty() || parent.ends_with('/') => {
            let parent = parent.trim_end_matches('/');
            (parent.to_string(), join_prefix(parent, "metadata/"))
        }
        _ => (p.to_string(), join_prefix(p, "_iceberg/metadata/")),
    }
}

/// The catalog of a table: the lake's own, or a service.
enum CatalogRef<'a, O> {
    Lake(LakeCatalog<'a, O>),
    External(&'a dyn Catalog),
}

impl<'a, O: ObjectSink> CatalogRef<'a, O> {
    fn of(sink: &'a O, prefix: &'a str, table: &'a IcebergTable) -> Self {
        match &table.catalog {
            CatalogChoice::Lake => CatalogRef::Lake(LakeCatalog { sink, prefix }),
            CatalogChoice::External(c) => CatalogRef::External(c.as_ref()),
        }
    }

    fn get(&self) -> &dyn Catalog {
        match self {
            CatalogRef::Lake(c) => c,
            CatalogRef::External(c) => *c,
        }
    }
}

/// The table's metadata, the table created first when there is none.
async fn load_or_create<O: ObjectSink>(
    catalog: &dyn Catalog,
    sink: &O,
    prefix: &str,
    wanted: &[(String, &'static str)],
    target_file_bytes: u64,
) -> Result<Loaded, IcebergError> {
    match catalog.load().await? {
        Some(l) => Ok(l),
        None => Ok(catalog
            .create(new_table(sink, prefix, wanted, target_file_bytes))
            .await?),
    }
}

/// The lake's record that it keeps an Iceberg table (which catalog, which
/// table; no secrets): a publisher run without the table's settings then
/// refuses to publish, rather than leave windows out of the table.
pub const TABLE_RECORD: &str = "_iceberg/table.json";

/// The key of the lake's table record.
pub fn table_record_key(prefix: &str) -> String {
    join_prefix(prefix, TABLE_RECORD)
}

/// Records in the lake that it keeps this table (once: a record already
/// there is left as it is).
pub async fn record_table<O: ObjectSink>(
    sink: &O,
    prefix: &str,
    table: &IcebergTable,
) -> Result<(), IcebergError> {
    let catalog = CatalogRef::of(sink, prefix, table);
    let record =
        serde_json::json!({ "table_format": "iceberg", "catalog": catalog.get().describe() });
    sink.put_if_absent(&table_record_key(prefix), Bytes::from(record.to_string()))
        .await?;
    Ok(())
}

/// The table as a generation's publication finds it, and where its data
/// files go.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The key prefix of the data files.
    pub data_prefix: String,
    /// The table's metadata (the commit's first plan starts from it).
    pub loaded: Loaded,
}

/// Loads the table (created when missing) and places its data files: under
/// the lake's own prefix when the table's location is the lake's; else in
/// the table's data folder, `<location>/data` (a catalog that chose the
/// location, as S3 Tables does, takes data files only there).
pub async fn place<O: ObjectSink>(
    sink: &O,
    prefix: &str,
    table: &IcebergTable,
) -> Result<Placed, IcebergError> {
    let catalog = CatalogRef::of(sink, prefix, table);
    let wanted = wanted_columns(&LakeSchema::default(), table.payload_json);
    let loaded = load_or_create(
        catalog.get(),
        sink,
        prefix,
        &wanted,
        table.target_file_bytes,
    )
    .await?;
    let data_prefix = data_prefix_of(sink, prefix, &loaded)?;
    Ok(Placed {
        data_prefix,
        loaded,
    })
}

fn data_prefix_of<O: ObjectSink>(
    sink: &O,
    prefix: &str,
    loaded: &Loaded,
) -> Result<String, IcebergError> {
    let location = loaded
        .metadata
        .get("location")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let location = location.trim_end_matches('/');
    if location == sink.uri(&layout(prefix).0).trim_end_matches('/') {
        return Ok(prefix.to_string());
    }
    let data = format!("{location}/data");
    sink.key_of(&data).ok_or_else(|| IcebergError::Elsewhere {
        location: data,
        lake: sink.uri(""),
    })
}

/// A published generation, as committed to the table.
#[derive(Debug, Clone, Copy)]
pub struct Generation<'a> {
    /// The window's id.
    pub window: &'a str,
    /// The generation.
    pub generation: u32,
    /// Its data files.
    pub files: &'a [TableFile],
    /// The commit's time.
    pub now_ms: i64,
}

/// Commits a published generation's files on top of the table as `loaded`
/// (from [`place`]) describes it: grows its schema, and appends one
/// snapshot, unless one already holds this window's generation; after a
/// conflict, plans again on the table loaded anew.
pub async fn commit_generation<O: ObjectSink>(
    sink: &O,
    prefix: &str,
    table: &IcebergTable,
    lake: &LakeSchema,
    g: &Generation<'_>,
    loaded: Loaded,
) -> Result<Committed, IcebergError> {
    let Generation {
        window,
        generation,
        files,
        now_ms,
    } = *g;
    let catalog = CatalogRef::of(sink, prefix, table);
    let catalog = catalog.get();
    let wanted = wanted_columns(lake, table.payload_json);
    let mut last = String::new();
    let mut next = Some(loaded);
    for _ in 0..MAX_ATTEMPTS {
        let loaded = match next.take() {
            Some(l) => l,
            None => load_or_create(catalog, sink, prefix, &wanted, table.target_file_bytes).await?,
        };
        let meta = &loaded.metadata;
        if let Some(id) = committed_snapshot(meta, window, generation) {
            return Ok(Committed::Already(id));
        }
        let last_id = meta
            .get("last-column-id")
            .and_then(Json::as_i64)
            .unwrap_or(0) as i32;
        let current = current_fields(meta);
        let evolved = evolve(&current, last_id, &wanted);
        let fields = evolved.as_ref().map_or(&current, |(f, _)| f);
        let schema = SchemaPlan {
            evolved: evolved.as_ref(),
            fields,
            lake: &wanted,
        };
        let commit =
            plan_snapshot(sink, meta, &schema, (window, generation), files, now_ms).await?;
        match catalog.commit(&loaded, &commit).await? {
            CommitOutcome::Committed => {
                tracing::info!(
                    window,
                    generation,
                    files = files.len(),
                    "committed to the Iceberg table"
                );
                return Ok(Committed::Appended(snapshot_id(window, generation)));
            }
            CommitOutcome::Conflict(why) => {
                tracing::info!(window, generation, conflict = %why, "Iceberg commit conflict: planning again");
                last = why;
            }
        }
    }
    Err(IcebergError::Contended {
        window: window.to_string(),
        attempts: MAX_ATTEMPTS,
        last,
    })
}

/// The table to create for a lake: fields numbered from 1 in order.
fn new_table<O: ObjectSink>(
    sink: &O,
    prefix: &str,
    wanted: &[(String, &'static str)],
    target: u64,
) -> NewTable {
    let (location, metadata) = layout(prefix);
    let fields: Vec<Field> = wanted
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| Field {
            id: i as i32 + 1,
            name: name.clone(),
            ty: (*ty).to_string(),
        })
        .collect();
    let managed = metadata == join_prefix(&location, "metadata/");
    // the lake's own folder for the table's metadata and for files AWS's
    // compaction writes: `_` folders, which Hive-style readers skip
    let uri = |key: &str| sink.uri(key).trim_end_matches('/').to_string();
    let (data_path, metadata_path) = if managed {
        (None, None)
    } else {
        (
            Some(uri(&join_prefix(&location, "_iceberg/data"))),
            Some(uri(&metadata)),
        )
    };
    NewTable {
        location: uri(&location),
        properties: new_table_properties(
            &fields,
            target,
            data_path.as_deref(),
            metadata_path.as_deref(),
        ),
        fields,
    }
}

/// The table's schema for a commit: the fields after growing (`evolved`,
/// when the lake gained columns), and the lake's own column names.
#[derive(Clone, Copy)]
struct SchemaPlan<'a> {
    evolved: Option<&'a (Vec<Field>, i32)>,
    fields: &'a [Field],
    lake: &'a [(String, &'static str)],
}

/// Writes the manifest and manifest list of the generation's snapshot on
/// top of `meta`, and returns the commit that adds it.
async fn plan_snapshot<O: ObjectSink>(
    sink: &O,
    meta: &Json,
    schema: &SchemaPlan<'_>,
    (window, generation): (&str, u32),
    files: &[TableFile],
    now_ms: i64,
) -> Result<Commit, IcebergError> {
    let SchemaPlan {
        evolved,
        fields,
        lake,
    } = *schema;
    let id = snapshot_id(window, generation);
    let sequence = next_sequence_number(meta);
    let parent = current_snapshot(meta);
    let parent_id = current_snapshot_id(meta);
    let metadata_dir = metadata_folder(sink, meta)?;
    let data_files: Vec<DataFile> = files.iter().map(|f| data_file(sink, f, fields)).collect();
    let schema_id = snapshot_schema_id(meta, evolved.is_some());
    // one name per snapshot and parent: two publishers of one generation on
    // one parent write the same bytes
    let stem = format!("{id}-p{}", parent_id.unwrap_or(0));
    let manifest_key = format!("{metadata_dir}kl-{window}-g{generation:04}-{stem}-m0.avro");
    let body = manifest(
        &schema_json(schema_id, fields).to_string(),
        schema_id,
        &spec_json(fields)["fields"].to_string(),
        id,
        &data_files,
    );
    let ours = manifest_file_of(
        sink.uri(&manifest_key),
        body.len(),
        id,
        sequence,
        &data_files,
    );
    sink.put(&manifest_key, Bytes::from(body)).await?;
    let mut manifests = vec![ours];
    if let Some(list) = parent
        .and_then(|p| p.get("manifest-list"))
        .and_then(Json::as_str)
    {
        manifests.extend(read_list(sink, list).await?);
    }
    let list_key = format!("{metadata_dir}snap-{stem}.avro");
    let list = manifest_list(id, parent_id, sequence, &manifests);
    sink.put(&list_key, Bytes::from(list)).await?;
    let added = (
        data_files.len() as u64,
        files.iter().map(|f| f.rows).sum(),
        files.iter().map(|f| f.bytes).sum(),
    );
    let snap = NewSnapshot {
        id,
        manifest_list: sink.uri(&list_key),
        window,
        generation,
        added,
        timestamp_ms: now_ms,
    };
    Ok(append_commit(meta, evolved, lake, &snap))
}

/// The key of the folder the table's metadata files go in.
fn metadata_folder<O: ObjectSink>(sink: &O, meta: &Json) -> Result<String, IcebergError> {
    let prop = meta
        .pointer("/properties/write.metadata.path")
        .and_then(Json::as_str);
    let location = meta
        .get("location")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let uri = prop.map_or_else(
        || format!("{}/metadata", location.trim_end_matches('/')),
        str::to_string,
    );
    let key = sink.key_of(&uri).ok_or_else(|| IcebergError::Elsewhere {
        location: uri.clone(),
        lake: sink.uri(""),
    })?;
    Ok(format!("{}/", key.trim_end_matches('/')))
}

/// The manifests of a manifest list in the lake.
async fn read_list<O: ObjectSink>(
    sink: &O,
    location: &str,
) -> Result<Vec<crate::core::iceberg::manifest::ManifestFile>, IcebergError> {
    let key = sink
        .key_of(location)
        .ok_or_else(|| IcebergError::Elsewhere {
            location: location.to_string(),
            lake: sink.uri(""),
        })?;
    let body = sink
        .get(&key)
        .await?
        .ok_or_else(|| IcebergError::ManifestList {
            location: location.to_string(),
            message: "it is missing".into(),
        })?;
    read_manifest_list(&body).map_err(|e| IcebergError::ManifestList {
        location: location.to_string(),
        message: e.to_string(),
    })
}

/// A published file's entry: its statistics under the fields' ids.
fn data_file<O: ObjectSink>(sink: &O, f: &TableFile, fields: &[Field]) -> DataFile {
    let columns = f
        .columns
        .iter()
        .filter_map(|c| {
            let id = fields
                .iter()
                .find(|x| same_to_readers(&x.name, &c.name))?
                .id;
            Some(ColumnMetrics {
                id,
                bytes: c.bytes,
                values: c.values,
                nulls: c.nulls,
                floating: c.ty == ColumnType::Double,
                bounds: c.bounds.clone(),
            })
        })
        .collect();
    DataFile {
        path: sink.uri(&f.key),
        partition: PartitionValues::from(&f.partition),
        records: f.rows,
        size: f.bytes,
        columns,
    }
}

/// The lake's own catalog: `vN.metadata.json` files in the table's metadata
/// folder, each created only if absent (two committers: one wins, the other
/// plans again), and `version-hint.text` naming the latest for readers that
/// open the folder (DuckDB's `iceberg_scan`).
struct LakeCatalog<'a, O> {
    sink: &'a O,
    prefix: &'a str,
}

/// The name of metadata version `n`.
fn version_file(n: u64) -> String {
    format!("v{n}.metadata.json")
}

fn version_of(key: &str) -> Option<u64> {
    key.rsplit('/')
        .next()?
        .strip_prefix('v')?
        .strip_suffix(".metadata.json")?
        .parse()
        .ok()
}

impl<O: ObjectSink> LakeCatalog<'_, O> {
    fn folder(&self) -> String {
        layout(self.prefix).1
    }

    fn err(&self, operation: &'static str, e: impl std::fmt::Display) -> CatalogError {
        CatalogError {
            catalog: format!("in the lake, {}", self.sink.uri(&self.folder())),
            operation,
            message: e.to_string(),
        }
    }

    async fn write(&self, n: u64, meta: &Json) -> Result<bool, CatalogError> {
        let key = format!("{}{}", self.folder(), version_file(n));
        let body = serde_json::to_vec_pretty(meta).map_err(|e| self.err("commit", e))?;
        let created = self
            .sink
            .put_if_absent(&key, Bytes::from(body))
            .await
            .map_err(|e| self.err("commit", e))?;
        if created {
            let hint = format!("{}version-hint.text", self.folder());
            self.sink
                .put(&hint, Bytes::from(n.to_string()))
                .await
                .map_err(|e| self.err("commit", e))?;
        }
        Ok(created)
    }
}

impl<O: ObjectSink> Catalog for LakeCatalog<'_, O> {
    fn describe(&self) -> String {
        // relative to the lake: a copied lake's record stays true
        let folder = self.folder();
        let relative = folder.strip_prefix(self.prefix).unwrap_or(&folder);
        format!(
            "the lake's own catalog, in {}",
            relative.trim_start_matches('/')
        )
    }

    fn load(&self) -> BoxFuture<'_, Result<Option<Loaded>, CatalogError>> {
        Box::pin(async move {
            let keys = self
                .sink
                .list(&self.folder())
                .await
                .map_err(|e| self.err("load", e))?;
            let Some((_, key)) = keys
                .iter()
                .filter_map(|k| version_of(k).map(|n| (n, k)))
                .max()
            else {
                return Ok(None);
            };
            let body = self.sink.get(key).await.map_err(|e| self.err("load", e))?;
            let body =
                body.ok_or_else(|| self.err("load", format!("{key} vanished while it was read")))?;
            let metadata = serde_json::from_slice(&body)
                .map_err(|e| self.err("load", format!("{key}: {e}")))?;
            Ok(Some(Loaded {
                metadata,
                metadata_location: self.sink.uri(key),
            }))
        })
    }

    fn create(&self, table: NewTable) -> BoxFuture<'_, Result<Loaded, CatalogError>> {
        Box::pin(async move {
            let uuid = uuid::Uuid::now_v7().to_string();
            let now = chrono::Utc::now().timestamp_millis();
            let meta = new_metadata(
                &table.location,
                &uuid,
                &table.fields,
                &table.properties,
                now,
            );
            self.write(1, &meta).await?;
            // ours, or the one another committer created first
            self.load().await?.ok_or_else(|| {
                self.err(
                    "create",
                    "the table's first metadata file is not there after it was written",
                )
            })
        })
    }

    fn commit<'a>(
        &'a self,
        current: &'a Loaded,
        commit: &'a Commit,
    ) -> BoxFuture<'a, Result<CommitOutcome, CatalogError>> {
        Box::pin(async move {
            let Some(n) = version_of(&current.metadata_location) else {
                return Err(self.err(
                    "commit",
                    format!("{} is not a vN.metadata.json", current.metadata_location),
                ));
            };
            let now = chrono::Utc::now().timestamp_millis();
            let next = match crate::core::iceberg::table::apply(
                &current.metadata,
                commit,
                &current.metadata_location,
                now,
            ) {
                Ok(m) => m,
                Err(why) => return Ok(CommitOutcome::Conflict(why)),
            };
            if self.write(n + 1, &next).await? {
                Ok(CommitOutcome::Committed)
            } else {
                Ok(CommitOutcome::Conflict(format!(
                    "{} was written by another committer",
                    version_file(n + 1)
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::core::iceberg::table::{append_commit, current_snapshot};
    use crate::core::partition::PartitionKey;
    use crate::memory::MemSink;

    fn file(key: &str) -> TableFile {
        TableFile {
            key: key.into(),
            partition: PartitionKey {
                event_type: "a".into(),
                event_subtype: None,
                event_date: NaiveDate::from_ymd_opt(2024, 3, 17).expect("date"),
            },
            rows: 2,
            bytes: 10,
            columns: vec![],
        }
    }

    #[tokio::test]
    async fn the_lake_catalog_chains_snapshots_refuses_a_stale_commit_and_finds_a_committed_window()
    {
        let sink = MemSink::default();
        let table = IcebergTable {
            catalog: CatalogChoice::Lake,
            payload_json: false,
            target_file_bytes: 1 << 20,
        };
        let lake = LakeSchema::default();
        fn generation<'a>(window: &'a str, files: &'a [TableFile]) -> Generation<'a> {
            Generation {
                window,
                generation: 0,
                files,
                now_ms: 1,
            }
        }
        let commit = |w: &'static str, key: &'static str| {
            let (sink, table, lake) = (&sink, &table, &lake);
            async move {
                let placed = place(sink, "lake", table).await?;
                assert_eq!(
                    placed.data_prefix, "lake",
                    "the lake's own table: data in the lake"
                );
                let files = [file(key)];
                commit_generation(
                    sink,
                    "lake",
                    table,
                    lake,
                    &generation(w, &files),
                    placed.loaded,
                )
                .await
            }
        };
        let first = commit("w1", "lake/a/1.parquet").await.expect("first");
        let catalog = LakeCatalog {
            sink: &sink,
            prefix: "lake",
        };
        let stale = catalog.load().await.expect("load").expect("a table");
        let second = commit("w2", "lake/a/2.parquet").await.expect("second");
        assert!(matches!(
            (first, second),
            (Committed::Appended(_), Committed::Appended(_))
        ));

        // a commit planned before the second landed is refused, not applied
        let snap = crate::core::iceberg::table::NewSnapshot {
            id: 7,
            manifest_list: "memory:///x.avro".into(),
            window: "w3",
            generation: 0,
            added: (1, 1, 1),
            timestamp_ms: 3,
        };
        let outcome = catalog
            .commit(&stale, &append_commit(&stale.metadata, None, &[], &snap))
            .await;
        assert!(
            matches!(outcome, Ok(CommitOutcome::Conflict(_))),
            "{outcome:?}"
        );

        // the window already committed is found, not appended again
        assert_eq!(
            commit("w1", "lake/a/1.parquet").await.expect("re-run"),
            Committed::Already(snapshot_id("w1", 0))
        );
        let now = catalog.load().await.expect("load").expect("a table");
        let current = current_snapshot(&now.metadata).expect("a snapshot");
        let list = current["manifest-list"].as_str().expect("a manifest list");
        let body = sink
            .get(&sink.key_of(list).expect("in the lake"))
            .await
            .expect("get")
            .expect("there");
        let manifests = read_manifest_list(&body).expect("readable");
        assert_eq!(
            manifests.len(),
            2,
            "the second snapshot holds both windows' manifests"
        );
        assert_eq!(now.metadata["snapshots"].as_array().map(Vec::len), Some(2));
        let hint = sink
            .get("lake/_iceberg/metadata/version-hint.text")
            .await
            .expect("get");
        assert_eq!(hint.as_deref(), Some(&b"3"[..]));

        // a generation placed on the stale table plans again after the conflict
        let files = [file("lake/a/3.parquet")];
        let third = commit_generation(
            &sink,
            "lake",
            &table,
            &lake,
            &generation("w3", &files),
            stale,
        )
        .await
        .expect("third");
        assert_eq!(third, Committed::Appended(snapshot_id("w3", 0)));
        let now = catalog.load().await.expect("load").expect("a table");
        assert_eq!(now.metadata["snapshots"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn a_lake_ending_in_data_is_the_data_folder_of_its_table() {
        assert_eq!(
            layout("ns/events/data"),
            ("ns/events".into(), "ns/events/metadata/".into())
        );
        assert_eq!(layout("data/"), (String::new(), "metadata/".into()));
        assert_eq!(
            layout("lake"),
            ("lake".into(), "lake/_iceberg/metadata/".into())
        );
        assert_eq!(layout(""), (String::new(), "_iceberg/metadata/".into()));
        assert_eq!(
            layout("metadata"),
            ("metadata".into(), "metadata/_iceberg/metadata/".into())
        );
        assert_eq!(
            layout("bigdata"),
            ("bigdata".into(), "bigdata/_iceberg/metadata/".into())
        );
    }

    #[test]
    fn metadata_versions_are_read_from_their_names() {
        assert_eq!(
            version_of("a/_iceberg/metadata/v12.metadata.json"),
            Some(12)
        );
        assert_eq!(version_of("a/_iceberg/metadata/version-hint.text"), None);
        assert_eq!(version_of("snap-1.avro"), None);
    }
}
