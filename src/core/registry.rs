//! The schema registry: versions of the [`LakeSchema`] stored beside the lake
//! as `_schemas/v0000000001.json`, ... Each version is created with a
//! create-if-absent write, so of two writers racing to commit the same version
//! exactly one wins; the loser reads the winner's version and plans again
//! against it. Nothing a writer holds is lost: its values are routed by the
//! version it finally commits or finds.

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

/// The key of a schema version.
pub fn version_key(prefix: &str, version: u64) -> String {
    join_prefix(prefix, &format!("{SCHEMA_DIR}/v{version:010}.json"))
}

fn version_of(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?;
    name.strip_prefix('v')?.strip_suffix(".json")?.parse().ok()
}

/// The latest schema this process knows, shared by every batch it runs.
#[derive(Debug, Clone, Default)]
pub struct SchemaCache(Arc<Mutex<Option<Arc<LakeSchema>>>>);

impl SchemaCache {
    /// A cache that already holds `schema` (as if this process had read it).
    pub fn holding(schema: LakeSchema) -> SchemaCache {
        SchemaCache(Arc::new(Mutex::new(Some(Arc::new(schema)))))
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
    use crate::core::encode::Cell;
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
            b.variant("amount", crate::core::encode::Kind::Double)
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
