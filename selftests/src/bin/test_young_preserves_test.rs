//! test_young_preserves_test: does asking KVM whether a page is young leave the answer in place?
//!
//! `mmu_notifier_test_young` is a query: KVM's handler (`kvm_test_age_gfn`) must report a guest
//! page's Accessed bit without clearing it, or whoever only asked consumes the access the next
//! aging pass should see. In the kernel khugepaged asks it for every PTE it scans whose host PTE
//! and folio carry no access of their own (`collapse_scan_pmd`: `pte_young || folio_test_young
//! || folio_test_referenced || mmu_notifier_test_young`); nothing else in agelab's tests does.
//!
//! The scenario: guest memory is private anonymous 4 KiB pages, populated with THP off for the
//! mapping, advised `MADV_HUGEPAGE` (so khugepaged scans it) only while the test waits for
//! khugepaged, `MADV_NOHUGEPAGE` again before any aging pass. It must scan without collapsing
//! (a collapse copies the pages and zaps KVM's mappings): the last page of every 2 MiB range is
//! a guard, populated and then freed lazily (`MADV_FREE`), so each PMD's scan asks test_young for
//! the 511 pages before the guard and then stops at the guard (`SCAN_PAGE_LAZYFREE`: a clean
//! lazyfree folio). Guard pages are never touched again and are judged with no set.
//!
//! Each page class is charged to a memcg of its own (set A, the control set C, the rest), so
//! lru_gen's forced aging judges them exactly (recall and precision, the 90% rule of
//! `lru_gen_secondary_mmu_test`); the guards sit in a fourth memcg that is never judged (a folio
//! made lazyfree moves to the file LRU, into a young generation, whenever its batch drains). After two aging passes every young bit is cleared (host PTEs
//! and KVM's); the guest reads set A, so only KVM's Accessed bits record it. khugepaged then
//! scans all of guest memory at least once from start to end (`full_scans` advances by two),
//! while its `kvm_test_age_hva` trace events are recorded. The next aging pass must find A young.
//!
//! Negative control, on every kernel: the guest reads set C and a clearing consumer (one more
//! forced aging pass, which asks KVM through clear_young) runs between the read and the judged
//! pass: C must then be found not young (recall ≤ 10%), so the judgement can fail.
//!
//! Host knobs (THP `enabled`, khugepaged's `scan_sleep_millisecs` and `pages_to_scan`) are
//! journaled and restored on every exit path.
//!
//! Exit codes: 0 pass, 1 fail, 4 skip (no KVM, lru_gen, THP/khugepaged or KVM trace events),
//! 2 bad usage.

use agelab::access_tracking::fail;
use agelab::access_tracking::khugepaged::{
    advise, advise_all, bursts, khugepaged_counter, khugepaged_pid, lazyfree_guards, selected,
    tally, ChunkSet, Layout, BURST_GAP, PMD_BYTES, PMD_PAGES, THP_DIR,
};
use agelab::access_tracking::kvm_trace::{test_age_hvas, KvmAgingTrace, KvmTraceError};
use agelab::access_tracking::lru_gen::{lru_gen_usable, MemcgAging, Observed, YoungJudgement};
use agelab::args::{duration_at_least, number_in, size_at_least, ArgValueError};
use agelab::ktap::{skip_all, Ktap, OrFail, OrSkip, TestId, TestPlan};
use agelab_mglru::host_guard::{HostRestore, RestoreGuard};
use agelab_mglru::kernel::lru_gen::LruGenControl;
use agelab_mglru::large_folios::census;
use agelab_vmm::memstress::{Access, GuestCmd, Memstress, MemstressConfig};
use agelab_vmm::{Backing, PAGE_SIZE};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NAME: &str = "test_young_preserves_test";
const USAGE: &str = "usage: test_young_preserves_test [-h] [-b vcpu_bytes] [-v vcpus] [-t timeout]
  -b: memory per vCPU, a multiple of 2M of at least 8M (default: 16M); a quarter of it is set A,
      a quarter the control set C
  -v: vCPUs (default: 2)
  -t: longest wait for khugepaged's two full scans, e.g. 300s (default: 300s)";

/// Full scans khugepaged must complete after the read: the first may have started before it.
const FULL_SCANS: u64 = 2;
/// khugepaged's sleep between scans for the test (ms): short, so the wait is seconds.
const SCAN_SLEEP_MS: &str = "100";
/// Guest reads per page of a set (the kernel selftests' memstress reads more than once).
const READ_SWEEPS: u64 = 4;

