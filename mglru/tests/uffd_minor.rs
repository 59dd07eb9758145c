//! uffd-minor on real /dev/kvm with real guests: exact recall and precision when every page is
//! armed, sampled estimates within their stated intervals, data integrity under continuous
//! re-arming, and refusal of anonymous memory.
//!
//! Several VMs in one process, on purpose: the tests run in parallel threads of this binary, so
//! their VMs share one mm and its MMU notifiers, as they would in any VMM hosting several guests;
//! nothing agelab does to one VM may disturb another (`sources_selfcheck.rs`:
//! `building_a_source_or_forking_disturbs_no_other_vm`).

use agelab_mglru::sources::uffd_minor::{AccessEstimate, UffdMinorConfig, UffdMinorSource, Z99};
use agelab_mglru::AccessSource;
use agelab_vmm::workload::{Workload, WorkloadSpec};
use agelab_vmm::{Backing, PageSet, Vm, VmConfig};
use std::time::{Duration, Instant};

fn workload(spec: &str, mem: u64, vcpus: usize, backing: Backing) -> Workload {
    let spec: WorkloadSpec = spec.parse().unwrap();
    let cfg = VmConfig {
        vcpus,
        mem_bytes: mem,
        backing,
        heap_bytes: agelab_vmm::workload::heap_bytes(&spec, mem),
        ..Default::default()
    };
    Workload::start(Vm::new(cfg).unwrap(), spec).unwrap()
}

fn source(w: &Workload, budget: Option<u64>, seed: u64) -> UffdMinorSource {
    UffdMinorSource::new(
        w.vm().page_map(),
        UffdMinorConfig {
            budget_faults_per_sec: budget,
            seed,
            interval: None,
        },
    )
    .unwrap()
}

/// Runs `epochs` counted epochs, harvesting after each; every armed page must be reported iff the
/// guest accessed it.
fn exact_against_truth(spec: &str) {
    let mut w = workload(spec, 16 << 20, 2, Backing::Memfd);
    w.fill().unwrap();
    let mut src = source(&w, None, 1);
    assert_eq!(src.armed().count(), w.vm().page_map().len());
    for _ in 0..3 {
        let r = w.run_epoch(Duration::from_secs(5)).unwrap();
        let h = src.harvest().unwrap();
        assert!(h.observed.is_none(), "every page armed");
        let truth = w.ground_truth(r.epoch).unwrap().accessed();
        let c = h.accessed.confusion(&truth);
        assert!(
            c.false_pos == 0 && c.false_neg == 0,
            "{spec}: epoch {}: {} true, {} reported: {c:?}",
            r.epoch,
            truth.count(),
            h.accessed.count()
        );
        assert!(
            truth.count() > 100,
            "{spec}: workload too small to mean much"
        );
    }
    let stats = src.stats();
    let v = w.verify().unwrap();
    assert_eq!(v.mismatches, 0, "{spec}: {v:?}");
    // The verify epoch reads every page: all of them fault once more.
    let h = src.harvest().unwrap();
    assert_eq!(h.accessed.count(), w.vm().page_map().len());
    assert!(
        stats.minor_faults > 0 && stats.fault.errors == 0,
        "{stats:?}"
    );
    drop(src);
    w.finish().unwrap();
}

#[test]
fn recall_and_precision_read_only() {
    exact_against_truth("uniform-read:ops=1500");
}

#[test]
fn recall_and_precision_write_only() {
    exact_against_truth("hotcold-write:hot=20%,p=50%,ops=1500");
}

#[test]
fn recall_and_precision_mixed() {
    exact_against_truth("zipf:op=mix,write=30%,ops=3000,seed=5");
}

#[test]
fn anonymous_memory_refused_with_reason() {
    let w = workload("uniform-read:ops=100", 4 << 20, 1, Backing::Anon);
    let err = UffdMinorSource::new(w.vm().page_map(), UffdMinorConfig::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("MINOR mode needs shmem or hugetlbfs backing; use --backing memfd"),
        "{msg}"
    );
    assert!(msg.contains("anonymous"), "{msg}");
    let why = UffdMinorSource::supported(w.vm().page_map()).unwrap_err();
    assert!(why.0.contains("use --backing memfd"), "{why}");
    w.finish().unwrap();
}

