//! The VM: KVM objects, memory, vCPU threads, the watchdog and the event stream.
//!
//! [`Vm::new`] is the list of its steps, each a function in `vm/build.rs`; the watchdog thread
//! lives in `vm/watchdog.rs`.

mod build;
pub mod sync;
mod watchdog;

use crate::arch::{ArchError, ArchVm, GuestTables, VcpuRegs};
use crate::loader::LoaderError;
use crate::memory::{Backing, HostMapping, MemoryError, SlotMapping};
use crate::page_map::{GuestPageMap, PAGE_SIZE};
use crate::stats::{KvmStats, StatsError};
use crate::system::{SystemMemory, SystemMemoryError};
use crate::vcpu::{self, ExitCounters, RingFullHandler, VcpuEvent, VcpuShared, VcpuThread};
use agelab_guest::abi::SYSTEM_BASE;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::collections::BTreeMap;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vm_memory::GuestMemoryMmap;

/// Bytes of guest stack per vCPU.
pub const STACK_BYTES: u64 = 256 << 10;

/// Default watchdog: a vCPU that makes no ucall for this long is stopped with a timeout error.
pub const DEFAULT_WATCHDOG: Duration = Duration::from_secs(10);

/// Errors creating or driving a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm is missing or unusable.
    #[error("{0}")]
    NoKvm(String),
    /// A KVM ioctl failed.
    #[error("{what}: {err}")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// The error.
        #[source]
        err: kvm_ioctls::Error,
    },
    /// Bad configuration.
    #[error("invalid VM configuration: {0}")]
    Config(String),
    /// Guest memory could not be created.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Architecture setup failed.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// System memory ran out.
    #[error(transparent)]
    System(#[from] SystemMemoryError),
    /// Guest code could not be located.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// A host mapping of guest code collides with the guest's identity-mapped memory.
    #[error("host mapping {name} at {start:#x}..{end:#x} overlaps guest memory at {gpa_start:#x}..{gpa_end:#x}")]
    LayoutConflict {
        /// The host mapping.
        name: String,
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
        /// Guest range start.
        gpa_start: u64,
        /// Guest range end.
        gpa_end: u64,
    },
    /// No event arrived in time.
    #[error("no vCPU event within {0:?}")]
    NoEvent(Duration),
    /// The vCPUs are not running.
    #[error("vCPU {0} is not running")]
    NotRunning(usize),
    /// The VM was already started.
    #[error("the VM was already started")]
    AlreadyStarted,
    /// Spawning a vCPU thread failed.
    #[error("spawning vCPU thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A vCPU reported something other than the SYNC the host waited for.
    #[error("waiting for SYNC({stage:#x}): {event}")]
    UnexpectedEvent {
        /// The stage waited for (0 while waiting for DONE).
        stage: u64,
        /// The event, described.
        event: String,
    },
    /// A vCPU stopped on an error while the host waited for it.
    #[error(transparent)]
    Vcpu(#[from] vcpu::VcpuError),
}

/// What to build.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Number of vCPUs.
    pub vcpus: usize,
    /// Bytes of test memory.
    pub mem_bytes: u64,
    /// How test memory is backed.
    pub backing: Backing,
    /// Number of memslots the test memory is split into.
    pub slots: usize,
    /// Map test memory with 2 MiB guest pages (default: for thp and hugetlb backings).
    pub guest_huge_pages: Option<bool>,
    /// Extra system memory for guest-side tables (zipf alias tables...).
    pub heap_bytes: u64,
    /// Dirty ring entries per vCPU (power of two), enabled before vCPUs are created.
    pub dirty_ring_entries: Option<u32>,
    /// Run guest code at CPL0 like the kernel's KVM selftests (x86_64 only). On kvm_pvm every
    /// CPL0 instruction is emulated (~1 µs), its stores never map guest pages writable, and the
    /// dirty log costs KVM less for that reason alone: a baseline for comparisons, not for
    /// workloads (see `docs/dirty-tracking.md`).
    pub guest_cpl0: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            vcpus: 1,
            mem_bytes: 64 << 20,
            backing: Backing::Anon,
            slots: 1,
            guest_huge_pages: None,
            heap_bytes: 0,
            dirty_ring_entries: None,
            guest_cpl0: false,
        }
    }
}

