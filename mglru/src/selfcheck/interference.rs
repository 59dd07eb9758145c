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

use super::report::{Figures, Interference, KindResult, SourceResult};
use super::{measure, not_judged, CheckGuest, Kind, SelfcheckError, SelfcheckOptions};
use crate::sources::catalog::SourceKind;

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
