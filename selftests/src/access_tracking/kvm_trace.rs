//! Direct evidence that an aging pass reached KVM: KVM's MMU-notifier trace events.
//!
//! `include/trace/events/kvm.h` defines `kvm_age_hva(start, end)` (traced by
//! `kvm_mmu_notifier_clear_young` and `..._clear_flush_young`: "age these host addresses") and
//! `kvm_test_age_hva(hva)` (`..._test_young`). Counting them around one forced aging pass says
//! whether, and for how many pages, the kernel asked KVM for young bits. They need tracefs and
//! the kvm trace events in the kernel config; where either is missing, [`KvmAgingTrace::open`]
//! says which.

use std::fs;
use std::path::{Path, PathBuf};

/// The events counted, as `events/kvm/<name>`.
const EVENTS: [&str; 2] = ["kvm_age_hva", "kvm_test_age_hva"];

/// mmap_lock events (`events/mmap_lock/<name>`), recorded where the kernel has them: MGLRU's
/// walk takes each mm's lock with `mmap_read_trylock()` and skips the mm when it fails, so a
/// pass that asked KVM nothing may be a skipped walk; these name the skip and the writer.
const LOCK_EVENTS: [&str; 3] = [
    "mmap_lock_start_locking",
    "mmap_lock_acquire_returned",
    "mmap_lock_released",
];

/// Ring buffer per CPU while counting (KiB): a pass over 64 MiB of 4 KiB pages traces ~16 k
/// events of ~60 bytes.
const BUFFER_KB: u32 = 16 * 1024;

/// Errors of the trace counter.
#[derive(Debug, thiserror::Error)]
pub enum KvmTraceError {
    /// No tracefs, or tracefs without the kvm events.
    #[error("{0}")]
    Unavailable(String),
    /// A tracefs file could not be read or written.
    #[error("tracefs {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The ring buffer dropped events, so the counts are a lower bound.
    #[error("the trace buffer lost events ({written} written, {kept} kept): counts incomplete")]
    Overrun {
        /// Events the kernel wrote.
        written: u64,
        /// Events still in the buffer.
        kept: u64,
    },
}

/// What KVM was asked during one aging pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvmAgingCalls {
    /// `kvm_age_hva` events (clear_young / clear_flush_young notifier calls).
    pub age_calls: u64,
    /// 4 KiB pages those calls covered.
    pub age_pages: u64,
    /// `kvm_test_age_hva` events (test_young calls), one page each.
    pub test_calls: u64,
    /// The traced task's failed `mmap_read_trylock()`s (an mm whose walk was skipped), each with
    /// the other tasks' write-side events on that mm during the pass: who held or awaited it.
    pub skipped_walks: Vec<SkippedWalk>,
}

/// A failed `mmap_read_trylock()` of the traced task, from the mmap_lock trace events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SkippedWalk {
    /// The mm (its hashed pointer, as the event prints it).
    pub mm: String,
    /// The failing event's trace line.
    pub event: String,
    /// Write-side events of other tasks on the same mm during the pass (trace lines, in order).
    pub writers: Vec<String>,
}

impl SkippedWalk {
    /// One line: the mm and the tasks that took or awaited its lock for writing.
    pub fn describe(&self) -> String {
        let tasks: Vec<&str> = self
            .writers
            .iter()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let mut uniq: Vec<&str> = Vec::new();
        for t in tasks {
            if !uniq.contains(&t) {
                uniq.push(t);
            }
        }
        format!(
            "mmap_read_trylock failed on mm {} (the walk skipped it); write side of that lock during the pass: {}",
            self.mm,
            if uniq.is_empty() {
                "no write events traced".to_string()
            } else {
                format!("{} ({} events, last: {})", uniq.join(", "), self.writers.len(), self.writers.last().map_or("", |l| l.trim()))
            }
        )
    }
}

/// The `mm=` value of an mmap_lock event line.
fn mm_of(line: &str) -> Option<&str> {
    line.split_whitespace().find_map(|w| w.strip_prefix("mm="))
}

