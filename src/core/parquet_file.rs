//! A Parquet file writer for the lake's flat files: columns of booleans,
//! 64-bit integers, doubles and UTF-8 strings, built value by value and
//! written as PLAIN data pages (v1) with RLE definition levels (string chunks
//! of few distinct values as a dictionary page and indices), column-chunk
//! statistics and a Thrift footer.
//!
//! Why not the `parquet` crate's writer: a Lambda batch at the starting load
//! writes ~100 files of ~30 rows each, and `ArrowWriter` sets up per file and
//! per column a page writer and a codec with fresh zstd compression *and*
//! decompression contexts; that set-up cost more than parsing the JSON
//! (BENCHMARKS.md). Here one compression context per thread is reused for every
//! page of every file, values go straight from the events into page bytes,
//! and a file costs a few microseconds beyond its data. The `parquet` crate
//! still reads every file back in the tests, and DuckDB, pyarrow and Spark read
//! whole lakes of them in `tests/readers`.

use std::cell::RefCell;

/// How data pages are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is.
    Uncompressed,
    /// Snappy (raw block format, as Parquet specifies).
    Snappy,
    /// Zstandard at a level: 1..=22, or the fast levels -1..=-7 (faster and
    /// larger still; every reader decodes them like any zstd frame).
    Zstd(i32),
    /// Chosen per column chunk by the size of its first page: zstd(1) from
    /// `zstd_from` bytes, snappy below. zstd's per-block entropy tables cost
    /// more time than they save on the small chunks of Lambda-shaped batches,
    /// for ~30 % more bytes there (BENCHMARKS.md: why it is not the default).
    /// `parse("auto")` gives [`Codec::AUTO`].
    Auto {
        /// First pages of at least this many bytes are compressed with zstd(1).
        zstd_from: usize,
    },
}

/// Where [`Codec::Auto`] switches from snappy to zstd(1), chosen by measurement
/// on Lambda-shaped and CLI-shaped batches (BENCHMARKS.md).
pub const AUTO_ZSTD_FROM: usize = 2048;

impl Codec {
    /// `auto`: [`Codec::Auto`] switching at [`AUTO_ZSTD_FROM`].
    pub const AUTO: Codec = Codec::Auto {
        zstd_from: AUTO_ZSTD_FROM,
    };

    /// Parses `auto`, `none`, `snappy`, `zstd` or `zstd(N)`.
    pub fn parse(s: &str) -> Result<Codec, String> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => return Ok(Codec::AUTO),
            "none" | "uncompressed" => return Ok(Codec::Uncompressed),
            "snappy" => return Ok(Codec::Snappy),
            "zstd" => return Ok(Codec::Zstd(1)),
            _ => {}
        }
        if let Some(level) = t.strip_prefix("zstd(").and_then(|r| r.strip_suffix(')')) {
            return match level.parse::<i32>() {
                Ok(l) if (1..=22).contains(&l) || (-7..=-1).contains(&l) => Ok(Codec::Zstd(l)),
                _ => Err(format!(
                    "zstd level `{level}` is not a number from 1 to 22 (or a fast level from -1 to -7); use e.g. zstd(1)"
                )),
            };
        }
        Err(format!(
            "unknown codec `{s}`: use auto, none, snappy, zstd or zstd(N) with N from 1 to 22"
        ))
    }

    /// The codec of a column chunk whose first page has `first_page` bytes
    /// before compression: never `Auto`.
    fn for_chunk(self, first_page: usize) -> Codec {
        match self {
            _ if first_page < MIN_COMPRESSED_PAGE => Codec::Uncompressed,
            Codec::Auto { zstd_from } if first_page < zstd_from => Codec::Snappy,
            Codec::Auto { .. } => Codec::Zstd(1),
            c => c,
        }
    }

    /// The Parquet `CompressionCodec` number.
    fn thrift_id(self) -> i32 {
        match self {
            Codec::Uncompressed => 0,
            Codec::Snappy => 1,
            // a chunk's codec is resolved by `for_chunk` before it is written;
            // `Auto` never reaches a file
            Codec::Zstd(_) | Codec::Auto { .. } => 6,
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Codec::Uncompressed => f.write_str("none"),
            Codec::Snappy => f.write_str("snappy"),
            Codec::Zstd(l) => write!(f, "zstd({l})"),
            Codec::Auto { zstd_from } if *zstd_from == AUTO_ZSTD_FROM => f.write_str("auto"),
            Codec::Auto { zstd_from } => write!(f, "auto(zstd from {zstd_from} B)"),
        }
    }
}

/// A compressor failed (out of memory, or a zstd level it refused).
#[derive(Debug, thiserror::Error)]
#[error("compressing a {codec} page of {bytes} bytes failed: {source}")]
pub struct CompressError {
    codec: Codec,
    bytes: usize,
    #[source]
    source: std::io::Error,
}

/// Uncompressed bytes at which a column's page is cut.
const PAGE_BYTES: usize = 1 << 20;
/// String statistics longer than this are left out (as other writers truncate
/// or drop them): a min or max is only useful for short values.
const MAX_STAT_BYTES: usize = 64;

/// The physical type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// BOOLEAN
    Bool,
    /// INT64
    Int64,
    /// DOUBLE
    Double,
    /// BYTE_ARRAY annotated as a UTF-8 string
    String,
}

impl ColumnType {
    /// Whether plain-encoded value `a` orders before `b` in this type's
    /// order (strings: by UTF-8 bytes, which is by code point).
    fn less(self, a: &[u8], b: &[u8]) -> bool {
        let f64_of = |v: &[u8]| v.try_into().map(f64::from_le_bytes).unwrap_or(f64::NAN);
        let i64_of = |v: &[u8]| v.try_into().map(i64::from_le_bytes).unwrap_or(0);
        match self {
            ColumnType::Bool | ColumnType::String => a < b,
            ColumnType::Int64 => i64_of(a) < i64_of(b),
            ColumnType::Double => f64_of(a).total_cmp(&f64_of(b)).is_lt(),
        }
    }

    fn thrift_id(self) -> i32 {
        match self {
            ColumnType::Bool => 0,
            ColumnType::Int64 => 2,
            ColumnType::Double => 5,
            ColumnType::String => 6,
        }
    }
}

enum Data {
    Bool(Vec<bool>),
    Int64(Vec<i64>),
    Double(Vec<f64>),
    /// PLAIN byte arrays: 4-byte little-endian length, then the bytes.
    String(Vec<u8>),
}

/// A value range, for the statistics.
enum MinMax {
    None,
    Bool(bool, bool),
    Int64(i64, i64),
    Double(f64, f64),
    /// Offsets and lengths of the min and max strings in the data.
    String((usize, usize), (usize, usize)),
}

/// Where a page ends: rows, values and data bytes so far.
#[derive(Clone, Copy, Default)]
struct Cut {
    rows: usize,
    values: usize,
    bytes: usize,
}

/// One column of one row group, filled row by row.
pub struct Column {
    name: String,
    ty: ColumnType,
    required: bool,
    /// One entry per row of an optional column: whether it has a value.
    defined: Vec<bool>,
    rows: usize,
    /// The rows the column was made for: string data grows once for them.
    planned_rows: usize,
    values: usize,
    data: Data,
    minmax: MinMax,
    cuts: Vec<Cut>,
    page_start: usize,
}

/// The most a string column reserves ahead for its coming rows.
const MAX_STRING_RESERVE: usize = 16 << 20;

