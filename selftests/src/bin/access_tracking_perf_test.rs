//! access_tracking_perf_test: the cost and the accuracy of KVM access tracking, after the kernel
//! selftest of the same name (tools/testing/selftests/kvm/access_tracking_perf_test.c).
//!
//! Every vCPU touches every page of its region; the host times each phase and, between phases,
//! makes guest memory idle through lru_gen aging of the test's memcg (preferred when `enabled`
//! has 0x3) or the page_idle bitmap. Both reach KVM only through the clear_young MMU notifier.
//! Phase lines are the kernel's (`%-30s: %ld.%09lds`); the checks are KTAP results:
//! - lru_gen: every test page is accounted to the memcg; after each aging the generation holding
//!   more than 90% of the test's pages is newer than before and is the one a forced pass moves
//!   young pages into, `max_seq - 1` (50% with a warning in warn mode).
//!   The memcg holds guest memory only: the test joins it after the VM exists, before the guest
//!   populates its memory, so the VMM's own pages (page tables, code copies, stacks) are not
//!   judged;
//! - page_idle: < 1% of pages without a PFN; < 10% of pages still idle after the guest touched
//!   them (a warning in warn mode).
//!
//! One addition to the kernel test: after "Reading from idle memory" a last aging/marking
//! verifies the reads too (the kernel only times them); its time is a `#` line, not a phase.
//!
//! Exit codes: 0 pass, 1 fail, 4 skip (no KVM; neither lru_gen nor page_idle — the control
//! phases are still run and timed, the checks are reported as SKIP; no huge pages for
//! `-s hugetlb`), 2 for a bad command line (the kernel's getopt tests exit 1 through a failed
//! assertion; a distinct code lets scripts tell usage errors from test failures).

use agelab::access_tracking::aging_sweep::{
    measure_cell, tables, SweepPlan, SweepReport, SWEEP_SOURCES,
};
use agelab::access_tracking::env::{
    detect_tracking, idle_check_unreliable, running_nested, TrackingMode,
};
use agelab::access_tracking::folios::prepare_backing;
use agelab::access_tracking::lru_gen::{lru_gen_usable, MemcgAging, MemcgGenerations};
use agelab::access_tracking::page_idle::{IdleMarkReport, IdleMarker};
use agelab::access_tracking::{fail, phase_line};
use agelab::args::{duration_at_least, from_str, number_in, size_at_least};
use agelab::ktap::{self, Ktap, OrFail, OrSkip, TestId, TestPlan};
use agelab_mglru::kernel::lru_gen::LruGenControl;
use agelab_vmm::memstress::{Access, GuestCmd, Memstress, MemstressConfig};
use agelab_vmm::{Backing, PAGE_SIZE};
use clap::Parser;
use std::time::{Duration, Instant};

const NAME: &str = "access_tracking_perf_test";

const USAGE: &str =
    "usage: access_tracking_perf_test [-h] [-b vcpu_bytes] [-v vcpus] [-o] [-s mem_type] [-w warn]
       access_tracking_perf_test -p [-b vcpu_bytes] [-s mem_type] [--vcpu-counts 1,2,4,8,16]
                                 [--sources LIST] [--window 1s] [--passes 3] [--read] [--json]
  -h: display this help message
  -b: memory each vCPU touches, e.g. 64M or 1G (default: 1G)
  -v: number of vCPUs (default: 1)
  -o: overlap guest memory accesses instead of partitioning them per vCPU
  -s: backing: anonymous|anon (4 KiB pages) | anonymous_thp|thp | shmem|memfd |
      anonymous_hugetlb|anonymous_hugetlb_2mb|hugetlb | mthp-SIZE (anonymous multi-size THP,
      e.g. mthp-64k) | memfd-mthp-SIZE (shmem large folios) | file:PATH (default: anonymous);
      an mTHP size is turned on for the test (journaled, restored), skipped where missing
  -w: more than 10% of pages still idle/old after the guest touched them: 0 = fail, >0 = warn
      only (default: warn with NUMA balancing on, else fail; unlike the kernel's test, running
      nested alone does not warn: pass -w 1 on nested hardware)
  -p: aging while the vCPUs fault, by vCPU count (the mode the kernel test dropped): for each
      vCPU count and source, one thread runs aging passes back to back while every vCPU sweeps
      its region; prints per cell the pass time (median, p99), the pages found young (median)
      and the vCPUs' ns per access against a window without aging. -v and -o are not used.
  --vcpu-counts: vCPU counts of the -p sweep (default: 1,2,4,8,16)
  --sources: sources of the -p sweep (default: lru_gen,page_idle,kvm-clear-log,uffd-minor;
      uffd-minor needs shmem/memfd backing, a source this kernel or backing lacks is skipped)
  --window: shortest aging window per cell, and the window without aging (default: 1s)
  --passes: fewest aging passes per cell; the window goes on until done (default: 3)
  --read: the vCPUs read instead of write during -p
  --json: -p prints one JSON object instead of the tables";

