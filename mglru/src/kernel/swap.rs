//! Swap for anonymous reclaim: reading `/proc/swaps`, zram devices, their locks and swap headers,
//! and the journal's undo of a zram swap ([`undo_zram`]); the swap set up for one run,
//! journaled, is [`ZramSwap`](crate::kernel::zram_swap::ZramSwap).
//!
//! `MADV_PAGEOUT` of anonymous or shmem memory needs swap; without it the kernel silently keeps
//! the pages. [`ZramSwap::setup`] turns an *unused* `/dev/zramN` into swap (reset, `disksize`,
//! swap header, `swapon`) and journals the undo (`swapoff`, reset) with
//! [`host_guard`](crate::host_guard) before touching it, so a normal exit, an error or a SIGINT
//! leaves the device as it was found, and a SIGKILL leaves a journal entry the next agelab command
//! undoes. A device that is already swap, or initialized by someone else, is refused, never
//! touched. A lock file serializes agelab processes (and threads) that want the same device;
//! [`ZramSwap::setup_free`] picks a device no one holds, hot-adding one when all are taken.
//!
//! [`ZramSwap::setup`]: crate::kernel::zram_swap::ZramSwap::setup
//! [`ZramSwap::setup_free`]: crate::kernel::zram_swap::ZramSwap::setup_free

use crate::host_guard::HostGuardError;
use crate::journal::{JournalError, Owner};
use crate::kernel::sysfs::{read_trimmed, read_u64, write_str, KernelFileError};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Size of the swap header page (mkswap writes one `PAGE_SIZE` header).
const HEADER_BYTES: usize = 4096;

/// The smallest zram swap agelab sets up: below it a swap area holds next to nothing beside its
/// header page.
pub const ZRAM_MIN_BYTES: u64 = 1 << 20;
/// Where the lock files live (tmpfs on most systems, cleared at boot).
const LOCK_DIR: &str = "/tmp";
/// zram's device creation interface.
pub(crate) const ZRAM_CONTROL: &str = "/sys/class/zram-control";
/// The UUID agelab writes into its swap headers (how an active swap is recognised as agelab's).
const AGELAB_SWAP_UUID: &[u8; 16] = b"agelab-zram-swap";

/// Errors around swap and zram.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// A kernel file could not be read or written.
    #[error(transparent)]
    File(#[from] KernelFileError),
    /// The zram device does not exist.
    #[error("{dev}: no such zram device (load the zram module: modprobe zram)")]
    NoDevice {
        /// The device.
        dev: String,
    },
    /// The device is in use by someone else: it is left alone.
    #[error("{dev} is in use ({why}); agelab never touches an existing zram/swap configuration")]
    InUse {
        /// The device.
        dev: String,
        /// What shows it is in use.
        why: String,
    },
    /// Another agelab process holds the device lock for too long.
    #[error("{lock}: another agelab run holds the zram lock (waited {waited:?})")]
    Locked {
        /// The lock file.
        lock: PathBuf,
        /// How long it waited.
        waited: Duration,
    },
    /// Opening, locking or writing a device or lock file failed.
    #[error("{what} {path}: {err}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
    /// `swapon(2)` or `swapoff(2)` failed.
    #[error("{call}({dev}): {err}")]
    Syscall {
        /// `swapon` or `swapoff`.
        call: &'static str,
        /// The device.
        dev: String,
        /// Cause.
        #[source]
        err: nix::Error,
    },
    /// Journaling the device, or undoing it, failed (nothing was changed when recording failed).
    #[error(transparent)]
    Guard(#[from] HostGuardError),
    /// The journal could not be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Another agelab process holds the device (journal entry).
    #[error("{dev} is swap of another agelab process, {owner}; not touched")]
    HeldByAgelab {
        /// The device.
        dev: String,
        /// Who holds it.
        owner: Owner,
    },
    /// Every zram device is taken and none can be hot-added.
    #[error("no free zram device and {ZRAM_CONTROL}/hot_add is missing: {taken}")]
    NoFreeDevice {
        /// Each device and who holds it.
        taken: String,
    },
    /// The requested size is too small for a swap area.
    #[error("zram size {bytes} bytes is too small for swap (at least 1 MiB)")]
    TooSmall {
        /// Requested bytes.
        bytes: u64,
    },
}

/// One line of `/proc/swaps`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SwapArea {
    /// Device or file.
    pub filename: String,
    /// `partition` or `file`.
    pub kind: String,
    /// Size, KiB.
    pub size_kib: u64,
    /// Used, KiB.
    pub used_kib: u64,
    /// Priority.
    pub priority: i64,
}

/// The active swap areas.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SwapStatus {
    /// One per line of `/proc/swaps`.
    pub areas: Vec<SwapArea>,
}

impl SwapStatus {
    /// Reads `/proc/swaps`.
    pub fn read() -> Result<Self, SwapError> {
        Ok(Self::parse(&read_trimmed("/proc/swaps")?))
    }

