//! `OracleSource`: the ground truth as a source, for validation runs.
//!
//! The workload knows which pages it touched (the guest's access pattern, or a host thread that
//! replays it); the oracle hands that set to the engine as if a perfect source had measured it.
//! Running the engine with the oracle alone gives the ideal generations other sources are
//! compared against.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use agelab_vmm::PageSet;

use crate::source::{AccessSource, Harvest, HarvestCost, HarvestError, Observes, Unavailable};

type TruthFn = Box<dyn FnMut() -> Option<PageSet> + Send>;

enum Feed {
    Closure(TruthFn),
    Channel(Receiver<PageSet>),
}

/// A source that reports exactly the pages it is told were accessed.
pub struct OracleSource {
    name: String,
    pages: u64,
    feed: Feed,
    disconnected: bool,
}

impl std::fmt::Debug for OracleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OracleSource")
            .field("name", &self.name)
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

impl OracleSource {
    /// Asks `truth` once per harvest; `None` means no page was accessed.
    pub fn from_fn(pages: u64, truth: impl FnMut() -> Option<PageSet> + Send + 'static) -> Self {
        OracleSource {
            name: super::SourceKind::Oracle.name().to_string(),
            pages,
            feed: Feed::Closure(Box::new(truth)),
            disconnected: false,
        }
    }

    /// Reports the union of every set sent on `rx` since the previous harvest (nothing sent:
    /// nothing accessed). Once the sender is gone and drained, harvests fail as unavailable.
    pub fn from_channel(pages: u64, rx: Receiver<PageSet>) -> Self {
        OracleSource {
            name: super::SourceKind::Oracle.name().to_string(),
            pages,
            feed: Feed::Channel(rx),
            disconnected: false,
        }
    }

    /// Renames the source (to run several oracles, or label a replay).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }
}

/// Rejects a truth set of the wrong size.
fn check(name: &str, pages: u64, set: PageSet) -> Result<PageSet, HarvestError> {
    if set.capacity() == pages {
        Ok(set)
    } else {
        Err(HarvestError::Other {
            source_name: name.to_string(),
            message: format!("truth covers {} pages, expected {pages}", set.capacity()),
        })
    }
}

impl AccessSource for OracleSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn observes(&self) -> Observes {
        Observes::Both
    }

    fn granularity(&self) -> u64 {
        agelab_vmm::PAGE_SIZE
    }

    fn available(&self) -> Result<(), Unavailable> {
        if self.disconnected {
            Err(Unavailable("the truth feed was closed".to_string()))
        } else {
            Ok(())
        }
    }

    fn harvest(&mut self) -> Result<Harvest, HarvestError> {
        let t = Instant::now();
        let accessed = match &mut self.feed {
            Feed::Closure(f) => match f() {
                Some(set) => check(&self.name, self.pages, set)?,
                None => PageSet::new(self.pages),
            },
            Feed::Channel(rx) => {
                let mut acc = PageSet::new(self.pages);
                loop {
                    match rx.try_recv() {
                        Ok(set) => {
                            let set = check(&self.name, self.pages, set)?;
                            acc.union_with(&set);
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            self.disconnected = true;
                            return Err(HarvestError::Unavailable {
                                source_name: self.name.clone(),
                                reason: "the truth feed was closed".to_string(),
                            });
                        }
                    }
                }
                acc
            }
        };
        Ok(Harvest {
            accessed,
            observed: None,
            cost: HarvestCost {
                ns: u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX),
                ..HarvestCost::default()
            },
        })
    }
}
