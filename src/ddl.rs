//! Athena DDL for a lake: `CREATE EXTERNAL TABLE` with partition projection, so
//! Athena needs no crawler and no `MSCK REPAIR`. Rendering is pure; payload
//! columns can be derived from the Parquet footers of an existing lake.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;

/// The columns every data file has, in order, with their Athena types.
pub const FIXED_COLUMNS: [(&str, &str); 4] = [
    ("event_uuid", "string"),
    ("event_name", "string"),
    ("created_at", "double"),
    ("created_datetime", "string"),
];

/// A failure to read a lake file's schema.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the Parquet schema of {path}: {message}")]
pub struct DdlError {
    /// The file.
    pub path: String,
    /// The cause.
    pub message: String,
}

/// What the table is called and where it points.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Glue/Athena database.
    pub database: String,
    /// Table name.
    pub table: String,
    /// `s3://bucket/prefix` of the lake (no trailing slash needed).
    pub location: String,
    /// First date of the `event_date` projection range (`YYYY-MM-DD`).
    pub date_range_start: String,
}

/// The Athena type of an Arrow type as this lake writes it.
pub fn athena_type(dt: &DataType) -> &'static str {
    match dt {
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => "bigint",
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "double",
        _ => "string",
    }
}

/// Merges one file's payload columns into `into`. Where files disagree on a
/// column's type, the wider type is kept (bigint and double: double; any other
/// pair: string) and the column is marked as conflicting.
pub fn merge_columns(
    into: &mut BTreeMap<String, (&'static str, bool)>,
    file: &[(String, &'static str)],
) {
    for (name, ty) in file {
        into.entry(name.clone())
            .and_modify(|(t, conflict)| {
                if *t != *ty {
                    *conflict = true;
                    *t = match (*t, *ty) {
                        ("bigint", "double") | ("double", "bigint") => "double",
                        _ => "string",
                    };
                }
            })
            .or_insert((ty, false));
    }
}

/// The payload columns of every data file under a local lake folder.
pub fn columns_from_lake(lake: &Path) -> Result<Vec<(String, &'static str, bool)>, DdlError> {
    let mut merged = BTreeMap::new();
    let mut stack = vec![lake.to_path_buf()];
    let err = |p: &Path, m: String| DdlError {
        path: p.display().to_string(),
        message: m,
    };
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| err(&dir, e.to_string()))?;
        for entry in entries {
            let path = entry.map_err(|e| err(&dir, e.to_string()))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".parquet") {
                let file = std::fs::File::open(&path).map_err(|e| err(&path, e.to_string()))?;
                let meta = ArrowReaderMetadata::load(&file, Default::default())
                    .map_err(|e| err(&path, e.to_string()))?;
                let cols: Vec<(String, &'static str)> = meta
                    .schema()
                    .fields()
                    .iter()
                    .filter(|f| !FIXED_COLUMNS.iter().any(|(n, _)| n == f.name()))
                    .map(|f| (f.name().clone(), athena_type(f.data_type())))
                    .collect();
                merge_columns(&mut merged, &cols);
            }
        }
    }
    Ok(merged.into_iter().map(|(n, (t, c))| (n, t, c)).collect())
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Renders the `CREATE EXTERNAL TABLE` statement.
pub fn render(spec: &TableSpec, payload: &[(String, &'static str, bool)]) -> String {
    let location = spec.location.trim_end_matches('/');
    let mut cols: Vec<String> = FIXED_COLUMNS
        .iter()
        .map(|(n, t)| format!("  {} {t}", quote_ident(n)))
        .collect();
    for (name, ty, conflict) in payload {
        let note = if *conflict {
            " -- files disagree on this column's type"
        } else {
            ""
        };
        cols.push(format!(
            "  {} {ty}{note}",
            quote_ident(&name.to_lowercase())
        ));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "CREATE EXTERNAL TABLE IF NOT EXISTS {}.{} (",
        quote_ident(&spec.database),
        quote_ident(&spec.table)
    );
    // a trailing comment must not swallow the comma: put commas first
    let _ = writeln!(out, "{}", join_columns(&cols));
    let _ = writeln!(out, ")");
    let _ = writeln!(
        out,
        "PARTITIONED BY (`event_type` string, `event_subtype` string, `event_date` string)"
    );
    let _ = writeln!(out, "STORED AS PARQUET");
    let _ = writeln!(out, "LOCATION '{location}/'");
    let _ = writeln!(out, "TBLPROPERTIES (");
    let props = [
        ("projection.enabled", "true".to_string()),
        ("projection.event_type.type", "injected".to_string()),
        ("projection.event_subtype.type", "injected".to_string()),
        ("projection.event_date.type", "date".to_string()),
        ("projection.event_date.format", "yyyy-MM-dd".to_string()),
        (
            "projection.event_date.range",
            format!("{},NOW", spec.date_range_start),
        ),
        ("projection.event_date.interval", "1".to_string()),
        ("projection.event_date.interval.unit", "DAYS".to_string()),
        (
            "storage.location.template",
            format!(
                "{location}/event_type=${{event_type}}/event_subtype=${{event_subtype}}/event_date=${{event_date}}"
            ),
        ),
    ];
    let lines: Vec<String> = props
        .iter()
        .map(|(k, v)| format!("  '{k}'='{}'", v.replace('\'', "''")))
        .collect();
    let _ = writeln!(out, "{}", lines.join(",\n"));
    let _ = write!(out, ");");
    out
}

fn join_columns(cols: &[String]) -> String {
    let mut out = String::new();
    for (i, c) in cols.iter().enumerate() {
        let (def, comment) = match c.split_once(" --") {
            Some((d, rest)) => (d.to_string(), format!(" --{rest}")),
            None => (c.clone(), String::new()),
        };
        let comma = if i + 1 < cols.len() { "," } else { "" };
        let _ = write!(out, "{def}{comma}{comment}");
        if i + 1 < cols.len() {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TableSpec {
        TableSpec {
            database: "lake".into(),
            table: "events".into(),
            location: "s3://bucket/prefix/".into(),
            date_range_start: "2024-01-01".into(),
        }
    }

    #[test]
    fn projection_covers_all_three_partitions() {
        let ddl = render(&spec(), &[]);
        assert!(ddl.contains("'projection.enabled'='true'"));
        assert!(ddl.contains("'projection.event_date.range'='2024-01-01,NOW'"));
        assert!(ddl.contains(
            "'storage.location.template'='s3://bucket/prefix/event_type=${event_type}/event_subtype=${event_subtype}/event_date=${event_date}'"
        ));
        assert!(ddl.contains("LOCATION 's3://bucket/prefix/'"));
        assert!(ddl.contains("`created_datetime` string\n)"));
    }

    #[test]
    fn conflicting_types_widen_and_are_flagged() {
        let mut m = BTreeMap::new();
        merge_columns(
            &mut m,
            &[("amount".into(), "bigint"), ("ok".into(), "boolean")],
        );
        merge_columns(
            &mut m,
            &[("amount".into(), "double"), ("ok".into(), "string")],
        );
        assert_eq!(m["amount"], ("double", true));
        assert_eq!(m["ok"], ("string", true));
        let cols: Vec<_> = m.into_iter().map(|(n, (t, c))| (n, t, c)).collect();
        let ddl = render(&spec(), &cols);
        assert!(ddl.contains("`amount` double, -- files disagree"), "{ddl}");
        assert!(ddl.contains("`ok` string -- files disagree"), "{ddl}");
    }
}
