//! Avro object container files, as Iceberg's manifests and manifest lists
//! are stored: a writer for the two schemas this project writes (records
//! encoded by the caller, one uncompressed block), and a reader driven by
//! the file's own schema, for manifest lists that other engines wrote (Glue's
//! compaction, Athena, Spark), with the codecs they use (null, deflate,
//! snappy, zstandard).
//!
//! Avro's binary encoding: `int` and `long` are zig-zag varints, `bytes` and
//! `string` a long length then the bytes, a union the branch index then the
//! value, arrays and maps blocks of items ending with a zero count.

use std::collections::HashMap;
use std::io::Read as _;

use serde_json::Value as Json;

/// The magic bytes every Avro object container file starts with.
const MAGIC: &[u8; 4] = b"Obj\x01";

/// An Avro file that cannot be read: what is wrong, at which byte.
#[derive(Debug, thiserror::Error)]
#[error("not a readable Avro file: {message} (at byte {at})")]
pub struct AvroError {
    message: String,
    at: usize,
}

/// Appends a `long` (or an `int`): zig-zag, then 7 bits a byte.
pub fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Appends `bytes` or a `string`.
pub fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    put_long(out, v.len() as i64);
    out.extend_from_slice(v);
}

/// Appends a `boolean`.
pub fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}

/// Appends a `["null", T]` union: the branch, and the value through `put`
/// when there is one.
pub fn put_optional<T>(out: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => put_long(out, 0),
        Some(v) => {
            put_long(out, 1);
            put(out, v);
        }
    }
}

/// Appends an array of items in one block (none: just the end marker).
pub fn put_array<T>(out: &mut Vec<u8>, items: &[T], mut put: impl FnMut(&mut Vec<u8>, &T)) {
    if !items.is_empty() {
        put_long(out, items.len() as i64);
        for item in items {
            put(out, item);
        }
    }
    put_long(out, 0);
}

/// An Avro object container file of already-encoded records: the header
/// (schema, codec `null`, the caller's metadata), one block, and a sync
/// marker derived from the content, so the same records make the same bytes.
pub fn container(schema: &str, metadata: &[(&str, &[u8])], records: &[Vec<u8>]) -> Vec<u8> {
    let body_len: usize = records.iter().map(Vec::len).sum();
    let sync = crate::core::window::content_hash(
        std::iter::once(schema.as_bytes()).chain(records.iter().map(Vec::as_slice)),
    );
    let mut marker = [0u8; 16];
    marker[..8].copy_from_slice(&sync.to_le_bytes());
    marker[8..].copy_from_slice(&(!sync).to_le_bytes());
    let mut out = Vec::with_capacity(body_len + schema.len() + 256);
    out.extend_from_slice(MAGIC);
    let entries: Vec<(&str, &[u8])> = [("avro.schema", schema.as_bytes()), ("avro.codec", b"null")]
        .into_iter()
        .chain(metadata.iter().copied())
        .collect();
    put_array(&mut out, &entries, |out, (k, v)| {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v);
    });
    out.extend_from_slice(&marker);
    if !records.is_empty() {
        put_long(&mut out, records.len() as i64);
        put_long(&mut out, body_len as i64);
        for r in records {
            out.extend_from_slice(r);
        }
        out.extend_from_slice(&marker);
    }
    out
}

/// A decoded Avro value (a union decodes to its branch's value; `int` and
/// `long` are both `Long`, `float` and `double` both `Double`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// null
    Null,
    /// boolean
    Bool(bool),
    /// int or long
    Long(i64),
    /// float or double
    Double(f64),
    /// bytes or fixed
    Bytes(Vec<u8>),
    /// string or enum symbol
    String(String),
    /// array
    Array(Vec<Value>),
    /// map
    Map(Vec<(String, Value)>),
    /// record: its fields by name, in order
    Record(Vec<(String, Value)>),
}

impl Value {
    /// A record's field, if this is a record that has it.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn long(&self) -> Option<i64> {
        match self {
            Value::Long(v) => Some(*v),
            _ => None,
        }
    }
}

