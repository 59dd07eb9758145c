//! Raw userfaultfd: the fd, its ioctls, fault messages, and a thread that resolves faults.
//!
//! Numbers and layouts follow `include/uapi/linux/userfaultfd.h`. The fd is opened without
//! `UFFD_USER_MODE_ONLY` so that faults taken by the kernel on our behalf (KVM faulting guest
//! memory in through GUP) reach us too; that needs root or `vm.unprivileged_userfaultfd=1`.

use agelab_util::cpu_time::thread_cpu_ns;
use agelab_vmm::{PageSet, PAGE_SIZE};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// `UFFD_API`.
pub const UFFD_API: u64 = 0xAA;

/// Feature: report the faulting thread id in `uffd_msg.pagefault.feat.ptid`.
pub const UFFD_FEATURE_THREAD_ID: u64 = 1 << 8;
/// Feature: MISSING mode on shmem.
pub const UFFD_FEATURE_MISSING_SHMEM: u64 = 1 << 5;
/// Feature: MINOR mode on hugetlbfs.
pub const UFFD_FEATURE_MINOR_HUGETLBFS: u64 = 1 << 9;
/// Feature: MINOR mode on shmem.
pub const UFFD_FEATURE_MINOR_SHMEM: u64 = 1 << 10;
/// Feature: WP mode on shmem and hugetlbfs.
pub const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
/// Feature: WP also covers pages never populated (PTE markers on anonymous memory).
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// Feature: the kernel resolves WP faults itself (for PAGEMAP_SCAN).
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;

/// Register mode: faults on pages absent from the page cache / never allocated.
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
/// Register mode: writes to write-protected pages.
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// Register mode: faults on pages present in the page cache but not mapped.
pub const UFFDIO_REGISTER_MODE_MINOR: u64 = 1 << 2;

/// `UFFDIO_WRITEPROTECT` mode: protect (otherwise unprotect and wake).
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

/// `uffd_msg.event` of a page fault.
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// Fault flag: the access was a write.
pub const UFFD_PAGEFAULT_FLAG_WRITE: u64 = 1 << 0;
/// Fault flag: a write to a write-protected page.
pub const UFFD_PAGEFAULT_FLAG_WP: u64 = 1 << 1;
/// Fault flag: a minor fault (page in the page cache, not mapped).
pub const UFFD_PAGEFAULT_FLAG_MINOR: u64 = 1 << 2;

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioApi {
    /// `UFFD_API`.
    pub api: u64,
    /// Requested (in) / offered (out) features.
    pub features: u64,
    /// Supported ioctls (out).
    pub ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioRange {
    /// Start address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioRegister {
    /// Range to register.
    pub range: UffdioRange,
    /// `UFFDIO_REGISTER_MODE_*`.
    pub mode: u64,
    /// ioctls usable on the range (out).
    pub ioctls: u64,
}

/// `struct uffdio_continue`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioContinue {
    /// Range.
    pub range: UffdioRange,
    /// Mode bits.
    pub mode: u64,
    /// Bytes mapped (out).
    pub mapped: i64,
}

/// `struct uffdio_zeropage`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioZeropage {
    /// Range.
    pub range: UffdioRange,
    /// Mode bits.
    pub mode: u64,
    /// Bytes zeroed (out).
    pub zeropage: i64,
}

/// `struct uffdio_writeprotect`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioWriteprotect {
    /// Range.
    pub range: UffdioRange,
    /// Mode bits.
    pub mode: u64,
}

nix::ioctl_readwrite!(uffdio_api, 0xAA, 0x3F, UffdioApi);
nix::ioctl_readwrite!(uffdio_register, 0xAA, 0x00, UffdioRegister);
nix::ioctl_read!(uffdio_unregister, 0xAA, 0x01, UffdioRange);
nix::ioctl_read!(uffdio_wake, 0xAA, 0x02, UffdioRange);
nix::ioctl_readwrite!(uffdio_zeropage, 0xAA, 0x04, UffdioZeropage);
nix::ioctl_readwrite!(uffdio_writeprotect, 0xAA, 0x06, UffdioWriteprotect);
nix::ioctl_readwrite!(uffdio_continue, 0xAA, 0x07, UffdioContinue);

