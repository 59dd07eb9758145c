//! A dedicated child memory cgroup for guest memory, on cgroup v1 or v2.
//!
//! lru_gen keeps generations per memcg, so putting the guest's memory in its own memcg makes the
//! kernel's per-generation counts (and aging/eviction commands) about the guest alone. Memory is
//! charged when a task of the memcg first faults it in (to the memcg of the mm's owner, i.e. the
//! process), and existing charges do not move with a task: move the process in before it touches
//! guest memory.
//!
//! The cgroup is created as a child of the calling process's own memcg by default (so limits the
//! process already lives under keep applying), removed on drop, and removal is journaled with
//! [`host_guard`](crate::host_guard) before the directory is made, so a signal or panic cleans it
//! up and a SIGKILL leaves an entry the next agelab command undoes. Names carry the pid
//! (`NAME-<pid>`), so two agelab processes never want the same directory.

use super::lru_gen::LruGenDebugfs;
use super::sysfs::{read_trimmed, read_u64, write_str, KernelFileError};
use crate::host_guard::{HostGuardError, HostRestore, RestoreGuard};
use crate::journal::knobs::CGROUP_SUBTREE_CONTROL;
use crate::journal::HostChange;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where cgroup v1's memory controller is conventionally mounted.
pub const V1_MEMORY_MOUNT: &str = "/sys/fs/cgroup/memory";

/// Errors from memcg handling.
#[derive(Debug, thiserror::Error)]
pub enum MemcgError {
    /// No memory controller was found.
    #[error("no memory cgroup: no cgroup v1 `memory` mount and no cgroup2 mount with `memory` in cgroup.controllers")]
    NoMemoryController,
    /// The process's own cgroup could not be determined.
    #[error("cannot find this process's memory cgroup in /proc/self/cgroup")]
    OwnCgroupUnknown,
    /// A cgroup file operation failed.
    #[error(transparent)]
    File(#[from] KernelFileError),
    /// Creating the directory failed.
    #[error("creating cgroup {path}: {err}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// Cause (EEXIST: a cgroup of that name exists already; not reused, it is not ours).
        #[source]
        err: std::io::Error,
    },
    /// The operation does not exist on this cgroup version.
    #[error("{what} is not available on cgroup {version:?}: {hint}")]
    Unsupported {
        /// The operation.
        what: &'static str,
        /// The version in use.
        version: CgroupVersion,
        /// What to do instead.
        hint: &'static str,
    },
    /// Journaling the change failed (nothing was created).
    #[error(transparent)]
    Guard(#[from] HostGuardError),
    /// The helper that faults shared memory in from inside the memcg failed.
    #[error("charging {what} to memcg {path}: the helper failed to {step}: {err}")]
    ChargeHelper {
        /// What was being charged (e.g. `64 MiB of memfd`).
        what: String,
        /// The memcg directory.
        path: PathBuf,
        /// The step that failed (`fork`, `join the memcg`, `mmap`, `populate`, ...).
        step: &'static str,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
    /// Private memory can only be charged by the process that owns it, from inside the memcg.
    #[error("charging private memory to memcg {path}: this process (pid {pid}) is not in it; private pages are charged to the memcg of the process that faults them (join it first)")]
    NotMember {
        /// The memcg directory.
        path: PathBuf,
        /// This process.
        pid: u32,
    },
    /// Faulting private memory in failed.
    #[error("charging {len} bytes of private memory at {addr:#x} to memcg {path}: MADV_POPULATE_WRITE: {err} (needs Linux 5.14+)")]
    Populate {
        /// Start address.
        addr: usize,
        /// Length.
        len: usize,
        /// The memcg directory.
        path: PathBuf,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
    /// Enabling the memory controller for children failed.
    #[error("enabling +memory in {path}/cgroup.subtree_control: {err} (cgroup v2 forbids it while that cgroup has processes of its own)")]
    SubtreeControl {
        /// The parent cgroup.
        path: PathBuf,
        /// Cause.
        #[source]
        err: KernelFileError,
    },
}

/// Which cgroup hierarchy the memcg lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy hierarchy with a separate `memory` mount.
    V1,
    /// Unified hierarchy.
    V2,
}

/// A memory controller hierarchy: version and mount point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryHierarchy {
    /// v1 or v2.
    pub version: CgroupVersion,
    /// Mount point of the hierarchy.
    pub mount: PathBuf,
}

impl MemoryHierarchy {
    /// Finds the memory controller: a v1 `memory` mount first, else a cgroup2 mount offering
    /// `memory` (the kernel's lru_gen selftest looks in the same two places).
    pub fn detect() -> Result<Self, MemcgError> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        Self::from_mounts(&mounts, |mount| {
            read_trimmed(mount.join("cgroup.controllers")).unwrap_or_default()
        })
        .ok_or(MemcgError::NoMemoryController)
    }

