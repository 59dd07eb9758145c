//! Property tests: per-generation counts always match a naive recount of every page.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agelab_mglru::engine::{
    AgingPolicy, Engine, EngineConfig, EvictionScope, InitialPlacement, NewGeneration,
};
use agelab_vmm::{BackingKind, GuestPageMap, PageRange, PageSet};
use proptest::prelude::*;

const PAGES: u64 = 300;

#[derive(Clone, Debug)]
enum Op {
    Age(Vec<u64>),
    Reclaim(Vec<u64>),
    Refault(Vec<u64>),
    Evict(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let pages = || proptest::collection::vec(0..PAGES, 0..120);
    prop_oneof![
        4 => pages().prop_map(Op::Age),
        // Dense runs exercise the all-ones word path.
        1 => (0..PAGES, 0..PAGES).prop_map(|(a, n)| Op::Age((a..(a + n).min(PAGES)).collect())),
        2 => pages().prop_map(Op::Reclaim),
        1 => pages().prop_map(Op::Refault),
        1 => (1..5usize, 0..40usize).prop_map(|(g, n)| Op::Evict(g, n)),
    ]
}

fn set(pages: &[u64]) -> PageSet {
    let mut s = PageSet::new(PAGES);
    for &p in pages {
        s.insert(p);
    }
    s
}

fn check(e: &Engine) -> Result<(), TestCaseError> {
    let g = e.generations();
    let mut naive: BTreeMap<u32, u64> = BTreeMap::new();
    let mut reclaimed = 0;
    for p in 0..PAGES {
        match g.seq_of(p) {
            Some(s) => *naive.entry(s).or_default() += 1,
            None => reclaimed += 1,
        }
    }
    prop_assert_eq!(reclaimed, g.reclaimed());
    let counted: u64 = g.generations().map(|x| x.pages).sum();
    prop_assert_eq!(counted + g.reclaimed(), PAGES);
    for gen in g.generations() {
        prop_assert_eq!(
            naive.get(&gen.seq).copied().unwrap_or(0),
            gen.pages,
            "seq {}",
            gen.seq
        );
    }
    prop_assert!(naive.keys().all(|&s| s >= g.min_seq() && s <= g.max_seq()));
    prop_assert!(g.nr_gens() >= 2 && g.nr_gens() <= g.max_gens());
    Ok(())
}

proptest! {
    #[test]
    fn counts_match_naive_recount(
        max_gens in 2usize..=16,
        oldest in any::<bool>(),
        every_pass in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let t0 = Instant::now();
        let policy = AgingPolicy {
            max_gens,
            initial: if oldest { InitialPlacement::Oldest } else { InitialPlacement::Youngest },
            new_generation: if every_pass {
                NewGeneration::EveryPass
            } else {
                NewGeneration::YoungestShare { percent: 30, min_interval: Duration::ZERO }
            },
            min_ttl: Duration::ZERO,
        };
        let map = GuestPageMap::new(vec![PageRange {
            first_page: 0, pages: PAGES, gpa: 0, hva: 0x1000_0000, slot: 0,
            backing: BackingKind::Anonymous,
        }]);
        let mut e = Engine::new_at(map, EngineConfig { policy, ..EngineConfig::default() }, t0)
            .unwrap();
        check(&e)?;
        for (i, op) in ops.into_iter().enumerate() {
            let now = t0 + Duration::from_millis(10 * (i as u64 + 1));
            match op {
                Op::Age(p) => { e.age_at(&set(&p), None, now).unwrap(); }
                Op::Reclaim(p) => { e.mark_reclaimed(p).unwrap(); }
                Op::Refault(p) => { e.record_refaults(&set(&p)).unwrap(); }
                Op::Evict(gens, n) => {
                    let c: Vec<_> = e
                        .eviction_candidates_at(EvictionScope { oldest_gens: gens }, now)
                        .take(n)
                        .collect();
                    prop_assert!(c.windows(2).all(|w| w[0].page.index < w[1].page.index));
                    e.mark_reclaimed(c.iter().map(|c| c.page.index)).unwrap();
                }
            }
            check(&e)?;
        }
    }
}
