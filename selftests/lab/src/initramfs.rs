//! The lab initramfs: a cached base archive (busybox, init, the project's binaries, kernel
//! modules) plus a small per-run archive (the command, options) appended to it; the kernel
//! unpacks concatenated newc archives in order.

use super::apt::{extract_deb, AptError, PrivateApt};
use super::arch::ArchSpec;
use super::cache::{create_dir, write_atomic, CacheError, CacheLock};
use super::cpio::{CpioWriter, EntryKind};
use super::elf;
use super::hash::CacheHasher;
use super::kernel::LabKernel;
use super::modules::{ModuleError, ModuleTree};
use super::status::shell_quote;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// The init script, PID 1 of the lab guest.
pub const INIT_SCRIPT: &str = include_str!("../init.sh");

/// Bump when the archive layout changes.
const LAYOUT_VERSION: &str = "agelab initramfs v1";

/// Errors of assembling the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// No static busybox for the guest architecture could be found or fetched.
    #[error("no static busybox for {arch}: {detail}")]
    NoBusybox {
        /// The guest architecture.
        arch: String,
        /// What was tried.
        detail: String,
    },
    /// A binary to include cannot run in the initramfs.
    #[error(
        "{path}: {problem}; build it static for {arch} (RUSTFLAGS='-C target-feature=+crt-static')"
    )]
    UnusableBinary {
        /// The binary.
        path: PathBuf,
        /// Why it cannot run.
        problem: String,
        /// The guest architecture.
        arch: String,
    },
    /// Reading an input file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Preparing a kernel module failed.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// Fetching busybox-static failed.
    #[error(transparent)]
    Apt(#[from] AptError),
    /// Cache bookkeeping failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// What goes into the base archive.
#[derive(Debug)]
pub struct BaseSpec<'a> {
    /// The guest architecture.
    pub arch: &'static ArchSpec,
    /// The kernel whose modules are included.
    pub kernel: &'a LabKernel,
    /// Debian suite to take busybox-static from when the host has no usable one.
    pub suite: &'a str,
    /// Executables for `/opt/agelab/bin`.
    pub bins: &'a [PathBuf],
    /// Module groups to include (each a module and its dependencies), e.g. `kvm_amd`, `zram`.
    pub module_groups: &'a [String],
}

