//! The pipeline: one batch of raw records in, one [`BatchOutcome`] out.
//!
//! decode -> validate + enrich -> dedup within the batch -> group by partition
//! -> claim uuids (meanwhile: classify, commit the schema, encode one Parquet
//! file per partition) -> resolve held claims -> re-encode the files that lost
//! events to held claims -> put the files, and one dead-letter file for the
//! rejects.
//!
//! Every record ends in exactly one state: written, duplicate, rejected (kept
//! in the dead-letter area), or failed (not durably handled: the caller must
//! retry it; Lambda does so from the lowest failed sequence number).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt as _;
use serde::Serialize;

use crate::core::dedup::{
    Claim, ClaimOutcome, DedupMode, DedupStore, Holder, Resolution, Transfer, resolve,
};
use crate::core::encode::{EncodeOptions, batch_stats, encode};
use crate::core::enrich::{CreatedAtUnit, Event, enrich};
use crate::core::parallel::map_parallel;
use crate::core::partition::{PartitionKey, data_object_key, error_object_key};
use crate::core::publish;
use crate::core::registry::{self, SchemaCache};
use crate::core::reject::Reject;
use crate::core::schema::{LakeSchema, table_name};
use crate::core::sink::ObjectSink;
use crate::core::staging::{Staged, encode_staging};
use crate::core::window::{Window, content_hash, input_id, staging_key};
use crate::record::{Origin, RawRecord};

/// How the pipeline writes.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Key prefix of the lake (empty for the root of a folder or bucket).
    pub prefix: String,
    /// After this many seconds a claim whose file never landed may be taken
    /// over by another record with the same uuid (longer than any writer
    /// lives: Lambda's limit is 900 s).
    pub lease_secs: i64,
    /// Object puts and existence checks in flight at once.
    pub io_concurrency: usize,
    /// Parquet writer options.
    pub encode: EncodeOptions,
    /// The latest lake schema this process knows (shared by clones).
    pub schema_cache: SchemaCache,
    /// Whether the next batch encodes while its claims are in flight
    /// (shared by clones).
    pub encode_ahead: EncodeAhead,
    /// Publication window in seconds. `0`: each batch writes one Parquet file
    /// per partition straight into the lake. Otherwise each batch writes one
    /// staging object into the window of its start, and the publisher turns
    /// each closed window into one file per partition ([`crate::core::publish`]).
    pub window_secs: u32,
    /// The unit of every event's `created_at` (seconds by default). Staged
    /// batches record it in their staging object, so that the publisher
    /// reads them the same way.
    pub created_at_unit: CreatedAtUnit,
    /// How repeats are dropped: claims in the dedup store, or (with a
    /// window) the publisher alone ([`DedupMode::Window`]: each batch's
    /// staging object and dead letters are named from its records, and a
    /// staging object that exists already holds this batch's events).
    pub dedup: DedupMode,
}

/// Whether a batch encodes its files while its claims are in flight. On at
/// first; a batch whose claims are mostly held (input already in the lake,
/// run again) turns it off for the next batch, and a batch of mostly new
/// events turns it back on. Shared by clones of a [`PipelineConfig`].
#[derive(Debug, Clone)]
pub struct EncodeAhead(Arc<AtomicBool>);

impl Default for EncodeAhead {
    fn default() -> Self {
        EncodeAhead(Arc::new(AtomicBool::new(true)))
    }
}

impl EncodeAhead {
    /// Whether the next batch encodes ahead of its claims.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            prefix: String::new(),
            lease_secs: 1200,
            io_concurrency: 16,
            encode: EncodeOptions::default(),
            schema_cache: SchemaCache::default(),
            encode_ahead: EncodeAhead::default(),
            window_secs: 0,
            created_at_unit: CreatedAtUnit::S,
            dedup: DedupMode::Claims,
        }
    }
}

/// Counters of one or more batches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Records read.
    pub records: u64,
    /// Events written to the lake.
    pub written: u64,
    /// Records dropped as repeats of an event already in the lake or batch.
    pub duplicates: u64,
    /// Records rejected into the dead-letter area.
    pub rejected: u64,
    /// Records not durably handled; to be retried.
    pub failed: u64,
    /// Parquet files written.
    pub files: u64,
    /// Bytes of Parquet written.
    pub bytes: u64,
    /// Dead-letter files written.
    pub dead_letter_files: u64,
    /// Staging objects written (events staged for publication count as
    /// written: they are durable, and the publisher puts them in the lake).
    pub staging_objects: u64,
}

impl Counts {
    /// Adds another batch's counts.
    pub fn add(&mut self, o: &Counts) {
        self.records += o.records;
        self.written += o.written;
        self.duplicates += o.duplicates;
        self.rejected += o.rejected;
        self.failed += o.failed;
        self.files += o.files;
        self.bytes += o.bytes;
        self.dead_letter_files += o.dead_letter_files;
        self.staging_objects += o.staging_objects;
    }
}

/// A file the batch wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Object key.
    pub key: String,
    /// Events in it.
    pub rows: usize,
    /// Its size.
    pub bytes: usize,
}

/// A record the batch could not durably handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecord {
    /// Index in the batch.
    pub index: usize,
    /// Why, and what happens next (its `Display` is the sentence logged).
    pub reason: Failure,
}

/// Why a record was not durably handled. Each is retried (Lambda re-sends
/// from the lowest failed sequence number; the CLI asks to run again), and
/// the claims make the retry land the record once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Failure {
    /// The dedup store did not answer its claim: the outcome is unknown.
    #[error("{0}")]
    Unknown(String),
    /// A claim destined for the same file has an unknown outcome, so the file
    /// is not written (a retry would take its existence for a commit).
    #[error("not written: a claim for file {file} has an unknown outcome ({why}); retry")]
    UnknownClaim {
        /// The file not written.
        file: String,
        /// The store's error.
        why: String,
    },
    /// Another writer holds its `event_uuid` within the lease.
    #[error(
        "event_uuid is claimed by {holder} since {since} and its file {file} has not landed yet; retry later"
    )]
    HeldElsewhere {
        /// The holder's owner.
        holder: String,
        /// When it claimed, Unix seconds.
        since: i64,
        /// The file it is destined for.
        file: String,
    },
    /// The claim changed while it was being taken over.
    #[error("the claim changed while taking it over (now held by {holder}); retry")]
    TakeoverLost {
        /// The new holder.
        holder: String,
    },
    /// Whether the holder's file exists could not be checked.
    #[error("could not check whether {file} holds this event: {why}")]
    CannotCheck {
        /// The holder's file.
        file: String,
        /// The sink's error.
        why: String,
    },
    /// The batch's staging object could not be named (the sink failed).
    #[error("not staged: {0}; retry")]
    NotStaged(String),
    /// The lake schema could not be committed.
    #[error("not written: {0}")]
    Schema(String),
    /// Its file could not be encoded.
    #[error("{0}")]
    Encode(String),
    /// Its file could not be written.
    #[error("writing {file} failed: {why}; retry")]
    Write {
        /// The file's key.
        file: String,
        /// The sink's error.
        why: String,
    },
    /// A bug: the record was left without an outcome.
    #[error("internal: {0}; retry")]
    Internal(&'static str),
}