/// KVM memslot description kept for re-registration (dirty logging flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemslotInfo {
    /// Slot number.
    pub slot: u32,
    /// Guest-physical address.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// Host address.
    pub hva: u64,
}

struct RunningVcpu {
    thread: Option<JoinHandle<()>>,
    replies: Sender<u64>,
}

/// A VM with guest memory, page tables and vCPUs ready to run CPL3 guest code.
pub struct Vm {
    // Field order matters for drop: threads and KVM objects go before the memory they use.
    running: Vec<RunningVcpu>,
    watchdog: Option<JoinHandle<()>>,
    watchdog_stop: Arc<AtomicBool>,
    watchdog_ms: Arc<AtomicU64>,
    shared: Vec<Arc<VcpuShared>>,
    pending_fds: Vec<VcpuFd>,
    events_rx: Receiver<VcpuEvent>,
    events_tx: Sender<VcpuEvent>,
    ring_full: Option<RingFullHandler>,
    arch: ArchVm,
    tables: GuestTables,
    system: Mutex<SystemMemory>,
    vcpu_stacks: Vec<u64>,
    vm_fd: Arc<VmFd>,
    kvm: Kvm,
    memory: GuestMemoryMmap,
    page_map: GuestPageMap,
    memslots: Vec<MemslotInfo>,
    config: VmConfig,
    vm_stats: Option<KvmStats>,
    vcpu_stats: Vec<Option<KvmStats>>,
    setup_time: Duration,
    code_bytes: u64,
    slots: Vec<SlotMapping>,
    _system_mapping: HostMapping,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("config", &self.config)
            .field("memslots", &self.memslots)
            .finish_non_exhaustive()
    }
}

/// Opens /dev/kvm with a clear message when it is missing or not permitted.
pub fn open_kvm() -> Result<Kvm, VmError> {
    Kvm::new().map_err(|e| {
        VmError::NoKvm(match e.errno() {
            libc::ENOENT => "/dev/kvm does not exist: this host has no KVM (load kvm_intel or kvm_amd, or run inside `agelab lab`)".into(),
            libc::EACCES | libc::EPERM => "permission denied opening /dev/kvm: run as root or add your user to the 'kvm' group".into(),
            _ => format!("cannot open /dev/kvm: {e}"),
        })
    })
}

