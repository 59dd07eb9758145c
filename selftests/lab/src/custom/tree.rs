//! The kept tree: the base custom kernel's built source tree, kept beside its cache entry
//! (`kernels/<arch>/<base>/<key>.tree`) so that a patched build applies its patches there,
//! runs `make` (the changed objects and a link) and reverts them, instead of a full build.
//!
//! A tree is usable only when its marker (`agelab-kept-tree`, holding the base's cache key) is
//! present: the marker is written after the base build succeeded and removed before anything
//! that could leave the tree in another state (a rebuild, a revert that failed). One build at a
//! time works in the tree (its lock file, `<key>.tree.lock`).

use super::patches::{patch_command, patch_report};
use super::recipe::{Recipe, SourceTree};
use super::CustomKernelError;
use crate::arch::ArchSpec;
use crate::cache::{CacheError, CacheLock};
use crate::kernel::{KernelSource, KERNELS};
use std::fs;
use std::path::{Path, PathBuf};

/// The marker file of a usable kept tree; it holds the base's cache key.
const MARKER: &str = "agelab-kept-tree";

/// A base kernel's built tree.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptTree {
    /// The table kernel the tree was built for (`custom-7.2`).
    pub base: String,
    /// Its cache key (`<source version>-<hash>`).
    pub key: String,
    /// The tree.
    pub dir: PathBuf,
}

impl KeptTree {
    /// Where the tree of base kernel `base` with cache key `key` lives.
    pub fn at(cache: &Path, arch: &ArchSpec, base: &str, key: &str) -> Self {
        KeptTree {
            base: base.to_string(),
            key: key.to_string(),
            dir: cache
                .join("kernels")
                .join(arch.name)
                .join(base)
                .join(format!("{key}.tree")),
        }
    }

    /// The lock that keeps two builds out of the tree at once.
    pub fn lock(&self) -> Result<CacheLock, CacheError> {
        CacheLock::acquire(&self.dir.with_extension("tree.lock"))
    }

    /// Whether the tree holds a complete base build (its marker names this key).
    pub fn is_ready(&self) -> bool {
        fs::read_to_string(self.dir.join(MARKER)).is_ok_and(|k| k.trim() == self.key)
    }

    /// Marks the tree complete (after the base build succeeded).
    pub fn mark_ready(&self) -> std::io::Result<()> {
        fs::write(self.dir.join(MARKER), &self.key)
    }

    /// Marks the tree unusable (before a rebuild, or when a revert failed).
    pub fn mark_unusable(&self) {
        let _ = fs::remove_file(self.dir.join(MARKER));
    }
}

/// The kept tree of table kernel `base`'s current build (`kernels/<arch>/<base>/current`), if
/// it is ready.
pub fn current_tree(cache: &Path, arch: &ArchSpec, base: &str) -> Option<KeptTree> {
    let dir = cache.join("kernels").join(arch.name).join(base);
    let key = fs::read_to_string(dir.join("current")).ok()?;
    let tree = KeptTree::at(cache, arch, base, key.trim());
    tree.is_ready().then_some(tree)
}

/// The table kernel a recipe's patches apply on top of: `custom-<series>` without patch sets.
pub fn base_spec(recipe: &Recipe) -> Option<&'static crate::kernel::KernelSpec> {
    KERNELS.iter().find(|k| {
        matches!(k.source, KernelSource::Custom)
            && k.series == recipe.spec.series
            && k.suite == recipe.spec.suite
            && k.patches.is_empty()
    })
}

/// Whether `recipe` is the plain base build whose tree later builds can reuse (Debian source,
/// no patches, no `--config`).
pub fn is_plain_base(recipe: &Recipe) -> bool {
    recipe.source == SourceTree::Debian
        && recipe.patches.is_empty()
        && recipe.extra_config.is_empty()
        && base_spec(recipe).is_some_and(|b| b.name == recipe.spec.name)
}

