//! Host side of guest workloads: control blocks, the epoch protocol, data-integrity checks and
//! exact ground truth.
//!
//! Protocol: every vCPU runs [`agelab_guest::workload::workload_main`] and reports
//! `SYNC(STAGE_READY)`; the host writes the next command into the vCPU's [`VcpuWork`] block (in
//! untracked system memory) and resumes it with the command as the reply. A timed epoch ends when
//! the host sets `stop`; a counted epoch after `ops` accesses. The guest reports accesses done,
//! from which [`truth`] replays the exact pages read and written.

pub mod spec;
pub mod truth;
pub mod zipf;

use crate::pageset::PageSet;
use crate::vcpu::VcpuEvent;
use crate::vm::{Vm, VmError};
use agelab_guest::abi::TEST_BASE;
use agelab_guest::pattern::AliasEntry;
use agelab_guest::workload::{VcpuWork, WorkCmd, STAGE_READY};
pub use spec::{Op, Pattern, PhaseEvery, Sharing, WorkloadSpec, WorkloadSpecError};
use std::collections::HashMap;
use std::mem::offset_of;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use truth::{EpochTruth, VcpuEpoch};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryBackend};

/// `VcpuWork` as plain bytes for vm-memory.
#[derive(Clone, Copy, Debug, Default)]
#[repr(transparent)]
struct RawWork(VcpuWork);

// SAFETY: VcpuWork is repr(C), made only of u64 fields (no padding), so any bytes are valid.
unsafe impl ByteValued for RawWork {}

/// Errors while running a workload.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// VM-level failure.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A vCPU stopped with an error.
    #[error("guest failed: {0}")]
    Vcpu(#[from] crate::vcpu::VcpuError),
    /// A guest assertion failed.
    #[error("guest assertion failed on vCPU {vcpu} at {file}:{line}: {message}")]
    Abort {
        /// vCPU.
        vcpu: usize,
        /// File.
        file: String,
        /// Line.
        line: u32,
        /// Message.
        message: String,
    },
    /// The guest did something outside the protocol.
    #[error("workload protocol: {0}")]
    Protocol(String),
    /// The memory is too small for the workload.
    #[error("workload needs at least {needed} pages per vCPU, test memory gives {got}")]
    TooSmall {
        /// Pages needed.
        needed: u64,
        /// Pages available per vCPU.
        got: u64,
    },
}

/// Result of one epoch.
#[derive(Clone, Debug)]
pub struct EpochResult {
    /// Epoch number (1-based).
    pub epoch: u64,
    /// Accesses per vCPU.
    pub ops: Vec<u64>,
    /// Wall time of the epoch.
    pub elapsed: Duration,
    /// CPU time each vCPU thread used during the epoch (its thread CPU clock; zero where it
    /// could not be read).
    pub vcpu_cpu: Vec<Duration>,
    /// Time each vCPU thread waited on a run queue during the epoch (runnable, no CPU: the
    /// host's other load); zero where schedstat is missing.
    pub vcpu_runq_wait: Vec<Duration>,
}

impl EpochResult {
    /// ns per access of vCPU `v` (wall time / accesses).
    pub fn ns_per_access(&self, v: usize) -> f64 {
        if self.ops[v] == 0 {
            0.0
        } else {
            self.elapsed.as_nanos() as f64 / self.ops[v] as f64
        }
    }

    /// Total accesses.
    pub fn total_ops(&self) -> u64 {
        self.ops.iter().sum()
    }
}

/// What a verify pass found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Words checked.
    pub words: u64,
    /// Words that did not hold a valid tag.
    pub mismatches: u64,
    /// Guest addresses of the first mismatches.
    pub first_bad: Vec<u64>,
}

