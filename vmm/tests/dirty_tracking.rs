//! Dirty tracking on real /dev/kvm: every mode's harvest is exactly the set the guest wrote, a
//! small dirty ring overflowing many times loses no entry, and logging switches at run time.
//!
//! Several VMs in one process, on purpose: the tests run in parallel threads of this binary, so
//! their VMs share one mm and its MMU notifiers, as they would in any VMM hosting several guests;
//! nothing agelab does to one VM may disturb another (`sources_selfcheck.rs`:
//! `building_a_source_or_forking_disturbs_no_other_vm`).

use agelab_guest::rng::SplitMix64;
use agelab_guest::ucall;
use agelab_vmm::dirty::DirtyMode;
use agelab_vmm::{DirtyOptions, DirtyTracker, PageSet, Vm, VmConfig, PAGE_SIZE};
use std::time::Duration;

/// Longest wait for the guest to report SYNC after a command.
const SYNC_WAIT: Duration = Duration::from_secs(20);

/// Control block the guest reads before each round (in untracked system memory).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct WriteCmd {
    base: u64,
    pages: u64,
    seed: u64,
    count: u64,
}

/// Guest: per round, writes the round number into `count` pages drawn from `seed`.
extern "C" fn guest_writer(ctl: u64, _: u64) -> ! {
    loop {
        let round = ucall::sync(1, &[]);
        if round == 0 {
            ucall::done();
        }
        let c = ctl as *const WriteCmd;
        // SAFETY: the host placed a WriteCmd at `ctl` in system memory before resuming us.
        let cmd = unsafe { core::ptr::read_volatile(c) };
        let mut rng = SplitMix64::new(cmd.seed);
        let mut i = 0u64;
        while i < cmd.count {
            let p = rng.below(cmd.pages);
            let addr = cmd.base.wrapping_add(p.wrapping_mul(4096));
            // SAFETY: `p < pages`, so the address is inside the identity-mapped test memory.
            unsafe { core::ptr::write_volatile(addr as *mut u64, round) };
            i = i.wrapping_add(1);
        }
    }
}

/// The pages a round writes, replayed on the host.
fn truth(pages: u64, seed: u64, count: u64) -> PageSet {
    let mut s = PageSet::new(pages);
    let mut rng = SplitMix64::new(seed);
    for _ in 0..count {
        s.insert(rng.below(pages));
    }
    s
}

struct Rig {
    vm: Vm,
    tracker: DirtyTracker,
    ctl: u64,
}

impl Rig {
    fn new(mode: DirtyMode, config: VmConfig, initially_set: bool) -> Option<Rig> {
        Self::new_with(mode, config, initially_set, false)
    }

    fn new_with(
        mode: DirtyMode,
        config: VmConfig,
        initially_set: bool,
        clear_dirty_runs_only: bool,
    ) -> Option<Rig> {
        let kvm = agelab_vmm::vm::open_kvm().unwrap();
        let support = mode.support(&kvm);
        if !support.available {
            eprintln!("skipping {mode}: {}", support.detail);
            return None;
        }
        let mut vm = Vm::new(config).unwrap();
        let mut opts = DirtyOptions::new(mode);
        opts.initially_set = initially_set;
        opts.clear_dirty_runs_only = clear_dirty_runs_only;
        // Small clear ranges so multi-range clears are exercised.
        opts.max_clear_pages = 4096;
        let tracker = DirtyTracker::new(&mut vm, opts).unwrap();
        let ctl = vm
            .alloc_system(std::mem::size_of::<WriteCmd>() as u64)
            .unwrap();
        vm.start(guest_writer as *const () as usize, |_| [ctl, 0])
            .unwrap();
        let rig = Rig { vm, tracker, ctl };
        rig.vm.wait_sync_all(1, SYNC_WAIT).unwrap();
        Some(rig)
    }

