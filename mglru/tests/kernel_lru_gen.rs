//! lru_gen debugfs parser: real Debian 6.1 / 7.2 captures, plus property tests.

use agelab_mglru::kernel::lru_gen::{
    EngineGeneration, GenerationStats, LruGenDebugfs, LruGenView, MemcgLruGen, NodeLruGen,
    TierStats,
};
use proptest::prelude::*;

const DEB61: &str = include_str!("fixtures/lru_gen/debian-6.1-session.txt");
const DEB72: &str = include_str!("fixtures/lru_gen/debian-7.2-session.txt");

/// The kernel output in section `=== name` of a capture session, newline-terminated as the kernel emits it.
fn section(session: &str, name: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in session.lines() {
        if let Some(h) = line.strip_prefix("=== ") {
            inside = h == name;
            continue;
        }
        // The session interleaves command results (`stale aging rc=0`) with kernel output.
        if inside && !line.contains(" rc=") {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(!out.is_empty(), "section {name:?} missing");
    out
}

fn anon(m: &MemcgLruGen) -> Vec<(u64, u64)> {
    m.nodes[0]
        .generations
        .iter()
        .map(|g| (g.seq, g.anon))
        .collect()
}

#[test]
fn debian_61_before_and_after_aging() {
    let before = LruGenDebugfs::parse(&section(DEB61, "lru_gen before")).unwrap();
    assert!(!before.full);
    assert_eq!(before.memcgs.len(), 2);
    assert_eq!(
        (before.memcgs[0].id, before.memcgs[0].path.as_str()),
        (1, "/")
    );
    let m = before.memcg_by_path("/agetest").unwrap();
    assert_eq!(m.id, 2);
    assert_eq!(m.nodes[0].node, 0);
    assert_eq!(anon(m), vec![(0, 0), (1, 0), (2, 16385), (3, 2)]);
    assert_eq!(m.nodes[0].generations[0].age_ms, 792);

    let after = LruGenDebugfs::parse(&section(DEB61, "lru_gen after aging")).unwrap();
    let m = after.memcg(2).unwrap();
    assert_eq!(anon(m), vec![(1, 0), (2, 16384), (3, 1), (4, 0)]);
    assert_eq!(m.nodes[0].max_seq(), Some(4));
    assert_eq!(m.nodes[0].generations[3].age_ms, 12);
}

#[test]
fn debian_72_before_and_after_aging() {
    let before = LruGenDebugfs::parse(&section(DEB72, "lru_gen before")).unwrap();
    let m = before.memcg_by_path("/agetest").unwrap();
    assert_eq!(m.id, 28);
    assert_eq!(anon(m), vec![(0, 0), (1, 0), (2, 16384), (3, 0)]);
    let after = LruGenDebugfs::parse(&section(DEB72, "lru_gen after aging")).unwrap();
    let m = after.memcg(28).unwrap();
    assert_eq!(anon(m), vec![(1, 0), (2, 16384), (3, 0), (4, 0)]);
    assert_eq!(after.memcg(1).unwrap().nodes[0].generations[2].anon, 1722);
}

#[test]
fn full_format_both_layouts() {
    for (session, mm_len) in [(DEB61, 6), (DEB72, 4)] {
        let full = LruGenDebugfs::parse(&section(session, "verbose read (lru_gen_full)")).unwrap();
        assert!(full.full);
        for m in &full.memcgs {
            for g in &m.nodes[0].generations {
                assert_eq!(g.tiers.len(), 4, "memcg {} gen {}", m.id, g.seq);
                assert_eq!(g.tiers[3].tier, 3);
                assert_eq!(g.mm_stats.len(), mm_len);
            }
        }
        let root = full.memcg(1).unwrap();
        assert_eq!(root.nodes[0].generations.len(), 4);
        // The capture of the aged memcg was cut after two generations (at a line boundary).
        let aged = full.memcgs.last().unwrap();
        assert_eq!(aged.nodes[0].generations.len(), 2);
        assert_eq!(
            aged.nodes[0].generations.iter().map(|g| g.anon).max(),
            Some(16384)
        );
    }
}

#[test]
fn view_youngest_first_side_by_side() {
    let after = LruGenDebugfs::parse(&section(DEB72, "lru_gen after aging")).unwrap();
    let v = LruGenView::from_listing(&after, 28, None).unwrap();
    assert_eq!(
        v.generations.iter().map(|g| g.seq).collect::<Vec<_>>(),
        vec![4, 3, 2, 1]
    );
    assert_eq!(v.pages(), 16384);
    let engine = vec![
        EngineGeneration {
            label: "g0".into(),
            age_ms: 4,
            pages: 0,
        },
        EngineGeneration {
            label: "g1".into(),
            age_ms: 500,
            pages: 16384,
        },
    ];
    let table = v.side_by_side(&engine);
    assert!(table.contains("kernel memcg 28 /agetest"), "{table}");
    assert_eq!(table.lines().count(), 2 + 4, "{table}");
    assert!(LruGenView::from_listing(&after, 99, None).is_none());
}

#[test]
fn malformed_inputs_are_errors() {
    let good = section(DEB61, "lru_gen before");
    for (what, bad) in [
        ("empty", String::new()),
        ("no trailing newline", good.trim_end().to_string()),
        (
            "node before memcg",
            " node 0\n          0 1 2 3\n".to_string(),
        ),
        (
            "gen before node",
            "memcg 1 /\n          0 1 2 3\n".to_string(),
        ),
        (
            "three columns",
            "memcg 1 /\n node 0\n          0 1 2\n          1 1 2 3\n".into(),
        ),
        (
            "one generation",
            "memcg 1 /\n node 0\n          0 1 2 3\n".to_string(),
        ),
        ("memcg without node", format!("{good}memcg 3 /x\n")),
        (
            "decreasing seq",
            "memcg 1 /\n node 0\n  5 1 2 3\n  4 1 2 3\n".into(),
        ),
        ("garbage", "hello world\n".into()),
        ("bad id", "memcg x /\n".into()),
    ] {
        assert!(LruGenDebugfs::parse(&bad).is_err(), "{what} parsed");
    }
    // A full listing cut after a tier line of the last generation.
    let full = section(DEB72, "verbose read (lru_gen_full)");
    let cut: String = full
        .lines()
        .take(full.lines().count() - 2)
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(LruGenDebugfs::parse(&cut).is_err());
}

/// Renders a listing the way the kernel does (`padded`: 6.1's `memcg %5hu`; `mm7`: 7.2's four
/// mm-walk counters instead of six).
fn render(l: &LruGenDebugfs, padded: bool, mm7: bool) -> String {
    let mut s = String::new();
    for m in &l.memcgs {
        if padded {
            s += &format!("memcg {:5} {}\n", m.id, m.path);
        } else {
            s += &format!("memcg {} {}\n", m.id, m.path);
        }
        for n in &m.nodes {
            s += &format!(" node {:5}\n", n.node);
            for g in &n.generations {
                s += &format!(
                    " {:10} {:10} {:10}  {:10} \n",
                    g.seq, g.age_ms, g.anon, g.file
                );
                for t in &g.tiers {
                    s += &format!("            {:10}", t.tier);
                    for (v, c) in t.anon.iter().chain(&t.file).zip("repRTx".chars()) {
                        s += &format!(" {v:10}{c}");
                    }
                    s += "\n";
                }
                if !g.mm_stats.is_empty() {
                    s += "                      ";
                    let letters = if mm7 { "TYFA" } else { "LOYNFA" };
                    for (v, c) in g.mm_stats.iter().zip(letters.chars()) {
                        s += &format!(" {v:10}{c}");
                    }
                    s += "\n";
                }
            }
        }
    }
    s
}

fn arb_listing() -> impl Strategy<Value = (LruGenDebugfs, bool)> {
    (any::<bool>(), any::<bool>()).prop_flat_map(|(full, mm7)| {
        let mm_len = if mm7 { 4 } else { 6 };
        let gen = (
            0u64..100_000,
            0u64..1_000_000,
            0u64..10_000_000,
            0u64..10_000_000,
        )
            .prop_map(move |(_, age, anon, file)| GenerationStats {
                seq: 0,
                age_ms: age,
                anon,
                file,
                tiers: if full {
                    (0..4)
                        .map(|t| TierStats {
                            tier: t,
                            anon: [t as u64, 1, 2],
                            file: [3, 4, 5],
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                mm_stats: if full { vec![7; mm_len] } else { Vec::new() },
            });
        let node = (
            0u32..4,
            0u64..1_000_000,
            proptest::collection::vec(gen, 2..5),
        )
            .prop_map(|(node, base, mut gens)| {
                for (i, g) in gens.iter_mut().enumerate() {
                    g.seq = base + i as u64;
                }
                NodeLruGen {
                    node,
                    generations: gens,
                }
            });
        let memcg = (
            0u64..100_000,
            "(/[a-z0-9_.-]{1,10}){0,3}",
            proptest::collection::vec(node, 1..3),
        )
            .prop_map(|(id, path, nodes)| MemcgLruGen {
                id,
                path: if path.is_empty() { "/".into() } else { path },
                nodes,
            });
        (proptest::collection::vec(memcg, 1..4), Just(mm7))
            .prop_map(move |(memcgs, mm7)| (LruGenDebugfs { memcgs, full }, mm7))
    })
}

proptest! {
    #[test]
    fn roundtrip_both_layouts((listing, mm7) in arb_listing(), padded in any::<bool>()) {
        let text = render(&listing, padded, mm7);
        prop_assert_eq!(LruGenDebugfs::parse(&text).unwrap(), listing);
    }

    #[test]
    fn truncation_never_panics_and_mid_line_is_an_error(
        (listing, mm7) in arb_listing(), cut in any::<prop::sample::Index>()
    ) {
        let text = render(&listing, false, mm7);
        let at = cut.index(text.len());
        let r = LruGenDebugfs::parse(&text[..at]);
        if at > 0 && !text[..at].ends_with('\n') {
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn byte_corruption_never_panics(
        (listing, mm7) in arb_listing(), pos in any::<prop::sample::Index>(), byte in any::<u8>()
    ) {
        let mut bytes = render(&listing, true, mm7).into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let _ = LruGenDebugfs::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = LruGenDebugfs::parse(&text);
    }
}
