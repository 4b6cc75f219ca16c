//! Athena DDL for a lake: `CREATE EXTERNAL TABLE` statements with partition
//! projection, so Athena needs no crawler and no `MSCK REPAIR`: one `events`
//! table over every event (common columns) and, from the schema registry, one
//! table per event type and subtype with its payload columns. Pure rendering.

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
    let mut out = render(spec);
    for table in schema.tables.keys() {
        let (event_type, event_subtype) = match table.split_once(':') {
            Some((t, s)) => (t, Some(s)),
            None => (table.as_str(), None),
        };
        let payload: Vec<(String, &'static str)> = schema
            .table_columns(table)
            .iter()
            .map(|c| (c.name.to_lowercase(), athena_type(c.kind)))
            .collect();
        let folder = format!(
            "{}/event_type={}/event_subtype={}",
            spec.location.trim_end_matches('/'),
            hive_escape(event_type),
            event_subtype.map_or(HIVE_NULL.into(), hive_escape)
        );
        out.push_str("\n\n");
        out.push_str(&create_table(
            spec,
            &table_ident(table),
            &payload,
            &["event_date"],
            &folder,
            &[],
        ));
    }
    out
}

/// Renders the `events` table: every event, the columns all files have,
/// partitioned by event type, subtype and date.
pub fn render(spec: &TableSpec) -> String {
    let location = spec.location.trim_end_matches('/');
    create_table(
        spec,
        &spec.table,
        &[],
        &["event_type", "event_subtype", "event_date"],
        location,
        &[
            ("projection.event_type.type", "injected"),
            ("projection.event_subtype.type", "injected"),
        ],
    )
}

/// One `CREATE EXTERNAL TABLE` over Parquet at `location`, partitioned by
/// `partitions` (the last one is `event_date`, projected as a date; the others
/// need their own projection properties in `extra`).
fn create_table(
    spec: &TableSpec,
    name: &str,
    payload: &[(String, &'static str)],
    partitions: &[&str],
    location: &str,
    extra: &[(&str, &str)],
) -> String {
    let columns: Vec<String> = FIXED_COLUMNS
        .iter()
        .map(|(n, t)| (n.to_string(), *t))
        .chain(payload.iter().map(|(n, t)| (n.clone(), *t)))
        .map(|(n, t)| format!("  {} {t}", quote_ident(&n)))
        .collect();
    let partitioned: Vec<String> = partitions
        .iter()
        .map(|p| format!("{} string", quote_ident(p)))
        .collect();
    let template: String = partitions
        .iter()
        .map(|p| format!("/{p}=${{{p}}}"))
        .collect();
    let mut props: Vec<(&str, String)> = vec![("projection.enabled", "true".into())];
    props.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    props.extend([
        ("projection.event_date.type", "date".into()),
        ("projection.event_date.format", "yyyy-MM-dd".into()),
        (
            "projection.event_date.range",
            format!("{},NOW", spec.date_range_start),
        ),
        ("projection.event_date.interval", "1".into()),
        ("projection.event_date.interval.unit", "DAYS".into()),
        ("storage.location.template", format!("{location}{template}")),
    ]);
    let props: Vec<String> = props
        .iter()
        .map(|(k, v)| format!("  '{k}'='{}'", v.replace('\'', "''")))
        .collect();
    format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS {}.{} (\n{}\n)\nPARTITIONED BY ({})\nSTORED AS PARQUET\nLOCATION '{location}/'\nTBLPROPERTIES (\n{}\n);",
        quote_ident(&spec.database),
        quote_ident(name),
        columns.join(",\n"),
        partitioned.join(", "),
        props.join(",\n"),
    )
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
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
        let ddl = render(&spec());
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