#[derive(Debug, Parser)]
#[command(name = NAME, args_override_self = true)]
struct Args {
    /// Memory each vCPU touches.
    #[arg(short = 'b', value_name = "vcpu_bytes", default_value = "1G", value_parser = size_at_least(PAGE_SIZE))]
    bytes_per_vcpu: u64,
    /// Number of vCPUs.
    #[arg(short = 'v', value_name = "vcpus", default_value = "1", value_parser = number_in(1usize..=256))]
    vcpus: usize,
    /// Overlap guest memory accesses instead of partitioning them per vCPU.
    #[arg(short = 'o')]
    overlap: bool,
    /// Backing of guest memory.
    #[arg(short = 's', value_name = "mem_type", default_value = "anonymous", value_parser = from_str::<Backing>)]
    backing: Backing,
    /// Idle pages check: 0 = fail, >0 = warn only.
    #[arg(short = 'w', value_name = "warn")]
    warn: Option<u32>,
    /// Aging while the vCPUs fault, by vCPU count.
    #[arg(short = 'p')]
    aging_sweep: bool,
    /// vCPU counts of the sweep.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "1,2,4,8,16", value_parser = number_in(1usize..=256))]
    vcpu_counts: Vec<usize>,
    /// Sources of the sweep.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "lru_gen,page_idle,kvm-clear-log,uffd-minor", value_parser = sweep_source)]
    sources: Vec<String>,
    /// Shortest aging window per cell.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration_at_least(Duration::from_millis(10)))]
    window: Duration,
    /// Fewest aging passes per cell.
    #[arg(long, value_name = "N", default_value = "3", value_parser = number_in(1usize..=100_000))]
    passes: usize,
    /// The vCPUs read instead of write during the sweep.
    #[arg(long)]
    read: bool,
    /// The sweep as one JSON object.
    #[arg(long)]
    json: bool,
}

fn sweep_source(s: &str) -> Result<String, String> {
    if SWEEP_SOURCES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "unknown sweep source '{s}' (expected {})",
            SWEEP_SOURCES.join(", ")
        ))
    }
}

impl Args {
    fn memstress(&self) -> MemstressConfig {
        MemstressConfig {
            vcpus: self.vcpus,
            bytes_per_vcpu: self.bytes_per_vcpu,
            overlap: self.overlap,
            backing: self.backing.clone(),
        }
    }
}

/// State of the idle checks between phases.
struct Tracker {
    mode: Option<TrackingMode>,
    warn_only: bool,
    memcg: Option<MemcgAging>,
    marker: Option<IdleMarker>,
    test_pages: u64,
    last_gen: Option<u64>,
}

impl Tracker {
    /// The kernel's `too_many_idle_pages()`: fail, or warn in warn mode.
    fn too_many_idle(&self, k: &mut Ktap, desc: TestId, who: &str, idle: u64, total: u64) {
        let msg = format!("{who}Too many pages still idle ({idle} out of {total})");
        if self.warn_only {
            k.diag(&format!(
                "WARNING: {msg}, this will affect performance results."
            ));
            k.result(desc, true);
        } else {
            k.diag(&msg);
            k.result(desc, false);
        }
    }

    /// The kernel's `find_generation()`: the generation holding > 90% of the test's pages, or in
    /// warn mode > 50% with a warning. `Err` is a failed check.
    fn find_generation(&self, k: &Ktap, g: &MemcgGenerations) -> Result<u64, NoGeneration> {
        let ninety = self.test_pages * 9 / 10;
        if let Some(seq) = g.find_generation(ninety) {
            return Ok(seq);
        }
        let none = NoGeneration::Ninety {
            pages: ninety,
            generations: g.describe(),
        };
        if !self.warn_only {
            return Err(none);
        }
        k.diag(&format!(
            "WARNING: {none}. Performance results may not be accurate."
        ));
        g.find_generation(self.test_pages / 2)
            .ok_or(NoGeneration::Half {
                pages: self.test_pages / 2,
            })
    }

