//! The publisher: each closed window of staging objects becomes one Parquet
//! file per partition (split at a target size), exactly once, over an
//! [`ObjectSink`].
//!
//! One publication is one *generation* of a window: the staging objects of
//! the window that no earlier generation took. Its steps, each safe to repeat
//! after a crash or to run twice at once:
//! 1. **plan**: the list of staging objects, written create-if-absent
//!    (`_publish/window=W/gNNNN.plan.json`); of two publishers, one plan wins
//!    and both carry it out;
//! 2. **files**: the plan's events, validated and enriched again, repeats of
//!    an `event_uuid` dropped (within the plan, against the window's earlier
//!    generations and the windows of the look-back), grouped by partition in
//!    arrival order, encoded and put under names fixed by window, generation
//!    and part: a re-run writes the same files, never a second copy;
//! 3. **done**: the record that the generation is published, with its files
//!    (`gNNNN.done.json`), and beside it the uuids it published (the
//!    look-back of later windows);
//! 4. optionally, the plan's staging objects are removed (a folder lake; S3
//!    lets its lifecycle rule expire them).
//!
//! A staging object's events are in the lake once it exists: it is in a plan
//! before it is removed, and [`is_committed`] answers for both.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::core::encode::{EncodeOptions, EncodedFile, batch_stats, encode_file};
use crate::core::enrich::{CreatedAtUnit, Event, enrich};
use crate::core::iceberg::commit::{
    Generation, IcebergError, IcebergTable, TableFile, commit_generation, place, record_table,
    table_record_key,
};
use crate::core::parallel::{PARALLEL_MIN_BYTES, map_parallel};
use crate::core::partition::{PartitionKey, error_object_key, join_prefix};
use crate::core::registry::{self, SchemaCache};
use crate::core::reject::Reject;
use crate::core::schema::{LakeSchema, table_name};
use crate::core::sink::{ObjectSink, SinkError};
use crate::core::staging::{Header, StagingError, read_header, section_bytes, section_events};
use crate::core::window::{
    PUBLISH_DIR, STAGING_DIR, STAGING_SUFFIX, Window, done_key, final_folder, final_key, plan_key,
    publish_folder, published_file_name, record_of_key, staging_folder, window_of_final_key,
    window_of_folder, window_of_staging_key,
};
use crate::record::Origin;

/// How the publisher writes.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// Key prefix of the lake.
    pub prefix: String,
    /// Window length, seconds.
    pub window_secs: u32,
    /// How long after its end a window is published (staging objects of
    /// batches that started in it are still landing meanwhile).
    pub grace_secs: u32,
    /// After its end plus this, no writer can still stage into a window
    /// (the claim lease: longer than Lambda's 15-minute limit); the window
    /// is then final once published.
    pub lease_secs: i64,
    /// Split a partition's file of one generation at about this many bytes.
    pub target_file_bytes: u64,
    /// How far back published uuids are checked for repeats, seconds.
    pub lookback_secs: i64,
    /// Parquet writer options.
    pub encode: EncodeOptions,
    /// The latest lake schema this process knows.
    pub schema_cache: SchemaCache,
    /// Requests in flight at once.
    pub io_concurrency: usize,
    /// Remove staging objects once published (a folder lake has no
    /// lifecycle rule to expire them).
    pub remove_staged: bool,
    /// The Iceberg table each published generation is committed to
    /// (`None`: the Hive-style lake only).
    pub iceberg: Option<IcebergTable>,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            prefix: String::new(),
            window_secs: crate::core::window::DEFAULT_WINDOW_SECS,
            grace_secs: DEFAULT_GRACE_SECS,
            lease_secs: 1200,
            target_file_bytes: DEFAULT_TARGET_FILE_BYTES,
            lookback_secs: 3600,
            encode: EncodeOptions::default(),
            schema_cache: SchemaCache::default(),
            io_concurrency: 16,
            remove_staged: false,
            iceberg: None,
        }
    }
}

/// Default grace after a window's end before it is published.
pub const DEFAULT_GRACE_SECS: u32 = 30;

/// Default size at which a partition's file is split: 128 MiB.
pub const DEFAULT_TARGET_FILE_BYTES: u64 = 128 << 20;

/// Bytes of event JSON per byte of Parquet, to cut parts before encoding
/// (measured on the generator's events: ~6.5; lower is safer, files end up
/// smaller than the target rather than larger).
const JSON_BYTES_PER_PARQUET_BYTE: u64 = 4;

/// A publication that could not finish; running the publisher again resumes it.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Reading or writing the lake failed.
    #[error("publishing: {0}; run the publisher again, it resumes where it stopped")]
    Sink(#[from] SinkError),
    /// A staging object cannot be read.
    #[error("publishing: {0}; move it aside (it holds the original events) and report it")]
    Staging(#[from] StagingError),
    /// A publication record cannot be read.
    #[error("publishing: {key} is not a valid publication record: {message}")]
    Record {
        /// Its key.
        key: String,
        /// The parse error.
        message: String,
    },
    /// The schema could not be committed.
    #[error("publishing: {0}")]
    Schema(#[from] registry::RegistryError),
    /// The Iceberg commit failed.
    #[error("publishing: {0}")]
    Iceberg(#[from] IcebergError),
    /// The lake keeps an Iceberg table and this run has no settings for it.
    #[error(
        "publishing: this lake keeps an Iceberg table ({record}): publish with --table-format iceberg and the table's catalog settings (TABLE_FORMAT=iceberg and ICEBERG_* for the function), or its windows would be missing from the table; nothing was published"
    )]
    TableNotConfigured {
        /// The lake's table record.
        record: String,
    },
    /// A file could not be encoded.
    #[error("publishing: encoding {key} failed: {message}")]
    Encode {
        /// The file's key.
        key: String,
        /// Why.
        message: String,
    },
}

/// The plan of one generation: the staging objects it publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The window id.
    pub window: String,
    /// The generation.
    pub generation: u32,
    /// The staging objects' keys, sorted.
    pub staging: Vec<String>,
}

