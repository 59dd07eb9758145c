//! vCPU threads: one per vCPU, running KVM_RUN and turning every exit into an event or an error.

use crate::arch::VcpuRegs;
use crate::ucall::{read_ucall, write_reply, Ucall, UcallError};
use agelab_guest::abi::{UCALL_ARGS, UCALL_MMIO_ADDR};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};
use vm_memory::GuestMemoryMmap;

/// Exit reason number of KVM_EXIT_DIRTY_RING_FULL (not named by kvm-ioctls).
pub const KVM_EXIT_DIRTY_RING_FULL: u32 = 31;

/// Something a vCPU reports to the controlling thread.
#[derive(Debug)]
pub enum VcpuEvent {
    /// SYNC(stage, args): the vCPU waits for [`crate::Vm::resume`].
    Sync {
        /// vCPU index.
        vcpu: usize,
        /// Stage.
        stage: u64,
        /// Further arguments.
        args: [u64; UCALL_ARGS - 1],
    },
    /// Guest text.
    Printf {
        /// vCPU index.
        vcpu: usize,
        /// The text.
        text: String,
    },
    /// The guest finished; its thread has ended.
    Done {
        /// vCPU index.
        vcpu: usize,
    },
    /// A guest assertion failed; the vCPU's thread has ended.
    Abort {
        /// vCPU index.
        vcpu: usize,
        /// Source file.
        file: String,
        /// Line.
        line: u32,
        /// Message.
        message: String,
    },
    /// The vCPU stopped on an error; its thread has ended.
    Failed(VcpuError),
}

/// Why a vCPU stopped abnormally. Every variant carries the registers at the stop.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM_EXIT_SHUTDOWN: a triple fault (any exception, as the guest has no IDT).
    #[error("vCPU {vcpu}: guest shut down (triple fault / unhandled exception): {regs}")]
    Shutdown {
        /// vCPU index.
        vcpu: usize,
        /// Registers.
        regs: Box<VcpuRegs>,
    },
    /// A CPU exception in guest code, caught by the guest's exception vectors.
    #[error("vCPU {vcpu}: guest exception: {regs}")]
    Exception {
        /// vCPU index.
        vcpu: usize,
        /// Registers, with the exception frame.
        regs: Box<VcpuRegs>,
    },
    /// KVM_EXIT_INTERNAL_ERROR.
    #[error("vCPU {vcpu}: KVM internal error, suberror {suberror}: {regs}")]
    InternalError {
        /// vCPU index.
        vcpu: usize,
        /// KVM's suberror code.
        suberror: u32,
        /// Registers.
        regs: Box<VcpuRegs>,
    },
    /// KVM_EXIT_FAIL_ENTRY.
    #[error("vCPU {vcpu}: VM entry failed, hardware reason {reason:#x}: {regs}")]
    FailEntry {
        /// vCPU index.
        vcpu: usize,
        /// Hardware entry failure reason.
        reason: u64,
        /// Registers.
        regs: Box<VcpuRegs>,
    },
    /// Any other exit the VMM does not handle.
    #[error("vCPU {vcpu}: unexpected exit: {what}: {regs}")]
    UnexpectedExit {
        /// vCPU index.
        vcpu: usize,
        /// The exit.
        what: String,
        /// Registers.
        regs: Box<VcpuRegs>,
    },
    /// The watchdog saw no ucall for too long.
    #[error("vCPU {vcpu}: watchdog: no ucall for {:.1} s (guest stuck or spinning): {regs}", after.as_secs_f64())]
    Timeout {
        /// vCPU index.
        vcpu: usize,
        /// Time since the last ucall.
        after: Duration,
        /// Registers.
        regs: Box<VcpuRegs>,
    },
    /// KVM_RUN itself failed.
    #[error("vCPU {vcpu}: KVM_RUN failed: {err}")]
    Run {
        /// vCPU index.
        vcpu: usize,
        /// The error.
        #[source]
        err: kvm_ioctls::Error,
    },
    /// A ucall message could not be decoded.
    #[error("vCPU {vcpu}: bad ucall: {err}: {regs}")]
    Ucall {
        /// vCPU index.
        vcpu: usize,
        /// The decoding error.
        #[source]
        err: UcallError,
        /// Registers.
        regs: Box<VcpuRegs>,
    },
}

impl VcpuError {
    /// The vCPU the error belongs to.
    pub fn vcpu(&self) -> usize {
        match self {
            VcpuError::Shutdown { vcpu, .. }
            | VcpuError::Exception { vcpu, .. }
            | VcpuError::InternalError { vcpu, .. }
            | VcpuError::FailEntry { vcpu, .. }
            | VcpuError::UnexpectedExit { vcpu, .. }
            | VcpuError::Timeout { vcpu, .. }
            | VcpuError::Run { vcpu, .. }
            | VcpuError::Ucall { vcpu, .. } => *vcpu,
        }
    }

