//! A zram device turned into swap for one run ([`ZramSwap`]), journaled before it is touched so
//! that every exit path, and the next agelab command after a SIGKILL, undoes it; and what the
//! journal says about agelab's zram devices. The device itself, its lock and the undo are in
//! [`swap`](crate::kernel::swap).

use crate::host_guard::{HostRestore, RestoreGuard};
use crate::journal::{HostChange, Journal, Owner};
use crate::kernel::swap::{
    hot_remove, lock_device, try_lock_device, write_swap_header, zram_indices, SwapError,
    ZramDevice, ZRAM_CONTROL, ZRAM_MIN_BYTES,
};
use crate::kernel::sysfs::{read_u64, write_str};
use std::ffi::CString;
use std::fs::File;
use std::path::Path;
use std::time::Duration;

/// Swap priority of the zram devices agelab sets up (`swapon -p`): above any default.
pub const AGELAB_SWAP_PRIORITY: i32 = 10_000;
/// `<linux/swap.h>`: the priority in the flags is meant.
const SWAP_FLAG_PREFER: i32 = 0x8000;
/// `<linux/swap.h>`: bits of the priority.
const SWAP_FLAG_PRIO_MASK: i32 = 0x7fff;

/// A zram device turned into swap for this run; dropping it (or a signal) undoes it.
#[derive(Debug)]
pub struct ZramSwap {
    device: ZramDevice,
    bytes: u64,
    hot_added: bool,
    // Dropped first (field order): swapoff + reset while the lock is still held.
    guard: Option<RestoreGuard>,
    _lock: File,
}

impl ZramSwap {
    /// Turns free `/dev/zram<index>` into `bytes` of swap, waiting up to `wait` for another agelab
    /// run that holds the device lock.
    pub fn setup(index: u32, bytes: u64, wait: Duration) -> Result<Self, SwapError> {
        if bytes < ZRAM_MIN_BYTES {
            return Err(SwapError::TooSmall { bytes });
        }
        let device = ZramDevice::new(index);
        if !device.exists() {
            return Err(SwapError::NoDevice { dev: device.dev() });
        }
        let lock = lock_device(index, wait)?;
        if let Some(owner) = journal_owner(index)? {
            return Err(SwapError::HeldByAgelab {
                dev: device.dev(),
                owner,
            });
        }
        if let Some(why) = device.busy_reason()? {
            return Err(SwapError::InUse {
                dev: device.dev(),
                why,
            });
        }
        Self::setup_locked(device, lock, bytes, false)
    }

    /// Turns a zram device no one uses into `bytes` of swap: the first existing device that is
    /// free (not locked, not journaled by another agelab process, not initialized, not swap), else
    /// a new one from `/sys/class/zram-control/hot_add` (hot-removed again on undo). Refuses,
    /// naming each device's holder, when none is free and none can be added.
    pub fn setup_free(bytes: u64) -> Result<Self, SwapError> {
        if bytes < ZRAM_MIN_BYTES {
            return Err(SwapError::TooSmall { bytes });
        }
        let mut taken = Vec::new();
        for index in zram_indices() {
            let device = ZramDevice::new(index);
            let Some(lock) = try_lock_device(index)? else {
                taken.push(format!("{} locked by another agelab process", device.dev()));
                continue;
            };
            if let Some(owner) = journal_owner(index)? {
                taken.push(format!("{} held by agelab {owner}", device.dev()));
                continue;
            }
            match device.busy_reason()? {
                Some(why) => taken.push(format!("{} in use ({why})", device.dev())),
                None => return Self::setup_locked(device, lock, bytes, false),
            }
        }
        let hot_add = Path::new(ZRAM_CONTROL).join("hot_add");
        if !hot_add.exists() {
            return Err(SwapError::NoFreeDevice {
                taken: if taken.is_empty() {
                    "no zram devices (modprobe zram)".into()
                } else {
                    taken.join("; ")
                },
            });
        }
        // Reading hot_add creates the device and returns its index. (A kill between this read and
        // the journal record below leaks one empty device: the only unjournaled window.)
        let index = u32::try_from(read_u64(&hot_add)?).unwrap_or(u32::MAX);
        let device = ZramDevice::new(index);
        let lock = match try_lock_device(index) {
            Ok(Some(l)) => l,
            other => {
                let _ = hot_remove(index);
                return match other {
                    Err(e) => Err(e),
                    _ => Err(SwapError::InUse {
                        dev: device.dev(),
                        why: "just hot-added, yet its lock is held".into(),
                    }),
                };
            }
        };
        Self::setup_locked(device, lock, bytes, true)
    }

