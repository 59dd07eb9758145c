//! The kernel's MGLRU aging the VM's memory during `agelab run`, for comparison with the engine.
//!
//! The whole VMM process moves into a dedicated child memcg before the VM is created, and stays
//! there: lru_gen's aging walks the page tables of the mms on the memcg's own mm list (an mm is
//! listed under its owner's memcg), so the VMM's mm — where KVM's guest pages are mapped — must be
//! in it for aging to see them. [`KernelAging::charge_guest`] then makes the memcg hold every guest
//! page whatever the backing (see [`GuestMemcg`]): private memory is faulted in by the process
//! itself from inside, shared memory (memfd/shmem, files) by a helper forked into the memcg.
//! Every pass forces one aging step through [`MemcgAging::age_nodes`] and reads the memcg's
//! generations back; [`KernelAging::report`] gives them as data. All lru_gen switches get every
//! capability the kernel has and `min_ttl_ms` 0 for the run; the memcg, the switches and
//! `min_ttl_ms` are restored on every exit path (guards, and [`host_guard`](crate::host_guard) on
//! signals).

use super::{LruGenAgingError, MemcgAging};
use crate::engine::Engine;
use crate::host_guard::RestoreGuard;
use crate::kernel::lru_gen::{EngineGeneration, LruGenCaps, LruGenControl, LruGenView};
use crate::kernel::memcg::{GuestMemcg, MemcgError};
use crate::source::Unavailable;
use agelab_vmm::Vm;
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