    /// The registers at the stop, where known.
    pub fn regs(&self) -> Option<&VcpuRegs> {
        match self {
            VcpuError::Shutdown { regs, .. }
            | VcpuError::Exception { regs, .. }
            | VcpuError::InternalError { regs, .. }
            | VcpuError::FailEntry { regs, .. }
            | VcpuError::UnexpectedExit { regs, .. }
            | VcpuError::Timeout { regs, .. }
            | VcpuError::Ucall { regs, .. } => Some(regs),
            VcpuError::Run { .. } => None,
        }
    }
}

/// Exit counters of one vCPU.
#[derive(Debug, Default)]
pub struct ExitCounters {
    /// Ucalls.
    pub ucall: AtomicU64,
    /// KVM_RUN returns with EINTR (kicks).
    pub intr: AtomicU64,
    /// Dirty ring full exits.
    pub ring_full: AtomicU64,
    /// Exits that ended the vCPU with an error.
    pub fatal: AtomicU64,
}

/// State shared between a vCPU thread, the controller and the watchdog.
#[derive(Debug)]
pub struct VcpuShared {
    /// Set by the host to make the thread leave.
    pub stop: AtomicBool,
    /// Set by the watchdog before kicking.
    pub timed_out: AtomicBool,
    /// Set while the vCPU is not running guest code (waiting for the host, or ended).
    pub idle: AtomicBool,
    /// Set when the thread has ended.
    pub finished: AtomicBool,
    /// Milliseconds (since `epoch`) of the last ucall or start.
    pub last_progress_ms: AtomicU64,
    /// Exit counters.
    pub exits: ExitCounters,
    /// The thread's kernel task id (0 until it starts).
    pub tid: std::sync::atomic::AtomicI32,
    epoch: Instant,
}

impl VcpuShared {
    /// Fresh shared state.
    pub fn new(epoch: Instant) -> Self {
        VcpuShared {
            stop: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            idle: AtomicBool::new(true),
            finished: AtomicBool::new(false),
            last_progress_ms: AtomicU64::new(0),
            exits: ExitCounters::default(),
            tid: std::sync::atomic::AtomicI32::new(0),
            epoch,
        }
    }

    /// Records progress now.
    pub fn progress(&self) {
        self.last_progress_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last progress.
    pub fn since_progress(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_progress_ms.load(Ordering::Relaxed)))
    }
}

/// Handler for dirty-ring-full exits: harvests the vCPU's ring so it can run on.
pub type RingFullHandler = Arc<dyn Fn(usize) + Send + Sync>;

/// Everything a vCPU thread owns.
pub(crate) struct VcpuThread {
    pub id: usize,
    pub fd: VcpuFd,
    pub mem: GuestMemoryMmap,
    pub shared: Arc<VcpuShared>,
    pub events: Sender<VcpuEvent>,
    pub replies: Receiver<u64>,
    pub ring_full: Option<RingFullHandler>,
}

/// Signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 2
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler once per process, without SA_RESTART so KVM_RUN returns EINTR.
pub fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        vmm_sys_util::signal::register_signal_handler(kick_signal(), noop_handler)
            .expect("registering the vCPU kick signal handler");
    });
}

enum Flow {
    Continue,
    End,
}

