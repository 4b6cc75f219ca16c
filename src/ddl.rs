//! Athena DDL for a lake: `CREATE EXTERNAL TABLE` statements with partition
//! projection, so Athena needs no crawler and no `MSCK REPAIR`: one `events`
//! table over every event (common columns) and, from the schema registry, one
//! table per event type and subtype with its payload columns. Pure rendering.

use std::collections::HashSet;

use crate::core::encode::Kind;
use crate::core::partition::{HIVE_NULL, PARTITION_COLUMNS, hive_escape};
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
///
/// Athena folds names to lower case, so two event tables whose names differ
/// only in case or punctuation would get one name, and the second `CREATE
/// ... IF NOT EXISTS` would do nothing: a later one is named `<name>_2` (and
/// so on), with a comment saying so. Columns whose names differ only in case
/// (committed before the schema kept such names apart) are listed once, the
/// others named in a comment: Athena could not tell them apart.
pub fn render_all(spec: &TableSpec, schema: &LakeSchema) -> String {
    let mut out = render(spec);
    let mut idents: HashSet<String> = HashSet::from([spec.table.to_lowercase()]);
    for table in schema.tables.keys() {
        let (event_type, event_subtype) = match table.split_once(':') {
            Some((t, s)) => (t, Some(s)),
            None => (table.as_str(), None),
        };
        let mut notes: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = FIXED_COLUMNS
            .iter()
            .map(|(n, _)| n.to_string())
            .chain([PARTITION_COLUMNS[2].to_string()])
            .collect();
        let mut payload: Vec<(String, &'static str)> = Vec::new();
        for c in schema.table_columns(table) {
            let name = c.name.to_lowercase();
            if seen.insert(name.clone()) {
                payload.push((name, athena_type(c.kind)));
            } else {
                notes.push(format!(
                    "-- column `{}` left out: Athena cannot tell it from another column of the same name in another case",
                    c.name
                ));
            }
        }
        let wanted = table_ident(table);
        let mut ident = wanted.clone();
        let mut n = 1;
        while !idents.insert(ident.clone()) {
            n += 1;
            ident = format!("{wanted}_{n}");
        }
        if ident != wanted {
            notes.insert(
                0,
                format!("-- event table `{table}`: named {ident}, as {wanted} was taken"),
            );
        }
        let folder = format!(
            "{}/event_type={}/event_subtype={}",
            spec.location.trim_end_matches('/'),
            hive_escape(event_type),
            event_subtype.map_or(HIVE_NULL.into(), hive_escape)
        );
        out.push_str("\n\n");
        for note in notes {
            out.push_str(&note);
            out.push('\n');
        }
        out.push_str(&create_table(
            spec,
            &ident,
            &payload,
            &PARTITION_COLUMNS[2..],
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
        &PARTITION_COLUMNS,
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

    /// Each CREATE statement's name and column names (partitions too), as
    /// Athena sees them.
    fn statements(ddl: &str) -> Vec<(String, Vec<String>)> {
        ddl.split("CREATE EXTERNAL TABLE IF NOT EXISTS `lake`.`")
            .skip(1)
            .map(|stmt| {
                let (name, rest) = stmt.split_once('`').expect("name");
                let mut cols: Vec<String> = Vec::new();
                for line in rest.lines() {
                    if let Some(col) = line.strip_prefix("  `").and_then(|l| l.split_once('`')) {
                        cols.push(col.0.to_lowercase());
                    } else if let Some(parts) = line.strip_prefix("PARTITIONED BY (") {
                        cols.extend(parts.trim_end_matches(')').split(", ").map(|p| {
                            p.trim_end_matches(" string")
                                .trim_matches('`')
                                .to_lowercase()
                        }));
                    }
                }
                (name.to_string(), cols)
            })
            .collect()
    }

    #[test]
    fn names_athena_cannot_tell_apart_are_kept_apart() {
        use crate::core::encode::Cell;
        use crate::core::schema::{BatchStats, ColumnDef};
        let mut stats = BatchStats::new();
        for table in ["Video:Play", "video:play", "events"] {
            stats
                .entry(table.into())
                .or_default()
                .entry("n".into())
                .or_default()
                .add(&Cell::Int(1));
        }
        let mut schema = LakeSchema::default().plan(&stats).expect("plan");
        // a lake committed before names were kept apart ignoring case
        for (name, since) in [("Country", 2), ("country", 2), ("Event_Date", 2)] {
            schema.columns.push(ColumnDef {
                name: name.into(),
                field: name.into(),
                kind: Kind::String,
                variant: false,
                since,
            });
            for t in schema.tables.values_mut() {
                t.insert(name.into());
            }
        }
        let schema: LakeSchema =
            serde_json::from_str(&serde_json::to_string(&schema).expect("ser")).expect("de");
        let ddl = render_all(&spec(), &schema);
        let stmts = statements(&ddl);
        let names: Vec<&str> = stmts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["events", "video__play", "events_2", "video__play_2"],
            "{ddl}"
        );
        assert!(stmts[1].1.contains(&"event_date".to_string()), "{stmts:?}");
        for (name, cols) in &stmts {
            let unique: HashSet<&String> = cols.iter().collect();
            assert_eq!(unique.len(), cols.len(), "{name}: {cols:?}\n{ddl}");
        }
        assert!(
            ddl.contains(
                "-- event table `video:play`: named video__play_2, as video__play was taken"
            ),
            "{ddl}"
        );
        assert!(ddl.contains("-- column `country` left out"), "{ddl}");
        assert!(ddl.contains("-- column `Event_Date` left out"), "{ddl}");
    }
}
