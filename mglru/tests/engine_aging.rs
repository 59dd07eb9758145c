//! Aging: hot pages stay young, cold pages reach the oldest generation, merges conserve pages.

use std::time::{Duration, Instant};

use agelab_mglru::engine::{AgingPolicy, Engine, EngineConfig, InitialPlacement, NewGeneration};
use agelab_mglru::sources::{ScriptStep, ScriptedSource};
use agelab_mglru::testing::single_slot_map;
use agelab_vmm::{BackingKind, GuestPageMap, PageSet};

fn map(pages: u64) -> GuestPageMap {
    single_slot_map(pages, BackingKind::Anonymous)
}

fn engine(pages: u64, max_gens: usize) -> (Engine, Instant) {
    let t0 = Instant::now();
    let config = EngineConfig {
        policy: AgingPolicy {
            max_gens,
            ..AgingPolicy::default()
        },
        ..EngineConfig::default()
    };
    (Engine::new_at(map(pages), config, t0).unwrap(), t0)
}

fn set(pages: u64, members: &[u64]) -> PageSet {
    let mut s = PageSet::new(pages);
    for &p in members {
        s.insert(p);
    }
    s
}

fn at(t0: Instant, pass: u64) -> Instant {
    t0 + Duration::from_millis(100 * pass)
}

#[test]
fn hot_page_stays_young() {
    let (mut e, t0) = engine(256, 4);
    for pass in 1..=20 {
        e.age_at(&set(256, &[7]), None, at(t0, pass)).unwrap();
        let g = e.generations();
        assert_eq!(g.seq_of(7), Some(g.max_seq()), "pass {pass}");
    }
}

#[test]
fn cold_page_reaches_oldest_after_window() {
    let (mut e, t0) = engine(64, 4);
    // Pass 1 sees page 3 accessed: it joins the youngest generation.
    e.age_at(&set(64, &[3]), None, at(t0, 1)).unwrap();
    let joined = e.generations().seq_of(3).unwrap();
    assert_eq!(joined, e.generations().max_seq());
    // Each later pass opens a generation; with 4 generations the page is oldest after 3 of them.
    for pass in 2..=3 {
        e.age_at(&set(64, &[]), None, at(t0, pass)).unwrap();
        let g = e.generations();
        assert!(g.seq_of(3).unwrap() > g.min_seq(), "pass {pass} too early");
    }
    e.age_at(&set(64, &[]), None, at(t0, 4)).unwrap();
    let g = e.generations();
    assert_eq!(g.seq_of(3), Some(g.min_seq()));
    assert_eq!(g.max_seq() - g.min_seq(), 3);
    // It stays there; the stored generation still says when it was last seen.
    e.age_at(&set(64, &[]), None, at(t0, 5)).unwrap();
    assert_eq!(e.generations().seq_of(3), Some(e.generations().min_seq()));
    assert_eq!(e.generations().last_joined(3), Some(joined));
}

#[test]
fn merges_conserve_pages_and_advance_min_seq() {
    let (mut e, t0) = engine(1000, 3);
    assert_eq!(e.generations().min_seq(), 0);
    assert_eq!(e.generations().nr_gens(), 2);
    let mut prev_min = 0;
    for pass in 1..=10u64 {
        let touched: Vec<u64> = (0..1000).filter(|p| p % (pass + 1) == 0).collect();
        let r = e.age_at(&set(1000, &touched), None, at(t0, pass)).unwrap();
        let g = e.generations();
        let total: u64 = g.generations().map(|x| x.pages).sum();
        assert_eq!(total, 1000, "pass {pass}");
        assert!(g.nr_gens() <= 3);
        assert!(g.min_seq() >= prev_min);
        assert_eq!(r.opened, Some(g.max_seq()));
        prev_min = g.min_seq();
        assert_eq!(g.pages_in(g.max_seq()), touched.len() as u64);
    }
    assert_eq!(e.generations().max_seq(), 11);
    assert_eq!(e.generations().min_seq(), 9);
}