    /// The memory hierarchy named in `mounts` (the text of `/proc/self/mounts`): a v1 `memory`
    /// mount first, else the first cgroup2 mount whose `cgroup.controllers` (read through
    /// `controllers`) lists `memory`.
    pub fn from_mounts(mounts: &str, controllers: impl Fn(&Path) -> String) -> Option<Self> {
        let mut v2 = None;
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            match f[2] {
                "cgroup" if f[3].split(',').any(|o| o == "memory") => {
                    return Some(MemoryHierarchy {
                        version: CgroupVersion::V1,
                        mount: f[1].into(),
                    })
                }
                "cgroup2" if v2.is_none() => {
                    let ctl = controllers(Path::new(f[1]));
                    if ctl.split_whitespace().any(|c| c == "memory") {
                        v2 = Some(PathBuf::from(f[1]));
                    }
                }
                _ => {}
            }
        }
        v2.map(|mount| MemoryHierarchy {
            version: CgroupVersion::V2,
            mount,
        })
    }

    /// This process's cgroup in the hierarchy, as a path relative to its root (`/a/b`).
    pub fn own_cgroup(&self) -> Result<String, MemcgError> {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        self.cgroup_in(&text).ok_or(MemcgError::OwnCgroupUnknown)
    }

    /// The cgroup path of this hierarchy in `text` (a `/proc/<pid>/cgroup` file).
    pub fn cgroup_in(&self, text: &str) -> Option<String> {
        text.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, ctrls, path) = (parts.next(), parts.next(), parts.next());
            let hit = match self.version {
                CgroupVersion::V1 => ctrls?.split(',').any(|c| c == "memory"),
                CgroupVersion::V2 => ctrls?.is_empty(),
            };
            hit.then(|| path.map(str::to_string)).flatten()
        })
    }
}

