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
    /// A patch does not apply; `output` is patch's own report (which hunk failed, where).
    #[error("{kernel}: patch {patch} does not apply to {source_version}:\n{output}{rejects}")]
    PatchFailed {
        /// The lab kernel name.
        kernel: String,
        /// The patch file.
        patch: PathBuf,
        /// The source package version it was applied to.
        source_version: String,
        /// What `patch` printed.
        output: String,
        /// The rejected hunks, if patch wrote any.
        rejects: String,
    },
    /// A patch set named by the kernel table is missing or empty.
    #[error("{kernel}: patch set {dir}: {detail}")]
    PatchSet {
        /// The lab kernel name.
        kernel: String,
        /// The patch set directory.
        dir: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Cache bookkeeping failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Where the project's patch sets live (`selftests/lab/patches/<name>/*.patch`).
pub fn patches_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("lab")
        .join("patches")
}

/// The patch files of `spec`'s patch sets, in application order.
pub fn patch_files(spec: &KernelSpec) -> Result<Vec<PathBuf>, CustomKernelError> {
    let mut files = Vec::new();
    for set in spec.patches {
        let dir = patches_dir().join(set);
        let err = |detail: String| CustomKernelError::PatchSet {
            kernel: spec.name.to_string(),
            dir: dir.clone(),
            detail,
        };
        let mut set_files: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| err(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "patch"))
            .collect();
        if set_files.is_empty() {
            return Err(err("no *.patch files".into()));
        }
        set_files.sort();
        files.extend(set_files);
    }
    Ok(files)
}

/// Applies `patch` to the tree in `build` with `patch -p1`; a failure carries the failing hunks.
fn apply_patch(
    kernel: &str,
    version: &str,
    build: &Path,
    patch: &Path,
) -> Result<(), CustomKernelError> {
    let io = |source| CustomKernelError::Io {
        kernel: kernel.to_string(),
        path: patch.to_path_buf(),
        source,
    };
    let out = Command::new("patch")
        .current_dir(build)
        .args([
            "-p1",
            "--forward",
            "--batch",
            "--no-backup-if-mismatch",
            "-i",
        ])
        .arg(patch)
        .stdin(Stdio::null())
        .output()
        .map_err(io)?;
    if out.status.success() {
        return Ok(());
    }
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut rejects = String::new();
    for line in output.lines() {
        // "saving rejects to file mm/vmscan.c.rej"
        if let Some(rej) = line.split("saving rejects to file ").nth(1) {
            if let Ok(text) = fs::read_to_string(build.join(rej.trim())) {
                rejects.push_str(&format!("--- rejected hunks ({}) ---\n{text}", rej.trim()));
            }
        }
    }
    Err(CustomKernelError::PatchFailed {
        kernel: kernel.to_string(),
        patch: patch.to_path_buf(),
        source_version: version.to_string(),
        output,
        rejects,
    })
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
    let patches = patch_files(spec)?;
    for p in &patches {
        let text = fs::read(p).map_err(|e| CustomKernelError::Io {
            kernel: kernel.to_string(),
            path: p.clone(),
            source: e,
        })?;
        h.field(&text);
    }
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
    for p in &patches {
        eprintln!("agelab lab: {kernel}: applying {}", p.display());
        apply_patch(kernel, &version, &build, p)?;
    }
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

    fn tree(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agelab-patch-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("mm")).unwrap();
        fs::write(dir.join("mm/vmscan.c"), "a\nyoung_notify(x);\nc\n").unwrap();
        dir
    }

    const GOOD: &str = "--- a/mm/vmscan.c\n+++ b/mm/vmscan.c\n@@ -1,3 +1,3 @@\n a\n-young_notify(x);\n+young(x);\n c\n";

    #[test]
    fn a_patch_applies_and_a_bad_one_names_its_failing_hunk() {
        let dir = tree("good");
        let patch = dir.join("good.patch");
        fs::write(&patch, GOOD).unwrap();
        apply_patch("k", "7.2.13-1", &dir, &patch).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("mm/vmscan.c")).unwrap(),
            "a\nyoung(x);\nc\n"
        );

        // The same patch again no longer applies: its hunk and the rejected text are reported.
        let err = apply_patch("k", "7.2.13-1", &dir, &patch)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not apply to 7.2.13-1"), "{err}");
        assert!(err.contains("mm/vmscan.c"), "{err}");
        assert!(
            err.contains("-young_notify(x);") || err.contains("Reversed"),
            "{err}"
        );

        let dir = tree("bad");
        let patch = dir.join("bad.patch");
        fs::write(
            &patch,
            GOOD.replace(" a\n", " zzz\n")
                .replace("young_notify", "other"),
        )
        .unwrap();
        let err = apply_patch("k", "7.2.13-1", &dir, &patch)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Hunk #1 FAILED"), "{err}");
        assert!(err.contains("rejected hunks"), "{err}");
        assert_eq!(
            fs::read_to_string(dir.join("mm/vmscan.c")).unwrap(),
            "a\nyoung_notify(x);\nc\n"
        );
    }

    #[test]
    fn the_negative_control_patch_set_exists_and_only_drops_the_notifier() {
        let spec = super::super::kernel::KERNELS
            .iter()
            .find(|k| k.name == "custom-7.2+no-secondary-mmu-aging")
            .unwrap();
        let files = patch_files(spec).unwrap();
        assert_eq!(files.len(), 1);
        let text = fs::read_to_string(&files[0]).unwrap();
        let removed: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-\t") || l.starts_with("- "))
            .collect();
        let added: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("+\t") || l.starts_with("+ "))
            .collect();
        assert_eq!(removed.len(), 4, "{removed:?}");
        assert!(removed.iter().all(|l| l.contains("_notify(")));
        assert!(added.iter().all(|l| !l.contains("_notify(")));
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
