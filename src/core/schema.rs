//! The lake schema: one append-only, versioned list of columns shared by the
//! whole lake, so every file of every event type agrees on the type of every
//! column, and a reader can open the whole lake at once (Spark `mergeSchema`,
//! DuckDB `union_by_name`, pyarrow unified schemas, Athena).
//!
//! Rules:
//! - Types: BOOLEAN, BIGINT (64-bit), DOUBLE, STRING. Nothing narrower.
//! - A payload field gets one base column, named as the field, whose kind is
//!   decided when the field is first committed (from that batch's values:
//!   integers mixed with other numbers make a double, else the most frequent
//!   kind, ties to the narrower kind). A committed column never changes.
//! - A value that does not fit its field's base column is kept, as sent, in a
//!   variant column `<field>__v_<kind>` (kind: bool, int, double, string,
//!   json), added to the schema the first time it is needed.
//! - Objects, arrays and integers beyond 64 bits are `json`: their JSON text
//!   exactly as sent, in a STRING column.
//! - An integer fits a double column when a double holds it exactly (|i| <=
//!   2^53); a double never fits an integer column (1.5 never becomes 1).
//! - Null and an absent field read the same (null); a field that has only
//!   ever been null gets no column until it has a value.
//! - Each table (event type + subtype) lists the columns its files carry.
//!
//! Planning a new version from a batch is a pure function of the current
//! schema and the batch's values (not their order), and planning the same
//! values again adds nothing.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap as FastMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::core::value::{Cell, EXACT_IN_DOUBLE, Kind};

/// The format number of schema documents.
pub const SCHEMA_FORMAT: u32 = 1;

/// One column of the lake schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Column name in the Parquet files.
    pub name: String,
    /// The payload field whose values it holds.
    pub field: String,
    /// What it holds (`json` is JSON text in a STRING column).
    pub kind: Kind,
    /// Whether this is a variant column (values that did not fit the base).
    pub variant: bool,
    /// The schema version that added it.
    pub since: u64,
}

/// A version of the lake schema.
#[derive(Debug, Serialize, Deserialize)]
pub struct LakeSchema {
    /// Document format.
    pub format: u32,
    /// Version number, from 1; version 0 is the empty schema before any commit.
    pub version: u64,
    /// Every column, in the order added.
    pub columns: Vec<ColumnDef>,
    /// Per table (`type` or `type:subtype`), the names of the columns its files carry.
    pub tables: BTreeMap<String, BTreeSet<String>>,
    /// Lookups by field, built on first use (a schema is never changed once
    /// it is looked up: `plan` builds a new one).
    #[serde(skip)]
    index: OnceLock<Index>,
}

/// Field -> base column, (field, kind) -> variant column, table -> its
/// columns, as indices into `columns`.
#[derive(Debug, Default)]
struct Index {
    base: FastMap<String, usize>,
    variant: FastMap<(String, Kind), usize>,
    tables: FastMap<String, Vec<usize>>,
}

impl LakeSchema {
    fn with(
        format: u32,
        version: u64,
        columns: Vec<ColumnDef>,
        tables: BTreeMap<String, BTreeSet<String>>,
    ) -> LakeSchema {
        LakeSchema {
            format,
            version,
            columns,
            tables,
            index: OnceLock::new(),
        }
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| {
            let mut idx = Index::default();
            let mut by_name: FastMap<&str, usize> = FastMap::default();
            for (i, c) in self.columns.iter().enumerate() {
                if c.variant {
                    idx.variant.entry((c.field.clone(), c.kind)).or_insert(i);
                } else {
                    idx.base.entry(c.field.clone()).or_insert(i);
                }
                by_name.entry(c.name.as_str()).or_insert(i);
            }
            for (table, names) in &self.tables {
                let mut cols: Vec<usize> = names
                    .iter()
                    .filter_map(|n| by_name.get(n.as_str()).copied())
                    .collect();
                cols.sort_unstable();
                idx.tables.insert(table.clone(), cols);
            }
            idx
        })
    }
}

impl Clone for LakeSchema {
    fn clone(&self) -> Self {
        LakeSchema::with(
            self.format,
            self.version,
            self.columns.clone(),
            self.tables.clone(),
        )
    }
}

impl PartialEq for LakeSchema {
    fn eq(&self, other: &Self) -> bool {
        (self.format, self.version, &self.columns, &self.tables)
            == (other.format, other.version, &other.columns, &other.tables)
    }
}

impl Eq for LakeSchema {}

