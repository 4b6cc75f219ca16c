//! The value model: the kind of a payload value ([`Kind`]), a classified
//! value ([`Cell`]), and the two ways of taking them from raw JSON: by first
//! bytes for the schema's statistics ([`kind_of`]) and fully for encoding
//! ([`classify`]). Used by the schema (which column a value fits) and the
//! encoder (how it is written); depends on neither.

use std::borrow::Cow;

use serde_json::value::RawValue;

/// The kind of one payload value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// true / false
    Bool,
    /// An integer that fits in i64.
    Int,
    /// Any other finite number.
    Double,
    /// A JSON string.
    String,
    /// An object, array, or an integer beyond 64 bits: kept as JSON text.
    Json,
}

impl Kind {
    /// The suffix of a variant column of this kind.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Double => "double",
            Kind::String => "string",
            Kind::Json => "json",
        }
    }
}

/// One classified payload value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// JSON null.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// Another finite number.
    Double(f64),
    /// A string, unescaped.
    String(Cow<'a, str>),
    /// JSON text as sent.
    Json(&'a str),
}

impl Cell<'_> {
    /// The kind, or `None` for null.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Cell::Null => None,
            Cell::Bool(_) => Some(Kind::Bool),
            Cell::Int(_) => Some(Kind::Int),
            Cell::Double(_) => Some(Kind::Double),
            Cell::String(_) => Some(Kind::String),
            Cell::Json(_) => Some(Kind::Json),
        }
    }
}

/// Classifies one raw JSON value.
pub fn classify(raw: &RawValue) -> Cell<'_> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Cell::Null,
        Some(b't') => Cell::Bool(true),
        Some(b'f') => Cell::Bool(false),
        Some(b'"') => {
            let inner = &text[1..text.len() - 1];
            if inner.contains('\\') {
                match serde_json::from_str::<String>(text) {
                    Ok(s) => Cell::String(Cow::Owned(s)),
                    // cannot happen for a RawValue; keep the text rather than lose it
                    Err(_) => Cell::Json(text),
                }
            } else {
                Cell::String(Cow::Borrowed(inner))
            }
        }
        Some(b'{' | b'[') => Cell::Json(text),
        _ => {
            let integer = !text.contains(['.', 'e', 'E']);
            if integer {
                match text.parse::<i64>() {
                    Ok(i) => Cell::Int(i),
                    Err(_) => Cell::Json(text),
                }
            } else {
                match text.parse::<f64>() {
                    Ok(f) if f.is_finite() => Cell::Double(f),
                    _ => Cell::Json(text),
                }
            }
        }
    }
}

/// Largest integer magnitude a double holds exactly.
pub const EXACT_IN_DOUBLE: u64 = 1 << 53;

/// The kind of one raw JSON value (`None` for null) and whether it is an
/// integer too large for a double to hold exactly: what the schema's
/// statistics need, without building the value. It agrees with [`classify`]
/// (a test holds them together), mostly from the first byte: only integers of
/// more than 15 digits and numbers with an exponent are parsed.
pub fn kind_of(raw: &RawValue) -> (Option<Kind>, bool) {
    let b = raw.get().as_bytes();
    match b.first() {
        Some(b'n') => (None, false),
        Some(b't' | b'f') => (Some(Kind::Bool), false),
        Some(b'"') => (Some(Kind::String), false),
        Some(b'{' | b'[') => (Some(Kind::Json), false),
        _ => {
            let exponent = b.iter().any(|c| matches!(c, b'e' | b'E'));
            if !exponent && !b.contains(&b'.') {
                // below 10^15 < 2^53: an i64 that a double holds exactly
                if b.len() - usize::from(b.first() == Some(&b'-')) <= 15 {
                    return (Some(Kind::Int), false);
                }
                return match raw.get().parse::<i64>() {
                    Ok(i) => (Some(Kind::Int), i.unsigned_abs() > EXACT_IN_DOUBLE),
                    Err(_) => (Some(Kind::Json), false),
                };
            }
            // without an exponent, fewer than 300 characters stay below 10^300
            if !exponent && b.len() < 300 {
                return (Some(Kind::Double), false);
            }
            match raw.get().parse::<f64>() {
                Ok(f) if f.is_finite() => (Some(Kind::Double), false),
                _ => (Some(Kind::Json), false),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_of_agrees_with_classify() {
        // the schema is planned from kind_of and the values routed by classify:
        // a disagreement would leave a value without a column
        let values = [
            "null",
            "true",
            "false",
            r#""plain""#,
            r#""esc\"aped\u00e9""#,
            r#""""#,
            "{}",
            r#"{"a":[1,2]}"#,
            "[]",
            "0",
            "-0",
            "7",
            "-42",
            "999999999999999",
            "-999999999999999",
            "9007199254740992",
            "9007199254740993",
            "-9007199254740993",
            "1000000000000000",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "1.5",
            "-0.0",
            "0.1",
            "1e3",
            "1E3",
            "-2.5e-3",
            "1e308",
            "1e309",
            "-1e400",
            "1.7976931348623157e308",
        ];
        let long_decimal = format!("1{}.5", "0".repeat(310));
        let long_int = "1".repeat(400);
        for text in values
            .iter()
            .copied()
            .chain([long_decimal.as_str(), long_int.as_str()])
        {
            let raw: &RawValue = serde_json::from_str(text).expect("valid JSON");
            let cell = classify(raw);
            let big = matches!(cell, Cell::Int(i) if i.unsigned_abs() > EXACT_IN_DOUBLE);
            assert_eq!(kind_of(raw), (cell.kind(), big), "value {text}");
        }
    }
}
