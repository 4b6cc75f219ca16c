//! The Kinesis adapter: Lambda's Kinesis event to core records, and the
//! partial batch response back.
//!
//! The event is read with our own small serde types rather than
//! `aws_lambda_events`' `KinesisEvent`: that crate (1.2.1) reads
//! `approximateArrivalTimestamp` wrongly (the digits after the decimal point
//! taken as milliseconds, so `…931.12` becomes …931 s + 12 ms) and rejects a
//! whole document whose timestamps carry more than three decimals. Ours reads
//! the number as seconds and rounds to the millisecond, and takes only the
//! fields the pipeline uses.

use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use base64::Engine as _;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::core::dedup::DedupStore;
use crate::core::kpl;
use crate::core::pipeline::{BatchOutcome, PipelineConfig, run_batch};
use crate::core::reject::Reject;
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

/// The event Lambda passes a Kinesis consumer (`{"Records": [...]}`), with the
/// fields the pipeline uses.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct KinesisEvent {
    /// The batch, in shard order.
    #[serde(rename = "Records")]
    pub records: Vec<KinesisEventRecord>,
}

/// One record of the batch.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct KinesisEventRecord {
    /// `shardId-000000000000:<sequence number>`.
    #[serde(rename = "eventID", default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`.
    #[serde(
        rename = "eventSourceARN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub event_source_arn: Option<String>,
    /// The Kinesis record.
    pub kinesis: KinesisRecord,
}

/// A record's data: the producer's bytes, decoded from the base64 Lambda
/// sends while the event is parsed (the base64 text is not copied first).
/// Data that is not base64 is kept as given, with why, so that the pipeline
/// dead-letters it (`not_base64`) rather than losing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KinesisData {
    /// The producer's bytes; the text as given when it is not base64.
    pub bytes: Vec<u8>,
    /// Why the text is not base64, when it is not.
    pub not_base64: Option<String>,
}

/// Why `text` does not decode as base64: the first byte outside the base64
/// alphabet, or else its length or padding.
fn why_not_base64(text: &[u8]) -> String {
    let in_alphabet = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    match text.iter().position(|b| !in_alphabet(b)) {
        Some(i) if text[i].is_ascii_graphic() || text[i] == b' ' => format!(
            "byte {} is {:?}, not a base64 character",
            i + 1,
            char::from(text[i])
        ),
        Some(i) => format!(
            "byte {} is 0x{:02x}, not a base64 character",
            i + 1,
            text[i]
        ),
        None => format!(
            "{} characters of the base64 alphabet, but not whole 4-character groups with `=` padding only at the end",
            text.len()
        ),
    }
}

impl<'de> Deserialize<'de> for KinesisData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Base64Text;
        impl serde::de::Visitor<'_> for Base64Text {
            type Value = KinesisData;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the record's data as a base64 string")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<KinesisData, E> {
                Ok(match base64_simd::STANDARD.decode_to_vec(b) {
                    Ok(bytes) => KinesisData {
                        bytes,
                        not_base64: None,
                    },
                    Err(_) => KinesisData {
                        bytes: b.to_vec(),
                        not_base64: Some(why_not_base64(b)),
                    },
                })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<KinesisData, E> {
                self.visit_bytes(s.as_bytes())
            }
        }
        // as bytes: the base64 text is not checked as UTF-8 first (~1/6 of
        // reading a Kinesis event document); the decoder checks every byte
        d.deserialize_bytes(Base64Text)
    }
}

impl Serialize for KinesisData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.not_base64 {
            // the text as it was given, so that a round trip keeps it
            Some(_) => s.serialize_str(&String::from_utf8_lossy(&self.bytes)),
            None => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.bytes)),
        }
    }
}

/// The Kinesis part of a record.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisRecord {
    /// The producer's data (base64 in the event).
    pub data: KinesisData,
    /// The record's sequence number within its shard.
    #[serde(default)]
    pub sequence_number: String,
    /// The producer's partition key.
    #[serde(default)]
    pub partition_key: String,
    /// When the stream received the record, Unix seconds with a fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approximate_arrival_timestamp: Option<f64>,
}

impl KinesisRecord {
    /// The arrival time in Unix milliseconds (seconds rounded to the ms).
    pub fn arrival_ms(&self) -> Option<i64> {
        self.approximate_arrival_timestamp
            .filter(|t| t.is_finite())
            .map(|t| (t * 1000.0).round() as i64)
    }
}

