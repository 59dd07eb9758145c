//! Shared helpers of the lab integration tests (`lab_*.rs`).
// Each lab_*.rs test file uses a subset of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Why the lab cannot run on this host, if it cannot.
pub fn skip_reason() -> Option<String> {
    match Command::new("qemu-system-x86_64").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)".into()),
    }
}

/// Prints the kselftest-style skip line and returns true when the lab cannot run here.
pub fn skip() -> bool {
    match skip_reason() {
        Some(reason) => {
            println!("SKIP: {reason}");
            true
        }
        None => false,
    }
}

/// An empty directory for `--bins`: the runner's tests need no project binaries in the guest.
pub fn empty_bins() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agelab-lab-test-bins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `agelab lab --bins <empty> --no-build ARGS...`.
pub fn lab(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_agelab"))
        .arg("lab")
        .arg("--bins")
        .arg(empty_bins())
        .arg("--no-build")
        .args(args)
        .output()
        .expect("running agelab");
    eprintln!(
        "agelab lab {args:?} -> {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The command's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The runner's stderr (the command's stderr plus lab errors) as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
