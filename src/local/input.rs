//! Input files for the CLI: NDJSON (one event per line) or Lambda Kinesis event
//! documents (`{"Records": [...]}`), either possibly gzip-compressed. The format
//! is detected from the content, not the file name; a UTF-8 byte-order mark at
//! the start of a file is skipped.
//!
//! Folders are walked once, in name order, skipping hidden entries. A symbolic
//! link is followed, but a folder or file already reached (through a link
//! cycle, or named twice) is skipped with a warning, and so is a link that
//! cannot be followed. The lake being written is never read as input.
//!
//! Bytes are reported as they are read (for a progress display). A gzip
//! stream that breaks off ends its file with one record kept as a dead letter
//! ([`Reject::CorruptInput`]), so the records before the break are ingested.

use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::decode::json_from_bytes;
use crate::core::reject::{MAX_KEPT_BYTES, Reject};
use crate::kinesis::{KinesisEvent, raw_records};
use crate::record::{Origin, RawRecord};

/// An input that cannot be read. The tool stops: nothing is skipped silently.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file or folder cannot be read.
    #[error("cannot read input {path}: {cause}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause (part of the message, not a separate source, so that
        /// it is printed once).
        cause: std::io::Error,
    },
    /// A file that starts like a Kinesis event document is not a valid one.
    #[error(
        "input {path} starts like a Lambda Kinesis event document ({{\"Records\": [...]}}) but is not one: {message}"
    )]
    KinesisDocument {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InputError + '_ {
    move |cause| InputError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Called with the number of bytes just read from an input file.
pub type OnRead = Arc<dyn Fn(u64) + Send + Sync>;

/// One file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// The path as given, or as found by walking a folder.
    pub path: PathBuf,
    /// Its size; none for a FIFO or a device, known only once read.
    pub size: Option<u64>,
}

/// The total size of the files, when every size is known.
pub fn total_bytes(files: &[InputFile]) -> Option<u64> {
    files.iter().map(|f| f.size).sum()
}

/// A file's or folder's identity: (device, inode).
fn identity(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// The lake folder, never read as input.
struct Lake {
    id: (u64, u64),
    real: PathBuf,
}

impl Lake {
    /// The lake folder, if it exists (one that does not holds nothing to skip).
    fn find(lake: &Path) -> Option<Lake> {
        let meta = std::fs::metadata(lake).ok()?;
        let real = std::fs::canonicalize(lake).ok()?;
        Some(Lake {
            id: identity(&meta),
            real,
        })
    }

    /// Why a folder or file (by its real path) is part of the lake that is
    /// not input: the lake itself, or anything under a `_` or `.` folder of it.
    fn part(&self, real: &Path, id: (u64, u64)) -> Option<String> {
        if id == self.id {
            return Some("it is the lake folder (--lake)".into());
        }
        let first = real.strip_prefix(&self.real).ok()?.components().next();
        match first {
            Some(Component::Normal(n)) if n.to_string_lossy().starts_with(['_', '.']) => Some(
                format!("it is inside the lake's own {} folder", n.to_string_lossy()),
            ),
            _ => None,
        }
    }
}

/// The files named by the inputs: files as given, folders walked
/// recursively in name order (see the module documentation). `lake` is the
/// lake folder being written: it is not read, nor anything under its `_` and
/// `.` folders.
pub fn expand(inputs: &[PathBuf], lake: Option<&Path>) -> Result<Vec<InputFile>, InputError> {
    let mut walk = Walk {
        files: Vec::new(),
        seen: HashSet::new(),
        lake: lake.and_then(Lake::find),
    };
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(io(p))?;
        let real = std::fs::canonicalize(p).map_err(io(p))?;
        walk.entry(p, &real, &meta)?;
    }
    Ok(walk.files)
}

/// One walk over the inputs.
struct Walk {
    files: Vec<InputFile>,
    /// Folders and files reached so far.
    seen: HashSet<(u64, u64)>,
    lake: Option<Lake>,
}

