//! Local adapters: a folder as the lake, an embedded dedup store inside it,
//! and input files (NDJSON or Lambda Kinesis event documents).

pub mod fs_sink;
pub mod input;
pub mod rebuild;
pub mod redb_store;

pub use fs_sink::FsSink;
pub use redb_store::RedbStore;
