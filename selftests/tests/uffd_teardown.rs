//! Clean teardown after SIGINT: a child (`agelab bench uffd hold`) runs a guest under continuous
//! uffd-minor re-arming; SIGINT must make it unregister through host_guard and exit 130 promptly,
//! leaving no process behind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

#[test]
fn sigint_while_armed_unregisters_and_exits() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agelab"))
        .args(["bench", "uffd", "hold", "--mem", "32", "--vcpus", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in out.lines() {
            if tx.send(l.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    if first.starts_with("1..0 # SKIP") {
        eprintln!("{first}");
        let _ = child.wait();
        return;
    }
    assert_eq!(first, format!("armed {pid}"));
    // Wait until the guest has faulted through uffd for a few epochs.
    let mut faults = 0;
    for _ in 0..10 {
        let l = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        faults = l.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
        if faults > 1000 {
            break;
        }
    }
    assert!(faults > 1000, "guest never faulted through uffd ({faults})");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert!(
        threads >= 4,
        "vCPUs, fault thread, harvester expected: {threads}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "child still running 15 s after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "stderr: {err}");
    assert!(
        err.contains("restored uffd-minor: unregister"),
        "the undo did not run: {err}"
    );
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(
        children_of(pid).is_empty(),
        "left behind: {:?}",
        children_of(pid)
    );
    eprintln!("exited 130 {:?} after SIGINT; {err}", t.elapsed());
}
