//! Fault tests on this host (real zram, real memory cgroups, real /dev/kvm; no mocks): the real
//! `agelab reclaim --zram` is SIGKILLed after its swap is on, after its memcg is made and in the
//! middle of paging out; a fresh `agelab cleanup` (or a fresh `agelab reclaim`) must then leave the
//! host as it was — no agelab zram in /proc/swaps, the device reset (disksize 0) or hot-removed, no
//! memcg left, no journal entry left. Two concurrent `agelab reclaim --zram` runs both complete
//! (each on its own device) and a run that continues while another is killed and cleaned up loses
//! no guest byte. Each check is also run on a case built to fail (the journal entry deleted before
//! cleanup, no cleanup at all) and must detect the leftover there.
//!
//! These tests change the real host: one test function runs every case in order under a file lock
//! (no parallel runs, even across test binaries), and a guard restores whatever a case left behind,
//! also when it fails or panics.

use agelab::scenarios::host_state::poll;
use agelab_mglru::journal::{Journal, JOURNAL_DIR};
use agelab_mglru::kernel::memcg::MemoryHierarchy;
use agelab_mglru::kernel::swap::{zram_indices, SwapStatus, ZramDevice};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AGELAB: &str = env!("CARGO_BIN_EXE_agelab");
const TEST_LOCK: &str = "/tmp/agelab-host-fault-tests.lock";

fn skip(what: &str, why: &str) {
    let _ = writeln!(std::io::stderr().lock(), "SKIP {what}: {why}");
}

