//! Athena DDL for a lake: `CREATE EXTERNAL TABLE` statements with partition
//! projection, so Athena needs no crawler and no `MSCK REPAIR`: one `events`
//! table over every event (common columns) and, from the schema registry, one
//! table per event type and subtype with its payload columns. Pure rendering.

use std::collections::{BTreeSet, HashSet};

use chrono::NaiveDate;

use crate::core::columns::FIXED_COLUMNS;
use crate::core::partition::{HIVE_NULL, PARTITION_COLUMNS, hive_escape};
use crate::core::schema::LakeSchema;
use crate::core::value::Kind;

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
    /// Last date of the range: `NOW`, or a date (`YYYY-MM-DD`) when the lake
    /// holds events dated after today.
    pub date_range_end: String,
}

/// The longest column name Glue takes.
pub const MAX_COLUMN_NAME_CHARS: usize = 255;

/// A column name Athena and Glue take for a field name they cannot (empty,
/// longer than [`MAX_COLUMN_NAME_CHARS`], or with control characters), with
/// why; `None` when the name is fine as it is. Control characters become
/// `_`, an empty name `_`, and a long name its first 246 characters, `_` and
/// 8 hex digits of a hash of the whole name (so two long names sharing a
/// start stay apart).
pub fn safe_column_name(name: &str) -> Option<(String, &'static str)> {
    if name.is_empty() {
        return Some(("_".into(), "an empty name"));
    }
    let mut why = None;
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_control() {
                why = Some("control characters");
                '_'
            } else {
                c
            }
        })
        .collect();
    if out.chars().count() > MAX_COLUMN_NAME_CHARS {
        // FNV-1a of the original name
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        out = format!(
            "{}_{:08x}",
            out.chars()
                .take(MAX_COLUMN_NAME_CHARS - 9)
                .collect::<String>(),
            hash as u32
        );
        why = Some("more than 255 characters");
    }
    why.map(|w| (out, w))
}

/// The `event_date` values of a lake's data keys or folders (any component
/// `event_date=YYYY-MM-DD`; keys under `_…` folders are not data).
pub fn event_dates<'a>(keys: impl IntoIterator<Item = &'a str>) -> BTreeSet<NaiveDate> {
    keys.into_iter()
        .filter(|k| !k.split('/').any(|c| c.starts_with('_')))
        .filter_map(|k| {
            k.split('/')
                .find_map(|c| c.strip_prefix("event_date="))
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        })
        .collect()
}

/// The `event_date` projection range for a lake's partition dates: from
/// `since` when given, else from the earliest date (2020-01-01 for a lake
/// without data); to `NOW`, or to the latest date when it is after `today`.
/// Also the warnings to print: the dates Athena would not see.
pub fn projection_range(
    dates: &BTreeSet<NaiveDate>,
    since: Option<NaiveDate>,
    today: NaiveDate,
) -> (String, String, Vec<String>) {
    let fmt = crate::core::partition::format_date;
    let default_start = NaiveDate::from_ymd_opt(2020, 1, 1).unwrap_or(NaiveDate::MIN);
    let start = since.or(dates.first().copied()).unwrap_or(default_start);
    let mut warnings = Vec::new();
    let before: Vec<&NaiveDate> = dates.range(..start).collect();
    if let Some(first) = before.first() {
        warnings.push(format!(
            "{} event_date partitions of the lake are before the projection range's start {} (the earliest is {}): Athena will not see their events; leave out --since to start at the earliest",
            before.len(),
            fmt(start),
            fmt(**first)
        ));
    }
    let end = match dates.last() {
        Some(&last) if last > today => {
            warnings.push(format!(
                "the lake holds events dated after today (up to {}): the projection range ends there instead of NOW; events dated later will not be seen until the DDL is made again",
                fmt(last)
            ));
            fmt(last)
        }
        _ => "NOW".to_string(),
    };
    (fmt(start), end, warnings)
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
        let seen: HashSet<String> = FIXED_COLUMNS
            .iter()
            .map(|c| c.name.to_string())
            .chain([PARTITION_COLUMNS[2].to_string()])
            .collect();
        let columns: Vec<(&str, &'static str)> = schema
            .table_columns(table)
            .iter()
            .map(|c| (c.name.as_str(), athena_type(c.kind)))
            .collect();
        let (payload, mut notes) = athena_columns(&columns, seen, Form::Hive);
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
        .map(|c| (c.name.to_string(), athena_type(c.kind)))
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
            format!("{},{}", spec.date_range_start, spec.date_range_end),
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
        "CREATE EXTERNAL TABLE IF NOT EXISTS {}.{} (\n{}\n)\nPARTITIONED BY ({})\nSTORED AS PARQUET\nLOCATION '{}/'\nTBLPROPERTIES (\n{}\n);",
        quote_ident(&spec.database),
        quote_ident(name),
        columns.join(",\n"),
        partitioned.join(", "),
        location.replace('\'', "''"),
        props.join(",\n"),
    )
}

