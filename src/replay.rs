//! Replay: the lake's dead letters run through the current rules again, and
//! the batches Lambda gave up on (its on-failure destination's records) run
//! through the pipeline, exactly once, over any dedup store and object sink.
//!
//! Dead letters: each line of `_errors/ingest_date=D/part-*.ndjson` becomes
//! its record again (origin and original bytes; a KPL aggregate is unpacked
//! as on the stream), checked with the current rules first:
//! - a record that still fails **stays**: it is not sent to the pipeline, so
//!   no second dead letter is ever written for it (whatever the claims' TTL);
//! - a record that passes goes through [`run_batch`] with its original
//!   origin, so its `event_uuid` claim makes it land once (a replay killed
//!   half way and run again takes over its own claims);
//! - the lines that moved are recorded in `_replay/ingest_date=D/part-*.json`
//!   once their batch is durable, so a later replay skips them even after
//!   the claims expired.
//!
//! Failed batches (`--failed`): a record of the Lambda function's on-failure
//! destination names a batch of one shard. The S3 destination's record holds
//! the batch's event (its `payload`); the SQS and SNS destinations' records
//! hold only the shard and sequence range, whose records [`fetch_batch`]
//! reads back from the stream while they are retained (through a
//! [`ShardReader`]; the AWS one is `aws::kinesis_stream`). Either way the
//! records go through [`run_batch`] as the function would have run them
//! (same origins, KPL aggregates unpacked), so their claims keep each event
//! once however often the batch is replayed.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::core::dedup::DedupStore;
use crate::core::pipeline::{Counts, PipelineConfig, run_batch};
use crate::core::sink::{ObjectSink, SinkError};
use crate::ingest::FailedRecordReport;
use crate::kinesis::{
    KinesisData, KinesisEvent, KinesisEventRecord, KinesisRecord, raw_records, unpack,
};
use crate::record::{Origin, RawRecord};

