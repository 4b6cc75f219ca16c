//! Runs input files through the pipeline in batches: what the CLI's `ingest`
//! does, over any dedup store and object sink.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;

use crate::core::dedup::DedupStore;
use crate::core::pipeline::{Counts, PipelineConfig, run_batch};
use crate::core::sink::ObjectSink;
use crate::local::input::{FileRecords, InputError, expand};
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
}

/// Progress callback: bytes of input consumed so far (file sizes).
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Total size of the inputs, for a progress bar.
pub fn total_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

/// Ingests the inputs. Errors only for inputs that cannot be read; records
/// that fail are counted and reported in the summary.
pub async fn ingest<S: DedupStore, O: ObjectSink>(
    inputs: &[PathBuf],
    store: &S,
    sink: &O,
    cfg: &PipelineConfig,
    limits: &BatchLimits,
    progress: Progress<'_>,
) -> Result<Summary, InputError> {
    let start = Instant::now();
    let files = expand(inputs)?;
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    let mut batch: Vec<RawRecord> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut done_bytes = 0u64;

    let mut flush = async |batch: &mut Vec<RawRecord>, counts: &mut Counts| {
        if batch.is_empty() {
            return;
        }
        let outcome = run_batch(batch, store, sink, cfg, Utc::now()).await;
        counts.add(&outcome.counts);
        for f in outcome.failed {
            if failures.len() < 20 {
                failures.push(FailedRecordReport {
                    record: batch[f.index].origin.describe(),
                    reason: f.reason,
                });
            }
        }
        batch.clear();
    };

    for file in &files {
        for rec in FileRecords::open(file)? {
            let rec = rec?;
            batch_bytes += rec.data.len();
            batch.push(rec);
            if batch_bytes >= limits.max_bytes || batch.len() >= limits.max_records {
                flush(&mut batch, &mut counts).await;
                batch_bytes = 0;
            }
        }
        done_bytes += std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        progress(done_bytes);
    }
    flush(&mut batch, &mut counts).await;

    let elapsed = start.elapsed().max(Duration::from_micros(1));
    Ok(Summary {
        input_files: files.len(),
        records_per_s: counts.records as f64 / elapsed.as_secs_f64(),
        counts,
        elapsed_s: elapsed.as_secs_f64(),
        failures,
    })
}
