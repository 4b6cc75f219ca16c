//! Per-invocation CloudWatch metrics in Embedded Metric Format: one JSON line
//! on stdout, which CloudWatch Logs turns into metrics in namespace
//! `KinesisLake` with the dimension `FunctionName`. Building the line is a
//! pure function of the batch's counters.

use serde_json::{Map, Value, json};

use crate::core::pipeline::BatchOutcome;
use crate::core::publish::Published;

/// The metrics namespace.
pub const NAMESPACE: &str = "KinesisLake";

/// What one invocation reports.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`).
    pub function_name: &'a str,
    /// The batch's outcome.
    pub outcome: &'a BatchOutcome,
    /// The oldest approximate arrival time of the batch's records, Unix ms
    /// (`None` for an empty batch).
    pub oldest_arrival_ms: Option<i64>,
    /// Now, Unix ms.
    pub now_ms: i64,
}

/// The EMF object of one publisher run (serialise it as one line):
/// what it published, whether it failed, and the age of the oldest window
/// still waiting: an open one, or the closed one a failed run stopped at
/// (0 when none waits: the alarm's input).
pub fn emf_publish(
    function_name: &str,
    published: Option<&Published>,
    failed: bool,
    now_ms: i64,
) -> Value {
    let p = published.cloned().unwrap_or_default();
    let metrics: Vec<(&str, &str, Value)> = vec![
        ("PublishedWindows", "Count", json!(p.windows)),
        ("PublishedEvents", "Count", json!(p.events)),
        ("PublishedDuplicates", "Count", json!(p.duplicates)),
        ("PublishedFiles", "Count", json!(p.files)),
        ("PublishedBytes", "Bytes", json!(p.bytes)),
        ("PublishRejected", "Count", json!(p.rejected)),
        ("PublishErrors", "Count", json!(u64::from(failed))),
        (
            "OldestUnpublishedWindowAgeS",
            "Seconds",
            json!(p.oldest_unpublished_age_s.unwrap_or(0)),
        ),
    ];
    envelope(function_name, now_ms, metrics)
}

/// One EMF object: the `_aws` metadata naming each metric, then the values.
fn envelope(function_name: &str, now_ms: i64, metrics: Vec<(&str, &str, Value)>) -> Value {
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": metrics
                    .iter()
                    .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    root.insert("FunctionName".into(), json!(function_name));
    for (name, _, value) in metrics {
        root.insert(name.into(), value);
    }
    Value::Object(root)
}

/// The EMF object of one invocation (serialise it as one line).
pub fn emf(inv: &Invocation<'_>) -> Value {
    let c = &inv.outcome.counts;
    let mut metrics: Vec<(&str, &str, Value)> = vec![
        ("Records", "Count", json!(c.records)),
        ("Written", "Count", json!(c.written)),
        ("Duplicates", "Count", json!(c.duplicates)),
        ("Rejected", "Count", json!(c.rejected)),
        ("Failed", "Count", json!(c.failed)),
        ("Files", "Count", json!(c.files)),
        ("Bytes", "Bytes", json!(c.bytes)),
        ("StagingObjects", "Count", json!(c.staging_objects)),
        // records kept in the dead-letter area (_errors/)
        ("DeadLetters", "Count", json!(c.rejected)),
        ("DynamoDbMs", "Milliseconds", json!(inv.outcome.store_ms)),
        ("S3Ms", "Milliseconds", json!(inv.outcome.sink_ms)),
    ];
    if let Some(oldest) = inv.oldest_arrival_ms {
        metrics.push((
            "IteratorAgeMs",
            "Milliseconds",
            json!((inv.now_ms - oldest).max(0)),
        ));
    }
    envelope(inv.function_name, inv.now_ms, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pipeline::Counts;

    fn outcome() -> BatchOutcome {
        BatchOutcome {
            counts: Counts {
                records: 10,
                written: 6,
                duplicates: 2,
                rejected: 1,
                failed: 1,
                files: 3,
                bytes: 4096,
                dead_letter_files: 1,
                staging_objects: 0,
            },
            store_ms: 12,
            sink_ms: 34,
            ..Default::default()
        }
    }

    #[test]
    fn one_object_declares_and_carries_every_metric() {
        let o = outcome();
        let v = emf(&Invocation {
            function_name: "lake-fn",
            outcome: &o,
            oldest_arrival_ms: Some(1_000),
            now_ms: 61_000,
        });
        let line = serde_json::to_string(&v).expect("serialises");
        assert!(!line.contains('\n'));
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "KinesisLake");
        assert_eq!(cw["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(v["_aws"]["Timestamp"], 61_000);
        assert_eq!(v["FunctionName"], "lake-fn");
        let declared: Vec<&str> = cw["Metrics"]
            .as_array()
            .expect("array")
            .iter()
            .map(|m| m["Name"].as_str().expect("name"))
            .collect();
        assert_eq!(declared.len(), 12);
        for name in &declared {
            assert!(v[*name].is_number(), "{name} has a value");
        }
        assert_eq!(
            (
                &v["Records"],
                &v["Written"],
                &v["Duplicates"],
                &v["Rejected"],
                &v["Failed"]
            ),
            (&json!(10), &json!(6), &json!(2), &json!(1), &json!(1))
        );
        assert_eq!(
            (&v["Files"], &v["Bytes"], &v["DeadLetters"]),
            (&json!(3), &json!(4096), &json!(1))
        );
        assert_eq!(
            (&v["IteratorAgeMs"], &v["DynamoDbMs"], &v["S3Ms"]),
            (&json!(60_000), &json!(12), &json!(34))
        );
        let bytes_unit = cw["Metrics"]
            .as_array()
            .expect("array")
            .iter()
            .find(|m| m["Name"] == "Bytes")
            .map(|m| m["Unit"].clone());
        assert_eq!(bytes_unit, Some(json!("Bytes")));
    }

    #[test]
    fn an_empty_batch_has_no_iterator_age() {
        let o = BatchOutcome::default();
        let v = emf(&Invocation {
            function_name: "f",
            outcome: &o,
            oldest_arrival_ms: None,
            now_ms: 5,
        });
        assert!(v.get("IteratorAgeMs").is_none());
        let n = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .map(Vec::len);
        assert_eq!(n, Some(11));
    }

    #[test]
    fn a_publisher_run_reports_what_it_published_and_the_oldest_waiting_window() {
        let p = Published {
            windows: 2,
            events: 900,
            files: 7,
            bytes: 1 << 20,
            oldest_unpublished: Some("20240317T101500Z".into()),
            oldest_unpublished_age_s: Some(42),
            ..Published::default()
        };
        let v = emf_publish("pub-fn", Some(&p), false, 9);
        assert_eq!(v["FunctionName"], "pub-fn");
        assert_eq!(
            (&v["PublishedEvents"], &v["PublishedFiles"]),
            (&json!(900), &json!(7))
        );
        assert_eq!(
            (&v["OldestUnpublishedWindowAgeS"], &v["PublishErrors"]),
            (&json!(42), &json!(0))
        );
        let failed = emf_publish("pub-fn", None, true, 9);
        assert_eq!(
            (&failed["PublishErrors"], &failed["PublishedEvents"]),
            (&json!(1), &json!(0))
        );
        let declared = failed["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .map(Vec::len);
        assert_eq!(declared, Some(8));
    }
}