/// A running `agelab` child whose stderr is collected line by line.
struct Agelab {
    child: Option<Child>,
    pid: i32,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Agelab {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(AGELAB)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning agelab");
        let pid = child.id() as i32;
        let (tx, lines) = channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err, all) = (child.stderr.take().expect("piped"), stderr.clone());
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                all.lock().unwrap().push_str(&format!("{l}\n"));
                let _ = tx.send(l);
            }
        });
        // Drain stdout so the child never blocks on a full pipe.
        let out = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut BufReader::new(out), &mut std::io::sink());
        });
        Agelab {
            child: Some(child),
            pid,
            lines,
            stderr,
        }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_line(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Ok(l),
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "pid {}: no line with {needle:?} within {timeout:?}; stderr:\n{}",
                        self.pid,
                        self.stderr()
                    ))
                }
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL, then reap (a zombie would still look like a live owner).
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = c.wait();
        }
    }

    /// Waits for a normal exit; returns the exit code and the whole stderr.
    fn wait(&mut self, timeout: Duration) -> Result<(i32, String), String> {
        let end = Instant::now() + timeout;
        let c = self.child.as_mut().expect("not waited yet");
        loop {
            if let Some(st) = c.try_wait().map_err(|e| e.to_string())? {
                self.child = None;
                // Let the reader thread catch the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Ok((st.code().unwrap_or(-1), self.stderr()));
            }
            if Instant::now() > end {
                self.kill9();
                return Err(format!("pid {} did not finish in {timeout:?}", self.pid));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agelab {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `agelab` to completion and returns (exit code, stdout, stderr).
fn run_agelab(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(AGELAB)
        .args(args)
        .output()
        .expect("running agelab");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The zram index in "agelab reclaim: /dev/zramN set up as ...".
fn device_of(line: &str) -> Option<u32> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("/dev/zram"))
        .and_then(|n| n.parse().ok())
}

/// Memcg directories named after one of `pids` (agelab names them `NAME-<pid>`).
/// `pid` and its child processes (a `memcg-limit` run is a child of `agelab reclaim`).
fn with_children(pid: i32) -> Vec<i32> {
    let mut pids = vec![pid];
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.filter_map(|t| t.ok()) {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    pids
}

fn memcgs_of(pids: &[i32]) -> Vec<PathBuf> {
    let Ok(h) = MemoryHierarchy::detect() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut stack = vec![(h.mount, 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("agelab-") && pids.iter().any(|p| name.ends_with(&format!("-{p}")))
            {
                found.push(e.path());
            }
            if depth < 6 {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    found
}

/// Journal files of `pids`, and entries of any owner that is gone (both must not survive a
/// cleanup).
fn journal_leftovers(pids: &[i32]) -> Vec<String> {
    let mut v = Vec::new();
    for (file, e) in Journal::system().entries().unwrap_or_default() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let ours = pids.iter().any(|p| name.starts_with(&format!("{p}-")));
        let dead = e.as_ref().is_ok_and(|e| !e.owner.is_alive());
        if ours || dead {
            v.push(format!("journal entry {}", file.display()));
        }
    }
    if let Ok(rd) = std::fs::read_dir(JOURNAL_DIR) {
        for e in rd.filter_map(|e| e.ok()) {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".tmp") && pids.iter().any(|p| n.starts_with(&format!(".{p}-"))) {
                v.push(format!("journal temp file {n}"));
            }
        }
    }
    v
}

/// What the killed/finished runs `pids` left on the host, on devices `devs` (`pre_existing`:
/// zram devices that existed before the test, which must be reset; others must be gone).
fn leftovers(pids: &[i32], devs: &[u32], pre_existing: &[u32]) -> Vec<String> {
    let mut v = Vec::new();
    let swaps = SwapStatus::read().unwrap_or_default();
    for &d in devs {
        let dev = ZramDevice::new(d);
        if swaps.area(&dev.dev()).is_some() {
            v.push(format!("{} still in /proc/swaps", dev.dev()));
        }
        if dev.exists() {
            if !pre_existing.contains(&d) {
                v.push(format!("{} (hot-added by agelab) still exists", dev.dev()));
            }
            match dev.state() {
                Ok(st) if st.disksize != 0 => v.push(format!(
                    "{} disksize {} (not reset)",
                    dev.dev(),
                    st.disksize
                )),
                _ => {}
            }
        }
    }
    for m in memcgs_of(pids) {
        v.push(format!("memcg {} left", m.display()));
    }
    v.extend(journal_leftovers(pids));
    v
}

fn check_clean(what: &str, pids: &[i32], devs: &[u32], pre: &[u32]) -> Result<(), String> {
    let left = leftovers(pids, devs, pre);
    if left.is_empty() {
        println!("ok - {what}: host clean (pids {pids:?}, zram {devs:?})");
        Ok(())
    } else {
        Err(format!("{what}: leftovers: {}", left.join("; ")))
    }
}

/// The check must fail on a host built to be dirty.
fn check_detects(what: &str, pids: &[i32], devs: &[u32], pre: &[u32]) -> Result<(), String> {
    match check_clean(what, pids, devs, pre) {
        Err(e) => {
            println!("ok - {what}: leftover detected as it must be ({e})");
            Ok(())
        }
        Ok(()) => Err(format!(
            "{what}: the check passed on a host built to be dirty"
        )),
    }
}

/// Restores whatever the test's runs left (also on failure or panic): swapoff + reset of their
/// devices (hot_remove of the ones agelab added), their memcgs removed, their journal entries
/// dropped.
struct HostGuard {
    pre_existing: Vec<u32>,
    devs: Vec<u32>,
    pids: Vec<i32>,
}

impl HostGuard {
    fn restore(&mut self) {
        self.devs.sort_unstable();
        self.devs.dedup();
        for &d in &self.devs {
            let dev = ZramDevice::new(d);
            let swaps = SwapStatus::read().unwrap_or_default();
            if swaps.area(&dev.dev()).is_some() {
                let c = std::ffi::CString::new(dev.dev()).unwrap();
                // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
                let rc = unsafe { libc::swapoff(c.as_ptr()) };
                if rc != 0 {
                    eprintln!("guard: swapoff {}: {}", dev.dev(), nix::Error::last());
                }
            }
            if dev.exists() {
                for _ in 0..50 {
                    if std::fs::write(dev.sysfs().join("reset"), "1").is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                if !self.pre_existing.contains(&d) {
                    let _ = std::fs::write("/sys/class/zram-control/hot_remove", d.to_string());
                }
            }
        }
        for m in memcgs_of(&self.pids) {
            let parent = m.parent().unwrap().join("cgroup.procs");
            for p in std::fs::read_to_string(m.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                let _ = std::fs::write(&parent, p);
            }
            let _ = std::fs::remove_dir(&m);
        }
        for (file, _) in Journal::system().entries().unwrap_or_default() {
            let n = file.file_name().unwrap().to_string_lossy().into_owned();
            if self.pids.iter().any(|p| n.starts_with(&format!("{p}-"))) {
                let _ = std::fs::remove_file(&file);
            }
        }
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Common reclaim options: a small VM, one read-heavy workload, reclaim allowed early and fast.
fn reclaim_args<'a>(zram: &'a str, policy: &'a str, duration: &'a str) -> Vec<&'a str> {
    vec![
        "reclaim",
        "--zram",
        zram,
        "--policy",
        policy,
        "--mem",
        "64M",
        "--duration",
        duration,
        "--interval",
        "100ms",
        "--min-age",
        "300ms",
        "--cold-window",
        "1s",
        "--max-step",
        "50",
        "--step-period",
        "500ms",
        "--workload",
        "hotcold:hot=20%,p=100%,op=read",
    ]
}

/// Write requests `dev` has completed since it was initialized (field 5 of its block `stat`):
/// the swap header, then pages paged out to it, including ones a refault has read back since. `/proc/swaps` alone misses
/// those: shmem frees a page's swap slot on swap-in, so with fifo paging out hot pages first
/// (which refault within microseconds) "used" was 0 at every 20 ms poll of a 60 s run.
fn zram_writes(dev: &ZramDevice) -> u64 {
    std::fs::read_to_string(dev.sysfs().join("stat"))
        .ok()
        .and_then(|t| t.split_whitespace().nth(4).and_then(|w| w.parse().ok()))
        .unwrap_or(0)
}

/// SIGKILL at one stage, then `agelab cleanup` (or a fresh reclaim when `fresh`); also the case
/// built to fail: the journal entry deleted before cleanup (`delete_entry`).
fn kill_case(
    g: &mut HostGuard,
    stage: &str,
    fresh: bool,
    delete_entry: bool,
) -> Result<(), String> {
    let what = format!(
        "SIGKILL {stage}, then {}{}",
        if fresh {
            "a fresh reclaim"
        } else {
            "agelab cleanup"
        },
        if delete_entry {
            " (journal entry deleted: built to fail)"
        } else {
            ""
        }
    );
    let policy = match stage {
        "after memcg" => "memcg-limit",
        // fifo pages out from the first step on, whatever the access sources see: the stage is
        // reached even on a loaded host (engine-all first needs the guest's pages to age).
        "mid-pageout" => "fifo",
        _ => "none",
    };
    let mut a = Agelab::spawn(&reclaim_args("256M", policy, "60s"));
    g.pids.push(a.pid);
    let line = a.wait_line("set up as", Duration::from_secs(60))?;
    let dev = device_of(&line).ok_or_else(|| format!("no device in {line:?}"))?;
    g.devs.push(dev);
    let zdev = ZramDevice::new(dev);
    let reached = match stage {
        // The memcg is the run's child process's.
        "after memcg" => poll(Duration::from_secs(60), || {
            !memcgs_of(&with_children(a.pid)).is_empty()
        }),
        "mid-pageout" => {
            // The swap header agelab wrote is one write already.
            let at_setup = zram_writes(&zdev);
            poll(Duration::from_secs(120), || zram_writes(&zdev) > at_setup)
        }
        _ => true,
    };
    if !reached {
        return Err(format!("{what}: stage never reached: {}", a.stderr()));
    }
    let used_kib = || {
        SwapStatus::read()
            .ok()
            .and_then(|s| s.area(&zdev.dev()).map(|a| a.used_kib))
            .unwrap_or(0)
    };
    if stage == "mid-pageout" {
        // Kill, where the run allows, while pages are out (the note below says how many).
        poll(Duration::from_secs(20), || used_kib() > 0);
    }
    let used = used_kib();
    let pids = with_children(a.pid);
    g.pids.extend(pids.iter().skip(1));
    a.kill9();
    // A run's child process dies with its parent (PR_SET_PDEATHSIG): wait until it is gone, so
    // the journal sees every owner dead.
    poll(Duration::from_secs(20), || {
        pids.iter()
            .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
    });
    // Without cleanup the checker must see the leftovers (swap on, journal entry, memcg).
    check_detects(
        &format!("{what}: before cleanup"),
        &pids,
        &[dev],
        &g.pre_existing,
    )?;
    if delete_entry {
        for (file, _) in Journal::system().entries().map_err(|e| e.to_string())? {
            let n = file.file_name().unwrap().to_string_lossy().into_owned();
            if pids.iter().any(|p| n.starts_with(&format!("{p}-"))) {
                std::fs::remove_file(&file).map_err(|e| e.to_string())?;
            }
        }
    }
    let (code, out, err) = if fresh {
        run_agelab(&[
            "reclaim",
            "--zram",
            "64M",
            "--policy",
            "none",
            "--mem",
            "16M",
            "--duration",
            "1s",
            "--cold-window",
            "500ms",
            "--workload",
            "seq-read",
        ])
    } else {
        run_agelab(&["cleanup"])
    };
    let text = format!("{out}{err}");
    if code != 0 {
        return Err(format!("{what}: exit {code}: {text}"));
    }
    if delete_entry {
        check_detects(&what, &pids, &[dev], &g.pre_existing)?;
        g.restore();
        return check_clean(
            &format!("{what}: test guard restore"),
            &pids,
            &[dev],
            &g.pre_existing,
        );
    }
    let needle = format!("restored /dev/zram{dev}");
    if !text.contains(&needle) {
        return Err(format!("{what}: output does not say {needle:?}: {text}"));
    }
    if stage == "after memcg" && !text.contains("memcg") {
        return Err(format!("{what}: output does not mention the memcg: {text}"));
    }
    println!(
        "# {what}: {} KiB were in swap at the kill; restored: {}",
        used,
        text.lines()
            .filter(|l| l.contains("restored"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    check_clean(&what, &pids, &[dev], &g.pre_existing)
}

/// Two concurrent runs complete on separate devices (or one refuses clearly) with every guest
/// byte intact; then a run killed while another continues is cleaned up without touching the
/// live one, which still completes with 0 bytes lost.
fn concurrent_case(g: &mut HostGuard) -> Result<(), String> {
    let mut a = Agelab::spawn(&reclaim_args("128M", "engine-all", "4s"));
    let mut b = Agelab::spawn(&reclaim_args("128M", "engine-all", "4s"));
    g.pids.extend([a.pid, b.pid]);
    let mut devs = Vec::new();
    let mut refused = 0;
    for r in [&mut a, &mut b] {
        let (code, err) = r.wait(Duration::from_secs(120))?;
        if let Some(l) = err.lines().find(|l| l.contains("set up as")) {
            devs.extend(device_of(l));
            g.devs.extend(device_of(l));
        }
        match code {
            0 if err.contains("verify ok") && !err.contains("WRONG") => {}
            0 => return Err(format!("concurrent: exit 0 without verify ok: {err}")),
            _ if err.contains("held by agelab") || err.contains("no free zram device") => {
                refused += 1;
                println!(
                    "# concurrent: one run refused: {}",
                    err.lines().last().unwrap_or("")
                );
            }
            c => return Err(format!("concurrent: exit {c}: {err}")),
        }
    }
    if refused == 2 {
        return Err("concurrent: both runs refused".into());
    }
    if devs.len() == 2 && devs[0] == devs[1] {
        return Err(format!(
            "concurrent: both runs set up the same device {devs:?}"
        ));
    }
    println!(
        "ok - two concurrent reclaim --zram runs: {} completed (0 bytes lost), {refused} refused, devices {devs:?}",
        2 - refused
    );
    check_clean(
        "after two concurrent runs",
        &[a.pid, b.pid],
        &devs,
        &g.pre_existing,
    )?;

    // A continues while B is killed and cleaned up.
    let mut a = Agelab::spawn(&reclaim_args("128M", "engine-all", "8s"));
    let mut b = Agelab::spawn(&reclaim_args("128M", "engine-all", "60s"));
    g.pids.extend([a.pid, b.pid]);
    let la = a.wait_line("set up as", Duration::from_secs(60))?;
    let lb = b.wait_line("set up as", Duration::from_secs(60))?;
    let (da, db) = (device_of(&la).unwrap(), device_of(&lb).unwrap());
    g.devs.extend([da, db]);
    if da == db {
        return Err(format!("live+killed: same device {da}"));
    }
    b.kill9();
    let (code, out, err) = run_agelab(&["cleanup"]);
    if code != 0 {
        return Err(format!("live+killed: cleanup exit {code}: {out}{err}"));
    }
    let live = format!("owned by live pid {}", a.pid);
    let restored = format!("restored /dev/zram{db}");
    if !out.contains(&live) || !out.contains(&restored) {
        return Err(format!(
            "live+killed: cleanup should list {live:?} and {restored:?}: {out}"
        ));
    }
    if SwapStatus::read()
        .map_err(|e| e.to_string())?
        .area(&ZramDevice::new(da).dev())
        .is_none()
    {
        return Err("live+killed: cleanup removed the live run's swap".into());
    }
    println!("ok - cleanup while another run lives: killed run's /dev/zram{db} restored, live run's /dev/zram{da} untouched");
    let (code, err) = a.wait(Duration::from_secs(120))?;
    if code != 0 || !err.contains("verify ok") {
        return Err(format!(
            "live+killed: the live run failed (exit {code}): {err}"
        ));
    }
    println!("ok - the run that continued completed: verify ok (0 guest bytes lost)");
    check_clean(
        "after live+killed",
        &[a.pid, b.pid],
        &[da, db],
        &g.pre_existing,
    )
}

fn lock_tests() -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(TEST_LOCK)
        .expect("test lock");
    // SAFETY: flock on an fd owned by `f`, which outlives the call; no memory is passed.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {TEST_LOCK}");
    f
}

fn missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (zram, swapon, cgroups)".into());
    }
    if !Path::new("/dev/kvm").exists() {
        return Some("no /dev/kvm".into());
    }
    if zram_indices().is_empty() {
        return Some("no zram device (modprobe zram)".into());
    }
    if !Path::new("/sys/class/zram-control/hot_add").exists() {
        return Some("no /sys/class/zram-control/hot_add".into());
    }
    if MemoryHierarchy::detect().is_err() {
        return Some("no memory cgroup controller".into());
    }
    None
}

#[test]
fn sigkill_at_every_stage_then_cleanup_leaves_host_as_before() {
    if let Some(why) = missing() {
        skip("host_faults", &why);
        return;
    }
    let _lock = lock_tests();
    let mut g = HostGuard {
        pre_existing: zram_indices(),
        devs: Vec::new(),
        pids: Vec::new(),
    };
    let mut failed = Vec::new();
    let mut run = |r: Result<(), String>| {
        if let Err(e) = r {
            println!("not ok - {e}");
            failed.push(e);
        }
    };
    run(kill_case(&mut g, "after swap on", false, false));
    run(kill_case(&mut g, "after memcg", false, false));
    run(kill_case(&mut g, "mid-pageout", false, false));
    run(kill_case(&mut g, "after swap on", true, false));
    run(kill_case(&mut g, "after memcg", true, false));
    run(kill_case(&mut g, "after swap on", false, true));
    run(kill_case(&mut g, "after memcg", false, true));
    run(concurrent_case(&mut g));
    g.restore();
    assert!(
        failed.is_empty(),
        "{} case(s) failed: {failed:#?}",
        failed.len()
    );
}