impl Walk {
    /// Takes a file or walks a folder, unless it is part of the lake or was
    /// reached before.
    fn entry(&mut self, shown: &Path, real: &Path, meta: &Metadata) -> Result<(), InputError> {
        let id = identity(meta);
        if let Some(why) = self.lake.as_ref().and_then(|l| l.part(real, id)) {
            tracing::info!("{}: not read as input: {why}", shown.display());
            return Ok(());
        }
        if !self.seen.insert(id) {
            tracing::warn!(
                "{}: skipped: it is {}, already read (a symbolic link loop, or an input named twice)",
                shown.display(),
                real.display()
            );
            return Ok(());
        }
        if meta.is_dir() {
            return self.folder(shown, real);
        }
        self.files.push(InputFile {
            path: shown.to_path_buf(),
            size: meta.is_file().then_some(meta.len()),
        });
        Ok(())
    }

    /// Walks a folder's entries in name order.
    fn folder(&mut self, dir: &Path, real: &Path) -> Result<(), InputError> {
        let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .collect::<Result<_, _>>()
            .map_err(io(dir))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let path = e.path();
            let kind = e.file_type().map_err(io(&path))?;
            let (meta, child_real) = if kind.is_symlink() {
                match std::fs::metadata(&path).and_then(|m| Ok((m, std::fs::canonicalize(&path)?)))
                {
                    Ok(followed) => followed,
                    Err(err) => {
                        tracing::warn!(
                            "{}: skipped: a symbolic link that cannot be followed ({err})",
                            path.display()
                        );
                        continue;
                    }
                }
            } else {
                (e.metadata().map_err(io(&path))?, real.join(&name))
            };
            if !meta.is_dir() && !meta.is_file() {
                // a FIFO, socket or device is read only when named: it could block
                tracing::warn!(
                    "{}: skipped: not a regular file (name a FIFO or device as an input to read it)",
                    path.display()
                );
                continue;
            }
            self.entry(&path, &child_real, &meta)?;
        }
        Ok(())
    }
}

/// The two input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON event per line.
    Ndjson,
    /// A Lambda Kinesis event document.
    KinesisEvent,
}

/// Detects the format from the first bytes: a JSON object whose first key is
/// `"Records"` is a Kinesis event document; anything else is NDJSON.
pub fn detect(head: &[u8]) -> Format {
    let rest = head.trim_ascii_start();
    if let Some(after) = rest.strip_prefix(b"{")
        && after.trim_ascii_start().starts_with(b"\"Records\"")
    {
        return Format::KinesisEvent;
    }
    Format::Ndjson
}

/// The UTF-8 byte-order mark some editors put at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Bytes read between two reports of a [`Counted`] reader.
const REPORT_EVERY: u64 = 64 << 10;

/// A buffered reader that counts the bytes taken from it and reports them,
/// every [`REPORT_EVERY`] bytes and when dropped.
struct Counted<R> {
    inner: R,
    /// Bytes taken so far (shared: the gzip decoder owns the reader).
    taken: Arc<AtomicU64>,
    unreported: u64,
    on_read: OnRead,
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let available = self.inner.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.taken.fetch_add(n as u64, Ordering::Relaxed);
        self.unreported += n as u64;
        if self.unreported >= REPORT_EVERY {
            (self.on_read)(std::mem::take(&mut self.unreported));
        }
    }
}

impl<R> Drop for Counted<R> {
    fn drop(&mut self) {
        if self.unreported > 0 {
            (self.on_read)(self.unreported);
        }
    }
}

/// An opened input: its decoded bytes, and for a gzip file the count of
/// compressed bytes read (where a broken stream broke).
struct Opened {
    reader: Box<dyn BufRead + Send>,
    gzip: Option<Arc<AtomicU64>>,
}

fn open(path: &Path, on_read: OnRead) -> Result<Opened, InputError> {
    let file = File::open(path).map_err(io(path))?;
    let taken = Arc::new(AtomicU64::new(0));
    let mut reader = Counted {
        inner: BufReader::with_capacity(1 << 20, file),
        taken: taken.clone(),
        unreported: 0,
        on_read,
    };
    let gz = reader
        .fill_buf()
        .map_err(io(path))?
        .starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Opened {
            reader: Box::new(BufReader::with_capacity(
                1 << 20,
                flate2::bufread::MultiGzDecoder::new(reader),
            )),
            gzip: Some(taken),
        }
    } else {
        Opened {
            reader: Box::new(reader),
            gzip: None,
        }
    })
}

