//! Undoing the host changes agelab journals, on kernel files alone: removing a memcg agelab
//! created and stopping a kdamond it started (the zram undo is [`undo_zram`]). The journal and the
//! host guard stand on these, so nothing here imports either.
//!
//! [`undo_zram`]: crate::kernel::swap::undo_zram

use crate::kernel::sysfs::{read_trimmed, read_u64, write_str, KernelFileError};
use std::path::Path;
use std::time::Duration;

/// What the kdamond in `dir` monitors (its first context's first target), in
/// [`target_text`](crate::kernel::damon::target_text)'s words; `None` when it has no such target
/// or a file does not read.
pub fn configured_target(dir: &Path) -> Option<String> {
    let ctx = dir.join("contexts/0");
    let t = ctx.join("targets/0");
    match read_trimmed(ctx.join("operations")).ok()?.as_str() {
        "vaddr" => Some(format!(
            "vaddr pid {}",
            read_trimmed(t.join("pid_target")).ok()?
        )),
        "paddr" => {
            let n = read_u64(t.join("regions/nr_regions")).ok()?;
            let mut r = Vec::new();
            for i in 0..n.min(4096) {
                let d = t.join(format!("regions/{i}"));
                let (s, e) = (
                    read_u64(d.join("start")).ok()?,
                    read_u64(d.join("end")).ok()?,
                );
                r.push(format!("{s}-{e}"));
            }
            Some(format!("paddr {}", r.join(" ")))
        }
        _ => None,
    }
}

/// Whether `now` (a stopped kdamond's [`configured_target`]) is what a kdamond being configured
/// for `ours` looks like part way: nothing readable yet, a vaddr target with its pid still 0, or
/// paddr regions each unset (`0-0`) or one of ours.
fn partial_target(now: Option<&str>, ours: &str) -> bool {
    let Some(now) = now else { return true };
    let (Some((ops, rest)), Some((our_ops, our_rest))) =
        (now.split_once(' '), ours.split_once(' '))
    else {
        return false;
    };
    if ops != our_ops {
        return false;
    }
    match ops {
        "vaddr" => rest == our_rest || rest == "pid 0",
        "paddr" => {
            let our_ranges: std::collections::HashSet<&str> = our_rest.split(' ').collect();
            rest.split(' ')
                .filter(|r| !r.is_empty())
                .all(|r| r == "0-0" || our_ranges.contains(r))
        }
        _ => false,
    }
}

/// The journal's undo of [`HostChange::Kdamond`](crate::journal::HostChange::Kdamond): `state`
/// off, `nr_kdamonds` 0 (nothing when `nr_kdamonds` is already 0: killed before the kdamond was
/// created). With `target` (what agelab's kdamond monitored), a kdamond in `dir` that monitors
/// something else is not agelab's — someone set it up after agelab's owner died and its own
/// kdamond stopped — and is left alone.
pub fn undo_kdamond(
    dir: &Path,
    nr_path: &Path,
    target: Option<&str>,
) -> Result<String, KernelFileError> {
    if !nr_path.exists() || read_u64(nr_path)? == 0 {
        return Ok(format!("DAMON {}: nothing to stop", dir.display()));
    }
    if let Some(ours) = target {
        let now = configured_target(dir);
        let running = read_trimmed(dir.join("state")).is_ok_and(|s| s == "on");
        let mine = match (now.as_deref(), running) {
            (Some(c), _) if c == ours => true,
            // Stopped: also agelab's when killed while configuring it (a part of its target).
            (c, false) => partial_target(c, ours),
            _ => false,
        };
        if !mine {
            return Ok(format!(
                "DAMON {}: not agelab's any more (it monitors {}, agelab's monitored {ours}): left alone",
                dir.display(),
                now.as_deref().unwrap_or("nothing readable")
            ));
        }
    }
    let _ = write_str(dir.join("state"), "off");
    write_str(nr_path, "0")?;
    Ok(format!(
        "DAMON kdamond {} off, nr_kdamonds 0",
        dir.display()
    ))
}

/// Moves every task back to `parent_dir`, then removes `dir` (rmdir fails with EBUSY while a task
/// is still inside, e.g. one that was exiting, so it is retried briefly).
pub fn remove_cgroup(dir: &Path, parent_dir: &Path) -> Result<(), std::io::Error> {
    let mut last_err = None;
    for _ in 0..50 {
        if !dir.exists() {
            return Ok(());
        }
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter(|l| !l.trim().is_empty()) {
            // A task that exits in between makes this fail with ESRCH: nothing left to move.
            let _ = write_str(parent_dir.join("cgroup.procs"), pid.trim());
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last_err = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("cgroup still busy")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_target_is_ours_configured_part_way() {
        assert!(partial_target(
            Some("paddr 4096-8192 0-0"),
            "paddr 4096-8192 12288-16384"
        ));
        assert!(!partial_target(Some("paddr 4096-8192 0-0"), "paddr 0-4096"));
        assert!(!partial_target(Some("vaddr pid 77"), "vaddr pid 4242"));
        assert!(partial_target(Some("vaddr pid 0"), "vaddr pid 4242"));
    }
}
