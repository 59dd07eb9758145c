//! The reclaim benchmark: workloads × policy arms × repetitions, mean and 95% confidence interval.
//!
//! Arms run interleaved, round by round (A B C A B C …), so slow drifts of a shared host hit every
//! arm alike. Throughput is paired per round: each run's guest operations per vCPU-thread CPU
//! second (and per wall second) after the warm-up, divided by the same round's `none` run. The
//! interval is Student's t over the rounds, `t(0.975, n−1)·sd/√n` ([`agelab_util::stats`]). A policy
//! listed twice is a second arm (`none,none` = an A/A pair: the second arm's interval is the
//! benchmark's resolution).

use serde::Serialize;

use super::config::ReclaimRunConfig;
use super::error::ReclaimRunError;
use super::policy::PolicyKind;
use super::run::ReclaimRunReport;
use super::run_report::OomKill;
use agelab_util::stats::Summary;
use agelab_vmm::workload::WorkloadSpec;

/// Mean and 95% confidence half-width of a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct MeanCi {
    /// Mean.
    pub mean: f64,
    /// Half-width of the 95% confidence interval (Student t); 0 for one sample.
    pub ci95: f64,
    /// Samples.
    pub n: usize,
}

impl MeanCi {
    /// From samples.
    pub fn of(xs: &[f64]) -> Self {
        let n = xs.len();
        if n == 0 {
            return MeanCi::default();
        }
        let mean = xs.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return MeanCi { mean, ci95: 0.0, n };
        }
        let s = Summary::of(xs);
        MeanCi {
            mean,
            ci95: s.ci95.unwrap_or(0.0),
            n,
        }
    }

    /// `mean ± ci` with `digits` decimals.
    pub fn fmt(&self, digits: usize) -> String {
        format!("{:.*}±{:.*}", digits, self.mean, digits, self.ci95)
    }
}

/// One policy on one workload, over the repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct PolicySummary {
    /// Policy.
    pub policy: String,
    /// Memory saved, MiB.
    pub saved_mib: MeanCi,
    /// Guest RSS at the end, MiB.
    pub rss_mib: MeanCi,
    /// Swap used, MiB.
    pub swap_mib: MeanCi,
    /// Cold pages reclaimed, %.
    pub cold_reclaimed_pct: MeanCi,
    /// Working-set pages out at the end, %.
    pub ws_reclaimed_pct: MeanCi,
    /// Guest operations per vCPU-thread CPU second after the warm-up, relative to the same
    /// round's `none` run, %: paired per round.
    pub throughput_pct: MeanCi,
    /// The same per wall second of guest run time, %.
    pub throughput_wall_pct: MeanCi,
    /// The same per vCPU second the guest ran or was blocked (wall minus run-queue wait), %.
    pub throughput_eff_pct: MeanCi,
    /// Guest operations per vCPU-thread CPU second (absolute, after the warm-up).
    pub ops_per_cpu_sec: MeanCi,
    /// Refaults per run.
    pub refaults: MeanCi,
    /// Refaults, % of working set per minute.
    pub refault_pct_ws_min: MeanCi,
    /// Aging CPU time per run, ms.
    pub aging_cpu_ms: MeanCi,
    /// Reclaim CPU time per run, ms.
    pub reclaim_cpu_ms: MeanCi,
    /// Memory pressure (PSI some) during the measured part, % of wall time.
    pub psi_some_pct: MeanCi,
    /// Integrity: total wrong words over every repetition (must be 0).
    pub verify_mismatches: u64,
    /// Sources the engine had.
    pub sources: Vec<String>,
    /// Runs the memcg's OOM killer ended (in no mean above; each is a row of the table).
    pub oom_killed: Vec<OomKill>,
}

/// One workload's results.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadSummary {
    /// The workload.
    pub workload: String,
    /// Per policy, in the order run.
    pub policies: Vec<PolicySummary>,
}

/// The benchmark's results.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Repetitions per cell.
    pub reps: usize,
    /// Guest memory, bytes.
    pub mem_bytes: u64,
    /// Backing.
    pub backing: String,
    /// Run length, s.
    pub duration_s: f64,
    /// Warm-up excluded from throughput, s.
    pub warmup_s: f64,
    /// Interval, ms.
    pub interval_ms: f64,
    /// Age gate, s.
    pub min_age_s: f64,
    /// Controller parameters.
    pub controller: super::controller::ControllerConfig,
    /// Per workload.
    pub workloads: Vec<WorkloadSummary>,
    /// Every run, for re-analysis.
    pub runs: Vec<ReclaimRunReport>,
}

