//! The kernel's own `tools/testing/selftests/kvm/access_tracking_perf_test`, built static from
//! the base's kept tree (the same source the mutants are built from) and cached beside it as
//! `<key>.kselftest/kselftest_access_tracking_perf_test` (renamed: the project has a binary of
//! the same name). In the guest it must be run by its full path: kvm_util loads the guest code
//! from the ELF file named by its argv[0].

use crate::cache::{create_dir, CacheError};
use crate::custom::KeptTree;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The binary's name on the guest's PATH (`/opt/agelab/bin/<name>`).
pub const KSELFTEST_NAME: &str = "kselftest_access_tracking_perf_test";

/// Errors of building the kernel selftest.
#[derive(Debug, thiserror::Error)]
pub enum KselftestError {
    /// A build step failed; the log says why.
    #[error("building the kernel's access_tracking_perf_test: {step} failed (log: {log})\n{tail}")]
    Step {
        /// The failing step.
        step: String,
        /// The build log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// Cache bookkeeping failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// The cached static binary, built first if missing. The caller holds the tree's lock.
pub fn kernel_access_tracking_test(tree: &KeptTree) -> Result<PathBuf, KselftestError> {
    let out_dir = tree.dir.with_extension("kselftest");
    let binary = out_dir.join(KSELFTEST_NAME);
    if binary.is_file() {
        return Ok(binary);
    }
    create_dir(&out_dir)?;
    let log = out_dir.join("build.log");
    let _ = fs::remove_file(&log);
    let kvm = tree.dir.join("tools/testing/selftests/kvm");
    let target = kvm.join("access_tracking_perf_test");
    let steps: [(&str, &Path, Vec<String>); 2] = [
        // `headers` generates usr/include in the tree, where the selftests look; `headers_install`
        // would copy it onto itself with rsync, which the lab does not need otherwise.
        (
            "make headers",
            &tree.dir,
            vec!["ARCH=x86_64".into(), "headers".into()],
        ),
        (
            "make access_tracking_perf_test (static)",
            &kvm,
            vec![
                "ARCH=x86_64".into(),
                "LDFLAGS=-static".into(),
                target.to_string_lossy().into_owned(),
            ],
        ),
    ];
    for (step, dir, args) in steps {
        run_step(step, dir, &args, &log)?;
    }
    let staged = out_dir.join(format!("{KSELFTEST_NAME}.new"));
    fs::copy(&target, &staged)
        .and_then(|_| fs::rename(&staged, &binary))
        .map_err(|source| CacheError::Io {
            path: binary.clone(),
            source,
        })?;
    Ok(binary)
}

/// Runs `make ARGS` in `dir`, output appended to `log`.
fn run_step(step: &str, dir: &Path, args: &[String], log: &Path) -> Result<(), KselftestError> {
    let open = || {
        fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| CacheError::Io {
                path: log.to_path_buf(),
                source,
            })
    };
    let status = Command::new("make")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .status();
    if status.as_ref().is_ok_and(|s| s.success()) {
        return Ok(());
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if let Err(e) = status {
        tail.push_str(&format!("\n{e}"));
    }
    Err(KselftestError::Step {
        step: step.to_string(),
        log: log.to_path_buf(),
        tail,
    })
}
