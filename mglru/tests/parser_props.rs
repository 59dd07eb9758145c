//! Property tests for the parsers of kernel text agelab reads: memcg files (`memory.stat`,
//! `memory.current`/`memory.usage_in_bytes`, `memory.max`/`memory.limit_in_bytes`,
//! `cgroup.procs`, `/proc/self/mounts`, `/proc/self/cgroup`), DAMON sysfs (the admin tree's
//! kdamonds, tried regions), PSI pressure files, `/proc/swaps`, zram `mm_stat`, and the host-change
//! journal's on-disk records (entries, `/proc/<pid>/stat`).
//!
//! Every parser gets arbitrary input and mutations of real captured files
//! (`tests/fixtures/kernel_text/`: `host-6.18/` from this project's host — cgroup v1, the foreign
//! kdamond's admin tree read only — and `lab-debian-7.2/` from a lab guest — cgroup v2, zram swap,
//! a stat kdamond's tried regions, journal entries of a live `agelab run`) and must give an error
//! or a value, never a panic; where a writer exists (or the kernel's format is simple to write),
//! written values must read back equal. Case counts are set per property (`CASES`), so the total
//! per run is stated in `docs/host-state.md`.

use agelab_mglru::journal::{parse_stat, HostChange, JournalEntry, Owner};
use agelab_mglru::kernel::damon::{DamonAdmin, TriedRegion};
use agelab_mglru::kernel::memcg::{
    parse_limit, parse_memory_stat, parse_procs, CgroupVersion, MemoryHierarchy,
};
use agelab_mglru::kernel::psi::Pressure;
use agelab_mglru::kernel::swap::{SwapStatus, ZramMmStat};
use agelab_mglru::kernel::sysfs::read_u64;
use proptest::prelude::*;
use std::path::{Path, PathBuf};

/// Cases per property (proptest's default is 256).
const CASES: u32 = 2000;
/// Cases for properties that build files on disk.
const FS_CASES: u32 = 300;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kernel_text")
}

/// Every captured file whose name starts with `prefix`, from every capture.
fn fixtures(prefix: &str) -> Vec<String> {
    let mut v = Vec::new();
    for d in std::fs::read_dir(fixture_dir()).expect("fixtures") {
        let d = d.expect("fixture dir").path();
        for f in std::fs::read_dir(&d).expect("fixture dir") {
            let f = f.expect("fixture").path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(prefix) {
                v.push(std::fs::read_to_string(&f).expect("fixture text"));
            }
        }
    }
    assert!(!v.is_empty(), "no fixture named {prefix}*");
    v
}

/// One mutation of a text: bytes replaced, inserted, deleted, lines duplicated or dropped,
/// truncation, numbers replaced by extreme ones.
#[derive(Clone, Debug)]
enum Mutation {
    Replace(usize, char),
    Insert(usize, String),
    Delete(usize, usize),
    DupLine(usize),
    DropLine(usize),
    Truncate(usize),
    Number(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let extreme = prop_oneof![
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("".to_string()),
        Just("9".repeat(40)),
        Just("1e309".to_string()),
        Just("NaN".to_string()),
        Just("0x10".to_string()),
        "[ -~]{0,8}",
    ];
    prop_oneof![
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        (any::<usize>(), "[\\PC\\n\\t =:)(,]{0,12}").prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<usize>(), 0usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::DupLine),
        any::<usize>().prop_map(Mutation::DropLine),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), extreme).prop_map(|(i, s)| Mutation::Number(i, s)),
    ]
}

