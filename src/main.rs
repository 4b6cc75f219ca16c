//! The `kinesis-lake` command line: runs the lake pipeline locally.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use kinesis_lake::PipelineConfig;
use kinesis_lake::ingest::{BatchLimits, Summary, ingest, total_bytes};
use kinesis_lake::local::input::expand;
use kinesis_lake::local::{FsSink, RedbStore, redb_store};

/// Turns Kinesis JSON events into a Hive-partitioned Parquet lake, exactly once.
#[derive(Parser)]
#[command(name = "kinesis-lake", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest NDJSON files or Lambda Kinesis event documents into a lake.
    ///
    /// Each INPUT is a file or a folder (walked recursively, hidden files
    /// skipped). A file whose first key is "Records" is read as a Lambda
    /// Kinesis event document; any other file as NDJSON, one event per line.
    /// Either may be gzip-compressed. Re-running the same input adds nothing:
    /// dedup state lives in LAKE/_state/dedup.redb. Bad records go to
    /// LAKE/_errors/ and never make the exit code non-zero.
    Ingest {
        /// The lake folder (created if missing).
        #[arg(long, value_name = "DIR")]
        lake: PathBuf,
        /// Close a batch (and write its files) after this many MiB of input.
        /// Bigger batches make fewer, bigger Parquet files.
        #[arg(long, value_name = "MIB", default_value_t = 64)]
        batch_mib: usize,
        /// Close a batch after this many records.
        #[arg(long, value_name = "N", default_value_t = 200_000)]
        batch_records: usize,
        /// Print the summary as one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Never show a progress bar (it only shows on a terminal anyway).
        #[arg(long)]
        no_progress: bool,
        /// Input files or folders.
        #[arg(value_name = "INPUT", required = true)]
        inputs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kinesis-lake: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ingest {
            lake,
            batch_mib,
            batch_records,
            json,
            no_progress,
            inputs,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let files = expand(&inputs)?;
            let store = RedbStore::open(&redb_store::default_path(&lake))
                .context("opening the dedup store")?;
            let sink = FsSink::new(&lake);
            let bar = if no_progress {
                ProgressBar::hidden()
            } else {
                let bar = ProgressBar::new(total_bytes(&files));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar
            };
            let limits = BatchLimits {
                max_bytes: batch_mib.max(1) << 20,
                max_records: batch_records.max(1),
            };
            let cfg = PipelineConfig::default();
            let progress = |done: u64| bar.set_position(done);
            let summary =
                runtime.block_on(ingest(&inputs, &store, &sink, &cfg, &limits, &progress))?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                print_summary(&summary, &lake);
            }
            if summary.counts.failed > 0 {
                eprintln!(
                    "kinesis-lake: error: {} records could not be written durably (first: {}: {}); fix the cause and run the same command again: nothing will be written twice",
                    summary.counts.failed,
                    summary.failures.first().map_or("?", |f| f.record.as_str()),
                    summary.failures.first().map_or("?", |f| f.reason.as_str()),
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_summary(s: &Summary, lake: &std::path::Path) {
    let c = &s.counts;
    println!("records read        {:>12}", c.records);
    println!("events written      {:>12}", c.written);
    println!("duplicates dropped  {:>12}", c.duplicates);
    println!(
        "records rejected    {:>12}   (kept in {}/_errors)",
        c.rejected,
        lake.display()
    );
    println!("records failed      {:>12}", c.failed);
    println!(
        "files written       {:>12}   ({:.1} MB of Parquet, {} dead-letter files)",
        c.files,
        c.bytes as f64 / 1e6,
        c.dead_letter_files
    );
    println!(
        "elapsed             {:>12.2}s  ({:.0} records/s from {} input files)",
        s.elapsed_s, s.records_per_s, s.input_files
    );
}