/// Which dead letters to replay.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Dead letters written on or after this date (`ingest_date`).
    pub since: Option<NaiveDate>,
    /// Dead letters written on or before this date.
    pub until: Option<NaiveDate>,
    /// Only these reason codes (all when empty).
    pub reasons: Vec<String>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySummary {
    /// Dead-letter lines that matched the filter.
    pub dead_letters: u64,
    /// Of those, moved into the lake now (written, or staged for publication).
    pub moved: u64,
    /// Of those, whose event was already in the lake (a duplicate now).
    pub already_in_lake: u64,
    /// Of those, still rejected, by the reason code they fail with now.
    pub stayed: BTreeMap<String, u64>,
    /// Of those, moved by an earlier replay (skipped).
    pub replayed_before: u64,
    /// Records that could not be written durably: run the replay again.
    pub failed: u64,
    /// Dead-letter lines that are not dead letters (named in the log).
    pub unreadable_lines: u64,
    /// What the records of failed batches (`--failed`) did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_batches: Option<Counts>,
    /// The first failed records (at most 20).
    pub failures: Vec<FailedRecordReport>,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The lake could not be read or written.
    #[error("{0}; nothing is written twice: fix the cause and run the same replay again")]
    Sink(#[from] SinkError),
    /// A failed-batch record cannot be used.
    #[error("{source_name}: {message}")]
    FailedBatch {
        /// The file or key it came from.
        source_name: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// One dead-letter line, as the pipeline writes it.
#[derive(Debug, Deserialize)]
struct DeadLetter {
    reason_code: String,
    origin: Origin,
    data_base64: String,
}

/// The lines of one dead-letter file that earlier replays moved.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    moved_lines: BTreeSet<u64>,
    replayed_at: String,
}

/// Reason codes whose dead letter does not hold the producer's bytes (they
/// could not be read at the source): replaying cannot help.
const NOT_REPLAYABLE: [&str; 2] = ["not_base64", "corrupt_input"];

/// Records per pipeline batch of a replay.
const REPLAY_BATCH: usize = 10_000;

/// Replays the lake's dead letters that match `filter` (see the module).
pub async fn replay_dead_letters<S: DedupStore, O: ObjectSink>(
    store: &S,
    sink: &O,
    cfg: &PipelineConfig,
    filter: &Filter,
    now: DateTime<Utc>,
) -> Result<ReplaySummary, ReplayError> {
    let mut summary = ReplaySummary::default();
    let errors = format!("{}_errors/", key_prefix(&cfg.prefix));
    let mut keys: Vec<String> = Vec::new();
    for folder in sink.list_folders(&errors).await? {
        if !date_of(&folder).is_some_and(|d| in_range(d, filter)) {
            continue;
        }
        keys.extend(
            sink.list(&folder)
                .await?
                .into_iter()
                .filter(|k| k.ends_with(".ndjson")),
        );
    }
    keys.sort();
    for key in keys {
        replay_file(store, sink, cfg, filter, &key, now, &mut summary).await?;
    }
    Ok(summary)
}

/// `prefix/` or nothing.
fn key_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

/// The `ingest_date` of a dead-letter key.
fn date_of(key: &str) -> Option<NaiveDate> {
    let start = key.find("ingest_date=")? + "ingest_date=".len();
    let date = key.get(start..start + 10)?;
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

fn in_range(d: NaiveDate, f: &Filter) -> bool {
    f.since.is_none_or(|s| d >= s) && f.until.is_none_or(|u| d <= u)
}

/// The progress record of a dead-letter file: `_replay/` beside `_errors/`.
fn progress_key(dead_letter_key: &str) -> String {
    let key = dead_letter_key.replacen("_errors/", "_replay/", 1);
    match key.strip_suffix(".ndjson") {
        Some(stem) => format!("{stem}.json"),
        None => format!("{key}.json"),
    }
}

async fn read_progress<O: ObjectSink>(sink: &O, key: &str) -> Result<Progress, SinkError> {
    let Some(body) = sink.get(key).await? else {
        return Ok(Progress::default());
    };
    serde_json::from_slice(&body).map_err(|e| SinkError {
        operation: "get",
        key: key.to_string(),
        message: format!(
            "not a replay progress record ({e}); remove it to replay the file's dead letters again (their claims still keep them from landing twice)"
        ),
    })
}

/// Replays one dead-letter file.
async fn replay_file<S: DedupStore, O: ObjectSink>(
    store: &S,
    sink: &O,
    cfg: &PipelineConfig,
    filter: &Filter,
    key: &str,
    now: DateTime<Utc>,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    let Some(body) = sink.get(key).await? else {
        return Ok(());
    };
    let pkey = progress_key(key);
    let mut progress = read_progress(sink, &pkey).await?;
    // the records that pass the current rules, and the line each came from
    let mut passing: Vec<RawRecord> = Vec::new();
    let mut line_of: Vec<u64> = Vec::new();
    // lines with a record that still fails: never marked as moved
    let mut stays: BTreeSet<u64> = BTreeSet::new();
    for (n, text) in String::from_utf8_lossy(&body).lines().enumerate() {
        let line = n as u64 + 1;
        if text.trim().is_empty() {
            continue;
        }
        let letter: DeadLetter = match serde_json::from_str(text) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(file = key, line, error = %e, "not a dead letter; skipped");
                summary.unreadable_lines += 1;
                continue;
            }
        };
        if !filter.reasons.is_empty() && !filter.reasons.contains(&letter.reason_code) {
            continue;
        }
        summary.dead_letters += 1;
        if progress.moved_lines.contains(&line) {
            summary.replayed_before += 1;
            continue;
        }
        if NOT_REPLAYABLE.contains(&letter.reason_code.as_str()) {
            *summary.stayed.entry(letter.reason_code).or_default() += 1;
            stays.insert(line);
            continue;
        }
        let Ok(data) = base64::engine::general_purpose::STANDARD.decode(&letter.data_base64) else {
            tracing::warn!(file = key, line, "data_base64 is not base64; skipped");
            summary.unreadable_lines += 1;
            continue;
        };
        let mut records = Vec::new();
        unpack(data, letter.origin, &mut records);
        for r in records {
            match r
                .decode()
                .and_then(|json| crate::core::enrich::enrich(&json, cfg.created_at_unit).map(drop))
            {
                Err(reject) => {
                    *summary.stayed.entry(reject.code().to_string()).or_default() += 1;
                    stays.insert(line);
                }
                Ok(()) => {
                    passing.push(r);
                    line_of.push(line);
                }
            }
        }
    }
    let mut failed_lines: BTreeSet<u64> = BTreeSet::new();
    for (chunk, lines) in passing
        .chunks(REPLAY_BATCH)
        .zip(line_of.chunks(REPLAY_BATCH))
    {
        let outcome = run_batch(chunk, store, sink, cfg, now).await;
        summary.moved += outcome.counts.written;
        summary.already_in_lake += outcome.counts.duplicates;
        summary.failed += outcome.counts.failed;
        for f in &outcome.failed {
            failed_lines.insert(lines[f.index]);
            if summary.failures.len() < 20 {
                summary.failures.push(FailedRecordReport {
                    record: chunk[f.index].origin.describe(),
                    reason: f.reason.to_string(),
                });
            }
        }
    }
    let moved: BTreeSet<u64> = line_of
        .iter()
        .copied()
        .filter(|l| !failed_lines.contains(l) && !stays.contains(l))
        .collect();
    if !moved.is_empty() {
        progress.moved_lines.extend(moved);
        progress.replayed_at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = serde_json::to_vec_pretty(&progress).unwrap_or_default();
        sink.put(&pkey, Bytes::from(body)).await?;
    }
    Ok(())
}

/// A record of Lambda's on-failure destination for a Kinesis source: the
/// fields replay uses.
#[derive(Debug, Deserialize)]
struct FailureRecord {
    #[serde(rename = "KinesisBatchInfo")]
    batch: Option<BatchInfo>,
    /// S3 destinations: the invocation's payload, the event itself (an
    /// object, or its JSON text).
    payload: Option<serde_json::Value>,
    /// An SNS notification around the record (an SNS destination's message
    /// as a subscriber receives it): the record as JSON text.
    #[serde(rename = "Message")]
    sns_message: Option<String>,
}

/// `KinesisBatchInfo`: which records of which shard the batch held.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchInfo {
    shard_id: Option<String>,
    start_sequence_number: Option<String>,
    end_sequence_number: Option<String>,
    stream_arn: Option<String>,
}

