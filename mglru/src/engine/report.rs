//! Reports: a text table in the spirit of `/sys/kernel/debug/lru_gen` and JSON-ready structs.
//!
//! The kernel prints one line per generation, `<seq> <age_ms> <anon_pages> <file_pages>`; guest
//! memory has one type, so the table has one page column plus MiB, and per-tier lines like
//! `lru_gen_full`.

use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use super::pass::AgingPass;
use super::Engine;

/// One generation in JSON: `{"seq": N, "age_ms": N, "pages": N}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GenerationJson {
    /// Sequence number.
    pub seq: u32,
    /// Age in ms.
    pub age_ms: u64,
    /// Pages in it.
    pub pages: u64,
}

/// One source in JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceJson {
    /// Source name.
    pub name: String,
    /// Usable on this host.
    pub available: bool,
    /// Why not, empty when available.
    pub reason: String,
    /// Precision over the judged passes; `null` when no truth was given.
    pub precision: Option<f64>,
    /// Recall over the judged passes; `null` when no truth was given.
    pub recall: Option<f64>,
    /// Reported pages the truth says were not accessed in a way it sees, over the judged passes.
    pub false_positives: u64,
    /// Mean wall time of one harvest, ns.
    pub harvest_ns: u64,
    /// Failed harvests.
    pub errors: u64,
}

/// The aging's cost in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgingJson {
    /// Passes run.
    pub passes: u64,
    /// Mean bookkeeping per pass per GiB of guest memory, ns.
    pub ns_per_gib: u64,
}

/// One tier in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TierJson {
    /// Tier index.
    pub tier: usize,
    /// Protected from eviction right now.
    pub protected: bool,
    /// Pages evicted from it over the run.
    pub evicted: u64,
    /// Pages eviction skipped because it was protected, over the run.
    pub skipped: u64,
    /// Refaults of pages evicted from it, over the run.
    pub refaulted: u64,
}

/// One source in one pass, in JSON: what it reported and how it compares with the pass's
/// ground truth (`null` when unavailable, failed or not judged).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PassSourceJson {
    /// Source name.
    pub name: String,
    /// Pages it reported accessed.
    pub accessed: u64,
    /// Precision against the truth it can observe.
    pub precision: Option<f64>,
    /// Recall against the truth it can observe.
    pub recall: Option<f64>,
}

/// One aging pass in JSON: when, the generations after it, and each source's judgement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PassJson {
    /// Pass number, from 1.
    pub pass: u64,
    /// When it aged, ms since the engine started.
    pub t_ms: f64,
    /// Pages the sources' union saw accessed.
    pub accessed: u64,
    /// Generations after the pass, oldest first.
    pub generations: Vec<GenerationJson>,
    /// Per source, in the order added.
    pub sources: Vec<PassSourceJson>,
}

impl PassJson {
    /// `pass` as JSON, with `engine`'s generations right after it.
    pub fn of(pass: &AgingPass, engine: &Engine) -> Self {
        let gens = engine.generations();
        PassJson {
            pass: pass.pass,
            t_ms: pass
                .at
                .saturating_duration_since(gens.epoch())
                .as_secs_f64()
                * 1e3,
            accessed: pass.accessed,
            generations: gens
                .generations()
                .map(|g| GenerationJson {
                    seq: g.seq,
                    age_ms: millis(pass.at.saturating_duration_since(g.born)),
                    pages: g.pages,
                })
                .collect(),
            sources: pass
                .sources
                .iter()
                .map(|s| {
                    let judged = s.confusion.filter(|_| s.harvested && s.error.is_none());
                    PassSourceJson {
                        name: s.name.clone(),
                        accessed: s.accessed,
                        precision: judged.map(|c| c.precision()),
                        recall: judged.map(|c| c.recall()),
                    }
                })
                .collect(),
        }
    }
}

/// The engine's state in JSON-ready form.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EngineReport {
    /// Generations, oldest first.
    pub generations: Vec<GenerationJson>,
    /// Sources, in the order added.
    pub sources: Vec<SourceJson>,
    /// Aging cost.
    pub aging: AgingJson,
    /// Tiers.
    pub tiers: Vec<TierJson>,
    /// Pages marked reclaimed and not back.
    pub reclaimed: u64,
}

