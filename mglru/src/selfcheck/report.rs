//! Self-check results: per source and kind, precision and recall, and the accuracy gate.

use super::Kind;
use crate::source::{blindness, AccessKinds, Harvest, Observes, SourceView};
use crate::sources::SourceKind;
use agelab_vmm::{PageSet, PAGE_SIZE};
use serde::Serialize;
use std::fmt::Write as _;

/// One source measured on one kind of access.
#[derive(Clone, Debug, Serialize)]
pub struct KindResult {
    /// The kind.
    pub kind: Kind,
    /// Pages the source should report (what it can see of the accessed sets).
    pub expected: u64,
    /// Pages it reported.
    pub reported: u64,
    /// Reported pages that were expected / reported (1.0 when nothing was reported).
    pub precision: Option<f64>,
    /// Expected pages that were reported / expected (`None` when nothing was expected).
    pub recall: Option<f64>,
    /// Recall on the read set (sources that see reads only).
    pub read_recall: Option<f64>,
    /// Recall on the write set (sources that see writes only).
    pub write_recall: Option<f64>,
    /// Untouched pages reported accessed.
    pub untouched_reported: u64,
    /// Reported pages the source should not have reported (accessed in a way it cannot see, or
    /// not at all).
    pub false_positives: u64,
    /// Page faults KVM fixed for the guest during the measurement (`pf_fixed`), where exposed.
    pub kvm_faults: Option<u64>,
    /// Why the false positives happened, where the measurement shows it.
    pub cause: Option<String>,
    /// Guest rounds over the sets before the harvest.
    pub rounds: u64,
    /// Harvest wall time in ns.
    pub harvest_ns: u64,
    /// Harvest cost scaled to one GiB of guest memory, in ms.
    pub ms_per_gib: f64,
    /// Bytes the source's granularity spans (region size for DAMON).
    pub granularity: u64,
    /// Why the measurement failed, if it did.
    pub error: Option<String>,
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn recall_on(h: &PageSet, truth: &PageSet) -> Option<f64> {
    let c = h.confusion(truth);
    ratio(c.true_pos, c.true_pos + c.false_neg)
}

impl KindResult {
    /// Judges harvest `h` of a source observing `observes` against the known sets.
    #[allow(clippy::too_many_arguments)]
    pub fn judge(
        kind: Kind,
        observes: Observes,
        h: &Harvest,
        read: &PageSet,
        write: &PageSet,
        mem_bytes: u64,
        rounds: u64,
        granularity: u64,
    ) -> Self {
        let (sees_reads, sees_writes) = (observes.sees_reads(), observes.sees_writes());
        let mut expected = PageSet::new(read.capacity());
        if sees_reads {
            expected.union_with(read);
        }
        if sees_writes {
            expected.union_with(write);
        }
        let c = h.accessed.confusion(&expected);
        let mut untouched = h.accessed.clone();
        untouched.subtract(read);
        untouched.subtract(write);
        let gib = (mem_bytes.max(PAGE_SIZE)) as f64 / f64::from(1u32 << 30);
        KindResult {
            kind,
            expected: expected.count(),
            reported: h.accessed.count(),
            precision: Some(ratio(c.true_pos, c.true_pos + c.false_pos).unwrap_or(1.0)),
            recall: ratio(c.true_pos, c.true_pos + c.false_neg),
            read_recall: if sees_reads {
                recall_on(&h.accessed, read)
            } else {
                None
            },
            write_recall: if sees_writes {
                recall_on(&h.accessed, write)
            } else {
                None
            },
            untouched_reported: untouched.count(),
            false_positives: c.false_pos,
            kvm_faults: None,
            cause: None,
            rounds,
            harvest_ns: h.cost.ns,
            ms_per_gib: h.cost.ns as f64 / 1e6 / gib,
            granularity,
            error: None,
        }
    }

    /// Adds the KVM faults taken during the measurement and, for a source reading KVM's dirty
    /// tracking, names the cause of false positives that KVM's re-faults explain: a page KVM
    /// re-faults after its mapping was invalidated is mapped writable on a read where the host and
    /// guest page tables allow it, and KVM logs it dirty.
    pub fn with_kvm_faults(mut self, kind: SourceKind, faults: Option<u64>) -> Self {
        self.kvm_faults = faults;
        if let Some(f) = faults.filter(|&f| f > 0) {
            if kind.logs_kvm_writes() && self.false_positives > 0 {
                self.cause = Some(format!(
                    "{} pages logged written that the guest did not write: KVM re-faulted {f} \
                     pages (pf_fixed) after its mappings were invalidated, and maps a re-faulted \
                     read writable, logging it dirty",
                    self.false_positives
                ));
            }
        }
        self
    }

