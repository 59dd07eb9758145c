//! The exit-code contract of the `agelab` binary, walked case by case: 0 success, 2 for input the
//! user can fix (refused before any VM exists, with exactly one error line naming the option),
//! 1 for everything else — and `--require-accurate` failing when a requested source is
//! unavailable or no available source can observe the workload's accesses.

use agelab_vmm::testing::skip;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Input errors are found before any VM is created: far below a second; the bound leaves room
/// for a loaded 2-core machine.
const FAST: Duration = Duration::from_secs(5);

fn agelab(args: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_agelab"))
        .args(args)
        .output()
        .expect("running agelab");
    (out, t.elapsed())
}

/// Why this host cannot run a VM, in the VMM's own words (`open_kvm`), if it cannot.
fn kvm_usable() -> Result<(), agelab_vmm::VmError> {
    agelab_vmm::vm::open_kvm().map(drop)
}

/// Checks that `prog args` exited 2; returns its stdout, stderr and both shown for messages.
fn refused(prog: &str, args: &[&str], out: &Output) -> (String, String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let shown = format!(
        "{prog} {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        args.join(" ")
    );
    assert_eq!(out.status.code(), Some(2), "exit code, {shown}");
    (stdout, stderr, shown)
}

/// Runs `args`, expects exit 2 before any VM with one stderr line that contains `needle`.
fn expect_input_error(args: &[&str], needle: &str) {
    let (out, took) = agelab(args);
    let (stdout, stderr, shown) = refused("agelab", args, &out);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one error line, {shown}");
    assert!(lines[0].contains(needle), "error names {needle:?}, {shown}");
    assert!(
        !stdout.contains("setup") && !stdout.contains("self-check") && stdout.trim().is_empty(),
        "refused before any VM, {shown}"
    );
    assert!(took < FAST, "refused in {took:?} (> {FAST:?}), {shown}");
}

/// A scratch path under the temp dir, unique to this process and `name`.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("agelab-exit-codes-{}-{name}", std::process::id()))
}

#[test]
fn output_paths_are_checked_before_the_run() {
    expect_input_error(
        &["run", "--svg", "/nonexistent/dir/x.svg"],
        "--svg /nonexistent/dir/x.svg: directory /nonexistent/dir does not exist",
    );
    expect_input_error(
        &["reclaim", "--svg", "/nonexistent/dir/x.svg"],
        "--svg /nonexistent/dir/x.svg",
    );
    expect_input_error(
        &["reclaim", "--json-out", "/nonexistent/dir/r.json"],
        "--json-out /nonexistent/dir/r.json",
    );
    expect_input_error(
        &["run", "--report", "/nonexistent/dir/r"],
        "--report /nonexistent/dir/r: directory /nonexistent/dir does not exist",
    );
    expect_input_error(
        &["reclaim", "--report", "/nonexistent/dir/r"],
        "--report /nonexistent/dir/r: directory /nonexistent/dir does not exist",
    );
    // A file given where the report's directory goes.
    let file = scratch("report-file");
    std::fs::write(&file, b"x").expect("scratch file");
    expect_input_error(
        &["run", "--report", file.to_str().expect("utf-8 path")],
        "exists and is not a directory",
    );
    std::fs::remove_file(&file).ok();
    // A directory given where a file is written.
    let tmp = std::env::temp_dir();
    let tmp = tmp.to_str().expect("utf-8 temp dir");
    expect_input_error(&["run", "--svg", tmp], "--svg");
}

#[test]
fn backing_file_holding_data_is_refused() {
    let path = scratch("backing");
    std::fs::write(&path, b"someone's data\n").expect("scratch file");
    let arg = format!("file:{}", path.display());
    expect_input_error(&["run", "--backing", &arg], "--backing");
    expect_input_error(&["reclaim", "--backing", &arg], "--backing");
    let kept = std::fs::read(&path).expect("scratch file still there");
    std::fs::remove_file(&path).ok();
    assert_eq!(kept, b"someone's data\n", "the file was not touched");
    expect_input_error(
        &["run", "--backing", "file:/nonexistent/dir/guest.mem"],
        "--backing file:/nonexistent/dir/guest.mem",
    );
}

