//! Eviction candidates, reclaim marking, refaults and tier protection.

use std::time::{Duration, Instant};

use agelab_mglru::engine::{
    AgingPolicy, Engine, EngineConfig, EvictionScope, TierConfig, MAX_NR_TIERS,
};
use agelab_mglru::testing::slots_map;
use agelab_vmm::{BackingKind, GuestPageMap, PageSet, PAGE_SIZE};

/// Two memslots, so host addresses are not simply contiguous.
fn map() -> GuestPageMap {
    slots_map(
        BackingKind::Anonymous,
        &[
            (0x1_0000_0000, 0x7f00_0000_0000, 32),
            (0x2_0000_0000, 0x7e00_0000_0000, 32),
        ],
    )
}

fn config(min_refaults: u64) -> EngineConfig {
    EngineConfig {
        policy: AgingPolicy::default(),
        tiers: TierConfig {
            min_refaults,
            ..TierConfig::default()
        },
        heatmap_rows: None,
    }
}

fn set(members: impl IntoIterator<Item = u64>) -> PageSet {
    let mut s = PageSet::new(64);
    for p in members {
        s.insert(p);
    }
    s
}

fn at(t0: Instant, pass: u64) -> Instant {
    t0 + Duration::from_millis(100 * pass)
}

#[test]
fn candidates_are_oldest_generation_in_page_order_with_addresses() {
    let t0 = Instant::now();
    let mut e = Engine::new_at(map(), config(64), t0).unwrap();
    // Everything seen once, then only even pages stay hot for 3 more passes.
    e.age_at(&set(0..64), None, at(t0, 1)).unwrap();
    for pass in 2..=4 {
        e.age_at(&set((0..64).step_by(2)), None, at(t0, pass))
            .unwrap();
    }
    let min = e.generations().min_seq();
    let c: Vec<_> = e.eviction_candidates(EvictionScope::default()).collect();
    let pages: Vec<u64> = c.iter().map(|c| c.page.index).collect();
    assert_eq!(pages, (1..64).step_by(2).collect::<Vec<_>>());
    assert!(c.iter().all(|c| c.seq == min && c.tier == 0));
    assert_eq!(c[0].page.hva, 0x7f00_0000_0000 + PAGE_SIZE);
    let second_slot = c.iter().find(|c| c.page.index == 33).unwrap();
    assert_eq!(second_slot.page.gpa, 0x2_0000_0000 + PAGE_SIZE);
    assert_eq!(second_slot.page.slot, 2);
}

#[test]
fn scope_widens_to_older_generations_but_never_the_youngest() {
    let t0 = Instant::now();
    let mut e = Engine::new_at(map(), config(64), t0).unwrap();
    // Page p last seen in pass p (1..=4): after pass 4 the window holds 4 generations.
    for pass in 1..=4 {
        e.age_at(&set([pass]), None, at(t0, pass)).unwrap();
    }
    let min = e.generations().min_seq();
    let in_scope = |e: &mut Engine, gens| -> Vec<u64> {
        e.eviction_candidates(EvictionScope { oldest_gens: gens })
            .map(|c| c.page.index)
            .filter(|p| (1..=4).contains(p))
            .collect()
    };
    assert_eq!(e.generations().seq_of(1), Some(min));
    assert_eq!(in_scope(&mut e, 1), vec![1]);
    assert_eq!(in_scope(&mut e, 2), vec![1, 2]);
    assert_eq!(in_scope(&mut e, 16), vec![1, 2, 3]);
}

#[test]
fn min_ttl_protects_recent_generations() {
    let t0 = Instant::now();
    let mut cfg = config(64);
    cfg.policy.min_ttl = Duration::from_millis(250);
    let mut e = Engine::new_at(map(), cfg, t0).unwrap();
    for pass in 1..=4 {
        e.age_at(&set([pass]), None, at(t0, pass)).unwrap();
    }
    // Generation of page p opened at pass p; its pages are idle at least since the next one opened
    // (pass p + 1), so page 1 qualifies from 200 + 250 ms on, page 2 from 300 + 250 ms.
    let scope = EvictionScope { oldest_gens: 16 };
    assert_eq!(e.eviction_candidates_at(scope, at(t0, 4)).count(), 0);
    let late: Vec<u64> = e
        .eviction_candidates_at(scope, at(t0, 5))
        .map(|c| c.page.index)
        .filter(|p| (1..=4).contains(p))
        .collect();
    assert_eq!(late, vec![1]);
    let later: Vec<u64> = e
        .eviction_candidates_at(scope, at(t0, 6))
        .map(|c| c.page.index)
        .filter(|p| (1..=4).contains(p))
        .collect();
    assert_eq!(later, vec![1, 2]);
}

