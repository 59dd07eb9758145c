//! The project's binaries for the lab: built static into their own target directory so the
//! normal build is not invalidated.

use super::arch::ArchSpec;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors of building the static binaries.
#[derive(Debug, thiserror::Error)]
pub enum StaticBinsError {
    /// The source tree this binary was built from is gone.
    #[error("workspace {0} not found; pass --bins DIR with static binaries")]
    NoWorkspace(PathBuf),
    /// cargo failed.
    #[error(
        "static build of the workspace for {target} failed ({status}); see cargo's output above"
    )]
    Build {
        /// The Rust target.
        target: String,
        /// cargo's exit status.
        status: String,
    },
    /// cargo could not be started.
    #[error("running cargo: {0}")]
    Spawn(std::io::Error),
}

/// RUSTFLAGS of the static build (with any `AGELAB_LAB_RUSTFLAGS` before them): debug info would
/// make the initramfs hundreds of MB, slow to unpack under TCG; symbols stay. The CI workflow's
/// build job uses the same (checked by `selftests/tests/lab_ci.rs`).
pub const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static -C strip=debuginfo";

/// cargo's arguments of the static build, before `--target TRIPLE --target-dir target/lab`.
pub const STATIC_BUILD_ARGS: [&str; 7] = [
    "build",
    "--quiet",
    "--release",
    "--workspace",
    "--bins",
    "--examples",
    "--target",
];

/// The workspace this crate belongs to (the crate lives in `selftests/lab`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Builds every workspace binary and example static for `arch` into `target/lab`; returns the
/// directories holding them (`release` and `release/examples`).
pub fn build_static_bins(arch: &ArchSpec) -> Result<Vec<PathBuf>, StaticBinsError> {
    let ws = workspace_root();
    if !ws.join("Cargo.toml").is_file() {
        return Err(StaticBinsError::NoWorkspace(ws));
    }
    if let Some(script) = arch.cross_build {
        eprintln!(
            "agelab lab: cross-building static binaries for {} ({script})",
            arch.rust_target
        );
        run_build(
            Command::new(ws.join(script)).arg("bins").current_dir(&ws),
            arch.rust_target,
        )?;
        let release = ws.join("target").join(arch.rust_target).join("release");
        return Ok(vec![release.join("examples"), release]);
    }
    let target_dir = ws.join("target/lab");
    let mut rustflags = std::env::var("AGELAB_LAB_RUSTFLAGS").unwrap_or_default();
    rustflags.push(' ');
    rustflags.push_str(STATIC_RUSTFLAGS);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "agelab lab: building static binaries for {} (target/lab)",
        arch.rust_target
    );
    let mut build = Command::new(cargo);
    build
        .current_dir(&ws)
        .env("RUSTFLAGS", rustflags.trim())
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(STATIC_BUILD_ARGS)
        .arg(arch.rust_target)
        .arg("--target-dir")
        .arg(&target_dir);
    run_build(&mut build, arch.rust_target)?;
    let release = target_dir.join(arch.rust_target).join("release");
    Ok(vec![release.join("examples"), release])
}

/// Runs a build of `target`'s binaries; a build that fails is an error naming the target.
fn run_build(build: &mut Command, target: &str) -> Result<(), StaticBinsError> {
    let status = build.status().map_err(StaticBinsError::Spawn)?;
    if !status.success() {
        return Err(StaticBinsError::Build {
            target: target.to_string(),
            status: status.to_string(),
        });
    }
    Ok(())
}

/// True for cargo's hashed copies of examples (`name-0123456789abcdef`), which duplicate `name`.
pub fn is_hashed_artifact(name: &str) -> bool {
    name.rsplit_once('-')
        .is_some_and(|(_, h)| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_artifacts() {
        assert!(is_hashed_artifact("kernel_selfcheck-0123456789abcdef"));
        assert!(!is_hashed_artifact("kernel_selfcheck"));
        assert!(!is_hashed_artifact("dirty-log-test"));
    }
}