impl Default for LakeSchema {
    fn default() -> Self {
        LakeSchema::with(SCHEMA_FORMAT, 0, Vec::new(), BTreeMap::new())
    }
}

/// Whether two column names are one name to readers that ignore case
/// (Unicode lower case, as Spark's and Hive's resolution compare them).
pub fn same_to_readers(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

/// The table name of an event type and subtype: `type` or `type:subtype`.
pub fn table_name(event_type: &str, event_subtype: Option<&str>) -> String {
    match event_subtype {
        Some(s) => format!("{event_type}:{s}"),
        None => event_type.to_string(),
    }
}

const KINDS: [Kind; 5] = [
    Kind::Bool,
    Kind::Int,
    Kind::Double,
    Kind::String,
    Kind::Json,
];

fn kind_index(k: Kind) -> usize {
    KINDS.iter().position(|x| *x == k).unwrap_or(4)
}

/// Whether a value is stored in a column of kind `col`.
pub fn fits(col: Kind, cell: &Cell<'_>) -> bool {
    match (col, cell) {
        (Kind::Double, Cell::Int(i)) => i.unsigned_abs() <= EXACT_IN_DOUBLE,
        (k, c) => c.kind() == Some(k),
    }
}

/// What a batch holds in one field of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldStats {
    /// Non-null values per kind (bool, int, double, string, json).
    pub counts: [u64; 5],
    /// Whether some integer is too large for a double to hold exactly.
    pub big_int: bool,
}

impl FieldStats {
    /// Counts one value.
    pub fn add(&mut self, cell: &Cell<'_>) {
        let big_int = matches!(cell, Cell::Int(i) if i.unsigned_abs() > EXACT_IN_DOUBLE);
        self.add_kind(cell.kind(), big_int);
    }

    /// Counts one value of this kind (`None`: null); `big_int` when it is an
    /// integer too large for a double to hold exactly.
    pub fn add_kind(&mut self, kind: Option<Kind>, big_int: bool) {
        if let Some(k) = kind {
            self.counts[kind_index(k)] += 1;
        }
        self.big_int |= big_int;
    }

    /// Merges another batch's stats.
    pub fn merge(&mut self, other: &FieldStats) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.big_int |= other.big_int;
    }

    /// The base kind for a new field: double when integers and other numbers
    /// mix, else the most frequent kind (ties to the narrower); `None` when
    /// there is no value.
    pub fn base_kind(&self) -> Option<Kind> {
        let c = self.counts;
        if c[1] > 0 && c[2] > 0 {
            return Some(Kind::Double);
        }
        KINDS
            .iter()
            .zip(c)
            .rev()
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(_, n)| *n)
            .map(|(k, _)| *k)
    }

    /// The kinds that do not fit a base column of kind `base`.
    fn misfits(&self, base: Kind) -> Vec<Kind> {
        KINDS
            .iter()
            .zip(self.counts)
            .filter(|(k, n)| {
                *n > 0
                    && match (base, **k) {
                        (b, k) if b == k => false,
                        (Kind::Double, Kind::Int) => self.big_int,
                        _ => true,
                    }
            })
            .map(|(k, _)| *k)
            .collect()
    }
}

/// A batch's values: table -> field -> stats.
pub type BatchStats = BTreeMap<String, BTreeMap<String, FieldStats>>;

impl LakeSchema {
    /// The base column of a field.
    pub fn base(&self, field: &str) -> Option<&ColumnDef> {
        self.index().base.get(field).map(|&i| &self.columns[i])
    }

    /// The variant column of a field for a kind.
    pub fn variant(&self, field: &str, kind: Kind) -> Option<&ColumnDef> {
        self.index()
            .variant
            .get(&(field.to_string(), kind))
            .map(|&i| &self.columns[i])
    }

