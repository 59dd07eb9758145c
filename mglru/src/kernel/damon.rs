//! DAMON through its sysfs admin interface (the access source is
//! [`crate::sources::damon_vaddr`]).
//!
//! DAMON's sysfs interface is shared by the whole host: kdamonds are numbered directories under
//! `kdamonds/`, and `nr_kdamonds` can only be changed while none runs (EBUSY otherwise), and changing
//! it rebuilds every kdamond directory. So agelab only ever creates a kdamond when there is none at
//! all, never writes anything under a kdamond it did not create, and turns its own off and sets
//! `nr_kdamonds` back to 0 on every exit path (via [`host_guard`](crate::host_guard), journaled
//! before `nr_kdamonds` is written, so a SIGKILLed run's kdamond is stopped by the next agelab
//! command). The journal entry records what the kdamond monitors ([`target_text`]); that undo
//! stops the kdamond in the slot only while it still monitors that ([`configured_target`]): a
//! kdamond someone set up there after agelab's owner died is not touched.
//!
//! [`configured_target`]: crate::kernel::undo::configured_target
//!
//! The kdamond runs one `stat` scheme matching every region; [`Kdamond::tried_regions`] asks the
//! kernel to `update_schemes_tried_regions` and reads the regions back.

use super::pagemap::PagemapError;
use super::sysfs::{read_trimmed, read_u64, write_str, KernelFileError};
use crate::host_guard::{HostGuardError, HostRestore, RestoreGuard};
use crate::journal::knobs::{damon_module_enabled, DAMON_MODULES};
use crate::journal::{HostChange, Journal, Owner};
use std::path::{Path, PathBuf};

/// The DAMON sysfs admin directory (defined with the other knobs the journal restores).
pub use crate::journal::knobs::DAMON_ADMIN;

/// Errors from DAMON.
#[derive(Debug, thiserror::Error)]
pub enum DamonError {
    /// The kdamond could not be journaled (so it was not created).
    #[error(transparent)]
    Guard(#[from] HostGuardError),
    /// Another agelab process runs the kdamond.
    #[error("the kdamond belongs to another agelab process, {owner}; DAMON allows one admin")]
    HeldByAgelab {
        /// Who holds it.
        owner: Owner,
    },
    /// No DAMON sysfs interface.
    #[error("kernel built without CONFIG_DAMON_SYSFS ({0} missing)")]
    NotBuilt(String),
    /// Not root.
    #[error("DAMON sysfs needs root")]
    NotRoot,
    /// Someone else's kdamond runs.
    #[error("kdamond.{index} is already running and is not ours (pid {pid}); DAMON allows one admin: nr_kdamonds cannot change while a kdamond runs (writing it returns EBUSY), and agelab never touches a kdamond it did not create")]
    ForeignRunning {
        /// Its index.
        index: u64,
        /// Its pid as sysfs reports it.
        pid: String,
    },
    /// A DAMON module (e.g. DAMON_STAT, on by default in Debian 7.x) runs an exclusive context.
    #[error("the {module} module is enabled ({module}.enabled=Y) and runs an exclusive kdamond that is not ours; DAMON then refuses to start sysfs kdamonds (EBUSY); boot with {module}.enabled=N or disable it to use DAMON here")]
    ModuleRunning {
        /// Module name.
        module: &'static str,
    },
    /// Starting the kdamond returned EBUSY for a reason not detected beforehand.
    #[error("starting the kdamond: EBUSY (another DAMON user runs an exclusive context)")]
    StartBusy,
    /// Someone else configured kdamonds (stopped).
    #[error("{nr} kdamond(s) are configured by someone else (stopped); creating ours would rewrite nr_kdamonds and discard their setup")]
    ForeignConfigured {
        /// How many.
        nr: u64,
    },
    /// The requested operations set is not built in.
    #[error("DAMON operations {ops:?} not available (avail_operations: {avail})")]
    OpsUnavailable {
        /// Requested.
        ops: &'static str,
        /// What the kernel offers.
        avail: String,
    },
    /// A sysfs file operation failed.
    #[error(transparent)]
    File(#[from] KernelFileError),
    /// PFN lookup for paddr monitoring failed.
    #[error(transparent)]
    Pagemap(#[from] PagemapError),
    /// A quota auto-tuning goal was asked for with a metric this kernel does not list.
    #[error("DAMOS quota goal metric '{0}' refused by this kernel")]
    GoalMetric(String),
    /// A tried region did not parse.
    #[error("tried region {0}: malformed")]
    BadRegion(PathBuf),
}

/// What the kdamond monitors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DamonTarget {
    /// Virtual addresses of process `pid`.
    Vaddr {
        /// The process.
        pid: i32,
        /// Initial regions `[start, end)` (e.g. guest memory); empty: DAMON picks three regions
        /// spanning every mapping. DAMON re-picks those at each `update_us` (`damon_va_update`),
        /// so ranges stay the target only while `update_us` exceeds the run.
        ranges: Vec<(u64, u64)>,
    },
    /// Physical address ranges `[start, end)` in bytes.
    Paddr {
        /// Ranges.
        ranges: Vec<(u64, u64)>,
    },
}

/// Monitoring attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DamonAttrs {
    /// Sampling interval (µs).
    pub sample_us: u64,
    /// Aggregation interval (µs): `nr_accesses` counts samples per aggregation.
    pub aggr_us: u64,
    /// Regions update interval (µs).
    pub update_us: u64,
    /// Minimum number of regions.
    pub min_nr_regions: u64,
    /// Maximum number of regions.
    pub max_nr_regions: u64,
}

impl Default for DamonAttrs {
    /// DAMON's defaults except more regions, for finer guest-page granularity.
    fn default() -> Self {
        DamonAttrs {
            sample_us: 5_000,
            aggr_us: 100_000,
            update_us: 1_000_000,
            min_nr_regions: 100,
            max_nr_regions: 10_000,
        }
    }
}

/// What the kdamond's one scheme does.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum DamonScheme {
    /// `stat`: matches every region, only counts (the access source).
    #[default]
    Stat,
    /// `pageout`: reclaims regions idle long enough, within a quota (DAMON_RECLAIM's shape).
    Pageout(PageoutScheme),
}

