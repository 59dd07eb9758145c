//! reclaim_hot_set_test: does reclaim keep what only the guest uses?
//!
//! Reclaim asks rmap whether each folio it is about to evict was referenced
//! (`folio_referenced_one()`): on the classic LRU through `clear_flush_young_ptes_notify()`, on
//! MGLRU through `lru_gen_look_around()` (the folio and up to 64 neighbours), for PMD-mapped
//! THPs through `pmdp_clear_flush_young_notify()`. The `_notify` forms also ask KVM, whose page
//! tables are the only ones that record a guest's accesses. So a page only the guest uses must
//! survive reclaim; a kernel that asks only the host's PTEs evicts it as if cold.
//!
//! The scenario, per run: guest memory is charged to a memcg of the test's own (this process
//! joins it before the guest first writes and stays a member through reclaim:
//! `folio_referenced()` ignores mappings whose mm belongs to another memcg than the one
//! reclaimed). The hot set H is one folio of the backing every max(4 folios, 64 pages) of every
//! vCPU's region: MGLRU's look-around clears the young bits of up to 64 neighbours of each folio
//! it evicts and promotes none on a first sighting, so hot pages side by side would use up each
//! other's young bits before their own turn (measured: 62% of a contiguous H evicted on the base
//! kernel). The guest writes H first and then the rest, so H sits at the old end of the LRU that
//! eviction scans first. page_idle marking clears every young bit, host and KVM; `clear_refs`
//! then drops the young and referenced flags marking leaves on the folios. With `-l classic`,
//! MADV_COLD first moves every page to the inactive list, H first (population leaves most pages
//! active: KVM marks each page accessed twice while faulting it in; and the deactivation scan
//! uses up referenced anon pages' young bits without keeping them). The guest reads H (through
//! KVM only). `memory.reclaim` (anonymous pages only) asks for half the cold pages' bytes;
//! pagemap shows what was swapped out. With `-l mglru` the mm walk is off for the run (lru_gen
//! `enabled` 0x0001, journaled), so aging that reclaim triggers cannot find H young by walking
//! page tables: only the rmap path at eviction can. With `-l classic` lru_gen is off for the run
//! where the kernel has it.
//!
//! Checks: reclaim evicted guest memory (at least half of the request: else eviction was not
//! exercised); the hot set stays resident (at most 10% of it evicted); and a negative control,
//! run on every kernel: the same scenario without the guest reading H must evict at least 90% of
//! H, which proves that H is where eviction starts and that the check can fail.
//!
//! Exit codes: 0 pass, 1 fail, 4 skip (no KVM, or a host feature missing: cgroup v2
//! memory.reclaim, swap, page_idle, clear_refs, lru_gen for -l mglru), 2 bad usage.

use agelab::access_tracking::fail;
use agelab::access_tracking::folios::{check_folios, checks_folios, prepare_backing};
use agelab::access_tracking::page_idle::IdleMarker;
use agelab::access_tracking::reclaim::{
    clear_own_references, describe_stat, madvise_cold, missing_features, select_lru,
    HotColdResidency, HotSetLayout, Lru, ReclaimMemcg,
};
use agelab::args::{from_str, number_in, size_at_least, usage_error};
use agelab::ktap::{skip_all, Ktap, OrFail, OrSkip, TestId, TestPlan};
use agelab_mglru::kernel::pagemap::Pagemap;
use agelab_mglru::kernel::swap::SwapStatus;
use agelab_vmm::memstress::{Access, GuestCmd, Memstress, MemstressConfig};
use agelab_vmm::{Backing, PAGE_SIZE};
use clap::Parser;

const NAME: &str = "reclaim_hot_set_test";
const USAGE: &str =
    "usage: reclaim_hot_set_test [-h] [-l mglru|classic] [-s mem_type] [-b vcpu_bytes] [-v vcpus]
  -l: the LRU that reclaims: mglru (lru_gen on, its mm walk off; default) or classic (lru_gen
      off); set for the test (journaled, restored)
  -s: backing of guest memory: anonymous (4 KiB, default), anonymous_thp (PMD-mapped THPs),
      shmem/memfd, mthp-SIZE (anonymous multi-size THP)
  -b: memory per vCPU, e.g. 16M (default: 16M; the hot set is one folio of the backing every
      max(4 folios, 64 pages), so a region holds at least one such stride)
  -v: vCPUs (default: 2)";

