//! Ctrl-C in the middle of a lab matrix: the running cells are stopped and their QEMU killed,
//! the results directory gets the partial table and `results.json`, nothing of the run is left
//! (no QEMU, no run directory, no journal entry), and the exit status is 130.

mod lab_support;

use lab_support::{empty_bins, skip};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// The lab's run directories of process `pid` (`runs/KERNEL-PID-N`).
fn run_dirs_of(pid: u32) -> Vec<PathBuf> {
    let runs = std::env::var_os("AGELAB_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var("HOME").unwrap()).join(".cache/agelab"))
        .join("runs");
    std::fs::read_dir(runs)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(&format!("-{pid}-")))
        })
        .collect()
}

#[test]
fn ctrl_c_mid_matrix_stops_cleanly() {
    if skip() {
        return;
    }
    let work = std::env::temp_dir().join(format!("agelab-lab-sigint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let matrix = work.join("matrix.txt");
    std::fs::write(
        &matrix,
        "first -- sleep 600\nsecond -- sleep 600\nthird -- sleep 600\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agelab"))
        .args(["lab", "--kernel", "debian-7.2", "--jobs", "2", "--no-build"])
        .arg("--bins")
        .arg(empty_bins())
        .arg("--matrix")
        .arg(&matrix)
        .arg("--results")
        .arg(work.join("results"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let run_marker = format!("-{pid}-");
    // Wait until both cells' guests run their command: QEMU up (its command line names the
    // run directory) and the guest's `started` record on the status port.
    let started = Instant::now();
    loop {
        let qemus: Vec<u32> = processes_mentioning(&run_marker)
            .into_iter()
            .filter(|&p| p != pid)
            .collect();
        let commands_running = run_dirs_of(pid)
            .iter()
            .filter(|d| {
                std::fs::read_to_string(d.join("status"))
                    .is_ok_and(|s| s.contains("agelab-status v1 started "))
            })
            .count();
        if qemus.len() >= 2 && commands_running >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the cells' QEMU never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "agelab lab exited early"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let stopping = Instant::now();
    let stderr = child.stderr.take().unwrap();
    let stderr_lines: Vec<String> = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        stderr_lines.join("\n")
    );
    assert_eq!(out.status.code(), Some(130));
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "took {:?} to stop",
        stopping.elapsed()
    );
    assert_eq!(
        processes_mentioning(&run_marker),
        Vec::<u32>::new(),
        "QEMU left running"
    );
    assert_eq!(
        run_dirs_of(pid),
        Vec::<PathBuf>::new(),
        "run directories left"
    );
    // No journal entry of the run (the lab changes nothing on the host it would journal).
    for entry in std::fs::read_dir(agelab_mglru::journal::JOURNAL_DIR)
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let owner = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["pid"].as_u64());
        assert_ne!(owner, Some(u64::from(pid)), "{}", entry.path().display());
    }
    // The partial results: table printed and written, results.json incomplete.
    assert!(stdout.starts_with("test "), "{stdout}");
    assert!(
        stdout.contains("lab: 0 passed, 3 failed, 0 skipped"),
        "{stdout}"
    );
    let dirs: Vec<PathBuf> = std::fs::read_dir(work.join("results"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let table = std::fs::read_to_string(dirs[0].join("table.txt")).unwrap();
    assert!(table.contains("interrupted"), "{table}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dirs[0].join("results.json")).unwrap())
            .unwrap();
    assert_eq!(record["complete"], false);
    let outcomes: Vec<&str> = record["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["interrupted", "interrupted", "not-run"]);
    std::fs::remove_dir_all(&work).unwrap();
}