/// A schema, resolved: named types referenced by name are inlined.
#[derive(Debug, Clone)]
enum Schema {
    Null,
    Bool,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(usize),
    Enum(Vec<String>),
    Array(Box<Schema>),
    Map(Box<Schema>),
    Union(Vec<Schema>),
    Record(Vec<(String, Schema)>),
}

fn parse_schema(j: &Json, named: &mut HashMap<String, Schema>) -> Result<Schema, String> {
    match j {
        Json::String(name) => primitive(name)
            .or_else(|| named.get(name.as_str()).cloned())
            .ok_or_else(|| format!("unknown type {name:?}")),
        Json::Array(branches) => Ok(Schema::Union(
            branches
                .iter()
                .map(|b| parse_schema(b, named))
                .collect::<Result<_, _>>()?,
        )),
        Json::Object(o) => {
            let ty = o.get("type").ok_or("a schema object without \"type\"")?;
            let name = o.get("name").and_then(Json::as_str).unwrap_or_default();
            let schema = match ty.as_str() {
                Some("record" | "error") => {
                    let mut fields = Vec::new();
                    for f in o
                        .get("fields")
                        .and_then(Json::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let fname = f
                            .get("name")
                            .and_then(Json::as_str)
                            .ok_or("a field without a name")?;
                        let fty = f.get("type").ok_or("a field without a type")?;
                        fields.push((fname.to_string(), parse_schema(fty, named)?));
                    }
                    Schema::Record(fields)
                }
                Some("enum") => Schema::Enum(
                    o.get("symbols")
                        .and_then(Json::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect(),
                ),
                Some("array") => Schema::Array(Box::new(parse_schema(
                    o.get("items").ok_or("an array without items")?,
                    named,
                )?)),
                Some("map") => Schema::Map(Box::new(parse_schema(
                    o.get("values").ok_or("a map without values")?,
                    named,
                )?)),
                Some("fixed") => Schema::Fixed(
                    o.get("size")
                        .and_then(Json::as_u64)
                        .ok_or("a fixed without a size")? as usize,
                ),
                // a primitive with attributes (a logical type, say)
                _ => parse_schema(ty, named)?,
            };
            if !name.is_empty() {
                // by full name and by short name: references use either
                named.insert(name.to_string(), schema.clone());
                if let Some(short) = name.rsplit('.').next() {
                    named.insert(short.to_string(), schema.clone());
                }
            }
            Ok(schema)
        }
        other => Err(format!("not a schema: {other}")),
    }
}

fn primitive(name: &str) -> Option<Schema> {
    Some(match name {
        "null" => Schema::Null,
        "boolean" => Schema::Bool,
        "int" | "long" => Schema::Long,
        "float" => Schema::Float,
        "double" => Schema::Double,
        "bytes" => Schema::Bytes,
        "string" => Schema::String,
        _ => return None,
    })
}

/// A cursor over encoded bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, message: impl Into<String>) -> AvroError {
        AvroError {
            message: message.into(),
            at: self.at,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], AvroError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| self.err(format!("{n} bytes past the end")))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn long(&mut self) -> Result<i64, AvroError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
            }
        }
        Err(self.err("a varint longer than 10 bytes"))
    }

    fn len(&mut self) -> Result<usize, AvroError> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| self.err(format!("a negative length {n}")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], AvroError> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, AvroError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("a string that is not UTF-8"))
    }

    /// The items of an array or map, block by block (a negative count is
    /// followed by the block's size).
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), AvroError>,
    ) -> Result<(), AvroError> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                self.long()?;
            }
            for _ in 0..count.unsigned_abs() {
                item(self)?;
            }
        }
    }

    fn value(&mut self, schema: &Schema) -> Result<Value, AvroError> {
        Ok(match schema {
            Schema::Null => Value::Null,
            Schema::Bool => Value::Bool(self.take(1)?[0] != 0),
            Schema::Long => Value::Long(self.long()?),
            Schema::Float => {
                let b = self.take(4)?;
                Value::Double(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            Schema::Double => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Double(f64::from_le_bytes(a))
            }
            Schema::Bytes => Value::Bytes(self.bytes()?.to_vec()),
            Schema::String => Value::String(self.string()?),
            Schema::Fixed(n) => Value::Bytes(self.take(*n)?.to_vec()),
            Schema::Enum(symbols) => {
                let i = self.len()?;
                let s = symbols
                    .get(i)
                    .ok_or_else(|| self.err(format!("enum index {i}")))?;
                Value::String(s.clone())
            }
            Schema::Array(items) => {
                let mut out = Vec::new();
                self.blocks(|c| {
                    out.push(c.value(items)?);
                    Ok(())
                })?;
                Value::Array(out)
            }
            Schema::Map(values) => {
                let mut out = Vec::new();
                self.blocks(|c| {
                    let k = c.string()?;
                    out.push((k, c.value(values)?));
                    Ok(())
                })?;
                Value::Map(out)
            }
            Schema::Union(branches) => {
                let i = self.len()?;
                let branch = branches
                    .get(i)
                    .ok_or_else(|| self.err(format!("union branch {i}")))?;
                self.value(branch)?
            }
            Schema::Record(fields) => Value::Record(
                fields
                    .iter()
                    .map(|(name, s)| Ok((name.clone(), self.value(s)?)))
                    .collect::<Result<_, AvroError>>()?,
            ),
        })
    }
}

