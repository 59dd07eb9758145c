//! The custom lab kernel: Debian's `linux-source-<series>` built with `tinyconfig` plus the lab's
//! Kconfig fragment (everything built in, no modules), cached by source version and config hash.

mod build;
mod cache;
mod fragment;
mod patches;
mod recipe;
mod tree;

pub use build::custom_kernel;
pub use cache::{named_builds, named_kernel};
pub use recipe::{LabRecipeError, Recipe, RecipeError};
pub use tree::{current_tree, KeptTree};

use super::apt::AptError;
use super::cache::CacheError;
use super::kernel::LabKernel;
use std::path::PathBuf;

/// Errors of the custom kernel build.
#[derive(Debug, thiserror::Error)]
pub enum CustomKernelError {
    /// Fetching the source package failed.
    #[error("{kernel}: {source}")]
    Apt {
        /// The lab kernel name.
        kernel: String,
        /// The apt failure.
        source: AptError,
    },
    /// A build step failed; the log tail says why.
    #[error("{kernel}: {step} failed (full log: {log})\n{tail}")]
    Step {
        /// The lab kernel name.
        kernel: String,
        /// The failing step.
        step: String,
        /// The build log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// Kconfig dropped options of the fragment (unmet dependencies).
    #[error("{kernel}: the final .config lacks fragment options (unmet dependencies?): {missing}")]
    ConfigMismatch {
        /// The lab kernel name.
        kernel: String,
        /// The options Kconfig did not keep.
        missing: String,
    },
    /// File handling in the build or cache directory failed.
    #[error("{kernel}: {path}: {source}")]
    Io {
        /// The lab kernel name.
        kernel: String,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A patch does not apply; `output` is patch's own report (which hunk failed, where).
    #[error("{kernel}: patch {patch} does not apply to {source_version}:\n{output}{rejects}")]
    PatchFailed {
        /// The lab kernel name.
        kernel: String,
        /// The patch file.
        patch: PathBuf,
        /// The source package version it was applied to.
        source_version: String,
        /// What `patch` printed.
        output: String,
        /// The rejected hunks, if patch wrote any.
        rejects: String,
    },
    /// A patch set named by the kernel table is missing or empty.
    #[error("{kernel}: patch set {dir}: {detail}")]
    PatchSet {
        /// The lab kernel name.
        kernel: String,
        /// The patch set directory.
        dir: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The base's kept tree could not be used or restored.
    #[error("kept tree {tree}: {detail}")]
    KeptTree {
        /// The tree.
        tree: PathBuf,
        /// What happened.
        detail: String,
    },
    /// Cache bookkeeping failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// A custom kernel and how it was obtained.
#[derive(Debug)]
pub struct CustomKernel {
    /// The kernel, ready to boot.
    pub kernel: LabKernel,
    /// Seconds the build took when it ran; `None` on a cache hit.
    pub built_in_secs: Option<f64>,
    /// Seconds the cached build took originally, if recorded.
    pub cold_build_secs: Option<f64>,
    /// How the cached build was made: `full`, or `kept tree of <base> <key>` (patches applied
    /// to the base's built tree; only the changed objects and the link were built).
    pub build_mode: Option<String>,
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::super::kernel::{KernelSpec, KERNELS};
    use std::fs;
    use std::path::PathBuf;

    pub(crate) fn tree(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agelab-patch-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("mm")).unwrap();
        fs::write(dir.join("mm/vmscan.c"), "a\nyoung_notify(x);\nc\n").unwrap();
        dir
    }

    /// A patch of [`tree`]'s `mm/vmscan.c`.
    pub(crate) const GOOD: &str = "--- a/mm/vmscan.c\n+++ b/mm/vmscan.c\n@@ -1,3 +1,3 @@\n a\n-young_notify(x);\n+young(x);\n c\n";

    pub(crate) fn custom_spec() -> &'static KernelSpec {
        KERNELS.iter().find(|k| k.name == "custom-7.2").unwrap()
    }

    pub(crate) fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agelab-recipe-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
