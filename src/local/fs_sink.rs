//! A folder as the lake's object sink. A file appears atomically: it is
//! written to a hidden temporary name in its folder, synced, then renamed.
//! A run killed meanwhile leaves its temporary files behind:
//! [`remove_stale_temporaries`] removes them once the lake's lock is held.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use crate::core::sink::{ObjectSink, SinkError};

/// Lake files under a root folder.
#[derive(Debug, Clone)]
pub struct FsSink {
    root: PathBuf,
}

impl FsSink {
    /// A sink rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> FsSink {
        FsSink { root: root.into() }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a key; refuses keys that could leave the root.
    fn path_of(&self, operation: &'static str, key: &str) -> Result<PathBuf, SinkError> {
        let rel = Path::new(key);
        let safe = !key.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(SinkError {
                operation,
                key: key.into(),
                message: "key is not a plain relative path inside the lake".into(),
            });
        }
        Ok(self.root.join(rel))
    }
}

/// The temporary name a file is written to before it is renamed:
/// `.NAME.<uuidv7 in 32 hex digits>.tmp`, hidden and without the `.parquet`
/// ending, so that readers never pick it up.
fn temporary_name(name: &str) -> String {
    format!(".{name}.{}.tmp", uuid::Uuid::now_v7().simple())
}

/// Whether a file name has exactly the shape of [`temporary_name`].
fn is_temporary_name(name: &str) -> bool {
    let Some((base, id)) = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
        .and_then(|n| n.rsplit_once('.'))
    else {
        return false;
    };
    !base.is_empty()
        && id.len() == 32
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && uuid::Uuid::try_parse(id).is_ok_and(|u| u.get_version_num() == 7)
}

/// Removes the temporary files ([`temporary_name`]) that killed runs left in
/// the lake folder and every folder under it (symbolic links are not
/// followed). Only for the holder of the lake's lock: no other writer can
/// then be using them. What cannot be removed is logged and left; returns
/// how many files were removed.
pub fn remove_stale_temporaries(root: &Path) -> usize {
    let mut removed = 0;
    let mut folders = vec![root.to_path_buf()];
    while let Some(dir) = folders.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(
                    "cannot look for stale temporary files in {}: {e}",
                    dir.display()
                );
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => folders.push(path),
                Ok(t) if t.is_file() && is_temporary_name(&entry.file_name().to_string_lossy()) => {
                    match std::fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) => tracing::warn!(
                            "cannot remove {}, a temporary file of an interrupted run: {e}; remove it by hand",
                            path.display()
                        ),
                    }
                }
                _ => {}
            }
        }
    }
    if removed > 0 {
        tracing::info!(
            removed,
            "removed the temporary files of interrupted runs from the lake"
        );
    }
    removed
}

