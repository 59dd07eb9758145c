//! The custom lab kernel: Debian's `linux-source-<series>` built with `tinyconfig` plus the lab's
//! Kconfig fragment (everything built in, no modules), cached by source version and config hash.

use super::apt::{AptError, PrivateApt};
use super::arch::ArchSpec;
use super::cache::{create_dir, write_atomic, CacheError, CacheLock};
use super::hash::CacheHasher;
use super::kernel::{KernelSource, KernelSpec, LabKernel, KERNELS};
use agelab_util::progress::{minutes_seconds, Progress};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    Path::new(env!("CARGO_MANIFEST_DIR")).join("patches")
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

/// Fragment options that the final `.config` text does not contain verbatim, and
/// `# CONFIG_X is not set` lines whose symbol the config sets after all.
pub fn missing_options<'a>(fragment: &'a str, config: &str) -> Vec<&'a str> {
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    let set: std::collections::HashSet<&str> = config
        .lines()
        .filter_map(|l| l.trim().split_once('=').map(|(s, _)| s))
        .collect();
    let mut out: Vec<&str> = fragment_options(fragment)
        .into_iter()
        .filter(|o| !have.contains(o))
        .collect();
    out.extend(fragment.lines().map(str::trim).filter(|l| {
        l.starts_with("# CONFIG_") && fragment_symbol(l).is_some_and(|s| set.contains(s))
    }));
    out
}

