//! Why the guest's two passes over all memory cost more per GiB at 16 GiB than at 1 GiB in
//! `agelab bench scaling`: the same base VM (`Vm::new` with its config, `Workload::start`)
//! runs only the first touch (`Workload::fill`) and `Workload::verify`, and around each pass
//! this reads the vCPU threads' CPU time, KVM's VM and vCPU binary stats, `/proc/vmstat`,
//! `/proc/meminfo`, `/proc/stat` and kswapd's CPU time. It prints, per pass, the vCPU CPU per
//! GiB at each size and every counter whose change per GiB differs by more than 15 % between the
//! smallest and the largest size (or moves at one size only), and writes every delta as JSON.
//!
//! `cargo run --release -p agelab --example fill_verify_counters -- [--sizes 1G,16G]
//! [--backing memfd] [--vcpus 2] [--json-out FILE]`
//!
//! The fill and verify get `agelab bench scaling`'s watchdog allowance per page, from the host's measured
//! first touch ([`HostProfile::whole_memory_page_limit`]).

use agelab::args::{from_str, positive};
use agelab_util::cpu_time::stat_cpu_ticks;
use agelab_util::units::parse_size;
use agelab_vmm::workload::{Workload, WorkloadError, WorkloadSpec, WorkloadSpecError};
use agelab_vmm::{Backing, HostProfile, Vm, VmConfig, VmError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

type Counters = BTreeMap<String, i64>;

/// Everything read around a pass.
struct Snapshot {
    at: Instant,
    vcpu_cpu: Vec<Duration>,
    counters: Counters,
}

fn key_values(path: &str, prefix: &str, kib: bool) -> Counters {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?.trim_end_matches(':');
            let v: i64 = it.next()?.parse().ok()?;
            Some((format!("{prefix}{k}"), if kib { v * 1024 } else { v }))
        })
        .collect()
}

