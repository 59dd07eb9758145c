//! Reports: debugfs-like table, JSON shape, working-set histogram, SVG heatmap, oracle source.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use agelab_mglru::engine::{pass_summary, Engine, EngineConfig, EngineReport};
use agelab_mglru::sources::{OracleSource, ScriptedSource};
use agelab_mglru::testing::single_slot_map;
use agelab_mglru::AccessSource;
use agelab_vmm::{BackingKind, GuestPageMap, PageSet};

const PAGES: u64 = 1024;

fn map() -> GuestPageMap {
    single_slot_map(PAGES, BackingKind::Memfd)
}

fn range(a: u64, b: u64) -> PageSet {
    let mut s = PageSet::new(PAGES);
    s.insert_range(a, b - a);
    s
}

/// Ten passes 100 ms apart: pages 0..256 hot every pass, the rest seen once at pass 1.
fn run(heatmap: bool) -> (Engine, Instant) {
    let t0 = Instant::now();
    let config = EngineConfig {
        heatmap_rows: heatmap.then_some(64),
        ..EngineConfig::default()
    };
    let mut e = Engine::new_at(map(), config, t0).unwrap();
    for pass in 1..=10u64 {
        let set = if pass == 1 {
            range(0, PAGES)
        } else {
            range(0, 256)
        };
        e.age_at(&set, Some(&set), t0 + Duration::from_millis(100 * pass))
            .unwrap();
    }
    (e, t0)
}

#[test]
fn table_lists_generations_like_debugfs() {
    let (e, _) = run(false);
    let table = e.table();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("pass 10  min_seq 8  max_seq 11"),
        "{table}"
    );
    assert!(lines[1].contains("seq") && lines[1].contains("age_ms") && lines[1].contains("MiB"));
    let gens: Vec<Vec<&str>> = lines[2..6]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(gens[0][0], "8");
    assert_eq!(gens[0][2], "768");
    assert_eq!(gens[0][3], "3.0");
    assert_eq!(gens[3][0], "11");
    assert_eq!(gens[3][2], "256");
    assert!(lines[6].contains("tier 0"));
}

#[test]
fn json_has_the_agreed_fields() {
    let (mut e, _) = run(false);
    e.add_source(Box::new(
        ScriptedSource::from_sets("page_idle", PAGES, []).unavailable("needs root"),
    ));
    let v = serde_json::to_value(e.report()).unwrap();
    let g = &v["generations"][3];
    assert_eq!(g["seq"], 11);
    assert_eq!(g["pages"], 256);
    assert!(g["age_ms"].is_u64());
    let s = &v["sources"][0];
    assert_eq!(s["name"], "page_idle");
    assert_eq!(s["available"], false);
    assert_eq!(s["reason"], "needs root");
    assert!(s["precision"].is_null() && s["recall"].is_null());
    assert!(s["harvest_ns"].is_u64());
    assert_eq!(v["aging"]["passes"], 10);
    assert!(v["aging"]["ns_per_gib"].is_u64());
    let _: &EngineReport = &e.report();
}

#[test]
fn histogram_splits_hot_and_cold() {
    let (e, t0) = run(false);
    let h = agelab_mglru::engine::WorkingSetHistogram::from_generations(
        e.generations(),
        t0 + Duration::from_millis(1000),
        &[100, 500, 1000],
    );
    // Hot pages joined generation 11 at 1000 ms (age 0); cold ones joined at 100 ms (age 900).
    assert_eq!(h.pages, vec![256, 0, 768, 0]);
    assert_eq!(h.reclaimed, 0);
    assert_eq!(h.pages_idle_at_least(500), 768);
    assert_eq!(h.label(0), "< 100 ms");
    assert_eq!(h.label(3), ">= 1 s");
    assert!(h.to_text().contains("reclaimed"));
}

#[test]
fn heatmap_svg_has_a_column_per_pass() {
    let (mut e, _) = run(true);
    e.mark_reclaimed(1008..PAGES).unwrap();
    let hm = e.heatmap().unwrap();
    assert_eq!(hm.rows(), 64);
    assert_eq!(hm.pages_per_row(), 16);
    assert_eq!(hm.columns().len(), 10);
    let last = &hm.columns()[9];
    assert!(last[0] < last[63], "hot rows younger than cold rows");
    let svg = hm.to_svg("guest <test>");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("guest &lt;test&gt;"));
    assert!(svg.matches("<rect").count() >= 10);
}

#[test]
fn pass_summary_names_sources() {
    let t0 = Instant::now();
    let mut e = Engine::new_at(map(), EngineConfig::default(), t0).unwrap();
    e.add_source(Box::new(ScriptedSource::from_sets(
        "dirty-log",
        PAGES,
        [range(0, 10)],
    )));
    let truth = range(0, 20);
    let p = e.run_pass_at(Some(&truth), Some(t0)).unwrap();
    let line = pass_summary(&p);
    assert!(
        line.contains("dirty-log 10 pages P 1.000 R 0.500"),
        "{line}"
    );
}

#[test]
fn oracle_from_closure_and_channel() {
    let mut n = 0;
    let mut o = OracleSource::from_fn(PAGES, move || {
        n += 1;
        (n == 1).then(|| range(0, 3))
    });
    assert_eq!(o.observes(), agelab_mglru::Observes::Both);
    assert_eq!(o.harvest().unwrap().accessed.count(), 3);
    assert_eq!(o.harvest().unwrap().accessed.count(), 0);

    let (tx, rx) = mpsc::channel();
    let mut o = OracleSource::from_channel(PAGES, rx).named("replay");
    assert_eq!(o.name(), "replay");
    tx.send(range(0, 2)).unwrap();
    tx.send(range(10, 12)).unwrap();
    assert_eq!(o.harvest().unwrap().accessed.count(), 4);
    assert_eq!(o.harvest().unwrap().accessed.count(), 0);
    tx.send(PageSet::new(7)).unwrap();
    assert!(o.harvest().is_err());
    drop(tx);
    assert!(o.harvest().is_err());
    assert!(o.available().is_err());
}

/// Writes a sample heatmap when `AGELAB_HEATMAP_OUT` names a file (for eyeballing the SVG).
#[test]
fn sample_heatmap_file() {
    let Ok(path) = std::env::var("AGELAB_HEATMAP_OUT") else {
        return;
    };
    let (e, _) = run(true);
    std::fs::write(
        path,
        e.heatmap().unwrap().to_svg("sample: pages 0..256 hot"),
    )
    .unwrap();
}