/// Largest share of the hot set a correct kernel may evict. The base kernel (custom-7.2 in the
/// lab) evicts none of it on either LRU and backing (0 of 128 pages, 0 of 2048 THP pages):
/// eviction reaches H first, finds it young in KVM and keeps it (classic: rotated to the
/// inactive list's head; MGLRU: out of the oldest generation), and the request (half the cold
/// pages) is less than the cold pages behind it. The margin covers hot pages that sat in a
/// per-CPU LRU batch while page_idle marked or MADV_COLD deactivated.
const HOT_EVICTED_MAX: f64 = 0.1;
/// Smallest share of the hot set the negative control must evict: H is the oldest memory and
/// the request (half the cold pages) is larger than H, so a kernel that sees no access evicts
/// all of it first.
const CONTROL_EVICTED_MIN: f64 = 0.9;
/// A PMD-mapped THP.
const PMD_BYTES: u64 = 2 << 20;
/// Smallest share of the request that must be evicted from guest memory for the run to count.
const TOOK_MIN: f64 = 0.5;

#[derive(Debug, Parser)]
#[command(name = NAME, args_override_self = true)]
struct Args {
    /// The LRU that reclaims.
    #[arg(short = 'l', value_name = "mglru|classic", default_value = "mglru", value_parser = from_str::<Lru>)]
    lru: Lru,
    /// Backing of guest memory.
    #[arg(short = 's', value_name = "mem_type", default_value = "anonymous", value_parser = from_str::<Backing>)]
    backing: Backing,
    /// Memory per vCPU.
    #[arg(short = 'b', value_name = "vcpu_bytes", default_value = "16M", value_parser = size_at_least(16 * PAGE_SIZE))]
    bytes_per_vcpu: u64,
    /// vCPUs.
    #[arg(short = 'v', value_name = "vcpus", default_value = "2", value_parser = number_in(1usize..=64))]
    vcpus: usize,
}

/// What one run found.
struct RunOutcome {
    residency: HotColdResidency,
    request_pages: u64,
}

/// One access to every hot run of every vCPU's region.
fn touch_hot(ms: &Memstress, hot: &HotSetLayout, access: Access) {
    for first in hot.run_starts() {
        ms.run(GuestCmd::window(access, 1, first, hot.run_pages))
            .or_fail();
    }
}

/// Classic LRU: population leaves most guest pages on the active list (KVM marks each page
/// accessed twice while faulting it in), and `shrink_active_list()` deactivates referenced anon
/// pages anyway, using up their young bits. MADV_COLD puts every page on the inactive list
/// before the guest reads, the hot runs first (nearest the tail).
fn deactivate(ms: &Memstress, hot: &HotSetLayout) {
    let map = ms.vm().page_map();
    for region in ms.regions() {
        for first in hot.run_starts() {
            // A run is one folio (a THP is split by MADV_COLD on part of it), within one memslot.
            let page = region.pages.start + first;
            let hva = map.page(page).map(|p| p.hva).or_fail_none(page);
            madvise_cold(hva, hot.run_pages).or_fail();
        }
    }
    for r in map.ranges() {
        madvise_cold(r.hva, r.pages).or_fail();
    }
}

/// `Option::or_fail` with the page named.
trait OrFailNone<T> {
    fn or_fail_none(self, page: u64) -> T;
}

impl<T> OrFailNone<T> for Option<T> {
    fn or_fail_none(self, page: u64) -> T {
        self.unwrap_or_else(|| fail(&format!("guest page {page} is not in the VM's page map")))
    }
}

/// One run: populate the hot runs, then the rest, clear every young bit, let the guest read the
/// hot runs (or not), reclaim half the cold pages' bytes, count what stayed.
fn run(
    k: &mut Ktap,
    cfg: &MemstressConfig,
    lru: Lru,
    hot: &HotSetLayout,
    guest_reads_hot: bool,
    folios: Option<TestId>,
) -> RunOutcome {
    let label = if guest_reads_hot { "hot" } else { "control" };
    let memcg = ReclaimMemcg::create(&format!("{NAME}-{label}")).or_fail();
    if !memcg.has_reclaim() {
        skip_all(&format!(
            "no memory.reclaim in {} (cgroup v2 proactive reclaim)",
            memcg.memcg().dir().display()
        ));
    }
    let mut ms = Memstress::new(cfg).or_skip();
    ms.start().or_fail();
    let per_vcpu = ms.pages_per_vcpu();
    // Joined before the first write (guest memory is charged here) and through reclaim.
    memcg.join().or_fail();
    touch_hot(&ms, hot, Access::Write);
    ms.run(GuestCmd::sweep(Access::Write)).or_fail();
    if let Some(id) = folios {
        check_folios(k, id, &cfg.backing, ms.vm().page_map());
    }
    IdleMarker::open()
        .or_fail()
        .mark_map(ms.vm().page_map())
        .or_fail();
    if lru == Lru::Classic {
        deactivate(&ms, hot);
    }
    clear_own_references().or_fail();
    if guest_reads_hot {
        touch_hot(&ms, hot, Access::Read);
    }
    let cold_pages = (per_vcpu - hot.hot_pages()) * cfg.vcpus as u64;
    let request_pages = cold_pages / 2;
    let swap_before = SwapStatus::read().or_fail().used_kib();
    let stat_before = memcg.stat().or_fail();
    let outcome = memcg.reclaim_anon(request_pages * PAGE_SIZE).or_fail();
    let stat_after = memcg.stat().or_fail();
    let swap_after = SwapStatus::read().or_fail().used_kib();
    let entries = Pagemap::open_self()
        .or_fail()
        .guest_entries(ms.vm().page_map())
        .or_fail();
    memcg.leave().or_fail();
    let residency = HotColdResidency::count(&entries, per_vcpu, hot);
    let what = if guest_reads_hot {
        "the guest read H after every young bit was cleared"
    } else {
        "negative control: the guest did not read H"
    };
    k.diag(&format!(
        "{what}; memory.reclaim of {request_pages} pages ({} KiB, anon only): {}",
        (request_pages * PAGE_SIZE) >> 10,
        outcome.as_str()
    ));
    k.diag(&format!(
        "  memory.stat before: {}",
        describe_stat(&stat_before)
    ));
    k.diag(&format!(
        "  memory.stat after:  {}",
        describe_stat(&stat_after)
    ));
    k.diag(&format!(
        "  swap used {swap_before} KiB -> {swap_after} KiB"
    ));
    k.diag(&format!("  H pages: {}", residency.hot.describe()));
    k.diag(&format!("  cold pages: {}", residency.cold.describe()));
    drop(ms);
    drop(memcg);
    RunOutcome {
        residency,
        request_pages,
    }
}