    /// Ages (lru_gen) or marks idle (page_idle) and checks what the previous phase's accesses
    /// left behind. `phase` is false for the extra verification after the last phase.
    fn mark_idle(&mut self, k: &mut Ktap, ms: &Memstress, desc: TestId, phase: bool) {
        match self.mode {
            None => k.skip(
                desc,
                "no access tracking (neither lru_gen nor page_idle) on this kernel",
            ),
            Some(TrackingMode::LruGen(_)) => {
                let memcg = self.memcg.as_ref().expect("lru_gen mode has a memcg");
                let (g, took) = memcg.age().or_fail();
                let new_gen = match self.find_generation(k, &g) {
                    Ok(s) => s,
                    Err(none) => {
                        k.diag(&none.to_string());
                        k.result(desc, false);
                        return;
                    }
                };
                report_time(phase, "Mark memory idle (lru_gen)", took);
                k.diag(&format!("generations seq:pages {}", g.describe()));
                let last = self.last_gen.unwrap_or(0);
                // Stricter than the kernel's `new_gen > last_gen`: a forced pass moves the pages
                // it finds young into max_seq - 1, while pages it does not find young also get
                // a higher generation number whenever min_seq advances and folds the oldest
                // generation into the next (on debian-6.1, with every page idle, the kernel's
                // comparison passed the third check). So the 90% must sit in max_seq - 1.
                let young_gen = g.max_seq().and_then(|m| m.checked_sub(1));
                if self.last_gen.is_some() && (new_gen <= last || Some(new_gen) != young_gen) {
                    let idle = (g.total() - g.found_young()).min(self.test_pages);
                    self.too_many_idle(k, desc, "", idle, self.test_pages);
                } else {
                    k.result(desc, true);
                }
                self.last_gen = Some(new_gen);
            }
            Some(TrackingMode::PageIdle) => {
                let marker = self.marker.as_ref().expect("page_idle mode has a marker");
                let t = Instant::now();
                let reports = mark_vcpus_idle(marker, ms);
                report_time(phase, "Mark memory idle (page_idle)", t.elapsed());
                let mut ok = true;
                for (v, r) in reports.iter().enumerate() {
                    k.diag(&format!(
                        "vCPU{v}: {} pages, {} without PFN, {} still idle",
                        r.pages, r.no_pfn, r.still_idle
                    ));
                    if r.too_many_without_pfn() {
                        k.diag(&format!(
                            "vCPU {v}: No PFN for {} out of {} pages.",
                            r.no_pfn, r.pages
                        ));
                        ok = false;
                    }
                }
                let bad: Vec<_> = reports
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.too_many_still_idle())
                    .collect();
                if !ok {
                    k.result(desc, false);
                } else if let Some((v, r)) = bad.first() {
                    let who = if ms.regions().len() > 1 && reports.len() > 1 {
                        format!("vCPU{v}: ")
                    } else {
                        String::new()
                    };
                    self.too_many_idle(k, desc, &who, r.still_idle, r.pages);
                } else {
                    k.result(desc, true);
                }
            }
        }
    }
}

fn report_time(phase: bool, name: &str, d: std::time::Duration) {
    if phase {
        phase_line(name, d);
    } else {
        ktap::diag(&format!("verification pass: {}", ktap::ts(d)));
    }
}

/// Marks each vCPU's region idle from its own thread, as the kernel's vCPU threads do (with
/// overlap, vCPU 0 marks the shared region).
fn mark_vcpus_idle(marker: &IdleMarker, ms: &Memstress) -> Vec<IdleMarkReport> {
    let map = ms.vm().page_map();
    let regions = if ms.regions().first().map(|r| &r.pages) == ms.regions().get(1).map(|r| &r.pages)
    {
        &ms.regions()[..1]
    } else {
        ms.regions()
    };
    std::thread::scope(|s| {
        let hs: Vec<_> = regions
            .iter()
            .map(|r| s.spawn(|| marker.mark_region(map, r.pages.clone())))
            .collect();
        hs.into_iter()
            .map(|h| match h.join() {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => fail(&format!("page_idle marking: {e}")),
                Err(_) => fail("page_idle marking thread panicked"),
            })
            .collect()
    })
}

