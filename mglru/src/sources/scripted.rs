//! `ScriptedSource`: replays a fixed list of harvests, for tests.

use std::collections::VecDeque;

use agelab_vmm::PageSet;

use crate::source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};

/// One scripted harvest.
#[derive(Clone, Debug)]
pub enum ScriptStep {
    /// Report these pages accessed.
    Accessed(PageSet),
    /// Report these pages accessed, having looked only at `observed` (a sampling source).
    Sampled {
        /// Pages reported accessed.
        accessed: PageSet,
        /// Pages looked at.
        observed: PageSet,
    },
    /// Fail with this message.
    Fail(String),
}

/// A source that replays [`ScriptStep`]s, then reports nothing accessed.
#[derive(Clone, Debug)]
pub struct ScriptedSource {
    name: String,
    pages: u64,
    observes: Observes,
    unavailable: Option<String>,
    steps: VecDeque<ScriptStep>,
    cost: HarvestCost,
}

impl ScriptedSource {
    /// A source named `name` over `pages` pages that replays `steps`.
    pub fn new(name: &str, pages: u64, steps: impl IntoIterator<Item = ScriptStep>) -> Self {
        ScriptedSource {
            name: name.to_string(),
            pages,
            observes: Observes::Both,
            unavailable: None,
            steps: steps.into_iter().collect(),
            cost: HarvestCost::default(),
        }
    }

    /// A source replaying plain accessed sets.
    pub fn from_sets(name: &str, pages: u64, sets: impl IntoIterator<Item = PageSet>) -> Self {
        Self::new(name, pages, sets.into_iter().map(ScriptStep::Accessed))
    }

    /// Makes the source report itself unavailable with `reason`.
    pub fn unavailable(mut self, reason: &str) -> Self {
        self.unavailable = Some(reason.to_string());
        self
    }

    /// Sets what the source claims to observe.
    pub fn observing(mut self, observes: Observes) -> Self {
        self.observes = observes;
        self
    }

    /// Sets the cost every harvest reports.
    pub fn costing(mut self, cost: HarvestCost) -> Self {
        self.cost = cost;
        self
    }

    /// Appends a step.
    pub fn push(&mut self, step: ScriptStep) {
        self.steps.push_back(step);
    }
}

impl AccessSource for ScriptedSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn observes(&self) -> Observes {
        self.observes
    }

    fn granularity(&self) -> u64 {
        agelab_vmm::PAGE_SIZE
    }

    fn available(&self) -> Result<(), Unavailable> {
        match &self.unavailable {
            Some(r) => Err(Unavailable(r.clone())),
            None => Ok(()),
        }
    }

    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        let (accessed, observed) = match self.steps.pop_front() {
            None => (PageSet::new(self.pages), None),
            Some(ScriptStep::Accessed(a)) => (a, None),
            Some(ScriptStep::Sampled { accessed, observed }) => (accessed, Some(observed)),
            Some(ScriptStep::Fail(message)) => {
                return Err(HarvestError::Other {
                    source_name: self.name.clone(),
                    message,
                })
            }
        };
        Ok(Harvest {
            accessed,
            observed,
            cost: self.cost,
        })
    }
}