impl Column {
    /// An empty column; `capacity` rows and `data_bytes` bytes of string data
    /// are reserved.
    pub fn new(
        name: &str,
        ty: ColumnType,
        required: bool,
        capacity: usize,
        data_bytes: usize,
    ) -> Column {
        let data = match ty {
            ColumnType::Bool => Data::Bool(Vec::with_capacity(capacity)),
            ColumnType::Int64 => Data::Int64(Vec::with_capacity(capacity)),
            ColumnType::Double => Data::Double(Vec::with_capacity(capacity)),
            ColumnType::String => Data::String(Vec::with_capacity(data_bytes + 4 * capacity)),
        };
        Column {
            name: name.to_string(),
            ty,
            required,
            defined: if required {
                Vec::new()
            } else {
                Vec::with_capacity(capacity)
            },
            rows: 0,
            planned_rows: capacity,
            values: 0,
            data,
            minmax: MinMax::None,
            cuts: Vec::new(),
            page_start: 0,
        }
    }

    /// Bytes the column's data can hold before it grows again.
    #[cfg(test)]
    fn data_capacity(&self) -> usize {
        match &self.data {
            Data::Bool(d) => d.capacity(),
            Data::Int64(d) => d.capacity() * 8,
            Data::Double(d) => d.capacity() * 8,
            Data::String(d) => d.capacity(),
        }
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The column's type.
    pub fn column_type(&self) -> ColumnType {
        self.ty
    }

    /// Adds `n` null rows. A required column takes no nulls: they are ignored
    /// there (the caller gives required columns a value in every row).
    pub fn push_nulls(&mut self, n: usize) {
        if self.required || n == 0 {
            return;
        }
        self.defined.resize(self.defined.len() + n, false);
        self.rows += n;
    }

    fn pushed(&mut self, bytes: usize) {
        if !self.required {
            self.defined.push(true);
        }
        self.rows += 1;
        self.values += 1;
        if bytes - self.page_start >= PAGE_BYTES {
            self.cuts.push(Cut {
                rows: self.rows,
                values: self.values,
                bytes,
            });
            self.page_start = bytes;
        }
    }

    /// Adds a boolean row (ignored unless the column is boolean).
    pub fn push_bool(&mut self, v: bool) {
        let Data::Bool(d) = &mut self.data else {
            return;
        };
        d.push(v);
        let len = d.len();
        self.minmax = match self.minmax {
            MinMax::Bool(lo, hi) => MinMax::Bool(lo && v, hi || v),
            _ => MinMax::Bool(v, v),
        };
        self.pushed(len);
    }

    /// Adds an integer row (ignored unless the column is INT64).
    pub fn push_i64(&mut self, v: i64) {
        let Data::Int64(d) = &mut self.data else {
            return;
        };
        d.push(v);
        let len = d.len() * 8;
        self.minmax = match self.minmax {
            MinMax::Int64(lo, hi) => MinMax::Int64(lo.min(v), hi.max(v)),
            _ => MinMax::Int64(v, v),
        };
        self.pushed(len);
    }

    /// Adds a double row (ignored unless the column is DOUBLE). Values are
    /// finite: the lake never holds NaN or infinities.
    pub fn push_f64(&mut self, v: f64) {
        let Data::Double(d) = &mut self.data else {
            return;
        };
        d.push(v);
        let len = d.len() * 8;
        self.minmax = match self.minmax {
            MinMax::Double(lo, hi) => MinMax::Double(lo.min(v), hi.max(v)),
            _ => MinMax::Double(v, v),
        };
        self.pushed(len);
    }

    /// Adds a string row (ignored unless the column is a string column).
    pub fn push_str(&mut self, v: &str) {
        let Data::String(d) = &mut self.data else {
            return;
        };
        let Ok(len) = u32::try_from(v.len()) else {
            // a single value over 4 GiB cannot come from a 16 MiB record
            return;
        };
        let need = 4 + v.len();
        if d.capacity() - d.len() < need {
            // grow once for the rows still to come at the average size so
            // far (capped), not by doubling again and again
            let per_row = (d.len() + need).div_ceil(self.rows + 1);
            let rest = self.planned_rows.saturating_sub(self.rows + 1);
            d.reserve(need + per_row.saturating_mul(rest).min(MAX_STRING_RESERVE));
        }
        d.extend_from_slice(&len.to_le_bytes());
        let at = (d.len(), v.len());
        d.extend_from_slice(v.as_bytes());
        let total = d.len();
        let data: &[u8] = d;
        self.minmax = match self.minmax {
            MinMax::String(lo, hi) => {
                let s = |(o, l): (usize, usize)| &data[o..o + l];
                let lo = if v.as_bytes() < s(lo) { at } else { lo };
                let hi = if v.as_bytes() > s(hi) { at } else { hi };
                MinMax::String(lo, hi)
            }
            _ => MinMax::String(at, at),
        };
        self.pushed(total);
    }
}

/// One column of a file's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// Physical type.
    pub ty: ColumnType,
    /// Whether every row has a value (no definition levels).
    pub required: bool,
    /// Bytes of string data to reserve per row (a guess; 0 for no guess).
    pub bytes_per_row: usize,
}

/// One column's statistics over a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnStats {
    /// Column name.
    pub name: String,
    /// Physical type.
    pub ty: ColumnType,
    /// Rows, nulls included.
    pub values: u64,
    /// Null rows.
    pub nulls: u64,
    /// Bytes of its chunks as stored (compressed, page headers included).
    pub bytes: u64,
    /// Min and max in the plain encoding (booleans one byte, integers and
    /// doubles 8 bytes little-endian, strings their UTF-8 bytes): the same
    /// bytes as Iceberg's single-value serialization of these types.
    pub bounds: Option<(Vec<u8>, Vec<u8>)>,
}

/// A Parquet file being written in memory.
pub struct FileWriter {
    out: Vec<u8>,
    codec: Codec,
    schema: Vec<ColumnSpec>,
    row_groups: Vec<RowGroupMeta>,
    rows: i64,
    /// A page before and after compression, reused.
    body: Vec<u8>,
    packed: Vec<u8>,
}

struct ChunkMeta {
    ty: ColumnType,
    name: String,
    codec: Codec,
    num_values: i64,
    nulls: i64,
    uncompressed: i64,
    compressed: i64,
    /// Where the chunk starts (its dictionary page, if any).
    offset: i64,
    /// Where its first data page starts.
    data_offset: i64,
    /// Where its dictionary page starts, for a dictionary-encoded chunk.
    dictionary_offset: Option<i64>,
    encodings: &'static [i32],
    /// Min and max values, as the statistics store them.
    minmax: Option<(Vec<u8>, Vec<u8>)>,
}

impl ChunkMeta {
    /// The metadata of `col`'s chunk written PLAIN at `offset`, with its
    /// sizes (before and after compression) and no statistics yet.
    fn plain(
        col: &Column,
        codec: Codec,
        (uncompressed, compressed): (i64, i64),
        offset: i64,
    ) -> Self {
        ChunkMeta {
            ty: col.ty,
            name: col.name.clone(),
            codec,
            num_values: col.rows as i64,
            nulls: (col.rows - col.values) as i64,
            uncompressed,
            compressed,
            offset,
            data_offset: offset,
            dictionary_offset: None,
            encodings: if col.required { &[PLAIN] } else { &[PLAIN, 3] },
            minmax: None,
        }
    }
}

