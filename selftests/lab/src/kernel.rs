//! The lab's kernels: which ones exist, and fetching Debian's packaged kernels.

use super::apt::{extract_deb, AptError, PrivateApt};
use super::arch::ArchSpec;
use super::cache::{create_dir, write_atomic, CacheError, CacheLock};
use super::deb822::parse_relations;
use std::fs;
use std::path::{Path, PathBuf};

/// Errors of finding or fetching a kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The name is not in the kernel table.
    #[error("unknown lab kernel {name} for {arch}; known: {known}")]
    Unknown {
        /// The requested name.
        name: String,
        /// The architecture.
        arch: String,
        /// The names that exist.
        known: String,
    },
    /// The suite's metapackage now points at another kernel series.
    #[error("{kernel}: Debian {suite}'s linux-image-{flavour} now depends on {found}, not a {series} kernel; update the kernel table in selftests/lab/src/kernel.rs")]
    SeriesMoved {
        /// The lab kernel name.
        kernel: String,
        /// The suite.
        suite: String,
        /// The Debian flavour.
        flavour: String,
        /// The series the table expects.
        series: String,
        /// What the metapackage depends on.
        found: String,
    },
    /// The metapackage has no `linux-image-*` dependency.
    #[error("Debian {suite}: linux-image-{flavour} has no linux-image-* dependency")]
    NoImageDependency {
        /// The suite.
        suite: String,
        /// The Debian flavour.
        flavour: String,
    },
    /// The packages were fetched but hold no kernel image.
    #[error("no vmlinuz in packages {packages} (Debian {suite})")]
    NoImage {
        /// The packages.
        packages: String,
        /// The suite.
        suite: String,
    },
    /// The package index could not be refreshed and nothing is cached.
    #[error("{kernel}: {source}")]
    Apt {
        /// The lab kernel name.
        kernel: String,
        /// The apt failure.
        source: AptError,
    },
    /// Moving files into the cache failed.
    #[error("kernel cache {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Cache bookkeeping failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Where a lab kernel comes from.
#[derive(Debug, Clone, Copy)]
pub enum KernelSource {
    /// Debian's packaged kernel of a suite, via the `linux-image-<flavour>` metapackage.
    Debian,
    /// Built from the suite's `linux-source-<series>` with the lab's config fragment.
    Custom,
}

/// One entry of the kernel table.
#[derive(Debug)]
pub struct KernelSpec {
    /// The `--kernel` name.
    pub name: &'static str,
    /// The Debian suite that provides it.
    pub suite: &'static str,
    /// Kernel series (`major.minor`) the name promises.
    pub series: &'static str,
    /// Packaged or custom-built.
    pub source: KernelSource,
    /// Custom kernels: patch sets (directories under `selftests/lab/patches/`) applied to the
    /// source in this order, each patch set's `*.patch` files in name order.
    pub patches: &'static [&'static str],
}

/// The kernel table (all architectures share it; packages are per Debian architecture).
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        name: "debian-6.1",
        suite: "bookworm",
        series: "6.1",
        source: KernelSource::Debian,
        patches: &[],
    },
    KernelSpec {
        name: "debian-6.12",
        suite: "trixie",
        series: "6.12",
        source: KernelSource::Debian,
        patches: &[],
    },
    KernelSpec {
        name: "debian-7.2",
        suite: "sid",
        series: "7.2",
        source: KernelSource::Debian,
        patches: &[],
    },
    KernelSpec {
        name: "custom-7.2",
        suite: "sid",
        series: "7.2",
        source: KernelSource::Custom,
        patches: &[],
    },
    // The negative control: MGLRU's walk and look-around never ask secondary MMUs (KVM) for
    // young bits. Every verdict about secondary-MMU aging must come out "not seen" here.
    KernelSpec {
        name: "custom-7.2+no-secondary-mmu-aging",
        suite: "sid",
        series: "7.2",
        source: KernelSource::Custom,
        patches: &["no-secondary-mmu-aging"],
    },
    // The A/B baseline of "KVM: age sptes locklessly": x86 KVM ages under mmu_lock again.
    KernelSpec {
        name: "custom-7.2+kvm-locked-aging",
        suite: "sid",
        series: "7.2",
        source: KernelSource::Custom,
        patches: &["kvm-locked-aging"],
    },
];

