//! Proactive reclaim of guest memory: actions, refault detection, a controller, policies and a
//! benchmark that compares them.
//!
//! The loop, once per interval (one workload epoch):
//!
//! 1. [`RefaultDetector::step`]: a residency scan (pagemap for anonymous memory, `mincore` for
//!    shmem/file) finds reclaimed pages that are back (refaults) and pages that left by other
//!    means (a memcg limit, lru_gen eviction). Refaults go to the engine with
//!    [`Engine::record_refaults`](crate::Engine::record_refaults), feeding its tiers.
//! 2. An aging pass of the [`Engine`](crate::Engine) (sources may see reclaimed pages too; the
//!    engine counts those as refaults itself).
//! 3. [`ReclaimController::step`]: a PI controller on the refault rate against the SLO (refaults ≤
//!    0.2% of the working set per minute), capped TMO-style, gives the number of pages.
//! 4. The policy picks victims (the engine from its oldest generations, gated by `min_ttl`;
//!    random; FIFO; or the kernel via lru_gen / memcg), [`Reclaimer`] applies `MADV_PAGEOUT` or
//!    `MADV_COLD` in contiguous runs, and [`RefaultDetector::confirm`] checks which pages really
//!    left before they are marked reclaimed in the engine.
//!
//! Swap-backed memory (anonymous, memfd) needs swap: [`crate::kernel::zram_swap::ZramSwap`] sets up
//! zram for a run and restores it on every exit path. Guest data is never dropped: only
//! `MADV_PAGEOUT`/`MADV_COLD`, and every benchmark run fills guest memory first and verifies every
//! word afterwards. See `docs/reclaim.md` for the controller, `docs/results/` for measured results.

pub mod action;
pub mod bench;
pub mod child;
pub mod config;
pub mod controller;
pub mod error;
mod kernel_policies;
pub mod plot;
pub mod policy;
pub mod refault;
pub mod run;
pub mod run_report;

pub use action::{ActionReport, ReclaimAction, ReclaimActionError, Reclaimer};
pub use bench::{run_bench, BenchReport, MeanCi};
pub use child::{run_in_child, ChildRunError};
pub use config::ReclaimRunConfig;
pub use controller::{ControlStep, ControllerConfig, ReclaimController};
pub use error::ReclaimRunError;
pub use policy::{parse_policies, PolicyKind, BENCH_POLICIES};
pub use refault::{RefaultDetector, ResidencyCounts, ResidencyError, ResidencyScanner};
pub use run::{run_once, ReclaimRunReport};
pub use run_report::OomKill;