/// A container file's metadata: key to value.
pub type Metadata = HashMap<String, Vec<u8>>;

/// The records of an Avro object container file, decoded with the file's
/// own schema, and its metadata.
pub fn read_container(bytes: &[u8]) -> Result<(Vec<Value>, Metadata), AvroError> {
    let mut c = Cursor { bytes, at: 0 };
    if c.take(4)? != MAGIC {
        return Err(c.err("no Avro magic"));
    }
    let mut metadata = HashMap::new();
    c.blocks(|c| {
        let k = c.string()?;
        metadata.insert(k, c.bytes()?.to_vec());
        Ok(())
    })?;
    let marker = c.take(16)?;
    let schema_json: Json = metadata
        .get("avro.schema")
        .and_then(|s| serde_json::from_slice(s).ok())
        .ok_or_else(|| c.err("no readable avro.schema"))?;
    let schema = parse_schema(&schema_json, &mut HashMap::new()).map_err(|m| c.err(m))?;
    let codec = metadata
        .get("avro.codec")
        .map_or("null", |v| std::str::from_utf8(v).unwrap_or("?"))
        .to_string();
    let mut records = Vec::new();
    while c.at < bytes.len() {
        let count = c.len()?;
        let block = c.bytes()?;
        let data = decompress(&codec, block).map_err(|m| c.err(m))?;
        let mut inner = Cursor {
            bytes: &data,
            at: 0,
        };
        for _ in 0..count {
            records.push(inner.value(&schema)?);
        }
        if c.take(16)? != marker {
            return Err(c.err("a block without the file's sync marker"));
        }
    }
    Ok((records, metadata))
}