/// Which table a column list is for: the notes on names differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// A `CREATE EXTERNAL TABLE` over the Hive-style folders.
    Hive,
    /// The Iceberg table over the same files.
    Iceberg,
}

/// The Athena columns of `columns` (each a name as in the data files and
/// its Athena type), in order, and the SQL comments to print above the
/// statement: Athena folds names to lower case; a name Athena and Glue
/// cannot take ([`safe_column_name`]) is mapped to one no other column has;
/// a column whose name Athena cannot tell from an earlier one's (or from one
/// of `seen`, the statement's other columns) is left out.
fn athena_columns(
    columns: &[(&str, &'static str)],
    mut seen: HashSet<String>,
    form: Form,
) -> (Vec<(String, &'static str)>, Vec<String>) {
    let mut notes: Vec<String> = Vec::new();
    let mut out: Vec<(String, &'static str)> = Vec::new();
    // names a mapped column must not take: every name that is fine as is
    let mut taken: HashSet<String> = seen.clone();
    taken.extend(
        columns
            .iter()
            .map(|(n, _)| n.to_lowercase())
            .filter(|n| safe_column_name(n).is_none()),
    );
    for &(field, ty) in columns {
        let mut name = field.to_lowercase();
        let mut mapped = false;
        if let Some((safe, why)) = safe_column_name(&name) {
            let mut safe = safe;
            while !taken.insert(safe.clone()) {
                safe.push('_');
            }
            notes.push(match form {
                Form::Hive => format!(
                    "-- column `{safe}` is the field {field:?}, whose name Athena and Glue cannot take ({why}); Athena matches Parquet columns by name, so it reads NULL: read this field with DuckDB, Spark or pyarrow"
                ),
                Form::Iceberg => format!(
                    "-- column `{safe}` is the field {field:?}, whose name Athena and Glue cannot take ({why}): Iceberg tables are read by name, so this column cannot be read under Iceberg with that name (it reads NULL): read this field from the data files with DuckDB, Spark or pyarrow"
                ),
            });
            name = safe;
            mapped = true;
        }
        if seen.insert(name.clone()) {
            if form == Form::Iceberg && !mapped && name != field {
                notes.push(format!(
                    "-- column `{name}` is the field {field:?}: Athena folds names to lower case, and Iceberg tables are read by name, so readers that match names exactly cannot read this column under Iceberg with that name, and the publisher (which matches names exactly) would add {field:?} as another column"
                ));
            }
            out.push((name, ty));
        } else {
            notes.push(format!(
                "-- column `{field}` left out: Athena cannot tell it from another column of the same name in another case"
            ));
        }
    }
    (out, notes)
}

/// The Athena type of an Iceberg type of
/// [`wanted_columns`](crate::core::iceberg::table::wanted_columns): `long`
/// is `bigint`; `string`, `double`, `boolean` and `date` are the same.
pub fn athena_type_of_iceberg(ty: &'static str) -> &'static str {
    match ty {
        "long" => "bigint",
        other => other,
    }
}

/// The Athena `CREATE TABLE` of the lake's Iceberg table, for users who
/// register it in Glue themselves: ONE table over every event type, named
/// `table` in `database`, at the lake's `location`, with the columns the
/// publisher's Iceberg table has
/// ([`wanted_columns`](crate::core::iceberg::table::wanted_columns), in
/// order; `payload_json` when the lake keeps each event's JSON), identity
/// partitioned by event type, subtype and date.
///
/// Above it, SQL comments: when to run it, and each column whose name
/// Athena changes (Iceberg tables are read by name, so such a column cannot
/// be read under Iceberg with that name).
pub fn render_iceberg(
    database: &str,
    table: &str,
    location: &str,
    schema: &LakeSchema,
    payload_json: bool,
) -> String {
    let wanted = crate::core::iceberg::table::wanted_columns(schema, payload_json);
    let columns: Vec<(&str, &'static str)> = wanted
        .iter()
        .map(|(n, ty)| (n.as_str(), athena_type_of_iceberg(ty)))
        .collect();
    let (columns, notes) = athena_columns(&columns, HashSet::new(), Form::Iceberg);
    let location = location.trim_end_matches('/');
    let mut out = format!(
        "-- The lake's Apache Iceberg table (one table over every event type, on the lake's own data files).\n\
         -- The publisher (--table-format iceberg) creates this table and commits to it itself when it has a catalog:\n\
         -- run this only to register the table in Glue yourself before the first publication, and then point the\n\
         -- publisher at the Glue catalog (--iceberg-rest-uri https://glue.REGION.amazonaws.com/iceberg\n\
         -- --iceberg-sigv4-service glue --iceberg-warehouse ACCOUNT_ID --iceberg-namespace {:?} --iceberg-table {:?}).\n\
         -- After AWS compacts the table, read it through Iceberg, not the folders: compaction writes new data files and\n\
         -- retires the old ones, so the Hive-style folders (and the Hive tables over them) no longer match the table.\n",
        database, table
    );
    for note in notes {
        out.push_str(&note);
        out.push('\n');
    }
    let columns: Vec<String> = columns
        .iter()
        .map(|(n, t)| format!("  {} {t}", quote_ident(n)))
        .collect();
    let partitioned: Vec<String> = PARTITION_COLUMNS.iter().map(|p| quote_ident(p)).collect();
    out.push_str(&format!(
        "CREATE TABLE {}.{} (\n{}\n)\nPARTITIONED BY ({})\nLOCATION '{}'\nTBLPROPERTIES ('table_type'='ICEBERG', 'format'='parquet', 'write_compression'='zstd', 'write_target_data_file_size_bytes'='{}');",
        quote_ident(database),
        quote_ident(table),
        columns.join(",\n"),
        partitioned.join(", "),
        location.replace('\'', "''"),
        crate::core::publish::DEFAULT_TARGET_FILE_BYTES,
    ));
    out
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
            date_range_end: "NOW".into(),
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
        use crate::core::value::Cell;
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

    #[test]
    fn quotes_in_the_location_are_escaped_everywhere() {
        let spec = TableSpec {
            location: "s3://b/p'x".into(),
            ..spec()
        };
        let ddl = render(&spec);
        assert!(ddl.contains("LOCATION 's3://b/p''x/'"), "{ddl}");
        assert!(!ddl.contains("p'x"), "{ddl}");
        let schema = schema_of(&[("payment:order", "amount")]);
        let all = render_all(&spec, &schema);
        assert!(
            all.contains("LOCATION 's3://b/p''x/event_type=payment/event_subtype=order/'"),
            "{all}"
        );
        assert!(!all.contains("p'x"), "{all}");
    }

    fn schema_of(fields: &[(&str, &str)]) -> LakeSchema {
        use crate::core::value::Cell;
        let mut stats = crate::core::schema::BatchStats::new();
        for (table, field) in fields {
            stats
                .entry((*table).into())
                .or_default()
                .entry((*field).into())
                .or_default()
                .add(&Cell::Int(1));
        }
        LakeSchema::default().plan(&stats).expect("plan")
    }

    #[test]
    fn names_athena_and_glue_cannot_take_are_mapped_with_a_comment() {
        let long = "x".repeat(300);
        let long2 = format!("{}y", "x".repeat(299));
        let schema = schema_of(&[
            ("t", ""),
            ("t", "a\tb"),
            ("t", &long),
            ("t", &long2),
            ("t", "a_b"),
            ("t", "ok"),
        ]);
        let ddl = render_all(&spec(), &schema);
        let stmts = statements(&ddl);
        let (_, cols) = stmts.iter().find(|(n, _)| n == "t").expect("table t");
        for c in cols {
            assert!(!c.is_empty() && c.chars().count() <= 255, "{c:?}");
            assert!(!c.chars().any(char::is_control), "{c:?}");
        }
        let unique: HashSet<&String> = cols.iter().collect();
        assert_eq!(unique.len(), cols.len(), "{cols:?}");
        assert!(cols.contains(&"ok".to_string()) && cols.contains(&"a_b".to_string()));
        // the tab's column does not take the name of the real `a_b`
        assert!(cols.contains(&"a_b_".to_string()), "{cols:?}");
        assert!(cols.contains(&"_".to_string()), "{cols:?}");
        assert!(ddl.contains("is the field \"a\\tb\""), "{ddl}");
        assert!(ddl.contains("is the field \"\", whose name"), "{ddl}");
        assert!(ddl.contains("(more than 255 characters)"), "{ddl}");
        assert_eq!(safe_column_name("fine"), None);
        assert_eq!(
            safe_column_name(&"é".repeat(255)),
            None,
            "255 characters fit"
        );
    }

    #[test]
    fn the_projection_range_comes_from_the_lake_and_what_falls_outside_is_warned() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        let today = d("2026-06-01");
        let dates = event_dates([
            "event_type=a/event_subtype=b/event_date=1999-12-31/",
            "event_type=a/event_subtype=__HIVE_DEFAULT_PARTITION__/event_date=2024-03-17",
            "event_type=a/event_subtype=b/event_date=2024-03-18/part-1.parquet",
            "_errors/ingest_date=2026-01-01/part-1.ndjson",
            "_staging/event_date=1900-01-01/x",
        ]);
        assert_eq!(dates.len(), 3);
        // from the lake: every partition inside
        let (start, end, warnings) = projection_range(&dates, None, today);
        assert_eq!((start.as_str(), end.as_str()), ("1999-12-31", "NOW"));
        assert!(warnings.is_empty(), "{warnings:?}");
        // an explicit --since that leaves old partitions out: warned
        let (start, _, warnings) = projection_range(&dates, Some(d("2020-01-01")), today);
        assert_eq!(start, "2020-01-01");
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("1 event_date partitions"),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("1999-12-31"), "{warnings:?}");
        // events dated in the future: the range reaches them, with a warning
        let mut future = dates.clone();
        future.insert(d("2031-01-01"));
        let (_, end, warnings) = projection_range(&future, None, today);
        assert_eq!(end, "2031-01-01");
        assert!(warnings[0].contains("after today"), "{warnings:?}");
        // an empty lake: the default start
        let (start, end, warnings) = projection_range(&BTreeSet::new(), None, today);
        assert_eq!((start.as_str(), end.as_str()), ("2020-01-01", "NOW"));
        assert!(warnings.is_empty());
        let spec = TableSpec {
            date_range_start: "1999-12-31".into(),
            date_range_end: "2031-01-01".into(),
            ..spec()
        };
        assert!(render(&spec).contains("'projection.event_date.range'='1999-12-31,2031-01-01'"));
    }

    /// The column lines of the Iceberg table's statement, as (name, type).
    fn iceberg_columns(ddl: &str) -> Vec<(String, String)> {
        let body = ddl
            .split_once(" (\n")
            .and_then(|(_, rest)| rest.split_once("\n)\n"))
            .expect("a column list")
            .0;
        body.lines()
            .map(|l| {
                let l = l.trim_start().trim_end_matches(',');
                let (name, ty) = l.rsplit_once(' ').expect("name and type");
                (name.trim_matches('`').to_string(), ty.to_string())
            })
            .collect()
    }

    #[test]
    fn the_iceberg_table_has_every_wanted_column_in_order_with_athena_types() {
        use crate::core::iceberg::table::wanted_columns;
        let schema = schema_of(&[("payment:order", "amount")]);
        for payload_json in [false, true] {
            let ddl = render_iceberg(
                "lake",
                "events",
                "s3://bucket/prefix/",
                &schema,
                payload_json,
            );
            let wanted: Vec<(String, String)> = wanted_columns(&schema, payload_json)
                .into_iter()
                .map(|(n, ty)| (n, athena_type_of_iceberg(ty).to_string()))
                .collect();
            assert_eq!(iceberg_columns(&ddl), wanted, "{ddl}");
            assert_eq!(
                wanted.iter().any(|(n, _)| n == "payload_json"),
                payload_json
            );
            assert!(ddl.contains("  `event_date` date,\n"), "{ddl}");
            assert!(ddl.contains("  `amount` bigint\n)"), "{ddl}");
            assert!(
                iceberg_columns(&ddl)
                    .iter()
                    .all(|(_, ty)| ["string", "bigint", "double", "boolean", "date"]
                        .contains(&ty.as_str())),
                "{ddl}"
            );
            assert!(ddl.contains("\nCREATE TABLE `lake`.`events` (\n"), "{ddl}");
            assert!(
                ddl.contains("\nPARTITIONED BY (`event_type`, `event_subtype`, `event_date`)\n"),
                "{ddl}"
            );
            assert!(ddl.contains("\nLOCATION 's3://bucket/prefix'\n"), "{ddl}");
            assert!(ddl.contains("'table_type'='ICEBERG'"), "{ddl}");
            assert!(ddl.contains("'write_target_data_file_size_bytes'='134217728'"));
            assert!(ddl.ends_with(");"), "{ddl}");
            assert!(!ddl.contains("EXTERNAL"), "{ddl}");
        }
        assert_eq!(athena_type_of_iceberg("long"), "bigint");
        for ty in ["string", "double", "boolean", "date"] {
            assert_eq!(athena_type_of_iceberg(ty), ty);
        }
    }

    #[test]
    fn one_iceberg_table_for_a_lake_of_several_event_types() {
        let schema = schema_of(&[
            ("payment:order", "amount"),
            ("video:play", "position"),
            ("account", "plan"),
        ]);
        let ddl = render_iceberg("lake", "all_events", "s3://bucket/prefix", &schema, false);
        assert_eq!(ddl.matches("CREATE TABLE").count(), 1, "{ddl}");
        assert!(!ddl.contains("EXTERNAL"), "{ddl}");
        assert!(ddl.contains("CREATE TABLE `lake`.`all_events` ("), "{ddl}");
        let names: Vec<String> = iceberg_columns(&ddl).into_iter().map(|(n, _)| n).collect();
        for c in ["amount", "position", "plan"] {
            assert!(names.contains(&c.to_string()), "{c}: {ddl}");
        }
        // when to run it, above the statement
        let (comment, _) = ddl.split_once("CREATE TABLE").expect("statement");
        assert!(comment.lines().all(|l| l.starts_with("-- ")), "{comment}");
        for said in [
            "--table-format iceberg",
            "register the table in Glue yourself before the first publication",
            "Glue catalog",
            "--iceberg-namespace \"lake\" --iceberg-table \"all_events\"",
            "After AWS compacts the table, read it through Iceberg, not the folders",
        ] {
            assert!(comment.contains(said), "{said}: {comment}");
        }
    }

    #[test]
    fn quotes_in_the_iceberg_location_and_names_are_escaped() {
        let ddl = render_iceberg(
            "la`ke",
            "ev`ents",
            "s3://b/p'x/",
            &LakeSchema::default(),
            false,
        );
        assert!(ddl.contains("\nLOCATION 's3://b/p''x'\n"), "{ddl}");
        assert!(!ddl.contains("p'x"), "{ddl}");
        assert!(ddl.contains("CREATE TABLE `la``ke`.`ev``ents` ("), "{ddl}");
    }

    #[test]
    fn iceberg_columns_athena_renames_are_warned_about() {
        use crate::core::schema::ColumnDef;
        let mut schema = schema_of(&[("t", ""), ("t", "a\tb"), ("t", "a_b"), ("t", "userId")]);
        // a lake committed before names were kept apart ignoring case
        schema.columns.push(ColumnDef {
            name: "USERID".into(),
            field: "USERID".into(),
            kind: Kind::String,
            variant: false,
            since: 2,
        });
        let ddl = render_iceberg("lake", "events", "s3://b/p", &schema, false);
        let names: Vec<String> = iceberg_columns(&ddl).into_iter().map(|(n, _)| n).collect();
        let unique: HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        // mapped as the Hive tables map them, never silently
        assert!(names.contains(&"a_b".to_string()), "{names:?}");
        assert!(names.contains(&"a_b_".to_string()), "{names:?}");
        assert!(names.contains(&"_".to_string()), "{names:?}");
        assert!(
            ddl.contains("-- column `a_b_` is the field \"a\\tb\", whose name Athena and Glue cannot take (control characters): Iceberg tables are read by name, so this column cannot be read under Iceberg with that name"),
            "{ddl}"
        );
        assert!(
            ddl.contains("-- column `_` is the field \"\", whose name"),
            "{ddl}"
        );
        assert!(
            ddl.contains(
                "-- column `userid` is the field \"userId\": Athena folds names to lower case"
            ),
            "{ddl}"
        );
        assert!(names.contains(&"userid".to_string()), "{names:?}");
        assert!(ddl.contains("-- column `USERID` left out"), "{ddl}");
        assert!(!ddl.contains("`a_b` is the field"), "{ddl}");
        // every note is a comment above the statement
        let (comment, stmt) = ddl.split_once("CREATE TABLE").expect("statement");
        assert!(comment.lines().all(|l| l.starts_with("-- ")), "{comment}");
        assert!(!stmt.contains("--"), "{stmt}");
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
        use crate::core::schema::{BatchStats, ColumnDef};
        use crate::core::value::Cell;
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