/// The record of a published generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The window id.
    pub window: String,
    /// The generation.
    pub generation: u32,
    /// The staging objects it published.
    pub staging: Vec<String>,
    /// Its data files.
    pub files: Vec<PublishedFile>,
    /// Events written.
    pub events: u64,
    /// Repeats of an `event_uuid` dropped.
    pub duplicates: u64,
    /// Events that no longer pass validation, kept as dead letters.
    pub rejected: u64,
    /// When it was published (RFC 3339).
    pub published_at: String,
}

/// One published data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedFile {
    /// Its key.
    pub key: String,
    /// Events in it.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
}

impl From<&TableFile> for PublishedFile {
    fn from(f: &TableFile) -> Self {
        PublishedFile {
            key: f.key.clone(),
            rows: f.rows,
            bytes: f.bytes,
        }
    }
}

/// What a publisher run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Published {
    /// Windows of which this run published a generation.
    pub windows: u64,
    /// Generations published by this run.
    pub generations: u64,
    /// Staging objects published.
    pub staging_objects: u64,
    /// Events written into the lake.
    pub events: u64,
    /// Repeats dropped.
    pub duplicates: u64,
    /// Events dead-lettered at publication.
    pub rejected: u64,
    /// Parquet files written.
    pub files: u64,
    /// Bytes of Parquet written.
    pub bytes: u64,
    /// The oldest window with staged events not yet published after this
    /// run (its id): an open one, or the one a stopped run stopped at.
    pub oldest_unpublished: Option<String>,
    /// Its age in seconds (now minus the window's end).
    pub oldest_unpublished_age_s: Option<i64>,
}

/// Which windows a run publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Windows that have closed (their end plus the grace has passed).
    Closed,
    /// Everything staged, open windows too (a folder lake whose lock proves
    /// no one else writes; a later batch of an open window becomes another
    /// generation of it).
    Everything,
}

/// A publisher run that stopped: what it published before, with the window
/// it stopped at as the oldest unpublished one, and why. The next run
/// resumes there.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Stopped {
    /// What the run did before it stopped.
    pub published: Published,
    /// Why it stopped.
    pub error: PublishError,
}

/// Publishes the windows that `which` selects, oldest first. Stops at the
/// first window that fails (later ones wait for it: arrival order).
pub async fn publish<O: ObjectSink>(
    sink: &O,
    cfg: &PublishConfig,
    which: Which,
    now: DateTime<Utc>,
) -> Result<Published, Stopped> {
    let mut out = Published::default();
    if let Err(error) = check_table_settings(sink, cfg).await {
        return Err(Stopped {
            published: out,
            error,
        });
    }
    let windows = match windows_to_visit(sink, cfg).await {
        Ok(w) => w,
        Err(error) => {
            return Err(Stopped {
                published: out,
                error,
            });
        }
    };
    let now_s = now.timestamp();
    for (w, start) in windows {
        let end = start + i64::from(cfg.window_secs);
        let visited = if which == Which::Closed && now_s < end + i64::from(cfg.grace_secs) {
            // open: it and every later window wait
            note_unpublished(&mut out, sink, cfg, &w, end, now_s).await
        } else {
            publish_closed(sink, cfg, &w, end, now, &mut out).await
        };
        if let Err(error) = visited {
            if out.oldest_unpublished.as_deref().is_none_or(|o| *o > *w) {
                out.oldest_unpublished = Some(w.clone());
                out.oldest_unpublished_age_s = Some((now_s - end).max(0));
            }
            return Err(Stopped {
                published: out,
                error,
            });
        }
    }
    Ok(out)
}

/// A lake that keeps an Iceberg table is only published with its settings;
/// a run with them records the table (once per run, before any window).
async fn check_table_settings<O: ObjectSink>(
    sink: &O,
    cfg: &PublishConfig,
) -> Result<(), PublishError> {
    if let Some(table) = &cfg.iceberg {
        return Ok(record_table(sink, &cfg.prefix, table).await?);
    }
    match sink.get(&table_record_key(&cfg.prefix)).await? {
        None => Ok(()),
        Some(record) => Err(PublishError::TableNotConfigured {
            record: String::from_utf8_lossy(&record).into_owned(),
        }),
    }
}

/// The windows with a staging folder that are not final yet, oldest first,
/// with their starts.
async fn windows_to_visit<O: ObjectSink>(
    sink: &O,
    cfg: &PublishConfig,
) -> Result<Vec<(String, i64)>, PublishError> {
    let finals: HashSet<String> = sink
        .list(&final_folder(&cfg.prefix))
        .await?
        .iter()
        .filter_map(|k| window_of_final_key(k).map(str::to_string))
        .collect();
    Ok(sink
        .list_folders(&join_prefix(&cfg.prefix, &format!("{STAGING_DIR}/")))
        .await?
        .iter()
        .filter_map(|f| window_of_folder(f).map(str::to_string))
        .filter(|w| !finals.contains(w))
        .filter_map(|w| Window::start_of_id(&w).map(|s| (w, s)))
        .collect())
}

/// Publishes a closed window's due generations, and marks it final once no
/// writer can still stage into it.
async fn publish_closed<O: ObjectSink>(
    sink: &O,
    cfg: &PublishConfig,
    w: &str,
    end: i64,
    now: DateTime<Utc>,
    out: &mut Published,
) -> Result<(), PublishError> {
    let before = out.generations;
    publish_window(sink, cfg, w, now, out).await?;
    if out.generations > before {
        out.windows += 1;
    }
    if now.timestamp() >= end + cfg.lease_secs {
        // no writer can still stage into it: skip it from now on
        sink.put(&final_key(&cfg.prefix, w), Bytes::from_static(b"{}\n"))
            .await?;
    }
    Ok(())
}