/// One `struct uffd_msg` (32 bytes), page-fault view.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdMsg {
    /// `UFFD_EVENT_*`.
    pub event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    /// `UFFD_PAGEFAULT_FLAG_*`.
    pub flags: u64,
    /// Faulting address (page aligned).
    pub address: u64,
    /// Faulting thread id (with `UFFD_FEATURE_THREAD_ID`), otherwise 0.
    pub ptid: u32,
    pad: u32,
}

const _: () = assert!(std::mem::size_of::<UffdMsg>() == 32);

/// Errors from userfaultfd calls.
#[derive(Debug, thiserror::Error)]
pub enum UffdError {
    /// userfaultfd(2) failed.
    #[error("userfaultfd(2): {err}{hint}", hint = open_hint(*.err))]
    Open {
        /// Cause.
        #[source]
        err: nix::Error,
    },
    /// The kernel lacks features we need.
    #[error("userfaultfd lacks features {missing:#x} (kernel offers {offered:#x}){hint}", hint = feature_hint(*.missing))]
    Features {
        /// Features requested but not offered.
        missing: u64,
        /// Features the kernel offers.
        offered: u64,
    },
    /// `UFFDIO_API` failed.
    #[error("UFFDIO_API: {0}")]
    Api(#[source] nix::Error),
    /// `UFFDIO_REGISTER` failed.
    #[error("UFFDIO_REGISTER mode {mode:#x} on {start:#x}+{len:#x}: {err}")]
    Register {
        /// Range start.
        start: u64,
        /// Range length.
        len: u64,
        /// Requested mode.
        mode: u64,
        /// Cause.
        #[source]
        err: nix::Error,
    },
    /// A resolving or protecting ioctl failed.
    #[error("{what} {start:#x}+{len:#x}: {err}")]
    Ioctl {
        /// Which ioctl.
        what: &'static str,
        /// Range start.
        start: u64,
        /// Range length.
        len: u64,
        /// Cause.
        #[source]
        err: nix::Error,
    },
    /// Starting the fault thread failed.
    #[error("starting the fault thread: {0}")]
    Thread(#[source] std::io::Error),
    /// An eventfd for stopping the fault thread could not be made.
    #[error("eventfd: {0}")]
    EventFd(#[source] nix::Error),
}

fn open_hint(e: nix::Error) -> &'static str {
    match e {
        nix::Error::ENOSYS => " (kernel built without CONFIG_USERFAULTFD)",
        nix::Error::EPERM => {
            " (kernel-mode faults need root or CAP_SYS_PTRACE, or vm.unprivileged_userfaultfd=1)"
        }
        _ => "",
    }
}

fn feature_hint(missing: u64) -> &'static str {
    if missing & UFFD_FEATURE_MINOR_SHMEM != 0 {
        " (MINOR on shmem needs Linux 5.14+)"
    } else if missing & UFFD_FEATURE_WP_ASYNC != 0 {
        " (async write-protect needs Linux 6.7+)"
    } else if missing & UFFD_FEATURE_WP_UNPOPULATED != 0 {
        " (WP on unpopulated memory needs Linux 6.4+)"
    } else if missing & UFFD_FEATURE_WP_HUGETLBFS_SHMEM != 0 {
        " (WP on shmem needs Linux 5.19+)"
    } else {
        ""
    }
}

/// A userfaultfd with its API handshake done.
#[derive(Debug)]
pub struct Userfaultfd {
    fd: OwnedFd,
    features: u64,
}

/// Opens a userfaultfd (non-blocking, close-on-exec, kernel faults included).
pub fn open_raw() -> Result<OwnedFd, UffdError> {
    // SAFETY: userfaultfd(2) takes only flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(UffdError::Open {
            err: nix::Error::last(),
        });
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Features the kernel offers (asked on a throwaway fd: `UFFDIO_API` works once per fd).
pub fn offered_features() -> Result<u64, UffdError> {
    let probe = open_raw()?;
    let mut api = UffdioApi {
        api: UFFD_API,
        ..Default::default()
    };
    // SAFETY: valid uffd, `api` is a live uffdio_api; features=0 only queries.
    unsafe { uffdio_api(probe.as_raw_fd(), &mut api) }.map_err(UffdError::Api)?;
    Ok(api.features)
}

