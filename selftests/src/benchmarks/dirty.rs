//! `agelab bench dirty`: harvest cost per GiB for each dirty tracking mode, with nothing dirty and with
//! everything dirty, split into time in KVM ioctls and userspace processing on top of it; then
//! the same scenario through dirty_log_perf_test for the guest's dirtying time per page.
//!
use super::DirtyBenchError;
use crate::args::{positive, size_at_least};
use crate::ktap::{self, ts};
use agelab_util::stats::median;
use agelab_vmm::dirty::DirtyMode;
use agelab_vmm::memstress::{Access, GuestCmd, Memstress};
use agelab_vmm::{DirtyOptions, DirtyTracker, HarvestStats, PageSet, Vm, VmConfig};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Options of `agelab bench dirty`.
#[derive(Debug, clap::Args)]
pub struct DirtyArgs {
    /// Guest memory (64M, 1G).
    #[arg(short = 'b', value_name = "BYTES", default_value = "1G", value_parser = size_at_least(1))]
    bytes: u64,
    /// Harvests with nothing dirty (medians).
    #[arg(short = 'r', value_name = "COUNT", default_value_t = 200, value_parser = positive::<u64>)]
    clean_repeats: u64,
    /// Rounds with every page dirty (means).
    #[arg(short = 'd', value_name = "COUNT", default_value_t = 3, value_parser = positive::<u64>)]
    dirty_repeats: u64,
}

/// One timed round: the memstress guest writes every page once.
fn round(ms: &Memstress) -> Result<Duration, DirtyBenchError> {
    Ok(ms.run(GuestCmd::sweep(Access::Write))?)
}

/// Per-GiB figures of a series of harvests.
struct Row {
    ioctl_us: f64,
    user_us: f64,
    pages: f64,
    extra: String,
}

fn per_gib(st: &HarvestStats, n: u64, gib: f64) -> Row {
    let n = n as f64;
    Row {
        ioctl_us: st.ioctl_ns() as f64 / n / 1e3 / gib,
        user_us: st.user_ns as f64 / n / 1e3 / gib,
        pages: st.pages as f64 / n,
        extra: if st.ring_full_entries > 0 {
            format!(
                "; + {:.0} us/GiB draining {:.0} entries on ring-full exits",
                st.ring_full_ns as f64 / n / 1e3 / gib,
                st.ring_full_entries as f64 / n
            )
        } else {
            String::new()
        },
    }
}

/// Medians of a series of cheap harvests (a noisy shared host makes means meaningless there).
fn median_per_gib(series: &[HarvestStats], gib: f64) -> Row {
    let med = |f: &dyn Fn(&HarvestStats) -> u64| {
        median(&mut series.iter().map(|s| f(s) as f64).collect::<Vec<_>>())
    };
    Row {
        ioctl_us: med(&|s| s.ioctl_ns()) / 1e3 / gib,
        user_us: med(&|s| s.user_ns) / 1e3 / gib,
        pages: med(&|s| s.pages),
        extra: String::new(),
    }
}

fn bench_mode(
    mode: DirtyMode,
    bytes: u64,
    clean_n: u64,
    dirty_n: u64,
) -> Result<(Row, Row, Row), DirtyBenchError> {
    let kvm = agelab_vmm::vm::open_kvm()?;
    let ring = (mode == DirtyMode::Ring).then(|| DirtyMode::max_ring_entries(&kvm));
    let mut vm = Vm::new(VmConfig {
        mem_bytes: bytes,
        dirty_ring_entries: ring,
        ..VmConfig::default()
    })?;
    let mut tracker = DirtyTracker::new(&mut vm, DirtyOptions::new(mode))?;
    let pages = vm.page_map().len();
    let mut ms = Memstress::with_vm(vm, false)?;
    ms.start()?;
    round(&ms)?; // populate
    tracker.set_logging_all(ms.vm(), true)?;
    let mut out = PageSet::new(pages);
    tracker.harvest_into(&mut out)?;
    let gib = bytes as f64 / (1u64 << 30) as f64;

    // Nothing dirty: steady state into a reused set, then through `harvest()` (fresh set each).
    let mut clean = Vec::new();
    for _ in 0..clean_n {
        clean.push(tracker.harvest_into(&mut out)?);
    }
    let mut fresh = Vec::new();
    for _ in 0..clean_n {
        let set = tracker.harvest()?;
        fresh.push(tracker.last_stats());
        if !set.is_empty() {
            return Err(DirtyBenchError::Harvest {
                what: "guest stopped".into(),
                written: 0,
                harvested: set.count(),
            });
        }
    }
    // Everything dirty.
    let mut dirty = HarvestStats::default();
    for _ in 0..dirty_n {
        round(&ms)?;
        let st = tracker.harvest_into(&mut out)?;
        if out.count() != pages {
            return Err(DirtyBenchError::Harvest {
                what: "all pages written".into(),
                written: pages,
                harvested: out.count(),
            });
        }
        dirty.add(&st);
    }
    drop(ms);
    Ok((
        median_per_gib(&clean, gib),
        median_per_gib(&fresh, gib),
        per_gib(&dirty, dirty_n, gib),
    ))
}

