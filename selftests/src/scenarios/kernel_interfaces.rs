//! The kernel interfaces agelab's access sources use, each exercised for real on a scratch
//! mapping of this process: pagemap, uffd-wp async, soft-dirty, page_idle, memcg creation and
//! removal, lru_gen aging of a memcg (with a helper process whose shmem pages it holds) and
//! DAMON vaddr. The `kernel_selfcheck` selftest runs them all, inside the lab kernels and anywhere
//! else. Each returns a [`Verdict`]: a check the kernel cannot offer is a skip with the reason.

use crate::ktap::{diag, Verdict};
use agelab_mglru::kernel::damon::DamonAttrs;
use agelab_mglru::kernel::lru_gen::{LruGenControl, LruGenDebugfs, LruGenError};
use agelab_mglru::kernel::memcg::{GuestMemcg, MemcgError};
use agelab_mglru::kernel::uffd_wp::ScratchMapping;
use agelab_mglru::sources::damon_vaddr::DamonSource;
use agelab_mglru::sources::page_idle::PageIdleSource;
use agelab_mglru::sources::pagemap::PagemapSource;
use agelab_mglru::sources::soft_dirty::SoftDirtySource;
use agelab_mglru::sources::uffd_wp::{UffdWpMode, UffdWpSource};
use agelab_mglru::AccessSource;
use agelab_vmm::{PageSet, PAGE_SIZE};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

/// Set in the environment of the helper process [`lru_gen`] starts (this binary again): the
/// number of shmem pages it maps; the binary then runs [`shmem_helper`] instead of its tests.
pub const HELPER_ENV: &str = "AGELAB_SELFCHECK_SHMEM_HELPER";

/// A check on `pages` pages of scratch memory.
pub type Check = fn(usize) -> Verdict;

/// Every check, by test name, in report order.
pub const ALL: &[(&str, Check)] = &[
    ("pagemap_presence", pagemap),
    ("uffd_wp_async_writes", uffd_wp_async),
    ("soft_dirty_writes", soft_dirty),
    ("page_idle_marking", page_idle),
    ("memcg_create_remove", memcg),
    ("lru_gen_memcg_aging", lru_gen),
    ("damon_vaddr_stat", damon),
];

fn half(pages: u64) -> PageSet {
    let mut s = PageSet::new(pages);
    s.insert_range(0, pages / 2);
    s
}

/// pagemap: the pages written are exactly the present ones.
pub fn pagemap(pages: usize) -> Verdict {
    let m = ScratchMapping::new(pages).unwrap();
    for p in 0..pages / 2 {
        m.write(p, 1);
    }
    let mut src = PagemapSource::new(m.as_guest_memory());
    match src.harvest() {
        Ok(h) if h.accessed == half(pages as u64) => {
            diag(&format!(
                "pagemap: {} pages in {} us",
                pages,
                h.cost.ns / 1000
            ));
            Verdict::Pass
        }
        Ok(h) => Verdict::Fail(format!("present {:?}, expected first half", h.accessed)),
        Err(e) => Verdict::Fail(e.to_string()),
    }
}

/// uffd-wp in async mode: exactly the pages written after arming are reported.
pub fn uffd_wp_async(pages: usize) -> Verdict {
    let m = ScratchMapping::new(pages).unwrap();
    for p in 0..pages {
        m.write(p, 1);
    }
    let mut src = match UffdWpSource::new(&m.as_guest_memory(), UffdWpMode::Async) {
        Ok(src) => src,
        Err(e) => return Verdict::Skip(e.to_string()),
    };
    for p in 0..pages / 2 {
        m.write(p, 2);
    }
    for p in pages / 2..pages {
        let _ = m.read(p);
    }
    match src.harvest() {
        Ok(h) if h.accessed == half(pages as u64) => {
            diag(&format!(
                "uffd-wp async: scan+reprotect {} us",
                h.cost.ns / 1000
            ));
            Verdict::Pass
        }
        Ok(h) => Verdict::Fail(format!("written {:?}, expected first half", h.accessed)),
        Err(e) => Verdict::Fail(e.to_string()),
    }
}

/// soft-dirty: exactly the pages written after the clear are soft-dirty.
pub fn soft_dirty(pages: usize) -> Verdict {
    let m = ScratchMapping::new(pages).unwrap();
    for p in 0..pages {
        m.write(p, 1);
    }
    let mut src = SoftDirtySource::new(m.as_guest_memory());
    if let Err(r) = src.available() {
        return Verdict::Skip(r.0);
    }
    if let Err(e) = src.arm() {
        return Verdict::Fail(e.to_string());
    }
    for p in 0..pages / 2 {
        m.write(p, 2);
    }
    match src.harvest() {
        Ok(h) if h.accessed == half(pages as u64) => Verdict::Pass,
        Ok(h) => Verdict::Fail(format!("soft-dirty {:?}, expected first half", h.accessed)),
        Err(e) => Verdict::Fail(e.to_string()),
    }
}

