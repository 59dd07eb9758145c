//! The lab: boots Debian (or custom-built) kernels under QEMU and runs agelab binaries inside them.
//!
//! This crate (`selftests/lab`, next to its data: `init.sh`, `custom-x86_64.config`,
//! `matrix.txt`, `patches/`) is the library behind `agelab lab` and `agelab ab`; it needs
//! neither the VMM nor the aging engine; from the utility crate `agelab_util` it uses `stats`
//! (the A/B statistics), `units` (durations) and `progress` (download and build progress).
//!
//! `agelab lab --kernel debian-7.2 -- CMD ARGS...` fetches the kernel (apt, private state under
//! `~/.cache/agelab`), assembles an initramfs (busybox, init, the project's static binaries,
//! kernel modules), boots it under QEMU TCG and returns CMD's exit status; CMD's stdout and
//! stderr stream back on their own serial ports. `--matrix FILE` runs a list of commands on
//! several kernels and prints a table, writing a results directory ([`results`]); `--shard K/N`
//! runs a part of it ([`shard`]) and `agelab lab merge` joins the parts ([`merge`]); `--bench`
//! measures boot and build times.

pub mod ab;
mod accel;
mod apt;
mod arch;
mod bench;
mod bins;
mod cache;
mod colour;
mod cpio;
mod custom;
mod deb822;
mod elf;
#[cfg(test)]
mod fuzz;
mod hash;
mod initramfs;
mod interrupt;
mod kernel;
pub mod matrix;
pub mod merge;
mod modules;
pub mod mutants;
pub mod outcome;
mod prereq;
mod qemu;
pub mod results;
pub mod shard;
mod status;
mod view;

pub use apt::AptError;
pub use bins::StaticBinsError;
pub use bins::{STATIC_BUILD_ARGS, STATIC_RUSTFLAGS};
pub use cache::CacheError;
pub use custom::{CustomKernelError, LabRecipeError, RecipeError};
pub use initramfs::InitramfsError;
pub use kernel::KernelError;
pub use matrix::MatrixError;
pub use prereq::MissingPrerequisites;
pub use qemu::GuestRunError;
pub use results::{MergeError, ResultsError};
pub use shard::ShardError;