/// A DAMOS `pageout` scheme: regions with no access for at least `min_age_us`, at most
/// `quota_bytes` and `quota_ms` of work per `reset_interval_ms`, oldest first (weights 0/0/1, as
/// DAMON_RECLAIM), optionally with the quota auto-tuned toward a goal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageoutScheme {
    /// Minimum idle time (µs), rounded to whole aggregation intervals.
    pub min_age_us: u64,
    /// Size quota per reset interval (bytes; 0 = none).
    pub quota_bytes: u64,
    /// Time quota per reset interval (ms; 0 = none).
    pub quota_ms: u64,
    /// Quota reset interval (ms).
    pub reset_interval_ms: u64,
    /// Auto-tuning goal, applied where the kernel has `quotas/goals`.
    pub goal: Option<QuotaGoal>,
}

/// A DAMOS quota auto-tuning goal: the kernel scales the effective quota so `metric` approaches
/// `target_value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaGoal {
    /// Metric name as sysfs takes it, e.g. `some_mem_psi_us` (memory PSI some stall, µs per
    /// reset interval).
    pub metric: String,
    /// Target value of the metric.
    pub target_value: u64,
}

/// A running scheme's counters (`update_schemes_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchemeStats {
    /// Regions the scheme tried.
    pub nr_tried: u64,
    /// Bytes it tried.
    pub sz_tried: u64,
    /// Regions the action was applied to.
    pub nr_applied: u64,
    /// Bytes the action was applied to.
    pub sz_applied: u64,
    /// Times the quota was exceeded.
    pub qt_exceeds: u64,
}

/// One region reported by the stat scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TriedRegion {
    /// Start address (virtual or physical).
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Samples that saw an access in the last aggregation interval.
    pub nr_accesses: u64,
    /// Aggregation intervals the access pattern has stayed the same.
    pub age: u64,
}