/// A running workload: the VM, its vCPUs in the epoch loop, and the record for ground truth.
pub struct Workload {
    vm: Vm,
    spec: WorkloadSpec,
    works: Vec<u64>,
    regions: Vec<(u64, u64)>,
    table: Option<(u64, Arc<Vec<AliasEntry>>)>,
    epoch: u64,
    history: Vec<Vec<VcpuEpoch>>,
    truth_cache: HashMap<u64, Arc<EpochTruth>>,
    started: Instant,
    page_limit: Duration,
    /// Guest text received (PRINTF), for callers that want it.
    pub guest_output: Vec<(usize, String)>,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("spec", &self.spec)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Default time per page a whole-memory pass may take ([`Workload::set_page_limit`]): a first
/// touch cost ~4 µs per page on an idle host, and a 16 GiB fill on a loaded one (load average 17
/// on 2 cores) took over 60 µs per page.
pub const DEFAULT_PAGE_LIMIT: Duration = Duration::from_micros(100);

/// How long a vCPU may take over its partition of a whole-memory pass (fill, verify) before the
/// watchdog calls it stuck: 120 s, or `per_page` per page of the largest partition.
fn whole_memory_limit(parts: &[(u64, u64)], per_page: Duration) -> Duration {
    let pages = parts.iter().map(|p| p.1).max().unwrap_or(0);
    Duration::from_secs(120).max(per_page.saturating_mul(u32::try_from(pages).unwrap_or(u32::MAX)))
}

/// System memory a workload needs on top of the VM's own (zipf table).
pub fn heap_bytes(spec: &WorkloadSpec, mem_bytes: u64) -> u64 {
    match spec.pattern {
        Pattern::Zipfian { .. } => {
            (mem_bytes / 4096) * std::mem::size_of::<AliasEntry>() as u64 + 4096
        }
        _ => 0,
    }
}

impl Workload {
    /// Starts the VM's vCPUs in the workload loop and waits until every one is ready.
    pub fn start(mut vm: Vm, spec: WorkloadSpec) -> Result<Self, WorkloadError> {
        let n = vm.vcpus() as u64;
        let pages = vm.page_map().len();
        let unit = if spec.huge_units { 512 } else { 1 };
        let regions: Vec<(u64, u64)> = match spec.sharing {
            Sharing::Shared => (0..n).map(|_| (0, pages / unit * unit)).collect(),
            Sharing::Private => {
                let per = pages / n / unit * unit;
                if per == 0 {
                    return Err(WorkloadError::TooSmall {
                        needed: unit,
                        got: pages / n,
                    });
                }
                (0..n).map(|v| (v * per, per)).collect()
            }
        };
        let table = match spec.pattern {
            Pattern::Zipfian { s } => {
                let units = regions[0].1 / unit;
                let t = Arc::new(zipf::alias_table(units, s));
                let bytes = (t.len() * std::mem::size_of::<AliasEntry>()) as u64;
                let gpa = vm.alloc_system(bytes)?;
                let raw: Vec<u8> = t
                    .iter()
                    .flat_map(|e| [e.keep_p32.to_le_bytes(), e.alias.to_le_bytes()].concat())
                    .collect();
                vm.memory()
                    .write_slice(&raw, GuestAddress(gpa))
                    .map_err(|e| WorkloadError::Protocol(format!("writing zipf table: {e}")))?;
                Some((gpa, t))
            }
            _ => None,
        };
        let mut works = Vec::with_capacity(n as usize);
        for _ in 0..n {
            works.push(vm.alloc_system(std::mem::size_of::<VcpuWork>() as u64)?);
        }
        let entry = agelab_guest::workload::workload_main as *const () as usize;
        let w2 = works.clone();
        vm.start(entry, move |v| [w2[v], 0])?;
        let mut wl = Workload {
            vm,
            spec,
            works,
            regions,
            table,
            epoch: 0,
            history: Vec::new(),
            truth_cache: HashMap::new(),
            started: Instant::now(),
            page_limit: DEFAULT_PAGE_LIMIT,
            guest_output: Vec::new(),
        };
        wl.wait_ready(Duration::from_secs(30))?;
        Ok(wl)
    }