/// The nearest char boundary at or before `i % (len + 1)`.
fn boundary(s: &str, i: usize) -> usize {
    let mut i = i % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(s: &str, m: &Mutation) -> String {
    let mut s = s.to_string();
    match m {
        Mutation::Replace(i, c) => {
            let i = boundary(&s, *i);
            if let Some(old) = s[i..].chars().next() {
                s.replace_range(i..i + old.len_utf8(), &c.to_string());
            }
        }
        Mutation::Insert(i, t) => {
            let i = boundary(&s, *i);
            s.insert_str(i, t);
        }
        Mutation::Delete(i, n) => {
            let a = boundary(&s, *i);
            let b = boundary(&s, a + n).max(a);
            let b = if b < a { a } else { b };
            s.replace_range(a..b.min(s.len()), "");
        }
        Mutation::DupLine(i) | Mutation::DropLine(i) => {
            let mut lines: Vec<&str> = s.lines().collect();
            if !lines.is_empty() {
                let k = i % lines.len();
                if matches!(m, Mutation::DupLine(_)) {
                    lines.insert(k, lines[k]);
                } else {
                    lines.remove(k);
                }
            }
            s = lines.join("\n");
        }
        Mutation::Truncate(i) => {
            let i = boundary(&s, *i);
            s.truncate(i);
        }
        Mutation::Number(i, t) => {
            // Replace the k-th run of digits.
            let runs: Vec<(usize, usize)> = {
                let b = s.as_bytes();
                let mut v = Vec::new();
                let mut j = 0;
                while j < b.len() {
                    if b[j].is_ascii_digit() {
                        let st = j;
                        while j < b.len() && b[j].is_ascii_digit() {
                            j += 1;
                        }
                        v.push((st, j));
                    } else {
                        j += 1;
                    }
                }
                v
            };
            if !runs.is_empty() {
                let (a, b) = runs[i % runs.len()];
                s.replace_range(a..b, t);
            }
        }
    }
    s
}

/// A fixture of `prefix`, mutated 1..=4 times.
fn mutated(prefix: &'static str) -> impl Strategy<Value = String> {
    let texts = fixtures(prefix);
    (0..texts.len(), prop::collection::vec(mutation(), 1..=4))
        .prop_map(move |(k, ms)| ms.iter().fold(texts[k].clone(), |s, m| apply(&s, m)))
}

/// Arbitrary text, biased toward the shapes kernel files have.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "([a-z_0-9]{0,12}[ =:]{0,2}[0-9.]{0,22}[ \\t]{0,2}\n?){0,12}",
        "([ -~]{0,40}\n){0,8}",
    ]
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("agelab-parser-props-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

// --- memcg -------------------------------------------------------------------------------------

#[test]
fn memory_stat_fixtures_parse_whole() {
    for t in fixtures("v1-memory.stat")
        .into_iter()
        .chain(fixtures("v2-memory.stat"))
    {
        let pairs = parse_memory_stat(&t);
        assert_eq!(pairs.len(), t.lines().count(), "every line of {t:?}");
    }
}

#[test]
fn mounts_and_cgroup_fixtures() {
    let v1 = &fixtures("proc-mounts")
        .into_iter()
        .find(|t| t.contains(" cgroup ") && t.contains("memory"))
        .expect("host mounts");
    let h = MemoryHierarchy::from_mounts(v1, |_| String::new()).expect("v1 hierarchy");
    assert_eq!(h.version, CgroupVersion::V1);
    let lab = &fixtures("proc-mounts")
        .into_iter()
        .find(|t| !t.contains(" cgroup "))
        .expect("lab mounts");
    let h2 = MemoryHierarchy::from_mounts(lab, |_| "cpu memory pids".into()).expect("v2");
    assert_eq!(h2.version, CgroupVersion::V2);
    for t in fixtures("proc-cgroup") {
        assert!(
            h.cgroup_in(&t).is_some() || h2.cgroup_in(&t).is_some(),
            "{t:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn memory_stat_never_panics(t in prop_oneof![text(), mutated("v1-memory.stat"), mutated("v2-memory.stat")]) {
        for (k, v) in parse_memory_stat(&t) {
            prop_assert!(t.contains(&k));
            prop_assert!(t.contains(&v.to_string()));
        }
    }

    #[test]
    fn memory_stat_round_trips(pairs in prop::collection::vec(("[a-z][a-z_]{0,20}", any::<u64>()), 0..40)) {
        let text: String = pairs.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        prop_assert_eq!(parse_memory_stat(&text), pairs);
    }

    #[test]
    fn limit_never_panics(t in prop_oneof![text(), mutated("v1-memory.limit_in_bytes"), mutated("v2-memory.max")], v1 in any::<bool>()) {
        let version = if v1 { CgroupVersion::V1 } else { CgroupVersion::V2 };
        if let Ok(Some(b)) = parse_limit(version, &t) {
            prop_assert!(b < u64::MAX);
        }
    }

    #[test]
    fn limit_round_trips(b in any::<u64>(), v1 in any::<bool>()) {
        let (version, unlimited) = if v1 { (CgroupVersion::V1, 1u64 << 62) } else { (CgroupVersion::V2, u64::MAX) };
        prop_assert_eq!(parse_limit(version, &format!("{b}\n")), Ok((b < unlimited).then_some(b)));
        prop_assert_eq!(parse_limit(version, "max\n"), Ok(None));
    }

    #[test]
    fn procs_never_panic_and_round_trip(t in prop_oneof![text(), mutated("v1-cgroup.procs"), mutated("v2-cgroup.procs")],
                                        pids in prop::collection::vec(1i32..=i32::MAX, 0..50)) {
        let _ = parse_procs(&t);
        let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
        prop_assert_eq!(parse_procs(&text), pids);
    }

    #[test]
    fn mounts_never_panic(t in prop_oneof![text(), mutated("proc-mounts")], ctl in text()) {
        if let Some(h) = MemoryHierarchy::from_mounts(&t, |_| ctl.clone()) {
            prop_assert!(t.contains(&*h.mount.to_string_lossy()));
        }
    }

    #[test]
    fn own_cgroup_never_panics_and_round_trips(t in prop_oneof![text(), mutated("proc-cgroup")],
                                               path in "/[a-z0-9_/.-]{0,40}", v1 in any::<bool>()) {
        let h = MemoryHierarchy {
            version: if v1 { CgroupVersion::V1 } else { CgroupVersion::V2 },
            mount: "/sys/fs/cgroup".into(),
        };
        let _ = h.cgroup_in(&t);
        let line = if v1 { format!("4:memory:{path}\n0::/x\n") } else { format!("4:cpu:/y\n0::{path}\n") };
        prop_assert_eq!(h.cgroup_in(&line), Some(path));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(FS_CASES))]

    /// `memory.current`, `memory.usage_in_bytes` and every one-number sysfs file (DAMON's
    /// `nr_kdamonds`, tried-region fields) go through `read_u64`: arbitrary bytes give a value or
    /// an error.
    #[test]
    fn one_number_files(bytes in prop_oneof![
        any::<Vec<u8>>(),
        mutated("v2-memory.current").prop_map(String::into_bytes),
        mutated("v1-memory.usage_in_bytes").prop_map(String::into_bytes),
    ], v in any::<u64>()) {
        let d = dir("u64");
        let f = d.join("memory.current");
        std::fs::write(&f, &bytes).unwrap();
        if let Ok(n) = read_u64(&f) {
            prop_assert!(String::from_utf8_lossy(&bytes).contains(&n.to_string()));
        }
        std::fs::write(&f, format!("{v}\n")).unwrap();
        prop_assert_eq!(read_u64(&f).unwrap(), v);
    }
}

// --- DAMON sysfs -------------------------------------------------------------------------------

/// (relative path, value) of a captured admin tree.
fn damon_trees() -> Vec<Vec<(String, String)>> {
    fixtures("damon-admin")
        .iter()
        .map(|t| {
            t.lines()
                .filter_map(|l| {
                    let (p, v) = l.split_once('\t')?;
                    Some((p.to_string(), v.to_string()))
                })
                .collect()
        })
        .collect()
}

fn build_tree(root: &Path, files: &[(String, String)]) {
    let _ = std::fs::remove_dir_all(root);
    for (p, v) in files {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, format!("{v}\n")).unwrap();
    }
}