/// `/proc/stat`'s aggregate cpu line, in clock ticks.
fn cpu_line() -> Counters {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let names = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest",
    ];
    text.lines()
        .next()
        .map(|l| {
            names
                .iter()
                .zip(l.split_whitespace().skip(1))
                .filter_map(|(n, v)| Some((format!("stat.{n}"), v.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// CPU ticks (user + system) of every kswapd thread.
fn kswapd_ticks() -> i64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| s.contains("(kswapd"))
        .filter_map(|s| stat_cpu_ticks(&s))
        .map(|t| t as i64)
        .sum()
}

fn snapshot(vm: &Vm) -> Snapshot {
    let mut counters = key_values("/proc/vmstat", "vmstat.", false);
    counters.extend(key_values("/proc/meminfo", "meminfo.", true));
    counters.extend(cpu_line());
    counters.insert("kswapd.ticks".into(), kswapd_ticks());
    if let Ok(s) = vm.stats() {
        for (k, v) in s.vm {
            counters.insert(format!("kvm.vm.{k}"), v as i64);
        }
        for c in s.vcpus {
            for (k, v) in c {
                *counters.entry(format!("kvm.vcpu.{k}")).or_default() += v as i64;
            }
        }
    }
    Snapshot {
        at: Instant::now(),
        vcpu_cpu: (0..vm.vcpus())
            .map(|v| vm.vcpu_cpu_time(v).unwrap_or_default())
            .collect(),
        counters,
    }
}

/// What one pass changed.
#[derive(Debug, Serialize)]
struct PassDelta {
    wall_ms: f64,
    /// vCPU CPU ms, summed over vCPUs.
    vcpu_cpu_ms: f64,
    /// Change of every counter (gauges such as `meminfo.*` or `kvm.vm.pages_4k` as their change).
    deltas: Counters,
    /// Value of every counter after the pass.
    after: Counters,
}

fn delta(a: &Snapshot, b: &Snapshot) -> PassDelta {
    let deltas = b
        .counters
        .iter()
        .map(|(k, v)| (k.clone(), v - a.counters.get(k).copied().unwrap_or(0)))
        .collect();
    let cpu: Duration = b
        .vcpu_cpu
        .iter()
        .zip(&a.vcpu_cpu)
        .map(|(x, y)| x.saturating_sub(*y))
        .sum();
    PassDelta {
        wall_ms: b.at.duration_since(a.at).as_secs_f64() * 1e3,
        vcpu_cpu_ms: cpu.as_secs_f64() * 1e3,
        deltas,
        after: b.counters.clone(),
    }
}

#[derive(Debug, Serialize)]
struct SizeRun {
    bytes: u64,
    load_before: String,
    meminfo_before: Counters,
    vm_create_ms: f64,
    fill: PassDelta,
    verify: PassDelta,
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why one size could not be measured.
#[derive(Debug, thiserror::Error)]
enum SizeRunError {
    /// The VM could not be created.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The workload's description did not parse.
    #[error(transparent)]
    Spec(#[from] WorkloadSpecError),
    /// The workload failed.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// Verification found wrong words.
    #[error("verify: {0} words wrong")]
    Mismatches(u64),
}

fn run_size(
    bytes: u64,
    backing: &Backing,
    vcpus: usize,
    page_limit: Duration,
) -> Result<SizeRun, SizeRunError> {
    let load_before = load();
    let meminfo_before = key_values("/proc/meminfo", "", true);
    // `agelab bench scaling`'s base VM and workload (its `Settings::vm_config` and `workload`).
    let vm = Vm::new(VmConfig {
        vcpus,
        mem_bytes: bytes,
        backing: backing.clone(),
        ..Default::default()
    })?;
    let vm_create_ms = vm.setup_time().as_secs_f64() * 1e3;
    let hot_pages = bytes / 4096 / vcpus as u64 / 10;
    let spec: WorkloadSpec =
        format!("hotcold:hot=10%,p=100%,op=mix,ops={}", hot_pages * 16).parse()?;
    let mut wl = Workload::start(vm, spec)?;
    wl.set_page_limit(page_limit);
    let a = snapshot(wl.vm());
    wl.fill()?;
    let b = snapshot(wl.vm());
    let v = wl.verify()?;
    let c = snapshot(wl.vm());
    if v.mismatches > 0 {
        return Err(SizeRunError::Mismatches(v.mismatches));
    }
    wl.finish()?;
    Ok(SizeRun {
        bytes,
        load_before,
        meminfo_before,
        vm_create_ms,
        fill: delta(&a, &b),
        verify: delta(&b, &c),
    })
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Counters whose change per GiB differs by more than 15 % between the first and last size.
fn report(name: &str, runs: &[SizeRun], pass: fn(&SizeRun) -> &PassDelta) {
    let (first, last) = (&runs[0], &runs[runs.len() - 1]);
    let (g0, g1) = (gib(first.bytes), gib(last.bytes));
    println!("\n== {name}");
    for r in runs {
        let p = pass(r);
        println!(
            "{:>6.1} GiB: vCPU CPU {:>10.1} ms ({:>8.1} ms/GiB, {:.2} µs/page), wall {:>10.1} ms",
            gib(r.bytes),
            p.vcpu_cpu_ms,
            p.vcpu_cpu_ms / gib(r.bytes),
            p.vcpu_cpu_ms * 1e3 / (r.bytes / 4096) as f64,
            p.wall_ms
        );
    }
    println!(
        "{:<40} {:>16} {:>16} {:>9}",
        "counter (change per GiB)",
        format!("{g0} GiB"),
        format!("{g1} GiB"),
        "ratio"
    );
    let (p0, p1) = (pass(first), pass(last));
    for (k, &d1) in &p1.deltas {
        let d0 = p0.deltas.get(k).copied().unwrap_or(0);
        let (a, b) = (d0 as f64 / g0, d1 as f64 / g1);
        let ratio = if a != 0.0 { b / a } else { f64::INFINITY };
        let differs = (a == 0.0) != (b == 0.0) || (a != 0.0 && !(0.87..=1.15).contains(&ratio));
        if differs && (d0 != 0 || d1 != 0) {
            println!("{k:<40} {a:>16.1} {b:>16.1} {ratio:>9.2}");
        }
    }
}

/// The options.
#[derive(Debug, clap::Parser)]
#[command(name = "fill_verify_counters")]
struct Args {
    /// Guest sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1G,16G", value_parser = parse_size)]
    sizes: Vec<u64>,
    /// Guest memory backing.
    #[arg(long, default_value = "memfd", value_parser = from_str::<Backing>)]
    backing: Backing,
    /// vCPUs per VM.
    #[arg(long, default_value_t = 2, value_parser = positive::<usize>)]
    vcpus: usize,
    /// Also write every delta as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json_out: Option<String>,
}

fn main() {
    let Args {
        sizes,
        backing,
        vcpus,
        json_out,
    } = clap::Parser::parse();
    let host = HostProfile::measure();
    println!("{host}");
    println!(
        "THP enabled: {}; shmem_enabled: {}; NUMA nodes: {}",
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default()
            .trim(),
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
            .unwrap_or_default()
            .trim(),
        std::fs::read_to_string("/sys/devices/system/node/online")
            .unwrap_or_default()
            .trim()
    );
    let mut runs = Vec::new();
    for &bytes in &sizes {
        eprintln!(
            "fill_verify_counters: {:.0} GiB, load {}",
            gib(bytes),
            load()
        );
        match run_size(bytes, &backing, vcpus, host.whole_memory_page_limit()) {
            Ok(r) => runs.push(r),
            Err(e) => {
                eprintln!("fill_verify_counters: {:.1} GiB: {e}", gib(bytes));
                std::process::exit(1);
            }
        }
    }
    for r in &runs {
        let m = |k: &str| gib(r.meminfo_before.get(k).copied().unwrap_or(0) as u64);
        println!(
            "{:.1} GiB: load before {}; MemFree {:.1} GiB, MemAvailable {:.1} GiB, Cached {:.1} GiB before; VM creation {:.1} ms",
            gib(r.bytes),
            r.load_before,
            m("MemFree"),
            m("MemAvailable"),
            m("Cached"),
            r.vm_create_ms
        );
    }
    report("first touch (Workload::fill)", &runs, |r| &r.fill);
    report("verify (Workload::verify)", &runs, |r| &r.verify);
    println!("load after: {}", load());
    if let Some(path) = json_out {
        #[derive(Serialize)]
        struct Out<'a> {
            host: &'a HostProfile,
            runs: &'a [SizeRun],
        }
        let json = serde_json::to_string_pretty(&Out {
            host: &host,
            runs: &runs,
        })
        .expect("plain data");
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!("fill_verify_counters: {path}: {e}");
            std::process::exit(1);
        }
    }
}
