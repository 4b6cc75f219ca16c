//! An Apache Iceberg table over the lake's data files: the publisher is its
//! only committer, one snapshot per published window. Manifests and
//! manifest lists are written here from the writer's own statistics (no
//! second Parquet or Arrow stack); the catalog is a trait.

pub mod avro;
pub mod commit;
pub mod manifest;
pub mod table;
