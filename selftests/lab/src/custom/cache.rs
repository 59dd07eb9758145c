//! The cache of custom builds: `kernels/<arch>/<name>/<key>/` with the image, and the `recipe`
//! record by which a named build is found again.

use super::CustomKernel;
use crate::arch::ArchSpec;
use crate::kernel::{LabKernel, KERNELS};
use std::fs;
use std::path::{Path, PathBuf};

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

/// The build in `dir`, if complete (image and release present).
pub(super) fn cached(name: &str, dir: &Path) -> Option<CustomKernel> {
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
        build_mode: fs::read_to_string(dir.join("build-mode"))
            .ok()
            .map(|s| s.trim().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custom::test_util::temp;

    #[test]
    fn named_builds_are_found_by_their_recorded_name() {
        let arch = crate::arch::find_arch("x86_64").unwrap();
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
}