impl FsSink {
    /// The files (or, with `folders`, the folders, each ending in `/`)
    /// directly under `prefix`, hidden ones left out, sorted.
    async fn list_level(&self, prefix: &str, folders: bool) -> Result<Vec<String>, SinkError> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
        let err = |e: std::io::Error| SinkError {
            operation: "list",
            key: prefix.into(),
            message: e.to_string(),
        };
        let mut rd = match tokio::fs::read_dir(&dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let mut names = Vec::new();
        while let Some(entry) = rd.next_entry().await.map_err(err)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type().await.map_err(err)?;
            if name.starts_with('.') {
                continue;
            }
            if folders && kind.is_dir() {
                names.push(format!("{prefix}{name}/"));
            } else if !folders && kind.is_file() {
                names.push(format!("{prefix}{name}"));
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Writes `body` to a hidden temporary file beside `path`, synced, and then
/// either renames it over `path` or, with `create_only`, hard-links it to
/// `path` (which fails if `path` exists: an atomic create-if-absent).
/// Returns whether `path` was written.
fn write_atomically(path: &Path, body: &[u8], create_only: bool) -> std::io::Result<bool> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("key has no parent folder"))?;
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("key has no file name"))?
        .to_string_lossy();
    let tmp = dir.join(temporary_name(&name));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_data()?;
        if !create_only {
            return std::fs::rename(&tmp, path).map(|()| true);
        }
        let linked = match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        };
        std::fs::remove_file(&tmp)?;
        linked
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl ObjectSink for FsSink {
    fn uri(&self, key: &str) -> String {
        let root = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        format!(
            "file://{}/{key}",
            root.to_string_lossy().trim_end_matches('/')
        )
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let path = self.path_of("put", key)?;
        let err = |e: std::io::Error| SinkError {
            operation: "put",
            key: key.into(),
            message: format!("{e} (check that the lake folder is writable and the disk has space)"),
        };
        tokio::task::spawn_blocking(move || write_atomically(&path, &body, false))
            .await
            .map_err(|e| err(std::io::Error::other(e)))?
            .map_err(err)
            .map(|_| ())
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, SinkError> {
        let path = self.path_of("put_if_absent", key)?;
        let err = |e: std::io::Error| SinkError {
            operation: "put_if_absent",
            key: key.into(),
            message: format!("{e} (check that the lake folder is writable and the disk has space)"),
        };
        tokio::task::spawn_blocking(move || write_atomically(&path, &body, true))
            .await
            .map_err(|e| err(std::io::Error::other(e)))?
            .map_err(err)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        let path = self.path_of("get", key)?;
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SinkError {
                operation: "get",
                key: key.into(),
                message: e.to_string(),
            }),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        self.list_level(prefix, false).await
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        self.list_level(prefix, true).await
    }

    async fn delete(&self, key: &str) -> Result<(), SinkError> {
        let path = self.path_of("delete", key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(SinkError {
                    operation: "delete",
                    key: key.into(),
                    message: format!("{e} (check that the lake folder is writable)"),
                });
            }
        }
        // an emptied folder goes too (S3 has no empty folders either)
        if let Some(dir) = path.parent()
            && dir != self.root
        {
            let _ = tokio::fs::remove_dir(dir).await;
        }
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, SinkError> {
        let path = self.path_of("exists", key)?;
        tokio::fs::try_exists(&path).await.map_err(|e| SinkError {
            operation: "exists",
            key: key.into(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_creates_folders_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = FsSink::new(dir.path());
        sink.put("a=1/b=2/f.parquet", Bytes::from_static(b"x"))
            .await
            .expect("put");
        assert!(sink.exists("a=1/b=2/f.parquet").await.expect("exists"));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a=1/b=2"))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["f.parquet"]);
    }

    #[tokio::test]
    async fn put_if_absent_never_replaces_and_list_sees_only_whole_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = FsSink::new(dir.path());
        assert!(
            sink.put_if_absent("s/v1", Bytes::from_static(b"a"))
                .await
                .expect("first")
        );
        assert!(
            !sink
                .put_if_absent("s/v1", Bytes::from_static(b"b"))
                .await
                .expect("second")
        );
        assert_eq!(
            sink.get("s/v1").await.expect("get").as_deref(),
            Some(&b"a"[..])
        );
        assert_eq!(sink.get("s/v2").await.expect("get"), None);
        assert_eq!(sink.list("s/").await.expect("list"), ["s/v1"]);
        assert!(sink.list("nothing/").await.expect("list").is_empty());
    }

    #[test]
    fn only_names_of_the_temporary_shape_are_temporary() {
        assert!(is_temporary_name(&temporary_name("part-1.parquet")));
        for name in [
            "part-1.parquet",
            ".part-1.parquet.tmp",
            "..0190c7a3b3f07c4e8a1b2c3d4e5f6071.tmp",
            ".x.0190C7A3B3F07C4E8A1B2C3D4E5F6071.tmp",
            // a version 4 uuid is not ours
            ".x.0190c7a3b3f04c4e8a1b2c3d4e5f6071.tmp",
            "x.0190c7a3b3f07c4e8a1b2c3d4e5f6071.tmp",
        ] {
            assert!(!is_temporary_name(name), "{name}");
        }
    }

    #[test]
    fn stale_temporaries_are_removed_everywhere_in_the_lake_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stale = [
            format!("a=1/b=2/{}", temporary_name("part-1.parquet")),
            format!("_errors/d=1/{}", temporary_name("part-2.ndjson")),
            format!("_staging/{}", temporary_name("x")),
        ];
        let kept = [
            "a=1/b=2/part-1.parquet",
            "a=1/.notes.tmp",
            "_state/dedup.redb",
        ];
        for f in stale.iter().map(String::as_str).chain(kept) {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, "x").expect("write");
        }
        assert_eq!(remove_stale_temporaries(dir.path()), 3);
        for f in &stale {
            assert!(!dir.path().join(f).exists(), "{f}");
        }
        for f in kept {
            assert!(dir.path().join(f).exists(), "{f}");
        }
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = FsSink::new(dir.path().join("lake"));
        for key in ["../x", "/etc/x", "a/../../x", "", "./a"] {
            assert!(sink.put(key, Bytes::new()).await.is_err(), "{key}");
        }
        assert!(!dir.path().join("x").exists());
    }
}