    /// Runs one guest round and returns the pages it wrote.
    fn round(&mut self, round: u64, seed: u64, count: u64) -> PageSet {
        let pages = self.vm.page_map().len();
        let cmd = WriteCmd {
            base: self.vm.page_map().page(0).unwrap().gpa,
            pages,
            seed,
            count,
        };
        let sys = self.vm.memslots()[0];
        assert!(self.ctl >= sys.gpa && self.ctl + 32 <= sys.gpa + sys.size);
        let p = (sys.hva + (self.ctl - sys.gpa)) as *mut WriteCmd;
        // SAFETY: `p` is inside the live system memory mapping (checked above) and the guest is
        // waiting in SYNC, so nothing reads it concurrently.
        unsafe { std::ptr::write_volatile(p, cmd) };
        self.vm.sync_all(1, round, SYNC_WAIT).unwrap();
        truth(pages, seed, count)
    }
}

fn config(mode: DirtyMode, mem_mib: u64, slots: usize, ring: u32) -> VmConfig {
    VmConfig {
        mem_bytes: mem_mib << 20,
        slots,
        dirty_ring_entries: (mode == DirtyMode::Ring).then_some(ring),
        ..VmConfig::default()
    }
}

fn assert_same(mode: DirtyMode, what: &str, got: &PageSet, want: &PageSet) {
    if got != want {
        let mut missing = want.clone();
        missing.subtract(got);
        let mut extra = got.clone();
        extra.subtract(want);
        panic!(
            "{mode} {what}: harvested {} pages, wrote {}; missing {:?}, extra {:?}",
            got.count(),
            want.count(),
            missing,
            extra
        );
    }
}

#[test]
fn each_mode_harvest_equals_written_set() {
    for mode in DirtyMode::ALL {
        let Some(mut rig) = Rig::new(mode, config(mode, 32, 2, 4096), false) else {
            continue;
        };
        rig.tracker.set_logging_all(&rig.vm, true).unwrap();
        let empty = rig.tracker.harvest().unwrap();
        assert!(
            empty.is_empty(),
            "{mode}: dirty before any write: {empty:?}"
        );
        for r in 1..=4u64 {
            let count = [1500, 1, 0, 3000][(r - 1) as usize];
            let want = rig.round(r, r * 7919, count);
            let got = rig.tracker.harvest().unwrap();
            assert_same(mode, &format!("round {r}"), &got, &want);
            assert_eq!(rig.tracker.last_stats().pages, want.count());
        }
        let t = rig.tracker.totals();
        assert_eq!(t.harvests, 5);
        assert!(t.ioctls >= 5, "{mode}: {t:?}");
        rig.vm.resume(0, 0).unwrap();
    }
}

#[test]
fn clear_log_dirty_runs_only_is_exact() {
    let mode = DirtyMode::ClearLog;
    let Some(mut rig) = Rig::new_with(mode, config(mode, 32, 2, 4096), false, true) else {
        return;
    };
    rig.tracker.set_logging_all(&rig.vm, true).unwrap();
    assert!(rig.tracker.harvest().unwrap().is_empty());
    for r in 1..=4u64 {
        let count = [1500, 1, 0, 3000][(r - 1) as usize];
        let want = rig.round(r, r * 104_729, count);
        let got = rig.tracker.harvest().unwrap();
        assert_same(mode, &format!("runs-only round {r}"), &got, &want);
    }
    rig.vm.resume(0, 0).unwrap();
}

#[test]
fn clear_log_initially_set_reports_all_then_exact() {
    let Some(mut rig) = Rig::new(
        DirtyMode::ClearLog,
        config(DirtyMode::ClearLog, 16, 1, 0),
        true,
    ) else {
        return;
    };
    if !rig.tracker.initially_set() {
        eprintln!("skipping: INITIALLY_SET not offered");
        return;
    }
    rig.tracker.set_logging_all(&rig.vm, true).unwrap();
    let pages = rig.vm.page_map().len();
    let want = rig.round(1, 11, 500);
    let first = rig.tracker.harvest().unwrap();
    assert_eq!(
        first.count(),
        pages,
        "INITIALLY_SET: first harvest is every page"
    );
    let _ = want;
    let want = rig.round(2, 12, 700);
    let got = rig.tracker.harvest().unwrap();
    assert_same(DirtyMode::ClearLog, "after INITIALLY_SET", &got, &want);
}

