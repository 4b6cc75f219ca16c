//! The Kinesis adapter: Lambda's Kinesis event types to and from core types.

use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};

use chrono::Utc;

use crate::core::dedup::DedupStore;
use crate::core::pipeline::{BatchOutcome, PipelineConfig, run_batch};
use crate::core::sink::ObjectSink;
use crate::record::{Origin, RawRecord};

/// A Kinesis event that cannot be mapped to records.
#[derive(Debug, thiserror::Error)]
pub enum KinesisError {
    /// A record has no sequence number: partial batch responses cannot name it.
    #[error(
        "record {index} of the batch has no sequence number; the whole batch is failed so that Lambda retries it"
    )]
    NoSequenceNumber {
        /// Position in the batch.
        index: usize,
    },
}

/// The stream name from an event source ARN (`arn:aws:kinesis:r:a:stream/NAME`).
fn stream_name(arn: Option<&str>) -> String {
    arn.and_then(|a| a.rsplit_once(":stream/").map(|(_, s)| s.to_string()))
        .unwrap_or_default()
}

/// Maps one Kinesis event record to a raw record.
pub fn raw_record(index: usize, rec: KinesisEventRecord) -> Result<RawRecord, KinesisError> {
    let seq = rec.kinesis.sequence_number;
    if seq.is_empty() {
        return Err(KinesisError::NoSequenceNumber { index });
    }
    // eventID is "shardId-000000000000:<sequence number>"
    let shard_id = rec
        .event_id
        .as_deref()
        .and_then(|id| id.split_once(':').map(|(s, _)| s.to_string()))
        .unwrap_or_default();
    Ok(RawRecord {
        data: rec.kinesis.data.0,
        origin: Origin::Kinesis {
            stream: stream_name(rec.event_source_arn.as_deref()),
            shard_id,
            sequence_number: seq,
            arrival_ms: Some(
                rec.kinesis
                    .approximate_arrival_timestamp
                    .0
                    .timestamp_millis(),
            ),
        },
    })
}

/// Maps a Lambda Kinesis event to raw records, in order.
pub fn raw_records(event: KinesisEvent) -> Result<Vec<RawRecord>, KinesisError> {
    event
        .records
        .into_iter()
        .enumerate()
        .map(|(i, r)| raw_record(i, r))
        .collect()
}

/// The partial batch response: the failed records' sequence numbers (Lambda
/// restarts the shard from the lowest). Empty when everything was handled.
pub fn batch_response(records: &[RawRecord], outcome: &BatchOutcome) -> KinesisEventResponse {
    let mut resp = KinesisEventResponse::default();
    resp.batch_item_failures = outcome
        .failed
        .iter()
        .filter_map(|f| match &records.get(f.index)?.origin {
            Origin::Kinesis {
                sequence_number, ..
            } => {
                let mut item = KinesisBatchItemFailure::default();
                item.item_identifier = Some(sequence_number.clone());
                Some(item)
            }
            Origin::File { .. } => None,
        })
        .collect();
    resp
}

/// Handles one Lambda Kinesis batch: runs the pipeline and answers with the
/// partial batch response. Fails the whole batch only when a record cannot be
/// named in that response.
pub async fn handle<S: DedupStore, O: ObjectSink>(
    event: KinesisEvent,
    store: &S,
    sink: &O,
    cfg: &PipelineConfig,
) -> Result<(KinesisEventResponse, BatchOutcome), KinesisError> {
    let records = raw_records(event)?;
    let outcome = run_batch(&records, store, sink, cfg, Utc::now()).await;
    Ok((batch_response(&records, &outcome), outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pipeline::FailedRecord;

    const FIXTURE: &[u8] = include_bytes!("../fixtures/kinesis/small-batch.json");

    #[test]
    fn fixture_round_trips_and_maps_origins() {
        let event: KinesisEvent = serde_json::from_slice(FIXTURE).expect("fixture parses");
        let again: KinesisEvent =
            serde_json::from_slice(&serde_json::to_vec(&event).expect("serialises"))
                .expect("re-parses");
        assert_eq!(event, again);
        let recs = raw_records(event).expect("records");
        assert!(!recs.is_empty());
        match &recs[0].origin {
            Origin::Kinesis {
                stream,
                shard_id,
                sequence_number,
                ..
            } => {
                assert_eq!(stream, "events");
                assert!(shard_id.starts_with("shardId-"));
                assert!(!sequence_number.is_empty());
            }
            o => panic!("unexpected origin {o:?}"),
        }
    }

    #[test]
    fn failures_are_reported_by_sequence_number() {
        let event: KinesisEvent = serde_json::from_slice(FIXTURE).expect("fixture parses");
        let recs = raw_records(event).expect("records");
        let outcome = BatchOutcome {
            failed: vec![FailedRecord {
                index: 1,
                reason: "x".into(),
            }],
            ..Default::default()
        };
        let resp = batch_response(&recs, &outcome);
        let Origin::Kinesis {
            sequence_number, ..
        } = &recs[1].origin
        else {
            panic!("kinesis origin expected")
        };
        assert_eq!(resp.batch_item_failures.len(), 1);
        assert_eq!(
            resp.batch_item_failures[0].item_identifier.as_deref(),
            Some(sequence_number.as_str())
        );
    }

    #[test]
    fn a_record_without_sequence_number_fails_the_batch() {
        let mut event: KinesisEvent = serde_json::from_slice(FIXTURE).expect("fixture parses");
        event.records[0].kinesis.sequence_number.clear();
        assert!(matches!(
            raw_records(event),
            Err(KinesisError::NoSequenceNumber { index: 0 })
        ));
    }
}
