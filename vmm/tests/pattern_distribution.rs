//! Every pattern hits its requested distribution (generator level, no KVM needed: the guest runs
//! exactly this code). Tolerances are stated per test; sample sizes make them > 5 sigma.

use agelab_guest::pattern::Generator;
use agelab_vmm::workload::{zipf, WorkloadSpec};

fn counts(spec: &str, pages: u64, ops: u64) -> (Vec<u64>, u64) {
    let spec: WorkloadSpec = spec.parse().unwrap();
    let p = spec.params(pages);
    let table = match spec.pattern {
        agelab_vmm::workload::Pattern::Zipfian { s } => {
            zipf::alias_table(p.pages / p.unit_pages, s)
        }
        _ => Vec::new(),
    };
    let mut g = Generator::new(&p, 42, &table);
    let mut c = vec![0u64; pages as usize];
    let mut writes = 0;
    for _ in 0..ops {
        let a = g.next_access();
        assert!(a.page < pages, "{spec}: page {} out of region", a.page);
        assert!(a.word < 512);
        c[a.page as usize] += 1;
        writes += u64::from(a.write);
    }
    (c, writes)
}

#[test]
fn hotcold_sends_p_percent_to_hot_pages_within_half_a_point() {
    let (c, _) = counts("hotcold:hot=10%,p=90%", 10_000, 2_000_000);
    let hot: u64 = c[..1000].iter().sum();
    let share = hot as f64 / 2_000_000.0 * 100.0;
    assert!((share - 90.0).abs() < 0.5, "hot share {share:.2}%");
}

#[test]
fn uniform_is_flat_within_ten_percent_per_page() {
    let (c, _) = counts("uniform", 1000, 2_000_000);
    for (p, &n) in c.iter().enumerate() {
        assert!(
            (1800..=2200).contains(&n),
            "page {p}: {n} (expected 2000 ± 10%)"
        );
    }
}

#[test]
fn zipf_matches_rank_probabilities_within_five_percent() {
    let pages = 1000u64;
    let ops = 4_000_000u64;
    let (c, _) = counts("zipf:s=0.99", pages, ops);
    let total: f64 = (0..pages).map(|k| 1.0 / ((k + 1) as f64).powf(0.99)).sum();
    for k in [0usize, 1, 2, 9, 99] {
        let want = ops as f64 / ((k + 1) as f64).powf(0.99) / total;
        let got = c[k] as f64;
        assert!(
            (got - want).abs() / want < 0.05,
            "rank {k}: {got} vs {want:.0}"
        );
    }
}

#[test]
fn phase_shift_window_moves_every_n_accesses() {
    let spec: WorkloadSpec = "phase:ws=10%,every=1000".parse().unwrap();
    let p = spec.params(1000);
    let mut g = Generator::new(&p, 1, &[]);
    for phase in 0..5u64 {
        for _ in 0..1000 {
            let a = g.next_access().page;
            let start = (phase * 100) % 1000;
            assert!(a >= start && a < start + 100, "phase {phase}: page {a}");
        }
    }
}

#[test]
fn strided_and_sequential_are_exact() {
    let (c, _) = counts("strided:stride=3", 30, 10);
    let touched: Vec<usize> = c
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(touched, vec![0, 3, 6, 9, 12, 15, 18, 21, 24, 27]);
    let (c, _) = counts("seq", 100, 250);
    assert!(c[..50].iter().all(|&n| n == 3) && c[50..].iter().all(|&n| n == 2));
}

#[test]
fn mix_writes_requested_share_within_half_a_point() {
    let (_, w) = counts("uniform:op=mix,write=30%", 1000, 1_000_000);
    let share = w as f64 / 1e4;
    assert!((share - 30.0).abs() < 0.5, "write share {share:.2}%");
    let (_, w) = counts("uniform-read", 1000, 10_000);
    assert_eq!(w, 0);
}

#[test]
fn two_mib_units_group_pages() {
    let (c, _) = counts("hotcold:hot=25%,p=100%,gran=2m", 4 * 512, 100_000);
    assert!(
        c[512..].iter().all(|&n| n == 0),
        "accesses outside the one hot 2 MiB unit"
    );
    assert!(c[..512].iter().filter(|&&n| n > 0).count() > 400);
}