/// The result of one batch.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    /// Counters.
    pub counts: Counts,
    /// Records to retry, in batch order.
    pub failed: Vec<FailedRecord>,
    /// Data files written.
    pub files: Vec<WrittenFile>,
    /// Time from sending the claims until their answers were taken up (the
    /// files are encoded meanwhile, so this overlaps encoding), plus any
    /// transfers.
    pub store_ms: u64,
    /// Time spent waiting on the object sink.
    pub sink_ms: u64,
}

/// Where one record of the batch stands.
#[derive(Debug)]
enum State {
    Pending,
    Duplicate,
    Write,
    /// The claim's outcome is unknown: its destination file must not be
    /// written, or a retry would take the file's existence for a commit.
    Unknown(String),
    Failed(Failure),
    Written,
}

/// What a group's file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupKind {
    /// One partition's Parquet file.
    Data,
    /// The batch's staging object: every partition's events.
    Staging,
    /// The batch's dead letters.
    DeadLetters,
}

/// One file the batch may write: a partition's events, the staging object,
/// or the dead letters.
struct Group {
    key: String,
    members: Vec<usize>,
    kind: GroupKind,
}

/// One dead-letter line.
#[derive(Serialize)]
struct DeadLetter<'a> {
    reason_code: &'static str,
    reason: String,
    origin: &'a Origin,
    rejected_at: &'a str,
    data_base64: String,
}

/// The dedup key under which a rejected record is claimed, so that a retry or
/// a re-run does not write its dead letter twice.
fn reject_claim_key(owner: &str) -> String {
    format!("rejected:{owner}")
}

/// Runs one batch through the pipeline. Never fails as a whole: what could not
/// be done is reported per record in [`BatchOutcome::failed`].
///
/// decode → enrich → drop repeats → plan the files → claim (encoding ahead)
/// → take over held claims → build the files → put them → tally.
pub async fn run_batch<S: DedupStore, O: ObjectSink>(
    records: &[RawRecord],
    store: &S,
    sink: &O,
    cfg: &PipelineConfig,
    now: DateTime<Utc>,
) -> BatchOutcome {
    let started = Instant::now();
    let owners = Owners::of(records);
    let decoded = decode_all(records);
    let batch = Batch::enrich(records, &owners, &decoded, cfg);
    let enriched_at = started.elapsed();
    let mut progress = Progress::new(records.len());
    drop_repeats(&batch, &mut progress);
    let plan = plan_files(&batch, &mut progress, sink, cfg, now).await;
    let grouped_at = started.elapsed();
    let (claim_time, early) = claim(&batch, &plan, &mut progress, store, sink, cfg, now).await;
    let to_write = members_to_write(&plan, &mut progress);
    let (files, prepared) = build_files(
        &batch,
        &plan,
        to_write,
        early,
        &mut progress,
        sink,
        cfg,
        now,
    )
    .await;
    let encoded_at = started.elapsed();
    put_files(files, &plan, &mut progress, sink, cfg).await;
    let out = tally(&batch, progress);
    tracing::debug!(
        records = records.len(),
        files = out.counts.files,
        decode_enrich_ms = enriched_at.as_secs_f64() * 1e3,
        group_ms = (grouped_at - enriched_at).as_secs_f64() * 1e3,
        claim_ms = claim_time.as_secs_f64() * 1e3,
        typing_ms = prepared.typing.as_secs_f64() * 1e3,
        encode_ms = prepared.encode.as_secs_f64() * 1e3,
        until_put_ms = (encoded_at - grouped_at).as_secs_f64() * 1e3,
        put_ms = (started.elapsed() - encoded_at).as_secs_f64() * 1e3,
        "batch phases"
    );
    crate::core::report::warn_failures(records, &out.failed);
    out
}

/// Every record's owner, in one buffer.
struct Owners {
    buf: String,
    ends: Vec<usize>,
}

impl Owners {
    fn of(records: &[RawRecord]) -> Owners {
        let mut buf = String::with_capacity(records.len() * 64);
        let mut ends = Vec::with_capacity(records.len());
        for r in records {
            r.origin.write_owner(&mut buf);
            ends.push(buf.len());
        }
        Owners { buf, ends }
    }

    fn all(&self) -> Vec<&str> {
        self.ends
            .iter()
            .scan(0, |start, &end| {
                let s = &self.buf[*start..end];
                *start = end;
                Some(s)
            })
            .collect()
    }
}

/// Each record's JSON bytes (gunzipped), or why it has none.
fn decode_all(records: &[RawRecord]) -> Vec<Result<Cow<'_, [u8]>, Reject>> {
    map_parallel(
        records,
        records.len() >= PARALLEL_MIN_RECORDS,
        RawRecord::decode,
    )
}

/// A batch's records as every phase reads them, once validated and enriched.
struct Batch<'b> {
    records: &'b [RawRecord],
    owners: Vec<&'b str>,
    /// Each record's event, or `None` when it was rejected.
    events: Vec<Option<Event<'b>>>,
    /// Why each rejected record was rejected.
    rejects: HashMap<usize, Reject>,
    /// The key each rejected record is claimed under, `rejected:<owner>`.
    reject_keys: HashMap<usize, String>,
}

impl<'b> Batch<'b> {
    /// Validates and enriches every decoded record; logs each reject.
    fn enrich(
        records: &'b [RawRecord],
        owners: &'b Owners,
        decoded: &'b [Result<Cow<'b, [u8]>, Reject>],
        cfg: &PipelineConfig,
    ) -> Batch<'b> {
        let parallel = records.len() >= PARALLEL_MIN_RECORDS;
        let enriched: Vec<Result<Event<'b>, Reject>> = map_parallel(decoded, parallel, |d| {
            d.as_ref()
                .map_err(Clone::clone)
                .and_then(|b| enrich(b, cfg.created_at_unit))
        });
        let mut events = Vec::with_capacity(records.len());
        let mut rejects = HashMap::new();
        for (i, e) in enriched.into_iter().enumerate() {
            match e {
                Ok(e) => events.push(Some(e)),
                Err(r) => {
                    tracing::warn!(record = %records[i].origin.describe(), reason_code = r.code(), reason = %r, "record rejected to the dead-letter area");
                    rejects.insert(i, r);
                    events.push(None);
                }
            }
        }
        let owners = owners.all();
        let reject_keys = rejects
            .keys()
            .map(|&i| (i, reject_claim_key(owners[i])))
            .collect();
        Batch {
            records,
            owners,
            events,
            rejects,
            reject_keys,
        }
    }

    /// The batch's name when nothing is claimed: its input's id and a hash
    /// of its records' bytes (the same records give the same name).
    fn content_id(&self) -> String {
        let input = input_id(self.owners.iter().copied());
        let content = content_hash(self.records.iter().map(|r| r.data.as_slice()));
        format!("{input}-{content:016x}")
    }

    /// The key record `i` is claimed under: its `event_uuid`, or for a
    /// rejected record `rejected:<owner>`.
    fn claim_key(&self, i: usize) -> &str {
        match &self.events[i] {
            Some(e) => &e.event_uuid,
            None => self.reject_keys.get(&i).map_or("", String::as_str),
        }
    }
}

