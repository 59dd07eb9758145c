//! The lab's cache directory (`~/.cache/agelab`), its locks and atomic file writes.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Errors of cache bookkeeping.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// No usable cache directory: neither `AGELAB_CACHE_DIR`, `XDG_CACHE_HOME` nor `HOME` is set.
    #[error("no cache directory: set AGELAB_CACHE_DIR, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// Creating, locking or writing a cache entry failed.
    #[error("cache {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// The root of the lab cache: `$AGELAB_CACHE_DIR`, else `$XDG_CACHE_HOME/agelab`, else
/// `$HOME/.cache/agelab`.
pub fn cache_root() -> Result<PathBuf, CacheError> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let root = if let Some(dir) = nonempty("AGELAB_CACHE_DIR") {
        PathBuf::from(dir)
    } else if let Some(dir) = nonempty("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("agelab")
    } else if let Some(home) = nonempty("HOME") {
        PathBuf::from(home).join(".cache/agelab")
    } else {
        return Err(CacheError::NoCacheDir);
    };
    create_dir(&root)?;
    Ok(root)
}

/// `fs::create_dir_all` with the path in the error.
pub fn create_dir(path: &Path) -> Result<(), CacheError> {
    fs::create_dir_all(path).map_err(|source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// An exclusive advisory lock on a cache entry, released on drop. Serializes concurrent lab
/// runs (parallel tests) that would download or build the same thing.
#[derive(Debug)]
pub struct CacheLock {
    _lock: nix::fcntl::Flock<File>,
}

impl CacheLock {
    /// Blocks until the lock file `path` is exclusively locked.
    pub fn acquire(path: &Path) -> Result<Self, CacheError> {
        let io_err = |source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            create_dir(parent)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err)?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_err(io::Error::from(errno)))?;
        Ok(Self { _lock: lock })
    }
}

/// Writes `data` to `path` through a temporary file and a rename, so readers never see a
/// partial file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CacheError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, data)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        })
}