/// The task's skipped walks in the text of tracefs `trace`: its `mmap_lock_acquire_returned`
/// events with `write=false success=false`, each with the write-side events on that mm.
pub fn skipped_walks(trace: &str, tid: i32) -> Vec<SkippedWalk> {
    let me = format!("-{tid} ");
    let lock_lines: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains(" mmap_lock_"))
        .collect();
    lock_lines
        .iter()
        .filter(|l| {
            l.contains(&me)
                && l.contains(" mmap_lock_acquire_returned: ")
                && l.contains("write=false")
                && l.contains("success=false")
        })
        .filter_map(|fail| {
            let mm = mm_of(fail)?;
            let writers = lock_lines
                .iter()
                .filter(|l| !l.contains(&me) && l.contains("write=true") && mm_of(l) == Some(mm))
                .map(|l| l.trim().to_string())
                .collect();
            Some(SkippedWalk {
                mm: mm.to_string(),
                event: fail.trim().to_string(),
                writers,
            })
        })
        .collect()
}

impl KvmAgingCalls {
    /// Notifier calls of either kind.
    pub fn calls(&self) -> u64 {
        self.age_calls + self.test_calls
    }

    /// Pages those calls covered.
    pub fn pages(&self) -> u64 {
        self.age_pages + self.test_calls
    }
}

/// Parses the text of tracefs `trace`: counts the two events and the pages they cover.
pub fn count_events(trace: &str) -> Result<KvmAgingCalls, KvmTraceError> {
    let mut c = KvmAgingCalls::default();
    for line in trace.lines() {
        if let Some(rest) = line.split_once(" kvm_age_hva: ").map(|(_, r)| r) {
            // "mmu notifier age hva: 0x007f3a00000000 -- 0x007f3a00001000"
            let range = rest.rsplit(": ").next().unwrap_or("");
            let mut ends = range
                .split(" -- ")
                .map(|h| u64::from_str_radix(h.trim().trim_start_matches("0x"), 16));
            if let (Some(Ok(start)), Some(Ok(end))) = (ends.next(), ends.next()) {
                c.age_calls += 1;
                c.age_pages += end.saturating_sub(start).div_ceil(4096);
            }
        } else if line.contains(" kvm_test_age_hva: ") {
            c.test_calls += 1;
        }
    }
    if let Some((written, kept)) = entries_header(trace) {
        if kept < written {
            return Err(KvmTraceError::Overrun { written, kept });
        }
    }
    Ok(c)
}

/// The host addresses of the `kvm_test_age_hva` events (test_young calls) in the text of tracefs
/// `trace`, in trace order.
pub fn test_age_hvas(trace: &str) -> Vec<u64> {
    trace
        .lines()
        .filter_map(|line| line.split_once(" kvm_test_age_hva: ").map(|(_, r)| r))
        .filter_map(|rest| {
            // "mmu notifier test age hva: 0x007f3a00002000"
            let hex = rest.rsplit(": ").next()?.trim().trim_start_matches("0x");
            u64::from_str_radix(hex, 16).ok()
        })
        .collect()
}

/// `# entries-in-buffer/entries-written: 12/12   #P:2` → (written, kept).
fn entries_header(trace: &str) -> Option<(u64, u64)> {
    let line = trace
        .lines()
        .find(|l| l.contains("entries-in-buffer/entries-written:"))?;
    let nums = line.split(':').nth(1)?.split_whitespace().next()?;
    let (kept, written) = nums.split_once('/')?;
    Some((written.parse().ok()?, kept.parse().ok()?))
}

/// Counts KVM's aging trace events around aging passes; restores tracefs on drop.
#[derive(Debug)]
pub struct KvmAgingTrace {
    root: PathBuf,
    saved_buffer_kb: Option<String>,
    saved_tracing_on: Option<String>,
}

