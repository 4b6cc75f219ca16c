//! kinesis-lake: a Kinesis stream of JSON events into an exactly-once,
//! Hive-partitioned Parquet lake.
//!
//! - [`core`]: the pure pipeline (decode, validate, enrich, dedup decisions,
//!   partitioning, Parquet encoding).
//! - adapters, one I/O concern each: [`kinesis`] (Lambda event types),
//!   [`aws`] (S3 lake, DynamoDB dedup store, Lambda invocation, metrics),
//!   [`local`] (folder lake, embedded dedup store, input files),
//!   [`memory`] (in-memory store and sink for tests and benchmarks).
//! - [`allocator`]: the binaries' allocator settings.
//! - [`ingest`]: runs inputs through the pipeline in batches (the CLI's job).
//! - [`replay`]: dead letters and failed Lambda batches through the pipeline again.

pub mod allocator;
pub mod aws;
pub mod core;
pub mod ddl;
pub mod ingest;
pub mod kinesis;
pub mod local;
pub mod memory;
pub mod record;
pub mod replay;
pub mod rest_catalog;

pub use crate::core::pipeline::{BatchOutcome, Counts, PipelineConfig, run_batch};
pub use crate::record::{Origin, RawRecord};
