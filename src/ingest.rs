//! Runs input files through the pipeline in batches: what the CLI's `ingest`
//! does, over any dedup store and object sink.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;

use crate::core::dedup::DedupStore;
use crate::core::pipeline::{Counts, PipelineConfig, run_batch};
use crate::core::sink::ObjectSink;
use crate::local::input::{FileRecords, InputError, InputFile, OnRead};
use crate::record::RawRecord;

/// How inputs are cut into batches. Bigger batches make fewer, bigger files.
#[derive(Debug, Clone)]
pub struct BatchLimits {
    /// Close a batch at this many bytes of record data.
    pub max_bytes: usize,
    /// Close a batch at this many records.
    pub max_records: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_bytes: 64 << 20,
            max_records: 200_000,
        }
    }
}

/// A record that could not be durably handled.
#[derive(Debug, Clone, Serialize)]
pub struct FailedRecordReport {
    /// Where it came from.
    pub record: String,
    /// Why.
    pub reason: String,
}

/// What an ingest run did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Input files read.
    pub input_files: usize,
    /// Counters.
    #[serde(flatten)]
    pub counts: Counts,
    /// Wall time.
    pub elapsed_s: f64,
    /// Records read per second.
    pub records_per_s: f64,
    /// The first failed records (at most 20), to say what went wrong.
    pub failures: Vec<FailedRecordReport>,
    /// What the publication after staging did (none when nothing was
    /// published: direct writes, or `--no-publish`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<crate::core::publish::Published>,
}

/// Reads the files into batches on its own thread, one batch ahead of the
/// pipeline: parsing the next documents overlaps processing this batch. Up to
/// one file per core is opened ahead, each on a thread of its own (a Kinesis
/// event document is parsed whole when opened), and their records are taken
/// in file order. `on_read` is told the bytes of input as they are read.
fn spawn_reader(
    files: Vec<PathBuf>,
    limits: BatchLimits,
    on_read: OnRead,
) -> tokio::sync::mpsc::Receiver<Result<Vec<RawRecord>, InputError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let ahead = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::spawn(move || {
        let mut batch: Vec<RawRecord> = Vec::new();
        let mut batch_bytes = 0usize;
        // a send fails only when the receiver is gone: then stop reading
        let send = |m| tx.blocking_send(m).is_ok();
        let mut to_open = files.into_iter();
        let mut opening = std::collections::VecDeque::new();
        loop {
            while opening.len() < ahead {
                let Some(file) = to_open.next() else { break };
                let (path, on_read) = (file.clone(), on_read.clone());
                opening.push_back((
                    file,
                    std::thread::spawn(move || FileRecords::open(&path, on_read)),
                ));
            }
            let Some((file, opened)) = opening.pop_front() else {
                break;
            };
            let opened = opened.join().unwrap_or_else(|_| {
                Err(InputError::Io {
                    path: file.clone(),
                    cause: std::io::Error::other("the thread reading it panicked"),
                })
            });
            let records = match opened {
                Ok(r) => r,
                Err(e) => {
                    send(Err(e));
                    return;
                }
            };
            for rec in records {
                let rec = match rec {
                    Ok(r) => r,
                    Err(e) => {
                        send(Err(e));
                        return;
                    }
                };
                batch_bytes += rec.data.len();
                batch.push(rec);
                if (batch_bytes >= limits.max_bytes || batch.len() >= limits.max_records)
                    && !send(Ok(std::mem::take(&mut batch)))
                {
                    return;
                }
                if batch.is_empty() {
                    batch_bytes = 0;
                }
            }
        }
        if !batch.is_empty() {
            send(Ok(batch));
        }
    });
    rx
}