    /// Journals, then sets up, a device whose lock is held and which was checked free.
    fn setup_locked(
        device: ZramDevice,
        lock: File,
        bytes: u64,
        hot_added: bool,
    ) -> Result<Self, SwapError> {
        let index = device.index();
        let description = format!(
            "{} swapoff + reset{}",
            device.dev(),
            if hot_added { " + hot_remove" } else { "" }
        );
        let guard =
            match HostRestore::record(description, HostChange::ZramSwap { index, hot_added }) {
                Ok(g) => g,
                Err(e) => {
                    if hot_added {
                        let _ = hot_remove(index);
                    }
                    return Err(e.into());
                }
            };
        let sys = device.sysfs();
        // The device is uninitialized (checked by the caller): reset only clears leftovers such
        // as a previous comp_algorithm choice and cannot drop anyone's data.
        write_str(sys.join("reset"), "1")?;
        write_str(sys.join("disksize"), &bytes.to_string())?;
        write_swap_header(&device.dev(), bytes)?;
        let c = CString::new(device.dev()).expect("device path has no NUL");
        // A high preferred priority: the run's pages go to the device the run made, not to a
        // swap area someone else (another agelab run, the host) had before. Equal priorities
        // of concurrent runs share round-robin, which is still correct.
        let flags = SWAP_FLAG_PREFER | (AGELAB_SWAP_PRIORITY & SWAP_FLAG_PRIO_MASK);
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call; `flags` carry only
        // a priority (no discard).
        let rc = unsafe { libc::swapon(c.as_ptr(), flags) };
        if rc != 0 {
            return Err(SwapError::Syscall {
                call: "swapon",
                dev: device.dev(),
                err: nix::Error::last(),
            });
        }
        Ok(ZramSwap {
            device,
            bytes,
            hot_added,
            guard: Some(guard),
            _lock: lock,
        })
    }

    /// Whether agelab created the device (hot-add) for this swap.
    pub fn hot_added(&self) -> bool {
        self.hot_added
    }

    /// The device.
    pub fn device(&self) -> &ZramDevice {
        &self.device
    }

    /// Swap size, bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Tears the swap down now (same as dropping, but reports errors).
    pub fn teardown(mut self) -> Result<(), SwapError> {
        if let Some(g) = self.guard.take() {
            g.restore()?;
        }
        Ok(())
    }
}

impl Drop for ZramSwap {
    fn drop(&mut self) {
        // The guard's drop runs the undo; explicit so the order against the lock is obvious.
        self.guard.take();
    }
}

/// The agelab process that journaled `/dev/zram<index>` (alive or not yet reconciled), if any.
pub fn journal_owner(index: u32) -> Result<Option<Owner>, SwapError> {
    Ok(Journal::system()
        .all_changes()?
        .into_iter()
        .find(|(_, c)| matches!(c, HostChange::ZramSwap { index: i, .. } if *i == index))
        .map(|(o, _)| o))
}

/// Devices (`/dev/zramN`) that agelab journaled as its swap, whoever owns them.
pub fn agelab_swap_devices() -> Result<Vec<String>, SwapError> {
    Ok(Journal::system()
        .all_changes()?
        .into_iter()
        .filter_map(|(_, c)| match c {
            HostChange::ZramSwap { index, .. } => Some(ZramDevice::new(index).dev()),
            _ => None,
        })
        .collect())
}