/// Runs every policy on every workload `reps` times, interleaving policies within a repetition so
/// slow drifts of the shared host hit every policy alike. `run` performs one run
/// ([`run_once`](super::run_once) in this process, or a child process for a policy the
/// kernel's OOM killer may end: [`run_in_child`](super::run_in_child)); `progress` sees each
/// finished run. Runs the OOM killer ended count in no mean: the summary lists them.
pub fn run_bench(
    base: &ReclaimRunConfig,
    workloads: &[WorkloadSpec],
    policies: &[PolicyKind],
    reps: usize,
    mut run: impl FnMut(&ReclaimRunConfig) -> Result<ReclaimRunReport, ReclaimRunError>,
    mut progress: impl FnMut(&ReclaimRunReport),
) -> Result<BenchReport, ReclaimRunError> {
    let labels = arm_labels(policies);
    let total = workloads.len() * reps * policies.len();
    let mut started = 0;
    let mut runs = Vec::new();
    let mut summaries = Vec::new();
    for w in workloads {
        let mut per: Vec<Vec<ReclaimRunReport>> = vec![Vec::new(); policies.len()];
        for _ in 0..reps {
            for (i, &p) in policies.iter().enumerate() {
                started += 1;
                let label = format!("agelab reclaim: run {started}/{total} {} on {w}", labels[i]);
                let cfg = ReclaimRunConfig {
                    workload: w.clone(),
                    policy: p,
                    progress: base.progress.labelled(&label),
                    ..base.clone()
                };
                let mut r = run(&cfg)?;
                r.policy = labels[i].clone();
                progress(&r);
                per[i].push(r);
            }
        }
        let baseline = policies.iter().position(|&p| p == PolicyKind::None);
        let mut ps = Vec::new();
        for (i, label) in labels.iter().enumerate() {
            let finished = |r: &&ReclaimRunReport| r.oom_killed.is_none();
            let rs: Vec<&ReclaimRunReport> = per[i].iter().filter(finished).collect();
            let f = |g: &dyn Fn(&ReclaimRunReport) -> f64| {
                MeanCi::of(&rs.iter().map(|r| g(r)).collect::<Vec<_>>())
            };
            // Paired per round against the round's `none` run.
            let paired = |g: &dyn Fn(&ReclaimRunReport) -> f64| match baseline {
                Some(b) => MeanCi::of(
                    &per[i]
                        .iter()
                        .zip(&per[b])
                        .filter(|(r, n)| finished(r) && finished(n) && g(n) > 0.0)
                        .map(|(r, n)| g(r) / g(n) * 100.0)
                        .collect::<Vec<_>>(),
                ),
                None => MeanCi::default(),
            };
            let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
            let pct = |a: u64, b: u64| {
                if b == 0 {
                    0.0
                } else {
                    a as f64 * 100.0 / b as f64
                }
            };
            ps.push(PolicySummary {
                policy: label.clone(),
                saved_mib: f(&|r| mib(r.saved)),
                rss_mib: f(&|r| mib(r.rss_end)),
                swap_mib: f(&|r| mib(r.swap_used)),
                cold_reclaimed_pct: f(&|r| pct(r.cold_reclaimed, r.cold_pages)),
                ws_reclaimed_pct: f(&|r| pct(r.ws_reclaimed, r.ws_pages)),
                throughput_pct: paired(&|r| r.ops_per_cpu_sec),
                throughput_wall_pct: paired(&|r| r.ops_per_wall_sec),
                throughput_eff_pct: paired(&|r| r.ops_per_eff_sec),
                ops_per_cpu_sec: f(&|r| r.ops_per_cpu_sec),
                refaults: f(&|r| r.refaults as f64),
                refault_pct_ws_min: f(&|r| r.refault_pct_ws_min),
                aging_cpu_ms: f(&|r| r.aging_cpu_ns as f64 / 1e6),
                reclaim_cpu_ms: f(&|r| r.reclaim_cpu_ns as f64 / 1e6),
                psi_some_pct: MeanCi::of(
                    &rs.iter().filter_map(|r| r.psi_some_pct).collect::<Vec<_>>(),
                ),
                verify_mismatches: rs.iter().map(|r| r.verify_mismatches).sum(),
                sources: rs.first().map(|r| r.sources.clone()).unwrap_or_default(),
                oom_killed: per[i].iter().filter_map(|r| r.oom_killed).collect(),
            });
        }
        summaries.push(WorkloadSummary {
            workload: w.to_string(),
            policies: ps,
        });
        runs.extend(per.into_iter().flatten());
    }
    Ok(BenchReport {
        reps,
        mem_bytes: base.mem_bytes,
        backing: base.backing.to_string(),
        duration_s: base.duration.as_secs_f64(),
        warmup_s: base.warmup.as_secs_f64(),
        interval_ms: base.interval.as_secs_f64() * 1e3,
        min_age_s: base.min_age.as_secs_f64(),
        controller: base.controller,
        workloads: summaries,
        runs,
    })
}

