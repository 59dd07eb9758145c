//! The custom lab kernel: Debian's `linux-source-<series>` built with `tinyconfig` plus the lab's
//! Kconfig fragment (everything built in, no modules), cached by source version and config hash.

use super::apt::{AptError, PrivateApt};
use super::arch::ArchSpec;
use super::cache::{create_dir, write_atomic, CacheError, CacheLock};
use super::hash::CacheHasher;
use super::kernel::{KernelSpec, LabKernel};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Bump when the build recipe changes in a way the fragment hash does not capture.
const RECIPE_VERSION: &str = "tinyconfig+fragment v1";

/// Errors of the custom kernel build.
#[derive(Debug, thiserror::Error)]
pub enum CustomKernelError {
    /// Fetching the source package failed.
    #[error("{kernel}: {source}")]
    Apt {
        /// The lab kernel name.
        kernel: String,
        /// The apt failure.
        source: AptError,
    },
    /// A build step failed; the log tail says why.
    #[error("{kernel}: {step} failed (full log: {log})\n{tail}")]
    Step {
        /// The lab kernel name.
        kernel: String,
        /// The failing step.
        step: String,
        /// The build log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// Kconfig dropped options of the fragment (unmet dependencies).
    #[error("{kernel}: the final .config lacks fragment options (unmet dependencies?): {missing}")]
    ConfigMismatch {
        /// The lab kernel name.
        kernel: String,
        /// The options Kconfig did not keep.
        missing: String,
    },
    /// File handling in the build or cache directory failed.
    #[error("{kernel}: {path}: {source}")]
    Io {
        /// The lab kernel name.
        kernel: String,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Cache bookkeeping failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// A custom kernel and how it was obtained.
#[derive(Debug)]
pub struct CustomKernel {
    /// The kernel, ready to boot.
    pub kernel: LabKernel,
    /// Seconds the build took when it ran; `None` on a cache hit.
    pub built_in_secs: Option<f64>,
    /// Seconds the cached build took originally, if recorded.
    pub cold_build_secs: Option<f64>,
}

/// `CONFIG_X=y` lines of a fragment (comments and blank lines dropped).
pub fn fragment_options(fragment: &str) -> Vec<&str> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
        .collect()
}

/// Fragment options that the final `.config` text does not contain verbatim.
pub fn missing_options<'a>(fragment: &'a str, config: &str) -> Vec<&'a str> {
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    fragment_options(fragment)
        .into_iter()
        .filter(|o| !have.contains(o))
        .collect()
}

/// Fetches the cached custom kernel or builds it (`rebuild` forces a build).
pub fn custom_kernel(
    spec: &KernelSpec,
    arch: &ArchSpec,
    cache: &Path,
    refresh: bool,
    rebuild: bool,
) -> Result<CustomKernel, CustomKernelError> {
    let kernel = spec.name;
    let apt_err = |source| CustomKernelError::Apt {
        kernel: kernel.to_string(),
        source,
    };
    let package = format!("linux-source-{}", spec.series);
    let base = cache.join("kernels").join(arch.name).join(spec.name);
    let apt = PrivateApt::open(cache, spec.suite, arch.deb_arch).map_err(apt_err)?;
    let mut h = CacheHasher::default();
    h.field(RECIPE_VERSION.as_bytes());
    h.field(arch.name.as_bytes());
    h.field(arch.custom_config.as_bytes());
    let same_config = |d: &String| d.ends_with(&format!("-{}", h.hex()));
    let updated = apt.update(refresh);
    if !rebuild && updated.is_ok() {
        // Same lists and same config as the last resolution: no apt-cache runs needed.
        let fresh = super::kernel::resolved_since(&base.join("current"), apt.lists_updated_at());
        if let Some(k) = fresh
            .filter(same_config)
            .and_then(|d| cached(spec.name, &base.join(d)))
        {
            return Ok(k);
        }
    }
    let version = match updated.and_then(|()| apt.show(&package)) {
        Ok(p) => p.get("Version").unwrap_or_default().to_string(),
        Err(e) => {
            // Offline: reuse the last build of this name and config if there is one.
            let last = fs::read_to_string(base.join("current"))
                .ok()
                .map(|d| d.trim().to_string());
            match last
                .filter(same_config)
                .and_then(|d| cached(spec.name, &base.join(d)))
            {
                Some(k) => {
                    eprintln!("agelab lab: warning: {e}\nagelab lab: using cached {kernel}");
                    return Ok(k);
                }
                None => return Err(apt_err(e)),
            }
        }
    };
    let key = format!("{version}-{}", h.hex());
    let dir = base.join(&key);
    create_dir(&base)?;
    let _lock = CacheLock::acquire(&base.join("build.lock"))?;
    if !rebuild {
        if let Some(k) = cached(spec.name, &dir) {
            write_atomic(&base.join("current"), key.as_bytes())?;
            return Ok(k);
        }
    }
    let deb = apt.download(&package).map_err(apt_err)?;
    let started = Instant::now();
    let build = base.join(format!("{key}.build"));
    let _ = fs::remove_dir_all(&build);
    create_dir(&build)?;
    let log = build.join("build.log");
    let b = Builder { kernel, log: &log };
    eprintln!(
        "agelab lab: building {kernel} from {package} {version} (log: {})",
        log.display()
    );
    b.run(
        "unpacking the source",
        Command::new("sh").arg("-c").arg(format!(
            "dpkg-deb --fsys-tarfile \"$1\" | tar -xO --wildcards '*/{package}.tar.*' | tar -xJ --strip-components=1 -C \"$2\""
        )).arg("sh").arg(&deb).arg(&build),
    )?;
    let make = |args: &[&str]| {
        let mut c = Command::new("make");
        c.current_dir(&build)
            .arg(format!("ARCH={}", arch.kbuild_arch))
            .args(args);
        c
    };
    b.run("make tinyconfig", &mut make(&["tinyconfig"]))?;
    let frag = build.join("agelab.config");
    fs::write(&frag, arch.custom_config).map_err(|e| b.io(&frag, e))?;
    b.run(
        "merging the lab config fragment",
        Command::new("scripts/kconfig/merge_config.sh")
            .current_dir(&build)
            .env("ARCH", arch.kbuild_arch)
            .args(["-m", ".config", "agelab.config"]),
    )?;
    b.run("make olddefconfig", &mut make(&["olddefconfig"]))?;
    let config_path = build.join(".config");
    let config = fs::read_to_string(&config_path).map_err(|e| b.io(&config_path, e))?;
    let missing = missing_options(arch.custom_config, &config);
    if !missing.is_empty() {
        return Err(CustomKernelError::ConfigMismatch {
            kernel: kernel.to_string(),
            missing: missing.join(" "),
        });
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    b.run(
        &format!("make {}", arch.kbuild_target),
        &mut make(&[&format!("-j{jobs}"), arch.kbuild_target]),
    )?;
    let secs = started.elapsed().as_secs_f64();
    // Filled aside and renamed into place: concurrent runs never see a half-written entry.
    let staged = base.join(format!("{key}.new"));
    let _ = fs::remove_dir_all(&staged);
    create_dir(&staged)?;
    let image = build.join(arch.kbuild_image);
    fs::copy(&image, staged.join("vmlinuz")).map_err(|e| b.io(&image, e))?;
    fs::copy(&config_path, staged.join("config")).map_err(|e| b.io(&config_path, e))?;
    let _ = fs::copy(&log, staged.join("build.log"));
    let release = fs::read_to_string(build.join("include/config/kernel.release"))
        .unwrap_or_else(|_| version.clone());
    write_atomic(
        &staged.join("build-seconds"),
        format!("{secs:.1}").as_bytes(),
    )?;
    write_atomic(&staged.join("release"), release.trim().as_bytes())?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&staged, &dir).map_err(|e| b.io(&dir, e))?;
    write_atomic(&base.join("current"), key.as_bytes())?;
    // The tree is ~1.5 GB and nothing reuses it: the key changes with source or config.
    if std::env::var_os("AGELAB_KEEP_BUILD").is_none() {
        let _ = fs::remove_dir_all(&build);
    }
    let mut k =
        cached(spec.name, &dir).ok_or_else(|| b.io(&dir, std::io::ErrorKind::NotFound.into()))?;
    k.built_in_secs = Some(secs);
    Ok(k)
}