#[test]
fn damon_fixture_trees_read_back() {
    for (i, files) in damon_trees().into_iter().enumerate() {
        let root = dir(&format!("damon-fixture-{i}"));
        build_tree(&root, &files);
        let ks = DamonAdmin::with_root(&root)
            .kdamonds()
            .expect("captured tree");
        let nr = files
            .iter()
            .find(|(p, _)| p == "kdamonds/nr_kdamonds")
            .map(|(_, v)| v.parse::<usize>().unwrap());
        assert_eq!(Some(ks.len()), nr);
        let _ = std::fs::remove_dir_all(&root);
    }
    // The lab capture holds tried regions: every one parses.
    let regions: Vec<_> = damon_trees()
        .into_iter()
        .flat_map(tried_regions_of)
        .collect();
    assert!(!regions.is_empty(), "no tried region captured");
    for r in regions {
        assert!(TriedRegion::parse(&r).is_some(), "{r:?}");
    }
}

/// The tried regions of a captured tree, as their four fields' text.
fn tried_regions_of(files: Vec<(String, String)>) -> Vec<[String; 4]> {
    let mut out = Vec::new();
    for (p, _) in files
        .iter()
        .filter(|(p, _)| p.ends_with("/start") && p.contains("tried_regions/"))
    {
        let base = p.trim_end_matches("start");
        let get = |n: &str| {
            files
                .iter()
                .find(|(q, _)| *q == format!("{base}{n}"))
                .map(|(_, v)| v.clone())
        };
        if let (Some(a), Some(b), Some(c), Some(d)) =
            (get("start"), get("end"), get("nr_accesses"), get("age"))
        {
            out.push([a, b, c, d]);
        }
    }
    out
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|v| v.to_string()),
        any::<String>(),
        "[0-9 \\n-]{0,24}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn tried_region_never_panics(f in [field(), field(), field(), field()]) {
        if let Some(r) = TriedRegion::parse(&f) {
            prop_assert!(r.end >= r.start);
        }
    }

    #[test]
    fn tried_region_round_trips(start in any::<u64>(), len in prop_oneof![Just(0u64), 1u64..4096, any::<u64>()], nr in any::<u64>(), age in any::<u64>()) {
        let end = start.saturating_add(len);
        let f = [start, end, nr, age].map(|v| format!("{v}\n"));
        let r = TriedRegion::parse(&f).unwrap();
        prop_assert_eq!((r.start, r.end, r.nr_accesses, r.age), (start, end, nr, age));
    }

    #[test]
    fn zram_mm_stat_never_panics(t in text(), v in [any::<u64>(), any::<u64>(), any::<u64>()]) {
        let _ = ZramMmStat::parse(&t);
        let s = ZramMmStat::parse(&format!("{} {} {} 0 0 0 0 0 0\n", v[0], v[1], v[2]));
        prop_assert_eq!((s.orig_data_size, s.compr_data_size, s.mem_used_total), (v[0], v[1], v[2]));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(FS_CASES))]

    /// A captured admin tree with its values mutated (or replaced by arbitrary text): reading the
    /// kdamonds gives a list or an error.
    #[test]
    fn damon_admin_tree_never_panics(tree in 0usize..16, edits in prop::collection::vec((any::<usize>(), prop_oneof![text(), mutation().prop_map(|m| apply("1", &m))]), 1..6)) {
        // The files kdamonds() reads (the rest of the tree does not change what it returns).
        let read = |p: &str| {
            p == "kdamonds/nr_kdamonds"
                || p.strip_prefix("kdamonds/").is_some_and(|r| {
                    r.split_once('/').is_some_and(|(i, f)| i.parse::<u32>().is_ok() && (f == "state" || f == "pid"))
                })
        };
        let trees = damon_trees();
        let mut files: Vec<_> = trees[tree % trees.len()].iter().filter(|(p, _)| read(p)).cloned().collect();
        for (i, v) in &edits {
            let k = i % files.len();
            files[k].1 = v.replace('\0', "");
        }
        let root = dir("damon");
        build_tree(&root, &files);
        if let Ok(ks) = DamonAdmin::with_root(&root).kdamonds() {
            prop_assert!(ks.iter().enumerate().all(|(i, k)| k.index == i as u64));
        }
    }
}