fn main() {
    if let Err(e) = agelab_mglru::host_guard::install_signal_cleanup() {
        fail(&e.to_string());
    }
    let args: Args = agelab::args::parse(NAME, USAGE);
    let folio_bytes = match args.backing {
        Backing::Thp => PMD_BYTES,
        ref b => b.folio_bytes().unwrap_or(PAGE_SIZE),
    };
    let folio_pages = (folio_bytes / PAGE_SIZE).max(1);
    // Whole folios: a folio straddling H and the rest would be both hot and cold.
    let Some(hot) = HotSetLayout::new(args.bytes_per_vcpu / PAGE_SIZE, folio_pages) else {
        usage_error(
            NAME,
            &format!(
                "-b {} KiB: too small for one hot run of a {} KiB folio of the {} backing",
                args.bytes_per_vcpu >> 10,
                (folio_pages * PAGE_SIZE) >> 10,
                args.backing
            ),
            USAGE,
        );
    };
    let cfg = MemstressConfig {
        vcpus: args.vcpus,
        bytes_per_vcpu: args.bytes_per_vcpu,
        overlap: false,
        backing: args.backing.clone(),
    };
    agelab_vmm::vm::open_kvm().or_skip();
    let missing = missing_features(args.lru);
    if !missing.is_empty() {
        skip_all(&format!("missing: {}", missing.join("; ")));
    }
    let lru = select_lru(args.lru).or_fail();
    let _folio_size_on = prepare_backing(&args.backing);

    let mut plan = TestPlan::new();
    let folios = checks_folios(&args.backing).then(|| {
        plan.add(format!(
            "guest memory sits in folios of the {} backing's size (kpageflags)",
            args.backing
        ))
    });
    let took = plan.add(format!(
        "reclaim evicted guest memory (at least {:.0}% of the request)",
        TOOK_MIN * 100.0
    ));
    let kept = plan.add(format!(
        "pages only the guest uses stay resident through reclaim (at most {:.0}% of them evicted)",
        HOT_EVICTED_MAX * 100.0
    ));
    let control = plan.add(format!(
        "negative control: the hot set not read is evicted first (at least {:.0}% of it)",
        CONTROL_EVICTED_MIN * 100.0
    ));
    let mut k = plan.start();
    k.diag(&format!(
        "{} LRU (lru_gen enabled {}), {} vCPU(s) x {} MiB {} backing, hot set H per vCPU: {}",
        args.lru,
        lru.caps
            .map_or_else(|| "absent".to_string(), |c| c.to_string()),
        args.vcpus,
        args.bytes_per_vcpu >> 20,
        args.backing,
        hot.describe()
    ));

    let read = run(&mut k, &cfg, args.lru, &hot, true, folios);
    let evicted = read.residency.evicted();
    k.diag(&format!(
        "guest pages evicted {evicted} of {} requested",
        read.request_pages
    ));
    k.result(took, evicted as f64 >= TOOK_MIN * read.request_pages as f64);
    k.result(kept, read.residency.hot.evicted_share() <= HOT_EVICTED_MAX);

    let unread = run(&mut k, &cfg, args.lru, &hot, false, None);
    k.diag(&format!(
        "negative control: guest pages evicted {} of {} requested",
        unread.residency.evicted(),
        unread.request_pages
    ));
    k.result(
        control,
        unread.residency.hot.evicted_share() >= CONTROL_EVICTED_MIN,
    );
    drop(lru);
    agelab_mglru::host_guard::run_pending();
    k.finish()
}