fn cached(name: &str, dir: &Path) -> Option<CustomKernel> {
    let release = fs::read_to_string(dir.join("release")).ok()?;
    let image = dir.join("vmlinuz");
    image.is_file().then(|| CustomKernel {
        kernel: LabKernel {
            name: name.to_string(),
            release: release.trim().to_string(),
            image,
            modules: None,
        },
        built_in_secs: None,
        cold_build_secs: fs::read_to_string(dir.join("build-seconds"))
            .ok()
            .and_then(|s| s.trim().parse().ok()),
    })
}

struct Builder<'a> {
    kernel: &'a str,
    log: &'a Path,
}

impl Builder<'_> {
    fn io(&self, path: &Path, source: std::io::Error) -> CustomKernelError {
        CustomKernelError::Io {
            kernel: self.kernel.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }

    /// Runs one step with output appended to the log.
    fn run(&self, step: &str, cmd: &mut Command) -> Result<(), CustomKernelError> {
        let open = || {
            File::options()
                .create(true)
                .append(true)
                .open(self.log)
                .map_err(|e| self.io(self.log, e))
        };
        let (out, err) = (open()?, open()?);
        let status = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .map_err(|e| self.io(Path::new(step), e))?;
        if status.success() {
            return Ok(());
        }
        let text = fs::read_to_string(self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        Err(CustomKernelError::Step {
            kernel: self.kernel.to_string(),
            step: step.to_string(),
            log: self.log.to_path_buf(),
            tail: lines[lines.len().saturating_sub(30)..].join("\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_missing() {
        let frag = "# comment\nCONFIG_A=y\n\nCONFIG_B=8\nCONFIG_C=y\n";
        assert_eq!(
            fragment_options(frag),
            ["CONFIG_A=y", "CONFIG_B=8", "CONFIG_C=y"]
        );
        let config = "CONFIG_A=y\nCONFIG_B=8\n# CONFIG_C is not set\n";
        assert_eq!(missing_options(frag, config), ["CONFIG_C=y"]);
    }

    #[test]
    fn the_x86_fragment_has_what_the_lab_promises() {
        let frag = super::super::arch::find_arch("x86_64")
            .unwrap()
            .custom_config;
        let opts = fragment_options(frag);
        for o in [
            "CONFIG_LRU_GEN=y",
            "CONFIG_LRU_GEN_ENABLED=y",
            "CONFIG_IDLE_PAGE_TRACKING=y",
            "CONFIG_DAMON_SYSFS=y",
            "CONFIG_KVM_AMD=y",
            "CONFIG_KVM_INTEL=y",
            "CONFIG_ZRAM=y",
            "CONFIG_USERFAULTFD=y",
        ] {
            assert!(
                opts.contains(&o),
                "{o} missing from the custom kernel fragment"
            );
        }
    }
}
