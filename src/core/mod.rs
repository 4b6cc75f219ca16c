//! The pure core: no AWS, Lambda or filesystem types. Bytes in, outcome out;
//! the dedup store and the object sink are traits the adapters implement.

pub mod columns;
pub mod decode;
pub mod dedup;
pub mod encode;
pub mod enrich;
pub mod iceberg;
pub mod kpl;
pub mod parallel;
pub mod parquet_file;
pub mod partition;
pub mod pipeline;
pub mod publish;
pub mod registry;
pub mod reject;
pub mod report;
pub mod schema;
pub mod sink;
pub mod staging;
pub mod value;
pub mod window;