/// Appends a v1 data page's header (RLE definition levels, values in
/// `encoding`) for a page of `rows` rows and its `(raw, stored)` sizes;
/// returns the header's length.
fn data_page_header(
    out: &mut Vec<u8>,
    (raw, stored): (usize, usize),
    rows: usize,
    encoding: i32,
) -> usize {
    let at = out.len();
    let mut header = Thrift::new(out);
    header.i32(1, 0); // DATA_PAGE
    header.i32(2, raw as i32);
    header.i32(3, stored as i32);
    header.struct_begin(5); // DataPageHeader
    header.i32(1, rows as i32);
    header.i32(2, encoding);
    header.i32(3, 3); // definition levels: RLE
    header.i32(4, 3); // repetition levels: RLE
    header.struct_end();
    header.stop();
    out.len() - at
}

struct RowGroupMeta {
    columns: Vec<ChunkMeta>,
    rows: i64,
    offset: i64,
}

/// A first page smaller than this is stored uncompressed without trying the
/// codec. On Lambda-shaped batches (~30 rows per file) nearly half of the
/// column chunks are this small: compressing them saved ~1 % of the bytes at
/// a few µs of codec set-up each (BENCHMARKS.md).
const MIN_COMPRESSED_PAGE: usize = 256;

thread_local! {
    /// One zstd context per thread, reused for every page of every file.
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// Compresses a page with `codec` into `out` (replacing its contents).
fn compress(codec: Codec, src: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
    let err = |source| CompressError {
        codec,
        bytes: src.len(),
        source,
    };
    out.clear();
    match codec {
        Codec::Uncompressed => out.extend_from_slice(src),
        // resolved per chunk before compressing; compress as its large side
        Codec::Auto { .. } => return compress(Codec::Zstd(1), src, out),
        Codec::Snappy => {
            out.resize(snap::raw::max_compress_len(src.len()), 0);
            let n = snap::raw::Encoder::new()
                .compress(src, out)
                .map_err(|e| err(std::io::Error::other(e)))?;
            out.truncate(n);
        }
        Codec::Zstd(level) => ZSTD.with(|cell| {
            let mut slot = cell.borrow_mut();
            let compressor = match &mut *slot {
                Some((l, c)) if *l == level => c,
                _ => {
                    let c = zstd::bulk::Compressor::new(level).map_err(err)?;
                    &mut slot.insert((level, c)).1
                }
            };
            out.reserve(zstd::zstd_safe::compress_bound(src.len()));
            compressor.compress_to_buffer(src, out).map_err(err)?;
            Ok(())
        })?,
    }
    Ok(())
}

/// A string column's min and max as the statistics store them (none when
/// either is too long to be useful).
fn string_minmax(col: &Column) -> Option<(Vec<u8>, Vec<u8>)> {
    match (&col.minmax, &col.data) {
        (MinMax::String((lo, ll), (hi, hl)), Data::String(d))
            if *ll <= MAX_STAT_BYTES && *hl <= MAX_STAT_BYTES =>
        {
            Some((d[*lo..lo + ll].to_vec(), d[*hi..hi + hl].to_vec()))
        }
        _ => None,
    }
}

/// Appends the bytes of one page, before compression: the definition levels
/// of an optional column (v1 layout: 4-byte length first), then the values.
fn page_body(col: &Column, from: Cut, to: Cut, body: &mut Vec<u8>) {
    if !col.required {
        page_levels(&col.defined[from.rows..to.rows], body);
    }
    match &col.data {
        Data::Bool(d) => pack_bits(&d[from.values..to.values], body),
        Data::Int64(d) => {
            for v in &d[from.values..to.values] {
                body.extend_from_slice(&v.to_le_bytes());
            }
        }
        Data::Double(d) => {
            for v in &d[from.values..to.values] {
                body.extend_from_slice(&v.to_le_bytes());
            }
        }
        Data::String(d) => body.extend_from_slice(&d[from.bytes..to.bytes]),
    }
}

/// The PLAIN encoding: values written out one after another.
const PLAIN: i32 = 0;

/// The PLAIN_DICTIONARY encoding: a dictionary page, and data pages of
/// indices into it (Parquet's v1 name for it, which every reader knows).
const PLAIN_DICTIONARY: i32 = 2;

/// A dictionary is used when its distinct values are at most this share of
/// the chunk's values (one in four), and the dictionary and indices take at
/// most half the bytes of the values written out.
const DICTIONARY_MAX_SHARE: usize = 4;

/// A string chunk's dictionary: its distinct values in order of first
/// appearance, PLAIN-encoded as the dictionary page holds them, and the index
/// of each value.
struct Dictionary {
    page: Vec<u8>,
    count: usize,
    indices: Vec<u32>,
}

/// The dictionary of a string column chunk, when it pays: few distinct values
/// (names, states, countries, devices) make a dictionary page and a page of
/// small indices, much smaller than the values themselves, and nothing left
/// for the codec to do on them. Columns of unique values (ids, free text) are
/// given up after a quarter of their values.
fn dictionary_of(col: &Column) -> Option<Dictionary> {
    let Data::String(d) = &col.data else {
        return None;
    };
    if col.values < 2 || all_distinct_at_first(d, col.values) {
        return None;
    }
    let limit = col.values / DICTIONARY_MAX_SHARE + 1;
    let mut seen: foldhash::HashMap<&[u8], u32> =
        foldhash::HashMapExt::with_capacity(limit.min(64));
    let mut page = Vec::new();
    let mut indices = Vec::with_capacity(col.values);
    for (whole, value) in plain_values(d) {
        let next = seen.len() as u32;
        let index = *seen.entry(value).or_insert_with(|| {
            page.extend_from_slice(whole);
            next
        });
        // too many distinct values: a column of ids or free text
        if seen.len() > limit {
            return None;
        }
        indices.push(index);
    }
    if indices.len() != col.values {
        return None;
    }
    // the indices bit-packed, plus their run headers and bit width
    let index_bytes = (indices.len() * bit_width(seen.len())).div_ceil(8) + 16;
    (page.len() + index_bytes <= d.len() / 2).then_some(Dictionary {
        page,
        count: seen.len(),
        indices,
    })
}

/// Whether the first 8 values of a chunk of more than 8 are all different:
/// then it is a column of ids or free text (a column of a few dozen values
/// or fewer repeats one in its first 8 more often than not), given up before
/// any hashing or allocation. PLAIN string data is `d`, `values` of them.
fn all_distinct_at_first(d: &[u8], values: usize) -> bool {
    const SAMPLE: usize = 8;
    if values <= SAMPLE {
        return false;
    }
    let mut first: [&[u8]; SAMPLE] = [&[]; SAMPLE];
    for (k, (_, value)) in plain_values(d).take(SAMPLE).enumerate() {
        if first[..k].contains(&value) {
            return false;
        }
        first[k] = value;
    }
    true
}

/// The values of PLAIN string data, each with its 4-byte length first (as a
/// dictionary page holds it) and without.
fn plain_values(d: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?) as usize;
        let whole = d.get(at..at + 4 + len)?;
        at += whole.len();
        Some((whole, &whole[4..]))
    })
}

/// Bits per index into a dictionary of `n` values (at least 1).
fn bit_width(n: usize) -> usize {
    (usize::BITS - n.saturating_sub(1).leading_zeros()).max(1) as usize
}