/// Errors of the command-line options that describe a custom build (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// A `--patch` path is missing, unreadable, or a directory without `*.patch` files.
    #[error("--patch {path}: {detail}")]
    Patch {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The `--config` fragment cannot be read or has a line that is no Kconfig option.
    #[error("--config {path}: {detail}")]
    Config {
        /// The fragment file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// `--kernel-source` is not a kernel tree.
    #[error("--kernel-source {path}: {detail}")]
    Source {
        /// The directory given.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// `--name` is unusable.
    #[error("--name {name}: {detail}")]
    Name {
        /// The name given.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// Build options were given for a packaged kernel.
    #[error("--patch/--config/--kernel-source/--name build a custom kernel; {kernel} is a packaged Debian kernel (use --kernel custom-{series})")]
    NotCustom {
        /// The kernel named by --kernel.
        kernel: String,
        /// Its series.
        series: String,
    },
}

/// Where a custom kernel's source comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceTree {
    /// Debian's `linux-source-<series>` package of the kernel's suite.
    Debian,
    /// A local kernel tree, copied before anything is changed.
    Local(PathBuf),
}

/// What to build: a kernel table entry plus the command line's patches, fragment and tree.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The printable name (`custom-7.2+<patch set>` or `--name`); the cache directory's name.
    pub name: String,
    /// The kernel table entry it starts from (suite, series, its own patch sets).
    pub spec: &'static KernelSpec,
    /// The source.
    pub source: SourceTree,
    /// Patch files in application order: the table's patch sets, then `--patch`.
    pub patches: Vec<PathBuf>,
    /// The `--config` fragment, merged over the lab's.
    pub extra_config: String,
}

/// Checks a `--name` (or derived name): cache-directory safe, and not a kernel table name.
pub fn check_name(name: &str) -> Result<(), RecipeError> {
    let err = |detail: &str| {
        Err(RecipeError::Name {
            name: name.to_string(),
            detail: detail.to_string(),
        })
    };
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if !ok {
        return err("use letters, digits and . _ + - (at most 100, not starting with . or -)");
    }
    if KERNELS.iter().any(|k| k.name == name) {
        return err("is a kernel of the lab's table; pick another name");
    }
    Ok(())
}

/// `0001-mm-foo.patch` → `mm-foo`; a directory → its name.
fn patch_label(path: &Path) -> String {
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    let name = name.map_or_else(|| "patch".to_string(), |n| n.to_string_lossy().into_owned());
    let stripped = name
        .split_once('-')
        .filter(|(num, rest)| {
            !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty()
        })
        .map_or(name.as_str(), |(_, rest)| rest);
    stripped
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The printable name of a build: the table kernel (or `custom-<tree dir>`), then `+<label>`
/// per `--patch` and `+config-<fragment name>`.
pub fn derived_name(
    base: &str,
    tree: Option<&Path>,
    patch_args: &[PathBuf],
    config: Option<&Path>,
) -> String {
    let mut name = match tree.and_then(|t| t.file_name()) {
        Some(dir) => format!("custom-{}", patch_label(Path::new(dir))),
        None => base.to_string(),
    };
    for p in patch_args {
        name.push('+');
        name.push_str(&patch_label(p));
    }
    if let Some(c) = config {
        name.push_str("+config-");
        name.push_str(&patch_label(c));
    }
    name
}

/// The patch files of one `--patch` argument: the file, or a directory's `*.patch` in name order.
pub fn expand_patch_arg(path: &Path) -> Result<Vec<PathBuf>, RecipeError> {
    let err = |detail: String| RecipeError::Patch {
        path: path.to_path_buf(),
        detail,
    };
    let meta = fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = fs::read_dir(path)
        .map_err(|e| err(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "patch"))
        .collect();
    if files.is_empty() {
        return Err(err("a directory without *.patch files".into()));
    }
    files.sort();
    Ok(files)
}

/// The Kconfig symbol a fragment line sets (`CONFIG_X=..` or `# CONFIG_X is not set`).
fn fragment_symbol(line: &str) -> Option<&str> {
    let l = line.trim();
    if let Some(rest) = l.strip_prefix("# ") {
        return rest
            .strip_suffix(" is not set")
            .filter(|s| s.starts_with("CONFIG_"));
    }
    l.starts_with("CONFIG_")
        .then(|| l.split_once('=').map(|(s, _)| s))
        .flatten()
}

/// Checks a `--config` fragment: every line is blank, a comment, `CONFIG_X=value` or
/// `# CONFIG_X is not set`; returns the line number and text of the first bad line.
pub fn check_fragment(text: &str) -> Result<(), (usize, String)> {
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        let valid_sym = |s: &str| {
            s.len() > 7
                && s[7..]
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        };
        let ok = l.is_empty()
            || match fragment_symbol(l) {
                Some(s) => valid_sym(s),
                None => l.starts_with('#') && !l.contains("CONFIG_"),
            };
        if !ok {
            return Err((i + 1, line.to_string()));
        }
    }
    Ok(())
}

/// The lab's fragment with `extra` merged over it: lines of `base` whose symbol `extra` sets are
/// dropped, then `extra` follows. With no extra options `base` comes back unchanged.
pub fn merge_fragments(base: &str, extra: &str) -> String {
    if extra.trim().is_empty() {
        return base.to_string();
    }
    let overridden: std::collections::HashSet<&str> =
        extra.lines().filter_map(fragment_symbol).collect();
    let mut out: String = base
        .lines()
        .filter(|l| fragment_symbol(l).is_none_or(|s| !overridden.contains(s)))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str("# --config\n");
    out.push_str(extra);
    if !extra.ends_with('\n') {
        out.push('\n');
    }
    out
}

impl Recipe {
    /// A kernel table entry as it is.
    pub fn from_spec(spec: &'static KernelSpec) -> Result<Self, CustomKernelError> {
        Ok(Recipe {
            name: spec.name.to_string(),
            spec,
            source: SourceTree::Debian,
            patches: patch_files(spec)?,
            extra_config: String::new(),
        })
    }

    /// A table entry with `--patch`, `--config`, `--kernel-source` and `--name` applied.
    pub fn from_options(
        spec: &'static KernelSpec,
        patch_args: &[PathBuf],
        config: Option<&Path>,
        tree: Option<&Path>,
        name: Option<&str>,
    ) -> Result<Self, LabRecipeError> {
        if !matches!(spec.source, KernelSource::Custom) {
            return Err(RecipeError::NotCustom {
                kernel: spec.name.to_string(),
                series: spec.series.to_string(),
            }
            .into());
        }
        let mut recipe = Self::from_spec(spec)?;
        for p in patch_args {
            recipe.patches.extend(expand_patch_arg(p)?);
        }
        if let Some(c) = config {
            let err = |detail: String| RecipeError::Config {
                path: c.to_path_buf(),
                detail,
            };
            let text = fs::read_to_string(c).map_err(|e| err(e.to_string()))?;
            check_fragment(&text).map_err(|(n, l)| {
                err(format!(
                    "line {n} is not CONFIG_X=value or '# CONFIG_X is not set': {l}"
                ))
            })?;
            recipe.extra_config = text;
        }
        if let Some(t) = tree {
            let err = |detail: &str| RecipeError::Source {
                path: t.to_path_buf(),
                detail: detail.to_string(),
            };
            if !t.join("Makefile").is_file() || !t.join("Kconfig").is_file() {
                return Err(err("not a kernel source tree (no Makefile and Kconfig)").into());
            }
            let abs = std::path::absolute(t).map_err(|e| err(&e.to_string()))?;
            recipe.source = SourceTree::Local(abs);
        }
        recipe.name = match name {
            Some(n) => n.to_string(),
            None => derived_name(spec.name, tree, patch_args, config),
        };
        if name.is_some() || recipe.name != spec.name {
            check_name(&recipe.name)?;
        }
        Ok(recipe)
    }

    /// The fragment the build merges over `tinyconfig`.
    pub fn fragment(&self, arch: &ArchSpec) -> String {
        merge_fragments(arch.custom_config, &self.extra_config)
    }

    /// Hash of everything but the source: recipe version, architecture, fragment, patch
    /// contents, `--config`. A table kernel hashes exactly as before `--config` existed.
    pub fn hash(&self, arch: &ArchSpec) -> Result<String, CustomKernelError> {
        let mut h = CacheHasher::default();
        h.field(RECIPE_VERSION.as_bytes());
        h.field(arch.name.as_bytes());
        h.field(arch.custom_config.as_bytes());
        for p in &self.patches {
            let text = fs::read(p).map_err(|e| CustomKernelError::Io {
                kernel: self.name.clone(),
                path: p.clone(),
                source: e,
            })?;
            h.field(&text);
        }
        if !self.extra_config.is_empty() {
            h.field(b"--config");
            h.field(self.extra_config.as_bytes());
        }
        Ok(h.hex())
    }
}

/// Errors of turning build options into a [`Recipe`].
#[derive(Debug, thiserror::Error)]
pub enum LabRecipeError {
    /// A bad option (exit status 2).
    #[error(transparent)]
    Option(#[from] RecipeError),
    /// The table's own patch sets are broken.
    #[error(transparent)]
    Table(#[from] CustomKernelError),
}

/// The identity of a local tree: `git-<commit>` for a clean git checkout, `git-<commit>-dirty-
/// <hash of the diff and untracked files>` for a changed one, `tree-<hash>` of every file's path,
/// size and modification time otherwise.
pub fn tree_id(dir: &Path) -> Result<String, std::io::Error> {
    let git = |args: &[&str]| -> Option<Vec<u8>> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status.success().then_some(out.stdout)
    };
    let top = git(&["rev-parse", "--show-toplevel"])
        .map(|t| PathBuf::from(String::from_utf8_lossy(&t).trim()));
    let is_repo_root = top
        .zip(fs::canonicalize(dir).ok())
        .is_some_and(|(t, d)| fs::canonicalize(t).is_ok_and(|t| t == d));
    if let (true, Some(head)) = (is_repo_root, git(&["rev-parse", "HEAD"])) {
        let head = String::from_utf8_lossy(&head).trim().to_string();
        let short = &head[..head.len().min(12)];
        let status = git(&["status", "--porcelain", "--untracked-files=all"]).unwrap_or_default();
        if status.is_empty() {
            return Ok(format!("git-{short}"));
        }
        let mut h = CacheHasher::default();
        h.field(&git(&["diff", "HEAD", "--binary"]).unwrap_or_default());
        for line in String::from_utf8_lossy(&status).lines() {
            if let Some(path) = line.strip_prefix("?? ") {
                h.field(path.as_bytes());
                h.field(&fs::read(dir.join(path)).unwrap_or_default());
            }
        }
        return Ok(format!("git-{short}-dirty-{}", &h.hex()[..12]));
    }
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                let m = e.metadata()?;
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .unwrap_or(&e.path())
                    .to_path_buf();
                files.push((rel, m.len(), mtime));
            }
        }
    }
    files.sort();
    let mut h = CacheHasher::default();
    for (p, len, mtime) in &files {
        h.field(p.as_os_str().as_encoded_bytes());
        h.field(&len.to_le_bytes());
        h.field(&mtime.to_le_bytes());
    }
    Ok(format!("tree-{}", &h.hex()[..12]))
}

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