/// What a failed-batch record gives.
#[derive(Debug, Clone, PartialEq)]
pub enum FailedBatch {
    /// The batch itself (the S3 destination's record carries the payload).
    Records(KinesisEvent),
    /// Only where it was (the SQS and SNS destinations' records): its
    /// records are read back from the stream ([`fetch_batch`]).
    Range(BatchRange),
}

/// The shard and sequence range of a failed batch (`KinesisBatchInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRange {
    /// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`.
    pub stream_arn: String,
    /// `shardId-000000000000`.
    pub shard_id: String,
    /// The batch's first record.
    pub start_sequence_number: String,
    /// The batch's last record.
    pub end_sequence_number: String,
}

impl BatchRange {
    /// The stream's name, from its ARN.
    pub fn stream_name(&self) -> &str {
        self.stream_arn
            .rsplit_once(":stream/")
            .map_or(self.stream_arn.as_str(), |(_, name)| name)
    }

    /// The region of the stream, from its ARN (`arn:aws:kinesis:REGION:…`).
    pub fn region(&self) -> Option<&str> {
        self.stream_arn.split(':').nth(3).filter(|r| !r.is_empty())
    }
}

/// Reads a record of Lambda's on-failure destination (`source_name`: the file
/// or key it came from, for messages): the batch when it carries its payload
/// (the S3 destination's form), else the shard and sequence range to read
/// from the stream (the SQS and SNS forms, the SNS notification around it
/// included).
pub fn read_failed_batch(source_name: &str, body: &[u8]) -> Result<FailedBatch, ReplayError> {
    let err = |message: String| ReplayError::FailedBatch {
        source_name: source_name.to_string(),
        message,
    };
    let not_a_record = |e: serde_json::Error| {
        err(format!(
            "not a Lambda on-failure record ({e}); expected the JSON object Lambda writes to the on-failure destination (requestContext, KinesisBatchInfo, and with an S3 destination payload)"
        ))
    };
    let mut record: FailureRecord = serde_json::from_slice(body).map_err(not_a_record)?;
    if record.batch.is_none()
        && record.payload.is_none()
        && let Some(text) = record.sns_message.take()
    {
        record = serde_json::from_str(&text).map_err(not_a_record)?;
    }
    let payload = match record.payload {
        Some(serde_json::Value::String(text)) => serde_json::from_str(&text),
        Some(value) => serde_json::from_value(value),
        None => {
            let Some(b) = record.batch else {
                return Err(err(
                    "neither a payload nor a KinesisBatchInfo: not the record of a Kinesis event source's on-failure destination".into(),
                ));
            };
            let missing: Vec<&str> = [
                ("streamArn", b.stream_arn.is_none()),
                ("shardId", b.shard_id.is_none()),
                ("startSequenceNumber", b.start_sequence_number.is_none()),
                ("endSequenceNumber", b.end_sequence_number.is_none()),
            ]
            .into_iter()
            .filter_map(|(name, absent)| absent.then_some(name))
            .collect();
            return match (
                b.stream_arn,
                b.shard_id,
                b.start_sequence_number,
                b.end_sequence_number,
            ) {
                (Some(stream_arn), Some(shard_id), Some(start), Some(end)) => {
                    Ok(FailedBatch::Range(BatchRange {
                        stream_arn,
                        shard_id,
                        start_sequence_number: start,
                        end_sequence_number: end,
                    }))
                }
                _ => Err(err(format!(
                    "its KinesisBatchInfo lacks {} and there is no payload: the batch's records cannot be found",
                    missing.join(", ")
                ))),
            };
        }
    };
    payload.map(FailedBatch::Records).map_err(|e| {
        err(format!(
            "its payload is not a Lambda Kinesis event ({e}); expected {{\"Records\": [...]}}"
        ))
    })
}

/// One record as `GetRecords` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    /// Its sequence number in the shard.
    pub sequence_number: String,
    /// The producer's partition key.
    pub partition_key: String,
    /// The producer's bytes (a KPL aggregate included, as put).
    pub data: Vec<u8>,
    /// When the stream received it, Unix milliseconds.
    pub arrival_ms: Option<i64>,
}