/// The kept tree `recipe` can be built in: it has patches and nothing else that changes the
/// configuration, and the base's tree for the same source `version` is ready.
pub fn usable_tree(
    recipe: &Recipe,
    arch: &ArchSpec,
    cache: &Path,
    version: &str,
) -> Result<Option<KeptTree>, CustomKernelError> {
    if recipe.source != SourceTree::Debian
        || recipe.patches.is_empty()
        || !recipe.extra_config.is_empty()
    {
        return Ok(None);
    }
    let Some(spec) = base_spec(recipe) else {
        return Ok(None);
    };
    let base_hash = Recipe::from_spec(spec)?.hash(arch)?;
    let tree = KeptTree::at(cache, arch, spec.name, &format!("{version}-{base_hash}"));
    Ok(tree.is_ready().then_some(tree))
}

/// Patches applied to a kept tree, reverted in reverse order by [`AppliedPatches::revert`].
#[derive(Debug)]
pub struct AppliedPatches<'a> {
    tree: &'a KeptTree,
    applied: Vec<PathBuf>,
}

impl<'a> AppliedPatches<'a> {
    /// Applies `patches` in order; each is tried with `--dry-run` first, so a patch that does not
    /// apply leaves no hunk behind, and the ones applied before it are reverted.
    pub fn apply(
        tree: &'a KeptTree,
        kernel: &str,
        version: &str,
        patches: &[PathBuf],
    ) -> Result<Self, CustomKernelError> {
        let mut this = AppliedPatches {
            tree,
            applied: Vec::new(),
        };
        for p in patches {
            let io = |source| CustomKernelError::Io {
                kernel: kernel.to_string(),
                path: p.clone(),
                source,
            };
            let dry = patch_command(&tree.dir, p, &["--dry-run"])
                .output()
                .map_err(io)?;
            if !dry.status.success() {
                let reverted = this.revert();
                let mut output = patch_report(&dry);
                if let Err(e) = reverted {
                    output.push_str(&format!("\n{e}"));
                }
                return Err(CustomKernelError::PatchFailed {
                    kernel: kernel.to_string(),
                    patch: p.clone(),
                    source_version: version.to_string(),
                    output,
                    rejects: String::new(),
                });
            }
            let out = patch_command(&tree.dir, p, &[]).output().map_err(io)?;
            if !out.status.success() {
                // Passed the dry run and failed for real: the tree's state is unknown.
                tree.mark_unusable();
                return Err(CustomKernelError::KeptTree {
                    tree: tree.dir.clone(),
                    detail: format!(
                        "applying {} failed after its dry run passed:\n{}",
                        p.display(),
                        patch_report(&out)
                    ),
                });
            }
            this.applied.push(p.clone());
        }
        Ok(this)
    }

