//! A memcg with forced lru_gen aging, and whether lru_gen can drive aging here.
//!
//! A selftest creates a child memcg (named after the test, under the memory controller's root)
//! and joins it after its VM exists but before the guest first touches its memory
//! ([`MemcgAging::join`]), so the memcg holds guest memory and nothing of the VMM's own pages
//! (page tables, copied code, stacks): pages are charged to the memcg of the process that first
//! faults them. `agelab run` instead moves the whole VMM into its memcg for good
//! ([`super::KernelAging`]).

use super::LruGenAgingError;
use crate::kernel::lru_gen::{LruGenCaps, LruGenControl, LruGenError, MemcgGenerations};
use crate::kernel::memcg::{GuestMemcg, MemoryHierarchy};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Why lru_gen cannot drive aging here.
#[derive(Debug, thiserror::Error)]
pub enum LruGenUnusable {
    /// Its sysfs or debugfs files cannot be read.
    #[error(transparent)]
    Control(#[from] LruGenError),
    /// It is on without the features forced aging needs.
    #[error("lru_gen: missing features, got {caps}, need 0x{need:x} (try 'echo 0x{need:x} > /sys/kernel/mm/lru_gen/enabled')")]
    MissingFeatures {
        /// The features on.
        caps: LruGenCaps,
        /// The feature bits needed.
        need: u32,
    },
}

/// Why lru_gen cannot drive aging here (the kernel's `lru_gen_usable()`), or its caps.
pub fn lru_gen_usable(ctl: &LruGenControl) -> Result<LruGenCaps, LruGenUnusable> {
    let caps = ctl.caps()?;
    let need = LruGenCaps::MAIN | LruGenCaps::MM_WALK;
    if !caps.has(need) {
        return Err(LruGenUnusable::MissingFeatures { caps, need });
    }
    ctl.check_debugfs()?;
    Ok(caps)
}

/// A memcg with lru_gen aging.
#[derive(Debug)]
pub struct MemcgAging {
    ctl: LruGenControl,
    memcg: GuestMemcg,
    id: u64,
    /// This process's cgroup directory when the memcg was created ([`MemcgAging::leave`]).
    home: PathBuf,
}

impl MemcgAging {
    /// Creates memcg `name` under the memory controller root; this process stays where it is.
    pub fn create(name: &str) -> Result<Self, LruGenAgingError> {
        let h = MemoryHierarchy::detect()?;
        let memcg = GuestMemcg::create_under(h, "/", name)?;
        Self::of(memcg, LruGenControl::new())
    }

    /// Ages `memcg`, an existing memcg, through `ctl`; this process stays where it is.
    pub fn of(memcg: GuestMemcg, ctl: LruGenControl) -> Result<Self, LruGenAgingError> {
        let h = MemoryHierarchy::detect()?;
        let home = h.mount.join(h.own_cgroup()?.trim_start_matches('/'));
        let listing = ctl.read(false)?;
        let id = memcg
            .lru_gen_id(&listing)
            .ok_or_else(|| LruGenAgingError::NotListed(memcg.path().to_string()))?;
        Ok(MemcgAging {
            ctl,
            memcg,
            id,
            home,
        })
    }

    /// Creates memcg `name` and moves this process into it for good (every page it faults from
    /// now on, the VMM's included, is charged there: the kernel selftest's layout).
    pub fn create_and_join(name: &str) -> Result<Self, LruGenAgingError> {
        let m = Self::create(name)?;
        m.join()?;
        Ok(m)
    }

    /// Moves this process in: memory first faulted from now on is charged to this memcg.
    pub fn join(&self) -> Result<(), LruGenAgingError> {
        Ok(self.memcg.add_process(std::process::id() as i32)?)
    }

    /// Moves this process back to the cgroup it was in when the memcg was created (pages already
    /// charged stay charged here).
    pub fn leave(&self) -> Result<(), LruGenAgingError> {
        let path = self.home.join("cgroup.procs");
        std::fs::write(&path, std::process::id().to_string())
            .map_err(|source| LruGenAgingError::Leave { path, source })
    }

    /// Runs `fault_in` with this process in the memcg, then moves it back: exactly the memory
    /// `fault_in` first touches (e.g. a guest populating a window) is charged here.
    pub fn charge<T>(&self, fault_in: impl FnOnce() -> T) -> Result<T, LruGenAgingError> {
        self.join()?;
        let out = fault_in();
        self.leave()?;
        Ok(out)
    }

    /// One forced aging pass with this process a member (joined first, left a member), so the
    /// walk visits the VMM's page tables; see the module doc.
    pub fn age_as_member(&self) -> Result<(MemcgGenerations, Duration), LruGenAgingError> {
        self.join()?;
        self.age()
    }

    /// The memcg's path as lru_gen lists it.
    pub fn path(&self) -> &str {
        self.memcg.path()
    }

    /// The memcg's lru_gen id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The memcg.
    pub fn memcg(&self) -> &GuestMemcg {
        &self.memcg
    }

    /// The control files.
    pub fn control(&self) -> &LruGenControl {
        &self.ctl
    }

    /// Current generations of the memcg.
    pub fn read(&self) -> Result<MemcgGenerations, LruGenAgingError> {
        MemcgGenerations::from_listing(&self.ctl.read(false)?, self.id)
            .ok_or_else(|| LruGenAgingError::NotListed(self.path().to_string()))
    }

    /// One forced aging pass on every node (`+ id node max_seq 1 1`); returns the generations
    /// afterwards and the time the aging commands took.
    pub fn age(&self) -> Result<(MemcgGenerations, Duration), LruGenAgingError> {
        let took = self.age_nodes()?;
        Ok((self.read()?, took))
    }

    /// The aging itself: one forced step (`+ id node max_seq 1 1`) on every node of the memcg
    /// from its listed max_seq; returns the time the commands took.
    pub fn age_nodes(&self) -> Result<Duration, LruGenAgingError> {
        let listing = self.ctl.read(false)?;
        let m = listing
            .memcg(self.id)
            .ok_or_else(|| LruGenAgingError::NotListed(self.path().to_string()))?;
        let t = Instant::now();
        for node in &m.nodes {
            if let Some(max) = node.max_seq() {
                match self.ctl.age(self.id, node.node, max, true, true) {
                    // A concurrent aging (kswapd, another pass) already made the generation.
                    Ok(()) | Err(LruGenError::AgingNotDone { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(t.elapsed())
    }
}