/// Budgeted sampling: the sample is uniform and sized to the budget, and the extrapolated
/// accessed counts of the whole memory and of eight "generations" hold the truth inside their
/// 99% intervals (allowing the odd miss a 99% interval makes).
#[test]
fn sampled_estimates_within_stated_error() {
    let mut w = workload(
        "hotcold-read:hot=10%,p=60%,ops=6000",
        64 << 20,
        2,
        Backing::Memfd,
    );
    let pages = w.vm().page_map().len();
    let interval = Duration::from_millis(200);
    let budget = 10_000; // 2000 of 16384 pages per 200 ms interval
    let mut src = UffdMinorSource::new(
        w.vm().page_map(),
        UffdMinorConfig {
            budget_faults_per_sec: Some(budget),
            seed: 11,
            interval: Some(interval),
        },
    )
    .unwrap();
    let groups: Vec<PageSet> = (0..8)
        .map(|g| {
            let mut s = PageSet::new(pages);
            s.insert_range(g * pages / 8, pages / 8);
            s
        })
        .chain(std::iter::once(PageSet::full(pages)))
        .collect();
    let (mut checked, mut missed, mut hit_sum) = (0, 0, 0.0);
    for _ in 0..5 {
        let armed = src.armed().count();
        assert_eq!(armed, 2000, "sample sized to budget x interval");
        let r = w.run_epoch(Duration::from_secs(5)).unwrap();
        let h = src.harvest().unwrap();
        let observed = h.observed.clone().expect("a sample, not every page");
        let truth = w.ground_truth(r.epoch).unwrap().accessed();
        // Exact on the sample itself.
        let mut armed_truth = truth.clone();
        armed_truth.intersect_with(&observed);
        assert_eq!(h.accessed.confusion(&armed_truth).false_pos, 0);
        assert_eq!(h.accessed.confusion(&armed_truth).false_neg, 0);
        for g in &groups {
            let e = AccessEstimate::of_group(g, &h, Z99);
            let mut t = truth.clone();
            t.intersect_with(g);
            checked += 1;
            hit_sum += e.fraction;
            if !e.covers(t.count()) {
                missed += 1;
                eprintln!("outside: truth {} vs {e}", t.count());
            }
        }
    }
    assert!(hit_sum > 0.0, "nothing accessed at all");
    // 45 intervals at 99%: 0.45 misses expected; 3 or more has probability < 1%.
    assert!(
        missed <= 2,
        "{missed} of {checked} estimates missed the truth"
    );
    w.finish().unwrap();
}

/// At least 60 s of guest work while another thread harvests and re-arms every page every
/// 20 ms; then every word of guest memory must still hold what the guest wrote.
#[test]
fn sixty_seconds_of_continuous_rearming_keep_data_intact() {
    let mut w = workload("uniform:op=mix,write=50%", 32 << 20, 2, Backing::Memfd);
    w.fill().unwrap();
    let src = source(&w, None, 3);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let harvester = std::thread::spawn(move || {
        let mut src = src;
        let mut harvests = 0u64;
        let mut reported = 0u64;
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            let h = src.harvest().unwrap();
            reported += h.accessed.count();
            harvests += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        (src, harvests, reported)
    });
    let t = Instant::now();
    let mut ops = 0;
    let mut epochs = 0;
    while t.elapsed() < Duration::from_secs(61) {
        let r = w.run_epoch(Duration::from_millis(500)).unwrap();
        ops += r.total_ops();
        epochs += 1;
        if epochs % 20 == 0 {
            let v = w.verify().unwrap();
            assert_eq!(v.mismatches, 0, "after {epochs} epochs: {v:?}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (src, harvests, reported) = harvester.join().unwrap();
    let stats = src.stats();
    let v = w.verify().unwrap();
    eprintln!(
        "{:.1} s, {epochs} epochs, {ops} guest accesses, {harvests} harvests, {reported} pages \
         reported, {} faults ({:.0}/s), fault thread CPU {:.2} s",
        t.elapsed().as_secs_f64(),
        stats.fault.faults,
        stats.fault.faults_per_sec(),
        stats.fault.cpu_ns as f64 / 1e9
    );
    assert_eq!(v.mismatches, 0, "{v:?}");
    assert_eq!(v.words, w.vm().page_map().len() * 512);
    assert!(harvests > 1000 && stats.fault.faults > 10_000, "{stats:?}");
    assert_eq!(stats.fault.errors, 0);
    drop(src);
    w.finish().unwrap();
}