impl KvmAgingTrace {
    /// Finds (or mounts) tracefs and checks that the kvm aging events exist.
    pub fn open() -> Result<Self, KvmTraceError> {
        let root = find_tracefs()?;
        for e in EVENTS {
            if !root.join("events/kvm").join(e).is_dir() {
                return Err(KvmTraceError::Unavailable(format!(
                    "this kernel has no kvm trace event {e} ({} missing: CONFIG_TRACING or KVM's trace events not built)",
                    root.join("events/kvm").join(e).display()
                )));
            }
        }
        let read = |f: &str| fs::read_to_string(root.join(f)).ok();
        let t = KvmAgingTrace {
            saved_buffer_kb: read("buffer_size_kb").map(|s| s.trim().to_string()),
            saved_tracing_on: read("tracing_on").map(|s| s.trim().to_string()),
            root,
        };
        t.write("buffer_size_kb", &BUFFER_KB.to_string())?;
        Ok(t)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), KvmTraceError> {
        let path = self.root.join(file);
        fs::write(&path, value).map_err(|source| KvmTraceError::Io { path, source })
    }

    /// Enables (with filters) or disables the events: KVM's for task `tid` only; the mmap_lock
    /// ones, where present, for `tid` and for every task's write side (the contenders).
    fn set_events(&self, on: Option<i32>) -> Result<(), KvmTraceError> {
        let (enable, kvm_filter, lock_filter) = match on {
            Some(tid) => (
                "1",
                format!("common_pid == {tid}"),
                format!("common_pid == {tid} || write == 1"),
            ),
            None => ("0", "0".to_string(), "0".to_string()),
        };
        let kvm = EVENTS.map(|e| (format!("events/kvm/{e}"), &kvm_filter));
        let lock = LOCK_EVENTS
            .map(|e| (format!("events/mmap_lock/{e}"), &lock_filter))
            .into_iter()
            .filter(|(dir, _)| self.root.join(dir).is_dir());
        for (dir, filter) in kvm.into_iter().chain(lock) {
            self.write(&format!("{dir}/filter"), filter)?;
            self.write(&format!("{dir}/enable"), enable)?;
        }
        Ok(())
    }

    /// Runs `pass` on this thread with the events enabled for this thread only, and returns its
    /// result and what KVM was asked.
    pub fn count<T>(&self, pass: impl FnOnce() -> T) -> Result<(T, KvmAgingCalls), KvmTraceError> {
        // Only this thread's events: the aging command runs in its context, while background
        // agents (kswapd, DAMON's kdamonds, damon_stat) would otherwise add their own calls.
        let tid = nix::unistd::gettid().as_raw();
        let (out, text) = self.record_task(tid, pass)?;
        let mut calls = count_events(&text)?;
        calls.skipped_walks = skipped_walks(&text, tid);
        Ok((out, calls))
    }

    /// Runs `pass` on this thread with the events enabled for task `tid` only (another task, e.g.
    /// a kernel thread that asks KVM while `pass` waits for it), and returns its result and the
    /// text of the trace (checked for lost events).
    pub fn record_task<T>(
        &self,
        tid: i32,
        pass: impl FnOnce() -> T,
    ) -> Result<(T, String), KvmTraceError> {
        self.write("tracing_on", "0")?;
        self.write("trace", "")?;
        self.set_events(Some(tid))?;
        self.write("tracing_on", "1")?;
        let out = pass();
        self.write("tracing_on", "0")?;
        self.set_events(None)?;
        let path = self.root.join("trace");
        let text =
            fs::read_to_string(&path).map_err(|source| KvmTraceError::Io { path, source })?;
        self.write("trace", "")?;
        if let Some((written, kept)) = entries_header(&text) {
            if kept < written {
                return Err(KvmTraceError::Overrun { written, kept });
            }
        }
        Ok((out, text))
    }
}

impl Drop for KvmAgingTrace {
    fn drop(&mut self) {
        let _ = self.set_events(None);
        if let Some(v) = self.saved_buffer_kb.take() {
            let _ = self.write("buffer_size_kb", &v);
        }
        if let Some(v) = self.saved_tracing_on.take() {
            let _ = self.write("tracing_on", &v);
        }
    }
}