/// `cgroup.procs` text: one pid per line (lines that are not a pid are skipped).
pub fn parse_procs(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// `memory.stat` (v1 or v2) text as (key, value) pairs; lines that are not `key number` are
/// skipped.
pub fn parse_memory_stat(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A hard-limit file's text (`memory.max` on v2, `memory.limit_in_bytes` on v1) as bytes, `None`
/// for unlimited (`max`, or v1's PAGE_COUNTER_MAX-sized number); `Err` with the text otherwise.
pub fn parse_limit(version: CgroupVersion, text: &str) -> Result<Option<u64>, NotALimit> {
    // v1 reports "unlimited" as PAGE_COUNTER_MAX pages rounded to bytes, a huge number.
    let unlimited_from = match version {
        CgroupVersion::V1 => 1u64 << 62,
        CgroupVersion::V2 => u64::MAX,
    };
    let s = text.trim();
    if s == "max" {
        return Ok(None);
    }
    let v: u64 = s.parse().map_err(|_| NotALimit(s.to_string()))?;
    Ok((v < unlimited_from).then_some(v))
}

/// A hard-limit file's text that is neither `max` nor a number of bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotALimit(pub String);

/// A child memcg created (and owned) by this process.
#[derive(Debug)]
pub struct GuestMemcg {
    hierarchy: MemoryHierarchy,
    dir: PathBuf,
    rel_path: String,
    parent_dir: PathBuf,
    // Field order matters: the directory is removed before the parent's subtree_control is
    // restored (fields drop in declaration order).
    remove_guard: Option<RestoreGuard>,
    subtree_guard: Option<RestoreGuard>,
}

impl GuestMemcg {
    /// Creates `name` under this process's own memcg in the detected hierarchy.
    pub fn create(name: &str) -> Result<Self, MemcgError> {
        let h = MemoryHierarchy::detect()?;
        let parent = h.own_cgroup()?;
        Self::create_under(h, &parent, name)
    }

    /// Creates `name-<pid>` under `parent` (a path relative to the hierarchy root, `/` for the
    /// root); a `name` that already ends in `-<pid>` is used as is.
    pub fn create_under(
        hierarchy: MemoryHierarchy,
        parent: &str,
        name: &str,
    ) -> Result<Self, MemcgError> {
        let name = unique_name(name);
        let name = name.as_str();
        let parent_rel = parent.trim_end_matches('/');
        let parent_dir = hierarchy.mount.join(parent_rel.trim_start_matches('/'));
        let rel_path = format!("{parent_rel}/{name}");
        let dir = parent_dir.join(name);
        let subtree_guard = match hierarchy.version {
            CgroupVersion::V2 => enable_memory_subtree(&parent_dir)?,
            CgroupVersion::V1 => None,
        };
        if dir.exists() {
            // Not ours (the name carries our pid, so someone else made it): never reused.
            return Err(MemcgError::Create {
                path: dir,
                err: std::io::Error::from_raw_os_error(libc::EEXIST),
            });
        }
        let remove_guard = Some(HostRestore::record(
            format!("memcg {} removed", dir.display()),
            HostChange::Memcg {
                dir: dir.clone(),
                parent_dir: parent_dir.clone(),
            },
        )?);
        if let Err(err) = std::fs::create_dir(&dir) {
            // Not created: forget the entry rather than "undo" (which would rmdir a directory
            // someone else made in between).
            if let Some(g) = remove_guard {
                g.dismiss();
            }
            return Err(MemcgError::Create { path: dir, err });
        }
        Ok(GuestMemcg {
            hierarchy,
            dir,
            rel_path,
            parent_dir,
            remove_guard,
            subtree_guard,
        })
    }

    /// cgroup v1 or v2.
    pub fn version(&self) -> CgroupVersion {
        self.hierarchy.version
    }

    /// The cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parent cgroup directory (where tasks go back on removal).
    pub fn parent_dir(&self) -> &Path {
        &self.parent_dir
    }

    /// Whether creating it enabled `+memory` in the parent's subtree_control (restored on drop).
    pub fn enabled_parent_memory_controller(&self) -> bool {
        self.subtree_guard.is_some()
    }

    /// Path relative to the hierarchy root, as `/sys/kernel/debug/lru_gen` prints it.
    pub fn path(&self) -> &str {
        &self.rel_path
    }

    /// Moves process `pid` (all its threads) in.
    pub fn add_process(&self, pid: i32) -> Result<(), MemcgError> {
        Ok(write_str(self.dir.join("cgroup.procs"), &pid.to_string())?)
    }

    /// Moves one thread in (v1 `tasks` only; memory is still charged to the process's memcg).
    pub fn add_thread(&self, tid: i32) -> Result<(), MemcgError> {
        match self.hierarchy.version {
            CgroupVersion::V1 => Ok(write_str(self.dir.join("tasks"), &tid.to_string())?),
            CgroupVersion::V2 => Err(MemcgError::Unsupported {
                what: "moving a single thread",
                version: CgroupVersion::V2,
                hint: "domain cgroups take whole processes; use add_process",
            }),
        }
    }

    /// Processes in the memcg.
    pub fn processes(&self) -> Result<Vec<i32>, MemcgError> {
        Ok(parse_procs(&read_trimmed(self.dir.join("cgroup.procs"))?))
    }

    /// Bytes charged to the memcg now.
    pub fn usage_bytes(&self) -> Result<u64, MemcgError> {
        let file = match self.hierarchy.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        Ok(read_u64(self.dir.join(file))?)
    }

    /// `memory.stat` as (key, value) pairs.
    pub fn stat(&self) -> Result<Vec<(String, u64)>, MemcgError> {
        Ok(parse_memory_stat(&read_trimmed(
            self.dir.join("memory.stat"),
        )?))
    }

    /// Sets the hard limit (`None` = unlimited): `memory.limit_in_bytes` (v1) / `memory.max` (v2).
    pub fn set_limit(&self, bytes: Option<u64>) -> Result<(), MemcgError> {
        let (file, value) = match (self.hierarchy.version, bytes) {
            (CgroupVersion::V1, Some(b)) => ("memory.limit_in_bytes", b.to_string()),
            (CgroupVersion::V1, None) => ("memory.limit_in_bytes", "-1".to_string()),
            (CgroupVersion::V2, Some(b)) => ("memory.max", b.to_string()),
            (CgroupVersion::V2, None) => ("memory.max", "max".to_string()),
        };
        Ok(write_str(self.dir.join(file), &value)?)
    }

    /// The hard limit in bytes (`None` = unlimited).
    pub fn limit(&self) -> Result<Option<u64>, MemcgError> {
        let file = match self.hierarchy.version {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        };
        let s = read_trimmed(self.dir.join(file))?;
        parse_limit(self.hierarchy.version, &s).map_err(|e| {
            MemcgError::File(KernelFileError {
                op: "read".into(),
                path: self.dir.join(file),
                err: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })
        })
    }

    /// Proactively reclaims `bytes` (cgroup v2 `memory.reclaim`; EAGAIN if less was reclaimed).
    pub fn reclaim(&self, bytes: u64) -> Result<(), MemcgError> {
        match self.hierarchy.version {
            CgroupVersion::V2 => Ok(write_str(
                self.dir.join("memory.reclaim"),
                &bytes.to_string(),
            )?),
            CgroupVersion::V1 => Err(MemcgError::Unsupported {
                what: "memory.reclaim",
                version: CgroupVersion::V1,
                hint: "lower memory.limit_in_bytes, or use lru_gen eviction commands",
            }),
        }
    }

    /// Charges pages `[offset, offset + len)` of `file` (a memfd/shmem or a regular file) to
    /// this memcg, whichever memcg the calling process is in.
    ///
    /// Shared pages are charged to the memcg of the task that first faults them into the page
    /// cache and stay there, whoever maps them later. So a helper is forked that joins this memcg
    /// (writes `0`, "myself", to its `cgroup.procs`: v1 and v2), maps the range `MAP_SHARED`,
    /// faults every page in with `MADV_POPULATE_READ` (a read fault allocates a shmem or page-cache
    /// page without changing data; pages touched one by one where the advice is missing, before
    /// 5.14) and `_exit`s. Pages already in the page cache keep the memcg they have. After `fork`
    /// the helper only makes system calls (the process may have other threads): every path and
    /// buffer is prepared before it. Failures come back through a pipe as (step, errno).
    pub fn charge_shared(&self, file: &File, offset: u64, len: usize) -> Result<(), MemcgError> {
        let what = format!("{} KiB of {}", len >> 10, describe_fd(file));
        let fail = |step: &'static str, err: std::io::Error| MemcgError::ChargeHelper {
            what: what.clone(),
            path: self.dir.clone(),
            step,
            err,
        };
        if len == 0 {
            return Ok(());
        }
        let procs = CString::new(self.dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|e| fail("name cgroup.procs", std::io::Error::other(e)))?;
        let mut pipe = [0i32; 2];
        // SAFETY: `pipe` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(fail(
                "create its status pipe",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
        let fd = file.as_raw_fd();
        // SAFETY: the child runs only `charge_child`, which makes async-signal-safe system calls
        // on memory prepared before the fork and ends in `_exit`; the parent continues normally.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(fail("fork", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: in the forked child; see charge_child's contract.
            unsafe { charge_child(&procs, fd, offset, len, wr.as_raw_fd()) }
        }
        drop(wr);
        let mut status = 0;
        loop {
            // SAFETY: waiting for the child we just forked; `status` is a valid out pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(fail("be waited for", e));
            }
        }
        // Non-blocking: a fork elsewhere in the process may hold a copy of the write end open.
        let mut report = [0u8; 8];
        let n = std::fs::File::from(rd).read(&mut report).unwrap_or(0);
        if n == report.len() {
            let step = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
            let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
            let step = CHILD_STEPS.get(step as usize).copied().unwrap_or("run");
            return Err(fail(step, std::io::Error::from_raw_os_error(errno)));
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(fail(
                "exit cleanly",
                std::io::Error::other(format!("wait status {status:#x}")),
            ));
        }
        Ok(())
    }

    /// Charges the calling process's own private memory `[addr, addr + len)` (anonymous, THP) to
    /// this memcg by faulting every page in writable (`MADV_POPULATE_WRITE`: allocates, never
    /// changes data). Private pages are charged to the memcg of the process that owns the mm, so
    /// the process must be in this memcg ([`MemcgError::NotMember`] otherwise); pages already
    /// present keep their memcg.
    pub fn charge_private(&self, addr: *mut u8, len: usize) -> Result<(), MemcgError> {
        let pid = std::process::id();
        if !self.processes()?.contains(&(pid as i32)) {
            return Err(MemcgError::NotMember {
                path: self.dir.clone(),
                pid,
            });
        }
        // SAFETY: populating page tables of a mapping the caller owns; no data changes.
        let rc = unsafe { libc::madvise(addr.cast(), len, libc::MADV_POPULATE_WRITE) };
        if rc != 0 {
            return Err(MemcgError::Populate {
                addr: addr as usize,
                len,
                path: self.dir.clone(),
                err: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// This memcg's lru_gen id, looked up by path in a debugfs listing.
    pub fn lru_gen_id(&self, listing: &LruGenDebugfs) -> Option<u64> {
        listing.memcg_by_path(&self.rel_path).map(|m| m.id)
    }

    /// Removes the memcg now (moving its tasks to the parent first).
    pub fn remove(mut self) {
        self.remove_guard.take();
    }
}

/// What each failing step of the charging helper reports (index = step number).
const CHILD_STEPS: [&str; 4] = [
    "open cgroup.procs",
    "join the memcg",
    "mmap the memory shared",
    "fault the pages in",
];

/// The charging helper after `fork`: joins the memcg through `procs` (its `cgroup.procs`), maps
/// `len` bytes of `fd` from `offset` shared, faults every page in and `_exit`s; on failure writes
/// (step, errno) to `status_fd` and exits 1.
///
/// # Safety
/// Call only in a freshly forked child. It uses nothing but system calls on its arguments (no
/// allocation, no locks), so it is safe after forking a multi-threaded process, and never returns.
unsafe fn charge_child(procs: &CStr, fd: i32, offset: u64, len: usize, status_fd: i32) -> ! {
    let die = |step: u32| -> ! {
        // SAFETY: errno is thread-local and readable at any time.
        let errno = unsafe { *libc::__errno_location() };
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&step.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: writing 8 bytes from a stack buffer, then ending the child without unwinding.
        unsafe {
            libc::write(status_fd, msg.as_ptr().cast(), msg.len());
            libc::_exit(1)
        }
    };
    // SAFETY: `procs` is NUL-terminated; plain open/write/close system calls.
    unsafe {
        let cg = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if cg < 0 {
            die(0);
        }
        if libc::write(cg, b"0".as_ptr().cast(), 1) != 1 {
            die(1);
        }
        libc::close(cg);
    }
    // SAFETY: a new shared mapping of the inherited descriptor, at an address the kernel picks.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            offset as libc::off_t,
        )
    };
    if addr == libc::MAP_FAILED {
        die(2);
    }
    // SAFETY: advising the mapping made above.
    if unsafe { libc::madvise(addr, len, libc::MADV_POPULATE_READ) } != 0 {
        // SAFETY: errno is thread-local and readable at any time.
        if unsafe { *libc::__errno_location() } != libc::EINVAL {
            die(3);
        }
        // Before 5.14: one read per page faults it in the same way.
        let mut off = 0;
        while off < len {
            // SAFETY: `off < len`, inside the readable mapping.
            unsafe { std::ptr::read_volatile(addr.cast::<u8>().add(off)) };
            off += 4096;
        }
    }
    // SAFETY: ending the child without running the parent's atexit handlers or destructors.
    unsafe { libc::_exit(0) }
}

/// `memfd:NAME` or the file's path, for messages.
fn describe_fd(file: &File) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "a shared file".into())
}

/// v2 only gives a child memory.* files if the parent delegates the controller.
fn enable_memory_subtree(parent_dir: &Path) -> Result<Option<RestoreGuard>, MemcgError> {
    let path = parent_dir.join(CGROUP_SUBTREE_CONTROL);
    let cur = read_trimmed(&path)?;
    if cur.split_whitespace().any(|c| c == "memory") {
        return Ok(None);
    }
    let guard = HostRestore::record(
        format!("{} -memory", path.display()),
        HostChange::Knob {
            path: path.clone(),
            restore: "-memory".into(),
        },
    )?;
    if let Err(err) = write_str(&path, "+memory") {
        guard.dismiss();
        return Err(MemcgError::SubtreeControl {
            path: parent_dir.to_path_buf(),
            err,
        });
    }
    Ok(Some(guard))
}

/// `name-<pid>`, unless `name` already ends in `-<pid>`.
fn unique_name(name: &str) -> String {
    let suffix = format!("-{}", std::process::id());
    if name.ends_with(&suffix) {
        name.to_string()
    } else {
        format!("{name}{suffix}")
    }
}
