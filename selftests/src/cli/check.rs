//! Checks of command-line input the user can fix, made before any VM exists: each failure is one
//! message naming the option and its value, and exit code 2.

use agelab_mglru::AgingPolicy;
use agelab_vmm::memory::{check_layout, check_new_file_location};
use agelab_vmm::{Backing, MemoryError};
use std::path::{Path, PathBuf};

/// A value an option's parser refused (clap prints it after the option's name, exit 2).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A value of the wrong form or outside what the option takes.
    #[error("'{value}': {expected}")]
    NotExpected {
        /// The value given.
        value: String,
        /// What the option takes.
        expected: &'static str,
    },
    /// Not a size.
    #[error(transparent)]
    Size(#[from] agelab_util::units::UnitError),
    /// A zram swap size below what zram swap accepts.
    #[error("'{value}' is {bytes} bytes: zram swap needs at least {min_mib} MiB")]
    ZramTooSmall {
        /// The value given.
        value: String,
        /// Its size.
        bytes: u64,
        /// The least zram swap takes, MiB.
        min_mib: u64,
    },
}

/// Input the user can fix, found before anything ran.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A file the command would write cannot be created where asked.
    #[error("{option} {}: {why}", path.display())]
    OutputPath {
        /// The option (`--svg`, `--json-out`).
        option: &'static str,
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Guest memory cannot be created as asked (size, slots, backing, huge pages, file).
    #[error("{option} {value}: {err}")]
    Memory {
        /// The option at fault (`--mem`, `--slots`, `--backing`).
        option: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        #[source]
        err: MemoryError,
    },
    /// A number outside what the option allows.
    #[error("{option} {value}: {why}")]
    OutOfRange {
        /// The option.
        option: &'static str,
        /// Its value.
        value: String,
        /// The allowed range.
        why: String,
    },
}

/// Checks that `path` (the value of `option`) can be written: a file there or a new one in an
/// existing, writable directory.
pub fn output_path(option: &'static str, path: &Path) -> Result<(), InputError> {
    let bad = |why: String| InputError::OutputPath {
        option,
        path: path.to_path_buf(),
        why,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(bad("is a directory; a file name is needed".into())),
        Ok(_) => nix::unistd::access(path, nix::unistd::AccessFlags::W_OK)
            .map_err(|e| bad(format!("exists and is not writable: {e}"))),
        Err(_) => check_new_file_location(path).map_err(|e| bad(e.to_string())),
    }
}

/// Checks that directory `path` (the value of `option`, e.g. `--report`) can hold the files a
/// command writes, and creates it: an existing writable directory, or a new one in an existing,
/// writable parent.
pub fn output_dir(option: &'static str, path: &Path) -> Result<(), InputError> {
    let bad = |why: String| InputError::OutputPath {
        option,
        path: path.to_path_buf(),
        why,
    };
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => Err(bad("exists and is not a directory".into())),
        Ok(_) => nix::unistd::access(
            path,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .map_err(|e| bad(format!("directory is not writable: {e}"))),
        Err(_) => {
            // The same rule as for a new file: its parent must exist and be writable.
            check_new_file_location(path).map_err(|e| bad(e.to_string()))?;
            std::fs::create_dir(path).map_err(|e| bad(format!("cannot create it: {e}")))
        }
    }
}

/// Checks guest memory: `mem` bytes of `backing` in `slots` memslots, naming the option the
/// user most likely has to change.
pub fn memory(backing: &Backing, mem: u64, slots: usize) -> Result<(), InputError> {
    check_layout(backing, mem, slots).map_err(|err| {
        let (option, value) = match &err {
            MemoryError::NoHugePages { .. } | MemoryError::FileBacking { .. } => {
                ("--backing", backing.to_string())
            }
            MemoryError::BadSize { .. } if slots > 1 => ("--slots", slots.to_string()),
            _ => ("--mem", mem_text(mem)),
        };
        InputError::Memory { option, value, err }
    })
}

/// `mem` as the user probably wrote it (`256M`, `4097`).
fn mem_text(mem: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if mem >= 1 << shift && mem.is_multiple_of(1 << shift) {
            return format!("{}{unit}", mem >> shift);
        }
    }
    mem.to_string()
}

/// Checks that `value` of `option` lies in `range`.
pub fn in_range(
    option: &'static str,
    value: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<(), InputError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(InputError::OutOfRange {
            option,
            value: value.to_string(),
            why: format!("must be {}..={}", range.start(), range.end()),
        })
    }
}

/// Checks the engine's generation count (`--gens`).
pub fn generations(gens: usize) -> Result<(), InputError> {
    AgingPolicy {
        max_gens: gens,
        ..Default::default()
    }
    .validate()
    .map_err(|e| InputError::OutOfRange {
        option: "--gens",
        value: gens.to_string(),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_name_the_option_and_the_problem() {
        let e = output_path("--svg", Path::new("/nonexistent/dir/x.svg")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--svg /nonexistent/dir/x.svg: directory /nonexistent/dir does not exist"
        );
        let dir = std::env::temp_dir();
        let e = output_path("--json-out", &dir).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        output_path("--svg", &dir.join("agelab-check-new.svg")).unwrap();
        output_path("--svg", Path::new("relative-new.svg")).unwrap();
    }

    #[test]
    fn output_dirs_are_created_in_a_writable_parent() {
        let e = output_dir("--report", Path::new("/nonexistent/dir/r")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--report /nonexistent/dir/r: directory /nonexistent/dir does not exist"
        );
        let dir = std::env::temp_dir().join(format!("agelab-check-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        output_dir("--report", &dir).unwrap();
        assert!(dir.is_dir());
        output_dir("--report", &dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "x").unwrap();
        let e = output_dir("--report", &file).unwrap_err().to_string();
        assert!(e.ends_with("exists and is not a directory"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn memory_names_the_option_to_change() {
        let e = memory(&Backing::Memfd, 4097, 1).unwrap_err().to_string();
        assert!(e.starts_with("--mem 4097: memory size 4097 bytes"), "{e}");
        let e = memory(&Backing::Memfd, 1 << 30, 3).unwrap_err().to_string();
        assert!(e.starts_with("--slots 3: "), "{e}");
        memory(&Backing::Memfd, 64 << 20, 2).unwrap();
        let e = memory(&Backing::File("/nonexistent/dir/g".into()), 64 << 20, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--backing file:/nonexistent/dir/g: file backing /nonexistent/dir/g: directory /nonexistent/dir does not exist"),
            "{e}"
        );
        assert_eq!(mem_text(256 << 20), "256M");
        assert!(generations(20)
            .unwrap_err()
            .to_string()
            .starts_with("--gens 20: "));
        assert!(in_range("--vcpus", 0, 1..=256).is_err());
    }
}
