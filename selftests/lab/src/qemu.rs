//! Booting one lab guest under QEMU and collecting what the command produced.
//!
//! Four serial ports: the console, the command's stdout, its stderr and the status channel
//! (see [`super::status`]). Each is a file in the run directory; stdout and stderr are tailed
//! while the guest runs, so long tests show progress.

use super::arch::ArchSpec;
use super::status::{parse_records, StatusRecord};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Lines of console shown with an error.
const TAIL_LINES: usize = 30;

/// How long a guest may take to power off after reporting its exit status.
const POWEROFF_GRACE: Duration = Duration::from_secs(15);

/// Errors of one guest run. Each carries the console's last lines.
#[derive(Debug, thiserror::Error)]
pub enum GuestRunError {
    /// QEMU is not installed.
    #[error("{program} not found ({source}); install QEMU (Debian: qemu-system-x86)")]
    QemuMissing {
        /// The emulator.
        program: String,
        /// The spawn error.
        source: std::io::Error,
    },
    /// QEMU failed (e.g. could not load the kernel image).
    #[error("QEMU failed ({status}){stage}: {qemu}\n--- console (last lines) ---\n{tail}")]
    QemuFailed {
        /// QEMU's exit status.
        status: String,
        /// " before the kernel reached init (is the kernel image valid?)" when it did not.
        stage: &'static str,
        /// QEMU's own messages (e.g. "linux kernel too old to load a ram disk").
        qemu: String,
        /// Console tail.
        tail: String,
    },
    /// The guest stopped (reset, halt) before the kernel reached the lab's init.
    #[error("the guest stopped before the kernel reached the lab's init (corrupt or unbootable kernel image?)\n--- console (last lines) ---\n{tail}")]
    NoInit {
        /// Console tail.
        tail: String,
    },
    /// The guest kernel panicked before the command finished.
    #[error("the guest kernel panicked before the command finished: {reason}\n--- console (last lines) ---\n{tail}")]
    KernelPanic {
        /// The panic line (`Kernel panic - not syncing: ...`).
        reason: String,
        /// Console tail.
        tail: String,
    },
    /// The kernel never reached the lab's init.
    #[error("the kernel did not reach the lab's init within {secs} s (corrupt or unbootable kernel image?); QEMU killed\n--- console (last lines) ---\n{tail}")]
    NoBoot {
        /// The boot timeout.
        secs: u64,
        /// Console tail.
        tail: String,
    },
    /// The command ran past `--timeout`.
    #[error(
        "timed out after {secs} s ({phase}); QEMU killed\n--- console (last lines) ---\n{tail}"
    )]
    Timeout {
        /// The timeout.
        secs: u64,
        /// How far the guest got.
        phase: &'static str,
        /// Console tail.
        tail: String,
    },
    /// SIGINT or SIGTERM arrived while the guest ran; QEMU was killed.
    #[error("interrupted ({phase}); QEMU killed")]
    Interrupted {
        /// How far the guest got.
        phase: &'static str,
    },
    /// The guest stopped without an exit record.
    #[error("the guest stopped without reporting the command's exit status\n--- console (last lines) ---\n{tail}")]
    NoExitStatus {
        /// Console tail.
        tail: String,
    },
    /// Run-directory I/O failed.
    #[error("lab run directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Where the command's output goes while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Copied to this process's stdout and stderr as it arrives.
    Stream,
    /// Only kept in the run directory's `stdout` and `stderr` files.
    Capture,
}

/// One boot.
#[derive(Debug)]
pub struct Boot<'a> {
    /// The guest architecture.
    pub arch: &'static ArchSpec,
    /// Kernel image.
    pub kernel: &'a Path,
    /// initramfs.
    pub initrd: &'a Path,
    /// Guest memory (QEMU `-m` syntax).
    pub mem: &'a str,
    /// vCPUs.
    pub smp: u32,
    /// Machine, CPU and accelerator arguments ([`super::accel::qemu_args`]).
    pub machine: &'a [String],
    /// Extra kernel command-line words.
    pub append: &'a str,
    /// Limit for the whole run.
    pub timeout: Duration,
    /// Limit for reaching init.
    pub boot_timeout: Duration,
    /// Directory for the port files.
    pub run_dir: &'a Path,
    /// Streaming or capture.
    pub output: OutputMode,
}

/// What a finished boot reports.
#[derive(Debug, Clone)]
pub struct BootReport {
    /// The command's exit status.
    pub status: i32,
    /// Wall time from starting QEMU to the command starting.
    pub to_command: Option<Duration>,
    /// Guest uptime when the command started.
    pub guest_uptime_at_command: Option<f64>,
    /// Wall time from starting QEMU to QEMU exiting.
    pub total: Duration,
    /// Warnings init reported.
    pub warnings: Vec<String>,
}

/// Kills QEMU if the run is abandoned (error, panic).
struct QemuGuard(Child);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Incremental reader of a file another process appends to.
struct Tail {
    file: Option<File>,
    path: PathBuf,
    pos: u64,
}

