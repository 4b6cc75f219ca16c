//! The schema registry: versions of the [`LakeSchema`] stored beside the lake
//! as `_schemas/v0000000001.json`, ... Each version is created with a
//! create-if-absent write, so of two writers racing to commit the same version
//! exactly one wins; the loser reads the winner's version and plans again
//! against it. Nothing a writer holds is lost: its values are routed by the
//! version it finally commits or finds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::core::partition::join_prefix;
use crate::core::schema::{BatchStats, LakeSchema};
use crate::core::sink::{ObjectSink, SinkError};

/// The folder of schema versions, relative to the lake root.
pub const SCHEMA_DIR: &str = "_schemas";

/// Attempts to commit before giving up (each lost race means another writer
/// made progress, so this only runs out under extreme contention).
const MAX_ATTEMPTS: usize = 32;

/// A registry failure: the batch's data files are not written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Reading or writing a schema version failed.
    #[error("schema registry: {0}")]
    Sink(#[from] SinkError),
    /// A stored version is not a schema document.
    #[error("schema registry: {key} is not a valid schema document: {message}")]
    Corrupt {
        /// The object key.
        key: String,
        /// The parse error.
        message: String,
    },
    /// Too many lost races in a row.
    #[error("schema registry: gave up after {0} lost races to commit a new version; retry")]
    Contended(usize),
}

/// The lake's summary file, relative to the lake root: a Parquet file with
/// no rows and the whole lake schema (every column of every version, the
/// partition columns last), where pyarrow, polars, pandas and Spark look for
/// a dataset's schema (the Parquet summary-file convention).
pub const COMMON_METADATA: &str = "_common_metadata";

/// The key-value metadata key of the schema version a summary file holds.
const VERSION_METADATA_KEY: &str = "kinesis_lake.schema_version";

/// The key of the lake's summary file.
pub fn common_metadata_key(prefix: &str) -> String {
    join_prefix(prefix, COMMON_METADATA)
}

/// The summary file of a schema version: no row groups; the fixed columns
/// (required, as in every data file), `payload_json` (optional: only files
/// written with it carry it), every schema column, then the partition columns
/// as strings. Deterministic for a version, so racing writes of one version
/// put the same bytes.
pub fn common_metadata(schema: &LakeSchema) -> Vec<u8> {
    use crate::core::columns::{FIXED_COLUMN_NAMES, PAYLOAD_JSON_COLUMN};
    use crate::core::encode::column_type;
    use crate::core::parquet_file::{Codec, ColumnSpec, ColumnType, FileWriter};
    use crate::core::partition::PARTITION_COLUMNS;
    let spec = |name: &str, ty, required| ColumnSpec {
        name: name.to_string(),
        ty,
        required,
        bytes_per_row: 0,
    };
    let fixed_types = [
        ColumnType::String,
        ColumnType::String,
        ColumnType::Double,
        ColumnType::String,
    ];
    let mut specs: Vec<ColumnSpec> = FIXED_COLUMN_NAMES
        .iter()
        .zip(fixed_types)
        .map(|(n, t)| spec(n, t, true))
        .collect();
    specs.push(spec(PAYLOAD_JSON_COLUMN, ColumnType::String, false));
    specs.extend(
        schema
            .columns
            .iter()
            .map(|c| spec(&c.name, column_type(c.kind), false)),
    );
    specs.extend(
        PARTITION_COLUMNS
            .iter()
            .map(|p| spec(p, ColumnType::String, false)),
    );
    let version = schema.version.to_string();
    FileWriter::new(Codec::Uncompressed, specs).finish(
        concat!("kinesis-lake version ", env!("CARGO_PKG_VERSION")),
        &[
            ("kinesis_lake.format", "1"),
            (VERSION_METADATA_KEY, &version),
        ],
    )
}

/// The schema version the lake's summary file holds (0 when there is none
/// or it cannot be read: it is then written again).
async fn common_metadata_version<O: ObjectSink>(sink: &O, prefix: &str) -> Result<u64, SinkError> {
    let Some(body) = sink.get(&common_metadata_key(prefix)).await? else {
        return Ok(0);
    };
    let version = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&body)
        .ok()
        .and_then(|m| {
            m.file_metadata()
                .key_value_metadata()?
                .iter()
                .find(|kv| kv.key == VERSION_METADATA_KEY)?
                .value
                .as_deref()?
                .parse()
                .ok()
        });
    Ok(version.unwrap_or(0))
}