#[test]
fn ring_full_exits_lose_no_entry() {
    let kvm = agelab_vmm::vm::open_kvm().unwrap();
    if !DirtyMode::Ring.support(&kvm).available {
        eprintln!("skipping: no dirty ring");
        return;
    }
    // The smallest ring KVM accepts (at least one page of entries plus its reserve).
    let mut made = None;
    for entries in [256u32, 512, 1024, 2048, 4096] {
        if let Some(rig) = std::panic::catch_unwind(|| {
            Rig::new(
                DirtyMode::Ring,
                config(DirtyMode::Ring, 64, 1, entries),
                false,
            )
        })
        .ok()
        .flatten()
        {
            made = Some((rig, entries));
            break;
        }
    }
    let (mut rig, entries) = made.expect("no ring size accepted");
    rig.tracker.set_logging_all(&rig.vm, true).unwrap();
    assert!(rig.tracker.harvest().unwrap().is_empty());
    let count = u64::from(entries) * 20;
    for r in 1..=3u64 {
        let want = rig.round(r, 1000 + r, count);
        assert!(want.count() > u64::from(entries) * 10);
        let got = rig.tracker.harvest().unwrap();
        assert_same(
            DirtyMode::Ring,
            &format!("{entries}-entry ring, round {r}"),
            &got,
            &want,
        );
    }
    let t = rig.tracker.totals();
    let exits = rig
        .vm
        .exits(0)
        .ring_full
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(exits >= 10, "expected many ring-full exits, saw {exits}");
    assert!(t.ring_full_entries > 0, "{t:?}");
    eprintln!(
        "{entries}-entry ring: {exits} ring-full exits, {} entries drained on them, {} by harvests",
        t.ring_full_entries, t.ring_entries
    );
}

#[test]
fn logging_switches_at_runtime() {
    for mode in DirtyMode::ALL {
        let Some(mut rig) = Rig::new(mode, config(mode, 16, 2, 4096), false) else {
            continue;
        };
        let pages = rig.vm.page_map().len();
        let slots: Vec<u32> = rig.vm.page_map().ranges().iter().map(|r| r.slot).collect();
        let second = rig.vm.page_map().ranges()[1].first_page;

        // Off: nothing is reported.
        rig.round(1, 21, 800);
        assert!(
            rig.tracker.harvest().unwrap().is_empty(),
            "{mode}: logging off"
        );

        rig.tracker.set_logging_all(&rig.vm, true).unwrap();
        let want = rig.round(2, 22, 800);
        assert_same(mode, "on", &rig.tracker.harvest().unwrap(), &want);

        rig.tracker.set_logging_all(&rig.vm, false).unwrap();
        rig.round(3, 23, 800);
        assert!(
            rig.tracker.harvest().unwrap().is_empty(),
            "{mode}: switched off"
        );

        rig.tracker.set_logging_all(&rig.vm, true).unwrap();
        let want = rig.round(4, 24, 800);
        assert_same(
            mode,
            "switched on again",
            &rig.tracker.harvest().unwrap(),
            &want,
        );

        // Only the first slot logs: the harvest is the written set restricted to it.
        rig.tracker.set_logging(&rig.vm, slots[1], false).unwrap();
        let mut want = rig.round(5, 25, 800);
        let mut first_slot = PageSet::new(pages);
        first_slot.insert_range(0, second);
        want.intersect_with(&first_slot);
        assert_same(
            mode,
            "second slot off",
            &rig.tracker.harvest().unwrap(),
            &want,
        );
        assert_eq!(
            rig.tracker.logging(),
            vec![(slots[0], true), (slots[1], false)]
        );
        assert_eq!(rig.vm.page_map().bytes(), pages * PAGE_SIZE);
        rig.vm.resume(0, 0).unwrap();
    }
}
