//! Sources measured together: does a source see the same when the run's other sources are armed
//! beside it?
//!
//! Several sources change what others see: a source that zaps and re-maps pages (uffd-minor's
//! `MADV_DONTNEED` and `UFFDIO_CONTINUE`, which installs a writable, dirty PTE even for a read, so
//! that KVM maps the page writable and logs it dirty, and pagemap reports it soft-dirty), one
//! that clears young bits others read (page_idle marking, DAMON's mkold), one that invalidates
//! every KVM mapping of the process (soft-dirty's `clear_refs`). A run arms all of them at once,
//! so its per-source table could measure the sources' effect on each other. Here every source's
//! figures alone are compared with its figures with all the run's sources armed; where they
//! differ, each other source is paired with it alone to name which one disturbs it.

use super::report::{KindResult, SourceResult};
use super::{measure, not_judged, CheckGuest, Kind, SelfcheckError, SelfcheckOptions};
use crate::sources::catalog::SourceKind;
use serde::Serialize;

/// A source's figures on one kind of access, alone or with others.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figures {
    /// Pages reported.
    pub reported: u64,
    /// Reported pages it should not have reported.
    pub false_positives: u64,
    /// Expected pages it missed.
    pub false_negatives: u64,
    /// Precision.
    pub precision: Option<f64>,
    /// Recall.
    pub recall: Option<f64>,
}

impl Figures {
    fn of(k: &KindResult) -> Self {
        let true_pos = k.reported - k.false_positives;
        Figures {
            reported: k.reported,
            false_positives: k.false_positives,
            false_negatives: k.expected.saturating_sub(true_pos),
            precision: k.precision,
            recall: k.recall,
        }
    }

    /// Whether `other` differs from these figures beyond what the source's own noise explains:
    /// any page for a source that reads exact state once per pass; more than a tenth of the
    /// expected pages (or of the reported ones) for a sampling source (DAMON), whose regions
    /// and sampling times vary from one measurement to the next.
    fn differs(&self, other: &Figures, kind: SourceKind, expected: u64) -> bool {
        let slack = if kind.samples_over_time() {
            (expected.max(self.reported) / 10).max(1)
        } else {
            0
        };
        self.false_positives.abs_diff(other.false_positives) > slack
            || self.false_negatives.abs_diff(other.false_negatives) > slack
    }
}

/// One source and kind whose figures change when the run's sources are armed together.
#[derive(Clone, Debug, Serialize)]
pub struct Interference {
    /// The source whose figures change.
    pub source: String,
    /// The kind of access.
    pub kind: Kind,
    /// Measured alone.
    pub alone: Figures,
    /// Measured with every source of the run armed.
    pub together: Figures,
    /// The sources that, paired with it alone, change its figures the same way.
    pub disturbed_by: Vec<String>,
    /// The mechanism the measurement shows, where it shows one (e.g. KVM's re-faults).
    pub cause: Option<String>,
}

/// Per source, its results on every kind, measured with all of `kinds` armed together.
type Together = Vec<(SourceKind, Vec<KindResult>)>;

/// Measures `kinds` together on a fresh self-check guest, every kind of access of `opts`.
fn measure_together(
    opts: &SelfcheckOptions,
    kinds: &[SourceKind],
) -> Result<Together, SelfcheckError> {
    let mut guest = CheckGuest::start(opts, kinds)?;
    let mut built = Vec::new();
    for &k in kinds {
        let s = guest.source(k);
        if not_judged(k, s.as_deref()).is_none() {
            built.push((k, s.expect("judged sources exist")));
        }
    }
    let mut out: Together = built.iter().map(|(k, _)| (*k, Vec::new())).collect();
    for &kind in &opts.kinds {
        let mut armed: Vec<(SourceKind, &mut dyn crate::source::AccessSource)> = built
            .iter_mut()
            .map(|(k, s)| (*k, s.as_mut() as &mut dyn crate::source::AccessSource))
            .collect();
        let results = measure(&mut guest.g, &mut armed, kind, guest.pages, opts)?;
        for (slot, r) in out.iter_mut().zip(results) {
            slot.1.push(r);
        }
    }
    Ok(out)
}

