//! What a test process killed by the kernel leaves in the host-change journal is undone when the
//! next test process that changes host state starts: a child journals a knob change (a scratch
//! file standing in for a kernel knob) and is SIGKILLed, its entry outlives it, and a fresh test
//! process of this binary reconciles it at its start through
//! [`reconcile_journal_at_start`] — the helper every test that changes host state calls first.

use agelab_mglru::host_guard::HostRestore;
use agelab_mglru::journal::{HostChange, Journal};
use agelab_mglru::testing::{reconcile_journal_at_start, run_test_in_child, test_child};
use agelab_vmm::testing::skip;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Set (to the scratch knob's path) in the child that journals a change and waits to be killed.
const KNOB_ENV: &str = "AGELAB_JOURNAL_TEST_KNOB";
/// Set in the fresh test process that only starts.
const FRESH_ENV: &str = "AGELAB_JOURNAL_TEST_FRESH";

/// Journal entries in the system journal that change `knob`, with their owners' pids.
fn entries_for(knob: &Path) -> Vec<i32> {
    Journal::system()
        .all_changes()
        .expect("reading the system journal")
        .into_iter()
        .filter(|(_, c)| matches!(c, HostChange::Knob { path, .. } if path == knob))
        .map(|(o, _)| o.pid)
        .collect()
}

#[test]
fn a_killed_test_process_is_reconciled_by_the_next_test_process_start() {
    const TEST: &str = "a_killed_test_process_is_reconciled_by_the_next_test_process_start";
    if !agelab_mglru::kernel::is_root() {
        return skip(TEST, "the system journal (/run/agelab) needs root");
    }
    let knob = std::env::temp_dir().join(format!("agelab-journal-knob-{}", std::process::id()));
    std::fs::write(&knob, "original").expect("scratch knob");

    let mut child = test_child("journaling_child", KNOB_ENV, &knob)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the journaling child");
    let child_pid = child.id() as i32;
    let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = stdout.read_line(&mut line).expect("child output");
        assert!(n > 0, "the child exited before journaling");
        // libtest prints `test journaling_child ... ` without a newline before the child's own
        // output.
        if line.trim_end().ends_with("journaled") {
            break;
        }
    }
    assert_eq!(
        std::fs::read_to_string(&knob).unwrap(),
        "changed",
        "the child changed the knob"
    );
    assert_eq!(entries_for(&knob), vec![child_pid], "the child's entry");

    // SIGKILL, like the kernel's OOM killer: no undo runs.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "child: {status:?}"
    );
    assert_eq!(
        entries_for(&knob),
        vec![child_pid],
        "a killed process's entry outlives it"
    );
    assert_eq!(std::fs::read_to_string(&knob).unwrap(), "changed");

    let (_, out) = run_test_in_child("fresh_test_process", FRESH_ENV);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fresh test process: {out:?}");
    // On a failure the scratch knob stays, so whoever reconciles the entry later can restore it.
    let knob_text = std::fs::read_to_string(&knob).unwrap();
    let left = entries_for(&knob);
    assert!(
        left.is_empty(),
        "the fresh test process left the killed child's entry (owners {left:?}); its stderr:\n{stderr}"
    );
    assert_eq!(knob_text, "original", "knob restored; stderr:\n{stderr}");
    let restored = format!("journal: restored {} = original", knob.display());
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&restored) && l.contains(&format!("left by pid {child_pid} "))),
        "the fresh process reported the restore ({restored:?}, pid {child_pid}); stderr:\n{stderr}"
    );
    std::fs::remove_file(&knob).expect("removing the scratch knob");
}

/// Run only as the child of the test above: journals a knob change, says so and waits to be
/// killed.
#[test]
#[ignore = "child process of a_killed_test_process_is_reconciled_by_the_next_test_process_start"]
fn journaling_child() {
    let Some(knob) = std::env::var_os(KNOB_ENV).map(PathBuf::from) else {
        return skip(
            "journaling_child",
            "runs only as a child of the reconcile test",
        );
    };
    reconcile_journal_at_start();
    let (guard, previous) =
        HostRestore::set_knob("journal test knob", &knob, "changed").expect("journal the knob");
    assert_eq!(previous, "original");
    // The process is killed holding the change: the guard must never undo it.
    std::mem::forget(guard);
    println!("journaled");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Run only as the fresh test process of the test above: a test that changes host state starts.
#[test]
#[ignore = "child process of a_killed_test_process_is_reconciled_by_the_next_test_process_start"]
fn fresh_test_process() {
    if std::env::var_os(FRESH_ENV).is_none() {
        return skip(
            "fresh_test_process",
            "runs only as a child of the reconcile test",
        );
    }
    reconcile_journal_at_start();
}
