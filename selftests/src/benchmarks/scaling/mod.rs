//! `agelab bench scaling`: how agelab's costs grow with guest memory, one table for 1, 4 and 16 GiB
//! guests (`--sizes`) measured in one run: setup (VM creation, workload start, the guest's
//! first touch of every page), guest ns per access, every access source's harvest cost per pass
//! (sources this host lacks listed as unavailable with the reason), the kernel's lru_gen aging
//! where present, engine bookkeeping per pass, ground-truth replay and the integrity verify —
//! each with its figure per GiB, the growth ratio between consecutive sizes and whether it is
//! linear. One size at a time, each VM freed before the next (16 GiB on a 24 GiB host). Above
//! the table (and as `host` in the JSON) stands the host's measured fault costs
//! ([`agelab_vmm::HostProfile`]), which every fault-bound figure here moves with.
//!
//! Exit: 0 with a complete table; 1 when a source row is missing or incomplete, a source failed,
//! a size could not be measured (too little free memory) or verify found corrupted memory; 2 for
//! bad options.

mod measure;
mod table;

use crate::args::from_str;
use crate::cli::check;
use agelab_mglru::host_guard::{install_panic_hook, install_signal_cleanup};
use agelab_mglru::sources::uffd_minor::ArmPolicy;
use agelab_mglru::sources::SourceKind;
use agelab_util::units::parse_size;
use agelab_vmm::{Backing, HostProfile};
use measure::{Settings, SizeResult, SourceCost, LRU_GEN};
use serde::Serialize;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use table::{Row, Scale, Status};

/// Options of `agelab bench scaling`.
#[derive(Debug, clap::Args)]
pub struct ScalingArgs {
    /// Guest sizes, comma-separated, smallest first (e.g. 1G,4G,16G or 64M,128M).
    #[arg(long, default_value = "1G,4G,16G", value_parser = parse_sizes)]
    sizes: Sizes,
    /// Guest memory backing (default: `agelab run`'s, memfd = shmem in 4 KiB pages).
    #[arg(long, default_value = "memfd", value_parser = from_str::<Backing>)]
    backing: Backing,
    /// vCPUs per VM (`agelab run`'s default).
    #[arg(long, default_value_t = 2)]
    vcpus: usize,
    /// Measured passes per VM, after one warm-up pass.
    #[arg(long, default_value_t = 5)]
    passes: usize,
    /// Accesses per hot page per pass (10% of memory is hot).
    #[arg(long, default_value_t = 16)]
    touches: u64,
    /// uffd-minor arming (a uniform sample by default: `sample:FAULTS_PER_S`).
    #[arg(long, default_value = "sample:1000", value_parser = from_str::<ArmPolicy>)]
    uffd_arm: ArmPolicy,
    /// Sources to report as unavailable without measuring them (negative control of the
    /// table's completeness: they must show as `unavailable: ...`, not vanish).
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    unavailable: Vec<SourceKind>,
    /// Remove this source's row before the completeness check (negative control: must exit 1).
    #[arg(long, hide = true)]
    drop_row: Option<String>,
    /// Print one JSON object instead of the text table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON object to this file (with the text table on stdout).
    #[arg(long, value_name = "FILE")]
    json_out: Option<std::path::PathBuf>,
}

/// Guest sizes, smallest first.
#[derive(Debug, Clone)]
pub struct Sizes(Vec<u64>);