impl TriedRegion {
    /// The files of a `tried_regions/<n>` directory, in the order [`parse`](Self::parse) takes.
    pub const FILES: [&'static str; 4] = ["start", "end", "nr_accesses", "age"];

    /// A region from the text of its four files ([`FILES`](Self::FILES) order); `None` when a
    /// field is not an unsigned decimal number or `end < start`.
    pub fn parse<S: AsRef<str>>(fields: &[S; 4]) -> Option<Self> {
        let n = |i: usize| fields[i].as_ref().trim().parse::<u64>().ok();
        let region = TriedRegion {
            start: n(0)?,
            end: n(1)?,
            nr_accesses: n(2)?,
            age: n(3)?,
        };
        (region.end >= region.start).then_some(region)
    }
}

/// State of one kdamond.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KdamondInfo {
    /// Index under `kdamonds/`.
    pub index: u64,
    /// `on` or `off`.
    pub state: String,
    /// Worker pid (`-1` when off).
    pub pid: String,
}

/// The admin interface.
#[derive(Clone, Debug)]
pub struct DamonAdmin {
    root: PathBuf,
}

impl Default for DamonAdmin {
    fn default() -> Self {
        DamonAdmin {
            root: DAMON_ADMIN.into(),
        }
    }
}

impl DamonAdmin {
    /// The real interface.
    pub fn new() -> Self {
        Self::default()
    }