/// Table labels of the arms: the policy name, `name#2`, `name#3` … for repeated policies.
pub fn arm_labels(policies: &[PolicyKind]) -> Vec<String> {
    policies
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let k = policies[..i].iter().filter(|&&q| q == *p).count();
            if k == 0 {
                p.name().to_string()
            } else {
                format!("{}#{}", p.name(), k + 1)
            }
        })
        .collect()
}

/// The results as a Markdown table (one block per workload).
pub fn table(r: &BenchReport) -> String {
    let mut s = String::new();
    for w in &r.workloads {
        s.push_str(&format!(
            "\n{} — {} MiB {}, {} rounds (arms interleaved), {:.0} s per run, throughput after a {:.0} s warm-up; mean ± 95% CI (Student t over rounds; throughput paired per round against `none`)\n\n",
            w.workload,
            r.mem_bytes >> 20,
            r.backing,
            r.reps,
            r.duration_s,
            r.warmup_s
        ));
        s.push_str("| policy | saved MiB | cold reclaimed % | WS out % | ops/vCPU-CPU-s % | ops/(wall−runq)-s % | ops/wall-s % | refaults | refaults %WS/min | PSI some % | aging CPU ms | reclaim CPU ms | verify |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for p in &w.policies {
            for k in &p.oom_killed {
                s.push_str(&format!("| {} | {k} |{}\n", p.policy, " – |".repeat(11)));
            }
            if p.saved_mib.n == 0 && !p.oom_killed.is_empty() {
                continue;
            }
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                p.policy,
                p.saved_mib.fmt(1),
                p.cold_reclaimed_pct.fmt(1),
                p.ws_reclaimed_pct.fmt(1),
                p.throughput_pct.fmt(2),
                p.throughput_eff_pct.fmt(2),
                p.throughput_wall_pct.fmt(2),
                p.refaults.fmt(0),
                p.refault_pct_ws_min.fmt(2),
                if p.psi_some_pct.n == 0 {
                    "—".to_string()
                } else {
                    p.psi_some_pct.fmt(3)
                },
                p.aging_cpu_ms.fmt(1),
                p.reclaim_cpu_ms.fmt(1),
                if p.verify_mismatches == 0 {
                    "ok".to_string()
                } else {
                    format!("{} WRONG", p.verify_mismatches)
                }
            ));
        }
        for p in w.policies.iter().filter(|p| p.policy.starts_with("none#")) {
            s.push_str(&format!(
                "\nA/A resolution ({} vs none, same workload, interleaved): {} % per vCPU-CPU-s, {} % per (wall − run-queue wait) s, {} % per wall-s (target ±1 %)\n",
                p.policy,
                p.throughput_pct.fmt(2),
                p.throughput_eff_pct.fmt(2),
                p.throughput_wall_pct.fmt(2)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_ci_matches_hand_computation() {
        let m = MeanCi::of(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(m.mean, 3.0);
        // s = sqrt(2.5), t(4) = 2.776, ci = 2.776 * sqrt(2.5/5)
        assert!((m.ci95 - 2.776 * 0.5f64.sqrt()).abs() < 1e-3);
        assert_eq!(MeanCi::of(&[7.0]).ci95, 0.0);
    }

    #[test]
    fn repeated_policies_are_separate_arms() {
        let l = arm_labels(&[PolicyKind::None, PolicyKind::Psi, PolicyKind::None]);
        assert_eq!(l, ["none", "psi", "none#2"]);
    }
}
