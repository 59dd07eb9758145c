//! Kernel modules of a Debian kernel package. Debian ships no `modules.dep` (depmod runs at
//! install time), so dependencies come from each module's `.modinfo` `depends=` string; and
//! busybox `insmod` cannot read `.ko.xz`/`.ko.zst`, so modules are decompressed on the host.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors of module lookup.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The modules tree could not be read.
    #[error("reading kernel modules under {path}: {source}")]
    Read {
        /// The directory or file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Decompressing a module failed.
    #[error("decompressing {path}: {detail}")]
    Decompress {
        /// The module file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// The canonical name of a module file: basename without `.ko*`, `-` as `_`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// The `depends=` list of a module's `.modinfo` section (NUL-separated `key=value` strings).
pub fn modinfo_depends(module: &[u8]) -> Vec<String> {
    module
        .split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(module_name)
                .collect()
        })
        .unwrap_or_default()
}

/// Orders `name` after its dependencies; `deps(name)` gives a module's direct dependencies,
/// or `None` when the module is not loadable (built in, so nothing to load).
pub fn load_order<E>(
    name: &str,
    deps: &mut impl FnMut(&str) -> Result<Option<Vec<String>>, E>,
) -> Result<Vec<String>, E> {
    fn visit<E>(
        name: &str,
        deps: &mut impl FnMut(&str) -> Result<Option<Vec<String>>, E>,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), E> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        if let Some(list) = deps(name)? {
            for dep in list {
                visit(&dep, deps, seen, order)?;
            }
            order.push(name.to_string());
        }
        Ok(())
    }
    let mut order = Vec::new();
    visit(&module_name(name), deps, &mut HashSet::new(), &mut order)?;
    Ok(order)
}

/// The loadable modules of one kernel, by name.
#[derive(Debug)]
pub struct ModuleTree {
    files: HashMap<String, PathBuf>,
    contents: HashMap<String, Vec<u8>>,
}

impl ModuleTree {
    /// Indexes every `*.ko*` file under `root` (a `lib/modules/<release>` directory).
    pub fn scan(root: &Path) -> Result<Self, ModuleError> {
        let mut files = HashMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let rd = fs::read_dir(&dir).map_err(|source| ModuleError::Read {
                path: dir.clone(),
                source,
            })?;
            for entry in rd.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                } else if let Some(n) = path.file_name().and_then(|n| n.to_str()) {
                    if n.contains(".ko") {
                        files.insert(module_name(n), path);
                    }
                }
            }
        }
        Ok(Self {
            files,
            contents: HashMap::new(),
        })
    }

    /// The decompressed modules to insmod, in order, so that `name` loads. Empty when the
    /// kernel has no such module file (it is built in, or absent: the guest checks).
    pub fn load_order(&mut self, name: &str) -> Result<Vec<String>, ModuleError> {
        load_order(name, &mut |n: &str| {
            let Some(path) = self.files.get(n) else {
                return Ok(None);
            };
            if !self.contents.contains_key(n) {
                let bytes = read_module(path)?;
                self.contents.insert(n.to_string(), bytes);
            }
            Ok(Some(modinfo_depends(&self.contents[n])))
        })
    }

    /// The decompressed image of a module returned by [`ModuleTree::load_order`].
    pub fn contents(&self, name: &str) -> Option<&[u8]> {
        self.contents.get(name).map(Vec::as_slice)
    }
}

/// The contents of module file `path`, decompressed when it ends in `.xz`, `.zst` or `.gz`.
pub fn read_module(path: &Path) -> Result<Vec<u8>, ModuleError> {
    let tool: Option<&[&str]> = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => Some(&["xz", "-dc"]),
        Some("zst") => Some(&["zstd", "-dcq"]),
        Some("gz") => Some(&["gzip", "-dc"]),
        _ => None,
    };
    let err = |detail: String| ModuleError::Decompress {
        path: path.to_path_buf(),
        detail,
    };
    match tool {
        None => fs::read(path).map_err(|e| err(e.to_string())),
        Some(argv) => {
            let out = Command::new(argv[0])
                .args(&argv[1..])
                .arg(path)
                .output()
                .map_err(|e| err(format!("running {}: {e}", argv[0])))?;
            if !out.status.success() {
                return Err(err(String::from_utf8_lossy(&out.stderr).into_owned()));
            }
            Ok(out.stdout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(module_name("kernel/arch/x86/kvm/kvm-amd.ko.xz"), "kvm_amd");
        assert_eq!(module_name("kvm.ko"), "kvm");
        assert_eq!(module_name("kvm-intel"), "kvm_intel");
    }

    #[test]
    fn depends_from_modinfo() {
        let blob =
            b"\x7fELF junk\0license=GPL\0depends=kvm,ccp,irqbypass\0retpoline=Y\0name=kvm_amd\0";
        assert_eq!(modinfo_depends(blob), ["kvm", "ccp", "irqbypass"]);
        assert!(modinfo_depends(b"\0depends=\0name=irqbypass\0").is_empty());
        assert!(modinfo_depends(b"no modinfo").is_empty());
    }

    #[test]
    fn dependency_order() {
        let table: HashMap<&str, Vec<String>> = [
            ("kvm_amd", vec!["kvm".into(), "ccp".into()]),
            ("kvm", vec!["irqbypass".into()]),
            ("irqbypass", vec![]),
            ("ccp", vec![]),
            ("zram", vec!["zsmalloc".into()]),
        ]
        .into_iter()
        .collect();
        let mut deps = |n: &str| Ok::<_, ()>(table.get(n).cloned());
        assert_eq!(
            load_order("kvm-amd", &mut deps).unwrap(),
            ["irqbypass", "kvm", "ccp", "kvm_amd"]
        );
        // zsmalloc is built in: not in the table, nothing to load for it.
        assert_eq!(load_order("zram", &mut deps).unwrap(), ["zram"]);
        assert!(load_order("nope", &mut deps).unwrap().is_empty());
    }
}