    /// `base`, by scanning: for a schema being built (not yet indexed).
    fn base_scan(&self, field: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.field == field && !c.variant)
    }

    /// `variant`, by scanning: for a schema being built.
    fn variant_scan(&self, field: &str, kind: Kind) -> Option<&ColumnDef> {
        self.columns
            .iter()
            .find(|c| c.field == field && c.variant && c.kind == kind)
    }

    /// Whether this version already holds every value of the batch, and lists
    /// every column each table's values go to.
    fn holds(&self, stats: &BatchStats) -> bool {
        stats.iter().all(|(table, fields)| {
            let Some(listed) = self.tables.get(table) else {
                return false;
            };
            fields.iter().all(|(field, s)| match self.base(field) {
                None => s.base_kind().is_none(),
                Some(base) => {
                    listed.contains(&base.name)
                        && s.misfits(base.kind).into_iter().all(|k| {
                            self.variant(field, k)
                                .is_some_and(|v| listed.contains(&v.name))
                        })
                }
            })
        })
    }

    /// The column a value of a field goes to, if the schema has it.
    pub fn route(&self, field: &str, cell: &Cell<'_>) -> Option<&ColumnDef> {
        let kind = cell.kind()?;
        match self.base(field) {
            Some(b) if fits(b.kind, cell) => Some(b),
            _ => self.variant(field, kind),
        }
    }

    /// A column name not yet taken, ignoring case: Spark and Glue (by
    /// default), Athena and DuckDB match column names case-insensitively, so
    /// `userId` and `userid` in one lake break whole-lake reads there. A
    /// later name that clashes (with a column, a fixed column or a partition
    /// column) gets a `_` suffix, as does a field literally named like a
    /// variant column.
    fn free_name(&self, wanted: String, reserved: &[&str]) -> String {
        let mut name = wanted;
        while self.columns.iter().any(|c| same_to_readers(&c.name, &name))
            || reserved.iter().any(|r| same_to_readers(r, &name))
        {
            name.push('_');
        }
        name
    }

    /// The next version needed to hold a batch's values, or `None` when this
    /// version holds them all already. Depends on the values' kinds and
    /// counts only, never on their order.
    pub fn plan(&self, stats: &BatchStats) -> Option<LakeSchema> {
        if self.holds(stats) {
            return None;
        }
        // per field, lake-wide: the batch's stats over all its tables
        let mut fields: BTreeMap<&str, FieldStats> = BTreeMap::new();
        for table in stats.values() {
            for (field, s) in table {
                fields.entry(field).or_default().merge(s);
            }
        }
        let mut next = self.clone();
        next.version = self.version + 1;
        // every file's own columns, and the partition columns readers add
        let reserved: Vec<&str> = crate::core::columns::FIXED_COLUMN_NAMES
            .into_iter()
            .chain([crate::core::columns::PAYLOAD_JSON_COLUMN])
            .chain(crate::core::partition::PARTITION_COLUMNS)
            .collect();
        for (field, s) in &fields {
            if next.base_scan(field).is_none()
                && let Some(kind) = s.base_kind()
            {
                let name = next.free_name((*field).to_string(), &reserved);
                next.columns.push(ColumnDef {
                    name,
                    field: (*field).to_string(),
                    kind,
                    variant: false,
                    since: next.version,
                });
            }
            let Some(base) = next.base_scan(field).map(|b| b.kind) else {
                continue;
            };
            for kind in s.misfits(base) {
                if next.variant_scan(field, kind).is_none() {
                    let name = next.free_name(format!("{field}__v_{}", kind_name(kind)), &reserved);
                    next.columns.push(ColumnDef {
                        name,
                        field: (*field).to_string(),
                        kind,
                        variant: true,
                        since: next.version,
                    });
                }
            }
        }
        // each table lists the columns its values go to
        for (table, table_fields) in stats {
            let mut used: BTreeSet<String> = BTreeSet::new();
            for (field, s) in table_fields {
                let Some(base) = next.base_scan(field) else {
                    continue;
                };
                // the base column is listed even when every value went to variants
                used.insert(base.name.clone());
                for kind in s.misfits(base.kind) {
                    if let Some(v) = next.variant_scan(field, kind) {
                        used.insert(v.name.clone());
                    }
                }
            }
            let entry = next.tables.entry(table.clone()).or_default();
            entry.extend(used);
        }
        if next.columns == self.columns && next.tables == self.tables {
            None
        } else {
            Some(next)
        }
    }

    /// The columns of a table, in schema order.
    pub fn table_columns(&self, table: &str) -> Vec<&ColumnDef> {
        match self.index().tables.get(table) {
            Some(cols) => cols.iter().map(|&i| &self.columns[i]).collect(),
            None => Vec::new(),
        }
    }
}