/// What `recipe` records about a named build (`kernels/<arch>/<name>/recipe`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecipeRecord {
    /// The build's name.
    pub name: String,
    /// The kernel table entry it started from.
    pub base: String,
    /// The suite (busybox for the initramfs comes from it).
    pub suite: String,
    /// The cache key (`<source version or tree id>-<hash>`).
    pub key: String,
    /// Debian's source package version, or the local tree and its identity.
    pub source: String,
    /// The patch files applied, in order.
    pub patches: Vec<PathBuf>,
    /// The `--config` fragment, if any.
    pub extra_config: String,
}

/// A build recorded under `name` by an earlier `--patch`/`--config`/`--kernel-source` run.
pub fn named_kernel(
    cache: &Path,
    arch: &ArchSpec,
    name: &str,
) -> Option<(CustomKernel, RecipeRecord)> {
    let base = cache.join("kernels").join(arch.name).join(name);
    let text = fs::read_to_string(base.join("recipe")).ok()?;
    let record: RecipeRecord = serde_json::from_str(&text).ok()?;
    (record.name == name)
        .then(|| cached(name, &base.join(&record.key)))
        .flatten()
        .map(|k| (k, record))
}

/// Names of the builds recorded in the cache (kernel directories holding a `recipe`).
pub fn named_builds(cache: &Path, arch: &ArchSpec) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(cache.join("kernels").join(arch.name))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("recipe").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !KERNELS.iter().any(|k| k.name == n))
        .collect();
    names.sort();
    names
}