/// Writes the summary file of `schema`, then, if a newer version was
/// committed meanwhile, of the newest: whichever writer finishes last has
/// seen the newest version, so the newest wins a race. A failure is logged,
/// not returned: data files do not depend on the summary (it is written
/// again after the next batch). Returns whether it was written.
async fn publish_common_metadata<O: ObjectSink>(
    sink: &O,
    prefix: &str,
    schema: &LakeSchema,
) -> bool {
    let mut schema = std::borrow::Cow::Borrowed(schema);
    for _ in 0..MAX_ATTEMPTS {
        let key = common_metadata_key(prefix);
        if let Err(e) = sink.put(&key, Bytes::from(common_metadata(&schema))).await {
            tracing::warn!(key, error = %e, "could not write the lake's summary file; readers that take the lake schema from it see an older one until the next batch writes it");
            return false;
        }
        let mut newest = None;
        while let Ok(Some(v)) = read_version(
            sink,
            prefix,
            newest
                .as_ref()
                .map_or(schema.version, |n: &LakeSchema| n.version)
                + 1,
        )
        .await
        {
            newest = Some(v);
        }
        match newest {
            Some(n) => schema = std::borrow::Cow::Owned(n),
            None => return true,
        }
    }
    true
}

/// Brings the lake's summary file up to the newest schema `cache` knows:
/// call after each batch (its data files are written by then). Costs nothing
/// when the version is already published; the first call of a process reads
/// the summary's version (a lake from before summary files, or a writer that
/// stopped between a commit and its summary, gets one).
pub async fn publish_summary<O: ObjectSink>(sink: &O, prefix: &str, cache: &SchemaCache) {
    let Some(schema) = cache.get() else { return };
    let published = cache.1.load(Ordering::Acquire);
    if schema.version <= published {
        return;
    }
    if published == 0 {
        match common_metadata_version(sink, prefix).await {
            Ok(v) if v >= schema.version => {
                cache.1.fetch_max(v, Ordering::AcqRel);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not read the lake's summary file; writing it again");
            }
        }
    }
    if publish_common_metadata(sink, prefix, &schema).await {
        cache.1.fetch_max(schema.version, Ordering::AcqRel);
    }
}

/// The key of a schema version.
pub fn version_key(prefix: &str, version: u64) -> String {
    join_prefix(prefix, &format!("{SCHEMA_DIR}/v{version:010}.json"))
}

fn version_of(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?;
    name.strip_prefix('v')?.strip_suffix(".json")?.parse().ok()
}

/// The latest schema this process knows, shared by every batch it runs, and
/// the newest version whose summary file it knows to be in the lake.
#[derive(Debug, Clone, Default)]
pub struct SchemaCache(Arc<Mutex<Option<Arc<LakeSchema>>>>, Arc<AtomicU64>);

impl SchemaCache {
    /// A cache that already holds `schema` (as if this process had read it).
    pub fn holding(schema: LakeSchema) -> SchemaCache {
        SchemaCache(Arc::new(Mutex::new(Some(Arc::new(schema)))), Arc::default())
    }

    fn get(&self) -> Option<Arc<LakeSchema>> {
        self.0.lock().ok().and_then(|g| g.clone())
    }

    fn offer(&self, s: Arc<LakeSchema>) {
        if let Ok(mut g) = self.0.lock()
            && g.as_ref().is_none_or(|cur| cur.version < s.version)
        {
            *g = Some(s);
        }
    }
}

async fn read_version<O: ObjectSink>(
    sink: &O,
    prefix: &str,
    version: u64,
) -> Result<Option<LakeSchema>, RegistryError> {
    let key = version_key(prefix, version);
    let Some(body) = sink.get(&key).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| RegistryError::Corrupt {
            key,
            message: e.to_string(),
        })
}