fn result_of(t: &Together, source: SourceKind, kind: Kind) -> Option<&KindResult> {
    t.iter()
        .find(|(k, _)| *k == source)
        .and_then(|(_, rs)| rs.iter().find(|r| r.kind == kind && r.error.is_none()))
}

/// Measures the run's judged sources together and, where a source's figures differ from
/// `alone`, pairs it with each other source to name the ones that disturb it.
pub fn find(
    opts: &SelfcheckOptions,
    judged: &[SourceKind],
    alone: &[SourceResult],
) -> Result<Vec<Interference>, SelfcheckError> {
    let together = measure_together(opts, judged)?;
    let mut rows = Vec::new();
    for &source in judged {
        let Some(a) = alone.iter().find(|r| r.source == source.name()) else {
            continue;
        };
        for ak in a.kinds.iter().filter(|k| k.error.is_none()) {
            let Some(tk) = result_of(&together, source, ak.kind) else {
                continue;
            };
            let (fa, ft) = (Figures::of(ak), Figures::of(tk));
            if fa.differs(&ft, source, ak.expected) {
                rows.push((
                    source,
                    ak.expected,
                    Interference {
                        source: source.name().into(),
                        kind: ak.kind,
                        alone: fa,
                        together: ft,
                        disturbed_by: Vec::new(),
                        cause: tk.cause.clone(),
                    },
                ));
            }
        }
    }
    let mut victims: Vec<SourceKind> = rows.iter().map(|r| r.0).collect();
    victims.dedup();
    // Each pair is measured once (it serves both of its sources), in the run's order, so it is
    // armed and harvested as the run would; a pair that is the whole set is the set.
    let mut pairs: Vec<(Vec<SourceKind>, Together)> = Vec::new();
    for victim in victims {
        for &other in judged.iter().filter(|&&k| k != victim) {
            let pair: Vec<SourceKind> = judged
                .iter()
                .copied()
                .filter(|&k| k == victim || k == other)
                .collect();
            let i = match pairs.iter().position(|(p, _)| *p == pair) {
                Some(i) => i,
                None => {
                    let measured = if pair.len() == judged.len() {
                        together.clone()
                    } else {
                        measure_together(opts, &pair)?
                    };
                    pairs.push((pair, measured));
                    pairs.len() - 1
                }
            };
            let paired = &pairs[i].1;
            for (_, expected, row) in rows.iter_mut().filter(|r| r.0 == victim) {
                if let Some(pk) = result_of(paired, victim, row.kind) {
                    if row.alone.differs(&Figures::of(pk), victim, *expected) {
                        row.disturbed_by.push(other.name().into());
                    }
                }
            }
        }
    }
    Ok(rows.into_iter().map(|r| r.2).collect())
}

impl Interference {
    /// One short line for a run's source table: who disturbs it and how much on this kind.
    pub fn short(&self) -> String {
        let who = if self.disturbed_by.is_empty() {
            "the others together".to_string()
        } else {
            self.disturbed_by.join("+")
        };
        format!(
            "{} on {}: false positives {} -> {}, missed {} -> {}",
            who,
            self.kind.as_str(),
            self.alone.false_positives,
            self.together.false_positives,
            self.alone.false_negatives,
            self.together.false_negatives
        )
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

impl std::fmt::Display for Interference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: precision {} -> {}, recall {} -> {} (false positives {} -> {}, missed {} -> {}); ",
            self.source,
            self.kind.as_str(),
            pct(self.alone.precision),
            pct(self.together.precision),
            pct(self.alone.recall),
            pct(self.together.recall),
            self.alone.false_positives,
            self.together.false_positives,
            self.alone.false_negatives,
            self.together.false_negatives,
        )?;
        if self.disturbed_by.is_empty() {
            write!(f, "no single other source does it alone")?;
        } else {
            write!(f, "disturbed by {}", self.disturbed_by.join(", "))?;
        }
        if let Some(c) = &self.cause {
            write!(f, "; {c}")?;
        }
        Ok(())
    }
}