    /// Parses the text of `/proc/swaps` (header line first).
    pub fn parse(text: &str) -> Self {
        let areas = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 5 {
                    return None;
                }
                Some(SwapArea {
                    filename: f[0].to_string(),
                    kind: f[1].to_string(),
                    size_kib: f[2].parse().ok()?,
                    used_kib: f[3].parse().ok()?,
                    priority: f[4].parse().ok()?,
                })
            })
            .collect();
        SwapStatus { areas }
    }

    /// Whether any swap is active.
    pub fn any(&self) -> bool {
        !self.areas.is_empty()
    }

    /// Total free swap, KiB.
    pub fn free_kib(&self) -> u64 {
        self.areas
            .iter()
            .map(|a| a.size_kib.saturating_sub(a.used_kib))
            .sum()
    }

    /// Total used swap, KiB.
    pub fn used_kib(&self) -> u64 {
        self.areas.iter().map(|a| a.used_kib).sum()
    }

    /// Active areas that are not in `agelab` (the devices agelab journaled): swap someone else
    /// set up, which agelab may use but never removes.
    pub fn foreign<'a>(&'a self, agelab: &[String]) -> Vec<&'a SwapArea> {
        self.areas
            .iter()
            .filter(|a| !agelab.contains(&a.filename))
            .collect()
    }

    /// The area for `dev`, if active.
    pub fn area(&self, dev: &str) -> Option<&SwapArea> {
        self.areas.iter().find(|a| a.filename == dev)
    }
}

/// `mm_stat` of a zram device (first three fields, bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ZramMmStat {
    /// Uncompressed data stored.
    pub orig_data_size: u64,
    /// Compressed data stored.
    pub compr_data_size: u64,
    /// Memory the device uses, including allocator overhead.
    pub mem_used_total: u64,
}

impl ZramMmStat {
    /// The first three numbers of `mm_stat` text (missing or unparsable ones count as 0).
    pub fn parse(text: &str) -> Self {
        let f: Vec<u64> = text
            .split_whitespace()
            .take(3)
            .filter_map(|x| x.parse().ok())
            .collect();
        ZramMmStat {
            orig_data_size: f.first().copied().unwrap_or(0),
            compr_data_size: f.get(1).copied().unwrap_or(0),
            mem_used_total: f.get(2).copied().unwrap_or(0),
        }
    }
}

/// State of a zram device as read from sysfs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ZramState {
    /// `/dev/zramN`.
    pub dev: String,
    /// `initstate`: 1 once a disksize was set.
    pub initialized: bool,
    /// `disksize`, bytes.
    pub disksize: u64,
    /// Whether `/proc/swaps` lists it.
    pub swap_active: bool,
}

/// A zram device by index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZramDevice {
    index: u32,
}

impl ZramDevice {
    /// `/dev/zram<index>`.
    pub fn new(index: u32) -> Self {
        ZramDevice { index }
    }

    /// The device's index (`N` of `/dev/zramN`).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The device node path.
    pub fn dev(&self) -> String {
        format!("/dev/zram{}", self.index)
    }

    /// Its sysfs directory.
    pub fn sysfs(&self) -> PathBuf {
        PathBuf::from(format!("/sys/block/zram{}", self.index))
    }

    /// Whether the device exists.
    pub fn exists(&self) -> bool {
        self.sysfs().join("disksize").exists()
    }

    /// Reads its state.
    pub fn state(&self) -> Result<ZramState, SwapError> {
        if !self.exists() {
            return Err(SwapError::NoDevice { dev: self.dev() });
        }
        Ok(ZramState {
            dev: self.dev(),
            initialized: read_u64(self.sysfs().join("initstate"))? != 0,
            disksize: read_u64(self.sysfs().join("disksize"))?,
            swap_active: SwapStatus::read()?.area(&self.dev()).is_some(),
        })
    }

    /// Reads `mm_stat` (zeros when the device is not initialized).
    pub fn mm_stat(&self) -> Result<ZramMmStat, SwapError> {
        Ok(ZramMmStat::parse(&read_trimmed(
            self.sysfs().join("mm_stat"),
        )?))
    }

    /// Why the device cannot be used now (`None`: free).
    pub fn busy_reason(&self) -> Result<Option<String>, SwapError> {
        let st = self.state()?;
        Ok(if st.swap_active {
            Some("listed in /proc/swaps".into())
        } else if st.initialized || st.disksize != 0 {
            Some(format!("initialized, disksize {}", st.disksize))
        } else {
            None
        })
    }
}

/// The journal's undo of [`HostChange::ZramSwap`](crate::journal::HostChange::ZramSwap): swapoff
/// (only if the active swap carries agelab's header), reset, hot_remove if agelab created the
/// device. Harmless on a device that was never set up (a kill between the journal record and the
/// change).
pub(crate) fn undo_zram(index: u32, hot_added: bool) -> Result<String, SwapError> {
    let dev = ZramDevice::new(index);
    if !dev.exists() {
        return Ok(format!("{} already gone", dev.dev()));
    }
    let st = dev.state()?;
    if st.swap_active && !has_agelab_header(&dev.dev()) {
        return Err(SwapError::InUse {
            dev: dev.dev(),
            why: "active swap without agelab's swap header: someone else's now".into(),
        });
    }
    teardown(&dev)?;
    if hot_added {
        hot_remove(index)?;
        return Ok(format!("{} swapoff + reset + hot_remove", dev.dev()));
    }
    Ok(format!("{} swapoff + reset (disksize 0)", dev.dev()))
}