/// Where each record stands, and the batch's outcome so far.
struct Progress {
    state: Vec<State>,
    out: BatchOutcome,
}

impl Progress {
    fn new(n: usize) -> Progress {
        let mut out = BatchOutcome::default();
        out.counts.records = n as u64;
        Progress {
            state: (0..n).map(|_| State::Pending).collect(),
            out,
        }
    }
}

/// The files the batch may write, and the one each record is destined for
/// (`usize::MAX`: none, a repeat within the batch or a record that failed).
struct Plan {
    groups: Vec<Group>,
    dest: Vec<usize>,
}

/// Repeats of an `event_uuid` within the batch: the first copy wins.
fn drop_repeats(batch: &Batch<'_>, progress: &mut Progress) {
    let mut seen: foldhash::HashSet<&str> = foldhash::HashSetExt::with_capacity(batch.events.len());
    for (i, e) in batch.events.iter().enumerate() {
        if let Some(e) = e
            && !seen.insert(&e.event_uuid)
        {
            progress.state[i] = State::Duplicate;
        }
    }
}

/// The batch's files, each named: one per partition (direct writes) or the
/// staging object of every partition's events, and one for the dead letters.
async fn plan_files<O: ObjectSink>(
    batch: &Batch<'_>,
    progress: &mut Progress,
    sink: &O,
    cfg: &PipelineConfig,
    now: DateTime<Utc>,
) -> Plan {
    let mut by_partition: foldhash::HashMap<&PartitionKey, Vec<usize>> =
        foldhash::HashMapExt::new();
    for (i, e) in batch.events.iter().enumerate() {
        if let (Some(e), State::Pending) = (e, &progress.state[i]) {
            by_partition.entry(&e.partition).or_default().push(i);
        }
    }
    // files in partition order, whatever the hash order
    let mut by_partition: Vec<(&PartitionKey, Vec<usize>)> = by_partition.into_iter().collect();
    by_partition.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut groups: Vec<Group> = if cfg.window_secs == 0 {
        by_partition
            .into_iter()
            .map(|(p, members)| Group {
                key: data_object_key(&cfg.prefix, p, &uuid::Uuid::now_v7().to_string()),
                members,
                kind: GroupKind::Data,
            })
            .collect()
    } else if by_partition.is_empty() {
        Vec::new()
    } else {
        let members: Vec<usize> = by_partition.into_iter().flat_map(|(_, m)| m).collect();
        let t = Instant::now();
        let target = match cfg.dedup {
            DedupMode::Claims => staging_target(sink, cfg, &batch.owners, now.timestamp()).await,
            DedupMode::Window => Ok(input_staging_key(cfg, batch, now.timestamp())),
        };
        progress.out.sink_ms += t.elapsed().as_millis() as u64;
        match target {
            Ok(key) => vec![Group {
                key,
                members,
                kind: GroupKind::Staging,
            }],
            Err(e) => {
                for &i in &members {
                    progress.state[i] = State::Failed(Failure::NotStaged(e.to_string()));
                }
                Vec::new()
            }
        }
    };
    if !batch.rejects.is_empty() {
        let mut members: Vec<usize> = batch.rejects.keys().copied().collect();
        members.sort_unstable();
        // claimed dead letters get a fresh name; unclaimed ones (window
        // dedup) their input's, so that a retry writes the same file again
        let name = match cfg.dedup {
            DedupMode::Claims => uuid::Uuid::now_v7().to_string(),
            DedupMode::Window => batch.content_id(),
        };
        groups.push(Group {
            key: error_object_key(&cfg.prefix, now.date_naive(), &name),
            members,
            kind: GroupKind::DeadLetters,
        });
    }
    let mut dest: Vec<usize> = vec![usize::MAX; batch.events.len()];
    for (g, group) in groups.iter().enumerate() {
        for &i in &group.members {
            dest[i] = g;
        }
    }
    Plan { groups, dest }
}

/// Claims every planned record for its file and takes over the held claims
/// that may be; returns how long the claims took and, unless most claims of
/// the last batch were held (a re-run), the files prepared meanwhile as if
/// every claim succeeds (files are still put only after their claims, and a
/// file that loses events to held claims is encoded again without them).
async fn claim<'p, 'b, S: DedupStore, O: ObjectSink>(
    batch: &'p Batch<'b>,
    plan: &Plan,
    progress: &mut Progress,
    store: &S,
    sink: &O,
    cfg: &PipelineConfig,
    now: DateTime<Utc>,
) -> (std::time::Duration, Option<Prepared<'p, 'b>>) {
    let now_s = now.timestamp();
    let pending: Vec<usize> = (0..batch.events.len())
        .filter(|&i| plan.dest[i] != usize::MAX)
        .collect();
    let claims: Vec<Claim<'_>> = pending.iter().map(|&i| claim_of(batch, plan, i)).collect();
    let t = Instant::now();
    let claiming = async {
        let outcomes = store.claim(&claims, now_s).await;
        (outcomes, t.elapsed())
    };
    // the files (data files, or the staging object) are built while the
    // claims are in flight, on the bet that the claims are won
    let ((outcomes, claim_time), early) = if cfg.encode_ahead.get() {
        let all: Vec<&[usize]> = plan.groups.iter().map(|g| g.members.as_slice()).collect();
        let (claimed, prepared) =
            futures::join!(claiming, prepare(&plan.groups, &all, batch, sink, cfg, now));
        (claimed, Some(prepared))
    } else {
        (claiming.await, None)
    };
    progress.out.store_ms += claim_time.as_millis() as u64;
    let mut held: Vec<(usize, Holder)> = Vec::new();
    for (k, &i) in pending.iter().enumerate() {
        progress.state[i] = match outcomes.get(k) {
            Some(Ok(ClaimOutcome::Claimed)) => State::Write,
            Some(Ok(ClaimOutcome::Held(h))) => {
                held.push((i, h.clone()));
                continue;
            }
            Some(Err(e)) => State::Unknown(e.to_string()),
            None => State::Unknown("the dedup store gave no answer".into()),
        };
    }
    // a batch whose claims are mostly held is a re-run: the next batch
    // claims before encoding, so that it does not encode for nothing
    cfg.encode_ahead.set(held.len() * 2 <= pending.len());
    if !held.is_empty() {
        let transfers = resolve_held(held, batch, sink, cfg, now_s, progress).await;
        take_over(transfers, batch, plan, progress, store, now_s).await;
    }
    (claim_time, early)
}