/// A human description of the schema history: the latest version's tables and
/// columns (each with the version that added it), then what each version
/// added. `table` limits it to one table (`type` or `type:subtype`).
pub fn describe(history: &[LakeSchema], table: Option<&str>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let Some(latest) = history.last() else {
        return "no schema committed yet: ingest some events first\n".into();
    };
    let _ = writeln!(
        out,
        "lake schema version {} ({} columns, {} tables)",
        latest.version,
        latest.columns.len(),
        latest.tables.len()
    );
    for name in latest
        .tables
        .keys()
        .filter(|n| table.is_none_or(|t| t == n.as_str()))
    {
        let _ = writeln!(out, "\ntable {name}");
        let _ = writeln!(out, "  {:<32} {:<7} {:<6} holds", "column", "type", "since");
        for c in latest.table_columns(name) {
            let holds = match (c.variant, c.kind) {
                (true, _) => format!("values of `{}` that do not fit its column", c.field),
                (false, _) if c.name != c.field => {
                    format!("field `{}` (its name, ignoring case, was taken)", c.field)
                }
                (false, Kind::Json) => "JSON text (objects, arrays, huge integers)".to_string(),
                _ => String::new(),
            };
            let ty = match c.kind {
                Kind::Bool => "boolean",
                Kind::Int => "bigint",
                Kind::Double => "double",
                Kind::String | Kind::Json => "string",
            };
            let _ = writeln!(out, "  {:<32} {:<7} v{:<5} {holds}", c.name, ty, c.since);
        }
    }
    let _ = writeln!(out, "\nhistory");
    for v in history {
        let added: Vec<String> = v
            .columns
            .iter()
            .filter(|c| c.since == v.version)
            .map(|c| format!("+{}", c.name))
            .collect();
        let _ = writeln!(
            out,
            "  v{:<5} {} columns, {} tables{}{}",
            v.version,
            v.columns.len(),
            v.tables.len(),
            if added.is_empty() { "" } else { ": " },
            added.join(" ")
        );
    }
    out
}