#[test]
fn initial_placement() {
    let t0 = Instant::now();
    let config = EngineConfig {
        policy: AgingPolicy {
            initial: InitialPlacement::Oldest,
            ..AgingPolicy::default()
        },
        ..EngineConfig::default()
    };
    let e = Engine::new_at(map(10), config, t0).unwrap();
    assert_eq!(e.generations().pages_in(e.generations().min_seq()), 10);
    let (e, _) = engine(10, 4);
    assert_eq!(e.generations().pages_in(e.generations().max_seq()), 10);
}

#[test]
fn interval_policy_opens_only_when_youngest_is_old_enough() {
    let t0 = Instant::now();
    let config = EngineConfig {
        policy: AgingPolicy {
            new_generation: NewGeneration::AfterInterval(Duration::from_millis(250)),
            ..AgingPolicy::default()
        },
        ..EngineConfig::default()
    };
    let mut e = Engine::new_at(map(64), config, t0).unwrap();
    let opened: Vec<bool> = (1..=6)
        .map(|p| {
            e.age_at(&set(64, &[1]), None, at(t0, p))
                .unwrap()
                .opened
                .is_some()
        })
        .collect();
    // The first generations are born at t0; passes come every 100 ms.
    assert_eq!(opened, vec![false, false, true, false, false, true]);
}

#[test]
fn sources_are_unioned_and_judged() {
    let t0 = Instant::now();
    let mut e = Engine::new_at(map(128), EngineConfig::default(), t0).unwrap();
    let truth = set(128, &[1, 2, 3, 4]);
    e.add_source(Box::new(ScriptedSource::from_sets(
        "reads",
        128,
        [set(128, &[1, 2])],
    )));
    e.add_source(Box::new(ScriptedSource::from_sets(
        "writes",
        128,
        [set(128, &[3, 9])],
    )));
    e.add_source(Box::new(
        ScriptedSource::from_sets("absent", 128, []).unavailable("no such interface"),
    ));
    e.add_source(Box::new(ScriptedSource::new(
        "broken",
        128,
        [ScriptStep::Fail("EIO".into())],
    )));
    let pass = e.run_pass_at(Some(&truth), Some(at(t0, 1))).unwrap();
    assert_eq!(pass.accessed, 4);
    let u = pass.union_confusion.unwrap();
    assert_eq!((u.true_pos, u.false_pos, u.false_neg), (3, 1, 1));
    let reads = &pass.sources[0];
    assert_eq!(reads.confusion.unwrap().precision(), 1.0);
    assert_eq!(reads.confusion.unwrap().recall(), 0.5);
    assert!(!pass.sources[2].harvested);
    assert!(pass.sources[3].error.as_deref().unwrap().contains("EIO"));
    let stats: Vec<_> = e.sources().cloned().collect();
    assert_eq!(stats[2].reason.as_deref(), Some("no such interface"));
    assert_eq!(stats[3].errors, 1);
    assert_eq!(stats[1].precision(), Some(0.5));
    let g = e.generations();
    for p in [1, 2, 3, 9] {
        assert_eq!(g.seq_of(p), Some(g.max_seq()));
    }
}

#[test]
fn sampled_source_is_judged_on_observed_pages_only() {
    let t0 = Instant::now();
    let mut e = Engine::new_at(map(128), EngineConfig::default(), t0).unwrap();
    e.add_source(Box::new(ScriptedSource::new(
        "sampler",
        128,
        [ScriptStep::Sampled {
            accessed: set(128, &[1]),
            observed: set(128, &[0, 1]),
        }],
    )));
    let pass = e
        .run_pass_at(Some(&set(128, &[1, 50, 60])), Some(at(t0, 1)))
        .unwrap();
    let c = pass.sources[0].confusion.unwrap();
    assert_eq!((c.true_pos, c.false_pos, c.false_neg), (1, 0, 0));
}