/// tracefs: `/sys/kernel/tracing` (mounted here if it is an empty mount point), or the
/// debugfs automount `/sys/kernel/debug/tracing`.
fn find_tracefs() -> Result<PathBuf, KvmTraceError> {
    let main = Path::new("/sys/kernel/tracing");
    let debug = Path::new("/sys/kernel/debug/tracing");
    let ready = |p: &Path| p.join("trace").exists();
    if ready(main) {
        return Ok(main.to_path_buf());
    }
    if main.is_dir() {
        let _ = nix::mount::mount(
            Some("nodev"),
            main,
            Some("tracefs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
        if ready(main) {
            return Ok(main.to_path_buf());
        }
    }
    if ready(debug) {
        return Ok(debug.to_path_buf());
    }
    Err(KvmTraceError::Unavailable(
        "no tracefs (neither /sys/kernel/tracing nor /sys/kernel/debug/tracing: kernel without CONFIG_TRACING?)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shape of a real `trace` file (tracefs header, then one line per event).
    const TRACE: &str = "# tracer: nop
#
# entries-in-buffer/entries-written: 4/4   #P:2
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
 lru_gen_seconda-93      [001] .....    12.345678: kvm_age_hva: mmu notifier age hva: 0x007f3a00000000 -- 0x007f3a00001000
 lru_gen_seconda-93      [001] .....    12.345679: kvm_age_hva: mmu notifier age hva: 0x007f3a00010000 -- 0x007f3a00210000
 lru_gen_seconda-93      [001] .....    12.345680: kvm_test_age_hva: mmu notifier test age hva: 0x007f3a00002000
 lru_gen_seconda-93      [001] .....    12.345681: kvm_unmap_hva_range: mmu notifier unmap range: 0x1 -- 0x2
";

    #[test]
    fn counts_calls_and_pages() {
        let c = count_events(TRACE).unwrap();
        assert_eq!(c.age_calls, 2);
        assert_eq!(c.age_pages, 1 + 512);
        assert_eq!(c.test_calls, 1);
        assert_eq!(c.calls(), 3);
        assert_eq!(c.pages(), 514);
        assert_eq!(count_events("").unwrap(), KvmAgingCalls::default());
    }

    #[test]
    fn a_failed_trylock_names_the_writers_of_that_mm() {
        let trace = "\
 lru_gen_seconda-93      [001] .....    12.1: mmap_lock_acquire_returned: mm=00000000abcd memcg_id=7 write=false success=true
 khugepaged-40           [000] .....    12.2: mmap_lock_start_locking: mm=00000000abcd memcg_id=7 write=true
 khugepaged-40           [000] .....    12.2: mmap_lock_acquire_returned: mm=00000000abcd memcg_id=7 write=true success=true
 bash-12                 [000] .....    12.25: mmap_lock_start_locking: mm=00000000ffff memcg_id=1 write=true
 lru_gen_seconda-93      [001] .....    12.3: mmap_lock_acquire_returned: mm=00000000abcd memcg_id=7 write=false success=false
 khugepaged-40           [000] .....    12.4: mmap_lock_released: mm=00000000abcd memcg_id=7 write=true
";
        let s = skipped_walks(trace, 93);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].mm, "00000000abcd");
        assert_eq!(s[0].writers.len(), 3, "{:?}", s[0].writers);
        assert!(
            s[0].describe().contains("khugepaged-40"),
            "{}",
            s[0].describe()
        );
        assert!(!s[0].describe().contains("bash-12"));
        assert!(skipped_walks(trace, 40).is_empty());
        assert!(skipped_walks(TRACE, 93).is_empty());
    }

    #[test]
    fn test_young_addresses_are_read_in_order() {
        assert_eq!(test_age_hvas(TRACE), vec![0x7f3a00002000]);
        assert!(test_age_hvas("").is_empty());
    }

    #[test]
    fn a_lossy_buffer_is_an_error_not_a_low_count() {
        let lossy = TRACE.replace("4/4", "2/9");
        assert!(matches!(
            count_events(&lossy),
            Err(KvmTraceError::Overrun {
                written: 9,
                kept: 2
            })
        ));
    }

    proptest::proptest! {
        // 256 cases (proptest's default): arbitrary text never panics the parser.
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,400}") {
            let _ = count_events(&s);
        }
    }
}