/// One `GetRecords` answer.
#[derive(Debug, Clone, Default)]
pub struct ShardPage {
    /// The records, in shard order.
    pub records: Vec<StreamRecord>,
    /// Where to read on; none at the end of a closed shard.
    pub next_iterator: Option<String>,
    /// How far behind the tip of the shard this page is.
    pub millis_behind_latest: Option<i64>,
}

/// Why reading the stream failed (the message is the service's, with what
/// the adapter knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// The stream or the shard does not exist (`ResourceNotFoundException`).
    NotFound(String),
    /// The credentials may not read it (`AccessDeniedException`).
    AccessDenied(String),
    /// The sequence number was refused (`InvalidArgumentException`): trimmed
    /// past, or not from this shard.
    InvalidArgument(String),
    /// Anything else (network, throttling after the retries, …).
    Other(String),
}

/// Reads a shard of a Kinesis stream: the calls [`fetch_batch`] needs (the
/// AWS adapter is `aws::kinesis_stream`).
pub trait ShardReader: Send + Sync {
    /// `GetShardIterator` `AT_SEQUENCE_NUMBER`.
    fn iterator_at(
        &self,
        range: &BatchRange,
    ) -> impl Future<Output = Result<String, StreamError>> + Send;

    /// `GetRecords` from `iterator`.
    fn records(
        &self,
        range: &BatchRange,
        iterator: &str,
    ) -> impl Future<Output = Result<ShardPage, StreamError>> + Send;

    /// The stream's retention period in hours, when it can be read (for
    /// messages).
    fn retention_hours(&self, range: &BatchRange) -> impl Future<Output = Option<i32>> + Send;
}

/// Compares two sequence numbers (decimal numbers of up to 128 digits): by
/// length, then digit by digit, leading zeros ignored.
pub fn compare_sequence_numbers(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim().trim_start_matches('0');
    let b = b.trim().trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// `GetRecords` calls at most for one batch (the pages of a 10,000-record
/// batch, and the empty pages of a long quiet stretch of the shard).
const MAX_PAGES: usize = 5_000;

/// What to do when the batch's records are no longer in the stream.
const EXPIRED_WHAT_TO_DO: &str = "if the function's on-failure destination is an S3 bucket, replay its record of this batch instead (`kinesis-lake replay --failed s3://FAILED_BUCKET/KEY`: it holds the records); otherwise have the producers send the events of that time again: the dedup claims keep the events already in the lake from landing twice";

/// Reads the records of a failed batch back from its shard, from
/// `start_sequence_number` through `end_sequence_number`, into the Lambda
/// event the function got (same stream ARN, shard, sequence numbers,
/// partition keys and arrival times): [`replay_failed_batch`] then unpacks KPL
/// aggregates and runs them as the function would have. Stops after the end
/// sequence number, at the end of a closed shard, or at the tip of the shard
/// (an empty page 0 ms behind the latest record).
///
/// Fails, saying what to do, when the start record has expired from the
/// stream (Kinesis refuses the sequence number, or the first record it gives
/// comes after it), when the stream or shard does not exist, and when the
/// credentials may not read it.
pub async fn fetch_batch<R: ShardReader>(
    reader: &R,
    source_name: &str,
    range: &BatchRange,
) -> Result<KinesisEvent, ReplayError> {
    let err = |message: String| ReplayError::FailedBatch {
        source_name: source_name.to_string(),
        message,
    };
    let what = format!("shard {} of stream {}", range.shard_id, range.stream_name());
    let expired = |detail: String| async move {
        let retention = match reader.retention_hours(range).await {
            Some(h) => format!("retention {h} hours"),
            None => "retention unknown".to_string(),
        };
        err(format!(
            "the records of shard {} from sequence {} have expired from the stream {} ({retention}); they cannot be replayed from Kinesis ({detail}): {EXPIRED_WHAT_TO_DO}",
            range.shard_id,
            range.start_sequence_number,
            range.stream_name(),
        ))
    };
    let failed = |call: &str, e: StreamError| match e {
        StreamError::NotFound(m) => err(format!(
            "{what} was not found ({call}: {m}): check AWS_REGION and the account of the credentials (the record names {}); if the stream was deleted, its records are gone: {EXPIRED_WHAT_TO_DO}",
            range.stream_arn
        )),
        StreamError::AccessDenied(m) => err(format!(
            "no permission to read {what} ({call}: {m}): allow kinesis:GetShardIterator, kinesis:GetRecords and kinesis:DescribeStreamSummary on {} to the credentials running the replay",
            range.stream_arn
        )),
        StreamError::InvalidArgument(m) | StreamError::Other(m) => err(format!(
            "reading {what} failed ({call}: {m}); nothing was written: fix the cause and run the same replay again"
        )),
    };
    let mut iterator = match reader.iterator_at(range).await {
        Ok(it) => it,
        Err(StreamError::InvalidArgument(m)) => {
            return Err(expired(format!(
                "Kinesis refused the sequence number: {m}; check also that the record belongs to this stream"
            ))
            .await);
        }
        Err(e) => return Err(failed("GetShardIterator", e)),
    };
    let mut records: Vec<KinesisEventRecord> = Vec::new();
    let mut reached_end = false;
    let mut pages = 0;
    'pages: loop {
        pages += 1;
        if pages > MAX_PAGES {
            return Err(err(format!(
                "{what}: {MAX_PAGES} GetRecords pages read without reaching sequence number {}; nothing was written: check the record's endSequenceNumber",
                range.end_sequence_number
            )));
        }
        let page = reader
            .records(range, &iterator)
            .await
            .map_err(|e| failed("GetRecords", e))?;
        let empty = page.records.is_empty();
        for r in page.records {
            if records.is_empty()
                && compare_sequence_numbers(&r.sequence_number, &range.start_sequence_number)
                    != std::cmp::Ordering::Equal
            {
                return Err(expired(format!(
                    "the first record the shard still holds from there is {}",
                    r.sequence_number
                ))
                .await);
            }
            let order = compare_sequence_numbers(&r.sequence_number, &range.end_sequence_number);
            if order == std::cmp::Ordering::Greater {
                reached_end = true;
                break 'pages;
            }
            records.push(KinesisEventRecord {
                event_id: Some(format!("{}:{}", range.shard_id, r.sequence_number)),
                event_source_arn: Some(range.stream_arn.clone()),
                kinesis: KinesisRecord {
                    data: KinesisData {
                        bytes: r.data,
                        not_base64: None,
                    },
                    sequence_number: r.sequence_number,
                    partition_key: r.partition_key,
                    approximate_arrival_timestamp: r.arrival_ms.map(|ms| ms as f64 / 1000.0),
                },
            });
            if order == std::cmp::Ordering::Equal {
                reached_end = true;
                break 'pages;
            }
        }
        match page.next_iterator {
            None => break,
            Some(_) if empty && page.millis_behind_latest.unwrap_or(0) == 0 => break,
            Some(next) => iterator = next,
        }
    }
    if records.is_empty() {
        return Err(expired("no record is left at or after that position".into()).await);
    }
    if !reached_end {
        tracing::warn!(
            source = source_name,
            shard = %range.shard_id,
            end_sequence_number = %range.end_sequence_number,
            read = records.len(),
            "the shard ends before the batch's end sequence number; replaying the records read"
        );
    }
    Ok(KinesisEvent { records })
}