fn vcpu_bytes(s: &str) -> Result<u64, ArgValueError> {
    let n = size_at_least(4 * PMD_BYTES)(s)?;
    if !n.is_multiple_of(PMD_BYTES) {
        return Err(ArgValueError::NotMultiple {
            given: s.to_string(),
            unit: "2M",
        });
    }
    Ok(n)
}

#[derive(Debug, Parser)]
#[command(name = NAME, args_override_self = true)]
struct Args {
    /// Memory per vCPU.
    #[arg(short = 'b', value_name = "vcpu_bytes", default_value = "16M", value_parser = vcpu_bytes)]
    bytes_per_vcpu: u64,
    /// vCPUs.
    #[arg(short = 'v', value_name = "vcpus", default_value = "2", value_parser = number_in(1usize..=64))]
    vcpus: usize,
    /// Longest wait for khugepaged's full scans.
    #[arg(short = 't', value_name = "timeout", default_value = "300s", value_parser = duration_at_least(Duration::from_secs(1)))]
    timeout: Duration,
}

/// Runs `access` over the non-guard pages of `set` in every region, `sweeps` times.
fn touch_set(ms: &Memstress, set: ChunkSet, access: Access, sweeps: u64) {
    for c in set.first..set.first + set.n {
        ms.run(GuestCmd::window(
            access,
            sweeps,
            c * PMD_PAGES,
            PMD_PAGES - 1,
        ))
        .or_fail();
    }
}

/// The memcgs of the page classes: set A, control set C, the rest; and the guards' (not judged).
struct ClassMemcgs {
    a: MemcgAging,
    c: MemcgAging,
    rest: MemcgAging,
    guards: MemcgAging,
}

impl ClassMemcgs {
    fn create() -> Self {
        let make = |class: &str| {
            MemcgAging::create(&format!("{NAME}-{class}-{}", std::process::id())).or_fail()
        };
        ClassMemcgs {
            a: make("a"),
            c: make("c"),
            rest: make("rest"),
            guards: make("guards"),
        }
    }

    fn all(&self) -> [&MemcgAging; 3] {
        [&self.a, &self.c, &self.rest]
    }

    /// One forced aging pass over every class memcg, this process a member of each while it is
    /// aged; young pages per class (A, C, rest).
    fn age(&self) -> [u64; 3] {
        let young = self
            .all()
            .map(|m| m.age_as_member().or_fail().0.found_young());
        self.rest.leave().or_fail();
        young
    }
}

/// Journals and sets one knob for the run; the guard restores it.
fn set_knob(k: &Ktap, what: &str, path: PathBuf, value: &str) -> RestoreGuard {
    let (guard, prev) = HostRestore::set_knob(what, &path, value).or_fail();
    k.diag(&format!(
        "{} = {value} for the run (was {prev}; journaled, restored at exit)",
        path.display()
    ));
    guard
}

/// The tests, in report order.
struct Tests {
    asked: TestId,
    no_collapse: TestId,
    preserved: TestId,
    control: TestId,
}

impl Tests {
    fn register(plan: &mut TestPlan) -> Self {
        Tests {
            asked: plan.add(
                "khugepaged asked KVM test_young about set A after the guest read it (kvm_test_age_hva events)",
            ),
            no_collapse: plan.add(
                "khugepaged collapsed no guest memory (4 KiB folios, every 2 MiB range keeps its lazyfree guard)",
            ),
            preserved: plan.add(
                "pages the guest read stay young for lru_gen aging after khugepaged's test_young queries",
            ),
            control: plan.add(
                "negative control: a clear_young pass between the read and the judged pass leaves them old",
            ),
        }
    }
}

/// Judges a pass that followed reads of the class at `class` (0 = A, 1 = C).
fn judgement(young: [u64; 3], class: usize, touched: u64) -> YoungJudgement {
    YoungJudgement {
        touched,
        true_young: young[class],
        false_young: young.iter().sum::<u64>() - young[class],
    }
}

