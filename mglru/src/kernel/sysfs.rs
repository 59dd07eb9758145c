//! Small helpers for one-value sysfs/procfs/cgroupfs files, keeping the path in every error.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An I/O failure on a named kernel file.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {err}")]
pub struct KernelFileError {
    /// `read` or `write "<value>"`.
    pub op: String,
    /// The file.
    pub path: PathBuf,
    /// The underlying error (its raw errno is what callers map into specific errors).
    #[source]
    pub err: io::Error,
}

impl KernelFileError {
    /// The errno, if the kernel returned one.
    pub fn errno(&self) -> Option<i32> {
        self.err.raw_os_error()
    }
}

/// Reads a whole file and trims surrounding whitespace.
pub fn read_trimmed(path: impl AsRef<Path>) -> Result<String, KernelFileError> {
    let path = path.as_ref();
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|err| KernelFileError {
            op: "read".into(),
            path: path.to_path_buf(),
            err,
        })
}

/// Reads a file holding one unsigned decimal number.
pub fn read_u64(path: impl AsRef<Path>) -> Result<u64, KernelFileError> {
    let path = path.as_ref();
    let s = read_trimmed(path)?;
    s.parse().map_err(|_| KernelFileError {
        op: "read".into(),
        path: path.to_path_buf(),
        err: io::Error::new(io::ErrorKind::InvalidData, format!("not a number: {s:?}")),
    })
}

/// Writes `value` with a single `write(2)`, as sysfs attributes require. The file is opened with
/// O_TRUNC like a shell's `>` (kernfs and cgroupfs ignore it; plain files in tests need it).
pub fn write_str(path: impl AsRef<Path>, value: &str) -> Result<(), KernelFileError> {
    let path = path.as_ref();
    let wrap = |err| KernelFileError {
        op: format!("write {value:?} to"),
        path: path.to_path_buf(),
        err,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(wrap)?;
    f.write_all(value.as_bytes()).map_err(wrap)
}
