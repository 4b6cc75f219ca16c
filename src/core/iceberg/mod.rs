//! An Apache Iceberg table over the lake's data files: the publisher is its
//! only committer, one snapshot per published window. Manifests and
//! manifest lists are written here from the writer's own statistics (no
//! second Parquet or Arrow stack); the catalog is a trait.

pub mod avro;
pub mod commit;
pub mod manifest;
pub mod table;

/// Which table format the publisher keeps besides the Hive-style folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableFormat {
    /// Hive-style partition folders only (the default).
    #[default]
    Hive,
    /// And an Apache Iceberg table over the same files.
    Iceberg,
}

impl TableFormat {
    /// Parses `hive` or `iceberg`.
    pub fn parse(s: &str) -> Result<TableFormat, String> {
        match s.to_ascii_lowercase().as_str() {
            "hive" => Ok(TableFormat::Hive),
            "iceberg" => Ok(TableFormat::Iceberg),
            other => Err(format!("table format {other:?}: use hive or iceberg")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_formats_parse() {
        assert_eq!(TableFormat::parse("ICEBERG"), Ok(TableFormat::Iceberg));
        assert_eq!(TableFormat::parse("hive"), Ok(TableFormat::Hive));
        assert!(TableFormat::parse("delta").is_err());
    }
}