/// Records `w` as the oldest unpublished window if it holds staged events.
async fn note_unpublished<O: ObjectSink>(
    out: &mut Published,
    sink: &O,
    cfg: &PublishConfig,
    w: &str,
    end: i64,
    now_s: i64,
) -> Result<(), PublishError> {
    if out.oldest_unpublished.is_none() && !pending_staging(sink, cfg, w).await?.is_empty() {
        out.oldest_unpublished = Some(w.to_string());
        out.oldest_unpublished_age_s = Some((now_s - end).max(0));
    }
    Ok(())
}

/// The staging objects of a window that no plan holds yet.
async fn pending_staging<O: ObjectSink>(
    sink: &O,
    cfg: &PublishConfig,
    w: &str,
) -> Result<Vec<String>, PublishError> {
    let planned = planned_staging(sink, &cfg.prefix, w).await?;
    Ok(sink
        .list(&staging_folder(&cfg.prefix, w))
        .await?
        .into_iter()
        .filter(|k| k.ends_with(STAGING_SUFFIX) && !planned.contains(k))
        .collect())
}

/// Publishes every generation of one window that is due: an unfinished
/// plan first, then the staging objects no plan holds yet.
async fn publish_window<O: ObjectSink>(
    sink: &O,
    cfg: &PublishConfig,
    w: &str,
    now: DateTime<Utc>,
    out: &mut Published,
) -> Result<(), PublishError> {
    loop {
        let records = read_records(sink, &cfg.prefix, w).await?;
        // an unfinished plan (a publisher died, or is at it now) is resumed:
        // the files it already put are not put again
        let (plan, resuming) = match records
            .plans
            .iter()
            .find(|(g, _)| !records.done.contains(g))
        {
            Some((_, plan)) => (plan.clone(), true),
            None => {
                let covered: HashSet<&String> =
                    records.plans.values().flat_map(|p| &p.staging).collect();
                let (published, pending): (Vec<String>, Vec<String>) = sink
                    .list(&staging_folder(&cfg.prefix, w))
                    .await?
                    .into_iter()
                    .filter(|k| k.ends_with(STAGING_SUFFIX))
                    .partition(|k| covered.contains(k));
                if cfg.remove_staged {
                    // every plan is done: these were published, and are here
                    // again only because their records were staged again
                    // under the same name (window dedup), or not yet removed
                    for key in &published {
                        sink.delete(key).await?;
                    }
                }
                if pending.is_empty() {
                    return Ok(());
                }
                let plan = Plan {
                    window: w.to_string(),
                    generation: records.plans.keys().max().map_or(0, |g| g + 1),
                    staging: pending,
                };
                let body = serde_json::to_vec_pretty(&plan).map_err(|e| PublishError::Record {
                    key: plan_key(&cfg.prefix, w, plan.generation),
                    message: e.to_string(),
                })?;
                let key = plan_key(&cfg.prefix, w, plan.generation);
                if !sink.put_if_absent(&key, Bytes::from(body)).await? {
                    // another publisher planned this generation: carry out its plan
                    continue;
                }
                (plan, false)
            }
        };
        let earlier: Vec<u32> = records
            .done
            .iter()
            .copied()
            .filter(|&g| g < plan.generation)
            .collect();
        let done = carry_out(sink, cfg, &plan, &earlier, resuming, now).await?;
        out.generations += 1;
        out.staging_objects += done.staging.len() as u64;
        out.events += done.events;
        out.duplicates += done.duplicates;
        out.rejected += done.rejected;
        out.files += done.files.len() as u64;
        out.bytes += done.files.iter().map(|f| f.bytes).sum::<u64>();
    }
}

/// A window's publication records.
struct Records {
    plans: BTreeMap<u32, Plan>,
    done: BTreeSet<u32>,
}

async fn read_records<O: ObjectSink>(
    sink: &O,
    prefix: &str,
    w: &str,
) -> Result<Records, PublishError> {
    let mut plans = BTreeMap::new();
    let mut done = BTreeSet::new();
    for key in sink.list(&publish_folder(prefix, w)).await? {
        match record_of_key(&key) {
            Some((g, true)) => {
                if let Some(body) = sink.get(&key).await? {
                    let plan: Plan =
                        serde_json::from_slice(&body).map_err(|e| PublishError::Record {
                            key: key.clone(),
                            message: e.to_string(),
                        })?;
                    plans.insert(g, plan);
                }
            }
            Some((g, false)) => {
                done.insert(g);
            }
            None => {}
        }
    }
    Ok(Records { plans, done })
}

/// The staging objects that a plan of window `w` holds: published, or being
/// published (they are removed only after).
pub async fn planned_staging<O: ObjectSink>(
    sink: &O,
    prefix: &str,
    w: &str,
) -> Result<HashSet<String>, SinkError> {
    let mut keys = HashSet::new();
    for key in sink.list(&publish_folder(prefix, w)).await? {
        if !matches!(record_of_key(&key), Some((_, true))) {
            continue;
        }
        let Some(body) = sink.get(&key).await? else {
            continue;
        };
        let plan: Plan = serde_json::from_slice(&body).map_err(|e| SinkError {
            operation: "get",
            key: key.clone(),
            message: format!("not a valid publication plan: {e}"),
        })?;
        keys.extend(plan.staging);
    }
    Ok(keys)
}

/// Whether the events destined for `key` are in the lake: a data file that
/// exists, or a staging object that exists or that a plan holds.
pub async fn is_committed<O: ObjectSink>(
    sink: &O,
    prefix: &str,
    key: &str,
) -> Result<bool, SinkError> {
    if sink.exists(key).await? {
        return Ok(true);
    }
    match window_of_staging_key(key) {
        Some(w) => Ok(planned_staging(sink, prefix, w).await?.contains(key)),
        None => Ok(false),
    }
}