/// Whether a read error of a gzip stream means the stream itself is broken
/// (truncated, corrupt), rather than the file unreadable.
fn broken_stream(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
    matches!(e.kind(), InvalidData | InvalidInput | UnexpectedEof)
}

/// The record that ends a file whose gzip stream broke: what was decoded of
/// its unfinished part (at most [`MAX_KEPT_BYTES`]), and where it broke.
fn broken_tail(
    mut data: Vec<u8>,
    path: String,
    line: u64,
    taken: &AtomicU64,
    cause: &std::io::Error,
    document: bool,
) -> RawRecord {
    data.truncate(MAX_KEPT_BYTES);
    let reject = Reject::CorruptInput {
        at_byte: taken.load(Ordering::Relaxed),
        line,
        cause: cause.to_string(),
        kept: data.len(),
        document,
    };
    RawRecord {
        data,
        origin: Origin::File { path, line },
        unreadable: Some(reject),
    }
}

/// The records of one input file, in order.
pub enum FileRecords {
    /// Lines of an NDJSON file.
    Ndjson(NdjsonLines),
    /// Records of a Kinesis event document.
    Kinesis(std::vec::IntoIter<RawRecord>),
}

/// The lines of an NDJSON file, as records.
pub struct NdjsonLines {
    reader: Box<dyn BufRead + Send>,
    /// Absolute path, for origins.
    path: String,
    /// The path as given, for errors.
    shown: PathBuf,
    /// Lines read so far.
    line: u64,
    /// Compressed bytes read, for a gzip file.
    gzip: Option<Arc<AtomicU64>>,
    /// The stream broke: nothing more to read.
    ended: bool,
    /// The line being read (one buffer for every line: each record gets an
    /// exact-size copy, not a vector grown byte range by byte range).
    buf: Vec<u8>,
}

/// The absolute path of an input, for origins.
fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

impl FileRecords {
    /// Opens a file and detects its format; `on_read` is told the bytes of
    /// the file as they are read.
    pub fn open(path: &Path, on_read: OnRead) -> Result<FileRecords, InputError> {
        let Opened { mut reader, gzip } = open(path, on_read)?;
        let (format, bom) = match reader.fill_buf() {
            Ok(head) => {
                let bom = head.starts_with(BOM);
                (detect(&head[if bom { BOM.len() } else { 0 }..]), bom)
            }
            Err(e) => {
                // a gzip stream broken from its start: one dead letter says so
                let Some(taken) = gzip.filter(|_| broken_stream(&e)) else {
                    return Err(io(path)(e));
                };
                let tail = broken_tail(Vec::new(), absolute(path), 1, &taken, &e, false);
                return Ok(FileRecords::Kinesis(vec![tail].into_iter()));
            }
        };
        if bom {
            reader.consume(BOM.len());
        }
        match format {
            Format::KinesisEvent => {
                let mut buf = Vec::new();
                if let Err(e) = reader.read_to_end(&mut buf) {
                    let Some(taken) = gzip.filter(|_| broken_stream(&e)) else {
                        return Err(io(path)(e));
                    };
                    let line = buf.iter().filter(|b| **b == b'\n').count() as u64 + 1;
                    let tail = broken_tail(buf, absolute(path), line, &taken, &e, true);
                    return Ok(FileRecords::Kinesis(vec![tail].into_iter()));
                }
                let event = json_from_bytes::<KinesisEvent>(&buf).map_err(|e| {
                    InputError::KinesisDocument {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    }
                })?;
                let records = raw_records(event).map_err(|e| InputError::KinesisDocument {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
                Ok(FileRecords::Kinesis(records.into_iter()))
            }
            Format::Ndjson => Ok(FileRecords::Ndjson(NdjsonLines {
                reader,
                path: absolute(path),
                shown: path.to_path_buf(),
                line: 0,
                gzip,
                ended: false,
                buf: Vec::new(),
            })),
        }
    }
}

impl Iterator for FileRecords {
    type Item = Result<RawRecord, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            FileRecords::Kinesis(it) => it.next().map(Ok),
            FileRecords::Ndjson(lines) => lines.next(),
        }
    }
}