/// The claim of record `i` for its planned file.
fn claim_of<'a>(batch: &'a Batch<'_>, plan: &'a Plan, i: usize) -> Claim<'a> {
    Claim {
        event_uuid: batch.claim_key(i),
        owner: batch.owners[i],
        object_key: &plan.groups[plan.dest[i]].key,
    }
}

/// Takes over the held claims whose holders died or were these very records,
/// conditionally on each claim being unchanged.
async fn take_over<S: DedupStore>(
    transfers: Vec<(usize, Holder)>,
    batch: &Batch<'_>,
    plan: &Plan,
    progress: &mut Progress,
    store: &S,
    now_s: i64,
) {
    if transfers.is_empty() {
        return;
    }
    let reqs: Vec<Transfer<'_>> = transfers
        .iter()
        .map(|(i, h)| Transfer {
            event_uuid: batch.claim_key(*i),
            from_owner: &h.owner,
            from_key: &h.object_key,
            to: claim_of(batch, plan, *i),
        })
        .collect();
    let t = Instant::now();
    let results = store.transfer(&reqs, now_s).await;
    progress.out.store_ms += t.elapsed().as_millis() as u64;
    for (k, (i, _)) in transfers.iter().enumerate() {
        progress.state[*i] = match results.get(k) {
            Some(Ok(ClaimOutcome::Claimed)) => State::Write,
            Some(Ok(ClaimOutcome::Held(h))) => State::Failed(Failure::TakeoverLost {
                holder: h.owner.clone(),
            }),
            Some(Err(e)) => State::Unknown(e.to_string()),
            None => State::Unknown("the dedup store gave no answer".into()),
        };
    }
}

/// Each file's members to write; a file with a claim of unknown outcome is
/// not written at all.
fn members_to_write(plan: &Plan, progress: &mut Progress) -> Vec<Vec<usize>> {
    let state = &mut progress.state;
    let mut to_write: Vec<Vec<usize>> = Vec::with_capacity(plan.groups.len());
    for group in &plan.groups {
        if let Some(why) = group.members.iter().find_map(|&i| match &state[i] {
            State::Unknown(e) => Some(e.clone()),
            _ => None,
        }) {
            for &i in &group.members {
                if matches!(state[i], State::Write | State::Unknown(_)) {
                    state[i] = State::Failed(Failure::UnknownClaim {
                        file: group.key.clone(),
                        why: why.clone(),
                    });
                }
            }
            to_write.push(Vec::new());
            continue;
        }
        to_write.push(
            group
                .members
                .iter()
                .copied()
                .filter(|&i| matches!(state[i], State::Write))
                .collect(),
        );
    }
    to_write
}

/// Each file to write, with its body and members: dead letters and the
/// staging object now; a data file as prepared when it was built with exactly
/// the members that stay, else encoded again. Also returns the preparation
/// (its timings go to the phases log).
#[allow(clippy::too_many_arguments)]
async fn build_files<'p, 'b, O: ObjectSink>(
    batch: &'p Batch<'b>,
    plan: &Plan,
    mut to_write: Vec<Vec<usize>>,
    early: Option<Prepared<'p, 'b>>,
    progress: &mut Progress,
    sink: &O,
    cfg: &PipelineConfig,
    now: DateTime<Utc>,
) -> (Vec<(usize, Bytes, Vec<usize>)>, Prepared<'p, 'b>) {
    let groups = &plan.groups;
    let mut prepared = match early {
        Some(p) => p,
        None => {
            let members: Vec<&[usize]> = to_write.iter().map(Vec::as_slice).collect();
            prepare(groups, &members, batch, sink, cfg, now).await
        }
    };
    progress.out.sink_ms += prepared.sink_ms;
    if let Err(e) = &prepared.schema {
        for (group, members) in groups.iter().zip(&mut to_write) {
            if group.kind == GroupKind::Data {
                for &i in members.iter() {
                    progress.state[i] = State::Failed(Failure::Schema(e.clone()));
                }
                members.clear();
            }
        }
    }
    let rejected_at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut bodies: Vec<(usize, Result<Vec<u8>, Failure>)> = Vec::with_capacity(groups.len());
    let mut again: Vec<usize> = Vec::new();
    for (g, members) in to_write.iter().enumerate() {
        if members.is_empty() {
            continue;
        }
        match groups[g].kind {
            GroupKind::DeadLetters => {
                let body = dead_letter_file(batch.records, members, &batch.rejects, &rejected_at);
                bodies.push((g, Ok(body)));
            }
            // built with every member: the claims lost none of them
            GroupKind::Data | GroupKind::Staging if prepared.rows[g].len() == members.len() => {
                let body = prepared.bodies[g]
                    .take()
                    .unwrap_or(Err("internal: the file was not prepared; retry".into()));
                bodies.push((g, body.map_err(Failure::Encode)));
            }
            GroupKind::Staging => {
                let body = staging_file(members, &batch.events, &batch.owners, now, cfg);
                bodies.push((g, body.map_err(Failure::Encode)));
            }
            GroupKind::Data => again.push(g),
        }
    }
    if !again.is_empty() {
        let schema = prepared.schema.as_ref().ok().and_then(Option::as_deref);
        let rows_again = again.iter().map(|&g| to_write[g].len()).sum::<usize>();
        let encoded = map_parallel(&again, rows_again >= ENCODE_PARALLEL_MIN_ROWS, |&g| {
            encode_file(
                &groups[g],
                &rows_of(&to_write[g], &batch.events),
                schema,
                cfg,
            )
            .map_err(Failure::Encode)
        });
        bodies.extend(again.into_iter().zip(encoded));
    }
    let mut files: Vec<(usize, Bytes, Vec<usize>)> = Vec::with_capacity(bodies.len());
    for (g, body) in bodies {
        let members = std::mem::take(&mut to_write[g]);
        match body {
            Ok(bytes) => files.push((g, Bytes::from(bytes), members)),
            Err(e) => {
                for i in members {
                    progress.state[i] = State::Failed(e.clone());
                }
            }
        }
    }
    (files, prepared)
}