impl Userfaultfd {
    /// Opens a userfaultfd with `required` features plus whichever of `optional` the kernel has.
    pub fn new(required: u64, optional: u64) -> Result<Self, UffdError> {
        let offered = offered_features()?;
        if offered & required != required {
            return Err(UffdError::Features {
                missing: required & !offered,
                offered,
            });
        }
        let features = required | (optional & offered);
        let fd = open_raw()?;
        let mut api = UffdioApi {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        // SAFETY: valid uffd, `api` is a live uffdio_api.
        unsafe { uffdio_api(fd.as_raw_fd(), &mut api) }.map_err(UffdError::Api)?;
        Ok(Userfaultfd { fd, features })
    }

    /// Features negotiated.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Registers `[start, start + len)` in `mode` (`UFFDIO_REGISTER_MODE_*`).
    pub fn register(&self, start: u64, len: u64, mode: u64) -> Result<(), UffdError> {
        let mut reg = UffdioRegister {
            range: UffdioRange { start, len },
            mode,
            ioctls: 0,
        };
        // SAFETY: valid uffd, `reg` is a live uffdio_register; the kernel validates the range.
        unsafe { uffdio_register(self.fd.as_raw_fd(), &mut reg) }.map_err(|err| {
            UffdError::Register {
                start,
                len,
                mode,
                err,
            }
        })?;
        Ok(())
    }

    /// Unregisters a range (waking any thread blocked on a fault in it).
    pub fn unregister(&self, start: u64, len: u64) -> Result<(), UffdError> {
        unregister_fd(self.fd.as_fd(), start, len)
    }

    /// Maps the page-cache page at `start` (MINOR fault) and wakes the faulting threads.
    ///
    /// `EEXIST` (already mapped, e.g. a second vCPU faulted the same page) is success, returned
    /// as `true`: the waiters are woken explicitly, since the kernel wakes only after a map.
    pub fn continue_page(&self, start: u64, len: u64) -> Result<bool, UffdError> {
        let mut c = UffdioContinue {
            range: UffdioRange { start, len },
            ..Default::default()
        };
        loop {
            // SAFETY: valid uffd, `c` is a live uffdio_continue.
            match unsafe { uffdio_continue(self.fd.as_raw_fd(), &mut c) } {
                Ok(_) => return Ok(false),
                Err(nix::Error::EAGAIN) => continue,
                Err(nix::Error::EEXIST) => return self.wake(start, len).map(|()| true),
                Err(err) => {
                    return Err(UffdError::Ioctl {
                        what: "UFFDIO_CONTINUE",
                        start,
                        len,
                        err,
                    })
                }
            }
        }
    }

    /// Allocates a zeroed page at `start` (MISSING fault) and wakes the faulting threads.
    pub fn zero_page(&self, start: u64, len: u64) -> Result<(), UffdError> {
        let mut z = UffdioZeropage {
            range: UffdioRange { start, len },
            ..Default::default()
        };
        loop {
            // SAFETY: valid uffd, `z` is a live uffdio_zeropage.
            match unsafe { uffdio_zeropage(self.fd.as_raw_fd(), &mut z) } {
                Ok(_) => return Ok(()),
                Err(nix::Error::EAGAIN) => continue,
                Err(nix::Error::EEXIST) => return self.wake(start, len),
                Err(err) => {
                    return Err(UffdError::Ioctl {
                        what: "UFFDIO_ZEROPAGE",
                        start,
                        len,
                        err,
                    })
                }
            }
        }
    }

    /// Write-protects (`protect`) or unprotects and wakes a range.
    pub fn write_protect(&self, start: u64, len: u64, protect: bool) -> Result<(), UffdError> {
        let mut w = UffdioWriteprotect {
            range: UffdioRange { start, len },
            mode: if protect {
                UFFDIO_WRITEPROTECT_MODE_WP
            } else {
                0
            },
        };
        loop {
            // SAFETY: valid uffd, `w` is a live uffdio_writeprotect.
            match unsafe { uffdio_writeprotect(self.fd.as_raw_fd(), &mut w) } {
                Ok(_) => return Ok(()),
                Err(nix::Error::EAGAIN) => continue,
                Err(err) => {
                    return Err(UffdError::Ioctl {
                        what: "UFFDIO_WRITEPROTECT",
                        start,
                        len,
                        err,
                    })
                }
            }
        }
    }

    /// Wakes threads blocked on faults in a range (they retry the access).
    pub fn wake(&self, start: u64, len: u64) -> Result<(), UffdError> {
        let mut r = UffdioRange { start, len };
        // SAFETY: valid uffd, `r` is a live uffdio_range.
        unsafe { uffdio_wake(self.fd.as_raw_fd(), &mut r) }.map_err(|err| UffdError::Ioctl {
            what: "UFFDIO_WAKE",
            start,
            len,
            err,
        })?;
        Ok(())
    }

    /// Reads pending messages into `buf`; returns how many (0 when none are pending).
    pub fn read_msgs(&self, buf: &mut [UffdMsg]) -> Result<usize, nix::Error> {
        let bytes = std::mem::size_of_val(buf);
        // SAFETY: `buf` is a live, writable array of `bytes` bytes of plain-old-data messages.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), bytes) };
        if n < 0 {
            return match nix::Error::last() {
                nix::Error::EAGAIN => Ok(0),
                e => Err(e),
            };
        }
        Ok(n as usize / std::mem::size_of::<UffdMsg>())
    }

    /// A duplicate of the fd (for undo actions that must outlive a borrow).
    pub fn try_clone_fd(&self) -> std::io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

impl AsFd for Userfaultfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `UFFDIO_UNREGISTER` on any userfaultfd (an undo action may hold only a duplicated fd).
pub fn unregister_fd(fd: BorrowedFd<'_>, start: u64, len: u64) -> Result<(), UffdError> {
    let mut r = UffdioRange { start, len };
    // SAFETY: `fd` is a live userfaultfd; `r` is a live uffdio_range.
    unsafe { uffdio_unregister(fd.as_raw_fd(), &mut r) }.map_err(|err| UffdError::Ioctl {
        what: "UFFDIO_UNREGISTER",
        start,
        len,
        err,
    })?;
    Ok(())
}

/// A page bitmap the fault thread sets without locks and the harvester drains.
#[derive(Debug)]
pub struct AtomicPageBits {
    words: Vec<AtomicU64>,
    len: u64,
}

impl AtomicPageBits {
    /// An empty bitmap for `len` pages.
    pub fn new(len: u64) -> Self {
        AtomicPageBits {
            words: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            len,
        }
    }

    /// Sets page `i` (ignored past the end).
    pub fn insert(&self, i: u64) {
        if let Some(w) = self.words.get((i / 64) as usize) {
            w.fetch_or(1 << (i % 64), Ordering::Relaxed);
        }
    }

    /// Returns the pages set so far and clears them, word by word atomically.
    pub fn take(&self) -> PageSet {
        let words = self
            .words
            .iter()
            .map(|w| w.swap(0, Ordering::AcqRel))
            .collect();
        PageSet::from_words(words, self.len)
    }
}

/// Counters kept by a [`FaultThread`].
#[derive(Debug, Default)]
pub struct FaultCounters {
    /// Faults resolved.
    pub faults: AtomicU64,
    /// Faults whose resolution failed (the faulting thread was woken to retry).
    pub errors: AtomicU64,
    /// Reads of the fd that returned messages.
    pub batches: AtomicU64,
    /// CPU time the fault thread has used, in ns (user + system).
    pub cpu_ns: AtomicU64,
    /// The fault thread's kernel thread id.
    pub tid: AtomicI32,
}

/// A snapshot of [`FaultCounters`] with the wall time it covers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultStats {
    /// Faults resolved.
    pub faults: u64,
    /// Failed resolutions.
    pub errors: u64,
    /// CPU time of the fault thread in ns.
    pub cpu_ns: u64,
    /// Wall time covered, in seconds.
    pub wall_secs: f64,
}

impl FaultStats {
    /// Faults per second of wall time.
    pub fn faults_per_sec(&self) -> f64 {
        if self.wall_secs > 0.0 {
            self.faults as f64 / self.wall_secs
        } else {
            0.0
        }
    }