/// Kernel aging of this process's memory in its own memcg.
#[derive(Debug)]
pub struct KernelAging {
    // Field order is drop order: the memcg goes first (moving the process back out), then the
    // knobs are restored.
    aging: MemcgAging,
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
    pub fn start(name: &str) -> Result<Self, LruGenAgingError> {
        let ctl = LruGenControl::new();
        ctl.check_debugfs()?;
        let (caps, caps_guard) = ctl.enable_for_run()?;
        let ttl = ctl.set_min_ttl_ms(0)?;
        let aging = MemcgAging::of(GuestMemcg::create(name)?, ctl)?;
        aging.join()?;
        Ok(KernelAging {
            aging,
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
        self.aging.memcg()
    }

    /// Charges every page of `vm`'s test memory to the memcg: shared slots (memfd/shmem, file)
    /// through [`GuestMemcg::charge_shared`] (each file once: a file backing is one file for all
    /// slots), private slots (anon, THP) by populating them from this process, which is in the
    /// memcg. Call before the guest runs; it changes no data. hugetlb pages are not on the LRU
    /// (and on cgroup v1 not charged to memcgs), so they stay outside the kernel's generations.
    pub fn charge_guest(&self, vm: &Vm) -> Result<(), LruGenAgingError> {
        charge_vm_memory(self.aging.memcg(), vm)
    }

    /// The kernel's generations of the memcg now, as data, beside `guest_pages` (the guest's test
    /// memory in 4 KiB pages).
    pub fn report(&self, guest_pages: u64) -> Result<KernelLruGenReport, LruGenAgingError> {
        let listing = self.aging.control().read(false)?;
        let id = self.aging.id();
        let not_listed = || LruGenAgingError::NotListed(self.aging.path().into());
        let view = LruGenView::from_listing(&listing, id, None).ok_or_else(not_listed)?;
        let nodes = listing
            .memcg(id)
            .map(|m| m.nodes.iter().map(|n| n.node).collect())
            .unwrap_or_default();
        Ok(KernelLruGenReport {
            memcg: MemcgRef {
                path: view.path.clone(),
                id,
            },
            nodes,
            memcg_pages: view.pages(),
            guest_pages,
            usage_bytes: self.aging.memcg().usage_bytes().ok(),
            generations: view
                .generations
                .iter()
                .map(|g| KernelGeneration {
                    seq: g.seq,
                    age_ms: g.age_ms,
                    anon: g.anon,
                    file: g.file,
                })
                .collect(),
            aging_passes: self.passes,
            aging_ms_per_pass: self.ns_per_pass() as f64 / 1e6,
            caps: self.caps.to_string(),
        })
    }

    /// Mean time of one forced aging step over all nodes, in ns.
    pub fn ns_per_pass(&self) -> u64 {
        self.aging_ns.checked_div(self.passes).unwrap_or(0)
    }

    /// The memcg's generations now, without aging.
    pub fn view(&self) -> Result<LruGenView, LruGenAgingError> {
        let listing = self.aging.control().read(false)?;
        LruGenView::from_listing(&listing, self.aging.id(), None)
            .ok_or_else(|| LruGenAgingError::NotListed(self.aging.path().into()))
    }

    /// Forces one aging step on every node of the memcg, then returns its generations.
    pub fn age(&mut self) -> Result<LruGenView, LruGenAgingError> {
        let took = self.aging.age_nodes()?;
        self.aging_ns += took.as_nanos() as u64;
        self.passes += 1;
        self.view()
    }
}

/// Charges every page of `vm`'s test memory to `memcg` (what [`KernelAging::charge_guest`] does):
/// shared slots through [`GuestMemcg::charge_shared`], each backing file once; private slots
/// through [`GuestMemcg::charge_private`], which needs this process in `memcg`.
pub fn charge_vm_memory(memcg: &GuestMemcg, vm: &Vm) -> Result<(), LruGenAgingError> {
    let mut files_done: Vec<(u64, u64)> = Vec::new();
    for s in vm.test_slots() {
        let charge = |err| LruGenAgingError::Charge { slot: s.slot, err };
        match &s.mapping.file {
            Some(f) => {
                let meta = f.metadata().map_err(|err| {
                    charge(MemcgError::ChargeHelper {
                        what: format!("slot {}", s.slot),
                        path: memcg.dir().to_path_buf(),
                        step: "stat the backing file",
                        err,
                    })
                })?;
                let key = (meta.dev(), meta.ino());
                if files_done.contains(&key) {
                    continue;
                }
                files_done.push(key);
                memcg
                    .charge_shared(f, 0, meta.len() as usize)
                    .map_err(charge)?;
            }
            None => memcg
                .charge_private(s.mapping.addr(), s.mapping.len())
                .map_err(charge)?,
        }
    }
    Ok(())
}

/// A memcg as `/sys/kernel/debug/lru_gen` names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemcgRef {
    /// cgroup path relative to the memory hierarchy root.
    pub path: String,
    /// lru_gen memcg id (what aging and eviction commands take).
    pub id: u64,
}

/// One kernel generation of the memcg, summed over its NUMA nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelGeneration {
    /// Sequence number (the largest is the youngest).
    pub seq: u64,
    /// Age in ms: the oldest among the nodes (each node's generation is born separately).
    pub age_ms: u64,
    /// Anonymous pages, shmem/memfd included (the kernel counts shmem as anon).
    pub anon: u64,
    /// File pages (a `file:PATH` backing's page cache).
    pub file: u64,
}

/// The kernel's view of the VM's memcg: its generations as data.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelLruGenReport {
    /// The memcg.
    pub memcg: MemcgRef,
    /// NUMA nodes the generations are summed over.
    pub nodes: Vec<u32>,
    /// Generations, youngest first, summed over `nodes`.
    pub generations: Vec<KernelGeneration>,
    /// Pages in the memcg's generations (anon + file over all of them): the guest's pages plus
    /// the VMM's own (it lives in the memcg too), so ≥ `guest_pages` when the generations cover
    /// the guest.
    pub memcg_pages: u64,
    /// The guest's test memory in 4 KiB pages.
    pub guest_pages: u64,
    /// The memcg's charge in bytes (`memory.usage_in_bytes` / `memory.current`), when readable.
    pub usage_bytes: Option<u64>,
    /// Forced aging passes run.
    pub aging_passes: u64,
    /// Mean time of one forced aging pass over all nodes, ms.
    pub aging_ms_per_pass: f64,
    /// lru_gen capabilities in force (`0x0007`, ...).
    pub caps: String,
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
