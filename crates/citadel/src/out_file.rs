//! Files the CLI writes for the user: whole or not at all.

use std::io::Write;
use std::path::Path;

/// What may already stand at the path.
pub enum Existing {
    /// A regular file there is replaced.
    Replace,
    /// Nothing there is replaced.
    Keep,
}

/// Writes `bytes` to `path` through a synced temporary file beside it,
/// renamed into place, so a reader never sees half a file. A path that
/// exists and is not a regular file (a device such as `/dev/null`, a
/// directory, a link) is never replaced; with [`Existing::Keep`] no
/// existing path is.
pub fn write(path: &Path, bytes: &[u8], existing: Existing) -> std::io::Result<()> {
    if let Ok(m) = path.symlink_metadata()
        && !m.is_file()
    {
        return Err(std::io::Error::other("the path exists and is not a regular file"));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    match existing {
        Existing::Replace => tmp.persist(path).map(drop).map_err(|e| e.error),
        Existing::Keep => tmp.persist_noclobber(path).map(drop).map_err(|e| e.error),
    }
}