    /// Fault-thread CPU as a share of one CPU.
    pub fn cpu_share(&self) -> f64 {
        if self.wall_secs > 0.0 {
            self.cpu_ns as f64 / 1e9 / self.wall_secs
        } else {
            0.0
        }
    }

    /// Fault-thread CPU per fault, in ns.
    pub fn cpu_ns_per_fault(&self) -> f64 {
        if self.faults > 0 {
            self.cpu_ns as f64 / self.faults as f64
        } else {
            0.0
        }
    }

    /// The difference `self - earlier` (counters over an interval).
    pub fn since(&self, earlier: &FaultStats) -> FaultStats {
        FaultStats {
            faults: self.faults - earlier.faults,
            errors: self.errors - earlier.errors,
            cpu_ns: self.cpu_ns - earlier.cpu_ns,
            wall_secs: self.wall_secs - earlier.wall_secs,
        }
    }
}

/// What the fault handler is told about each page fault.
pub type FaultHandler = Box<dyn FnMut(&Userfaultfd, &UffdMsg) -> Result<(), UffdError> + Send>;

/// A dedicated thread that reads fault messages and resolves each one at once.
///
/// It never touches the registered memory itself, so a fault taken by any other thread (a vCPU in
/// KVM, or the VMM reading guest memory) is always resolved. Stopped by an eventfd, never by
/// closing the uffd under it.
#[derive(Debug)]
pub struct FaultThread {
    stop: Arc<OwnedFd>,
    handle: Option<JoinHandle<()>>,
    counters: Arc<FaultCounters>,
    started: Instant,
}

const MSG_BATCH: usize = 64;

impl FaultThread {
    /// Starts the thread on `uffd`; `handler` resolves one fault (and records it).
    pub fn spawn(
        name: &str,
        uffd: Arc<Userfaultfd>,
        mut handler: FaultHandler,
    ) -> Result<Self, UffdError> {
        let stop = nix::sys::eventfd::EventFd::from_flags(
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map_err(UffdError::EventFd)?;
        let stop = Arc::new(OwnedFd::from(stop));
        let counters = Arc::new(FaultCounters::default());
        let (s, c) = (stop.clone(), counters.clone());
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || fault_loop(&uffd, &s, &c, &mut handler))
            .map_err(UffdError::Thread)?;
        Ok(FaultThread {
            stop,
            handle: Some(handle),
            counters,
            started: Instant::now(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> FaultStats {
        FaultStats {
            faults: self.counters.faults.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
            cpu_ns: self.counters.cpu_ns.load(Ordering::Relaxed),
            wall_secs: self.started.elapsed().as_secs_f64(),
        }
    }

    /// The live counters.
    pub fn counters(&self) -> &FaultCounters {
        &self.counters
    }

    /// Whether the thread is still running.
    pub fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Stops and joins the thread (it finishes the batch in hand first).
    pub fn stop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writing 8 bytes from a live buffer to our eventfd.
        let _ = unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), 8) };
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for FaultThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn fault_loop(uffd: &Userfaultfd, stop: &OwnedFd, c: &FaultCounters, handler: &mut FaultHandler) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    c.tid
        .store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
    let mut buf = [UffdMsg::default(); MSG_BATCH];
    loop {
        let mut fds = [
            PollFd::new(uffd.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => break,
        }
        let stop_now = fds[1].revents().is_some_and(|r| !r.is_empty());
        let uffd_ready = fds[0].revents().unwrap_or(PollFlags::empty());
        if uffd_ready.intersects(PollFlags::POLLIN) {
            // Drain before polling again: under load the next faults are already queued.
            loop {
                let n = match uffd.read_msgs(&mut buf) {
                    Ok(n) => n,
                    Err(_) => return,
                };
                if n == 0 {
                    break;
                }
                c.batches.fetch_add(1, Ordering::Relaxed);
                for m in &buf[..n] {
                    if m.event != UFFD_EVENT_PAGEFAULT {
                        continue;
                    }
                    match handler(uffd, m) {
                        Ok(()) => c.faults.fetch_add(1, Ordering::Relaxed),
                        Err(_) => {
                            // Never leave a thread blocked: let it retry the access.
                            let _ = uffd.wake(m.address & !(PAGE_SIZE - 1), PAGE_SIZE);
                            c.errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }
            c.cpu_ns.store(thread_cpu_ns(), Ordering::Relaxed);
        } else if uffd_ready.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
            break;
        }
        if stop_now {
            break;
        }
    }
    c.cpu_ns.store(thread_cpu_ns(), Ordering::Relaxed);
}

/// Host ranges `(hva, first_page, pages)` sorted by address, for fault address → page index.
#[derive(Clone, Debug, Default)]
pub struct HvaIndex {
    ranges: Vec<(u64, u64, u64)>,
}

impl HvaIndex {
    /// Builds the index from a page map.
    pub fn new(map: &agelab_vmm::GuestPageMap) -> Self {
        let mut ranges: Vec<_> = map
            .ranges()
            .iter()
            .map(|r| (r.hva, r.first_page, r.pages))
            .collect();
        ranges.sort_unstable();
        HvaIndex { ranges }
    }

    /// Dense page index of `hva`.
    pub fn page_of(&self, hva: u64) -> Option<u64> {
        let i = self
            .ranges
            .partition_point(|r| r.0 + r.2 * PAGE_SIZE <= hva);
        let &(start, first, _) = self.ranges.get(i).filter(|r| hva >= r.0)?;
        Some(first + (hva - start) / PAGE_SIZE)
    }
}

/// Calls `f(hva, bytes)` for each run of consecutive pages of `set` that is contiguous in the
/// host address space (runs never cross a memslot).
pub fn for_each_hva_run(
    map: &agelab_vmm::GuestPageMap,
    set: &PageSet,
    mut f: impl FnMut(u64, u64),
) {
    for r in map.ranges() {
        let mut run: Option<(u64, u64)> = None;
        let words = set.words();
        let (lo, hi) = (r.first_page, r.first_page + r.pages);
        let mut p = lo;
        while p < hi {
            let w = words.get((p / 64) as usize).copied().unwrap_or(0) >> (p % 64);
            if w == 0 {
                // Skip to the next word.
                p = (p / 64 + 1) * 64;
                continue;
            }
            if w & 1 != 0 {
                let hva = r.hva + (p - lo) * PAGE_SIZE;
                run = match run {
                    Some((s, n)) if s + n * PAGE_SIZE == hva => Some((s, n + 1)),
                    Some((s, n)) => {
                        f(s, n * PAGE_SIZE);
                        Some((hva, 1))
                    }
                    None => Some((hva, 1)),
                };
                p += 1;
            } else {
                p += u64::from(w.trailing_zeros());
            }
        }
        if let Some((s, n)) = run {
            f(s, n * PAGE_SIZE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agelab_vmm::{BackingKind, GuestPageMap, PageRange};

    #[test]
    fn hva_runs_split_at_gaps_and_slots() {
        let r = |gpa, hva, pages, slot| {
            PageRange::unnumbered(gpa, hva, pages, slot, BackingKind::Memfd)
        };
        let map = GuestPageMap::new(vec![
            r(0, 0x10_0000, 100, 0),
            r(0x100_0000, 0x80_0000, 100, 1),
        ]);
        let mut s = PageSet::new(200);
        for p in [0, 1, 2, 5, 63, 64, 65, 99, 100, 101, 199] {
            s.insert(p);
        }
        let mut runs = Vec::new();
        for_each_hva_run(&map, &s, |a, l| runs.push((a, l / PAGE_SIZE)));
        assert_eq!(
            runs,
            vec![
                (0x10_0000, 3),
                (0x10_0000 + 5 * 4096, 1),
                (0x10_0000 + 63 * 4096, 3),
                (0x10_0000 + 99 * 4096, 1),
                (0x80_0000, 2),
                (0x80_0000 + 99 * 4096, 1),
            ]
        );
        let idx = HvaIndex::new(&map);
        assert_eq!(idx.page_of(0x80_0000 + 4096 * 3 + 5), Some(103));
        assert_eq!(idx.page_of(0x10_0000 + 99 * 4096), Some(99));
        assert_eq!(idx.page_of(0x10_0000 + 100 * 4096), None);
    }

    #[test]
    fn atomic_bits_take_clears() {
        let b = AtomicPageBits::new(130);
        b.insert(3);
        b.insert(129);
        b.insert(500);
        let s = b.take();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 129]);
        assert!(b.take().is_empty());
    }
}