/// Runs the benchmark and prints its table; exits 1 when a mode failed.
pub fn run(args: &DirtyArgs) -> ExitCode {
    let (bytes, clean_n, dirty_n) = (args.bytes, args.clean_repeats, args.dirty_repeats);
    println!("{}", agelab_vmm::HostProfile::measure());
    let kvm = agelab_vmm::vm::open_kvm().unwrap_or_else(|e| ktap::skip_all(&e.to_string()));
    println!(
        "dirty tracking harvest cost, {} MiB of guest memory, figures per GiB",
        bytes >> 20
    );
    println!(
        "{:<11} {:<22} {:>12} {:>12} {:>7} {:>9}",
        "mode", "scenario", "ioctl us", "user us", "user%", "pages"
    );
    let mut failed = false;
    let mut modes = Vec::new();
    for mode in DirtyMode::ALL {
        let s = mode.support(&kvm);
        if !s.available {
            println!("{:<11} SKIP: {}", mode.name(), s.detail);
            continue;
        }
        modes.push(mode);
        match bench_mode(mode, bytes, clean_n, dirty_n) {
            Ok((clean, fresh, dirty)) => {
                for (name, r) in [
                    ("clean, median (reuse)", clean),
                    ("clean, median (fresh)", fresh),
                    ("all dirty, mean", dirty),
                ] {
                    let pct = if r.ioctl_us > 0.0 {
                        100.0 * r.user_us / r.ioctl_us
                    } else {
                        0.0
                    };
                    println!(
                        "{:<11} {:<22} {:>12.1} {:>12.2} {:>6.1}% {:>9.0}{}",
                        mode.name(),
                        name,
                        r.ioctl_us,
                        r.user_us,
                        pct,
                        r.pages,
                        r.extra
                    );
                }
            }
            Err(e) => {
                failed = true;
                println!("{:<11} FAILED: {e}", mode.name());
            }
        }
    }
    println!(
        "note: in dirty-ring mode collecting entries is the work itself (userspace by design); the"
    );
    println!("      ioctl column there is KVM_RESET_DIRTY_RINGS only, so user% is not an overhead figure.");

    // The same scenario through dirty_log_perf_test: the guest's dirtying time per page.
    let perf = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("dirty_log_perf_test")));
    let size = format!("{}M", bytes >> 20);
    for mode in modes {
        let Some(perf) = &perf else { break };
        let t = Instant::now();
        match std::process::Command::new(perf)
            .args(["-b", &size, "-v", "1", "-i", "3", "-M", mode.name()])
            .output()
        {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                let line = |key: &str| {
                    text.lines()
                        .find(|l| l.starts_with(key))
                        .map(|l| l[key.len()..].trim().to_string())
                        .unwrap_or_else(|| "?".into())
                };
                println!(
                    "dirty_log_perf_test -b {size} -i 3 -M {:<10}: guest dirtying time per page {}; get dirty log avg {}; clear avg {} (ran {})",
                    mode.name(),
                    line("Guest dirtying time per page:"),
                    line("Get dirty log over").split("(Avg ").nth(1).unwrap_or("?").trim_end_matches(')'),
                    line("Clear dirty log over").split("(Avg ").nth(1).unwrap_or("?").trim_end_matches(')'),
                    ts(t.elapsed())
                );
            }
            Ok(o) => {
                failed = true;
                println!(
                    "dirty_log_perf_test -M {} failed ({}): {}",
                    mode.name(),
                    o.status,
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
            }
            Err(e) => {
                failed = true;
                println!("cannot run {}: {e}", perf.display());
            }
        }
    }
    agelab_util::exit::exit_code_of_status(if failed {
        ktap::EXIT_FAIL
    } else {
        ktap::EXIT_PASS
    })
}