impl Vm {
    /// Creates the VM, its memory, page tables, code copies and vCPU file descriptors, one named
    /// step (`vm/build.rs`) per line.
    pub fn new(config: VmConfig) -> Result<Self, VmError> {
        let t0 = Instant::now();
        let slot_bytes = build::check_config(&config)?;
        let (kvm, vm_fd) = build::create_vm(&config)?;
        let slots = build::map_test_memory(&config, slot_bytes)?;
        let code = build::locate_guest_code(config.mem_bytes)?;
        let code_bytes: u64 = code.iter().map(|c| c.len).sum();
        let system_bytes = build::system_memory_bytes(&config, code_bytes)?;
        let system_mapping = HostMapping::new(&Backing::Anon, system_bytes, 0)?;
        let (memslots, memory) = build::register_memory(&vm_fd, &system_mapping, &slots)?;
        let arch = ArchVm::new(&kvm, &vm_fd)?;
        // SAFETY: the system mapping is live for the VM's lifetime (owned below) and nothing else
        // writes it before the vCPUs start.
        let mut system =
            unsafe { SystemMemory::new(SYSTEM_BASE, system_mapping.addr(), system_bytes) };
        let mut tables =
            build::build_guest_tables(&arch, &mut system, &config, &slots, slot_bytes)?;
        build::load_guest_code(&mut system, &mut tables.page_tables, &code)?;
        let vcpu_stacks = build::alloc_stacks(&mut system, &mut tables.page_tables, config.vcpus)?;
        let pending_fds = build::create_vcpus(&vm_fd, config.vcpus)?;
        let page_map = build::test_page_map(&slots);
        let vm_stats = KvmStats::open(&vm_fd).ok();
        let vcpu_stats = pending_fds.iter().map(|f| KvmStats::open(f).ok()).collect();
        let epoch = Instant::now();
        let shared = (0..config.vcpus)
            .map(|_| Arc::new(VcpuShared::new(epoch)))
            .collect();
        let (events_tx, events_rx) = mpsc::channel();
        Ok(Vm {
            running: Vec::new(),
            watchdog: None,
            watchdog_stop: Arc::new(AtomicBool::new(false)),
            watchdog_ms: Arc::new(AtomicU64::new(DEFAULT_WATCHDOG.as_millis() as u64)),
            shared,
            pending_fds,
            events_rx,
            events_tx,
            ring_full: None,
            arch,
            tables,
            system: Mutex::new(system),
            vcpu_stacks,
            vm_fd: Arc::new(vm_fd),
            kvm,
            memory,
            page_map,
            memslots,
            vm_stats,
            vcpu_stats,
            setup_time: t0.elapsed(),
            code_bytes,
            config,
            slots,
            _system_mapping: system_mapping,
        })
    }

    /// The configuration the VM was built with.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Every test-memory page with its GPA and HVA.
    pub fn page_map(&self) -> &GuestPageMap {
        &self.page_map
    }

    /// The host's view of all guest memory (system and test slots).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The KVM VM file descriptor.
    pub fn vm_fd(&self) -> &Arc<VmFd> {
        &self.vm_fd
    }

    /// The KVM system handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// Memslots: slot 0 is system memory, the rest test memory.
    pub fn memslots(&self) -> &[MemslotInfo] {
        &self.memslots
    }

    /// Host mappings of the test memory slots (files and memfds included).
    pub fn test_slots(&self) -> &[SlotMapping] {
        &self.slots
    }

    /// Time spent in [`Vm::new`].
    pub fn setup_time(&self) -> Duration {
        self.setup_time
    }

    /// Bytes of host code mirrored into the guest.
    pub fn code_bytes(&self) -> u64 {
        self.code_bytes
    }

    /// Number of vCPUs.
    pub fn vcpus(&self) -> usize {
        self.config.vcpus
    }

    /// Allocates zeroed, identity-mapped, untracked system memory; returns its guest address.
    pub fn alloc_system(&self, bytes: u64) -> Result<u64, VmError> {
        Ok(self.lock_system().alloc(bytes, PAGE_SIZE)?)
    }

    fn lock_system(&self) -> std::sync::MutexGuard<'_, SystemMemory> {
        self.system.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Guest-physical address a guest-virtual address maps to, through the guest page tables.
    pub fn translate(&self, gva: u64) -> Option<u64> {
        self.tables.page_tables.translate(&self.lock_system(), gva)
    }

    /// Re-registers memslot `slot` with `flags` (e.g. KVM_MEM_LOG_DIRTY_PAGES).
    pub fn set_memslot_flags(&self, slot: u32, flags: u32) -> Result<(), VmError> {
        let m = self
            .memslots
            .iter()
            .find(|m| m.slot == slot)
            .ok_or_else(|| VmError::Config(format!("no memslot {slot}")))?;
        build::set_memslot(&self.vm_fd, m, flags)
    }

    /// Installs the handler for dirty-ring-full exits (before [`Vm::start`]).
    pub fn set_ring_full_handler(&mut self, h: RingFullHandler) {
        self.ring_full = Some(h);
    }

    /// vCPU file descriptors not yet started (for per-vCPU setup such as dirty ring mmaps).
    pub fn pending_vcpu_fds(&self) -> &[VcpuFd] {
        &self.pending_fds
    }