/// Why `--sizes` was refused.
#[derive(Debug, thiserror::Error)]
pub enum SizesError {
    /// One of the sizes is not a size.
    #[error(transparent)]
    Size(#[from] agelab_util::units::UnitError),
    /// Only commas.
    #[error("no size given")]
    Empty,
    /// Not smallest first.
    #[error("'{0}': sizes must grow (smallest first)")]
    NotGrowing(String),
}

fn parse_sizes(s: &str) -> Result<Sizes, SizesError> {
    let v = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(parse_size)
        .collect::<Result<Vec<u64>, _>>()?;
    if v.is_empty() {
        return Err(SizesError::Empty);
    }
    if v.windows(2).any(|w| w[1] <= w[0]) {
        return Err(SizesError::NotGrowing(s.to_string()));
    }
    Ok(Sizes(v))
}

fn parse_kind(s: &str) -> Result<SourceKind, agelab_mglru::sources::CatalogError> {
    s.trim().parse()
}

/// The conditions of the run, printed above the table and in `--json`.
#[derive(Debug, Serialize)]
struct Conditions {
    kernel: String,
    kvm: String,
    backing: String,
    shmem_thp: String,
    guest_pages: &'static str,
    vcpus: usize,
    workload_1g: String,
    passes: usize,
    touches: u64,
    uffd_arm: String,
    load_before: String,
    load_after: String,
    mem_available_gib: f64,
    skipped: Vec<String>,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn load() -> String {
    read_trim("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The table's rows from the per-size results.
fn rows(results: &[SizeResult], sizes: &[u64]) -> Vec<Row> {
    let col = |f: &dyn Fn(&SizeResult) -> Option<f64>| results.iter().map(f).collect::<Vec<_>>();
    let total = |name: &str, unit, f: &dyn Fn(&SizeResult) -> Option<f64>| {
        Row::measured(name, unit, Scale::Total, sizes, col(f))
    };
    let mut out = vec![
        total("setup: VM creation", "ms", &|r| r.vm_create_ms),
        total("setup: workload start", "ms", &|r| r.start_ms),
        total("setup: first touch (guest fill)", "ms", &|r| r.fill_ms),
        total("setup: first touch, vCPU CPU", "ms", &|r| r.fill_cpu_ms),
        total("setup: total", "ms", &|r| {
            Some(r.vm_create_ms? + r.start_ms? + r.fill_ms?)
        }),
        Row::measured(
            "guest access, untracked (vCPU CPU)",
            "ns/access",
            Scale::PerAccess,
            sizes,
            col(&|r| r.guest_ns),
        )
        .with_detail(
            results
                .iter()
                .map(|r| r.touched.map(|t| format!("{t:.0} pages/pass")))
                .collect(),
        ),
        Row::measured(
            "guest access, untracked (wall)",
            "ns/access",
            Scale::PerAccess,
            sizes,
            col(&|r| r.guest_wall_ns),
        ),
    ];
    let names = SourceKind::ALL.iter().map(|k| k.name()).chain([LRU_GEN]);
    for name in names {
        out.extend(source_rows(name, results, sizes));
    }
    type Of = fn(&SizeResult) -> Option<f64>;
    let tail: [(&str, &'static str, Of); 5] = [
        ("engine bookkeeping", "µs/pass", |r| r.bookkeeping_us),
        (
            "shared-VM pass CPU (pagemap+oracle+engine)",
            "µs/pass",
            |r| r.base_pass_cpu_us,
        ),
        ("ground-truth replay (host)", "µs/pass", |r| r.replay_us),
        ("verify (guest reads every word)", "ms", |r| r.verify_ms),
        ("verify, vCPU CPU", "ms", |r| r.verify_cpu_ms),
    ];
    for (name, unit, f) in tail {
        out.push(total(name, unit, &f));
    }
    out
}

/// A source's rows: its harvest per pass (or why it has none), then, when measured, its idle
/// harvest, its build and the guest's speed while it tracks (own-VM sources).
fn source_rows(name: &str, results: &[SizeResult], sizes: &[u64]) -> Vec<Row> {
    let n = sizes.len();
    let costs: Vec<Option<&SourceCost>> = results.iter().map(|r| r.sources.get(name)).collect();
    let what = if name == LRU_GEN {
        format!("{name} forced aging")
    } else {
        format!("harvest {name}")
    };
    let not_measured = costs
        .iter()
        .flatten()
        .map(|c| &c.status)
        .find(|s| **s != Status::Measured);
    if let Some(status) = not_measured {
        return vec![Row::without(what, "µs/pass", status.clone(), n).for_source(name)];
    }
    if costs.iter().all(Option::is_none) {
        // Never measured at any size (every size skipped): listed, not dropped.
        return vec![
            Row::without(what, "µs/pass", Status::Failed("no size ran".into()), n).for_source(name),
        ];
    }
    let get = |f: fn(&SourceCost) -> Option<f64>| -> Vec<Option<f64>> {
        costs.iter().map(|c| c.and_then(f)).collect()
    };
    let pages = get(|c| c.pages)
        .into_iter()
        .map(|p| p.map(|p| format!("{p:.0} pages")))
        .collect();
    let mut out = vec![
        Row::measured(what, "µs/pass", Scale::Total, sizes, get(|c| c.harvest_us))
            .for_source(name)
            .with_detail(pages),
    ];
    // Extra rows where the source has them: idle harvest (all), build, pass CPU time and the
    // guest's speed while it tracks (own-VM sources).
    type Get = fn(&SourceCost) -> Option<f64>;
    let extras: [(&str, &'static str, Scale, Get); 4] = [
        ("idle pass", "µs/pass", Scale::Total, |c| c.idle_us),
        ("build", "ms", Scale::Total, |c| c.build_ms),
        ("pass CPU time", "µs/pass", Scale::Total, |c| c.pass_cpu_us),
        ("guest vCPU CPU", "ns/access", Scale::PerAccess, |c| {
            c.guest_ns
        }),
    ];
    for (what, unit, scale, f) in extras {
        let values = get(f);
        if values.iter().any(Option::is_some) {
            out.push(Row::measured(
                format!("  {name}, {what}"),
                unit,
                scale,
                sizes,
                values,
            ));
        }
    }
    out
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    host: &'a HostProfile,
    conditions: &'a Conditions,
    sizes: &'a [u64],
    rows: &'a [Row],
    incomplete: &'a [String],
}

/// Measures every size and prints the table (or JSON); see the module docs for the exit codes.
pub fn run(args: &ScalingArgs) -> ExitCode {
    if let Err(e) = install_signal_cleanup() {
        eprintln!("agelab bench scaling: {e}");
        return ExitCode::from(1);
    }
    install_panic_hook();
    let sizes = args.sizes.0.clone();
    for &s in &sizes {
        if let Err(e) = check::memory(&args.backing, s, 1) {
            eprintln!("agelab bench scaling: --sizes: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(path) = &args.json_out {
        if let Err(e) = check::output_path("--json-out", path) {
            eprintln!("agelab bench scaling: {e}");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = check::in_range("--vcpus", args.vcpus, 1..=64)
        .and_then(|()| check::in_range("--passes", args.passes, 1..=1000))
    {
        eprintln!("agelab bench scaling: {e}");
        return ExitCode::from(2);
    }
    let host = HostProfile::measure();
    let settings = Settings {
        vcpus: args.vcpus,
        backing: args.backing.clone(),
        passes: args.passes,
        touches: args.touches.max(1),
        uffd_arm: args.uffd_arm,
        interval: Duration::from_millis(500),
        disabled: args.unavailable.clone(),
        page_limit: host.whole_memory_page_limit(),
    };
    let load_before = load();
    let mem_available = measure::mem_available().unwrap_or(0);
    let mut results = Vec::new();
    for &bytes in &sizes {
        match measure::size(bytes, &settings) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("agelab bench scaling: {}: {e}", table::size_label(bytes));
                return ExitCode::from(1);
            }
        }
    }
    let conditions = Conditions {
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "?".into()),
        kvm: agelab_vmm::host_profile::kvm_flavour(),
        backing: args.backing.to_string(),
        shmem_thp: read_trim("/sys/kernel/mm/transparent_hugepage/shmem_enabled"),
        guest_pages: "4 KiB guest page-table entries (the runs' default for this backing)",
        vcpus: args.vcpus,
        workload_1g: settings.workload(1 << 30),
        passes: args.passes,
        touches: settings.touches,
        uffd_arm: args.uffd_arm.to_string(),
        load_before,
        load_after: load(),
        mem_available_gib: mem_available as f64 / (1u64 << 30) as f64,
        skipped: results
            .iter()
            .filter_map(|r| {
                r.skipped
                    .as_ref()
                    .map(|why| format!("{}: {why}", table::size_label(r.bytes)))
            })
            .collect(),
    };
    let mut rows = rows(&results, &sizes);
    if let Some(name) = &args.drop_row {
        rows.retain(|r| r.source.as_deref() != Some(name.as_str()));
    }
    let expected: Vec<&str> = SourceKind::ALL
        .iter()
        .map(|k| k.name())
        .chain([LRU_GEN])
        .collect();
    let ran: Vec<bool> = results.iter().map(|r| r.skipped.is_none()).collect();
    let incomplete = table::incomplete(&rows, &expected, &ran);
    let failed: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.status, Status::Failed(_)))
        .collect();
    let report = Report {
        host: &host,
        conditions: &conditions,
        sizes: &sizes,
        rows: &rows,
        incomplete: &incomplete,
    };
    let json = serde_json::to_string_pretty(&report).expect("plain data serializes");
    if args.json {
        println!("{json}");
    } else {
        print_text(&host, &conditions, &rows, &sizes);
    }
    let mut err = std::io::stderr().lock();
    if let Some(path) = &args.json_out {
        if let Err(e) = std::fs::write(path, format!("{json}\n")) {
            let _ = writeln!(
                err,
                "agelab bench scaling: --json-out {}: {e}",
                path.display()
            );
            return ExitCode::from(1);
        }
    }
    for m in &incomplete {
        let _ = writeln!(err, "agelab bench scaling: table incomplete: {m}");
    }
    for r in &failed {
        let _ = writeln!(err, "agelab bench scaling: {} failed", r.name);
    }
    for s in &conditions.skipped {
        let _ = writeln!(err, "agelab bench scaling: size skipped: {s}");
    }
    if incomplete.is_empty() && failed.is_empty() && conditions.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_text(host: &HostProfile, c: &Conditions, rows: &[Row], sizes: &[u64]) {
    println!("{host}");
    println!(
        "# agelab bench scaling: costs by guest size, one run (medians of {} passes after 1 warm-up)",
        c.passes
    );
    println!(
        "# host: kernel {}, {}; load average before {}, after {}; MemAvailable {:.1} GiB at start",
        c.kernel, c.kvm, c.load_before, c.load_after, c.mem_available_gib
    );
    println!(
        "# guest: {} backing (shmem THP: {}), {}, {} vCPUs; uffd-minor arming {}",
        c.backing, c.shmem_thp, c.guest_pages, c.vcpus, c.uffd_arm
    );
    println!(
        "# each pass: {} at 1 GiB (ops scale with size: {} accesses per hot page), then every source harvested",
        c.workload_1g, c.touches
    );
    for s in &c.skipped {
        println!("# skipped {s}");
    }
    print!("{}", table::render(rows, sizes));
}
