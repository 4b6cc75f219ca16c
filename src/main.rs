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
    /// Print the Athena CREATE EXTERNAL TABLE statement for a lake, with
    /// partition projection (no crawler, no MSCK REPAIR needed).
    ///
    /// Without --from the table has the columns every file has; with --from
    /// pointing at a local lake folder, payload columns are read from its
    /// Parquet files.
    Ddl {
        /// The lake's S3 location, e.g. s3://my-bucket/lake.
        #[arg(long, value_name = "S3_URI")]
        location: String,
        /// Glue / Athena database name.
        #[arg(long, default_value = "kinesis_lake")]
        database: String,
        /// Table name.
        #[arg(long, default_value = "events")]
        table: String,
        /// First date of the event_date projection range (YYYY-MM-DD).
        #[arg(long, value_name = "DATE", default_value = "2020-01-01")]
        since: String,
        /// A local lake folder to read payload columns from.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
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
        Command::Ddl {
            location,
            database,
            table,
            since,
            from,
        } => ddl(location, database, table, since, from),
    }
}

fn ddl(
    location: String,
    database: String,
    table: String,
    since: String,
    from: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if !location.starts_with("s3://") {
        anyhow::bail!("--location must be an s3:// URI (Athena reads from S3), got {location:?}");
    }
    chrono::NaiveDate::parse_from_str(&since, "%Y-%m-%d")
        .with_context(|| format!("--since must be a date like 2024-01-31, got {since:?}"))?;
    let columns = match &from {
        Some(lake) => kinesis_lake::ddl::columns_from_lake(lake)?,
        None => Vec::new(),
    };
    let spec = kinesis_lake::ddl::TableSpec {
        database,
        table,
        location,
        date_range_start: since,
    };
    println!("{}", kinesis_lake::ddl::render(&spec, &columns));
    Ok(ExitCode::SUCCESS)
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
