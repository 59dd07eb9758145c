//! Building a custom kernel: unpack or copy the source, patch, configure, `make`, and move the
//! image into the cache, with progress on stderr and the log's tail on failure.

use super::cache::{cached, RecipeRecord};
use super::fragment::missing_options;
use super::patches::apply_patch;
use super::recipe::{tree_id, Recipe, SourceTree};
use super::tree::{is_plain_base, usable_tree, AppliedPatches, KeptTree};
use super::{CustomKernel, CustomKernelError};
use crate::apt::PrivateApt;
use crate::arch::ArchSpec;
use crate::cache::{create_dir, write_atomic, CacheLock};
use agelab_util::progress::{minutes_seconds, Progress};
use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Fills `build` with the source (Debian's package `deb`, or a copy of the local tree) and
/// applies the recipe's patches; a patch that does not apply stops with its failing hunks.
/// The local tree is only read.
fn prepare_tree(
    recipe: &Recipe,
    version: &str,
    deb: Option<&Path>,
    build: &Path,
    b: &Builder<'_>,
) -> Result<(), CustomKernelError> {
    let kernel = recipe.name.as_str();
    match (&recipe.source, deb) {
        (SourceTree::Local(tree), _) => b.run(
            "copying the kernel tree",
            Command::new("sh")
                .arg("-c")
                .arg("tar -C \"$1\" --exclude=./.git -cf - . | tar -C \"$2\" -xf -")
                .arg("sh")
                .arg(tree)
                .arg(build),
        )?,
        (SourceTree::Debian, Some(deb)) => {
            let package = format!("linux-source-{}", recipe.spec.series);
            b.run(
                "unpacking the source",
                Command::new("sh").arg("-c").arg(format!(
                    "dpkg-deb --fsys-tarfile \"$1\" | tar -xO --wildcards '*/{package}.tar.*' | tar -xJ --strip-components=1 -C \"$2\""
                )).arg("sh").arg(deb).arg(build),
            )?
        }
        (SourceTree::Debian, None) => {
            return Err(b.io(build, std::io::ErrorKind::NotFound.into()));
        }
    }
    for p in &recipe.patches {
        eprintln!("agelab lab: {kernel}: applying {}", p.display());
        apply_patch(kernel, version, build, p)?;
    }
    Ok(())
}

/// Fetches the cached custom kernel or builds it (`rebuild` forces a build).
///
/// A build with patches only is made in the base's kept tree when there is one
/// ([`super::tree`]); `keep_tree` keeps the base's tree when the base itself is built (and
/// builds the base again when its tree is missing).
pub fn custom_kernel(
    recipe: &Recipe,
    arch: &ArchSpec,
    cache: &Path,
    refresh: bool,
    rebuild: bool,
    keep_tree: bool,
) -> Result<CustomKernel, CustomKernelError> {
    let spec = recipe.spec;
    let kernel = recipe.name.as_str();
    let apt_err = |source| CustomKernelError::Apt {
        kernel: kernel.to_string(),
        source,
    };
    let package = format!("linux-source-{}", spec.series);
    let base = cache.join("kernels").join(arch.name).join(kernel);
    let hash = recipe.hash(arch)?;
    let same_config = |d: &String| d.ends_with(&format!("-{hash}"));
    let mut apt = None;
    let version = match &recipe.source {
        SourceTree::Local(tree) => tree_id(tree).map_err(|e| CustomKernelError::Io {
            kernel: kernel.to_string(),
            path: tree.clone(),
            source: e,
        })?,
        SourceTree::Debian => {
            let a = PrivateApt::open(cache, spec.suite, arch.deb_arch).map_err(apt_err)?;
            let updated = a.update(refresh);
            if !rebuild && updated.is_ok() {
                // Same lists and same config as the last resolution: no apt-cache runs needed.
                let fresh =
                    crate::kernel::resolved_since(&base.join("current"), a.lists_updated_at());
                if let Some(k) = fresh
                    .filter(same_config)
                    .and_then(|d| cached(kernel, &base.join(d)))
                {
                    return Ok(k);
                }
            }
            let version = match updated.and_then(|()| a.show(&package)) {
                Ok(p) => p.get("Version").unwrap_or_default().to_string(),
                Err(e) => {
                    // Offline: reuse the last build of this name and config if there is one.
                    let last = fs::read_to_string(base.join("current"))
                        .ok()
                        .map(|d| d.trim().to_string());
                    match last
                        .filter(same_config)
                        .and_then(|d| cached(kernel, &base.join(d)))
                    {
                        Some(k) => {
                            eprintln!(
                                "agelab lab: warning: {e}\nagelab lab: using cached {kernel}"
                            );
                            return Ok(k);
                        }
                        None => return Err(apt_err(e)),
                    }
                }
            };
            apt = Some(a);
            version
        }
    };
    let key = format!("{version}-{hash}");
    let dir = base.join(&key);
    create_dir(&base)?;
    let _lock = CacheLock::acquire(&base.join("build.lock"))?;
    let record = RecipeRecord {
        name: kernel.to_string(),
        base: spec.name.to_string(),
        suite: spec.suite.to_string(),
        key: key.clone(),
        source: match &recipe.source {
            SourceTree::Debian => format!("{package} {version}"),
            SourceTree::Local(t) => format!("{} ({version})", t.display()),
        },
        patches: recipe.patches.clone(),
        extra_config: recipe.extra_config.clone(),
    };
    let record_json = serde_json::to_string_pretty(&record).unwrap_or_default();
    let plain_base = is_plain_base(recipe);
    let own_tree = KeptTree::at(cache, arch, kernel, &key);
    // A base asked to keep its tree builds once more when the tree is gone.
    let want_tree = keep_tree && plain_base && !own_tree.is_ready();
    if !rebuild && !want_tree {
        if let Some(k) = cached(kernel, &dir) {
            write_atomic(&base.join("current"), key.as_bytes())?;
            write_atomic(&base.join("recipe"), record_json.as_bytes())?;
            return Ok(k);
        }
    }
    // `--kernel NAME` must not find an older build while this one is missing or failed.
    let _ = fs::remove_file(base.join("recipe"));
    let entry = Entry {
        kernel,
        arch,
        base: &base,
        key: &key,
        version: &version,
        record_json: &record_json,
    };
    if let Some(tree) = usable_tree(recipe, arch, cache, &version)? {
        let _tree_lock = tree.lock()?;
        // A base rebuild may have retired the tree while this build waited for the lock.
        if tree.is_ready() {
            return build_in_kept_tree(recipe, &tree, &entry);
        }
    }
    let deb = match &apt {
        Some(a) => Some(a.download(&package).map_err(apt_err)?),
        None => None,
    };
    let keep = plain_base && (keep_tree || own_tree.is_ready());
    // The base's own tree is rebuilt in place, under its lock, unusable until it is complete.
    let _tree_lock = if keep { Some(own_tree.lock()?) } else { None };
    let build = if keep {
        own_tree.mark_unusable();
        own_tree.dir.clone()
    } else {
        base.join(format!("{key}.build"))
    };
    let started = Instant::now();
    let _ = fs::remove_dir_all(&build);
    create_dir(&build)?;
    let log = build.join("build.log");
    let b = Builder { kernel, log: &log };
    eprintln!(
        "agelab lab: building {kernel} from {} (log: {})",
        record.source,
        log.display()
    );
    prepare_tree(recipe, &version, deb.as_deref(), &build, &b)?;
    let make = |args: &[&str]| make_command(arch, &build, args);
    b.run("make tinyconfig", &mut make(&["tinyconfig"]))?;
    let fragment = recipe.fragment(arch);
    let frag = build.join("agelab.config");
    fs::write(&frag, &fragment).map_err(|e| b.io(&frag, e))?;
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
    let missing = missing_options(&fragment, &config);
    if !missing.is_empty() {
        return Err(CustomKernelError::ConfigMismatch {
            kernel: kernel.to_string(),
            missing: missing.join(" "),
        });
    }
    b.run(
        &format!("make {}", arch.kbuild_target),
        &mut make(&[&jobs_arg(), arch.kbuild_target]),
    )?;
    let secs = started.elapsed().as_secs_f64();
    let k = entry.store(&build, &log, secs, "full", &b)?;
    if keep {
        own_tree.mark_ready().map_err(|e| b.io(&own_tree.dir, e))?;
    } else if std::env::var_os("AGELAB_KEEP_BUILD").is_none() {
        // The tree is ~1.5 GB and nothing reuses it: the key changes with source or config.
        let _ = fs::remove_dir_all(&build);
    }
    Ok(k)
}

/// `make ARCH=<arch> ARGS` in `tree`.
fn make_command(arch: &ArchSpec, tree: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("make");
    c.current_dir(tree)
        .arg(format!("ARCH={}", arch.kbuild_arch))
        .args(args);
    c
}

/// `-j<host cores>`.
fn jobs_arg() -> String {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    format!("-j{jobs}")
}

/// Builds `recipe` in the base's kept tree: its patches applied, `make` (kbuild rebuilds what
/// the patches changed and links), the image stored, the patches reverted — also when `make`
/// failed. The caller holds the tree's lock.
fn build_in_kept_tree(
    recipe: &Recipe,
    tree: &KeptTree,
    entry: &Entry<'_>,
) -> Result<CustomKernel, CustomKernelError> {
    let kernel = entry.kernel;
    let log = entry.base.join(format!("{}.log", entry.key));
    let _ = fs::remove_file(&log);
    let b = Builder { kernel, log: &log };
    let mode = format!("kept tree of {} {}", tree.base, tree.key);
    eprintln!(
        "agelab lab: building {kernel} in the {mode} (log: {})",
        log.display()
    );
    let started = Instant::now();
    let applied = AppliedPatches::apply(tree, kernel, entry.version, &recipe.patches)?;
    let built = b
        .run(
            &format!("make {}", entry.arch.kbuild_target),
            &mut make_command(
                entry.arch,
                &tree.dir,
                &[&jobs_arg(), entry.arch.kbuild_target],
            ),
        )
        .map(|()| started.elapsed().as_secs_f64())
        .and_then(|secs| entry.store(&tree.dir, &log, secs, &mode, &b));
    let reverted = applied.revert();
    let k = built?;
    reverted?;
    Ok(k)
}

/// Where a finished build goes: `kernels/<arch>/<name>/<key>/`.
struct Entry<'a> {
    kernel: &'a str,
    arch: &'a ArchSpec,
    base: &'a Path,
    key: &'a str,
    version: &'a str,
    record_json: &'a str,
}

