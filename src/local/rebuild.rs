//! Rebuilding a folder lake's dedup store from the lake's own files, for a
//! store that was lost or damaged: every data file's `event_uuid` column and
//! every dead letter's origin are claimed again, each for the file it was
//! found in. The dedup protocol then finds every event of a re-run a
//! duplicate (its claim names a file that exists), as with the original store.
//!
//! Also the check that keeps a lake with data but no store from being
//! ingested into: without its claims, every event would be written again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::core::dedup::{Claim, ClaimOutcome, DedupStore as _};
use crate::core::partition::ERRORS_DIR;
use crate::local::redb_store::{self, RedbStore};
use crate::record::Origin;

use crate::core::window::{STAGING_DIR, STAGING_SUFFIX};

/// The owner recorded for the claims of a data file's events: the record
/// that first carried the event is not known any more, and is not needed
/// (a held claim whose file exists makes every later copy a duplicate).
pub const REBUILT_OWNER: &str = "rebuilt";

/// Claims written per store transaction (one fsync each).
const CLAIMS_PER_TRANSACTION: usize = 200_000;

/// A rebuild that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// There already is a store: it is never overwritten.
    #[error(
        "{0} already exists: rebuild-state never overwrites a dedup store. If it is damaged, move it aside first (mv {0} {0}.damaged) and run rebuild-state again"
    )]
    StoreExists(PathBuf),
    /// The lake folder does not exist.
    #[error("{0} is not a lake folder")]
    NotALake(PathBuf),
    /// A file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed, and what to do.
        message: String,
    },
    /// Writing the new store failed.
    #[error("writing the new dedup store {path}: {message}")]
    Store {
        /// The store being written.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildSummary {
    /// Data files read.
    pub data_files: u64,
    /// Events claimed from them.
    pub events: u64,
    /// Dead-letter files read.
    pub dead_letter_files: u64,
    /// Rejected records claimed from them.
    pub dead_letters: u64,
    /// Event uuids found in more than one data file (the lake holds them
    /// more than once; the first file found keeps the claim).
    pub duplicated_uuids: u64,
    /// One such uuid and two files holding it, to say where to look.
    pub duplicate_example: Option<(String, String, String)>,
    /// Dead-letter lines whose origin could not be read (a re-run would
    /// dead-letter their records again).
    pub unreadable_dead_letters: u64,
    /// Staging objects read (staged events not yet published).
    pub staging_objects: u64,
    /// Staged events claimed from them, each for its staging object.
    pub staged_events: u64,
    /// Wall time, seconds.
    pub elapsed_s: f64,
}

/// Whether a top-level entry of the lake is a partition folder (not `_…`
/// or hidden).
fn is_partition_entry(name: &str) -> bool {
    !name.starts_with(['_', '.'])
}