/// Ingests the input files ([`crate::local::input::expand`] finds them).
/// Errors only for inputs that cannot be read (records of earlier batches are
/// then already in the lake, and a re-run skips them); records that fail are
/// counted and reported in the summary. `on_read` is told the bytes of input
/// as they are read.
pub async fn ingest<S: DedupStore, O: ObjectSink>(
    files: &[InputFile],
    store: &S,
    sink: &O,
    cfg: &PipelineConfig,
    limits: &BatchLimits,
    on_read: OnRead,
) -> Result<Summary, InputError> {
    let start = Instant::now();
    let input_files = files.len();
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    let paths = files.iter().map(|f| f.path.clone()).collect();
    let mut reader = spawn_reader(paths, limits.clone(), on_read);
    let mut waited = Instant::now();
    while let Some(batch) = reader.recv().await {
        let batch = batch?;
        tracing::debug!(
            records = batch.len(),
            waited_ms = waited.elapsed().as_secs_f64() * 1e3,
            since_start_ms = start.elapsed().as_secs_f64() * 1e3,
            "batch read"
        );
        let outcome = run_batch(&batch, store, sink, cfg, Utc::now()).await;
        crate::core::registry::publish_summary(sink, &cfg.prefix, &cfg.schema_cache).await;
        counts.add(&outcome.counts);
        for f in outcome.failed {
            if failures.len() < 20 {
                failures.push(FailedRecordReport {
                    record: batch[f.index].origin.describe(),
                    reason: f.reason.to_string(),
                });
            }
        }
        waited = Instant::now();
    }

    let elapsed = start.elapsed().max(Duration::from_micros(1));
    Ok(Summary {
        input_files,
        records_per_s: counts.records as f64 / elapsed.as_secs_f64(),
        counts,
        elapsed_s: elapsed.as_secs_f64(),
        failures,
        published: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::input::expand;
    use crate::memory::{MemSink, MemStore};
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::sync::Arc;

    #[tokio::test]
    async fn records_of_many_files_keep_file_order_and_the_first_copy_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        // more files than cores: some are opened while others are read
        let files: [&[(&str, i64)]; 5] = [
            &[("u1", 1), ("u2", 1)],
            &[("u3", 2), ("u1", 2)],
            &[("u4", 3)],
            &[("u5", 4), ("u3", 4)],
            &[("u6", 5)],
        ];
        for (k, events) in files.iter().enumerate() {
            let lines: String = events
                .iter()
                .map(|(u, v)| {
                    format!(
                        "{{\"event_uuid\":\"{u}\",\"event_name\":\"a:b\",\"created_at\":1700000000,\"v\":{v}}}\n"
                    )
                })
                .collect();
            std::fs::write(dir.path().join(format!("{k}.ndjson")), lines).expect("write");
        }
        let (store, sink) = (MemStore::default(), MemSink::default());
        let files = expand(&[dir.path().to_path_buf()], None).expect("expand");
        let summary = ingest(
            &files,
            &store,
            &sink,
            &PipelineConfig::default(),
            &BatchLimits::default(),
            Arc::new(|_| {}),
        )
        .await
        .expect("ingest");
        assert_eq!((summary.counts.written, summary.counts.duplicates), (6, 2));
        // one batch, one partition: one file, rows in input order
        let parquet: Vec<_> = sink
            .objects()
            .into_iter()
            .filter(|(k, _)| k.ends_with(".parquet"))
            .collect();
        assert_eq!(parquet.len(), 1);
        let reader = ParquetRecordBatchReaderBuilder::try_new(parquet[0].1.clone())
            .expect("footer")
            .build()
            .expect("reader");
        let (mut uuids, mut values) = (Vec::new(), Vec::new());
        for b in reader {
            let b = b.expect("batch");
            let u = b.column_by_name("event_uuid").expect("event_uuid");
            uuids.extend(u.as_string::<i32>().iter().flatten().map(str::to_string));
            let v = b.column_by_name("v").expect("v");
            values.extend(v.as_primitive::<Int64Type>().iter().flatten());
        }
        assert_eq!(uuids, ["u1", "u2", "u3", "u4", "u5", "u6"]);
        assert_eq!(
            values,
            [1, 1, 2, 3, 4, 5],
            "the first copy of u1 and u3 is kept"
        );
    }
}
