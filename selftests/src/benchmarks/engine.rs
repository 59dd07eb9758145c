//! Bookkeeping cost of one aging pass at 1, 4 and 16 GiB with 0%, 10% and 100% of pages accessed.
//!
//! No guest: a replay source hands the engine prebuilt accessed sets through the normal
//! `run_pass` path (the copy counts as harvest time, which the engine excludes). Reported: the
//! engine's own bookkeeping per pass (union of the harvests + generation and tier updates), per
//! GiB, and how it scales with size. "10% random" sets nearly every bitmap word (the worst case
//! for word skipping); "10% 2MiB-runs" is the clustered case.
//! Goal: ≤ 1 ms per GiB per pass.
//!
//! `agelab bench engine [--passes N] [--sizes 1,4,16] [--heatmap]`

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::args::positive;
use agelab_mglru::engine::{Engine, EngineConfig, PAGES_PER_GIB};
use agelab_mglru::source::{
    AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable,
};
use agelab_mglru::testing::single_slot_map;
use agelab_util::stats::median;
use agelab_vmm::{BackingKind, PageSet};

/// Hands out copies of two prebuilt sets in turn, so pages really move between generations.
struct Replay {
    sets: [PageSet; 2],
    next: usize,
}

impl AccessSource for Replay {
    fn name(&self) -> &str {
        "replay"
    }
    fn observes(&self) -> Observes {
        Observes::Both
    }
    fn granularity(&self) -> u64 {
        agelab_vmm::PAGE_SIZE
    }
    fn available(&self) -> Result<(), Unavailable> {
        Ok(())
    }
    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        self.next ^= 1;
        Ok(Harvest {
            accessed: self.sets[self.next].clone(),
            observed: None,
            cost: HarvestCost::default(),
        })
    }
}

#[derive(Clone, Copy)]
enum Pattern {
    None,
    RandomTenth,
    ClusteredTenth,
    All,
}

impl Pattern {
    fn label(self) -> &'static str {
        match self {
            Pattern::None => "0%",
            Pattern::RandomTenth => "10% random",
            Pattern::ClusteredTenth => "10% 2MiB-runs",
            Pattern::All => "100%",
        }
    }

    /// The set for pass `pass`; the 10% patterns move so pages really change generation.
    fn set(self, pages: u64, pass: u64) -> PageSet {
        match self {
            Pattern::None => PageSet::new(pages),
            Pattern::All => PageSet::full(pages),
            Pattern::RandomTenth => {
                let mut words = vec![0u64; pages.div_ceil(64) as usize];
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ pass.wrapping_mul(0xD1B5_4A32_D192_ED03);
                for w in &mut words {
                    // Each bit set with probability ~1/10 (xorshift64, residue mod 10).
                    let mut word = 0u64;
                    for bit in 0..64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if x.is_multiple_of(10) {
                            word |= 1 << bit;
                        }
                    }
                    *w = word;
                }
                PageSet::from_words(words, pages)
            }
            Pattern::ClusteredTenth => {
                let mut s = PageSet::new(pages);
                let run = 512;
                let mut start = (pass % 10) * run;
                while start < pages {
                    s.insert_range(start, run);
                    start += 10 * run;
                }
                s
            }
        }
    }
}

struct Row {
    gib: u64,
    pattern: Pattern,
    median_ns: u64,
    min_ns: u64,
    max_ns: u64,
    heatmap_ns: u64,
}

/// Options of `agelab bench engine`.
#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    /// Measured passes per size and pattern, after 4 warm-up passes.
    #[arg(long, default_value_t = 20, value_parser = positive::<u64>)]
    passes: u64,
    /// Sizes in GiB, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16", value_parser = positive::<u64>)]
    sizes: Vec<u64>,
    /// Also record the age heatmap and report its cost.
    #[arg(long)]
    heatmap: bool,
}