fn main() {
    if let Err(e) = agelab_mglru::host_guard::install_signal_cleanup() {
        fail(&e.to_string());
    }
    let args: Args = agelab::args::parse(NAME, USAGE);
    let layout = Layout {
        chunks: args.bytes_per_vcpu / PMD_BYTES,
        vcpus: args.vcpus as u64,
    };
    let cfg = MemstressConfig {
        vcpus: args.vcpus,
        bytes_per_vcpu: args.bytes_per_vcpu,
        overlap: false,
        backing: Backing::Anon,
    };
    agelab_vmm::vm::open_kvm().or_skip();
    if let Err(e) = lru_gen_usable(&LruGenControl::new()) {
        skip_all(&e.to_string());
    }
    if !Path::new(THP_DIR).join("khugepaged/full_scans").exists() {
        skip_all(&format!(
            "no THP/khugepaged ({THP_DIR}/khugepaged missing: kernel without CONFIG_TRANSPARENT_HUGEPAGE)"
        ));
    }
    let trace = match KvmAgingTrace::open() {
        Ok(t) => t,
        Err(KvmTraceError::Unavailable(why)) => skip_all(&why),
        Err(e) => fail(&e.to_string()),
    };
    let mut plan = TestPlan::new();
    let tests = Tests::register(&mut plan);
    let mut k = plan.start();

    // THP for advised memory only: khugepaged then scans guest memory and no other mapping of
    // the VMM's (and collapses none of them).
    let enabled = Path::new(THP_DIR).join("enabled");
    let _thp =
        (selected(&enabled) != "madvise").then(|| set_knob(&k, "THP enabled", enabled, "madvise"));
    let guest_pages = layout.vcpus * layout.chunks * PMD_PAGES;
    let _sleep = set_knob(
        &k,
        "khugepaged scan_sleep_millisecs",
        Path::new(THP_DIR).join("khugepaged/scan_sleep_millisecs"),
        SCAN_SLEEP_MS,
    );
    // One wake-up covers all of guest memory (khugepaged counts every PTE it looks at).
    let _pages = set_knob(
        &k,
        "khugepaged pages_to_scan",
        Path::new(THP_DIR).join("khugepaged/pages_to_scan"),
        &(2 * guest_pages).max(4096).to_string(),
    );

    let sets = ClassMemcgs::create();
    let mut ms = Memstress::new(&cfg).or_skip();
    ms.start().or_fail();
    let map = ms.vm().page_map().clone();
    for g in layout.guards() {
        let p = map.page(g).or_fail_with("guard page outside guest memory");
        if !(p.hva + PAGE_SIZE).is_multiple_of(PMD_BYTES) {
            fail(&format!(
                "guest page {g} at host {:#x} does not end a 2 MiB range: guest memory is not 2 MiB aligned in host memory",
                p.hva
            ));
        }
    }

    // Population, THP off for the mapping (the anonymous backing's MADV_NOHUGEPAGE): the guards
    // first, so the lru_add batches have moved them to the LRU by the time they are freed (a
    // folio off the LRU is not made lazyfree).
    sets.guards
        .charge(|| {
            for c in 0..layout.chunks {
                ms.run(GuestCmd::window(
                    Access::Write,
                    1,
                    c * PMD_PAGES + PMD_PAGES - 1,
                    1,
                ))
                .or_fail();
            }
        })
        .or_fail();
    sets.a
        .charge(|| touch_set(&ms, layout.set_a(), Access::Write, 1))
        .or_fail();
    sets.c
        .charge(|| touch_set(&ms, layout.set_c(), Access::Write, 1))
        .or_fail();
    sets.rest
        .charge(|| touch_set(&ms, layout.rest(), Access::Write, 1))
        .or_fail();
    let sizes = sets.all().map(|m| m.read().or_fail().total());
    k.diag(&format!(
        "guest memory {guest_pages} pages (anonymous 4 KiB) in four memcgs: A {} pages (set {}), C {} (set {}), rest {} (set {}), guards {} (set {})",
        sizes[0],
        layout.pages(layout.set_a()),
        sizes[1],
        layout.pages(layout.set_c()),
        sizes[2],
        layout.pages(layout.rest()),
        sets.guards.read().or_fail().total(),
        layout.vcpus * layout.chunks
    ));
    for g in layout.guards() {
        let p = map.page(g).or_fail_with("guard page outside guest memory");
        advise(p.hva, PAGE_SIZE, libc::MADV_FREE, "MADV_FREE");
    }
    let khugepaged = khugepaged_pid()
        .or_fail_with("no khugepaged thread although THP is enabled for advised memory");
    let collapsed_before = khugepaged_counter("pages_collapsed");

    // Two passes: the first clears the young bits population left (host PTEs and KVM's), the
    // second shows what is young with nobody touching anything.
    sets.age();
    let idle = sets.age();
    k.diag(&format!(
        "nobody touched anything: young A {} C {} rest {}",
        idle[0], idle[1], idle[2]
    ));

    // The guest reads A; then khugepaged scans all of guest memory at least once. Guest memory
    // is open to khugepaged only for this wait: a scan holds each PMD's page table lock while it
    // asks about its PTEs, and lru_gen's walk skips a PMD whose lock it cannot take at once, so an
    // aging pass running alongside a scan would miss young pages on any kernel.
    // Traced from before the advice: every question khugepaged asks about guest memory is seen.
    touch_set(&ms, layout.set_a(), Access::Read, READ_SWEEPS);
    let started = Instant::now();
    let mut scans_before = 0;
    let (scans, text) = trace
        .record_task(khugepaged, || {
            advise_all(&map, libc::MADV_HUGEPAGE, "MADV_HUGEPAGE");
            scans_before = khugepaged_counter("full_scans");
            let deadline = started + args.timeout;
            loop {
                let now = khugepaged_counter("full_scans");
                if now >= scans_before + FULL_SCANS || Instant::now() >= deadline {
                    return now;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .or_fail();
    let waited = started.elapsed();
    // Takes the mmap lock for writing: returns once khugepaged has left this mm, whose guest
    // memory it skips from then on.
    advise_all(&map, libc::MADV_NOHUGEPAGE, "MADV_NOHUGEPAGE");
    if scans < scans_before + FULL_SCANS {
        fail(&format!(
            "khugepaged completed {} full scans in {waited:?} (full_scans {scans_before} -> {scans}), {FULL_SCANS} needed: is it scanning (scan_sleep_millisecs {SCAN_SLEEP_MS}, pid {khugepaged})?",
            scans - scans_before
        ));
    }
    let calls = tally(&test_age_hvas(&text), &map, &layout);
    let set_a = layout.pages(layout.set_a());
    k.diag(&format!(
        "khugepaged's test_young calls by wake-up (bursts apart by > {} ms): {:?}",
        BURST_GAP.as_millis(),
        bursts(&text)
    ));
    k.diag(&format!(
        "khugepaged (pid {khugepaged}) full scans {scans_before} -> {scans} in {:.2} s: {} test_young calls, {} about guest memory, {} distinct guest pages, {} of set A's {set_a} pages",
        waited.as_secs_f64(),
        calls.events,
        calls.in_guest,
        calls.guest_pages,
        calls.set_a_pages
    ));
    // A complete scan after the read asks about every page of A (host PTE old, folio neither
    // young nor referenced after the two passes, each PMD scanned up to its guard).
    let coverage = calls.set_a_pages as f64 / set_a.max(1) as f64;
    k.diag(&format!(
        "khugepaged asked about {:.1}% of set A (need >= 90%)",
        coverage * 100.0
    ));
    k.result(tests.asked, calls.in_guest > 0 && coverage >= 0.9);

    let collapsed = khugepaged_counter("pages_collapsed") - collapsed_before;
    let folios = census(&map).or_fail();
    let (guards_present, guards_lazy) = lazyfree_guards(&map, &layout).or_fail();
    let only_small = folios.folios.keys().all(|&b| b == PAGE_SIZE);
    let guards = layout.vcpus * layout.chunks;
    k.diag(&format!(
        "guest folios: {}; guards present {guards_present} of {guards}, lazyfree {guards_lazy}; khugepaged pages_collapsed +{collapsed} (any process)",
        folios.describe()
    ));
    k.result(
        tests.no_collapse,
        only_small && folios.absent == 0 && guards_lazy == guards,
    );

    let judged = judgement(sets.age(), 0, set_a);
    k.diag(&format!(
        "aging pass after khugepaged's scans of what the guest read (A): {}",
        judgement_line(&judged)
    ));
    k.result(tests.preserved, judged.observed() == Observed::Yes);

    // Negative control: the guest reads C; a clearing pass consumes the access first.
    let set_c = layout.pages(layout.set_c());
    touch_set(&ms, layout.set_c(), Access::Read, READ_SWEEPS);
    let consumer = judgement(sets.age(), 1, set_c);
    k.diag(&format!(
        "control: clearing aging pass right after the guest read C: {}",
        judgement_line(&consumer)
    ));
    let control = judgement(sets.age(), 1, set_c);
    k.diag(&format!(
        "control: judged pass after that: {} (expected not young)",
        judgement_line(&control)
    ));
    k.result(tests.control, control.observed() == Observed::No);

    drop(ms);
    drop(sets);
    agelab_mglru::host_guard::run_pending();
    k.finish()
}

fn judgement_line(j: &YoungJudgement) -> String {
    format!("{}: observed {}", j.describe(), j.observed().as_str())
}

/// `option.or_fail_with(msg)`: the value, or `# FAIL: msg` and exit 1.
trait OrFailWith<T> {
    fn or_fail_with(self, msg: &str) -> T;
}

impl<T> OrFailWith<T> for Option<T> {
    fn or_fail_with(self, msg: &str) -> T {
        self.unwrap_or_else(|| fail(msg))
    }
}