    /// Sets the watchdog: a running vCPU without a ucall for `d` is stopped with a timeout error.
    /// `Duration::ZERO` disables it.
    pub fn set_watchdog(&self, d: Duration) {
        self.watchdog_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Starts every vCPU at guest function `entry` with per-vCPU arguments `args(i)`.
    ///
    /// `entry` is the host address of a guest function of this binary
    /// (`some_fn as usize`), with the C ABI, taking up to two `u64`s and never returning.
    pub fn start(&mut self, entry: usize, args: impl Fn(usize) -> [u64; 2]) -> Result<(), VmError> {
        if self.pending_fds.is_empty() {
            return Err(VmError::AlreadyStarted);
        }
        vcpu::install_kick_handler();
        let fds = std::mem::take(&mut self.pending_fds);
        for (i, fd) in fds.into_iter().enumerate() {
            self.arch.setup_vcpu(
                &fd,
                &self.tables,
                entry as u64,
                self.vcpu_stacks[i],
                args(i),
            )?;
            #[cfg(target_arch = "x86_64")]
            if self.config.guest_cpl0 {
                self.arch.set_kernel_mode(&fd)?;
            }
            let (reply_tx, reply_rx) = mpsc::channel();
            let t = VcpuThread {
                id: i,
                fd,
                mem: self.memory.clone(),
                shared: self.shared[i].clone(),
                events: self.events_tx.clone(),
                replies: reply_rx,
                ring_full: self.ring_full.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || t.run())
                .map_err(VmError::Thread)?;
            self.running.push(RunningVcpu {
                thread: Some(thread),
                replies: reply_tx,
            });
        }
        self.start_watchdog()
    }

    /// Starts the watchdog thread over the running vCPUs (see [`Vm::set_watchdog`]).
    fn start_watchdog(&mut self) -> Result<(), VmError> {
        let threads: Vec<libc::pthread_t> = self
            .running
            .iter()
            .map(|r| r.thread.as_ref().map_or(0, |t| t.as_pthread_t()))
            .collect();
        self.watchdog = Some(
            watchdog::spawn(
                self.shared.clone(),
                threads,
                self.watchdog_stop.clone(),
                self.watchdog_ms.clone(),
            )
            .map_err(VmError::Thread)?,
        );
        Ok(())
    }

    /// Waits up to `timeout` for the next vCPU event.
    pub fn next_event(&self, timeout: Duration) -> Result<VcpuEvent, VmError> {
        match self.events_rx.recv_timeout(timeout) {
            Ok(e) => Ok(e),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                Err(VmError::NoEvent(timeout))
            }
        }
    }

    /// Resumes vCPU `vcpu`, waiting in SYNC, with `reply` as the ucall's return value.
    pub fn resume(&self, vcpu: usize, reply: u64) -> Result<(), VmError> {
        let r = self.running.get(vcpu).ok_or(VmError::NotRunning(vcpu))?;
        r.replies.send(reply).map_err(|_| VmError::NotRunning(vcpu))
    }