use agelab_util::exit::{ExitClass, HasExitClass};
use arch::ArchSpec;
use clap::{Args, Subcommand};
use kernel::{KernelSource, LabKernel};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors of the lab runner.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command-line value is malformed.
    #[error("{0}")]
    Usage(String),
    /// `--tests` names a test the matrix does not have.
    #[error(transparent)]
    UnknownTest(#[from] matrix::UnknownTest),
    /// `--accel` is unknown or unusable here.
    #[error(transparent)]
    Accel(#[from] accel::AccelError),
    /// Finding or fetching a Debian kernel failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Building the custom kernel failed.
    #[error(transparent)]
    CustomKernel(#[from] CustomKernelError),
    /// --patch, --config, --kernel-source or --name is unusable.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// Building the static binaries failed.
    #[error(transparent)]
    StaticBins(#[from] StaticBinsError),
    /// Assembling the initramfs failed.
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    /// The guest run failed.
    #[error("{kernel}: {source}")]
    GuestRun {
        /// The lab kernel.
        kernel: String,
        /// What went wrong.
        source: GuestRunError,
    },
    /// The test matrix could not run.
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    /// Cache bookkeeping failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Host tools the lab needs are missing (checked once, before anything runs).
    #[error(transparent)]
    Prerequisites(#[from] MissingPrerequisites),
    /// `--shard` or the cell durations file is unusable.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The results directory could not be written.
    #[error("results directory: {0}")]
    Results(#[from] ResultsError),
    /// `agelab lab merge`: the shards do not add up to the matrix.
    #[error("merge: {0}")]
    Merge(#[from] MergeError),
}

/// `agelab lab`: run a command or a matrix in lab guests, or merge the results of shards.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LabCommand {
    /// `merge`; without it, the options below run a command or a matrix.
    #[command(subcommand)]
    pub action: Option<LabAction>,
    /// The run's options.
    #[command(flatten)]
    pub args: LabArgs,
}

/// `agelab lab` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum LabAction {
    /// Merge the results directories of `--shard` runs into one table, results.json, junit.xml
    /// and index.html; fails (exit 1, naming the cell) when a cell is missing or ran twice.
    Merge(merge::MergeArgs),
}

/// `agelab lab` options.
#[derive(Debug, Clone, Args)]
pub struct LabArgs {
    /// Kernel to boot: debian-6.1, debian-6.12, debian-7.2, custom-7.2, or a name built
    /// earlier with --patch/--config/--kernel-source/--name. With --matrix or --bench: a
    /// comma-separated list, or `all`.
    #[arg(long, default_value = "debian-7.2")]
    pub kernel: String,
    /// Guest architecture.
    #[arg(long, default_value = "x86_64")]
    pub arch: String,
    /// Guest memory (QEMU -m syntax).
    #[arg(long, default_value = "2G")]
    pub mem: String,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// QEMU accelerator: auto (KVM where the host's /dev/kvm can boot a Linux guest, i.e.
    /// VMX/SVM hosts; else TCG), tcg, tcg-mt (one host thread per vCPU) or kvm.
    #[arg(long, default_value = "auto")]
    pub accel: String,
    /// Time limit of each boot, i.e. of each matrix cell, with a unit: ms, s, m or h (500ms,
    /// 300s, 10m, 1h; a bare number is seconds). QEMU is killed after it and the cell reads
    /// TIMEOUT; a matrix line's own --timeout overrides it.
    #[arg(long, default_value = "300s")]
    pub timeout: String,
    /// Limit for the kernel to reach the lab's init.
    #[arg(long, default_value = "120s")]
    pub boot_timeout: String,
    /// Set up zram swap of this size (e.g. 512M) before the command.
    #[arg(long)]
    pub zram: Option<String>,
    /// Directory of prebuilt or out-of-tree static binaries to put on the guest's PATH, in
    /// addition to the workspace's (built static into target/lab); on a name clash these win.
    #[arg(long)]
    pub bins: Option<PathBuf>,
    /// Do not build the workspace's static binaries: the guest gets only --bins (e.g. a CI job
    /// running binaries an earlier job built).
    #[arg(long, requires = "bins")]
    pub no_build: bool,
    /// Extra kernel module to load (with its dependencies); repeatable.
    #[arg(long = "module")]
    pub modules: Vec<String>,
    /// Extra kernel command-line words.
    #[arg(long, default_value = "")]
    pub append: String,
    /// Boot this kernel image instead of a lab kernel (no modules).
    #[arg(long)]
    pub kernel_image: Option<PathBuf>,
    /// Refresh the package lists now instead of trusting ones younger than 12 h.
    #[arg(long)]
    pub refresh: bool,
    /// Rebuild the custom kernel even when cached.
    #[arg(long)]
    pub rebuild: bool,
    /// Custom kernels: keep the base kernel's built tree (~1.5 GB) so that builds with
    /// `--patch` only apply their patches there and rebuild only what they change (building the
    /// base once more if its tree is missing). `agelab mutants` always keeps it.
    #[arg(long)]
    pub keep_tree: bool,
    /// Custom kernels: apply this patch file, or every `*.patch` of this directory in name
    /// order, after the kernel's own patch sets; repeatable, applied in the order given.
    #[arg(long = "patch")]
    pub patches: Vec<PathBuf>,
    /// Custom kernels: a Kconfig fragment (`CONFIG_X=..` lines) merged over the lab's fragment.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Custom kernels: build this local kernel tree (copied; the tree itself is never touched)
    /// instead of Debian's linux-source package.
    #[arg(long)]
    pub kernel_source: Option<PathBuf>,
    /// Name of the kernel built with --patch/--config/--kernel-source; later runs take it as
    /// `--kernel NAME` without repeating the options.
    #[arg(long)]
    pub name: Option<String>,
    /// Run the tests listed in FILE on every --kernel and print a kernel × test table.
    #[arg(long)]
    pub matrix: Option<PathBuf>,
    /// With --matrix: (kernel, test) cells run at a time (default: the host's cores; each TCG
    /// guest is one host thread).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// With --matrix: run only these tests (comma-separated names from the matrix file).
    #[arg(long = "tests", value_delimiter = ',')]
    pub only_tests: Vec<String>,
    /// With --matrix: run only shard K of N (K/N, e.g. 2/4): a deterministic part of the
    /// (kernel, test) cells, balanced by the recorded cell durations; the N shards are disjoint
    /// and together the whole matrix (merge them with `agelab lab merge`).
    #[arg(long)]
    pub shard: Option<String>,
    /// With --shard: the recorded cell durations (`KERNEL TEST SECONDS` lines; default:
    /// selftests/lab/cell-durations.txt of the workspace; cells not listed count as the median).
    #[arg(long)]
    pub durations: Option<PathBuf>,
    /// With --matrix: leave passed cells out of the progress lines and the table.
    #[arg(long)]
    pub hide_passed: bool,
    /// Where --matrix writes its results: each run makes a new directory in it, named by the
    /// UTC time it started (per-cell logs and KTAP, results.json, junit.xml, table.txt).
    #[arg(long, default_value = "target/lab-results")]
    pub results: PathBuf,
    /// Measure boot-to-command time per kernel and the custom kernel build time.
    #[arg(long)]
    pub bench: bool,
    /// Command (and its arguments) to run inside the lab guest.
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

impl HasExitClass for LabError {
    /// Bad input for a bad command line (usage, a recipe option, an unknown kernel), a failure
    /// otherwise.
    fn exit_class(&self) -> ExitClass {
        match self {
            LabError::Usage(_)
            | LabError::Accel(_)
            | LabError::UnknownTest(_)
            | LabError::Recipe(_)
            | LabError::Shard(ShardError::Spec { .. })
            | LabError::Kernel(KernelError::Unknown { .. }) => ExitClass::BadInput,
            _ => ExitClass::Failure,
        }
    }
}

impl From<LabRecipeError> for LabError {
    fn from(e: LabRecipeError) -> Self {
        match e {
            LabRecipeError::Option(e) => LabError::Recipe(e),
            LabRecipeError::Table(e) => LabError::CustomKernel(e),
        }
    }
}

impl LabArgs {
    /// Whether --patch, --config, --kernel-source or --name ask for a custom build.
    pub fn builds_custom(&self) -> bool {
        !self.patches.is_empty()
            || self.config.is_some()
            || self.kernel_source.is_some()
            || self.name.is_some()
    }

    /// `--shard`, checked.
    pub fn shard_spec(&self) -> Result<Option<shard::Shard>, LabError> {
        self.shard
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(LabError::from)
    }

    /// The cell durations `--shard` balances with.
    pub fn durations_file(&self) -> PathBuf {
        self.durations
            .clone()
            .unwrap_or_else(|| bins::workspace_root().join("selftests/lab/cell-durations.txt"))
    }

    /// Drops --patch, --config, --kernel-source and --name.
    pub fn clear_build_options(&mut self) {
        self.patches.clear();
        self.config = None;
        self.kernel_source = None;
        self.name = None;
    }
}

/// The `--arch` entry, or a usage error listing the known ones.
fn find_arch_or_usage(name: &str) -> Result<&'static ArchSpec, LabError> {
    arch::find_arch(name).ok_or_else(|| {
        LabError::Usage(format!(
            "unknown --arch {name}; known: {}",
            arch::ARCHES
                .iter()
                .map(|a| a.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Runs `agelab lab`: `merge` with `merged_html` drawing the merge's page, or a command or
/// matrix ([`run`]).
pub fn run_command(
    command: &LabCommand,
    merged_html: &dyn Fn(&results::Merged) -> String,
) -> Result<i32, LabError> {
    match &command.action {
        Some(LabAction::Merge(m)) => merge::run(m, merged_html),
        None => run(&command.args),
    }
}

/// Runs `args.cmd` (or the `--matrix`) in the lab; returns the command's exit code, 130 when
/// SIGINT or SIGTERM stopped it.
pub fn run(args: &LabArgs) -> Result<i32, LabError> {
    let arch = find_arch_or_usage(&args.arch)?;
    interrupt::install();
    let kernels = if args.kernel_image.is_some() {
        Vec::new()
    } else {
        kernel_list(&args.kernel)
    };
    check_input(args, arch, &kernels)?;
    if args.builds_custom() && kernels.len() != 1 {
        return Err(LabError::Usage(
            "--patch/--config/--kernel-source/--name build one kernel: give one --kernel \
             (e.g. custom-7.2), no list and no --kernel-image"
                .into(),
        ));
    }
    prereq::check(arch, &kernels)?;
    if let Ok((_, Some(note))) = args.accel.parse().and_then(|c| accel::resolve(arch, c)) {
        eprintln!("agelab lab: {note}");
    }
    if args.bench {
        return bench::run(args, arch);
    }
    if let Some(file) = &args.matrix {
        return matrix::run(args, arch, file);
    }
    let opts = RunOptions::from_args(args)?;
    let lab = Lab::new(args, arch)?;
    let kernel = lab.kernel(
        args.kernel_image
            .as_deref()
            .map_or(&args.kernel, |_| "image"),
    )?;
    let bins = lab.bins()?;
    match lab.boot(&kernel, &bins, &args.cmd, &opts, qemu::OutputMode::Stream) {
        Ok(report) => Ok(report.0.status),
        Err(LabError::GuestRun {
            source: GuestRunError::Interrupted { phase },
            ..
        }) => {
            eprintln!("agelab lab: interrupted ({phase}); QEMU killed");
            Ok(interrupt::EXIT_INTERRUPTED)
        }
        Err(e) => Err(e),
    }
}

/// Checks everything the user can fix before any tool runs or anything is fetched: kernel
/// names, sizes, durations, the paths given, and that there is something to run.
fn check_input(args: &LabArgs, arch: &ArchSpec, kernels: &[String]) -> Result<(), LabError> {
    for name in kernels {
        // Table kernels, or a build recorded by an earlier --patch/--config/--kernel-source run
        // (a new name is fine when this run builds it).
        let known = kernel::find_kernel(name, arch).is_ok()
            || args.builds_custom()
            || cache::cache_root().is_ok_and(|c| custom::named_kernel(&c, arch, name).is_some());
        if !known {
            let e = kernel::find_kernel(name, arch).unwrap_err();
            return Err(LabError::Usage(format!("--kernel {}: {e}", args.kernel)));
        }
    }
    RunOptions::from_args(args)?;
    if args.shard_spec()?.is_some() && args.matrix.is_none() {
        return Err(LabError::Usage(
            "--shard splits a matrix: give --matrix FILE".into(),
        ));
    }
    let must_exist = [
        ("--matrix", args.matrix.as_ref()),
        ("--kernel-image", args.kernel_image.as_ref()),
        ("--bins", args.bins.as_ref()),
    ];
    for (option, path) in must_exist {
        if let Some(p) = path.filter(|p| !p.exists()) {
            return Err(LabError::Usage(format!(
                "{option} {}: does not exist",
                p.display()
            )));
        }
    }
    if args.cmd.is_empty() && !args.bench && args.matrix.is_none() {
        return Err(LabError::Usage(
            "no command: agelab lab --kernel NAME -- CMD ARGS...".into(),
        ));
    }
    Ok(())
}

/// `parse_duration` for option `option`, naming it in the error.
fn option_duration(option: &str, text: &str) -> Result<Duration, LabError> {
    parse_duration(text).map_err(|e| LabError::Usage(format!("{option} {text}: {e}")))
}

/// Parses `300s`, `5m`, `1h`, `500ms` or plain seconds ([`agelab_util::units::parse_duration`]).
pub fn parse_duration(text: &str) -> Result<Duration, LabError> {
    agelab_util::units::parse_duration(text).map_err(|e| LabError::Usage(e.to_string()))
}

/// Checks a size like `512M`, `2G` (QEMU -m and zram disksize syntax).
pub fn check_size(what: &str, text: &str) -> Result<(), LabError> {
    let digits = text.trim_end_matches(['K', 'M', 'G', 'k', 'm', 'g']);
    if digits.is_empty()
        || !digits.chars().all(|c| c.is_ascii_digit())
        || text.len() - digits.len() > 1
    {
        return Err(LabError::Usage(format!(
            "bad {what} size {text:?} (e.g. 512M, 2G)"
        )));
    }
    Ok(())
}

/// Per-boot options (command-line defaults, overridable per matrix test).
#[derive(Debug, Clone)]
pub(crate) struct RunOptions {
    mem: String,
    smp: u32,
    machine: Vec<String>,
    timeout: Duration,
    boot_timeout: Duration,
    zram: Option<String>,
    modules: Vec<String>,
    append: String,
}

impl RunOptions {
    fn from_args(args: &LabArgs) -> Result<Self, LabError> {
        check_size("--mem", &args.mem)?;
        if let Some(z) = &args.zram {
            check_size("--zram", z)?;
        }
        let arch = arch::find_arch(&args.arch)
            .ok_or_else(|| LabError::Usage(format!("unknown --arch {}", args.arch)))?;
        let choice: accel::Accel = args.accel.parse()?;
        let (accel, _) = accel::resolve(arch, choice)?;
        Ok(Self {
            mem: args.mem.clone(),
            smp: args.smp,
            machine: accel::qemu_args(arch, accel),
            timeout: option_duration("--timeout", &args.timeout)?,
            boot_timeout: option_duration("--boot-timeout", &args.boot_timeout)?,
            zram: args.zram.clone(),
            modules: args.modules.clone(),
            append: args.append.clone(),
        })
    }

    /// The accelerator `--accel` resolves to on this host (`kvm`, `tcg`, `tcg-mt`).
    fn accel_name(args: &LabArgs) -> Result<&'static str, LabError> {
        let arch = find_arch_or_usage(&args.arch)?;
        let choice: accel::Accel = args.accel.parse()?;
        let (accel, _) = accel::resolve(arch, choice)?;
        Ok(match accel {
            accel::Accel::Kvm => "kvm",
            accel::Accel::TcgMultiThread => "tcg-mt",
            accel::Accel::Tcg | accel::Accel::Auto => "tcg",
        })
    }
}

/// A kernel ready to boot plus where its busybox comes from.
#[derive(Debug, Clone)]
pub(crate) struct PreparedKernel {
    kernel: LabKernel,
    suite: &'static str,
    /// Custom kernels: seconds of the build that just ran, and of the cached build.
    build_secs: (Option<f64>, Option<f64>),
    /// Custom kernels: how the cached build was made (`full`, or in a kept tree).
    build_mode: Option<String>,
}

/// Shared state of one `agelab lab` invocation.
#[derive(Debug)]
pub(crate) struct Lab<'a> {
    args: &'a LabArgs,
    arch: &'static ArchSpec,
    cache: PathBuf,
}

impl<'a> Lab<'a> {
    fn new(args: &'a LabArgs, arch: &'static ArchSpec) -> Result<Self, LabError> {
        let cache = cache::cache_root()?;
        prune_runs(&cache.join("runs"));
        Ok(Self { args, arch, cache })
    }

    /// Fetches or builds kernel `name` (`image` means `--kernel-image`).
    fn kernel(&self, name: &str) -> Result<PreparedKernel, LabError> {
        if let (Some(img), "image") = (&self.args.kernel_image, name) {
            let image = std::path::absolute(img).unwrap_or_else(|_| img.clone());
            return Ok(PreparedKernel {
                kernel: LabKernel {
                    name: "image".into(),
                    release: String::new(),
                    image,
                    modules: None,
                },
                suite: "sid",
                build_secs: (None, None),
                build_mode: None,
            });
        }
        let args = self.args;
        let spec = match kernel::find_kernel(name, self.arch) {
            Ok(spec) => spec,
            Err(e) => {
                if args.builds_custom() {
                    return Err(e.into());
                }
                // A build recorded by an earlier --patch/--config/--kernel-source run.
                return match custom::named_kernel(&self.cache, self.arch, name) {
                    Some((c, record)) => Ok(PreparedKernel {
                        kernel: c.kernel,
                        suite: kernel::KERNELS
                            .iter()
                            .find(|k| k.suite == record.suite)
                            .map_or("sid", |k| k.suite),
                        build_secs: (None, c.cold_build_secs),
                        build_mode: c.build_mode,
                    }),
                    None => Err(match e {
                        KernelError::Unknown { name, arch, known } => {
                            let named = custom::named_builds(&self.cache, self.arch);
                            KernelError::Unknown {
                                name,
                                arch,
                                known: if named.is_empty() {
                                    known
                                } else {
                                    format!(
                                        "{known}; built with --patch/--name: {}",
                                        named.join(", ")
                                    )
                                },
                            }
                        }
                        e => e,
                    }
                    .into()),
                };
            }
        };
        if args.builds_custom() && !matches!(spec.source, KernelSource::Custom) {
            return Err(RecipeError::NotCustom {
                kernel: spec.name.to_string(),
                series: spec.series.to_string(),
            }
            .into());
        }
        match spec.source {
            KernelSource::Debian => Ok(PreparedKernel {
                kernel: kernel::debian_kernel(spec, self.arch, &self.cache, args.refresh)?,
                suite: spec.suite,
                build_secs: (None, None),
                build_mode: None,
            }),
            KernelSource::Custom if self.arch.custom_config.is_empty() => Err(LabError::Usage(
                format!("{name}: no custom kernel for {} yet", self.arch.name),
            )),
            KernelSource::Custom => {
                let recipe = if args.builds_custom() {
                    custom::Recipe::from_options(
                        spec,
                        &args.patches,
                        args.config.as_deref(),
                        args.kernel_source.as_deref(),
                        args.name.as_deref(),
                    )?
                } else {
                    custom::Recipe::from_spec(spec)?
                };
                let c = custom::custom_kernel(
                    &recipe,
                    self.arch,
                    &self.cache,
                    args.refresh,
                    args.rebuild,
                    args.keep_tree,
                )?;
                if recipe.name != spec.name {
                    eprintln!(
                        "agelab lab: kernel {} ready; later runs can use --kernel {}",
                        recipe.name, recipe.name
                    );
                }
                Ok(PreparedKernel {
                    kernel: c.kernel,
                    suite: spec.suite,
                    build_secs: (c.built_in_secs, c.cold_build_secs),
                    build_mode: c.build_mode,
                })
            }
        }
    }

    /// The binaries for the guest's PATH: the workspace's (built static, unless `--no-build`)
    /// and `--bins`'s; a later directory wins on a name clash, so `--bins` overrides.
    fn bins(&self) -> Result<Vec<PathBuf>, LabError> {
        let mut dirs: Vec<(PathBuf, bool)> = Vec::new();
        if !self.args.no_build {
            dirs.extend(
                bins::build_static_bins(self.arch)?
                    .into_iter()
                    // The examples directory is absent in a workspace without examples.
                    .map(|d| (d, false)),
            );
        }
        dirs.extend(self.args.bins.iter().map(|d| (d.clone(), true)));
        let mut by_name = std::collections::BTreeMap::new();
        for (dir, _) in dirs.iter().filter(|(d, given)| d.is_dir() || *given) {
            for f in initramfs::executables_in(dir)? {
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                if let Some(name) = name.filter(|n| !bins::is_hashed_artifact(n)) {
                    by_name.insert(name, f);
                }
            }
        }
        Ok(by_name.into_values().collect())
    }

    /// Boots `kernel` with `bins` and runs `argv`; returns the report and the run directory
    /// (removed on success unless the output was captured).
    fn boot(
        &self,
        k: &PreparedKernel,
        bins: &[PathBuf],
        argv: &[String],
        opts: &RunOptions,
        output: qemu::OutputMode,
    ) -> Result<(qemu::BootReport, PathBuf), LabError> {
        let mut groups: Vec<String> = self
            .arch
            .kvm_modules
            .iter()
            .map(|(_, m)| m.to_string())
            .collect();
        groups.push("zram".into());
        for m in &opts.modules {
            if !groups.contains(m) {
                groups.push(m.clone());
            }
        }
        let base = initramfs::base_archive(
            &self.cache,
            &initramfs::BaseSpec {
                arch: self.arch,
                kernel: &k.kernel,
                suite: k.suite,
                bins,
                module_groups: &groups,
            },
        )?;
        let run_dir = self.cache.join("runs").join(format!(
            "{}-{}-{}",
            k.kernel.name,
            std::process::id(),
            RUN_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        cache::create_dir(&run_dir)?;
        let initrd = run_dir.join("initrd.cpio");
        let extra = initramfs::run_archive(&initramfs::RunSpec {
            argv,
            zram: opts.zram.as_deref(),
            modules: &opts.modules,
        })
        .and_then(|extra| {
            std::fs::copy(&base, &initrd)?;
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(&initrd)?
                .write_all(&extra)
        });
        extra.map_err(|source| CacheError::Io {
            path: initrd.clone(),
            source,
        })?;
        let result = qemu::boot(&qemu::Boot {
            arch: self.arch,
            kernel: &k.kernel.image,
            initrd: &initrd,
            mem: &opts.mem,
            smp: opts.smp,
            machine: &opts.machine,
            append: &opts.append,
            timeout: opts.timeout,
            boot_timeout: opts.boot_timeout,
            run_dir: &run_dir,
            output,
        });
        let _ = std::fs::remove_file(&initrd);
        match result {
            Ok(r) => {
                if output == qemu::OutputMode::Stream {
                    let _ = std::fs::remove_dir_all(&run_dir);
                }
                Ok((r, run_dir))
            }
            Err(source) => {
                // Kept after a failure for the post-mortem; an interrupted run is no failure.
                if matches!(source, GuestRunError::Interrupted { .. }) {
                    remove_run_dir(&run_dir);
                }
                Err(LabError::GuestRun {
                    kernel: k.kernel.name.clone(),
                    source,
                })
            }
        }
    }
}

/// Matrix cells run at a time by default: one per host core.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

static RUN_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The kernels named by a `--kernel` list (`all` = every kernel in the table).
fn kernel_list(spec: &str) -> Vec<String> {
    if spec == "all" {
        return kernel::KERNELS.iter().map(|k| k.name.to_string()).collect();
    }
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Deletes run directories (kept after failures) older than a day.
fn prune_runs(runs: &Path) {
    let Ok(rd) = std::fs::read_dir(runs) else {
        return;
    };
    let day = Duration::from_secs(24 * 3600);
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes a run directory (used by matrix and bench after collecting the output).
fn remove_run_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
#[path = "lib_tests.rs"]
mod tests;