/// Carries out a plan: its files, then its done record.
async fn carry_out<O: ObjectSink>(
    sink: &O,
    cfg: &PublishConfig,
    plan: &Plan,
    earlier: &[u32],
    resuming: bool,
    now: DateTime<Utc>,
) -> Result<Done, PublishError> {
    let started = std::time::Instant::now();
    let objects = read_staging(sink, cfg, &plan.staging).await?;
    let read_at = started.elapsed();
    let sections = decompress(&objects)?;
    let decompressed_at = started.elapsed();
    // the uuids published before, then this plan's, borrowed from its sections
    let mut seen: foldhash::HashSet<Cow<'_, str>> =
        published_uuids(sink, cfg, &plan.window, earlier)
            .await?
            .into_iter()
            .map(Cow::Owned)
            .collect();
    let lookback_at = started.elapsed();
    let mut rows: Vec<Event<'_>> = Vec::new();
    let mut rejects: Vec<(String, &[u8], Reject)> = Vec::new();
    let mut duplicates = 0u64;
    // in arrival order: the first copy of a uuid wins
    for section in enrich_sections(&sections)? {
        for (owner, json, enriched) in section {
            match enriched {
                Ok(event) if !seen.insert(event.event_uuid.clone()) => duplicates += 1,
                Ok(event) => rows.push(event),
                Err(reject) => rejects.push((owner.to_string(), json, reject)),
            }
        }
    }
    let mut by_partition: BTreeMap<&PartitionKey, Vec<&Event<'_>>> = BTreeMap::new();
    for e in &rows {
        by_partition.entry(&e.partition).or_default().push(e);
    }
    let enriched_at = started.elapsed();
    // the table as this generation finds it, and its data folder: the
    // lake's, unless its catalog placed it
    let placed = match &cfg.iceberg {
        Some(table) => Some(place(sink, &cfg.prefix, table).await?),
        None => None,
    };
    let data_prefix = placed.as_ref().map_or(&cfg.prefix, |p| &p.data_prefix);
    let (table_files, schema) =
        write_files(sink, cfg, plan, &by_partition, data_prefix, resuming).await?;
    let files: Vec<PublishedFile> = table_files.iter().map(PublishedFile::from).collect();
    let files_at = started.elapsed();
    if !rejects.is_empty() {
        write_rejects(sink, cfg, plan, &rejects, now).await?;
    }
    if let (Some(table), Some(placed), Some(schema)) = (&cfg.iceberg, placed, &schema) {
        // before the done record: a publisher that dies in between runs the
        // plan again and finds the window in the table's snapshots
        let generation = Generation {
            window: &plan.window,
            generation: plan.generation,
            files: &table_files,
            now_ms: now.timestamp_millis(),
        };
        commit_generation(sink, &cfg.prefix, table, schema, &generation, placed.loaded).await?;
    }
    let uuids: String = rows
        .iter()
        .map(|e| e.event_uuid.as_ref())
        .collect::<Vec<_>>()
        .join("\n");
    sink.put(
        &uuids_key(&cfg.prefix, &plan.window, plan.generation),
        Bytes::from(uuids),
    )
    .await?;
    let done = Done {
        window: plan.window.clone(),
        generation: plan.generation,
        staging: plan.staging.clone(),
        files: files.clone(),
        events: rows.len() as u64,
        duplicates,
        rejected: rejects.len() as u64,
        published_at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    let body = serde_json::to_vec_pretty(&done).map_err(|e| PublishError::Record {
        key: done_key(&cfg.prefix, &plan.window, plan.generation),
        message: e.to_string(),
    })?;
    sink.put(
        &done_key(&cfg.prefix, &plan.window, plan.generation),
        Bytes::from(body),
    )
    .await?;
    tracing::info!(
        window = %plan.window,
        generation = plan.generation,
        staging_objects = plan.staging.len(),
        events = done.events,
        duplicates,
        rejected = done.rejected,
        files = files.len(),
        "published"
    );
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    tracing::debug!(
        window = %plan.window,
        generation = plan.generation,
        read_ms = ms(read_at),
        decompress_ms = ms(decompressed_at - read_at),
        lookback_ms = ms(lookback_at - decompressed_at),
        enrich_dedup_group_ms = ms(enriched_at - lookback_at),
        type_encode_put_ms = ms(files_at - enriched_at),
        records_ms = ms(started.elapsed() - files_at),
        "publication phases"
    );
    // readers that take the lake schema from `_common_metadata` see the
    // columns of what was just published
    registry::publish_summary(sink, &cfg.prefix, &cfg.schema_cache).await;
    if cfg.remove_staged {
        for key in &plan.staging {
            sink.delete(key).await?;
        }
    }
    Ok(done)
}

/// The key of the uuids a generation published (one per line).
pub fn uuids_key(prefix: &str, w: &str, generation: u32) -> String {
    format!("{}g{generation:04}.uuids", publish_folder(prefix, w))
}

/// The plan's staging objects, with their headers, in arrival order
/// (staging time, then key).
async fn read_staging<O: ObjectSink>(
    sink: &O,
    cfg: &PublishConfig,
    keys: &[String],
) -> Result<Vec<(String, Header, Bytes)>, PublishError> {
    let fetched: Vec<(String, Result<Option<Bytes>, SinkError>)> = futures::stream::iter(keys)
        .map(|k| async move { (k.clone(), sink.get(k).await) })
        .buffered(cfg.io_concurrency.max(1))
        .collect()
        .await;
    let mut objects = Vec::with_capacity(fetched.len());
    for (key, got) in fetched {
        let body = got?.ok_or_else(|| StagingError {
            key: key.clone(),
            message: "it is in the publication plan but gone from the lake (removed before it was published?)".into(),
        })?;
        let header = read_header(&key, &body)?;
        objects.push((key, header, body));
    }
    objects.sort_by(|a, b| (&a.1.staged_at, &a.0).cmp(&(&b.1.staged_at, &b.0)));
    Ok(objects)
}

/// A decompressed section: its object's key, the `created_at` unit its
/// consumer read the events in, the section, and its bytes.
type Decompressed = (
    String,
    CreatedAtUnit,
    crate::core::staging::Section,
    Vec<u8>,
);

/// Every section of the staging objects, decompressed (on every core), in
/// order.
fn decompress(objects: &[(String, Header, Bytes)]) -> Result<Vec<Decompressed>, StagingError> {
    let sections: Vec<(&String, &Header, &Bytes, &crate::core::staging::Section)> = objects
        .iter()
        .flat_map(|(key, header, body)| header.sections.iter().map(move |s| (key, header, body, s)))
        .collect();
    let bytes: usize = objects.iter().map(|(_, _, body)| body.len()).sum();
    map_parallel(
        &sections,
        bytes >= PARALLEL_MIN_BYTES,
        |(key, header, body, section)| {
            let bytes = section_bytes(key, body, section)?;
            Ok((
                (*key).clone(),
                header.created_at_unit,
                (*section).clone(),
                bytes,
            ))
        },
    )
    .into_iter()
    .collect()
}

/// Each staged event of a section: its owner, its JSON, and the event (or
/// why it is rejected now).
type Enriched<'s> = (&'s str, &'s [u8], Result<Event<'s>, Reject>);

