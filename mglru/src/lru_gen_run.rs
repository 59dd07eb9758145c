//! The kernel's MGLRU aging the VM's memory during a run, for comparison with the engine.
//!
//! The whole VMM process moves into a dedicated child memcg before guest memory is touched, so the
//! guest's pages are charged there; every pass forces one aging step (`+ memcg node max_seq 1 1`)
//! on each node and reads the memcg's generations back. All lru_gen switches get every capability
//! the kernel has and `min_ttl_ms` 0 for the run; the memcg, the switches and `min_ttl_ms` are
//! restored on every exit path (guards, and [`host_guard`](crate::host_guard) on signals).

use crate::engine::Engine;
use crate::host_guard::RestoreGuard;
use crate::kernel::lru_gen::{
    EngineGeneration, LruGenCaps, LruGenControl, LruGenError, LruGenView,
};
use crate::kernel::memcg::{GuestMemcg, MemcgError};
use crate::source::Unavailable;
use std::time::Instant;

/// Errors of kernel aging during a run.
#[derive(Debug, thiserror::Error)]
pub enum KernelAgingError {
    /// An lru_gen file or command failed.
    #[error("lru_gen: {0}")]
    LruGen(#[from] LruGenError),
    /// The memcg could not be set up.
    #[error("memcg: {0}")]
    Memcg(#[from] MemcgError),
    /// The memcg is missing from the debugfs listing.
    #[error("memcg {0} is not in /sys/kernel/debug/lru_gen")]
    NotListed(String),
}

/// Kernel aging of this process's memory in its own memcg.
#[derive(Debug)]
pub struct KernelAging {
    // Field order is drop order: the memcg goes first (moving the process back out), then the
    // knobs are restored.
    memcg: GuestMemcg,
    ctl: LruGenControl,
    caps: LruGenCaps,
    _ttl: RestoreGuard,
    _caps: RestoreGuard,
    passes: u64,
    aging_ns: u64,
}

impl KernelAging {
    /// Why kernel aging cannot run here, if it cannot.
    pub fn available() -> Result<(), Unavailable> {
        LruGenControl::new().available()?;
        if !crate::kernel::is_root() {
            return Err(Unavailable("lru_gen commands and memcgs need root".into()));
        }
        Ok(())
    }

    /// Enables lru_gen for the run and moves this process into a new child memcg `name`.
    pub fn start(name: &str) -> Result<Self, KernelAgingError> {
        let ctl = LruGenControl::new();
        ctl.check_debugfs()?;
        let (caps, caps_guard) = ctl.enable_for_run()?;
        let ttl = ctl.set_min_ttl_ms(0)?;
        let memcg = GuestMemcg::create(name)?;
        memcg.add_process(std::process::id() as i32)?;
        Ok(KernelAging {
            memcg,
            ctl,
            caps,
            _ttl: ttl,
            _caps: caps_guard,
            passes: 0,
            aging_ns: 0,
        })
    }

    /// Capabilities in force.
    pub fn caps(&self) -> LruGenCaps {
        self.caps
    }

    /// The memcg.
    pub fn memcg(&self) -> &GuestMemcg {
        &self.memcg
    }

    /// Mean time of one forced aging step over all nodes, in ns.
    pub fn ns_per_pass(&self) -> u64 {
        self.aging_ns.checked_div(self.passes).unwrap_or(0)
    }

    /// The memcg's generations now, without aging.
    pub fn view(&self) -> Result<LruGenView, KernelAgingError> {
        let listing = self.ctl.read(false)?;
        let id = self
            .memcg
            .lru_gen_id(&listing)
            .ok_or_else(|| KernelAgingError::NotListed(self.memcg.path().into()))?;
        LruGenView::from_listing(&listing, id, None)
            .ok_or_else(|| KernelAgingError::NotListed(self.memcg.path().into()))
    }

    /// Forces one aging step on every node of the memcg, then returns its generations.
    pub fn age(&mut self) -> Result<LruGenView, KernelAgingError> {
        let listing = self.ctl.read(false)?;
        let id = self
            .memcg
            .lru_gen_id(&listing)
            .ok_or_else(|| KernelAgingError::NotListed(self.memcg.path().into()))?;
        let nodes: Vec<u32> = listing
            .memcg(id)
            .map(|m| m.nodes.iter().map(|n| n.node).collect())
            .unwrap_or_default();
        let t = Instant::now();
        for node in nodes {
            match self.ctl.age_now(id, node, true) {
                // Another aging (kswapd, a concurrent walk) produced the generation first.
                Ok(_) | Err(LruGenError::AgingNotDone { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.aging_ns += t.elapsed().as_nanos() as u64;
        self.passes += 1;
        self.view()
    }
}

/// The engine's generations, youngest first, for [`LruGenView::side_by_side`].
pub fn engine_generations(engine: &Engine) -> Vec<EngineGeneration> {
    let now = Instant::now();
    let mut v: Vec<EngineGeneration> = engine
        .generations()
        .generations()
        .map(|g| EngineGeneration {
            label: g.seq.to_string(),
            age_ms: now.saturating_duration_since(g.born).as_millis() as u64,
            pages: g.pages,
        })
        .collect();
    v.reverse();
    v
}
