//! Athena DDL for a lake: `CREATE EXTERNAL TABLE` statements with partition
//! projection, so Athena needs no crawler and no `MSCK REPAIR`: one `events`
//! table over every event (common columns) and, from the schema registry, one
//! table per event type and subtype with its payload columns. Pure rendering.

use std::fmt::Write as _;

use crate::core::encode::Kind;
use crate::core::partition::{HIVE_NULL, hive_escape};
use crate::core::schema::LakeSchema;

/// The columns every data file has, in order, with their Athena types.
pub const FIXED_COLUMNS: [(&str, &str); 4] = [
    ("event_uuid", "string"),
    ("event_name", "string"),
    ("created_at", "double"),
    ("created_datetime", "string"),
];

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

/// The Athena type of a schema column.
pub fn athena_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "boolean",
        Kind::Int => "bigint",
        Kind::Double => "double",
        Kind::String | Kind::Json => "string",
    }
}

/// An Athena-safe table name for an event table: lower case, `[a-z0-9_]`,
/// type and subtype joined by `__` (`payment:order` -> `payment__order`).
pub fn table_ident(table: &str) -> String {
    fn clean(s: &str) -> String {
        let c: String = s
            .to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if c.is_empty() { "_".into() } else { c }
    }
    match table.split_once(':') {
        Some((t, s)) => format!("{}__{}", clean(t), clean(s)),
        None => clean(table),
    }
}

/// Every table of a lake: the `events` table over all events (common
/// columns), then one table per event type and subtype with its payload
/// columns from the schema registry, each with partition projection.
pub fn render_all(spec: &TableSpec, schema: &LakeSchema) -> String {
    let mut out = render(spec, &[]);
    for table in schema.tables.keys() {
        let (event_type, event_subtype) = match table.split_once(':') {
            Some((t, s)) => (t, Some(s)),
            None => (table.as_str(), None),
        };
        let cols: Vec<(String, &'static str, bool)> = schema
            .table_columns(table)
            .iter()
            .map(|c| (c.name.clone(), athena_type(c.kind), false))
            .collect();
        let folder = format!(
            "{}/event_type={}/event_subtype={}",
            spec.location.trim_end_matches('/'),
            hive_escape(event_type),
            event_subtype.map_or(HIVE_NULL.into(), hive_escape)
        );
        out.push_str("\n\n");
        out.push_str(&render_type_table(
            spec,
            &table_ident(table),
            &folder,
            &cols,
        ));
    }
    out
}

fn render_type_table(
    spec: &TableSpec,
    name: &str,
    folder: &str,
    payload: &[(String, &'static str, bool)],
) -> String {
    let mut cols: Vec<String> = FIXED_COLUMNS
        .iter()
        .map(|(n, t)| format!("  {} {t}", quote_ident(n)))
        .collect();
    cols.extend(
        payload
            .iter()
            .map(|(n, t, _)| format!("  {} {t}", quote_ident(&n.to_lowercase()))),
    );
    let mut out = String::new();
    let _ = writeln!(
        out,
        "CREATE EXTERNAL TABLE IF NOT EXISTS {}.{} (",
        quote_ident(&spec.database),
        quote_ident(name)
    );
    let _ = writeln!(out, "{}", join_columns(&cols));
    let _ = writeln!(out, ")");
    let _ = writeln!(out, "PARTITIONED BY (`event_date` string)");
    let _ = writeln!(out, "STORED AS PARQUET");
    let _ = writeln!(out, "LOCATION '{folder}/'");
    let _ = writeln!(out, "TBLPROPERTIES (");
    let props = [
        ("projection.enabled", "true".to_string()),
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
            format!("{folder}/event_date=${{event_date}}"),
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
    fn one_table_per_event_type_with_its_columns() {
        use crate::core::encode::Cell;
        let mut stats = crate::core::schema::BatchStats::new();
        stats
            .entry("payment:order".into())
            .or_default()
            .entry("amount".into())
            .or_default()
            .add(&Cell::Int(1));
        stats.entry("Video:Play/x".into()).or_default();
        stats
            .entry("account".into())
            .or_default()
            .entry("plan".into())
            .or_default()
            .add(&Cell::Bool(true));
        let schema = LakeSchema::default().plan(&stats).expect("plan");
        let ddl = render_all(&spec(), &schema);
        assert_eq!(ddl.matches("CREATE EXTERNAL TABLE").count(), 4);
        assert!(ddl.contains("`lake`.`payment__order` ("));
        assert!(ddl.contains("`amount` bigint\n)"), "{ddl}");
        assert!(
            ddl.contains("LOCATION 's3://bucket/prefix/event_type=payment/event_subtype=order/'")
        );
        assert!(ddl.contains("`lake`.`video__play_x` ("), "{ddl}");
        assert!(
            ddl.contains("event_type=Video/event_subtype=Play%2Fx/"),
            "{ddl}"
        );
        assert!(ddl.contains(
            "event_type=account/event_subtype=__HIVE_DEFAULT_PARTITION__/event_date=${event_date}"
        ));
    }
}