impl EngineReport {
    /// Snapshot of `engine` at `now`.
    pub fn from_engine(engine: &Engine, now: Instant) -> Self {
        let gens = engine.generations();
        let first_protected = engine.tiers().first_protected();
        EngineReport {
            generations: gens
                .generations()
                .map(|g| GenerationJson {
                    seq: g.seq,
                    age_ms: millis(now.saturating_duration_since(g.born)),
                    pages: g.pages,
                })
                .collect(),
            sources: engine
                .sources()
                .map(|s| SourceJson {
                    name: s.name.clone(),
                    available: s.available,
                    reason: s.reason.clone().unwrap_or_default(),
                    precision: s.precision(),
                    recall: s.recall(),
                    false_positives: s.confusion.false_pos,
                    harvest_ns: s.mean_harvest_ns(),
                    errors: s.errors,
                })
                .collect(),
            aging: AgingJson {
                passes: engine.passes(),
                ns_per_gib: engine.ns_per_gib(),
            },
            tiers: engine
                .tiers()
                .lifetime()
                .iter()
                .enumerate()
                .map(|(tier, c)| TierJson {
                    tier,
                    protected: tier >= first_protected,
                    evicted: c.evicted,
                    skipped: c.protected,
                    refaulted: c.refaulted,
                })
                .collect(),
            reclaimed: gens.reclaimed(),
        }
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The per-pass table: a header line, one line per generation, one per tier.
pub fn generations_table(engine: &Engine, now: Instant) -> String {
    let gens = engine.generations();
    let first_protected = engine.tiers().first_protected();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "pass {}  min_seq {}  max_seq {}  pages {}  resident {}  reclaimed {}",
        engine.passes(),
        gens.min_seq(),
        gens.max_seq(),
        gens.len(),
        gens.resident(),
        gens.reclaimed()
    );
    let _ = writeln!(
        s,
        "{:>10} {:>12} {:>12} {:>10}",
        "seq", "age_ms", "pages", "MiB"
    );
    for g in gens.generations() {
        let _ = writeln!(
            s,
            "{:>10} {:>12} {:>12} {:>10.1}",
            g.seq,
            millis(now.saturating_duration_since(g.born)),
            g.pages,
            g.pages as f64 * 4096.0 / (1 << 20) as f64
        );
    }
    let life = engine.tiers().lifetime();
    for (t, life) in life.iter().enumerate() {
        let pos = engine.tiers().ctrl_pos(t);
        let _ = writeln!(
            s,
            "{:>10} tier {t}: evicted {} skipped {} refaulted {}  ctrl {}/{}{}",
            "",
            life.evicted,
            life.protected,
            life.refaulted,
            pos.refaulted,
            pos.total,
            if t >= first_protected {
                "  protected"
            } else {
                ""
            }
        );
    }
    s
}

/// One line per pass: what opened, what moved, what it cost, and per-source precision/recall.
pub fn pass_summary(pass: &AgingPass) -> String {
    let mut s = format!(
        "pass {:>5}  gens {}..={}{}  accessed {:>9}  promoted {:>9}  refaults {:>6}  bookkeeping {:>8.1} us",
        pass.pass,
        pass.min_seq,
        pass.max_seq,
        if pass.opened.is_some() { " (new)" } else { "      " },
        pass.accessed,
        pass.promotion.promoted,
        pass.promotion.refaulted,
        pass.bookkeeping_ns as f64 / 1e3
    );
    if let Some(c) = pass.union_confusion {
        let _ = write!(s, "  union P {:.3} R {:.3}", c.precision(), c.recall());
    }
    for src in &pass.sources {
        let _ = write!(s, "  | {}", src.name);
        match (&src.error, src.harvested, src.confusion) {
            (Some(e), _, _) => {
                let _ = write!(s, " error: {e}");
            }
            (None, false, _) => s.push_str(" unavailable"),
            (None, true, Some(c)) => {
                let _ = write!(
                    s,
                    " {} pages P {:.3} R {:.3} {:.1} us",
                    src.accessed,
                    c.precision(),
                    c.recall(),
                    src.wall_ns as f64 / 1e3
                );
            }
            (None, true, None) => {
                let _ = write!(
                    s,
                    " {} pages {:.1} us",
                    src.accessed,
                    src.wall_ns as f64 / 1e3
                );
            }
        }
    }
    s
}
