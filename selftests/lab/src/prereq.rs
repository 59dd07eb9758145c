//! The lab's host prerequisites, checked once per `agelab lab` invocation before anything runs.
//!
//! A missing tool is reported in one error that names every missing tool, the Debian package that
//! provides it and the command that installs it, instead of one failure per test of a matrix.

use super::arch::ArchSpec;
use super::kernel::{KernelSource, KERNELS};
use std::path::Path;

/// One host tool the lab runs, and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// The program, looked up on `PATH`.
    pub program: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
}

/// Tools every lab run needs besides the architecture's QEMU: apt and dpkg fetch the kernels, xz
/// and zstd decompress their modules.
const ALWAYS: &[Tool] = &[
    Tool {
        program: "apt-get",
        package: "apt",
    },
    Tool {
        program: "dpkg-deb",
        package: "dpkg",
    },
    Tool {
        program: "xz",
        package: "xz-utils",
    },
    Tool {
        program: "zstd",
        package: "zstd",
    },
];

/// Tools a custom kernel build needs.
const KERNEL_BUILD: &[Tool] = &[
    Tool {
        program: "make",
        package: "make",
    },
    Tool {
        program: "gcc",
        package: "build-essential",
    },
    Tool {
        program: "bc",
        package: "bc",
    },
    Tool {
        program: "bison",
        package: "bison",
    },
    Tool {
        program: "flex",
        package: "flex",
    },
    Tool {
        program: "pahole",
        package: "dwarves",
    },
    Tool {
        program: "patch",
        package: "patch",
    },
];

/// Every prerequisite that is missing, in one message.
#[derive(Debug, thiserror::Error)]
#[error("missing prerequisites: {}; install them with `selftests/setup/deps.sh` (or `make setup`), or as root: apt-get install {}", list(.missing), packages(.missing))]
pub struct MissingPrerequisites {
    /// The missing tools.
    pub missing: Vec<Tool>,
}

fn list(tools: &[Tool]) -> String {
    tools
        .iter()
        .map(|t| format!("{} (Debian: {})", t.program, t.package))
        .collect::<Vec<_>>()
        .join(", ")
}

fn packages(tools: &[Tool]) -> String {
    let mut p: Vec<&str> = tools.iter().map(|t| t.package).collect();
    p.dedup();
    p.join(" ")
}

/// The QEMU system emulator of `arch` as a tool.
fn qemu(arch: &ArchSpec) -> Tool {
    Tool {
        program: arch.qemu,
        package: if arch.qemu.ends_with("aarch64") {
            "qemu-system-arm"
        } else {
            "qemu-system-x86"
        },
    }
}

/// The tools a run on `kernels` (names from `--kernel`) needs.
pub fn needed(arch: &ArchSpec, kernels: &[String]) -> Vec<Tool> {
    let mut tools = vec![qemu(arch)];
    tools.extend_from_slice(ALWAYS);
    let builds = kernels.iter().any(|name| {
        KERNELS
            .iter()
            .any(|k| k.name == name && matches!(k.source, KernelSource::Custom))
    });
    if builds {
        tools.extend_from_slice(KERNEL_BUILD);
    }
    tools
}

/// True when `program` is an executable file in one of `path`'s directories.
fn on_path(program: &str, path: &str) -> bool {
    std::env::split_paths(path).any(|dir| is_executable(&dir.join(program)))
}

fn is_executable(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    file.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks `tools` against `path` (a `PATH` value); every missing one is named in the error.
pub fn check_tools(tools: &[Tool], path: &str) -> Result<(), MissingPrerequisites> {
    let missing: Vec<Tool> = tools
        .iter()
        .copied()
        .filter(|t| !on_path(t.program, path))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingPrerequisites { missing })
    }
}

/// Checks what a run on `kernels` needs against this process's `PATH`.
pub fn check(arch: &ArchSpec, kernels: &[String]) -> Result<(), MissingPrerequisites> {
    let path = std::env::var("PATH").unwrap_or_default();
    check_tools(&needed(arch, kernels), &path)
}

#[cfg(test)]
mod tests {
    use super::super::arch::ARCHES;
    use super::*;

    fn dir_with(programs: &[&str]) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "agelab-prereq-{}-{}",
            std::process::id(),
            programs.join("-")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for p in programs {
            let f = dir.join(p);
            std::fs::write(&f, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    #[test]
    fn every_missing_tool_is_named_once_in_one_message() {
        let x86 = &ARCHES[0];
        let dir = dir_with(&["apt-get", "dpkg-deb", "xz"]);
        let err =
            check_tools(&needed(x86, &["debian-7.2".into()]), dir.to_str().unwrap()).unwrap_err();
        let msg = err.to_string();
        assert_eq!(msg.lines().count(), 1, "{msg}");
        assert!(
            msg.contains("qemu-system-x86_64 (Debian: qemu-system-x86)"),
            "{msg}"
        );
        assert!(msg.contains("zstd (Debian: zstd)"), "{msg}");
        assert!(!msg.contains("dpkg-deb"), "{msg}");
        assert!(
            msg.contains("apt-get install qemu-system-x86 zstd"),
            "{msg}"
        );
    }

    #[test]
    fn all_present_passes_and_custom_kernels_need_the_build_tools() {
        let x86 = &ARCHES[0];
        let debian = dir_with(&["qemu-system-x86_64", "apt-get", "dpkg-deb", "xz", "zstd"]);
        let path = debian.to_str().unwrap();
        assert!(check_tools(&needed(x86, &["debian-6.1".into()]), path).is_ok());
        let err = check_tools(&needed(x86, &["custom-7.2".into()]), path).unwrap_err();
        assert!(err.to_string().contains("bison (Debian: bison)"), "{err}");
    }

    #[test]
    fn a_non_executable_file_does_not_count() {
        use std::os::unix::fs::PermissionsExt;
        let dir = dir_with(&["zstd"]);
        std::fs::set_permissions(dir.join("zstd"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let t = [Tool {
            program: "zstd",
            package: "zstd",
        }];
        assert!(check_tools(&t, dir.to_str().unwrap()).is_err());
    }
}