#[test]
fn hugetlb_without_reserved_pages_is_refused() {
    let free: u64 =
        std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
    // 256 MiB needs 128 huge pages.
    if free >= 128 {
        skip(
            "hugetlb_without_reserved_pages_is_refused",
            &format!("the host has {free} free 2 MiB huge pages"),
        );
        return;
    }
    expect_input_error(
        &["run", "--backing", "hugetlb", "--mem", "256M"],
        "--backing hugetlb",
    );
}

#[test]
fn sizes_and_layouts_the_vm_cannot_take() {
    expect_input_error(&["run", "--mem", "4097"], "--mem 4097");
    expect_input_error(&["run", "--mem", "12X"], "--mem");
    expect_input_error(&["run", "--mem", "1G", "--slots", "3"], "--slots 3");
    expect_input_error(&["run", "--mem", "3M", "--backing", "thp"], "--mem 3M");
    expect_input_error(&["run", "--mem", "64T"], "--mem 64T");
    expect_input_error(&["run", "--vcpus", "0"], "--vcpus 0");
    expect_input_error(&["run", "--gens", "20"], "--gens 20");
    expect_input_error(&["reclaim", "--mem", "4097"], "--mem 4097");
    expect_input_error(&["reclaim", "--zram", "lots"], "--zram");
    // Below a swap area's minimum: refused while parsing, before any host change.
    for small in ["1K", "1048575"] {
        expect_input_error(&["reclaim", "--zram", small], "--zram");
        expect_input_error(
            &["reclaim", "--zram", small],
            "zram swap needs at least 1 MiB",
        );
    }
}

#[test]
fn malformed_values_and_options() {
    expect_input_error(&["run", "--duration", "soon"], "--duration");
    expect_input_error(&["run", "--interval", "0ms"], "--interval");
    expect_input_error(&["run", "--sources", "bogus"], "--sources");
    expect_input_error(&["run", "--bogus-option"], "--bogus-option");
    expect_input_error(&["run", "--workload", "seq:op=read,op=write"], "--workload");
    expect_input_error(&["run", "--workload", "seq:op=read,op=write"], "'op'");
    expect_input_error(&["reclaim", "--workload", "hotcold:hot=5%,hot=6%"], "'hot'");
    expect_input_error(&["reclaim", "--policy", "bogus"], "--policy");
    expect_input_error(&["reclaim", "--reps", "0"], "--reps 0");
    expect_input_error(
        &["reclaim", "--warmup", "15s", "--duration", "10s"],
        "--warmup",
    );
    expect_input_error(&["reclaim", "--psi-target", "0"], "--psi-target");
    expect_input_error(&["reclaim", "--psi-target", "100"], "--psi-target");
    expect_input_error(&["reclaim", "--read-budget", "0%"], "--read-budget");
    expect_input_error(&["reclaim", "--read-budget", "101"], "--read-budget");
    expect_input_error(&["reclaim", "--region-samples", "0"], "--region-samples");
    expect_input_error(&["run", "--uffd-arm", "regions:2:0%"], "--uffd-arm");
    // RECALL is a fraction in [0, 1] or a percentage with its sign; a bare 1.5 is not 1.5 %.
    for bad in ["1.5", "99", "150%", "-1", "abc"] {
        let arg = format!("--require-accurate={bad}");
        expect_input_error(&["run", &arg], "--require-accurate");
        expect_input_error(&["run", &arg], "recall is a fraction in [0, 1]");
    }
    expect_input_error(&["workloads", "--bogus"], "--bogus");
    expect_input_error(&["bench", "--bogus"], "--bogus");
    expect_input_error(&["bench", "dirty", "-r", "0"], "-r");
    expect_input_error(&["bench", "dirty-layout", "-b", "9M"], "-b");
    expect_input_error(&["bench", "dirty-layout", "-b", "12M"], "multiple of 8 MiB");
    expect_input_error(&["bench", "engine", "--sizes", "1,x"], "--sizes");
    expect_input_error(&["bench", "region", "--arms", "pages,bogus"], "--arms");
    expect_input_error(&["bench", "region", "--warmup", "3"], "--warmup");
    expect_input_error(&["bench", "uffd", "--spec", "bogus"], "--spec");
    expect_input_error(&["bench", "uffd", "--budgets", "lots"], "--budgets");
    expect_input_error(&["frobnicate"], "frobnicate");
    expect_input_error(&["lab", "--arch", "bogus"], "--arch bogus");
    expect_input_error(
        &["lab", "--kernel", "debian-0.1", "--", "true"],
        "--kernel debian-0.1",
    );
    expect_input_error(
        &["lab", "--timeout", "soon", "--", "true"],
        "--timeout soon",
    );
    expect_input_error(
        &["lab", "--matrix", "/nonexistent/matrix.txt"],
        "--matrix /nonexistent/matrix.txt",
    );
}