/// The table entry for `name`.
pub fn find_kernel(name: &str, arch: &ArchSpec) -> Result<&'static KernelSpec, KernelError> {
    KERNELS
        .iter()
        .find(|k| k.name == name)
        .ok_or_else(|| KernelError::Unknown {
            name: name.to_string(),
            arch: arch.name.to_string(),
            known: KERNELS
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct LabKernel {
    /// The lab kernel name (`debian-7.2`, or `image` for `--kernel-image`).
    pub name: String,
    /// The kernel release (`uname -r`), when known.
    pub release: String,
    /// The bootable image.
    pub image: PathBuf,
    /// The `lib/modules/<release>` tree, for kernels with loadable modules.
    pub modules: Option<PathBuf>,
}

/// The Debian packages that carry kernel ABI `abi` (e.g. `7.2.13+deb14-amd64`).
fn image_packages(apt: &PrivateApt, abi: &str) -> Result<Vec<String>, AptError> {
    let image = apt.show(&format!("linux-image-{abi}"))?;
    let binary = format!("linux-binary-{abi}");
    let deps = parse_relations(image.get("Depends").unwrap_or_default());
    if deps.iter().flatten().any(|r| r.name == binary) {
        // Since 7.x the image package is split: binary (vmlinuz) + modules.
        return Ok(vec![binary, format!("linux-modules-{abi}")]);
    }
    let unsigned = format!("linux-image-{abi}-unsigned");
    match apt.show(&unsigned) {
        Ok(_) => Ok(vec![unsigned]),
        Err(AptError::NotFound { .. }) => Ok(vec![format!("linux-image-{abi}")]),
        Err(e) => Err(e),
    }
}

/// The kernel ABI the suite's metapackage points at.
fn resolve_abi(
    spec: &KernelSpec,
    arch: &ArchSpec,
    apt: &PrivateApt,
) -> Result<String, KernelError> {
    let apt_err = |source| KernelError::Apt {
        kernel: spec.name.to_string(),
        source,
    };
    let flavour = arch.kernel_flavour;
    let meta = apt
        .show(&format!("linux-image-{flavour}"))
        .map_err(apt_err)?;
    let suffix = format!("-{flavour}");
    let dep = parse_relations(meta.get("Depends").unwrap_or_default())
        .into_iter()
        .flatten()
        .map(|r| r.name)
        .find(|n| n.starts_with("linux-image-") && n.ends_with(&suffix))
        .ok_or_else(|| KernelError::NoImageDependency {
            suite: spec.suite.to_string(),
            flavour: flavour.to_string(),
        })?;
    let abi = dep.trim_start_matches("linux-image-").to_string();
    if !abi.starts_with(&format!("{}.", spec.series)) {
        return Err(KernelError::SeriesMoved {
            kernel: spec.name.to_string(),
            suite: spec.suite.to_string(),
            flavour: flavour.to_string(),
            series: spec.series.to_string(),
            found: dep,
        });
    }
    Ok(abi)
}

/// Fetches (or reuses) a Debian packaged kernel. When the package index cannot be refreshed
/// (offline), the last kernel fetched under this name is used with a warning.
pub fn debian_kernel(
    spec: &KernelSpec,
    arch: &ArchSpec,
    cache: &Path,
    refresh: bool,
) -> Result<LabKernel, KernelError> {
    let apt_err = |source| KernelError::Apt {
        kernel: spec.name.to_string(),
        source,
    };
    let base = cache.join("kernels").join(arch.name).join(spec.name);
    create_dir(&base)?;
    let current = base.join("current");
    let apt = PrivateApt::open(cache, spec.suite, arch.deb_arch).map_err(apt_err)?;
    if let Err(e) = apt.update(refresh) {
        if let Some(k) = fs::read_to_string(&current)
            .ok()
            .and_then(|d| cached_kernel(spec.name, &base.join(d.trim())))
        {
            eprintln!(
                "agelab lab: warning: {e}\nagelab lab: using cached {} {}",
                spec.name, k.release
            );
            return Ok(k);
        }
        return Err(apt_err(e));
    }
    // Resolution costs several apt-cache runs; it can only change when the lists do.
    if let Some(k) = resolved_since(&current, apt.lists_updated_at())
        .and_then(|d| cached_kernel(spec.name, &base.join(d)))
    {
        return Ok(k);
    }
    let abi = resolve_abi(spec, arch, &apt)?;
    let dir = base.join(&abi);
    let _lock = CacheLock::acquire(&base.join("fetch.lock"))?;
    if let Some(k) = cached_kernel(spec.name, &dir) {
        write_atomic(&current, abi.as_bytes())?;
        return Ok(k);
    }
    let packages = image_packages(&apt, &abi).map_err(apt_err)?;
    let staging = base.join(format!("{abi}.staging"));
    let _ = fs::remove_dir_all(&staging);
    for pkg in &packages {
        let deb = apt.download(pkg).map_err(apt_err)?;
        extract_deb(&deb, &staging).map_err(apt_err)?;
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KernelError::Io { path, source }
    };
    let found = find_image(&staging, &abi).ok_or_else(|| KernelError::NoImage {
        packages: packages.join(" "),
        suite: spec.suite.to_string(),
    })?;
    let _ = fs::remove_dir_all(&dir);
    create_dir(&dir)?;
    fs::rename(&found.image, dir.join("vmlinuz")).map_err(io(&found.image))?;
    if let Some(m) = &found.modules {
        fs::rename(m, dir.join("modules")).map_err(io(m))?;
    }
    if let Some(c) = &found.config {
        fs::rename(c, dir.join("config")).map_err(io(c))?;
    }
    write_atomic(&dir.join("release"), abi.as_bytes())?;
    write_atomic(&dir.join("packages"), packages.join("\n").as_bytes())?;
    fs::remove_dir_all(&staging).map_err(io(&staging))?;
    write_atomic(&current, abi.as_bytes())?;
    cached_kernel(spec.name, &dir).ok_or_else(|| KernelError::NoImage {
        packages: packages.join(" "),
        suite: spec.suite.to_string(),
    })
}

/// The entry named by `current` if it was written after the package lists were refreshed.
pub fn resolved_since(current: &Path, lists: Option<std::time::SystemTime>) -> Option<String> {
    let written = fs::metadata(current).and_then(|m| m.modified()).ok()?;
    (written >= lists?)
        .then(|| fs::read_to_string(current).ok())?
        .map(|d| d.trim().to_string())
}

fn cached_kernel(name: &str, dir: &Path) -> Option<LabKernel> {
    let release = fs::read_to_string(dir.join("release")).ok()?;
    let image = dir.join("vmlinuz");
    image.is_file().then(|| LabKernel {
        name: name.to_string(),
        release: release.trim().to_string(),
        image,
        modules: Some(dir.join("modules")).filter(|m| m.is_dir()),
    })
}

struct FoundImage {
    image: PathBuf,
    modules: Option<PathBuf>,
    config: Option<PathBuf>,
}

/// Finds vmlinuz, the modules tree and the config in an extracted package tree: `/boot`
/// (up to 6.x) or `/usr/lib/modules/<abi>/` (7.x).
fn find_image(root: &Path, abi: &str) -> Option<FoundImage> {
    let module_dirs = [
        root.join("usr/lib/modules").join(abi),
        root.join("lib/modules").join(abi),
    ];
    let image = [
        root.join("boot").join(format!("vmlinuz-{abi}")),
        module_dirs[0].join("vmlinuz"),
        module_dirs[1].join("vmlinuz"),
    ]
    .into_iter()
    .find(|p| p.is_file())?;
    let modules = module_dirs
        .iter()
        .find(|d| d.join("kernel").is_dir())
        .cloned();
    let config = [
        root.join("boot").join(format!("config-{abi}")),
        module_dirs[0].join("config"),
        module_dirs[1].join("config"),
    ]
    .into_iter()
    .find(|p| p.is_file());
    Some(FoundImage {
        image,
        modules,
        config,
    })
}
