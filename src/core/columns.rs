//! The lake's fixed columns: the ones every data file starts with, before
//! the payload's; and the optional raw-JSON column. One definition for the
//! encoder, the schema's reserved names, the summary file, the Athena DDL
//! and (through `kinesis-lake ddl`) the template's Glue table test.

use crate::core::value::Kind;

/// A column every data file carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedColumn {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
}

/// The columns every data file starts with, in order: the event's own fields
/// and the derived `created_datetime`.
pub const FIXED_COLUMNS: [FixedColumn; 4] = [
    FixedColumn {
        name: "event_uuid",
        kind: Kind::String,
    },
    FixedColumn {
        name: "event_name",
        kind: Kind::String,
    },
    FixedColumn {
        name: "created_at",
        kind: Kind::Double,
    },
    FixedColumn {
        name: "created_datetime",
        kind: Kind::String,
    },
];

/// The names of [`FIXED_COLUMNS`], in order.
pub const FIXED_COLUMN_NAMES: [&str; 4] = [
    FIXED_COLUMNS[0].name,
    FIXED_COLUMNS[1].name,
    FIXED_COLUMNS[2].name,
    FIXED_COLUMNS[3].name,
];

/// The name of the optional column with each event's JSON as received.
pub const PAYLOAD_JSON_COLUMN: &str = "payload_json";