impl Entry<'_> {
    /// Copies the image, config, log and release from the built `tree` into the cache entry
    /// (filled aside and renamed into place: concurrent runs never see a half-written entry) and
    /// records it under its name.
    fn store(
        &self,
        tree: &Path,
        log: &Path,
        secs: f64,
        mode: &str,
        b: &Builder<'_>,
    ) -> Result<CustomKernel, CustomKernelError> {
        let dir = self.base.join(self.key);
        let staged = self.base.join(format!("{}.new", self.key));
        let _ = fs::remove_dir_all(&staged);
        create_dir(&staged)?;
        let image = tree.join(self.arch.kbuild_image);
        fs::copy(&image, staged.join("vmlinuz")).map_err(|e| b.io(&image, e))?;
        let config_path = tree.join(".config");
        fs::copy(&config_path, staged.join("config")).map_err(|e| b.io(&config_path, e))?;
        let _ = fs::copy(log, staged.join("build.log"));
        let release = fs::read_to_string(tree.join("include/config/kernel.release"))
            .unwrap_or_else(|_| self.version.to_string());
        write_atomic(
            &staged.join("build-seconds"),
            format!("{secs:.1}").as_bytes(),
        )?;
        write_atomic(&staged.join("build-mode"), mode.as_bytes())?;
        write_atomic(&staged.join("release"), release.trim().as_bytes())?;
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&staged, &dir).map_err(|e| b.io(&dir, e))?;
        write_atomic(&self.base.join("current"), self.key.as_bytes())?;
        write_atomic(&self.base.join("recipe"), self.record_json.as_bytes())?;
        let mut k = cached(self.kernel, &dir)
            .ok_or_else(|| b.io(&dir, std::io::ErrorKind::NotFound.into()))?;
        k.built_in_secs = Some(secs);
        Ok(k)
    }
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
        let log_start = fs::metadata(self.log).map_or(0, |m| m.len());
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| self.io(Path::new(step), e))?;
        let started = Instant::now();
        let mut progress = BuildProgress::new(self.kernel, step);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| self.io(Path::new(step), e))? {
                break status;
            }
            std::thread::sleep(Duration::from_millis(500));
            progress.tick(started.elapsed(), || objects_built(self.log, log_start));
        };
        progress.done(started.elapsed(), objects_built(self.log, log_start));
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

