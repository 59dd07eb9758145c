//! What to build: a kernel table entry plus `--patch`, `--config`, `--kernel-source` and
//! `--name`, its name, its cache hash, and a local tree's identity.

use super::fragment::{check_fragment, merge_fragments};
use super::patches::patch_files;
use super::CustomKernelError;
use crate::arch::ArchSpec;
use crate::hash::CacheHasher;
use crate::kernel::{KernelSource, KernelSpec, KERNELS};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Bump when the build recipe changes in a way the fragment hash does not capture.
const RECIPE_VERSION: &str = "tinyconfig+fragment v1";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custom::test_util::{custom_spec, temp, tree, GOOD};

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
        let arch = crate::arch::find_arch("x86_64").unwrap();
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
}