/// Executables in `dir` (not recursive): regular files with an execute bit.
pub fn executables_in(dir: &Path) -> Result<Vec<PathBuf>, InitramfsError> {
    use std::os::unix::fs::PermissionsExt;
    let rd = fs::read_dir(dir).map_err(|source| InitramfsError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| {
            e.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<u8>, InitramfsError> {
    fs::read(path).map_err(|source| InitramfsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Stat-based identity of an input file for the cache key (cheap; content is hashed only
/// when the archive is built).
fn stamp(h: &mut CacheHasher, path: &Path) {
    h.field(path.as_os_str().as_encoded_bytes());
    if let Ok(m) = fs::metadata(path) {
        h.field(&m.len().to_le_bytes());
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        h.field(&mtime.to_le_bytes());
    }
}

/// A static busybox for the guest: the host's when it fits, else Debian's busybox-static.
fn find_busybox(cache: &Path, arch: &ArchSpec, suite: &str) -> Result<PathBuf, InitramfsError> {
    let fits = |p: &Path| {
        fs::read(p)
            .ok()
            .and_then(|b| elf::inspect(&b))
            .is_some_and(|i| i.is_static && i.machine == arch.elf_machine)
    };
    if let Some(p) = std::env::var_os("AGELAB_BUSYBOX").map(PathBuf::from) {
        return if fits(&p) {
            Ok(p)
        } else {
            Err(InitramfsError::NoBusybox {
                arch: arch.name.into(),
                detail: format!(
                    "AGELAB_BUSYBOX={} is not a static {} binary",
                    p.display(),
                    arch.name
                ),
            })
        };
    }
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if fits(Path::new(p)) {
            return Ok(PathBuf::from(p));
        }
    }
    let dir = cache
        .join("busybox")
        .join(format!("{suite}-{}", arch.deb_arch));
    let bin = dir.join("bin/busybox");
    let _lock = CacheLock::acquire(&cache.join("busybox").join("fetch.lock"))?;
    if !fits(&bin) {
        let apt = PrivateApt::open(cache, suite, arch.deb_arch)?;
        apt.update(false)?;
        let deb = apt.download("busybox-static")?;
        extract_deb(&deb, &dir)?;
        let found = ["bin/busybox", "usr/bin/busybox"]
            .iter()
            .map(|p| dir.join(p))
            .find(|p| fits(p));
        match found {
            Some(p) => return Ok(p),
            None => {
                return Err(InitramfsError::NoBusybox {
                    arch: arch.name.into(),
                    detail: format!("busybox-static from {suite} has no static busybox"),
                })
            }
        }
    }
    Ok(bin)
}

/// The cached base archive for `spec`, built when missing.
pub fn base_archive(cache: &Path, spec: &BaseSpec<'_>) -> Result<PathBuf, InitramfsError> {
    let arch = spec.arch;
    let busybox = find_busybox(cache, arch, spec.suite)?;
    let mut key = CacheHasher::default();
    key.field(LAYOUT_VERSION.as_bytes());
    key.field(INIT_SCRIPT.as_bytes());
    key.field(arch.name.as_bytes());
    stamp(&mut key, &spec.kernel.image);
    if let Some(m) = &spec.kernel.modules {
        stamp(&mut key, m);
    }
    stamp(&mut key, &busybox);
    for b in spec.bins {
        stamp(&mut key, b);
    }
    for g in spec.module_groups {
        key.field(g.as_bytes());
    }
    let dir = cache.join("initramfs");
    create_dir(&dir)?;
    let path = dir.join(format!("{}-{}.cpio", spec.kernel.name, key.hex()));
    let _lock = CacheLock::acquire(&dir.join("build.lock"))?;
    if path.is_file() {
        // Marks it recently used for the pruning below.
        let _ = fs::File::options()
            .append(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok(path);
    }
    let mut w = CpioWriter::new(Vec::new());
    let io = |e: std::io::Error| InitramfsError::Read {
        path: path.clone(),
        source: e,
    };
    for d in [
        "/bin",
        "/sbin",
        "/usr",
        "/usr/bin",
        "/usr/sbin",
        "/dev",
        "/proc",
        "/sys",
        "/tmp",
        "/root",
        "/run",
        "/etc",
        "/opt",
        "/opt/agelab",
        "/opt/agelab/bin",
        "/lib",
        "/lib/agelab",
        "/lib/agelab/modules",
        "/lib/agelab/modgroups",
        "/agelab",
    ] {
        w.dir(d, 0o755).map_err(io)?;
    }
    w.entry("/dev/console", EntryKind::CharDev(5, 1), 0o600, &[])
        .map_err(io)?;
    w.entry("/dev/null", EntryKind::CharDev(1, 3), 0o666, &[])
        .map_err(io)?;
    w.file("/bin/busybox", 0o755, &read(&busybox)?)
        .map_err(io)?;
    w.symlink("/bin/sh", "busybox").map_err(io)?;
    w.file("/init", 0o755, INIT_SCRIPT.as_bytes()).map_err(io)?;
    w.file("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .map_err(io)?;
    w.file("/etc/group", 0o644, b"root:x:0:\n").map_err(io)?;
    let kvm_groups: Vec<String> = arch
        .kvm_modules
        .iter()
        .map(|(flag, m)| format!("{flag}:{m}"))
        .collect();
    let [out, err, status] = arch.channels;
    let arch_env = format!(
        "AGELAB_CONSOLE={}\nAGELAB_OUT={out}\nAGELAB_ERR={err}\nAGELAB_STATUS={status}\nAGELAB_KVM_GROUPS={}\n",
        arch.console,
        shell_quote(&kvm_groups.join(" ")),
    );
    w.file("/lib/agelab/arch.env", 0o644, arch_env.as_bytes())
        .map_err(io)?;
    for b in spec.bins {
        let data = read(b)?;
        if let Some(info) = elf::inspect(&data) {
            let problem = if info.machine != arch.elf_machine {
                Some(format!("ELF machine {} is not {}", info.machine, arch.name))
            } else if !info.is_static {
                Some("dynamically linked (the initramfs has no libc)".to_string())
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(InitramfsError::UnusableBinary {
                    path: b.clone(),
                    problem,
                    arch: arch.name.into(),
                });
            }
        }
        let name = b.file_name().and_then(|n| n.to_str()).unwrap_or("bin");
        w.file(&format!("/opt/agelab/bin/{name}"), 0o755, &data)
            .map_err(io)?;
    }
    if let Some(mdir) = &spec.kernel.modules {
        let mut tree = ModuleTree::scan(mdir)?;
        let mut added = std::collections::HashSet::new();
        for group in spec.module_groups {
            let order = tree.load_order(group)?;
            if order.is_empty() {
                continue;
            }
            for m in &order {
                if added.insert(m.clone()) {
                    let data = tree.contents(m).unwrap_or_default();
                    w.file(&format!("/lib/agelab/modules/{m}.ko"), 0o644, data)
                        .map_err(io)?;
                }
            }
            let list = order.join("\n") + "\n";
            w.file(
                &format!("/lib/agelab/modgroups/{group}"),
                0o644,
                list.as_bytes(),
            )
            .map_err(io)?;
        }
    }
    let bytes = w.finish().map_err(io)?;
    write_atomic(&path, &bytes)?;
    prune(&dir, &format!("{}-", spec.kernel.name), KEEP_PER_KERNEL);
    Ok(path)
}

/// Base archives kept per kernel (each rebuild of the binaries makes a new one).
const KEEP_PER_KERNEL: usize = 3;

/// Deletes all but the `keep` most recently used `<prefix><hash>.cpio` archives in `dir`,
/// sparing any used in the last ten minutes (a concurrent run may be about to copy it).
fn prune(dir: &Path, prefix: &str, keep: usize) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(".cpio"))
                .is_some_and(|hash| hash.len() == 16 && !hash.contains('-'))
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort_by_key(|(mtime, _)| std::cmp::Reverse(*mtime));
    let now = std::time::SystemTime::now();
    for (mtime, path) in found.into_iter().skip(keep) {
        let idle = now.duration_since(mtime).unwrap_or_default();
        if idle > std::time::Duration::from_secs(600) {
            let _ = fs::remove_file(path);
        }
    }
}

/// Per-run options for the guest's init.
#[derive(Debug, Default)]
pub struct RunSpec<'a> {
    /// The command, argv style.
    pub argv: &'a [String],
    /// zram swap size (`--zram`), if any.
    pub zram: Option<&'a str>,
    /// Extra module groups to load.
    pub modules: &'a [String],
}

/// The per-run archive: `/agelab/run` (the command) and `/agelab/env` (options).
pub fn run_archive(spec: &RunSpec<'_>) -> std::io::Result<Vec<u8>> {
    let mut w = CpioWriter::new(Vec::new());
    w.file(
        "/agelab/run",
        0o755,
        super::status::command_script(spec.argv).as_bytes(),
    )?;
    let env = format!(
        "AGELAB_ZRAM={}\nAGELAB_MODULES={}\n",
        shell_quote(spec.zram.unwrap_or("")),
        shell_quote(&spec.modules.join(" ")),
    );
    w.file("/agelab/env", 0o644, env.as_bytes())?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{parse_records, StatusRecord};
    use proptest::prelude::*;
    use std::io::Write;
    use std::time::{Duration, SystemTime};

    #[test]
    fn prune_keeps_recent_archives_of_that_kernel_only() {
        let dir = std::env::temp_dir().join(format!("agelab-prune-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let now = SystemTime::now();
        let mk = |name: &str, age_s: u64| {
            let p = dir.join(name);
            let f = fs::File::create(&p).unwrap();
            f.set_modified(now - Duration::from_secs(age_s)).unwrap();
        };
        for (i, age) in [5000u64, 4000, 3000, 2000, 100].iter().enumerate() {
            mk(&format!("debian-6.1-{i:016x}.cpio"), *age);
        }
        mk("debian-6.12-0000000000000000.cpio", 9000);
        prune(&dir, "debian-6.1-", 2);
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "debian-6.1-0000000000000003.cpio",
                "debian-6.1-0000000000000004.cpio",
                "debian-6.12-0000000000000000.cpio"
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// init.sh's own writer (`status() { echo "agelab-status v1 $*" >&9; }`), run by busybox sh
    /// as in the guest, produces records that parse back to what was written.
    #[test]
    fn records_written_by_init_parse_back() {
        if std::process::Command::new("busybox")
            .arg("true")
            .output()
            .is_err()
        {
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIP: busybox is not installed (Debian: busybox-static); the guest's shell writes the records"
            );
            return;
        }
        let writer = INIT_SCRIPT
            .lines()
            .find(|l| l.starts_with("status() "))
            .expect("init.sh defines status()");
        let uptime = (0..100_000u32, 0..100u32).prop_map(|(s, c)| format!("{s}.{c:02}"));
        let record = prop_oneof![
            uptime
                .clone()
                .prop_map(|u| ("booted".to_string(), format!("uptime={u}"))),
            uptime
                .clone()
                .prop_map(|u| ("started".to_string(), format!("uptime={u}"))),
            "[ -~]{0,40}".prop_map(|m| ("warn".to_string(), m)),
            (0..=255i32, uptime)
                .prop_map(|(rc, u)| ("exit".to_string(), format!("{rc} uptime={u}"))),
        ];
        crate::fuzz::run_cases(
            "status init.sh writer round trip",
            128,
            proptest::collection::vec(record, 0..6),
            |records| {
                let mut script = format!("{writer}\nexec 9>&1\n");
                for (kind, args) in &records {
                    script.push_str(&format!("status {kind} {}\n", shell_quote(args)));
                }
                let out = std::process::Command::new("busybox")
                    .args(["sh", "-c", &script])
                    .output()
                    .unwrap();
                let text = String::from_utf8(out.stdout).unwrap();
                let want: Vec<StatusRecord> = records
                    .iter()
                    .map(|(kind, args)| {
                        let uptime = || {
                            args.rsplit_once("uptime=")
                                .map(|(_, u)| u.parse::<f64>().unwrap())
                                .unwrap()
                        };
                        match kind.as_str() {
                            "booted" => StatusRecord::Booted { uptime: uptime() },
                            "started" => StatusRecord::Started { uptime: uptime() },
                            "warn" => StatusRecord::Warning(args.clone()),
                            _ => StatusRecord::Exited {
                                status: args.split(' ').next().unwrap().parse().unwrap(),
                                uptime: uptime(),
                            },
                        }
                    })
                    .collect();
                prop_assert_eq!(parse_records(&text), want, "channel:\n{}", text);
                Ok(())
            },
        );
    }
}