impl Tail {
    fn new(path: PathBuf) -> Self {
        Self {
            file: None,
            path,
            pos: 0,
        }
    }

    fn read_new(&mut self) -> Vec<u8> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let mut buf = Vec::new();
        if let Some(f) = &mut self.file {
            if f.seek(SeekFrom::Start(self.pos)).is_ok() {
                let _ = f.read_to_end(&mut buf);
            }
        }
        self.pos += buf.len() as u64;
        buf
    }
}

/// The last `n` lines of a console capture, carriage returns and escape noise dropped.
pub fn console_tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return "(no console output)".into();
    }
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A chardev path in QEMU option syntax (commas doubled).
fn qemu_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The QEMU command line of `boot`.
pub fn qemu_command(boot: &Boot<'_>) -> Command {
    let arch = boot.arch;
    let mut cmd = Command::new(arch.qemu);
    cmd.args(boot.machine)
        .args(["-m", boot.mem, "-smp", &boot.smp.to_string()])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(boot.kernel)
        .arg("-initrd")
        .arg(boot.initrd);
    let append = format!(
        // damon_stat (7.x, on by default in Debian) runs an exclusive kdamond that makes DAMON's
        // sysfs interface refuse new ones (EBUSY); the lab tests DAMON, so keep it off.
        "console={} quiet panic=-1 damon_stat.enabled=N {} {}",
        arch.console, arch.cmdline, boot.append
    );
    cmd.args(["-append", append.trim()]);
    for (i, name) in ["console", "stdout", "stderr", "status"].iter().enumerate() {
        let path = boot.run_dir.join(name);
        cmd.arg("-chardev")
            .arg(format!("file,id=port{i},path={}", qemu_path(&path)));
        match arch.channel_device {
            Some(dev) if i > 0 => cmd.args(["-device", &format!("{dev},chardev=port{i}")]),
            _ => cmd.args(["-serial", &format!("chardev:port{i}")]),
        };
    }
    cmd
}