fn access(ms: &Memstress, a: Access, name: &str) {
    let d = ms
        .run(GuestCmd::sweep(a))
        .unwrap_or_else(|e| fail(&format!("{name}: {e}")));
    phase_line(name, d);
}

/// No generation holds the share of the test's pages the kernel's `find_generation()` asks.
#[derive(Debug, thiserror::Error)]
enum NoGeneration {
    /// None holds 90%.
    #[error("Could not find a generation with 90% of guest memory ({pages} pages); generations seq:pages {generations}")]
    Ninety {
        /// 90% of the test's pages.
        pages: u64,
        /// The generations found, `seq:pages`.
        generations: String,
    },
    /// In warn mode, none holds even 50%.
    #[error("Could not find a generation with 50% of guest memory ({pages} pages)")]
    Half {
        /// Half of the test's pages.
        pages: u64,
    },
}

fn main() {
    if let Err(e) = agelab_mglru::host_guard::install_signal_cleanup() {
        fail(&e.to_string());
    }
    let a: Args = agelab::args::parse(NAME, USAGE);
    let cfg = a.memstress();
    if a.aging_sweep {
        run_sweep(&a, cfg);
    }
    let warn = a.warn.map(|w| w > 0);
    agelab_vmm::vm::open_kvm().or_skip();
    let _folio_size_on = prepare_backing(&cfg.backing);
    let unreliable = idle_check_unreliable();
    let warn_only = warn.unwrap_or(unreliable.is_some());
    let mode = detect_tracking();
    let m = mode.as_ref().ok().map_or("aging", |m| m.name());
    let mut plan = TestPlan::new();
    let accounted = matches!(mode, Ok(TrackingMode::LruGen(_)))
        .then(|| plan.add("lru_gen accounts for every test page in the memcg"));
    let populated_seen = plan.add(format!("{m}: accesses to populated memory seen"));
    let idle_writes_seen = plan.add(format!("{m}: writes to idle memory seen"));
    let idle_reads_seen = plan.add(format!("{m}: reads from idle memory seen"));
    let mut k = plan.start();
    k.diag(&format!(
        "{} vCPU(s) x {} MiB{}, backing {}, CPL3 4K guest pages",
        cfg.vcpus,
        cfg.bytes_per_vcpu >> 20,
        if cfg.overlap { " (overlapping)" } else { "" },
        cfg.backing
    ));
    match (warn, unreliable) {
        (None, Some(why)) => k.diag(&format!(
            "Skipping idle page count sanity check (warn only), because {why}"
        )),
        (Some(true), _) => k.diag("idle page count check: warn only (-w)"),
        _ => k.diag("idle page count check: fail on too many idle pages"),
    }
    if running_nested() && warn.is_none() {
        k.diag("running nested (CPUID hypervisor bit): the idle checks stay strict here; -w 1 gives the kernel test's warn-only behaviour");
    }
    let mut t = Tracker {
        mode: mode.as_ref().ok().copied(),
        warn_only,
        memcg: None,
        marker: None,
        test_pages: 0,
        last_gen: None,
    };
    match &mode {
        Ok(TrackingMode::LruGen(caps)) => {
            k.diag(&format!("Using lru_gen for aging (enabled {caps})"));
            // Joined once the VM exists (below): the memcg holds guest memory, not the VMM's.
            let memcg = MemcgAging::create(NAME).or_skip();
            k.diag(&format!(
                "Created cgroup {} (lru_gen memcg id {})",
                memcg.path(),
                memcg.id()
            ));
            t.memcg = Some(memcg);
        }
        Ok(TrackingMode::PageIdle) => {
            k.diag("Using page_idle for aging");
            t.marker = Some(IdleMarker::open().or_fail());
        }
        Err(why) => k.diag(&format!(
            "No access tracking: {why}; only the control phases are timed"
        )),
    }

    let mut ms = Memstress::new(&cfg).or_skip();
    t.test_pages = ms.test_pages();
    ms.start().or_fail();

    // Joined now that the VM exists: the guest's memory is charged to the memcg, the VMM's own
    // pages are not, and the process stays a member so aging walks its page tables.
    if let Some(memcg) = &t.memcg {
        memcg.join().or_fail();
    }
    access(&ms, Access::Write, "Populating memory");
    if let Some(memcg) = &t.memcg {
        // After population aging may not move pages to a newer generation; one pass now makes
        // every later pass do so.
        k.diag("Initial aging pass (lru_gen)");
        let (g, _) = memcg.age().or_fail();
        // The memcg holds guest memory only, so the count is exact but for pages still in the
        // per-CPU LRU batches (FOLIO_BATCH_SIZE, 31 each), which the listing cannot show yet.
        let in_batches = 31 * std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let ok = g.total() + in_batches >= t.test_pages;
        k.diag(&format!(
            "memcg holds {} pages, guest test memory {} pages (up to {in_batches} may sit in per-CPU LRU batches)",
            g.total(),
            t.test_pages
        ));
        if !ok {
            k.diag(&format!(
                "Not all pages accounted for (looking for {}, memcg holds {}). Was the memcg set up correctly?",
                t.test_pages,
                g.total()
            ));
        }
        if let Some(id) = accounted {
            k.result(id, ok);
        }
        access(&ms, Access::Write, "Re-populating memory");
        let g = memcg.read().or_fail();
        t.last_gen = Some(
            t.find_generation(&k, &g)
                .unwrap_or_else(|e| fail(&e.to_string())),
        );
    }
    access(&ms, Access::Write, "Writing to populated memory");
    access(&ms, Access::Read, "Reading from populated memory");

    t.mark_idle(&mut k, &ms, populated_seen, true);
    access(&ms, Access::Write, "Writing to idle memory");
    t.mark_idle(&mut k, &ms, idle_writes_seen, true);
    access(&ms, Access::Read, "Reading from idle memory");
    t.mark_idle(&mut k, &ms, idle_reads_seen, false);

    drop(ms);
    // Ktap::finish exits without running destructors: restore the host (memcg removal) first.
    agelab_mglru::host_guard::run_pending();
    k.finish()
}