/// Puts every file concurrently: the staging object create-if-absent (a
/// staging key is never reused: its events may be published already), the
/// others as they are.
async fn put_files<O: ObjectSink>(
    files: Vec<(usize, Bytes, Vec<usize>)>,
    plan: &Plan,
    progress: &mut Progress,
    sink: &O,
    cfg: &PipelineConfig,
) {
    let t = Instant::now();
    let groups = &plan.groups;
    let put_results = futures::stream::iter(files)
        .map(|(g, body, idx)| async move {
            let len = body.len();
            let group = &groups[g];
            let r = match group.kind {
                GroupKind::Staging => match sink.put_if_absent(&group.key, body).await {
                    Ok(true) => Ok(Put::Landed),
                    // named from its input: an earlier attempt staged these records
                    Ok(false) if cfg.dedup == DedupMode::Window => Ok(Put::Staged),
                    Ok(false) => Err(crate::core::sink::SinkError {
                        operation: "put_if_absent",
                        key: group.key.clone(),
                        message: "another writer staged the same records under this key at the same moment".into(),
                    }),
                    Err(e) => Err(e),
                },
                _ => sink.put(&group.key, body).await.map(|()| Put::Landed),
            };
            (g, len, idx, r)
        })
        .buffer_unordered(cfg.io_concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let out = &mut progress.out;
    out.sink_ms += t.elapsed().as_millis() as u64;
    for (g, len, idx, r) in put_results {
        let group = &groups[g];
        match r {
            Ok(Put::Staged) => {}
            Ok(Put::Landed) if group.kind == GroupKind::DeadLetters => {
                out.counts.dead_letter_files += 1
            }
            Ok(Put::Landed) if group.kind == GroupKind::Staging => out.counts.staging_objects += 1,
            Ok(Put::Landed) => {
                out.files.push(WrittenFile {
                    key: group.key.clone(),
                    rows: idx.len(),
                    bytes: len,
                });
                out.counts.files += 1;
                out.counts.bytes += len as u64;
            }
            Err(_) => {}
        }
        for i in idx {
            progress.state[i] = match &r {
                Ok(Put::Landed) => State::Written,
                Ok(Put::Staged) => State::Duplicate,
                Err(e) => State::Failed(Failure::Write {
                    file: group.key.clone(),
                    why: e.to_string(),
                }),
            };
        }
    }
    out.files.sort_by(|a, b| a.key.cmp(&b.key));
}

/// What a put did.
enum Put {
    /// The file landed.
    Landed,
    /// The staging object of these very records was there already.
    Staged,
}

/// Counts every record in exactly one state.
fn tally(batch: &Batch<'_>, progress: Progress) -> BatchOutcome {
    let Progress { state, mut out } = progress;
    for (i, s) in state.into_iter().enumerate() {
        let rejected = batch.rejects.contains_key(&i);
        match s {
            State::Written | State::Duplicate if rejected => out.counts.rejected += 1,
            State::Written => out.counts.written += 1,
            State::Duplicate => out.counts.duplicates += 1,
            State::Failed(reason) => out.failed.push(FailedRecord { index: i, reason }),
            State::Unknown(why) => out.failed.push(FailedRecord {
                index: i,
                reason: Failure::Unknown(why),
            }),
            State::Pending | State::Write => out.failed.push(FailedRecord {
                index: i,
                reason: Failure::Internal("record left unhandled"),
            }),
        }
    }
    out.counts.failed = out.failed.len() as u64;
    out
}

/// Files prepared for a batch: each group's events, a schema committed that
/// holds them, and each data file encoded.
struct Prepared<'e, 'a> {
    /// Per group, the events its file was built with (none for dead letters;
    /// a staging object's are only counted against its members later).
    rows: Vec<Vec<&'e Event<'a>>>,
    /// The committed schema (none when there is no data file), or why it
    /// could not be committed.
    schema: Result<Option<Arc<LakeSchema>>, String>,
    /// Per group, its encoded file or staging object (none for dead letters
    /// and empty groups).
    bodies: Vec<Option<Result<Vec<u8>, String>>>,
    /// Time spent committing the schema.
    sink_ms: u64,
    /// Time spent taking the values' kinds (and committing the schema), and
    /// encoding the files.
    typing: std::time::Duration,
    encode: std::time::Duration,
}

/// Builds the files of the given members: takes the kinds of the values in
/// every data group, commits a schema that holds them all, and encodes one
/// file per data group on every core; builds the staging object.
async fn prepare<'e, 'a, O: ObjectSink>(
    groups: &[Group],
    members: &[&[usize]],
    batch: &'e Batch<'a>,
    sink: &O,
    cfg: &PipelineConfig,
    now: DateTime<Utc>,
) -> Prepared<'e, 'a> {
    let events = &batch.events;
    let rows: Vec<Vec<&'e Event<'a>>> = groups
        .iter()
        .zip(members)
        .map(|(group, members)| match group.kind {
            GroupKind::Data | GroupKind::Staging => rows_of(members, events),
            GroupKind::DeadLetters => Vec::new(),
        })
        .collect();
    let started = Instant::now();
    let data: Vec<&[&Event<'a>]> = groups
        .iter()
        .zip(&rows)
        .filter(|(group, _)| group.kind == GroupKind::Data)
        .map(|(_, rows)| rows.as_slice())
        .collect();
    let n_rows: usize = data.iter().map(|rows| rows.len()).sum();
    let parallel = n_rows >= ENCODE_PARALLEL_MIN_ROWS;
    let stats = batch_stats(&data, parallel);
    let mut sink_ms = 0;
    let schema = if stats.is_empty() {
        Ok(None)
    } else {
        let t = Instant::now();
        let ensured = registry::ensure(sink, &cfg.prefix, &cfg.schema_cache, &stats).await;
        sink_ms = t.elapsed().as_millis() as u64;
        ensured.map(Some).map_err(|e| e.to_string())
    };
    let typing = started.elapsed();
    let mut bodies: Vec<Option<Result<Vec<u8>, String>>> = groups.iter().map(|_| None).collect();
    if let Ok(schema) = &schema {
        let jobs: Vec<usize> = (0..groups.len())
            .filter(|&g| groups[g].kind == GroupKind::Data && !rows[g].is_empty())
            .collect();
        let encoded = map_parallel(&jobs, parallel, |&g| {
            encode_file(&groups[g], &rows[g], schema.as_deref(), cfg)
        });
        for (g, body) in jobs.into_iter().zip(encoded) {
            bodies[g] = Some(body);
        }
    }
    for (g, group) in groups.iter().enumerate() {
        if group.kind == GroupKind::Staging && !rows[g].is_empty() {
            bodies[g] = Some(staging_file(members[g], events, &batch.owners, now, cfg));
        }
    }
    Prepared {
        rows,
        schema,
        bodies,
        sink_ms,
        typing,
        encode: started.elapsed() - typing,
    }
}

/// The members' events.
fn rows_of<'e, 'a>(members: &[usize], events: &'e [Option<Event<'a>>]) -> Vec<&'e Event<'a>> {
    members.iter().filter_map(|&i| events[i].as_ref()).collect()
}

/// Encodes one group's data file. A panic while encoding fails this file's
/// records (they are retried), not the whole batch.
fn encode_file(
    group: &Group,
    rows: &[&Event<'_>],
    schema: Option<&LakeSchema>,
    cfg: &PipelineConfig,
) -> Result<Vec<u8>, String> {
    let (Some(schema), Some(first)) = (schema, rows.first()) else {
        return Err("internal: no schema for a data file; retry".to_string());
    };
    let p = &first.partition;
    let table = table_name(&p.event_type, p.event_subtype.as_deref());
    let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        encode(rows, schema, &table, &cfg.encode)
    }));
    match encoded {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(format!("encoding {} failed: {e}", group.key)),
        Err(_) => Err("internal: encoding a file panicked; retry".to_string()),
    }
}