fn decompress(codec: &str, block: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match codec {
        "null" => out.extend_from_slice(block),
        "deflate" => {
            flate2::read::DeflateDecoder::new(block)
                .read_to_end(&mut out)
                .map_err(|e| format!("a deflate block: {e}"))?;
        }
        "snappy" => {
            // the block ends with the CRC-32 of the uncompressed bytes
            let body = &block[..block.len().saturating_sub(4)];
            out = snap::raw::Decoder::new()
                .decompress_vec(body)
                .map_err(|e| format!("a snappy block: {e}"))?;
        }
        "zstandard" => {
            out = zstd::stream::decode_all(block).map_err(|e| format!("a zstandard block: {e}"))?;
        }
        other => return Err(format!("codec {other:?} is not supported")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type":"record","name":"r","fields":[
        {"name":"n","type":"long"},
        {"name":"s","type":["null","string"]},
        {"name":"a","type":{"type":"array","items":{"type":"record","name":"kv","fields":[
            {"name":"key","type":"int"},{"name":"value","type":"bytes"}]}}},
        {"name":"b","type":"boolean"}]}"#;

    fn record(n: i64, s: Option<&str>, kv: &[(i32, &[u8])], b: bool) -> Vec<u8> {
        let mut out = Vec::new();
        put_long(&mut out, n);
        put_optional(&mut out, s, |o, s| put_bytes(o, s.as_bytes()));
        put_array(&mut out, kv, |o, (k, v)| {
            put_long(o, i64::from(*k));
            put_bytes(o, v);
        });
        put_bool(&mut out, b);
        out
    }

    #[test]
    fn what_the_writer_writes_the_reader_reads_back() {
        let records = vec![
            record(0, None, &[], false),
            record(-1, Some("é"), &[(7, b"x"), (-300, b"")], true),
            record(i64::MAX, Some(""), &[(i32::MIN, &[0, 255])], false),
            record(i64::MIN, None, &[], true),
        ];
        let file = container(SCHEMA, &[("k", b"v")], &records);
        let (values, meta) = read_container(&file).expect("read");
        assert_eq!(meta.get("k").map(Vec::as_slice), Some(&b"v"[..]));
        assert_eq!(values.len(), 4);
        assert_eq!(values[1].field("n"), Some(&Value::Long(-1)));
        assert_eq!(values[1].field("s"), Some(&Value::String("é".into())));
        assert_eq!(values[0].field("s"), Some(&Value::Null));
        assert_eq!(values[2].field("n"), Some(&Value::Long(i64::MAX)));
        assert_eq!(values[3].field("n"), Some(&Value::Long(i64::MIN)));
        assert_eq!(values[3].field("b"), Some(&Value::Bool(true)));
        let Some(Value::Array(kv)) = values[1].field("a") else {
            panic!("array expected");
        };
        assert_eq!(kv[1].field("key"), Some(&Value::Long(-300)));
        assert_eq!(kv[0].field("value"), Some(&Value::Bytes(b"x".to_vec())));
        // the same records make the same bytes
        assert_eq!(file, container(SCHEMA, &[("k", b"v")], &records));
    }

    #[test]
    fn a_deflated_block_of_another_writer_is_read() {
        use std::io::Write as _;
        let raw = record(42, Some("deflated"), &[], true);
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&raw).expect("deflate");
        let packed = enc.finish().expect("deflate");
        let mut file = Vec::from(&MAGIC[..]);
        let meta: [(&str, &[u8]); 2] = [
            ("avro.schema", SCHEMA.as_bytes()),
            ("avro.codec", b"deflate"),
        ];
        // a map block with a negative count and its size, as Java writes them
        let mut entries = Vec::new();
        for (k, v) in meta {
            put_bytes(&mut entries, k.as_bytes());
            put_bytes(&mut entries, v);
        }
        put_long(&mut file, -2);
        put_long(&mut file, entries.len() as i64);
        file.extend_from_slice(&entries);
        put_long(&mut file, 0);
        file.extend_from_slice(&[9u8; 16]);
        put_long(&mut file, 1);
        put_bytes(&mut file, &packed);
        file.extend_from_slice(&[9u8; 16]);
        let (values, _) = read_container(&file).expect("read");
        assert_eq!(
            values[0].field("s"),
            Some(&Value::String("deflated".into()))
        );
    }

    #[test]
    fn a_truncated_file_is_an_error_not_a_panic() {
        let file = container(SCHEMA, &[], &[record(5, Some("abc"), &[], true)]);
        for cut in 0..file.len() {
            // cut right after the header, it is a file of no records
            let read = read_container(&file[..cut]);
            assert!(read.map_or(true, |(v, _)| v.is_empty()), "cut at {cut}");
        }
    }
}