    /// An interface rooted elsewhere (tests).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        DamonAdmin { root: root.into() }
    }

    fn kdamonds_dir(&self) -> PathBuf {
        self.root.join("kdamonds")
    }

    /// Every kdamond present (ours or not); read-only.
    pub fn kdamonds(&self) -> Result<Vec<KdamondInfo>, DamonError> {
        let nr = read_u64(self.kdamonds_dir().join("nr_kdamonds"))?;
        (0..nr)
            .map(|index| {
                let d = self.kdamonds_dir().join(index.to_string());
                Ok(KdamondInfo {
                    index,
                    state: read_trimmed(d.join("state"))?,
                    pid: read_trimmed(d.join("pid")).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Whether agelab may create its own kdamond here, with the precise reason when not.
    pub fn check(&self) -> Result<(), DamonError> {
        if !self.kdamonds_dir().exists() {
            return Err(DamonError::NotBuilt(self.root.display().to_string()));
        }
        if !super::is_root() {
            return Err(DamonError::NotRoot);
        }
        // DAMON modules run kdamonds invisible in the admin tree; an enabled one that started
        // exclusively (damon_stat does) makes every sysfs `on` fail with EBUSY.
        for module in DAMON_MODULES {
            let enabled = read_trimmed(damon_module_enabled(module));
            if enabled.is_ok_and(|v| v == "Y") {
                return Err(DamonError::ModuleRunning { module });
            }
        }
        // Only a journaled kdamond of this admin tree holds it (tests run trees of plain files
        // elsewhere, journaled like the real one).
        let held = Journal::system().live_changes().unwrap_or_default();
        if let Some((owner, _)) = held.into_iter().find(
            |(_, c)| matches!(c, HostChange::Kdamond { dir, .. } if dir.starts_with(&self.root)),
        ) {
            return Err(DamonError::HeldByAgelab { owner });
        }
        let ks = self.kdamonds()?;
        if let Some(k) = ks.iter().find(|k| k.state == "on") {
            return Err(DamonError::ForeignRunning {
                index: k.index,
                pid: k.pid.clone(),
            });
        }
        if !ks.is_empty() {
            return Err(DamonError::ForeignConfigured {
                nr: ks.len() as u64,
            });
        }
        Ok(())
    }

    /// Creates, configures and starts a kdamond with one `stat` scheme.
    pub fn start(&self, target: &DamonTarget, attrs: DamonAttrs) -> Result<Kdamond, DamonError> {
        self.start_scheme(target, attrs, &DamonScheme::Stat)
    }

    /// Creates, configures and starts a kdamond with one scheme.
    pub fn start_scheme(
        &self,
        target: &DamonTarget,
        attrs: DamonAttrs,
        scheme: &DamonScheme,
    ) -> Result<Kdamond, DamonError> {
        self.check()?;
        let nr_path = self.kdamonds_dir().join("nr_kdamonds");
        let dir = self.kdamonds_dir().join("0");
        // Journaled before creation, so any failure (or kill) below still tears it down.
        let guard = HostRestore::record(
            format!("DAMON kdamond {} off, nr_kdamonds 0", dir.display()),
            HostChange::Kdamond {
                dir: dir.clone(),
                nr_path: nr_path.clone(),
                target: Some(target_text(target)),
            },
        )?;
        write_str(&nr_path, "1")?;
        let mut k = Kdamond {
            dir,
            guard,
            goal_applied: false,
        };
        k.configure(target, attrs, scheme)?;
        write_str(k.dir.join("state"), "on").map_err(|e| match e.errno() {
            Some(libc::EBUSY) => DamonError::StartBusy,
            _ => e.into(),
        })?;
        Ok(k)
    }
}

/// A kdamond's target in words, as [`configured_target`](crate::kernel::undo::configured_target)
/// reads it back from sysfs: `vaddr pid
/// PID` or `paddr START-END ...` (bytes, decimal).
pub fn target_text(target: &DamonTarget) -> String {
    match target {
        DamonTarget::Vaddr { pid, .. } => format!("vaddr pid {pid}"),
        DamonTarget::Paddr { ranges } => {
            let r: Vec<String> = ranges.iter().map(|(s, e)| format!("{s}-{e}")).collect();
            format!("paddr {}", r.join(" "))
        }
    }
}

/// A kdamond created by this process; dropping it turns it off and removes it.
#[derive(Debug)]
pub struct Kdamond {
    dir: PathBuf,
    guard: RestoreGuard,
    goal_applied: bool,
}

impl Kdamond {
    fn ctx(&self) -> PathBuf {
        self.dir.join("contexts/0")
    }

    fn configure(
        &mut self,
        target: &DamonTarget,
        attrs: DamonAttrs,
        scheme: &DamonScheme,
    ) -> Result<(), DamonError> {
        write_str(self.dir.join("contexts/nr_contexts"), "1")?;
        let ctx = self.ctx();
        let ops = match target {
            DamonTarget::Vaddr { .. } => "vaddr",
            DamonTarget::Paddr { .. } => "paddr",
        };
        let avail = read_trimmed(ctx.join("avail_operations")).unwrap_or_default();
        if !avail.split_whitespace().any(|o| o == ops) {
            return Err(DamonError::OpsUnavailable { ops, avail });
        }
        write_str(ctx.join("operations"), ops)?;
        self.write_attrs(attrs)?;
        write_str(ctx.join("targets/nr_targets"), "1")?;
        let t = ctx.join("targets/0");
        let ranges = match target {
            DamonTarget::Vaddr { pid, ranges } => {
                write_str(t.join("pid_target"), &pid.to_string())?;
                ranges
            }
            DamonTarget::Paddr { ranges } => ranges,
        };
        if !ranges.is_empty() {
            write_str(t.join("regions/nr_regions"), &ranges.len().to_string())?;
            for (i, (s, e)) in ranges.iter().enumerate() {
                let r = t.join(format!("regions/{i}"));
                // End first: a start may not pass the current end.
                write_str(r.join("end"), &e.to_string())?;
                write_str(r.join("start"), &s.to_string())?;
            }
        }
        write_str(ctx.join("schemes/nr_schemes"), "1")?;
        let sch = ctx.join("schemes/0");
        let pat = sch.join("access_pattern");
        // Max first, then min: min may not exceed the current max.
        let pattern = |what: &str, min: u64, max: u64| -> Result<(), DamonError> {
            write_str(pat.join(what).join("max"), &max.to_string())?;
            write_str(pat.join(what).join("min"), &min.to_string())?;
            Ok(())
        };
        match scheme {
            DamonScheme::Stat => {
                write_str(sch.join("action"), "stat")?;
                // The pattern defaults differ by kernel (7.2 defaults nr_accesses to 0..0, which
                // would hide every accessed region), so the stat scheme matches everything.
                pattern("sz", 0, u64::MAX)?;
                pattern("nr_accesses", 0, u64::from(u32::MAX))?;
                pattern("age", 0, u64::from(u32::MAX))?;
            }
            DamonScheme::Pageout(p) => {
                write_str(sch.join("action"), "pageout")?;
                pattern("sz", 4096, u64::MAX)?;
                pattern("nr_accesses", 0, 0)?;
                let min_age = p.min_age_us.div_ceil(attrs.aggr_us.max(1));
                pattern("age", min_age, u64::from(u32::MAX))?;
                let q = sch.join("quotas");
                write_str(q.join("ms"), &p.quota_ms.to_string())?;
                write_str(q.join("bytes"), &p.quota_bytes.to_string())?;
                write_str(
                    q.join("reset_interval_ms"),
                    &p.reset_interval_ms.to_string(),
                )?;
                // DAMON_RECLAIM's prioritisation: the oldest regions first.
                write_str(q.join("weights/sz_permil"), "0")?;
                write_str(q.join("weights/nr_accesses_permil"), "0")?;
                write_str(q.join("weights/age_permil"), "1")?;
                if let Some(g) = &p.goal {
                    let goals = q.join("goals");
                    if goals.join("nr_goals").exists() {
                        write_str(goals.join("nr_goals"), "1")?;
                        let g0 = goals.join("0");
                        if g0.join("target_metric").exists() {
                            write_str(g0.join("target_metric"), &g.metric)
                                .map_err(|_| DamonError::GoalMetric(g.metric.clone()))?;
                        } else if g.metric != "user_input" {
                            // Before target_metric (6.8) a goal was user_input only.
                            return Err(DamonError::GoalMetric(g.metric.clone()));
                        }
                        write_str(g0.join("target_value"), &g.target_value.to_string())?;
                        self.goal_applied = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the scheme's quota goal was set (the kernel has `quotas/goals`).
    pub fn goal_applied(&self) -> bool {
        self.goal_applied
    }

    /// The kdamond thread's pid (`None` when off).
    pub fn pid(&self) -> Option<i32> {
        read_trimmed(self.dir.join("state"))
            .ok()
            .filter(|s| s == "on")?;
        read_trimmed(self.dir.join("pid")).ok()?.parse().ok()
    }

    /// The scheme's counters, refreshed now (`update_schemes_stats`).
    pub fn scheme_stats(&self) -> Result<SchemeStats, DamonError> {
        write_str(self.dir.join("state"), "update_schemes_stats")?;
        let d = self.ctx().join("schemes/0/stats");
        Ok(SchemeStats {
            nr_tried: read_u64(d.join("nr_tried"))?,
            sz_tried: read_u64(d.join("sz_tried"))?,
            nr_applied: read_u64(d.join("nr_applied"))?,
            sz_applied: read_u64(d.join("sz_applied"))?,
            qt_exceeds: read_u64(d.join("qt_exceeds"))?,
        })
    }

    /// The quota the kernel applies now, bytes (`update_schemes_effective_quotas`; kernels
    /// with quota goals), `None` where the file is missing.
    pub fn effective_quota_bytes(&self) -> Option<u64> {
        write_str(self.dir.join("state"), "update_schemes_effective_quotas").ok()?;
        read_u64(self.ctx().join("schemes/0/quotas/effective_bytes")).ok()
    }

    fn write_attrs(&self, a: DamonAttrs) -> Result<(), DamonError> {
        let m = self.ctx().join("monitoring_attrs");
        write_str(m.join("intervals/sample_us"), &a.sample_us.to_string())?;
        write_str(m.join("intervals/aggr_us"), &a.aggr_us.to_string())?;
        write_str(m.join("intervals/update_us"), &a.update_us.to_string())?;
        // max first: min may not exceed the current max.
        write_str(m.join("nr_regions/max"), &a.max_nr_regions.to_string())?;
        write_str(m.join("nr_regions/min"), &a.min_nr_regions.to_string())?;
        Ok(())
    }

    /// Changes the monitoring attributes of the running kdamond (`commit`).
    pub fn set_attrs(&self, a: DamonAttrs) -> Result<(), DamonError> {
        self.write_attrs(a)?;
        write_str(self.dir.join("state"), "commit")?;
        Ok(())
    }

    /// The kdamond's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Asks the kernel to refresh the scheme's tried regions and reads them.
    pub fn tried_regions(&self) -> Result<(Vec<TriedRegion>, u64), DamonError> {
        write_str(self.dir.join("state"), "update_schemes_tried_regions")?;
        let d = self.ctx().join("schemes/0/tried_regions");
        let mut idx: Vec<u64> = std::fs::read_dir(&d)
            .map_err(|err| KernelFileError {
                op: "list".into(),
                path: d.clone(),
                err,
            })?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        idx.sort_unstable();
        let mut bytes = 0u64;
        let mut out = Vec::with_capacity(idx.len());
        for i in idx {
            let r = d.join(i.to_string());
            let mut fields = [const { String::new() }; 4];
            for (f, name) in fields.iter_mut().zip(TriedRegion::FILES) {
                *f = read_trimmed(r.join(name))?;
                bytes += 21;
            }
            let region = TriedRegion::parse(&fields).ok_or(DamonError::BadRegion(r))?;
            out.push(region);
        }
        Ok((out, bytes))
    }

    /// Turns the kdamond off and sets nr_kdamonds back to 0.
    pub fn stop(self) {
        drop(self.guard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::undo::{configured_target, undo_kdamond};

    /// A kdamonds directory with kdamond 0 monitoring `ops` target `value`, on.
    fn tree(tag: &str, ops: &str, target: &[(&str, &str)]) -> (PathBuf, PathBuf, PathBuf) {
        let root = std::env::temp_dir().join(format!("agelab-damon-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let k = root.join("kdamonds");
        let ctx = k.join("0/contexts/0");
        std::fs::create_dir_all(ctx.join("targets/0/regions/0")).unwrap();
        std::fs::write(k.join("nr_kdamonds"), "1\n").unwrap();
        std::fs::write(k.join("0/state"), "on\n").unwrap();
        std::fs::write(ctx.join("operations"), format!("{ops}\n")).unwrap();
        for (f, v) in target {
            std::fs::write(ctx.join("targets/0").join(f), format!("{v}\n")).unwrap();
        }
        (root, k.join("0"), k.join("nr_kdamonds"))
    }

    /// The undo stops the kdamond that monitors what agelab's monitored, and leaves one that
    /// monitors anything else (someone set it up after agelab's owner died) alone.
    #[test]
    fn undo_stops_only_agelabs_kdamond() {
        let ours = target_text(&DamonTarget::Vaddr {
            pid: 4242,
            ranges: vec![(1 << 32, 2 << 32)],
        });
        let (root, dir, nr) = tree("ours", "vaddr", &[("pid_target", "4242")]);
        assert_eq!(configured_target(&dir).as_deref(), Some(ours.as_str()));
        let done = undo_kdamond(&dir, &nr, Some(&ours)).unwrap();
        assert!(done.contains("off, nr_kdamonds 0"), "{done}");
        assert_eq!(std::fs::read_to_string(&nr).unwrap(), "0");
        let _ = std::fs::remove_dir_all(&root);

        let (root, dir, nr) = tree("foreign", "vaddr", &[("pid_target", "77")]);
        let done = undo_kdamond(&dir, &nr, Some(&ours)).unwrap();
        assert!(done.contains("left alone"), "{done}");
        assert_eq!(std::fs::read_to_string(&nr).unwrap(), "1\n");
        assert_eq!(std::fs::read_to_string(dir.join("state")).unwrap(), "on\n");
        let _ = std::fs::remove_dir_all(&root);

        let paddr = target_text(&DamonTarget::Paddr {
            ranges: vec![(4096, 8192)],
        });
        let (root, dir, nr) = tree(
            "paddr",
            "paddr",
            &[
                ("regions/nr_regions", "1"),
                ("regions/0/start", "4096"),
                ("regions/0/end", "8192"),
            ],
        );
        assert_eq!(configured_target(&dir), Some(paddr.clone()));
        assert!(undo_kdamond(&dir, &nr, Some("paddr 0-4096"))
            .unwrap()
            .contains("left alone"));
        // Stopped part way through agelab's configuration (a kill while writing regions): ours.
        std::fs::write(dir.join("state"), "off\n").unwrap();
        let ours_plus = format!("{paddr} 12288-16384");
        assert!(undo_kdamond(&dir, &nr, Some(&ours_plus))
            .unwrap()
            .contains("nr_kdamonds 0"));
        std::fs::write(&nr, "1\n").unwrap();
        std::fs::write(dir.join("state"), "on\n").unwrap();
        assert!(undo_kdamond(&dir, &nr, Some(&paddr))
            .unwrap()
            .contains("nr_kdamonds 0"));
        let _ = std::fs::remove_dir_all(&root);
    }
}