/// Rows below which a batch's files are encoded on the calling thread.
const ENCODE_PARALLEL_MIN_ROWS: usize = 1000;

/// Records below which a batch is decoded and enriched on the calling thread
/// (a Lambda batch at the smallest memory sizes has one vCPU anyway).
const PARALLEL_MIN_RECORDS: usize = 64;

/// The key of this batch's staging object: its window's folder, the id of
/// its input and the lowest number under which nothing was ever staged (a
/// staging key is never reused: the events of a published staging object are
/// in the lake even after the object is gone).
async fn staging_target<O: ObjectSink>(
    sink: &O,
    cfg: &PipelineConfig,
    owners: &[&str],
    now_s: i64,
) -> Result<String, crate::core::sink::SinkError> {
    let window = Window::containing(now_s, cfg.window_secs).id();
    let input = input_id(owners.iter().copied());
    let planned = publish::planned_staging(sink, &cfg.prefix, &window).await?;
    for n in 0..MAX_STAGING_NUMBER {
        let key = staging_key(&cfg.prefix, &window, &input, n);
        if !planned.contains(&key) && !sink.exists(&key).await? {
            return Ok(key);
        }
    }
    Err(crate::core::sink::SinkError {
        operation: "put",
        key: staging_key(&cfg.prefix, &window, &input, MAX_STAGING_NUMBER),
        message: format!(
            "the same records were staged {MAX_STAGING_NUMBER} times in this window already"
        ),
    })
}

/// The staging key of window dedup: its window's folder and the id of its
/// input and content, number 0 always (a retry of the same records finds it
/// staged, or in a publication plan).
fn input_staging_key(cfg: &PipelineConfig, batch: &Batch<'_>, now_s: i64) -> String {
    let window = Window::containing(now_s, cfg.window_secs).id();
    staging_key(&cfg.prefix, &window, &batch.content_id(), 0)
}

/// Staging objects of the same records in one window before giving up
/// (each one is a retry that found new events to stage).
const MAX_STAGING_NUMBER: u32 = 1000;