/// The stream name from an event source ARN (`arn:aws:kinesis:r:a:stream/NAME`).
fn stream_name(arn: Option<&str>) -> String {
    arn.and_then(|a| a.rsplit_once(":stream/").map(|(_, s)| s.to_string()))
        .unwrap_or_default()
}

/// Maps one Kinesis event record to raw records, appended to `out`: the
/// record itself, or, for a KPL aggregate, each of its user records (origin:
/// the aggregate's sequence number and the user record's sub-sequence
/// number). An aggregate that fails a check is one record, rejected
/// (`bad_aggregate`) with its original bytes.
pub fn push_raw_records(
    index: usize,
    rec: KinesisEventRecord,
    out: &mut Vec<RawRecord>,
) -> Result<(), KinesisError> {
    let arrival_ms = rec.kinesis.arrival_ms();
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
    let origin = Origin::Kinesis {
        stream: stream_name(rec.event_source_arn.as_deref()),
        shard_id,
        sequence_number: seq,
        sub_sequence_number: None,
        arrival_ms,
    };
    let KinesisData { bytes, not_base64 } = rec.kinesis.data;
    match not_base64 {
        Some(why) => out.push(RawRecord {
            data: bytes,
            unreadable: Some(Reject::NotBase64(why)),
            origin,
        }),
        None => unpack(bytes, origin, out),
    }
    Ok(())
}

/// Appends a Kinesis record's raw records to `out`: the record itself, or
/// the user records of a KPL aggregate (also used by replay, on a dead
/// letter's bytes).
pub fn unpack(bytes: Vec<u8>, origin: Origin, out: &mut Vec<RawRecord>) {
    let aggregate = kpl::is_aggregated(&bytes)
        && matches!(
            origin,
            Origin::Kinesis {
                sub_sequence_number: None,
                ..
            }
        );
    if aggregate {
        push_user_records(bytes, origin, out);
    } else {
        out.push(RawRecord::new(bytes, origin));
    }
}

/// Appends the user records of a KPL aggregate, or the aggregate itself,
/// rejected, when it fails a check.
fn push_user_records(bytes: Vec<u8>, origin: Origin, out: &mut Vec<RawRecord>) {
    match kpl::deaggregate(&bytes) {
        Ok(users) => {
            for (sub, user) in users.into_iter().enumerate() {
                let mut o = origin.clone();
                if let Origin::Kinesis {
                    sub_sequence_number,
                    ..
                } = &mut o
                {
                    *sub_sequence_number = Some(sub as u64);
                }
                out.push(RawRecord::new(user.data, o));
            }
        }
        Err(e) => out.push(RawRecord {
            data: bytes,
            unreadable: Some(Reject::BadAggregate(e.to_string())),
            origin,
        }),
    }
}

/// Maps a Lambda Kinesis event to raw records, in order, KPL aggregates
/// unpacked.
pub fn raw_records(event: KinesisEvent) -> Result<Vec<RawRecord>, KinesisError> {
    let mut out = Vec::with_capacity(event.records.len());
    for (i, r) in event.records.into_iter().enumerate() {
        push_raw_records(i, r, &mut out)?;
    }
    Ok(out)
}

