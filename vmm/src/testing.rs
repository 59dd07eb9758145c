//! Helpers for tests that need host features: skips that are visible even under `cargo test`'s
//! output capture (written straight to the stderr file descriptor, not through `eprintln!`).

use std::io::Write;

/// Reports that `what` was skipped and why. Never a silent pass.
pub fn skip(what: &str, reason: &str) {
    let _ = writeln!(std::io::stderr().lock(), "SKIP {what}: {reason}");
}

/// Runs `test`, an `#[ignore]`d test of the calling test binary, alone in a new process (one
/// thread, output not captured) with `env` set to `1`; returns the child's pid and its output.
/// For tests that must own a whole process: moving it into a cgroup, or surviving the kernel
/// killing it.
pub fn run_test_in_child(test: &str, env: &str) -> (u32, std::process::Output) {
    let child = std::process::Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--ignored",
            "--exact",
            test,
            "--test-threads=1",
            "--nocapture",
        ])
        .env(env, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the test binary");
    let pid = child.id();
    (
        pid,
        child.wait_with_output().expect("wait for the child test"),
    )
}