/// page_idle: the pages read after marking are no longer idle (host-side reads of our own
/// memory go through our page tables, so both precision and recall must be near perfect).
pub fn page_idle(pages: usize) -> Verdict {
    let m = ScratchMapping::new(pages).unwrap();
    for p in 0..pages {
        m.write(p, 1);
    }
    let mut src = PageIdleSource::new(m.as_guest_memory());
    if let Err(r) = src.available() {
        return Verdict::Skip(r.0);
    }
    if let Err(e) = src.arm() {
        return Verdict::Fail(e.to_string());
    }
    for p in 0..pages / 2 {
        let _ = m.read(p);
    }
    let h = match src.harvest() {
        Ok(h) => h,
        Err(e) => return Verdict::Fail(e.to_string()),
    };
    let c = h.accessed.confusion(&half(pages as u64));
    let gib = (pages as f64 * PAGE_SIZE as f64) / f64::from(1u32 << 30);
    diag(&format!("page_idle: precision {:.3} recall {:.3}, harvest {:.1} ms/GiB (goal <= 50), read {} B, written {} B, THP tails {}",
        c.precision(),
        c.recall(),
        h.cost.ns as f64 / 1e6 / gib,
        h.cost.bytes_read,
        h.cost.bytes_written,
        src.last_thp_tails()
    ));
    // Host-side reads of our own memory go through our page tables, so both must be near perfect.
    if c.recall() < 0.99 || c.precision() < 0.9 {
        return Verdict::Fail(format!("{c:?}"));
    }
    Verdict::Pass
}

/// DAMON vaddr: the half of the mapping read for 3 s is found accessed (recall >= 0.5).
pub fn damon(pages: usize) -> Verdict {
    let m = ScratchMapping::new(pages).unwrap();
    for p in 0..pages {
        m.write(p, 1);
    }
    let attrs = DamonAttrs {
        sample_us: 1000,
        aggr_us: 50_000,
        update_us: 200_000,
        min_nr_regions: 64,
        max_nr_regions: 4096,
    };
    let mut src = DamonSource::vaddr(m.as_guest_memory(), attrs);
    if let Err(r) = src.available() {
        return Verdict::Skip(r.0);
    }
    if let Err(e) = src.arm() {
        return Verdict::Fail(e.to_string());
    }
    let t = std::time::Instant::now();
    let mut h = None;
    while t.elapsed().as_secs() < 3 {
        for p in 0..pages / 2 {
            let _ = m.read(p);
        }
        if t.elapsed().as_millis() > 1500 && h.is_none() {
            h = Some(src.harvest());
        }
    }
    src.stop();
    match h {
        Some(Ok(h)) => {
            let c = h.accessed.confusion(&half(pages as u64));
            diag(&format!(
                "damon: precision {:.3} recall {:.3}, granularity {} B",
                c.precision(),
                c.recall(),
                src.granularity()
            ));
            if c.recall() < 0.5 {
                return Verdict::Fail(format!("{c:?}"));
            }
            Verdict::Pass
        }
        Some(Err(e)) => Verdict::Fail(e.to_string()),
        None => Verdict::Fail("no harvest".into()),
    }
}

/// Re-executed helper: waits for `go`, maps a shmem file of `pages` pages and touches it, then
/// re-touches it on every `touch`.
pub fn shmem_helper(pages: usize) -> ! {
    let mut lines = std::io::stdin().lock().lines();
    let _ = lines.next();
    let path = format!("/dev/shm/agelab-selfcheck-{}", std::process::id());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let len = pages * PAGE_SIZE as usize;
    f.set_len(len as u64).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh shared mapping of our own file at a kernel-chosen address.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    let touch = |v: u8| {
        for p in 0..pages {
            // SAFETY: inside the mapping created above, which lives until exit.
            unsafe {
                base.cast::<u8>()
                    .add(p * PAGE_SIZE as usize)
                    .write_volatile(v)
            };
        }
    };
    touch(1);
    println!("ready");
    let _ = std::io::stdout().flush();
    while let Some(Ok(_)) = lines.next() {
        touch(2);
        println!("touched");
        let _ = std::io::stdout().flush();
    }
    std::process::exit(0);
}

