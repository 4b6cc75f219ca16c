//! Why a record cannot become a lake event. Every rejection is counted, logged
//! and kept in the dead-letter area with its original bytes; none is an error
//! of the batch.

/// At most this many bytes decompressed before a gzip input breaks off are
/// kept in its dead letter ([`Reject::CorruptInput`]).
pub const MAX_KEPT_BYTES: usize = 1 << 20;

/// The sentence of [`Reject::CorruptInput`].
fn corrupt_input(at_byte: u64, line: u64, cause: &str, kept: usize, document: bool) -> String {
    let (lost, kept_what) = if document {
        (
            "the file is a Kinesis event document, so none of its records could be read"
                .to_string(),
            "the first bytes of the document",
        )
    } else {
        (
            "the lines before it were ingested".to_string(),
            "the start of that line",
        )
    };
    format!(
        "the input file is gzip-compressed but its stream breaks off after {at_byte} compressed bytes, in line {line} of the decompressed text ({cause}): {lost}; this dead letter keeps {kept_what} ({kept} bytes decompressed before the break, at most {MAX_KEPT_BYTES}), what follows could not be decoded. Re-fetch or repair the file and ingest it again"
    )
}

/// The reason a record was rejected. `Display` is the human sentence stored in
/// the dead letter (`reason`); [`Reject::code`] is a stable machine code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    /// Data starts with the gzip magic bytes but does not inflate.
    #[error("record data looks gzip-compressed but does not decompress: {0}")]
    Gzip(String),
    /// Kinesis record data that is not base64: Lambda sends every record's
    /// data base64-encoded, so the producer's bytes cannot be recovered.
    #[error(
        "record data is not base64 ({0}); Lambda delivers a Kinesis record's data base64-encoded, so the producer's bytes cannot be recovered: the dead letter keeps the text as it was in the document"
    )]
    NotBase64(String),
    /// A KPL-aggregated record that fails a check of its format (MD5, the
    /// protobuf message, an index into its key tables): the whole aggregate
    /// is dead-lettered, none of its user records is used.
    #[error(
        "record data is a KPL aggregate (magic F3 89 9A C2) that cannot be unpacked: {0}; none of its user records was used, and this dead letter keeps the whole aggregate"
    )]
    BadAggregate(String),
    /// An input file's gzip stream breaks off (truncated or corrupt): what
    /// follows the break cannot be decompressed.
    #[error(
        "{}",
        corrupt_input(*.at_byte, *.line, .cause, *.kept, *.document)
    )]
    CorruptInput {
        /// Compressed bytes of the file the decoder had read when it broke.
        at_byte: u64,
        /// 1-based line of the decompressed text in which it broke.
        line: u64,
        /// The decoder's error.
        cause: String,
        /// Bytes decompressed before the break that the dead letter keeps
        /// (at most [`MAX_KEPT_BYTES`]).
        kept: usize,
        /// The file is a Kinesis event document (its records are lost with it).
        document: bool,
    },
    /// Decompressed data exceeds the size limit.
    #[error("record data decompresses to more than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Data is not valid JSON (or not UTF-8).
    #[error("record data is not valid JSON: {0}")]
    InvalidJson(String),
    /// JSON but not an object.
    #[error("record data is JSON but not an object (found {0}); expected one event object")]
    NotAnObject(&'static str),
    /// A required field is absent (or null).
    #[error("required field `{0}` is missing")]
    Missing(&'static str),
    /// A required field has the wrong JSON type.
    #[error("field `{field}` is {found}; expected {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What the contract wants.
        expected: &'static str,
        /// What the record had.
        found: String,
    },
    /// `event_uuid` is an empty string.
    #[error("field `event_uuid` is an empty string")]
    EmptyUuid,
    /// `event_name` has an empty first part.
    #[error("field `event_name` ({0:?}) has an empty event type (the part before the first ':')")]
    EmptyEventType(String),
    /// A name part is too long to be a partition folder name.
    #[error(
        "field `event_name`: the {part} {value:?} is {len} bytes once escaped; at most {max} fit a partition folder name"
    )]
    NamePartTooLong {
        /// `event type` or `event subtype`.
        part: &'static str,
        /// The first characters of the value.
        value: String,
        /// Escaped length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `created_at` is too large for the configured unit and looks like a
    /// finer one (milliseconds sent where seconds were expected).
    #[error(
        "field `created_at` is {value}, which looks like {unit} since 1970; expected Unix {expected} (divide by {divisor}). If this producer always sends {unit}, set the created_at unit to {setting} (--created-at-unit {setting}, CREATED_AT_UNIT={setting}) and replay the dead letters (kinesis-lake replay --created-at-unit {setting})"
    )]
    CreatedAtNotSeconds {
        /// The value as sent.
        value: String,
        /// What it looks like: `milliseconds`, `microseconds` or `nanoseconds`.
        unit: &'static str,
        /// The setting of that unit: `ms`, `us` or `ns`.
        setting: &'static str,
        /// The configured unit's name (`seconds` by default).
        expected: &'static str,
        /// What to divide by.
        divisor: u64,
    },
    /// `created_at` is outside the accepted range (after conversion to seconds).
    #[error(
        "field `created_at` is {value} (Unix {unit}), outside the accepted range: from 0001-01-01 ({min} s) up to, not including, 5138-11-16 ({max} s)"
    )]
    CreatedAtOutOfRange {
        /// The value as sent.
        value: String,
        /// The configured unit's name.
        unit: &'static str,
        /// Lowest accepted value, seconds.
        min: i64,
        /// Highest accepted value (exclusive), seconds.
        max: i64,
    },
}

impl Reject {
    /// A stable snake_case code, for grouping dead letters and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Reject::Gzip(_) => "bad_gzip",
            Reject::NotBase64(_) => "not_base64",
            Reject::BadAggregate(_) => "bad_aggregate",
            Reject::CorruptInput { .. } => "corrupt_input",
            Reject::TooLarge { .. } => "too_large",
            Reject::InvalidJson(_) => "invalid_json",
            Reject::NotAnObject(_) => "not_an_object",
            Reject::Missing(_) => "missing_field",
            Reject::WrongType { .. } => "wrong_type",
            Reject::EmptyUuid => "empty_event_uuid",
            Reject::EmptyEventType(_) => "empty_event_type",
            Reject::NamePartTooLong { .. } => "name_part_too_long",
            Reject::CreatedAtNotSeconds { .. } => "created_at_not_seconds",
            Reject::CreatedAtOutOfRange { .. } => "created_at_out_of_range",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_input_says_where_its_stream_broke() {
        let r = Reject::CorruptInput {
            at_byte: 4096,
            line: 17,
            cause: "unexpected end of file".into(),
            kept: 12,
            document: false,
        };
        let s = r.to_string();
        assert_eq!(r.code(), "corrupt_input");
        for part in [
            "after 4096 compressed bytes",
            "in line 17",
            "unexpected end of file",
            "12 bytes",
        ] {
            assert!(s.contains(part), "{part} missing: {s}");
        }
    }
}