/// The latest committed schema (version 0, empty, when none is).
pub async fn load_latest<O: ObjectSink>(
    sink: &O,
    prefix: &str,
) -> Result<LakeSchema, RegistryError> {
    let dir = join_prefix(prefix, &format!("{SCHEMA_DIR}/"));
    let latest = sink
        .list(&dir)
        .await?
        .iter()
        .filter_map(|k| version_of(k))
        .max();
    let Some(v) = latest else {
        return Ok(LakeSchema::default());
    };
    let mut schema =
        read_version(sink, prefix, v)
            .await?
            .ok_or_else(|| RegistryError::Corrupt {
                key: version_key(prefix, v),
                message: "listed but not readable".into(),
            })?;
    // versions committed after the listing
    while let Some(next) = read_version(sink, prefix, schema.version + 1).await? {
        schema = next;
    }
    Ok(schema)
}

/// All committed versions, oldest first (for `kinesis-lake schema`).
pub async fn history<O: ObjectSink>(
    sink: &O,
    prefix: &str,
) -> Result<Vec<LakeSchema>, RegistryError> {
    let dir = join_prefix(prefix, &format!("{SCHEMA_DIR}/"));
    let mut versions: Vec<u64> = sink
        .list(&dir)
        .await?
        .iter()
        .filter_map(|k| version_of(k))
        .collect();
    versions.sort_unstable();
    let mut out = Vec::with_capacity(versions.len());
    for v in versions {
        if let Some(s) = read_version(sink, prefix, v).await? {
            out.push(s);
        }
    }
    Ok(out)
}

