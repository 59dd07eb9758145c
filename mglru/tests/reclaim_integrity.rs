//! Reclaim under a running guest on real /dev/kvm and real zram: a host thread pages guest memory
//! out 1000+ times (contiguous runs at random places) while the guest keeps reading and writing
//! it; the guest then verifies every word. Anonymous and memfd memory go to zram swap,
//! file-backed memory (a file on the root filesystem) is msync'ed and dropped from the page
//! cache. Also one full `run_once` per backing kind through the controller and the engine.
//!
//! Several VMs in one process, on purpose: the tests run in parallel threads of this binary, so
//! their VMs share one mm and its MMU notifiers, as they would in any VMM hosting several guests;
//! nothing agelab does to one VM may disturb another (`sources_selfcheck.rs`:
//! `building_a_source_or_forking_disturbs_no_other_vm`).

use agelab_guest::rng::SplitMix64;
use agelab_mglru::kernel::swap::{SwapError, SwapStatus};
use agelab_mglru::kernel::zram_swap::ZramSwap;
use agelab_mglru::reclaim::child::report_line;
use agelab_mglru::reclaim::{
    run_in_child, run_once, PolicyKind, ReclaimAction, ReclaimRunConfig, Reclaimer,
    ResidencyScanner,
};
use agelab_mglru::testing::{reconcile_journal_at_start, test_child};
use agelab_vmm::testing::skip;
use agelab_vmm::workload::Workload;
use agelab_vmm::{Backing, Vm, VmConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

const CYCLES: u64 = 1000;

/// The tests of this binary share one process. A kernel policy moves that whole process into
/// its memcg (`psi` also into a cgroup2 group whose pressure it reads), so it runs alone: beside
/// it, another test's memory would be charged to the memcg and its reclaim stalls counted as the
/// guest's pressure. (Beside the zram hammers, `psi` once read 2.9 % PSI against its 0.1 %
/// target and rightly reclaimed nothing.) Every other test shares the process.
static PROCESS: RwLock<()> = RwLock::new(());

/// For a test that leaves the process's cgroups alone.
fn sharing_the_process() -> RwLockReadGuard<'static, ()> {
    reconcile_journal_at_start();
    PROCESS.read().unwrap_or_else(|e| e.into_inner())
}

/// For a test that moves the process into a cgroup: no other test of this binary runs meanwhile.
fn owning_the_process() -> RwLockWriteGuard<'static, ()> {
    reconcile_journal_at_start();
    PROCESS.write().unwrap_or_else(|e| e.into_inner())
}

/// zram swap shared by the tests running at once: the first sets it up, the last one out tears
/// it down (a test that found swap on must not lose it mid-run while pages are out). Swap that
/// was on before the tests is used as is and never touched.
static SWAP: Mutex<(usize, Option<ZramSwap>)> = Mutex::new((0, None));

/// A test's use of [`SWAP`].
struct SwapUse;

impl Drop for SwapUse {
    fn drop(&mut self) {
        let mut s = SWAP.lock().unwrap_or_else(|e| e.into_inner());
        s.0 -= 1;
        if s.0 == 0 {
            s.1 = None;
        }
    }
}

/// zram swap for the test, or the reason to skip.
fn swap_for_test(what: &str) -> Option<SwapUse> {
    reconcile_journal_at_start();
    if !std::path::Path::new("/dev/kvm").exists() {
        skip(what, "no /dev/kvm");
        return None;
    }
    let mut s = SWAP.lock().unwrap_or_else(|e| e.into_inner());
    if s.0 == 0 {
        match SwapStatus::read() {
            Ok(st) if st.any() => {}
            Ok(_) => match ZramSwap::setup(0, 256 << 20, Duration::from_secs(1200)) {
                Ok(z) => s.1 = Some(z),
                Err(e @ (SwapError::NoDevice { .. } | SwapError::InUse { .. })) => {
                    skip(what, &e.to_string());
                    return None;
                }
                Err(e) => panic!("{what}: zram setup: {e}"),
            },
            Err(e) => {
                skip(what, &e.to_string());
                return None;
            }
        }
    }
    s.0 += 1;
    Some(SwapUse)
}