#[test]
fn workloads_lists_and_exits_zero() {
    let (out, _) = agelab(&["workloads"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hotcold"));
}

/// `--sources page_idle --require-accurate` on a host without page_idle must fail, naming it.
#[test]
fn require_accurate_fails_on_an_unavailable_source() {
    if let Err(why) = kvm_usable() {
        skip(
            "require_accurate_fails_on_an_unavailable_source",
            &why.to_string(),
        );
        return;
    }
    if std::path::Path::new("/sys/kernel/mm/page_idle/bitmap").exists() {
        skip(
            "require_accurate_fails_on_an_unavailable_source",
            "this host has page_idle",
        );
        return;
    }
    let (out, _) = agelab(&[
        "run",
        "--sources",
        "page_idle",
        "--require-accurate",
        "--mem",
        "64M",
        "--duration",
        "1s",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("--require-accurate: source page_idle is unavailable"),
        "stderr:\n{stderr}"
    );
}

/// A read-only workload with only the KVM dirty log (writes): blind, so the gate fails; without
/// the gate the run says so in its report.
#[test]
fn a_run_blind_to_its_workload_says_so() {
    if let Err(why) = kvm_usable() {
        skip("a_run_blind_to_its_workload_says_so", &why.to_string());
        return;
    }
    let blind_run = [
        "run",
        "--sources",
        "kvm-dirty-log",
        "--workload",
        "uniform-read",
        "--mem",
        "64M",
        "--duration",
        "1s",
    ];
    let mut gated = blind_run.to_vec();
    gated.push("--require-accurate");
    let (out, _) = agelab(&gated);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("no available source observes reads")
            && stderr.contains("kvm-dirty-log observes writes only"),
        "stderr:\n{stderr}"
    );

    let mut json = blind_run.to_vec();
    json.push("--json");
    let (out, _) = agelab(&json);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    let blind = v["blind"].as_str().unwrap_or_default();
    assert!(
        blind.starts_with("no available source observes reads"),
        "{v}"
    );

    let mut text = blind_run.to_vec();
    text.push("--quiet");
    let (out, _) = agelab(&text);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("BLIND: no available source observes reads"));
    assert!(
        at.is_some_and(|i| lines
            .get(i + 1)
            .is_some_and(|l| l.starts_with("agelab run:"))),
        "the report opens with the blindness:\n{stdout}"
    );
}

/// The positive case: the clear-log sees every page a write-only workload writes.
#[test]
fn require_accurate_passes_when_a_source_sees_the_workload() {
    if let Err(why) = kvm_usable() {
        skip(
            "require_accurate_passes_when_a_source_sees_the_workload",
            &why.to_string(),
        );
        return;
    }
    let (out, _) = agelab(&[
        "run",
        "--sources",
        "kvm-clear-log",
        "--workload",
        "uniform-write",
        "--require-accurate",
        "--mem",
        "64M",
        "--duration",
        "1s",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert!(v["blind"].is_null(), "{v}");
}

/// A `file:PATH` backing that does not exist yet: the self-check must not take the path (it
/// once created PATH, and the run then refused it as holding data).
#[test]
fn a_new_backing_file_is_left_to_the_run() {
    if let Err(why) = kvm_usable() {
        skip("a_new_backing_file_is_left_to_the_run", &why.to_string());
        return;
    }
    let path = scratch("new-backing");
    std::fs::remove_file(&path).ok();
    let arg = format!("file:{}", path.display());
    let (out, _) = agelab(&[
        "run",
        "--backing",
        &arg,
        "--mem",
        "64M",
        "--duration",
        "1s",
        "--quiet",
    ]);
    std::fs::remove_file(&path).ok();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs selftest binary `bin` (its path from cargo) with `args`.
fn selftest(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .expect("running a selftest binary")
}

/// Every kselftest binary declares its options with clap through `agelab::args` (the dirty
/// benchmarks through `agelab::options`): a bad value or an unknown option is refused with exit 2,
/// one stderr line `<binary>: <what>` naming the option, then the usage, before any VM; `-h`
/// prints the usage and exits 0.
#[test]
fn selftest_binaries_refuse_bad_options_with_exit_2() {
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "dirty_log_test",
            env!("CARGO_BIN_EXE_dirty_log_test"),
            &["-v", "0"],
            "-v",
        ),
        (
            "dirty_log_test",
            env!("CARGO_BIN_EXE_dirty_log_test"),
            &["-M", "bogus"],
            "-M",
        ),
        (
            "dirty_log_test",
            env!("CARGO_BIN_EXE_dirty_log_test"),
            &["-c", "1000"],
            "-c",
        ),
        (
            "dirty_log_perf_test",
            env!("CARGO_BIN_EXE_dirty_log_perf_test"),
            &["-b", "12X"],
            "-b",
        ),
        (
            "dirty_log_perf_test",
            env!("CARGO_BIN_EXE_dirty_log_perf_test"),
            &["-s", "bogus"],
            "-s",
        ),
        (
            "access_tracking_perf_test",
            env!("CARGO_BIN_EXE_access_tracking_perf_test"),
            &["-v", "999"],
            "-v",
        ),
        (
            "access_tracking_perf_test",
            env!("CARGO_BIN_EXE_access_tracking_perf_test"),
            &["-q"],
            "'-q'",
        ),
        (
            "lru_gen_secondary_mmu_test",
            env!("CARGO_BIN_EXE_lru_gen_secondary_mmu_test"),
            &["-d", "1ms"],
            "-d",
        ),
        (
            "lru_gen_secondary_mmu_test",
            env!("CARGO_BIN_EXE_lru_gen_secondary_mmu_test"),
            &["--expect-secondary-mmu-aging", "maybe"],
            "--expect-secondary-mmu-aging",
        ),
        (
            "test_young_preserves_test",
            env!("CARGO_BIN_EXE_test_young_preserves_test"),
            &["-b", "9M"],
            "-b",
        ),
        (
            "lru_gen_secondary_mmu_test",
            env!("CARGO_BIN_EXE_lru_gen_secondary_mmu_test"),
            &["-y", "9"],
            "--bystander-vms",
        ),
        (
            "tlb_flush_accuracy_test",
            env!("CARGO_BIN_EXE_tlb_flush_accuracy_test"),
            &["-t", "soon"],
            "-t",
        ),
        (
            "tlb_flush_accuracy_test",
            env!("CARGO_BIN_EXE_tlb_flush_accuracy_test"),
            &["-S", "bogus"],
            "-S",
        ),
        (
            "reclaim_hot_set_test",
            env!("CARGO_BIN_EXE_reclaim_hot_set_test"),
            &["-l", "lru"],
            "-l",
        ),
        (
            "reclaim_hot_set_test",
            env!("CARGO_BIN_EXE_reclaim_hot_set_test"),
            &["-s", "anonymous_thp", "-b", "4M"],
            "-b",
        ),
        (
            "dirty_log_perf_test",
            env!("CARGO_BIN_EXE_dirty_log_perf_test"),
            &["-c"],
            "-c",
        ),
        (
            "vm_foundation_test",
            env!("CARGO_BIN_EXE_vm_foundation_test"),
            &["stray"],
            "'stray'",
        ),
        (
            "kernel_selfcheck",
            env!("CARGO_BIN_EXE_kernel_selfcheck"),
            &["--size-mib", "0"],
            "--size-mib",
        ),
        (
            "sigkill_restore_test",
            env!("CARGO_BIN_EXE_sigkill_restore_test"),
            &["--stages", "bogus"],
            "--stages",
        ),
        (
            "source_matrix",
            env!("CARGO_BIN_EXE_source_matrix"),
            &["--mem", "12X"],
            "--mem",
        ),
    ];
    for &(name, bin, args, needle) in cases {
        let out = selftest(bin, args);
        let (stdout, stderr, shown) = refused(name, args, &out);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("{name}: ")) && first.contains(needle),
            "first stderr line names {needle:?}, {shown}"
        );
        assert!(
            stderr
                .lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("usage:")),
            "the usage follows the one error line, {shown}"
        );
        assert!(
            stdout.trim().is_empty(),
            "refused before any test output, {shown}"
        );
    }
    // The same binaries with -h: usage on stdout, exit 0 (the scanner accepts what is declared).
    for &(name, bin, _, _) in cases {
        let out = selftest(bin, &["-h"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name} -h: {stdout}");
        assert!(
            stdout.starts_with("usage:"),
            "{name} -h prints the usage: {stdout}"
        );
    }
}
