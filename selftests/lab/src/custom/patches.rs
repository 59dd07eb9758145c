//! Patch sets: the table's directories under `selftests/lab/patches/`, and applying a patch to
//! a tree with its failing hunks reported.

use super::CustomKernelError;
use crate::kernel::KernelSpec;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the project's patch sets live (`selftests/lab/patches/<name>/*.patch`).
pub fn patches_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("patches")
}

/// The patch files of `spec`'s patch sets, in application order.
pub fn patch_files(spec: &KernelSpec) -> Result<Vec<PathBuf>, CustomKernelError> {
    let mut files = Vec::new();
    for set in spec.patches {
        let dir = patches_dir().join(set);
        let err = |detail: String| CustomKernelError::PatchSet {
            kernel: spec.name.to_string(),
            dir: dir.clone(),
            detail,
        };
        let mut set_files: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| err(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "patch"))
            .collect();
        if set_files.is_empty() {
            return Err(err("no *.patch files".into()));
        }
        set_files.sort();
        files.extend(set_files);
    }
    Ok(files)
}

/// `patch -p1` of `patch` in `tree`, never asking (`--batch`), refusing an already applied patch
/// (`--forward`), with `extra` options (`--dry-run`, `-R`).
pub(super) fn patch_command(tree: &Path, patch: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new("patch");
    c.current_dir(tree)
        .args(["-p1", "--forward", "--batch", "--no-backup-if-mismatch"])
        .args(extra)
        .arg("-i")
        // patch runs in the tree: a path relative to this process's directory must not be
        // read relative to the tree.
        .arg(std::path::absolute(patch).unwrap_or_else(|_| patch.to_path_buf()))
        .stdin(Stdio::null());
    c
}

/// What `patch` printed, stdout then stderr.
pub(super) fn patch_report(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Applies `patch` to the tree in `build` with `patch -p1`; a failure carries the failing hunks.
pub(super) fn apply_patch(
    kernel: &str,
    version: &str,
    build: &Path,
    patch: &Path,
) -> Result<(), CustomKernelError> {
    let io = |source| CustomKernelError::Io {
        kernel: kernel.to_string(),
        path: patch.to_path_buf(),
        source,
    };
    let out = patch_command(build, patch, &[]).output().map_err(io)?;
    if out.status.success() {
        return Ok(());
    }
    let output = patch_report(&out);
    let mut rejects = String::new();
    for line in output.lines() {
        // "saving rejects to file mm/vmscan.c.rej"
        if let Some(rej) = line.split("saving rejects to file ").nth(1) {
            if let Ok(text) = fs::read_to_string(build.join(rej.trim())) {
                rejects.push_str(&format!("--- rejected hunks ({}) ---\n{text}", rej.trim()));
            }
        }
    }
    Err(CustomKernelError::PatchFailed {
        kernel: kernel.to_string(),
        patch: patch.to_path_buf(),
        source_version: version.to_string(),
        output,
        rejects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custom::test_util::{tree, GOOD};

    #[test]
    fn a_patch_applies_and_a_bad_one_names_its_failing_hunk() {
        let dir = tree("good");
        let patch = dir.join("good.patch");
        fs::write(&patch, GOOD).unwrap();
        apply_patch("k", "7.2.13-1", &dir, &patch).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("mm/vmscan.c")).unwrap(),
            "a\nyoung(x);\nc\n"
        );

        // The same patch again no longer applies: its hunk and the rejected text are reported.
        let err = apply_patch("k", "7.2.13-1", &dir, &patch)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not apply to 7.2.13-1"), "{err}");
        assert!(err.contains("mm/vmscan.c"), "{err}");
        assert!(
            err.contains("-young_notify(x);") || err.contains("Reversed"),
            "{err}"
        );

        let dir = tree("bad");
        let patch = dir.join("bad.patch");
        fs::write(
            &patch,
            GOOD.replace(" a\n", " zzz\n")
                .replace("young_notify", "other"),
        )
        .unwrap();
        let err = apply_patch("k", "7.2.13-1", &dir, &patch)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Hunk #1 FAILED"), "{err}");
        assert!(err.contains("rejected hunks"), "{err}");
        assert_eq!(
            fs::read_to_string(dir.join("mm/vmscan.c")).unwrap(),
            "a\nyoung_notify(x);\nc\n"
        );
    }

    #[test]
    fn the_negative_control_patch_set_exists_and_only_drops_the_notifier() {
        let spec = crate::kernel::KERNELS
            .iter()
            .find(|k| k.name == "custom-7.2+no-secondary-mmu-aging")
            .unwrap();
        let files = patch_files(spec).unwrap();
        assert_eq!(files.len(), 1);
        let text = fs::read_to_string(&files[0]).unwrap();
        let removed: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-\t") || l.starts_with("- "))
            .collect();
        let added: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("+\t") || l.starts_with("+ "))
            .collect();
        assert_eq!(removed.len(), 4, "{removed:?}");
        assert!(removed.iter().all(|l| l.contains("_notify(")));
        assert!(added.iter().all(|l| !l.contains("_notify(")));
    }
}