impl VcpuThread {
    /// The thread body.
    pub fn run(mut self) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        self.shared.tid.store(tid, Ordering::SeqCst);
        self.shared.progress();
        self.shared.idle.store(false, Ordering::SeqCst);
        let result = self.run_loop();
        self.shared.idle.store(true, Ordering::SeqCst);
        if let Err(e) = result {
            self.shared.exits.fatal.fetch_add(1, Ordering::Relaxed);
            let _ = self.events.send(VcpuEvent::Failed(e));
        }
        self.shared.finished.store(true, Ordering::SeqCst);
    }

    fn regs(&self) -> Box<VcpuRegs> {
        Box::new(VcpuRegs::read(&self.fd))
    }

    fn run_loop(&mut self) -> Result<(), VcpuError> {
        let vcpu = self.id;
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let exit = match self.fd.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.shared.exits.intr.fetch_add(1, Ordering::Relaxed);
                    if self.shared.timed_out.load(Ordering::SeqCst) {
                        return Err(VcpuError::Timeout {
                            vcpu,
                            after: self.shared.since_progress(),
                            regs: self.regs(),
                        });
                    }
                    continue;
                }
                Err(err) => return Err(VcpuError::Run { vcpu, err }),
            };
            // Copy what the exit says before touching the vCPU fd again.
            let unexpected = match exit {
                VcpuExit::MmioWrite(addr, data) if addr == UCALL_MMIO_ADDR && data.len() == 8 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(data);
                    let msg = u64::from_le_bytes(b);
                    match self.handle_ucall(msg)? {
                        Flow::Continue => continue,
                        Flow::End => return Ok(()),
                    }
                }
                // The guest's exception vectors (x86 IDT stubs, aarch64 EL1 vectors) report a fault.
                VcpuExit::MmioWrite(addr, data) if crate::arch::is_exception_report(addr) => {
                    let mut b = [0u8; 8];
                    let n = data.len().min(8);
                    b[..n].copy_from_slice(&data[..n]);
                    let frame = u64::from_le_bytes(b);
                    let mut regs = self.regs();
                    crate::arch::decode_exception(&mut regs, &self.mem, frame);
                    return Err(VcpuError::Exception { vcpu, regs });
                }
                VcpuExit::MmioWrite(addr, data) => {
                    format!("MMIO write of {} bytes to {addr:#x}", data.len())
                }
                VcpuExit::MmioRead(addr, data) => {
                    format!("MMIO read of {} bytes from {addr:#x}", data.len())
                }
                VcpuExit::IoOut(port, _) => format!("port I/O out to {port:#x}"),
                VcpuExit::IoIn(port, _) => format!("port I/O in from {port:#x}"),
                VcpuExit::Shutdown => {
                    return Err(VcpuError::Shutdown {
                        vcpu,
                        regs: self.regs(),
                    })
                }
                VcpuExit::InternalError => {
                    // SAFETY: reading the `internal` member of kvm_run's exit union, which KVM
                    // filled for KVM_EXIT_INTERNAL_ERROR.
                    let suberror =
                        unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                    let mut regs = self.regs();
                    if let Some(frame) = crate::arch::stuck_exception_report(&regs, &self.mem) {
                        crate::arch::decode_exception(&mut regs, &self.mem, frame);
                        return Err(VcpuError::Exception { vcpu, regs });
                    }
                    return Err(VcpuError::InternalError {
                        vcpu,
                        suberror,
                        regs,
                    });
                }
                VcpuExit::FailEntry(reason, _) => {
                    return Err(VcpuError::FailEntry {
                        vcpu,
                        reason,
                        regs: self.regs(),
                    })
                }
                VcpuExit::Unsupported(KVM_EXIT_DIRTY_RING_FULL) => {
                    self.shared.exits.ring_full.fetch_add(1, Ordering::Relaxed);
                    match &self.ring_full {
                        Some(h) => {
                            h(vcpu);
                            continue;
                        }
                        None => "dirty ring full, but no dirty ring handler".to_string(),
                    }
                }
                VcpuExit::Intr => continue,
                other => format!("{other:?}"),
            };
            return Err(VcpuError::UnexpectedExit {
                vcpu,
                what: unexpected,
                regs: self.regs(),
            });
        }
    }

    fn handle_ucall(&mut self, msg: u64) -> Result<Flow, VcpuError> {
        let vcpu = self.id;
        self.shared.exits.ucall.fetch_add(1, Ordering::Relaxed);
        self.shared.progress();
        let ucall = read_ucall(&self.mem, msg).map_err(|err| VcpuError::Ucall {
            vcpu,
            err,
            regs: self.regs(),
        })?;
        match ucall {
            Ucall::Printf(text) => {
                let _ = self.events.send(VcpuEvent::Printf { vcpu, text });
                Ok(Flow::Continue)
            }
            Ucall::Done => {
                let _ = self.events.send(VcpuEvent::Done { vcpu });
                Ok(Flow::End)
            }
            Ucall::Abort {
                file,
                line,
                message,
            } => {
                let _ = self.events.send(VcpuEvent::Abort {
                    vcpu,
                    file,
                    line,
                    message,
                });
                Ok(Flow::End)
            }
            Ucall::Sync { stage, args } => {
                self.shared.idle.store(true, Ordering::SeqCst);
                if self
                    .events
                    .send(VcpuEvent::Sync { vcpu, stage, args })
                    .is_err()
                {
                    return Ok(Flow::End);
                }
                let reply = loop {
                    match self.replies.recv_timeout(Duration::from_millis(50)) {
                        Ok(r) => break r,
                        Err(RecvTimeoutError::Timeout)
                            if !self.shared.stop.load(Ordering::SeqCst) => {}
                        Err(_) => return Ok(Flow::End),
                    }
                };
                write_reply(&self.mem, msg, reply).map_err(|err| VcpuError::Ucall {
                    vcpu,
                    err,
                    regs: self.regs(),
                })?;
                self.shared.progress();
                self.shared.idle.store(false, Ordering::SeqCst);
                Ok(Flow::Continue)
            }
        }
    }
}