/// The suffix name of a kind.
pub fn kind_name(k: Kind) -> &'static str {
    k.name()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn stats(values: &[(&str, &str, Cell<'static>)]) -> BatchStats {
        let mut out = BatchStats::new();
        for (table, field, cell) in values {
            out.entry(table.to_string())
                .or_default()
                .entry(field.to_string())
                .or_default()
                .add(cell);
        }
        out
    }

    fn s(v: &'static str) -> Cell<'static> {
        Cell::String(Cow::Borrowed(v))
    }

    #[test]
    fn first_commit_decides_the_base_and_later_misfits_become_variants() {
        let v1 = LakeSchema::default()
            .plan(&stats(&[
                ("t", "amount", Cell::Int(3)),
                ("t", "amount", Cell::Int(4)),
            ]))
            .expect("new field");
        assert_eq!(v1.version, 1);
        assert_eq!(v1.base("amount").map(|c| c.kind), Some(Kind::Int));
        let v2 = v1
            .plan(&stats(&[("u", "amount", Cell::Double(1.5))]))
            .expect("a double does not fit an int column");
        assert_eq!(
            v2.base("amount").map(|c| c.kind),
            Some(Kind::Int),
            "never changes"
        );
        let var = v2.variant("amount", Kind::Double).expect("variant");
        assert_eq!(var.name, "amount__v_double");
        assert_eq!(
            v2.route("amount", &Cell::Double(1.5))
                .map(|c| c.name.as_str()),
            Some("amount__v_double")
        );
        assert_eq!(
            v2.route("amount", &Cell::Int(7)).map(|c| c.name.as_str()),
            Some("amount")
        );
        assert!(v2.tables["u"].contains("amount__v_double"));
    }

    #[test]
    fn ints_fit_a_double_base_unless_too_big() {
        let v1 = LakeSchema::default()
            .plan(&stats(&[("t", "x", Cell::Double(0.5))]))
            .expect("plan");
        assert!(v1.plan(&stats(&[("t", "x", Cell::Int(1 << 53))])).is_none());
        let v2 = v1
            .plan(&stats(&[("t", "x", Cell::Int((1 << 53) + 1))]))
            .expect("a big int needs its own column");
        assert_eq!(
            v2.route("x", &Cell::Int((1 << 53) + 1)).map(|c| c.kind),
            Some(Kind::Int)
        );
    }

    #[test]
    fn planning_is_idempotent_and_ignores_value_order() {
        let vals = [
            ("t", "a", Cell::Int(1)),
            ("t", "a", s("x")),
            ("t", "a", Cell::Int(2)),
            ("t", "b", Cell::Json("{}")),
            ("v", "a", Cell::Bool(true)),
        ];
        let v1 = LakeSchema::default().plan(&stats(&vals)).expect("plan");
        let mut rev = vals.clone();
        rev.reverse();
        assert_eq!(LakeSchema::default().plan(&stats(&rev)), Some(v1.clone()));
        assert_eq!(
            v1.plan(&stats(&vals)),
            None,
            "same values again: nothing to add"
        );
        assert_eq!(v1.plan(&stats(&rev)), None);
    }

    #[test]
    fn a_field_named_like_a_variant_keeps_its_name() {
        let v1 = LakeSchema::default()
            .plan(&stats(&[
                ("t", "x__v_string", Cell::Int(1)),
                ("t", "x", Cell::Int(1)),
            ]))
            .expect("plan");
        let v2 = v1.plan(&stats(&[("t", "x", s("a"))])).expect("variant");
        assert_eq!(
            v2.variant("x", Kind::String).map(|c| c.name.as_str()),
            Some("x__v_string_")
        );
        assert_eq!(v2.base("x__v_string").map(|c| c.kind), Some(Kind::Int));
    }

    #[test]
    fn payload_fields_cannot_take_the_fixed_column_names() {
        let v1 = LakeSchema::default()
            .plan(&stats(&[("t", "event_uuid", s("dup"))]))
            .expect("plan");
        // the payload's own event_uuid never reaches here (it is the event's key),
        // but a name clash with any fixed column is still renamed
        assert_eq!(
            v1.base("event_uuid").map(|c| c.name.as_str()),
            Some("event_uuid_")
        );
    }

    #[test]
    fn names_that_differ_only_in_case_get_columns_of_their_own() {
        let v1 = LakeSchema::default()
            .plan(&stats(&[
                ("t", "userId", s("u1")),
                ("t", "userid", s("u2")),
                ("u", "USERID", Cell::Int(3)),
                ("t", "Event_Type", s("spoof")),
                ("t", "EVENT_UUID", s("not the key")),
                ("t", "Ärger", Cell::Bool(true)),
                ("u", "ärger", Cell::Bool(false)),
            ]))
            .expect("plan");
        let names: Vec<String> = v1.columns.iter().map(|c| c.name.to_lowercase()).collect();
        let unique: BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for fixed in crate::core::columns::FIXED_COLUMN_NAMES
            .into_iter()
            .chain(crate::core::partition::PARTITION_COLUMNS)
        {
            assert!(!unique.contains(&fixed.to_string()), "{fixed} in {names:?}");
        }
        // in byte order, the first spelling keeps its name; each field has its column
        assert_eq!(v1.base("USERID").map(|c| c.name.as_str()), Some("USERID"));
        assert_eq!(v1.base("userId").map(|c| c.name.as_str()), Some("userId_"));
        assert_eq!(v1.base("userid").map(|c| c.name.as_str()), Some("userid__"));
        assert_eq!(v1.base("Ärger").map(|c| c.name.as_str()), Some("Ärger"));
        assert_eq!(v1.base("ärger").map(|c| c.name.as_str()), Some("ärger_"));
        assert_eq!(
            v1.base("Event_Type").map(|c| c.name.as_str()),
            Some("Event_Type_")
        );
        // a variant column of a later spelling is kept apart in the same way
        let v2 = v1
            .plan(&stats(&[
                ("t", "userId", Cell::Int(1)),
                ("t", "userid", Cell::Int(2)),
            ]))
            .expect("variants");
        assert_eq!(
            v2.variant("userId", Kind::Int).map(|c| c.name.as_str()),
            Some("userId__v_int")
        );
        assert_eq!(
            v2.variant("userid", Kind::Int).map(|c| c.name.as_str()),
            Some("userid__v_int_")
        );
    }

    #[test]
    fn only_null_values_add_no_column_but_register_the_table() {
        let v1 = LakeSchema::default()
            .plan(&stats(&[("t", "n", Cell::Null)]))
            .expect("a new table");
        assert!(v1.columns.is_empty());
        assert_eq!(v1.tables.get("t").map(BTreeSet::len), Some(0));
        assert_eq!(v1.plan(&stats(&[("t", "n", Cell::Null)])), None);
    }

    #[test]
    fn schema_documents_round_trip() {
        let v1 = LakeSchema::default()
            .plan(&stats(&[
                ("t", "a", Cell::Int(1)),
                ("t", "b", Cell::Json("[1]")),
            ]))
            .expect("plan");
        let text = serde_json::to_string(&v1).expect("serialise");
        assert!(text.contains(r#""kind":"json""#), "{text}");
        let back: LakeSchema = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, v1);
    }
}
