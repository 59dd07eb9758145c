//! The VM: KVM objects, memory, vCPU threads, the watchdog and the event stream.

use crate::arch::{ArchError, ArchVm, GuestTables, MapSize, PageTables, VcpuRegs};
use crate::loader::{self, LoaderError};
use crate::memory::{self, Backing, HostMapping, MemoryError, SlotMapping, HUGE_2M};
use crate::page_map::{GuestPageMap, PageRange, PAGE_SIZE};
use crate::stats::{KvmStats, StatsError};
use crate::system::{SystemMemory, SystemMemoryError};
use crate::vcpu::{self, ExitCounters, RingFullHandler, VcpuEvent, VcpuShared, VcpuThread};
use agelab_guest::abi::{SYSTEM_BASE, TEST_BASE, UCALL_MMIO_ADDR};
use kvm_bindings::kvm_userspace_memory_region;
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
    /// workloads (see the README's KVM dirty tracking section).
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
    /// Creates the VM, its memory, page tables, code copies and vCPU file descriptors.
    pub fn new(config: VmConfig) -> Result<Self, VmError> {
        let t0 = Instant::now();
        if config.vcpus == 0 || config.vcpus > 256 {
            return Err(VmError::Config(format!(
                "vcpus must be 1..=256, got {}",
                config.vcpus
            )));
        }
        if config.guest_cpl0 && !cfg!(target_arch = "x86_64") {
            return Err(VmError::Config(
                "guest_cpl0 is an x86_64 option (CPL0 = kernel mode)".into(),
            ));
        }
        if config.slots == 0 || config.slots > 64 {
            return Err(VmError::Config(format!(
                "slots must be 1..=64, got {}",
                config.slots
            )));
        }
        memory::check_layout(&config.backing, config.mem_bytes, config.slots)?;
        let slot_bytes = config.mem_bytes / config.slots as u64;
        let kvm = open_kvm()?;
        let vm_fd = kvm.create_vm().map_err(|err| VmError::Kvm {
            what: "KVM_CREATE_VM",
            err,
        })?;
        if let Some(entries) = config.dirty_ring_entries {
            crate::kvm_raw::enable_dirty_ring(&vm_fd, entries).map_err(|err| VmError::Kvm {
                what: "KVM_ENABLE_CAP(DIRTY_LOG_RING)",
                err,
            })?;
        }

        // Test memory.
        let mut slots = Vec::with_capacity(config.slots);
        // A file backing is one file for all slots, each slot mapping its own offset.
        let backing_file = match &config.backing {
            Backing::File(p) => Some(memory::open_backing_file(p, config.mem_bytes, 0)?),
            _ => None,
        };
        for i in 0..config.slots {
            let mapping = match &backing_file {
                Some(f) => HostMapping::shared_at(
                    f.try_clone().map_err(|err| MemoryError::Os {
                        what: "dup(backing file)",
                        err,
                    })?,
                    i as u64 * slot_bytes,
                    slot_bytes as usize,
                )?,
                None => HostMapping::new(&config.backing, slot_bytes, i)?,
            };
            slots.push(SlotMapping {
                slot: i as u32 + 1,
                gpa: TEST_BASE + i as u64 * slot_bytes,
                mapping,
                backing: config.backing.kind(),
            });
        }

        // Guest code to mirror.
        let code = loader::code_regions()?;
        let code_bytes: u64 = code.iter().map(|c| c.len).sum();
        let test_end = TEST_BASE + config.mem_bytes;
        for c in &code {
            if c.start < test_end && c.start + c.len > UCALL_MMIO_ADDR {
                return Err(VmError::LayoutConflict {
                    name: c.name.clone(),
                    start: c.start,
                    end: c.start + c.len,
                    gpa_start: UCALL_MMIO_ADDR,
                    gpa_end: test_end,
                });
            }
        }

        // System memory: tables, stacks, code copies, control blocks, heap.
        let per_vcpu = STACK_BYTES + 3 * PAGE_SIZE;
        let mut system_bytes = (4 << 20)
            + config.vcpus as u64 * per_vcpu
            + code_bytes
            + PageTables::estimate(config.mem_bytes)
            + PageTables::estimate(code_bytes)
            + config.heap_bytes;
        system_bytes += PageTables::estimate(system_bytes);
        let system_bytes = system_bytes.next_multiple_of(HUGE_2M);
        if SYSTEM_BASE + system_bytes > TEST_BASE {
            return Err(VmError::Config(format!(
                "system memory of {} MiB does not fit below test memory",
                system_bytes >> 20
            )));
        }
        let system_mapping = HostMapping::new(&Backing::Anon, system_bytes, 0)?;
        let memslots: Vec<MemslotInfo> = std::iter::once(MemslotInfo {
            slot: 0,
            gpa: SYSTEM_BASE,
            size: system_bytes,
            hva: system_mapping.addr() as u64,
        })
        .chain(slots.iter().map(|s| MemslotInfo {
            slot: s.slot,
            gpa: s.gpa,
            size: s.mapping.len() as u64,
            hva: s.mapping.addr() as u64,
        }))
        .collect();
        for m in &memslots {
            set_memslot(&vm_fd, m, 0)?;
        }
        let memory = memory::guest_memory(
            &std::iter::once((SYSTEM_BASE, &system_mapping))
                .chain(slots.iter().map(|s| (s.gpa, &s.mapping)))
                .collect::<Vec<_>>(),
        )?;

        let arch = ArchVm::new(&kvm, &vm_fd)?;
        // SAFETY: the system mapping is live for the VM's lifetime (owned below) and nothing else
        // writes it before the vCPUs start.
        let mut system =
            unsafe { SystemMemory::new(SYSTEM_BASE, system_mapping.addr(), system_bytes) };
        let mut tables = arch.build_tables(&mut system)?;
        let pt = &mut tables.page_tables;
        pt.map_range(
            &mut system,
            SYSTEM_BASE,
            SYSTEM_BASE,
            system_bytes,
            MapSize::Size4K,
        )?;
        pt.map(
            &mut system,
            UCALL_MMIO_ADDR,
            UCALL_MMIO_ADDR,
            MapSize::Size4K,
        )?;
        let huge = config
            .guest_huge_pages
            .unwrap_or(matches!(config.backing, Backing::Thp | Backing::HugeTlb));
        let size = if huge && slot_bytes.is_multiple_of(HUGE_2M) {
            MapSize::Size2M
        } else {
            MapSize::Size4K
        };
        for s in &slots {
            pt.map_range(&mut system, s.gpa, s.gpa, s.mapping.len() as u64, size)?;
        }
        for c in &code {
            let gpa = system.alloc(c.len, PAGE_SIZE)?;
            // SAFETY: `c` is a readable, non-writable mapping of this process listed in
            // /proc/self/maps, so reading `len` bytes from `start` is valid.
            let bytes = unsafe { std::slice::from_raw_parts(c.start as *const u8, c.len as usize) };
            system.write_bytes(gpa, bytes);
            pt.map_range(&mut system, c.start, gpa, c.len, MapSize::Size4K)?;
        }
        let mut vcpu_stacks = Vec::with_capacity(config.vcpus);
        for _ in 0..config.vcpus {
            let base = system.alloc(STACK_BYTES + PAGE_SIZE, PAGE_SIZE)?;
            pt.unmap_4k(&mut system, base);
            vcpu_stacks.push(base + PAGE_SIZE + STACK_BYTES);
        }
        let mut pending_fds = Vec::with_capacity(config.vcpus);
        for i in 0..config.vcpus {
            pending_fds.push(vm_fd.create_vcpu(i as u64).map_err(|err| VmError::Kvm {
                what: "KVM_CREATE_VCPU",
                err,
            })?);
        }
        let page_map = GuestPageMap::new(
            slots
                .iter()
                .map(|s| PageRange {
                    first_page: 0,
                    pages: s.mapping.len() as u64 / PAGE_SIZE,
                    gpa: s.gpa,
                    hva: s.mapping.addr() as u64,
                    slot: s.slot,
                    backing: s.backing.clone(),
                })
                .collect(),
        );
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
        set_memslot(&self.vm_fd, m, flags)
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
        let shared = self.shared.clone();
        let threads: Vec<libc::pthread_t> = self
            .running
            .iter()
            .map(|r| r.thread.as_ref().map_or(0, |t| t.as_pthread_t()))
            .collect();
        let stop = self.watchdog_stop.clone();
        let limit = self.watchdog_ms.clone();
        self.watchdog = Some(
            std::thread::Builder::new()
                .name("watchdog".into())
                .spawn(move || watchdog(shared, threads, stop, limit))
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

fn watchdog(
    shared: Vec<Arc<VcpuShared>>,
    threads: Vec<libc::pthread_t>,
    stop: Arc<AtomicBool>,
    limit: Arc<AtomicU64>,
) {
    let sig = vcpu::kick_signal();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        let ms = limit.load(Ordering::SeqCst);
        for (s, &t) in shared.iter().zip(&threads) {
            let running = !s.idle.load(Ordering::SeqCst) && !s.finished.load(Ordering::SeqCst);
            let expired = ms > 0 && s.since_progress() > Duration::from_millis(ms);
            if (running && expired && !s.stop.load(Ordering::SeqCst))
                || (s.timed_out.load(Ordering::SeqCst) && !s.finished.load(Ordering::SeqCst))
            {
                s.timed_out.store(true, Ordering::SeqCst);
                // SAFETY: vCPU threads are joined only after this thread stops, so `t` is valid.
                unsafe { libc::pthread_kill(t, sig) };
            }
        }
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

fn set_memslot(vm: &VmFd, m: &MemslotInfo, flags: u32) -> Result<(), VmError> {
    let region = kvm_userspace_memory_region {
        slot: m.slot,
        flags,
        guest_phys_addr: m.gpa,
        memory_size: m.size,
        userspace_addr: m.hva,
    };
    // SAFETY: the host range is a live mapping owned by the VM for at least as long as the VM fd.
    unsafe { vm.set_user_memory_region(region) }.map_err(|err| VmError::Kvm {
        what: "KVM_SET_USER_MEMORY_REGION",
        err,
    })
}