    /// A measurement that could not be made.
    pub fn failed(kind: Kind, error: String) -> Self {
        KindResult {
            kind,
            expected: 0,
            reported: 0,
            precision: None,
            recall: None,
            read_recall: None,
            write_recall: None,
            untouched_reported: 0,
            false_positives: 0,
            kvm_faults: None,
            cause: None,
            rounds: 0,
            harvest_ns: 0,
            ms_per_gib: 0.0,
            granularity: 0,
            error: Some(error),
        }
    }
}

/// One source over every kind.
#[derive(Clone, Debug, Serialize)]
pub struct SourceResult {
    /// The name it was asked for by.
    pub source: String,
    /// What it observes (`reads`, `writes`, `both`, `presence`).
    pub observes: Observes,
    /// Whether it could run here.
    pub available: bool,
    /// Why not, or why it is not judged.
    pub reason: String,
    /// Per kind.
    pub kinds: Vec<KindResult>,
}

impl SourceResult {
    /// A source about to be measured.
    pub fn new(name: &str, observes: Observes) -> Self {
        SourceResult {
            source: name.into(),
            observes,
            available: true,
            reason: String::new(),
            kinds: Vec::new(),
        }
    }

    /// A source that cannot run here.
    pub fn unavailable(name: &str, observes: Observes, reason: &str) -> Self {
        SourceResult {
            available: false,
            reason: reason.into(),
            ..Self::new(name, observes)
        }
    }

    /// A source that runs but is not an access source (residency).
    pub fn not_judged(name: &str, observes: Observes, reason: &str) -> Self {
        SourceResult {
            reason: reason.into(),
            ..Self::new(name, observes)
        }
    }

    /// The lowest recall over the kinds, with the kind and which set it was measured on.
    pub fn worst_recall(&self) -> Option<(f64, Kind, &'static str)> {
        let mut worst: Option<(f64, Kind, &'static str)> = None;
        for k in &self.kinds {
            for (v, set) in [(k.read_recall, "read set"), (k.write_recall, "write set")] {
                if let Some(v) = v {
                    if worst.is_none_or(|w| v < w.0) {
                        worst = Some((v, k.kind, set));
                    }
                }
            }
        }
        worst
    }
}

/// Why a run fails `--require-accurate`.
#[derive(Debug, thiserror::Error)]
pub enum AccuracyError {
    /// A source the user asked for by name cannot work on this host.
    #[error("--require-accurate: source {source_name} is unavailable: {reason}")]
    Unavailable {
        /// Source name.
        source_name: String,
        /// Why it cannot work here.
        reason: String,
    },
    /// No available source can see a kind of access the workload makes.
    #[error("--require-accurate: {0}")]
    Blind(String),
    /// Recall below the threshold.
    #[error("--require-accurate: source {source_name} has recall {recall:.1}% on the {set} ({kind} workload), below the required {required:.1}%")]
    RecallTooLow {
        /// Source name.
        source_name: String,
        /// Its recall, in percent.
        recall: f64,
        /// Required recall, in percent.
        required: f64,
        /// Which set.
        set: &'static str,
        /// Which workload kind.
        kind: &'static str,
    },
    /// A measurement failed outright.
    #[error(
        "--require-accurate: source {source_name} could not be measured ({kind} workload): {error}"
    )]
    Failed {
        /// Source name.
        source_name: String,
        /// Which workload kind.
        kind: &'static str,
        /// What failed.
        error: String,
    },
}

/// The whole self-check.
#[derive(Clone, Debug, Serialize)]
pub struct SelfcheckReport {
    /// Test memory of the self-check VM.
    pub mem_bytes: u64,
    /// Its backing.
    pub backing: String,
    /// Pages.
    pub pages: u64,
    /// Pages in the read set.
    pub read_set: u64,
    /// Pages in the write set.
    pub write_set: u64,
    /// Time to fault every page in, in ms.
    pub fault_in_ms: f64,
    /// Whole self-check, in ms.
    pub total_ms: f64,
    /// Per source.
    pub sources: Vec<SourceResult>,
    /// Where a source's figures change with the run's other sources armed beside it (`None`
    /// where fewer than two sources could be judged, so none was measured together).
    pub interference: Option<Vec<Interference>>,
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

/// What `--require-accurate` checks beyond recall.
#[derive(Clone, Copy, Debug)]
pub struct AccuracyGate<'a> {
    /// Sources the user named (not those `auto` expanded to): each must be available.
    pub requested: &'a [SourceKind],
    /// The kinds of access the run's workload makes: some available source must see each.
    pub workload: AccessKinds,
    /// Sources of the run the self-check does not measure (the oracle), as available.
    pub unmeasured: &'a [SourceView<'a>],
}