/// `-p`: the aging-while-faulting sweep. Exits 0 when every cell was measured or skipped with its
/// reason, 1 when a cell failed, 4 without KVM.
fn run_sweep(a: &Args, memstress: MemstressConfig) -> ! {
    agelab_vmm::vm::open_kvm().or_skip();
    let folio_size_on = prepare_backing(&memstress.backing);
    let plan = SweepPlan {
        vcpu_counts: a.vcpu_counts.clone(),
        sources: a.sources.clone(),
        memstress,
        access: if a.read { Access::Read } else { Access::Write },
        window: a.window,
        min_passes: a.passes,
    };
    // lru_gen ages the test's memcg with the process a member (the walk visits its members' mms):
    // joined once for the sweep, so the VMM's own pages are charged too; only the young counts
    // see them, no verdict does.
    let memcg = match lru_gen_usable(&LruGenControl::new()) {
        Ok(_) => MemcgAging::create(NAME)
            .map_err(|e| e.to_string())
            .and_then(|m| m.join().map(|()| m).map_err(|e| e.to_string())),
        Err(why) => Err(why.to_string()),
    };
    let mut cells = Vec::new();
    let mut failed = false;
    for &n in &plan.vcpu_counts {
        for source in &plan.sources {
            let m = memcg.as_ref().map_err(String::as_str);
            match measure_cell(&plan, source, n, m) {
                Ok(c) => {
                    if !a.json {
                        eprintln!(
                            "# {source} {n} vCPU(s): {}",
                            match &c.skipped {
                                Some(why) => format!("skipped: {why}"),
                                None => format!(
                                    "{} passes, median {:.3} ms",
                                    c.passes,
                                    c.pass_median_s * 1e3
                                ),
                            }
                        );
                    }
                    cells.push(c);
                }
                Err(e) => {
                    eprintln!("# {source} {n} vCPU(s): FAIL: {e}");
                    failed = true;
                }
            }
        }
    }
    if let Ok(m) = &memcg {
        let _ = m.leave();
    }
    drop(memcg);
    if a.json {
        let report = SweepReport::new(&plan, &cells);
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else {
        println!("{}", tables(&plan, &cells));
        println!(
            "# under TCG (the lab) vCPUs share 2 host cores and there is no real TLB: pass times and slowdowns show relative costs, not mmu_lock contention at scale"
        );
    }
    drop(folio_size_on);
    agelab_mglru::host_guard::run_pending();
    std::process::exit(i32::from(failed))
}