    /// The VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The VM, mutably (e.g. to change memslot flags between epochs).
    pub fn vm_mut(&mut self) -> &mut Vm {
        &mut self.vm
    }

    /// The specification.
    pub fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    /// Epochs run so far (including fill/verify epochs).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Regions `(first_page, pages)` of each vCPU.
    pub fn regions(&self) -> &[(u64, u64)] {
        &self.regions
    }

    fn write_work(&self, v: usize, w: &VcpuWork) -> Result<(), WorkloadError> {
        self.vm
            .memory()
            .write_obj(RawWork(*w), GuestAddress(self.works[v]))
            .map_err(|e| WorkloadError::Protocol(format!("writing control block: {e}")))
    }

    fn read_work(&self, v: usize) -> Result<VcpuWork, WorkloadError> {
        self.vm
            .memory()
            .read_obj::<RawWork>(GuestAddress(self.works[v]))
            .map(|r| r.0)
            .map_err(|e| WorkloadError::Protocol(format!("reading control block: {e}")))
    }

    fn set_stop(&self, v: usize) -> Result<(), WorkloadError> {
        let addr = self.works[v] + offset_of!(VcpuWork, stop) as u64;
        let hva = self
            .vm
            .memory()
            .get_host_address(GuestAddress(addr))
            .map_err(|e| WorkloadError::Protocol(format!("control block outside memory: {e}")))?;
        // SAFETY: `hva` is the host address of the 8-byte aligned `stop` field inside a live
        // guest memory mapping; the guest reads it with volatile loads.
        unsafe { std::ptr::write_volatile(hva as *mut u64, 1) };
        Ok(())
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), WorkloadError> {
        let mut ready = vec![false; self.vm.vcpus()];
        let deadline = Instant::now() + timeout;
        while !ready.iter().all(|&r| r) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.vm.next_event(left.max(Duration::from_millis(1)))? {
                VcpuEvent::Sync { vcpu, stage, .. } if stage == STAGE_READY => ready[vcpu] = true,
                VcpuEvent::Sync { stage, vcpu, .. } => {
                    return Err(WorkloadError::Protocol(format!(
                        "vCPU {vcpu}: unexpected SYNC stage {stage:#x}"
                    )))
                }
                VcpuEvent::Printf { vcpu, text } => self.guest_output.push((vcpu, text)),
                VcpuEvent::Done { vcpu } => {
                    return Err(WorkloadError::Protocol(format!(
                        "vCPU {vcpu} finished early"
                    )))
                }
                VcpuEvent::Abort {
                    vcpu,
                    file,
                    line,
                    message,
                } => {
                    return Err(WorkloadError::Abort {
                        vcpu,
                        file,
                        line,
                        message,
                    })
                }
                VcpuEvent::Failed(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn command(
        &mut self,
        cmd: WorkCmd,
        max_ops: u64,
        pattern_for: impl Fn(usize) -> (u64, u64),
    ) -> Result<Vec<VcpuWork>, WorkloadError> {
        self.epoch += 1;
        let n = self.vm.vcpus();
        let phase_base = match self.spec.pattern {
            Pattern::PhaseShift {
                every: PhaseEvery::Millis(ms),
                ..
            } => self.started.elapsed().as_millis() as u64 / ms,
            _ => 0,
        };
        let mut blocks = Vec::with_capacity(n);
        for v in 0..n {
            let (first, pages) = pattern_for(v);
            let mut params = self.spec.params(pages);
            params.phase_base = phase_base;
            let w = VcpuWork {
                cmd: cmd as u64,
                vcpu: v as u64,
                epoch: self.epoch,
                seed: self.spec.seed,
                region_gva: TEST_BASE + first * 4096,
                region_first_page: first,
                pattern: params,
                table_gva: self.table.as_ref().map_or(0, |t| t.0),
                table_len: self.table.as_ref().map_or(0, |t| t.1.len() as u64),
                max_ops,
                ..Default::default()
            };
            self.write_work(v, &w)?;
            blocks.push(w);
        }
        Ok(blocks)
    }

    fn resume_all(&self, cmd: WorkCmd) -> Result<(), WorkloadError> {
        for v in 0..self.vm.vcpus() {
            self.vm.resume(v, cmd as u64)?;
        }
        Ok(())
    }

    /// Runs one epoch of the pattern for `duration` (or the spec's op count, if set).
    pub fn run_epoch(&mut self, duration: Duration) -> Result<EpochResult, WorkloadError> {
        let max_ops = self.spec.ops.unwrap_or(0);
        let regions = self.regions.clone();
        let blocks = self.command(WorkCmd::Run, max_ops, |v| regions[v])?;
        self.vm.set_watchdog(duration + Duration::from_secs(20));
        let cpu0 = self.vcpu_cpu_times();
        let wait0 = self.vcpu_runq_waits();
        let t0 = Instant::now();
        self.resume_all(WorkCmd::Run)?;
        if max_ops == 0 {
            std::thread::sleep(duration);
            for v in 0..self.vm.vcpus() {
                self.set_stop(v)?;
            }
        }
        self.wait_ready(duration + Duration::from_secs(30))?;
        let elapsed = t0.elapsed();
        let vcpu_cpu = self
            .vcpu_cpu_times()
            .iter()
            .zip(&cpu0)
            .map(|(b, a)| b.saturating_sub(*a))
            .collect();
        let vcpu_runq_wait = self
            .vcpu_runq_waits()
            .iter()
            .zip(&wait0)
            .map(|(b, a)| b.saturating_sub(*a))
            .collect();
        let mut ops = Vec::with_capacity(blocks.len());
        let mut record = Vec::with_capacity(blocks.len());
        for (v, b) in blocks.iter().enumerate() {
            let done = self.read_work(v)?;
            ops.push(done.ops);
            record.push(VcpuEpoch {
                vcpu: v as u64,
                epoch: b.epoch,
                seed: b.seed,
                params: b.pattern,
                first_page: b.region_first_page,
                ops: done.ops,
                table: self.table.as_ref().map(|t| t.1.clone()),
            });
        }
        self.record_epoch(record);
        Ok(EpochResult {
            epoch: self.epoch,
            ops,
            elapsed,
            vcpu_cpu,
            vcpu_runq_wait,
        })
    }

    /// Each vCPU thread's run-queue wait so far (zero where it cannot be read).
    fn vcpu_runq_waits(&self) -> Vec<Duration> {
        (0..self.vm.vcpus())
            .map(|v| self.vm.vcpu_schedstat(v).map_or(Duration::ZERO, |s| s.1))
            .collect()
    }

    /// Each vCPU thread's CPU time so far (zero where it cannot be read).
    fn vcpu_cpu_times(&self) -> Vec<Duration> {
        (0..self.vm.vcpus())
            .map(|v| self.vm.vcpu_cpu_time(v).unwrap_or_default())
            .collect()
    }

    /// Sets how long a whole-memory pass ([`Workload::fill`], [`Workload::verify`]) may take
    /// per page of a vCPU's partition before the watchdog calls the guest stuck (default
    /// [`DEFAULT_PAGE_LIMIT`]); a host whose faults cost more raises it
    /// ([`crate::HostProfile::whole_memory_page_limit`]).
    pub fn set_page_limit(&mut self, per_page: Duration) {
        self.page_limit = per_page;
    }

    /// Writes the integrity pattern over every vCPU's partition of test memory.
    pub fn fill(&mut self) -> Result<Duration, WorkloadError> {
        let parts = self.partitions();
        self.command(WorkCmd::Fill, 0, |v| parts[v])?;
        let limit = whole_memory_limit(&parts, self.page_limit);
        self.vm.set_watchdog(limit);
        let t0 = Instant::now();
        self.resume_all(WorkCmd::Fill)?;
        self.wait_ready(limit + Duration::from_secs(30))?;
        let mut record = Vec::new();
        for (v, &(first, pages)) in parts.iter().enumerate() {
            let mut params = self.spec.params(pages);
            params.kind = agelab_guest::pattern::PatternKind::Sequential as u64;
            params.write_p32 = agelab_guest::pattern::ALWAYS;
            params.unit_pages = 1;
            params.pages = pages;
            record.push(VcpuEpoch {
                vcpu: v as u64,
                epoch: self.epoch,
                seed: 0,
                params,
                first_page: first,
                ops: pages,
                table: None,
            });
        }
        self.record_epoch(record);
        Ok(t0.elapsed())
    }

    /// Checks every word of test memory against the integrity pattern.
    pub fn verify(&mut self) -> Result<VerifyReport, WorkloadError> {
        let parts = self.partitions();
        self.command(WorkCmd::Verify, 0, |v| parts[v])?;
        let limit = whole_memory_limit(&parts, self.page_limit);
        self.vm.set_watchdog(limit);
        self.resume_all(WorkCmd::Verify)?;
        self.wait_ready(limit + Duration::from_secs(30))?;
        let mut r = VerifyReport::default();
        for (v, &(_, pages)) in parts.iter().enumerate() {
            let w = self.read_work(v)?;
            r.words += pages * 512;
            r.mismatches += w.mismatches;
            r.first_bad.extend(
                w.first_bad
                    .iter()
                    .take(w.mismatches.min(8) as usize)
                    .copied(),
            );
        }
        r.first_bad.sort_unstable();
        r.first_bad.truncate(8);
        // A verify epoch reads every page: an empty record says so to `ground_truth`.
        self.record_epoch(Vec::new());
        Ok(r)
    }

    /// Records what each vCPU did in the current epoch (empty: every page read, see
    /// [`Workload::ground_truth`]).
    fn record_epoch(&mut self, record: Vec<VcpuEpoch>) {
        self.history.resize(self.epoch as usize - 1, Vec::new());
        self.history.push(record);
    }

    /// Partitions for fill/verify: the whole test memory split between vCPUs.
    fn partitions(&self) -> Vec<(u64, u64)> {
        let n = self.vm.vcpus() as u64;
        let pages = self.vm.page_map().len();
        let per = pages / n;
        (0..n)
            .map(|v| (v * per, if v == n - 1 { pages - v * per } else { per }))
            .collect()
    }

    /// Exact pages read and written in epoch `k` (1-based). Verify epochs read every page of
    /// test memory; fill epochs write every page.
    pub fn ground_truth(&mut self, k: u64) -> Option<Arc<EpochTruth>> {
        if k == 0 || k > self.epoch {
            return None;
        }
        if let Some(t) = self.truth_cache.get(&k) {
            return Some(t.clone());
        }
        let pages = self.vm.page_map().len();
        let rec = self.history.get(k as usize - 1)?;
        let t = if rec.is_empty() {
            // Verify epoch (or an epoch with no record): every page read.
            EpochTruth {
                read: PageSet::full(pages),
                written: PageSet::new(pages),
            }
        } else {
            truth::replay_epoch(rec, pages)
        };
        let t = Arc::new(t);
        self.truth_cache.insert(k, t.clone());
        Some(t)
    }

    /// Ends the guest (ucall DONE) and returns the VM.
    pub fn finish(self) -> Result<Vm, WorkloadError> {
        self.resume_all(WorkCmd::Exit)?;
        let mut done = 0;
        while done < self.vm.vcpus() {
            match self.vm.next_event(Duration::from_secs(10))? {
                VcpuEvent::Done { .. } => done += 1,
                VcpuEvent::Failed(e) => return Err(e.into()),
                _ => {}
            }
        }
        Ok(self.vm)
    }
}