/// The partial batch response: the failed records' sequence numbers (Lambda
/// restarts the shard from the lowest), each once. A failed user record of a
/// KPL aggregate is reported by the aggregate's sequence number: the retry
/// resends the whole aggregate, and the claims make the user records already
/// written duplicates. Empty when everything was handled.
pub fn batch_response(records: &[RawRecord], outcome: &BatchOutcome) -> KinesisEventResponse {
    let mut resp = KinesisEventResponse::default();
    let mut reported: std::collections::HashSet<&str> = std::collections::HashSet::new();
    resp.batch_item_failures = outcome
        .failed
        .iter()
        .filter_map(|f| match &records.get(f.index)?.origin {
            Origin::Kinesis {
                sequence_number, ..
            } if reported.insert(sequence_number) => {
                let mut item = KinesisBatchItemFailure::default();
                item.item_identifier = Some(sequence_number.clone());
                Some(item)
            }
            _ => None,
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
                reason: crate::core::pipeline::Failure::Internal("x"),
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
    fn arrival_times_are_seconds_rounded_to_the_millisecond() {
        let doc = |ts: &str| {
            format!(
                r#"{{"Records":[{{"eventID":"shardId-000000000001:7","kinesis":{{"data":"e30=","sequenceNumber":"7","approximateArrivalTimestamp":{ts}}}}}]}}"#
            )
        };
        for (ts, ms) in [
            ("1795404931.12", 1795404931120),
            ("1795404931.5", 1795404931500),
            ("1.79540493198E9", 1795404931980),
            ("1795404931.1234", 1795404931123),
            ("1795404931", 1795404931000),
        ] {
            let event: KinesisEvent = serde_json::from_str(&doc(ts)).expect("parses");
            let recs = raw_records(event).expect("records");
            match &recs[0].origin {
                Origin::Kinesis { arrival_ms, .. } => assert_eq!(*arrival_ms, Some(ms), "{ts}"),
                o => panic!("unexpected origin {o:?}"),
            }
            assert_eq!(recs[0].data, b"{}");
        }
    }

    #[test]
    fn data_that_is_not_base64_is_kept_as_given_and_rejected_as_such() {
        let event: KinesisEvent = serde_json::from_str(
            r#"{"Records":[{"kinesis":{"data":"!!!not base64***","sequenceNumber":"1"}}]}"#,
        )
        .expect("parses");
        let rec = &raw_records(event).expect("records")[0];
        assert_eq!(rec.data, b"!!!not base64***");
        let reject = rec.decode().expect_err("rejected");
        assert_eq!(reject.code(), "not_base64");
        assert!(reject.to_string().contains("byte 1 is '!'"), "{reject}");
        // valid characters in a wrong length are named too
        assert!(why_not_base64(b"abcde").contains("4-character groups"));
    }

    #[test]
    fn data_is_read_as_bytes_escapes_and_all() {
        let doc = |data: &[u8]| {
            let mut d = br#"{"Records":[{"kinesis":{"sequenceNumber":"1","data":""#.to_vec();
            d.extend_from_slice(data);
            d.extend_from_slice(br#""}}]}"#);
            d
        };
        // a JSON escape inside the base64 text (`\u003d` is `=`, `\/` is `/`)
        let event: KinesisEvent = serde_json::from_slice(&doc(br"e30\u003d")).expect("parses");
        assert_eq!(raw_records(event).expect("records")[0].data, b"{}");
        let event: KinesisEvent = serde_json::from_slice(&doc(br"Pz8\/")).expect("parses");
        assert_eq!(raw_records(event).expect("records")[0].data, b"???");
        // bytes that are not UTF-8 are not base64 either: kept as given, so
        // that the pipeline dead-letters the record instead of failing the batch
        let event: KinesisEvent = serde_json::from_slice(&doc(b"\xff\xfe")).expect("parses");
        let rec = &raw_records(event).expect("records")[0];
        assert_eq!(rec.data, b"\xff\xfe");
        assert!(
            rec.decode()
                .expect_err("rejected")
                .to_string()
                .contains("0xff")
        );
        // data that is not a string still fails the document
        assert!(
            serde_json::from_slice::<KinesisEvent>(
                br#"{"Records":[{"kinesis":{"sequenceNumber":"1","data":5}}]}"#
            )
            .is_err()
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

    /// A one-record Lambda document of `data`, sequence number `seq`.
    fn document(records: &[(&str, Vec<u8>)]) -> KinesisEvent {
        let recs: Vec<String> = records
            .iter()
            .map(|(seq, data)| {
                format!(
                    r#"{{"eventID":"shardId-000000000002:{seq}","eventSourceARN":"arn:aws:kinesis:eu-west-1:1:stream/events","kinesis":{{"data":"{}","sequenceNumber":"{seq}","partitionKey":"p"}}}}"#,
                    base64::engine::general_purpose::STANDARD.encode(data)
                )
            })
            .collect();
        serde_json::from_str(&format!(r#"{{"Records":[{}]}}"#, recs.join(",")))
            .expect("document parses")
    }

    fn user(data: &[u8]) -> kpl::UserRecord {
        kpl::UserRecord {
            partition_key: "pk".into(),
            explicit_hash_key: None,
            data: data.to_vec(),
        }
    }

    fn sub_of(r: &RawRecord) -> (String, Option<u64>) {
        match &r.origin {
            Origin::Kinesis {
                sequence_number,
                sub_sequence_number,
                ..
            } => (sequence_number.clone(), *sub_sequence_number),
            o => panic!("unexpected origin {o:?}"),
        }
    }

    #[test]
    fn an_aggregate_becomes_its_user_records_beside_plain_ones() {
        let agg = kpl::aggregate(&[user(b"{\"a\":1}"), user(b"{\"a\":2}")]);
        let event = document(&[("10", b"{\"plain\":1}".to_vec()), ("11", agg)]);
        let recs = raw_records(event).expect("records");
        let subs: Vec<(String, Option<u64>)> = recs.iter().map(sub_of).collect();
        assert_eq!(
            subs,
            [
                ("10".to_string(), None),
                ("11".to_string(), Some(0)),
                ("11".to_string(), Some(1))
            ]
        );
        assert_eq!(recs[2].data, b"{\"a\":2}");
        assert_eq!(
            recs[1].origin.owner(),
            "kinesis:events/shardId-000000000002/11:0"
        );
        assert_eq!(
            recs[0].origin.owner(),
            "kinesis:events/shardId-000000000002/10"
        );
    }

    #[test]
    fn a_broken_aggregate_is_one_rejected_record_with_its_bytes() {
        let mut agg = kpl::aggregate(&[user(b"{}")]);
        let last = agg.len() - 1;
        agg[last] ^= 0xff;
        let recs = raw_records(document(&[("12", agg.clone())])).expect("records");
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].data, agg);
        assert_eq!(sub_of(&recs[0]), ("12".to_string(), None));
        let r = recs[0].decode().expect_err("rejected");
        assert_eq!(r.code(), "bad_aggregate");
        assert!(r.to_string().contains("MD5"), "{r}");
    }

    #[test]
    fn a_failed_user_record_reports_its_aggregate_once() {
        let agg = kpl::aggregate(&[user(b"{}"), user(b"{}"), user(b"{}")]);
        let recs = raw_records(document(&[("20", b"{}".to_vec()), ("21", agg)])).expect("records");
        let failed = |index| FailedRecord {
            index,
            reason: crate::core::pipeline::Failure::Internal("x"),
        };
        let outcome = BatchOutcome {
            failed: vec![failed(1), failed(3)],
            ..Default::default()
        };
        let ids: Vec<Option<String>> = batch_response(&recs, &outcome)
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        assert_eq!(ids, [Some("21".to_string())]);
    }

    #[tokio::test]
    async fn an_aggregate_delivered_twice_lands_once_gzip_and_rejects_included() {
        use crate::memory::{MemSink, MemStore};
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write as _;
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(br#"{"event_uuid":"k2","event_name":"a:b","created_at":1710670530}"#)
            .expect("gzip");
        let users = [
            user(br#"{"event_uuid":"k1","event_name":"a:b","created_at":1710670530}"#),
            user(&gz.finish().expect("gzip")),
            user(b"not json"),
        ];
        let event = document(&[("30", kpl::aggregate(&users))]);
        let (store, sink) = (MemStore::default(), MemSink::default());
        let cfg = PipelineConfig::default();
        let (resp, first) = handle(event.clone(), &store, &sink, &cfg)
            .await
            .expect("batch");
        assert!(resp.batch_item_failures.is_empty());
        assert_eq!(
            (
                first.counts.records,
                first.counts.written,
                first.counts.rejected
            ),
            (3, 2, 1)
        );
        let (_, again) = handle(event, &store, &sink, &cfg).await.expect("batch");
        assert_eq!(
            (
                again.counts.written,
                again.counts.duplicates,
                again.counts.dead_letter_files
            ),
            (0, 2, 0)
        );
        let letters: Vec<serde_json::Value> = sink
            .objects()
            .into_iter()
            .filter(|(k, _)| k.starts_with("_errors/"))
            .flat_map(|(_, body)| {
                String::from_utf8_lossy(&body)
                    .lines()
                    .map(|l| serde_json::from_str(l).expect("dead letter"))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0]["origin"]["sequence_number"], "30");
        assert_eq!(letters[0]["origin"]["sub_sequence_number"], 2);
        assert_eq!(letters[0]["reason_code"], "invalid_json");
    }
}
