//! Durable atomic file writes, in one place (Parquet files of the warehouse, model files of the
//! registry, the consumer's and the archiver's checkpoints).
//!
//! A file is replaced by writing a temporary file on the same file system, flushing and fsyncing it,
//! renaming it over the target, and fsyncing the target's folder. The rename makes the replacement
//! atomic: a reader opens either the old file or the whole new one. The two fsyncs make it durable:
//! without the first, a crash after the rename can leave the new name pointing at data still only in
//! the page cache (an empty or torn file); without the second, the rename itself can be lost and the
//! old file come back. On non-Unix platforms folders cannot be opened for syncing and that step does
//! nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A failed replacement: the writer's own error, or the file system's at a named step. The target
/// is untouched either way (the temporary file may remain, and is overwritten by the next attempt).
#[derive(Debug)]
pub enum ReplaceError<E> {
    /// The write callback failed.
    Write(E),
    /// A file-system step failed.
    Io {
        /// What was being done (`creating`, `syncing`, `renaming into place`, ...).
        step: &'static str,
        /// The file or folder it was done to.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl<E: std::fmt::Display> std::fmt::Display for ReplaceError<E> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplaceError::Write(error) => error.fmt(formatter),
            ReplaceError::Io { step, path, source } => {
                write!(formatter, "{step} {}: {source}", path.display())
            }
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ReplaceError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplaceError::Write(error) => error.source(),
            ReplaceError::Io { source, .. } => Some(source),
        }
    }
}

impl ReplaceError<io::Error> {
    /// The error as an `io::Error` (for writers whose own errors are I/O errors), keeping its kind
    /// and naming the step and path.
    pub fn into_io(self) -> io::Error {
        match self {
            ReplaceError::Write(error) => error,
            ReplaceError::Io { step, path, source } => io::Error::new(
                source.kind(),
                format!("{step} {}: {source}", path.display()),
            ),
        }
    }
}

fn step<E>(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ReplaceError<E> {
    let path = path.to_path_buf();
    move |source| ReplaceError::Io { step, path, source }
}

/// The temporary sibling of `path` that [`replace_file`] writes first: `<name>.tmp`.
pub fn sibling_tmp(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with what `write` writes, through the temporary file `tmp` (on the same file
/// system; a folder of its own keeps half-written files out of a folder that readers list), durably
/// and atomically (module docs). Returns what `write` returned.
pub fn replace_file_via<T, E>(
    tmp: &Path,
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, E>,
) -> Result<T, ReplaceError<E>> {
    let file = File::create(tmp).map_err(step("creating", tmp))?;
    let mut buffered = BufWriter::new(file);
    let value = write(&mut buffered).map_err(ReplaceError::Write)?;
    let file = buffered
        .into_inner()
        .map_err(|error| error.into_error())
        .map_err(step("flushing", tmp))?;
    file.sync_all().map_err(step("syncing", tmp))?;
    drop(file);
    fs::rename(tmp, path).map_err(step("renaming into place", path))?;
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        sync_dir(parent).map_err(step("syncing the folder", parent))?;
    }
    Ok(value)
}

/// Replaces `path` with `contents` through its [`sibling_tmp`], durably and atomically.
pub fn replace_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    replace_file_via(&sibling_tmp(path), path, |file| file.write_all(contents))
        .map_err(ReplaceError::into_io)
}

/// Writes `contents` to `path` (replacing it) and fsyncs it, without a rename: for files inside a
/// folder that is itself renamed into place afterwards (then [`sync_dir`] the folder first).
pub fn write_synced(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Fsyncs a folder so that entries created, renamed or removed in it survive a crash; does nothing
/// on non-Unix platforms.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_file_remains() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("checkpoint.bin");
        replace_file(&path, b"first").expect("writes");
        replace_file(&path, b"second, longer").expect("replaces");
        assert_eq!(fs::read(&path).expect("reads"), b"second, longer");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("lists")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("checkpoint.bin")]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_returns_the_writers_error() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("model.bin");
        replace_file(&path, b"old").expect("writes");
        let failed = replace_file_via(&sibling_tmp(&path), &path, |file| {
            file.write_all(b"half")?;
            Err::<(), _>(io::Error::other("encoder failed"))
        });
        assert!(
            matches!(failed, Err(ReplaceError::Write(ref error)) if error.to_string() == "encoder failed")
        );
        assert_eq!(fs::read(&path).expect("reads"), b"old");
    }

    #[test]
    fn file_system_errors_name_the_step_and_path() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("missing-folder").join("x.bin");
        let error = replace_file(&path, b"x").expect_err("no such folder");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().starts_with("creating "), "{error}");
        assert!(error.to_string().contains("x.bin.tmp"), "{error}");
    }

    #[test]
    fn a_written_file_and_its_folder_sync() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("report.md");
        write_synced(&path, b"# report").expect("writes");
        sync_dir(dir.path()).expect("syncs");
        assert_eq!(fs::read(&path).expect("reads"), b"# report");
    }
}