    /// CPU time vCPU `vcpu`'s thread has used so far (user + system, including time in KVM_RUN
    /// and in host page faults it takes), read from its POSIX thread CPU clock
    /// (`pthread_getcpuclockid`); `None` when the vCPU is not running. Unlike wall time it does
    /// not grow while the thread waits for a CPU on a shared host, nor while it sleeps (e.g. on a
    /// userfaultfd fault another thread resolves).
    pub fn vcpu_cpu_time(&self, vcpu: usize) -> Option<Duration> {
        let t = self.running.get(vcpu)?.thread.as_ref()?;
        if self.shared[vcpu].finished.load(Ordering::SeqCst) {
            return None;
        }
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the thread is not joined (its JoinHandle is held), so its pthread_t is valid;
        // `clock` is a valid out-pointer.
        if unsafe { libc::pthread_getcpuclockid(t.as_pthread_t(), &mut clock) } != 0 {
            return None;
        }
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec the call fills in; `clock` came from
        // pthread_getcpuclockid.
        if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
            return None;
        }
        Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    /// vCPU `vcpu`'s scheduler statistics from `/proc/self/task/<tid>/schedstat`: time on a CPU
    /// and time waiting on a run queue (runnable but not running: the share a loaded host takes);
    /// `None` when the thread is not running or the file is missing (kernels without
    /// CONFIG_SCHED_INFO).
    pub fn vcpu_schedstat(&self, vcpu: usize) -> Option<(Duration, Duration)> {
        let tid = self.shared.get(vcpu)?.tid.load(Ordering::SeqCst);
        if tid == 0 || self.shared[vcpu].finished.load(Ordering::SeqCst) {
            return None;
        }
        let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
        let mut it = text.split_whitespace().map(|x| x.parse::<u64>().ok());
        let run = it.next()??;
        let wait = it.next()??;
        Some((Duration::from_nanos(run), Duration::from_nanos(wait)))
    }

    /// Exit counters of vCPU `vcpu`.
    pub fn exits(&self, vcpu: usize) -> &ExitCounters {
        &self.shared[vcpu].exits
    }

    /// Whether vCPU `vcpu`'s thread has ended.
    pub fn finished(&self, vcpu: usize) -> bool {
        self.shared[vcpu].finished.load(Ordering::SeqCst)
    }

    /// Stops every vCPU (kicking it out of KVM_RUN) and joins the threads. Idempotent.
    pub fn stop(&mut self) {
        for s in &self.shared {
            s.stop.store(true, Ordering::SeqCst);
        }
        let sig = vcpu::kick_signal();
        let deadline = Instant::now() + Duration::from_secs(5);
        for (i, r) in self.running.iter_mut().enumerate() {
            let Some(t) = r.thread.take() else { continue };
            while !self.shared[i].finished.load(Ordering::SeqCst) && Instant::now() < deadline {
                // SAFETY: the thread is not joined yet, so its pthread_t is valid.
                unsafe { libc::pthread_kill(t.as_pthread_t(), sig) };
                std::thread::sleep(Duration::from_millis(1));
            }
            if self.shared[i].finished.load(Ordering::SeqCst) {
                let _ = t.join();
            }
        }
        self.watchdog_stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }

    /// KVM binary stats of the VM and of each vCPU, read now.
    pub fn stats(&self) -> Result<VmStats, StatsError> {
        let vm = match &self.vm_stats {
            Some(s) => s.read()?,
            None => KvmStats::open(&*self.vm_fd)?.read()?,
        };
        let vcpus = self
            .vcpu_stats
            .iter()
            .map(|s| {
                s.as_ref()
                    .map(KvmStats::read)
                    .transpose()
                    .map(Option::unwrap_or_default)
            })
            .collect::<Result<_, _>>()?;
        Ok(VmStats { vm, vcpus })
    }

    /// Page faults KVM fixed for this VM's vCPUs so far (`pf_fixed`, summed), `None` where the
    /// stats cannot be read or a vCPU lacks the stat.
    pub fn kvm_faults_fixed(&self) -> Option<u64> {
        let stats = self.stats().ok()?;
        stats.vcpus.iter().map(|v| v.get("pf_fixed").copied()).sum()
    }

    /// Registers of a vCPU that was never started (diagnostics).
    pub fn pending_regs(&self, vcpu: usize) -> Option<VcpuRegs> {
        self.pending_fds.get(vcpu).map(VcpuRegs::read)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// KVM binary stats, name → value, for the VM and each vCPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmStats {
    /// VM-wide stats (e.g. `pages_4k`, `remote_tlb_flush`).
    pub vm: BTreeMap<String, u64>,
    /// Per-vCPU stats (e.g. `exits`, `pf_taken`), empty where unsupported.
    pub vcpus: Vec<BTreeMap<String, u64>>,
}