    /// Reverts the applied patches (last first). A revert that fails marks the tree unusable:
    /// later builds then fall back to a full build instead of building on a changed base.
    pub fn revert(mut self) -> Result<(), CustomKernelError> {
        while let Some(p) = self.applied.pop() {
            let out = patch_command(&self.tree.dir, &p, &["-R"]).output();
            let failed = match &out {
                Ok(o) if o.status.success() => None,
                Ok(o) => Some(patch_report(o)),
                Err(e) => Some(e.to_string()),
            };
            if let Some(detail) = failed {
                self.tree.mark_unusable();
                return Err(CustomKernelError::KeptTree {
                    tree: self.tree.dir.clone(),
                    detail: format!(
                        "reverting {} failed; the tree is no longer used:\n{detail}",
                        p.display()
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custom::test_util::{custom_spec, temp, tree, GOOD};

    fn kept(name: &str) -> KeptTree {
        let dir = tree(name);
        let t = KeptTree {
            base: "custom-7.2".into(),
            key: "7.2.13-1-abc".into(),
            dir,
        };
        t.mark_ready().unwrap();
        t
    }

    #[test]
    fn patches_apply_to_a_kept_tree_and_revert_to_the_base() {
        let t = kept("kept-apply");
        let work = temp("kept-apply-patches");
        let good = work.join("0001-good.patch");
        fs::write(&good, GOOD).unwrap();
        let applied =
            AppliedPatches::apply(&t, "k", "7.2.13-1", std::slice::from_ref(&good)).unwrap();
        assert_eq!(
            fs::read_to_string(t.dir.join("mm/vmscan.c")).unwrap(),
            "a\nyoung(x);\nc\n"
        );
        applied.revert().unwrap();
        assert_eq!(
            fs::read_to_string(t.dir.join("mm/vmscan.c")).unwrap(),
            "a\nyoung_notify(x);\nc\n"
        );
        assert!(t.is_ready());
    }

    #[test]
    fn a_patch_that_does_not_apply_leaves_the_kept_tree_as_the_base() {
        let t = kept("kept-bad");
        let work = temp("kept-bad-patches");
        let good = work.join("0001-good.patch");
        fs::write(&good, GOOD).unwrap();
        // The second patch removes a line that is not there.
        let bad = work.join("0002-bad.patch");
        fs::write(
            &bad,
            GOOD.replace("-young_notify(x);\n+young(x);", "-missing(x);\n+old(x);"),
        )
        .unwrap();
        let e = AppliedPatches::apply(&t, "k", "7.2.13-1", &[good, bad])
            .unwrap_err()
            .to_string();
        assert!(e.contains("0002-bad.patch does not apply"), "{e}");
        assert!(e.contains("FAILED"), "{e}");
        assert_eq!(
            fs::read_to_string(t.dir.join("mm/vmscan.c")).unwrap(),
            "a\nyoung_notify(x);\nc\n",
            "the first patch is reverted"
        );
        assert!(!t.dir.join("mm/vmscan.c.rej").exists());
        assert!(t.is_ready());
    }

    #[test]
    fn a_failed_revert_retires_the_tree() {
        let t = kept("kept-revert");
        let work = temp("kept-revert-patches");
        let good = work.join("0001-good.patch");
        fs::write(&good, GOOD).unwrap();
        let applied =
            AppliedPatches::apply(&t, "k", "7.2.13-1", std::slice::from_ref(&good)).unwrap();
        // Something else edits the patched file: the reverse patch no longer applies.
        fs::write(t.dir.join("mm/vmscan.c"), "changed\n").unwrap();
        let e = applied.revert().unwrap_err().to_string();
        assert!(e.contains("no longer used"), "{e}");
        assert!(!t.is_ready());
    }

    #[test]
    fn only_patch_only_recipes_use_the_base_tree() {
        let arch = crate::arch::find_arch("x86_64").unwrap();
        let cache = temp("kept-cache");
        let base = Recipe::from_spec(custom_spec()).unwrap();
        assert!(is_plain_base(&base));
        let work = temp("kept-recipe");
        let p = work.join("0001-x.patch");
        fs::write(&p, GOOD).unwrap();
        let mutant =
            Recipe::from_options(custom_spec(), std::slice::from_ref(&p), None, None, None)
                .unwrap();
        assert!(!is_plain_base(&mutant));
        // No tree yet: a full build.
        assert_eq!(
            usable_tree(&mutant, arch, &cache, "7.2.13-1").unwrap(),
            None
        );
        let key = format!("7.2.13-1-{}", base.hash(arch).unwrap());
        let t = KeptTree::at(&cache, arch, "custom-7.2", &key);
        fs::create_dir_all(&t.dir).unwrap();
        assert_eq!(
            usable_tree(&mutant, arch, &cache, "7.2.13-1").unwrap(),
            None
        );
        t.mark_ready().unwrap();
        assert_eq!(
            usable_tree(&mutant, arch, &cache, "7.2.13-1").unwrap(),
            Some(t.clone())
        );
        // Another source version, a --config, or no patches: not this tree.
        assert_eq!(
            usable_tree(&mutant, arch, &cache, "7.2.14-1").unwrap(),
            None
        );
        let mut cfg = mutant.clone();
        cfg.extra_config = "CONFIG_KASAN=y\n".into();
        assert_eq!(usable_tree(&cfg, arch, &cache, "7.2.13-1").unwrap(), None);
        assert_eq!(usable_tree(&base, arch, &cache, "7.2.13-1").unwrap(), None);
    }
}