/// Whether the device's first page is a swap header agelab wrote.
fn has_agelab_header(dev: &str) -> bool {
    use std::io::Read;
    let mut h = vec![0u8; HEADER_BYTES];
    std::fs::File::open(dev)
        .and_then(|mut f| f.read_exact(&mut h))
        .is_ok()
        && &h[1036..1052] == AGELAB_SWAP_UUID
        && &h[HEADER_BYTES - 10..] == b"SWAPSPACE2"
}

/// Removes a zram device agelab hot-added (retried briefly: EBUSY while it is still open).
pub(crate) fn hot_remove(index: u32) -> Result<(), SwapError> {
    let path = Path::new(ZRAM_CONTROL).join("hot_remove");
    let mut last = None;
    for _ in 0..50 {
        if !ZramDevice::new(index).exists() {
            return Ok(());
        }
        match write_str(&path, &index.to_string()) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(last.expect("loop ran").into())
}

/// Indices of the existing zram devices, ascending.
pub fn zram_indices() -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir("/sys/block")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("zram")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// swapoff (if active) then reset; safe to call on a device in any state this module created.
fn teardown(dev: &ZramDevice) -> Result<(), SwapError> {
    if SwapStatus::read()?.area(&dev.dev()).is_some() {
        let c = CString::new(dev.dev()).expect("device path has no NUL");
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        let rc = unsafe { libc::swapoff(c.as_ptr()) };
        if rc != 0 {
            return Err(SwapError::Syscall {
                call: "swapoff",
                dev: dev.dev(),
                err: nix::Error::last(),
            });
        }
    }
    // reset fails with EBUSY while the block device is still open (swapoff closes it
    // asynchronously on some kernels): retry briefly.
    let mut last = None;
    for _ in 0..50 {
        match write_str(dev.sysfs().join("reset"), "1") {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(last.expect("loop ran").into())
}

/// The device lock if it is free now, `None` if another process holds it.
pub(crate) fn try_lock_device(index: u32) -> Result<Option<File>, SwapError> {
    match lock_device(index, Duration::ZERO) {
        Ok(f) => Ok(Some(f)),
        Err(SwapError::Locked { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn lock_device(index: u32, wait: Duration) -> Result<File, SwapError> {
    let path = Path::new(LOCK_DIR).join(format!("agelab-zram{index}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|err| SwapError::Io {
            what: "opening lock",
            path: path.clone(),
            err,
        })?;
    let t = Instant::now();
    loop {
        // SAFETY: flock on an fd this function owns; no memory is passed.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(f);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(SwapError::Io {
                what: "locking",
                path,
                err,
            });
        }
        if t.elapsed() >= wait {
            return Err(SwapError::Locked {
                lock: path,
                waited: t.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Takes the zram lock without setting anything up (tests that need "no agelab swap" hold it).
pub fn lock_zram(index: u32, wait: Duration) -> Result<File, SwapError> {
    lock_device(index, wait)
}

/// The swap header `mkswap` writes: version 1, last page, no bad pages, magic at the page end.
fn swap_header(bytes: u64) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_BYTES];
    let last_page = u32::try_from(bytes / HEADER_BYTES as u64 - 1).unwrap_or(u32::MAX);
    h[1024..1028].copy_from_slice(&1u32.to_ne_bytes());
    h[1028..1032].copy_from_slice(&last_page.to_ne_bytes());
    // nr_badpages = 0; a fixed UUID is fine: nothing mounts or identifies this area by it.
    h[1036..1052].copy_from_slice(AGELAB_SWAP_UUID);
    h[HEADER_BYTES - 10..].copy_from_slice(b"SWAPSPACE2");
    h
}

pub(crate) fn write_swap_header(dev: &str, bytes: u64) -> Result<(), SwapError> {
    use std::io::Write;
    let io = |what, err| SwapError::Io {
        what,
        path: dev.into(),
        err,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .map_err(|e| io("opening", e))?;
    f.write_all(&swap_header(bytes))
        .map_err(|e| io("writing swap header to", e))?;
    f.sync_all().map_err(|e| io("syncing", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_swaps() {
        let t = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/zram0 partition\t524284\t1024\t100\n";
        let s = SwapStatus::parse(t);
        assert_eq!(s.areas.len(), 1);
        assert_eq!(s.areas[0].filename, "/dev/zram0");
        assert_eq!(s.free_kib(), 524284 - 1024);
        assert!(SwapStatus::parse("Filename Type Size Used Priority\n")
            .areas
            .is_empty());
    }

    #[test]
    fn header_has_magic_and_last_page() {
        let h = swap_header(64 << 20);
        assert_eq!(&h[4086..], b"SWAPSPACE2");
        assert_eq!(u32::from_ne_bytes(h[1028..1032].try_into().unwrap()), 16383);
    }
}
