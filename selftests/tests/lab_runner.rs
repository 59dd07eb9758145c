//! The lab runner's contract on a real boot (Debian 7.2 under QEMU): exit status, output
//! channels, argv, and the failure modes (timeout, corrupt kernel image, kernel panic).

mod lab_support;

use lab_support::{lab, skip, stderr, stdout};
use std::time::{Duration, Instant};

const KERNEL: &str = "debian-7.2";

/// `agelab lab --kernel debian-7.2 -- sh -c SCRIPT`.
fn lab_sh(script: &str) -> std::process::Output {
    lab(&["--kernel", KERNEL, "--", "sh", "-c", script])
}

#[test]
fn exit_status_comes_back() {
    if skip() {
        return;
    }
    let out = lab_sh("exit 3");
    assert_eq!(out.status.code(), Some(3));
    let out = lab(&["--kernel", KERNEL, "--", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
}

#[test]
fn stdout_and_stderr_are_separate_and_complete() {
    if skip() {
        return;
    }
    let out = lab_sh("seq 1 20000; echo to-stderr >&2");
    assert_eq!(out.status.code(), Some(0));
    let expected: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    assert!(
        stdout(&out) == expected,
        "stdout differs from `seq 1 20000`"
    );
    assert!(stderr(&out).contains("to-stderr\n"));
    assert!(!stderr(&out).contains("20000"));
}

#[test]
fn argv_is_passed_verbatim() {
    if skip() {
        return;
    }
    let out = lab(&[
        "--kernel", KERNEL, "--", "printf", "%s|", "a b", "it's", "$HOME", "*",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "a b|it's|$HOME|*|");
}

#[test]
fn timeout_kills_the_guest() {
    if skip() {
        return;
    }
    let t = Instant::now();
    let out = lab(&[
        "--kernel",
        KERNEL,
        "--timeout",
        "40s",
        "--",
        "sleep",
        "1000",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("timed out after 40 s"));
    assert!(
        t.elapsed() < Duration::from_secs(120),
        "took {:?}",
        t.elapsed()
    );
}

/// Boots `image` as the kernel: the lab exits 1 with a hint about the kernel image; returns its
/// stderr.
fn refused_as_a_kernel_image(image: &std::path::Path) -> String {
    let out = lab(&[
        "--kernel-image",
        image.to_str().unwrap(),
        "--boot-timeout",
        "60s",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("kernel image"),
        "no hint about the kernel image: {err}"
    );
    err
}

#[test]
fn corrupt_kernel_image_is_reported() {
    if skip() {
        return;
    }
    let dir = lab_support::empty_bins().join("../agelab-lab-test-images");
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage");
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, noise).unwrap();
    refused_as_a_kernel_image(&garbage);

    // A real bzImage cut short: QEMU loads it, the decompressor fails.
    let ok = lab(&["--kernel", KERNEL, "--", "true"]);
    assert_eq!(ok.status.code(), Some(0));
    let cache = std::env::var_os("AGELAB_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/agelab")
        });
    let kdir = cache.join("kernels/x86_64").join(KERNEL);
    let current = std::fs::read_to_string(kdir.join("current")).unwrap();
    let image = std::fs::read(kdir.join(current.trim()).join("vmlinuz")).unwrap();
    let truncated = dir.join("truncated");
    std::fs::write(&truncated, &image[..image.len() / 3]).unwrap();
    let err = refused_as_a_kernel_image(&truncated);
    assert!(err.contains("console"), "no console tail: {err}");
}

#[test]
fn kernel_panic_is_reported_with_the_console() {
    if skip() {
        return;
    }
    let out = lab_sh("echo c > /proc/sysrq-trigger");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("panicked"), "{err}");
    assert!(err.contains("Kernel panic"), "console tail missing: {err}");
}

#[test]
fn unknown_kernel_is_named() {
    let out = lab(&["--kernel", "debian-9.9", "--", "true"]);
    // A kernel name the user can fix: exit 2, as every input error (the exit-code contract in
    // `docs/run-and-report.md`).
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown lab kernel debian-9.9"));
}