/// A committed schema that holds every value of the batch: the cached one when
/// it does, else a new version committed (or found committed by another writer).
pub async fn ensure<O: ObjectSink>(
    sink: &O,
    prefix: &str,
    cache: &SchemaCache,
    stats: &BatchStats,
) -> Result<Arc<LakeSchema>, RegistryError> {
    let mut current = match cache.get() {
        Some(s) => s,
        None => {
            let s = Arc::new(load_latest(sink, prefix).await?);
            cache.offer(s.clone());
            s
        }
    };
    for _ in 0..MAX_ATTEMPTS {
        let Some(next) = current.plan(stats) else {
            return Ok(current);
        };
        let body = serde_json::to_vec_pretty(&next).map_err(|e| RegistryError::Corrupt {
            key: version_key(prefix, next.version),
            message: e.to_string(),
        })?;
        if sink
            .put_if_absent(&version_key(prefix, next.version), Bytes::from(body))
            .await?
        {
            tracing::info!(
                version = next.version,
                columns = next.columns.len(),
                "committed a new lake schema version"
            );
            let next = Arc::new(next);
            cache.offer(next.clone());
            return Ok(next);
        }
        // lost the race: catch up with what the others committed, plan again
        let mut newer = (*current).clone();
        while let Some(v) = read_version(sink, prefix, newer.version + 1).await? {
            newer = v;
        }
        current = Arc::new(newer);
        cache.offer(current.clone());
    }
    Err(RegistryError::Contended(MAX_ATTEMPTS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::value::Cell;
    use crate::memory::MemSink;

    fn stats(table: &str, field: &str, cell: Cell<'static>) -> BatchStats {
        let mut s = BatchStats::new();
        s.entry(table.into())
            .or_default()
            .entry(field.into())
            .or_default()
            .add(&cell);
        s
    }

    #[tokio::test]
    async fn a_new_field_commits_version_one_and_the_same_again_commits_nothing() {
        let sink = MemSink::default();
        let cache = SchemaCache::default();
        let s = ensure(&sink, "p", &cache, &stats("t", "a", Cell::Int(1)))
            .await
            .expect("ensure");
        assert_eq!(s.version, 1);
        let again = ensure(&sink, "p", &cache, &stats("t", "a", Cell::Int(2)))
            .await
            .expect("ensure");
        assert_eq!(again.version, 1);
        assert_eq!(
            sink.list("p/_schemas/").await.expect("list"),
            ["p/_schemas/v0000000001.json"]
        );
    }

    /// The column names and schema version of the lake's summary file.
    async fn summary(sink: &MemSink, prefix: &str) -> (Vec<String>, u64) {
        let body = sink
            .get(&common_metadata_key(prefix))
            .await
            .expect("get")
            .expect("a summary file");
        let meta = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&body)
            .expect("a Parquet footer");
        assert_eq!(meta.num_row_groups(), 0);
        let names = meta
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let version = common_metadata_version(sink, prefix).await.expect("read");
        (names, version)
    }

    #[tokio::test]
    async fn every_version_commit_writes_the_whole_lake_schema_as_the_summary_file() {
        let sink = MemSink::default();
        let cache = SchemaCache::default();
        ensure(&sink, "p", &cache, &stats("t", "a", Cell::Int(1)))
            .await
            .expect("v1");
        publish_summary(&sink, "p", &cache).await;
        assert_eq!(summary(&sink, "p").await.1, 1);
        ensure(&sink, "p", &cache, &stats("u:v", "b", Cell::Bool(true)))
            .await
            .expect("v2");
        publish_summary(&sink, "p", &cache).await;
        let (names, version) = summary(&sink, "p").await;
        assert_eq!(version, 2);
        assert_eq!(
            names,
            [
                "event_uuid",
                "event_name",
                "created_at",
                "created_datetime",
                "payload_json",
                "a",
                "b",
                "event_type",
                "event_subtype",
                "event_date"
            ]
        );
        // a writer that raced and puts an older version's summary last: it
        // sees the newer version and puts that one again
        let v1 = read_version(&sink, "p", 1)
            .await
            .expect("read")
            .expect("v1");
        publish_common_metadata(&sink, "p", &v1).await;
        assert_eq!(summary(&sink, "p").await.1, 2);
        // a lake from before summary files gets one when a writer starts
        let old = MemSink::default();
        let body = serde_json::to_vec(&v1).expect("json");
        old.put(&version_key("", 1), Bytes::from(body))
            .await
            .expect("put");
        let cache = SchemaCache::default();
        ensure(&old, "", &cache, &stats("t", "a", Cell::Int(2)))
            .await
            .expect("no new version");
        publish_summary(&old, "", &cache).await;
        assert_eq!(summary(&old, "").await.1, 1);
    }

    #[tokio::test]
    async fn racing_writers_agree_on_one_base_type() {
        let sink = MemSink::default();
        let (c1, c2) = (SchemaCache::default(), SchemaCache::default());
        // both have read the empty schema; each sees a different first type
        c1.offer(Arc::new(LakeSchema::default()));
        c2.offer(Arc::new(LakeSchema::default()));
        let a = ensure(&sink, "", &c1, &stats("t", "amount", Cell::Int(1)))
            .await
            .expect("a");
        // b's version 1 (amount: double) loses; it reads a's and adds a variant
        let b = ensure(&sink, "", &c2, &stats("t", "amount", Cell::Double(1.5)))
            .await
            .expect("b");
        assert_eq!(a.version, 1);
        assert_eq!(b.version, 2);
        assert_eq!(
            b.base("amount").map(|c| c.kind),
            a.base("amount").map(|c| c.kind)
        );
        assert!(
            b.variant("amount", crate::core::value::Kind::Double)
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_stale_cache_loses_the_race_and_catches_up() {
        let sink = MemSink::default();
        let stale = SchemaCache::default();
        ensure(&sink, "", &stale, &stats("t", "x", Cell::Int(1)))
            .await
            .expect("v1");
        // another process commits v2 behind this cache's back
        let other = SchemaCache::default();
        ensure(&sink, "", &other, &stats("t", "y", Cell::Bool(true)))
            .await
            .expect("v2");
        // this process now needs z: its v2 attempt loses, it reads v2, commits v3
        let s = ensure(&sink, "", &stale, &stats("t", "z", Cell::Int(1)))
            .await
            .expect("v3");
        assert_eq!(s.version, 3);
        for f in ["x", "y", "z"] {
            assert!(s.base(f).is_some(), "{f} kept");
        }
        assert_eq!(load_latest(&sink, "").await.expect("latest").version, 3);
        assert_eq!(history(&sink, "").await.expect("history").len(), 3);
    }
}
