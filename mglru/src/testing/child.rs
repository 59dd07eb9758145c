//! The running test binary re-run as a child process, for tests that must own a whole process:
//! moving it into a cgroup, surviving the kernel killing it, or being sent a signal.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

/// A command re-running `test`, an `#[ignore]`d test of the calling test binary, alone (one
/// thread, output not captured) with `env` set to `value`; the caller sets its stdio.
pub fn test_child(test: &str, env: &str, value: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("test binary path"));
    c.args([
        "--ignored",
        "--exact",
        test,
        "--test-threads=1",
        "--nocapture",
    ])
    .env(env, value);
    c
}

/// Runs [`test_child`]`(test, env, "1")` to its end, output captured; returns its pid and output.
pub fn run_test_in_child(test: &str, env: &str) -> (u32, Output) {
    let child = test_child(test, env, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the test binary");
    let pid = child.id();
    (
        pid,
        child.wait_with_output().expect("wait for the child test"),
    )
}

/// Re-runs the calling binary (one with its own `main`) with `env` set to `value` and waits for
/// its first stdout line, which must be `ready`; returns the child with its stderr piped (its
/// stdout closed after that line). Otherwise the child is waited for and the error quotes what
/// it said and its stderr.
pub fn spawn_ready_child(env: &str, value: impl AsRef<std::ffi::OsStr>) -> Result<Child, String> {
    let mut c = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(env, value)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(c.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.trim() != "ready" {
        let out = c.wait_with_output().map_err(|e| e.to_string())?;
        return Err(format!(
            "child said {line:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(c)
}
