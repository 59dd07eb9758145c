//! Where a backing or output file may be created, and which existing files may back guest
//! memory.

use std::path::{Path, PathBuf};

/// Why a file cannot be created at a path.
#[derive(Debug, thiserror::Error)]
pub enum FileLocationError {
    /// The path is empty.
    #[error("empty path")]
    Empty,
    /// The path names a directory.
    #[error("is a directory; a file name is needed")]
    IsDirectory,
    /// Its directory does not exist.
    #[error("directory {} does not exist", .0.display())]
    NoDirectory(PathBuf),
    /// Its directory is something else.
    #[error("{} is not a directory", .0.display())]
    NotDirectory(PathBuf),
    /// Its directory cannot be written.
    #[error("directory {} is not writable: {err}", dir.display())]
    NotWritable {
        /// The directory.
        dir: PathBuf,
        /// What access(2) said.
        #[source]
        err: nix::Error,
    },
}

/// Whether a file can be created at `path` (which does not exist yet): its directory exists, is
/// a directory and is writable. For file backings and output files (SVG, JSON) alike.
pub fn check_new_file_location(path: &Path) -> Result<(), FileLocationError> {
    if path.as_os_str().is_empty() {
        return Err(FileLocationError::Empty);
    }
    if path.is_dir() {
        return Err(FileLocationError::IsDirectory);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Err(_) => Err(FileLocationError::NoDirectory(dir.to_path_buf())),
        Ok(m) if !m.is_dir() => Err(FileLocationError::NotDirectory(dir.to_path_buf())),
        Ok(_) => nix::unistd::access(
            dir,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .map_err(|err| FileLocationError::NotWritable {
            dir: dir.to_path_buf(),
            err,
        }),
    }
}

/// Why an existing file cannot back guest memory.
#[derive(Debug, thiserror::Error)]
pub(super) enum ExistingFileError {
    /// Not a regular file.
    #[error("exists and is not a regular file or directory")]
    NotRegular,
    /// It holds data agelab would overwrite.
    #[error(
        "exists and holds {0} bytes; agelab would overwrite them (remove it or choose a new path)"
    )]
    HoldsData(u64),
}

/// Refuses an existing backing file that is not a regular file or holds data.
pub(super) fn refuse_existing(m: &std::fs::Metadata) -> Result<(), ExistingFileError> {
    if !m.is_file() {
        return Err(ExistingFileError::NotRegular);
    }
    if m.len() > 0 {
        return Err(ExistingFileError::HoldsData(m.len()));
    }
    Ok(())
}
