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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmAgingCalls {
    /// `kvm_age_hva` events (clear_young / clear_flush_young notifier calls).
    pub age_calls: u64,
    /// 4 KiB pages those calls covered.
    pub age_pages: u64,
    /// `kvm_test_age_hva` events (test_young calls), one page each.
    pub test_calls: u64,
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

    fn set_events(&self, on: bool) -> Result<(), KvmTraceError> {
        for e in EVENTS {
            self.write(
                &format!("events/kvm/{e}/enable"),
                if on { "1" } else { "0" },
            )?;
        }
        Ok(())
    }

    /// Runs `pass` on this thread with the events enabled for this thread only, and returns its
    /// result and what KVM was asked.
    pub fn count<T>(&self, pass: impl FnOnce() -> T) -> Result<(T, KvmAgingCalls), KvmTraceError> {
        // Only this thread's events: the aging command runs in its context, while background
        // agents (kswapd, DAMON's kdamonds, damon_stat) would otherwise add their own calls.
        let (out, text) = self.record_task(nix::unistd::gettid().as_raw(), pass)?;
        Ok((out, count_events(&text)?))
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
        self.write("set_event_pid", &tid.to_string())?;
        self.set_events(true)?;
        self.write("tracing_on", "1")?;
        let out = pass();
        self.write("tracing_on", "0")?;
        self.set_events(false)?;
        self.write("set_event_pid", "")?;
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
        let _ = self.set_events(false);
        let _ = self.write("set_event_pid", "");
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