/// Runs the records of a failed batch through the pipeline: they are the
/// stream's records, so rejects become dead letters as usual and the claims
/// keep every event once.
pub async fn replay_failed_batch<S: DedupStore, O: ObjectSink>(
    store: &S,
    sink: &O,
    cfg: &PipelineConfig,
    event: KinesisEvent,
    now: DateTime<Utc>,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    let records = raw_records(event).map_err(|e| ReplayError::FailedBatch {
        source_name: "payload".into(),
        message: e.to_string(),
    })?;
    let outcome = run_batch(&records, store, sink, cfg, now).await;
    for f in &outcome.failed {
        if summary.failures.len() < 20 {
            summary.failures.push(FailedRecordReport {
                record: records[f.index].origin.describe(),
                reason: f.reason.to_string(),
            });
        }
    }
    summary.failed += outcome.counts.failed;
    summary
        .failed_batches
        .get_or_insert_with(Counts::default)
        .add(&outcome.counts);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::enrich::CreatedAtUnit;
    use crate::memory::{MemSink, MemStore};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).expect("valid time")
    }

    fn rec(line: u64, json: &str) -> RawRecord {
        RawRecord::new(
            json.as_bytes().to_vec(),
            Origin::File {
                path: "/in.ndjson".into(),
                line,
            },
        )
    }

    fn uuids(sink: &MemSink) -> usize {
        sink.objects()
            .iter()
            .filter(|(k, _)| k.ends_with(".parquet"))
            .count()
    }

    #[tokio::test]
    async fn milliseconds_move_once_and_the_rest_stays_without_new_dead_letters() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let strict = PipelineConfig::default();
        let batch = vec![
            rec(
                1,
                r#"{"event_uuid":"a","event_name":"x:y","created_at":1710670530250}"#,
            ),
            rec(
                2,
                r#"{"event_uuid":"b","event_name":"x:y","created_at":"oops"}"#,
            ),
            rec(3, "not json"),
        ];
        let o = run_batch(&batch, &store, &sink, &strict, at(1_710_670_600)).await;
        assert_eq!(o.counts.rejected, 3);
        let letters_before = sink
            .objects()
            .iter()
            .filter(|(k, _)| k.starts_with("_errors/"))
            .count();

        let ms = PipelineConfig {
            created_at_unit: CreatedAtUnit::Ms,
            ..PipelineConfig::default()
        };
        let f = Filter::default();
        let s = replay_dead_letters(&store, &sink, &ms, &f, at(1_710_670_700))
            .await
            .expect("replay");
        assert_eq!((s.dead_letters, s.moved, s.failed), (3, 1, 0), "{s:?}");
        assert_eq!(s.stayed.get("wrong_type"), Some(&1));
        assert_eq!(s.stayed.get("invalid_json"), Some(&1));
        assert_eq!(uuids(&sink), 1);
        let letters_after = sink
            .objects()
            .iter()
            .filter(|(k, _)| k.starts_with("_errors/"))
            .count();
        assert_eq!(letters_before, letters_after, "no new dead letters");

        // again: the moved line is skipped, nothing is written
        let s = replay_dead_letters(&store, &sink, &ms, &f, at(1_710_670_800))
            .await
            .expect("replay");
        assert_eq!((s.moved, s.replayed_before), (0, 1), "{s:?}");
        assert_eq!(uuids(&sink), 1);
    }

    #[tokio::test]
    async fn a_replay_killed_before_its_progress_record_lands_once_when_run_again() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let batch = vec![rec(
            1,
            r#"{"event_uuid":"a","event_name":"x:y","created_at":1710670530250}"#,
        )];
        run_batch(
            &batch,
            &store,
            &sink,
            &PipelineConfig::default(),
            at(1_710_670_600),
        )
        .await;
        let ms = PipelineConfig {
            created_at_unit: CreatedAtUnit::Ms,
            ..PipelineConfig::default()
        };
        replay_dead_letters(&store, &sink, &ms, &Filter::default(), at(1_710_670_700))
            .await
            .expect("replay");
        // the progress record lost (a kill between the batch and its record)
        for (k, _) in sink.objects() {
            if k.starts_with("_replay/") {
                sink.delete(&k).await.expect("delete");
            }
        }
        let s = replay_dead_letters(&store, &sink, &ms, &Filter::default(), at(1_710_670_800))
            .await
            .expect("replay");
        assert_eq!((s.moved, s.already_in_lake), (0, 1), "{s:?}");
        assert_eq!(uuids(&sink), 1);
    }

    #[tokio::test]
    async fn filters_pick_reasons_and_dates() {
        let (store, sink) = (MemStore::default(), MemSink::default());
        let batch = vec![
            rec(
                1,
                r#"{"event_uuid":"a","event_name":"x:y","created_at":1710670530250}"#,
            ),
            rec(2, "not json"),
        ];
        run_batch(
            &batch,
            &store,
            &sink,
            &PipelineConfig::default(),
            at(1_710_670_600),
        )
        .await;
        let only = Filter {
            reasons: vec!["invalid_json".into()],
            ..Filter::default()
        };
        let s = replay_dead_letters(
            &store,
            &sink,
            &PipelineConfig::default(),
            &only,
            at(1_710_670_700),
        )
        .await
        .expect("replay");
        assert_eq!(s.dead_letters, 1);
        let later = Filter {
            since: NaiveDate::from_ymd_opt(2024, 3, 18),
            ..Filter::default()
        };
        let s = replay_dead_letters(
            &store,
            &sink,
            &PipelineConfig::default(),
            &later,
            at(1_710_670_700),
        )
        .await
        .expect("replay");
        assert_eq!(s.dead_letters, 0);
    }

    fn records_of(b: FailedBatch) -> KinesisEvent {
        match b {
            FailedBatch::Records(e) => e,
            FailedBatch::Range(r) => panic!("a payload expected, got {r:?}"),
        }
    }

    #[test]
    fn an_s3_failure_record_gives_its_payload_and_a_metadata_one_its_range() {
        let event = r#"{"Records":[{"eventID":"shardId-000000000000:5","kinesis":{"data":"e30=","sequenceNumber":"5"}}]}"#;
        let s3_form = format!(
            r#"{{"requestContext":{{"requestId":"r","functionArn":"arn:aws:lambda:eu-west-1:1:function:f","condition":"RetryAttemptsExhausted","approximateInvokeCount":3}},"responseContext":{{"statusCode":200,"executedVersion":"$LATEST","functionError":"Unhandled"}},"version":"1.0","timestamp":"2024-03-17T10:15:30.000Z","KinesisBatchInfo":{{"shardId":"shardId-000000000000","startSequenceNumber":"5","endSequenceNumber":"5","approximateArrivalOfFirstRecord":"2024-03-17T10:15:29.000Z","approximateArrivalOfLastRecord":"2024-03-17T10:15:29.000Z","batchSize":1,"streamArn":"arn:aws:kinesis:eu-west-1:1:stream/events"}},"payload":{event}}}"#
        );
        let got = records_of(read_failed_batch("k", s3_form.as_bytes()).expect("payload"));
        assert_eq!(got.records.len(), 1);
        // the payload as JSON text works too
        let as_text = s3_form.replace(
            &format!(r#""payload":{event}"#),
            &format!(
                r#""payload":{}"#,
                serde_json::to_string(event).expect("text")
            ),
        );
        let got = records_of(read_failed_batch("k", as_text.as_bytes()).expect("payload text"));
        assert_eq!(got.records.len(), 1);
        let sqs_form = r#"{"KinesisBatchInfo":{"shardId":"shardId-000000000001","startSequenceNumber":"7","endSequenceNumber":"9","streamArn":"arn:aws:kinesis:eu-west-1:1:stream/events"}}"#;
        let range = BatchRange {
            stream_arn: "arn:aws:kinesis:eu-west-1:1:stream/events".into(),
            shard_id: "shardId-000000000001".into(),
            start_sequence_number: "7".into(),
            end_sequence_number: "9".into(),
        };
        assert_eq!(
            read_failed_batch("q", sqs_form.as_bytes()).expect("range"),
            FailedBatch::Range(range.clone())
        );
        assert_eq!(range.stream_name(), "events");
        assert_eq!(range.region(), Some("eu-west-1"));
        // the same inside an SNS notification
        let sns_form = serde_json::json!({"Type": "Notification", "Message": sqs_form}).to_string();
        assert_eq!(
            read_failed_batch("n", sns_form.as_bytes()).expect("sns"),
            FailedBatch::Range(range)
        );
        let e = read_failed_batch("q", br#"{"KinesisBatchInfo":{"shardId":"s"}}"#)
            .expect_err("incomplete")
            .to_string();
        assert!(
            e.starts_with("q: ") && e.contains("streamArn, startSequenceNumber, endSequenceNumber"),
            "{e}"
        );
        let e = read_failed_batch("x", b"[]")
            .expect_err("not a record")
            .to_string();
        assert!(e.contains("not a Lambda on-failure record"), "{e}");
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_sequence_numbers("9", "10"), Less);
        assert_eq!(compare_sequence_numbers("010", "10"), Equal);
        assert_eq!(
            compare_sequence_numbers(
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692540925702759324208523137515618"
            ),
            Less
        );
        assert_eq!(compare_sequence_numbers("200", "199"), Greater);
    }

    /// A shard in memory: records with sequence numbers 10, 20, 30, …; the
    /// iterator is the index of the next record; `trimmed` records are gone.
    struct FakeShard {
        records: Vec<StreamRecord>,
        trimmed: usize,
        page: usize,
        closed: bool,
        refuse: Option<StreamError>,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl FakeShard {
        fn new(n: usize, data: impl Fn(usize) -> Vec<u8>) -> FakeShard {
            FakeShard {
                records: (1..=n)
                    .map(|i| StreamRecord {
                        sequence_number: format!("{}", i * 10),
                        partition_key: format!("pk-{i}"),
                        data: data(i),
                        arrival_ms: Some(1_710_670_530_000 + i as i64),
                    })
                    .collect(),
                trimmed: 0,
                page: 3,
                closed: false,
                refuse: None,
                calls: Default::default(),
            }
        }
    }

    impl ShardReader for FakeShard {
        async fn iterator_at(&self, range: &BatchRange) -> Result<String, StreamError> {
            if let Some(e) = &self.refuse {
                return Err(e.clone());
            }
            let at = self
                .records
                .iter()
                .position(|r| {
                    compare_sequence_numbers(&r.sequence_number, &range.start_sequence_number)
                        != std::cmp::Ordering::Less
                })
                .unwrap_or(self.records.len());
            Ok(at.max(self.trimmed).to_string())
        }

        async fn records(&self, _: &BatchRange, iterator: &str) -> Result<ShardPage, StreamError> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let at: usize = iterator
                .parse()
                .map_err(|_| StreamError::Other("bad".into()))?;
            let end = (at + self.page).min(self.records.len());
            let records = self.records[at..end].to_vec();
            let last = end == self.records.len();
            Ok(ShardPage {
                records,
                next_iterator: (!(last && self.closed)).then(|| end.to_string()),
                millis_behind_latest: Some(if last { 0 } else { 1000 }),
            })
        }

        async fn retention_hours(&self, _: &BatchRange) -> Option<i32> {
            Some(24)
        }
    }

    fn range(start: &str, end: &str) -> BatchRange {
        BatchRange {
            stream_arn: "arn:aws:kinesis:eu-west-1:1:stream/events".into(),
            shard_id: "shardId-000000000000".into(),
            start_sequence_number: start.into(),
            end_sequence_number: end.into(),
        }
    }

    fn event_json(i: usize) -> Vec<u8> {
        format!(r#"{{"event_uuid":"u{i}","event_name":"x:y","created_at":1710670530}}"#)
            .into_bytes()
    }

    #[tokio::test]
    async fn a_range_is_read_from_its_start_through_its_end_as_lambda_delivers_it() {
        let shard = FakeShard::new(20, event_json);
        let event = fetch_batch(&shard, "q.json", &range("40", "110"))
            .await
            .expect("fetched");
        let seqs: Vec<&str> = event
            .records
            .iter()
            .map(|r| r.kinesis.sequence_number.as_str())
            .collect();
        assert_eq!(seqs, ["40", "50", "60", "70", "80", "90", "100", "110"]);
        let first = &event.records[0];
        assert_eq!(first.event_id.as_deref(), Some("shardId-000000000000:40"));
        assert_eq!(first.kinesis.partition_key, "pk-4");
        assert_eq!(first.kinesis.arrival_ms(), Some(1_710_670_530_004));
        // it stops at the end: 8 records in pages of 3 starting at 40
        assert_eq!(shard.calls.load(std::sync::atomic::Ordering::Relaxed), 3);
        // and maps to the origins of a Lambda batch
        let raw = raw_records(event).expect("records");
        assert_eq!(raw[0].origin.describe(), "shardId-000000000000 seq 40");
    }

    #[tokio::test]
    async fn a_range_stops_at_the_tip_or_the_end_of_the_shard() {
        for closed in [false, true] {
            let shard = FakeShard {
                closed,
                ..FakeShard::new(5, event_json)
            };
            let event = fetch_batch(&shard, "q", &range("30", "999"))
                .await
                .expect("fetched");
            assert_eq!(event.records.len(), 3, "closed: {closed}");
        }
    }

    #[tokio::test]
    async fn expired_records_absent_streams_and_denied_reads_say_what_to_do() {
        // the start record was trimmed: the first record given is after it
        let shard = FakeShard {
            trimmed: 5,
            ..FakeShard::new(10, event_json)
        };
        let e = fetch_batch(&shard, "q", &range("20", "40"))
            .await
            .expect_err("expired")
            .to_string();
        for part in [
            "the records of shard shardId-000000000000 from sequence 20 have expired",
            "retention 24 hours",
            "cannot be replayed from Kinesis",
            "s3://FAILED_BUCKET/KEY",
        ] {
            assert!(e.contains(part), "{part}: {e}");
        }
        // everything trimmed: nothing at or after the start
        let shard = FakeShard {
            trimmed: 10,
            ..FakeShard::new(10, event_json)
        };
        let e = fetch_batch(&shard, "q", &range("20", "40"))
            .await
            .expect_err("expired")
            .to_string();
        assert!(e.contains("have expired"), "{e}");
        for (refusal, part) in [
            (
                StreamError::InvalidArgument("StartingSequenceNumber is invalid".into()),
                "have expired",
            ),
            (
                StreamError::NotFound("Stream events not found".into()),
                "was not found",
            ),
            (
                StreamError::AccessDenied("not authorized".into()),
                "allow kinesis:GetShardIterator, kinesis:GetRecords",
            ),
            (
                StreamError::Other("connection refused".into()),
                "run the same replay again",
            ),
        ] {
            let shard = FakeShard {
                refuse: Some(refusal),
                ..FakeShard::new(3, event_json)
            };
            let e = fetch_batch(&shard, "q.json", &range("10", "20"))
                .await
                .expect_err("refused")
                .to_string();
            assert!(e.starts_with("q.json: ") && e.contains(part), "{part}: {e}");
        }
    }

    #[tokio::test]
    async fn a_fetched_range_lands_once_aggregates_unpacked() {
        use crate::core::kpl;
        // record 3 is a KPL aggregate of two user records
        let shard = FakeShard::new(5, |i| {
            if i == 3 {
                kpl::aggregate(&[
                    kpl::UserRecord {
                        partition_key: "a".into(),
                        explicit_hash_key: None,
                        data: event_json(31),
                    },
                    kpl::UserRecord {
                        partition_key: "b".into(),
                        explicit_hash_key: None,
                        data: event_json(32),
                    },
                ])
            } else {
                event_json(i)
            }
        });
        let (store, sink) = (MemStore::default(), MemSink::default());
        let cfg = PipelineConfig {
            window_secs: 0,
            ..PipelineConfig::default()
        };
        let mut summary = ReplaySummary::default();
        for _ in 0..2 {
            let event = fetch_batch(&shard, "q", &range("20", "40"))
                .await
                .expect("fetched");
            replay_failed_batch(&store, &sink, &cfg, event, at(1_710_670_600), &mut summary)
                .await
                .expect("replayed");
        }
        let c = summary.failed_batches.expect("counts");
        // 20, 30 (two user records), 40: four events, once; the second time duplicates
        assert_eq!((c.records, c.written, c.duplicates), (8, 4, 4), "{c:?}");
    }
}