/// Fetches the cached custom kernel or builds it (`rebuild` forces a build).
pub fn custom_kernel(
    recipe: &Recipe,
    arch: &ArchSpec,
    cache: &Path,
    refresh: bool,
    rebuild: bool,
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
                    super::kernel::resolved_since(&base.join("current"), a.lists_updated_at());
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
    if !rebuild {
        if let Some(k) = cached(kernel, &dir) {
            write_atomic(&base.join("current"), key.as_bytes())?;
            write_atomic(&base.join("recipe"), record_json.as_bytes())?;
            return Ok(k);
        }
    }
    // `--kernel NAME` must not find an older build while this one is missing or failed.
    let _ = fs::remove_file(base.join("recipe"));
    let deb = match &apt {
        Some(a) => Some(a.download(&package).map_err(apt_err)?),
        None => None,
    };
    let started = Instant::now();
    let build = base.join(format!("{key}.build"));
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
    let make = |args: &[&str]| {
        let mut c = Command::new("make");
        c.current_dir(&build)
            .arg(format!("ARCH={}", arch.kbuild_arch))
            .args(args);
        c
    };
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
    write_atomic(&base.join("recipe"), record_json.as_bytes())?;
    // The tree is ~1.5 GB and nothing reuses it: the key changes with source or config.
    if std::env::var_os("AGELAB_KEEP_BUILD").is_none() {
        let _ = fs::remove_dir_all(&build);
    }
    let mut k =
        cached(kernel, &dir).ok_or_else(|| b.io(&dir, std::io::ErrorKind::NotFound.into()))?;
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

    fn custom_spec() -> &'static KernelSpec {
        KERNELS.iter().find(|k| k.name == "custom-7.2").unwrap()
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agelab-recipe-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_come_from_patch_sets_trees_and_fragments() {
        let dir = temp("names");
        let set = dir.join("mglru-series");
        fs::create_dir_all(&set).unwrap();
        fs::write(set.join("0001-mm-a.patch"), GOOD).unwrap();
        let single = dir.join("0002-kvm-fix.patch");
        fs::write(&single, GOOD).unwrap();
        assert_eq!(
            derived_name("custom-7.2", None, &[set.clone(), single.clone()], None),
            "custom-7.2+mglru-series+kvm-fix"
        );
        assert_eq!(
            derived_name(
                "custom-7.2",
                Some(Path::new("/src/linux-next")),
                &[],
                Some(Path::new("debug.config"))
            ),
            "custom-linux-next+config-debug"
        );
        assert!(check_name("custom-7.2+mglru-series+kvm-fix").is_ok());
        for bad in ["custom-7.2", "debian-7.2", "a/b", "", ".hidden", "x y"] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("--name "), "{e}");
        }
    }

    #[test]
    fn options_become_a_recipe_or_an_error_naming_the_option() {
        let dir = temp("options");
        let set = dir.join("series");
        fs::create_dir_all(&set).unwrap();
        fs::write(set.join("0002-b.patch"), GOOD).unwrap();
        fs::write(set.join("0001-a.patch"), GOOD).unwrap();
        fs::write(set.join("README"), "not a patch").unwrap();
        let frag = dir.join("extra.config");
        fs::write(&frag, "# more\nCONFIG_KASAN=y\n# CONFIG_ZRAM is not set\n").unwrap();
        let r = Recipe::from_options(
            custom_spec(),
            std::slice::from_ref(&set),
            Some(&frag),
            None,
            None,
        )
        .unwrap();
        assert_eq!(r.name, "custom-7.2+series+config-extra");
        assert_eq!(
            r.patches,
            [set.join("0001-a.patch"), set.join("0002-b.patch")]
        );
        assert_eq!(r.source, SourceTree::Debian);

        let named = Recipe::from_options(
            custom_spec(),
            std::slice::from_ref(&set),
            None,
            None,
            Some("mine"),
        )
        .unwrap();
        assert_eq!(named.name, "mine");

        let err = |r: Result<Recipe, LabRecipeError>| r.unwrap_err().to_string();
        let empty = dir.join("empty");
        fs::create_dir_all(&empty).unwrap();
        assert!(err(Recipe::from_options(
            custom_spec(),
            &[empty],
            None,
            None,
            None
        ))
        .starts_with("--patch "));
        assert!(err(Recipe::from_options(
            custom_spec(),
            &[dir.join("nope.patch")],
            None,
            None,
            None
        ))
        .starts_with("--patch "));
        let bad = dir.join("bad.config");
        fs::write(&bad, "CONFIG_A=y\nKASAN=y\n").unwrap();
        let e = err(Recipe::from_options(
            custom_spec(),
            &[],
            Some(&bad),
            None,
            None,
        ));
        assert!(e.starts_with("--config ") && e.contains("line 2"), "{e}");
        let e = err(Recipe::from_options(
            custom_spec(),
            &[],
            None,
            Some(&dir),
            None,
        ));
        assert!(e.starts_with("--kernel-source "), "{e}");
        let debian = KERNELS.iter().find(|k| k.name == "debian-7.2").unwrap();
        let e = err(Recipe::from_options(debian, &[set], None, None, None));
        assert!(e.contains("custom-7.2"), "{e}");
    }

    #[test]
    fn the_key_covers_patch_contents_and_config_but_not_names() {
        let arch = super::super::arch::find_arch("x86_64").unwrap();
        let table = Recipe::from_spec(custom_spec()).unwrap();
        // The table kernel's hash is what it was before --patch/--config existed: the same
        // fields in the same order.
        let mut h = CacheHasher::default();
        h.field(RECIPE_VERSION.as_bytes());
        h.field(arch.name.as_bytes());
        h.field(arch.custom_config.as_bytes());
        assert_eq!(table.hash(arch).unwrap(), h.hex());

        let dir = temp("key");
        let p = dir.join("x.patch");
        fs::write(&p, GOOD).unwrap();
        let with = |name: Option<&str>| {
            Recipe::from_options(custom_spec(), std::slice::from_ref(&p), None, None, name)
                .unwrap()
                .hash(arch)
                .unwrap()
        };
        let first = with(None);
        assert_ne!(first, table.hash(arch).unwrap());
        assert_eq!(
            with(Some("other-name")),
            first,
            "the name is not part of the key"
        );
        fs::write(&p, GOOD.replace("young(x)", "young2(x)")).unwrap();
        assert_ne!(with(None), first, "editing the patch changes the key");

        let mut cfg = table.clone();
        cfg.extra_config = "CONFIG_KASAN=y\n".into();
        assert_ne!(cfg.hash(arch).unwrap(), table.hash(arch).unwrap());
    }

    #[test]
    fn fragments_merge_with_the_extra_options_winning() {
        let base = "# lab\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n";
        assert_eq!(merge_fragments(base, ""), base);
        let merged = merge_fragments(base, "# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=8");
        assert_eq!(
            merged,
            "# lab\nCONFIG_A=y\n# --config\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=8\n"
        );
        // Options lost after olddefconfig are reported by name, both ways.
        let config = "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\n";
        assert_eq!(
            missing_options(&merged, config),
            ["CONFIG_D=8", "# CONFIG_B is not set"]
        );
        assert!(check_fragment("# c\n\nCONFIG_X_1=m\n# CONFIG_Y is not set\n").is_ok());
        assert_eq!(check_fragment("CONFIG_a=y").unwrap_err().0, 1);
        assert_eq!(check_fragment("\n# CONFIG_Y is off").unwrap_err().0, 2);
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

    #[test]
    fn tree_ids_follow_git_commits_and_changes() {
        let src = tree("id-plain");
        let id = tree_id(&src).unwrap();
        assert!(id.starts_with("tree-"), "{id}");
        assert_eq!(tree_id(&src).unwrap(), id);
        fs::write(src.join("mm/new.c"), "x").unwrap();
        assert_ne!(tree_id(&src).unwrap(), id);

        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(&src)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if !git(&["init", "-q"]) {
            return; // no git on this host
        }
        assert!(git(&["add", "-A"]) && git(&["commit", "-qm", "x"]));
        let clean = tree_id(&src).unwrap();
        assert!(
            clean.starts_with("git-") && !clean.contains("dirty"),
            "{clean}"
        );
        fs::write(src.join("mm/vmscan.c"), "changed\n").unwrap();
        let dirty = tree_id(&src).unwrap();
        assert!(dirty.starts_with(&format!("{clean}-dirty-")), "{dirty}");
    }

    #[test]
    fn named_builds_are_found_by_their_recorded_name() {
        let arch = super::super::arch::find_arch("x86_64").unwrap();
        let cache = temp("named-cache");
        assert!(named_kernel(&cache, arch, "mine").is_none());
        let base = cache.join("kernels").join(arch.name).join("mine");
        let dir = base.join("7.2.13-1-abc");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vmlinuz"), "k").unwrap();
        fs::write(dir.join("release"), "7.2.13").unwrap();
        let record = RecipeRecord {
            name: "mine".into(),
            base: "custom-7.2".into(),
            suite: "sid".into(),
            key: "7.2.13-1-abc".into(),
            source: "linux-source-7.2 7.2.13-1".into(),
            patches: vec![],
            extra_config: String::new(),
        };
        fs::write(base.join("recipe"), serde_json::to_string(&record).unwrap()).unwrap();
        let (k, r) = named_kernel(&cache, arch, "mine").unwrap();
        assert_eq!(named_builds(&cache, arch), ["mine"]);
        assert_eq!(k.kernel.name, "mine");
        assert_eq!(k.kernel.release, "7.2.13");
        assert_eq!(r, record);
        // A failed or missing build is never handed out.
        fs::remove_file(dir.join("vmlinuz")).unwrap();
        assert!(named_kernel(&cache, arch, "mine").is_none());
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