/// Boots the guest, waits for the command, and returns its exit status and timings.
pub fn boot(boot: &Boot<'_>) -> Result<BootReport, GuestRunError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GuestRunError::Io { path, source }
    };
    let dir = boot.run_dir;
    fs::create_dir_all(dir).map_err(io(dir))?;
    for name in ["console", "stdout", "stderr", "status"] {
        File::create(dir.join(name)).map_err(io(&dir.join(name)))?;
    }
    let qemu_log = dir.join("qemu.log");
    let log = File::create(&qemu_log).map_err(io(&qemu_log))?;
    let log2 = log.try_clone().map_err(io(&qemu_log))?;
    let started = Instant::now();
    let mut command = qemu_command(boot);
    // Its own process group: a terminal's Ctrl-C reaches only agelab, which records the cell as
    // interrupted and then kills QEMU itself. SIGKILL when agelab dies (even by SIGKILL), so no
    // guest outlives the run that started it.
    command.process_group(0);
    {
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // which is async-signal-safe; it touches no memory shared with the parent.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|source| GuestRunError::QemuMissing {
            program: boot.arch.qemu.to_string(),
            source,
        })?;
    let mut qemu = QemuGuard(child);
    let mut out = Tail::new(dir.join("stdout"));
    let mut err = Tail::new(dir.join("stderr"));
    let mut status_tail = Tail::new(dir.join("status"));
    let mut status_text = String::new();
    let mut report = BootReport {
        status: -1,
        to_command: None,
        guest_uptime_at_command: None,
        total: Duration::ZERO,
        warnings: Vec::new(),
    };
    let mut booted = false;
    let mut exited_at: Option<Instant> = None;
    let tail = || {
        console_tail(
            &fs::read_to_string(dir.join("console")).unwrap_or_default(),
            TAIL_LINES,
        )
    };
    let pump = |out: &mut Tail, err: &mut Tail| {
        let (o, e) = (out.read_new(), err.read_new());
        if boot.output == OutputMode::Stream {
            if !o.is_empty() {
                let mut s = std::io::stdout().lock();
                let _ = s.write_all(&o);
                let _ = s.flush();
            }
            if !e.is_empty() {
                let _ = std::io::stderr().lock().write_all(&e);
            }
        }
    };
    let qemu_status = loop {
        pump(&mut out, &mut err);
        let new = status_tail.read_new();
        if !new.is_empty() {
            status_text.push_str(&String::from_utf8_lossy(&new));
            let seen = report.warnings.len();
            report.warnings.clear();
            for r in parse_records(&status_text) {
                match r {
                    StatusRecord::Booted { .. } => booted = true,
                    StatusRecord::Warning(w) => report.warnings.push(w),
                    StatusRecord::Started { uptime } => {
                        if report.to_command.is_none() {
                            report.to_command = Some(started.elapsed());
                        }
                        report.guest_uptime_at_command = Some(uptime);
                    }
                    StatusRecord::Exited { status, .. } => {
                        report.status = status;
                        exited_at.get_or_insert_with(Instant::now);
                    }
                }
            }
            for w in &report.warnings[seen.min(report.warnings.len())..] {
                eprintln!("agelab lab: guest warning: {w}");
            }
        }
        if crate::interrupt::requested() && exited_at.is_none() {
            let _ = qemu.0.kill();
            let _ = qemu.0.wait();
            pump(&mut out, &mut err);
            let phase = match (booted, report.to_command.is_some()) {
                (_, true) => "the command was running",
                (true, false) => "setting up the guest",
                (false, false) => "booting",
            };
            return Err(GuestRunError::Interrupted { phase });
        }
        if let Some(st) = qemu.0.try_wait().map_err(io(&qemu_log))? {
            break st;
        }
        if exited_at.is_some_and(|t| t.elapsed() > POWEROFF_GRACE) {
            // The status is in; a guest that does not power off is not the command's fault.
            let _ = qemu.0.kill();
            break qemu.0.wait().map_err(io(&qemu_log))?;
        }
        let elapsed = started.elapsed();
        if exited_at.is_none() && !booted && elapsed > boot.boot_timeout.min(boot.timeout) {
            let _ = qemu.0.kill();
            let _ = qemu.0.wait();
            if elapsed > boot.timeout {
                return Err(GuestRunError::Timeout {
                    secs: boot.timeout.as_secs(),
                    phase: "booting",
                    tail: tail(),
                });
            }
            return Err(GuestRunError::NoBoot {
                secs: boot.boot_timeout.as_secs(),
                tail: tail(),
            });
        }
        if exited_at.is_none() && elapsed > boot.timeout {
            let _ = qemu.0.kill();
            let _ = qemu.0.wait();
            pump(&mut out, &mut err);
            let phase = if report.to_command.is_some() {
                "the command was running"
            } else {
                "setting up the guest"
            };
            return Err(GuestRunError::Timeout {
                secs: boot.timeout.as_secs(),
                phase,
                tail: tail(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    report.total = started.elapsed();
    pump(&mut out, &mut err);
    if exited_at.is_some() {
        return Ok(report);
    }
    let console = fs::read_to_string(dir.join("console")).unwrap_or_default();
    let tail = console_tail(&console, TAIL_LINES);
    if let Some(line) = console.lines().find(|l| l.contains("Kernel panic")) {
        let reason = line[line.find("Kernel panic").unwrap_or(0)..]
            .trim_end()
            .to_string();
        return Err(GuestRunError::KernelPanic { reason, tail });
    }
    if !qemu_status.success() {
        let msg = fs::read_to_string(&qemu_log).unwrap_or_default();
        return Err(GuestRunError::QemuFailed {
            status: qemu_status.to_string(),
            stage: if booted {
                ""
            } else {
                " before the kernel reached init (is the kernel image valid?)"
            },
            qemu: msg.trim().to_string(),
            tail,
        });
    }
    if !booted {
        return Err(GuestRunError::NoInit { tail });
    }
    Err(GuestRunError::NoExitStatus { tail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_nonempty_lines() {
        let text = "a\r\n\r\nb\nc\n\n";
        assert_eq!(console_tail(text, 2), "b\nc");
        assert_eq!(console_tail(text, 10), "a\nb\nc");
        assert_eq!(console_tail("\r\n", 10), "(no console output)");
    }

    /// The QEMU command of a TCG boot of `arch` with run directory `run_dir`.
    fn tcg_command(arch: &str, run_dir: &str) -> Command {
        let arch = super::super::arch::find_arch(arch).unwrap();
        let machine = super::super::accel::qemu_args(arch, super::super::accel::Accel::Tcg);
        qemu_command(&Boot {
            arch,
            kernel: Path::new("/k"),
            initrd: Path::new("/i"),
            mem: "2G",
            smp: 2,
            machine: &machine,
            append: "",
            timeout: Duration::from_secs(1),
            boot_timeout: Duration::from_secs(1),
            run_dir: Path::new(run_dir),
            output: OutputMode::Capture,
        })
    }

    #[test]
    fn arm64_channels_are_pci_serial_ports() {
        let joined = tcg_command("arm64", "/r")
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(joined.contains("-M virt,virtualization=on"), "{joined}");
        assert!(joined.contains("-serial chardev:port0"), "{joined}");
        assert!(
            joined.contains("-device pci-serial,chardev=port3"),
            "{joined}"
        );
        assert!(joined.contains("console=ttyAMA0"), "{joined}");
    }

    #[test]
    fn command_line() {
        let cmd = tcg_command("x86_64", "/run,dir");
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("-accel tcg"), "{joined}");
        assert!(joined.contains("-no-reboot"));
        assert!(joined.contains("file,id=port3,path=/run,,dir/status -serial chardev:port3"));
        assert!(args.contains(
            &"console=ttyS0 quiet panic=-1 damon_stat.enabled=N 8250.nr_uarts=4 no_timer_check"
                .to_string()
        ));
    }
}