/// Every section's events validated and enriched, on every core; sections
/// and events in order.
fn enrich_sections(sections: &[Decompressed]) -> Result<Vec<Vec<Enriched<'_>>>, StagingError> {
    let bytes: usize = sections.iter().map(|(_, _, _, b)| b.len()).sum();
    map_parallel(
        sections,
        bytes >= PARALLEL_MIN_BYTES,
        |(key, unit, section, bytes)| {
            Ok(section_events(key, section, bytes)?
                .into_iter()
                .map(|staged| (staged.owner, staged.json, enrich(staged.json, *unit)))
                .collect())
        },
    )
    .into_iter()
    .collect()
}

/// The uuids published by the window's earlier generations and by the
/// generations of the windows within the look-back.
async fn published_uuids<O: ObjectSink>(
    sink: &O,
    cfg: &PublishConfig,
    w: &str,
    earlier: &[u32],
) -> Result<HashSet<String>, PublishError> {
    let mut sources: Vec<(String, u32)> = earlier.iter().map(|&g| (w.to_string(), g)).collect();
    if let Some(start) = Window::start_of_id(w) {
        // the published windows that start within the look-back: one
        // listing, whatever the window length
        let folders = sink
            .list_folders(&join_prefix(&cfg.prefix, &format!("{PUBLISH_DIR}/")))
            .await?;
        for id in folders.iter().filter_map(|f| window_of_folder(f)) {
            let Some(s) = Window::start_of_id(id) else {
                continue;
            };
            // earlier windows, and later ones already published (a late
            // staging object of this window may repeat what they published)
            if s == start || (s - start).abs() > cfg.lookback_secs {
                continue;
            }
            for key in sink.list(&publish_folder(&cfg.prefix, id)).await? {
                if let Some((g, false)) = record_of_key(&key) {
                    sources.push((id.to_string(), g));
                }
            }
        }
    }
    let mut seen = HashSet::new();
    for (id, g) in sources {
        if let Some(body) = sink.get(&uuids_key(&cfg.prefix, &id, g)).await? {
            seen.extend(
                String::from_utf8_lossy(&body)
                    .split('\n')
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
    }
    Ok(seen)
}

/// Encodes and puts each partition's files of a generation; when resuming
/// a plan, a file already there (the same name holds the same events) is
/// not put again, so a publisher cut short again and again still advances.
/// Returns the files, sorted by key, and the schema they were written with
/// (none when there were no events).
async fn write_files<O: ObjectSink>(
    sink: &O,
    cfg: &PublishConfig,
    plan: &Plan,
    by_partition: &BTreeMap<&PartitionKey, Vec<&Event<'_>>>,
    data_prefix: &str,
    resuming: bool,
) -> Result<(Vec<TableFile>, Option<Arc<LakeSchema>>), PublishError> {
    if by_partition.is_empty() {
        return Ok((Vec::new(), None));
    }
    let partitions: Vec<&[&Event<'_>]> = by_partition.values().map(Vec::as_slice).collect();
    let json_bytes: usize = partitions
        .iter()
        .flat_map(|events| events.iter().map(|e| e.json.len()))
        .sum();
    let started = std::time::Instant::now();
    let stats = batch_stats(&partitions, json_bytes >= PARALLEL_MIN_BYTES);
    let schema = registry::ensure(sink, &cfg.prefix, &cfg.schema_cache, &stats).await?;
    let typed_at = started.elapsed();
    let mut jobs: Vec<(String, &PartitionKey, &[&Event<'_>])> = Vec::new();
    for (p, events) in by_partition {
        for (part, rows) in split_by_size(events, cfg.target_file_bytes)
            .into_iter()
            .enumerate()
        {
            let name = published_file_name(&plan.window, plan.generation, part as u32);
            let key = join_prefix(data_prefix, &format!("{}/{name}", p.path()));
            jobs.push((key, p, rows));
        }
    }
    let encoded = encode_parts(&jobs, &schema, &cfg.encode)?;
    let encoded_at = started.elapsed();
    let mut files = put_parts(sink, cfg, encoded, resuming).await?;
    files.sort_by(|a, b| a.key.cmp(&b.key));
    tracing::debug!(
        files = files.len(),
        typing_ms = typed_at.as_secs_f64() * 1e3,
        encode_ms = (encoded_at - typed_at).as_secs_f64() * 1e3,
        put_ms = (started.elapsed() - encoded_at).as_secs_f64() * 1e3,
        "publication files"
    );
    Ok((files, Some(schema)))
}

/// An encoded part: its key, partition, rows and file.
type EncodedPart = (String, PartitionKey, u64, EncodedFile);

/// Puts encoded files concurrently; when resuming, a file already there is
/// not put again.
async fn put_parts<O: ObjectSink>(
    sink: &O,
    cfg: &PublishConfig,
    encoded: Vec<EncodedPart>,
    resuming: bool,
) -> Result<Vec<TableFile>, SinkError> {
    futures::stream::iter(encoded)
        .map(|(key, partition, rows, file)| async move {
            let bytes = file.bytes.len() as u64;
            if !(resuming && sink.exists(&key).await?) {
                sink.put(&key, Bytes::from(file.bytes)).await?;
            }
            Ok(TableFile {
                key,
                partition,
                rows,
                bytes,
                columns: file.columns,
            })
        })
        .buffer_unordered(cfg.io_concurrency.max(1))
        .collect::<Vec<Result<TableFile, SinkError>>>()
        .await
        .into_iter()
        .collect()
}

/// Encodes each part on every core.
fn encode_parts(
    jobs: &[(String, &PartitionKey, &[&Event<'_>])],
    schema: &Arc<LakeSchema>,
    opts: &EncodeOptions,
) -> Result<Vec<EncodedPart>, PublishError> {
    let encoded = map_parallel(jobs, true, |(key, p, rows)| {
        let table = table_name(&p.event_type, p.event_subtype.as_deref());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            encode_file(rows, schema, &table, opts)
        }));
        match r {
            Ok(Ok(file)) => Ok((key.clone(), (*p).clone(), rows.len() as u64, file)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the encoder panicked".to_string()),
        }
        .map_err(|message| PublishError::Encode {
            key: key.clone(),
            message,
        })
    });
    encoded.into_iter().collect()
}

/// A partition's events cut into parts of at most about `target` bytes of
/// Parquet each (estimated from their JSON), in order.
fn split_by_size<'e, 'a>(events: &'e [&'e Event<'a>], target: u64) -> Vec<&'e [&'e Event<'a>]> {
    let limit = target.max(1).saturating_mul(JSON_BYTES_PER_PARQUET_BYTE);
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, e) in events.iter().enumerate() {
        let len = e.json.len() as u64;
        if i > start && bytes + len > limit {
            parts.push(&events[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < events.len() {
        parts.push(&events[start..]);
    }
    parts
}

/// One dead-letter line of an event that no longer validates at publication
/// (the same fields as the pipeline's dead letters).
#[derive(Serialize)]
struct LateReject<'a> {
    reason_code: &'static str,
    reason: String,
    origin: Option<Origin>,
    owner: &'a str,
    rejected_at: &'a str,
    data_base64: String,
}

/// The dead letters of a generation, under a name fixed by window and
/// generation (a re-run writes the same file).
async fn write_rejects<O: ObjectSink>(
    sink: &O,
    cfg: &PublishConfig,
    plan: &Plan,
    rejects: &[(String, &[u8], Reject)],
    now: DateTime<Utc>,
) -> Result<(), PublishError> {
    use base64::Engine as _;
    let rejected_at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut body = Vec::new();
    for (owner, json, reject) in rejects {
        let line = LateReject {
            reason_code: reject.code(),
            reason: reject.to_string(),
            origin: Origin::from_owner(owner),
            owner,
            rejected_at: &rejected_at,
            data_base64: base64::engine::general_purpose::STANDARD.encode(json),
        };
        if serde_json::to_writer(&mut body, &line).is_ok() {
            body.push(b'\n');
        }
    }
    let date = Window::start_of_id(&plan.window)
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
        .unwrap_or(now)
        .date_naive();
    let id = format!("{}-g{:04}", plan.window, plan.generation);
    sink.put(&error_object_key(&cfg.prefix, date, &id), Bytes::from(body))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use crate::core::pipeline::{PipelineConfig, run_batch};
    use crate::memory::{MemSink, MemStore};
    use crate::record::RawRecord;

    const T0: i64 = 1_710_670_500; // 2024-03-17T10:15:00Z, a window start

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).expect("valid time")
    }

    fn records(file: &str, events: &[(&str, &str)]) -> Vec<RawRecord> {
        events
            .iter()
            .enumerate()
            .map(|(i, (uuid, name))| {
                RawRecord::new(
                    format!(
                        r#"{{"event_uuid":"{uuid}","event_name":"{name}","created_at":1710670530,"n":{i}}}"#
                    )
                    .into_bytes(),
                    Origin::File {
                        path: file.into(),
                        line: i as u64 + 1,
                    },
                )
            })
            .collect()
    }

    fn staged_cfg() -> PipelineConfig {
        PipelineConfig {
            window_secs: 300,
            ..PipelineConfig::default()
        }
    }

    fn pub_cfg() -> PublishConfig {
        PublishConfig {
            window_secs: 300,
            ..PublishConfig::default()
        }
    }

    /// Every uuid in the lake's Parquet files, per file.
    fn lake(sink: &MemSink) -> BTreeMap<String, Vec<String>> {
        sink.objects()
            .into_iter()
            .filter(|(k, _)| k.ends_with(".parquet"))
            .map(|(k, body)| {
                let reader = ParquetRecordBatchReaderBuilder::try_new(body)
                    .expect("footer")
                    .build()
                    .expect("reader");
                let mut uuids = Vec::new();
                for b in reader {
                    let b = b.expect("batch");
                    let col = b.column_by_name("event_uuid").expect("event_uuid");
                    uuids.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
                }
                (k, uuids)
            })
            .collect()
    }

    fn all_uuids(sink: &MemSink) -> Vec<String> {
        let mut v: Vec<String> = lake(sink).into_values().flatten().collect();
        v.sort();
        v
    }

    fn staging_keys(sink: &MemSink) -> Vec<String> {
        sink.objects()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("_staging/"))
            .collect()
    }

    #[tokio::test]
    async fn the_publisher_reads_created_at_in_the_unit_the_consumer_staged_with() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let batch = vec![RawRecord::new(
            br#"{"event_uuid":"ms1","event_name":"a:x","created_at":1710670530250}"#.to_vec(),
            Origin::File {
                path: "/ms".into(),
                line: 1,
            },
        )];
        let cfg = PipelineConfig {
            created_at_unit: CreatedAtUnit::Ms,
            ..staged_cfg()
        };
        let o = run_batch(&batch, &store, &sink, &cfg, at(T0 + 10)).await;
        assert_eq!((o.counts.written, o.counts.rejected), (1, 0));
        // the publisher has no unit setting of its own: the staging header's wins
        let p = publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 340))
            .await
            .expect("publish");
        assert_eq!((p.events, p.rejected), (1, 0));
        let files = lake(&sink);
        let key = files.keys().next().expect("one file");
        assert!(key.contains("event_date=2024-03-17"), "{key}");
    }

    #[tokio::test]
    async fn a_staged_batch_is_invisible_until_its_window_is_published_once() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let batch = records("/a", &[("u1", "a:x"), ("u2", "b:y"), ("u3", "a:x")]);
        let o = run_batch(&batch, &store, &sink, &staged_cfg(), at(T0 + 10)).await;
        assert_eq!((o.counts.written, o.counts.staging_objects), (3, 1));
        assert!(lake(&sink).is_empty(), "nothing visible before publication");
        let staged = staging_keys(&sink);
        assert_eq!(staged.len(), 1);
        assert!(staged[0].starts_with("_staging/window=20240317T101500Z/a_1-3-"));

        // still open: nothing published
        let p = publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 299))
            .await
            .expect("publish");
        assert_eq!(p.events, 0);
        assert_eq!(p.oldest_unpublished.as_deref(), Some("20240317T101500Z"));

        let p = publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 340))
            .await
            .expect("publish");
        assert_eq!((p.events, p.files, p.generations), (3, 2, 1));
        let files = lake(&sink);
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            [
                "event_type=a/event_subtype=x/event_date=2024-03-17/part-20240317T101500Z-g0000-0000.parquet",
                "event_type=b/event_subtype=y/event_date=2024-03-17/part-20240317T101500Z-g0000-0000.parquet",
            ]
        );
        assert_eq!(
            files.values().next().expect("a:x"),
            &["u1", "u3"],
            "arrival order"
        );
        // again: nothing new
        let p = publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 400))
            .await
            .expect("again");
        assert_eq!(p.events, 0);
        assert_eq!(all_uuids(&sink), ["u1", "u2", "u3"]);
    }

    #[tokio::test]
    async fn a_resend_after_publication_is_a_duplicate_even_when_staging_is_gone() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let cfg = PublishConfig {
            remove_staged: true,
            ..pub_cfg()
        };
        let batch = records("/a", &[("u1", "a:x"), ("u2", "a:x")]);
        run_batch(&batch, &store, &sink, &staged_cfg(), at(T0)).await;
        publish(&sink, &cfg, Which::Everything, at(T0 + 1))
            .await
            .expect("publish");
        assert!(staging_keys(&sink).is_empty(), "removed once published");
        // the same records again in the same window, and a re-send in a later one
        let again = run_batch(&batch, &store, &sink, &staged_cfg(), at(T0 + 5)).await;
        assert_eq!((again.counts.duplicates, again.counts.written), (2, 0));
        let resend = records("/b", &[("u2", "a:x"), ("u9", "a:x")]);
        let later = run_batch(&resend, &store, &sink, &staged_cfg(), at(T0 + 900)).await;
        assert_eq!((later.counts.duplicates, later.counts.written), (1, 1));
        publish(&sink, &cfg, Which::Everything, at(T0 + 901))
            .await
            .expect("publish");
        assert_eq!(all_uuids(&sink), ["u1", "u2", "u9"]);
    }

    #[tokio::test]
    async fn a_publisher_that_died_midway_writes_the_same_files_when_run_again() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let batch = records("/a", &[("u1", "a:x"), ("u2", "b:y"), ("u3", "c:z")]);
        run_batch(&batch, &store, &sink, &staged_cfg(), at(T0)).await;
        sink.fail_puts(&["event_type=b/"]);
        let stopped = publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 400))
            .await
            .expect_err("a put failed");
        // the metrics of a stopped run name the window it waits on, and its age
        assert_eq!(
            stopped.published.oldest_unpublished.as_deref(),
            Some("20240317T101500Z")
        );
        assert_eq!(stopped.published.oldest_unpublished_age_s, Some(100));
        assert_eq!(stopped.published.windows, 0);
        let before = lake(&sink).len();
        assert!(before < 3, "the window is not fully published");
        sink.fail_puts(&[]);
        let p = publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 401))
            .await
            .expect("resume");
        assert_eq!(
            p.generations, 1,
            "the unfinished plan is carried out, no new one"
        );
        assert_eq!(lake(&sink).len(), 3);
        assert_eq!(all_uuids(&sink), ["u1", "u2", "u3"]);
    }

    #[tokio::test]
    async fn a_resumed_plan_puts_only_the_files_that_are_missing() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let batch = records("/a", &[("u1", "a:x"), ("u2", "b:y"), ("u3", "c:z")]);
        run_batch(&batch, &store, &sink, &staged_cfg(), at(T0)).await;
        sink.fail_puts(&["event_type=c/"]);
        assert!(
            publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 400))
                .await
                .is_err()
        );
        // from now on a put of the files already there would fail
        sink.fail_puts(&["event_type=a/", "event_type=b/"]);
        let p = publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 401))
            .await
            .expect("resume");
        assert_eq!((p.events, p.files), (3, 3));
        assert_eq!(all_uuids(&sink), ["u1", "u2", "u3"]);
    }

    #[tokio::test]
    async fn two_publishers_at_once_publish_each_event_once() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        for (k, file) in ["/a", "/b", "/c"].iter().enumerate() {
            let uuids: Vec<String> = (0..20).map(|i| format!("{file}-{i}")).collect();
            let events: Vec<(&str, &str)> = uuids.iter().map(|u| (u.as_str(), "t:s")).collect();
            run_batch(
                &records(file, &events),
                &store,
                &sink,
                &staged_cfg(),
                at(T0 + k as i64),
            )
            .await;
        }
        let (c1, c2) = (pub_cfg(), pub_cfg());
        let (a, b) = futures::join!(
            publish(&sink, &c1, Which::Closed, at(T0 + 400)),
            publish(&sink, &c2, Which::Closed, at(T0 + 400)),
        );
        a.expect("first");
        b.expect("second");
        let uuids = all_uuids(&sink);
        let distinct: BTreeSet<&String> = uuids.iter().collect();
        assert_eq!((uuids.len(), distinct.len()), (60, 60));
        assert_eq!(lake(&sink).len(), 1, "one file for the partition's window");
    }

    #[tokio::test]
    async fn a_staging_object_that_lands_after_publication_is_published_by_the_next_generation() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        run_batch(
            &records("/a", &[("u1", "a:x")]),
            &store,
            &sink,
            &staged_cfg(),
            at(T0 + 1),
        )
        .await;
        publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 330))
            .await
            .expect("publish");
        // a long invocation that started in the window lands now
        run_batch(
            &records("/late", &[("u2", "a:x")]),
            &store,
            &sink,
            &staged_cfg(),
            at(T0 + 2),
        )
        .await;
        let p = publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 900))
            .await
            .expect("late");
        assert_eq!((p.events, p.generations), (1, 1));
        assert_eq!(all_uuids(&sink), ["u1", "u2"]);
        assert!(
            lake(&sink)
                .keys()
                .any(|k| k.ends_with("-g0001-0000.parquet")),
            "{:?}",
            lake(&sink).keys()
        );
        // after the lease the window is final and skipped
        publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 300 + 1200))
            .await
            .expect("final");
        assert!(
            sink.objects()
                .iter()
                .any(|(k, _)| k == "_publish/final/window=20240317T101500Z.json")
        );
    }

    #[tokio::test]
    async fn without_claims_the_publisher_drops_repeats_within_the_look_back() {
        let sink = MemSink::default();
        // two stores: the claims cannot see each other's events
        let (s1, s2) = (MemStore::default(), MemStore::default());
        run_batch(
            &records("/a", &[("u1", "a:x"), ("u2", "a:x")]),
            &s1,
            &sink,
            &staged_cfg(),
            at(T0),
        )
        .await;
        publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 400))
            .await
            .expect("first");
        run_batch(
            &records("/b", &[("u2", "a:x"), ("u3", "a:x"), ("u3", "a:x")]),
            &s2,
            &sink,
            &staged_cfg(),
            at(T0 + 600),
        )
        .await;
        let p = publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 1000))
            .await
            .expect("second");
        assert_eq!((p.events, p.duplicates), (1, 1));
        assert_eq!(all_uuids(&sink), ["u1", "u2", "u3"]);
    }

    /// Without claims, a retried batch may be staged in the next window
    /// and published there first, and the first attempt's staging object
    /// land late in its own window: the late generation is checked against
    /// the later window's uuids too.
    #[tokio::test]
    async fn a_late_generation_drops_what_a_later_window_published() {
        let sink = MemSink::default();
        let cfg = PipelineConfig {
            dedup: crate::core::dedup::DedupMode::Window,
            ..staged_cfg()
        };
        let store = crate::core::dedup::NoClaims;
        run_batch(
            &records("/b", &[("u1", "a:x")]),
            &store,
            &sink,
            &cfg,
            at(T0 + 310),
        )
        .await;
        let p = publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 700))
            .await
            .expect("the later window");
        assert_eq!(p.events, 1);
        run_batch(
            &records("/a", &[("u1", "a:x"), ("u2", "a:x")]),
            &store,
            &sink,
            &cfg,
            at(T0 + 10),
        )
        .await;
        let p = publish(&sink, &pub_cfg(), Which::Closed, at(T0 + 800))
            .await
            .expect("the late generation");
        assert_eq!((p.events, p.duplicates), (1, 1), "{p:?}");
        assert_eq!(all_uuids(&sink), ["u1", "u2"]);
    }

    #[tokio::test]
    async fn a_partition_is_split_into_parts_at_the_target_size() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let uuids: Vec<String> = (0..50).map(|i| format!("u{i:02}")).collect();
        let events: Vec<(&str, &str)> = uuids.iter().map(|u| (u.as_str(), "t:s")).collect();
        run_batch(
            &records("/a", &events),
            &store,
            &sink,
            &staged_cfg(),
            at(T0),
        )
        .await;
        let cfg = PublishConfig {
            target_file_bytes: 100, // ~400 bytes of JSON: ~5 events a part
            ..pub_cfg()
        };
        let p = publish(&sink, &cfg, Which::Closed, at(T0 + 400))
            .await
            .expect("publish");
        assert!(p.files >= 5, "{p:?}");
        let files = lake(&sink);
        let joined: Vec<String> = files.values().flatten().cloned().collect();
        assert_eq!(joined, uuids, "parts in order, every event once");
    }
}