#[test]
fn refaulted_page_gets_higher_tier() {
    let t0 = Instant::now();
    let mut e = Engine::new_at(map(), config(64), t0).unwrap();
    assert_eq!(e.tiers().tier(5), 0);
    assert_eq!(e.mark_reclaimed([5, 6]).unwrap(), 2);
    assert_eq!(e.generations().reclaimed(), 2);
    assert_eq!(e.generations().seq_of(5), None);
    let pass = e.age_at(&set([5]), None, at(t0, 1)).unwrap();
    assert_eq!(pass.promotion.refaulted, 1);
    assert_eq!(e.tiers().tier(5), 1);
    assert_eq!(e.generations().seq_of(5), Some(e.generations().max_seq()));
    assert_eq!(e.generations().reclaimed(), 1);
    // Second and third refaults: tier 2 (order_base_2(3) = order_base_2(4) = 2).
    for round in 0..2 {
        e.mark_reclaimed([5]).unwrap();
        e.record_refaults(&set([5])).unwrap();
        assert_eq!(e.tiers().tier(5), 2, "round {round}");
    }
    e.mark_reclaimed([5]).unwrap();
    e.record_refaults(&set([5])).unwrap();
    assert_eq!(e.tiers().tier(5), 3);
    assert_eq!(e.tiers().lifetime()[0].refaulted, 1);
    assert_eq!(e.tiers().lifetime()[1].refaulted, 1);
    // Marking a reclaimed page again does nothing.
    assert_eq!(e.mark_reclaimed([6, 6]).unwrap(), 0);
}

#[test]
fn eviction_skips_protected_tiers_and_moves_them_up() {
    let t0 = Instant::now();
    // A threshold of 1 refault: the aging below halves the averages twice (min_seq advances), and
    // the point here is the walk, not the threshold.
    let mut e = Engine::new_at(map(), config(1), t0).unwrap();
    // Tier 0: evict 40 pages, 4 come back (10%); those 4 are tier 1 now. Evict them again and
    // all 4 come back (100%): tier 1 and above become protected.
    e.mark_reclaimed(0..40).unwrap();
    e.record_refaults(&set(0..4)).unwrap();
    assert_eq!(e.tiers().tier(0), 1);
    assert_eq!(e.tiers().first_protected(), MAX_NR_TIERS);
    e.mark_reclaimed(0..4).unwrap();
    e.record_refaults(&set(0..4)).unwrap();
    assert_eq!(e.tiers().tier(0), 2);
    assert_eq!(e.tiers().first_protected(), 1, "{}", e.table());
    let first = e.tiers().first_protected();
    for pass in 1..=4 {
        e.age_at(&set([]), None, at(t0, pass)).unwrap();
    }
    let min = e.generations().min_seq();
    let mut it = e.eviction_candidates(EvictionScope::default());
    assert_eq!(it.first_protected_tier(), first);
    let got: Vec<_> = it.by_ref().collect();
    let skipped = it.protected();
    assert!(got.iter().all(|c| c.tier < first));
    assert!(got.windows(2).all(|w| w[0].page.index < w[1].page.index));
    let protected_pages: u64 = skipped.iter().sum();
    // Resident: pages 0..4 (tier 2, protected) and 40..64 (tier 0); 4..40 stay reclaimed.
    assert_eq!(protected_pages, 4);
    assert_eq!(
        got.iter().map(|c| c.page.index).collect::<Vec<_>>(),
        (40..64).collect::<Vec<_>>()
    );
    // Protected pages moved one generation up; counts still add up.
    assert_eq!(e.generations().seq_of(0), Some(min + 1));
    let total: u64 = e.generations().generations().map(|g| g.pages).sum();
    assert_eq!(total, 28);
    assert_eq!(
        e.tiers()
            .lifetime()
            .iter()
            .map(|t| t.protected)
            .sum::<u64>(),
        protected_pages
    );
    assert!(first < MAX_NR_TIERS);
}

#[test]
fn reclaim_empties_oldest_and_min_seq_advances() {
    let t0 = Instant::now();
    let mut e = Engine::new_at(map(), config(64), t0).unwrap();
    e.age_at(&set(0..64), None, at(t0, 1)).unwrap();
    e.age_at(&set(32..64), None, at(t0, 2)).unwrap();
    e.age_at(&set(32..64), None, at(t0, 3)).unwrap();
    let before = e.generations().min_seq();
    let victims: Vec<u64> = e
        .eviction_candidates(EvictionScope::default())
        .map(|c| c.page.index)
        .collect();
    assert_eq!(victims, (0..32).collect::<Vec<_>>());
    e.mark_reclaimed(victims).unwrap();
    let g = e.generations();
    assert!(g.min_seq() > before);
    assert!(g.nr_gens() >= 2);
    assert_eq!(g.resident(), 32);
    assert_eq!(g.generations().map(|g| g.pages).sum::<u64>(), 32);
}
