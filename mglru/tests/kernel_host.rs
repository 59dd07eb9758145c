//! Kernel interfaces on the machine running the tests: real pagemap, kpageflags, memcg, DAMON
//! refusal, soft-dirty and uffd-wp async; page_idle and lru_gen are checked for precise
//! "unavailable" reasons where the kernel lacks them. A test whose feature is missing prints
//! `SKIP <test>: <reason>` straight to stderr (visible under `cargo test`'s capture) and returns.

use agelab_mglru::kernel::damon::{
    DamonAdmin, DamonAttrs, DamonError, DamonScheme, DamonTarget, PageoutScheme, QuotaGoal,
};
use agelab_mglru::kernel::kpageflags::{Kpageflags, KPF_THP};
use agelab_mglru::kernel::lru_gen::LruGenControl;
use agelab_mglru::kernel::memcg::{CgroupVersion, GuestMemcg, MemcgError};
use agelab_mglru::kernel::pagemap::Pagemap;
use agelab_mglru::kernel::uffd_wp::ScratchMapping;
use agelab_mglru::sources::damon_vaddr::DamonSource;
use agelab_mglru::sources::page_idle::PageIdleSource;
use agelab_mglru::sources::pagemap::PagemapSource;
use agelab_mglru::sources::soft_dirty::SoftDirtySource;
use agelab_mglru::sources::uffd_wp::{UffdWpMode, UffdWpSource};
use agelab_mglru::testing::reconcile_journal_at_start;
use agelab_mglru::AccessSource;
use agelab_vmm::testing::skip;
use agelab_vmm::{PageSet, PAGE_SIZE};

fn set(len: u64, pages: &[u64]) -> PageSet {
    let mut s = PageSet::new(len);
    for &p in pages {
        s.insert(p);
    }
    s
}

#[test]
fn pagemap_source_reports_present_pages() {
    let m = ScratchMapping::new(64).unwrap();
    for p in (0..64).step_by(2) {
        m.write(p, 1);
    }
    let mut src = PagemapSource::new(m.as_guest_memory());
    src.available().unwrap();
    let h = src.harvest().unwrap();
    let even: Vec<u64> = (0..64).step_by(2).collect();
    assert_eq!(h.accessed, set(64, &even));
    assert_eq!(h.cost.bytes_read, 64 * 8);
    assert_eq!(src.last_swapped(), 0);
    let pm = Pagemap::open_self().unwrap();
    let pfns = pm.guest_pfns(&m.as_guest_memory()).unwrap();
    assert!(pfns[0].is_some_and(|p| p != 0), "root sees PFNs");
    assert!(pfns[1].is_none());
    let e = pm.read(m.addr(), 1).unwrap()[0];
    assert!(e.present() && e.exclusive() && !e.file_or_shared());
}

#[test]
fn thp_tail_pages_resolve_to_their_head() {
    const TEST: &str = "thp_tail_pages_resolve_to_their_head";
    // 4 MiB so that one 2 MiB-aligned window surely lies inside.
    let m = ScratchMapping::new(1024).unwrap();
    let aligned = (m.addr() + (2 << 20) - 1) & !((2 << 20) - 1);
    // SAFETY: advising a range inside our own mapping.
    let r = unsafe { libc::madvise(aligned as *mut _, 2 << 20, libc::MADV_HUGEPAGE) };
    assert_eq!(r, 0);
    let first = ((aligned - m.addr()) / PAGE_SIZE) as usize;
    for p in first..first + 512 {
        m.write(p, 1);
    }
    let pm = Pagemap::open_self().unwrap();
    let pfns: Vec<u64> = pm
        .read(aligned, 512)
        .unwrap()
        .iter()
        .map(|e| e.pfn().unwrap())
        .collect();
    let kpf = Kpageflags::open().unwrap();
    let mut snap = kpf.snapshot(&pfns).unwrap();
    if kpf.flags(&mut snap, pfns[0]).unwrap() & KPF_THP == 0 {
        return skip(
            TEST,
            "the kernel did not back the MADV_HUGEPAGE range with a THP",
        );
    }
    for (i, &p) in pfns.iter().enumerate() {
        assert_eq!(kpf.head_of(&mut snap, p).unwrap(), pfns[0], "subpage {i}");
    }
}