/// The median of nanosecond samples, to the nanosecond.
fn median_ns(samples: &[u64]) -> u64 {
    median(&mut samples.iter().map(|&ns| ns as f64).collect::<Vec<_>>()).round() as u64
}

fn measure(gib: u64, pattern: Pattern, passes: u64, heatmap: bool) -> Row {
    let pages = gib * PAGES_PER_GIB;
    let config = EngineConfig {
        heatmap_rows: heatmap.then_some(512),
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(single_slot_map(pages, BackingKind::Anonymous), config)
        .expect("default config is valid");
    engine.add_source(Box::new(Replay {
        sets: [pattern.set(pages, 0), pattern.set(pages, 1)],
        next: 0,
    }));
    let warmup = 4;
    let mut samples = Vec::new();
    let mut heat = Vec::new();
    let t0 = Instant::now();
    for pass in 0..warmup + passes {
        // A synthetic clock 100 ms per pass; bookkeeping is timed for real inside the engine.
        let now = t0 + Duration::from_millis(100 * (pass + 1));
        let p = engine.run_pass_at(None, Some(now)).expect("pass");
        if pass >= warmup {
            samples.push(p.bookkeeping_ns);
            heat.push(p.heatmap_ns);
        }
    }
    Row {
        gib,
        pattern,
        median_ns: median_ns(&samples),
        min_ns: samples.iter().copied().min().unwrap_or(0),
        max_ns: samples.iter().copied().max().unwrap_or(0),
        heatmap_ns: median_ns(&heat),
    }
}

/// Runs the benchmark and prints its table.
pub fn run(args: &EngineArgs) -> ExitCode {
    let (passes, sizes, heatmap) = (args.passes, &args.sizes, args.heatmap);
    println!("{}", agelab_vmm::HostProfile::measure());
    println!(
        "aging-pass bookkeeping, default policy (4 generations, one per pass), {passes} passes after 4 warm-up"
    );
    println!(
        "{:>5} {:>14} {:>12} {:>12} {:>12} {:>12} {:>8}{}",
        "GiB",
        "accessed",
        "median ns",
        "min ns",
        "max ns",
        "ns/GiB",
        "goal",
        if heatmap { "   heatmap ns" } else { "" }
    );
    let mut per_gib: Vec<(Pattern, u64, u64)> = Vec::new();
    for &gib in sizes {
        for pattern in [
            Pattern::None,
            Pattern::RandomTenth,
            Pattern::ClusteredTenth,
            Pattern::All,
        ] {
            let r = measure(gib, pattern, passes, heatmap);
            let ns_gib = r.median_ns / r.gib.max(1);
            println!(
                "{:>5} {:>14} {:>12} {:>12} {:>12} {:>12} {:>8}{}",
                r.gib,
                r.pattern.label(),
                r.median_ns,
                r.min_ns,
                r.max_ns,
                ns_gib,
                if ns_gib <= 1_000_000 { "ok" } else { "MISSED" },
                if heatmap {
                    format!(" {:>12}", r.heatmap_ns)
                } else {
                    String::new()
                }
            );
            per_gib.push((pattern, gib, ns_gib));
        }
    }
    if let (Some(&small), Some(&large)) = (sizes.first(), sizes.last()) {
        if large > small {
            println!();
            println!("scaling ns/GiB at {large} GiB vs {small} GiB (1.00 = linear):");
            for pattern in [
                Pattern::None,
                Pattern::RandomTenth,
                Pattern::ClusteredTenth,
                Pattern::All,
            ] {
                let get = |g| {
                    per_gib
                        .iter()
                        .find(|(p, gg, _)| p.label() == pattern.label() && *gg == g)
                        .map(|x| x.2)
                };
                if let (Some(a), Some(b)) = (get(small), get(large)) {
                    println!(
                        "{:>14} {:>6.2}",
                        pattern.label(),
                        b as f64 / a.max(1) as f64
                    );
                }
            }
        }
    }
    ExitCode::SUCCESS
}
