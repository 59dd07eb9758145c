//! Every benchmark of agelab, run as `agelab bench <name>`: each measures side by side in one
//! run, prints the host's fault costs first ([`agelab_vmm::HostProfile`]) and reports figures
//! and ratios; none is a timed pass/fail test.
//!
//! The reclaim benchmark is `agelab reclaim --bench` (its table is part of the reclaim report,
//! [`agelab_mglru::reclaim::bench`]); the lab's boot timing is `agelab lab --bench` (the lab crate
//! runs no VM of its own).

pub mod dirty;
pub mod dirty_layout;
pub mod engine;
pub mod foundation;
pub mod region;
pub mod scaling;
pub mod uffd;

use std::process::ExitCode;

/// Why a dirty-tracking benchmark stopped: a VM, memstress or dirty-log error, or a harvest that
/// did not see what the guest wrote.
#[derive(Debug, thiserror::Error)]
pub enum DirtyBenchError {
    /// Creating or running the VM.
    #[error(transparent)]
    Vm(#[from] agelab_vmm::VmError),
    /// The memstress guest.
    #[error(transparent)]
    Memstress(#[from] agelab_vmm::memstress::MemstressError),
    /// Enabling or harvesting the dirty log.
    #[error(transparent)]
    Dirty(#[from] agelab_vmm::DirtyError),
    /// A harvest that does not match what the guest wrote.
    #[error("{what}: {written} pages written, {harvested} harvested")]
    Harvest {
        /// Which VM or round.
        what: String,
        /// Pages the guest wrote (0: the guest was stopped).
        written: u64,
        /// Pages the dirty log reported.
        harvested: u64,
    },
}

/// `agelab bench`: which benchmark to run (the foundation benchmark without a name).
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The benchmark.
    #[command(subcommand)]
    pub benchmark: Option<Benchmark>,
}

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Benchmark {
    /// Guest vs native memory loops (4 KiB and THP + 2 MiB guest pages), first touch, workload
    /// patterns and the ground-truth overhead (the default).
    Foundation,
    /// KVM dirty tracking harvest cost per GiB and mode, ioctl vs userspace; then
    /// dirty_log_perf_test's guest dirtying time per page.
    Dirty(dirty::DirtyArgs),
    /// One KVM dirty-log iteration of our VM against the kernel selftest's VM layout.
    DirtyLayout(dirty_layout::DirtyLayoutArgs),
    /// How setup, guest speed, harvest, bookkeeping and verify costs grow with guest memory.
    Scaling(scaling::ScalingArgs),
    /// Read tracking's estimate error against its cost: uffd-minor page mode vs region sampling.
    Region(region::RegionArgs),
    /// The engine's bookkeeping per aging pass at 1, 4 and 16 GiB (no guest).
    Engine(engine::EngineArgs),
    /// userfaultfd tracking cost and accuracy on a real guest (minor, wp; hold for the teardown
    /// test).
    Uffd(uffd::UffdArgs),
}

/// Runs the chosen benchmark.
pub fn run(args: &BenchArgs) -> ExitCode {
    match args.benchmark.as_ref().unwrap_or(&Benchmark::Foundation) {
        Benchmark::Foundation => match foundation::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => agelab_util::exit::exit_with("agelab bench", &e),
        },
        Benchmark::Dirty(a) => dirty::run(a),
        Benchmark::DirtyLayout(a) => dirty_layout::run(a),
        Benchmark::Scaling(a) => scaling::run(a),
        Benchmark::Region(a) => region::run(a),
        Benchmark::Engine(a) => engine::run(a),
        Benchmark::Uffd(a) => uffd::run(a),
    }
}