#[test]
fn page_idle_source_availability() {
    const TEST: &str = "page_idle_source_availability";
    let m = ScratchMapping::new(64).unwrap();
    for p in 0..64 {
        m.write(p, 1);
    }
    let mut src = PageIdleSource::new(m.as_guest_memory());
    match src.available() {
        Err(reason) if !std::path::Path::new("/sys/kernel/mm/page_idle/bitmap").exists() => {
            assert!(reason.0.contains("CONFIG_IDLE_PAGE_TRACKING"), "{reason}");
            assert!(src.harvest().is_err());
            skip(TEST, &reason.to_string());
        }
        Err(reason) => panic!("page_idle present but unavailable: {reason}"),
        Ok(()) => {
            src.arm().unwrap();
            for p in 0..32 {
                m.read(p);
            }
            let h = src.harvest().unwrap();
            let truth: Vec<u64> = (0..32).collect();
            let c = h.accessed.confusion(&set(64, &truth));
            eprintln!("page_idle: {c:?} cost {:?}", h.cost);
            assert!(c.recall() > 0.9, "{c:?}");
        }
    }
}

#[test]
fn lru_gen_availability() {
    const TEST: &str = "lru_gen_availability";
    let c = LruGenControl::new();
    match c.available() {
        Err(reason) if !std::path::Path::new("/sys/kernel/mm/lru_gen").exists() => {
            assert!(reason.0.contains("CONFIG_LRU_GEN"), "{reason}");
            assert!(c.caps().is_err());
            skip(TEST, &reason.to_string());
        }
        Err(reason) => skip(TEST, &reason.to_string()),
        Ok(()) => {
            let listing = c.read(false).unwrap();
            assert!(!listing.memcgs.is_empty());
            eprintln!("lru_gen caps {}", c.caps().unwrap());
        }
    }
}

