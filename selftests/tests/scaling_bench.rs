//! `agelab bench scaling` on small guests (64 and 128 MiB): its table must list every access source of
//! the catalog and lru_gen, each measured at every size or unavailable with its reason; a source
//! made unavailable on purpose must show as such, and a table with a source row removed must be
//! refused (by this test's reading of the text and by the binary itself, exit 1).

use agelab_mglru::sources::SourceKind;
use std::io::Write;
use std::process::{Command, Output};

fn scaling_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agelab"))
        .args(["bench", "scaling"])
        .args(args)
        .output()
        .expect("run agelab bench scaling")
}

/// Why this host cannot run a VM, in the VMM's own words, if it cannot.
fn kvm_usable() -> Result<(), agelab_vmm::VmError> {
    agelab_vmm::vm::open_kvm().map(drop)
}

fn skip(why: &str) {
    let _ = writeln!(std::io::stderr().lock(), "SKIP scaling_bench: {why}");
}

/// Every row the table must have: each catalog source and the kernel's lru_gen.
fn expected() -> Vec<String> {
    SourceKind::ALL
        .iter()
        .map(|k| format!("harvest {} (", k.name()))
        .chain(["lru_gen forced aging (".to_string()])
        .collect()
}

/// What is wrong with the text table for `sizes` columns: a source row missing, a measured row
/// without a number per size, an unavailable row without a reason.
fn problems(text: &str, sizes: usize) -> Vec<String> {
    let mut out = Vec::new();
    for head in expected() {
        let Some(line) = text.lines().find(|l| l.starts_with(&head)) else {
            out.push(format!("no row '{head}...'"));
            continue;
        };
        let rest = line[line.find(')').expect("unit in parentheses") + 1..].trim();
        if let Some(why) = rest.strip_prefix("unavailable:") {
            if why.trim().is_empty() {
                out.push(format!("{head}: unavailable without a reason"));
            }
            continue;
        }
        let numbers = rest
            .split_whitespace()
            .take(sizes)
            .filter(|t| t.parse::<f64>().is_ok())
            .count();
        if numbers != sizes {
            out.push(format!("{head}: {numbers} of {sizes} values: {line}"));
        }
    }
    out
}

#[test]
fn the_table_lists_every_source_measured_or_unavailable_with_its_reason() {
    if let Err(why) = kvm_usable() {
        return skip(&why.to_string());
    }
    let out = scaling_bench(&[
        "--sizes",
        "64M,128M",
        "--passes",
        "2",
        "--unavailable",
        "uffd-wp",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}\n{err}");
    assert_eq!(problems(&text, 2), Vec::<String>::new(), "{text}");
    // The host's fault costs come first, so a change of host shows beside the figures.
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("host: ") && first.contains(" µs/page | "),
        "{text}"
    );
    // The source made unavailable on purpose is listed with the reason, not dropped.
    let wp = text
        .lines()
        .find(|l| l.starts_with("harvest uffd-wp ("))
        .expect("uffd-wp row");
    assert!(
        wp.contains("unavailable: made unavailable with --unavailable"),
        "{wp}"
    );
    // The sources every KVM host has are measured at both sizes.
    for name in ["kvm-dirty-log", "kvm-clear-log", "oracle"] {
        let head = format!("harvest {name} (");
        let line = text.lines().find(|l| l.starts_with(&head)).expect("row");
        assert!(!line.contains("unavailable"), "{line}");
    }
    for cost in ["setup: total", "engine bookkeeping", "verify"] {
        assert!(text.lines().any(|l| l.starts_with(cost)), "{cost}: {text}");
    }
    // Negative control of this reading: the same table with a source row removed is refused.
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("harvest kvm-dirty-log ("))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        problems(&without, 2),
        vec!["no row 'harvest kvm-dirty-log (...'".to_string()]
    );
    // ... and one with a value cut off.
    let cut = text.replace(
        text.lines()
            .find(|l| l.starts_with("harvest oracle ("))
            .unwrap(),
        "harvest oracle (µs/pass)   1.0",
    );
    assert_eq!(problems(&cut, 2).len(), 1, "{cut}");
}

#[test]
fn the_binary_refuses_a_table_with_a_source_row_missing() {
    if let Err(why) = kvm_usable() {
        return skip(&why.to_string());
    }
    let out = scaling_bench(&[
        "--sizes",
        "64M",
        "--passes",
        "1",
        "--drop-row",
        "kvm-dirty-log",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("table incomplete: no row for kvm-dirty-log"),
        "{err}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json output");
    assert_eq!(json["incomplete"][0], "no row for kvm-dirty-log");
    let host = &json["host"];
    assert!(host["kernel"].is_string(), "{host}");
    assert!(host["error"].is_null(), "{host}");
    assert!(
        host["first_touch_us_per_page"]
            .as_f64()
            .is_some_and(|us| us > 0.0),
        "{host}"
    );
    let rows = json["rows"].as_array().expect("rows");
    let source = |name: &str| rows.iter().find(|r| r["source"] == name);
    assert!(source("kvm-dirty-log").is_none());
    let oracle = source("oracle").expect("oracle row");
    assert_eq!(oracle["status"], "measured");
    assert!(oracle["values"][0].as_f64().is_some(), "{oracle}");
}

#[test]
fn sizes_that_do_not_grow_are_refused_before_any_vm() {
    let out = scaling_bench(&["--sizes", "128M,64M"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--sizes"), "{err}");
    assert!(err.contains("sizes must grow"), "{err}");
}
