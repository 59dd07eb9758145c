//! Region sampling for uffd-minor with real guests against the ground truth: on a guest whose hot
//! and cold memory come in whole 2 MiB areas, a few samples per region place every page where
//! the truth puts it and the estimate's precision and recall stay ≥ 95 %, with far fewer faults
//! than arming every page of the oldest generations. The same check fails on the cases built to
//! fail it: hot pages scattered one per 2 MiB region (the samples miss them), and regions whose
//! faulting samples do not promote the region.
//!
//! Several VMs in one process, on purpose: the tests run in parallel threads of this binary, so
//! their VMs share one mm and its MMU notifiers, as they would in any VMM hosting several guests;
//! nothing agelab does to one VM may disturb another (`sources_selfcheck.rs`:
//! `building_a_source_or_forking_disturbs_no_other_vm`).

use agelab_mglru::sources::uffd_minor::guest::{GuidedGuest, GuidedGuestError};
use agelab_mglru::sources::uffd_minor::{GuidedArming, RegionConfig};
use agelab_vmm::workload::WorkloadSpec;
use agelab_vmm::{Confusion, PageSet};
use std::io::Write;
use std::time::Duration;

const PASSES: usize = 20;
const GENS: usize = 8;
/// Hot and cold in whole 2 MiB areas: the first 8 MiB of 32 MiB.
const CONTIGUOUS: &str = "hotcold:hot=25%,p=100%,op=read";
/// One hot page per 2 MiB region (every 512th page).
const SCATTERED: &str = "strided:stride=512,op=read";

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Every page of the 2 oldest generations (exact).
    Pages,
    /// Region sampling.
    Regions { samples: u64, promote: bool },
}

#[derive(Debug)]
struct Outcome {
    /// Guest faults during the measured epochs.
    faults: u64,
    /// Hot pages (touched in the last 2 epochs) and of them, young (not in the oldest generation).
    hot: u64,
    hot_young: u64,
    /// Cold pages (never touched after the fill) and of them, in the oldest generation.
    cold: u64,
    cold_old: u64,
    /// The source's harvests against the truth on the pages they observed, summed over passes.
    estimate: Confusion,
}

impl Outcome {
    /// The decision: the estimate and the generations agree with the truth.
    fn check(&self) -> Result<(), String> {
        let (p, r) = (self.estimate.precision(), self.estimate.recall());
        let hot = self.hot_young as f64 / self.hot.max(1) as f64;
        let cold = self.cold_old as f64 / self.cold.max(1) as f64;
        if self.hot == 0 || self.cold == 0 {
            return Err(format!("degenerate workload: {self:?}"));
        }
        if p < 0.95 || r < 0.95 {
            return Err(format!(
                "estimate vs truth: precision {p:.3}, recall {r:.3} (want ≥ 0.95)"
            ));
        }
        if hot < 0.99 || cold < 0.99 {
            return Err(format!(
                "placement vs truth: {:.1}% of hot pages young, {:.1}% of cold pages oldest (want ≥ 99%)",
                hot * 100.0,
                cold * 100.0
            ));
        }
        Ok(())
    }
}

fn run(workload: &str, mode: Mode) -> Option<Outcome> {
    let spec: WorkloadSpec = workload.parse().unwrap();
    let regions = |g: GuidedArming| match mode {
        Mode::Pages => g,
        Mode::Regions { samples, promote } => g.with_regions(RegionConfig {
            samples,
            promote_region: promote,
            ..RegionConfig::default()
        }),
    };
    let mut guest = match GuidedGuest::start(
        &spec,
        32 << 20,
        GENS,
        Duration::from_millis(100),
        Some(&regions),
    ) {
        Err(GuidedGuestError::Unsupported(why)) => {
            agelab_vmm::testing::skip("uffd-minor region sampling", &why);
            return None;
        }
        other => other.unwrap(),
    };
    let pages = guest.engine().generations().len();
    let f0 = guest.fault_total();
    let mut ever = PageSet::new(pages);
    let mut recent = Vec::new();
    let mut estimate = Confusion::default();
    for _ in 0..PASSES {
        let e = guest.epoch().unwrap();
        ever.union_with(&e.touched);
        let c = e.pass.sources[0].confusion.expect("judged");
        estimate.true_pos += c.true_pos;
        estimate.false_pos += c.false_pos;
        estimate.false_neg += c.false_neg;
        guest.rearm(&e).unwrap();
        recent.push(e.touched);
    }
    let gens = guest.engine().generations();
    let min = gens.min_seq();
    let mut hot = recent[recent.len() - 1].clone();
    hot.union_with(&recent[recent.len() - 2]);
    let mut o = Outcome {
        faults: guest.fault_total() - f0,
        hot: 0,
        hot_young: 0,
        cold: 0,
        cold_old: 0,
        estimate,
    };
    for p in 0..pages {
        let seq = gens.seq_of(p).expect("resident");
        if hot.contains(p) {
            o.hot += 1;
            o.hot_young += u64::from(seq > min);
        } else if !ever.contains(p) {
            o.cold += 1;
            o.cold_old += u64::from(seq == min);
        }
    }
    let stats = guest.guide().map(|g| g.stats().regions);
    let v = guest.finish().unwrap();
    assert_eq!(v.mismatches, 0, "{workload} {mode:?}: {v:?}");
    let _ = writeln!(
        std::io::stderr().lock(),
        "{workload} {mode:?}: {o:?}, regions {stats:?}"
    );
    Some(o)
}

const REGIONS: Mode = Mode::Regions {
    samples: 2,
    promote: true,
};

#[test]
fn regions_agree_with_truth_on_2m_areas_with_far_fewer_faults() {
    let Some(pages) = run(CONTIGUOUS, Mode::Pages) else {
        return;
    };
    let regions = run(CONTIGUOUS, REGIONS).expect("supported a moment ago");
    pages.check().expect("page mode");
    regions.check().expect("region mode");
    assert!(
        regions.faults * 4 <= pages.faults,
        "region sampling took {} faults, every page {}",
        regions.faults,
        pages.faults
    );
}

#[test]
fn negative_control_scattered_hot_pages_fail_the_check() {
    let Some(pages) = run(SCATTERED, Mode::Pages) else {
        return;
    };
    // Page mode sees every hot page: the workload itself passes.
    pages.check().expect("page mode on scattered hot pages");
    let regions = run(SCATTERED, REGIONS).expect("supported a moment ago");
    let err = regions
        .check()
        .expect_err("regions cannot see one hot page per 2 MiB: the check must fail");
    let _ = writeln!(std::io::stderr().lock(), "scattered, regions: {err}");
}

#[test]
fn negative_control_without_region_promotion_fails_the_check() {
    let off = run(
        CONTIGUOUS,
        Mode::Regions {
            samples: 2,
            promote: false,
        },
    );
    let Some(off) = off else { return };
    let err = off
        .check()
        .expect_err("samples alone cannot keep hot regions young: the check must fail");
    let _ = writeln!(std::io::stderr().lock(), "no promotion: {err}");
}
