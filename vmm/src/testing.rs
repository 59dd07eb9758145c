//! Helpers for tests that need host features: skips that are visible even under `cargo test`'s
//! output capture (written straight to the stderr file descriptor, not through `eprintln!`).

use std::io::Write;

/// Reports that `what` was skipped and why. Never a silent pass.
pub fn skip(what: &str, reason: &str) {
    let _ = writeln!(std::io::stderr().lock(), "SKIP {what}: {reason}");
}