#[test]
fn damon_refuses_a_foreign_kdamond() {
    const TEST: &str = "damon_refuses_a_foreign_kdamond";
    let admin = DamonAdmin::new();
    let nr = "/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds";
    let Ok(before) = std::fs::read_to_string(nr) else {
        return skip(TEST, "no DAMON sysfs interface");
    };
    let ks = admin.kdamonds().unwrap();
    if !ks.iter().any(|k| k.state == "on") {
        return skip(TEST, "no foreign kdamond is running on this host");
    }
    let err = admin.check().unwrap_err();
    assert!(matches!(err, DamonError::ForeignRunning { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("is already running and is not ours") && msg.contains("EBUSY"),
        "{msg}"
    );
    let m = ScratchMapping::new(4).unwrap();
    let mut src = DamonSource::vaddr(m.as_guest_memory(), DamonAttrs::default());
    assert_eq!(src.available().unwrap_err().0, msg);
    assert!(matches!(
        src.harvest(),
        Err(agelab_mglru::HarvestError::Unavailable { .. })
    ));
    assert_eq!(
        std::fs::read_to_string(nr).unwrap(),
        before,
        "nr_kdamonds untouched"
    );
}

/// A kdamond agelab journaled holds its own admin tree only: a second admin of that tree is
/// refused with the holder, while another tree (here the real one, if present) is judged by its
/// own kdamonds. Without the tree check, the real tree reported `HeldByAgelab` whenever a test
/// of a fake tree ran beside `damon_refuses_a_foreign_kdamond`.
#[test]
fn damon_journaled_kdamond_holds_only_its_own_tree() {
    reconcile_journal_at_start();
    const TEST: &str = "damon_journaled_kdamond_holds_only_its_own_tree";
    let _one = DAMON_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = std::env::temp_dir().join(format!("agelab-damon-held-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    fake_damon_tree(&root, &[]);
    let admin = DamonAdmin::with_root(&root);
    if let Err(e @ (DamonError::NotRoot | DamonError::ModuleRunning { .. })) = admin.check() {
        std::fs::remove_dir_all(&root).unwrap();
        return skip(TEST, &e.to_string());
    }
    let target = DamonTarget::Vaddr {
        pid: 42,
        ranges: Vec::new(),
    };
    let k = admin.start(&target, DamonAttrs::default()).unwrap();
    match DamonAdmin::with_root(&root).check() {
        Err(DamonError::HeldByAgelab { .. }) => {}
        other => panic!("a second admin of the same tree: expected HeldByAgelab, got {other:?}"),
    }
    let other = root.with_file_name(format!("agelab-damon-held2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&other);
    fake_damon_tree(&other, &[]);
    DamonAdmin::with_root(&other)
        .check()
        .expect("another tree is not held by this tree's kdamond");
    let real = DamonAdmin::new();
    if let Ok(ks) = real.kdamonds() {
        if ks.iter().any(|k| k.state == "on") {
            let err = real.check().unwrap_err();
            assert!(matches!(err, DamonError::ForeignRunning { .. }), "{err}");
        }
    }
    k.stop();
    DamonAdmin::with_root(&root)
        .check()
        .expect("stopped: the tree is free again");
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}

/// Builds a fake DAMON sysfs tree (plain files) with one kdamond slot prepared.
fn fake_damon_tree(root: &std::path::Path, regions: &[(u64, u64, u64)]) {
    let k = root.join("kdamonds");
    let ctx = k.join("0/contexts/0");
    for d in [
        ctx.join("monitoring_attrs/intervals"),
        ctx.join("monitoring_attrs/nr_regions"),
        ctx.join("targets/0/regions"),
        ctx.join("schemes/0/tried_regions"),
        ctx.join("schemes/0/access_pattern/sz"),
        ctx.join("schemes/0/access_pattern/nr_accesses"),
        ctx.join("schemes/0/access_pattern/age"),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    // sysfs attributes exist before they are written; write_str never creates files.
    for f in [
        "contexts/nr_contexts",
        "contexts/0/operations",
        "contexts/0/monitoring_attrs/intervals/sample_us",
        "contexts/0/monitoring_attrs/intervals/aggr_us",
        "contexts/0/monitoring_attrs/intervals/update_us",
        "contexts/0/monitoring_attrs/nr_regions/min",
        "contexts/0/monitoring_attrs/nr_regions/max",
        "contexts/0/targets/nr_targets",
        "contexts/0/targets/0/pid_target",
        "contexts/0/schemes/nr_schemes",
        "contexts/0/schemes/0/action",
        "contexts/0/schemes/0/access_pattern/sz/min",
        "contexts/0/schemes/0/access_pattern/sz/max",
        "contexts/0/schemes/0/access_pattern/nr_accesses/min",
        "contexts/0/schemes/0/access_pattern/nr_accesses/max",
        "contexts/0/schemes/0/access_pattern/age/min",
        "contexts/0/schemes/0/access_pattern/age/max",
    ] {
        std::fs::write(k.join("0").join(f), "0\n").unwrap();
    }
    std::fs::write(k.join("nr_kdamonds"), "0\n").unwrap();
    std::fs::write(k.join("0/state"), "off\n").unwrap();
    std::fs::write(ctx.join("avail_operations"), "vaddr fvaddr paddr\n").unwrap();
    for (i, (s, e, n)) in regions.iter().enumerate() {
        let r = ctx.join(format!("schemes/0/tried_regions/{i}"));
        std::fs::create_dir_all(&r).unwrap();
        for (f, v) in [("start", s), ("end", e), ("nr_accesses", n), ("age", &3)] {
            std::fs::write(r.join(f), format!("{v}\n")).unwrap();
        }
    }
}

/// DAMON tests share the host's journal: one kdamond per process at a time.
static DAMON_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn damon_source_configures_maps_regions_and_restores() {
    reconcile_journal_at_start();
    let _one = DAMON_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let m = ScratchMapping::new(64).unwrap();
    let a = m.addr();
    let root = std::env::temp_dir().join(format!("agelab-damon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // Pages 0..4 hot, 4..16 cold, 60..64 hot, and a hot region outside the guest.
    fake_damon_tree(
        &root,
        &[
            (a - 8 * PAGE_SIZE, a + 4 * PAGE_SIZE, 5),
            (a + 4 * PAGE_SIZE, a + 16 * PAGE_SIZE, 0),
            (a + 60 * PAGE_SIZE, a + 80 * PAGE_SIZE, 1),
        ],
    );
    let admin = DamonAdmin::with_root(&root);
    let mut src = DamonSource::new(
        m.as_guest_memory(),
        DamonTarget::Vaddr {
            pid: 42,
            ranges: Vec::new(),
        },
        DamonAttrs::default(),
    )
    .with_admin(admin);
    src.available().unwrap();
    let h = src.harvest().unwrap();
    let hot: Vec<u64> = (0..4).chain(60..64).collect();
    assert_eq!(h.accessed, set(64, &hot));
    let k = root.join("kdamonds");
    let read = |p: &str| std::fs::read_to_string(k.join(p)).unwrap();
    assert_eq!(read("nr_kdamonds"), "1");
    assert_eq!(read("0/contexts/0/operations"), "vaddr");
    assert_eq!(read("0/contexts/0/targets/0/pid_target"), "42");
    assert_eq!(read("0/contexts/0/schemes/0/action"), "stat");
    assert_eq!(
        read("0/contexts/0/schemes/0/access_pattern/nr_accesses/max"),
        "4294967295"
    );
    assert_eq!(read("0/state"), "update_schemes_tried_regions");
    assert!(src.granularity() > PAGE_SIZE);
    src.stop();
    assert_eq!(read("0/state"), "off");
    assert_eq!(read("nr_kdamonds"), "0");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn soft_dirty_source() {
    const TEST: &str = "soft_dirty_source";
    let m = ScratchMapping::new(16).unwrap();
    for p in 0..16 {
        m.write(p, 1);
    }
    let mut src = SoftDirtySource::new(m.as_guest_memory());
    if let Err(reason) = src.available() {
        assert!(reason.0.contains("CONFIG_MEM_SOFT_DIRTY") || reason.0.contains("clear"));
        return skip(TEST, &reason.to_string());
    }
    src.arm().unwrap();
    m.write(3, 2);
    m.write(9, 2);
    let h = src.harvest().unwrap();
    assert_eq!(h.accessed, set(16, &[3, 9]));
}

#[test]
fn uffd_wp_async_source_sees_exactly_the_written_pages() {
    const TEST: &str = "uffd_wp_async_source_sees_exactly_the_written_pages";
    let m = ScratchMapping::new(64).unwrap();
    // Pages 0..48 populated before registration; 48..64 never touched (WP_UNPOPULATED case).
    for p in 0..48 {
        m.write(p, 1);
    }
    let mut src = match UffdWpSource::new(&m.as_guest_memory(), UffdWpMode::Async) {
        Ok(src) => src,
        Err(reason) => return skip(TEST, &reason.to_string()),
    };
    let h = src.harvest().unwrap();
    assert!(
        h.accessed.is_empty(),
        "nothing written since registration: {:?}",
        h.accessed
    );
    m.write(3, 2);
    m.write(5, 2);
    m.write(40, 2);
    m.write(50, 2);
    let _ = m.read(7);
    let _ = m.read(55);
    let h = src.harvest().unwrap();
    assert_eq!(h.accessed, set(64, &[3, 5, 40, 50]));
    assert!(h.cost.ns > 0 && h.cost.bytes_read > 0);
    let h = src.harvest().unwrap();
    assert!(h.accessed.is_empty(), "re-protected: {:?}", h.accessed);
    m.write(5, 3);
    assert_eq!(src.harvest().unwrap().accessed, set(64, &[5]));
}

#[test]
fn memcg_create_move_limit_usage_remove() {
    reconcile_journal_at_start();
    const TEST: &str = "memcg_create_move_limit_usage_remove";
    if !agelab_mglru::kernel::is_root() {
        return skip(TEST, "needs root");
    }
    let name = format!("agelab-test-{}", std::process::id());
    let cg = match GuestMemcg::create(&name) {
        Ok(cg) => cg,
        Err(e @ MemcgError::NoMemoryController) => return skip(TEST, &e.to_string()),
        Err(e) => panic!("{e}"),
    };
    let dir = cg.dir().to_path_buf();
    assert!(dir.is_dir());
    assert!(cg.path().ends_with(&format!("/{name}")), "{}", cg.path());
    // A shell that waits for a go, then fills 16 MiB of shmem: the charge lands in our memcg.
    let shm = format!("/dev/shm/{name}");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "read go; dd if=/dev/zero of={shm} bs=1M count=16 2>/dev/null; echo done; read end"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    cg.add_process(pid).unwrap();
    assert_eq!(cg.processes().unwrap(), vec![pid]);
    let before = cg.usage_bytes().unwrap();
    use std::io::{BufRead, Write};
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let after = cg.usage_bytes().unwrap();
    assert!(
        after >= before + 15 * 1024 * 1024,
        "usage {before} -> {after}"
    );
    let stat = cg.stat().unwrap();
    assert!(
        stat.iter().any(|(k, _)| k == "shmem" || k == "file"),
        "{stat:?}"
    );

    cg.set_limit(Some(256 << 20)).unwrap();
    assert_eq!(cg.limit().unwrap(), Some(256 << 20));
    cg.set_limit(None).unwrap();
    assert_eq!(cg.limit().unwrap(), None);
    match cg.version() {
        CgroupVersion::V1 => assert!(matches!(
            cg.reclaim(1 << 20),
            Err(MemcgError::Unsupported { .. })
        )),
        CgroupVersion::V2 => {
            let _ = cg.reclaim(1 << 20);
        }
    }
    let parent = cg.parent_dir().join("cgroup.procs");
    cg.remove();
    assert!(!dir.exists(), "memcg removed");
    let parent_procs = std::fs::read_to_string(parent).unwrap();
    assert!(
        parent_procs.lines().any(|l| l.trim() == pid.to_string()),
        "child moved back to parent"
    );
    drop(stdin);
    child.wait().unwrap();
    std::fs::remove_file(shm).unwrap();
}

#[test]
fn memcg_thread_move_v1() {
    reconcile_journal_at_start();
    const TEST: &str = "memcg_thread_move_v1";
    if !agelab_mglru::kernel::is_root() {
        return skip(TEST, "needs root");
    }
    let name = format!("agelab-thread-{}", std::process::id());
    let cg = match GuestMemcg::create(&name) {
        Ok(cg) if cg.version() == CgroupVersion::V1 => cg,
        Ok(_) => {
            return skip(
                TEST,
                "memory controller is cgroup v2 (whole processes only)",
            )
        }
        Err(e) => return skip(TEST, &e.to_string()),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        tx.send(nix::unistd::gettid().as_raw()).unwrap();
        let _ = done_rx.recv();
    });
    let tid = rx.recv().unwrap();
    cg.add_thread(tid).unwrap();
    let tasks = std::fs::read_to_string(cg.dir().join("tasks")).unwrap();
    assert_eq!(tasks.trim(), tid.to_string());
    let dir = cg.dir().to_path_buf();
    drop(cg);
    assert!(!dir.exists());
    done_tx.send(()).unwrap();
    t.join().unwrap();
}

/// Adds the files a `pageout` scheme with quotas writes (and, with `goals`, the quota goal
/// directory with or without `target_metric`).
fn fake_pageout_files(root: &std::path::Path, goals: Option<bool>) {
    let sch = root.join("kdamonds/0/contexts/0/schemes/0");
    std::fs::create_dir_all(sch.join("quotas/weights")).unwrap();
    std::fs::create_dir_all(sch.join("stats")).unwrap();
    for f in [
        "quotas/ms",
        "quotas/bytes",
        "quotas/reset_interval_ms",
        "quotas/weights/sz_permil",
        "quotas/weights/nr_accesses_permil",
        "quotas/weights/age_permil",
    ] {
        std::fs::write(sch.join(f), "0\n").unwrap();
    }
    for (f, v) in [
        ("nr_tried", 7),
        ("sz_tried", 28672),
        ("nr_applied", 5),
        ("sz_applied", 20480),
        ("qt_exceeds", 1),
    ] {
        std::fs::write(sch.join("stats").join(f), format!("{v}\n")).unwrap();
    }
    if let Some(with_metric) = goals {
        let g = sch.join("quotas/goals/0");
        std::fs::create_dir_all(&g).unwrap();
        std::fs::write(sch.join("quotas/goals/nr_goals"), "0\n").unwrap();
        std::fs::write(g.join("target_value"), "0\n").unwrap();
        if with_metric {
            std::fs::write(g.join("target_metric"), "user_input\n").unwrap();
        }
    }
}

#[test]
fn damon_pageout_scheme_writes_pattern_quota_and_goal() {
    reconcile_journal_at_start();
    let _one = DAMON_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = std::env::temp_dir().join(format!("agelab-damos-{}", std::process::id()));
    let attrs = DamonAttrs {
        aggr_us: 100_000,
        ..DamonAttrs::default()
    };
    let scheme = DamonScheme::Pageout(PageoutScheme {
        min_age_us: 2_000_000,
        quota_bytes: 26 << 20,
        quota_ms: 10,
        reset_interval_ms: 1000,
        goal: Some(QuotaGoal {
            metric: "some_mem_psi_us".into(),
            target_value: 1000,
        }),
    });
    // The guest's memory only (the reclaim policy's target), not the whole VMM address space.
    let guest = (0x7f00_0000_0000u64, 0x7f00_1000_0000u64);
    let target = DamonTarget::Vaddr {
        pid: 42,
        ranges: vec![guest],
    };
    let sch = root.join("kdamonds/0/contexts/0/schemes/0");
    let read = |p: &str| std::fs::read_to_string(sch.join(p)).unwrap();
    let regions = root.join("kdamonds/0/contexts/0/targets/0/regions");
    let fake_regions = || {
        std::fs::create_dir_all(regions.join("0")).unwrap();
        for f in ["nr_regions", "0/start", "0/end"] {
            std::fs::write(regions.join(f), "0\n").unwrap();
        }
    };
    let read_region = |f: &str| std::fs::read_to_string(regions.join(f)).unwrap();

    // A kernel with quota goals: everything written, the goal applied.
    let _ = std::fs::remove_dir_all(&root);
    fake_damon_tree(&root, &[]);
    fake_pageout_files(&root, Some(true));
    fake_regions();
    let admin = DamonAdmin::with_root(&root);
    if let Err(e @ (DamonError::NotRoot | DamonError::ModuleRunning { .. })) = admin.check() {
        std::fs::remove_dir_all(&root).unwrap();
        return skip("damon_pageout_scheme", &e.to_string());
    }
    let k = admin.start_scheme(&target, attrs, &scheme).unwrap();
    assert_eq!(read("action"), "pageout");
    assert_eq!(
        (
            read_region("nr_regions"),
            read_region("0/start"),
            read_region("0/end")
        ),
        ("1".into(), guest.0.to_string(), guest.1.to_string()),
        "the target is the guest's range"
    );
    assert_eq!(read("access_pattern/nr_accesses/max"), "0");
    assert_eq!(read("access_pattern/nr_accesses/min"), "0");
    assert_eq!(
        read("access_pattern/age/min"),
        "20",
        "2 s in 100 ms aggregations"
    );
    assert_eq!(read("access_pattern/sz/min"), "4096");
    assert_eq!(read("quotas/bytes"), (26u64 << 20).to_string());
    assert_eq!(read("quotas/ms"), "10");
    assert_eq!(read("quotas/weights/age_permil"), "1");
    assert_eq!(read("quotas/goals/nr_goals"), "1");
    assert_eq!(read("quotas/goals/0/target_metric"), "some_mem_psi_us");
    assert_eq!(read("quotas/goals/0/target_value"), "1000");
    assert!(k.goal_applied());
    let st = k.scheme_stats().unwrap();
    assert_eq!((st.nr_applied, st.sz_applied, st.qt_exceeds), (5, 20480, 1));
    k.stop();
    assert_eq!(
        std::fs::read_to_string(root.join("kdamonds/nr_kdamonds")).unwrap(),
        "0"
    );

    // A kernel without quota goals: the fixed quota runs, and says the goal is not applied.
    std::fs::remove_dir_all(&root).unwrap();
    fake_damon_tree(&root, &[]);
    fake_pageout_files(&root, None);
    fake_regions();
    let k = admin.start_scheme(&target, attrs, &scheme).unwrap();
    assert!(!k.goal_applied());
    k.stop();

    // Built to fail the range check: a target without ranges leaves DAMON its own three regions
    // over the whole address space (nothing written).
    std::fs::remove_dir_all(&root).unwrap();
    fake_damon_tree(&root, &[]);
    fake_pageout_files(&root, None);
    fake_regions();
    let whole = DamonTarget::Vaddr {
        pid: 42,
        ranges: Vec::new(),
    };
    let k = admin.start_scheme(&whole, attrs, &scheme).unwrap();
    assert_ne!(read_region("nr_regions"), "1", "no ranges: not restricted");
    k.stop();

    // Built to fail: goals without target_metric (before 6.8: user_input only) refuse a PSI goal.
    std::fs::remove_dir_all(&root).unwrap();
    fake_damon_tree(&root, &[]);
    fake_pageout_files(&root, Some(false));
    fake_regions();
    match admin.start_scheme(&target, attrs, &scheme) {
        Err(DamonError::GoalMetric(m)) => assert_eq!(m, "some_mem_psi_us"),
        other => panic!("expected GoalMetric, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(root.join("kdamonds/nr_kdamonds")).unwrap(),
        "0",
        "the failed start was undone"
    );
    std::fs::remove_dir_all(&root).unwrap();
}
