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

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::core::dedup::DedupStore;
use crate::core::pipeline::{Counts, PipelineConfig, run_batch};
use crate::core::sink::{ObjectSink, SinkError};
use crate::ingest::FailedRecordReport;
use crate::kinesis::{KinesisEvent, raw_records, unpack};
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

/// The Kinesis event of an on-failure record that carries its payload (the
/// S3 destination's form). Without a payload (the SQS and SNS forms) the
/// records must be fetched from the stream: an error says so, naming the
/// shard and sequence range.
pub fn failed_batch_event(source_name: &str, body: &[u8]) -> Result<KinesisEvent, ReplayError> {
    let err = |message: String| ReplayError::FailedBatch {
        source_name: source_name.to_string(),
        message,
    };
    let record: FailureRecord = serde_json::from_slice(body).map_err(|e| {
        err(format!(
            "not a Lambda on-failure record ({e}); expected the JSON object Lambda writes to the on-failure destination (requestContext, KinesisBatchInfo, payload)"
        ))
    })?;
    let payload = match record.payload {
        Some(serde_json::Value::String(text)) => serde_json::from_str(&text),
        Some(value) => serde_json::from_value(value),
        None => {
            let b = record.batch.unwrap_or(BatchInfo {
                shard_id: None,
                start_sequence_number: None,
                end_sequence_number: None,
                stream_arn: None,
            });
            return Err(err(format!(
                "it holds only the batch's metadata (stream {}, shard {}, sequence numbers {} to {}), not its records: this version replays the S3 on-failure destination's records, which carry the payload; fetching the range from the stream is not supported yet (read it with GetShardIterator AT_SEQUENCE_NUMBER + GetRecords into a Lambda event document and run `kinesis-lake ingest` on it)",
                b.stream_arn.as_deref().unwrap_or("?"),
                b.shard_id.as_deref().unwrap_or("?"),
                b.start_sequence_number.as_deref().unwrap_or("?"),
                b.end_sequence_number.as_deref().unwrap_or("?"),
            )));
        }
    };
    payload.map_err(|e| {
        err(format!(
            "its payload is not a Lambda Kinesis event ({e}); expected {{\"Records\": [...]}}"
        ))
    })
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

    #[test]
    fn an_s3_failure_record_gives_its_payload_and_a_metadata_one_says_what_is_missing() {
        let event = r#"{"Records":[{"eventID":"shardId-000000000000:5","kinesis":{"data":"e30=","sequenceNumber":"5"}}]}"#;
        let s3_form = format!(
            r#"{{"requestContext":{{"requestId":"r","functionArn":"arn:aws:lambda:eu-west-1:1:function:f","condition":"RetryAttemptsExhausted","approximateInvokeCount":3}},"responseContext":{{"statusCode":200,"executedVersion":"$LATEST","functionError":"Unhandled"}},"version":"1.0","timestamp":"2024-03-17T10:15:30.000Z","KinesisBatchInfo":{{"shardId":"shardId-000000000000","startSequenceNumber":"5","endSequenceNumber":"5","approximateArrivalOfFirstRecord":"2024-03-17T10:15:29.000Z","approximateArrivalOfLastRecord":"2024-03-17T10:15:29.000Z","batchSize":1,"streamArn":"arn:aws:kinesis:eu-west-1:1:stream/events"}},"payload":{event}}}"#
        );
        let got = failed_batch_event("k", s3_form.as_bytes()).expect("payload");
        assert_eq!(got.records.len(), 1);
        // the payload as JSON text works too
        let as_text = s3_form.replace(
            &format!(r#""payload":{event}"#),
            &format!(
                r#""payload":{}"#,
                serde_json::to_string(event).expect("text")
            ),
        );
        assert_eq!(
            failed_batch_event("k", as_text.as_bytes())
                .expect("payload text")
                .records
                .len(),
            1
        );
        let sqs_form = r#"{"KinesisBatchInfo":{"shardId":"shardId-000000000001","startSequenceNumber":"7","endSequenceNumber":"9","streamArn":"arn:aws:kinesis:eu-west-1:1:stream/events"}}"#;
        let e = failed_batch_event("q", sqs_form.as_bytes())
            .expect_err("no payload")
            .to_string();
        for part in [
            "shardId-000000000001",
            "7 to 9",
            "S3 on-failure destination",
        ] {
            assert!(e.contains(part), "{part}: {e}");
        }
    }
}