/// The body of a batch's staging object: the members' events by partition,
/// in batch order within each.
fn staging_file(
    members: &[usize],
    events: &[Option<Event<'_>>],
    owners: &[&str],
    now: DateTime<Utc>,
    cfg: &PipelineConfig,
) -> Result<Vec<u8>, String> {
    let mut parts: Vec<(String, Vec<Staged<'_>>)> = Vec::new();
    let mut last: Option<&PartitionKey> = None;
    for &i in members {
        let Some(e) = &events[i] else { continue };
        if last != Some(&e.partition) {
            parts.push((e.partition.path(), Vec::new()));
            last = Some(&e.partition);
        }
        if let Some((_, staged)) = parts.last_mut() {
            staged.push(Staged {
                owner: owners[i],
                json: e.json,
            });
        }
    }
    let window = Window::containing(now.timestamp(), cfg.window_secs).id();
    encode_staging(
        &window,
        &now.to_rfc3339_opts(SecondsFormat::Millis, true),
        cfg.created_at_unit,
        &parts,
    )
}

/// Checks whether the files of held claims are committed and decides for each
/// held record; returns the claims to take over.
async fn resolve_held<O: ObjectSink>(
    held: Vec<(usize, Holder)>,
    batch: &Batch<'_>,
    sink: &O,
    cfg: &PipelineConfig,
    now_s: i64,
    progress: &mut Progress,
) -> Vec<(usize, Holder)> {
    let mut keys: Vec<String> = held.iter().map(|(_, h)| h.object_key.clone()).collect();
    keys.sort_unstable();
    keys.dedup();
    let t = Instant::now();
    let committed: HashMap<String, Result<bool, String>> = futures::stream::iter(keys)
        .map(|k| async move {
            let r = publish::is_committed(sink, &cfg.prefix, &k)
                .await
                .map_err(|e| e.to_string());
            (k, r)
        })
        .buffer_unordered(cfg.io_concurrency.max(1))
        .collect()
        .await;
    progress.out.sink_ms += t.elapsed().as_millis() as u64;
    let mut transfers = Vec::new();
    for (i, h) in held {
        let state = &mut progress.state[i];
        match committed.get(&h.object_key) {
            None => *state = State::Failed(Failure::Internal("no existence check")),
            Some(Err(e)) => {
                *state = State::Failed(Failure::CannotCheck {
                    file: h.object_key.clone(),
                    why: e.clone(),
                })
            }
            Some(Ok(exists)) => {
                match resolve(&h, batch.owners[i], *exists, now_s, cfg.lease_secs) {
                    Resolution::Duplicate => *state = State::Duplicate,
                    Resolution::Transfer => transfers.push((i, h)),
                    Resolution::RetryLater => {
                        *state = State::Failed(Failure::HeldElsewhere {
                            holder: h.owner.clone(),
                            since: h.claimed_at,
                            file: h.object_key.clone(),
                        })
                    }
                }
            }
        }
    }
    transfers
}

/// The NDJSON body of a dead-letter file.
fn dead_letter_file(
    records: &[RawRecord],
    members: &[usize],
    reasons: &HashMap<usize, Reject>,
    rejected_at: &str,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(members.len() * 256);
    for &i in members {
        let Some(r) = reasons.get(&i) else { continue };
        let line = DeadLetter {
            reason_code: r.code(),
            reason: r.to_string(),
            origin: &records[i].origin,
            rejected_at,
            data_base64: base64::engine::general_purpose::STANDARD.encode(&records[i].data),
        };
        // a struct of strings always serialises
        if serde_json::to_writer(&mut body, &line).is_ok() {
            body.push(b'\n');
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemSink, MemStore};
    use arrow::array::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn rec(owner_line: u64, json: &str) -> RawRecord {
        RawRecord {
            data: json.as_bytes().to_vec(),
            origin: Origin::File {
                path: "/in.ndjson".into(),
                line: owner_line,
            },
            unreadable: None,
        }
    }

    fn ev(uuid: &str, name: &str, day: i64) -> String {
        format!(
            r#"{{"event_uuid":"{uuid}","event_name":"{name}","created_at":{},"v":1}}"#,
            1710633600 + day * 86400
        )
    }

    fn batch() -> Vec<RawRecord> {
        vec![
            rec(1, &ev("a", "payment:order", 0)),
            rec(2, &ev("b", "payment:order", 0)),
            rec(3, &ev("c", "account:created", 1)),
            rec(4, &ev("a", "payment:order", 0)),
            rec(5, "not json"),
            rec(6, &ev("d", "lesson", 0)),
        ]
    }

    /// event_uuid -> number of rows in the lake
    fn lake_rows(sink: &MemSink) -> HashMap<String, usize> {
        let mut rows = HashMap::new();
        for u in files_with(sink, "").into_iter().flatten() {
            *rows.entry(u).or_insert(0) += 1;
        }
        rows
    }

    fn dead_letters(sink: &MemSink) -> Vec<serde_json::Value> {
        sink.objects()
            .into_iter()
            .filter(|(k, _)| k.contains("_errors/"))
            .flat_map(|(_, b)| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .map(|l| serde_json::from_str(l).expect("dead letter is JSON"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid")
    }

    async fn run(records: &[RawRecord], store: &MemStore, sink: &MemSink) -> BatchOutcome {
        run_batch(records, store, sink, &PipelineConfig::default(), now()).await
    }

    fn assert_once(sink: &MemSink, uuids: &[&str]) {
        let rows = lake_rows(sink);
        for u in uuids {
            assert_eq!(
                rows.get(*u),
                Some(&1),
                "{u} must be in the lake exactly once: {rows:?}"
            );
        }
        assert_eq!(rows.len(), uuids.len(), "{rows:?}");
    }

    #[tokio::test]
    async fn every_record_is_accounted_for() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let o = run(&batch(), &store, &sink).await;
        let c = &o.counts;
        assert_eq!(
            (c.records, c.written, c.duplicates, c.rejected, c.failed),
            (6, 4, 1, 1, 0)
        );
        assert_eq!(c.records, c.written + c.duplicates + c.rejected + c.failed);
        assert_eq!(c.files, 3, "one file per partition");
        assert_once(&sink, &["a", "b", "c", "d"]);
        let dl = dead_letters(&sink);
        assert_eq!(dl.len(), 1);
        assert_eq!(dl[0]["reason_code"], "invalid_json");
        assert_eq!(dl[0]["origin"]["line"], 5);
        let data = base64::engine::general_purpose::STANDARD
            .decode(dl[0]["data_base64"].as_str().expect("string"))
            .expect("base64");
        assert_eq!(data, b"not json");
    }

    #[tokio::test]
    async fn the_same_batch_again_writes_nothing() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        run(&batch(), &store, &sink).await;
        let before = sink.objects().len();
        let o = run(&batch(), &store, &sink).await;
        assert_eq!(
            (o.counts.written, o.counts.duplicates, o.counts.rejected),
            (0, 5, 1)
        );
        assert_eq!(
            sink.objects().len(),
            before,
            "no new file, dead letters included"
        );
        assert_once(&sink, &["a", "b", "c", "d"]);
    }

    /// Window dedup: no claims; a retry of the same records finds its
    /// staging object and dead letters by name, a resend in a later window
    /// is dropped by the publisher; every event once.
    #[tokio::test]
    async fn window_dedup_stages_a_retry_once_and_the_publisher_drops_a_resend() {
        use crate::core::publish::{PublishConfig, Which, publish};
        let (store, sink) = (crate::core::dedup::NoClaims, MemSink::default());
        let cfg = PipelineConfig {
            window_secs: 300,
            dedup: DedupMode::Window,
            ..PipelineConfig::default()
        };
        let first = run_batch(&batch(), &store, &sink, &cfg, now()).await;
        assert_eq!((first.counts.written, first.counts.rejected), (4, 1));
        let staged = sink.objects().len();
        let retry = run_batch(&batch(), &store, &sink, &cfg, now()).await;
        assert_eq!(
            (
                retry.counts.written,
                retry.counts.duplicates,
                retry.counts.failed
            ),
            (0, 5, 0),
            "{:?}",
            retry.failed
        );
        assert_eq!(retry.counts.rejected, 1);
        assert_eq!(sink.objects().len(), staged, "the same names, nothing new");
        assert_eq!(dead_letters(&sink).len(), 1, "the dead letter once");
        // the same events, re-sent by a producer ten minutes later
        let resend = vec![
            rec(100, &ev("b", "payment:order", 0)),
            rec(101, &ev("e", "x:y", 0)),
        ];
        let later = now() + chrono::Duration::minutes(10);
        let o = run_batch(&resend, &store, &sink, &cfg, later).await;
        assert_eq!(o.counts.written, 2, "staged: the publisher decides");
        let p = PublishConfig {
            window_secs: 300,
            ..PublishConfig::default()
        };
        publish(&sink, &p, Which::Everything, later)
            .await
            .expect("publish");
        assert_once(&sink, &["a", "b", "c", "d", "e"]);
    }

    #[tokio::test]
    async fn a_producer_resend_in_a_later_batch_is_dropped() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        run(&batch(), &store, &sink).await;
        let resend = vec![
            rec(100, &ev("b", "payment:order", 0)),
            rec(101, &ev("e", "x:y", 0)),
        ];
        let o = run(&resend, &store, &sink).await;
        assert_eq!((o.counts.written, o.counts.duplicates), (1, 1));
        assert_once(&sink, &["a", "b", "c", "d", "e"]);
    }

    /// Parquet rows of the files under `partition` (a key fragment).
    fn files_with(sink: &MemSink, partition: &str) -> Vec<Vec<String>> {
        let mut files = Vec::new();
        for (key, body) in sink.objects() {
            if !key.contains(partition) || !key.ends_with(".parquet") {
                continue;
            }
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
            files.push(uuids);
        }
        files.sort();
        files
    }

    #[tokio::test]
    async fn a_file_encoded_ahead_loses_the_events_whose_claims_are_held() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        run(&batch(), &store, &sink).await;
        // "b" is in the lake; "f" is new, in the same partition
        let next = vec![
            rec(100, &ev("f", "payment:order", 0)),
            rec(101, &ev("b", "payment:order", 0)),
        ];
        let cfg = PipelineConfig::default();
        assert!(cfg.encode_ahead.get());
        let o = run_batch(&next, &store, &sink, &cfg, now()).await;
        assert_eq!(
            (o.counts.written, o.counts.duplicates, o.counts.files),
            (1, 1, 1)
        );
        assert_eq!(o.files[0].rows, 1);
        let files = files_with(&sink, "event_type=payment");
        assert_eq!(files, [vec!["a".to_string(), "b".into()], vec!["f".into()]]);
        assert_once(&sink, &["a", "b", "c", "d", "f"]);
    }

    #[tokio::test]
    async fn a_staging_object_built_ahead_loses_the_events_whose_claims_are_held() {
        use crate::core::publish::{PublishConfig, Which, publish};
        use crate::core::staging::{read_header, section_bytes, section_events};
        let (store, sink) = (MemStore::default(), MemSink::default());
        let cfg = PipelineConfig {
            window_secs: 300,
            ..PipelineConfig::default()
        };
        run_batch(&batch(), &store, &sink, &cfg, now()).await;
        assert!(
            cfg.encode_ahead.get(),
            "new events: built ahead of the claims"
        );
        let before: Vec<String> = sink.objects().into_iter().map(|(k, _)| k).collect();
        // "b" is staged already; "f" is new, in the same partition
        let next = vec![
            rec(100, &ev("f", "payment:order", 0)),
            rec(101, &ev("b", "payment:order", 0)),
        ];
        let o = run_batch(&next, &store, &sink, &cfg, now()).await;
        assert_eq!((o.counts.written, o.counts.duplicates), (1, 1));
        let staged: Vec<_> = sink
            .objects()
            .into_iter()
            .filter(|(k, _)| k.contains("_staging/") && !before.contains(k))
            .collect();
        let [(key, body)] = staged.as_slice() else {
            panic!("one staging object for the second batch: {staged:?}");
        };
        let header = read_header(key, body).expect("header");
        let uuids: Vec<String> = header
            .sections
            .iter()
            .flat_map(|s| {
                let bytes = section_bytes(key, body, s).expect("section");
                section_events(key, s, &bytes)
                    .expect("events")
                    .iter()
                    .map(|e| {
                        enrich(e.json, CreatedAtUnit::S)
                            .expect("valid")
                            .event_uuid
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(uuids, ["f"], "the held event is not staged again");
        let p = PublishConfig {
            window_secs: 300,
            ..PublishConfig::default()
        };
        publish(&sink, &p, Which::Everything, now())
            .await
            .expect("publish");
        assert_once(&sink, &["a", "b", "c", "d", "f"]);
    }

    #[tokio::test]
    async fn a_rerun_claims_before_encoding_and_new_events_switch_back() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let cfg = PipelineConfig::default();
        run_batch(&batch(), &store, &sink, &cfg, now()).await;
        assert!(cfg.encode_ahead.get(), "new events: encode ahead");
        let o = run_batch(&batch(), &store, &sink, &cfg, now()).await;
        assert_eq!(o.counts.written, 0);
        assert!(!cfg.encode_ahead.clone().get(), "a re-run: claim first");
        // claimed first, then encoded: the held event is left out, the new one written
        let next = vec![
            rec(100, &ev("f", "payment:order", 0)),
            rec(101, &ev("g", "payment:order", 0)),
            rec(102, &ev("b", "payment:order", 0)),
        ];
        let o = run_batch(&next, &store, &sink, &cfg, now()).await;
        assert_eq!((o.counts.written, o.counts.duplicates), (2, 1));
        assert!(cfg.encode_ahead.get(), "mostly new again: encode ahead");
        let files = files_with(&sink, "event_type=payment");
        assert_eq!(
            files,
            [
                vec!["a".to_string(), "b".into()],
                vec!["f".into(), "g".into()]
            ]
        );
        assert_once(&sink, &["a", "b", "c", "d", "f", "g"]);
    }

    #[tokio::test]
    async fn claims_made_but_writes_lost_are_written_on_retry() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        sink.fail_puts(&["event_type="]);
        let o = run(&batch(), &store, &sink).await;
        assert_eq!(o.counts.written, 0);
        let failed: Vec<usize> = o.failed.iter().map(|f| f.index).collect();
        assert_eq!(failed, [0, 1, 2, 5]);
        assert!(store.holder("a").is_some(), "claims were made");
        sink.fail_puts(&[]);
        let o = run(&batch(), &store, &sink).await;
        assert_eq!((o.counts.written, o.counts.failed), (4, 0));
        assert_once(&sink, &["a", "b", "c", "d"]);
    }

    #[tokio::test]
    async fn a_partial_failure_then_a_retry_lands_everything_once() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        sink.fail_puts(&["event_type=account"]);
        let o = run(&batch(), &store, &sink).await;
        assert_eq!(o.failed.iter().map(|f| f.index).collect::<Vec<_>>(), [2]);
        assert_eq!(o.counts.written, 3);
        sink.fail_puts(&[]);
        // Lambda re-sends from the lowest failed sequence number on
        let o = run(&batch()[2..], &store, &sink).await;
        assert_eq!((o.counts.written, o.counts.failed), (1, 0));
        assert_once(&sink, &["a", "b", "c", "d"]);
    }

    #[tokio::test]
    async fn an_unknown_claim_outcome_keeps_its_file_unwritten() {
        let store = MemStore::failing_from(0);
        let sink = MemSink::default();
        let o = run(&batch(), &store, &sink).await;
        assert_eq!(o.counts.failed, 5);
        // the schema may be committed (encoded ahead); no data or dead-letter file
        let keys: Vec<String> = sink.objects().into_iter().map(|(k, _)| k).collect();
        assert!(
            keys.iter().all(|k| k.starts_with(registry::SCHEMA_DIR)),
            "{keys:?}"
        );
    }

    #[tokio::test]
    async fn another_writers_fresh_claim_is_retried_and_a_stale_one_taken_over() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let other = vec![RawRecord {
            data: ev("a", "payment:order", 0).into_bytes(),
            origin: Origin::Kinesis {
                stream: "s".into(),
                shard_id: "shardId-1".into(),
                sequence_number: "9".into(),
                sub_sequence_number: None,
                arrival_ms: None,
            },
            unreadable: None,
        }];
        // the other writer claims "a" and dies before its file lands
        sink.fail_puts(&["event_type="]);
        run(&other, &store, &sink).await;
        sink.fail_puts(&[]);
        let mine = vec![rec(1, &ev("a", "payment:order", 0))];
        let soon = now() + chrono::Duration::seconds(10);
        let o = run_batch(&mine, &store, &sink, &PipelineConfig::default(), soon).await;
        assert_eq!(o.counts.failed, 1, "within the lease: retry later");
        assert!(
            o.failed[0].reason.to_string().contains("retry later"),
            "{}",
            o.failed[0].reason
        );
        let later = now() + chrono::Duration::seconds(PipelineConfig::default().lease_secs + 1);
        let o = run_batch(&mine, &store, &sink, &PipelineConfig::default(), later).await;
        assert_eq!(o.counts.written, 1, "after the lease: taken over");
        assert_once(&sink, &["a"]);
    }
}