/// Objects kbuild reported building (`  CC `, `  AS `, `  LD `, `  AR ` lines) since byte
/// `from` of the build log.
fn objects_built(log: &Path, from: u64) -> usize {
    let text = fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    count_objects(&text)
}

/// kbuild's short-log lines that stand for one object built.
pub fn count_objects(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            ["  CC ", "  AS ", "  LD ", "  AR ", "  HOSTCC "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .count()
}

/// Progress of one long build step on stderr (see [`Progress`]): in place on a terminal, one
/// line every 30 s otherwise (CI logs), so minutes of `make` are never silent.
struct BuildProgress<'a> {
    kernel: &'a str,
    step: &'a str,
    out: Progress<std::io::Stderr>,
}

impl<'a> BuildProgress<'a> {
    fn new(kernel: &'a str, step: &'a str) -> Self {
        BuildProgress {
            kernel,
            step,
            out: Progress::stderr(Duration::from_secs(30)),
        }
    }

    /// Called every half second while the step runs.
    fn tick(&mut self, elapsed: Duration, objects: impl FnOnce() -> usize) {
        let (kernel, step) = (self.kernel, self.step);
        self.out
            .tick(elapsed, || build_line(kernel, step, elapsed, objects()));
    }

    /// The step ended: the final count, on its own line (steps under 5 s stay quiet).
    fn done(&mut self, elapsed: Duration, objects: usize) {
        let line = build_line(self.kernel, self.step, elapsed, objects);
        self.out
            .done(elapsed, Duration::from_secs(5), &format!("{line} (done)"));
    }
}