impl SelfcheckReport {
    /// The sources as [`blindness`] sees them.
    pub fn source_views(&self) -> impl Iterator<Item = SourceView<'_>> {
        self.sources.iter().map(|s| SourceView {
            name: &s.source,
            observes: s.observes,
            unavailable: (!s.available).then_some(s.reason.as_str()),
        })
    }

    /// The `--require-accurate` gate: every requested source is available, some available source
    /// observes each kind of access the workload makes, and every available source's recall is at
    /// least `min` ([`Self::require_recall`]).
    pub fn require_accurate(&self, min: f64, gate: &AccuracyGate<'_>) -> Result<(), AccuracyError> {
        for s in self.sources.iter().filter(|s| !s.available) {
            if gate.requested.iter().any(|k| k.name() == s.source) {
                return Err(AccuracyError::Unavailable {
                    source_name: s.source.clone(),
                    reason: s.reason.clone(),
                });
            }
        }
        let views = self.source_views().chain(gate.unmeasured.iter().copied());
        if let Some(why) = blindness(gate.workload, views) {
            return Err(AccuracyError::Blind(why));
        }
        self.require_recall(min)
    }

    /// Fails on the first available source whose recall on a set it can see is below `min`.
    pub fn require_recall(&self, min: f64) -> Result<(), AccuracyError> {
        for s in self.sources.iter().filter(|s| s.available) {
            if let Some(k) = s.kinds.iter().find(|k| k.error.is_some()) {
                return Err(AccuracyError::Failed {
                    source_name: s.source.clone(),
                    kind: k.kind.as_str(),
                    error: k.error.clone().unwrap_or_default(),
                });
            }
            if let Some((recall, kind, set)) = s.worst_recall() {
                if recall < min {
                    return Err(AccuracyError::RecallTooLow {
                        source_name: s.source.clone(),
                        recall: recall * 100.0,
                        required: min * 100.0,
                        set,
                        kind: kind.as_str(),
                    });
                }
            }
        }
        Ok(())
    }

    /// What the self-check found other sources do to `source` in a run, one clause per kind
    /// (empty where nothing or nothing measured).
    pub fn disturbance_of(&self, source: &str) -> String {
        self.interference
            .iter()
            .flatten()
            .filter(|r| r.source == source)
            .map(|r| r.short())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The table: one row per source and kind.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "self-check: {} MiB {}, read set {} pages, write set {} pages, {} untouched; fault-in {:.0} ms, total {:.0} ms",
            self.mem_bytes >> 20,
            self.backing,
            self.read_set,
            self.write_set,
            self.pages - self.read_set - self.write_set,
            self.fault_in_ms,
            self.total_ms
        );
        let _ = writeln!(
            s,
            "{:<14} {:<6} {:>8} {:>8} {:>9} {:>7} {:>9} {:>9} {:>9} {:>10} {:>10}  note",
            "source",
            "kind",
            "expected",
            "reported",
            "precision",
            "recall",
            "read_rec",
            "write_rec",
            "untouched",
            "ms/GiB",
            "kvm_faults"
        );
        for src in &self.sources {
            if src.kinds.is_empty() {
                let what = if src.available {
                    "not judged"
                } else {
                    "unavailable"
                };
                let _ = writeln!(s, "{:<14} {:<6} {what}: {}", src.source, "-", src.reason);
                continue;
            }
            for k in &src.kinds {
                if let Some(e) = &k.error {
                    let _ = writeln!(s, "{:<14} {:<6} failed: {e}", src.source, k.kind.as_str());
                    continue;
                }
                let mut note = String::new();
                if k.granularity > PAGE_SIZE {
                    let _ = write!(
                        note,
                        "regions ~{} KiB, {} rounds",
                        k.granularity >> 10,
                        k.rounds
                    );
                }
                if src.source == SourceKind::PageIdle.name() && k.recall.is_some_and(|r| r < 0.99) {
                    note.push_str("lossy: accesses through KVM lost");
                }
                if let Some(c) = &k.cause {
                    note.push_str(c);
                }
                let faults = k.kvm_faults.map_or("-".into(), |f| f.to_string());
                let _ = writeln!(
                    s,
                    "{:<14} {:<6} {:>8} {:>8} {:>9} {:>7} {:>9} {:>9} {:>9} {:>10.2} {faults:>10}  {note}",
                    src.source,
                    k.kind.as_str(),
                    k.expected,
                    k.reported,
                    pct(k.precision),
                    pct(k.recall),
                    pct(k.read_recall),
                    pct(k.write_recall),
                    k.untouched_reported,
                    k.ms_per_gib,
                );
            }
        }
        match &self.interference {
            None => {}
            Some(rows) if rows.is_empty() => {
                let _ = writeln!(
                    s,
                    "together: every source sees what it sees alone with the others armed beside it"
                );
            }
            Some(rows) => {
                let _ = writeln!(
                    s,
                    "together: {} figures change with the others armed beside it (alone -> together):",
                    rows.len()
                );
                for r in rows {
                    let _ = writeln!(s, "  {r}");
                }
            }
        }
        s
    }
}

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
    pub(super) fn of(k: &KindResult) -> Self {
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
    pub(super) fn differs(&self, other: &Figures, kind: SourceKind, expected: u64) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::HarvestCost;

    fn set(pages: u64, r: std::ops::Range<u64>) -> PageSet {
        let mut s = PageSet::new(pages);
        s.insert_range(r.start, r.end - r.start);
        s
    }

    #[test]
    fn judging_splits_recall_by_set_and_counts_untouched() {
        let (read, write) = (set(16, 0..4), set(16, 4..8));
        let mut got = set(16, 0..2);
        got.insert_range(4, 4);
        got.insert(12);
        let h = Harvest {
            accessed: got,
            observed: None,
            cost: HarvestCost::default(),
        };
        let k = KindResult::judge(
            Kind::Mixed,
            Observes::Both,
            &h,
            &read,
            &write,
            1 << 30,
            1,
            4096,
        );
        assert_eq!((k.expected, k.reported, k.untouched_reported), (8, 7, 1));
        assert_eq!(k.read_recall, Some(0.5));
        assert_eq!(k.write_recall, Some(1.0));
        assert_eq!(k.precision, Some(6.0 / 7.0));
        let w = KindResult::judge(
            Kind::Mixed,
            Observes::Writes,
            &h,
            &read,
            &write,
            1 << 30,
            1,
            4096,
        );
        assert_eq!(w.read_recall, None);
        assert_eq!(w.recall, Some(1.0));
        assert_eq!(w.precision, Some(4.0 / 7.0));
        let r = SelfcheckReport {
            mem_bytes: 1 << 20,
            backing: "anon".into(),
            pages: 16,
            read_set: 4,
            write_set: 4,
            fault_in_ms: 0.0,
            total_ms: 0.0,
            sources: vec![SourceResult {
                kinds: vec![k],
                ..SourceResult::new("page_idle", Observes::Both)
            }],
            interference: None,
        };
        let e = r.require_recall(0.99).unwrap_err().to_string();
        assert!(
            e.contains("page_idle has recall 50.0% on the read set"),
            "{e}"
        );
        r.require_recall(0.5).unwrap();
        assert!(r.table().contains("lossy"));
        let reads = AccessKinds {
            reads: true,
            writes: false,
        };
        let requested = [SourceKind::PageIdle];
        let gate = AccuracyGate {
            requested: &requested,
            workload: reads,
            unmeasured: &[],
        };
        r.require_accurate(0.5, &gate).unwrap();
        let mut gone = r.clone();
        gone.sources[0] = SourceResult::unavailable("page_idle", Observes::Both, "no bitmap");
        let e = gone.require_accurate(0.5, &gate).unwrap_err().to_string();
        assert_eq!(
            e,
            "--require-accurate: source page_idle is unavailable: no bitmap"
        );
        // Not asked for by name (auto): not a failure by itself, but nothing sees the reads.
        let auto = AccuracyGate {
            requested: &[],
            ..gate
        };
        let e = gone.require_accurate(0.5, &auto).unwrap_err().to_string();
        assert!(e.contains("no available source observes reads"), "{e}");
        let oracle = [SourceView {
            name: "oracle",
            observes: Observes::Both,
            unavailable: None,
        }];
        let with_oracle = AccuracyGate {
            unmeasured: &oracle,
            ..auto
        };
        gone.require_accurate(0.5, &with_oracle).unwrap();
    }
}