impl Iterator for NdjsonLines {
    type Item = Result<RawRecord, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.ended {
            let buf = &mut self.buf;
            buf.clear();
            match self.reader.read_until(b'\n', buf) {
                Ok(0) => return None,
                Ok(_) => {
                    self.line += 1;
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    if buf.trim_ascii().is_empty() {
                        continue;
                    }
                    return Some(Ok(RawRecord::new(
                        buf.to_vec(),
                        Origin::File {
                            path: self.path.clone(),
                            line: self.line,
                        },
                    )));
                }
                Err(e) => {
                    let Some(taken) = self.gzip.as_ref().filter(|_| broken_stream(&e)) else {
                        return Some(Err(io(&self.shown)(e)));
                    };
                    self.ended = true;
                    self.line += 1;
                    let tail = broken_tail(
                        std::mem::take(buf),
                        self.path.clone(),
                        self.line,
                        taken,
                        &e,
                        false,
                    );
                    return Some(Ok(tail));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_kinesis_documents_by_their_first_key() {
        assert_eq!(detect(b"  {\n  \"Records\": []}"), Format::KinesisEvent);
        assert_eq!(detect(br#"{"event_uuid":"x"}"#), Format::Ndjson);
        assert_eq!(detect(b""), Format::Ndjson);
    }

    #[test]
    fn ndjson_lines_keep_their_line_numbers_and_skip_blank_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("in.ndjson");
        std::fs::write(&p, "{\"a\":1}\r\n\n   \n{\"b\":2}").expect("write");
        let recs: Vec<RawRecord> = FileRecords::open(&p, Arc::new(|_| {}))
            .expect("open")
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].data, b"{\"a\":1}");
        assert!(matches!(recs[1].origin, Origin::File { line: 4, .. }));
    }

    #[test]
    fn folders_are_walked_in_order_skipping_hidden_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        for f in ["b.json", "a.json", ".hidden", "sub/c.json"] {
            std::fs::write(dir.path().join(f), "").expect("write");
        }
        let files = expand(&[dir.path().to_path_buf()], None).expect("expand");
        let names: Vec<_> = files
            .iter()
            .map(|f| {
                f.path
                    .strip_prefix(dir.path())
                    .expect("inside")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["a.json", "b.json", "sub/c.json"]);
    }

    fn relative(files: &[InputFile], root: &Path) -> Vec<String> {
        files
            .iter()
            .map(|f| {
                f.path
                    .strip_prefix(root)
                    .expect("inside")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    fn no_count() -> OnRead {
        Arc::new(|_| {})
    }

    #[test]
    fn symlinked_folders_are_followed_once_and_cycles_skipped() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("d");
        std::fs::create_dir_all(d.join("sub")).expect("mkdir");
        std::fs::write(d.join("a.ndjson"), "").expect("write");
        std::fs::write(d.join("sub/b.ndjson"), "").expect("write");
        symlink(".", d.join("x")).expect("symlink");
        symlink(".", d.join("y")).expect("symlink");
        symlink("../d", d.join("self")).expect("symlink");
        symlink("sub", d.join("z-sub")).expect("symlink");
        symlink("missing", d.join("broken")).expect("symlink");
        let other = dir.path().join("other");
        std::fs::create_dir(&other).expect("mkdir");
        std::fs::write(other.join("c.ndjson"), "").expect("write");
        symlink(&other, d.join("w-other")).expect("symlink");
        let files = expand(std::slice::from_ref(&d), None).expect("expand");
        assert_eq!(
            relative(&files, &d),
            ["a.ndjson", "sub/b.ndjson", "w-other/c.ndjson"]
        );
        assert_eq!(total_bytes(&files), Some(0));
    }

    #[test]
    fn the_lake_inside_an_input_folder_is_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for f in [
            "in.ndjson",
            "lake/_state/dedup.redb",
            "lake/_errors/ingest_date=2024-01-01/part-1.ndjson",
            "lake/event_type=a/part-1.parquet",
        ] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, "x").expect("write");
        }
        let lake = d.join("lake");
        let files = expand(&[d.to_path_buf()], Some(&lake)).expect("expand");
        assert_eq!(relative(&files, d), ["in.ndjson"]);
        // nor a part of its own folders named as an input
        let named = [
            lake.join("_errors"),
            lake.join("_state/dedup.redb"),
            lake.clone(),
        ];
        assert!(expand(&named, Some(&lake)).expect("expand").is_empty());
    }

    #[test]
    fn a_fifo_is_read_when_named_and_has_no_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("mkfifo is not available: skipped");
            return;
        }
        std::fs::write(dir.path().join("a.ndjson"), "{}").expect("write");
        let files = expand(std::slice::from_ref(&fifo), None).expect("expand");
        assert_eq!(
            files,
            [InputFile {
                path: fifo,
                size: None
            }]
        );
        assert_eq!(total_bytes(&files), None);
        // found by walking a folder, it is skipped: opening it could block
        let walked = expand(&[dir.path().to_path_buf()], None).expect("expand");
        assert_eq!(relative(&walked, dir.path()), ["a.ndjson"]);
    }

    #[test]
    fn bytes_are_reported_as_they_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("in.ndjson");
        let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(1000));
        std::fs::write(&p, line.repeat(1000)).expect("write");
        let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = reports.clone();
        let on_read: OnRead = Arc::new(move |n| seen.lock().expect("lock").push(n));
        let mut recs = FileRecords::open(&p, on_read).expect("open");
        let mut read_at_first_report = None;
        let mut n = 0;
        for rec in recs.by_ref() {
            rec.expect("record");
            n += 1;
            if read_at_first_report.is_none() && !reports.lock().expect("lock").is_empty() {
                read_at_first_report = Some(n);
            }
        }
        drop(recs);
        let reports = reports.lock().expect("lock");
        assert!(
            read_at_first_report.is_some_and(|at| at < 100),
            "reported before the file was read: {read_at_first_report:?}"
        );
        assert!(reports.len() > 10, "{}", reports.len());
        assert_eq!(reports.iter().sum::<u64>(), (line.len() * 1000) as u64);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).expect("write to a Vec");
        enc.finish().expect("finish a Vec")
    }

    #[test]
    fn a_truncated_gzip_file_gives_its_lines_and_a_record_of_the_break() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("in.ndjson.gz");
        let text: String = (0..2000)
            .map(|i| format!("{{\"event_uuid\":\"u{i}\",\"n\":{}}}\n", i * 7919 % 10007))
            .collect();
        let z = gzip(text.as_bytes());
        std::fs::write(&p, &z[..z.len() / 2]).expect("write");
        let recs: Vec<RawRecord> = FileRecords::open(&p, no_count())
            .expect("open")
            .collect::<Result<_, _>>()
            .expect("no error: the break is a record");
        let (tail, lines) = recs.split_last().expect("records");
        assert!(lines.len() > 100, "{}", lines.len());
        assert!(lines.iter().all(|r| r.unreadable.is_none()));
        let Some(Reject::CorruptInput { line, at_byte, .. }) = &tail.unreadable else {
            panic!("{:?}", tail.unreadable)
        };
        assert!(matches!(tail.origin, Origin::File { line: l, .. } if l == *line));
        assert_eq!(*line, lines.len() as u64 + 1);
        assert!(*at_byte > 0 && *at_byte <= (z.len() / 2) as u64);
        assert!(
            text.lines()
                .nth(lines.len())
                .expect("line")
                .as_bytes()
                .starts_with(&tail.data)
        );

        // a Kinesis document cut short: one record says so
        let doc = br#"{"Records": [{"kinesis": {"data": "e30=", "sequenceNumber": "1"}}]}"#;
        let z = gzip(&doc.repeat(50));
        std::fs::write(&p, &z[..z.len() - 10]).expect("write");
        let recs: Vec<RawRecord> = FileRecords::open(&p, no_count())
            .expect("open")
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(recs.len(), 1);
        let reject = recs[0].decode().expect_err("rejected");
        assert_eq!(reject.code(), "corrupt_input");
        assert!(
            reject.to_string().contains("Kinesis event document"),
            "{reject}"
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("in.json");
        std::fs::write(&p, b"\xEF\xBB\xBF{\n  \"Records\": [\n  ]\n}\n").expect("write");
        assert!(matches!(
            FileRecords::open(&p, no_count()).expect("open"),
            FileRecords::Kinesis(_)
        ));
        std::fs::write(&p, b"\xEF\xBB\xBF{\"a\":1}\n").expect("write");
        let recs: Vec<RawRecord> = FileRecords::open(&p, no_count())
            .expect("open")
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(recs[0].data, b"{\"a\":1}");
    }
}