fn file_backing_dir() -> std::path::PathBuf {
    // The target directory is on a real filesystem (not tmpfs), so this is true file-backed
    // memory: dirty pages must be msync'ed before MADV_PAGEOUT drops them.
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Pages out random runs of guest memory `CYCLES` times while the guest runs epochs, then checks
/// every word. Returns (pages paged out, pages seen out of memory at some check).
fn hammer(backing: Backing, what: &str) {
    let _shared = sharing_the_process();
    let Some(_swap) = swap_for_test(what) else {
        return;
    };
    let vm = Vm::new(VmConfig {
        vcpus: 1,
        mem_bytes: 32 << 20,
        backing,
        ..Default::default()
    })
    .expect("vm");
    let map = vm.page_map().clone();
    let mut rc = Reclaimer::new(map.clone(), ReclaimAction::PageOut).expect("reclaimer");
    let mut wl = Workload::start(vm, "uniform:op=mix".parse().unwrap()).expect("workload");
    wl.fill().expect("fill");
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let pages = map.len();
    let reclaimer = std::thread::spawn(move || {
        let mut rng = SplitMix64::new(42);
        let mut scanner = ResidencyScanner::new(map.clone()).expect("scanner");
        let mut advised = 0u64;
        let mut min_rss = u64::MAX;
        for cycle in 0..CYCLES {
            let len = 1 + rng.below(256);
            let start = rng.below(pages - len);
            let v: Vec<u64> = (start..start + len).collect();
            advised += rc.apply(&v).expect("pageout").pages;
            if cycle % 50 == 0 {
                min_rss = min_rss.min(scanner.rss_bytes().expect("rss"));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        d.store(true, Ordering::SeqCst);
        (advised, min_rss, rc.total())
    });
    let mut epochs = 0;
    while !done.load(Ordering::SeqCst) {
        wl.run_epoch(Duration::from_millis(50)).expect("epoch");
        epochs += 1;
    }
    let (advised, min_rss, total) = reclaimer.join().unwrap();
    let v = wl.verify().expect("verify");
    wl.finish().expect("finish");
    eprintln!(
        "{what}: {CYCLES} cycles, {advised} pages advised in {} madvise calls, {} msync, {epochs} guest epochs, min RSS {} KiB of {} KiB, {} words verified, {} wrong",
        total.madvise_calls,
        total.msync_calls,
        min_rss / 1024,
        pages * 4,
        v.words,
        v.mismatches
    );
    assert_eq!(
        v.mismatches, 0,
        "{what}: guest data corrupted: {:#x?}",
        v.first_bad
    );
    assert!(
        min_rss < pages * 4096,
        "{what}: nothing ever left memory (min RSS {min_rss})"
    );
}

#[test]
fn anon_pageout_to_zram_1000_cycles_zero_mismatches() {
    hammer(Backing::Anon, "reclaim anon+zram");
}

#[test]
fn memfd_pageout_to_zram_1000_cycles_zero_mismatches() {
    hammer(Backing::Memfd, "reclaim memfd+zram");
}

#[test]
fn file_backed_pageout_1000_cycles_zero_mismatches() {
    hammer(Backing::File(file_backing_dir()), "reclaim file");
}

/// A short run of `policy`: a 64 MiB guest running `workload` for 4 s in 200 ms intervals, an
/// 800 ms age gate, a 2 s cold window and a controller allowed 20% of memory per second.
fn short_run(backing: Backing, policy: PolicyKind, workload: &str) -> ReclaimRunConfig {
    ReclaimRunConfig {
        mem_bytes: 64 << 20,
        backing,
        policy,
        duration: Duration::from_secs(4),
        interval: Duration::from_millis(200),
        min_age: Duration::from_millis(800),
        cold_window: Duration::from_secs(2),
        workload: workload.parse().unwrap(),
        controller: agelab_mglru::reclaim::ControllerConfig {
            max_step_pct: 20.0,
            step_period: Duration::from_secs(1),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn controlled_run(backing: Backing, policy: PolicyKind, what: &str) {
    let _shared = sharing_the_process();
    let Some(_swap) = swap_for_test(what) else {
        return;
    };
    let cfg = short_run(backing, policy, "hotcold:hot=20%,p=100%,op=write");
    let r = run_once(&cfg).unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!(
        "{what}: reclaimed {} pages, cold out {}/{}, refaults {}, saved {} KiB, verify {} wrong",
        r.reclaimed,
        r.cold_reclaimed,
        r.cold_pages,
        r.refaults,
        r.saved / 1024,
        r.verify_mismatches
    );
    assert_eq!(r.verify_mismatches, 0);
    assert!(r.reclaimed > 0, "{what}: the controller reclaimed nothing");
}

#[test]
fn engine_policy_reclaims_cold_pages_of_anon_guest() {
    controlled_run(
        Backing::Anon,
        PolicyKind::EngineDirty,
        "run_once anon engine-dirty",
    );
}

#[test]
fn engine_all_policy_reclaims_cold_pages_of_memfd_guest() {
    controlled_run(
        Backing::Memfd,
        PolicyKind::EngineAll,
        "run_once memfd engine-all",
    );
}

#[test]
fn engine_regions_policy_reclaims_cold_pages_of_memfd_guest() {
    controlled_run(
        Backing::Memfd,
        PolicyKind::EngineRegions,
        "run_once memfd engine-regions",
    );
}

/// Set in the child run of [`memcg_limit_policy_reclaims_through_the_kernel`].
const MEMCG_LIMIT_CHILD: &str = "AGELAB_TEST_MEMCG_LIMIT_CHILD";

/// The `memcg-limit` run: a lasting hard limit stepped down at 5 % of memory per second (at most
/// 16 % in this run), far above the 13 MiB hot set.
fn memcg_limit_run() -> ReclaimRunConfig {
    let mut cfg = short_run(
        Backing::Anon,
        PolicyKind::MemcgLimit,
        "hotcold:hot=20%,p=100%,op=write",
    );
    cfg.controller.max_step_pct = 5.0;
    cfg
}

/// `memcg-limit`: the kernel picks the pages under the limit and the data stay intact — or the
/// memcg's OOM killer ends the run, which is then its measured result (the limit, the time and
/// the memcg's own `oom_kill` count), as `agelab reclaim` reports it. The run is a child process
/// (this binary running only [`memcg_limit_child`]) so that an OOM kill ends only the child. A
/// death its memcg's OOM killer did not cause, a wrong word or nothing reclaimed fails.
#[test]
fn memcg_limit_policy_reclaims_through_the_kernel() {
    const WHAT: &str = "run_once anon memcg-limit";
    // Alone although the child is another process: it sets up its own zram swap, which no test
    // here may share or tear down meanwhile.
    let _alone = owning_the_process();
    if !std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
        && !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        skip(WHAT, "no memory cgroup");
        return;
    }
    let child = test_child("memcg_limit_child", MEMCG_LIMIT_CHILD, "1");
    let r = run_in_child(&memcg_limit_run(), child).unwrap_or_else(|e| panic!("{WHAT}: {e}"));
    match r.oom_killed {
        Some(k) => eprintln!("{WHAT}: {k}"),
        None => {
            eprintln!(
                "{WHAT}: reclaimed {} pages, cold out {}/{}, refaults {}, verify {} wrong",
                r.reclaimed, r.cold_reclaimed, r.cold_pages, r.refaults, r.verify_mismatches
            );
            assert_eq!(r.verify_mismatches, 0);
            assert!(r.reclaimed > 0, "{WHAT}: the kernel reclaimed nothing");
        }
    }
}

/// Run only as the child of `memcg_limit_policy_reclaims_through_the_kernel`: prints the run's
/// report line for the parent.
#[test]
#[ignore = "child process of memcg_limit_policy_reclaims_through_the_kernel"]
fn memcg_limit_child() {
    const WHAT: &str = "run_once anon memcg-limit";
    if std::env::var_os(MEMCG_LIMIT_CHILD).is_none() {
        return skip(
            "memcg_limit_child",
            "runs only as a child of memcg_limit_policy_reclaims_through_the_kernel",
        );
    }
    let Some(_swap) = swap_for_test(WHAT) else {
        return;
    };
    let r = run_once(&memcg_limit_run()).unwrap_or_else(|e| panic!("{WHAT}: {e}"));
    println!("{}", report_line(&r));
}

/// `psi` on this host's memcg (v1: the limit stepped while the guest is paused; pressure from a
/// v2 group of the process, or the memcg's own on v2): cold pages of a read-heavy guest go, the
/// data stay intact, and the run reports whose pressure it read.
#[test]
fn psi_policy_reclaims_under_the_pressure_target() {
    const WHAT: &str = "run_once memfd psi";
    let _alone = owning_the_process();
    if !std::path::Path::new("/proc/pressure/memory").exists() {
        skip(WHAT, "no PSI");
        return;
    }
    let Some(_swap) = swap_for_test(WHAT) else {
        return;
    };
    let cfg = ReclaimRunConfig {
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        ..short_run(
            Backing::Memfd,
            PolicyKind::Psi,
            "hotcold:hot=20%,p=100%,op=read",
        )
    };
    let r = run_once(&cfg).unwrap_or_else(|e| panic!("{WHAT}: {e}"));
    eprintln!(
        "{WHAT}: reclaimed {} pages, cold out {}/{}, refaults {}, PSI some {:?} % from {:?}",
        r.reclaimed, r.cold_reclaimed, r.cold_pages, r.refaults, r.psi_some_pct, r.pressure_scope
    );
    assert_eq!(r.verify_mismatches, 0);
    assert!(r.reclaimed > 0, "{WHAT}: nothing reclaimed");
    assert!(r.psi_some_pct.is_some() && r.pressure_scope.is_some());
    assert!(r.ops_per_cpu_sec > 0.0 && r.vcpu_cpu_secs > 0.0);
}

/// `damon`: where DAMON is usable the DAMOS pageout scheme reclaims; where it is not (no sysfs,
/// a foreign kdamond, an enabled DAMON module) the run is refused with the reason, before the
/// VM runs — never by touching someone else's kdamond.
#[test]
fn damon_policy_reclaims_or_is_refused_with_the_reason() {
    use agelab_mglru::kernel::damon::{DamonAdmin, DamonError};
    use agelab_mglru::reclaim::ReclaimRunError;
    const WHAT: &str = "run_once memfd damon";
    let _shared = sharing_the_process();
    let Some(_swap) = swap_for_test(WHAT) else {
        return;
    };
    let before = DamonAdmin::new().kdamonds().ok();
    let defaults = ReclaimRunConfig::default();
    let cfg = ReclaimRunConfig {
        duration: Duration::from_secs(6),
        min_age: Duration::from_secs(1),
        warmup: Duration::from_secs(1),
        // DAMON's own monitoring intervals: the run's defaults, not the short run's.
        interval: defaults.interval,
        cold_window: defaults.cold_window,
        ..short_run(
            Backing::Memfd,
            PolicyKind::Damon,
            "hotcold:hot=20%,p=100%,op=read",
        )
    };
    match run_once(&cfg) {
        Ok(r) => {
            let d = r.damon.as_ref().expect("damon info");
            eprintln!(
                "{WHAT}: reclaimed {} pages, applied {} KiB, auto-tuned {}",
                r.reclaimed,
                d.stats.sz_applied >> 10,
                d.auto_tuned
            );
            assert_eq!(r.verify_mismatches, 0);
            assert!(d.stats.sz_applied > 0, "{WHAT}: DAMOS applied nothing");
        }
        Err(ReclaimRunError::Damon(
            e @ (DamonError::ForeignRunning { .. }
            | DamonError::ModuleRunning { .. }
            | DamonError::NotBuilt(_)
            | DamonError::ForeignConfigured { .. }),
        )) => {
            // The foreign kdamond is exactly as it was.
            assert_eq!(DamonAdmin::new().kdamonds().ok(), before);
            skip(WHAT, &e.to_string());
        }
        Err(e) => panic!("{WHAT}: {e}"),
    }
}