/// Every file under `dir` whose name ends with `ext`, skipping hidden
/// entries (temporary files), sorted.
fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) -> Result<(), RebuildError> {
    let read_err = |path: &Path, e: std::io::Error| RebuildError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(read_err(&d, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| read_err(&d, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let kind = entry.file_type().map_err(|e| read_err(&entry.path(), e))?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if name.ends_with(ext) {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(())
}

/// The lake's data files (`*.parquet` in its partition folders), sorted.
fn data_files(lake: &Path) -> Result<Vec<PathBuf>, RebuildError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(lake).map_err(|e| RebuildError::Read {
        path: lake.to_path_buf(),
        message: e.to_string(),
    })?;
    for entry in entries.flatten() {
        if is_partition_entry(&entry.file_name().to_string_lossy()) && entry.path().is_dir() {
            files_under(&entry.path(), ".parquet", &mut out)?;
        }
    }
    out.sort();
    Ok(out)
}

/// A file that shows the lake holds data: a data file, a dead letter or a
/// staging object. `None` for a new or empty lake.
pub fn data_evidence(lake: &Path) -> Result<Option<PathBuf>, RebuildError> {
    if !lake.is_dir() {
        return Ok(None);
    }
    if let Some(f) = data_files(lake)?.into_iter().next() {
        return Ok(Some(f));
    }
    for (dir, ext) in [(ERRORS_DIR, ".ndjson"), (STAGING_DIR, "")] {
        let mut found = Vec::new();
        files_under(&lake.join(dir), ext, &mut found)?;
        if let Some(f) = found.into_iter().next() {
            return Ok(Some(f));
        }
    }
    Ok(None)
}

/// Refuses a lake that holds data but has no dedup store: ingesting into it
/// would write every event it already holds again. Says what to do.
pub fn check_store_present(lake: &Path) -> anyhow::Result<()> {
    let store = redb_store::default_path(lake);
    if store.exists() {
        return Ok(());
    }
    if let Some(evidence) = data_evidence(lake)? {
        anyhow::bail!(
            "the lake {} holds data ({}) but has no dedup store ({}): ingesting now would write \
             every event it already holds again. Rebuild the store from the lake's files with \
             `kinesis-lake rebuild-state --lake {}`, then run the same ingest again",
            lake.display(),
            evidence.display(),
            store.display(),
            lake.display(),
        );
    }
    Ok(())
}

/// A file's key in the lake: its path relative to the root, `/`-separated.
fn key_of(lake: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(lake).unwrap_or(file);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The `event_uuid` values of a data file (only that column is read).
fn event_uuids(path: &Path) -> Result<Vec<String>, RebuildError> {
    use arrow::array::{Array as _, AsArray as _};
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let err = |message: String| RebuildError::Read {
        path: path.to_path_buf(),
        message: format!(
            "{message}; if the file is damaged, move it out of the lake (its events would be \
             written again if their input is ingested again) and run rebuild-state again"
        ),
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| err(e.to_string()))?;
    let schema = builder.parquet_schema();
    let Some(index) = (0..schema.num_columns()).find(|&i| schema.column(i).name() == "event_uuid")
    else {
        return Err(err("it has no event_uuid column".into()));
    };
    let mask = ProjectionMask::leaves(schema, [index]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        let column = batch.column(0);
        let Some(values) = column.as_string_opt::<i32>() else {
            return Err(err(format!(
                "its event_uuid column is {}, not a string",
                column.data_type()
            )));
        };
        if values.null_count() > 0 {
            return Err(err("its event_uuid column has nulls".into()));
        }
        out.extend(values.iter().flatten().map(str::to_string));
    }
    Ok(out)
}

/// The record origin a dead-letter line names (its `origin` field).
fn origin_of(line: &serde_json::Value) -> Option<Origin> {
    let o = line.get("origin")?;
    let text = |k: &str| o.get(k)?.as_str().map(str::to_string);
    match o.get("kind")?.as_str()? {
        "file" => Some(Origin::File {
            path: text("path")?,
            line: o.get("line")?.as_u64()?,
        }),
        "kinesis" => Some(Origin::Kinesis {
            stream: text("stream")?,
            shard_id: text("shard_id")?,
            sequence_number: text("sequence_number")?,
            sub_sequence_number: o.get("sub_sequence_number").and_then(|v| v.as_u64()),
            arrival_ms: None,
        }),
        _ => None,
    }
}

/// The claims to write: (claim key, owner, object key number).
type Pending = Vec<(String, String, usize)>;

/// The `(event_uuid, owner)` of every event staged in a staging object.
fn staged_claims(path: &Path, key: &str) -> Result<Vec<(String, String)>, RebuildError> {
    use crate::core::staging::{read_header, section_bytes, section_events};
    let read_err = |message: String| RebuildError::Read {
        path: path.to_path_buf(),
        message,
    };
    let body = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
    let header = read_header(key, &body).map_err(|e| read_err(e.to_string()))?;
    let mut out = Vec::with_capacity(header.rows as usize);
    for section in &header.sections {
        let bytes = section_bytes(key, &body, section).map_err(|e| read_err(e.to_string()))?;
        for staged in section_events(key, section, &bytes).map_err(|e| read_err(e.to_string()))? {
            // a staged event passed validation when it was staged
            if let Ok(event) = crate::core::enrich::enrich(staged.json, header.created_at_unit) {
                out.push((event.event_uuid.into_owned(), staged.owner.to_string()));
            }
        }
    }
    Ok(out)
}

/// Writes the pending claims in one transaction; counts the uuids already
/// claimed for another file.
async fn flush(
    store: &RedbStore,
    store_path: &Path,
    pending: &mut Pending,
    keys: &[String],
    summary: &mut RebuildSummary,
) -> Result<(), RebuildError> {
    if pending.is_empty() {
        return Ok(());
    }
    let claims: Vec<Claim<'_>> = pending
        .iter()
        .map(|(uuid, owner, key)| Claim {
            event_uuid: uuid,
            owner,
            object_key: &keys[*key],
        })
        .collect();
    let now = chrono::Utc::now().timestamp();
    for (outcome, (uuid, _, key)) in store.claim(&claims, now).await.into_iter().zip(&*pending) {
        match outcome {
            Ok(ClaimOutcome::Claimed) => {}
            Ok(ClaimOutcome::Held(h)) => {
                if h.object_key != keys[*key] {
                    summary.duplicated_uuids += 1;
                    summary
                        .duplicate_example
                        .get_or_insert_with(|| (uuid.clone(), h.object_key, keys[*key].clone()));
                }
            }
            Err(e) => {
                return Err(RebuildError::Store {
                    path: store_path.to_path_buf(),
                    message: e.to_string(),
                });
            }
        }
    }
    pending.clear();
    Ok(())
}

/// Rebuilds `LAKE/_state/dedup.redb` from the lake's files. Refuses if a
/// store exists. The store is written under a temporary name and renamed
/// into place when complete, so an interrupted rebuild leaves no store that
/// lacks claims (run it again).
///
/// The events of staging objects not yet published are claimed for their
/// staging object, with the owner each was staged by.
pub async fn rebuild_state(lake: &Path) -> Result<RebuildSummary, RebuildError> {
    let started = Instant::now();
    if !lake.is_dir() {
        return Err(RebuildError::NotALake(lake.to_path_buf()));
    }
    let target = redb_store::default_path(lake);
    if target.exists() {
        return Err(RebuildError::StoreExists(target));
    }
    let building = target.with_extension("redb.rebuilding");
    let store_err = |message: String| RebuildError::Store {
        path: target.clone(),
        message,
    };
    // left by an interrupted rebuild: ours, and incomplete
    match std::fs::remove_file(&building) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(store_err(format!("removing {}: {e}", building.display()))),
    }
    let mut summary = RebuildSummary::default();
    {
        let store = RedbStore::open(&building).map_err(|e| store_err(e.to_string()))?;
        let mut keys: Vec<String> = Vec::new();
        let mut pending: Pending = Vec::new();
        for file in data_files(lake)? {
            let uuids = event_uuids(&file)?;
            summary.data_files += 1;
            summary.events += uuids.len() as u64;
            keys.push(key_of(lake, &file));
            let k = keys.len() - 1;
            pending.extend(uuids.into_iter().map(|u| (u, REBUILT_OWNER.to_string(), k)));
            if pending.len() >= CLAIMS_PER_TRANSACTION {
                flush(&store, &target, &mut pending, &keys, &mut summary).await?;
            }
        }
        let mut dead = Vec::new();
        files_under(&lake.join(ERRORS_DIR), ".ndjson", &mut dead)?;
        for file in dead {
            let body = std::fs::read_to_string(&file).map_err(|e| RebuildError::Read {
                path: file.clone(),
                message: e.to_string(),
            })?;
            summary.dead_letter_files += 1;
            keys.push(key_of(lake, &file));
            let k = keys.len() - 1;
            for (n, line) in body
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let origin = serde_json::from_str(line).ok().and_then(|v| origin_of(&v));
                let Some(origin) = origin else {
                    tracing::warn!(file = %file.display(), line = n + 1, "dead letter without a readable origin: its record would be dead-lettered again if ingested again");
                    summary.unreadable_dead_letters += 1;
                    continue;
                };
                let owner = origin.owner();
                // the key the pipeline claims a rejected record under
                pending.push((format!("rejected:{owner}"), owner, k));
                summary.dead_letters += 1;
            }
            if pending.len() >= CLAIMS_PER_TRANSACTION {
                flush(&store, &target, &mut pending, &keys, &mut summary).await?;
            }
        }
        let mut staged = Vec::new();
        files_under(&lake.join(STAGING_DIR), STAGING_SUFFIX, &mut staged)?;
        for file in staged {
            keys.push(key_of(lake, &file));
            let k = keys.len() - 1;
            let events = staged_claims(&file, &keys[k])?;
            summary.staging_objects += 1;
            summary.staged_events += events.len() as u64;
            pending.extend(events.into_iter().map(|(uuid, owner)| (uuid, owner, k)));
            if pending.len() >= CLAIMS_PER_TRANSACTION {
                flush(&store, &target, &mut pending, &keys, &mut summary).await?;
            }
        }
        flush(&store, &target, &mut pending, &keys, &mut summary).await?;
    }
    // the store is closed: put it in place, unless one appeared meanwhile
    match std::fs::hard_link(&building, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(RebuildError::StoreExists(target));
        }
        Err(e) => {
            return Err(store_err(format!(
                "moving the rebuilt store into place: {e}"
            )));
        }
    }
    std::fs::remove_file(&building)
        .map_err(|e| store_err(format!("removing {}: {e}", building.display())))?;
    // the store now claims what window dedup ingested without claims
    match std::fs::remove_file(window_dedup_marker(lake)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(store_err(format!("removing the window-dedup marker: {e}"))),
    }
    summary.elapsed_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The file that says a folder lake was ingested with `--dedup window`:
/// its dedup store lacks those events' claims.
pub fn window_dedup_marker(lake: &Path) -> PathBuf {
    lake.join("_state").join("window-dedup")
}

/// Records that events go into the lake without claims (`--dedup window`).
pub fn mark_window_dedup(lake: &Path) -> std::io::Result<()> {
    let marker = window_dedup_marker(lake);
    if marker.exists() {
        return Ok(());
    }
    if let Some(dir) = marker.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        marker,
        "events were ingested into this lake with --dedup window, without dedup claims; \
         `kinesis-lake rebuild-state` claims them all and removes this file\n",
    )
}

/// Refuses claims-based ingestion into a lake whose store does not claim
/// all of it: no store while the lake holds data, or events ingested with
/// `--dedup window`. Says what to do.
pub fn check_claims_cover_lake(lake: &Path) -> anyhow::Result<()> {
    check_store_present(lake)?;
    if window_dedup_marker(lake).exists() {
        anyhow::bail!(
            "the lake {} was ingested with --dedup window ({} says so): its dedup store holds no \
             claims for those events, so ingesting with --dedup dynamodb could write them again. \
             Keep using --dedup window, or move {} aside and run `kinesis-lake rebuild-state --lake {}`, \
             which claims every event of the lake",
            lake.display(),
            window_dedup_marker(lake).display(),
            redb_store::default_path(lake).display(),
            lake.display(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_origins_give_the_owners_the_pipeline_claimed() {
        let file: serde_json::Value = serde_json::json!({
            "reason_code": "invalid_json",
            "origin": {"kind": "file", "path": "/in/x.ndjson", "line": 7},
        });
        assert_eq!(
            origin_of(&file).map(|o| o.owner()),
            Some("file:/in/x.ndjson#7".into())
        );
        let kinesis = serde_json::json!({
            "origin": {"kind": "kinesis", "stream": "s", "shard_id": "shardId-1",
                       "sequence_number": "42", "arrival_ms": 5},
        });
        assert_eq!(
            origin_of(&kinesis).map(|o| o.owner()),
            Some("kinesis:s/shardId-1/42".into())
        );
        assert_eq!(
            origin_of(&serde_json::json!({"origin": {"kind": "x"}})),
            None
        );
    }

    #[test]
    fn an_empty_lake_holds_no_data_and_any_file_of_ours_is_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = dir.path();
        std::fs::create_dir_all(lake.join("_schemas")).expect("mkdir");
        std::fs::write(lake.join("_schemas/v0000000001.json"), "{}").expect("write");
        std::fs::create_dir_all(lake.join("event_type=a/event_subtype=b")).expect("mkdir");
        std::fs::write(
            lake.join("event_type=a/event_subtype=b/.part-1.parquet.x.tmp"),
            "",
        )
        .expect("write");
        assert_eq!(data_evidence(lake).expect("walk"), None);
        assert!(check_store_present(lake).is_ok());
        for (dir, name) in [
            ("_staging/x", "object"),
            ("_errors/ingest_date=2024-01-01", "part-1.ndjson"),
            (
                "event_type=a/event_subtype=b/event_date=2024-01-01",
                "part-1.parquet",
            ),
        ] {
            std::fs::create_dir_all(lake.join(dir)).expect("mkdir");
            std::fs::write(lake.join(dir).join(name), "").expect("write");
            let found = data_evidence(lake).expect("walk").expect("data");
            assert!(found.ends_with(name), "{found:?}");
            let err = check_store_present(lake).expect_err("refused");
            assert!(err.to_string().contains("rebuild-state --lake"), "{err}");
        }
        std::fs::create_dir_all(lake.join("_state")).expect("mkdir");
        std::fs::write(redb_store::default_path(lake), "").expect("write");
        assert!(check_store_present(lake).is_ok());
    }
}