struct Helper {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Helper {
    fn say(&mut self, word: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{word}").unwrap();
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        l.trim().to_string()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// (seq, pages) of the generation holding most of the memcg's anon pages on node 0.
fn dominant(listing: &LruGenDebugfs, id: u64) -> Option<(u64, u64, u64)> {
    let n = listing.memcg(id)?.node(0)?;
    let total = n.generations.iter().map(|g| g.anon).sum();
    n.generations
        .iter()
        .max_by_key(|g| g.anon)
        .map(|g| (g.seq, g.anon, total))
}

/// Why the lru_gen check failed.
#[derive(Debug, thiserror::Error)]
pub enum LruGenCheckError {
    /// What the check expected and what it saw instead.
    #[error("{0}")]
    Check(String),
    /// An lru_gen file or command failed.
    #[error(transparent)]
    LruGen(#[from] LruGenError),
    /// The memcg could not be created or joined.
    #[error(transparent)]
    Memcg(#[from] MemcgError),
    /// The helper process could not be started.
    #[error(transparent)]
    Spawn(#[from] std::io::Error),
}

/// lru_gen: a memcg's shmem pages move to a newer generation on every aging pass after
/// they were touched, and the kernel's errno for out-of-range generations maps to our errors.
pub fn lru_gen(pages: usize) -> Verdict {
    let c = LruGenControl::new();
    if let Err(r) = c.available() {
        return Verdict::Skip(r.0);
    }
    let run = || -> Result<(), LruGenCheckError> {
        let (caps, _caps_guard) = c.enable_for_run()?;
        diag(&format!(
            "lru_gen caps {caps} = {}",
            caps.names().join(", ")
        ));
        let _ttl = c.set_min_ttl_ms(0)?;
        let cg = GuestMemcg::create("agelab-selfcheck")?;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(HELPER_ENV, pages.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut h = Helper { child, out };
        cg.add_process(h.child.id() as i32)?;
        if h.say("go") != "ready" {
            return Err(LruGenCheckError::Check("helper did not start".into()));
        }
        let listing = c.read(false)?;
        let id = cg.lru_gen_id(&listing).ok_or_else(|| {
            LruGenCheckError::Check(format!("memcg {} not in the lru_gen listing", cg.path()))
        })?;
        let (mut seq, held, total) = dominant(&listing, id)
            .ok_or_else(|| LruGenCheckError::Check("memcg has no node 0".into()))?;
        diag(&format!(
            "memcg {} id {id}: gen {seq} holds {held} of {total} pages",
            cg.path()
        ));
        if (held as f64) < 0.9 * pages as f64 {
            return Err(LruGenCheckError::Check(format!(
                "{held} pages in the dominant generation, expected ~{pages}"
            )));
        }
        for round in 0..3 {
            let max = c.age_now(id, 0, true)?;
            if h.say("touch") != "touched" {
                return Err(LruGenCheckError::Check("helper did not touch".into()));
            }
            c.age_now(id, 0, true)?;
            let listing = c.read(false)?;
            let (now, held, _) = dominant(&listing, id)
                .ok_or_else(|| LruGenCheckError::Check("memcg vanished".into()))?;
            diag(&format!("round {round}: aged from max_seq {max}, dominant gen {seq} -> {now} ({held} pages)"));
            if now <= seq || (held as f64) < 0.9 * pages as f64 {
                return Err(LruGenCheckError::Check(format!(
                    "round {round}: dominant gen {seq} -> {now} holding {held}"
                )));
            }
            seq = now;
        }
        // errno mapping: a generation newer than max_seq, eviction of a too-young generation.
        let max = c.max_seq(id, 0)?;
        match c.age(id, 0, max + 5, true, true) {
            Err(LruGenError::AgingGenerationTooNew { .. }) => {}
            other => {
                return Err(LruGenCheckError::Check(format!(
                    "aging max_seq+5: {other:?}"
                )))
            }
        }
        match c.evict(id, 0, max, 0, 1) {
            Err(LruGenError::EvictionGenerationTooNew { .. }) => {}
            other => {
                return Err(LruGenCheckError::Check(format!(
                    "evicting max_seq: {other:?}"
                )))
            }
        }
        Ok(())
    };
    match run() {
        Ok(()) => Verdict::Pass,
        Err(e) => Verdict::Fail(e.to_string()),
    }
}

/// memcg: created, its usage read, removed when dropped.
pub fn memcg(_pages: usize) -> Verdict {
    let cg = match GuestMemcg::create("agelab-selfcheck-memcg") {
        Ok(cg) => cg,
        Err(e) => return Verdict::from_error(&e),
    };
    let dir = cg.dir().to_path_buf();
    diag(&format!("memcg {:?} at {}", cg.version(), dir.display()));
    if let Err(e) = cg.usage_bytes() {
        return Verdict::Fail(e.to_string());
    }
    drop(cg);
    if dir.exists() {
        return Verdict::Fail(format!("{} left behind", dir.display()));
    }
    Verdict::Pass
}