/// `agelab lab: building custom-7.2: make, 1234 objects, 2m05s`.
fn build_line(kernel: &str, step: &str, elapsed: Duration, objects: usize) -> String {
    format!(
        "agelab lab: building {kernel}: {step}, {objects} objects, {}",
        minutes_seconds(elapsed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custom::recipe::Recipe;
    use crate::custom::test_util::{custom_spec, temp, tree, GOOD};
    use std::path::PathBuf;

    #[test]
    fn counts_the_objects_kbuild_reports() {
        let log = "  HOSTCC  scripts/basic/fixdep\n  CC      mm/vmscan.o\n  AR      mm/built-in.a\nmm/vmscan.c:1: warning: x\n  LD      vmlinux.o\n  GEN     Makefile\n";
        assert_eq!(count_objects(log), 4);
        assert_eq!(count_objects(""), 0);
        assert_eq!(
            build_line("custom-7.2", "make bzImage", Duration::from_secs(195), 812),
            "agelab lab: building custom-7.2: make bzImage, 812 objects, 3m15s"
        );
    }

    #[test]
    fn a_bad_patch_on_a_local_tree_stops_with_its_hunk_and_leaves_the_tree_alone() {
        let src = tree("local-src");
        fs::write(src.join("Makefile"), "all:\n").unwrap();
        fs::write(src.join("Kconfig"), "").unwrap();
        let work = temp("local-work");
        let good = work.join("0001-good.patch");
        fs::write(&good, GOOD).unwrap();
        let bad = work.join("0002-bad.patch");
        fs::write(
            &bad,
            GOOD.replace(" a\n", " zzz\n")
                .replace("young_notify", "other"),
        )
        .unwrap();

        let prepare = |patches: &[PathBuf], name: &str| {
            let recipe =
                Recipe::from_options(custom_spec(), patches, None, Some(&src), None).unwrap();
            let build = temp(name);
            let log = build.join("build.log");
            let b = Builder {
                kernel: &recipe.name,
                log: &log,
            };
            let id = tree_id(&src).unwrap();
            prepare_tree(&recipe, &id, None, &build, &b).map(|()| build)
        };
        let build = prepare(std::slice::from_ref(&good), "local-build-ok").unwrap();
        assert_eq!(
            fs::read_to_string(build.join("mm/vmscan.c")).unwrap(),
            "a\nyoung(x);\nc\n"
        );
        let e = prepare(std::slice::from_ref(&bad), "local-build-bad")
            .unwrap_err()
            .to_string();
        assert!(e.contains("0002-bad.patch does not apply to tree-"), "{e}");
        assert!(e.contains("Hunk #1 FAILED"), "{e}");
        assert!(e.contains("rejected hunks"), "{e}");
        // The user's tree is only read.
        assert_eq!(
            fs::read_to_string(src.join("mm/vmscan.c")).unwrap(),
            "a\nyoung_notify(x);\nc\n"
        );
        assert!(!src.join("mm/vmscan.c.rej").exists());
    }

    #[test]
    fn a_failing_build_step_reports_its_last_lines() {
        let dir = temp("step");
        let log = dir.join("build.log");
        let b = Builder {
            kernel: "custom-7.2+x",
            log: &log,
        };
        b.run("make tinyconfig", &mut Command::new("true")).unwrap();
        let script = "for i in $(seq 1 40); do echo CC mm/file$i.o; done; \
                      echo 'mm/vmscan.c:12:5: error: unknown type name foo' >&2; exit 2";
        let e = b
            .run("make bzImage", Command::new("sh").args(["-c", script]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("custom-7.2+x: make bzImage failed"), "{e}");
        assert!(e.contains("error: unknown type name foo"), "{e}");
        assert!(
            e.contains("CC mm/file40.o") && !e.contains("CC mm/file5.o"),
            "{e}"
        );
    }
}