// --- PSI, /proc/swaps --------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn pressure_never_panics(t in prop_oneof![text(), mutated("pressure-memory"), mutated("v2-memory.pressure")]) {
        let _ = Pressure::parse(Path::new("memory.pressure"), &t);
    }

    #[test]
    fn pressure_fixtures_and_round_trip(a in [0u32..10000, 0u32..10000, 0u32..10000], total in any::<u64>(), full in any::<bool>()) {
        for t in fixtures("pressure-memory").into_iter().chain(fixtures("v2-memory.pressure")) {
            prop_assert!(Pressure::parse(Path::new("p"), &t).is_ok(), "{:?}", t);
        }
        let avg = a.map(|x| f64::from(x) / 100.0);
        let line = |k: &str| format!("{k} avg10={:.2} avg60={:.2} avg300={:.2} total={total}\n", avg[0], avg[1], avg[2]);
        let text = if full { line("some") + &line("full") } else { line("some") };
        let p = Pressure::parse(Path::new("p"), &text).unwrap();
        prop_assert_eq!((p.some.avg10, p.some.avg60, p.some.avg300, p.some.total_us), (avg[0], avg[1], avg[2], total));
        prop_assert_eq!(p.full.is_some(), full);
    }

    #[test]
    fn proc_swaps_never_panics(t in prop_oneof![text(), mutated("proc-swaps")]) {
        let s = SwapStatus::parse(&t);
        prop_assert!(s.areas.len() <= t.lines().count());
    }

    #[test]
    fn proc_swaps_round_trips(areas in prop::collection::vec(("/dev/[a-z0-9]{1,8}", prop_oneof![Just("partition"), Just("file")], any::<u64>(), any::<u64>(), any::<i64>()), 0..8)) {
        let mut text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n".to_string();
        for (f, k, s, u, p) in &areas {
            text.push_str(&format!("{f}                               {k}\t{s}\t\t{u}\t\t{p}\n"));
        }
        let got = SwapStatus::parse(&text);
        prop_assert_eq!(got.areas.len(), areas.len());
        for (a, (f, k, s, u, p)) in got.areas.iter().zip(&areas) {
            prop_assert_eq!((&a.filename, a.kind.as_str(), a.size_kib, a.used_kib, a.priority), (f, *k, *s, *u, *p));
        }
    }
}

