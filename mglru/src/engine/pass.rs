//! `AgingPass`: what one aging pass saw and did.

use std::time::Instant;

use agelab_vmm::Confusion;

use super::generations::Promotion;
use super::sources::SourcePass;

/// The outcome of one aging pass.
#[derive(Clone, Debug, PartialEq)]
pub struct AgingPass {
    /// Pass number, from 1.
    pub pass: u64,
    /// When the pass aged the pages (after harvesting).
    pub at: Instant,
    /// The generation this pass opened, if it opened one.
    pub opened: Option<u32>,
    /// How many times `min_seq` advanced (merges and emptied generations).
    pub min_seq_advanced: u32,
    /// Oldest generation after the pass.
    pub min_seq: u32,
    /// Youngest generation after the pass.
    pub max_seq: u32,
    /// Pages accessed according to the union of the sources.
    pub accessed: u64,
    /// Promotions and refaults.
    pub promotion: Promotion,
    /// Engine bookkeeping (union of the harvests, generation and tier updates), ns. Excludes the
    /// sources' own time and the validation against the truth.
    pub bookkeeping_ns: u64,
    /// Time spent comparing with the truth, ns.
    pub validation_ns: u64,
    /// Time spent updating the heatmap, ns.
    pub heatmap_ns: u64,
    /// Per source.
    pub sources: Vec<SourcePass>,
    /// The union of the sources against the truth, when given.
    pub union_confusion: Option<Confusion>,
}