/// Appends dictionary indices as a data page holds them: the bit width, then
/// the RLE / bit-packed hybrid (one RLE run when every index is the same,
/// else bit-packed runs of at most 63 groups of 8, as parquet-mr writes them).
fn encode_indices(indices: &[u32], width: usize, out: &mut Vec<u8>) {
    out.push(width as u8);
    if let Some(&first) = indices.first()
        && indices.iter().all(|&i| i == first)
    {
        varint(out, (indices.len() as u64) << 1);
        out.extend_from_slice(&first.to_le_bytes()[..width.div_ceil(8)]);
        return;
    }
    for run in indices.chunks(63 * 8) {
        let groups = run.len().div_ceil(8);
        varint(out, ((groups as u64) << 1) | 1);
        let (mut acc, mut bits) = (0u64, 0usize);
        // the last group is padded with zeros (readers stop at the page's count)
        for k in 0..groups * 8 {
            acc |= u64::from(run.get(k).copied().unwrap_or(0)) << bits;
            bits += width;
            while bits >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                bits -= 8;
            }
        }
    }
}

/// Appends an optional column's definition levels as a v1 page holds them:
/// their length (4 bytes, little-endian), then the levels.
fn page_levels(defined: &[bool], body: &mut Vec<u8>) {
    let at = body.len();
    body.extend_from_slice(&[0; 4]);
    encode_levels(defined, body);
    let len = (body.len() - at - 4) as u32;
    body[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Appends bits packed eight to a byte, least significant first.
fn pack_bits(bits: &[bool], out: &mut Vec<u8>) {
    for group in bits.chunks(8) {
        let mut byte = 0u8;
        for (k, &b) in group.iter().enumerate() {
            byte |= u8::from(b) << k;
        }
        out.push(byte);
    }
}

/// Appends the RLE / bit-packed hybrid encoding (bit width 1) of `bits`.
fn encode_levels(bits: &[bool], out: &mut Vec<u8>) {
    if let Some(&first) = bits.first()
        && bits.iter().all(|&b| b == first)
    {
        varint(out, (bits.len() as u64) << 1);
        out.push(u8::from(first));
        return;
    }
    // bit-packed runs of at most 63 groups of 8, as parquet-mr writes them
    for run in bits.chunks(63 * 8) {
        let groups = run.len().div_ceil(8);
        varint(out, ((groups as u64) << 1) | 1);
        pack_bits(run, out);
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl FileWriter {
    /// A file with these columns, in order.
    pub fn new(codec: Codec, schema: Vec<ColumnSpec>) -> FileWriter {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(b"PAR1");
        FileWriter {
            out,
            codec,
            schema,
            row_groups: Vec::new(),
            rows: 0,
            body: Vec::new(),
            packed: Vec::new(),
        }
    }

    /// Empty columns of this file's schema, in order, with room for `rows`.
    pub fn new_columns(&self, rows: usize) -> Vec<Column> {
        self.schema
            .iter()
            .map(|c| Column::new(&c.name, c.ty, c.required, rows, rows * c.bytes_per_row))
            .collect()
    }

    /// Writes one row group. The columns match the schema given to
    /// [`FileWriter::new`], in order (as [`FileWriter::new_columns`] makes
    /// them), with the same number of rows each.
    pub fn write_row_group(&mut self, columns: &[Column]) -> Result<(), CompressError> {
        let rows = columns.first().map_or(0, Column::len);
        let offset = self.out.len() as i64;
        let mut metas = Vec::with_capacity(columns.len());
        for col in columns {
            metas.push(self.write_chunk(col)?);
        }
        self.rows += rows as i64;
        self.row_groups.push(RowGroupMeta {
            columns: metas,
            rows: rows as i64,
            offset,
        });
        Ok(())
    }

    fn write_chunk(&mut self, col: &Column) -> Result<ChunkMeta, CompressError> {
        if let Some(dict) = dictionary_of(col) {
            return self.write_dictionary_chunk(col, dict);
        }
        let offset = self.out.len() as i64;
        let end = Cut {
            rows: col.rows,
            values: col.values,
            bytes: match &col.data {
                Data::Bool(d) => d.len(),
                Data::Int64(d) => d.len() * 8,
                Data::Double(d) => d.len() * 8,
                Data::String(d) => d.len(),
            },
        };
        let last = col.cuts.last().is_none_or(|c| c.rows < col.rows);
        let cuts = col.cuts.iter().copied().chain(last.then_some(end));
        // The codec is the file's (or auto's choice for the chunk's size),
        // unless the first page is too small to gain from it, or does not get
        // smaller with it: then the chunk is stored uncompressed (small
        // numeric columns, mostly).
        let mut codec = self.codec;
        let mut uncompressed = 0i64;
        let mut compressed = 0i64;
        let mut from = Cut::default();
        let (mut body, mut packed) = (
            std::mem::take(&mut self.body),
            std::mem::take(&mut self.packed),
        );
        for (k, cut) in cuts.enumerate() {
            body.clear();
            page_body(col, from, cut, &mut body);
            if k == 0 {
                codec = self.codec.for_chunk(body.len());
            }
            if codec != Codec::Uncompressed {
                compress(codec, &body, &mut packed)?;
                if k == 0 && packed.len() >= body.len() {
                    codec = Codec::Uncompressed;
                }
            }
            let page: &[u8] = if codec == Codec::Uncompressed {
                &body
            } else {
                &packed
            };
            let header_len = data_page_header(
                &mut self.out,
                (body.len(), page.len()),
                cut.rows - from.rows,
                PLAIN,
            );
            uncompressed += (header_len + body.len()) as i64;
            compressed += (header_len + page.len()) as i64;
            self.out.extend_from_slice(page);
            from = cut;
        }
        (self.body, self.packed) = (body, packed);
        let minmax = match col.minmax {
            MinMax::None => None,
            MinMax::Bool(lo, hi) => Some((vec![u8::from(lo)], vec![u8::from(hi)])),
            MinMax::Int64(lo, hi) => Some((lo.to_le_bytes().to_vec(), hi.to_le_bytes().to_vec())),
            // the format asks for -0.0 as a zero minimum and +0.0 as a zero maximum
            MinMax::Double(lo, hi) => {
                let lo = if lo == 0.0 { -0.0f64 } else { lo };
                let hi = if hi == 0.0 { 0.0f64 } else { hi };
                Some((lo.to_le_bytes().to_vec(), hi.to_le_bytes().to_vec()))
            }
            MinMax::String(..) => string_minmax(col),
        };
        Ok(ChunkMeta {
            minmax,
            ..ChunkMeta::plain(col, codec, (uncompressed, compressed), offset)
        })
    }

    /// Writes a string column chunk as a dictionary page (its distinct values,
    /// PLAIN) and one data page of indices into it (RLE / bit-packed hybrid):
    /// the encoding parquet-mr's v1 writer uses, read by every engine.
    fn write_dictionary_chunk(
        &mut self,
        col: &Column,
        dict: Dictionary,
    ) -> Result<ChunkMeta, CompressError> {
        let offset = self.out.len() as i64;
        let mut body = std::mem::take(&mut self.body);
        let mut packed = std::mem::take(&mut self.packed);
        // the data page: definition levels (optional columns), then indices
        body.clear();
        if !col.required {
            page_levels(&col.defined, &mut body);
        }
        encode_indices(&dict.indices, bit_width(dict.count), &mut body);
        // one codec for both pages, by their size together; uncompressed when
        // the codec does not make them smaller
        let mut codec = self.codec.for_chunk(dict.page.len() + body.len());
        let mut packed_dict = Vec::new();
        if codec != Codec::Uncompressed {
            compress(codec, &dict.page, &mut packed_dict)?;
            compress(codec, &body, &mut packed)?;
            if packed_dict.len() + packed.len() >= dict.page.len() + body.len() {
                codec = Codec::Uncompressed;
            }
        }
        let (dict_page, data_page): (&[u8], &[u8]) = if codec == Codec::Uncompressed {
            (&dict.page, &body)
        } else {
            (&packed_dict, &packed)
        };
        let mut uncompressed = 0i64;
        let mut compressed = 0i64;
        let at = self.out.len();
        let mut header = Thrift::new(&mut self.out);
        header.i32(1, 2); // DICTIONARY_PAGE
        header.i32(2, dict.page.len() as i32);
        header.i32(3, dict_page.len() as i32);
        header.struct_begin(7); // DictionaryPageHeader
        header.i32(1, dict.count as i32);
        header.i32(2, PLAIN_DICTIONARY);
        header.struct_end();
        header.stop();
        let header_len = self.out.len() - at;
        uncompressed += (header_len + dict.page.len()) as i64;
        compressed += (header_len + dict_page.len()) as i64;
        self.out.extend_from_slice(dict_page);
        let data_offset = self.out.len() as i64;
        // values: indices into the dictionary
        let header_len = data_page_header(
            &mut self.out,
            (body.len(), data_page.len()),
            col.rows,
            PLAIN_DICTIONARY,
        );
        uncompressed += (header_len + body.len()) as i64;
        compressed += (header_len + data_page.len()) as i64;
        self.out.extend_from_slice(data_page);
        (self.body, self.packed) = (body, packed);
        Ok(ChunkMeta {
            data_offset,
            dictionary_offset: Some(offset),
            encodings: &[PLAIN_DICTIONARY, 3],
            minmax: string_minmax(col),
            ..ChunkMeta::plain(col, codec, (uncompressed, compressed), offset)
        })
    }

    /// Each column's statistics over the row groups written so far, in
    /// schema order: what a table format's file entry records (Iceberg's
    /// value, null and size counts and bounds), from the same values as the
    /// footer's. A column without min and max in any row group (all null,
    /// or strings too long to keep) has no bounds.
    pub fn column_stats(&self) -> Vec<ColumnStats> {
        self.schema
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let chunks = || self.row_groups.iter().map(move |rg| &rg.columns[i]);
                let mut bounds: Option<(Vec<u8>, Vec<u8>)> = None;
                let mut complete = true;
                for c in chunks() {
                    match (&c.minmax, bounds.as_mut()) {
                        (Some((lo, hi)), Some((min, max))) => {
                            if spec.ty.less(lo, min) {
                                min.clone_from(lo);
                            }
                            if spec.ty.less(max, hi) {
                                max.clone_from(hi);
                            }
                        }
                        (Some(b), None) => bounds = Some(b.clone()),
                        // a chunk with values but no bounds: the file's are unknown
                        (None, _) if c.nulls < c.num_values => complete = false,
                        (None, _) => {}
                    }
                }
                ColumnStats {
                    name: spec.name.clone(),
                    ty: spec.ty,
                    values: chunks().map(|c| c.num_values as u64).sum(),
                    nulls: chunks().map(|c| c.nulls as u64).sum(),
                    bytes: chunks().map(|c| c.compressed as u64).sum(),
                    bounds: bounds.filter(|_| complete),
                }
            })
            .collect()
    }

    /// Writes the footer and returns the file's bytes.
    pub fn finish(mut self, created_by: &str, metadata: &[(&str, &str)]) -> Vec<u8> {
        let start = self.out.len();
        let mut t = Thrift::new(&mut self.out);
        t.i32(1, 1);
        // schema: the root, then one leaf per column
        t.list_begin(2, T_STRUCT, self.schema.len() + 1);
        t.elem_begin();
        t.binary(4, b"schema");
        t.i32(5, self.schema.len() as i32);
        t.elem_end();
        for c in &self.schema {
            t.elem_begin();
            t.i32(1, c.ty.thrift_id());
            t.i32(3, if c.required { 0 } else { 1 });
            t.binary(4, c.name.as_bytes());
            if c.ty == ColumnType::String {
                t.i32(6, 0); // converted type UTF8
                t.struct_begin(10); // logical type: STRING
                t.struct_begin(1);
                t.struct_end();
                t.struct_end();
            }
            t.elem_end();
        }
        t.i64(3, self.rows);
        t.list_begin(4, T_STRUCT, self.row_groups.len());
        for rg in &self.row_groups {
            t.elem_begin();
            t.list_begin(1, T_STRUCT, rg.columns.len());
            for c in &rg.columns {
                t.elem_begin();
                t.i64(2, c.offset);
                t.struct_begin(3);
                t.i32(1, c.ty.thrift_id());
                t.list_begin(2, T_I32, c.encodings.len());
                for e in c.encodings {
                    t.list_i32(*e);
                }
                t.list_begin(3, T_BINARY, 1);
                t.list_binary(c.name.as_bytes());
                t.i32(4, c.codec.thrift_id());
                t.i64(5, c.num_values);
                t.i64(6, c.uncompressed);
                t.i64(7, c.compressed);
                t.i64(9, c.data_offset);
                if let Some(at) = c.dictionary_offset {
                    t.i64(11, at);
                }
                t.struct_begin(12);
                t.i64(3, c.nulls);
                if let Some((min, max)) = &c.minmax {
                    t.binary(5, max);
                    t.binary(6, min);
                }
                t.struct_end();
                t.struct_end();
                t.elem_end();
            }
            t.i64(2, rg.columns.iter().map(|c| c.uncompressed).sum());
            t.i64(3, rg.rows);
            t.i64(5, rg.offset);
            t.i64(6, rg.columns.iter().map(|c| c.compressed).sum());
            t.elem_end();
        }
        if !metadata.is_empty() {
            t.list_begin(5, T_STRUCT, metadata.len());
            for (k, v) in metadata {
                t.elem_begin();
                t.binary(1, k.as_bytes());
                t.binary(2, v.as_bytes());
                t.elem_end();
            }
        }
        t.binary(6, created_by.as_bytes());
        // column orders: the type's own order, so readers trust min and max
        t.list_begin(7, T_STRUCT, self.schema.len());
        for _ in &self.schema {
            t.elem_begin();
            t.struct_begin(1);
            t.struct_end();
            t.elem_end();
        }
        t.stop();
        let len = (self.out.len() - start) as u32;
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(b"PAR1");
        self.out
    }
}

const T_I32: u8 = 5;
const T_I64: u8 = 6;
const T_BINARY: u8 = 8;
const T_LIST: u8 = 9;
const T_STRUCT: u8 = 12;

/// Thrift compact protocol, just what the footer and page headers need,
/// appended to a buffer.
struct Thrift<'a> {
    buf: &'a mut Vec<u8>,
    /// The last field id of each open struct (the footer nests four deep).
    stack: [i16; 8],
    depth: usize,
}

impl<'a> Thrift<'a> {
    fn new(buf: &'a mut Vec<u8>) -> Thrift<'a> {
        Thrift {
            buf,
            stack: [0; 8],
            depth: 0,
        }
    }

    fn field(&mut self, id: i16, ty: u8) {
        let last = &mut self.stack[self.depth];
        let delta = id - *last;
        *last = id;
        if (1..=15).contains(&delta) {
            self.buf.push(((delta as u8) << 4) | ty);
        } else {
            self.buf.push(ty);
            varint(self.buf, zigzag(i64::from(id)));
        }
    }

    fn i32(&mut self, id: i16, v: i32) {
        self.field(id, T_I32);
        varint(self.buf, zigzag(i64::from(v)));
    }

    fn i64(&mut self, id: i16, v: i64) {
        self.field(id, T_I64);
        varint(self.buf, zigzag(v));
    }

    fn binary(&mut self, id: i16, v: &[u8]) {
        self.field(id, T_BINARY);
        self.list_binary(v);
    }

    fn list_binary(&mut self, v: &[u8]) {
        varint(self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    fn list_i32(&mut self, v: i32) {
        varint(self.buf, zigzag(i64::from(v)));
    }

    fn list_begin(&mut self, id: i16, elem: u8, n: usize) {
        self.field(id, T_LIST);
        if n < 15 {
            self.buf.push(((n as u8) << 4) | elem);
        } else {
            self.buf.push(0xF0 | elem);
            varint(self.buf, n as u64);
        }
    }

    fn struct_begin(&mut self, id: i16) {
        self.field(id, T_STRUCT);
        self.elem_begin();
    }

    fn struct_end(&mut self) {
        self.elem_end();
    }

    /// Starts a struct that is a list element (no field header).
    fn elem_begin(&mut self) {
        // deeper than the footer ever nests would be a bug here; stay in bounds
        self.depth = (self.depth + 1).min(self.stack.len() - 1);
        self.stack[self.depth] = 0;
    }

    fn elem_end(&mut self) {
        self.buf.push(0);
        self.depth = self.depth.saturating_sub(1);
    }

    fn stop(&mut self) {
        self.buf.push(0);
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::datatypes::{DataType, Float64Type, Int64Type};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::Compression;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::statistics::Statistics;

    /// Test helper (also for `core::encode`): a file read back with the
    /// parquet crate, all row groups as one batch.
    pub(crate) fn read(bytes: &[u8]) -> RecordBatch {
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(bytes))
            .expect("a footer the parquet crate accepts")
            .build()
            .expect("reader");
        let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("pages decode");
        arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat")
    }

    fn meta(bytes: &[u8]) -> SerializedFileReader<Bytes> {
        SerializedFileReader::new(Bytes::copy_from_slice(bytes)).expect("footer")
    }

    /// Row i of the test table: a value or None (a null every 3rd row,
    /// and a long run of nulls in the middle).
    fn present(i: usize) -> bool {
        i % 3 != 1 && !(600..700).contains(&i)
    }

    fn four_columns(n: usize) -> Vec<Column> {
        let mut b = Column::new("b", ColumnType::Bool, false, n, 0);
        let mut i = Column::new("i", ColumnType::Int64, false, n, 0);
        let mut d = Column::new("d", ColumnType::Double, false, n, 0);
        let mut s = Column::new("s", ColumnType::String, false, n, 0);
        for r in 0..n {
            if present(r) {
                b.push_bool(r % 5 == 0);
                i.push_i64(r as i64 - 500);
                d.push_f64(r as f64 / 4.0);
                s.push_str(&format!("v{r}é"));
            } else {
                for c in [&mut b, &mut i, &mut d, &mut s] {
                    c.push_nulls(1);
                }
            }
        }
        vec![b, i, d, s]
    }

    fn schema_of(cols: &[Column]) -> Vec<ColumnSpec> {
        cols.iter()
            .map(|c| ColumnSpec {
                name: c.name.clone(),
                ty: c.ty,
                required: c.required,
                bytes_per_row: 0,
            })
            .collect()
    }

    #[test]
    fn every_type_and_codec_round_trips_with_nulls() {
        let n = 1100; // more than one bit-packed run of definition levels
        for codec in [
            Codec::Uncompressed,
            Codec::Snappy,
            Codec::Zstd(1),
            Codec::Zstd(9),
            Codec::AUTO,
        ] {
            let cols = four_columns(n);
            let mut w = FileWriter::new(codec, schema_of(&cols));
            w.write_row_group(&cols).expect("write");
            let bytes = w.finish("t", &[("k", "v")]);
            let b = read(&bytes);
            assert_eq!(b.num_rows(), n, "{codec}");
            let s = b.schema();
            assert_eq!(s.field(0).data_type(), &DataType::Boolean);
            assert_eq!(s.field(1).data_type(), &DataType::Int64);
            assert_eq!(s.field(2).data_type(), &DataType::Float64);
            assert_eq!(s.field(3).data_type(), &DataType::Utf8);
            let (bo, io) = (
                b.column(0).as_boolean(),
                b.column(1).as_primitive::<Int64Type>(),
            );
            let (dd, ss) = (
                b.column(2).as_primitive::<Float64Type>(),
                b.column(3).as_string::<i32>(),
            );
            for r in 0..n {
                if present(r) {
                    assert_eq!(bo.value(r), r % 5 == 0, "{codec} row {r}");
                    assert_eq!(io.value(r), r as i64 - 500);
                    assert_eq!(dd.value(r), r as f64 / 4.0);
                    assert_eq!(ss.value(r), format!("v{r}é"));
                } else {
                    for c in 0..4 {
                        assert!(b.column(c).is_null(r), "{codec} column {c} row {r}");
                    }
                }
            }
            let m = meta(&bytes);
            let kv = m
                .metadata()
                .file_metadata()
                .key_value_metadata()
                .expect("kv");
            assert_eq!(
                (kv[0].key.as_str(), kv[0].value.as_deref()),
                ("k", Some("v"))
            );
        }
    }

    #[test]
    fn big_columns_are_cut_into_pages() {
        let n = 3000;
        let mut s = Column::new("s", ColumnType::String, false, n, 0);
        let mut r = Column::new("r", ColumnType::Int64, true, n, 0);
        let long = "x".repeat(900);
        for i in 0..n {
            if i % 7 == 0 {
                s.push_nulls(1);
            } else {
                s.push_str(&format!("{i}{long}"));
            }
            r.push_i64(i as i64);
        }
        let cols = vec![s, r];
        let mut w = FileWriter::new(Codec::Zstd(1), schema_of(&cols));
        w.write_row_group(&cols).expect("write");
        let bytes = w.finish("t", &[]);
        let m = meta(&bytes);
        let rg = m.get_row_group(0).expect("row group");
        let pages = rg.get_column_page_reader(0).expect("pages").count();
        assert!(pages >= 2, "2.7 MB of strings in {pages} page(s)");
        // no min or max for values this long; the null count is still there
        let stats = rg.metadata().column(0).statistics().expect("stats");
        assert_eq!(stats.null_count_opt(), Some(n.div_ceil(7) as u64));
        assert!(stats.min_bytes_opt().is_none());
        let b = read(&bytes);
        let (ss, rr) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_primitive::<Int64Type>(),
        );
        for i in 0..n {
            assert_eq!(ss.is_null(i), i % 7 == 0);
            if i % 7 != 0 {
                assert_eq!(ss.value(i), format!("{i}{long}"));
            }
            assert_eq!(rr.value(i), i as i64);
        }
    }

    #[test]
    fn file_statistics_merge_every_row_group_by_the_types_order() {
        // two row groups: the file's bounds are the least and greatest values
        // of both, ordered as numbers (not as their little-endian bytes)
        type Group<'a> = (&'a [Option<i64>], &'a [f64], &'a [&'a str], &'a [bool]);
        let groups: [Group<'_>; 2] = [
            (
                &[Some(256), None, Some(-3)],
                &[1.5, -0.0, 7.0],
                &["b", "é", "a"],
                &[true, true, true],
            ),
            (
                &[Some(1), Some(-70_000), None],
                &[-2.25, 0.0, 3.0],
                &["zz", "c", "d"],
                &[true, true, true],
            ),
        ];
        let mut w = None;
        for (ints, doubles, strings, bools) in groups {
            let mut i = Column::new("i", ColumnType::Int64, false, 3, 0);
            let mut d = Column::new("d", ColumnType::Double, true, 3, 0);
            let mut s = Column::new("s", ColumnType::String, true, 3, 0);
            let mut b = Column::new("b", ColumnType::Bool, true, 3, 0);
            for v in ints {
                match v {
                    Some(v) => i.push_i64(*v),
                    None => i.push_nulls(1),
                }
            }
            doubles.iter().for_each(|v| d.push_f64(*v));
            strings.iter().for_each(|v| s.push_str(v));
            bools.iter().for_each(|v| b.push_bool(*v));
            let cols = vec![i, d, s, b];
            let w = w.get_or_insert_with(|| FileWriter::new(Codec::Zstd(1), schema_of(&cols)));
            w.write_row_group(&cols).expect("write");
        }
        let stats = w.expect("a writer").column_stats();
        let bounds = |k: usize| stats[k].bounds.clone().expect("bounds");
        assert_eq!((stats[0].values, stats[0].nulls), (6, 2));
        assert_eq!(
            bounds(0),
            (
                (-70_000i64).to_le_bytes().to_vec(),
                256i64.to_le_bytes().to_vec()
            )
        );
        assert_eq!(
            bounds(1),
            (
                (-2.25f64).to_le_bytes().to_vec(),
                7.0f64.to_le_bytes().to_vec()
            )
        );
        // strings by code point: "é" (U+00E9) after "zz"
        assert_eq!(bounds(2), (b"a".to_vec(), "é".as_bytes().to_vec()));
        assert_eq!(bounds(3), (vec![1], vec![1]));
        assert!(stats.iter().all(|c| c.bytes > 0));
    }

    #[test]
    fn a_column_without_bounds_in_one_row_group_has_none_for_the_file() {
        let long = "x".repeat(MAX_STAT_BYTES + 1);
        let mut w = None;
        for values in [["a", "b"], [long.as_str(), "c"]] {
            let mut s = Column::new("s", ColumnType::String, true, 2, 0);
            values.iter().for_each(|v| s.push_str(v));
            let cols = vec![s];
            let w = w.get_or_insert_with(|| FileWriter::new(Codec::Zstd(1), schema_of(&cols)));
            w.write_row_group(&cols).expect("write");
        }
        let stats = w.expect("a writer").column_stats();
        // "a".."c" would be wrong bounds: the second group holds "x…"
        assert_eq!(stats[0].bounds, None);
        assert_eq!(stats[0].values, 4);
    }

    #[test]
    fn statistics_give_min_max_and_nulls_per_chunk() {
        let mut d = Column::new("d", ColumnType::Double, false, 4, 0);
        let mut s = Column::new("s", ColumnType::String, true, 4, 0);
        let mut i = Column::new("i", ColumnType::Int64, false, 4, 0);
        for v in [0.0, 2.5, 0.0] {
            d.push_f64(v);
        }
        d.push_nulls(1);
        for v in ["pear", "apple", "zebra", "mango"] {
            s.push_str(v);
        }
        i.push_nulls(4);
        let cols = vec![d, s, i];
        let mut w = FileWriter::new(Codec::Snappy, schema_of(&cols));
        w.write_row_group(&cols).expect("write");
        let bytes = w.finish("t", &[]);
        let m = meta(&bytes);
        let rg = m.metadata().row_group(0);
        match rg.column(0).statistics() {
            Some(Statistics::Double(v)) => {
                let (lo, hi) = (v.min_opt().expect("min"), v.max_opt().expect("max"));
                assert!(
                    *lo == 0.0 && lo.is_sign_negative(),
                    "a zero minimum is -0.0"
                );
                assert_eq!(*hi, 2.5);
                assert_eq!(v.null_count_opt(), Some(1));
            }
            other => panic!("double statistics expected, got {other:?}"),
        }
        match rg.column(1).statistics() {
            Some(Statistics::ByteArray(v)) => {
                assert_eq!(v.min_opt().map(|b| b.data()), Some(&b"apple"[..]));
                assert_eq!(v.max_opt().map(|b| b.data()), Some(&b"zebra"[..]));
                assert_eq!(v.null_count_opt(), Some(0));
            }
            other => panic!("byte array statistics expected, got {other:?}"),
        }
        let all_null = rg.column(2).statistics().expect("stats");
        assert_eq!(all_null.null_count_opt(), Some(4));
        assert!(all_null.min_bytes_opt().is_none());
        assert_eq!(read(&bytes).column(2).null_count(), 4);
    }

    #[test]
    fn a_chunk_the_codec_does_not_shrink_is_stored_uncompressed() {
        // 64 random integers (512 bytes, above the small-page limit)
        let mut i = Column::new("i", ColumnType::Int64, true, 64, 0);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            i.push_i64(x as i64);
        }
        let mut s = Column::new("s", ColumnType::String, true, 64, 0);
        for _ in 0..64 {
            s.push_str(&"the same words again ".repeat(20));
        }
        let cols = vec![i, s];
        let mut w = FileWriter::new(Codec::Zstd(1), schema_of(&cols));
        w.write_row_group(&cols).expect("write");
        let bytes = w.finish("t", &[]);
        let m = meta(&bytes);
        let rg = m.metadata().row_group(0);
        assert_eq!(rg.column(0).compression(), Compression::UNCOMPRESSED);
        assert!(matches!(rg.column(1).compression(), Compression::ZSTD(_)));
        assert!(rg.column(1).compressed_size() < rg.column(1).uncompressed_size() / 4);
        let b = read(&bytes);
        assert_eq!(b.column(0).as_primitive::<Int64Type>().value(63), x as i64);
    }

    #[test]
    fn a_small_first_page_is_stored_uncompressed_without_trying() {
        for (rows, codec) in [(10, Compression::UNCOMPRESSED), (12, Compression::SNAPPY)] {
            // 10 rows: 240 bytes (below the limit), 12 rows: 288 bytes; all
            // distinct, so written out (PLAIN), not as a dictionary
            let mut s = Column::new("s", ColumnType::String, true, rows, 0);
            for r in 0..rows {
                s.push_str(&format!("{r:020}"));
            }
            let cols = vec![s];
            let mut w = FileWriter::new(Codec::Snappy, schema_of(&cols));
            w.write_row_group(&cols).expect("write");
            let bytes = w.finish("t", &[]);
            let m = meta(&bytes);
            assert_eq!(m.metadata().row_group(0).column(0).compression(), codec);
            assert_eq!(
                read(&bytes).column(0).as_string::<i32>().value(rows - 1),
                format!("{:020}", rows - 1)
            );
        }
    }

    /// A string column of `n` rows (nulls where `present` says) whose value
    /// in row r is `value(r)`.
    fn strings(n: usize, required: bool, value: impl Fn(usize) -> String) -> Column {
        let mut c = Column::new("s", ColumnType::String, required, n, 0);
        for r in 0..n {
            if required || present(r) {
                c.push_str(&value(r));
            } else {
                c.push_nulls(1);
            }
        }
        c
    }

    #[test]
    fn few_distinct_strings_are_dictionary_encoded_and_read_back() {
        let colours = ["red", "green", "blüe"];
        type Case = (&'static str, usize, bool, Box<dyn Fn(usize) -> String>);
        let cases: Vec<Case> = vec![
            // one value everywhere (an event name in its partition): one RLE run
            (
                "constant",
                40,
                true,
                Box::new(|_| "video:viewed".to_string()),
            ),
            // three values with nulls, over several bit-packed runs
            (
                "colours",
                1100,
                false,
                Box::new(move |r| colours[r * 7 % 3].to_string()),
            ),
            // 300 values, in runs of three: 9 bits per index
            (
                "wide",
                2000,
                true,
                Box::new(|r| format!("city-{}", r / 3 * 7 % 300)),
            ),
        ];
        for codec in [
            Codec::Uncompressed,
            Codec::Snappy,
            Codec::Zstd(1),
            Codec::AUTO,
        ] {
            for (what, n, required, value) in &cases {
                let col = strings(*n, *required, value);
                let cols = vec![col];
                let mut w = FileWriter::new(codec, schema_of(&cols));
                w.write_row_group(&cols).expect("write");
                let bytes = w.finish("t", &[]);
                let chunk = meta(&bytes).metadata().row_group(0).column(0).clone();
                assert!(
                    chunk.dictionary_page_offset().is_some(),
                    "{what} {codec}: no dictionary page"
                );
                assert!(
                    chunk
                        .encodings()
                        .any(|e| e == parquet::basic::Encoding::PLAIN_DICTIONARY),
                    "{what} {codec}"
                );
                let b = read(&bytes);
                let s = b.column(0).as_string::<i32>();
                assert_eq!(b.num_rows(), *n);
                for r in 0..*n {
                    if *required || present(r) {
                        assert_eq!(s.value(r), value(r), "{what} {codec} row {r}");
                    } else {
                        assert!(s.is_null(r), "{what} {codec} row {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn ids_and_free_text_stay_plain() {
        // unique values, and values half of them distinct: a dictionary would
        // not be smaller
        let unique = strings(500, true, |r| format!("{r:08x}-4e1c-9a7b"));
        assert!(dictionary_of(&unique).is_none());
        let half = strings(500, true, |r| format!("v{}", r / 2));
        assert!(dictionary_of(&half).is_none());
        let few = strings(500, true, |r| format!("v{}", r % 20 / 3));
        assert!(dictionary_of(&few).is_some());
        // 8 different values first: given up without hashing, even though a
        // dictionary would have been smaller
        let sorted = strings(500, true, |r| format!("v{}", r % 20));
        assert!(dictionary_of(&sorted).is_none());
        let cols = vec![unique];
        let mut w = FileWriter::new(Codec::Zstd(1), schema_of(&cols));
        w.write_row_group(&cols).expect("write");
        let bytes = w.finish("t", &[]);
        let chunk = meta(&bytes).metadata().row_group(0).column(0).clone();
        assert_eq!(chunk.dictionary_page_offset(), None);
    }

    #[test]
    fn bit_widths_fit_the_dictionary() {
        assert_eq!(
            [1, 2, 3, 4, 5, 256, 257].map(bit_width),
            [1, 1, 2, 2, 3, 8, 9]
        );
    }

    #[test]
    fn a_string_column_grows_once_for_the_rows_it_was_made_for() {
        // no size guess: the first value's size stands for the rest
        let rows = 200;
        let mut s = Column::new("s", ColumnType::String, false, rows, 0);
        let mut grew = 0;
        let mut cap = s.data_capacity();
        for i in 0..rows {
            s.push_str(&"x".repeat(40 + i % 7));
            if s.data_capacity() != cap {
                grew += 1;
                cap = s.data_capacity();
            }
        }
        assert!(
            grew <= 2,
            "the string data grew {grew} times for {rows} rows"
        );
        // a huge first value does not reserve its size for every coming row
        let mut big = Column::new("b", ColumnType::String, false, 1_000_000, 0);
        big.push_str(&"y".repeat(1 << 20));
        assert!(big.data_capacity() <= (1 << 20) + 4 + MAX_STRING_RESERVE);
    }

    #[test]
    fn auto_compresses_small_chunks_with_snappy_and_large_ones_with_zstd() {
        // one file, three chunks of 40 rows: 230 bytes (below any codec), 960
        // bytes (below the switch), and 2,560 bytes (above it)
        let text = |name: &str, rows: usize, len: usize| {
            let mut c = Column::new(name, ColumnType::String, true, rows, 0);
            for r in 0..rows {
                c.push_str(&format!("{r:0len$}"));
            }
            c
        };
        let cols = vec![text("a", 40, 1), text("b", 40, 20), text("c", 40, 60)];
        let mut w = FileWriter::new(Codec::AUTO, schema_of(&cols));
        w.write_row_group(&cols).expect("write");
        let bytes = w.finish("t", &[]);
        let m = meta(&bytes);
        let rg = m.metadata().row_group(0);
        assert_eq!(rg.column(0).compression(), Compression::UNCOMPRESSED);
        assert_eq!(rg.column(1).compression(), Compression::SNAPPY);
        assert!(matches!(rg.column(2).compression(), Compression::ZSTD(_)));
        // every chunk reads back, each with its own codec
        let b = read(&bytes);
        assert_eq!(b.column(0).as_string::<i32>().value(39), "39");
        assert_eq!(
            b.column(1).as_string::<i32>().value(39),
            format!("{:020}", 39)
        );
        assert_eq!(
            b.column(2).as_string::<i32>().value(39),
            format!("{:060}", 39)
        );
        // the switch is at the first page's size, both sides
        for (at, zstd) in [(960, true), (961, false)] {
            let cols = vec![text("b", 40, 20)];
            let mut w = FileWriter::new(Codec::Auto { zstd_from: at }, schema_of(&cols));
            w.write_row_group(&cols).expect("write");
            let m = meta(&w.finish("t", &[]));
            let got = m.metadata().row_group(0).column(0).compression();
            assert_eq!(
                matches!(got, Compression::ZSTD(_)),
                zstd,
                "switch at {at}: {got:?}"
            );
        }
    }

    #[test]
    fn row_groups_follow_one_another() {
        let spec = ColumnSpec {
            name: "i".to_string(),
            ty: ColumnType::Int64,
            required: false,
            bytes_per_row: 0,
        };
        let mut w = FileWriter::new(Codec::Zstd(3), vec![spec]);
        for g in 0..3i64 {
            let mut cols = w.new_columns(2);
            cols[0].push_i64(g);
            cols[0].push_nulls(1);
            w.write_row_group(&cols).expect("write");
        }
        let bytes = w.finish("t", &[]);
        assert_eq!(meta(&bytes).metadata().num_row_groups(), 3);
        let b = read(&bytes);
        let col = b.column(0).as_primitive::<Int64Type>();
        let got: Vec<Option<i64>> = (0..6)
            .map(|i| col.is_valid(i).then(|| col.value(i)))
            .collect();
        assert_eq!(got, [Some(0), None, Some(1), None, Some(2), None]);
    }

    #[test]
    fn codecs_parse_and_say_what_is_wrong() {
        assert_eq!(Codec::parse("auto"), Ok(Codec::AUTO));
        assert_eq!(Codec::parse("zstd"), Ok(Codec::Zstd(1)));
        assert_eq!(Codec::parse("ZSTD(7)"), Ok(Codec::Zstd(7)));
        assert_eq!(Codec::parse("snappy"), Ok(Codec::Snappy));
        assert_eq!(Codec::parse("none"), Ok(Codec::Uncompressed));
        let e = Codec::parse("zstd(40)").expect_err("level out of range");
        assert!(e.contains("1 to 22"), "{e}");
        assert!(Codec::parse("gzip").is_err());
        for c in [
            Codec::AUTO,
            Codec::Snappy,
            Codec::Zstd(4),
            Codec::Uncompressed,
        ] {
            assert_eq!(Codec::parse(&c.to_string()), Ok(c));
        }
    }
}