// --- the journal's records -----------------------------------------------------------------------

fn owner() -> impl Strategy<Value = Owner> {
    (any::<i32>(), any::<u64>(), any::<String>()).prop_map(|(pid, start_time, command)| Owner {
        pid,
        start_time,
        command,
    })
}

fn path() -> impl Strategy<Value = PathBuf> {
    "[/a-zA-Z0-9_. -]{0,60}".prop_map(PathBuf::from)
}

fn change() -> impl Strategy<Value = HostChange> {
    prop_oneof![
        (any::<u32>(), any::<bool>())
            .prop_map(|(index, hot_added)| HostChange::ZramSwap { index, hot_added }),
        (path(), path()).prop_map(|(dir, parent_dir)| HostChange::Memcg { dir, parent_dir }),
        (path(), any::<String>()).prop_map(|(path, restore)| HostChange::Knob { path, restore }),
        (path(), path(), prop::option::of(any::<String>())).prop_map(|(dir, nr_path, target)| {
            HostChange::Kdamond {
                dir,
                nr_path,
                target,
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn journal_entry_round_trips(owner in owner(), description in any::<String>(), change in change()) {
        let e = JournalEntry { owner, description, change };
        let text = serde_json::to_string_pretty(&e).unwrap();
        let back: JournalEntry = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, e);
    }

    #[test]
    fn journal_entry_never_panics(t in prop_oneof![text(), mutated("journal-")]) {
        let _ = serde_json::from_str::<JournalEntry>(&t);
    }

    #[test]
    fn proc_stat_never_panics(t in prop_oneof![text(), mutated("proc-stat")]) {
        let _ = parse_stat(&t);
    }

    #[test]
    fn proc_stat_round_trips(pid in 1u32.., comm in "[ -~]{0,16}", state in "[RSDZTtXI]", start in any::<u64>()) {
        // Fields 4..21 are numbers; field 22 is the start time.
        let mid: String = (4..22).map(|i| format!(" {i}")).collect();
        let text = format!("{pid} ({comm}) {state}{mid} {start} 4096 100\n");
        prop_assert_eq!(parse_stat(&text), Some((start, state.chars().next().unwrap())));
    }
}

#[test]
fn journal_fixtures_parse() {
    for t in fixtures("journal-") {
        serde_json::from_str::<JournalEntry>(&t).unwrap_or_else(|e| panic!("{e}: {t}"));
    }
    for t in fixtures("proc-stat") {
        assert!(parse_stat(&t).is_some(), "{t}");
    }
}
